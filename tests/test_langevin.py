"""Tests of sdekit.langevin (unadjusted Langevin) and sdekit.annealed_langevin (NCSN).

float64, fixed seeds. Distribution checks are Kolmogorov–Smirnov tests against the exact
mixture CDF (a sum of erf terms) at n = 4,000, critical value 1.628 / sqrt(n) (asymptotic 1% level).
"""

from __future__ import annotations

import math

import pytest
import torch

import sdekit
from sdekit.analytic import GaussianMixture
from sdekit.errors import ModelOutputError, SolverDivergedError

N = 4000
KS_CRIT_1PCT = 1.628 / math.sqrt(N)


pytestmark = pytest.mark.usefixtures("float64_default")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mixture_cdf(x: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (weights * 0.5 * (1 + torch.erf((x[:, None] - means) / (stds * math.sqrt(2))))).sum(1)


def ks_statistic(x: torch.Tensor, cdf) -> float:
    x, _ = torch.sort(x.reshape(-1))
    n = x.numel()
    F = cdf(x)
    i = torch.arange(1, n + 1, dtype=x.dtype)
    return float(torch.maximum(i / n - F, F - (i - 1) / n).max())


def test_langevin_with_the_exact_score_reaches_a_1d_mixture():
    """ULA, h = 0.01, 1,500 steps (time 15, ~25 relaxation times of the widest mode) from N(0, 3^2): the KS
    statistic is below the 1% critical value. The O(h) bias (std inflated by ~h/(4 s^2) < 0.7%) is far
    below what n = 4,000 resolves; measured KS / critical value 0.36-0.73 over seeds."""
    means, stds, w = torch.tensor([-1.0, 1.5]), torch.tensor([0.6, 0.8]), torch.tensor([0.35, 0.65])
    target = GaussianMixture(means, stds, w)
    g = gen(0)
    x0 = 3 * torch.randn(N, 1, generator=g)
    x = sdekit.langevin(target.score, x0, step_size=0.01, n_steps=1500, generator=g)
    assert x.shape == x0.shape
    assert ks_statistic(x, lambda y: mixture_cdf(y, means, stds, w)) < KS_CRIT_1PCT


def test_langevin_stationary_variance_matches_the_discretisation_theory():
    """For N(0, s^2) the ULA chain x' = (1 - h/s^2) x + sqrt(2h) z is stationary at variance
    s^2 / (1 - h/(2 s^2)): with h = 0.2, s = 1 that is 1.111, vs 1 for the continuous dynamics. n = 20,000
    chains started at stationarity's scale, 200 steps (contraction 0.8^200): the sample variance is within
    5 SE (sqrt(2/n) relative) of the discrete value and more than 5 SE away from 1."""
    n, h = 20_000, 0.2
    g = gen(1)
    x = sdekit.langevin(lambda y: -y, torch.randn(n, 1, generator=g), h, 200, generator=g)
    v, expect = float(x.var()), 1 / (1 - h / 2)
    se = expect * math.sqrt(2 / n)
    assert abs(v - expect) < 5 * se
    assert v - 1 > 5 * se


def test_annealed_langevin_is_ncsn_algorithm_1():
    """Step for step the same as a hand-written Algorithm 1 (Song & Ermon 2019) with the same generator."""
    sigmas = [3.0, 1.0, 0.3]
    step_lr, each = 1e-3, 7
    score = lambda x, s: -x / (1 + s[:, None] ** 2) + 0.1 * s[:, None]  # noqa: E731
    x0 = torch.randn(16, 2, generator=gen(0))
    got = sdekit.annealed_langevin(score, x0, sigmas, step_lr, each, generator=gen(1))
    g, x = gen(1), x0.clone()
    for s in sigmas:
        alpha = step_lr * s**2 / sigmas[-1] ** 2
        level = torch.full((16,), s)
        for _ in range(each):
            z = torch.randn(x.shape, generator=g)
            x = x + alpha / 2 * score(x, level) + math.sqrt(alpha) * z
    torch.testing.assert_close(got, x, rtol=1e-13, atol=1e-13)
    den = sdekit.annealed_langevin(score, x0, sigmas, step_lr, each, generator=gen(1), denoise=True)
    torch.testing.assert_close(den, x + 0.3**2 * score(x, torch.full((16,), 0.3)), rtol=1e-13, atol=1e-13)


def test_annealed_langevin_recovers_mode_weights_that_plain_langevin_misses():
    """Two modes at +-4 (std 0.5, weights 0.2/0.8): plain Langevin started uniformly on [-10, 10] keeps the
    initial split ~50/50 (KS ~11x critical); annealed Langevin with 30 geometric levels 10 -> 0.01,
    100 steps each, step_lr 2e-5 (NCSN's settings) passes the 1% KS test (measured mode weight 0.79)."""
    means, stds, w = torch.tensor([-4.0, 4.0]), torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.8])
    target = GaussianMixture(means, stds, w)
    noised = {}

    def score(x, sigma):
        s = float(sigma[0])
        if s not in noised:
            noised[s] = GaussianMixture(means, torch.sqrt(stds**2 + s**2), w)
        return noised[s].score(x)

    g = gen(0)
    x0 = 20 * torch.rand(N, 1, generator=g) - 10
    cdf = lambda y: mixture_cdf(y, means, stds, w)  # noqa: E731
    x = sdekit.annealed_langevin(score, x0, torch.logspace(1, -2, 30), 2e-5, 100, generator=g)
    assert ks_statistic(x, cdf) < KS_CRIT_1PCT
    plain = sdekit.langevin(target.score, x0, 0.01, 500, generator=g)
    assert ks_statistic(plain, cdf) > 5 * KS_CRIT_1PCT


def test_langevin_input_checks():
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="step_size"):
        sdekit.langevin(lambda x: -x, x0, 0.0, 10)
    with pytest.raises(ValueError, match="n_steps"):
        sdekit.langevin(lambda x: -x, x0, 0.1, -1)
    with pytest.raises(ModelOutputError):
        sdekit.langevin(lambda x: x[:, :1], x0, 0.1, 1)
    with pytest.raises(SolverDivergedError, match="step size"):
        sdekit.langevin(lambda x: -1e3 * x, torch.ones(4, 2), 1.0, 200)
    with pytest.raises(ValueError, match="decreasing"):
        sdekit.annealed_langevin(lambda x, s: -x, x0, [0.1, 1.0], 1e-3, 5)
    torch.testing.assert_close(sdekit.langevin(lambda x: -x, x0, 0.1, 0), x0)


def test_langevin_nan_score_is_reported_as_a_score_problem():
    def score(x):
        out = -x.clone()
        out[0, 0] = float("nan")
        return out

    with pytest.raises(ModelOutputError, match="non-finite") as info:
        sdekit.langevin(score, torch.zeros(4, 2), 0.1, 5, generator=torch.Generator().manual_seed(0))
    assert "check the score" in str(info.value)
    # a score that turns NaN only after the chain ran away is a divergence: the message says both things
    with pytest.raises(SolverDivergedError, match=r"non-finite values after the chain ran away.*lower the step size"):
        sdekit.langevin(lambda x: -1e3 * x, torch.ones(4, 2), 1.0, 200)


def test_langevin_checks_the_score_dtype_and_the_generator():
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ModelOutputError, match="dtype"):
        sdekit.annealed_langevin(lambda x, s: -x.half(), torch.zeros(4, 2), [1.0, 0.1], 1e-3, 2, generator=gen)
    with pytest.raises(ModelOutputError, match="dtype"):
        sdekit.annealed_langevin(lambda x, s: -x.half(), torch.zeros(4, 2), [1.0], 1e-3, 0, denoise=True)
    for call in (
        lambda g: sdekit.langevin(lambda x: -x, torch.zeros(4, 2), 0.1, 2, generator=g),
        lambda g: sdekit.annealed_langevin(lambda x, s: -x, torch.zeros(4, 2), [1.0, 0.1], 1e-3, 2, generator=g),
    ):
        with pytest.raises(TypeError, match=r"generator must be a torch\.Generator, got int"):
            call(0)


def test_langevin_rejects_a_score_of_another_dtype():
    torch.set_default_dtype(torch.float32)  # written for torch's default float32; this module's pytestmark sets float64
    with pytest.raises(sdekit.errors.ModelOutputError):
        sdekit.langevin(lambda x: -x.double(), torch.zeros(4, 2), 0.1, 2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("sigmas", "error"),
    [
        (torch.tensor(1.0), ValueError),  # 0-d tensor
        (torch.ones(2, 2), ValueError),
        (1.0, TypeError),
        ("1.0", TypeError),
        ([1.0, "a"], TypeError),
        ([], ValueError),
        ([1.0, float("inf")], ValueError),
        ([float("inf"), 1.0], ValueError),
        ([1.0, float("nan")], ValueError),
    ],
    ids=["0-d", "2-d", "number", "string", "mixed", "empty", "inf-last", "inf-first", "nan"],
)
def test_annealed_langevin_rejects_bad_sigmas_clearly(sigmas, error):
    with pytest.raises(error, match="sigmas"):
        sdekit.annealed_langevin(lambda x, s: -x, torch.zeros(4, 2), sigmas, 1e-3, 1)
    # a single level is accepted as a one-element sequence or 1-D tensor
    sdekit.annealed_langevin(lambda x, s: -x, torch.zeros(4, 2), torch.tensor([1.0]), 1e-3, 1)


def test_annealed_langevin_accepts_numpy_levels():
    np = pytest.importorskip("numpy")
    x0 = torch.zeros(4, 2)
    a = sdekit.annealed_langevin(lambda x, s: -x, x0, np.geomspace(1.0, 0.1, 3), 1e-3, 2, generator=torch.Generator())
    b = sdekit.annealed_langevin(lambda x, s: -x, x0, [1.0, 10**-0.5, 0.1], 1e-3, 2, generator=torch.Generator())
    torch.testing.assert_close(a, b)
