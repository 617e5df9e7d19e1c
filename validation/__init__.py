"""sdekit's validation suite: Fokker-Planck, analytic and convergence checks.

Run it with ``python -m validation`` (or ``sdekit validate``); see ``docs/validation.md``.
A check is a function ``check(ctx: Context) -> Iterable[CheckResult]`` registered with
``@register(group, quick=...)`` in one of the modules of :data:`CHECK_MODULES`.
"""

from ._core import GROUPS, CheckResult, Context, guarded, register, registered

# Check modules, imported by the runner in this order (each registers its checks).
CHECK_MODULES = [
    "validation.symbolic_checks",
    "validation.fp_self_checks",
    "validation.fp_transport_checks",
    "validation.analytic_checks",
    "validation.order_checks",
    "validation.component_checks",
    "validation.component_orders",
]

__all__ = ["CHECK_MODULES", "GROUPS", "CheckResult", "Context", "guarded", "register", "registered"]
