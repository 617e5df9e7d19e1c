r"""Sliced Kolmogorov–Smirnov test of samples against an exact law (tests, validation, benchmarks).

Project n samples :math:`x_i \in \mathbb R^d` on k fixed unit directions :math:`u_j` and compare
each empirical CDF with the exact projected CDF :math:`F_j`:

.. math::
    D_j = \sup_z \big|\hat F_j(z) - F_j(z)\big|,\qquad D = \max_j D_j .

For a Gaussian mixture :math:`\sum_k w_k N(\mu_k, C_k)` the projection on u is the 1-D mixture
:math:`\sum_k w_k N(u^\top\mu_k, u^\top C_k u)`, so :math:`F_j` is a sum of erf terms.
Under the null, :math:`P(\sqrt n D_j > c) \le 2 e^{-2c^2}` (Dvoretzky–Kiefer–Wolfowitz–Massart),
so with a Bonferroni bound over the k directions the family-wise level-:math:`\alpha` critical value is

.. math:: D_{\rm crit} = \sqrt{-\ln(\alpha / (2k)) / 2}\,/\sqrt n .
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["SlicedKS", "sliced_ks", "ks_critical_value", "random_directions", "mixture_projected_cdf"]

CDF1D = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class SlicedKS:
    """Result of :func:`sliced_ks`: statistic D, critical value at level alpha, and D per direction."""

    statistic: float
    critical: float
    alpha: float
    per_direction: torch.Tensor

    @property
    def ratio(self) -> float:
        """D / D_crit (> 1 rejects the exact law at family-wise level alpha)."""
        return self.statistic / self.critical

    @property
    def passed(self) -> bool:
        """True when D <= D_crit."""
        return self.statistic <= self.critical


def ks_critical_value(n: int, k: int = 1, alpha: float = 1e-3) -> float:
    r"""DKW–Massart critical value :math:`\sqrt{-\ln(\alpha/(2k))/2}/\sqrt n` for k directions at family-wise alpha."""
    return math.sqrt(-math.log(alpha / (2 * k)) / 2) / math.sqrt(n)


def random_directions(d: int, k: int, seed: int = 0) -> torch.Tensor:
    """k fixed unit vectors in R^d (rows), float64, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(k, d, generator=g, dtype=torch.float64)
    return u / u.norm(dim=1, keepdim=True)


def mixture_projected_cdf(mixture: Any, directions: torch.Tensor) -> CDF1D:
    r"""Exact CDF of :math:`u_j^\top X` for X a :class:`sdekit.analytic.GaussianMixture`: ``cdf(z, j)``."""
    mu = mixture.means.reshape(mixture.n_components, -1).to(torch.float64)  # (K, d)
    cov = mixture.covariances.to(torch.float64)  # (K, d, d)
    w = mixture.weights.to(torch.float64)
    u = directions.to(torch.float64)
    means = mu @ u.T  # (K, k)
    stds = torch.einsum("jd,kde,je->kj", u, cov, u).sqrt()  # (K, k)

    def cdf(z: torch.Tensor, j: int) -> torch.Tensor:
        zz = (z[:, None] - means[None, :, j]) / stds[None, :, j]
        return (w[None, :] * 0.5 * torch.erfc(-zz / math.sqrt(2))).sum(1)

    return cdf


def sliced_ks(
    samples: torch.Tensor, cdf_1d_fn_or_mixture: Any, directions: torch.Tensor, alpha: float = 1e-3
) -> SlicedKS:
    r"""Sliced KS statistic of ``samples`` (n, *event) against an exact law, with its critical value.

    Args:
        samples: shape (n, *event_shape); flattened to (n, d).
        cdf_1d_fn_or_mixture: either ``cdf(z, j)`` giving the exact CDF of the projection on
            direction j at points z (float64, shape (m,)), or an object with ``means``,
            ``covariances``, ``weights`` (a :class:`sdekit.analytic.GaussianMixture`).
        directions: (k, d) unit vectors (e.g. :func:`random_directions`).
        alpha: family-wise level of the critical value.

    Returns:
        :class:`SlicedKS` (``.passed``, ``.ratio``, ``.statistic``, ``.critical``).
    """
    x = samples.reshape(samples.shape[0], -1).to(torch.float64)
    n = x.shape[0]
    u = directions.to(torch.float64)
    cdf = cdf_1d_fn_or_mixture
    if not callable(cdf) or hasattr(cdf, "covariances"):
        cdf = mixture_projected_cdf(cdf_1d_fn_or_mixture, u)
    proj = x.detach() @ u.T  # (n, k)
    if proj.device.type == "cpu":  # numpy sorts the k projections ~10x faster (32 x 1e5: 0.03 s vs 0.3-0.5 s)
        ordered = torch.from_numpy(np.sort(proj.T.numpy(), axis=1))
    else:
        ordered = torch.sort(proj.T, dim=1).values
    stats = []
    hi = torch.arange(1, n + 1, dtype=torch.float64) / n
    lo = torch.arange(0, n, dtype=torch.float64) / n
    for j in range(u.shape[0]):
        z = ordered[j]
        f = cdf(z, j)
        stats.append(torch.maximum((hi - f).abs().max(), (f - lo).abs().max()))
    per = torch.stack(stats)
    return SlicedKS(float(per.max()), ks_critical_value(n, u.shape[0], alpha), alpha, per)
