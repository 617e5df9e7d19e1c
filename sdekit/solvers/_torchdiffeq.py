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
  evaluated below eps. ``steps=n`` forces n uniform steps instead.
* Fixed-grid methods (``euler``, ``midpoint``, ``heun2``, ``heun3``, ``rk4``, ``explicit_adams``,
  ``implicit_adams``, ``fixed_adams``) take ``steps`` uniform steps in t; with ``steps=None``
  they use :attr:`~sdekit.solvers.Solver.default_steps` (documented per method in
  ``docs/sampling.md``).

Extra ``**options`` are passed to torchdiffeq (e.g. ``max_num_steps``, ``first_step``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torchdiffeq import odeint
from torchdiffeq._impl.misc import _rms_norm
from torchdiffeq._impl.odeint import SOLVERS

from ..errors import SolverDivergedError, SolverError
from ._base import SamplingProblem, Solver, SolveStats
from ._grids import resolve_grid, time_grid
from ._registry import REGISTRY, register

__all__ = ["TorchdiffeqSolver", "ODE_METHODS"]

# method: (global order, adaptive, recommended steps (fixed grid) or rtol = atol (adaptive), NFE per step)
_INFO: dict[str, tuple[int, bool, float, str]] = {
    "dopri8": (8, True, 1e-3, "12 (FSAL)"),
    "dopri5": (5, True, 1e-3, "6 (FSAL)"),
    "bosh3": (3, True, 1e-3, "3 (FSAL)"),
    "fehlberg2": (2, True, 1e-5, "2 (FSAL)"),
    "adaptive_heun": (2, True, 1e-3, "2"),
    "euler": (1, False, 1000, "1"),
    "midpoint": (2, False, 100, "2"),
    "heun2": (2, False, 100, "2"),
    "heun3": (3, False, 50, "3"),
    "rk4": (4, False, 20, "4"),
    "explicit_adams": (4, False, 100, "1"),
    "implicit_adams": (4, False, 50, "1-2 (corrector iterations)"),
    "fixed_adams": (4, False, 50, "1-2 (corrector iterations)"),
}
"""Order, adaptivity, recommendation and NFE per step of each method.

Recommendations (steps for fixed-grid methods, rtol = atol for adaptive ones) pass the
20,000-sample sliced-KS test of ``tests/test_sample.py`` under VP and VE; measured KS ratios
are in ``docs/sampling.md``. ``fehlberg2`` at rtol 1e-3 stops after a few steps with a wrong
answer (its 1st-order error estimate is too optimistic): use 1e-5. ``explicit_adams`` diverges
on VE at every step count tried (20–200) in torchdiffeq 0.2.5; prefer ``implicit_adams``."""

_ADAMS = ("explicit_adams", "implicit_adams", "fixed_adams")
"""Adams methods: run at order <= 4 (``max_order=4``) unless the option says otherwise."""

ODE_METHODS: tuple[str, ...] = tuple(m for m in SOLVERS if m != "scipy_solver")
"""torchdiffeq methods registered as ``ode:<method>`` (the scipy wrapper is left out: it leaves torch)."""


class TorchdiffeqSolver(Solver):
    """Base of the torchdiffeq-backed PF-ODE solvers (one subclass per method)."""

    kind = "ode"
    noise_types = ("additive", "diagonal")
    method: ClassVar[str]
    """torchdiffeq method name."""
    recommended_rtol: ClassVar[float | None] = None
    """Adaptive methods: rtol = atol at which the sliced-KS test passes (``docs/sampling.md``)."""

    grid: ClassVar[str] = "uniform"
    """Default time grid of fixed-step runs (``"uniform"``, ``"logsnr"``, ``"edm"``: :mod:`sdekit.solvers._grids`)."""

    def _solve(self, problem: SamplingProblem) -> tuple[torch.Tensor, SolveStats]:
        x_T = problem.x_T
        sde = problem.sde
        drift = sde.probability_flow(problem.score).drift
        opts = dict(problem.options)
        grid_kind, rho = opts.pop("grid", None), opts.pop("rho", 7.0)
        if self.method in _ADAMS:
            opts.setdefault("max_order", 4)  # torchdiffeq's default 12 is unstable here (module docstring)
        steps = problem.steps if problem.steps is not None else self.default_steps
        t_start, t_end = float(problem.t_start), float(problem.t_end)
        if steps is None and grid_kind is not None:
            raise SolverError(f"{self.name}: grid= applies to fixed steps; pass steps=n (or drop grid=)")
        calls = [0]

        def func(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            out = drift(x, t)
            return out

        ratios: list[torch.Tensor] = []
        if steps is not None:
            if "step_size" in opts or "grid_constructor" in opts:
                raise SolverError(f"{self.name}: pass either steps= or step_size/grid_constructor options, not both")
            n = int(steps)
            kind = resolve_grid(sde, grid_kind, self.grid, self.name)
            grid_times = time_grid(sde, t_start, t_end, n, kind, rho=rho)

            def grid(_func: Any, _y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                # t = (t_start, t_end) as given (torchdiffeq wraps the constructor when it negates time)
                out = grid_times.to(dtype=t.dtype, device=t.device)
                out[0], out[-1] = t[0], t[-1]
                return out

            if self.adaptive:
                # an adaptive RK method on a fixed grid: torchdiffeq's fixed-grid path does not
                # apply, so pin every step with step_t and make every step acceptable.
                # first_step is twice the largest spacing so that every step is clipped onto the next grid
                # point (a step that lands on a grid point by itself leaves a zero-length step behind).
                opts.setdefault("step_t", grid_times[1:])
                opts.setdefault("first_step", 2 * float((grid_times[:-1] - grid_times[1:]).max()))
                big = 1e10
                rtol, atol = big, big
            else:
                opts["grid_constructor"] = grid
                rtol, atol = problem.rtol, problem.atol
        else:
            rtol, atol = problem.rtol, problem.atol
            opts.setdefault("step_t", torch.tensor([t_end], dtype=torch.float64))
            user_norm = opts.pop("norm", _rms_norm)

            def norm(v: torch.Tensor) -> torch.Tensor:
                r = user_norm(v)
                ratios.append(r)
                return r

            opts["norm"] = norm
        span = torch.tensor([t_start, t_end], dtype=x_T.dtype, device=x_T.device)
        try:
            xs = odeint(func, x_T, span, rtol=rtol, atol=atol, method=self.method, options=opts)
        except AssertionError as err:  # torchdiffeq signals step-size underflow with assert
            raise SolverError(
                f"torchdiffeq {self.method} failed on the probability-flow ODE from t = {t_start:g} to {t_end:g}: "
                f"{err}. Loosen rtol/atol, raise eps or use another solver"
            ) from err
        x = xs[-1]
        if not bool(torch.isfinite(x).all()):
            raise SolverDivergedError(
                f"{self.name}: the probability-flow ODE state became non-finite (integrating from t = {t_start:g} to "
                f"{t_end:g}, {calls[0]} drift evaluations); raise eps, check the model or tighten rtol/atol",
                t=t_end,
                step=None,
            )
        if steps is not None:
            problem.progress(int(steps))
            return x, SolveStats(steps=int(steps), accepted=int(steps), rejected=0)
        # torchdiffeq calls the norm 3 times to pick the first step (unless first_step is given),
        # then once per attempted step on the scaled error estimate (accepted iff <= 1).
        skip = 0 if "first_step" in problem.options else 3
        errs = torch.stack(ratios[skip:]) if len(ratios) > skip else torch.zeros(0)
        accepted = int((errs <= 1).sum())
        problem.progress(accepted)
        return x, SolveStats(steps=accepted, accepted=accepted, rejected=int(errs.numel()) - accepted)


def _make(method: str) -> type[TorchdiffeqSolver]:
    order, adaptive, recommended, nfe = _INFO.get(method, (None, True, 1e-3, "?"))
    kind = "adaptive" if adaptive else "fixed-grid"
    attrs = {
        "name": f"ode:{method}",
        "method": method,
        "weak_order": order,
        "adaptive": adaptive,
        "default_steps": None if adaptive else int(recommended),
        "recommended_rtol": float(recommended) if adaptive else None,
        "description": f"torchdiffeq {method} on the probability-flow ODE ({kind}, order {order}, {nfe} NFE/step)",
        "__doc__": f"torchdiffeq ``{method}`` on the probability-flow ODE ({kind}, global order {order}).",
        "__module__": __name__,
    }
    return type(f"ODE_{method}", (TorchdiffeqSolver,), attrs)


def _register_all() -> None:
    for method in ODE_METHODS:
        cls = _make(method)
        aliases: tuple[str, ...] = ("ode",) if method == "dopri5" else ()
        if method not in REGISTRY and method not in ("euler", "midpoint", "heun"):
            aliases = (*aliases, method)
        register(cls, aliases=aliases)


_register_all()
