"""Declaring SDEs: parameters, overrides, one-liners and every declaration error."""

from __future__ import annotations

import pytest
import sympy as sp

import sdekit
from sdekit.errors import SDEDeclarationError


class TimeVaryingOU(sdekit.SDE):
    theta = 1.0
    sigma = 0.5

    def drift(self, x, t):
        return -self.theta * (1 + t) * x

    def diffusion(self, x, t):
        return self.sigma * sp.sqrt(1 + t)


def test_parameters_and_overrides():
    sde = TimeVaryingOU(theta=2.0)
    assert sde.params == {"theta": 2.0, "sigma": 0.5}
    assert sde.theta == 2.0 and sde.T == 1.0
    assert TimeVaryingOU(T=3).T == 3.0
    assert sde.is_affine and sde.noise_type == "additive"
    theta = sde.symbols["theta"]
    assert sp.simplify(sde.marginal.alpha_expr - sp.exp(-theta * (sdekit.t + sdekit.t**2 / 2))) == 0
    assert "TimeVaryingOU(theta=2.0, sigma=0.5, T=1)" == repr(sde)


def test_from_expressions():
    ou = sdekit.SDE.from_expressions("-theta*x", "sigma", theta=1.0, sigma=0.5, T=2.0)
    assert ou.T == 2.0 and ou.params == {"theta": 1.0, "sigma": 0.5}
    assert ou.marginal.prior.std == pytest.approx(0.5 * ((1 - pytest.importorskip("math").exp(-4)) / 2) ** 0.5)


def make(drift=None, diffusion=None, **attrs):
    body = dict(attrs)
    if drift is not None:
        body["drift"] = lambda self, x, t: drift(self, x, t)
    if diffusion is not None:
        body["diffusion"] = lambda self, x, t: diffusion(self, x, t)
    return type("Bad", (sdekit.SDE,), body)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: make(diffusion=lambda s, x, t: 1)(), "does not define drift"),
        (lambda: make(drift=lambda s, x, t: -x)(), "does not define diffusion"),
        (lambda: make(drift=lambda s, x, t: object(), diffusion=lambda s, x, t: 1)(), "not a sympy expression"),
        (lambda: make(drift=lambda s, x, t: -x * sp.Symbol("k"), diffusion=lambda s, x, t: 1)(), "unknown symbol"),
        (lambda: make(drift=lambda s, x, t: -x, diffusion=lambda s, x, t: x - x)(), "identically zero"),
        (lambda: make(drift=lambda s, x, t: -s.a * x, diffusion=lambda s, x, t: 1, a=1.0)(b=2), "unknown keyword"),
        (lambda: make(drift=lambda s, x, t: -s.a * x, diffusion=lambda s, x, t: 1, a=1.0)(a="big"), "not a finite"),
        (lambda: make(drift=lambda s, x, t: -s.a * x, diffusion=lambda s, x, t: 1, a="1")(), "not a finite"),
        (lambda: make(drift=lambda s, x, t: -x, diffusion=lambda s, x, t: 1)(T=0), "positive"),
        (lambda: make(drift=lambda s, x, t: -x, diffusion=lambda s, x, t: 1)(T=-1.0), "positive"),
        (lambda: make(drift=lambda s, x, t: -s.missing * x, diffusion=lambda s, x, t: 1)(), "missing"),
        (lambda: sdekit.SDE.from_expressions("-x*", "1"), "cannot parse"),
    ],
)
def test_declaration_errors(factory, match):
    with pytest.raises(SDEDeclarationError, match=match):
        factory()


def test_declaration_error_is_value_error():
    assert issubclass(SDEDeclarationError, ValueError)


def test_exact_sympy_parameters():
    ou = sdekit.OrnsteinUhlenbeck()
    assert ou.sigma == sp.sqrt(2)
    assert ou.marginal.prior.std == pytest.approx((1 - pytest.importorskip("math").exp(-10)) ** 0.5)
