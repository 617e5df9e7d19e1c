r"""The closed-form probability-flow map of 1-D Gaussian data N(MU, S^2) under any affine SDE, for the order tests of
the PF-ODE samplers (tests/solvers/test_exponential.py, tests/solvers/test_unipc.py).

The PF-ODE map is affine: :math:`x_t = \mathrm{mean}_t + \tfrac{s_t}{s_T}(x_T - \mathrm{mean}_T)` with
:math:`\mathrm{mean}_t = \alpha_t\mu + m_t`, :math:`s_t^2 = \alpha_t^2 s^2 + \sigma_t^2`.
"""

from __future__ import annotations

import math

import torch

import sdekit
from sdekit.solvers import get
from sdekit.solvers._base import SamplingProblem

MU, S = 0.5, 0.3


def _gauss(sde: sdekit.SDE, t: float) -> tuple[float, float]:
    tt = torch.tensor(t, dtype=torch.float64)
    m = sde.marginal
    a = float(m.alpha(tt))
    return a * MU + float(m.offset(tt)), math.sqrt(a * a * S * S + float(m.sigma2(tt)))


def _gauss_score(sde: sdekit.SDE):
    m = sde.marginal

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, off, s2 = m.alpha(t)[:, None], m.offset(t)[:, None], m.sigma2(t)[:, None]
        return -(x - a * MU - off) / (a * a * S * S + s2)

    return score


def _pf_error(sde: sdekit.SDE, solver: str, steps: int, **options) -> float:
    """Max |error| of the solver's PF-ODE map T -> eps from 7 fixed x_T against the exact affine map."""
    eps = sde.default_eps
    mT, sT = _gauss(sde, sde.T)
    me, se = _gauss(sde, eps)
    x_T = mT + sT * torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    problem = SamplingProblem(
        sde=sde, score=_gauss_score(sde), x_T=x_T, t_start=sde.T, t_end=eps, steps=steps, rtol=1.0, atol=1.0,
        generator=None, progress=lambda k: None, options=options,
    )  # fmt: skip
    x, stats = get(solver).solve(problem)
    assert stats.steps == steps
    return float((x - (me + se / sT * (x_T - mT))).abs().max())


def _slope(steps: tuple[int, ...], errs: list[float]) -> float:
    xs = torch.log(torch.tensor(steps, dtype=torch.float64))
    ys = torch.log(torch.tensor(errs, dtype=torch.float64))
    return -float(((xs - xs.mean()) * (ys - ys.mean())).sum() / ((xs - xs.mean()) ** 2).sum())
