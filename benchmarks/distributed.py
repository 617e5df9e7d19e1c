r"""Throughput of ``sdekit.sample`` and ``sdekit.logp`` with ``distributed=True`` on 1 and 2 processes.

Workloads (float32, a small MLP score model 2 -> 128 -> 128 -> 2 with random weights, ``VPSDE()``, fixed steps so
every configuration does the same arithmetic):

* ``sample``: ``sdekit.sample(model, sde, (n, 2), solver="euler", steps=50, generator=...)``, n = 131,072
  (``--quick``: 32,768);
* ``logp``: ``sdekit.logp(model, sde, x, solver="rk4", steps=10, trace="exact")`` under ``torch.no_grad()``,
  n = 16,384 (``--quick``: 4,096).

Method: ``torchrun --standalone --nproc-per-node P`` (P = 1, 2) launches P copies of this module (``--worker``),
each with one torch thread; every rank runs each workload once to warm up, then ``repeats`` times between two
barriers, and rank 0 reports the minimum wall time (the gather included). Throughput is rows per second; the
scaling efficiency is throughput(P) / (P x throughput(1)). This machine has 2 cores shared with other jobs, so 2
processes compete with whatever else runs: the efficiency measured here is a lower bound of what 2 free cores
(or 2 GPUs) give. Run ``python -m benchmarks distributed`` (about 2 minutes; ``--quick`` about 40 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import sdekit

ROOT = Path(__file__).resolve().parents[1]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128), torch.nn.SiLU(), torch.nn.Linear(128, 2)
    )

    class Score(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.net(torch.cat([x, t[:, None]], dim=1))

    return Score().eval()


def _worker(quick: bool, repeats: int) -> None:
    torch.set_num_threads(1)
    distributed = "WORLD_SIZE" in os.environ  # under torchrun, also with one process (distributed=True then runs here)
    if distributed:
        torch.distributed.init_process_group("gloo")
    sde, model = sdekit.VPSDE(), _model()
    n_sample, n_logp = (32_768, 4_096) if quick else (131_072, 16_384)
    x = torch.randn(n_logp, 2, generator=torch.Generator().manual_seed(1))

    def run_sample() -> None:
        g = torch.Generator().manual_seed(0)
        sdekit.sample(model, sde, (n_sample, 2), solver="euler", steps=50, generator=g, distributed=True)

    def run_logp() -> None:
        with torch.no_grad():
            sdekit.logp(model, sde, x, solver="rk4", steps=10, trace="exact", distributed=True)

    barrier = torch.distributed.barrier if distributed else (lambda: None)
    result = {}
    for name, fn, n in (("sample", run_sample, n_sample), ("logp", run_logp, n_logp)):
        fn()
        best = float("inf")
        for _ in range(repeats):
            barrier()
            start = time.perf_counter()
            fn()
            barrier()
            best = min(best, time.perf_counter() - start)
        result[name] = {"rows": n, "seconds": best}
    if not distributed or torch.distributed.get_rank() == 0:
        print("RESULT " + json.dumps(result))
    if distributed:
        torch.distributed.destroy_process_group()


def _launch(procs: int, quick: bool, repeats: int) -> dict:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [os.fspath(torchrun), "--standalone", f"--nproc-per-node={procs}", "-m", "benchmarks.distributed"]
    cmd += ["--worker", "--repeats", str(repeats)] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def main(repeats: int = 3, threads: int = 1, quick: bool = False) -> None:
    """Print the table of docs/benchmarks.md, "Distributed" (``threads`` is ignored: one thread per process)."""
    runs = {p: _launch(p, quick, repeats) for p in (1, 2)}
    print("| workload | rows | 1 process (rows/s) | 2 processes (rows/s) | speed-up | efficiency |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("sample", "logp"):
        one, two = (runs[p][name]["rows"] / runs[p][name]["seconds"] for p in (1, 2))
        rows = runs[1][name]["rows"]
        print(f"| {name} | {rows:,} | {one:,.0f} | {two:,.0f} | {two / one:.2f} | {two / one / 2:.0%} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help="(internal) one rank of a torchrun launch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.worker:
        _worker(args.quick, args.repeats)
    else:
        main(args.repeats, quick=args.quick)
