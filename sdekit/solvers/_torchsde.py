r"""torchsde solvers on the reverse SDE: ``euler``, ``milstein``, ``srk``, ``heun``, ``midpoint``, ``reversible_heun``.

The reverse SDE (Anderson) of :math:`dx = f\,dt + g\,dW` runs backwards in time,

.. math:: dx = \big[f - \partial_x(g^2) - g^2 s_\theta\big]\,dt + g\,d\bar W_t,\qquad dt < 0 .

torchsde integrates forward in time only, so the solvers work in :math:`s = t_{\rm start} - t`
(:math:`t_{\rm start} = T` by default), which increases from 0 to
:math:`S = t_{\rm start} - t_{\rm end}`. With :math:`t = t_{\rm start} - s`,

.. math::
    dx = \underbrace{-\big[f - \partial_x(g^2) - g^2 s_\theta\big](x, t)}_{F(x, s)}\,ds
         + \underbrace{g(x, t)}_{G(x, s)}\,dB_s ,

an Itô SDE in s (:math:`B_s = \bar W_{t_{\rm start}} - \bar W_{t_{\rm start} - s}` is a
standard Brownian motion; the sign of the noise does not matter). The state is flattened to
``(batch, d)`` for torchsde and viewed back as ``(batch, *event_shape)`` for the model.

* ``heun``, ``midpoint`` and ``reversible_heun`` are Stratonovich methods in torchsde. For
  a state-dependent (diagonal) diffusion they receive the Stratonovich drift
  :math:`F - \tfrac12 G\,\partial_x G = F - \tfrac14\partial_x(g^2)`, so they solve the same
  (Itô) reverse SDE; for additive noise both drifts coincide.
* ``srk`` (Rößler 2010) uses its additive-noise scheme SRA1 (strong order 1.5) when
  :math:`g` does not depend on x and SRID2 otherwise. torchsde's "additive" noise type
  wants a full ``(batch, d, m)`` diffusion matrix; sdekit instead hands torchsde a
  diffusion-vector product ``g_prod(s, y, v) = g * v`` (all SRA1 and additive Milstein
  use), so the cost stays O(d).
* For affine SDEs (:math:`f = a(t)x + b(t)`, :math:`g = g(t)`, which includes VP, sub-VP,
  VE, EDM) the coefficients are evaluated as Python floats and the drift is one fused
  ``g^2 s - a x - b``: no per-step tensors beyond the model call, no host synchronisation.

``steps=None`` runs torchsde's adaptive step-doubling controller with ``rtol``/``atol`` and a
:class:`torchsde.BrownianInterval` seeded from the sampler's generator; ``steps=n`` takes n
steps with the light :class:`~sdekit.solvers._brownian.FixedStepBrownian` on the grid ``grid=``
(default ``"logsnr"``: uniform in the log-SNR, which transfers one step count across VP, VE, sub-VP,
EDM (T = 80), OU (T = 5); ``"uniform"`` in t for non-affine SDEs).

Options (``sdekit.sample(..., **options)``): ``grid``, ``rho`` (fixed steps, :mod:`sdekit.solvers._grids`),
``bm`` (a torchsde Brownian motion of shape
``(batch, d)`` on ``[0, S]`` in s-time, e.g. a seeded ``BrownianInterval`` to drive several
step counts with one path), ``check_every`` (fixed steps between finiteness checks, 32),
``dt0`` (first adaptive step in s, default S/100), ``dt_min`` (1e-5) and ``max_steps``
(adaptive attempts before giving up, 100000).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torchsde import BrownianInterval
from torchsde._core import base_sde as _ts_base
from torchsde._core import methods as _ts_methods

from ..errors import SolverDivergedError, SolverError
from ._base import FiniteWatch, SamplingProblem, Solver, SolveStats
from ._brownian import FixedStepBrownian
from ._grids import resolve_grid, time_grid
from ._registry import register

if TYPE_CHECKING:  # pragma: no cover
    from ..symbolic.sde import SDE

__all__ = ["TorchsdeSolver", "ReverseSDEInS", "Euler", "Milstein", "SRK", "Heun", "Midpoint", "ReversibleHeun"]

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
FloatFn = Callable[[float], float]


def affine_floats(sde: SDE) -> tuple[FloatFn, FloatFn, FloatFn] | None:
    """``(a, b, g)`` as plain-float functions of t for an affine SDE whose coefficients have them, else None."""
    floats = sde.affine_coefficients.floats if sde.is_affine else None
    return None if floats is None else (floats.a, floats.b, floats.g)


class ReverseSDEInS:
    r"""The reverse SDE in :math:`s = t_{\rm start} - t`, on flattened ``(batch, d)`` states, as torchsde wants it.

    ``f(s, y)`` is the drift :math:`F` (Itô, or Stratonovich-corrected when
    ``sde_type="stratonovich"``), ``g(s, y)`` the elementwise diffusion, ``g_prod(s, y, v)``
    :math:`G \odot v`. ``noise_type`` is what torchsde is told (``"additive"`` only for the
    methods with a cheaper additive scheme, ``srk`` and ``milstein``).

    Args:
        sde: the forward SDE.
        score: ``score(x, t)`` with t of shape (batch,).
        t_start: forward time at s = 0.
        event_shape: shape of one sample.
        noise_type, sde_type: torchsde's attributes.
        check_finite: raise :class:`~sdekit.errors.SolverDivergedError` as soon as a state
            passed to the drift is non-finite (one host synchronisation per call: adaptive runs).
    """

    def __init__(
        self,
        sde: SDE,
        score: Score,
        t_start: float,
        event_shape: tuple[int, ...],
        noise_type: str,
        sde_type: str,
        check_finite: bool = False,
    ) -> None:
        self.noise_type = noise_type
        self.sde_type = sde_type
        self._sde = sde
        self._score = score
        self._t_start = float(t_start)
        self._event_shape = tuple(event_shape)
        self._flat = len(self._event_shape) == 1
        self._check_finite = check_finite
        self._coeffs = affine_floats(sde)
        self._reverse = sde.reverse(score)
        self._stratonovich_correction = sde_type == "stratonovich" and sde.noise_type != "additive"
        self.calls = 0
        self._last: tuple[Any, torch.Tensor | None, torch.Tensor | None] = (None, None, None)

    @property
    def float_coefficients(self) -> tuple[FloatFn, FloatFn, FloatFn] | None:
        """``(a, b, g)`` as float functions of forward time t for an affine SDE, else None."""
        return self._coeffs

    @property
    def score(self) -> Score:
        """The score function ``score(x, t)`` (t of shape (batch,))."""
        return self._score

    # -- helpers
    def _x(self, y: torch.Tensor) -> torch.Tensor:
        return y if self._flat else y.view(y.shape[0], *self._event_shape)

    def _time(self, s: Any, y: torch.Tensor) -> float:
        t = self._t_start - float(s)
        if self._check_finite and not bool(torch.isfinite(y).all()):
            raise SolverDivergedError(
                f"the reverse-SDE state became non-finite before t = {t:.6g} (drift evaluation {self.calls}); "
                f"check the model, take more steps or lower rtol/atol, or raise eps",
                t=t,
                step=self.calls,
            )
        return t

    # -- torchsde interface
    def f(self, s: Any, y: torch.Tensor) -> torch.Tensor:
        """Drift in s: :math:`-[f - \\partial_x g^2 - g^2 s_\\theta](x, t_{\\rm start} - s)` (+ Stratonovich term).

        The last result is memoised on (s, the identity of y): torchsde's ``srk`` re-evaluates the
        drift of earlier stages at identical arguments (3 calls per SRA1 step, 6 per SRID2 step),
        which this brings down to 2 and 3 model evaluations.
        """
        last_s, last_y, last_out = self._last
        if y is last_y and float(s) == last_s:
            return last_out  # type: ignore[return-value]
        out = self._f(s, y)
        self._last = (float(s), y, out)
        return out

    def _f(self, s: Any, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        t = self._time(s, y)
        x = self._x(y)
        t_batch = torch.full((y.shape[0],), t, dtype=y.dtype, device=y.device)
        if self._coeffs is not None:
            a_fn, b_fn, g_fn = self._coeffs
            g = g_fn(t)
            score = self._score(x, t_batch)
            out = torch.add((score if self._flat else score.reshape(y.shape)) * (g * g), y, alpha=-a_fn(t))
            b = b_fn(t)
            return out.sub_(b) if b != 0 else out
        out = -self._reverse.drift(x, t_batch)
        if self._stratonovich_correction:
            out = out - 0.25 * self._sde.dg2_dx_fn(x, t_batch)
        return out.reshape(y.shape)

    def g(self, s: Any, y: torch.Tensor) -> torch.Tensor:
        """Elementwise diffusion :math:`g(x, t_{\\rm start} - s)`, shape ``(batch, d)``."""
        t = self._t_start - float(s)
        if self._coeffs is not None:
            return torch.full_like(y, self._coeffs[2](t))
        return self._sde.diffusion_fn(self._x(y), t).reshape(y.shape)

    def g_prod(self, s: Any, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """:math:`g \\odot v` (O(d) for every noise type)."""
        t = self._t_start - float(s)
        if self._coeffs is not None:
            return v * self._coeffs[2](t)
        return self._sde.diffusion_fn(self._x(y), t).reshape(y.shape) * v

    def f_and_g(self, s: Any, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and diffusion at (s, y)."""
        return self.f(s, y), self.g(s, y)

    def f_and_g_prod(self, s: Any, y: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and :math:`g \\odot v` at (s, y)."""
        return self.f(s, y), self.g_prod(s, y, v)


class TorchsdeSolver(Solver):
    """Base of the torchsde-backed solvers (see the module docstring)."""

    kind = "sde"
    adaptive = True
    noise_types = ("additive", "diagonal")
    method: ClassVar[str]
    """torchsde method name."""
    sde_type: ClassVar[str] = "ito"
    """torchsde SDE type the method integrates."""
    additive_scheme: ClassVar[bool] = False
    """Whether torchsde has a cheaper/higher-order scheme for its ``"additive"`` noise type."""
    levy_area: ClassVar[bool] = False
    """Whether the method needs the space-time Lévy area (``return_U``)."""
    recommended_steps: ClassVar[int | None] = None
    """Fixed step count (on :attr:`grid`) at which 20,000 samples pass the sliced-KS and moment tests on every
    affine zoo SDE (``docs/sampling.md``)."""
    grid: ClassVar[str] = "logsnr"
    """Default time grid of fixed-step runs: uniform in log-SNR (measured: the step recommendations calibrated on
    VP/VE then hold on every affine zoo SDE, T = 1 to 80; ``docs/sampling.md``). Non-affine SDEs: uniform in t."""
    options_defaults: ClassVar[dict[str, Any]] = {
        "bm": None,
        "grid": None,
        "rho": 7.0,
        "check_every": 32,
        "dt0": None,
        "dt_min": 1e-5,
        "max_steps": 100_000,
    }

    def _options(self, problem: SamplingProblem) -> dict[str, Any]:
        unknown = set(problem.options) - set(self.options_defaults)
        if unknown:
            raise SolverError(
                f"solver {self.name!r} got unknown option(s) {', '.join(sorted(map(repr, unknown)))}; it accepts "
                f"{', '.join(sorted(self.options_defaults))}"
            )
        return {**self.options_defaults, **problem.options}

    def _solve(self, problem: SamplingProblem) -> tuple[torch.Tensor, SolveStats]:
        opts = self._options(problem)
        sde = problem.sde
        x_T = problem.x_T
        batch = x_T.shape[0]
        y0 = x_T.reshape(batch, -1)
        span = float(problem.t_start) - float(problem.t_end)
        noise_type = "additive" if (self.additive_scheme and sde.noise_type == "additive") else "diagonal"
        adaptive = problem.steps is None
        rsde = ReverseSDEInS(
            sde, problem.score, problem.t_start, tuple(x_T.shape[1:]), noise_type, self.sde_type, adaptive
        )
        bm = opts["bm"]
        if bm is not None:
            if tuple(bm.shape) != tuple(y0.shape):
                raise SolverError(f"option bm must have shape (batch, d) = {tuple(y0.shape)}, got {tuple(bm.shape)}")
        elif adaptive:
            bm = BrownianInterval(
                t0=0.0,
                t1=span,
                size=tuple(y0.shape),
                dtype=y0.dtype,
                device=y0.device,
                entropy=_entropy(problem.generator),
                levy_area_approximation="space-time" if self.levy_area else "none",
            )
        else:
            bm = FixedStepBrownian(tuple(y0.shape), y0.dtype, y0.device, problem.generator, levy_area=self.levy_area)
        solver_cls = _ts_methods.select(method=self.method, sde_type=self.sde_type)
        dt0 = opts["dt0"] if opts["dt0"] is not None else (span / 100 if adaptive else span / problem.steps)
        try:
            solver = solver_cls(
                sde=_ts_base.ForwardSDE(rsde),
                bm=bm,
                dt=dt0,
                adaptive=adaptive,
                rtol=problem.rtol,
                atol=problem.atol,
                dt_min=float(opts["dt_min"]),
                options={},
            )
        except ValueError as err:  # torchsde's own capability checks
            raise SolverError(f"torchsde cannot run {self.name!r} on {sde!r}: {err}") from err
        if adaptive:
            if opts["grid"] is not None:
                raise SolverError(f"{self.name}: grid= applies to fixed steps; pass steps=n (or drop grid=)")
            y, stats = self._adaptive(solver, rsde, y0, span, problem, opts)
        else:
            kind = resolve_grid(sde, opts["grid"], self.grid, self.name)
            times = time_grid(sde, problem.t_start, problem.t_end, int(problem.steps), kind, rho=opts["rho"])
            s_grid = [float(problem.t_start) - t for t in times.tolist()]  # increasing s = t_start - t
            s_grid[0], s_grid[-1] = 0.0, span
            if self.method == "euler" and rsde.float_coefficients is not None and opts["bm"] is None:
                y, stats = _fused_euler(rsde, bm, y0, s_grid, problem, opts, self.name)
            else:
                y, stats = self._fixed(solver, y0, s_grid, problem, opts)
        return y.reshape(x_T.shape), stats

    def _fixed(
        self, solver: Any, y0: torch.Tensor, s_grid: list[float], problem: SamplingProblem, opts: dict[str, Any]
    ) -> tuple[torch.Tensor, SolveStats]:
        n = len(s_grid) - 1
        # Python-float times (no tensor arithmetic per step) except where torchsde calls dt.sqrt().
        tensor_times = self.method == "srk" and solver.sde.noise_type != "additive"
        grid: list[Any] = list(s_grid)
        if tensor_times:
            grid = list(torch.tensor(grid, dtype=torch.float64).unbind(0))
        watch = FiniteWatch(opts["check_every"], n, _diverged_message(self.name, problem.t_start, s_grid))
        y = y0
        extra = solver.init_extra_solver_state(grid[0], y0)
        for i in range(n):
            y, extra = solver.step(grid[i], grid[i + 1], y, extra)
            problem.progress(1)
            watch(i + 1, y)
        return y, SolveStats(steps=n, accepted=n, rejected=0)

    def _adaptive(
        self,
        solver: Any,
        rsde: ReverseSDEInS,
        y0: torch.Tensor,
        span: float,
        problem: SamplingProblem,
        opts: dict[str, Any],
    ) -> tuple[torch.Tensor, SolveStats]:
        if self.method == "euler" and problem.sde.noise_type != "additive":
            warnings.warn(
                "adaptive Euler–Maruyama is not guaranteed to converge for state-dependent noise "
                "(torchsde); pass steps= or use solver='milstein' or 'srk'",
                stacklevel=4,
            )
        counts = {"calls": 0, "attempts": 0, "accepted": 0, "last_t0": None}
        max_steps = int(opts["max_steps"])
        step = solver.step

        def counted_step(t0: Any, t1: Any, y: torch.Tensor, extra: Any) -> Any:
            # torchsde's step doubling: every attempt = one full step + two half steps.
            if counts["calls"] % 3 == 0:
                counts["attempts"] += 1
                start = float(t0)
                if start != counts["last_t0"]:
                    counts["accepted"] += 1
                    counts["last_t0"] = start
                    problem.progress(1)
                if counts["attempts"] > max_steps:
                    raise SolverError(
                        f"{self.name}: more than max_steps={max_steps} adaptive steps (reached t = "
                        f"{problem.t_start - start:.6g}); loosen rtol/atol, raise dt_min or pass steps="
                    )
            counts["calls"] += 1
            return step(t0, t1, y, extra)

        solver.step = counted_step
        ts = torch.tensor([0.0, span], dtype=torch.float64)
        extra = solver.init_extra_solver_state(ts[0], y0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Hitting minimum allowed step size")
            try:
                ys, _ = solver.integrate(y0, ts, extra)
            except AssertionError as err:  # torchsde asserts when its error estimate is NaN
                last = counts["last_t0"] or 0.0
                t_fail = problem.t_start - last
                raise SolverDivergedError(
                    f"{self.name}: the state became non-finite after t = {t_fail:.6g} (adaptive step "
                    f"{counts['attempts']}; torchsde: {err}); check the model, tighten rtol/atol or raise eps",
                    t=t_fail,
                    step=counts["attempts"],
                ) from err
        y = ys[-1]
        if not bool(torch.isfinite(y).all()):
            raise SolverDivergedError(
                f"{self.name}: the state became non-finite (t = {problem.t_end:.6g})", t=problem.t_end, step=None
            )
        accepted = counts["accepted"]
        return y, SolveStats(steps=accepted, accepted=accepted, rejected=counts["attempts"] - accepted)


def _fused_euler(
    rsde: ReverseSDEInS,
    bm: FixedStepBrownian,
    y0: torch.Tensor,
    s_grid: list[float],
    problem: SamplingProblem,
    opts: dict[str, Any],
    name: str,
) -> tuple[torch.Tensor, SolveStats]:
    r"""Euler–Maruyama for affine SDEs in three fused tensor operations per step (plus the model and the draw).

    Identical in exact arithmetic to torchsde's Euler step on :class:`ReverseSDEInS` with the same
    increments (tested): with :math:`t = t_{\rm start} - s_i`, :math:`h = s_{i+1} - s_i`, :math:`z \sim N(0, I)`,

    .. math:: y_{i+1} = (1 - a h)\,y_i + g^2 h\,s_\theta(y_i, t) - b h + g\sqrt h\,z .

    torchsde's generic step spends ~8 small tensor operations on the same update, which at
    batch 64 costs more than the model (``python -m benchmarks step_cost``).
    """
    a_fn, b_fn, g_fn = rsde.float_coefficients  # type: ignore[misc]
    score = rsde.score
    n = len(s_grid) - 1
    t_start = float(problem.t_start)
    batch = y0.shape[0]
    flat = rsde._flat
    shape = (batch, *rsde._event_shape)
    watch = FiniteWatch(opts["check_every"], n, _diverged_message(name, t_start, s_grid))
    y = y0
    for i in range(n):
        s0, s1 = s_grid[i], s_grid[i + 1]
        h = s1 - s0
        t = t_start - s0
        a, b, g = a_fn(t), b_fn(t), g_fn(t)
        t_batch = torch.full((batch,), t, dtype=y.dtype, device=y.device)
        sc = score(y if flat else y.view(shape), t_batch)
        z = bm._randn()
        y_new = y * (1.0 - a * h)
        y_new.add_(sc if flat else sc.reshape(y.shape), alpha=g * g * h)
        y_new.add_(z, alpha=g * math.sqrt(h))
        if b != 0:
            y_new.sub_(b * h)
        y = y_new
        problem.progress(1)
        watch(i + 1, y)
    return y, SolveStats(steps=n, accepted=n, rejected=0)


def _diverged_message(name: str, t_start: float, s_grid: list[float]) -> Callable[[int, int], tuple[str, float]]:
    """Message and time of a non-finite state found after step ``i`` (grid in s = T - t)."""

    def describe(last_ok: int, i: int) -> tuple[str, float]:
        t_lo, t_hi = float(t_start) - float(s_grid[last_ok]), float(t_start) - float(s_grid[i])
        return (
            f"{name}: the state became non-finite between step {last_ok + 1} (t = {t_lo:.6g}) and step {i} "
            f"(t = {t_hi:.6g}) of {len(s_grid) - 1}; take more steps, check the model, or raise eps "
            f"(check_every=1 pins the step)",
            t_hi,
        )

    return describe


def _entropy(generator: torch.Generator | None) -> int:
    """A BrownianInterval seed drawn from ``generator`` (or torch's global generator)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=device).item())


@register
class Euler(TorchsdeSolver):
    r"""Euler–Maruyama on the reverse SDE: :math:`y_{n+1} = y_n + F h + G\,\Delta B`."""

    name = "euler"
    method = "euler"
    recommended_steps = 400
    strong_order = 0.5
    strong_order_additive = 1.0
    weak_order = 1.0
    additive_scheme = True
    description = "Euler–Maruyama on the reverse SDE (torchsde); 1 NFE/step"


@register
class Milstein(TorchsdeSolver):
    r"""Itô Milstein: Euler–Maruyama + :math:`\tfrac12 G\,\partial_x G\,(\Delta B^2 - h)` (autograd)."""

    name = "milstein"
    method = "milstein"
    recommended_steps = 400
    strong_order = 1.0
    strong_order_additive = 1.0
    weak_order = 1.0
    additive_scheme = True
    description = "Milstein on the reverse SDE (torchsde); 1 NFE/step (+1 diffusion JVP for diagonal noise)"


@register
class SRK(TorchsdeSolver):
    r"""Rößler's stochastic Runge–Kutta: SRA1 (additive noise, 2 NFE/step) or SRID2 (diagonal, 3 NFE/step).

    Strong order 1.5 for both (diagonal noise is componentwise scalar noise, whose iterated
    integrals are functions of the increment and the space-time Lévy area); measured 1.44 on a
    time-dependent geometric Brownian motion (``tests/test_solvers_strong_order.py``).

    Weak order: 2.0 for additive noise (SRA1 belongs to Rößler's (2010) SRA family of strong order
    1.5 / weak order 2.0 schemes for additive noise, as DifferentialEquations.jl documents SRA1 and
    SOSRA; measured slope 1.99 in ``validation/order_checks.py``); 1.5 declared for diagonal noise
    (torchsde's declaration for SRID2, whose weak order-2 conditions we have not verified; measured
    1.8-2.3 on GBM, seeds 0-2).
    """

    name = "srk"
    method = "srk"
    recommended_steps = 100
    strong_order = 1.5
    strong_order_additive = 1.5
    weak_order = 1.5
    weak_order_additive = 2.0
    additive_scheme = True
    levy_area = True
    description = (
        "stochastic Runge–Kutta (Rößler 2010, torchsde); strong order 1.5; 2 NFE/step (additive), 3 (diagonal)"
    )


@register
class Heun(TorchsdeSolver):
    r"""Stochastic Heun (Stratonovich; the Itô-to-Stratonovich drift correction is applied)."""

    name = "heun"
    method = "heun"
    recommended_steps = 50
    sde_type = "stratonovich"
    strong_order = 1.0
    strong_order_additive = 1.0
    weak_order = 1.0
    description = "stochastic Heun (Stratonovich form of the reverse SDE, torchsde); 2 NFE/step"


@register
class Midpoint(TorchsdeSolver):
    r"""Stochastic midpoint (Stratonovich; the Itô-to-Stratonovich drift correction is applied)."""

    name = "midpoint"
    method = "midpoint"
    recommended_steps = 50
    sde_type = "stratonovich"
    strong_order = 1.0
    strong_order_additive = 1.0
    weak_order = 1.0
    description = "stochastic midpoint (Stratonovich form of the reverse SDE, torchsde); 2 NFE/step"


@register
class ReversibleHeun(TorchsdeSolver):
    r"""Reversible Heun (Kidger et al. 2021; Stratonovich, drift correction applied); 1 NFE/step.

    **Cannot sample** (:attr:`~sdekit.solvers.Solver.can_sample` is False): :func:`sdekit.sample`
    raises :class:`~sdekit.errors.SolverError` unless ``allow_unstable=True`` is given;
    :func:`sdekit.simulate` (forward SDE) uses it freely.
    The method carries a second state :math:`z` and evaluates the drift at :math:`z`, not at
    :math:`y`: :math:`z_1 = 2y_0 - z_0 + F(z_0)h + G\Delta B`,
    :math:`y_1 = y_0 + \tfrac h2(F(z_0) + F(z_1)) + \ldots`. On :math:`dy = \lambda y\,ds` the step
    matrix of :math:`(y, z)` has determinant :math:`-1` and eigenvalues :math:`a \pm\sqrt{1 + a^2}`
    (:math:`a = \lambda h`), so the parasitic mode (mostly :math:`z - y`) is never damped and grows
    like :math:`\exp\int|\lambda|\,ds` when the drift is contracting. The reverse SDE of a diffusion
    model contracts strongly (:math:`\lambda \approx -g^2/(\sigma^2 + s^2)` for data of scale s;
    :math:`\int|\lambda| \approx 10` for VE): measured :math:`|z - y|` grows to ~4e3 under VE and
    ~2 under VP at 1000 steps. For a linear score (Gaussian data) the mode barely reaches y (the KS
    test passes at 1000 steps, float64), but any nonlinear score evaluated at the far-off z is
    garbage: on a 3-component mixture the samples fail the sliced-KS test at every step count tried
    (200–4000, float32 and float64; median pathwise error 3 vs srk). Use ``heun`` (same Stratonovich
    family, 2 NFE/step, stable) or ``srk``.

    Strong order: 0.5 in general and 1.0 for additive noise are the proven orders (Kidger et al.
    2021; torchsde states the diagonal-noise order as unknown). On the diagonal-noise GBM of
    ``validation/order_checks.py`` it measured 0.94; no proof of order 1 for commutative noise is
    known to us, so 0.5 stays declared and that check is one-sided (slope >= 0.25).
    """

    name = "reversible_heun"
    method = "reversible_heun"
    sde_type = "stratonovich"
    strong_order = 0.5
    strong_order_additive = 1.0
    weak_order = 1.0
    can_sample = False
    sample_refusal = (
        "the reverse SDE of a diffusion model contracts strongly (rate ~ g^2/sigma^2), and the method's "
        "undamped parasitic state grows like exp(int rate ds) (~e^10 for VP/VE), so any nonlinear score is "
        "evaluated far from the sample. Use solver='heun' (stable, 2 NFE/step) or 'srk'"
    )
    description = (
        "reversible Heun (Stratonovich, torchsde); 1 NFE/step; unstable on reverse SDEs: sample() refuses it "
        "(forward simulate only)"
    )
