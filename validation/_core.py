"""The pieces every check shares: the result record, the run context and the registry.

A check is a function ``check(ctx: Context) -> list[CheckResult]`` registered with
:func:`register`. The runner (``validation/_runner.py``) imports every check module listed
in :data:`validation.CHECK_MODULES`, runs the registered checks (only those marked
``quick=True`` under ``--quick``), prints a table and writes the markdown report.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

__all__ = ["CheckResult", "Context", "register", "registered"]


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One line of the report.

    Attributes:
        group: section of the report ("symbolic", "fokker-planck", "forward", "reverse",
            "analytic", "orders").
        name: what was checked, e.g. ``"VPSDE: kernel satisfies Fokker-Planck"``.
        value: the measured number (an error, a statistic, a fitted slope).
        tolerance: the bound ``value`` is compared with; ``where`` says where it comes from.
        passed: whether the check passed (usually ``value <= tolerance``; for slopes the
            check states its own rule in ``where``).
        where: one line on the origin of the tolerance (round-off, solver tolerance,
            Monte-Carlo error at n samples and k sigma, theory +- 0.25, ...).
        figure: optional PNG file name (relative to the output directory) to show with it.
        seconds: wall time of the check.
    """

    group: str
    name: str
    value: float
    tolerance: float
    passed: bool
    where: str = ""
    figure: str | None = None
    seconds: float = 0.0

    @classmethod
    def below(cls, group: str, name: str, value: float, tolerance: float, where: str = "", **kw) -> CheckResult:
        """A result that passes when ``value`` is finite and ``value <= tolerance``."""
        value = float(value)
        return cls(group, name, value, float(tolerance), bool(math.isfinite(value) and value <= tolerance), where, **kw)


@dataclasses.dataclass
class Context:
    """What a check may use.

    Attributes:
        sdes: the SDE instances to check (the zoo by default, or the user's ``--sde module:Class``).
        quick: True under ``--quick`` (fewer samples, fewer levels; the whole run under 3 minutes).
        out: output directory for the report and PNGs (created by the runner).
        seed: base seed; checks derive their generators from it.
        user_sde: True when ``sdes`` came from ``--sde`` (checks that need an affine SDE skip others).
    """

    sdes: list
    quick: bool = True
    out: Path = Path("validation-report")
    seed: int = 0
    user_sde: bool = False


CheckFn = Callable[[Context], list[CheckResult]]
_REGISTRY: list[tuple[str, bool, CheckFn]] = []


def register(group: str, *, quick: bool = True) -> Callable[[CheckFn], CheckFn]:
    """Decorator: register ``fn`` as a check of ``group``; ``quick=False`` runs it only in full mode."""

    def deco(fn: CheckFn) -> CheckFn:
        _REGISTRY.append((group, quick, fn))
        return fn

    return deco


def registered(quick: bool) -> list[tuple[str, CheckFn]]:
    """The registered checks to run, in registration order."""
    return [(group, fn) for group, q, fn in _REGISTRY if q or not quick]
