"""Derived objects of a declared SDE vs exact answers: kernels that solve Fokker–Planck and compose, the
reverse SDE / PF-ODE with their divergence terms, ``sde.fokker_planck``, not-affine errors and the displays."""

from __future__ import annotations

import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdekit
from sdekit.symbolic.checks import chapman_kolmogorov, kernel_fokker_planck

F64 = torch.float64


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


# ---------------------------------------------------------------- sde.fokker_planck with user symbols
@pytest.mark.parametrize(
    "density",
    ["exp(-x**2/2)", sp.exp(-(sp.Symbol("x") ** 2) / 2)],
    ids=["string", "plain-Symbol-x"],
)
def test_fokker_planck_accepts_user_spelled_x(density):
    # N(0, 1) is stationary for dx = -x dt + sqrt(2) dW; today x is treated as a constant and the
    # residual comes out as -exp(-x**2/2) (silently wrong).
    ou = sdekit.OrnsteinUhlenbeck()
    assert sp.simplify(ou.subs(ou.fokker_planck(density))) == 0


def test_fokker_planck_with_sdekit_x_is_zero_for_the_stationary_density():
    """Control for the test above (passes today)."""
    ou = sdekit.OrnsteinUhlenbeck()
    assert sp.simplify(ou.subs(ou.fokker_planck(sp.exp(-(sdekit.x**2) / 2)))) == 0


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


# ---------------------------------------------------------------- errors and displays
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
