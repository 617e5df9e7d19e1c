r"""The problems of the Fokker–Planck checks: the suite's example SDEs and data law, the sizes of a run, and a
:class:`Problem` (SDE, p_0, FP grid) for the example or for any user SDE.

The non-affine example :math:`dx = (x - x^3)\,dt + \sqrt{1 + x^2}\,dW` (a double well with multiplicative noise)
carries the asymmetric bimodal :func:`example_p0`; overdamped Langevin dynamics :func:`langevin_sde` has the
stationary Gibbs density :math:`e^{-U}/Z`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import sympy as sp
import torch

import sdekit
from sdekit.symbolic._symbols import x as X_SYM

from .fokker_planck import FokkerPlanck1D, FPSolution

__all__ = [
    "example_sde",
    "example_p0",
    "langevin_sde",
    "numpy_pdf",
    "Settings",
    "QUICK",
    "FULL",
    "settings",
    "Unresolved",
    "Problem",
    "example_problem",
    "user_problem",
]


def example_sde() -> sdekit.SDE:
    r"""The non-affine example :math:`dx = (x - x^3)\,dt + \sqrt{1 + x^2}\,dW`, T = 1.

    A double well with multiplicative noise: :math:`\partial_x g^2 = 2x`, so the divergence term of the
    reverse drift matters.
    """
    return sdekit.SDE.from_expressions("x - x**3", "sqrt(1 + x**2)", T=1.0, name="DoubleWellMultiplicative")


def example_p0() -> sdekit.analytic.GaussianMixture:
    """The asymmetric bimodal data law of the forward/reverse checks: 0.35 N(-1, 0.25^2) + 0.65 N(0.8, 0.2^2)."""
    return sdekit.analytic.GaussianMixture(
        torch.tensor([[-1.0], [0.8]]), torch.tensor([0.25, 0.2]), torch.tensor([0.35, 0.65])
    )


def langevin_sde(U: sp.Expr | str) -> sdekit.SDE:
    r"""Overdamped Langevin dynamics :math:`dx = -U'(x)\,dt + \sqrt2\,dW` in a potential U(x).

    The drift is derived from U with sympy; the stationary density is :math:`e^{-U}/Z`.
    """
    U = sp.sympify(U, locals={"x": X_SYM})
    return sdekit.SDE.from_expressions(-sp.diff(U, X_SYM), sp.sqrt(2), T=10.0, name="OverdampedLangevin")


def numpy_pdf(dist: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A vectorised numpy density from a 1-D sdekit.analytic distribution (log_prob on (n, 1) float64)."""

    def pdf(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        lp = dist.log_prob(torch.as_tensor(x.reshape(-1, 1), dtype=torch.float64))
        return np.exp(lp.numpy()).reshape(x.shape)

    return pdf


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of one run (quick or full)."""

    h_kernel: float  # cell width of the Gaussian-kernel cases (p0 std 0.3)
    steps_kernel: int  # time steps of the Gaussian-kernel cases
    cells: int  # cells of the example SDE on its domain
    fp_steps: int  # FP time steps on [0, T] for the example SDE
    n_forward: int
    steps_forward: int
    n_reverse: int
    steps_reverse: int  # reverse-SDE Euler steps
    steps_pf: int  # PF-ODE rk4 steps


QUICK = Settings(0.02, 400, 800, 800, 20_000, 400, 20_000, 1000, 100)
FULL = Settings(0.01, 1000, 1600, 2000, 100_000, 2000, 100_000, 4000, 200)


def settings(quick: bool) -> Settings:
    """The quick or full sizes."""
    return QUICK if quick else FULL


class Unresolved(ValueError):
    """The uniform FP grid cannot resolve this SDE's range of scales (the check is skipped)."""


@dataclasses.dataclass
class Problem:
    """An SDE, a data law p_0 (1-D Gaussian mixture) and the FP grid to solve it on."""

    sde: sdekit.SDE
    p0: sdekit.analytic.GaussianMixture
    domain: tuple[float, float]
    cells: int
    label: str

    def solve(self, times: np.ndarray, dt: float) -> tuple[FokkerPlanck1D, FPSolution, Callable]:
        """The FP solver, its solution at ``times`` and the numpy p_0."""
        fp = FokkerPlanck1D(self.sde, self.domain, self.cells)
        p0 = numpy_pdf(self.p0)
        return fp, fp.solve(p0, times, dt=dt), p0


def example_problem(s: Settings) -> Problem:
    """The non-affine example on [-6, 6] (its density is below 1e-10 of its peak at +-5 for t in [0, 1])."""
    return Problem(example_sde(), example_p0(), (-6.0, 6.0), s.cells, "double well x sqrt(1+x^2)")


def user_problem(
    sde: sdekit.SDE,
    s: Settings,
    generator: torch.Generator,
    h: float = 0.01,
    max_cells: int = 20_000,
    max_h: float = 0.05,
) -> Problem:
    """A problem for any SDE: p_0 = :func:`example_p0`, domain from a pilot simulation.

    4,000 pilot paths (``sdekit.simulate``, Euler, 400 steps) give the range [lo, hi] visited on [0, T];
    the domain is that range padded by its width on each side (zero-flux walls far from the mass), with
    cells of width ``h`` (at most ``max_cells``; the Richardson error estimate then grows and enters the
    tolerances).

    Raises:
        Unresolved: even ``max_cells`` cells would be wider than ``max_h`` (VE/EDM-like scale ranges).
    """
    data = example_p0()
    x0 = data.sample(4000, generator=generator).to(torch.float64)
    ts = torch.linspace(0.0, float(sde.T), 21, dtype=torch.float64)
    paths = sdekit.simulate(sde, x0, ts, solver="euler", steps=400, generator=generator)
    lo, hi = float(paths.min()), float(paths.max())
    pad = max(hi - lo, 2.0)
    domain = (lo - pad, hi + pad)
    cells = int(min(max_cells, max(400, math.ceil((domain[1] - domain[0]) / h))))
    if (domain[1] - domain[0]) / cells > max_h:
        raise Unresolved(
            f"{type(sde).__name__} spreads p_0 (std 0.2) over [{domain[0]:.3g}, {domain[1]:.3g}]: a uniform grid of "
            f"{max_cells} cells has h = {(domain[1] - domain[0]) / max_cells:.3g} > {max_h}, too coarse for p_0; "
            f"the symbolic and analytic checks cover such SDEs"
        )
    cells += cells % 2  # even, for the Richardson estimate on cells // 2
    return Problem(sde, data, domain, cells, type(sde).__name__)
