"""Derived marginals, Fokker–Planck, reverse SDE / PF-ODE and discretizations vs exact answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

import sdekit
from sdekit.symbolic.checks import chapman_kolmogorov, kernel_fokker_planck

F64 = torch.float64
times = st.floats(min_value=1e-5, max_value=1.0)


# ---------------------------------------------------------------- published closed forms
# score_sde_pytorch's marginal_prob, written out here as the check (never in sdekit/).
def vp_log_mean_coeff(t, b0, b1):
    return -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0


@settings(max_examples=40)
@given(b0=st.floats(0.01, 1.0), b1=st.floats(1.0, 30.0), t=times)
def test_vp_marginal_matches_score_sde(b0, b1, t):
    m = sdekit.VPSDE(beta_min=b0, beta_max=b1).marginal
    lmc = vp_log_mean_coeff(t, b0, b1)
    tt = torch.tensor([t], dtype=F64)
    # 1e-10: float64 round-off of a handful of exp/expm1 evaluations.
    assert m.alpha(tt).item() == pytest.approx(math.exp(lmc), rel=1e-10, abs=1e-12)
    assert m.sigma(tt).item() == pytest.approx(math.sqrt(-math.expm1(2 * lmc)), rel=1e-10)
    assert m.offset(tt).item() == 0.0


@settings(max_examples=40)
@given(b0=st.floats(0.01, 1.0), b1=st.floats(1.0, 30.0), t=times)
def test_subvp_marginal_matches_score_sde(b0, b1, t):
    m = sdekit.SubVPSDE(beta_min=b0, beta_max=b1).marginal
    lmc = vp_log_mean_coeff(t, b0, b1)
    tt = torch.tensor([t], dtype=F64)
    assert m.alpha(tt).item() == pytest.approx(math.exp(lmc), rel=1e-10)
    # score_sde: std = 1 - exp(2 lmc). At tiny t this is ~1e-10, so compare relatively.
    assert m.sigma(tt).item() == pytest.approx(-math.expm1(2 * lmc), rel=1e-8, abs=1e-14)


@settings(max_examples=40)
@given(smin=st.floats(1e-3, 0.5), ratio=st.floats(2.0, 1e4), t=times)
def test_ve_marginal_is_exact_variance(smin, ratio, t):
    smax = smin * ratio
    m = sdekit.VESDE(sigma_min=smin, sigma_max=smax).marginal
    tt = torch.tensor([t], dtype=F64)
    # score_sde uses std = smin (smax/smin)^t; the SDE implies the exact variance
    # smin^2 (smax/smin)^(2t) - smin^2 (the kernel starts at a point mass at t = 0).
    exact_var = smin**2 * math.expm1(2 * t * math.log(ratio))
    assert m.alpha(tt).item() == 1.0
    assert m.sigma2(tt).item() == pytest.approx(exact_var, rel=1e-10)


def test_edm_and_ou_closed_forms():
    tt = torch.linspace(0.01, 80, 9, dtype=F64)
    assert torch.allclose(sdekit.EDMSDE().marginal.sigma(tt), tt, rtol=1e-12)
    ou = sdekit.OrnsteinUhlenbeck(theta=2.0, sigma=0.5).marginal
    tt = torch.linspace(0.01, 5, 9, dtype=F64)
    assert torch.allclose(ou.alpha(tt), torch.exp(-2 * tt), rtol=1e-12)
    assert torch.allclose(ou.sigma2(tt), 0.25 * (1 - torch.exp(-4 * tt)) / 4, rtol=1e-12)


def test_cosine_schedule_alpha_matches_nichol_dhariwal():
    sde = sdekit.CosineVPSDE()
    s = 0.008
    tt = torch.linspace(0.0, sde.T, 11, dtype=F64)
    f = torch.cos((tt + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    assert torch.allclose(sde.marginal.alpha(tt) ** 2, f, rtol=1e-10)
    assert torch.allclose(sde.marginal.sigma2(tt), 1 - f, rtol=1e-9, atol=1e-14)


# ---------------------------------------------------------------- Fokker–Planck
ZOO = [
    sdekit.VPSDE,
    sdekit.SubVPSDE,
    sdekit.VESDE,
    sdekit.CosineVPSDE,
    sdekit.EDMSDE,
    sdekit.OrnsteinUhlenbeck,
    sdekit.BrownianMotion,
]


@pytest.mark.parametrize("cls", ZOO, ids=lambda c: c.__name__)
def test_zoo_kernel_solves_fokker_planck(cls):
    result = kernel_fokker_planck(cls())
    assert result.passed, result
    if cls is not sdekit.CosineVPSDE:  # trig identities of the cosine schedule: decided numerically
        assert result.symbolic, result.residuals


@pytest.mark.parametrize("cls", ZOO, ids=lambda c: c.__name__)
def test_zoo_transitions_compose(cls):
    assert chapman_kolmogorov(cls()).passed


def _rational(v: float) -> sp.Rational:
    return sp.Rational(round(v * 100), 100)


@st.composite
def affine_declarations(draw):
    """Random affine SDEs with polynomial or exponential schedules and exact rational coefficients.

    Families: OU-like (constant a, time-dependent forcing and noise), VP-like with a polynomial or
    exponential rate (g^2 proportional to -a), and VE-like (a = 0).
    """
    tt, xx = sdekit.t, sdekit.x
    c0, c1, c2 = (_rational(draw(st.floats(0.1, 3.0))) for _ in range(3))
    family = draw(st.sampled_from(["ou", "vp-poly", "vp-exp", "ve"]))
    if family == "ou":
        b = draw(st.sampled_from([sp.S.Zero, c2, c2 * tt]))
        g = draw(st.sampled_from([sp.sqrt(c1 + c2 * tt), c1 * sp.exp(c2 * tt), c1 * (1 + tt)]))
        return sdekit.SDE.from_expressions(-c0 * xx + b, g)
    if family == "vp-poly":
        rate = c0 + c1 * tt ** draw(st.sampled_from([1, 2, 3]))
    elif family == "vp-exp":
        rate = c0 * sp.exp(c1 * tt)
    else:
        g = draw(st.sampled_from([c1 * sp.exp(c2 * tt), sp.sqrt(c1 + c2 * tt**2)]))
        return sdekit.SDE.from_expressions(sp.S.Zero, g)
    return sdekit.SDE.from_expressions(-rate * xx / 2, sp.sqrt(c2 * rate))


@settings(max_examples=8)
@given(sde=affine_declarations())
def test_random_affine_kernels_solve_fokker_planck(sde):
    result = kernel_fokker_planck(sde)
    assert result.passed, (sde.f, sde.g, result)


def test_numeric_marginal_matches_quadrature():
    # alpha(t) = exp(-int_0^t e^{u^2} du), sigma^2(t) = int_0^t exp(-2 int_s^t e^{u^2} du) g^2 ds.
    sde = sdekit.SDE.from_expressions("-exp(t**2)*x", "sigma*(1 + t)", sigma=0.7)
    m = sde.marginal
    assert not m.closed  # sympy finds no closed form for the variance integral

    def A(t):
        return quad(lambda u: math.exp(u * u), 0, t, epsabs=1e-14, epsrel=1e-13)[0]

    for t in (1e-4, 0.1, 0.37, 0.8, 1.0):
        alpha = math.exp(-A(t))
        var = quad(lambda s: math.exp(-2 * (A(t) - A(s))) * (0.7 * (1 + s)) ** 2, 0, t, epsabs=1e-14, epsrel=1e-12)[0]
        tt = torch.tensor(t, dtype=F64)
        # 1e-8 relative: the bar; Hermite interpolation error is ~h^4 f''''/384 ~ 1e-13.
        assert m.alpha(tt).item() == pytest.approx(alpha, rel=1e-8)
        assert m.sigma2(tt).item() == pytest.approx(var, rel=1e-8)


def test_numeric_marginal_is_differentiable_and_float32():
    sde = sdekit.SDE.from_expressions("-exp(t**2)*x", "1")
    tt = torch.tensor([0.3, 0.6], dtype=F64, requires_grad=True)
    a = sde.marginal.alpha(tt)
    (g,) = torch.autograd.grad(a.sum(), tt)
    # d alpha / dt = a(t) alpha(t) = -exp(t^2) alpha(t)
    expected = -torch.exp(tt.detach() ** 2) * a.detach()
    assert torch.allclose(g, expected, rtol=1e-6)
    assert sde.marginal.sigma(torch.tensor([0.5], dtype=torch.float32)).dtype == torch.float32


# ---------------------------------------------------------------- reverse SDE and PF-ODE
def test_reverse_and_pf_include_divergence_term():
    sde = sdekit.SDE.from_expressions("-x", "sqrt(1 + x**2)")
    assert sde.noise_type == "diagonal" and not sde.is_affine

    def score(x, t):
        return -x * (1 + t[:, None])

    x = torch.linspace(-3, 3, 14, dtype=F64).reshape(7, 2)
    t = torch.full((7,), 0.4, dtype=F64)
    s = score(x, t)
    # Hand-derived: d(g^2)/dx = 2x.
    rev = -x - 2 * x - (1 + x**2) * s
    pf = -x - x - 0.5 * (1 + x**2) * s
    assert torch.allclose(sde.reverse(score).drift(x, t), rev, rtol=1e-14)
    assert torch.allclose(sde.reverse(score).diffusion(x, t), torch.sqrt(1 + x**2), rtol=1e-14)
    assert torch.allclose(sde.probability_flow(score).drift(x, t), pf, rtol=1e-14)
    # Symbolic score: same formulas as sympy expressions.
    xs, ts = sdekit.x, sdekit.t
    sym = sde.reverse(-xs * (1 + ts))
    assert sp.simplify(sym.f - (-xs - 2 * xs + (1 + xs**2) * xs * (1 + ts))) == 0
    assert sp.simplify(sde.probability_flow(-xs).f - (-2 * xs + (1 + xs**2) * xs / 2)) == 0


def test_reverse_of_additive_sde_has_no_divergence():
    sde = sdekit.VPSDE()
    x = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    t = torch.rand(5, dtype=F64, generator=torch.Generator().manual_seed(1))
    beta = 0.1 + t[:, None] * 19.9
    drift = sde.reverse(lambda x, t: -x).drift(x, t)
    assert torch.allclose(drift, -0.5 * beta * x + beta * x, rtol=1e-13)


# ---------------------------------------------------------------- discretization
def test_vp_betas_approach_beta_t_over_n_and_compose():
    sde = sdekit.VPSDE()
    errs = []
    for n in (100, 200, 400, 800):
        d = sde.discretize(n)
        beta_t = 0.1 + d.times[:-1] * 19.9
        errs.append((d.betas - beta_t / n).abs().max().item())
        # Exact composition: product of scales = alpha(T); propagated variance = sigma(T)^2.
        assert torch.prod(d.scale).item() == pytest.approx(sde.marginal.alpha(1.0).item(), rel=1e-10)
        var = torch.zeros((), dtype=F64)
        for a, c in zip(d.scale, d.noise):
            var = a**2 * var + c**2
        assert var.item() == pytest.approx(sde.marginal.sigma2(1.0).item(), rel=1e-10)
    ratios = [errs[i] / errs[i + 1] for i in range(len(errs) - 1)]
    # O(1/n^2): halving the step divides the error by ~4.
    assert all(3.5 < r < 4.5 for r in ratios), (errs, ratios)


def test_ve_discretization_adds_the_marginal_variance_differences():
    sde = sdekit.VESDE()
    d = sde.discretize(10)
    sig2 = sde.marginal.sigma2(d.times)
    assert torch.allclose(d.noise**2, sig2[1:] - sig2[:-1], rtol=1e-12)
    assert torch.all(d.scale == 1) and torch.all(d.shift == 0)


def _doc_number(x: float, digits: int) -> str:
    """x as the Discretization docstring writes it: 1.0994e-4 (no zero-padded exponent)."""
    return f"{x:.{digits}e}".replace("e-0", "e-")


def test_vp_betas_are_the_exact_transitions_not_ddpm_table():
    # Discretization's docstring: betas_i = 1 - exp(-int_{t_i}^{t_{i+1}} beta), alpha-bar_i = alpha(t_{i+1})^2, and
    # DDPM's linspace(1e-4, 0.02, 1000) is beta(i/999)/1000, a different table; the numbers it quotes are these.
    n = 1000
    d = sdekit.VPSDE().discretize(n)
    t = d.times

    def integral(a, b):  # int_a^b beta(s) ds for beta(s) = 0.1 + 19.9 s, closed form
        return 0.1 * (b - a) + 19.9 * (b**2 - a**2) / 2

    # 1 - a^2 with beta ~ 1e-4 loses 4 of float64's 16 digits: relative round-off ~1e-12, bound 1e-10
    assert torch.allclose(d.betas, -torch.expm1(-integral(t[:-1], t[1:])), rtol=1e-10, atol=0)
    abar = torch.cumprod(1 - d.betas, 0)
    assert torch.allclose(abar, torch.exp(-integral(0.0, t[1:])), rtol=1e-10, atol=0)
    ddpm = torch.linspace(1e-4, 0.02, n, dtype=F64)
    assert torch.allclose(ddpm, (0.1 + 19.9 * torch.arange(n, dtype=F64) / (n - 1)) / n, rtol=1e-12)
    ddpm_abar = torch.cumprod(1 - ddpm, 0)
    rel_beta = (d.betas - ddpm).abs() / ddpm
    rel_abar = (abar - ddpm_abar).abs() / ddpm_abar
    # the largest beta difference is the first step's: the integral over [0, 1/n] against beta(0)/n
    first = -math.expm1(-integral(0.0, 1 / n)) / 1e-4 - 1
    assert int(rel_beta.argmax()) == 0 and rel_beta.max().item() == pytest.approx(first, rel=1e-9)
    assert int(rel_abar.argmax()) == n - 1  # the differences compound: largest at the last step
    doc = sdekit.Discretization.__doc__
    assert f"up to {100 * first:.1f}% per beta" in doc
    assert f"the first, {_doc_number(d.betas[0].item(), 4)} against 1e-4" in doc
    assert f"the last by {100 * rel_beta[-1].item():.1f}%" in doc
    assert f"up to {100 * rel_abar.max().item():.1f}% in" in doc
    assert f"{_doc_number(abar[-1].item(), 4)} against {_doc_number(ddpm_abar[-1].item(), 4)}" in doc


def test_ve_discretization_starts_from_the_data_not_at_sigma_min():
    # Discretization's docstring: each step adds the difference of the geometric table sigma(t)^2, but the chain
    # starts from the data (variance 0), not from SMLD's smallest level sigma_min; its numbers are these.
    smin, smax, n = 0.01, 50.0, 1000
    d = sdekit.VESDE().discretize(n)
    sigma = smin * (smax / smin) ** d.times
    assert torch.allclose(d.noise**2, sigma[1:] ** 2 - sigma[:-1] ** 2, rtol=1e-10, atol=0)
    assert torch.allclose(torch.cumsum(d.noise**2, 0), sigma[1:] ** 2 - smin**2, rtol=1e-10, atol=0)
    first = smin * math.sqrt((smax / smin) ** (2 / n) - 1)
    assert d.noise[0].item() == pytest.approx(first, rel=1e-10)
    assert first < smin  # the first step is not SMLD's sigma_min
    doc = sdekit.Discretization.__doc__
    assert f"{_doc_number(first, 3)} for n = 1000" in doc
    assert f"{smin / first:.1f} times below sigma_min" in doc


def test_transition_with_offset():
    sde = sdekit.SDE.from_expressions("-theta*x + c*t", "sigma", theta=1.5, c=2.0, sigma=0.5)
    m = sde.marginal
    s, t = 0.2, 0.7
    k = m.transition(torch.tensor(s, dtype=F64), torch.tensor(t, dtype=F64))
    # OU with linear forcing: r = e^{-theta (t-s)}, shift = m(t) - r m(s), var = sigma^2 (1 - r^2)/(2 theta).
    r = math.exp(-1.5 * (t - s))
    assert k.alpha.item() == pytest.approx(r, rel=1e-12)
    assert k.sigma.item() ** 2 == pytest.approx(0.25 * (1 - r * r) / 3.0, rel=1e-10)

    def mean(t):  # solves m' = -1.5 m + 2 t, m(0) = 0
        return 2 * (t / 1.5 - 1 / 1.5**2 + math.exp(-1.5 * t) / 1.5**2)

    assert m.offset(torch.tensor(t, dtype=F64)).item() == pytest.approx(mean(t), rel=1e-12)
    assert k.offset.item() == pytest.approx(mean(t) - r * mean(s), rel=1e-10)


def test_prior_and_marginal_sampling_shapes():
    sde = sdekit.VESDE()
    g = torch.Generator().manual_seed(0)
    z = sde.prior.sample((4000, 2), generator=g, dtype=F64)
    # std(T) = sqrt(50^2 - 0.01^2); sample std within 5 sigma of MC error (se ~ std / sqrt(2n)).
    se = 50 / math.sqrt(2 * z.numel())
    assert abs(z.std().item() - 50) < 5 * se
    lp = sde.prior.log_prob(z)
    assert lp.shape == (4000,)
    x0 = torch.zeros(3, 2, 2, dtype=F64)
    xt = sde.marginal.sample(x0, torch.tensor([0.1, 0.5, 1.0], dtype=F64), generator=g)
    assert xt.shape == x0.shape
    lp = sde.marginal.log_prob(xt, x0, torch.tensor([0.1, 0.5, 1.0], dtype=F64))
    sig = sde.marginal.sigma(torch.tensor([0.1, 0.5, 1.0], dtype=F64))
    expected = (-0.5 * xt**2 / sig[:, None, None] ** 2).sum((1, 2)) - 4 * torch.log(sig) - 2 * math.log(2 * math.pi)
    assert torch.allclose(lp, expected, rtol=1e-12)
    np.testing.assert_allclose(
        sde.marginal.score(xt, x0, 0.5).numpy(), (-xt / sde.marginal.sigma2(0.5)).numpy(), rtol=1e-12
    )


def test_not_affine_error_says_why():
    sde = sdekit.SDE.from_expressions("x - x**3", "1")
    with pytest.raises(sdekit.errors.NotAffineError, match="not affine in x"):
        sde.marginal
    sde = sdekit.SDE.from_expressions("-x", "sqrt(1 + x**2)")
    with pytest.raises(sdekit.errors.NotAffineError, match="depends on x"):
        sde.prior


def test_latex_mentions_derived_objects():
    text = sdekit.VPSDE().latex()
    assert r"\alpha(t)" in text and "PF-ODE" in text and "reverse" in text


@pytest.mark.parametrize(
    "sde", [sdekit.VPSDE(), sdekit.CosineVPSDE(), sdekit.SDE.from_expressions("-x", "sqrt(1 + x**2)")], ids=repr
)
def test_repr_of_reverse_and_probability_flow_shows_the_simplified_equation(sde):
    def my_score(x, t):
        return -x

    s_theta, x = sp.Symbol("s_theta"), sdekit.x
    g2 = sde.g**2
    for obj, k in ((sde.reverse(my_score), 1), (sde.probability_flow(my_score), sp.Rational(1, 2))):
        shown = obj.displayed_drift()
        written = sde.f - k * sp.diff(g2, x) - k * g2 * s_theta  # Anderson / Song et al., written out here
        assert sp.simplify(shown - written) == 0
        assert sp.count_ops(shown) <= sp.count_ops(written)  # displayed simplified, not longer than the raw form
        text = repr(obj)
        assert text.startswith(f"{type(obj).__name__} of {sde!r}: ")
        assert str(shown) in text and "s_theta = my_score(x, t)" in text
    assert "dW_bar" in repr(sde.reverse(my_score)) and "dx/dt" in repr(sde.probability_flow(my_score))
