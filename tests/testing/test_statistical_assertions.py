"""sdekit.testing's statistical assertions (:mod:`sdekit.testing._statistical`): assert_samples_match's
calibration and power, assert_logp_matches, and their input checks.

Statistical tests are seeded; their bounds come from binomial quantiles at the 1e-3 level (stated per test).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import sdekit
from sdekit import analytic, testing
from sdekit import testing as sdt
from sdekit.analytic import GaussianMixture

F64 = torch.float64


# ---------------------------------------------------------------- assert_samples_match: calibration and power
def _upper(n: int, p: float) -> int:
    """Largest count not rejected at level 1e-3 for Binomial(n, p): P(count > bound) <= 1e-3."""
    return int(stats.binom.isf(1e-3, n, p))


def _rejections(trials, n, d, alpha, gen, shift=0.0, exact=False):
    null = GaussianMixture(torch.zeros(1, d), 1.0)
    count = 0
    for _ in range(trials):
        a = torch.randn(n, d, generator=gen, dtype=F64)
        a[:, 0] += shift
        b = null if exact else torch.randn(n, d, generator=gen, dtype=F64)
        try:
            sdt.assert_samples_match(a, b, alpha=alpha)
        except AssertionError:
            count += 1
    return count


@pytest.mark.parametrize(("d", "exact", "trials"), [(1, False, 400), (2, False, 400), (2, True, 150)])
def test_samples_match_false_positive_rate(d, exact, trials):
    """Under the null the rejection rate is <= alpha (Bonferroni) and >= alpha / m (it is at least as
    large as any one of its m calibrated component tests): both checked with binomial bounds at 1e-3."""
    alpha = 0.05
    m = 2 * (1 if d == 1 else d + 2)
    count = _rejections(trials, 1000, d, alpha, torch.Generator().manual_seed(100 + d + 10 * exact), exact=exact)
    assert count <= _upper(trials, alpha), count
    assert count >= stats.binom.ppf(1e-3, trials, alpha / m), count


def test_samples_match_detects_small_mean_shift():
    """0.1-sigma shift at n = 4,000. Against the exact law z = 0.1 sqrt(4000) = 6.3: power ~1 (every one of
    20 seeded trials). Two-sample z = 4.5 vs the critical 3.5: power measured 0.83, so >= 24 of 40
    (Binomial(40, 0.83) falls below 24 with probability < 1e-3)."""
    gen = torch.Generator().manual_seed(7)
    assert _rejections(20, 4000, 1, 1e-3, gen, shift=0.1, exact=True) == 20
    assert _rejections(40, 4000, 1, 1e-3, gen, shift=0.1) >= 24
    a = torch.randn(4000, 2, generator=gen, dtype=F64)
    a[:, 0] += 0.1
    with pytest.raises(AssertionError, match=r"(?s)does not match the exact mixture.*mean along e_1"):
        sdt.assert_samples_match(a, GaussianMixture(torch.zeros(1, 2), 1.0))


def _reverse_em(sde, score, x, steps=200):
    """Reverse-time Euler–Maruyama from T to 0 with sde.reverse(score) (forward time, dt < 0)."""
    rev = sde.reverse(score)
    gen = torch.Generator().manual_seed(3)
    h = sde.T / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), sde.T - i * h, dtype=F64)
        z = torch.randn(x.shape, generator=gen, dtype=F64)
        x = x - rev.drift(x, t) * h + rev.diffusion(x, t) * math.sqrt(h) * z
    return x


def test_samples_match_catches_sampler_missing_divergence_term():
    # Stationary reversible SDE: p_t = N(0, 1) for all t, score = -x, so the reverse run must stay N(0, 1).
    sde = sdekit.SDE.from_expressions("x/2 - x**3/2", "sqrt(1 + x**2)")
    exact = GaussianMixture(torch.zeros(1, 1), 1.0)
    x_T = exact.sample(4000, generator=torch.Generator().manual_seed(1))

    def score(x, t):
        return -x

    sdt.assert_samples_match(_reverse_em(sde, score, x_T), exact)
    sde_wrong = sdekit.SDE.from_expressions("x/2 - x**3/2", "sqrt(1 + x**2)")
    sde_wrong.__dict__["dg2_dx_fn"] = lambda x, t: torch.zeros_like(x)  # sampler forgets d(g^2)/dx
    with pytest.raises(AssertionError, match="Bonferroni p"):
        sdt.assert_samples_match(_reverse_em(sde_wrong, score, x_T), exact)


def test_samples_match_rejects_bad_input():
    with pytest.raises(AssertionError, match="NaN or inf"):
        sdt.assert_samples_match(torch.full((10, 1), math.nan), torch.zeros(10, 1))
    with pytest.raises(ValueError, match="event dimensions"):
        sdt.assert_samples_match(torch.zeros(10, 2), torch.zeros(10, 3))
    oracle = GaussianMixture(torch.zeros(1, 2), torch.ones(1)).diffuse(sdekit.VPSDE())
    with pytest.raises(TypeError, match=r"oracle\.at\(t\)"):
        sdt.assert_samples_match(torch.zeros(10, 2), oracle)
    with pytest.raises(TypeError, match="a must be samples"):
        sdt.assert_samples_match(oracle.at(0.5), torch.zeros(10, 2))
    with pytest.raises(TypeError, match="b must be samples"):
        sdt.assert_samples_match(torch.zeros(10, 2), object())


def test_assert_samples_match_explains_a_diffused_mixture_argument():
    # today: RuntimeError "Could not infer dtype of DiffusedGaussianMixture" (assert_logp_matches accepts one)
    oracle = analytic.Gaussian(torch.zeros(2), std=1.0).diffuse(sdekit.VPSDE())
    a = oracle.sample(64, 0.5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match=r"\.at\("):
        testing.assert_samples_match(a, oracle)


# ---------------------------------------------------------------- assert_logp_matches
def test_logp_matches_exact_and_fails_for_a_wrong_model():
    sde = sdekit.VPSDE()
    oracle = GaussianMixture(torch.tensor([[-1.0], [1.5]]), torch.tensor([0.4, 0.6])).diffuse(sde)
    x = oracle.sample(16, 1e-5, generator=torch.Generator().manual_seed(0)).to(F64)
    # tol 1e-3: dopri5 at rtol = atol = 1e-5 with the exact prior p_T (TESTING.md: errors ~1e-4).
    err = sdt.assert_logp_matches(oracle, sde, oracle, x)
    assert err.abs().max() < 1e-3

    def wrong(x, t):  # score 10% too small
        return 0.9 * oracle(x, t)

    with pytest.raises(AssertionError, match=r"(?s)logp differs from the exact log-density.*worst sample"):
        sdt.assert_logp_matches(wrong, sde, oracle, x)


def test_logp_matches_rejects_exact_values_of_shape_batch_by_batch():
    # (16,) - (16, 16) would broadcast to 256 "errors"; the exact values must be one per row of x
    sde = sdekit.VPSDE()
    oracle = GaussianMixture(torch.tensor([[-1.0], [1.5]]), torch.tensor([0.4, 0.6])).diffuse(sde)
    x = oracle.sample(16, 1e-5, generator=torch.Generator().manual_seed(0)).to(F64)
    table = oracle.log_prob(x, 1e-5)[None, :].expand(16, 16)
    with pytest.raises(ValueError, match=r"shape \(batch,\) = \(16,\).*got shape \(16, 16\)"):
        sdt.assert_logp_matches(oracle, sde, table, x)
    with pytest.raises(ValueError, match=r"got shape \(16, 1\).*reshape\(-1\)"):
        sdt.assert_logp_matches(oracle, sde, lambda x: oracle.log_prob(x, 1e-5)[:, None], x)


def test_assert_logp_matches_takes_a_distribution():
    """oracle.at(eps) (a distribution with .log_prob) is accepted as the exact log-density."""
    sde = sdekit.VPSDE()
    data = analytic.Gaussian(torch.zeros(2, dtype=torch.float64), std=0.8)
    oracle = data.diffuse(sde)
    x = data.sample(8, generator=torch.Generator().manual_seed(0))
    err = testing.assert_logp_matches(oracle, sde, oracle.at(1e-5), x, tol=1e-3, prior=oracle.at(sde.T))
    assert err.abs().max() <= 1e-3
    with pytest.raises(TypeError, match="exact_log_prob"):
        testing.assert_logp_matches(oracle, sde, "not a density", x)


@pytest.mark.parametrize("bad", ["column", "scalar"])
def test_assert_logp_matches_rejects_exact_values_of_the_wrong_shape(bad):
    sde = sdekit.VPSDE()
    data = analytic.Gaussian(torch.zeros(2, dtype=torch.float64), std=0.5)
    oracle = data.diffuse(sde)
    x = data.sample(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = oracle.log_prob(x, 1e-5)
    exact = exact[:, None] if bad == "column" else exact[0]
    # today: IndexError from inside the failure message (the (4,) - (4, 1) broadcast gives 16 "errors")
    with pytest.raises((ValueError, TypeError), match="shape"):
        testing.assert_logp_matches(oracle, sde, exact, x, solver="rk4", steps=2, prior=oracle.at(sde.T))
