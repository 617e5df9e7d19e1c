"""sdekit.losses.dsm on k-component SDEs (CLD) with the exact Gaussian-mixture oracle.

* Unbiasedness: with the exact score scaled by c, s_c = c * score, the expected loss is minimised at c = 1 for every
  weighting (I, Sigma, GG^T) and both kernels (given the whole initial state, or the data only): the per-sample
  derivative d loss_i / dc has mean 0 at c = 1 (checked to 5 standard errors, n = 20,000) and is clearly negative at
  c = 0.8 (more than 10 standard errors). Per-sample losses are quadratic in c, so three evaluations with the same
  generator give the exact per-sample derivative (checked against autograd).
* The eps-weighted loss ("sigma2") at the exact score equals its analytic minimum for Gaussian data at a fixed t:
  E 1/2 ||L^T (s - target)||^2 = 1/2 sum_i [k - tr(K (lambda_i a a^T + S)^-1)] (K the kernel covariance, S the data
  kernel's, lambda_i the data covariance's eigenvalues), within 5 standard errors at n = 40,000.
"""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit import analytic
from sdekit.errors import ModelOutputError, NotAffineError, SdekitError
from sdekit.losses import dsm

DT = torch.float64
N = 20_000


def _setup() -> tuple[analytic.GaussianMixture, sdekit.SDE, object]:
    gm = analytic.GaussianMixture(torch.tensor([[1.0, -1.0], [-1.5, 0.5]]), stds=torch.tensor([0.5, 0.3]))
    sde = sdekit.CLDSDE()
    return gm, sde, gm.diffuse(sde)


def _derivative(c: float, weighting: str, given: str, eps: float | None) -> tuple[float, float]:
    gm, sde, oracle = _setup()
    x0 = gm.sample(N, torch.Generator().manual_seed(0), dtype=DT)

    def per(scale: torch.Tensor | float) -> torch.Tensor:
        return dsm(lambda X, t: scale * oracle(X, t), sde, x0, weighting=weighting, given=given, eps=eps,
                   generator=torch.Generator().manual_seed(1), reduction="none")  # fmt: skip

    scale = torch.tensor(c, dtype=DT, requires_grad=True)
    (grad,) = torch.autograd.grad(per(scale).sum(), scale)
    with torch.no_grad():
        per0, per1, per2 = per(0.0), per(1.0), per(2.0)
    A = (per2 - 2 * per1 + per0) / 2  # per(c) = A c^2 + B c + C
    B = per1 - per0 - A
    d = 2 * A * c + B
    torch.testing.assert_close(d.sum(), grad, rtol=1e-8, atol=1e-6)
    return float(d.mean()), float(d.std() / N**0.5)


@pytest.mark.parametrize("given", ["state", "data"])
@pytest.mark.parametrize("weighting", ["none", "sigma2", "likelihood"])
def test_gradient_vanishes_at_the_true_score(weighting: str, given: str) -> None:
    # eps = 0.05 for weight 1: the target -L^-T z is of size t^(-3/2) in x (Sigma_xx ~ t^3), so at the default eps
    # (1e-3) the derivative's standard error is 1.35 and c = 0.8 sits only 1.6 of them away (measured).
    eps = 0.05 if weighting == "none" else None
    mean, se = _derivative(1.0, weighting, given, eps)
    assert abs(mean) < 5 * se, (mean, se)
    mean, se = _derivative(0.8, weighting, given, eps)
    assert mean < -10 * se, (mean, se)


@pytest.mark.parametrize("given", ["state", "data"])
@pytest.mark.parametrize("t", [0.05, 0.3])
def test_eps_weighted_loss_at_the_true_score_is_its_analytic_minimum(given: str, t: float) -> None:
    sde = sdekit.CLDSDE()
    cov = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=DT)
    gm = analytic.GaussianMixture(torch.tensor([[0.5, -0.3]], dtype=DT), covs=cov[None])
    oracle = gm.diffuse(sde)
    n = 40_000
    x0 = gm.sample(n, torch.Generator().manual_seed(0), dtype=DT)
    per = dsm(oracle, sde, x0, t=t, weighting="sigma2", given=given, generator=torch.Generator().manual_seed(1),
              reduction="none")  # fmt: skip
    m = sde.marginal
    a, S = m.alpha(t)[:, 0], m.cov(t, given="data")
    K = m.cov(t, given=given)
    minimum = sum(0.5 * (2 - torch.trace(K @ torch.linalg.inv(lam * torch.outer(a, a) + S)))
                  for lam in torch.linalg.eigvalsh(cov))  # fmt: skip
    assert abs(float(per.mean() - minimum)) < 5 * float(per.std()) / n**0.5, (float(per.mean()), float(minimum))


class _Coupled(sdekit.SDE):
    components = ("x", "v")

    def drift(self, x, v, t):
        return (v - x, -v)

    def diffusion(self, x, v, t):
        return (0, 1)


class _Uncoupled(sdekit.SDE):  # x receives no noise at all: Sigma_xx = 0, no kernel score
    components = ("x", "v")
    data_components = ("x",)

    def drift(self, x, v, t):
        return (-x, -v)

    def diffusion(self, x, v, t):
        return (0, 1)


class _NotAffine(sdekit.SDE):
    components = ("x", "v")

    def drift(self, x, v, t):
        return (v, -(x**3) - v)

    def diffusion(self, x, v, t):
        return (0, 1)


def test_shapes_dtypes_and_a_full_state_sde() -> None:
    gm, sde, oracle = _setup()
    x0 = gm.sample(6, torch.Generator().manual_seed(0), dtype=DT)
    assert dsm(oracle, sde, x0, reduction="none").shape == (6,)
    assert dsm(oracle, sde, x0).shape == ()
    loss32 = dsm(lambda X, t: oracle(X.double(), t.double()).float(), sde, x0.float(), weighting="likelihood")
    assert loss32.dtype == torch.float32 and torch.isfinite(loss32)
    # every component is data (no data_components): x0 is the full state, the kernel given it
    X0 = torch.randn(5, 2, 3, 4, dtype=DT, generator=torch.Generator().manual_seed(0))
    per = dsm(lambda X, t: -X, _Coupled(), X0, weighting="sigma2", reduction="none")
    assert per.shape == (5,) and torch.isfinite(per).all()


def test_determinism_with_a_generator() -> None:
    gm, sde, oracle = _setup()
    x0 = gm.sample(64, torch.Generator().manual_seed(0), dtype=DT)
    for given in ("state", "data"):
        a, b, c = (dsm(oracle, sde, x0, given=given, generator=torch.Generator().manual_seed(s), reduction="none")
                   for s in (3, 3, 4))  # fmt: skip
        assert torch.equal(a, b) and not torch.equal(a, c)
    # fixed t and noise: no randomness left for given="data" (nothing is drawn)
    z = torch.randn(64, 2, 2, dtype=DT, generator=torch.Generator().manual_seed(5))
    a, b = (dsm(oracle, sde, x0, t=0.2, noise=z, given="data", generator=torch.Generator().manual_seed(s))
            for s in (1, 2))  # fmt: skip
    assert torch.equal(a, b)


def test_refusals() -> None:
    gm, sde, oracle = _setup()
    x0 = gm.sample(4, torch.Generator().manual_seed(0), dtype=DT)
    with pytest.raises(ValueError, match="parameterization='score'"):
        dsm(oracle, sde, x0, parameterization="eps")
    with pytest.raises(ValueError, match="given"):
        dsm(oracle, sde, x0, given="velocity")
    with pytest.raises(ValueError, match=r"noise must be a tensor shaped like the full state \(4, 2, 2\)"):
        dsm(oracle, sde, x0, noise=torch.zeros(4, 2))
    with pytest.raises(ModelOutputError, match="shaped like x"):
        dsm(lambda X, t: X[:, :1], sde, x0)
    with pytest.raises(ValueError, match=r"full state \(batch, 2"):
        dsm(lambda X, t: X, _Coupled(), torch.zeros(4, 3, dtype=DT))
    with pytest.raises(SdekitError, match="singular"):
        dsm(lambda X, t: X, _Uncoupled(), torch.zeros(4, 3, dtype=DT))
    with pytest.raises(NotAffineError):
        dsm(lambda X, t: X, _NotAffine(), torch.zeros(4, 2, 3, dtype=DT))


def test_implicit_and_sliced_score_matching_take_full_states() -> None:
    # ism / ssm need only score(x) and its divergence, here over all k components of (batch, k, *event): at the
    # exact score Stein's identity E[||s||^2 + div s] = 0 holds (5 standard errors, n = 4,000).
    oracle = _setup()[2]
    n, t = 4_000, 0.3
    X = oracle.sample(n, t, torch.Generator().manual_seed(0), dtype=DT)
    s = oracle(X, t)
    half = 0.5 * (s * s).reshape(n, -1).sum(1)
    stein = sdekit.losses.ism(lambda x: oracle(x, t), X, reduction="none") + half
    stein = stein.detach()
    assert abs(float(stein.mean())) < 5 * float(stein.std()) / n**0.5
    sliced = sdekit.losses.ssm(lambda x: oracle(x, t), X, generator=torch.Generator().manual_seed(1),
                               reduction="none").detach() + half  # fmt: skip
    assert abs(float(sliced.mean())) < 5 * float(sliced.std()) / n**0.5
