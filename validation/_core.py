"""The pieces every check shares: the result record, the run context and the registry.

A check is a function ``check(ctx: Context) -> list[CheckResult]`` registered with
:func:`register`. The runner (``validation/_runner.py``) imports every check module listed
in :data:`validation.CHECK_MODULES`, runs the registered checks (only those marked
``quick=True`` under ``--quick``), prints a table and writes the markdown report.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["CheckResult", "Context", "register", "registered", "left_out", "guarded", "GROUPS"]

# Report sections, in report order (a group not listed here is appended after them).
GROUPS = ("symbolic", "fokker-planck", "forward", "reverse", "analytic", "orders")


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
        skipped: the check does not apply (e.g. it needs an affine SDE); ``where`` says why.
            A skipped line is neither a pass nor a failure.
    """

    group: str
    name: str
    value: float
    tolerance: float
    passed: bool
    where: str = ""
    figure: str | None = None
    seconds: float = 0.0
    skipped: bool = False

    @property
    def status(self) -> str:
        """``"pass"``, ``"FAIL"`` or ``"skip"``."""
        if self.skipped:
            return "skip"
        return "pass" if self.passed else "FAIL"

    @classmethod
    def skip(cls, group: str, name: str, reason: str) -> CheckResult:
        """A line for a check that does not apply, with the reason (not counted as passed or failed)."""
        return cls(group, name, math.nan, math.nan, False, reason, skipped=True)

    @classmethod
    def crashed(cls, group: str, name: str, err: BaseException) -> CheckResult:
        """A failed line for a check that raised ``err`` (the message says what went wrong)."""
        text = " ".join(str(err).split())
        if len(text) > 300:
            text = text[:297] + "..."
        return cls(group, name, math.nan, math.nan, False, f"raised {type(err).__name__}: {text}")

    @classmethod
    def at_least(cls, group: str, name: str, value: float, bound: float, where: str = "", **kw) -> CheckResult:
        """A result that passes when ``value`` is finite and ``value >= bound`` (shown with tolerance = bound)."""
        value = float(value)
        return cls(group, name, value, float(bound), bool(math.isfinite(value) and value >= bound), where, **kw)

    @classmethod
    def within(
        cls, group: str, name: str, value: float, target: float, width: float, where: str = "", **kw
    ) -> CheckResult:
        """Passes when ``|value - target| <= width`` (e.g. a fitted slope within theory +- 0.25).

        The tolerance column shows ``width``; ``where`` should state the target."""
        value = float(value)
        ok = bool(math.isfinite(value) and abs(value - target) <= width)
        return cls(group, name, value, float(width), ok, where, **kw)

    @classmethod
    def below(cls, group: str, name: str, value: float, tolerance: float, where: str = "", **kw) -> CheckResult:
        """A result that passes when ``value`` is finite and ``value <= tolerance``."""
        value = float(value)
        return cls(group, name, value, float(tolerance), bool(math.isfinite(value) and value <= tolerance), where, **kw)


@dataclasses.dataclass
class Context:
    """What a check may use.

    Attributes:
        sdes: the scalar SDE instances to check (the zoo by default, or the user's ``--sde module:Class``).
        component_sdes: the k-component SDEs to check (``sdekit.CLDSDE`` by default, or the user's); only the
            checks of ``validation.component_checks`` look at them, so every other check sees scalar SDEs only.
        quick: True under ``--quick`` (fewer samples, fewer levels; the whole run under 3 minutes).
        out: output directory for the report and PNGs (created by the runner).
        seed: base seed; checks derive their generators from it.
        user_sde: True when ``sdes`` came from ``--sde``: then only lines about ``sdes`` are reported (the
            suite's own problems, such as the double well, are left out; see :func:`register`).
    """

    sdes: list
    component_sdes: list = dataclasses.field(default_factory=list)
    quick: bool = True
    out: Path = Path("validation-report")
    seed: int = 0
    user_sde: bool = False

    def generator(self, *keys: object) -> torch.Generator:
        """A CPU generator seeded from :attr:`seed` and ``keys`` (stable across runs and check order)."""
        import torch

        tag = "/".join(str(k) for k in keys).encode()
        return torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(tag)) % (2**63))

    def figure_path(self, name: str) -> Path:
        """Where to save figure ``name`` (a PNG file name); creates :attr:`out`."""
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / name


CheckFn = Callable[[Context], Iterable[CheckResult]]
"""A check returns a list of results, or yields them one by one (the runner prints each as it comes)."""
_REGISTRY: list[tuple[str, bool, CheckFn]] = []
_SUITE_ONLY: set[CheckFn] = set()


def register(group: str, *, quick: bool = True, per_sde: bool = True) -> Callable[[CheckFn], CheckFn]:
    """Decorator: register ``fn`` as a check of ``group``; ``quick=False`` runs it only in full mode.

    ``per_sde=False`` marks a check of the suite's own fixed problems (the double well, the FP solver's
    orders, the SDE solvers' orders on closed-form problems): it does not look at ``ctx.sdes`` and is left
    out when the user checks their own SDEs (``--sde``). A ``per_sde`` check reports lines about
    ``ctx.sdes`` only when ``ctx.user_sde`` is set.
    """

    def deco(fn: CheckFn) -> CheckFn:
        _REGISTRY.append((group, quick, fn))
        if not per_sde:
            _SUITE_ONLY.add(fn)
        return fn

    return deco


def registered(quick: bool, user_sde: bool = False) -> list[tuple[str, CheckFn]]:
    """The registered checks to run, in registration order (``user_sde=True``: only the ``per_sde`` ones)."""
    return [(group, fn) for group, q, fn in _REGISTRY if (q or not quick) and not (user_sde and fn in _SUITE_ONLY)]


def left_out(quick: bool) -> int:
    """How many checks of this mode are left out under ``--sde`` (``per_sde=False``)."""
    return sum(1 for _, q, fn in _REGISTRY if (q or not quick) and fn in _SUITE_ONLY)


def guarded(group: str, name: str, fn: Callable[[], CheckResult | list[CheckResult]]) -> list[CheckResult]:
    """Run ``fn``; an exception becomes one failed line (:meth:`CheckResult.crashed`) so a loop can go on."""
    try:
        out = fn()
    except Exception as err:  # a crashing check is a failed line, not a crashed run
        return [CheckResult.crashed(group, name, err)]
    return [out] if isinstance(out, CheckResult) else list(out)
