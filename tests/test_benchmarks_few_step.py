"""benchmarks/few_step.py: the peers' VP view of an affine SDE, NFE accounting, and the result structure (tiny n)."""

from __future__ import annotations

import math

import pytest
import torch

import sdekit
from benchmarks import few_step as fs
from sdekit import analytic

DIFFUSERS = fs.diffusers_or_none()
needs_diffusers = pytest.mark.skipif(DIFFUSERS is None, reason="diffusers not installed (pip install 'sdekit[bench]')")

TIMES = torch.tensor([1.0, 0.7, 0.3, 0.05, 1e-3], dtype=torch.float64)


def test_ve_to_vp_view_is_the_scaled_process():
    sde = sdekit.VESDE()
    view = fs.vp_view(sde, TIMES)
    sigma = sde.marginal.sigma(TIMES)
    # closed forms of the VP view of VE (float64 round-off)
    torch.testing.assert_close(view.scale, torch.sqrt(1 + sigma**2), rtol=1e-12, atol=0)
    torch.testing.assert_close(view.alpha_vp, 1 / torch.sqrt(1 + sigma**2), rtol=1e-12, atol=0)
    torch.testing.assert_close(view.sigma_vp, sigma / torch.sqrt(1 + sigma**2), rtol=1e-12, atol=0)
    torch.testing.assert_close(view.r, sigma, rtol=1e-12, atol=0)  # diffusers' sigma = noise-to-signal ratio
    torch.testing.assert_close(view.alpha_vp**2 + view.sigma_vp**2, torch.ones_like(TIMES), rtol=1e-12, atol=0)
    x_ve = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 10
    for i in range(len(TIMES)):
        x_vp = view.to_vp(x_ve, i)
        torch.testing.assert_close(x_vp / view.alpha_vp[i], x_ve, rtol=1e-12, atol=1e-12)  # x_VP / alpha_VP = x_VE
        torch.testing.assert_close(view.from_vp(x_vp, i), x_ve, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["VESDE", "TimeVaryingOU", "VPSDE"])
def test_eps_model_is_minus_sigma_score_and_the_vp_views_noise(name):
    sde = fs.make_sdes()[name]
    oracle = fs.oracle_for(sde)
    eps_model = fs.EpsModel(oracle, sde)
    data = oracle.data
    for t in (0.9, 0.2, 0.01):
        view = fs.vp_view(sde, t)
        x = oracle.sample(256, t, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        x_vp = view.to_vp(x, 0)
        eps = eps_model(x_vp, torch.tensor(t * fs.TIMESTEPS / sde.T, dtype=torch.float64))
        torch.testing.assert_close(eps, -view.sigma[0] * oracle.score(x, t), rtol=1e-10, atol=1e-10)
        # independently: the exact law of x_VP is the mixture with means alpha_VP mu_k (offsets vanish after the
        # shift) and variances alpha_VP^2 s_k^2 + sigma_VP^2, and eps = -sigma_VP * its score
        a, s = view.alpha_vp[0], view.sigma_vp[0]
        var0 = data.covariances.diagonal(dim1=1, dim2=2)  # (K, d): the data's own (float32-rounded) variances
        vp_law = analytic.GaussianMixture(a * data.means, torch.sqrt(a**2 * var0 + s**2), data.weights)
        torch.testing.assert_close(eps, -s * vp_law.score(x_vp), rtol=1e-9, atol=1e-9)


def test_vp_beta_table_of_vpsde_is_its_discretization():
    sde = sdekit.VPSDE()
    torch.testing.assert_close(
        fs.vp_betas(sde), sde.discretize(fs.TIMESTEPS).betas.to(torch.float64), rtol=1e-10, atol=1e-14
    )


@needs_diffusers
@pytest.mark.parametrize("name", ["VPSDE", "VESDE", "TimeVaryingOU"])
def test_schedulers_own_sigmas_are_the_noise_to_signal_ratio(name):
    sde = fs.make_sdes()[name]
    scheduler = fs.make_scheduler(fs.PEERS[0], sde, DIFFUSERS)
    t = torch.arange(1, fs.TIMESTEPS + 1, dtype=torch.float64) * sde.T / fs.TIMESTEPS  # table index k: t_{k+1}
    # diffusers keeps its table in float32 (cumulative product of 1000 float32 factors): relative 5e-3
    torch.testing.assert_close(scheduler.sigmas.double(), fs.vp_view(sde, t).r, rtol=5e-3, atol=0)


@needs_diffusers
@pytest.mark.parametrize("name", ["VESDE", "TimeVaryingOU"])
def test_mapped_peers_reproduce_sdekits_ddim_and_2m_heun(name):
    """Through the VP view, diffusers' first-order DPM-Solver++ (DDIM) and 2M with solver_type="heun" are sdekit's
    exp1 and exp2 on the same grid, to the peers' float32 round-off (their update runs in float32)."""
    sde = fs.make_sdes()[name]
    oracle = fs.oracle_for(sde)
    x_T = oracle.at(sde.T).sample(2_000, generator=torch.Generator().manual_seed(3))
    times = fs.time_grid(sde, float(sde.T), float(sde.default_eps), 8, "logsnr")
    for solver, extra in (("exp1", (("solver_order", 1),)), ("exp2", (("solver_order", 2), ("solver_type", "heun")))):
        ours = sdekit.sample(oracle, sde, x_T.shape, solver=solver, steps=8, x_T=x_T, denoise=False, grid="logsnr")
        peer = fs.Peer("p", "DPMSolverMultistepScheduler", (("algorithm_type", "dpmsolver++"), *extra))
        theirs = fs.run_peer(fs.make_scheduler(peer, sde, DIFFUSERS), sde, oracle, x_T, times)
        assert float((ours - theirs).abs().max()) < 1e-4 * float(ours.abs().max()), solver


def test_method_labels_and_the_list_follow_the_registry(monkeypatch):
    assert fs.method_label("unipc", {"order": 2, "variant": "bh2"}) == "unipc-2 bh2"
    assert fs.method_label("unipc", {"order": 3, "variant": "bh1", "corrector": False}) == "unipc-3 bh1 corrector=False"
    registry = sdekit.solvers.available()
    methods = fs.sdekit_methods(None)
    auto = {k for k, v in registry.items() if v.kind == "ode" and v.steps_are_nfe and v.can_sample}
    assert {"exp1", "exp2", "exp3", "ode:midpoint", "ode:rk4"} <= {m.label for m in methods}
    assert {m.solver for m in methods} >= auto | ({"unipc"} & set(registry))  # every option set accepted
    # an unregistered name and an option set a solver does not accept are skipped, and said so
    monkeypatch.setattr(fs, "CANDIDATES", ("exp2", "no-such-solver"))
    monkeypatch.setattr(fs, "OPTION_VARIANTS", {"exp2": ({"lower_order_final": False}, {"order": 9})})
    said = []
    methods = {m.label: m for m in fs.sdekit_methods(said.append)}
    assert "exp2 lower_order_final=False" in methods and "exp2-9" not in methods
    assert methods["exp2 lower_order_final=False"].options == (("lower_order_final", False),)
    assert any("no-such-solver" in s for s in said) and any("order" in s for s in said)
    # grids are read at run time
    monkeypatch.setattr(fs._grids, "GRIDS", ("uniform", "logsnr", "new-kind"))
    assert fs.Config().resolved(peers=False, log=None).grids == ("uniform", "logsnr", "new-kind")


def _tiny(peers=True):
    registry = sdekit.solvers.available()
    methods = [m for m in fs.sdekit_methods(None) if m.label in ("exp2", "exp3", "ode:rk4")]
    if peers and DIFFUSERS is not None:
        methods += fs.peer_methods(fs.PEERS[:2])
    cfg = fs.Config(
        nfes=(8, 12), n_sweep=2_000, n_final=3_000, final_seeds=(1, 2), final_top=1, grids=("arctan", "uniform"),
        peer_grids=("uniform",), methods=tuple(methods),
    )  # fmt: skip
    assert registry["exp3"].steps_are_nfe and not registry["ode:rk4"].steps_are_nfe
    return cfg, ["VESDE", "TimeVaryingOU"], fs.run(["VESDE", "TimeVaryingOU"], cfg, log=None)


def test_two_stages_nfe_equal_to_targets_report_and_json(tmp_path):
    cfg, sdes, rows = _tiny()
    methods = [m.label for m in cfg.methods]
    sweep = [r for r in rows if r.stage == "sweep"]
    expected = {
        (s, m.label, g)
        for s in sdes
        for m in cfg.methods
        for g in (cfg.grids if m.family == "sdekit" else cfg.peer_grids)
    }
    assert {(r.sde, r.method, r.grid) for r in sweep} == expected and len(sweep) == len(expected)
    for row in rows:
        assert row.family == ("sdekit" if row.method in ("exp2", "exp3", "ode:rk4") else "diffusers")
        assert row.n == (cfg.n_sweep if row.stage == "sweep" else cfg.n_final)
        for cell in row.cells:
            assert cell.note in ("", "n/a"), (row.label, cell)
            if cell.note == "n/a":
                continue
            assert cell.nfe == cell.target, (row.label, cell)  # counted by the wrapper: steps = NFE for exp2/exp3
            assert math.isfinite(cell.ratio) and cell.ratio > 0
    rk4 = next(r for r in sweep if r.method == "ode:rk4")
    assert [c.note for c in rk4.cells] == ["", ""]  # 2 and 3 steps of 4 evaluations
    assert next(r for r in sweep if r.method == "exp3").default_grid == "arctan"
    # final stage: per SDE and NFE the best (method, grid) of each family in the sweep, every final seed
    final = [r for r in rows if r.stage == "final"]
    families = {"sdekit"} | ({"diffusers"} if DIFFUSERS is not None else set())
    for sde in sdes:
        for nfe in cfg.nfes:
            contenders = [r for r in final if r.sde == sde and r.cell(nfe) is not None]
            assert {r.family for r in contenders} == families
            assert sorted(r.seed for r in contenders) == sorted(list(cfg.final_seeds) * len(families))
            best = min(
                (r for r in sweep if r.sde == sde and r.family == "sdekit" and r.cell(nfe).ratio),
                key=lambda r: r.cell(nfe).ratio,
            )
            assert any((r.method, r.grid) == (best.method, best.grid) for r in contenders)

    settings = {
        "n": [cfg.n_sweep, cfg.n_final], "nfes": list(cfg.nfes), "sweep_seeds": [1], "final_seeds": [1, 2],
        "final_top": 1, "grids": list(cfg.grids), "peer_grids": ["uniform"], "jobs": 1, "peers_note": "", "wall": 1.0,
    }  # fmt: skip
    text = fs.write_results(rows, [], settings, tmp_path / "new" / "few_step")  # creates the folder
    for sde in sdes:
        assert f"**{sde}, head to head**" in text and f"**{sde}, every grid** (sweep)" in text
    assert (tmp_path / "new" / "few_step.png").stat().st_size > 0
    settings2, back, orders = fs.load_json(tmp_path / "new" / "few_step.json")
    assert back == rows and orders == [] and settings2 == settings
    best = fs.best_grids(rows)
    assert set(best) == {(s, m) for s in sdes for m in methods} and set(best.values()) <= set(cfg.grids)


def test_peers_are_skipped_without_diffusers(monkeypatch):
    monkeypatch.setattr(fs, "diffusers_or_none", lambda: None)
    cfg = fs.Config(nfes=(8,), n_sweep=2_000, n_final=2_000, final_seeds=(1,), grids=("logsnr",)).resolved(log=None)
    assert {m.family for m in cfg.methods} == {"sdekit"}
    rows = fs.measure_orders(nfes=(8, 16), methods=[m for m in cfg.methods if m.label == "exp3"])
    assert [r.method for r in rows] == ["sdekit exp3"]


def test_order_check_uses_the_exact_endpoint():
    methods = [m for m in fs.sdekit_methods(None) if m.label == "exp3"]
    if DIFFUSERS is not None:
        methods += fs.peer_methods()
    rows = fs.measure_orders(nfes=(16, 32), methods=methods)
    by = {r.method: r for r in rows}
    assert by["sdekit exp3"].errors[1] < by["sdekit exp3"].errors[0] < 0.1 and by["sdekit exp3"].expected == 3
    if DIFFUSERS is not None:
        assert {p.label for p in fs.PEERS} | {fs.DOUBLED_D2} <= set(by)
        assert by["UniPC-2 bh2"].expected == 3 and by["DPM-Solver++(3M)"].expected == 3
        for r in rows:
            assert len(r.errors) == 2 and r.errors[1] < r.errors[0]


def test_main_quick_path_writes_report_plot_and_json(tmp_path, monkeypatch, capsys):
    """``main(quick=True)`` (what ``--quick`` runs) end to end, on a tiny stand-in for the QUICK configuration."""
    methods = [m for m in fs.sdekit_methods(None) if m.label == "exp3"]
    if DIFFUSERS is not None:
        methods += fs.peer_methods(fs.PEERS[:1])
    tiny = fs.Config(
        nfes=(8,), n_sweep=1_000, n_final=1_000, final_seeds=(1,), final_top=1, grids=("logsnr",),
        peer_grids=("logsnr",), methods=tuple(methods), order_nfes=(16, 32),
    )  # fmt: skip
    monkeypatch.setattr(fs, "QUICK", tiny)
    rows = fs.main(quick=True, sde_names=["VESDE"], jobs=1, out=tmp_path)
    assert {r.stage for r in rows} == {"sweep", "final"} and {r.sde for r in rows} == {"VESDE"}
    stem = tmp_path / "few_step_VESDE"
    text = stem.with_suffix(".md").read_text()
    assert "**Measured orders**" in text and "sdekit exp3" in text and "**VESDE, head to head**" in text
    assert stem.with_suffix(".png").exists()
    (stem.with_suffix(".md")).unlink()
    fs.cli(["--render", str(stem.with_suffix(".json"))])
    assert stem.with_suffix(".md").read_text() == text


def test_check_runs_the_named_pairs_as_the_final_stage(capsys):
    """``--check``: only the named (method, grid) pairs, at the given n, seeds and NFE (measured NFE = target)."""
    pairs = [("exp2", "optimized"), ("unipc-3 bh2", "arctan")]
    rows = fs.check(pairs, ["VESDE"], (6,), n=2_000, seeds=(1, 2), log=None)
    assert [(r.method, r.grid, r.seed, r.stage) for r in rows] == [
        ("exp2", "optimized", 1, "final"), ("exp2", "optimized", 2, "final"),
        ("unipc-3 bh2", "arctan", 1, "final"), ("unipc-3 bh2", "arctan", 2, "final"),
    ]  # fmt: skip
    assert all(r.n == 2_000 and r.cells[0].nfe == 6 and r.cells[0].ratio is not None for r in rows)
    with pytest.raises(ValueError, match="unknown method"):
        fs.check([("no-such", "uniform")], ["VESDE"], (6,), n=100, log=None)
    fs.cli(["--check", "exp2@optimized", "--sde", "VESDE", "--nfes", "5", "--jobs", "1"])
    assert "exp2" in capsys.readouterr().out
