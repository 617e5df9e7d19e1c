r"""Keep torchdiffeq's adaptive solves inside :math:`[t_0, t_1]`: a bounded first step and exact end times.

torchdiffeq's adaptive Runge–Kutta methods choose their first step with the heuristic of Hairer,
Nørsett & Wanner (*Solving ODEs I*, II.4): with :math:`s = \mathrm{atol} + \mathrm{rtol}\,|y_0|`,
:math:`d_0 = \|y_0/s\|`, :math:`d_1 = \|f_0/s\|`, a probe step :math:`h_0 = 0.01\,d_0/d_1` gives
:math:`f_1 = f(t_0 + h_0, y_0 + h_0 f_0)`, :math:`d_2 = \|(f_1 - f_0)/s\|/h_0` and the first step
:math:`\min\big(100 h_0, (0.01/\max(d_1, d_2))^{1/(p+1)}\big)` (p = order - 1). Nothing bounds
:math:`h_0`: on diffusion ODEs it reached t = 2437 on sub-VP and t = -10874 on an OU process,
evaluating the model far outside the interval (a timestep-indexed model then fails).
:func:`bounded_start` runs the same heuristic with :math:`h_0` and the result capped at
:math:`|t_1 - t_0|` and passes the step as ``first_step``; the evaluation :math:`f_0` it makes is
handed back on torchdiffeq's first call, so the number of model evaluations is unchanged.

torchdiffeq compares ``step_t`` in float64; the end time must be given in the solve's dtype
(:func:`end_time`), or in float32 the last step lands on float64(eps) != float32(eps) and one more
step runs past the end (measured: the model was called at t = -0.8 on VE).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver

__all__ = ["bounded_start", "end_time", "keep_inside", "torchdiffeq_options", "uses_first_step"]

State = Any  # a tensor or a tuple of tensors


def _parts(state: State) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _map(fn: Callable[..., torch.Tensor], *states: State) -> State:
    out = tuple(fn(*parts) for parts in zip(*map(_parts, states)))
    return out if isinstance(states[0], tuple) else out[0]


@functools.cache
def torchdiffeq_options(method: str) -> frozenset[str]:
    """The ``options`` keys torchdiffeq's ``method`` accepts (its solver's keyword arguments).

    torchdiffeq only warns about others ("Unexpected arguments") and ignores them, so a misspelt
    option would silently do nothing. sdekit declares the ones it accepts
    (:data:`~sdekit.solvers._torchdiffeq.ADAPTIVE_OPTIONS`, ...) and rejects the others up front;
    ``tests/solvers/test_solver_options.py`` checks those declarations against this list.
    """
    names: set[str] = set()
    for cls in SOLVERS[method].__mro__:
        if "__init__" in cls.__dict__:
            params = inspect.signature(cls.__dict__["__init__"]).parameters.values()
            names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return frozenset(names - {"self", "func", "y0", "rtol", "atol", "dtype"})


def uses_first_step(method: str) -> bool:
    """Whether torchdiffeq's ``method`` picks a first step (its adaptive Runge–Kutta solvers)."""
    return issubclass(SOLVERS[method], RKAdaptiveStepsizeODESolver)


def end_time(t: torch.Tensor) -> torch.Tensor:
    """``step_t`` holding the last entry of the solve's time tensor ``t``, exactly as torchdiffeq compares it."""
    return t[-1:].detach().to(torch.float64)


def bounded_start(
    func: Callable[[torch.Tensor, State], State],
    y0: State,
    t: torch.Tensor,
    *,
    method: str,
    rtol: float,
    atol: float,
    norm: Callable[[State], torch.Tensor],
) -> tuple[Callable[[torch.Tensor, State], State], float]:
    """First step for integrating ``func`` from ``t[0]`` to ``t[-1]`` with the probe inside the interval.

    Returns ``(func', first_step)``: ``func'`` answers its first call, made by torchdiffeq at
    ``(t[0], y0)``, with the evaluation made here (checked by value) and otherwise calls ``func``.
    ``norm`` is the solve's error norm on states shaped like ``y0``. Costs three host reads once per solve.
    """
    t0, t1 = t[0], t[-1]
    span = abs(float(t1) - float(t0))
    direction = 1.0 if float(t1) > float(t0) else -1.0
    f0 = func(t0, y0)
    scale = _map(lambda y: atol + y.detach().abs() * rtol, y0)
    # the probe only sizes the first step: its norms are read without the graph (no autograd warning, no memory)
    d0 = float(norm(_map(lambda y, s: y.detach() / s, y0, scale)))
    d1 = float(norm(_map(lambda f, s: f.detach() / s, f0, scale)))
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    y1 = _map(lambda y, f: (y + (direction * h0) * f).detach(), y0, f0)
    f1 = func(
        (t0 + direction * h0).clamp(torch.minimum(t0, t1), torch.maximum(t0, t1)), y1
    )  # float32 may round past t1
    d2 = float(norm(_map(lambda a, b, s: (a.detach() - b.detach()) / s, f1, f0, scale))) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / SOLVERS[method].order)
    first_step = min(100 * h0, h1, span)
    pending = [(float(t0), y0, f0)]

    def start_then_func(tt: torch.Tensor, y: State) -> State:
        if pending:
            t_first, y_first, f_first = pending.pop()
            if float(tt) == t_first and all(map(torch.equal, _parts(y), _parts(y_first))):
                return f_first
        return func(tt, y)

    return start_then_func, first_step


def keep_inside(
    func: Callable[[torch.Tensor, State], State],
    y0: State,
    t: torch.Tensor,
    options: dict[str, Any],
    *,
    method: str,
    rtol: float,
    atol: float,
    norm: Callable[[State], torch.Tensor],
) -> Callable[[torch.Tensor, State], State]:
    """Set up an adaptive torchdiffeq solve of ``func`` over ``t`` so that it never leaves ``[t[0], t[-1]]``.

    Fills ``options`` (unless the caller set them): ``step_t`` = the end time in the solve's dtype
    (:func:`end_time`), and for the Runge–Kutta methods ``first_step`` from :func:`bounded_start`, whose
    wrapped ``func`` is returned (else ``func`` itself).
    """
    options.setdefault("step_t", end_time(t))
    if "first_step" in options or not uses_first_step(method):
        return func
    func, options["first_step"] = bounded_start(func, y0, t, method=method, rtol=rtol, atol=atol, norm=norm)
    return func
