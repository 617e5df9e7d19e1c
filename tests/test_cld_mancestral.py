r"""``mancestral``, the matrix ancestral sampler (sdekit/solvers/_mancestral.py), on CLD and on a scalar SDE.

Exact references only:

* k = 1: the same draws as ``ancestral`` (posterior variance) on the same grid with the same generator (measured
  3e-15; bound 1e-12, float64 round-off).
* point-mass data: with the exact denoiser of a point mass every step draws the exact reverse transition, so from
  :math:`X_T` drawn from the exact :math:`p_T` the state at eps has the kernel law
  :math:`N(a x_0 + m, S)`: mean and covariance of the full state (x and v) within 5 standard errors at n = 40,000
  after 10 steps.
* the x-score is never read: a hybrid model (zeros for x) gives the same draws with ``denoise=False``.
* law: the exact Gaussian-mixture oracle score (as tests/test_cld_expint.py), x at eps against its exact law
  (``assert_samples_match``: sliced KS + mean tests, family-wise level 1e-3, n = 20,000, seed fixed) at the
  documented step count (``default_steps``; docs/cld.md has the table over four x_T seeds).
"""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit import analytic
from sdekit.testing import assert_samples_match

DT = torch.float64


def _mixture() -> analytic.GaussianMixture:
    means = torch.tensor([[1.0, -1.0], [-1.5, 0.5]])
    covs = torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.1, 0.0], [0.0, 0.4]]])
    return analytic.GaussianMixture(means, covs=covs, weights=[0.3, 0.7])


def test_k_1_is_ancestral() -> None:
    vp = sdekit.VPSDE()
    oracle = _mixture().diffuse(vp)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    kw = dict(steps=12, x_T=x_T, denoise=False)
    ref = sdekit.sample(oracle, vp, (64, 2), solver="ancestral", generator=torch.Generator().manual_seed(1), **kw)
    got = sdekit.sample(oracle, vp, (64, 2), solver="mancestral", generator=torch.Generator().manual_seed(1), **kw)
    assert float((got - ref).abs().max()) < 1e-12


def test_point_mass_data_sample_the_exact_kernel_law() -> None:
    sde = sdekit.CLDSDE()
    M, T, eps = sde.marginal, float(sde.T), sde.default_eps
    x0 = torch.tensor([0.8, -1.2], dtype=DT)

    def law(t: float) -> tuple[torch.Tensor, torch.Tensor]:  # N(a x0 + m, S) per event position, (k, 2) and (k, k)
        return M.alpha(t)[:, :1] * x0 + M.offset(t)[:, None], M.cov(t, given="data")

    def score(X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # the exact score of the point mass x0
        mean, S = law(float(t[0]))
        return -torch.linalg.solve(S, X - mean)

    n = 40_000
    mean_T, S_T = law(T)
    z = torch.randn(n, 2, 2, generator=torch.Generator().manual_seed(5), dtype=DT)
    x_T = mean_T + torch.linalg.cholesky(S_T) @ z
    x = sdekit.sample(score, sde, x_T.shape, solver="mancestral", steps=10, x_T=x_T, denoise=False,
                      generator=torch.Generator().manual_seed(6))  # fmt: skip
    mean, S = law(eps)
    se_mean = (torch.diagonal(S) / n).sqrt()[:, None]
    assert float(((x.mean(0) - mean) / se_mean).abs().max()) < 5
    for p in range(2):
        C = torch.cov(x[:, :, p].T)
        se_cov = ((torch.diagonal(S)[:, None] * torch.diagonal(S)[None, :] + S**2) / n).sqrt()
        assert float(((C - S) / se_cov).abs().max()) < 5, p


def test_the_x_score_is_never_read() -> None:
    sde = sdekit.CLDSDE()
    oracle = _mixture().diffuse(sde)

    def hybrid(X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = oracle(X, t)
        return torch.stack([torch.zeros_like(s[:, 0]), s[:, 1]], 1)

    kw = dict(solver="mancestral", steps=15, denoise=False, dtype=DT)
    full = sdekit.sample(oracle, sde, (32, 2, 2), generator=torch.Generator().manual_seed(7), **kw)
    part = sdekit.sample(hybrid, sde, (32, 2, 2), generator=torch.Generator().manual_seed(7), **kw)
    assert float((full - part).abs().max()) < 1e-10


@pytest.mark.slow
def test_mixture_law_at_the_documented_steps() -> None:
    sde = sdekit.CLDSDE()
    oracle = _mixture().diffuse(sde)
    steps = sdekit.solvers.get("mancestral").default_steps
    x, info = sdekit.sample(oracle, sde, (20_000, 2, 2), solver="mancestral", denoise=False, dtype=DT,
                            return_info=True, generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert info.nfe == steps
    assert_samples_match(x[:, 0], oracle.component(sde.default_eps, "x"), alpha=1e-3)


def test_nfe_determinism_and_dtypes() -> None:
    sde = sdekit.CLDSDE()
    oracle = _mixture().diffuse(sde)
    x_T = sde.prior.sample((16, 2, 2), generator=torch.Generator().manual_seed(2), dtype=DT)
    kw = dict(solver="mancestral", steps=12, return_info=True)
    x64, info = sdekit.sample(oracle, sde, x_T.shape, x_T=x_T, generator=torch.Generator().manual_seed(3), **kw)
    assert info.nfe == 12 and info.steps == 11 and x64.dtype == DT
    again, _ = sdekit.sample(oracle, sde, x_T.shape, x_T=x_T, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(x64, again)
    x32, _ = sdekit.sample(oracle, sde, x_T.shape, x_T=x_T.float(), generator=torch.Generator().manual_seed(3), **kw)
    assert x32.dtype == torch.float32 and bool(torch.isfinite(x32).all())  # float32 draws other normals
