"""sdekit.testing on k-component SDEs: the kit runs on CLD and on drawn 2-component affine SDEs, and catches broken
k-component declarations (a wrong kernel covariance, a wrong reverse drift, samples or likelihoods of the wrong law)."""

from __future__ import annotations

import types

import pytest
import sympy as sp
import torch
from hypothesis import HealthCheck, given, settings

import sdekit
from sdekit import analytic
from sdekit import testing as sdt
from sdekit._vector import VectorReverseSDE
from sdekit.symbolic.sde import SDE

DT = torch.float64
FEW = settings(max_examples=4, derandomize=True, deadline=None, database=None,
               suppress_health_check=list(HealthCheck))  # fmt: skip


def _oracle() -> tuple[sdekit.SDE, object]:
    sde = sdekit.CLDSDE()
    gm = analytic.GaussianMixture(torch.tensor([[1.0, -1.0], [-1.5, 0.5]]), stds=torch.tensor([0.5, 0.3]))
    return sde, gm.diffuse(sde)


# ---------------------------------------------------------------- symbolic assertions on CLD
def test_symbolic_assertions_pass_on_cld() -> None:
    sde = sdekit.CLDSDE()
    assert sdt.assert_fokker_planck(sde).symbolic
    check = sdt.assert_reverse_consistent(sde)
    assert check.reverse.symbolic and check.probability_flow.symbolic and check.max_torch_error < 1e-12
    # CLD's equilibrium N(0, 1) x N(0, M), M = 1/4, as a user density; a wrong velocity variance fails
    assert sdt.assert_fokker_planck(sde, p="exp(-x**2/2 - 2*v**2)").symbolic
    with pytest.raises(AssertionError, match=r"(?s)p = .* does not solve.*SDE: CLDSDE"):
        sdt.assert_fokker_planck(sde, p="exp(-x**2/2 - v**2)")
    with pytest.raises(ValueError, match="scalar kernels"):
        sdt.assert_chapman_kolmogorov(sde)


def test_a_wrong_kernel_covariance_is_caught() -> None:
    sde = sdekit.CLDSDE()
    m = sde.marginal
    sde.__dict__["marginal"] = types.SimpleNamespace(
        closed=True, alpha_expr=m.alpha_expr, offset_expr=m.offset_expr, cov_expr=m.cov_expr * sp.Rational(101, 100)
    )
    with pytest.raises(AssertionError, match=r"(?s)derived Gaussian kernel .* does not solve.*SDE: CLDSDE"):
        sdt.assert_fokker_planck(sde)


class _HalfScore(VectorReverseSDE):
    _k = sp.Rational(1, 2)  # the reverse drift with the probability flow's f - 1/2 D s: a wrong reverse SDE


class _BrokenReverseCLD(sdekit.CLDSDE):
    def reverse(self, score):
        return _HalfScore(self, score)


def test_a_wrong_reverse_drift_is_caught() -> None:
    with pytest.raises(AssertionError, match=r"(?s)reverse SDE: .* expected f - div D - D score.*torch reverse drift"):
        sdt.assert_reverse_consistent(_BrokenReverseCLD())


# ---------------------------------------------------------------- drawn 2-component SDEs
def test_a_member_of_the_drawn_family_passes_the_symbolic_assertions() -> None:
    # companion drift with eigenvalues -1/2, -1 and noise only in v (CLD-like, distinct eigenvalues): ~3 s
    sde = sdt.component_sde(("v", "-3*v/2 - x/2"), "Matrix([[0, 0], [0, 1]])")
    assert sdt.assert_fokker_planck(sde).symbolic
    assert sdt.assert_reverse_consistent(sde).reverse.symbolic


@pytest.mark.slow
def test_drawn_two_component_sdes_pass_the_symbolic_assertions() -> None:
    # 4 draws, measured 24-35 s: ~2 s of sympy each for the marginal (cached on disk), 1-10 s for the Fokker-Planck
    # decision (time-dependent rates are the slow ones)
    seen: list[SDE] = []

    @FEW
    @given(sdt.affine_sdes(components=2))
    def check(sde: SDE) -> None:
        assert sde.components == ("x", "v") and sde.is_affine and sde.noise_type == "additive", sde
        rebuilt = eval(repr(sde), {"component_sde": sdt.component_sde})  # the printed example rebuilds it
        assert rebuilt is sde
        sdt.assert_fokker_planck(sde)
        sdt.assert_reverse_consistent(sde)
        seen.append(sde)

    check()
    assert len(seen) == 4
    with pytest.raises(ValueError, match="affine SDEs only"):
        sdt.sdes(affine=False, components=2)
    with pytest.raises(ValueError, match="components=3"):
        sdt.affine_sdes(components=3)


def test_component_sde_declares_data_components_and_the_initial_law() -> None:
    sde = sdt.component_sde(("v", "-2*x - 3*v"), "Matrix([[0, 0], [0, 1]])", data_components=("x",),
                            initial_covariance="Matrix([[0, 0], [0, 1/4]])")  # fmt: skip
    assert sde.data_components == ("x",)
    torch.testing.assert_close(sde.marginal.initial_cov, torch.diag(torch.tensor([0.0, 0.25], dtype=DT)))
    assert "initial_covariance='Matrix([[0, 0], [0, 1/4]])'" in repr(sde)


# ---------------------------------------------------------------- statistical assertions on full states
def test_full_state_law_at_t_is_the_oracle() -> None:
    oracle = _oracle()[1]
    law = oracle.at(0.3)
    assert law.event_shape == (2, 2)
    X = oracle.sample(64, 0.3, torch.Generator().manual_seed(0), dtype=DT)
    torch.testing.assert_close(law.log_prob(X), oracle.log_prob(X, 0.3), rtol=0, atol=1e-10)


def test_samples_match_takes_full_states() -> None:
    # n = 4,000 exact draws of (x_t, v_t) pass at level 1e-3; a 0.15 shift of v (about 0.3 of its standard deviation
    # at t = 0.3) fails
    oracle = _oracle()[1]
    X = oracle.sample(4_000, 0.3, torch.Generator().manual_seed(1), dtype=DT)
    assert sdt.assert_samples_match(X, oracle.at(0.3)).passed
    shifted = X.clone()
    shifted[:, 1] += 0.15
    with pytest.raises(AssertionError, match="does not match the exact mixture"):
        sdt.assert_samples_match(shifted, oracle.at(0.3))
    with pytest.raises(TypeError, match=r"oracle.at\(t\)"):
        sdt.assert_samples_match(X, oracle)


def test_logp_matches_takes_full_states() -> None:
    # the joint log-density of (x, v) at eps by the PF-ODE (dopri5, rtol = atol = 1e-6) with the exact p_T as prior
    # is within 1e-3 nats of the oracle's; a score scaled by 0.9 is caught
    sde, oracle = _oracle()
    eps = sde.default_eps
    X = oracle.sample(8, eps, torch.Generator().manual_seed(2), dtype=DT)
    err = sdt.assert_logp_matches(oracle, sde, oracle, X, eps=eps, rtol=1e-6, atol=1e-6)
    assert err.shape == (8,)
    with pytest.raises(AssertionError, match="differs from the exact log-density"):
        sdt.assert_logp_matches(lambda x, t: 0.9 * oracle(x, t), sde, oracle, X, eps=eps, rtol=1e-6, atol=1e-6)
