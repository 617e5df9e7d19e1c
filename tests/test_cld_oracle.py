"""The exact Gaussian-mixture oracle of k-component affine SDEs (CLD): data in x, v0 from its initial law.

* the score equals autograd of log_prob (float64 round-off);
* exact draws (mixture sample, then the kernel given the data) have the analytic mean and covariance of the full
  state, kron(a a^T, C_j) + kron(S, I) per component, to 5 Monte-Carlo standard errors at n = 40,000;
* the x component of the draws follows ``oracle.component(t, "x")`` (sliced KS + mean z-test, level 1e-3).
"""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit import analytic
from sdekit.testing import assert_samples_match

DT = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mixture(kind: str = "full") -> analytic.GaussianMixture:
    means = torch.tensor([[1.0, -1.0], [-1.5, 0.5]])
    if kind == "full":
        covs = torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.1, 0.0], [0.0, 0.4]]])
        return analytic.GaussianMixture(means, covs=covs, weights=[0.3, 0.7])
    return analytic.GaussianMixture(means, stds=torch.tensor([[0.5, 0.3], [0.2, 0.6]]), weights=[0.3, 0.7])


@pytest.mark.parametrize("kind", ["full", "diagonal"])
def test_score_is_the_gradient_of_log_prob(kind: str) -> None:
    oracle = _mixture(kind).diffuse(sdekit.CLDSDE())
    X = torch.randn(6, 2, 2, dtype=DT, generator=_gen(0)).requires_grad_()
    for t in (torch.rand(6, dtype=DT, generator=_gen(1)) * 0.99 + 0.01, 0.0, 1.0):
        (grad,) = torch.autograd.grad(oracle.log_prob(X, t).sum(), X)
        torch.testing.assert_close(oracle(X, t), grad, rtol=1e-10, atol=1e-10)


def test_float32_and_event_shapes() -> None:
    gm = analytic.GaussianMixture(torch.randn(3, 2, 3, generator=_gen(2)), stds=0.5)
    oracle = gm.diffuse(sdekit.CLDSDE())
    X = torch.randn(4, 2, 2, 3, generator=_gen(3))
    s = oracle(X, torch.full((4,), 0.3))
    assert s.shape == X.shape and s.dtype == torch.float32
    torch.testing.assert_close(s.double(), oracle(X.double(), 0.3), rtol=1e-4, atol=1e-4)
    assert oracle.sample(5, 0.3, _gen(4)).shape == (5, 2, 2, 3)


def _exact_moments(gm: analytic.GaussianMixture, sde: sdekit.SDE, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the flattened full state (k, d) from the marginal API (independent of the oracle)."""
    m = sde.marginal
    a, off, S = m.alpha(t)[:, 0], m.offset(t), m.cov(t, given="data")
    means = torch.stack([torch.outer(a, mu) + off[:, None] for mu in gm.means.reshape(gm.n_components, -1)])
    means = means.reshape(gm.n_components, -1)
    d = gm.dim
    covs = torch.stack(
        [torch.kron(torch.outer(a, a), C) + torch.kron(S, torch.eye(d, dtype=DT)) for C in gm.covariances]
    )
    w = gm.weights
    mean = (w[:, None] * means).sum(0)
    second = (w[:, None, None] * (covs + means[:, :, None] * means[:, None, :])).sum(0)
    return mean, second - torch.outer(mean, mean)


@pytest.mark.parametrize("t", [0.01, 0.3, 1.0])
def test_samples_have_the_exact_moments(t: float) -> None:
    sde, gm = sdekit.CLDSDE(), _mixture()
    n = 40_000
    X = gm.diffuse(sde).sample(n, t, _gen(5), dtype=DT).reshape(n, -1)
    mean, cov = _exact_moments(gm, sde, t)
    var = torch.diagonal(cov)
    assert ((X.mean(0) - mean).abs() <= 5 * (var / n).sqrt()).all()
    # covariance entries: SE^2 <= (var_i var_j + cov_ij^2) / n * kurtosis margin 2 (mixtures are not Gaussian)
    se = ((torch.outer(var, var) + cov**2) * 2 / n).sqrt()
    assert ((torch.cov(X.T) - cov).abs() <= 5 * se).all()


def test_data_component_follows_its_exact_law() -> None:
    oracle = _mixture().diffuse(sdekit.CLDSDE())
    for t in (1e-3, 0.2):
        X = oracle.sample(20_000, t, _gen(6), dtype=DT)
        assert_samples_match(X[:, 0], oracle.component(t, "x"), alpha=1e-3)
