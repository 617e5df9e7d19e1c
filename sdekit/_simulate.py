r"""``sdekit.simulate``: integrate the *forward* SDE :math:`dx = f\,dt + g\,dW` and return its path.

.. math::
    x_{t_0} = x_0,\qquad dx = f(x, t)\,dt + g(x, t)\,dW_t,\qquad
    \text{returns } (x_{t_0}, x_{t_1}, \dots, x_{t_K}) .

Any declared SDE (affine or not, additive or diagonal noise) is solved by a solver of the
registry that can (``Solver.can_simulate``: the torchsde methods ``euler``, ``milstein``, ``srk``,
``heun``, ``midpoint``, ``reversible_heun``) through the same driver as :func:`sdekit.sample`
(:mod:`sdekit.solvers._torchsde_driver`, with the forward time map t = s): the state
is flattened to ``(batch, d)``; fixed steps draw fresh increments from the light
:class:`~sdekit.solvers._brownian.FixedStepBrownian`; adaptive runs (no ``steps``/``dt``)
use a :class:`torchsde.BrownianInterval` seeded from ``generator``. Stratonovich methods
(``heun``, ``midpoint``, ``reversible_heun``) get the Itô-to-Stratonovich drift
:math:`f - \tfrac14\partial_x(g^2)` for state-dependent noise, so every method solves the
same Itô SDE.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchsde import BaseBrownian, BrownianInterval

from . import solvers as _solvers
from ._checks import check_batch, check_generator, check_positive
from ._keywords import suggest_keywords
from ._run import RunInfo, check_sde, check_steps, lookup_solver
from .errors import SolverError
from .solvers import SimulationProblem, Solver
from .solvers._budget import SDE_MAX_REJECTED, SDE_MAX_STEPS, check_budget, check_step_cap
from .solvers._torchsde_driver import brownian_size

if TYPE_CHECKING:  # pragma: no cover
    from .symbolic.sde import SDE

__all__ = ["simulate", "SimulateInfo"]

SimulateInfo = RunInfo
"""What :func:`simulate` reports with ``return_info=True``: a :class:`sdekit.RunInfo` (``nfe``: drift evaluations).
``sdekit.SampleInfo`` is the same class."""


@suggest_keywords
def simulate(
    sde: SDE,
    x0: torch.Tensor,
    ts: torch.Tensor | np.ndarray | Sequence[float],
    *,
    solver: str = "euler",
    steps: int | None = None,
    dt: float | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-3,
    generator: torch.Generator | None = None,
    bm: BaseBrownian | None = None,
    check_every: int = 32,
    max_steps: int | None = SDE_MAX_STEPS,
    max_rejected: int | None = SDE_MAX_REJECTED,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, RunInfo]:
    r"""Integrate the forward SDE :math:`dx = f\,dt + g\,dW` from :math:`x(t_0) = x_0` and return :math:`x` at ``ts``.

    .. math::
        x_{t_{k+1}} = x_{t_k} + \int_{t_k}^{t_{k+1}} f(x_u, u)\,du + \int_{t_k}^{t_{k+1}} g(x_u, u)\,dW_u
        \quad (\text{Itô}),\qquad k = 0, \dots, K - 1 .

    Fixed steps: ``steps=n`` sets the step size :math:`h = (t_K - t_0)/n` and ``dt=h`` sets it
    directly; each interval :math:`[t_k, t_{k+1}]` is split into :math:`\lceil (t_{k+1} - t_k)/h\rceil`
    equal steps (exactly ``n`` steps in total when the ``ts`` lie on the uniform grid), so the
    output times are hit exactly. With neither, torchsde's adaptive step-doubling controller
    runs with ``rtol``/``atol`` on a seeded :class:`torchsde.BrownianInterval`, interval by interval
    so that steps end exactly on every output time (no interpolation).

    Args:
        sde: the forward SDE (any :class:`sdekit.SDE`; affine or not; additive or diagonal noise).
        x0: initial state at ``ts[0]``, a floating tensor ``(batch, *event_shape)``; its dtype and
            device are those of the result.
        ts: strictly increasing times in ``[0, sde.T]`` (1-D tensor or sequence); ``ts[0]`` is the start.
        solver: a torchsde solver of the registry: ``"euler"`` (default), ``"milstein"``, ``"srk"``,
            ``"heun"``, ``"midpoint"``, ``"reversible_heun"``.
        steps: number of uniform steps over ``[ts[0], ts[-1]]``.
        dt: step size (alternative to ``steps``).
        rtol: relative tolerance of adaptive runs (no ``steps`` and no ``dt``).
        atol: absolute tolerance of adaptive runs.
        generator: ``torch.Generator`` of the Brownian increments: the same seed gives the same paths.
        bm: a torchsde Brownian motion of shape ``(batch, d)`` on ``[ts[0], ts[-1]]`` to drive the run
            instead (e.g. one seeded ``BrownianInterval`` shared by several step sizes: strong errors).
        check_every: fixed steps between finiteness checks (one host synchronisation each).
        max_steps: adaptive runs: most attempted steps (accepted + rejected) over the whole run, default 5,000
            (measured sizes in :mod:`sdekit.solvers._budget`); a run that needs more stops with
            :class:`~sdekit.errors.SolverError`. None: no limit.
        max_rejected: adaptive runs: most rejected steps over the whole run, default 1,000; None: no limit.
        return_info: also return a :class:`SimulateInfo`.

    Returns:
        Tensor of shape ``(len(ts), *x0.shape)`` with ``out[0] = x0``; and the info if ``return_info``.

    Raises:
        UnknownSolverError: ``solver`` is not registered.
        SolverError: ``solver`` cannot simulate (``Solver.can_simulate``; the torchsde solvers can), or cannot
            handle this SDE.
        SolverDivergedError: the state became non-finite (the message gives the time window).
        SolverError: an adaptive run spent ``max_steps`` or ``max_rejected`` (the message names the time reached,
            the step size and what to change).
        ValueError, TypeError: invalid ``x0``, ``ts``, ``steps``, ``dt`` (more than 10**7 steps are refused),
            tolerances, budgets or generator; a misspelt keyword (TypeError suggesting the argument meant,
            :mod:`sdekit._keywords`).

    Example::

        ts = torch.linspace(0, 1, 11)
        paths = sdekit.simulate(sdekit.OrnsteinUhlenbeck(), torch.zeros(1000, 2), ts, steps=100,
                                generator=torch.Generator().manual_seed(0))   # (11, 1000, 2)
    """
    started = time.perf_counter()
    name, impl, problem = _check_inputs(
        sde, x0, ts, solver, steps, dt, rtol, atol, generator, bm, check_every, (max_steps, max_rejected)
    )
    with torch.no_grad():
        out, stats = impl.simulate(problem)
    if not return_info:
        return out
    return out, RunInfo.of(stats, stats.evaluations, name, started)


def _check_inputs(
    sde: Any,
    x0: Any,
    ts: Any,
    solver: Any,
    steps: Any,
    dt: Any,
    rtol: Any,
    atol: Any,
    generator: Any,
    bm: Any,
    check_every: Any,
    budget: tuple[Any, Any],
) -> tuple[str, Solver, SimulationProblem]:
    """Every argument of :func:`simulate` checked once, up front: the solver's name and instance and the problem."""
    sde = check_sde(sde)
    x0 = check_batch(x0, "x0", finite=True)
    times = _check_times(ts, float(sde.T))
    name, impl = _check_solver(solver, sde)
    if steps is not None and dt is not None:
        raise ValueError("pass steps= or dt=, not both")
    steps = check_steps(steps, "")
    if dt is not None:
        dt = check_positive("dt", dt)
        n = (times[-1] - times[0]) / dt  # forward_grid's steps, up to one per interval: refuse before building it
        check_step_cap(n, f"dt={dt:g} over [{times[0]:g}, {times[-1]:g}] ({n:.3g} steps)")
    max_steps, max_rejected = check_budget("max_steps", budget[0]), check_budget("max_rejected", budget[1])
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    check_generator(generator)
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be a positive integer, got {check_every!r}")
    if bm is not None:
        _check_bm(bm, sde, x0, generator, times[0], times[-1])
    problem = SimulationProblem(
        sde, x0, tuple(times), steps, dt, rtol, atol, generator, bm, check_every, max_steps, max_rejected
    )
    return name, impl, problem


def _check_solver(solver: Any, sde: SDE) -> tuple[str, Solver]:
    """The registry's solver named ``solver``, if it can integrate forward SDEs (:attr:`Solver.can_simulate`) and
    this one."""
    name, impl = lookup_solver(solver, "euler")
    if not impl.can_simulate:
        able = sorted(n for n, c in _solvers.available().items() if c.can_simulate)
        raise SolverError(
            f"simulate integrates the forward SDE with a torchsde solver (Solver.can_simulate); {name!r} is not one "
            f"(it is an {impl.kind.upper()} sampler). Choose one of {', '.join(able)}"
        )
    impl.check(sde)
    return name, impl


def _check_bm(bm: Any, sde: SDE, x0: torch.Tensor, generator: Any, t0: float, t1: float) -> None:
    """A user's Brownian motion: torchsde's, shaped ``(batch, d)`` like the flat x0, covering ``[t0, t1]``."""
    shape = brownian_size(sde, tuple(x0.shape))
    if not isinstance(bm, BaseBrownian):
        raise TypeError(f"bm must be a torchsde Brownian motion (BaseBrownian), got {type(bm).__name__}")
    if tuple(bm.shape) != shape:
        raise ValueError(f"bm must have shape (batch, d) = {shape}, got {tuple(bm.shape)}")
    if bm.dtype != x0.dtype or torch.device(bm.device) != x0.device:
        raise ValueError(
            f"bm has dtype {bm.dtype} on {bm.device} but x0 has {x0.dtype} on {x0.device}; build bm with x0's"
        )
    if generator is not None:
        raise ValueError("pass either bm= (which carries its own randomness) or generator=, not both")
    # BrownianInterval knows its interval (private attributes of torchsde 0.2); outside it torchsde only
    # warns and extrapolates the noise
    start, end = getattr(bm, "_start", None), getattr(bm, "_end", None)
    if isinstance(bm, BrownianInterval) and isinstance(start, float) and isinstance(end, float):
        span = max(abs(end - start), 1e-300)
        if start > t0 + 1e-9 * span or end < t1 - 1e-9 * span:
            raise ValueError(
                f"bm covers [{start:g}, {end:g}] but ts spans [{t0:g}, {t1:g}]; build it with t0={t0:g}, t1={t1:g}"
            )


def _check_times(ts: Any, T: float) -> list[float]:
    if isinstance(ts, torch.Tensor):
        if ts.ndim != 1 or ts.is_complex() or ts.dtype == torch.bool:
            raise ValueError(f"ts must be a 1-D real tensor of times, got shape {tuple(ts.shape)} and dtype {ts.dtype}")
        times = [float(v) for v in ts.detach().cpu().to(torch.float64).tolist()]
    elif isinstance(ts, np.ndarray):
        return _check_times(torch.as_tensor(ts), T)
    elif isinstance(ts, Sequence) and not isinstance(ts, str):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ts):
            raise TypeError("ts must be a 1-D tensor or a sequence of numbers (times)")
        times = [float(v) for v in ts]
    else:
        raise TypeError(f"ts must be a 1-D tensor or a sequence of times, got {type(ts).__name__}")
    if len(times) < 2:
        raise ValueError(f"ts needs at least two times (the start ts[0] and one output time), got {len(times)}")
    if not all(math.isfinite(v) for v in times):
        raise ValueError("ts contains NaN or infinite values")
    if any(b <= a for a, b in itertools.pairwise(times)):
        raise ValueError(f"ts must be strictly increasing (forward time), got {times}")
    if times[-1] > T and times[-1] <= T * (1 + 1e-6):
        times[-1] = T  # T rounded up in float32 (e.g. torch.linspace(0, 0.995, k)): snap, as sample(ts=) does
    if times[0] < 0 or times[-1] > T:
        raise ValueError(f"ts must lie in [0, T] = [0, {T:g}], got [{times[0]:g}, {times[-1]:g}]")
    return times
