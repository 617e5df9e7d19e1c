"""Declaring SDEs (:mod:`sdekit.symbolic.sde`): parameters, overrides, one-liners, every declaration error,
pickling, and a piecewise state-dependent diffusion."""

from __future__ import annotations

import pickle

import pytest
import sympy as sp
import torch

import sdekit
from sdekit.errors import NotAffineError, SDEDeclarationError


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


# ---------------------------------------------------------------- default_eps and parameter values
def test_default_eps_outside_zero_T_is_a_declaration_error():
    class LateEps(sdekit.SDE):
        default_eps = 2.0

        def drift(self, x, t):
            return -x

        def diffusion(self, x, t):
            return 1

    with pytest.raises(SDEDeclarationError, match="default_eps"):
        LateEps()


def test_default_eps_is_a_per_instance_keyword():
    sde = sdekit.EDMSDE(T=80.0, default_eps=0.01)
    assert sde.default_eps == 0.01 and sdekit.EDMSDE.default_eps == 0.002 and sdekit.EDMSDE().default_eps == 0.002
    assert repr(sde) == "EDMSDE(T=80, default_eps=0.01)" and repr(sdekit.EDMSDE()) == "EDMSDE(T=80)"
    assert pickle.loads(pickle.dumps(sde)).default_eps == 0.01
    assert "default_eps" not in sde.params
    for bad in (0.0, 80.0, "0.1", True):
        with pytest.raises(SDEDeclarationError, match="default_eps"):
            sdekit.EDMSDE(default_eps=bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: sdekit.OrnsteinUhlenbeck(sigma=0),
        lambda: sdekit.SDE.from_expressions("-x", "sigma", sigma=0.0),
        lambda: sdekit.VESDE(sigma_min=1.0, sigma_max=1.0),
    ],
    ids=["ou-sigma0", "from_expressions-sigma0", "ve-equal-sigmas"],
)
def test_zero_diffusion_after_parameter_values_is_a_declaration_error(make):
    # Today these build; sample() then returns exact zeros and losses.dsm returns inf.
    with pytest.raises(SDEDeclarationError, match="zero"):
        make()


# ---------------------------------------------------------------- pickling
def test_an_sde_still_pickles_after_it_has_been_used():
    # A fresh SDE pickles (DataLoader workers under spawn, torch.save of a checkpoint dict, multiprocessing);
    # after one drift_fn call it raised PicklingError "Can't pickle <function _compiled ...>".
    import pickle

    sde = sdekit.OrnsteinUhlenbeck()
    x = torch.ones(2, 1, dtype=torch.float64)
    before = pickle.loads(pickle.dumps(sde)).drift_fn(x, 0.5)
    sde.drift_fn(x, 0.5)
    after = pickle.loads(pickle.dumps(sde)).drift_fn(x, 0.5)
    assert torch.equal(before, after)


# ---------------------------------------------------------------- a piecewise, state-dependent diffusion
class _RegimeVol(sdekit.SDE):
    """OU drift with a state-dependent, piecewise-constant volatility (regime switching at x = 0)."""

    s1 = 1.0
    s2 = 2.0

    def drift(self, x, t):
        return -x

    def diffusion(self, x, t):
        return sp.Piecewise((self.s1, x > 0), (self.s2, True))


def test_piecewise_state_dependent_diffusion_is_not_affine():
    sde = _RegimeVol()
    g = sde.diffusion_fn(torch.tensor([[-1.0], [1.0]]), 0.5).flatten().tolist()
    assert g == [2.0, 1.0]  # the noise does depend on x
    assert not sde.is_affine
    assert sde.noise_type == "diagonal"
    with pytest.raises(NotAffineError):  # today: sympy PolynomialError from the marginal derivation
        sde.marginal


def test_latex_of_a_piecewise_state_dependent_diffusion():
    assert "Piecewise" in _RegimeVol().latex() or r"\begin{cases}" in _RegimeVol().latex()


# ----------------------------------------------------------------- issue #19 point 4: refused at declaration
def _declare(name: str, attrs: dict, drift=lambda self, x, t: -x, diffusion=lambda self, x, t: sp.Integer(1)):
    return type(name, (sdekit.SDE,), {**attrs, "drift": drift, "diffusion": diffusion})


@pytest.mark.parametrize("member", ["prior", "marginal", "reverse", "params", "f", "g", "is_affine", "noise_type"])
def test_a_parameter_that_shadows_a_member_is_refused_at_declaration(member):
    cls = _declare("Shadow", {member: 1.0})
    with pytest.raises(SDEDeclarationError, match=rf"Shadow\.{member} = 1\.0 replaces the SDE member '{member}'") as e:
        cls()
    assert f"rename the parameter, e.g. to {member}_" in str(e.value)


@pytest.mark.parametrize(
    ("drift", "shown"),
    [
        (lambda self, x, t: -sp.Function("h")(t) * x, "h(t)"),
        (lambda self, x, t: -sp.besselj(0, t) * x, "besselj(0, t)"),
        (lambda self, x, t: -sp.floor(t) * x, "floor(t)"),
    ],
)
def test_an_expression_that_cannot_be_compiled_is_refused_at_declaration(drift, shown):
    with pytest.raises(SDEDeclarationError, match="cannot be compiled to torch code") as e:
        _declare("Uncompilable", {}, drift=drift)()
    assert str(e.value).startswith("Uncompilable.drift = ") and shown in str(e.value)
    assert "supported are" in str(e.value)  # says what to write instead


def test_a_time_coefficient_that_is_nowhere_finite_is_refused_at_declaration():
    with pytest.raises(SDEDeclarationError, match=r"Nowhere\.diffusion = sqrt\(t - 2\) is not finite"):
        _declare("Nowhere", {}, diffusion=lambda self, x, t: sp.sqrt(t - 2))()


def test_state_dependent_expressions_on_a_restricted_domain_are_accepted():
    """sqrt(x - 4) is NaN at every probe state but is a valid diffusion on x > 4: the probe does not judge x."""
    sde = sdekit.SDE.from_expressions("-x", "sqrt(x - 4)")
    assert sde.noise_type == "diagonal"


def test_the_declaration_compiles_once_and_keeps_the_functions():
    sde = sdekit.VPSDE()
    assert "drift_fn" in vars(sde) and "diffusion_fn" in vars(sde)
    x = torch.ones(3, 2, dtype=torch.float64)
    t = torch.full((3,), 0.5, dtype=torch.float64)
    beta = 0.1 + 0.5 * (20 - 0.1)  # VP's published beta(t) = beta_min + t (beta_max - beta_min)
    torch.testing.assert_close(sde.drift_fn(x, t), -0.5 * beta * x, rtol=1e-15, atol=0)
