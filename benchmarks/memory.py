r"""Peak memory of ``sdekit.sample`` and ``sdekit.logp`` against the batch size, with and without ``chunk_size``.

Workloads (2-D, 3-component Gaussian mixture with its exact score ``analytic.GaussianMixture(...).diffuse(sde)``,
``VPSDE()``, float32, one torch thread):

* ``sample``: ``sdekit.sample(model, sde, (n, 2), solver="euler", steps=20, generator=...)`` (the prior draw, 20
  reverse Euler–Maruyama steps and the denoising step), n up to 1e6 (``--quick``: 2e5);
* ``logp``: ``sdekit.logp(model, sde, x, solver="rk4", steps=8, generator=...)`` with the exact trace (d = 2) under
  ``torch.no_grad()`` (nothing of the solve is kept), n up to 1e5 (``--quick``: 3e4).

Method: peak resident set size (RSS) of a fresh Python process per configuration (``python -m benchmarks.memory
--one ...``). The child imports torch and sdekit, builds the model and the input data and runs the workload once
on 64 rows (so lazy imports, compiled SDE coefficients and one-off buffers are in place); then it reads its RSS
(``VmRSS`` of ``/proc/self/status``: the baseline) and resets the kernel's high-water mark to it (writing ``5`` to
``/proc/self/clear_refs``), runs the workload once at full size and reads the high-water mark ``VmHWM``. The
difference is the memory the call needed at its peak: every tensor alive at that moment (states, solver stages,
the model's intermediates, the outputs) plus allocator slack. Where ``/proc`` cannot be reset the baseline is
the peak so far (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which never goes down: hence a fresh process per
row). ``tracemalloc`` cannot see torch's CPU tensors (their storage is allocated by c10, not through Python's
allocator) and torch keeps no CPU allocator statistics, hence RSS. Large tensors are ``mmap``-ed and returned to
the system when freed, so the RSS follows the live tensors closely; the input data (``logp``'s x) is made before
the baseline and not counted.

Run ``python -m benchmarks memory`` (about 3 minutes; ``--quick`` about 1).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]  # where ``python -m benchmarks.memory`` finds the package

SAMPLE_BATCHES = (10_000, 100_000, 300_000, 1_000_000)
SAMPLE_CHUNKED = ((100_000, 65_536), (1_000_000, 65_536), (1_000_000, 262_144))
LOGP_BATCHES = (3_000, 10_000, 30_000, 100_000)
LOGP_CHUNKED = ((30_000, 8_192), (100_000, 8_192), (100_000, 32_768))

QUICK_SAMPLE_BATCHES = (10_000, 50_000, 200_000)
QUICK_SAMPLE_CHUNKED = ((200_000, 32_768),)
QUICK_LOGP_BATCHES = (3_000, 10_000, 30_000)
QUICK_LOGP_CHUNKED = ((30_000, 4_096),)


def _status_mb(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of ``/proc/self/status`` in MB, or None where there is no such file."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> float:
    """The current RSS, made the new high-water mark (Linux >= 4.0); else the peak so far (``ru_maxrss``, KB)."""
    current = _status_mb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        current = None
    return current if current is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_mb() -> float:
    """Peak RSS of this process since :func:`_reset_peak` (or since it started), in MB."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(kind: str, n: int, chunk: int | None) -> dict[str, float | int | str | None]:
    """One measurement in this process (meant to be a fresh one): baseline, workload, peak; see the module doc."""
    import torch  # lazy: the parent process never imports torch (its RSS is not measured)

    import sdekit  # lazy: as above
    from sdekit.analytic import GaussianMixture  # lazy: as above

    torch.set_num_threads(1)
    sde = sdekit.VPSDE()
    data = GaussianMixture([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]], [0.5, 0.3, 0.4], [0.3, 0.3, 0.4])
    model = data.diffuse(sde)
    x = data.sample(n, generator=torch.Generator().manual_seed(1)) if kind == "logp" else None

    def work(rows: int, chunk_size: int | None) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        if kind == "sample":
            return sdekit.sample(model, sde, (rows, 2), solver="euler", steps=20, generator=g, chunk_size=chunk_size)
        assert x is not None
        with torch.no_grad():
            return sdekit.logp(model, sde, x[:rows], solver="rk4", steps=8, generator=g, chunk_size=chunk_size)

    work(64, None)  # warm-up: lazy imports, compiled coefficients
    base = _reset_peak()
    started = time.perf_counter()
    out = work(n, chunk)
    seconds = time.perf_counter() - started
    assert out.shape[0] == n and bool(torch.isfinite(out).all())
    peak = _peak_mb()
    return {"kind": kind, "n": n, "chunk": chunk, "base_mb": base, "peak_mb": peak, "seconds": seconds}


def _measure(kind: str, n: int, chunk: int | None) -> dict[str, float | int | str | None]:
    """:func:`run_one` in a fresh interpreter."""
    cmd = [sys.executable, "-m", "benchmarks.memory", "--one", kind, str(n), str(chunk or 0)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=_ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def _row(r: dict) -> str:
    extra = r["peak_mb"] - r["base_mb"]
    chunk = f"{r['chunk']:,}" if r["chunk"] else "none"
    return (
        f"| `{r['kind']}` | {r['n']:,} | {chunk} | {extra:,.1f} | {extra * 2**20 / r['n']:,.0f} | "
        f"{r['base_mb']:,.0f} | {r['seconds']:.1f} |"
    )


def main(repeats: int = 1, threads: int = 1, quick: bool = False) -> None:
    """Measure every configuration in its own process and print a Markdown table (``repeats``/``threads`` are
    ignored: memory does not vary between runs the way time does, and every child uses one torch thread)."""
    del repeats, threads
    plan = [
        *(("sample", n, None) for n in (QUICK_SAMPLE_BATCHES if quick else SAMPLE_BATCHES)),
        *(("sample", n, c) for n, c in (QUICK_SAMPLE_CHUNKED if quick else SAMPLE_CHUNKED)),
        *(("logp", n, None) for n in (QUICK_LOGP_BATCHES if quick else LOGP_BATCHES)),
        *(("logp", n, c) for n, c in (QUICK_LOGP_CHUNKED if quick else LOGP_CHUNKED)),
    ]
    print(
        "peak memory above the warmed-up baseline (RSS high-water mark of a fresh process per row), float32, 2-D "
        "mixture,\n"
        "sample: euler 20 steps + denoise; logp: rk4 8 steps, exact trace, no_grad\n"
    )
    print("| call | batch | chunk_size | peak extra (MB) | bytes / row | baseline (MB) | seconds |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for kind, n, chunk in plan:
        print(_row(_measure(kind, n, chunk)), flush=True)


def _cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches (about 1 minute)")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "N", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        kind, n, chunk = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(run_one(kind, n, chunk or None)))
    else:
        main(quick=args.quick)


if __name__ == "__main__":
    _cli()
