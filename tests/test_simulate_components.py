"""``sdekit.simulate`` on k-component SDEs: shapes, solvers per noise type, and the law of a coupled linear SDE
against its exact Gaussian marginal (derived by sdekit, itself checked in tests/test_cld_marginal.py)."""

from __future__ import annotations

import pytest
import sympy as sp
import torch

import sdekit
from sdekit.errors import SolverError


class Coupled(sdekit.SDE):
    """dX = (A X + b) dt + G dW with a full 2 x 3 G (additive noise, three Brownian motions)."""

    components = ("x", "y")

    def drift(self, x, y, t):
        return (-x + y, -2 * y + 1)

    def diffusion(self, x, y, t):
        return sp.Matrix([[1, sp.Rational(1, 2), 0], [0, 1, sp.Rational(1, 3)]])


class Multiplicative(sdekit.SDE):
    """General (non-commutative) state-dependent noise."""

    components = ("x", "y")

    def drift(self, x, y, t):
        return (-x + y, -y)

    def diffusion(self, x, y, t):
        return sp.Matrix([[1, sp.sin(x) / 2], [sp.Rational(3, 10), 1 + y**2 / (1 + y**2)]])


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("solver", ["euler", "milstein", "srk", "heun", "midpoint", "reversible_heun"])
def test_cld_runs_with_every_torchsde_solver(solver):
    sde = sdekit.CLDSDE()
    x0 = torch.zeros(8, 2, 3, 4)
    out, info = sdekit.simulate(sde, x0, [0.0, 0.5, 1.0], steps=20, solver=solver, generator=_gen(), return_info=True)
    assert out.shape == (3, 8, 2, 3, 4) and torch.isfinite(out).all() and info.nfe >= 20


@pytest.mark.parametrize("solver", ["euler", "heun", "midpoint"])
def test_general_noise_runs_and_milstein_srk_are_refused(solver):
    sde = Multiplicative()
    assert sde.noise_type == "general"
    out = sdekit.simulate(sde, torch.zeros(16, 2, 5), [0.0, 1.0], steps=10, solver=solver, generator=_gen())
    assert out.shape == (2, 16, 2, 5) and torch.isfinite(out).all()
    for refused in ("milstein", "srk", "reversible_heun"):
        with pytest.raises(SolverError):
            sdekit.simulate(sde, torch.zeros(4, 2), [0.0, 1.0], steps=4, solver=refused)


def test_adaptive_runs_on_k_components():
    out = sdekit.simulate(Coupled(), torch.zeros(32, 2), [0.0, 0.5, 1.0], solver="srk", generator=_gen())
    assert out.shape == (3, 32, 2) and torch.isfinite(out).all()


def test_same_seed_same_paths_and_dtype_follows_x0():
    x0 = torch.zeros(8, 2, 3, dtype=torch.float32)
    a = sdekit.simulate(Coupled(), x0, [0.0, 1.0], steps=10, generator=_gen(3))
    b = sdekit.simulate(Coupled(), x0, [0.0, 1.0], steps=10, generator=_gen(3))
    assert a.dtype == torch.float32 and torch.equal(a, b)


@pytest.mark.parametrize(("sde_cls", "solver", "steps"), [(Coupled, "srk", 50), (sdekit.CLDSDE, "srk", 100)])
def test_law_at_T_matches_the_exact_gaussian_marginal(sde_cls, solver, steps):
    # n = 40,000 paths; SRA1 (weak order 2 for additive noise) at these steps has a bias far below the Monte-Carlo
    # error. Mean: 5 standard errors; covariance entries: 5 sqrt(2/n) sd_i sd_j (Gaussian sample covariance)
    sde = sde_cls()
    n = 40_000
    x0 = torch.tensor([1.0, -0.5], dtype=torch.float64).expand(n, 2).clone()
    out = sdekit.simulate(sde, x0, [0.0, 0.3, sde.T], steps=steps, solver=solver, generator=_gen(1))
    for i, t in ((1, 0.3), (2, sde.T)):
        xt = out[i]
        mean = sde.marginal.mean(x0[:1], t)[0]
        cov = sde.marginal.cov(t)
        sd = cov.diagonal().sqrt()
        assert ((xt.mean(0) - mean).abs() <= 5 * sd / n**0.5).all(), (t, xt.mean(0), mean)
        err = (torch.cov(xt.T) - cov).abs() / torch.outer(sd, sd)
        assert float(err.max()) < 5 * (2 / n) ** 0.5, (t, torch.cov(xt.T), cov)


def test_euler_weak_error_on_general_noise_shrinks_with_the_step():
    # second moments of a general-noise SDE: Euler (weak order 1) with 8 and 64 steps against 512 steps, common seeds
    sde = Multiplicative()
    n = 20_000
    x0 = torch.full((n, 2), 0.5, dtype=torch.float64)

    def second_moment(steps):
        return (sdekit.simulate(sde, x0, [0.0, 1.0], steps=steps, generator=_gen(5))[-1] ** 2).mean(0)

    ref = second_moment(512)
    coarse, fine = (float((second_moment(s) - ref).abs().max()) for s in (8, 64))
    assert fine < coarse
