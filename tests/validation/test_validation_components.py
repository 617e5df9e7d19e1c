"""The k-component checks of the validation suite (validation/component_*.py, validation/fokker_planck_2d.py).

Their numbers against independent answers (the grid Brownian's exact moments, the 2-D Fokker–Planck solver against
an exact Gaussian law, closed forms of the strong-order problems), that a wrong SDE fails the 2-D Fokker–Planck
check, and that ``--sde CLDSDE`` runs the k-component checks only. Every generator is seeded.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.integrate import solve_ivp

import sdekit
from validation import _cli
from validation import component_checks as cc
from validation.component_orders import component_strong_orders, strong_errors
from validation.component_problems import Duffing, GridBrownian, exact_solution, start_point, strong_problem
from validation.fokker_planck_2d import FokkerPlanck2D

F64 = torch.float64


def test_grid_brownian_is_additive_and_has_the_brownian_moments():
    # exact moments of W_1 (variance 1) and U = int_0^1 W_s ds (variance 1/3, covariance with W_1: 1/2);
    # 5 standard errors at n = 20,000 (SE of a variance ~ sqrt(2/n) var)
    n = 20_000
    bm = GridBrownian((n, 1), 16, torch.Generator().manual_seed(0))
    w, u = bm(0.0, 1.0, return_U=True)
    w1, u1 = bm(0.0, 0.5, return_U=True)
    w2, u2 = bm(0.5, 1.0, return_U=True)
    torch.testing.assert_close(w, w1 + w2, rtol=0, atol=1e-12)
    torch.testing.assert_close(u, u1 + u2 + 0.5 * w1, rtol=0, atol=1e-12)  # U adds with the left increment
    tol = 5 * math.sqrt(2 / n)
    assert abs(float(w.var()) - 1) < tol
    assert abs(float(u.var()) - 1 / 3) < tol / 3 * 2
    assert abs(float((w * u).mean()) - 0.5) < tol
    with pytest.raises(ValueError, match="not a point"):
        bm(0.0, 0.3)


@pytest.mark.parametrize("kind", ["additive", "diagonal"])
def test_closed_forms_are_the_limit_of_fine_steps(kind):
    # srk at 2^9 steps on the same path: strong error <= ~1e-5 on these problems (measured 3e-6 at 2^7 for the
    # additive problem, 1.3e-4 at 2^8 for the diagonal one with slope 1.4): 1e-3 leaves a margin
    paths = 50
    sde = strong_problem(kind)
    m = sde.diffusion_fn.cols
    bm = GridBrownian((paths, m * 2), 2**9, torch.Generator().manual_seed(1))
    y0 = start_point(kind, paths, 2)
    got = sdekit.simulate(sde, y0, [0.0, 1.0], solver="srk", steps=2**9, bm=bm)[-1]
    want = exact_solution(kind, y0, bm(0.0, 1.0).view(paths, m, 2))
    assert float((got - want).abs().mean()) < 1e-3


def test_problem_declarations_have_the_intended_noise_types():
    assert strong_problem("general").noise_type == "general"
    assert strong_problem("general").diffusion_fn.cols == 2
    assert strong_problem("additive").noise_type == "additive"
    assert strong_problem("diagonal").noise_type == "diagonal"
    assert Duffing().noise_type == "additive" and not Duffing().is_affine


def test_euler_strong_order_on_the_mixed_additive_problem():
    # Euler-Maruyama on additive noise has strong order 1; +-0.25 as in the suite (TESTING.md)
    ladders, _ = strong_errors("additive", ("euler",), (4, 5, 6), paths=50, seed=3, ref=6)
    assert abs(ladders["euler"].slope - 1.0) <= 0.25


class DampedOscillator(sdekit.SDE):
    """dx = v dt, dv = (-x - v) dt + dW: affine, so its law from a Gaussian start is Gaussian."""

    components = ("x", "v")

    def drift(self, x, v, t):
        return (v, -x - v)

    def diffusion(self, x, v, t):
        return sp.Matrix([[0], [1]])


def _lyapunov_moments(mean, std, T):
    """E x, E v, E x^2, E v^2, E xv of the damped oscillator at T (scipy DOP853, rtol 1e-12: independent)."""
    A = np.array([[0.0, 1.0], [-1.0, -1.0]])
    D = np.diag([0.0, 1.0])

    def rhs(t, y):
        m, S = y[:2], y[2:].reshape(2, 2)
        return np.concatenate([A @ m, (A @ S + S @ A.T + D).ravel()])

    y0 = np.concatenate([mean, np.diag(np.square(std)).ravel()])
    y = solve_ivp(rhs, (0, T), y0, method="DOP853", rtol=1e-12, atol=1e-14).y[:, -1]
    m, S = y[:2], y[2:].reshape(2, 2)
    return np.array([m[0], m[1], S[0, 0] + m[0] ** 2, S[1, 1] + m[1] ** 2, S[0, 1] + m[0] * m[1]])


def test_fp2d_matches_an_exact_gaussian_law_within_the_refinement_bound():
    # The check's grid-error bound |FP_h - FP_h/2| must cover the fine grid's true error (second order in h and dt:
    # the bound is ~3x the error); mass is conserved to round-off
    mean, std, T = (1.0, 0.0), (0.3, 0.3), 1.0
    dom = ((-3.5, 3.5), (-3.5, 3.5))
    sde = DampedOscillator()
    coarse = FokkerPlanck2D(sde, dom, (40, 40)).solve(mean, std, T, 0.02)
    fine = FokkerPlanck2D(sde, dom, (80, 80)).solve(mean, std, T, 0.01)
    assert abs(fine.mass.sum() - 1) < 1e-12 and fine.boundary_mass() < 1e-6
    exact = _lyapunov_moments(mean, std, T)
    bound = np.abs(fine.moments() - coarse.moments())
    assert np.all(np.abs(fine.moments() - exact) <= bound + 1e-12), (fine.moments(), exact, bound)
    assert np.abs(fine.moments() - exact).max() < 0.01


def test_fp2d_refuses_non_diagonal_diffusion():
    class Mixed(sdekit.SDE):
        components = ("a", "b")

        def drift(self, a, b, t):
            return (-a, -b)

        def diffusion(self, a, b, t):
            return sp.Matrix([[1, 0], [1, 1]])

    with pytest.raises(ValueError, match="diagonal"):
        FokkerPlanck2D(Mixed(), ((-1, 1), (-1, 1)), (4, 4))


def test_duffing_fokker_planck_check_passes_and_a_wrong_sde_fails():
    # the check's own rule (ratios <= 1 at family-wise level 1e-4, n = 20,000, seed fixed); the wrong SDE has
    # sigma = 1.25 instead of 1: E v^2 moves by ~0.2, ~30 standard errors
    right = cc.duffing_comparison(20_000, 60, 0.02, seed=5)
    assert right["moment_ratio"] <= 1 and all(d <= tol for d, tol, _ in right["ks"])
    wrong = cc.duffing_comparison(20_000, 60, 0.02, seed=5, simulated=Duffing(sigma=1.25))
    assert wrong["moment_ratio"] > 3


def test_duffing_operator_and_transport_identities_are_exact():
    assert cc.duffing_operator_difference() == 0
    assert cc.transport_residual(sdekit.CLDSDE()) == (0, 0)


def test_cld_moments_equal_the_independent_lyapunov_solution():
    errors = cc.lyapunov_errors(sdekit.CLDSDE())
    assert set(errors) == {"Phi", "m", "Sigma", "Sigma (given data)"}
    assert max(errors.values()) < 1e-8  # scipy DOP853 at rtol 1e-12 against closed forms


def test_sde_cld_runs_the_component_checks_only(tmp_path, capsys):
    code = _cli.main(["--quick", "--sde", "CLDSDE", "--only", "analytic", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "CLDSDE: marginal Phi, m, Sigma" in out and "CLDSDE: sample (dopri5)" in out
    assert "VPSDE" not in out and "Duffing" not in out and "FAIL" not in out


@pytest.mark.slow
def test_component_strong_orders_quick_all_pass(tmp_path):
    # the --quick run of the check (~15 s): every slope within its rule
    lines = list(component_strong_orders(cc.Context(sdes=[], quick=True, out=tmp_path)))
    assert len(lines) == 7 and all(r.status == "pass" for r in lines), [(r.name, r.value) for r in lines]


@pytest.mark.slow
def test_cld_kernel_residual_given_the_data_is_zero():
    assert cc.kernel_residual(sdekit.CLDSDE(), "data") == 0.0
