"""Run the benchmark modules: ``python -m benchmarks [NAME ...] [--repeats N] [--threads N] [--quick]``.

Add a module by appending its name to :data:`MODULES` and a line to :data:`ABOUT`; it must define
``main(repeats, threads)`` (and may accept ``quick``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import textwrap
import time

MODULES: list[str] = [
    "step_cost", "likelihood", "likelihood_fixed_grid", "error_vs_nfe", "grids", "few_step", "adaptive_defaults",
    "memory", "distributed",
]  # fmt: skip
"""Benchmark modules under ``benchmarks/``, run in this order."""

ABOUT: dict[str, str] = {
    "distributed": "Throughput of sample (euler, 50 steps) and logp (rk4, 10 steps, exact trace) with a small MLP "
    "and distributed=True on 1 and 2 processes (torchrun, gloo, one thread each) and the scaling efficiency. "
    "About 2 minutes; --quick about 40 s.",
    "step_cost": "Cost per step of fixed-step sampling (VPSDE reverse SDE, 200 steps, float32, batches 64x2 and "
    "4096x2): sdekit euler and srk against a hand-written Euler-Maruyama loop and against torchsde with its "
    "default BrownianInterval. Prints microseconds per step and the ratio to the hand loop. About 15 s.",
    "likelihood": "sdekit.logp against the usual hand-written likelihood (scipy RK45 on the flattened state, as "
    "in the score_sde code), float64: time, NFE and error against the exact log-density on a 2-D mixture "
    "(VP and VE, batch 256, exact trace) and on an image-sized batch (8, 3, 32, 32, Hutchinson), at the same "
    "tolerance and at equal accuracy. About 1 minute.",
    "likelihood_fixed_grid": "Experiment: a fixed-grid exp3 integrator plus a quadrature of the log-density "
    "against dopri5 and RK45 on the 2-D mixture: NFE and worst/median error for 20-320 steps on two grids "
    "(accuracy only, nothing timed). About 10 s.",
    "error_vs_nfe": "Sampling error against NFE for every registered solver (exp1-3 and the fixed-step ode:* "
    "solvers also on every time grid) on VPSDE and VESDE with the exact score of a 2-D mixture, n = 100,000 "
    "samples: sliced-KS distance to the exact law over its critical value (<= 1: indistinguishable). Writes "
    "benchmarks/results/error_vs_nfe.md and .png. About 40 minutes (docs/benchmarks.md: 20 minutes split over "
    "two processes); --quick (n = 20,000, shorter ladders) takes 2 CPU minutes (longer on a busy machine).",
    "grids": "The time grids side by side (uniform, quadratic, logsnr, edm, arctan, optimized) on the 2-D mixture "
    "with the exact score, n = 100,000: exp2/exp3 at 6-20 NFE on VP and VE, and euler (50/100/200 steps) and srk "
    "(50) on VP, VE, sub-VP, cosine VP and EDM; sliced-KS ratio against the exact law. Writes "
    "benchmarks/results/grids.md. About 25 minutes; --quick (n = 20,000, fewer NFE and step counts) about 3.",
    "few_step": "Few-step sampling at 4-30 NFE (counted by a wrapper around the model): every registered sdekit "
    "sampler whose steps are model evaluations (exp1-3, DPM-Solver++/DPM-Solver/UniPC once registered; found at run "
    "time) on every time grid, plus ode:midpoint and ode:rk4, against diffusers' DPM-Solver++(2M/3M) and UniPC "
    "(orders 2 and 3, bh1/bh2) on the grids diffusers offers, same exact oracle, on VPSDE, VESDE and a user SDE. A "
    "sweep at n = 100,000 picks each method's best grid; the best two of each side per NFE are re-run at n = "
    "200,000 with two x_T seeds for the head-to-head. First checks every method's convergence order on a 1-D "
    "oracle. Needs diffusers for the peers (pip install 'sdekit[bench]'; skipped without it). Writes "
    "benchmarks/results/few_step.md, .png and .json. About 25 minutes with its default two worker processes on two "
    "free cores (see python -m benchmarks.few_step -h); --quick (smaller n, NFE 5/10/20, one seed) about 2 minutes.",
    "adaptive_defaults": "The default tolerance of solver='ode' (dopri5) on every zoo SDE: sliced-KS ratio and NFE "
    "at n = 200,000 (two x_T seeds) for rtol/atol from 1e-3 down to 1e-4 and a 1e-5 reference, the loosest "
    "rtol = atol passing with margin, and every adaptive ode:* solver at its own default. Writes "
    "benchmarks/results/adaptive_defaults.md. About 22 minutes in one process; --quick (n = 20,000, two "
    "tolerances) 1 minute.",
    "memory": "Peak memory (RSS high-water mark of a fresh process per configuration) of sdekit.sample (euler, 20 "
    "steps, 1e4-1e6 2-D samples) and sdekit.logp (rk4, 8 steps, exact trace, 3e3-1e5 points) against the batch "
    "size, without and with chunk_size=, float32, exact score of a 2-D mixture. Prints a table. About 3 minutes; "
    "--quick (up to 2e5 samples and 3e4 points) about 1.",
}
"""What each benchmark measures and how long it takes (one full run, 2 shared CPU cores, one torch thread)."""

EXAMPLES = """examples:
  python -m benchmarks                          # all eight, in this order (about 2.5 hours)
  python -m benchmarks step_cost likelihood     # only these two (about 1-2 minutes)
  python -m benchmarks error_vs_nfe --quick     # the error-vs-NFE table with n = 20,000
  python -m benchmarks few_step --quick         # sdekit vs DPM-Solver++/UniPC, n = 20,000
  python -m benchmarks likelihood --repeats 1   # one timing per case: faster, noisier
  python -m benchmarks.likelihood --device cuda # run alone with its own options (see its -h; so
                                                # do error_vs_nfe and few_step)
"""


def _description() -> str:
    intro = (
        "sdekit's benchmarks. Each one measures its contenders side by side in the same run and prints ratios "
        "(timings: minimum over --repeats), not absolute claims: the machines are shared. Results are printed; "
        "error_vs_nfe and few_step also write benchmarks/results/. docs/benchmarks.md has the numbers of a full run. "
        "Times below: one run on 2 shared CPU cores with one torch thread."
    )
    lines = [textwrap.fill(intro, width=98), "", "benchmarks:"]
    for name in MODULES:
        lines += [f"  {name}:", textwrap.fill(ABOUT[name], width=98, initial_indent=" " * 4, subsequent_indent=" " * 4)]
    return "\n".join(lines)


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m benchmarks``."""
    parser = _Parser(
        prog="python -m benchmarks",
        description=_description(),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {', '.join(MODULES)})"
    )
    parser.add_argument(
        "--repeats",
        type=_positive,
        metavar="N",
        default=3,
        help="runs per timed measurement; the minimum is reported (default 3; error_vs_nfe, few_step, "
        "adaptive_defaults and likelihood_fixed_grid time nothing and ignore it)",
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        metavar="N",
        default=1,
        help="torch threads for every benchmark (default 1: one core per side)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the short version where a benchmark has one (error_vs_nfe, few_step, adaptive_defaults, memory)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run the named benchmarks (default: all) in :data:`MODULES` order."""
    parser = build_parser()
    args = parser.parse_args(argv)
    names = args.names or MODULES
    unknown = sorted(set(names) - set(MODULES))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        kwargs: dict[str, object] = {"repeats": args.repeats, "threads": args.threads}
        if args.quick and "quick" in inspect.signature(module.main).parameters:
            kwargs["quick"] = True
        print(f"=== benchmarks.{name} " + "=" * max(0, 60 - len(name)))
        started = time.perf_counter()
        module.main(**kwargs)
        print(f"--- {name}: {time.perf_counter() - started:.1f} s\n")


if __name__ == "__main__":
    main()
