r"""torchdiffeq solvers on the probability-flow ODE: ``ode`` (= ``ode:dopri5``) and ``ode:<method>``.

.. math:: \frac{dx}{dt} = f - \tfrac12\partial_x(g^2) - \tfrac12 g^2 s_\theta(x, t),
          \qquad x(t_{\rm start}) = x_T,

integrated from :math:`t_{\rm start}` (T) down to :math:`t_{\rm end}` (eps); torchdiffeq
integrates backwards in time directly (it negates time internally).

Every method of torchdiffeq's ``SOLVERS`` table is registered as ``ode:<method>``; the bare
name is an alias when it does not clash with an SDE solver (``dopri5``, ``bosh3``, ``rk4``,
... are aliases; ``euler``, ``midpoint`` and ``heun`` name the torchsde solvers, so write
``ode:euler``). ``ode`` itself is dopri5.

* Adaptive methods (``dopri8``, ``dopri5``, ``bosh3``, ``fehlberg2``, ``adaptive_heun``):
  ``steps=None`` uses ``rtol``/``atol`` (torchdiffeq's RMS error norm over the batch); the last
  step is made to end exactly on :math:`t_{\rm end}` (``step_t``), so the model is never
  evaluated below eps. ``steps=n`` forces n fixed steps on the default grid instead.
* Fixed-grid methods (``euler``, ``midpoint``, ``heun2``, ``heun3``, ``rk4``, ``explicit_adams``,
  ``implicit_adams``, ``fixed_adams``) take ``steps`` steps; with ``steps=None``
  they use :attr:`~sdekit.solvers.Solver.default_steps` (documented per method in
  ``docs/sampling.md``).
* Fixed steps run on ``grid=`` (default ``"logsnr"``, uniform in the log-SNR: the step
  recommendations then hold on every affine zoo SDE; ``"uniform"`` in t for non-affine SDEs), ``rho=``
  for ``grid="edm"``.

Adaptive runs stop with :class:`~sdekit.errors.SolverError` after ``max_steps`` attempted steps (option, default
3,000) or ``max_rejected`` rejected ones (default 300; :mod:`sdekit.solvers._budget`); torchdiffeq's own
``max_num_steps``, if passed, is the attempted-steps budget instead. Fixed-grid runs stop at the first step whose
state is non-finite (:class:`~sdekit.errors.SolverDivergedError` with its index and end time).

Extra ``**options`` are passed to torchdiffeq (e.g. ``first_step``): each method's own
keywords are declared (:data:`ADAPTIVE_OPTIONS`, :data:`FIXED_GRID_OPTIONS`, :data:`ADAMS_OPTIONS`) and checked
like sdekit's options; torchdiffeq itself would only warn about an unknown one and ignore it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import torch
from torchdiffeq._impl.odeint import SOLVERS

from ..errors import SolverError, UnknownSolverError
from ._base import SamplingProblem, Solver, SolveStats, ensure_finite
from ._budget import ODE_MAX_REJECTED, ODE_MAX_STEPS, StepBudget, budget_options, check_budget
from ._grids import log_snr, resolve_grid, solver_time_grid, t_of_log_snr
from ._odedriver import integrate, is_fixed_grid
from ._option import Option
from ._registry import REGISTRY, register, resolve

__all__ = [
    "ADAMS_OPTIONS",
    "ADAPTIVE_OPTIONS",
    "FIXED_GRID_OPTIONS",
    "ODE_METHODS",
    "TorchdiffeqSolver",
    "backend_options",
    "ode_method",
]

# method: (global order, recommended steps (fixed grid) or rtol = atol (adaptive), NFE per step)
_INFO: dict[str, tuple[int, float, str]] = {
    "dopri8": (8, 1e-3, "12 (FSAL)"),
    "dopri5": (5, 3e-4, "6 (FSAL)"),
    "bosh3": (3, 1e-4, "3 (FSAL)"),
    "fehlberg2": (2, 1e-5, "2 (FSAL)"),
    "adaptive_heun": (2, 1e-3, "2"),
    "euler": (1, 4000, "1"),
    "midpoint": (2, 100, "2"),
    "heun2": (2, 100, "2"),
    "heun3": (3, 50, "3"),
    "rk4": (4, 20, "4"),
    "explicit_adams": (3, 100, "1"),
    "implicit_adams": (4, 50, "1-2 (corrector iterations)"),
    "fixed_adams": (4, 50, "1-2 (corrector iterations)"),
}
"""Order, recommendation and NFE per step of each method (adaptive: :func:`~._odedriver.is_fixed_grid` is False).

Recommendations (steps for fixed-grid methods, rtol = atol for adaptive ones) pass the
20,000-sample sliced-KS test of ``tests/test_sample.py`` under VP and VE, and (fixed steps, on the
default log-SNR grid) the validation suite's test on every affine zoo SDE; measured KS ratios are in
``docs/sampling.md``. ``fehlberg2`` at rtol 1e-3 stops after a few steps with a wrong answer (its
1st-order error estimate is too optimistic): use 1e-5. The Adams methods run at ``max_order=4``:
at torchdiffeq's default 12 ``explicit_adams`` diverged on VE at every step count tried (20–200).
torchdiffeq's Adams–Bashforth predictor uses ``max_order - 1`` past values, so ``explicit_adams`` is
then AB3, order 3 (measured 2.9–3.1 on VP and VE); ``implicit_adams`` / ``fixed_adams`` add the
order-4 Adams–Moulton corrector (measured 4.0 from 64 to 512 steps). On the log-SNR grid they run
in the log-SNR variable (:func:`_in_log_snr`), where their equal-step coefficients apply."""

_ADAMS = ("explicit_adams", "implicit_adams", "fixed_adams")
"""Adams methods: run at order <= 4 (``max_order=4``) unless the option says otherwise."""

ODE_METHODS: tuple[str, ...] = tuple(m for m in SOLVERS if m != "scipy_solver")
"""torchdiffeq methods registered as ``ode:<method>`` (the scipy wrapper is left out: it leaves torch)."""


def _is_times(value: object) -> bool:
    """A 1-D real tensor or a sequence of finite real numbers (times for torchdiffeq's ``step_t`` / ``jump_t``)."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 1 and not value.is_complex() and value.dtype != torch.bool
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    return False


def _backend(options: dict[str, Option]) -> dict[str, Option]:
    """``options`` marked as torchdiffeq's own (``passthrough``: passed on only when given)."""
    return {name: dataclasses.replace(option, passthrough=True) for name, option in options.items()}


ADAPTIVE_OPTIONS: Mapping[str, Option] = _backend(
    {
        "first_step": Option.positive(
            None,
            "first step size",
            none=True,
            default_note="torchdiffeq's heuristic with its probe kept inside [eps, T] by sdekit",
        ),
        "max_num_steps": Option.positive_int(
            ODE_MAX_STEPS,
            "attempted steps before the solve stops with SolverError (torchdiffeq's name; in sample, the same "
            "budget as max_steps, of which only one may be given)",
            none=True,
            default_note="None: no limit",
        ),
        "step_t": Option.custom(
            None,
            "times every step must end on; replaces sdekit's (the end time; the grid for steps=n): include those",
            accepts="a 1-D tensor or a sequence of times",
            test=_is_times,
            none=True,
        ),
        "jump_t": Option.custom(
            None,
            "times of discontinuities: steps end on them and the derivative is re-evaluated after",
            accepts="a 1-D tensor or a sequence of times",
            test=_is_times,
            none=True,
        ),
        "min_step": Option.number(0.0, "smallest step size", lo=0.0),
        "max_step": Option.number(math.inf, "largest step size", lo=0.0, lo_open=True, hi=math.inf),
        "safety": Option.number(0.9, "safety factor of the step-size controller", lo=0.0, hi=1.0, lo_open=True),
        "ifactor": Option.number(10.0, "largest factor by which a step may grow", lo=1.0),
        "dfactor": Option.number(0.2, "smallest factor by which a step may shrink", lo=0.0, hi=1.0, lo_open=True),
        "norm": Option.custom(
            None,
            "error norm of a state, norm(y) -> scalar tensor",
            accepts="a callable",
            test=callable,
            none=True,
            default_note="torchdiffeq's RMS norm over the batch",
        ),
    }
)
"""torchdiffeq's own keywords of its adaptive Runge–Kutta methods (``RKAdaptiveStepsizeODESolver``), passed on when
given; ``tests/solvers/test_solver_options.py`` checks the names against the installed torchdiffeq."""

FIXED_GRID_OPTIONS: Mapping[str, Option] = _backend(
    {
        "step_size": Option.positive(
            None, "uniform step size (logp's options=, instead of steps=)", none=True, default_note="from steps="
        ),
        "grid_constructor": Option.custom(
            None,
            "grid_constructor(func, y0, t) -> the time grid (logp's options=, instead of steps=)",
            accepts="a callable",
            test=callable,
            none=True,
            default_note="from steps=",
        ),
        "interp": Option.choice("linear", ("linear", "cubic"), "interpolation of output times between grid points"),
        "perturb": Option.flag(False, "evaluate the drift just inside each step (for discontinuities)"),
    }
)
"""torchdiffeq's own keywords of its fixed-grid methods (``FixedGridODESolver``), passed on when given."""

ADAMS_OPTIONS: Mapping[str, Option] = _backend(
    {
        "max_order": Option.integer(
            4,
            "largest Adams order (sdekit's default 4: torchdiffeq's 12 diverged on VE; below 4 torchdiffeq runs rk4)",
            lo=2,
            hi=12,
        ),
        "implicit": Option.flag(True, "Adams-Moulton corrector iterations after the predictor"),
        "max_iters": Option.positive_int(4, "corrector iterations per step at most"),
    }
)
"""torchdiffeq's own keywords of its Adams methods; ``explicit_adams`` takes ``max_order`` only (it fixes
``implicit=False``, and passing it again is a TypeError in torchdiffeq; ``max_iters`` would be ignored)."""


class TorchdiffeqSolver(Solver):
    """Base of the torchdiffeq-backed PF-ODE solvers (one subclass per method)."""

    kind = "ode"
    noise_types = ("additive", "diagonal")
    method: ClassVar[str]
    """torchdiffeq method name."""

    grid_max_step: ClassVar[float | None] = 1.0
    grid: ClassVar[str] = "logsnr"
    """Default time grid of fixed-step runs: uniform in log-SNR (measured: the step recommendations calibrated on
    VP/VE then hold on every affine zoo SDE, T = 1 to 80; ``docs/sampling.md``). Non-affine SDEs: uniform in t."""

    def _solve(self, problem: SamplingProblem) -> tuple[torch.Tensor, SolveStats]:
        x_T = problem.x_T
        sde = problem.sde
        drift = sde.probability_flow(problem.score).drift
        opts = self.options(problem)
        grid_opts = {key: opts.pop(key) for key in ("grid", "rho", "data_std")}
        budget = self._budget(problem, opts)
        grid_kind = grid_opts["grid"]
        if self.method in _ADAMS:
            opts.setdefault("max_order", 4)  # torchdiffeq's default 12 is unstable here (module docstring)
        steps = problem.steps if problem.steps is not None else self.default_steps
        t_start, t_end = float(problem.t_start), float(problem.t_end)
        if steps is None and grid_kind is not None:
            raise SolverError(f"{self.name}: grid= applies to fixed steps; pass steps=n (or drop grid=)")
        span = torch.tensor([t_start, t_end], dtype=x_T.dtype, device=x_T.device)

        def func(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return drift(x, t)

        plan = _Plan(func, span, problem.rtol, problem.atol, "the probability-flow ODE", None)
        advice = "check the model (NaN/inf?), raise eps or tighten rtol/atol"
        if steps is not None:
            if "step_size" in opts or "grid_constructor" in opts:
                raise SolverError(
                    f"{self.name}: sample() builds the grid of {steps} steps from steps= and grid=; drop the "
                    "step_size/grid_constructor option (logp takes it in options= instead of steps=)"
                )
            plan = self._on_grid(problem, plan, opts, int(steps), grid_opts)
            budget, advice = None, "check the model (NaN/inf?), take more steps or raise eps"
        run = integrate(
            plan.func, x_T, plan.span, method=self.method, rtol=plan.rtol, atol=plan.atol, options=opts, what=plan.what,
            watch="the probability-flow drift", advice=advice, budget=budget, grid_times=plan.grid_times,
        )  # fmt: skip
        x = run.ys[-1]
        ensure_finite(
            x,
            lambda: (
                f"{self.name}: the probability-flow ODE state became non-finite (integrating from t = "
                f"{t_start:g} to {t_end:g}, {run.evaluations} drift evaluations); raise eps, check the model or "
                "tighten rtol/atol"
            ),
            t=t_end,
            step=None,
        )
        if steps is not None:
            problem.progress(int(steps))
            return x, SolveStats(steps=int(steps), accepted=int(steps), rejected=0)
        # the first step is chosen before the solve (bounded_start or the caller's first_step), not through it
        assert run.accepted is not None and run.rejected is not None
        problem.progress(run.accepted)
        return x, SolveStats(steps=run.accepted, accepted=run.accepted, rejected=run.rejected)

    def _budget(self, problem: SamplingProblem, opts: dict[str, Any]) -> StepBudget | None:
        """The step budget of an adaptive run from the options ``max_steps`` / ``max_rejected`` (popped from
        ``opts``); torchdiffeq's own ``max_num_steps``, if given, is the attempted-steps budget instead."""
        if not self.adaptive:
            return None
        max_steps = check_budget("max_steps", opts.pop("max_steps"))
        max_rejected = check_budget("max_rejected", opts.pop("max_rejected"))
        name = "max_steps"
        if "max_num_steps" in opts:
            if "max_steps" in problem.options:
                raise SolverError(f"{self.name}: pass max_steps= or torchdiffeq's max_num_steps=, not both")
            max_steps, name = check_budget("max_num_steps", opts.pop("max_num_steps")), "max_num_steps"
        return StepBudget(max_steps, max_rejected, steps_option=name, fixed_hint="use fixed steps (steps=n)")

    def _on_grid(
        self, problem: SamplingProblem, plan: _Plan, opts: dict[str, Any], n: int, grid_opts: dict[str, Any]
    ) -> _Plan:
        """The solve of ``plan`` on ``n`` fixed steps, with ``opts`` completed for torchdiffeq."""
        sde, x_T = problem.sde, problem.x_T
        t_start, t_end = float(problem.t_start), float(problem.t_end)
        kind = resolve_grid(sde, grid_opts["grid"], self.grid, self.name)
        grid_times = solver_time_grid(sde, t_start, t_end, n, self, grid_opts)
        if self.adaptive:
            # an adaptive RK method on a fixed grid: torchdiffeq's fixed-grid path does not
            # apply, so pin every step with step_t and make every step acceptable.
            # first_step is twice the largest spacing so that every step is clipped onto the next grid
            # point (a step that lands on a grid point by itself leaves a zero-length step behind).
            # step_t in the solve's dtype (torchdiffeq compares in float64; see _odestart)
            opts.setdefault("step_t", grid_times[1:].to(x_T.dtype).to(torch.float64))
            opts.setdefault("first_step", 2 * float((grid_times[:-1] - grid_times[1:]).max()))
            big = 1e10
            return plan._replace(rtol=big, atol=big)
        plan = plan._replace(grid_times=grid_times)
        if self.method in _ADAMS and kind == "logsnr":
            # Adams coefficients assume equal steps: integrate in u = (lambda - lambda_0)/(lambda_n - lambda_0),
            # where the log-SNR grid is uniform (see _in_log_snr).
            opts["grid_constructor"] = lambda _f, _y0, t: torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64).to(t)
            return plan._replace(
                func=_in_log_snr(sde, plan.func, t_start, t_end, n, x_T),
                span=torch.tensor([0.0, 1.0], dtype=x_T.dtype, device=x_T.device),
                what="the probability-flow ODE (in the log-SNR variable u)",
            )

        def grid(_func: Any, _y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            # t = (t_start, t_end) as given (torchdiffeq wraps the constructor when it negates time)
            out = grid_times.to(dtype=t.dtype, device=t.device)
            out[0], out[-1] = t[0], t[-1]
            return out

        opts["grid_constructor"] = grid
        return plan


class _Plan(NamedTuple):
    """What the driver integrates: ``func(t, x)`` over ``span`` at ``rtol``/``atol``; ``what`` names it in errors."""

    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    span: torch.Tensor
    rtol: float
    atol: float
    what: str
    grid_times: torch.Tensor | None
    """The fixed grid in t, for messages (None: adaptive, or the grid torchdiffeq steps on is in t)."""


def _in_log_snr(sde: Any, func: Any, t_start: float, t_end: float, n: int, like: torch.Tensor) -> Any:
    r"""``func(t, x)`` rewritten in :math:`u \in [0, 1]`, uniform in the log-SNR :math:`\lambda`, for the Adams methods.

    torchdiffeq's Adams–Bashforth–Moulton coefficients are those of equal steps; on a non-uniform grid
    in t they lose their order (measured: ~2 instead of 3–4 on VP's log-SNR grid). With
    :math:`\lambda(u) = \lambda_0 + u(\lambda_1 - \lambda_0)` and :math:`t(u)` its exact inverse
    (bisection, :func:`~sdekit.solvers._grids.t_of_log_snr`),

    .. math:: \frac{dx}{du} = f_{PF}(x, t(u))\,\frac{\lambda_1 - \lambda_0}{\lambda'(t(u))},

    with :math:`\lambda'(t)` by autograd of the derived :math:`\lambda(t)`; equal steps in u are the
    log-SNR grid in t, and the method keeps its order (a smooth change of variable).

    The n-step run evaluates only at the nodes :math:`u = j/n` and, in the methods' RK4 (3/8-rule)
    start, at the thirds between them: :math:`t(u)` and :math:`dt/du` are tabulated once at all
    :math:`u = k/(3n)` (one vectorised bisection) instead of a bisection per evaluation; any other u
    (e.g. a user's ``step_size`` option) is computed on the spot.
    """
    marginal = sde.marginal
    ends = log_snr(marginal, torch.tensor([t_start, t_end], dtype=torch.float64))
    lam0, dlam = float(ends[0]), float(ends[1] - ends[0])
    lo, hi = min(t_start, t_end), max(t_start, t_end)

    def t_and_rate(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t(u) and dt/du (float64, elementwise in u)."""
        t = t_of_log_snr(marginal, lam0 + dlam * u, lo, hi).clamp(lo, hi).requires_grad_(True)
        with torch.enable_grad():
            (slope,) = torch.autograd.grad(log_snr(marginal, t).sum(), t)
        return t.detach(), dlam / slope

    m = 3 * n
    table_t, table_rate = t_and_rate(torch.arange(m + 1, dtype=torch.float64) / m)
    table_tx = table_t.to(dtype=like.dtype, device=like.device)
    rates = table_rate.tolist()

    def func_u(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        pos = float(u) * m
        k = round(pos)
        if 0 <= k <= m and abs(pos - k) < 1e-3:
            return func(table_tx[k], x) * rates[k]
        t, rate = t_and_rate(u.detach().to(torch.float64).reshape(1).cpu())
        return func(t.reshape(()).to(dtype=x.dtype, device=x.device), x) * float(rate)

    return func_u


class AdaptiveTorchdiffeq(TorchdiffeqSolver):
    """torchdiffeq's adaptive Runge–Kutta methods (``dopri5``, ...): their step-size control keywords."""

    options_declared: ClassVar[Mapping[str, Option]] = {
        **ADAPTIVE_OPTIONS,
        **budget_options(ODE_MAX_STEPS, ODE_MAX_REJECTED),
    }


class FixedGridTorchdiffeq(TorchdiffeqSolver):
    """torchdiffeq's fixed-grid methods (``euler``, ``rk4``, ...): their grid and interpolation keywords."""

    options_declared: ClassVar[Mapping[str, Option]] = FIXED_GRID_OPTIONS


class ExplicitAdamsTorchdiffeq(FixedGridTorchdiffeq):
    """torchdiffeq's ``explicit_adams``: the Adams–Bashforth order."""

    options_declared: ClassVar[Mapping[str, Option]] = {"max_order": ADAMS_OPTIONS["max_order"]}


class AdamsTorchdiffeq(FixedGridTorchdiffeq):
    """torchdiffeq's ``implicit_adams`` and ``fixed_adams``: the Adams order and the corrector iterations."""

    options_declared: ClassVar[Mapping[str, Option]] = ADAMS_OPTIONS


def _family(method: str) -> type[TorchdiffeqSolver]:
    """The base class whose declared options are those torchdiffeq's ``method`` takes."""
    if method == "explicit_adams":
        return ExplicitAdamsTorchdiffeq
    if method in _ADAMS:
        return AdamsTorchdiffeq
    return FixedGridTorchdiffeq if is_fixed_grid(method) else AdaptiveTorchdiffeq


def backend_options(method: str) -> dict[str, Option]:
    """The declared torchdiffeq keywords of ``method`` (what :func:`sdekit.logp`'s ``options=`` may hold)."""
    return {name: o for name, o in _family(method).declared_options().items() if o.passthrough}


def _make(method: str) -> type[TorchdiffeqSolver]:
    order, recommended, nfe = _INFO.get(method, (None, 1e-3, "?"))
    adaptive = not is_fixed_grid(method)
    kind = "adaptive" if adaptive else "fixed-grid"
    attrs = {
        "name": f"ode:{method}",
        "method": method,
        "weak_order": order,
        "adaptive": adaptive,
        "default_steps": None if adaptive else int(recommended),
        "recommended_rtol": float(recommended) if adaptive else None,
        "description": f"torchdiffeq {method} on the probability-flow ODE ({kind}, order {order}, {nfe} NFE/step)",
        "options_note": f" (sdekit's grid/rho/data_std and torchdiffeq's options of {method!r})",
        "__doc__": f"torchdiffeq ``{method}`` on the probability-flow ODE ({kind}, global order {order}).",
        "__module__": __name__,
    }
    return type(f"ODE_{method}", (_family(method),), attrs)


def _register_all() -> None:
    for method in ODE_METHODS:
        cls = _make(method)
        aliases: tuple[str, ...] = ("ode",) if method == "dopri5" else ()
        if method not in REGISTRY and method not in ("euler", "midpoint", "heun"):
            aliases = (*aliases, method)
        register(cls, aliases=aliases)


_register_all()


def ode_method(solver: str, *, caller: str = "logp") -> str:
    """The torchdiffeq method of a registered ODE solver name (``"ode"``, ``"ode:rk4"``, ``"dopri5"``, ...).

    Resolved through the registry, as :func:`sdekit.sample` resolves it; a bare torchdiffeq name that the
    registry gives to an SDE solver (``euler``, ``midpoint``) means the ODE method here, since ``caller``
    integrates an ODE. Raises :class:`~sdekit.errors.UnknownSolverError` with close matches otherwise.
    """
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a torchdiffeq method name such as 'dopri5', got {type(solver).__name__}")
    for name in (solver, f"ode:{solver}"):
        try:
            cls = REGISTRY[resolve(name)]
        except UnknownSolverError:
            continue
        if issubclass(cls, TorchdiffeqSolver):
            return cls.method
    known = sorted({cls.method for cls in REGISTRY.values() if issubclass(cls, TorchdiffeqSolver)})
    close = difflib.get_close_matches(solver, known + [f"ode:{m}" for m in known], n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownSolverError(
        f"{caller} integrates an ODE with torchdiffeq; {solver!r} is not one of its methods.{hint} "
        f"Available: {', '.join(known)} (also written 'ode:<method>'; 'ode' means dopri5)"
    )
