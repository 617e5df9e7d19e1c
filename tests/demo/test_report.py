"""The demo's headline on stdout and its outlier list, recomputed from the quick run's report.json (no extra
run), and the outlier definition on made-up runs."""

from __future__ import annotations

import re

import pytest

from sdekit.demo import _diagnose, _results


def _ok_runs(report: dict, model: str) -> list[dict]:
    """Successful runs of one model whose samples are indistinguishable from p_eps (KS/crit <= 1)."""
    return [r for r in report["runs"] if r["model"] == model and r["error"] is None and r["ks_ratio"] <= 1.0]


def _number(text: str) -> float:
    return float(text.rstrip(");,"))


def test_terminal_summary_matches_report(quick):
    # The demo's last stdout lines are its headline: recomputed here from report.json (fewest NFE with
    # KS/crit <= 1 per model, overall and per solver, ties to the lower ratio) and compared.
    report = quick.report
    lines = quick.stdout.strip().splitlines()
    assert lines[0].startswith("sdekit demo: VPSDE(") and f"n = {report['n_samples']:,}" in lines[0]
    assert lines[-1].strip() == f"report: {quick.out / 'report.md'} ({report['seconds']['total']:.0f} s)"
    solvers = list(dict.fromkeys(r["solver"] for r in report["runs"]))
    for model, label in (("learned", "learned model:"), ("exact", "exact score:")):
        (line,) = [ln for ln in lines if ln.strip().startswith(label)]
        ok = _ok_runs(report, model)
        assert ok, model  # the quick run's finest levels reach the floor (test_exact_score_samples_...)
        best = min(ok, key=lambda r: (r["nfe"], r["ks_ratio"]))
        level = f"{best['steps']} steps" if best["steps"] is not None else "tol "
        assert f"fewest NFE with KS/crit <= 1: {best['nfe']} ({best['solver']}, {level}" in line, line
        entries = line.split("per solver: ")[1].split(", ")
        assert [e.split(" ")[0] for e in entries] == solvers
        for solver, entry in zip(solvers, entries):
            nfes = [r["nfe"] for r in ok if r["solver"] == solver]
            assert entry.split(" ")[1] == (str(min(nfes)) if nfes else "none"), (model, entry)
    (line,) = [ln for ln in lines if "likelihood gap" in ln]
    lp = report["logp"]
    # printed with 3 decimals (gaps >= 0.01 nats) or 2 significant digits: within rounding of report.json
    for label, kind in (
        ("learned", "learned"),
        ("exact score", "exact"),
        ("best single Gaussian", "gaussian_baseline"),
    ):
        m = re.search(re.escape(label) + r" (\S+) ± (\S+)", line)
        assert m, (label, line)
        assert _number(m[1]) == pytest.approx(lp[kind]["gap_mean"], rel=0.05, abs=5e-4)
        assert _number(m[2]) == pytest.approx(lp[kind]["gap_se"], rel=0.05, abs=5e-4)
    m = re.search(r"max \|gap\| (\S+)", line)
    assert _number(m[1]) == pytest.approx(lp["exact"]["gap_abs_max"], rel=0.05)
    # the report quotes the same summary (all lines but the path)
    assert "\n".join(lines[:-1]) in (quick.out / "report.md").read_text()


def _outlier_levels(report: dict) -> list[tuple]:
    """The outlier definition of the report, applied to report.json's runs."""
    runs = [r for r in report["runs"] if r["error"] is None]
    found = []
    for lr in runs:
        if lr["model"] != "learned":
            continue
        (ex,) = [
            r
            for r in runs
            if r["model"] == "exact" and (r["solver"], r["steps"], r["tol"]) == (lr["solver"], lr["steps"], lr["tol"])
        ]
        cheaper = [
            r
            for r in runs
            if r["model"] == "learned" and r["solver"] != lr["solver"] and r["nfe"] <= lr["nfe"] and r["ks_ratio"] <= 1
        ]
        if lr["ks_ratio"] > 1 >= ex["ks_ratio"] and cheaper:
            found.append((lr["solver"], lr["steps"], lr["tol"]))
    return found


def test_outliers_follow_their_definition(quick):
    report = quick.report
    diag = report["diagnostics"]
    levels = _outlier_levels(report)
    assert [(o["solver"], o["steps"], o["tol"]) for o in diag["outliers"]] == levels
    (line,) = [ln for ln in quick.stdout.splitlines() if ln.strip().startswith("outliers")]
    md = (quick.out / "report.md").read_text()
    assert "### Outliers" in md
    if not levels:
        assert line.endswith(": none")
        return
    for solver, steps, tol in levels:
        label = f"{steps} steps" if steps is not None else f"tol {_results.tol_label(tol)}"
        assert solver in line and label in line, line
        assert f"**{solver}, {label}**" in md
    # one paired diagnosis per outlier solver, at its finest outlier level
    finest = {}
    for solver, steps, tol in levels:
        finest[solver] = (steps, tol)
    assert {c["solver"]: (c["steps"], c["tol"]) for c in diag["checks"]} == finest
    for check in diag["checks"]:
        table = {
            r["model"]: r
            for r in report["runs"]
            if (r["solver"], r["steps"], r["tol"]) == (check["solver"], check["steps"], check["tol"])
        }
        variants = {v["name"]: v for v in check["variants"]}
        split = variants["learned below t_low"]["learned"]
        if check["steps"] is not None:  # same solver and options: the same number of model calls
            assert split["nfe"] == table["learned"]["nfe"]
        if check["solver"] == "pc":
            # pc without its corrector makes one model call per step (the corrector one more per step)
            nocorr = variants["corrector=None"]
            assert nocorr["learned"]["nfe"] == nocorr["exact"]["nfe"] == check["steps"]
            assert table["learned"]["nfe"] == 2 * check["steps"]
            assert f"| {nocorr['learned']['ks_ratio']:.2f} | {nocorr['exact']['ks_ratio']:.2f} |" in md
            weights = check["weights"]
            assert [w["steps"] for w in weights] == sorted({r["steps"] for r in report["runs"] if r["solver"] == "pc"})
            assert all(w["corrector"] > 0 and w["predictor"] > 0 for w in weights)
    # the learned score's error profile runs from eps to T
    prof = diag["score_error"]
    assert prof[0]["t"] == pytest.approx(report["eps"], rel=1e-12) and prof[-1]["t"] == pytest.approx(1.0, rel=1e-12)
    assert all(p["rel_rms"] > 0 for p in prof)


def test_outlier_definition_on_made_up_runs():
    run = _results.SampleRun
    runs = [
        run("pc", "learned", 30, None, nfe=60, ks_ratio=1.5),
        run("pc", "exact", 30, None, nfe=60, ks_ratio=0.8),
        run("euler", "learned", 100, None, nfe=100, ks_ratio=0.9),  # more NFE than pc 30: not a witness
        run("euler", "exact", 100, None, nfe=100, ks_ratio=0.5),
        run("ode:dopri5", "learned", None, 1e-3, nfe=50, ks_ratio=0.95),
        run("ode:dopri5", "exact", None, 1e-3, nfe=44, ks_ratio=0.6),
        run("exp2", "learned", 5, None, nfe=5, ks_ratio=3.0),  # exact > 1 too: discretisation, not the model
        run("exp2", "exact", 5, None, nfe=5, ks_ratio=2.0),
        run("srk", "learned", None, 0.1, nfe=40, ks_ratio=1.2),  # no solver reaches <= 1 with <= 40 NFE
        run("srk", "exact", None, 0.1, nfe=40, ks_ratio=0.7),
    ]
    (o,) = _diagnose.find_outliers(runs)
    assert (o["solver"], o["steps"], o["learned"], o["exact"]) == ("pc", 30, 1.5, 0.8)
    assert [b["solver"] for b in o["better"]] == ["ode:dopri5"]
