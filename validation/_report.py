"""Write the run as ``report.md`` (tables per group, figures, failures first) and ``report.json``."""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

from ._core import GROUPS, CheckResult, Context
from ._runner import RunResult, _num

__all__ = ["write_report"]

_TITLES = {
    "symbolic": "Symbolic: Fokker–Planck, Chapman–Kolmogorov, reverse-time consistency",
    "fokker-planck": "Numeric Fokker–Planck solver",
    "forward": "Forward SDE paths vs the Fokker–Planck density",
    "reverse": "Reverse SDE with the numeric score",
    "analytic": "Samplers and likelihood vs exact Gaussian / mixture laws",
    "orders": "Convergence orders",
}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _meta(run: RunResult, ctx: Context) -> dict:
    import torch

    import sdekit

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mode": "quick" if ctx.quick else "full",
        "seed": ctx.seed,
        "sdes": [repr(s) for s in ctx.sdes],
        "user_sde": ctx.user_sde,
        "sdekit": sdekit.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "seconds": round(run.seconds, 2),
        "passed": run.n_passed,
        "failed": run.n_failed,
        "skipped": run.n_skipped,
    }


def _row(r: CheckResult) -> str:
    status = {"pass": "pass", "FAIL": "**FAIL**", "skip": "skip"}[r.status]
    return (
        f"| {_cell(r.name)} | {_num(r.value)} | {_num(r.tolerance)} | {status} | {r.seconds:.1f} | {_cell(r.where)} |"
    )


def write_report(run: RunResult, ctx: Context, image_prefix: str = "") -> Path:
    """Write ``report.md`` and ``report.json`` to ``ctx.out``; return the markdown path.

    ``image_prefix`` is put in front of figure file names in the markdown links (the PNGs stay in
    ``ctx.out``), e.g. ``"img/validation/"`` when the report is copied into ``docs/``.
    """
    out = Path(ctx.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = _meta(run, ctx)
    groups = [g for g in GROUPS if any(r.group == g for r in run.results)]
    groups += sorted({r.group for r in run.results} - set(groups))
    lines = [
        f"# sdekit validation report ({meta['mode']})",
        "",
        f"{meta['date']} · sdekit {meta['sdekit']} · torch {meta['torch']} · Python {meta['python']} · "
        f"seed {meta['seed']} · {meta['seconds']:.0f} s",
        "",
        f"**{len(run.results)} checks: {run.n_passed} passed, {run.n_failed} failed, {run.n_skipped} skipped.**",
        "",
        "SDEs: " + ", ".join(f"`{_cell(s)}`" for s in meta["sdes"]) + (" (from `--sde`)" if ctx.user_sde else ""),
        "",
        "Each line compares a measured value with a tolerance; the last column says where the tolerance "
        "comes from. `skip` means the check does not apply (reason given), not that it passed.",
        "",
    ]
    failed = [r for r in run.results if r.status == "FAIL"]
    if failed:
        lines += ["## Failures", "", "| group | check | value | tolerance | why |", "|---|---|---|---|---|"]
        lines += [
            f"| {r.group} | {_cell(r.name)} | {_num(r.value)} | {_num(r.tolerance)} | {_cell(r.where)} |"
            for r in failed
        ]
        lines.append("")
    header = ["| check | value | tolerance | status | s | tolerance from / notes |", "|---|---|---|---|---|---|"]
    for g in groups:
        rows = [r for r in run.results if r.group == g]
        t = sum(r.seconds for r in rows)
        n_fail = sum(r.status == "FAIL" for r in rows)
        lines += [f"## {_TITLES.get(g, g)}", "", f"`{g}`: {len(rows)} lines, {n_fail} failed, {t:.0f} s.", ""]
        lines += header + [_row(r) for r in rows] + [""]
        figures = list(dict.fromkeys(r.figure for r in rows if r.figure))
        for fig in figures:
            lines += [f"![{fig}]({image_prefix}{fig})", ""]
    md = out / "report.md"
    md.write_text("\n".join(lines))

    def clean(v: float) -> float | None:
        return None if v is None or not math.isfinite(v) else v

    payload = {
        "meta": meta,
        "results": [
            {
                "group": r.group,
                "name": r.name,
                "status": r.status,
                "value": clean(r.value),
                "tolerance": clean(r.tolerance),
                "passed": r.passed,
                "skipped": r.skipped,
                "where": r.where,
                "figure": r.figure,
                "seconds": round(r.seconds, 3),
            }
            for r in run.results
        ],
    }
    (out / "report.json").write_text(json.dumps(payload, indent=1))
    return md
