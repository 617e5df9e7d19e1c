"""``sdekit demo --quick --seed 0`` end to end: its report's numbers against exact answers.

The quick run (the ``quick`` fixture of this folder's conftest) is made once. Its numbers are checked
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

import pytest
import torch

from sdekit.cli import main
from sdekit.demo import _config


def _finest(report: dict, model: str) -> dict[str, dict]:
    """The last (finest) successful run of each solver for one model."""
    out: dict[str, dict] = {}
    for r in report["runs"]:
        if r["model"] == model and r["error"] is None:
            out[r["solver"]] = r
    return out


def test_quick_run_writes_report_and_plots(quick):
    code, out, report = quick.code, quick.out, quick.report
    assert code == 0
    for name in ("report.md", "report.json", "samples.png", "error_vs_nfe.png", "trajectories.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "logp_calibration.png").stat().st_size > 0
    md = (out / "report.md").read_text()
    for part in ("Sample quality vs NFE", "Likelihood of held-out data", "Wall times", "samples.png"):
        assert part in md
    assert report["quick"] is True and report["seed"] == quick.seed
    assert report["n_samples"] == _config.QUICK.n_samples
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
    p_eps = GaussianMixture(_config.MEANS, _config.STDS, _config.WEIGHTS).diffuse(VPSDE()).at(report["eps"])
    gauss = Gaussian(p_eps.mean(), cov=p_eps.covariance())
    x = gauss.sample(report["n_samples"], torch.Generator().manual_seed(1))
    ref = sliced_ks(x, p_eps, random_directions(2, report["ks_directions"], seed=quick.seed), alpha=report["ks_alpha"])
    assert ref.ratio > 5
    for solver, r in _finest(report, "learned").items():
        assert r["ks_ratio"] < 0.5 * ref.ratio, solver


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
