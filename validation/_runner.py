"""Run the registered checks: one printed line per result, as it comes, and a final summary.

Every check runs in its own ``try``: a check that raises becomes a failed line carrying the
error message and the run goes on. Each line is timed (the time since the previous line of the
same check, so a check that yields several results shows each one's cost).
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TextIO

from ._core import CheckResult, Context, registered

__all__ = ["RunResult", "run_checks", "load_check_modules", "format_row", "HEADER"]

HEADER = f"{'group':<14}{'status':<7}{'value':>11}{'tolerance':>11}{'time':>8}  check"


def _num(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v == 0:
        return "0"
    a = abs(v)
    return f"{v:.3g}" if 1e-3 <= a < 1e4 else f"{v:.2e}"


def format_row(r: CheckResult) -> str:
    """One table line: group, status, value, tolerance, seconds, name."""
    return f"{r.group:<14}{r.status:<7}{_num(r.value):>11}{_num(r.tolerance):>11}{r.seconds:>7.1f}s  {r.name}"


@dataclass
class RunResult:
    """All lines of a run, with the total wall time."""

    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_failed(self) -> int:
        """Failed lines (crashes included)."""
        return sum(r.status == "FAIL" for r in self.results)

    @property
    def n_passed(self) -> int:
        """Passed lines."""
        return sum(r.status == "pass" for r in self.results)

    @property
    def n_skipped(self) -> int:
        """Skipped lines."""
        return sum(r.status == "skip" for r in self.results)

    @property
    def exit_code(self) -> int:
        """1 when any line failed, else 0."""
        return 1 if self.n_failed else 0

    def summary(self) -> str:
        """``"N checks: P passed, F failed, S skipped in T s"``."""
        return (
            f"{len(self.results)} checks: {self.n_passed} passed, {self.n_failed} failed, "
            f"{self.n_skipped} skipped in {self.seconds:.1f} s"
        )


def load_check_modules(modules: list[str] | None = None) -> list[CheckResult]:
    """Import the check modules (each registers its checks on import; importing twice is a no-op).

    A module that fails to import becomes a failed line (returned), so the other modules still run.
    """
    from . import CHECK_MODULES

    failed = []
    for name in modules if modules is not None else CHECK_MODULES:
        try:
            importlib.import_module(name)
        except Exception as err:
            failed.append(CheckResult.crashed("import", f"import {name}", err))
    return failed


def run_checks(
    ctx: Context,
    only: list[str] | None = None,
    stream: TextIO | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    preface: list[CheckResult] | None = None,
) -> RunResult:
    """Run every registered check (``quick=True`` ones only under ``ctx.quick``) of the groups in ``only``.

    Prints the table to ``stream`` (default stdout) line by line and returns all results;
    ``preface`` lines (e.g. modules that failed to import) come first.
    """
    stream = sys.stdout if stream is None else stream
    run = RunResult()
    start = time.perf_counter()
    print(HEADER, file=stream, flush=True)
    for r in preface or []:
        run.results.append(r)
        print(format_row(r), file=stream, flush=True)
    for group, fn in registered(ctx.quick, user_sde=ctx.user_sde):
        if only and group not in only:
            continue
        last = time.perf_counter()
        label = f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}"
        try:
            for r in fn(ctx):
                now = time.perf_counter()
                r = replace(r, seconds=now - last) if not r.seconds else r
                last = now
                run.results.append(r)
                print(format_row(r), file=stream, flush=True)
                if on_result is not None:
                    on_result(r)
        except Exception as err:  # a crashing check is a failed line; the run goes on
            r = replace(CheckResult.crashed(group, label, err), seconds=time.perf_counter() - last)
            run.results.append(r)
            print(format_row(r), file=stream, flush=True)
    run.seconds = time.perf_counter() - start
    print(run.summary(), file=stream, flush=True)
    return run
