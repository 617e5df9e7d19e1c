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


def _tiny(peers=True):
    cfg = fs.Config(
        n=2_000,
        nfes=(8, 12),
        seeds=(1,),
        grids=("arctan", "uniform"),
        solvers=("exp2", "exp3", "ode:rk4"),
    )
    sdes = {k: v for k, v in fs.make_sdes().items() if k in ("VESDE", "TimeVaryingOU")}
    return cfg, sdes, fs.run(sdes, cfg, peers=peers, log=None)


def test_core_run_structure_and_nfe_equal_to_targets(tmp_path):
    cfg, sdes, rows = _tiny()
    methods = list(cfg.solvers) + ([p.label for p in cfg.peers] if DIFFUSERS is not None else [])
    assert len(rows) == len(sdes) * len(methods) * len(cfg.grids) * len(cfg.seeds)
    assert {(r.sde, r.method, r.grid) for r in rows} == {(s, m, g) for s in sdes for m in methods for g in cfg.grids}
    for row in rows:
        assert row.family == ("sdekit" if row.method in cfg.solvers else "diffusers")
        assert [c.target for c in row.cells] == list(cfg.nfes)
        for cell in row.cells:
            assert cell.note in ("", "n/a"), (row.label, cell)
            if cell.note == "n/a":
                continue
            assert cell.nfe == cell.target, (row.label, cell)  # counted by the wrapper
            assert math.isfinite(cell.ratio) and cell.ratio > 0
    exp3 = next(r for r in rows if r.method == "exp3")
    assert exp3.default_grid == "arctan" and all(c.nfe == c.target for c in exp3.cells)  # 7 and 11 steps + 2S start
    rk4 = next(r for r in rows if r.method == "ode:rk4")
    assert [c.note for c in rk4.cells] == ["", ""]  # 2 and 3 steps of 4 evaluations
    if DIFFUSERS is not None:
        assert next(r for r in rows if r.family == "diffusers").default_grid == fs.PEER_DEFAULT_GRID

    text = fs.report(rows, None, cfg, 1.0, "")
    for sde in sdes:
        assert f"**{sde}, default and best grid**" in text and f"**{sde}, every grid**" in text
        assert (f"**{sde}, head to head**" in text) == (DIFFUSERS is not None)
    best = fs.best_grids(rows)
    assert set(best) == {(s, m) for s in sdes for m in methods} and set(best.values()) <= set(cfg.grids)

    fs.save_json(tmp_path / "new" / "part.json", rows, [], cfg, 1.0, "note")  # creates the folder
    back, orders, cfg2, wall, note = fs.load_json(tmp_path / "new" / "part.json")
    assert back == rows and orders == [] and cfg2.nfes == cfg.nfes and (wall, note) == (1.0, "note")


def test_peers_are_skipped_without_diffusers(monkeypatch):
    monkeypatch.setattr(fs, "diffusers_or_none", lambda: None)
    cfg = fs.Config(n=2_000, nfes=(8, 12), seeds=(1,), grids=("logsnr",), solvers=("exp2",))
    rows = fs.run({"VPSDE": sdekit.VPSDE()}, cfg, log=None)
    assert [r.family for r in rows] == ["sdekit"]
    assert fs.measure_orders(nfes=(8, 16), peers=True)[-1].method == "sdekit exp3"


def test_order_check_uses_the_exact_endpoint():
    rows = fs.measure_orders(nfes=(16, 32), peers=DIFFUSERS is not None)
    by = {r.method: r for r in rows}
    assert by["sdekit exp3"].errors[1] < by["sdekit exp3"].errors[0] < 0.1
    if DIFFUSERS is not None:
        assert {p.label for p in fs.PEERS} | {fs.DOUBLED_D2} <= set(by)
        for r in rows:
            assert len(r.errors) == 2 and r.errors[1] < r.errors[0]
