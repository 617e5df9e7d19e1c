"""Run the benchmark modules: ``python -m benchmarks [name ...] [--repeats N] [--threads N]``.

Add a module by appending its name to :data:`MODULES`; it must define ``main(repeats, threads)``.
"""

from __future__ import annotations

import argparse
import importlib
import time

MODULES: list[str] = ["step_cost", "likelihood", "likelihood_fixed_grid", "error_vs_nfe"]
"""Benchmark modules under ``benchmarks/``, run in this order."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"modules to run (default: all of {', '.join(MODULES)})")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per measurement (minimum is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    names = args.names or MODULES
    unknown = sorted(set(names) - set(MODULES))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"=== benchmarks.{name} " + "=" * max(0, 60 - len(name)))
        started = time.perf_counter()
        module.main(repeats=args.repeats, threads=args.threads)
        print(f"--- {name}: {time.perf_counter() - started:.1f} s\n")


if __name__ == "__main__":
    main()
