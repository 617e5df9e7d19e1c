"""Derived Gaussian marginals vs exact answers: published closed forms (score_sde, EDM, OU, the cosine
schedule), quadrature where sympy finds none, transition kernels with an offset, prior and marginal sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

import sdekit

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


# ---------------------------------------------------------------- numeric marginals (no closed form)
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


# ---------------------------------------------------------------- transitions, prior and marginal sampling
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
