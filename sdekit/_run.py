"""What :func:`sdekit.sample` and :func:`sdekit.simulate` share: the run's info, the solver lookup and the common
input checks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import solvers as _solvers
from ._checks import check_sde
from .solvers import SolveStats
from .solvers._budget import check_step_cap

if TYPE_CHECKING:  # pragma: no cover
    from .solvers import Solver

__all__ = ["RunInfo", "check_sde", "check_steps", "lookup_solver"]


@dataclass
class RunInfo:
    """What :func:`sdekit.sample` and :func:`sdekit.simulate` report with ``return_info=True``
    (``sdekit.SampleInfo`` and ``sdekit.SimulateInfo`` are this class).

    Attributes:
        nfe: ``sample``: model evaluations (including the one-off output check and the denoising step);
            ``simulate``: drift evaluations.
        steps: steps taken (accepted steps for adaptive solvers).
        accepted: accepted steps.
        rejected: rejected steps (adaptive solvers; 0 otherwise).
        solver: canonical registry name of the solver used.
        seconds: wall time of the call.
        chunks: chunks of rows the batch was processed in (``sample``'s ``chunk_size``; 1 otherwise). The counts
            above are totals over the chunks: a fixed-step run of k evaluations per sample reports
            ``nfe = k * chunks``.
    """

    nfe: int
    steps: int
    accepted: int
    rejected: int
    solver: str
    seconds: float
    chunks: int = 1

    @classmethod
    def of(cls, stats: SolveStats, nfe: int, solver: str, started: float, chunks: int = 1) -> RunInfo:
        """The info of a run that began at ``time.perf_counter() == started``."""
        return cls(nfe, stats.steps, stats.accepted, stats.rejected, solver, time.perf_counter() - started, chunks)


def lookup_solver(solver: Any, example: str) -> tuple[str, Solver]:
    """Canonical registry name and a fresh instance of ``solver`` (a name; ``example`` shows one in the TypeError).

    Unknown names raise :class:`~sdekit.errors.UnknownSolverError` with close matches (the registry's lookup).
    """
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a registry name such as {example!r}, got {type(solver).__name__}")
    name = _solvers.resolve(solver)
    return name, _solvers.get(name)


def check_steps(steps: Any, what: str) -> int | None:
    """``steps`` if it is None or a positive int (not a bool) of at most :data:`~sdekit.solvers._budget.MAX_STEPS`,
    else a ValueError (ending with ``what`` None means, or saying the limit and why), before anything is allocated."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer or None{what}, got {steps!r}")
    return None if steps is None else check_step_cap(steps)
