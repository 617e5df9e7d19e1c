r"""The statistics of the forward and reverse Fokker–Planck checks: samples against a numeric density.

Tolerances (each result's ``where`` states its origin):

* KS: the exact one-sample Kolmogorov critical value ``scipy.stats.kstwo.ppf(1 - alpha/k, n)``
  (family-wise level alpha over k comparisons), plus half the estimated L1 error of the numeric
  density (a density L1 error e moves the CDF by at most e/2).
* Binned L1 :math:`\sum_j |N_j/n - P_j|`: :math:`E \le \sum_j \sqrt{P_j(1-P_j)/n}` (Jensen) and,
  since one sample moves it by at most 2/n, McDiarmid gives
  :math:`P(L1 > E + \sqrt{2\ln(k/\alpha)/n}) \le \alpha/k`; plus the numeric density's L1 error.
* The numeric density's error is estimated by Richardson: :math:`\|p_h - p_{2h}\|_1 / 3` for a
  second-order scheme, measured on the run itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import kstwo

from .fokker_planck import FokkerPlanck1D, FPSolution

__all__ = ["ALPHA", "ks_statistic", "ks_critical", "binned_l1", "cdf_interpolation_error", "richardson_error"]

ALPHA = 1e-3
"""Family-wise false-failure rate of each statistical check."""


def ks_statistic(samples: torch.Tensor | np.ndarray, solution: FPSolution, k: int) -> float:
    """Kolmogorov–Smirnov distance between the samples and the numeric CDF at ``times[k]``."""
    x = np.sort(np.asarray(samples, dtype=float).reshape(-1))
    n = x.size
    F = solution.cdf(x, k)
    i = np.arange(1, n + 1)
    return float(max((i / n - F).max(), (F - (i - 1) / n).max()))


def ks_critical(n: int, alpha: float) -> float:
    """Exact critical value of the one-sample KS statistic at level alpha (``scipy.stats.kstwo``)."""
    return float(kstwo.ppf(1.0 - alpha, n))


def binned_l1(
    samples: torch.Tensor | np.ndarray, solution: FPSolution, k: int, bins: int = 40, alpha: float = ALPHA
) -> tuple[float, float, np.ndarray, np.ndarray]:
    r"""Binned L1 :math:`\sum_j |N_j/n - P_j|` and its Monte-Carlo bound at level alpha.

    Bins: about ``bins`` equal bins between the numeric 0.1% and 99.9% quantiles, snapped to cell edges
    (so each :math:`P_j` is an exact sum of cell masses), plus the two tails.
    Returns ``(l1, bound, bin_edges, counts)``; the bound is
    :math:`\sum_j\sqrt{P_j(1-P_j)/n} + \sqrt{2\ln(1/\alpha)/n}` (Jensen + McDiarmid).
    """
    x = np.asarray(samples, dtype=float).reshape(-1)
    n = x.size
    s = solution.solver
    cum = solution.cdf(s.edges, k)
    lo, hi = np.interp([1e-3, 1 - 1e-3], cum, s.edges)
    idx = np.unique(np.rint((np.linspace(lo, hi, bins + 1) - s.edges[0]) / s.h).astype(int).clip(1, s.cells - 1))
    inner = s.edges[idx]
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    P = solution.bin_probabilities(np.concatenate([[s.edges[0]], inner, [s.edges[-1]]]), k)
    counts = np.histogram(x, edges)[0]
    l1 = float(np.abs(counts / n - P).sum())
    bound = float(np.sqrt(P * (1 - P) / n).sum() + math.sqrt(2 * math.log(1 / alpha) / n))
    return l1, bound, inner, counts


def cdf_interpolation_error(solution: FPSolution, k: int) -> float:
    r"""Bound on the CDF error from interpolating linearly within a cell: :math:`h \max_i |p_{i+1} - p_i| / 2`.

    Within a cell the density differs from its average by at most its oscillation over the cell (about
    :math:`|p_{i+1} - p_i|`), integrated over at most half a cell width from the nearer edge.
    """
    return float(solution.solver.h * np.abs(np.diff(solution.p[k])).max() / 2)


def richardson_error(fp: FokkerPlanck1D, p0: Callable, times: np.ndarray, dt: float, sol: FPSolution) -> np.ndarray:
    """Estimated L1 error of ``sol`` at each output time: ||p_h - p_2h||_1 / 3 (second order in h)."""
    coarse = FokkerPlanck1D(fp.sde, fp.domain, fp.cells // 2)
    c = coarse.solve(p0, times, dt=dt).p
    fine = 0.5 * (sol.p[:, 0::2] + sol.p[:, 1::2])  # fine solution averaged onto the coarse cells
    return np.abs(fine - c).sum(axis=1) * coarse.h / 3
