r"""``sdekit.simulate``: integrate the *forward* SDE :math:`dx = f\,dt + g\,dW` and return its path.

.. math::
    x_{t_0} = x_0,\qquad dx = f(x, t)\,dt + g(x, t)\,dW_t,\qquad
    \text{returns } (x_{t_0}, x_{t_1}, \dots, x_{t_K}) .

Any declared SDE (affine or not, additive or diagonal noise) is solved by one of the
torchsde methods of the registry (``euler``, ``milstein``, ``srk``, ``heun``, ``midpoint``,
``reversible_heun``) through the same adapter conventions as :func:`sdekit.sample`: the state
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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchsde import BaseBrownian, BrownianInterval
from torchsde._core import base_sde as _ts_base
from torchsde._core import methods as _ts_methods

from . import solvers as _solvers
from ._checks import check_generator, check_positive
from .errors import SolverDivergedError, SolverError
from .solvers import _torchsde
from .solvers._base import FiniteWatch
from .solvers._brownian import FixedStepBrownian

if TYPE_CHECKING:  # pragma: no cover
    from .symbolic.sde import SDE

__all__ = ["simulate", "SimulateInfo", "ForwardSDEFlat"]


@dataclass
class SimulateInfo:
    """What :func:`simulate` reports with ``return_info=True``.

    Attributes:
        nfe: drift evaluations.
        steps: steps taken (accepted steps for adaptive runs).
        accepted: accepted steps.
        rejected: rejected steps (adaptive runs; 0 otherwise).
        solver: canonical registry name of the solver used.
        seconds: wall time of the call.
    """

    nfe: int
    steps: int
    accepted: int
    rejected: int
    solver: str
    seconds: float


class ForwardSDEFlat:
    r"""The forward SDE on flattened ``(batch, d)`` states, as torchsde wants it.

    ``f(t, y)`` is :math:`f` (Itô) or :math:`f - \tfrac14\partial_x(g^2)` (``sde_type="stratonovich"``,
    state-dependent noise), ``g(t, y)`` the elementwise diffusion and ``g_prod(t, y, v)`` :math:`g \odot v`.
    Affine SDEs are evaluated with Python-float coefficients (one fused ``a y + b`` per drift call).
    """

    def __init__(self, sde: SDE, event_shape: tuple[int, ...], noise_type: str, sde_type: str) -> None:
        self.noise_type = noise_type
        self.sde_type = sde_type
        self._sde = sde
        self._event_shape = tuple(event_shape)
        self._coeffs = _torchsde.affine_floats(sde)
        self._correction = sde_type == "stratonovich" and sde.noise_type != "additive"
        self.calls = 0
        self._last: tuple[Any, torch.Tensor | None, torch.Tensor | None] = (None, None, None)

    def _x(self, y: torch.Tensor) -> torch.Tensor:
        return y.view(y.shape[0], *self._event_shape)

    def f(self, t: Any, y: torch.Tensor) -> torch.Tensor:
        """Drift at (t, y), memoised on the last (t, identity of y) (``srk`` repeats stage calls)."""
        last_t, last_y, last_out = self._last
        tf = float(t)
        if y is last_y and tf == last_t:
            return last_out  # type: ignore[return-value]
        self.calls += 1
        if self._coeffs is not None:
            a_fn, b_fn, _ = self._coeffs
            out = y * a_fn(tf)
            b = b_fn(tf)
            if b != 0:
                out = out + b
        else:
            x = self._x(y)
            out = self._sde.drift_fn(x, tf)
            if self._correction:
                out = out - 0.25 * self._sde.dg2_dx_fn(x, tf)
            out = torch.broadcast_to(out, x.shape).reshape(y.shape)
        self._last = (tf, y, out)
        return out

    def g(self, t: Any, y: torch.Tensor) -> torch.Tensor:
        """Elementwise diffusion :math:`g(x, t)`, shape ``(batch, d)``."""
        tf = float(t)
        if self._coeffs is not None:
            return torch.full_like(y, self._coeffs[2](tf))
        x = self._x(y)
        return torch.broadcast_to(self._sde.diffusion_fn(x, tf), x.shape).reshape(y.shape)

    def g_prod(self, t: Any, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """:math:`g \\odot v`."""
        if self._coeffs is not None:
            return v * self._coeffs[2](float(t))
        return self.g(t, y) * v

    def f_and_g(self, t: Any, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and diffusion at (t, y)."""
        return self.f(t, y), self.g(t, y)

    def f_and_g_prod(self, t: Any, y: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and :math:`g \\odot v` at (t, y)."""
        return self.f(t, y), self.g_prod(t, y, v)


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
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, SimulateInfo]:
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
        return_info: also return a :class:`SimulateInfo`.

    Returns:
        Tensor of shape ``(len(ts), *x0.shape)`` with ``out[0] = x0``; and the info if ``return_info``.

    Raises:
        UnknownSolverError: ``solver`` is not registered.
        SolverError: ``solver`` is not a torchsde SDE solver, or cannot handle this SDE.
        SolverDivergedError: the state became non-finite (the message gives the time window).
        ValueError, TypeError: invalid ``x0``, ``ts``, ``steps``, ``dt``, tolerances or generator.

    Example::

        ts = torch.linspace(0, 1, 11)
        paths = sdekit.simulate(sdekit.OrnsteinUhlenbeck(), torch.zeros(1000, 2), ts, steps=100,
                                generator=torch.Generator().manual_seed(0))   # (11, 1000, 2)
    """
    from .symbolic.sde import SDE as _SDE

    started = time.perf_counter()
    if not isinstance(sde, _SDE):
        raise TypeError(f"sde must be an sdekit.SDE instance, got {type(sde).__name__}")
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point():
        raise TypeError(
            f"x0 must be a floating-point tensor (batch, *event_shape), got "
            f"{type(x0).__name__ if not isinstance(x0, torch.Tensor) else x0.dtype}"
        )
    if x0.ndim < 1 or x0.shape[0] < 1 or x0.numel() == 0:
        raise ValueError(f"x0 must have shape (batch, *event_shape) with batch >= 1, got {tuple(x0.shape)}")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 contains NaN or infinite values")
    T = float(sde.T)
    times = _check_times(ts, T)
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a registry name such as 'euler', got {type(solver).__name__}")
    name = _solvers.resolve(solver)
    cls = _solvers.available()[name]
    if not issubclass(cls, _torchsde.TorchsdeSolver):
        sde_solvers = sorted(n for n, c in _solvers.available().items() if issubclass(c, _torchsde.TorchsdeSolver))
        raise SolverError(
            f"simulate integrates the forward SDE with a torchsde solver; {name!r} is not one "
            f"(it is a {cls.kind} sampler). Choose one of {', '.join(sde_solvers)}"
        )
    impl = cls()
    impl.check(sde)
    if steps is not None and dt is not None:
        raise ValueError("pass steps= or dt=, not both")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer or None, got {steps!r}")
    if dt is not None:
        dt = check_positive("dt", dt)
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    check_generator(generator)
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be a positive integer, got {check_every!r}")

    batch = x0.shape[0]
    y0 = x0.reshape(batch, -1)
    t0, t1 = times[0], times[-1]
    adaptive = steps is None and dt is None
    if bm is not None:
        if not isinstance(bm, BaseBrownian):
            raise TypeError(f"bm must be a torchsde Brownian motion (BaseBrownian), got {type(bm).__name__}")
        if tuple(bm.shape) != tuple(y0.shape):
            raise ValueError(f"bm must have shape (batch, d) = {tuple(y0.shape)}, got {tuple(bm.shape)}")
        if bm.dtype != y0.dtype or torch.device(bm.device) != y0.device:
            raise ValueError(
                f"bm has dtype {bm.dtype} on {bm.device} but x0 has {y0.dtype} on {y0.device}; build bm with x0's"
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
    noise_type = "additive" if (impl.additive_scheme and sde.noise_type == "additive") else "diagonal"
    fsde = ForwardSDEFlat(sde, tuple(x0.shape[1:]), noise_type, impl.sde_type)

    with torch.no_grad():
        if bm is None:
            if adaptive:
                bm = BrownianInterval(
                    t0=t0,
                    t1=t1,
                    size=tuple(y0.shape),
                    dtype=y0.dtype,
                    device=y0.device,
                    entropy=_torchsde._entropy(generator),
                    levy_area_approximation="space-time" if impl.levy_area else "none",
                )
            else:
                bm = FixedStepBrownian(tuple(y0.shape), y0.dtype, y0.device, generator, levy_area=impl.levy_area)
        h = (t1 - t0) / steps if steps is not None else (dt if dt is not None else (t1 - t0) / 100)
        try:
            ts_solver = _ts_methods.select(method=impl.method, sde_type=impl.sde_type)(
                sde=_ts_base.ForwardSDE(fsde),
                bm=bm,
                dt=h,
                adaptive=adaptive,
                rtol=rtol,
                atol=atol,
                dt_min=1e-5 * (t1 - t0),
                options={},
            )
        except ValueError as err:  # torchsde's capability checks (e.g. Lévy area of a user bm)
            raise SolverError(f"torchsde cannot run {name!r} on {sde!r}: {err}") from err
        if adaptive:
            ys, accepted, rejected = _adaptive(ts_solver, y0, times, name, impl.method, sde.noise_type)
        else:
            ys, accepted = _fixed(
                ts_solver, y0, times, h, name, impl.method == "srk" and noise_type != "additive", check_every
            )
            rejected = 0
    out = ys.reshape(len(times), *x0.shape)
    if not return_info:
        return out
    info = SimulateInfo(
        nfe=fsde.calls,
        steps=accepted,
        accepted=accepted,
        rejected=rejected,
        solver=name,
        seconds=time.perf_counter() - started,
    )
    return out, info


def _fixed(
    solver: Any, y0: torch.Tensor, times: list[float], h: float, name: str, tensor_times: bool, check_every: int
) -> tuple[torch.Tensor, int]:
    """Equal steps of size <= h within each output interval; records the state at every output time."""
    grid: list[float] = [times[0]]
    marks: list[int] = [0]
    for a, b in itertools.pairwise(times):
        k = max(1, math.ceil((b - a) / h * (1 - 1e-12)))
        grid.extend(a + (b - a) * j / k for j in range(1, k))
        grid.append(b)
        marks.append(len(grid) - 1)
    pts: list[Any] = grid
    if tensor_times:  # torchsde's SRID2 step calls dt.sqrt()
        pts = list(torch.tensor(grid, dtype=torch.float64).unbind(0))
    n = len(grid) - 1
    out = [y0]
    y = y0
    extra = solver.init_extra_solver_state(pts[0], y0)
    next_mark = 1

    def describe(last_ok: int, i: int) -> tuple[str, float]:
        return (
            f"simulate[{name}]: the state became non-finite between t = {grid[last_ok]:.6g} and t = {grid[i]:.6g} "
            f"(step {i} of {n}); take smaller steps or check the SDE (does it explode in finite time, or leave "
            f"the domain where f and g are defined, e.g. sqrt(x) at x < 0?)",
            grid[i],
        )

    watch = FiniteWatch(check_every, n, describe)
    for i in range(n):
        y, extra = solver.step(pts[i], pts[i + 1], y, extra)
        watch(i + 1, y)
        if i + 1 == marks[next_mark]:
            out.append(y)
            next_mark += 1
    return torch.stack(out, dim=0), n


def _adaptive(
    solver: Any, y0: torch.Tensor, times: list[float], name: str, method: str, noise_type: str
) -> tuple[torch.Tensor, int, int]:
    """torchsde's step-doubling controller over all output times; counts accepted/rejected attempts."""
    if method == "euler" and noise_type != "additive":
        warnings.warn(
            "adaptive Euler–Maruyama is not guaranteed to converge for state-dependent noise "
            "(torchsde); pass steps= or dt=, or use solver='milstein' or 'srk'",
            stacklevel=3,
        )
    counts = {"calls": 0, "attempts": 0, "accepted": 0, "last_t0": None}
    step = solver.step

    def counted_step(t0: Any, t1: Any, y: torch.Tensor, extra: Any) -> Any:
        if counts["calls"] % 3 == 0:  # step doubling: one full step + two half steps per attempt
            counts["attempts"] += 1
            start = float(t0)
            if start != counts["last_t0"]:
                counts["accepted"] += 1
                counts["last_t0"] = start
        counts["calls"] += 1
        return step(t0, t1, y, extra)

    solver.step = counted_step
    ts = torch.tensor(times, dtype=torch.float64)
    extra = solver.init_extra_solver_state(ts[0], y0)
    h0 = solver.dt
    out = [y0]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hitting minimum allowed step size")
        try:
            # One integrate call per output interval, so that accepted steps end exactly on every output
            # time (torchsde's multi-time integrate overshoots and interpolates linearly, which shrinks the
            # variance of a diffusion at the output times).
            y = y0
            for k in range(len(times) - 1):
                solver.dt = min(h0, times[k + 1] - times[k])
                ys, extra = solver.integrate(y, ts[k : k + 2], extra)
                y = ys[-1]
                out.append(y)
        except AssertionError as err:  # torchsde asserts when its error estimate is NaN
            t_fail = counts["last_t0"] if counts["last_t0"] is not None else times[0]
            raise SolverDivergedError(
                f"simulate[{name}]: the state became non-finite after t = {t_fail:.6g} (adaptive step "
                f"{counts['attempts']}; torchsde: {err}); tighten rtol/atol or pass steps=",
                t=t_fail,
                step=counts["attempts"],
            ) from err
    ys = torch.stack(out, dim=0)
    if not bool(torch.isfinite(ys).all()):
        raise SolverDivergedError(f"simulate[{name}]: the state became non-finite", t=times[-1], step=None)
    accepted = counts["accepted"]
    return ys, accepted, counts["attempts"] - accepted
