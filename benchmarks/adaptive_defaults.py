r"""Adaptive defaults: ``sdekit.sample(model, sde, ..., solver="ode")`` at its default rtol/atol on every zoo SDE.

Problem (as in :mod:`benchmarks.error_vs_nfe`): the 2-D, 3-component Gaussian mixture ``MEANS, STDS, WEIGHTS``
with its exact score ``GaussianMixture(...).diffuse(sde)`` under every SDE of :mod:`sdekit.symbolic.zoo` (the
short names of ``sdekit._load.SHORT_NAMES``: vp, subvp, ve, cosine, edm, ou, bm; a non-affine one would be
skipped: the mixture's exact law needs the Gaussian marginal). n = 200,000 float32 samples per run, started from
exact draws of :math:`p_T` (``oracle.at(sde.T).sample``, seeds ``SEEDS``), integrated by the probability-flow
ODE with ``denoise=False`` and compared with the exact :math:`p_\epsilon` by the sliced Kolmogorov–Smirnov test
(``K_DIRECTIONS`` directions from seed 0, family-wise level ``ALPHA``). Entry ``D / D_crit`` (<= 1:
indistinguishable) and the model evaluations the run spent (``info.nfe``).

Two parts:

* **dopri5 ladder** (``solver="ode"``): rtol/atol pairs ``LADDER`` (rtol = atol from 1e-3 down, then pairs with
  atol != rtol), and the reference ``REFERENCE`` (rtol = atol = 1e-5, 30 times tighter than the default): its
  ratio is the sampling floor of that draw of :math:`p_T` (the KS statistic of an exact flow of the same x_T),
  so the excess of a run over it is the solver's own error.
* **every adaptive ``ode:*`` solver at its default** (``recommended_rtol``, no rtol/atol passed).

Rule for the default (:func:`loosest_with_margin`): the loosest rtol = atol on the ladder at which every SDE and
seed passes *with margin*, ``ratio <= min(MARGIN_RATIO, reference + MARGIN_EXCESS)`` (the solver adds at most
0.1 critical values to the floor at n = 2e5), and so does every tighter rtol = atol of the ladder.

Writes ``benchmarks/results/adaptive_defaults.md``. Run ``python -m benchmarks adaptive_defaults [--quick]`` or
``python -m benchmarks.adaptive_defaults [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

import sdekit
from benchmarks.error_vs_nfe import ALPHA, K_DIRECTIONS, MEANS, STDS, WEIGHTS
from sdekit import analytic
from sdekit._load import SHORT_NAMES
from sdekit._stats import random_directions, sliced_ks

N = 200_000
QUICK_N = 20_000
SEEDS: tuple[int, ...] = (1, 2)
LADDER: tuple[tuple[float, float], ...] = (
    (1e-3, 1e-3),
    (5e-4, 5e-4),
    (3e-4, 3e-4),
    (2e-4, 2e-4),
    (1e-4, 1e-4),
    (1e-3, 1e-4),
    (1e-4, 1e-3),
    (3e-4, 1e-3),
)
"""(rtol, atol) pairs of the dopri5 ladder: rtol = atol first (loosest first), then atol != rtol."""
QUICK_LADDER: tuple[tuple[float, float], ...] = ((1e-3, 1e-3), (3e-4, 3e-4))
REFERENCE = (1e-5, 1e-5)
"""rtol, atol of the reference run: its ratio is the sampling floor of the x_T draw."""
MARGIN_RATIO = 0.8
MARGIN_EXCESS = 0.1
RESULTS = Path(__file__).resolve().parent / "results"


def zoo() -> dict[str, sdekit.SDE]:
    """Every SDE of the zoo by short name (affine ones only: the oracle needs the Gaussian marginal)."""
    sdes = {short: getattr(sdekit, cls)() for short, cls in SHORT_NAMES.items()}
    return {k: v for k, v in sdes.items() if v.is_affine}


def oracle_for(sde: sdekit.SDE) -> analytic.DiffusedGaussianMixture:
    """The exact score model of the benchmark's 2-D mixture under ``sde``."""
    return analytic.GaussianMixture(torch.tensor(MEANS), torch.tensor(STDS), torch.tensor(WEIGHTS)).diffuse(sde)


@dataclass
class Cell:
    """Runs of one solver setting on one SDE, one per seed: KS ratios and NFE (None: failed, ``note`` says why)."""

    ratios: list[float | None] = field(default_factory=list)
    nfes: list[int | None] = field(default_factory=list)
    note: str = ""

    def text(self) -> str:
        """``r1 / r2 @ NFE`` (NFE of each seed when they differ); bold when every seed passes."""
        if any(r is None for r in self.ratios):
            return self.note or "fail"
        ratios = " / ".join(f"{r:.2f}" for r in self.ratios)
        nfes = sorted(set(self.nfes))
        body = f"{ratios} @ {'/'.join(str(v) for v in nfes)}"
        return f"**{body}**" if all(r <= 1 for r in self.ratios) else body


def run_cell(
    sde: sdekit.SDE,
    x_Ts: Sequence[torch.Tensor],
    solver: str = "ode",
    rtol: float | None = None,
    atol: float | None = None,
) -> Cell:
    """One solver setting on one SDE from each x_T (``rtol``/``atol`` None: the solver's default)."""
    oracle = oracle_for(sde)
    target = oracle.at(float(sde.default_eps))
    directions = random_directions(2, K_DIRECTIONS, seed=0)
    cell = Cell()
    for x_T in x_Ts:
        try:
            x, info = sdekit.sample(
                oracle, sde, x_T.shape, solver=solver, x_T=x_T, denoise=False, rtol=rtol, atol=atol, return_info=True
            )
            cell.ratios.append(sliced_ks(x, target, directions, alpha=ALPHA).ratio)
            cell.nfes.append(info.nfe)
        except Exception as err:  # a failure is a table entry
            cell.ratios.append(None)
            cell.nfes.append(None)
            cell.note = f"fail: {type(err).__name__}"
    return cell


def passes_with_margin(cell: Cell, reference: Cell) -> bool:
    """Every seed at ratio <= min(MARGIN_RATIO, the reference run's ratio for that seed + MARGIN_EXCESS)."""
    pairs = zip(cell.ratios, reference.ratios)
    return all(r is not None and f is not None and r <= min(MARGIN_RATIO, f + MARGIN_EXCESS) for r, f in pairs)


def loosest_with_margin(
    ladder: dict[str, dict[tuple[float, float], Cell]], reference: dict[str, Cell]
) -> tuple[float, float] | None:
    """The loosest rtol = atol of the ladder that passes with margin on every SDE, as does every tighter one."""
    equal = sorted({pair for cells in ladder.values() for pair in cells if pair[0] == pair[1]})  # tightest first
    best = None
    for pair in equal:
        if not all(passes_with_margin(ladder[sde][pair], reference[sde]) for sde in ladder):
            break
        best = pair
    return best


def main(repeats: int = 1, threads: int = 1, quick: bool = False, out: Path = RESULTS) -> str:
    """Run the dopri5 ladder and every adaptive ``ode:*`` default on every zoo SDE; print and write the report.

    ``repeats`` is accepted for the ``python -m benchmarks`` runner and unused (errors, not timings)."""
    del repeats
    torch.set_num_threads(threads)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    n = QUICK_N if quick else N
    pairs = QUICK_LADDER if quick else LADDER
    sdes = zoo()
    registry = sdekit.solvers.available()
    adaptive = [] if quick else [k for k, v in registry.items() if k.startswith("ode:") and v.adaptive]
    ladder: dict[str, dict[tuple[float, float], Cell]] = {}
    reference: dict[str, Cell] = {}
    defaults: dict[str, dict[str, Cell]] = {}
    print(f"adaptive defaults: {len(sdes)} zoo SDEs, n = {n:,}, seeds {SEEDS}, dopri5 at {len(pairs)} tolerances")
    for name, sde in sdes.items():
        oracle = oracle_for(sde)
        x_Ts = [oracle.at(sde.T).sample(n, generator=torch.Generator().manual_seed(s)) for s in SEEDS]
        defaults[name] = {"ode (default)": run_cell(sde, x_Ts)}
        reference[name] = run_cell(sde, x_Ts, rtol=REFERENCE[0], atol=REFERENCE[1])
        ladder[name] = {pair: run_cell(sde, x_Ts, rtol=pair[0], atol=pair[1]) for pair in pairs}
        for solver in adaptive:
            defaults[name][solver] = run_cell(sde, x_Ts, solver)
        line = "  ".join(f"{p[0]:g}/{p[1]:g}: {c.text()}" for p, c in ladder[name].items())
        print(f"  {name:7s} default {defaults[name]['ode (default)'].text()}  ref {reference[name].text()}  {line}")
    chosen = loosest_with_margin(ladder, reference)
    text = report(ladder, reference, defaults, chosen, n, time.perf_counter() - started)
    (out / "adaptive_defaults.md").write_text(text + "\n")
    print(f"\n{text}\n\nwrote {out / 'adaptive_defaults.md'}")
    return text


def report(
    ladder: dict[str, dict[tuple[float, float], Cell]],
    reference: dict[str, Cell],
    defaults: dict[str, dict[str, Cell]],
    chosen: tuple[float, float] | None,
    n: int,
    wall: float,
) -> str:
    """The markdown report: the dopri5 ladder table, the rule's choice and the defaults of every adaptive solver."""
    crit = math.sqrt(-math.log(ALPHA / (2 * K_DIRECTIONS)) / 2) / math.sqrt(n)
    default_tol = sdekit.solvers.available()[sdekit.solvers.resolve("ode")].recommended_rtol
    pairs = list(next(iter(ladder.values())))
    head = ["SDE", "default", f"ref {REFERENCE[0]:g}", *(f"rtol {p[0]:g} atol {p[1]:g}" for p in pairs)]
    lines = [
        f"Sliced-KS / critical value against the exact p_eps (n = {n:,} float32, {K_DIRECTIONS} directions, level "
        f"{ALPHA:g}, D_crit = {crit:.2e}); cells `seed {' / seed '.join(map(str, SEEDS))} @ NFE`, **bold**: every "
        f'seed <= 1. `default`: `solver="ode"` without rtol/atol (rtol = atol = {default_tol:g}); `ref`: rtol = '
        f"atol = {REFERENCE[0]:g}, the floor of each x_T draw. Wall time {wall / 60:.1f} min.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|",
    ]
    for sde, cells in ladder.items():
        row = [sde, defaults[sde]["ode (default)"].text(), reference[sde].text(), *(c.text() for c in cells.values())]
        lines.append("| " + " | ".join(row) + " |")
    rule = f"ratio <= min({MARGIN_RATIO:g}, ref + {MARGIN_EXCESS:g}) on every SDE and seed"
    found = f"rtol = atol = {chosen[0]:g}" if chosen else "none of the ladder"
    lines += ["", f"Loosest rtol = atol passing with margin ({rule}), as does every tighter one: {found}."]
    solvers = [s for s in next(iter(defaults.values())) if s != "ode (default)"]
    if solvers:
        lines += ["", "| SDE | " + " | ".join(f"`{s}` ({_tol(s)})" for s in solvers) + " |"]
        lines.append("|---|" + "--:|" * len(solvers))
        for sde, cells in defaults.items():
            lines.append(f"| {sde} | " + " | ".join(cells[s].text() for s in solvers) + " |")
    return "\n".join(lines)


def _tol(solver: str) -> str:
    return f"{sdekit.solvers.available()[solver].recommended_rtol:g}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adaptive_defaults", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"n = {QUICK_N:,}, rtol = atol in 1e-3, 3e-4")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    main(threads=args.threads, quick=args.quick)
