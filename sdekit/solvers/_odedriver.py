r"""The one torchdiffeq driver: every probability-flow ODE solve (``sample``'s ``ode`` solvers, ``logp``) runs here.

:func:`integrate` takes a right-hand side ``func(t, y)`` (y a tensor or a tuple of tensors), the start
state, the two end times and torchdiffeq options already checked by the caller, and

* adaptive methods: makes the last step end exactly on the end time and bounds the first step
  (:func:`~sdekit.solvers._odestart.keep_inside`); counts the attempted and rejected steps through
  torchdiffeq's step callbacks and stops with :class:`~sdekit.errors.SolverError` when the caller's
  :class:`~sdekit.solvers._budget.StepBudget` is spent (a stiff or oscillating model cannot run for hours);
  with ``watch=`` a non-finite step error raises :class:`~sdekit.errors.SolverDivergedError` (torchdiffeq
  reads the norm on the host once per step anyway, so the watch costs no extra synchronisation);
* fixed-grid methods: runs on the caller's grid (option ``step_size`` or ``grid_constructor``); with
  ``watch=`` a pinned :class:`~sdekit.solvers._base.FiniteWatch` sees the state after every step (device
  flags, one host read every 16 steps and at the end), so a NaN/inf stops the solve with
  :class:`~sdekit.errors.SolverDivergedError` naming the first non-finite step and its time;
* differentiates by the adjoint method (torchdiffeq ``odeint_adjoint``) when given ``adjoint_params``;
* turns torchdiffeq's assertion failures (step-size underflow, non-finite state) into
  :class:`~sdekit.errors.SolverError` / :class:`~sdekit.errors.SolverDivergedError` saying where;
* returns the solution with the number of evaluations and of accepted / rejected steps (:class:`OdeRun`).

Solver names are resolved through the registry by the callers (``ode:<method>`` and its aliases,
:func:`sdekit.solvers._torchdiffeq.ode_method`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torchdiffeq import odeint, odeint_adjoint
from torchdiffeq._impl.misc import _mixed_norm, _rms_norm
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.solvers import FixedGridODESolver

from .._model_errors import is_model_error
from ..errors import SolverDivergedError, SolverError
from ._base import FiniteWatch
from ._budget import StepBudget
from ._odestart import end_time, keep_inside

__all__ = ["OdeRun", "integrate", "is_fixed_grid"]

State = Any  # a tensor or a tuple of tensors
Func = Callable[[torch.Tensor, State], State]


def is_fixed_grid(method: str) -> bool:
    """Whether torchdiffeq's ``method`` steps on a given grid (``euler``, ``rk4``, the Adams methods, ...)."""
    return issubclass(SOLVERS[method], FixedGridODESolver)


@dataclass(frozen=True)
class OdeRun:
    """What :func:`integrate` returns."""

    ys: State
    """The solution at the given times (torchdiffeq's output: time first)."""
    evaluations: int
    """Calls of ``func`` (including the first-step set-up; not the adjoint's backward solve)."""
    accepted: int | None
    """Accepted steps of an adaptive run (None on a fixed grid: the caller's grid says)."""
    rejected: int | None
    """Rejected steps of an adaptive run (None on a fixed grid)."""


class _Counted:
    """``func`` counting its calls and keeping the last time it was called at (for messages)."""

    def __init__(self, func: Func):
        self.func, self.calls, self.t = func, 0, float("nan")

    def __call__(self, t: torch.Tensor, y: State) -> State:
        self.t = t
        self.calls += 1
        return self.func(t, y)


class _StepNorm:
    """The solve's error norm; with a watch, a non-finite value (a NaN/inf drift in the step) raises."""

    def __init__(self, norm: Callable[[State], torch.Tensor], counted: _Counted, watch: str | None, advice: str):
        self.norm, self.counted, self.watch, self.advice = norm, counted, watch, advice
        self.steps: _Steps | None = None
        """The solve's step counter, once the steps start (the error is then that of attempt ``steps.attempts``)."""

    def __call__(self, scaled_error: State) -> torch.Tensor:
        value = self.norm(scaled_error)
        if self.watch is not None and not bool(torch.isfinite(value)):  # torchdiffeq reads it on the host anyway
            t, n = float(self.counted.t), self.counted.calls
            step = self.steps.attempts if self.steps is not None else 0
            raise SolverDivergedError(
                f"{self.watch} became non-finite in step {step} (attempted steps, ending near t = {t:.6g}; "
                f"{n} evaluations); {self.advice}",
                t=t,
                step=step,
            )
        return value


class _Steps:
    """``func`` as torchdiffeq sees it, taking torchdiffeq's ``callback_step`` at the start of every attempted step
    (adaptive and fixed-grid solvers call it; :class:`_AdaptiveSteps` also counts the rejected ones).

    Counts attempted and rejected steps in Python ints (no host read) and, before each attempt, checks the
    ``budget`` (the time and step size are read on the host only when it is spent). On a fixed grid, ``watch``
    (a pinned :class:`~sdekit.solvers._base.FiniteWatch`) sees the state after every step: the start state of
    the next step here, the final state in :func:`integrate`.
    """

    def __init__(self, func: Func, budget: StepBudget | None, spent: Callable[[float, float, int, int], Exception]):
        self.func, self.budget, self.spent = func, budget, spent
        self.attempts = self.rejected = 0
        self.watch: FiniteWatch | None = None

    def __call__(self, t: torch.Tensor, y: State) -> State:
        return self.func(t, y)

    def callback_step(self, t0: torch.Tensor, y0: State, dt: torch.Tensor) -> None:
        if self.budget is not None and not self.budget.allows(self.attempts, self.rejected):
            raise self.spent(float(t0), abs(float(dt)), self.attempts, self.rejected)
        if self.watch is not None and self.attempts:
            self.watch(self.attempts, y0)
        self.attempts += 1


class _AdaptiveSteps(_Steps):
    """:class:`_Steps` of an adaptive solver, which also reports its rejected steps (fixed-grid solvers would warn
    that they do not support this callback)."""

    def callback_reject_step(self, t0: torch.Tensor, y0: State, dt: torch.Tensor) -> None:
        self.rejected += 1


def integrate(
    func: Func,
    y0: State,
    times: torch.Tensor,
    *,
    method: str,
    rtol: float,
    atol: float,
    options: Mapping[str, Any],
    graph: bool | None = None,
    adjoint_params: tuple[torch.Tensor, ...] | None = None,
    what: str = "the probability-flow ODE",
    watch: str | None = None,
    advice: str = "check the model, raise eps or tighten rtol/atol",
    budget: StepBudget | None = None,
    grid_times: torch.Tensor | None = None,
) -> OdeRun:
    """Integrate ``func`` from ``times[0]`` to ``times[-1]`` with torchdiffeq's ``method``.

    Args:
        func: right-hand side ``func(t, y)``.
        y0: start state (a tensor or a tuple of tensors).
        times: the two end times, in the solve's dtype and device.
        method: a torchdiffeq method (resolved through the registry by the caller).
        rtol: relative tolerance (adaptive methods).
        atol: absolute tolerance (adaptive methods).
        options: torchdiffeq options, checked by the caller (not modified). Fixed-grid methods need
            ``step_size`` or ``grid_constructor``; adaptive ones get ``step_t`` and ``first_step`` unless given.
        graph: grad mode of the solve (None: as it is). With ``adjoint_params`` the first-step set-up
            runs without grad, like the adjoint's forward solve.
        adjoint_params: differentiate by the adjoint method w.r.t. these tensors (None: backpropagate).
        what: the ODE, for messages.
        watch: what to name when a step's error norm (adaptive) or the state after a step (fixed grid) is
            non-finite (None: no watch; torchdiffeq then rejects the step and shrinks it, or the caller checks
            the result).
        advice: what to do, appended to the error messages.
        budget: step budget of an adaptive solve (None: no limit); also bounds the adjoint's backward solve
            (through torchdiffeq's ``max_num_steps``).
        grid_times: the fixed grid in the caller's time, for messages, when torchdiffeq steps in another variable
            (default: the grid torchdiffeq steps on).

    Raises:
        SolverDivergedError: non-finite step error or state (with ``watch``; the state: always).
        SolverError: the budget is spent, or torchdiffeq gave up (e.g. step-size underflow).
    """
    graph = torch.is_grad_enabled() if graph is None else graph
    counted = _Counted(func)
    opts = dict(options)
    fixed = is_fixed_grid(method)
    rhs: Func = counted
    step_norm = None
    if not fixed:
        default_norm = _mixed_norm if isinstance(y0, tuple) else _rms_norm  # torchdiffeq's defaults
        step_norm = _StepNorm(opts.pop("norm", default_norm), counted, watch, advice)
        # torchdiffeq's first-step probe is unbounded, and without step_t it steps past the end (_odestart)
        with torch.set_grad_enabled(graph and adjoint_params is None):
            rhs = keep_inside(counted, y0, times, opts, method=method, rtol=rtol, atol=atol, norm=step_norm)
        opts["norm"] = step_norm
    label = f"torchdiffeq {method} on {what}"

    def spent(t: float, h: float, attempts: int, rejected: int) -> Exception:
        assert budget is not None
        return budget.error(label, t, h, attempts, rejected, rtol, atol)

    steps = _Steps(rhs, None, spent) if fixed else _AdaptiveSteps(rhs, budget, spent)
    if step_norm is not None:
        step_norm.steps = steps
    if fixed and watch is not None:
        steps.watch = _grid_watch(opts, grid_times, what, advice)
    extra: dict[str, Any] = {}
    solve = odeint
    if adjoint_params is not None:
        solve = odeint_adjoint
        # the backward solve (end to start) ends on the start time and begins with the forward's first step
        adjoint_options = {k: v for k, v in opts.items() if k not in ("norm", "step_t")}
        if not fixed:
            adjoint_options["step_t"] = end_time(times[:1])
            if budget is not None and budget.max_steps is not None:
                adjoint_options["max_num_steps"] = budget.max_steps
        extra = {"adjoint_options": adjoint_options, "adjoint_params": adjoint_params}
    with torch.set_grad_enabled(graph):
        try:
            ys = solve(steps, y0, times, rtol=rtol, atol=atol, method=method, options=opts or None, **extra)
        except AssertionError as err:  # torchdiffeq signals step-size underflow and non-finite states with assert
            if is_model_error(err):  # the user's model asserted: report it as itself
                raise
            raise _failure(err, method, times, counted, what, advice) from err
    if steps.watch is not None:  # the final state (after the last step)
        steps.watch.n = steps.attempts
        steps.watch(steps.attempts, tuple(y[-1] for y in ys) if isinstance(ys, tuple) else ys[-1])
    if fixed:
        return OdeRun(ys=ys, evaluations=counted.calls, accepted=None, rejected=None)
    return OdeRun(ys, counted.calls, accepted=steps.attempts - steps.rejected, rejected=steps.rejected)


def _from_step_size(step_size: Any) -> Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]:
    """torchdiffeq's grid of the option ``step_size`` as a ``grid_constructor`` of the times as given (torchdiffeq
    builds it on increasing times: on ``-t`` when they decrease)."""
    increasing = FixedGridODESolver._grid_constructor_from_step_size(step_size)

    def grid(func: Any, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return increasing(func, y0, t) if bool(t[-1] >= t[0]) else -increasing(func, y0, -t)

    return grid


def _given_times(func: Any, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """torchdiffeq's grid when neither ``step_size`` nor ``grid_constructor`` is given: the output times."""
    return t


_CHECK_EVERY = 16
"""Fixed-grid solves read their finiteness watch on the host every this many steps and at the end (the watch is
pinned: the first non-finite step is named exactly whatever this is)."""


def _grid_watch(opts: dict[str, Any], grid_times: torch.Tensor | None, what: str, advice: str) -> FiniteWatch:
    """A pinned finiteness watch of a fixed-grid solve naming the first non-finite step and its times.

    The grid is taken from ``grid_times`` or, as torchdiffeq builds it, from the ``grid_constructor`` (``step_size``
    is turned into torchdiffeq's own constructor first), which ``opts`` then holds wrapped.
    """
    grid: list[torch.Tensor] = [] if grid_times is None else [grid_times]
    make = opts.get("grid_constructor")
    if make is None and "step_size" in opts:
        make = _from_step_size(opts.pop("step_size"))
    elif make is None:
        make = _given_times
    if grid_times is None:

        def capture(func: Any, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = make(func, y0, t)
            grid.append(out)
            return out

        opts["grid_constructor"] = capture

    def describe(k: int, _: int) -> tuple[str, float | None]:
        if not grid:
            return f"the state of {what} became non-finite at step {k + 1}; {advice}", None
        a, b = float(grid[0][k]), float(grid[0][k + 1])
        n = len(grid[0]) - 1
        return f"the state of {what} became non-finite at step {k + 1} of {n} (t = {a:.6g} -> {b:.6g}); {advice}", b

    return FiniteWatch(_CHECK_EVERY, None, describe, pin=True)


def _failure(
    err: AssertionError, method: str, times: torch.Tensor, counted: _Counted, what: str, advice: str
) -> SolverError:
    t, n = float(counted.t), counted.calls
    if "non-finite" in str(err):
        return SolverDivergedError(
            f"the state of {what} became non-finite near t = {t:.6g} (evaluation {n}); {advice}", t=t, step=n
        )
    return SolverError(
        f"torchdiffeq {method} failed on {what} from t = {float(times[0]):g} to {float(times[-1]):g}: {err}. "
        f"Loosen rtol/atol, raise eps or use another solver"
    )
