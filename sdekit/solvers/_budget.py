r"""Budgets that keep every solve finite: adaptive step budgets and the cap on fixed step counts (issue #19).

**Adaptive solves** (torchdiffeq's ``dopri5``, ``bosh3``, ... in :func:`sdekit.sample` and :func:`sdekit.logp`;
torchsde's step-doubling controller in :func:`sdekit.sample` and :func:`sdekit.simulate`) may attempt at most
``max_steps`` steps (accepted + rejected) and reject at most ``max_rejected`` of them. A solve that needs more
(a stiff model, a score oscillating in t, a tolerance below round-off) stops with
:class:`~sdekit.errors.SolverError` naming the time reached, the step size, the steps spent and what to change
(:meth:`StepBudget.error`), instead of running for hours.

The defaults are measured (``docs/sampling.md``, "Step budgets") on the 2-D, 3-component mixture of
``benchmarks/error_vs_nfe.py`` with its exact score on every zoo SDE (vp, subvp, ve, cosine, edm, ou, bm),
float32, batch 64-4096, and on the same mixture with component stds down to 1e-4 (sharp data, float64):

* PF-ODE sampling at each adaptive method's default tolerance: at most 125 attempted steps (``adaptive_heun``, VE)
  and 41 rejected (EDM); ``logp`` (dopri5, per-sample norm, batch up to 2,048) at its default rtol = atol = 1e-5:
  at most 40 attempts, at the tests' tightest 1e-8 (float64, batch 512): about 90. Stress runs beyond any
  documented use: ``adaptive_heun`` at rtol = atol = 1e-5 in ``sample``: 1,103 attempts, 65 rejected; in ``logp``
  at 1e-6: about 2,100 attempts; ``dopri8`` in ``logp`` at 1e-8: about 1,300.
* reverse-SDE sampling (torchsde, batch 256) at the default rtol = atol = 1e-3: ``srk`` at most 195 attempted
  steps and 63 rejected (EDM), at 1e-4: 407 and 106; ``euler`` / ``milstein`` 1,315 and 229 (EDM); ``heun`` 777
  and 145. ``simulate``'s documented run (OU, ``srk`` at 1e-4): 50.

Hence :data:`ODE_MAX_STEPS` = 3,000 (24 times the largest documented run, above every stress run),
:data:`ODE_MAX_REJECTED` = 300 (7 times the most rejections measured), :data:`SDE_MAX_STEPS` = 5,000 (4 times
adaptive Euler on EDM, 12 times ``srk`` at 1e-4) and :data:`SDE_MAX_REJECTED` = 1,000 (4 times adaptive Euler on
EDM). Measured on hopeless solves at batch 4-64 on one CPU thread (VP; the stiff score ``-1e3 x`` or ``-1e6 x``, or
``-x (1 + 0.9 sin(2e4 t))``): dopri5 stops after about 1,500 attempts (3-7 s), ``euler`` / ``heun`` after at most
5,000 (2-5 s), ``srk`` after at most 5,000 (6-10 s: its attempts cost three steps and Brownian-interval queries);
a larger batch or model scales these times.

**Fixed step counts** are capped at :data:`MAX_STEPS` = 10**7, checked before anything is allocated: the time
grid of n steps is a float64 tensor of n + 1 entries (80 MB at the cap) and the torchsde driver keeps it as a
Python list (about 320 MB); even at 10 µs per step (the loop's own cost, model excluded) 10**7 steps take
100 s, so a larger count is a mistake (``steps=`` meant as something else) rather than a run to make.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import SolverError
from ._option import Option

__all__ = [
    "MAX_STEPS",
    "ODE_MAX_REJECTED",
    "ODE_MAX_STEPS",
    "SDE_MAX_REJECTED",
    "SDE_MAX_STEPS",
    "StepBudget",
    "check_budget",
    "check_step_cap",
]

ODE_MAX_STEPS: int = 3_000
"""Default budget of attempted steps (accepted + rejected) of an adaptive probability-flow ODE solve (``sample``'s
``max_steps`` option of the adaptive ``ode:*`` solvers; ``logp``'s ``options={"max_num_steps": ...}``)."""

ODE_MAX_REJECTED: int = 300
"""Default budget of rejected steps of an adaptive probability-flow ODE solve (``sample``'s ``max_rejected``)."""

SDE_MAX_STEPS: int = 5_000
"""Default budget of attempted steps of an adaptive torchsde solve (``sample``'s ``max_steps`` option of the
torchsde solvers; ``simulate``'s ``max_steps=``)."""

SDE_MAX_REJECTED: int = 1_000
"""Default budget of rejected steps of an adaptive torchsde solve (``sample``'s ``max_rejected``; ``simulate``'s
``max_rejected=``)."""

MAX_STEPS: int = 10**7
"""Largest fixed step count that ``sample``, ``simulate`` and ``logp`` accept (module docstring)."""


def check_step_cap(steps: float, what: str | None = None) -> Any:
    """``steps`` if at most :data:`MAX_STEPS`, else a ValueError saying the limit and why (call it before anything
    is allocated). ``what`` says where the count comes from (default ``steps=<steps>``)."""
    if steps > MAX_STEPS:
        what = what or f"steps={steps}"
        raise ValueError(
            f"{what} is more than sdekit's limit of {MAX_STEPS:,} fixed steps (the time grid alone would take "
            f"{8 * (steps + 1) / 1e9:.3g} GB and the loop at least {steps * 1e-5:.3g} s); take at most {MAX_STEPS:,} "
            f"steps, or use an adaptive solver (steps=None) with rtol/atol"
        )
    return steps


def check_budget(name: str, value: Any) -> int | None:
    """A budget option: a positive int, or None (no limit); else a ValueError / TypeError naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer or None (no limit), got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer or None (no limit), got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class StepBudget:
    """How many steps an adaptive solve may attempt (accepted + rejected) and reject; None: no limit.

    ``steps_option`` / ``rejected_option`` name the options that raise the limits and ``fixed_hint`` the fixed-step
    alternative, for the message of :meth:`error`.
    """

    max_steps: int | None
    max_rejected: int | None = None
    steps_option: str = "max_steps"
    rejected_option: str = "max_rejected"
    fixed_hint: str = "use fixed steps (steps=n)"

    def allows(self, attempts: int, rejected: int) -> bool:
        """Whether another attempt may start after ``attempts`` attempted steps of which ``rejected`` were rejected."""
        return (self.max_steps is None or attempts < self.max_steps) and (
            self.max_rejected is None or rejected <= self.max_rejected
        )

    def error(
        self, label: str, t: float, h: float, attempts: int, rejected: int, rtol: float, atol: float
    ) -> SolverError:
        """The :class:`~sdekit.errors.SolverError` of a solve that spent its budget at time ``t``, step size ``h``."""
        if self.max_steps is not None and attempts >= self.max_steps:
            spent, option = f"{self.steps_option}={self.max_steps} attempted steps", self.steps_option
        else:
            spent, option = f"{self.rejected_option}={self.max_rejected} rejected steps", self.rejected_option
        step = f"{h:.3g}" if math.isfinite(h) else str(h)
        return SolverError(
            f"{label}: the adaptive solve spent its budget of {spent} and stopped at t = {t:.6g} with step size "
            f"{step} ({attempts - rejected} accepted, {rejected} rejected); the problem is too stiff or rough for "
            f"rtol = {rtol:g}, atol = {atol:g} (check the model). Raise {option}= (None: no limit), loosen rtol/atol, "
            f"or {self.fixed_hint}"
        )


def budget_options(max_steps: int, max_rejected: int) -> dict[str, Option]:
    """The declared options ``max_steps`` / ``max_rejected`` of an adaptive solver family, with its defaults."""
    return {
        "max_steps": Option.positive_int(
            max_steps,
            "attempted steps (accepted + rejected) of an adaptive run before it stops with SolverError",
            none=True,
            default_note="None: no limit",
        ),
        "max_rejected": Option.positive_int(
            max_rejected,
            "rejected steps of an adaptive run before it stops with SolverError",
            none=True,
            default_note="None: no limit",
        ),
    }
