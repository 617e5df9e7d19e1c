"""sdekit.testing's symbolic assertions (:mod:`sdekit.testing._symbolic`): assert_fokker_planck,
assert_chapman_kolmogorov and assert_reverse_consistent pass on right and fail readably on wrong SDEs."""

from __future__ import annotations

import types

import pytest
import sympy as sp
import torch
from _partial_domain import CIR as _CIR
from hypothesis import HealthCheck, given, settings

import sdekit
from sdekit import testing
from sdekit import testing as sdt
from sdekit.symbolic import derive


# ---------------------------------------------------------------- symbolic assertions: right and wrong
def test_fokker_planck_passes_and_fails_readably():
    assert sdt.assert_fokker_planck(sdekit.SDE.from_expressions("-(1 + t)*x", "sqrt(2)")).symbolic
    # A wrong marginal for dx = -x dt + sqrt(2) dW: variance 1 - e^{-t} instead of 1 - e^{-2t}.
    sde = sdekit.SDE.from_expressions("-x", "sqrt(2)")
    m = sde.marginal
    sde.__dict__["marginal"] = types.SimpleNamespace(
        alpha_expr=m.alpha_expr, offset_expr=m.offset_expr, sigma2_expr=1 - sp.exp(-sdekit.t)
    )
    with pytest.raises(AssertionError, match=r"(?s)kernel.*does not solve.*SDE: CustomSDE"):
        sdt.assert_fokker_planck(sde)


def test_fokker_planck_with_a_user_density_for_a_nonaffine_sde():
    # Reversible diffusion with stationary N(0, 1): g^2 = 1 + x^2, f = (g^2)'/2 + g^2 (log p)'/2 = x/2 - x^3/2.
    sde = sdekit.SDE.from_expressions("x/2 - x**3/2", "sqrt(1 + x**2)")
    assert sdt.assert_fokker_planck(sde, p="exp(-x**2/2)").symbolic
    with pytest.raises(AssertionError, match=r"p = exp\(-x\*\*2\) does not solve"):
        sdt.assert_fokker_planck(sde, p="exp(-x**2)")
    with pytest.raises(ValueError, match="not affine"):
        sdt.assert_fokker_planck(sde)


def test_chapman_kolmogorov_passes_and_fails_readably(monkeypatch):
    sde = sdekit.VPSDE()
    assert sdt.assert_chapman_kolmogorov(sde).passed
    from sdekit._marginal import GaussianMarginal

    def wrong_transition(self):  # variance sigma^2(t) - sigma^2(s): forgets the r^2 factor
        r = self.alpha_expr / self.alpha_expr.subs(sdekit.t, derive_s())
        return r, sp.S.Zero, self.sigma2_expr - self.sigma2_expr.subs(sdekit.t, derive_s())

    monkeypatch.setattr(GaussianMarginal, "transition_expr", wrong_transition)
    with pytest.raises(AssertionError, match=r"(?s)kernels s->u->t and s->t disagree.*variance"):
        sdt.assert_chapman_kolmogorov(sdekit.VPSDE())


def derive_s():
    from sdekit.symbolic._symbols import s

    return s


NONADDITIVE = "-x + sin(x)/2"


def test_reverse_consistent_on_drawn_sdes():
    @settings(max_examples=6, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(sdt.sdes(affine=False))
    def check(sde):
        sdt.assert_reverse_consistent(sde)

    check()
    sdt.assert_reverse_consistent(sdekit.SDE.from_expressions(NONADDITIVE, "sqrt(1 + x**2)*(1 + t)"))


def test_reverse_missing_divergence_term_fails(monkeypatch):
    sde = sdekit.SDE.from_expressions(NONADDITIVE, "sqrt(1 + x**2)")
    monkeypatch.setattr(derive, "reverse_drift", lambda f, g, s: f - g**2 * s)  # Anderson without d(g^2)/dx
    with pytest.raises(AssertionError, match=r"(?s)reverse SDE: .*expected f - d\(g\^2\)/dx - g\^2 \* score"):
        sdt.assert_reverse_consistent(sde)


def test_probability_flow_with_reverse_weight_fails(monkeypatch):
    sde = sdekit.SDE.from_expressions(NONADDITIVE, "1 + t")
    monkeypatch.setattr(derive, "probability_flow_drift", lambda f, g, s: f - g**2 * s)  # factor 1, not 1/2
    with pytest.raises(AssertionError, match=r"probability flow: -d\(v p\)/dx != forward dp/dt"):
        sdt.assert_reverse_consistent(sde)


def test_torch_reverse_drift_missing_divergence_fails():
    sde = sdekit.SDE.from_expressions(NONADDITIVE, "sqrt(1 + x**2)")
    sde.__dict__["dg2_dx_fn"] = lambda x, t: torch.zeros_like(x)  # compiled path drops d(g^2)/dx
    with pytest.raises(AssertionError, match=r"torch reverse drift \(callable score\) differs"):
        sdt.assert_reverse_consistent(sde)


def test_reverse_consistent_skips_points_outside_the_sdes_domain():
    # g^2 = sqrt(x)/4 is NaN for x < 0: those points are skipped, the identities are still proved
    result = sdt.assert_reverse_consistent(sdekit.SDE.from_expressions("2*(1 - x)", "x**(1/4)/2"))
    assert result.reverse.symbolic and result.probability_flow.symbolic
    with pytest.raises(ValueError, match=r"finite at only \d+ of .* needs at least"):  # defined on x >= 2.9 only
        sdt.assert_reverse_consistent(sdekit.SDE.from_expressions("1 - x", "sqrt(x - 2.9)"))


# ---------------------------------------------------------------- densities spelled with parameter names
def test_assert_fokker_planck_string_density_with_parameter_names():
    # The stationary density of dx = -theta x dt + sigma dW is N(0, sigma^2 / (2 theta)); with the SDE's own
    # symbols the check proves it (below), with the names in a string it raised TypeError ("Cannot convert
    # expression to float") because theta and sigma stay free symbols.
    ou = sdekit.OrnsteinUhlenbeck()
    assert testing.assert_fokker_planck(ou, "exp(-theta*x**2/sigma**2)").passed


def test_assert_fokker_planck_density_with_the_sdes_own_symbols():
    """Control for the test above (passes today)."""
    ou = sdekit.OrnsteinUhlenbeck()
    theta, sigma = ou.symbols["theta"], ou.symbols["sigma"]
    assert testing.assert_fokker_planck(ou, sp.exp(-theta * sdekit.x**2 / sigma**2)).symbolic


# ---------------------------------------------------------------- SDEs defined on part of the line
def test_assert_reverse_consistent_passes_on_an_sde_defined_for_positive_x():
    # The symbolic identities hold (proved); only the torch grid on x in [-3, 3] hits NaN = NaN -> "differs by nan".
    result = testing.assert_reverse_consistent(_CIR())
    assert result.reverse.passed and result.probability_flow.passed
