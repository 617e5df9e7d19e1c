r"""Exact PF-ODE flow maps for the order tests of the fixed-grid PF-ODE samplers (tests/solvers/test_exponential.py,
tests/solvers/test_dpm.py).

* 1-D Gaussian data :math:`N(\mu, s^2)`: the PF-ODE map is affine,
  :math:`x_t = \mathrm{mean}_t + \tfrac{s_t}{s_T}(x_T - \mathrm{mean}_T)` with
  :math:`\mathrm{mean}_t = \alpha_t\mu + m_t`, :math:`s_t^2 = \alpha_t^2 s^2 + \sigma_t^2` (:func:`pf_error`).
* 1-D Gaussian mixture: in 1-D the PF-ODE map is the monotone rearrangement
  :math:`x_\epsilon = F_\epsilon^{-1}(F_T(x_T))` of the exact marginal CDFs (:func:`mixture_pf_error`); no
  super-convergence, since the denoiser is not affine along the flow.

Both: exact score, float64, integrated from T to ``sde.default_eps`` by the solver itself (``SamplingProblem`` with
``steps`` grid intervals, no NFE budget: every step at the solver's full order), max error over fixed start points.
"""

from __future__ import annotations

import math

import torch
from _zoo import AFFINE_ZOO

import sdekit
from sdekit import analytic
from sdekit._stats import mixture_projected_cdf
from sdekit.solvers import get
from sdekit.solvers._base import SamplingProblem

F64 = torch.float64
MU, S = 0.5, 0.3


ZOO = AFFINE_ZOO
"""Name -> constructor of every built-in affine SDE and a user SDE with an offset (tests/_zoo.py)."""


def gauss(sde: sdekit.SDE, t: float) -> tuple[float, float]:
    """Mean and std of :math:`p_t` for the data N(MU, S^2)."""
    tt = torch.tensor(t, dtype=F64)
    m = sde.marginal
    a = float(m.alpha(tt))
    return a * MU + float(m.offset(tt)), math.sqrt(a * a * S * S + float(m.sigma2(tt)))


def gauss_score(sde: sdekit.SDE):
    """Exact score of :math:`p_t` for the data N(MU, S^2)."""
    m = sde.marginal

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, off, s2 = m.alpha(t)[:, None], m.offset(t)[:, None], m.sigma2(t)[:, None]
        return -(x - a * MU - off) / (a * a * S * S + s2)

    return score


def solve(sde: sdekit.SDE, solver: str, steps: int, score, x_T: torch.Tensor, **options) -> torch.Tensor:
    """The solver's PF-ODE map T -> eps at ``steps`` grid intervals (no NFE budget)."""
    problem = SamplingProblem(
        sde=sde, score=score, x_T=x_T, t_start=sde.T, t_end=sde.default_eps, steps=steps, rtol=1.0, atol=1.0,
        generator=None, progress=lambda k: None, options=options,
    )  # fmt: skip
    x, stats = get(solver).solve(problem)
    assert stats.steps == steps
    return x


def pf_error(sde: sdekit.SDE, solver: str, steps: int, **options) -> float:
    """Max |error| of the solver's PF-ODE map T -> eps from 7 fixed x_T against the exact affine map (Gaussian)."""
    mT, sT = gauss(sde, sde.T)
    me, se = gauss(sde, sde.default_eps)
    x_T = mT + sT * torch.linspace(-3, 3, 7, dtype=F64)[:, None]
    x = solve(sde, solver, steps, gauss_score(sde), x_T, **options)
    return float((x - (me + se / sT * (x_T - mT))).abs().max())


MIXTURE = analytic.GaussianMixture(
    torch.tensor([[-1.5], [1.0]], dtype=F64), torch.tensor([0.4, 0.6], dtype=F64), torch.tensor([0.4, 0.6], dtype=F64)
)
"""1-D, two components: N(-1.5, 0.4^2) with weight 0.4, N(1, 0.6^2) with weight 0.6."""


def _quantile(law: analytic.GaussianMixture, u: torch.Tensor) -> torch.Tensor:
    """:math:`F^{-1}(u)` of a 1-D mixture by bisection (120 halvings: float64 round-off)."""
    cdf = mixture_projected_cdf(law, torch.ones(1, 1, dtype=F64))
    spread = 12 * float(law.covariance().sqrt()) + float(law.mean().abs())
    lo, hi = torch.full_like(u, -spread), torch.full_like(u, spread)
    for _ in range(120):
        mid = (lo + hi) / 2
        below = cdf(mid, 0) < u
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return ((lo + hi) / 2).reshape(-1, 1)


def mixture_pf_error(sde: sdekit.SDE, solver: str, steps: int, **options) -> float:
    """Max |error| of the solver's PF-ODE map T -> eps on :data:`MIXTURE` at 9 quantiles (0.05 ... 0.95) of
    :math:`p_T`, against the exact monotone map :math:`F_\\epsilon^{-1}(F_T(x_T))`."""
    oracle = MIXTURE.diffuse(sde)
    u = torch.linspace(0.05, 0.95, 9, dtype=F64)
    x_T = _quantile(oracle.at(sde.T), u)
    want = _quantile(oracle.at(sde.default_eps), u)
    x = solve(sde, solver, steps, oracle, x_T, **options)
    return float((x - want).abs().max())


def slope(steps: tuple[int, ...], errs: list[float]) -> float:
    """Least-squares order: minus the slope of log error against log steps."""
    xs = torch.log(torch.tensor(steps, dtype=F64))
    ys = torch.log(torch.tensor(errs, dtype=F64))
    return -float(((xs - xs.mean()) * (ys - ys.mean())).sum() / ((xs - xs.mean()) ** 2).sum())
