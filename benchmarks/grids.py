r"""Time grids against each other: sampling error per grid kind at equal cost (``sdekit.solvers._grids``).

Two parts, both with the exact score of the 2-D mixture of :mod:`benchmarks.error_vs_nfe` (``MEANS``,
``STDS``, ``WEIGHTS``), ``x_T`` drawn from the exact :math:`p_T` (float32), no final denoising step, and the
sliced-KS statistic against the exact :math:`p_\epsilon` over its critical value (32 directions, seed 0,
family-wise level 1e-3; ratio <= 1: indistinguishable):

* ``few``: the exponential integrators ``exp2``/``exp3`` at 6, 8, 10, 12, 15, 20 NFE (``steps=k`` is k model
  evaluations) on VPSDE and VESDE, on every grid kind of :data:`sdekit.solvers._grids.GRIDS`.
* ``em``: reverse Euler–Maruyama (``euler``) at 50/100/200 steps and ``srk`` at 50 steps on the affine zoo
  (VP, VE, sub-VP, cosine VP, EDM) on every grid kind: the measurement behind the torchsde solvers' default grid.

Writes ``benchmarks/results/grids.md`` and prints it. Run ``python -m benchmarks grids`` or
``python -m benchmarks.grids [--quick] [--part few|em] [--n N] [--seed S] [--grids a,b] [--data-std c1,c2]``;
the tables in ``docs/sampling.md`` ("Time grids") are a full run (n = 100,000), plus
``--part few --grids optimized,arctan --n 200000 --seed 1`` and ``--part few --grids optimized --data-std
1.78,1.23,0.4``. Single process; one torch thread by default.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

import sdekit
from sdekit import analytic
from sdekit._stats import random_directions, sliced_ks
from sdekit.solvers._grids import GRIDS

from .error_vs_nfe import MEANS, STDS, WEIGHTS

N = 100_000
QUICK_N = 20_000
K_DIRECTIONS = 32
ALPHA = 1e-3
FEW_NFE = (6, 8, 10, 12, 15, 20)
QUICK_FEW_NFE = (6, 10, 20)
FEW_SOLVERS = ("exp2", "exp3")
EM_STEPS = {"euler": (50, 100, 200), "srk": (50,)}
QUICK_EM_STEPS = {"euler": (50, 100), "srk": (50,)}
RESULTS = Path(__file__).resolve().parent / "results"


def _sdes(part: str) -> dict[str, sdekit.SDE]:
    if part == "few":
        return {"VPSDE": sdekit.VPSDE(), "VESDE": sdekit.VESDE()}
    return {
        "VPSDE": sdekit.VPSDE(),
        "VESDE": sdekit.VESDE(),
        "SubVPSDE": sdekit.SubVPSDE(),
        "CosineVPSDE": sdekit.CosineVPSDE(),
        "EDMSDE": sdekit.EDMSDE(),
    }


def ratio(
    sde: sdekit.SDE, solver: str, steps: int, grid: str, n: int, seed: int, **options: object
) -> tuple[float, int]:
    """Sliced-KS ratio and NFE of one run of ``solver`` with ``steps`` on ``grid`` (exact score, exact x_T; further
    solver ``options`` such as ``data_std``)."""
    oracle = analytic.GaussianMixture(torch.tensor(MEANS), torch.tensor(STDS), torch.tensor(WEIGHTS)).diffuse(sde)
    gen = torch.Generator().manual_seed(seed + 1)
    x_T = oracle.sample(n, sde.T, generator=gen, dtype=torch.float32)
    x, info = sdekit.sample(
        oracle, sde, x_T.shape, solver=solver, steps=steps, grid=grid, denoise=False, x_T=x_T, generator=gen,
        return_info=True, **options,
    )  # fmt: skip
    if not bool(torch.isfinite(x).all()):
        return math.inf, info.nfe
    ks = sliced_ks(x, oracle.at(sde.default_eps), random_directions(2, K_DIRECTIONS, seed=0), alpha=ALPHA)
    return ks.ratio, info.nfe


def _table(title: str, head: list[str], rows: list[tuple[str, list[float]]]) -> list[str]:
    """A markdown table, the best entry of each column in bold."""
    best = [min(vals[j] for _, vals in rows) for j in range(len(head))]
    lines = [f"**{title}**", "", "| grid | " + " | ".join(head) + " |", "|---|" + "--:|" * len(head)]
    for name, vals in rows:
        cells = [f"**{v:.2f}**" if v == best[j] else f"{v:.2f}" for j, v in enumerate(vals)]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return [*lines, ""]


def few_step(n: int, seed: int, quick: bool, grids: tuple[str, ...] = GRIDS, **options: object) -> list[str]:
    """exp2/exp3 at few NFE on VP and VE on every grid kind (or ``grids``); ``options`` go to every run."""
    nfes = QUICK_FEW_NFE if quick else FEW_NFE
    out: list[str] = []
    for sde_name, sde in _sdes("few").items():
        for solver in FEW_SOLVERS:
            rows = []
            for grid in grids:
                t0 = time.perf_counter()
                rows.append((grid, [ratio(sde, solver, k, grid, n, seed, **options)[0] for k in nfes]))
                cells = " ".join(f"{v:6.2f}" for v in rows[-1][1])
                print(f"  {sde_name} {solver} {grid:10s} {cells}  ({time.perf_counter() - t0:.1f} s)", flush=True)
            out += _table(f"{sde_name}, {solver}: ratio at NFE", [f"{k} NFE" for k in nfes], rows)
    return out


def em(n: int, seed: int, quick: bool, grids: tuple[str, ...] = GRIDS, **options: object) -> list[str]:
    """euler and srk over the zoo on every grid kind (or ``grids``); a last table has each grid's worst ratio over
    the zoo. ``options`` go to every run."""
    plan = QUICK_EM_STEPS if quick else EM_STEPS
    out: list[str] = []
    for solver, steps in plan.items():
        worst = {grid: [0.0] * len(steps) for grid in grids}
        for sde_name, sde in _sdes("em").items():
            rows = []
            for grid in grids:
                t0 = time.perf_counter()
                vals = [ratio(sde, solver, k, grid, n, seed, **options)[0] for k in steps]
                worst[grid] = [max(a, b) for a, b in zip(worst[grid], vals, strict=True)]
                rows.append((grid, vals))
                cells = " ".join(f"{v:6.2f}" for v in vals)
                print(f"  {sde_name} {solver} {grid:10s} {cells}  ({time.perf_counter() - t0:.1f} s)", flush=True)
            out += _table(f"{sde_name}, {solver}: ratio at steps", [f"{k} steps" for k in steps], rows)
        out += _table(f"{solver}: worst ratio over the zoo", [f"{k} steps" for k in steps], list(worst.items()))
    return out


def main(repeats: int = 1, threads: int = 1, quick: bool = False, part: str = "all", n: int | None = None,
         seed: int = 0, grids: tuple[str, ...] = GRIDS, data_std: tuple[float, ...] | None = None) -> str:  # fmt: skip
    """Run the parts, write ``benchmarks/results/grids.md``, print and return the tables.

    ``repeats`` is accepted for the ``python -m benchmarks`` runner and unused (errors, not times). ``grids``
    restricts the grid kinds; ``data_std`` (the ``"optimized"`` grid's data scales) is passed to every run.
    """
    del repeats
    options = {} if data_std is None else {"data_std": data_std}
    torch.set_num_threads(threads)
    n = n or (QUICK_N if quick else N)
    crit = math.sqrt(-math.log(ALPHA / (2 * K_DIRECTIONS)) / 2) / math.sqrt(n)
    lines = [
        f"Sliced-KS statistic / critical value (n = {n:,}, {K_DIRECTIONS} directions, level {ALPHA:g}, "
        f"D_crit = {crit:.2e}, x_T seed {seed}) against the exact p_eps; <= 1: indistinguishable; bold: best grid "
        f"of the column. Grids: {', '.join(grids)} (sdekit/solvers/_grids.py; edm with rho = 7, optimized with "
        f"data_std = {data_std or 1} and the solver's order).",
        "",
    ]
    started = time.perf_counter()
    if part in ("all", "few"):
        lines += few_step(n, seed, quick, grids, **options)
    if part in ("all", "em"):
        lines += em(n, seed, quick, grids, **options)
    text = "\n".join(lines)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "grids.md").write_text(text + "\n")
    print(text)
    print(f"total {time.perf_counter() - started:.1f} s; wrote {RESULTS / 'grids.md'}")
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grids", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"n = {QUICK_N:,} and fewer NFE / step counts")
    parser.add_argument("--part", choices=("all", "few", "em"), default="all")
    parser.add_argument("--n", type=int, default=None, help=f"samples (default {N:,}; --quick {QUICK_N:,})")
    parser.add_argument("--seed", type=int, default=0, help="x_T seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--grids", default=",".join(GRIDS), help="comma-separated grid kinds (default: all)")
    parser.add_argument("--data-std", default=None, help="data scales of the optimized grid, e.g. 1.78,1.23,0.4")
    args = parser.parse_args()
    scales = None if args.data_std is None else tuple(float(v) for v in args.data_std.split(","))
    main(
        threads=args.threads, quick=args.quick, part=args.part, n=args.n, seed=args.seed,
        grids=tuple(args.grids.split(",")), data_std=scales,
    )  # fmt: skip
