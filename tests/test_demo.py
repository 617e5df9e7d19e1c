"""``sdekit demo``: one quick run end to end (its report's numbers against exact answers), and bad options.

The quick run (``sdekit demo --quick --seed 0``) is made once for the module. Its numbers are checked
against what theory says they must be:

* exact-score samples: the sliced KS statistic of every solver's finest level is within the noise floor
  of n = 4,000 samples (D <= D_crit at family-wise level alpha = 1e-3 over 16 directions, per run);
* exact-score likelihood: the PF-ODE log-density differs from the exact one by solver error only;
* learned-model likelihood: the mean gap (an estimate of KL(p_eps || model) >= 0) is at most half the KL
  of the best single Gaussian, i.e. the network learned the multimodal structure, not only two moments.

The same run's stdout summary, outlier list and figures are checked against its report.json (recomputed
here), so they add no test time.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from sdekit import _demo
from sdekit.cli import main

SEED = 0


class QuickRun(NamedTuple):
    code: int  # exit code of `sdekit demo --quick`
    out: Path  # its --out directory
    report: dict  # report.json
    stdout: str  # what it printed on stdout (the headline summary)


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> QuickRun:
    out = tmp_path_factory.mktemp("demo")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["demo", "--quick", "--out", str(out), "--seed", str(SEED)])
    report = json.loads((out / "report.json").read_text())
    return QuickRun(code, out, report, stdout.getvalue())


def _finest(report: dict, model: str) -> dict[str, dict]:
    """The last (finest) successful run of each solver for one model."""
    out: dict[str, dict] = {}
    for r in report["runs"]:
        if r["model"] == model and r["error"] is None:
            out[r["solver"]] = r
    return out


def test_quick_run_writes_report_and_plots(quick):
    code, out, report, _ = quick
    assert code == 0
    for name in ("report.md", "report.json", "samples.png", "error_vs_nfe.png", "trajectories.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "logp_calibration.png").stat().st_size > 0
    md = (out / "report.md").read_text()
    for part in ("Sample quality vs NFE", "Likelihood of held-out data", "Wall times", "samples.png"):
        assert part in md
    assert report["quick"] is True and report["seed"] == SEED
    assert report["n_samples"] == _demo.QUICK.n_samples
    # every default solver ran, from both models, at every level of its ladder, and none failed
    assert {r["solver"] for r in report["runs"]} == {"euler", "srk", "ode:dopri5", "exp2", "pc"}
    assert all(r["error"] is None for r in report["runs"])
    assert all(r["nfe"] >= (r["steps"] or 1) for r in report["runs"])


def test_quick_critical_value_is_the_dkw_bound(quick):
    report = quick.report
    n, k, alpha = report["n_samples"], report["ks_directions"], report["ks_alpha"]
    assert report["ks_critical"] == pytest.approx(math.sqrt(-math.log(alpha / (2 * k)) / 2) / math.sqrt(n), rel=1e-12)


def test_exact_score_samples_within_noise_floor(quick):
    # n = 4,000 samples per run, 16 directions, family-wise level alpha = 1e-3 per run: under the null (the
    # solver's law equals p_eps) each of the 5 checks fails with probability <= 1e-3, and the seed is fixed.
    # Discretisation error at each ladder's finest level is far below the floor at this n (TESTING.md:
    # reverse Euler-Maruyama with 20 uniform steps already passes at n = 4,000; the finest levels here are
    # 100 Euler steps, srk and dopri5 at tolerance <= 1e-2, 50 exp2 steps, 60 pc steps; over seeds 0-9 the
    # exact-score ratios at 20 exp2 and 30 pc steps already stayed below 0.9).
    report = quick.report
    finest = _finest(report, "exact")
    assert set(finest) == {"euler", "srk", "ode:dopri5", "exp2", "pc"}
    for solver, r in finest.items():
        assert r["ks_ratio"] <= 1.0, (solver, r)


def test_coarse_levels_are_resolved(quick):
    # The metric sees discretisation error: exp2 at 5 steps is outside the floor for the exact score. Its
    # bias, measured with n = 1e5 on a similar 3-component VP mixture (docs/benchmarks.md: 18.57 times
    # D_crit = 7.44e-3, i.e. D ~ 0.14), is ~3.8 times D_crit = 0.036 at n = 4,000, while the sampling noise
    # of D at this n is ~1/sqrt(n) ~ 0.016 (0.45 D_crit): a margin of ~6 noise levels. (Euler at 10 steps,
    # D ~ 0.060 = 1.7 D_crit, has too small a margin to assert across seeds.)
    report = quick.report
    first = {}
    for r in report["runs"]:
        if r["model"] == "exact":
            first.setdefault(r["solver"], r)
    assert first["exp2"]["steps"] == 5
    assert first["exp2"]["ks_ratio"] > 1.0


def test_exact_score_logp_is_solver_error_only(quick):
    # sdekit.logp at rtol = atol = 1e-5 with the exact p_T as prior: the only error is the ODE solver's.
    # dopri5 controls the local error per step to ~rtol |logp| + atol ~ 1e-5 * 8 + 1e-5 ~ 1e-4 for the
    # held-out values (|log p| < 8 nats), over ~20-30 accepted steps (NFE / 6): a global error below
    # 30 * 1e-4 = 3e-3 nats per sample.
    report = quick.report
    exact = report["logp"]["exact"]
    assert exact["gap_abs_max"] < 3e-3
    assert abs(exact["gap_mean"]) < 3e-3


def test_learned_model_logp_gap(quick):
    # The mean gap E[log p_eps - log p_model] over n = 300 held-out draws of p_eps estimates
    # KL(p_eps || model) >= 0. Bounds: not significantly negative (4 standard errors), and at most half the
    # KL of the best single Gaussian (exact mean and covariance of p_eps, ~1.5 nats here), which is the best
    # a model that learned only two moments can do; a network that separated the three components is far
    # below that.
    report = quick.report
    lp = report["logp"]
    learned, gauss = lp["learned"], lp["gaussian_baseline"]
    assert gauss["gap_mean"] > 1.0  # the mixture is far from Gaussian: the bound below is not vacuous
    assert learned["gap_mean"] > -4 * learned["gap_se"]
    assert learned["gap_mean"] < 0.5 * gauss["gap_mean"]


def test_learned_samples_beat_a_gaussian(quick):
    # The learned model's finest samples must be much closer to p_eps than samples of the best single
    # Gaussian (a model that learned two moments), whose KS ratio at the same n is computed here (same
    # directions and level as the demo): at most half of it, the same criterion as for the likelihood gap.
    from sdekit import VPSDE
    from sdekit._stats import random_directions, sliced_ks
    from sdekit.analytic import Gaussian, GaussianMixture

    report = quick.report
    p_eps = GaussianMixture(_demo.MEANS, _demo.STDS, _demo.WEIGHTS).diffuse(VPSDE()).at(report["eps"])
    gauss = Gaussian(p_eps.mean(), cov=p_eps.covariance())
    x = gauss.sample(report["n_samples"], torch.Generator().manual_seed(1))
    ref = sliced_ks(x, p_eps, random_directions(2, report["ks_directions"], seed=SEED), alpha=report["ks_alpha"])
    assert ref.ratio > 5
    for solver, r in _finest(report, "learned").items():
        assert r["ks_ratio"] < 0.5 * ref.ratio, solver


# --------------------------------------------------------------------------- terminal summary, figures, outliers
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
        label = f"{steps} steps" if steps is not None else f"tol {_demo._tol_label(tol)}"
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
    run = _demo.SampleRun
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
    (o,) = _demo._outliers(runs)
    assert (o["solver"], o["steps"], o["learned"], o["exact"]) == ("pc", 30, 1.5, 0.8)
    assert [b["solver"] for b in o["better"]] == ["ode:dopri5"]


def test_samples_figure_has_ticks(quick):
    from sdekit.analytic import GaussianMixture

    rep = _demo._load_report(quick.out / "report.json")
    solvers = list(dict.fromkeys(r.solver for r in rep.runs))
    x = GaussianMixture(_demo.MEANS, _demo.STDS, _demo.WEIGHTS).sample(500, torch.Generator().manual_seed(SEED))
    fig = _demo._samples_figure(rep, x, {(s, "exact"): x for s in solvers}, solvers)
    fig.canvas.draw()
    cols = len(solvers) + 1
    assert len(fig.axes) == 2 * cols
    for k, ax in enumerate(fig.axes):
        row, col = divmod(k, cols)
        for ticks, (lo, hi) in ((ax.get_xticks(), ax.get_xlim()), (ax.get_yticks(), ax.get_ylim())):
            assert sum(lo <= v <= hi for v in ticks) >= 2, (row, col)
        # labels on the outer panels (shared axes): bottom row and left column
        xlabels = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        ylabels = [t.get_text() for t in ax.get_yticklabels() if t.get_visible() and t.get_text()]
        assert (len(xlabels) >= 2) == (row == 1) and (len(ylabels) >= 2) == (col == 0), (row, col)
    finest = {(r.solver, r.model): r for r in rep.runs if r.error is None}
    for j, s in enumerate(solvers):
        assert f"KS/crit {finest[(s, 'learned')].ks_ratio:.2f}" in fig.axes[j + 1].get_title()
    _demo._pyplot().close(fig)


def test_error_figure_labels_adaptive_points_with_their_tolerance(quick):
    from matplotlib.text import Annotation

    rep = _demo._load_report(quick.out / "report.json")
    fig = _demo._error_figure(rep, list(dict.fromkeys(r.solver for r in rep.runs)))
    (ax,) = fig.axes
    labels = [(a.get_text(), tuple(a.xy)) for a in ax.texts if isinstance(a, Annotation)]
    adaptive = [(r.tol, (r.nfe, r.ks_ratio)) for r in rep.runs if r.tol is not None and r.error is None]
    assert len(adaptive) == 2 * (len(_demo.QUICK.tols) + len(_demo.QUICK.sde_tols))  # dopri5 and srk, both models
    assert all(re.fullmatch(r"\d(\.\d+)?e-\d+", text) for text, _ in labels), labels
    assert sorted((float(text), xy) for text, xy in labels) == sorted(adaptive)
    _demo._pyplot().close(fig)
    assert [_demo._tol_label(v) for v in (1e-1, 1e-3, 2.5e-4, 1e-10)] == ["1e-1", "1e-3", "2.5e-4", "1e-10"]


# --------------------------------------------------------------------------- options and errors
def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors
        return int(exc.code)


NON_AFFINE = textwrap.dedent(
    """
    import sdekit

    class Cubic(sdekit.SDE):
        def drift(self, x, t):
            return -x**3

        def diffusion(self, x, t):
            return 1

    class NotAnSDE:
        pass

    class Affine(sdekit.SDE):
        def drift(self, x, t):
            return -x

        def diffusion(self, x, t):
            return 1
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "sdekit_demo_user_sdes.py").write_text(NON_AFFINE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "sdekit_demo_user_sdes"


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--solver", "eulr"], "euler"),  # unknown solver: the close match is suggested
        (["--solver", "srk,nope"], "nope"),
        (["--sde", "vpp"], "did you mean 'vp'?"),
        (["--sde", "no_such_module_xyz:Foo"], "cannot import"),
        (["--sde", "USER:Cubic"], "not affine"),
        (["--sde", "USER:NotAnSDE"], "not a subclass"),
        (["--sde", "USER:Missing"], "no attribute"),
        (["--steps", "0,10"], "positive integers"),
        (["--steps", "ten"], "positive integers"),
        (["--device", "toaster"], "device"),
        (["--seed", "x"], "invalid int"),
        (["--bogus"], "unrecognized"),
    ],
)
def test_bad_options_exit_2_with_one_line(extra, says, user_module, tmp_path, capsys):
    out = tmp_path / "never"
    argv = ["demo", "--quick", "--out", str(out)] + [a.replace("USER", user_module) for a in extra]
    assert _run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    # options of the demo say "sdekit demo: error: ..."; arguments no subcommand knows, "sdekit: error: ..."
    assert err[0].startswith(("sdekit demo: error:", "sdekit: error:")) and says in err[0], err[0]
    assert not out.exists()  # rejected up front, before any work


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_unavailable_is_a_one_line_error(tmp_path, capsys):
    assert _run(["demo", "--device", "cuda", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]


def test_user_sde_spec_loads_an_affine_class(user_module):
    from sdekit import _demo_cli

    sde = _demo_cli._parse_sde(f"{user_module}:Affine")
    assert type(sde).__name__ == "Affine" and sde.is_affine
    assert type(_demo_cli._parse_sde("vp")).__name__ == "VPSDE"
    assert type(_demo_cli._parse_sde("CosineVPSDE")).__name__ == "CosineVPSDE"


def test_help_lists_every_option(capsys):
    assert _run(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--sde", "--solver", "--steps", "--device", "--seed", "--out", "--quick"):
        assert opt in out
    assert _run(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("sde", ["subvp", "ve", "edm"])
def test_quick_run_other_sdes(sde, tmp_path):
    # The same network and recipe for every built-in SDE (nothing per SDE in the demo). Solvers whose
    # uniform grid suits the SDE (adaptive srk and dopri5, exp2 in log-SNR) reach the noise floor with the
    # exact score; uniform-in-t Euler/pc grids are too coarse for EDM's T = 80 and are not asserted.
    assert main(["demo", "--quick", "--sde", sde, "--out", str(tmp_path), "--seed", "0", "--no-plots"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    finest = _finest(report, "exact")
    for solver in ("srk", "ode:dopri5", "exp2"):
        assert finest[solver]["ks_ratio"] <= 1.0, (sde, solver)
    lp = report["logp"]
    assert lp["exact"]["gap_abs_max"] < 3e-3
    assert -4 * lp["learned"]["gap_se"] < lp["learned"]["gap_mean"] < 0.5 * lp["gaussian_baseline"]["gap_mean"]


def test_failing_model_is_reported_not_a_crash():
    # A model with non-finite output: sdekit.sample and sdekit.logp raise ModelOutputError (checked up
    # front); the demo records the failure in its tables instead of stopping.
    from sdekit import VPSDE
    from sdekit._stats import random_directions
    from sdekit.analytic import GaussianMixture

    sde = VPSDE()
    data = GaussianMixture(_demo.MEANS, _demo.STDS, _demo.WEIGHTS)
    oracle = data.diffuse(sde)
    gen = torch.Generator().manual_seed(SEED)

    def bad(x, t):
        return torch.full_like(x, float("nan"))

    models = {"learned": (bad, "score"), "exact": (oracle, "score")}
    x_T = oracle.at(sde.T).sample(200, gen, dtype=torch.float32)
    runs, finest = _demo._sample_all(
        models, sde, ["euler"], _demo.QUICK, (5,), x_T, oracle.at(1e-3), random_directions(2, 4), 1e-3, SEED
    )
    by_model = {r.model: r for r in runs}
    assert "ModelOutputError" in by_model["learned"].error and by_model["learned"].ks_ratio is None
    assert by_model["exact"].error is None and ("euler", "learned") not in finest
    x = oracle.sample(20, 1e-3, gen, dtype=torch.float32)
    out, values = _demo._logp(models, sde, oracle, data, x, 1e-3)
    assert "ModelOutputError" in out["learned"]["error"] and bool(values["learned"].isnan().all())
    assert out["exact"]["gap_abs_max"] < 3e-3
