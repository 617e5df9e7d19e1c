r"""The one torchdiffeq driver: every probability-flow ODE solve (``sample``'s ``ode`` solvers, ``logp``) runs here.

:func:`integrate` takes a right-hand side ``func(t, y)`` (y a tensor or a tuple of tensors), the start
state, the two end times and torchdiffeq options already checked by the caller, and

* adaptive methods: makes the last step end exactly on the end time and bounds the first step
  (:func:`~sdekit.solvers._odestart.keep_inside`), and records the scaled error of every attempted step
  (accepted iff <= 1) for the step statistics; with ``watch=`` a non-finite error raises
  :class:`~sdekit.errors.SolverDivergedError` (torchdiffeq reads the norm on the host once per step
  anyway, so the watch costs no extra synchronisation);
* fixed-grid methods: runs on the caller's grid (option ``step_size`` or ``grid_constructor``);
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
    """The solve's error norm, recording every attempted step's value and, with a watch, raising on a non-finite one."""

    def __init__(self, norm: Callable[[State], torch.Tensor], counted: _Counted, watch: str | None, advice: str):
        self.norm, self.counted, self.watch, self.advice = norm, counted, watch, advice
        self.ratios: list[torch.Tensor] | None = None  # a list once the steps start (not the first-step set-up)

    def __call__(self, scaled_error: State) -> torch.Tensor:
        value = self.norm(scaled_error)
        if self.watch is not None and not bool(torch.isfinite(value)):
            t, n = float(self.counted.t), self.counted.calls
            raise SolverDivergedError(
                f"{self.watch} became non-finite in the step ending near t = {t:.6g} (after {n} evaluations); "
                f"{self.advice}",
                t=t,
                step=n,
            )
        if self.ratios is not None:
            self.ratios.append(value)
        return value

    def counts(self) -> tuple[int, int]:
        """(accepted, rejected) steps: the norm is called once per attempted step, accepted iff <= 1."""
        errs = torch.stack(self.ratios) if self.ratios else torch.zeros(0)
        accepted = int((errs <= 1).sum())
        return accepted, int(errs.numel()) - accepted


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
        watch: what to name when the error norm of a step is non-finite (None: no watch; torchdiffeq
            then rejects the step and shrinks it).
        advice: what to do, appended to the error messages.

    Raises:
        SolverDivergedError: non-finite step error (with ``watch``) or state.
        SolverError: torchdiffeq gave up (e.g. step-size underflow, ``max_num_steps``).
    """
    graph = torch.is_grad_enabled() if graph is None else graph
    counted = _Counted(func)
    opts = dict(options)
    step_norm = None
    rhs: Func = counted
    if not is_fixed_grid(method):
        default_norm = _mixed_norm if isinstance(y0, tuple) else _rms_norm  # torchdiffeq's defaults
        step_norm = _StepNorm(opts.pop("norm", default_norm), counted, watch, advice)
        # torchdiffeq's first-step probe is unbounded, and without step_t it steps past the end (_odestart)
        with torch.set_grad_enabled(graph and adjoint_params is None):
            rhs = keep_inside(counted, y0, times, opts, method=method, rtol=rtol, atol=atol, norm=step_norm)
        opts["norm"], step_norm.ratios = step_norm, []
    extra: dict[str, Any] = {}
    solve = odeint
    if adjoint_params is not None:
        solve = odeint_adjoint
        # the backward solve (end to start) ends on the start time and begins with the forward's first step
        adjoint_options = {k: v for k, v in opts.items() if k not in ("norm", "step_t")}
        if step_norm is not None:
            adjoint_options["step_t"] = end_time(times[:1])
        extra = {"adjoint_options": adjoint_options, "adjoint_params": adjoint_params}
    with torch.set_grad_enabled(graph):
        try:
            ys = solve(rhs, y0, times, rtol=rtol, atol=atol, method=method, options=opts or None, **extra)
        except AssertionError as err:  # torchdiffeq signals step-size underflow and non-finite states with assert
            if is_model_error(err):  # the user's model asserted: report it as itself
                raise
            raise _failure(err, method, times, counted, what, advice) from err
    accepted, rejected = step_norm.counts() if step_norm is not None else (None, None)
    return OdeRun(ys=ys, evaluations=counted.calls, accepted=accepted, rejected=rejected)


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
