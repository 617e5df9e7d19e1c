"""``sdekit demo``: one quick run end to end (its report's numbers against exact answers), and bad options.

The quick run (``sdekit demo --quick --seed 0``) is made once for the module. Its numbers are checked
against what theory says they must be:

* exact-score samples: the sliced KS statistic of every solver's finest level is within the noise floor
  of n = 4,000 samples (D <= D_crit at family-wise level alpha = 1e-3 over 16 directions, per run);
* exact-score likelihood: the PF-ODE log-density differs from the exact one by solver error only;
* learned-model likelihood: the mean gap (an estimate of KL(p_eps || model) >= 0) is at most half the KL
  of the best single Gaussian, i.e. the network learned the multimodal structure, not only two moments.
"""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch

from sdekit import _demo
from sdekit.cli import main

SEED = 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    code = main(["demo", "--quick", "--out", str(out), "--seed", str(SEED)])
    report = json.loads((out / "report.json").read_text())
    return code, out, report


def _finest(report: dict, model: str) -> dict[str, dict]:
    """The last (finest) successful run of each solver for one model."""
    out: dict[str, dict] = {}
    for r in report["runs"]:
        if r["model"] == model and r["error"] is None:
            out[r["solver"]] = r
    return out


def test_quick_run_writes_report_and_plots(quick):
    code, out, report = quick
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
    _, _, report = quick
    n, k, alpha = report["n_samples"], report["ks_directions"], report["ks_alpha"]
    assert report["ks_critical"] == pytest.approx(math.sqrt(-math.log(alpha / (2 * k)) / 2) / math.sqrt(n), rel=1e-12)


def test_exact_score_samples_within_noise_floor(quick):
    # n = 4,000 samples per run, 16 directions, family-wise level alpha = 1e-3 per run: under the null (the
    # solver's law equals p_eps) each of the 5 checks fails with probability <= 1e-3, and the seed is fixed.
    # Discretisation error at each ladder's finest level is far below the floor at this n (TESTING.md:
    # reverse Euler-Maruyama with 20 uniform steps already passes at n = 4,000; the finest levels here are
    # 100 Euler steps, srk and dopri5 at tolerance <= 1e-2, 50 exp2 steps, 60 pc steps; over seeds 0-9 the
    # exact-score ratios at 20 exp2 and 30 pc steps already stayed below 0.9).
    _, _, report = quick
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
    _, _, report = quick
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
    _, _, report = quick
    exact = report["logp"]["exact"]
    assert exact["gap_abs_max"] < 3e-3
    assert abs(exact["gap_mean"]) < 3e-3


def test_learned_model_logp_gap(quick):
    # The mean gap E[log p_eps - log p_model] over n = 300 held-out draws of p_eps estimates
    # KL(p_eps || model) >= 0. Bounds: not significantly negative (4 standard errors), and at most half the
    # KL of the best single Gaussian (exact mean and covariance of p_eps, ~1.5 nats here), which is the best
    # a model that learned only two moments can do; a network that separated the three components is far
    # below that.
    _, _, report = quick
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

    _, _, report = quick
    p_eps = GaussianMixture(_demo.MEANS, _demo.STDS, _demo.WEIGHTS).diffuse(VPSDE()).at(report["eps"])
    gauss = Gaussian(p_eps.mean(), cov=p_eps.covariance())
    x = gauss.sample(report["n_samples"], torch.Generator().manual_seed(1))
    ref = sliced_ks(x, p_eps, random_directions(2, report["ks_directions"], seed=SEED), alpha=report["ks_alpha"])
    assert ref.ratio > 5
    for solver, r in _finest(report, "learned").items():
        assert r["ks_ratio"] < 0.5 * ref.ratio, solver


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
