"""The report's outlier section: the outlier levels, their paired reruns and the explanation the numbers give.

Written from ``report.diagnostics`` (:func:`sdekit.demo._diagnose.diagnose`), so the text follows the run.
"""

from __future__ import annotations

from typing import Any

from ._config import N_PROFILE
from ._results import DemoReport, SampleRun, fmt, level_label

__all__ = ["outlier_lines"]

_DEFINITION = (
    "A level is an outlier when the learned model is distinguishable from p_eps (KS/crit > 1) while the exact "
    "score, from the same x_T with the same noise, is not (<= 1), and another solver reaches KS/crit <= 1 with "
    "the learned model at no more NFE."
)


def outlier_lines(rep: DemoReport) -> list[str]:
    """The markdown lines of the outlier section (none for a report without diagnostics)."""
    diag = rep.diagnostics
    if not diag:
        return []
    lines = ["", "### Outliers", "", _DEFINITION, ""]
    if not diag["outliers"]:
        return [*lines, "None in this run."]
    for o in diag["outliers"]:
        better = ", ".join(
            f"{b['solver']} {level_label(b['steps'], b['tol'])}: {b['ks_ratio']:.2f} at {b['nfe']} NFE"
            for b in o["better"]
        )
        lines.append(
            f"- **{o['solver']}, {level_label(o['steps'], o['tol'])}** ({o['nfe']} NFE): learned {o['learned']:.2f}, "
            f"exact score {o['exact']:.2f}; with no more NFE: {better}."
        )
    lines += _profile_lines(diag["score_error"])
    runs = {(r.solver, r.steps, r.tol, r.model): r for r in rep.runs if r.error is None}
    for check in diag["checks"]:
        lines += _check_lines(rep, check, runs, diag["t_low"], diag["noise_to_signal_low"])
    return lines


def _profile_lines(prof: list[dict]) -> list[str]:
    """The learned score's relative error against t, and where it is largest."""
    worst = max(prof, key=lambda p: p["rel_rms"])
    return [
        "",
        "Relative rms error of the learned score under the exact p_t, sqrt(E|s_theta − s|² / E|s|²) "
        f"({N_PROFILE:,} exact draws per time):",
        "",
        "| t | " + " | ".join(f"{p['t']:.3g}" for p in prof) + " |",
        "|---" * (len(prof) + 1) + "|",
        "| sigma/alpha | " + " | ".join(f"{p['noise_to_signal']:.3g}" for p in prof) + " |",
        "| error | " + " | ".join(f"{p['rel_rms']:.3f}" for p in prof) + " |",
        "",
        f"The error is largest at t = {worst['t']:.3g} ({worst['rel_rms']:.2f}; {prof[-1]['rel_rms']:.3f} at "
        f"t = T). The network predicts the noise and its score is −eps_hat/sigma(t), so a noise error is divided "
        "by sigma(t), which is smallest at t = eps.",
    ]


def _check_lines(
    rep: DemoReport, check: dict[str, Any], runs: dict[tuple, SampleRun], t_low: float, r_low: float
) -> list[str]:
    """One outlier level's diagnosis: the table of paired reruns, the score weights (pc) and the explanation."""
    solver, steps, tol = check["solver"], check["steps"], check["tol"]
    learned, exact = runs[(solver, steps, tol, "learned")], runs[(solver, steps, tol, "exact")]
    lines = [
        "",
        f"**Diagnosis of {solver} at {level_label(steps, tol)}** (paired reruns: the same x_T and the same noise "
        "as the table's run):",
        "",
        "| run | NFE (learned) | KS/crit (learned) | KS/crit (exact) |",
        "|---|---|---|---|",
        f"| as in the table | {learned.nfe} | {learned.ks_ratio:.2f} | {exact.ks_ratio:.2f} |",
    ]
    names = {
        "corrector=None": "without the corrector (`corrector=None`)",
        "learned below t_low": f"learned score for t <= {t_low:.3g} (sigma/alpha <= {r_low:.3g}), exact above",
    }
    text: list[str] = []
    corrector_made_it = False
    for v in check["variants"]:
        lv, ev = v["learned"], v.get("exact")
        cells = [
            fmt(lv.get("nfe"), "d") if "error" not in lv else "—",
            fmt(lv.get("ks_ratio")) if "error" not in lv else "failed",
            "—" if ev is None else (fmt(ev.get("ks_ratio")) if "error" not in ev else "failed"),
        ]
        lines.append(f"| {names.get(v['name'], v['name'])} | " + " | ".join(cells) + " |")
        if "error" in lv:
            continue
        if v["name"] == "corrector=None":
            corrector_made_it = lv["ks_ratio"] < learned.ks_ratio
            text.append(_without_corrector_text(lv, learned))
        elif v["name"] == "learned below t_low":
            text.append(_low_noise_text(lv["ks_ratio"], learned, exact, t_low))
    weights = check.get("weights")
    if weights:
        lines += _weights_lines(rep, solver, weights, t_low)
        w = next((w for w in weights if w["steps"] == steps), None)
        if w is not None and w["predictor"] > 0:
            text.append(_weights_text(w, steps, t_low, exact, corrector_made_it))
    if text:
        lines += ["", " ".join(text)]
    return lines


def _without_corrector_text(lv: dict, learned: SampleRun) -> str:
    """What the rerun without the Langevin corrector says about the corrector."""
    k = lv["ks_ratio"]
    if k <= 1.0:
        return (
            f"Without the Langevin corrector the learned model is indistinguishable from p_eps ({k:.2f} "
            f"at {lv['nfe']} NFE, against {learned.ks_ratio:.2f} with it): the corrector makes this "
            "outlier."
        )
    if k < learned.ks_ratio:
        return (
            f"Without the Langevin corrector the learned model improves from {learned.ks_ratio:.2f} to "
            f"{k:.2f}: the corrector makes part of the excess."
        )
    return (
        f"Without the Langevin corrector the learned model measures {k:.2f} (with it "
        f"{learned.ks_ratio:.2f}): the corrector is not the cause."
    )


def _low_noise_text(k: float, learned: SampleRun, exact: SampleRun, t_low: float) -> str:
    """What the rerun with the learned score only at low noise says about where the error comes from."""
    share = max(0.0, (k - exact.ks_ratio) / (learned.ks_ratio - exact.ks_ratio))  # < 0: sampling noise
    return (
        f"With the learned score only for t <= {t_low:.3g} and the exact score above, the run measures "
        f"{k:.2f}: the learned score at that low-noise end alone makes {share:.0%} of the learned "
        f"model's excess over the exact score ({learned.ks_ratio:.2f} − {exact.ks_ratio:.2f})"
        + (f", the learned score above t = {t_low:.3g} the rest." if share < 0.5 else ".")
    )


def _weights_lines(rep: DemoReport, solver: str, weights: list[dict], t_low: float) -> list[str]:
    """The table of how far the predictor and the corrector move x along the score at low noise, per level."""
    ks = {(r.steps, r.model): r.ks_ratio for r in rep.runs if r.solver == solver and r.error is None}
    lines = [
        "",
        f"How far each part of {solver} moves x along the score over the grid steps that start at "
        f"t <= {t_low:.3g}: the predictor by g² Δt · s, the Langevin corrector by ε · s with "
        "ε = 2 (snr ‖z‖/‖s‖)² (score_sde's rule, evaluated with the exact score):",
        "",
        "| steps | grid steps at low noise | predictor Σ g² Δt | corrector Σ ε | KS/crit (learned) | KS/crit (exact) |",
        "|---|---|---|---|---|---|",
    ]
    for w in weights:
        lines.append(
            f"| {w['steps']} | {w['grid_steps']} | {w['predictor']:.2g} | {w['corrector']:.2g} "
            f"| {fmt(ks.get((w['steps'], 'learned')))} | {fmt(ks.get((w['steps'], 'exact')))} |"
        )
    return lines


def _weights_text(w: dict, steps: int, t_low: float, exact: SampleRun, corrector_made_it: bool) -> str:
    """The corrector's weight against the predictor's at the outlier level, and why it matters."""
    ratio = w["corrector"] / w["predictor"]
    why = ""
    if ratio > 1 and corrector_made_it:
        why = (
            ": at low noise the corrector, not the predictor, moves the samples, along the learned "
            "score where its error is largest (with the exact score the corrector's run measures "
            f"{exact.ks_ratio:.2f})"
        )
    return (
        f"Over the {w['grid_steps']} grid steps at t <= {t_low:.3g} of the {steps}-step run, the "
        f"corrector's steps (snr = {w['snr']:g}, a size set by the score's norm, not by Δt) add up to "
        f"{w['corrector']:.2g}, {ratio:{'.2g' if ratio < 10 else '.0f'}} times the predictor's "
        f"{w['predictor']:.2g}{why}."
    )
