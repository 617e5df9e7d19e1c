r"""Solver base class and the problem every solver receives.

A solver integrates from ``t_start`` (usually T) down to ``t_end`` (usually eps)
either the reverse-time SDE or the probability-flow ODE of ``problem.sde`` with the
score ``problem.score``. Capabilities are class attributes, read by the registry,
by :func:`sdekit.sample`'s input check and by the docs.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..errors import SolverDivergedError, SolverError

if TYPE_CHECKING:  # pragma: no cover
    from ..symbolic.sde import SDE

__all__ = ["FiniteWatch", "Solver", "SamplingProblem", "SolveStats"]


@dataclasses.dataclass
class SamplingProblem:
    """What a solver needs. ``score(x, t)`` takes t of shape (batch,) and counts NFE itself.

    ``progress(n)`` advances a progress bar by n steps (a no-op when progress is off).
    ``options`` holds solver-specific keywords (``corrector``, ``snr``, ``method`` ...).
    """

    sde: SDE
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    x_T: torch.Tensor
    t_start: float
    t_end: float
    steps: int | None
    rtol: float
    atol: float
    generator: torch.Generator | None
    progress: Callable[[int], None]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SolveStats:
    """Step counts a solver reports (NFE is counted by the score wrapper)."""

    steps: int = 0
    accepted: int = 0
    rejected: int = 0


class Solver(abc.ABC):
    """Base class of every registered solver.

    Subclasses set the class attributes below and implement :meth:`_solve`. The public
    :meth:`solve` checks the SDE against the declared capabilities first.
    """

    name: ClassVar[str]
    """Registry name (``sdekit.sample(..., solver=name)``)."""
    kind: ClassVar[str]
    """``"sde"`` (integrates the reverse SDE) or ``"ode"`` (the probability-flow ODE)."""
    strong_order: ClassVar[float | None] = None
    """Strong order for diagonal noise (None for ODE / not applicable)."""
    strong_order_additive: ClassVar[float | None] = None
    """Strong order for additive noise, when higher than :attr:`strong_order`."""
    weak_order: ClassVar[float | None] = None
    """Weak order (ODE solvers: the global order of the method)."""
    weak_order_additive: ClassVar[float | None] = None
    """Weak order for additive noise, when higher than :attr:`weak_order`."""
    adaptive: ClassVar[bool] = False
    """Whether ``steps=None`` runs an adaptive step-size controller with rtol/atol."""
    noise_types: ClassVar[tuple[str, ...]] = ("additive", "diagonal")
    """Noise types of the forward SDE this solver handles."""
    requires_affine: ClassVar[bool] = False
    """Whether the solver needs the Gaussian marginal (affine SDE)."""
    default_steps: ClassVar[int | None] = None
    """Steps used when ``steps=None`` and the solver is not adaptive (the documented recommendation)."""
    recommended_steps: ClassVar[int | None] = None
    """Adaptive solvers that also take ``steps=n`` (torchsde): the documented fixed step count (the
    sliced-KS test of ``docs/sampling.md`` passes at it on every affine zoo SDE, on :attr:`grid`).
    Fixed-grid solvers document theirs as :attr:`default_steps`."""
    recommended_rtol: ClassVar[float | None] = None
    """Adaptive runs: the rtol = atol that :func:`sdekit.sample` uses when none is given (None: 1e-3); the
    sliced-KS test of ``docs/sampling.md`` passes at it."""
    grid: ClassVar[str] = "uniform"
    """Default time grid of fixed-step runs: ``"uniform"`` in t, ``"logsnr"``, ``"edm"`` or ``"arctan"``
    (:mod:`sdekit.solvers._grids`; option ``grid=``). Non-affine SDEs fall back to uniform."""
    can_sample: ClassVar[bool] = True
    r"""Whether :func:`sdekit.sample` runs this solver (on the reverse SDE or the PF-ODE).

    False for a method that is fine on forward SDEs (:func:`sdekit.simulate`) but unstable on the
    reverse dynamics of a diffusion model, which contract at the rate :math:`\approx g^2/\sigma^2`
    (e.g. ``reversible_heun``, whose undamped parasitic mode grows at exactly that rate).
    :func:`sdekit.sample` then raises :class:`~sdekit.errors.SolverError` with :attr:`sample_refusal`
    unless ``allow_unstable=True`` is passed; :meth:`solve` itself does not refuse.
    """
    sample_refusal: ClassVar[str] = ""
    """Why :attr:`can_sample` is False and what to use instead (the ``SolverError`` message of ``sample``)."""
    startup_nfe: ClassVar[int] = 0
    """Model evaluations spent once per run on top of the per-step cost (``exp3``: 1, the log-SNR
    midpoint of its singlestep start). Benchmarks at equal NFE run such a solver for fewer steps."""
    description: ClassVar[str] = ""
    """One line for ``sdekit.solvers.available()`` and the docs."""

    def check(self, sde: SDE) -> None:
        """Raise :class:`~sdekit.errors.SolverError` if this solver cannot handle ``sde``."""
        if sde.noise_type not in self.noise_types:
            raise SolverError(
                f"solver {self.name!r} does not support {sde.noise_type} noise (supports: "
                f"{', '.join(self.noise_types)}); choose another solver, e.g. 'euler'"
            )
        if self.requires_affine and not sde.is_affine:
            raise SolverError(
                f"solver {self.name!r} needs the Gaussian marginal of an affine SDE, but {sde!r} is not affine; "
                f"use 'euler', 'srk' or 'ode'"
            )

    def solve(self, problem: SamplingProblem) -> tuple[torch.Tensor, SolveStats]:
        """Integrate from ``problem.t_start`` to ``problem.t_end``; returns (x, stats)."""
        self.check(problem.sde)
        return self._solve(problem)

    @abc.abstractmethod
    def _solve(self, problem: SamplingProblem) -> tuple[torch.Tensor, SolveStats]:
        """Solver-specific integration (inputs already validated)."""


class FiniteWatch:
    """Finiteness watch of a fixed-step loop: one host read every ``every`` steps and at the last one.

    Call it after step ``i`` (1-based) with the new state. When the state holds a NaN or an inf it
    raises :class:`~sdekit.errors.SolverDivergedError` with ``describe(last_ok, i)``: the message and
    the time of step ``i``, where ``last_ok`` is the last step known to be finite (0 = the start).
    Between reads nothing is synchronised, so the loop stays asynchronous on a GPU; ``every=1``
    pins the failing step exactly.
    """

    def __init__(self, every: int, n: int, describe: Callable[[int, int], tuple[str, float]]):
        self.every, self.n, self.describe = max(1, int(every)), n, describe
        self.last_ok = 0

    def __call__(self, i: int, y: torch.Tensor) -> None:
        if i % self.every and i != self.n:
            return
        if not bool(torch.isfinite(y).all()):
            message, t = self.describe(self.last_ok, i)
            raise SolverDivergedError(message, t=t, step=i)
        self.last_ok = i
