"""The derived Gaussian marginal of k-component affine SDEs, CLD first, against independent numbers.

* the symbolic Fokker–Planck residual of the exact CLD kernel is 0;
* the closed form equals the CLD paper's published formulas (Dockhorn, Vahdat & Kreis 2022, appendix B.1; the same
  expressions as the authors' code, written here with :math:`B = \\beta t` and critical damping);
* the covariance equals an independent scipy solution of the Lyapunov ODE to 1e-8, and Phi equals scipy's expm;
* a time-dependent A without a closed form goes through the moment-ODE table, checked the same way;
* sample / log_prob / score are consistent with scipy's multivariate normal and with autograd.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.integrate import solve_ivp
from scipy.linalg import expm
from scipy.stats import multivariate_normal

import sdekit
from sdekit._vector import exact

BETA, M, GAMMA_CAP, GAMMA0 = 4.0, 0.25, 1.0, 0.04
A_CLD = np.array([[0.0, BETA / M], [-BETA, -GAMMA_CAP * BETA / M]])
D_CLD = np.array([[0.0, 0.0], [0.0, 2 * GAMMA_CAP * BETA]])
TIMES = np.array([1e-3, 0.01, 0.1, 0.3, 0.5, 0.77, 1.0])


def _paper_cov(t: np.ndarray, var0x: float, var0v: float) -> np.ndarray:
    """Appendix B.1 of the CLD paper (constant beta, Gamma^2 = 4M): Sigma_xx, Sigma_xv, Sigma_vv given the initial
    variances of x and v (0 and gamma M for hybrid score matching)."""
    B, G = BETA * t, GAMMA_CAP
    e = np.exp(-4 * B / G)
    xx = var0x + np.exp(4 * B / G) - 1 + 4 * B / G * (var0x - 1) + 4 * B**2 / G**2 * (var0x - 2)
    xx = xx + 16 * B**2 * var0v / G**4
    xv = -var0x * B + 4 * B * var0v / G**2 - 2 * B**2 / G * (var0x - 2) - 8 * B**2 * var0v / G**3
    vv = G**2 / 4 * (np.exp(4 * B / G) - 1) + G * B - 4 * B * var0v / G + 4 * B**2 * var0v / G**2 + var0v
    vv = vv + B**2 * (var0x - 2)
    return np.stack([np.stack([xx, xv], -1), np.stack([xv, vv], -1)], -2) * e[..., None, None]


def _paper_alpha(t: np.ndarray) -> np.ndarray:
    """The paper's mean: mu_x = e^{-2B/G}(2B/G x + 4B/G^2 v + x), mu_v = e^{-2B/G}(-B x - 2B/G v + v)."""
    B, G = BETA * t, GAMMA_CAP
    e = np.exp(-2 * B / G)
    row_x = np.stack([(2 * B / G + 1) * e, 4 * B / G**2 * e], -1)
    row_v = np.stack([-B * e, (1 - 2 * B / G) * e], -1)
    return np.stack([row_x, row_v], -2)


def _lyapunov(A, b, D, times, sigma0=None):
    """Independent moments: Phi' = A Phi, m' = A m + b, Sigma' = A Sigma + Sigma A^T + D (scipy, rtol 1e-12)."""
    k = 2
    S0 = np.zeros((k, k)) if sigma0 is None else sigma0

    def rhs(t, y):
        a = A(t)
        Phi, m, S = y[:4].reshape(2, 2), y[4:6], y[6:].reshape(2, 2)
        return np.concatenate([(a @ Phi).ravel(), a @ m + b(t), (a @ S + S @ a.T + D(t)).ravel()])

    y0 = np.concatenate([np.eye(k).ravel(), np.zeros(k), S0.ravel()])
    sol = solve_ivp(rhs, (0, times[-1]), y0, method="DOP853", t_eval=times, rtol=1e-12, atol=1e-14)
    y = sol.y.T
    return y[:, :4].reshape(-1, 2, 2), y[:, 4:6], y[:, 6:].reshape(-1, 2, 2)


@pytest.fixture(scope="module")
def cld():
    return sdekit.CLDSDE()


def test_cld_closed_form_equals_the_papers_formulas(cld):
    m = cld.marginal
    assert m.closed
    t = torch.tensor(TIMES, dtype=torch.float64)
    # float64 round-off of closed forms (1e-12): both sides are the same function evaluated differently
    np.testing.assert_allclose(m.alpha(t).numpy(), _paper_alpha(TIMES), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.cov(t).numpy(), _paper_cov(TIMES, 0.0, 0.0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(
        m.cov(t, given="data").numpy(), _paper_cov(TIMES, 0.0, GAMMA0 * M), rtol=1e-10, atol=1e-14
    )
    np.testing.assert_allclose(m.offset(t).numpy(), 0.0, atol=0)


def test_cld_covariance_equals_an_independent_lyapunov_solution(cld):
    Phi, _, S = _lyapunov(lambda t: A_CLD, lambda t: np.zeros(2), lambda t: D_CLD, TIMES)
    t = torch.tensor(TIMES, dtype=torch.float64)
    np.testing.assert_allclose(cld.marginal.cov(t).numpy(), S, rtol=0, atol=1e-8)
    np.testing.assert_allclose(cld.marginal.alpha(t).numpy(), Phi, rtol=0, atol=1e-8)
    np.testing.assert_allclose(cld.marginal.alpha(t).numpy(), np.stack([expm(A_CLD * s) for s in TIMES]), atol=1e-12)
    S0 = np.diag([0.0, GAMMA0 * M])
    _, _, S_data = _lyapunov(lambda t: A_CLD, lambda t: np.zeros(2), lambda t: D_CLD, TIMES, sigma0=S0)
    np.testing.assert_allclose(cld.marginal.cov(t, given="data").numpy(), S_data, rtol=0, atol=1e-8)


class _Exp(sp.Function):
    """exp kept as one atom under differentiation (d/du E(u) = E(u)), so that FP[p]/p is a rational function."""

    def fdiff(self, argindex=1):
        return _Exp(self.args[0])


@pytest.mark.parametrize("given", ["state", "data"])
def test_cld_kernel_solves_the_fokker_planck_equation(cld, given):
    # p = E(phi) / sqrt(det S) (the 2 pi is a constant factor): sdekit's multivariate operator applied to p, then E -> 1
    # leaves FP[p]/p * sqrt(det S), whose numerator must expand to exactly 0
    m = cld.marginal
    x, v = cld.state_symbols
    x0, v0 = sp.symbols("x0 v0", real=True)
    S, X0 = m.cov_expr, sp.Matrix([x0, v0])
    if given == "data":
        S = S + m.alpha_expr * sp.diag(0, sp.Rational(1, 25) * sp.Rational(1, 4)) * m.alpha_expr.T
        X0 = sp.Matrix([x0, 0])
    r = sp.Matrix([x, v]) - m.alpha_expr * X0 - m.offset_expr
    det = S.det()
    phi = -(r.T * S.adjugate() * r)[0, 0] / (2 * det)
    residual = exact(cld, cld.fokker_planck(_Exp(phi) / sp.sqrt(det)))
    residual = sp.expand(residual.replace(lambda e: isinstance(e, _Exp), lambda e: sp.S.One) * sp.sqrt(det))
    numerator, _ = sp.fraction(sp.together(residual))
    assert sp.expand(sp.powsimp(sp.expand(numerator), combine="exp")) == 0
    # the check can fail: a wrong covariance (the state kernel's Sigma scaled by 1.01) leaves a non-zero residual
    wrong = exact(cld, cld.fokker_planck(_Exp(phi * 1.01) / sp.sqrt(det)))
    wrong = sp.expand(wrong.replace(lambda e: isinstance(e, _Exp), lambda e: sp.S.One) * sp.sqrt(det))
    assert abs(float(wrong.subs({x: 0.3, v: -0.2, x0: 0.5, v0: 0.1, sdekit.t: 0.4}))) > 1e-3


def test_the_prior_is_the_kernel_at_T_with_the_initial_velocity_law(cld):
    prior = cld.prior
    torch.testing.assert_close(prior.cov, cld.marginal.cov(1.0, given="data"))
    # near the equilibrium N(0, 1) x N(0, M) at T = 1 (alpha(T) ~ e^-8)
    np.testing.assert_allclose(prior.cov.numpy(), np.diag([1.0, M]), atol=2e-5)
    z = prior.sample((50_000, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # Monte-Carlo: n = 100,000 values per component; 5 standard errors of a variance ~ 5 sqrt(2/n) var
    var = z.transpose(0, 1).reshape(2, -1).var(dim=1)
    np.testing.assert_allclose(var.numpy(), np.diag(prior.cov.numpy()), rtol=5 * (2 / 100_000) ** 0.5)
    lp = prior.log_prob(z[:5])
    ref = multivariate_normal(np.zeros(2), prior.cov.numpy()).logpdf(z[:5].transpose(1, 2).numpy()).sum(-1)
    np.testing.assert_allclose(lp.numpy(), ref, rtol=1e-12)


class TimeVarying(sdekit.SDE):
    """A has no closed-form exponential (not c(t) A0): the moment-ODE table is used."""

    components = ("x", "y")

    def drift(self, x, y, t):
        return (-x + t * y, -2 * y + sp.sin(3 * t) * x + 1)

    def diffusion(self, x, y, t):
        return sp.Matrix([[1, 0], [sp.Rational(1, 2), 1 + t]])


def test_numeric_moments_without_a_closed_form():
    sde = TimeVarying()
    m = sde.marginal
    assert not m.closed
    Phi, mean, S = _lyapunov(
        lambda t: np.array([[-1.0, t], [np.sin(3 * t), -2.0]]),
        lambda t: np.array([0.0, 1.0]),
        lambda t: np.array([[1.0, 0.5], [0.5, 0.25 + (1 + t) ** 2]]),
        TIMES,
    )
    t = torch.tensor(TIMES, dtype=torch.float64)
    # tolerances: both solvers at rtol ~1e-12, plus cubic Hermite interpolation (h = 1/4096): ~1e-13
    np.testing.assert_allclose(m.alpha(t).numpy(), Phi, atol=1e-9)
    np.testing.assert_allclose(m.offset(t).numpy(), mean, atol=1e-9)
    np.testing.assert_allclose(m.cov(t).numpy(), S, atol=1e-9)


def test_closed_form_for_a_scalar_schedule_times_a_constant_matrix():
    class Scheduled(sdekit.SDE):
        components = ("x", "v")

        def drift(self, x, v, t):
            return ((1 + t) * v, -(1 + t) * (x + 2 * v))

        def diffusion(self, x, v, t):
            return (0, sp.sqrt(2 * (1 + t)))

    sde = Scheduled()
    assert sde.marginal.closed
    Phi, _, S = _lyapunov(
        lambda t: (1 + t) * np.array([[0.0, 1.0], [-1.0, -2.0]]),
        lambda t: np.zeros(2),
        lambda t: np.diag([0.0, 2 * (1 + t)]),
        TIMES,
    )
    t = torch.tensor(TIMES, dtype=torch.float64)
    np.testing.assert_allclose(sde.marginal.alpha(t).numpy(), Phi, atol=1e-10)
    np.testing.assert_allclose(sde.marginal.cov(t).numpy(), S, atol=1e-10)


class Oscillator(sdekit.SDE):
    """Underdamped: A has the complex eigenvalues -1 +- i sqrt(2), and b != 0."""

    components = ("x", "v")
    k = 3
    c = 2

    def drift(self, x, v, t):
        return (v, -self.k * x - self.c * v + 1)

    def diffusion(self, x, v, t):
        return sp.Matrix([[sp.Rational(1, 2), 0], [0, 1]])


def test_closed_form_with_complex_eigenvalues_and_an_offset():
    """The constant-coefficient moments come from the algebraic Lyapunov equation (no quadrature of oscillating
    exponentials); checked against the independent scipy solution of the moment ODEs (rtol 1e-12)."""
    sde = Oscillator()
    assert sde.marginal.closed
    Phi, mean, S = _lyapunov(
        lambda t: np.array([[0.0, 1.0], [-3.0, -2.0]]),
        lambda t: np.array([0.0, 1.0]),
        lambda t: np.diag([0.25, 1.0]),
        TIMES,
    )
    t = torch.tensor(TIMES, dtype=torch.float64)
    np.testing.assert_allclose(sde.marginal.alpha(t).numpy(), Phi, atol=1e-10)
    np.testing.assert_allclose(sde.marginal.offset(t).numpy(), mean, atol=1e-10)
    np.testing.assert_allclose(sde.marginal.cov(t).numpy(), S, atol=1e-10)


@pytest.mark.parametrize("given", ["state", "data"])
def test_sample_log_prob_and_score_are_consistent(cld, given):
    m = cld.marginal
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(4, 2, 3, dtype=torch.float64, generator=g)
    t = torch.tensor([0.05, 0.2, 0.5, 1.0], dtype=torch.float64)
    x = m.sample(x0, t, generator=g, given=given)
    assert x.shape == x0.shape
    lp = m.log_prob(x, x0, t, given=given)
    mean, cov = m.mean(m.lift(x0[:, 0]) if given == "data" else x0, t), m.cov(t, given=given)
    for i in range(4):
        ref = multivariate_normal(mean[i].T[0] * 0, cov[i].numpy()).logpdf((x[i] - mean[i]).T.numpy()).sum()
        assert abs(float(lp[i]) - ref) < 1e-10
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(m.log_prob(xr, x0, t, given=given).sum(), xr)
    torch.testing.assert_close(m.score(x, x0, t, given=given), grad, rtol=1e-10, atol=1e-10)


def test_sample_moments_match_the_kernel(cld):
    # Monte-Carlo: n = 200,000 draws; mean within 5 standard errors, covariance entries within 5 sqrt(2/n) scale
    m = cld.marginal
    n = 200_000
    x0 = torch.zeros(n, 2, dtype=torch.float64)
    x0[:, 0] = 1.5
    t = 0.1
    x = m.sample(x0, t, generator=torch.Generator().manual_seed(7), given="data")
    cov = m.cov(t, given="data")
    sd = cov.diagonal().sqrt()
    np.testing.assert_allclose(x.mean(0).numpy(), m.mean(x0[:1], t)[0].numpy(), atol=float(5 * sd.max() / n**0.5))
    emp = torch.cov(x.T)
    scale = torch.outer(sd, sd)
    assert float(((emp - cov).abs() / scale).max()) < 5 * (2 / n) ** 0.5


def test_float32_states_and_devices_follow_the_input(cld):
    x0 = torch.zeros(3, 2, 4, dtype=torch.float32)
    x = cld.marginal.sample(x0, 0.5)
    assert x.dtype == torch.float32
    assert cld.marginal.score(x, x0, 0.5).dtype == torch.float32
    assert cld.marginal.log_prob(x, x0, 0.5).shape == (3,)
