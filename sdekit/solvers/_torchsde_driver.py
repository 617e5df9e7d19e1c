r"""The one torchsde driver: every torchsde solve of :func:`sdekit.sample` and :func:`sdekit.simulate` runs here.

torchsde integrates :math:`dY = F(Y, s)\,ds + G(Y, s)\,dB_s` forward in a time s on flattened ``(batch, d)``
states. A :class:`TimeMap` says which SDE that is:

* :class:`Forward` (``simulate``): :math:`t = s`, :math:`F = f`, :math:`G = g`: the declared SDE itself.
* :class:`Reverse` (``sample``): :math:`t = t_{\rm start} - s`, so that s increases from 0 while t runs down,
  and :math:`F = -[f - \partial_x(g^2) - g^2 s_\theta](x, t)`, :math:`G = g(x, t)`: the reverse SDE
  (Anderson) :math:`dx = [f - \partial_x g^2 - g^2 s_\theta]\,dt + g\,d\bar W_t` with :math:`dt = -ds`
  (:math:`B_s = \bar W_{t_{\rm start}} - \bar W_{t_{\rm start} - s}` is a standard Brownian motion; the
  sign of the noise does not matter).

For Stratonovich methods (``heun``, ``midpoint``, ``reversible_heun``) and state-dependent noise, both
add the drift correction :math:`-\tfrac12 G\,\partial_x G = -\tfrac14\partial_x(g^2)`, so every method
solves the same Itô SDE. For affine SDEs (:math:`f = a(t)x + b(t)`, :math:`g = g(t)`) the coefficients
are Python floats from ``sde.affine_coefficients`` and the drift is one fused tensor expression.

:class:`FlatSDE` is the one wrapper torchsde sees (flattening, memoised drift, evaluation count). A run
follows a :class:`Fixed` plan (a grid in s; :func:`run_fixed` steps it, recording the states at the
output marks) or an :class:`Adaptive` plan (:func:`run_adaptive`: torchsde's step-doubling controller,
one ``integrate`` call per output interval so that steps end exactly on every output time). Fixed
plans draw fresh increments from :class:`~sdekit.solvers._brownian.FixedStepBrownian`; adaptive ones
use a :class:`torchsde.BrownianInterval` seeded from the generator. Reverse-time Euler on an affine SDE
takes the fused step :class:`FusedEuler` (same update, three tensor operations).
"""

from __future__ import annotations

import abc
import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torchsde import BaseBrownian, BrownianInterval
from torchsde._core import base_sde as _ts_base
from torchsde._core import methods as _ts_methods

from .. import _random
from .._checks import warn_user
from .._model_errors import is_model_error
from ..errors import SolverDivergedError, SolverError
from ._base import FiniteWatch, SolveStats, ensure_finite
from ._brownian import FixedStepBrownian
from ._budget import StepBudget

if TYPE_CHECKING:  # pragma: no cover
    from .._coefficients import FloatCoefficients
    from ..symbolic.sde import SDE

__all__ = [
    "Adaptive",
    "Fixed",
    "FlatSDE",
    "Forward",
    "FusedEuler",
    "Reverse",
    "TimeMap",
    "TorchsdeMethod",
    "drive",
    "run_adaptive",
    "run_fixed",
]

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_MATRIX_METHODS = ("euler", "heun", "midpoint", "milstein", "srk")
"""torchsde methods that use only ``g_prod`` for a non-diagonal k x m diffusion (milstein and srk: additive only)."""
Progress = Callable[[int], None]
Step = Callable[[Any, Any, torch.Tensor], torch.Tensor]


class TorchsdeMethod(Protocol):
    """What the driver reads from a torchsde solver class (:class:`~sdekit.solvers._torchsde.TorchsdeSolver`)."""

    name: str
    method: str
    sde_type: str
    additive_scheme: bool
    levy_area: bool


def _float_coefficients(sde: SDE) -> FloatCoefficients | None:
    """Plain-float coefficient functions of an affine SDE that has them, else None."""
    return sde.affine_coefficients.floats if sde.is_affine and sde.components is None else None


def torchsde_noise(sde: SDE, additive_scheme: bool) -> str:
    """The noise type torchsde is told: ``"additive"`` (methods with a cheaper additive scheme, state-free noise),
    ``"diagonal"`` (elementwise g: scalar SDEs, and k-component SDEs whose G is a diagonal k x k matrix) or
    ``"general"`` (any other k x m matrix G, applied per event position through ``g_prod``)."""
    if sde.components is not None and not _diagonal_matrix(sde):
        return "additive" if (additive_scheme and sde.noise_type == "additive") else "general"
    return "additive" if (additive_scheme and sde.noise_type == "additive") else "diagonal"


def _diagonal_matrix(sde: SDE) -> bool:
    G = sde.diffusion_fn
    return G.rows == G.cols and all(G.matrix[i, j] == 0 for i in range(G.rows) for j in range(G.cols) if i != j)


def brownian_size(sde: SDE, x0_shape: tuple[int, ...]) -> tuple[int, int]:
    """The flat Brownian motion's shape ``(batch, m * positions)``: like the state except for a k x m diffusion
    with m != k (k-component SDEs)."""
    batch, d = x0_shape[0], math.prod(x0_shape[1:])
    if sde.components is None:
        return batch, d
    G = sde.diffusion_fn
    return batch, d // G.rows * G.cols


# --------------------------------------------------------------------------- time maps
class TimeMap(abc.ABC):
    """Forward time t of the solver time s, the drift F in s, and how the run reports trouble (:class:`Forward`,
    :class:`Reverse`)."""

    watch_drift_inputs: ClassVar[bool] = False
    """Adaptive runs: check every state passed to the drift (one host read per drift evaluation), so that a
    model never sees a non-finite state."""
    fixed_hint: ClassVar[str]
    """What to do when a fixed-step run diverges."""
    adaptive_hint: ClassVar[str]
    """What to do when an adaptive run diverges."""
    euler_hint: ClassVar[str]
    """What to use instead of adaptive Euler–Maruyama on state-dependent noise."""

    def __init__(self, sde: SDE, stratonovich: bool) -> None:
        self.sde = sde
        self.coefficients = _float_coefficients(sde)
        self.correct = stratonovich and sde.noise_type != "additive"
        """Subtract the Itô-to-Stratonovich term :math:`\\tfrac14\\partial_x(g^2)` from the drift."""

    @abc.abstractmethod
    def t(self, s: Any) -> float:
        """Forward time at solver time ``s``."""

    @abc.abstractmethod
    def drift(self, y: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
        """:math:`F` at forward time t; ``y`` flat ``(batch, d)``, ``x`` its ``(batch, *event_shape)`` view."""

    def label(self, name: str) -> str:
        """How error messages name the run."""
        return name

    def nonfinite_input(self, t: float, evaluation: int) -> str:
        """Message of a non-finite state reaching the drift (runs with :attr:`watch_drift_inputs`)."""
        return f"the state became non-finite before t = {t:.6g} (drift evaluation {evaluation}); {self.adaptive_hint}"

    def fused_euler(self, bm: BaseBrownian, flat: FlatSDE) -> Step | None:
        """A fused Euler step on the fixed-step increments ``bm`` (counting its evaluations in ``flat``), or None for
        torchsde's own Euler step (the forward map: :func:`sdekit.simulate` keeps torchsde's round-off)."""
        return None


class Forward(TimeMap):
    r"""The declared SDE in its own time: :math:`t = s`, :math:`F = f` (:func:`sdekit.simulate`)."""

    fixed_hint = (
        "take smaller steps or check the SDE (does it explode in finite time, or leave the domain where f and g "
        "are defined, e.g. sqrt(x) at x < 0?)"
    )
    adaptive_hint = "tighten rtol/atol or pass steps="
    euler_hint = "pass steps= or dt=, or use solver='milstein' or 'srk'"

    def t(self, s: Any) -> float:
        return float(s)

    def drift(self, y: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
        if self.coefficients is not None:
            out = y * self.coefficients.a(t)
            b = self.coefficients.b(t)
            return out + b if b != 0 else out
        out = self.sde.drift_fn(x, t)
        if self.correct and self.sde.components is not None:  # c_i = 1/2 sum_jl G_lj d_l G_ij
            out = out - self.sde.diffusion_fn.correction(x, t)
        elif self.correct:
            out = out - 0.25 * self.sde.dg2_dx_fn(x, t)
        return torch.broadcast_to(out, x.shape).reshape(y.shape)

    def label(self, name: str) -> str:
        return f"simulate[{name}]"


class Reverse(TimeMap):
    r"""The reverse SDE in :math:`s = t_{\rm start} - t`: :math:`F = -[f - \partial_x g^2 - g^2 s_\theta]`
    (:func:`sdekit.sample`)."""

    watch_drift_inputs = True
    fixed_hint = "take more steps, check the model, or raise eps"
    adaptive_hint = "check the model, tighten rtol/atol or raise eps"
    euler_hint = "pass steps= or use solver='milstein' or 'srk'"

    def __init__(self, sde: SDE, stratonovich: bool, score: Score, t_start: float) -> None:
        super().__init__(sde, stratonovich)
        self.score = score
        self.t_start = float(t_start)
        self._reverse = sde.reverse(score)

    def t(self, s: Any) -> float:
        return self.t_start - float(s)

    def nonfinite_input(self, t: float, evaluation: int) -> str:
        return (
            f"the reverse-SDE state became non-finite before t = {t:.6g} (drift evaluation {evaluation}); "
            f"check the model, take more steps or lower rtol/atol, or raise eps"
        )

    def drift(self, y: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
        t_batch = torch.full((y.shape[0],), t, dtype=y.dtype, device=y.device)
        if self.coefficients is not None:  # g^2 s - a y - b, fused
            g = self.coefficients.g(t)
            score = self.score(x, t_batch)
            out = torch.add((score if x is y else score.reshape(y.shape)) * (g * g), y, alpha=-self.coefficients.a(t))
            b = self.coefficients.b(t)
            return out.sub_(b) if b != 0 else out
        out = -self._reverse.drift(x, t_batch)
        if self.correct and self.sde.components is not None:  # c_i = 1/2 sum_jl G_lj d_l G_ij (G as forward)
            out = out - self.sde.diffusion_fn.correction(x, t)
        elif self.correct:
            out = out - 0.25 * self.sde.dg2_dx_fn(x, t_batch)
        return out.reshape(y.shape)

    def fused_euler(self, bm: BaseBrownian, flat: FlatSDE) -> Step | None:
        if self.coefficients is None or not isinstance(bm, FixedStepBrownian):
            return None
        return FusedEuler(self, self.coefficients, bm, flat)


# --------------------------------------------------------------------------- the SDE torchsde sees
class FlatSDE:
    r"""``time_map``'s SDE on flattened ``(batch, d)`` states, as torchsde wants it.

    ``f(s, y)`` is the drift :math:`F`, ``g(s, y)`` the elementwise diffusion :math:`g(x, t(s))`,
    ``g_prod(s, y, v)`` :math:`g \odot v` (O(d) for every noise type: torchsde's ``"additive"`` noise
    type otherwise wants a full ``(batch, d, m)`` matrix). ``noise_type`` is what torchsde is told
    (``"additive"`` only for methods with a cheaper additive scheme). ``calls`` counts drift evaluations.

    The drift is memoised on (s, the identity of y): torchsde's ``srk`` re-evaluates the drift of earlier
    stages at identical arguments (3 calls per SRA1 step, 6 per SRID2 step), which this brings down to
    2 and 3 evaluations.
    """

    def __init__(
        self, time_map: TimeMap, event_shape: tuple[int, ...], noise_type: str, sde_type: str, watch: bool = False
    ) -> None:
        self.noise_type = noise_type
        self.sde_type = sde_type
        self.time_map = time_map
        self.event_shape = tuple(event_shape)
        self.flat = len(self.event_shape) == 1
        self.watch = watch and time_map.watch_drift_inputs
        self.matrix = time_map.sde.components is not None and not _diagonal_matrix(time_map.sde)
        """A k-component SDE whose G is not a diagonal k x k matrix: ``g_prod`` applies G per event position."""
        self.calls = 0
        self._last: tuple[Any, torch.Tensor | None, torch.Tensor | None] = (None, None, None)

    def view(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` as ``(batch, *event_shape)``."""
        return y if self.flat else y.view(y.shape[0], *self.event_shape)

    def f(self, s: Any, y: torch.Tensor) -> torch.Tensor:
        """Drift :math:`F(y, s)`, memoised on the last (s, identity of y)."""
        last_s, last_y, last_out = self._last
        if y is last_y and float(s) == last_s:
            return last_out  # type: ignore[return-value]
        self.calls += 1
        t = self.time_map.t(s)
        if self.watch:
            calls = self.calls
            ensure_finite(y, lambda: self.time_map.nonfinite_input(t, calls), t=t, step=calls)
        out = self.time_map.drift(y, self.view(y), t)
        self._last = (float(s), y, out)
        return out

    def g(self, s: Any, y: torch.Tensor) -> torch.Tensor:
        """Elementwise diffusion :math:`g(x, t(s))`, shape ``(batch, d)``."""
        t = self.time_map.t(s)
        coefficients = self.time_map.coefficients
        if coefficients is not None:
            return torch.full_like(y, coefficients.g(t))
        x = self.view(y)
        if self.time_map.sde.components is not None:  # the diagonal of G (noise types "diagonal"/"additive")
            return self.time_map.sde.diffusion_fn.diagonal(x, t).reshape(y.shape)
        return torch.broadcast_to(self.time_map.sde.diffusion_fn(x, t), x.shape).reshape(y.shape)

    def g_prod(self, s: Any, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """:math:`g \\odot v`."""
        coefficients = self.time_map.coefficients
        if coefficients is not None:
            return v * coefficients.g(self.time_map.t(s))
        if self.matrix:
            x, G = self.view(y), self.time_map.sde.diffusion_fn  # k x m matrix per event position: G v
            return G.matvec(x, self.time_map.t(s), v.view(y.shape[0], G.cols, *x.shape[2:])).reshape(y.shape)
        return self.g(s, y) * v

    def f_and_g(self, s: Any, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and diffusion at (s, y)."""
        return self.f(s, y), self.g(s, y)

    def f_and_g_prod(self, s: Any, y: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and :math:`g \\odot v` at (s, y)."""
        return self.f(s, y), self.g_prod(s, y, v)


class FusedEuler:
    r"""Reverse-time Euler–Maruyama for affine SDEs in three fused tensor operations per step (plus the model and
    the draw).

    Identical in exact arithmetic to torchsde's Euler step on :class:`FlatSDE` with the :class:`Reverse` map and
    the same increments (tested): with :math:`t = t_{\rm start} - s_i`, :math:`h = s_{i+1} - s_i`,
    :math:`z \sim N(0, I)`,

    .. math:: y_{i+1} = (1 - a h)\,y_i + g^2 h\,s_\theta(y_i, t) - b h + g\sqrt h\,z .

    torchsde's generic step spends ~8 small tensor operations on the same update, which at
    batch 64 costs more than the model (``python -m benchmarks step_cost``).
    """

    def __init__(self, time_map: Reverse, coefficients: FloatCoefficients, bm: FixedStepBrownian, flat: FlatSDE):
        self.time_map, self.coefficients, self.bm, self.flat = time_map, coefficients, bm, flat

    def __call__(self, s0: Any, s1: Any, y: torch.Tensor) -> torch.Tensor:
        h = s1 - s0
        t = self.time_map.t(s0)
        c = self.coefficients
        a, b, g = c.a(t), c.b(t), c.g(t)
        t_batch = torch.full((y.shape[0],), t, dtype=y.dtype, device=y.device)
        self.flat.calls += 1
        x = self.flat.view(y)
        sc = self.time_map.score(x, t_batch)
        z = self.bm._randn()
        y_new = y * (1.0 - a * h)
        y_new.add_(sc if x is y else sc.reshape(y.shape), alpha=g * g * h)
        y_new.add_(z, alpha=g * math.sqrt(h))
        return y_new.sub_(b * h) if b != 0 else y_new


class _TorchsdeStep:
    """torchsde's own step of ``solver`` as a ``step(s0, s1, y)`` (carrying the method's extra state)."""

    def __init__(self, solver: Any, s0: Any, y0: torch.Tensor) -> None:
        self.solver = solver
        self.extra = solver.init_extra_solver_state(s0, y0)

    def __call__(self, s0: Any, s1: Any, y: torch.Tensor) -> torch.Tensor:
        y, self.extra = self.solver.step(s0, s1, y, self.extra)
        return y


# --------------------------------------------------------------------------- plans and loops
@dataclasses.dataclass(frozen=True)
class Fixed:
    """A fixed-step run: the increasing grid in s and the grid indices of the output states (ascending, last = n)."""

    grid: Sequence[float]
    marks: Sequence[int]
    check_every: int

    @property
    def span(self) -> tuple[float, float]:
        """First and last time in s."""
        return self.grid[0], self.grid[-1]


@dataclasses.dataclass(frozen=True)
class Adaptive:
    """An adaptive run through the increasing output times in s (start first), starting each interval with the
    step in ``first_steps`` (one per interval); ``budget`` bounds the attempted and rejected steps of the run."""

    times: Sequence[float]
    first_steps: Sequence[float]
    rtol: float
    atol: float
    dt_min: float
    budget: StepBudget

    @property
    def span(self) -> tuple[float, float]:
        """First and last time in s."""
        return self.times[0], self.times[-1]


def run_fixed(
    step: Step, y0: torch.Tensor, plan: Fixed, watch: FiniteWatch, progress: Progress, tensor_times: bool
) -> list[torch.Tensor]:
    """The one fixed-step loop: ``step`` along ``plan.grid``; returns the states at ``plan.marks``."""
    grid: list[Any] = list(plan.grid)
    if tensor_times:  # torchsde's SRID2 step calls dt.sqrt(); elsewhere Python floats: no tensor arithmetic per step
        grid = list(torch.tensor(grid, dtype=torch.float64).unbind(0))
    marks = iter(plan.marks)
    mark = next(marks)
    out = []
    y = y0
    for i in range(len(grid) - 1):
        y = step(grid[i], grid[i + 1], y)
        progress(1)
        watch(i + 1, y)
        if i + 1 == mark:
            out.append(y)
            mark = next(marks, -1)
    return out


class _StepCounter:
    """Wraps a torchsde solver's ``step`` to count the attempted and rejected steps of step doubling (every
    attempt = one full step + two half steps; an attempt from the same start as the previous one means that one
    was rejected), advance the progress bar and enforce the step budget before every attempt. The times are
    CPU float64 tensors (torchsde's ``ts``): reading them is no device synchronisation."""

    def __init__(self, step: Any, budget: StepBudget, progress: Progress, spent: Callable[..., Exception]):
        self.step, self.budget, self.progress, self.spent = step, budget, progress, spent
        self.calls = self.attempts = self.rejected = 0
        self.last_s0: float | None = None

    def __call__(self, s0: Any, s1: Any, y: torch.Tensor, extra: Any) -> Any:
        if self.calls % 3 == 0:
            start = float(s0)
            if start == self.last_s0:
                self.rejected += 1
            else:
                self.last_s0 = start
                self.progress(1)
            if not self.budget.allows(self.attempts, self.rejected):
                raise self.spent(start, float(s1) - start, self.attempts, self.rejected)
            self.attempts += 1
        self.calls += 1
        return self.step(s0, s1, y, extra)


def run_adaptive(
    solver: Any, y0: torch.Tensor, plan: Adaptive, progress: Progress, time_map: TimeMap, label: str
) -> tuple[list[torch.Tensor], SolveStats]:
    """The one adaptive loop: torchsde's controller, one ``integrate`` per output interval (steps end exactly on
    every output time; torchsde's multi-time integrate would overshoot and interpolate linearly, which shrinks
    the variance of a diffusion at the output times). Returns the states at the output times after the start."""

    def spent(s: float, h: float, attempts: int, rejected: int) -> SolverError:
        return plan.budget.error(label, time_map.t(s), h, attempts, rejected, plan.rtol, plan.atol)

    counter = _StepCounter(solver.step, plan.budget, progress, spent)
    solver.step = counter
    ts = torch.tensor(list(plan.times), dtype=torch.float64)
    extra = solver.init_extra_solver_state(ts[0], y0)
    out = []
    y = y0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hitting minimum allowed step size")
        try:
            for k in range(len(plan.times) - 1):
                solver.dt = plan.first_steps[k]
                ys, extra = solver.integrate(y, ts[k : k + 2], extra)
                y = ys[-1]
                out.append(y)
        except AssertionError as err:  # torchsde asserts when its error estimate is NaN
            if is_model_error(err):  # the user's model asserted: report it as itself
                raise
            t_fail = time_map.t(counter.last_s0 if counter.last_s0 is not None else plan.times[0])
            raise SolverDivergedError(
                f"{label}: the state became non-finite after t = {t_fail:.6g} (adaptive step {counter.attempts}; "
                f"torchsde: {err}); {time_map.adaptive_hint}",
                t=t_fail,
                step=counter.attempts,
            ) from err
    t_end = time_map.t(plan.times[-1])
    ensure_finite(
        torch.stack(out), lambda: f"{label}: the state became non-finite (t = {t_end:.6g})", t=t_end, step=None
    )
    accepted = counter.attempts - counter.rejected
    return out, SolveStats(accepted, accepted, counter.rejected)


def _fixed_divergence(label: str, time_map: TimeMap, grid: Sequence[float]) -> Callable[[int, int], tuple[str, float]]:
    """Message and time of a non-finite state found after step ``i`` of a fixed run (grid in s)."""

    def describe(last_ok: int, i: int) -> tuple[str, float]:
        t_lo, t_hi = time_map.t(grid[last_ok]), time_map.t(grid[i])
        n = len(grid) - 1
        if i == last_ok + 1:
            where = f"at step {i} of {n} (t = {t_lo:.6g} -> {t_hi:.6g}); {time_map.fixed_hint}"
        else:
            where = (
                f"between step {last_ok + 1} (t = {t_lo:.6g}) and step {i} (t = {t_hi:.6g}) of {n}; "
                f"{time_map.fixed_hint} (check_every=1 pins the step)"
            )
        return f"{label}: the state became non-finite {where}", t_hi

    return describe


# --------------------------------------------------------------------------- the driver
def drive(
    method: TorchsdeMethod,
    time_map: TimeMap,
    y0: torch.Tensor,
    event_shape: tuple[int, ...],
    plan: Fixed | Adaptive,
    *,
    bm: BaseBrownian | None,
    generator: _random.RandomSource,
    progress: Progress,
) -> tuple[list[torch.Tensor], SolveStats]:
    """Integrate ``time_map``'s SDE from the flat state ``y0`` with ``method`` following ``plan``.

    Returns the states at the plan's output times after the start (flat, ``(batch, d)``) and the step counts
    (``evaluations``: drift evaluations). ``bm`` (a torchsde Brownian motion on the plan's s-interval) replaces
    the draws from ``generator``; without it, reverse-time Euler on an affine SDE takes the :class:`FusedEuler` step.
    """
    sde = time_map.sde
    noise_type = torchsde_noise(sde, method.additive_scheme)
    adaptive = isinstance(plan, Adaptive)
    flat = FlatSDE(time_map, event_shape, noise_type, method.sde_type, watch=adaptive)
    if flat.matrix and method.method not in _MATRIX_METHODS:
        raise SolverError(
            f"{method.name!r} needs the dense diffusion matrix of the flattened state, which sdekit does not build "
            f"for a k-component SDE with a non-diagonal G; use one of {', '.join(_MATRIX_METHODS)}"
        )
    size = brownian_size(sde, (y0.shape[0], *event_shape))
    brownian = bm if bm is not None else _brownian(size, y0, plan, generator, method.levy_area)
    solver = _torchsde_solver(method, flat, brownian, plan)
    label = time_map.label(method.name)
    if isinstance(plan, Adaptive):
        if method.method == "euler" and sde.noise_type != "additive":
            warn_user(
                "adaptive Euler–Maruyama is not guaranteed to converge for state-dependent noise "
                f"(torchsde); {time_map.euler_hint}"
            )
        ys, stats = run_adaptive(solver, y0, plan, progress, time_map, label)
    else:
        fused = time_map.fused_euler(brownian, flat) if (method.method == "euler" and bm is None) else None
        step = fused or _TorchsdeStep(solver, plan.grid[0], y0)
        watch = FiniteWatch(plan.check_every, len(plan.grid) - 1, _fixed_divergence(label, time_map, plan.grid))
        tensor_times = method.method == "srk" and noise_type != "additive"
        ys = run_fixed(step, y0, plan, watch, progress, tensor_times)
        n = len(plan.grid) - 1
        stats = SolveStats(steps=n, accepted=n, rejected=0)
    return ys, dataclasses.replace(stats, evaluations=flat.calls)


def _brownian(
    size: tuple[int, int], y0: torch.Tensor, plan: Fixed | Adaptive, generator: _random.RandomSource, levy_area: bool
) -> BaseBrownian:
    """Fresh fixed-step increments, or a :class:`torchsde.BrownianInterval` over the plan's span seeded from
    ``generator`` (adaptive runs: step doubling queries overlapping intervals)."""
    if isinstance(plan, Fixed):
        return FixedStepBrownian(size, y0.dtype, y0.device, generator, levy_area=levy_area)
    s0, s1 = plan.span
    return BrownianInterval(
        t0=s0,
        t1=s1,
        size=size,
        dtype=y0.dtype,
        device=y0.device,
        entropy=_entropy(generator),
        levy_area_approximation="space-time" if levy_area else "none",
    )


def _torchsde_solver(method: TorchsdeMethod, flat: FlatSDE, bm: BaseBrownian, plan: Fixed | Adaptive) -> Any:
    """torchsde's solver object for ``method`` on ``flat`` (its own capability checks become SolverError).

    Fixed plans only call its ``step``; the step size and tolerances matter to ``integrate`` (adaptive plans).
    """
    adaptive = isinstance(plan, Adaptive)
    if isinstance(plan, Adaptive):
        dt, rtol, atol, dt_min = plan.first_steps[0], plan.rtol, plan.atol, plan.dt_min
    else:
        dt, rtol, atol, dt_min = plan.grid[1] - plan.grid[0], 0.0, 0.0, 0.0
    try:
        return _ts_methods.select(method=method.method, sde_type=method.sde_type)(
            sde=_ts_base.ForwardSDE(flat),
            bm=bm,
            dt=dt,
            adaptive=adaptive,
            rtol=rtol,
            atol=atol,
            dt_min=dt_min,
            options={},
        )
    except ValueError as err:  # e.g. a user's bm without the Lévy area srk needs
        raise SolverError(f"torchsde cannot run {method.name!r} on {flat.time_map.sde!r}: {err}") from err


def _entropy(generator: _random.RandomSource) -> int:
    """A BrownianInterval seed drawn from ``generator`` (or torch's global generator); for :class:`~sdekit._random.
    Streams`, a hash of their seed and rows (the same chunk of the same run always gets the same path)."""
    if isinstance(generator, _random.Streams):
        return generator.entropy()
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=device).item())
