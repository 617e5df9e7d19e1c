"""The demo's headline (printed on stdout and quoted at the top of ``report.md``) and ``report.md`` itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._report_outliers import outlier_lines
from ._results import DemoReport, SampleRun, fmt, level_label, nats

__all__ = ["headline", "summary_lines", "write_markdown"]

PLOTS = {
    "samples.png": "samples",
    "error_vs_nfe.png": "error vs NFE",
    "trajectories.png": "trajectories",
    "logp_calibration.png": "logp calibration",
}
"""The figures of a run (:mod:`sdekit.demo._plots`) and their alt texts in ``report.md``."""


def headline(rep: DemoReport) -> dict[str, dict[str, Any]]:
    """Per model (``"learned"``, ``"exact"``): ``best``, the fewest-NFE run with KS/crit <= 1 (ties: the lower
    ratio; None if no run is), and ``per_solver``, the same for each solver in run order."""
    order = list(dict.fromkeys(r.solver for r in rep.runs))

    def key(r: SampleRun) -> tuple[int, float]:
        return (r.nfe, r.ks_ratio)

    out: dict[str, dict[str, Any]] = {}
    for kind in ("learned", "exact"):
        ok = [r for r in rep.runs if r.model == kind and r.error is None and r.ks_ratio <= 1.0]
        per = {s: min((r for r in ok if r.solver == s), key=key, default=None) for s in order}
        out[kind] = {"best": min(ok, key=key, default=None), "per_solver": per}
    return out


def summary_lines(rep: DemoReport, report_path: Path | None = None) -> list[str]:
    """The headline results, printed to stdout at the end of the run and quoted at the top of report.md: per model
    the fewest-NFE run indistinguishable from the exact law (overall and per solver), the likelihood gaps, the
    outliers and (with ``report_path``) where the report is."""
    lines = [
        f"sdekit demo: {rep.sde}, seed {rep.seed}: n = {rep.n_samples:,} samples per run against the exact p_eps; "
        f"KS/crit <= 1 means indistinguishable at level alpha = {rep.ks_alpha:g}"
    ]
    head = headline(rep)
    for kind, label in (("learned", "learned model"), ("exact", "exact score")):
        lines.append(f"  {label + ':':<15}{_fewest_nfe(rep, kind, head[kind])}")
    lines.append(_gaps_line(rep.logp))
    by_solver: dict[str, list[str]] = {}
    for o in rep.diagnostics.get("outliers", []):
        by_solver.setdefault(o["solver"], []).append(level_label(o["steps"], o["tol"]))
    found = "; ".join(f"{s} at {', '.join(v)}" for s, v in by_solver.items())
    lines.append(
        "  outliers (learned > 1 where exact <= 1 while another solver is <= 1 at no more NFE): "
        + (f"{found} (diagnosed in the report)" if found else "none")
    )
    if report_path is not None:
        total = rep.seconds.get("total")
        lines.append(f"  report: {report_path}" + ("" if total is None else f" ({total:.0f} s)"))
    return lines


def _fewest_nfe(rep: DemoReport, kind: str, head: dict[str, Any]) -> str:
    """One model's headline: the fewest-NFE run with KS/crit <= 1, overall and per solver."""
    best = head["best"]
    if best is None:
        mine = [r.ks_ratio for r in rep.runs if r.model == kind and r.error is None]
        first = "no run reaches KS/crit <= 1" + (f" (lowest {min(mine):.2f})" if mine else "")
    else:
        first = (
            f"fewest NFE with KS/crit <= 1: {best.nfe} ({best.solver}, {level_label(best.steps, best.tol)}: "
            f"{best.ks_ratio:.2f})"
        )
    per = []
    for solver, r in head["per_solver"].items():
        if r is not None:
            per.append(f"{solver} {r.nfe}")
        else:
            mine = [x.ks_ratio for x in rep.runs if x.model == kind and x.solver == solver and x.error is None]
            per.append(f"{solver} none" + (f" (lowest {min(mine):.2f})" if mine else " (failed)"))
    return f"{first}; per solver: {', '.join(per)}"


def _gaps_line(lp: dict[str, Any]) -> str:
    """The likelihood gaps of both models and of the best single Gaussian."""
    gaps = []
    for kind, label in (("learned", "learned"), ("exact", "exact score")):
        v = lp.get(kind, {})
        if "gap_mean" not in v:
            gaps.append(f"{label} failed")
            continue
        gap = f"{label} {nats(v['gap_mean'], v['gap_se'])}"
        if kind == "exact":
            gap += f" (max |gap| {v['gap_abs_max']:.1e})"
        gaps.append(gap)
    g = lp["gaussian_baseline"]
    gaps.append(f"best single Gaussian {nats(g['gap_mean'], g['gap_se'])}")
    return f"  likelihood gap, nats (mean ± se over {lp['n']:,} held-out points): " + "; ".join(gaps)


# --------------------------------------------------------------------------- report.md
def write_markdown(rep: DemoReport, path: Path, plots: bool) -> None:
    """``report.md``: the summary, training, the sampling table with its outliers, likelihoods, wall times and
    (with ``plots``) the figures."""
    lines = _intro_lines(rep) + _sampling_lines(rep) + outlier_lines(rep) + _likelihood_lines(rep.logp)
    lines += ["", "## Wall times", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in rep.seconds.items()]
    if plots:
        lines += ["", "## Plots"]
        for name, alt in PLOTS.items():
            lines += ["", f"![{alt}]({name})"]
    path.write_text("\n".join(lines) + "\n")


def _intro_lines(rep: DemoReport) -> list[str]:
    """Title, command, the summary and the training section."""
    return [
        "# sdekit demo report",
        "",
        f"`{rep.command}` — SDE `{rep.sde}`, seed {rep.seed}, device {rep.device}"
        + (", **quick**" if rep.quick else ""),
        "",
        "Data: a 2-D Gaussian mixture of 3 components whose diffused marginals are exact, so every number below "
        "is measured against the truth.",
        "",
        "## Summary",
        "",
        "```text",
        *summary_lines(rep),
        "```",
        "",
        "## Training",
        "",
        f"An MLP (width {rep.train['width']}, {rep.train['parameters']:,} parameters) predicting the noise, "
        f"trained with `sdekit.losses.dsm` (likelihood weighting and time sampling) for {rep.train['steps']} "
        f"Adam steps of batch {rep.train['batch']} in {rep.train['seconds']:.1f} s. DSM loss: "
        f"{rep.train['loss_first_10pct']:.3f} (first 10% of steps) → {rep.train['loss_last_10pct']:.3f} (last 10%).",
    ]


def _sampling_lines(rep: DemoReport) -> list[str]:
    """The sample-quality table (one row per solver and level, both models side by side) and the failed runs."""
    lines = [
        "",
        "## Sample quality vs NFE",
        "",
        f"n = {rep.n_samples:,} samples per run, integrated from the same exact draws of p_T down to "
        f"t = eps = {rep.eps:g} (no denoising step) and compared with the exact p_eps by the sliced KS test "
        f"({rep.ks_directions} fixed directions). Metric: D / D_crit with D_crit = {rep.ks_critical:.4f} "
        f"(family-wise level alpha = {rep.ks_alpha:g} at this n): **<= 1 means indistinguishable from the exact "
        "law at level alpha** (the noise floor of n samples); the learned model's values floor at its own error.",
        "",
        "| solver | steps / tol | NFE (learned) | KS/crit (learned) | NFE (exact) | KS/crit (exact) "
        "| s (learned) | s (exact) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_key: dict[tuple, dict[str, SampleRun]] = {}
    for r in rep.runs:
        by_key.setdefault((r.solver, r.steps, r.tol), {})[r.model] = r
    for (solver, st, tol), pair in by_key.items():
        cells = []
        for kind in ("learned", "exact"):
            r = pair.get(kind)
            if r is None or r.error:
                cells += ["—", "failed" if r is not None else "—"]
            else:
                cells += [str(r.nfe), fmt(r.ks_ratio)]
        for kind in ("learned", "exact"):
            r = pair.get(kind)
            cells.append(fmt(r.seconds if r else None))
        lines.append(f"| {solver} | {level_label(st, tol)} | " + " | ".join(cells) + " |")
    failures = [r for r in rep.runs if r.error]
    if failures:
        lines += ["", "Failed runs:", ""] + [f"- {r.solver} ({r.model}): {r.error}" for r in failures]
    return lines


def _likelihood_lines(lp: dict[str, Any]) -> list[str]:
    """The held-out likelihood table: both models' gaps and the best single Gaussian's."""
    lines = [
        "",
        "## Likelihood of held-out data",
        "",
        f"`sdekit.logp` (PF-ODE, dopri5, exact trace, rtol = atol = {lp['rtol']:g}, exact p_T as prior) of "
        f"{lp['n']} held-out draws of p_eps. Gap = mean of exact log p_eps − model logp (nats; estimates "
        "KL(p_eps ‖ model) ≥ 0), ± one standard error.",
        "",
        "| model | mean gap (nats) | max abs gap | NFE | seconds |",
        "|---|---|---|---|---|",
    ]
    for kind in ("learned", "exact"):
        v = lp[kind]
        if "error" in v:
            lines.append(f"| {kind} | failed: {v['error']} | | | |")
            continue
        lines.append(
            f"| {kind} | {nats(v['gap_mean'], v['gap_se'])} | {v['gap_abs_max']:.2g} | {v['nfe']} "
            f"| {v['seconds']:.1f} |"
        )
    g = lp["gaussian_baseline"]
    lines.append(f"| best single Gaussian (reference) | {nats(g['gap_mean'], g['gap_se'])} | | | |")
    return [*lines, "", f"Mean exact log p_eps of the held-out data: {lp['exact_logp_mean']:.3f} nats."]
