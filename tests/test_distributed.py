"""``distributed=True`` of sdekit.sample and sdekit.logp on 2 CPU processes (gloo), compared bit for bit with one
process (sdekit/_distributed.py, docs/distributed.md).

One spawn of 2 ranks runs every scenario (:func:`_worker`) and saves each rank's results; the tests compare them
with the same calls made here in one process. Equality is exact: the ranks solve the same chunks with the same
random numbers (per-block streams, base seed broadcast from rank 0) as one process, so only the gather moves bits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import sdekit
from sdekit._distributed import default_chunk_size, plan_chunks
from sdekit.analytic import GaussianMixture

WORLD = 2


def _model() -> tuple[Any, Any]:
    sde = sdekit.VPSDE()
    return GaussianMixture([[-1.0, 0.5], [1.5, -0.5]], [0.4, 0.6]).diffuse(sde), sde


def _uneven() -> tuple[Any, Any, torch.Tensor]:
    """A narrow mixture and rows whose adaptive logp costs ~6x more in the second half (measured: 63 vs 381
    evaluations for 4 rows each) so that rank 1 takes many more dopri5 steps than rank 0."""
    sde = sdekit.VPSDE()
    model = GaussianMixture(means=[[-1.0, 0.5], [1.5, -0.5]], weights=[0.4, 0.6], stds=0.1).diffuse(sde)
    g = torch.Generator().manual_seed(1)
    easy = torch.randn(2, 2, generator=g, dtype=torch.float64) * 0.02 + torch.tensor([1.5, -0.5], dtype=torch.float64)
    hard = torch.randn(2, 2, generator=g, dtype=torch.float64) * 0.3 + torch.tensor([0.25, 0.0], dtype=torch.float64)
    return model, sde, torch.cat([easy, hard])


def _data() -> torch.Tensor:
    return torch.randn(10, 2, generator=torch.Generator().manual_seed(3))


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _scenarios(distributed: bool) -> dict[str, Any]:
    """The calls compared; with ``distributed`` under the group, else in one process with the same chunk sizes."""
    model, sde = _model()
    d: dict[str, Any] = {"distributed": True} if distributed else {}
    out: dict[str, Any] = {}
    out["euler"] = sdekit.sample(
        model, sde, (10, 2), solver="euler", steps=8, chunk_size=3, generator=_gen(), return_info=True, **d
    )
    out["path"] = sdekit.sample(
        model, sde, (7, 2), solver="ancestral", steps=6, ts=[1.0, 0.5], chunk_size=2, generator=_gen(), **d
    )
    chunk = {} if distributed else {"chunk_size": default_chunk_size(9, WORLD, 2)}
    out["srk"] = sdekit.sample(model, sde, (9, 2), solver="srk", generator=_gen(), return_info=True, **chunk, **d)
    out["dopri5"] = sdekit.sample(model, sde, (9, 2), solver="dopri5", chunk_size=4, generator=_gen(), **d)
    rank0 = {"distributed": True, "gather": "rank0"} if distributed else {}
    out["rank0"] = sdekit.sample(model, sde, (5, 2), solver="euler", steps=4, chunk_size=2, generator=_gen(), **rank0)
    out["logp"] = sdekit.logp(
        model, sde, _data(), trace="hutchinson", chunk_size=4, generator=_gen(), rtol=1e-4, atol=1e-4,
        return_info=True, **d,
    )  # fmt: skip
    um, us, ux = _uneven()
    out["uneven"] = sdekit.logp(um, us, ux, chunk_size=2, return_info=True, **d)
    return out


def _worker(rank: int, directory: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{directory}/rendezvous", rank=rank, world_size=WORLD
    )
    try:
        with torch.no_grad():
            torch.save(_scenarios(True), f"{directory}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every scenario's results on each of the 2 ranks (one spawn, joined with a deadline: a hang fails)."""
    directory = tmp_path_factory.mktemp("dist")
    ctx = mp.start_processes(_worker, args=(os.fspath(directory),), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 300
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2 ranks did not finish within 300 s (a collective that waits for another?)")
    return [torch.load(directory / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    with torch.no_grad():
        return _scenarios(False)


@pytest.mark.parametrize("name", ["euler", "srk"])
def test_sample_matches_one_process(ranks: list[dict[str, Any]], single: dict[str, Any], name: str) -> None:
    x, info = single[name]
    for r in range(WORLD):
        xr, info_r = ranks[r][name]
        assert torch.equal(xr, x)  # bit-identical on every rank
        assert (info_r.nfe, info_r.steps, info_r.chunks) == (info.nfe, info.steps, info.chunks)  # totals over ranks


def test_adaptive_and_path_match(ranks: list[dict[str, Any]], single: dict[str, Any]) -> None:
    for r in range(WORLD):
        assert torch.equal(ranks[r]["dopri5"], single["dopri5"])
        x, path = ranks[r]["path"]
        assert torch.equal(x, single["path"][0]) and torch.equal(path, single["path"][1])  # path: rows on dim 1


def test_gather_rank0(ranks: list[dict[str, Any]], single: dict[str, Any]) -> None:
    assert torch.equal(ranks[0]["rank0"], single["rank0"])
    assert ranks[1]["rank0"] is None


def test_logp_hutchinson_matches(ranks: list[dict[str, Any]], single: dict[str, Any]) -> None:
    lp, info = single["logp"]
    for r in range(WORLD):
        lp_r, info_r = ranks[r]["logp"]
        assert (
            torch.equal(lp_r, lp) and torch.equal(info_r.z, info.z) and torch.equal(info_r.delta_logp, info.delta_logp)
        )
        assert info_r.nfe == info.nfe + (WORLD - 1)  # + one input-check call per extra rank
        assert info_r.chunks == info.chunks == 3


def test_uneven_adaptive_steps_finish_and_match(ranks: list[dict[str, Any]], single: dict[str, Any]) -> None:
    """Rank 1's chunk needs several times rank 0's evaluations: no collective inside a solve, so both finish."""
    um, us, ux = _uneven()
    with torch.no_grad():
        _, easy = sdekit.logp(um, us, ux[:2], return_info=True)
        _, hard = sdekit.logp(um, us, ux[2:], return_info=True)
    assert hard.nfe > 3 * easy.nfe  # the premise: very different step counts per rank
    lp, info = single["uneven"]
    for r in range(WORLD):
        assert torch.equal(ranks[r]["uneven"][0], lp)
        assert ranks[r]["uneven"][1].nfe == info.nfe + (WORLD - 1)


def test_plan_and_errors() -> None:
    assert default_chunk_size(9, 2, 2) == 5  # below one random block (32,768 rows of 2-D points): an even split
    assert default_chunk_size(100_000, 2, 2) == 65_536  # whole blocks: 50,000 rounded up to 2 x 32,768
    plan, size = plan_chunks(False, "all", 10, 3, 2)
    assert size == 3 and plan.mine == [0, 1, 2, 3] and not plan.distributed
    model, sde = _model()
    with pytest.raises(RuntimeError, match="init_process_group"):
        sdekit.sample(model, sde, (4, 2), solver="euler", steps=2, distributed=True)
    with pytest.raises(ValueError, match="needs distributed=True"):
        sdekit.logp(model, sde, _data(), gather="rank0")
    with pytest.raises(ValueError, match="'all'"):
        sdekit.sample(model, sde, (4, 2), solver="euler", steps=2, gather="rank1")


def test_world_of_one_runs_locally(tmp_path: Path) -> None:
    """distributed=True under a group of one rank is the plain call."""
    model, sde = _model()
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/rv", rank=0, world_size=1)
    try:
        x = sdekit.sample(model, sde, (6, 2), solver="euler", steps=3, generator=_gen(), distributed=True)
    finally:
        torch.distributed.destroy_process_group()
    assert torch.equal(x, sdekit.sample(model, sde, (6, 2), solver="euler", steps=3, generator=_gen()))


# --------------------------------------------------------------------------- sdekit logp under torchrun
TESTS = Path(__file__).resolve().parent
CLI = ["--model", "_cli_models:model", "--sde", "_cli_models:SDE", "--no-progress", "--trace", "hutchinson"]


def _torchrun(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node 2 -m sdekit logp ...`` (standalone: a free local rendezvous port)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.fspath(TESTS), os.environ.get("PYTHONPATH", "")])}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [os.fspath(torchrun), "--standalone", f"--nproc-per-node={WORLD}", "-m", "sdekit", "logp", *CLI]
    return subprocess.run([*cmd, *map(str, argv)], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # two torchrun launches of 2 processes: ~30 s on 2 shared cores
def test_cli_sharded_by_rank_writes_the_single_process_file_and_resumes(tmp_path: Path) -> None:
    """2 ranks deal the 4 chunks (adaptive dopri5, Hutchinson probes seeded per chunk) and rank 0 writes the same
    bytes as one process; deleting two finished chunks and rerunning recomputes exactly those."""
    from sdekit.cli import main  # lazy: the CLI only for this test

    sys.path.insert(0, os.fspath(TESTS))
    import _cli_models  # lazy: the models of tests/test_logp_cli.py, importable from tests/

    x = _cli_models.MIXTURE.sample(20, generator=torch.Generator().manual_seed(0)).double().numpy()
    np.save(tmp_path / "x.npy", x)
    args = ("--data", tmp_path / "x.npy", "--chunk-size", 6, "--seed", 3, "--rtol", 1e-4, "--atol", 1e-4)
    assert main(["logp", *CLI, *map(str, args), "--out", str(tmp_path / "one.npy")]) == 0
    run = _torchrun(*args, "--out", tmp_path / "two.npy", "--keep-parts")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "two.npy").read_bytes() == (tmp_path / "one.npy").read_bytes()
    assert run.stdout.count("20 rows") == 1 and "computed 4 chunk(s)" in run.stdout  # rank 0 reports the total
    for index in (1, 2):
        (tmp_path / "two.npy.parts" / f"chunk-00000{index}.npy").unlink()
    run = _torchrun(*args, "--out", tmp_path / "two.npy")
    assert run.returncode == 0, run.stderr
    assert "computed 2 chunk(s)" in run.stdout and "2 chunk(s) were already done" in run.stdout
    assert (tmp_path / "two.npy").read_bytes() == (tmp_path / "one.npy").read_bytes()
    assert not (tmp_path / "two.npy.parts").exists()
