r"""Sampling error vs NFE for every registered solver, measured against the exact law.

Problem: a 2-D, 3-component Gaussian mixture carried by ``VPSDE()`` and ``VESDE()``; the model is the
exact score (:meth:`sdekit.analytic.GaussianMixture.diffuse`), so the only errors are the solver's.
Each run starts from an exact draw of :math:`p_T` (so the prior mismatch of ``sde.prior`` is not
counted), integrates to :math:`t = \epsilon` with ``denoise=False`` and is compared with the exact
marginal :math:`p_\epsilon` (``oracle.at(eps)``) by the sliced Kolmogorov–Smirnov test of
:mod:`sdekit._stats` (``K_DIRECTIONS`` fixed directions, family-wise level ``ALPHA``).
The reported error is ``D / D_crit``: at most 1 means the n samples cannot be told apart from the
exact law at that level (with ``denoise=True`` the target would be the Tweedie-denoised law, not
:math:`p_\epsilon`).

Grids: every fixed-step solver runs on its default time grid (row ``solver``); the exponential
integrators ``exp1``–``exp3`` and the fixed-step torchdiffeq solvers (``ode:euler``, ``ode:rk4``, ...)
also run on every other grid of :data:`sdekit.solvers._grids.GRIDS` (rows ``solver [grid]``), with a
lower cost cap (``VARIANT_MAX_NFE``) so the slow-converging grid/solver pairs do not dominate the run time.

Ladders: fixed-step solvers run ``steps`` in ``STEPS``; adaptive solvers (``steps=None``) run
``rtol = atol`` in ``TOLS``. A ladder stops at its first ratio <= 1 (``·`` in the table), and step
counts whose cost would exceed ``MAX_NFE`` model evaluations are skipped (``skip``: this hits the
largest step counts of the multi-evaluation samplers ``pc`` (predictor + Langevin corrector) and
``ald``); adaptive runs are capped through the solvers' step limits. Failures (e.g. divergence) are
table entries, not crashes.

Writes ``benchmarks/results/error_vs_nfe.md`` and ``benchmarks/results/error_vs_nfe.png``.
Run ``python -m benchmarks error_vs_nfe`` or ``python -m benchmarks.error_vs_nfe [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import sdekit
from sdekit import analytic
from sdekit._stats import random_directions, sliced_ks
from sdekit.solvers._grids import GRIDS

N = 100_000
STEPS = (5, 10, 20, 50, 100, 200, 500)
TOLS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
MAX_NFE = 500
VARIANT_MAX_NFE = 200  # cost cap of the non-default grid rows
QUICK_N = 20_000
QUICK_STEPS = (5, 10, 20, 50, 100)
QUICK_TOLS = (1e-1, 1e-2, 1e-3)
QUICK_MAX_NFE = 200
QUICK_VARIANT_MAX_NFE = 100
K_DIRECTIONS = 32
ALPHA = 1e-3
SEED = 0
RESULTS = Path(__file__).resolve().parent / "results"

MEANS = [[-2.0, 0.0], [2.0, 1.0], [0.5, -2.0]]
STDS = [0.3, 0.5, 0.4]
WEIGHTS = [0.3, 0.4, 0.3]


@dataclass
class Run:
    """One sampling run: ladder level (steps or rtol), NFE, KS ratio, or why it has no number."""

    level: float
    nfe: int | None = None
    ratio: float | None = None
    note: str = ""  # "skip" (cost cap), "·" (ladder stopped after reaching ratio <= 1), or a failure


@dataclass
class Result:
    sde: str
    solver: str
    adaptive: bool
    runs: list[Run] = field(default_factory=list)
    grid: str | None = None  # None: the solver's default grid (or adaptive); else an explicitly requested grid
    default_grid: str | None = None  # the solver's default grid kind (fixed-step solvers)

    @property
    def label(self) -> str:
        """``solver (default grid)`` or ``solver [grid]`` for a non-default grid."""
        if self.grid is not None:
            return f"{self.solver} [{self.grid}]"
        return f"{self.solver} ({self.default_grid})" if self.default_grid else self.solver

    @property
    def first_pass(self) -> Run | None:
        return next((r for r in self.runs if r.ratio is not None and r.ratio <= 1), None)


def grid_variants(solver: str) -> list[str | None]:
    """Grids to run: ``None`` (the default) for every solver, plus every other grid for ``exp1``–``exp3`` and
    the fixed-step torchdiffeq solvers."""
    cls = sdekit.solvers.available()[solver]
    fixed_ode = cls.kind == "ode" and not cls.adaptive
    if not fixed_ode:
        return [None]
    return [None, *(g for g in GRIDS if g != cls.grid)]


def _nfe_per_step(solver: str) -> int:
    """First guess of model evaluations per step (for the cost cap); refined from each run's NFE."""
    return {"pc": 2, "ald": 3}.get(solver, 1)


def _failure(err: Exception) -> str:
    name = type(err).__name__
    if "Diverged" in name:
        return "diverged"
    if "max_steps" in str(err) or "max_num_steps" in str(err):
        return "step cap"
    return f"fail: {name}"


def run_solver(sde_name: str, sde: sdekit.SDE, solver: str, cfg: dict, grid: str | None = None) -> Result:
    """Run one solver's ladder on one SDE (on ``grid``, or the solver's default grid if None)."""
    cls = sdekit.solvers.available()[solver]
    oracle = analytic.GaussianMixture(torch.tensor(MEANS), torch.tensor(STDS), torch.tensor(WEIGHTS)).diffuse(sde)
    eps = sde.default_eps
    target = oracle.at(eps)
    directions = random_directions(2, K_DIRECTIONS, seed=SEED)
    # Adaptive mode for the ODE solvers and for the SDE solvers without a fixed-step default (torchsde):
    # both are tolerance-driven when steps=None. torchsde SDE solvers are also useful on fixed grids;
    # run them on the step ladder (their common use) so reverse Euler–Maruyama appears as the baseline.
    adaptive = bool(cls.adaptive) and cls.kind == "ode"
    result = Result(sde_name, solver, adaptive, grid=grid, default_grid=None if adaptive else cls.grid)
    levels = cfg["tols"] if adaptive else cfg["steps"]
    max_nfe = cfg["max_nfe"] if grid is None else cfg.get("variant_max_nfe", cfg["max_nfe"])
    per_step = _nfe_per_step(solver)
    done = False
    for level in levels:
        if done:
            result.runs.append(Run(level, note="·"))
            continue
        kwargs: dict = {}
        if adaptive:
            kwargs.update(steps=None, rtol=level, atol=level, max_num_steps=max(cfg["max_nfe"] // 4, 20))
        else:
            if level * per_step > max_nfe:
                result.runs.append(Run(level, note="skip"))
                continue
            # a solver with a one-off start-up cost (exp3's 2S midpoint) runs level - startup_nfe steps, so its
            # NFE equals the ladder level and it is compared with the one-NFE-per-step solvers at equal cost
            kwargs.update(steps=int(level) - cls.startup_nfe)
            if grid is not None:
                kwargs.update(grid=grid)
        gen = torch.Generator().manual_seed(SEED + 1)
        x_T = oracle.sample(cfg["n"], sde.T, generator=gen, dtype=torch.float32)
        try:
            x, info = sdekit.sample(
                oracle, sde, x_T.shape, solver=solver, x_T=x_T, denoise=False, generator=gen, return_info=True,
                **kwargs,
            )  # fmt: skip
            if not bool(torch.isfinite(x).all()):
                raise sdekit.errors.SolverDivergedError("non-finite samples")
            ks = sliced_ks(x, target, directions, alpha=ALPHA)
            run = Run(level, nfe=info.nfe, ratio=ks.ratio)
            if not adaptive:
                per_step = max(per_step, round(info.nfe / level))
        except Exception as err:  # failures are table entries
            run = Run(level, note=_failure(err))
        result.runs.append(run)
        if run.ratio is not None and run.ratio <= 1:
            done = True
        if adaptive and run.nfe is not None and run.nfe > cfg["max_nfe"] / 2:
            done = True  # the next, tighter tolerance would exceed the cost cap
    return result


def _cell(run: Run) -> str:
    if run.ratio is None:
        return run.note
    mark = "**" if run.ratio <= 1 else ""
    return f"{mark}{run.ratio:.2f}{mark} @ {run.nfe}"


def _level(value: float, adaptive: bool) -> str:
    return f"rtol {value:.0e}" if adaptive else f"{int(value)} steps"


def to_markdown(results: list[Result], cfg: dict) -> str:
    """Markdown tables (one per SDE and ladder type) of 'ratio @ NFE', bold when ratio <= 1."""
    crit = math.sqrt(-math.log(ALPHA / (2 * K_DIRECTIONS)) / 2) / math.sqrt(cfg["n"])
    lines = [
        f"Sliced-KS statistic / critical value (n = {cfg['n']:,}, k = {K_DIRECTIONS} directions, "
        f"family-wise level {ALPHA:g}, D_crit = {crit:.2e}) against the exact p_eps; entries `ratio @ NFE`, "
        f"**bold** = indistinguishable from the exact law (ratio <= 1). `·` = not run (ladder already "
        f"reached ratio <= 1); `skip` = over the {cfg['max_nfe']}-NFE cost cap "
        f"({cfg.get('variant_max_nfe', cfg['max_nfe'])} for the `[grid]` rows); `step cap` = adaptive run hit "
        f"its step limit. Fixed-step torchsde solvers (euler, milstein, srk, ...) are run on the step ladder. "
        f"Fixed-step rows: `solver (grid)` = the solver's default time grid, `solver [grid]` = another grid "
        f"(all grids for exp1-3 and the fixed-step ode:* solvers; see sdekit/solvers/_grids.py). "
        f"`exp3` runs level - 1 steps (its 2S start costs one extra evaluation), so its NFE is the column's level.",
        "",
    ]
    for sde_name in dict.fromkeys(r.sde for r in results):
        for adaptive in (False, True):
            rows = [r for r in results if r.sde == sde_name and r.adaptive == adaptive]
            if not rows:
                continue
            levels = [run.level for run in rows[0].runs]
            head = ["solver", *(_level(v, adaptive) for v in levels), "first ratio <= 1"]
            lines.append(f"**{sde_name}, {'adaptive (rtol = atol)' if adaptive else 'fixed steps'}**")
            lines.append("")
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|")
            for r in rows:
                first = r.first_pass
                tail = f"{first.nfe} NFE" if first else "not reached"
                lines.append("| " + " | ".join([f"`{r.label}`", *(_cell(x) for x in r.runs), tail]) + " |")
            lines.append("")
    return "\n".join(lines)


def plot(results: list[Result], path: Path) -> None:
    """Log-log ratio vs NFE: per SDE, one panel with every solver on its default grid (adaptive dashed) and
    one with the grid variants of the exponential integrators and fixed-step ``ode:*`` solvers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sdes = list(dict.fromkeys(r.sde for r in results))
    fig, axes = plt.subplots(2, len(sdes), figsize=(7.5 * len(sdes), 13), squeeze=False)
    cmap = plt.get_cmap("tab20")
    grid_styles = {g: s for g, s in zip(GRIDS, ("-", "--", ":", "-."), strict=False)}
    for col, sde_name in enumerate(sdes):
        rows = [r for r in results if r.sde == sde_name]
        variant_solvers = list(dict.fromkeys(r.solver for r in rows if r.grid is not None))
        panels = (
            (axes[0][col], [r for r in rows if r.grid is None], "default grids"),
            (axes[1][col], [r for r in rows if r.solver in variant_solvers], "all grids (line style = grid)"),
        )
        for ax, sel, title in panels:
            solvers = list(dict.fromkeys(r.solver for r in sel))
            for r in sel:
                pts = sorted((run.nfe, run.ratio) for run in r.runs if run.ratio is not None)
                if not pts:
                    continue
                i = solvers.index(r.solver)
                xs, ys = zip(*pts, strict=True)
                if title.startswith("default"):
                    style = "--" if r.adaptive else "-"
                else:
                    style = grid_styles.get(r.grid or r.default_grid or "uniform", "-")
                ax.loglog(xs, ys, style, marker="os^vD<>ph*"[i % 10], ms=4, color=cmap(i % 20), label=r.label)
            ax.axhline(1.0, color="k", lw=1, ls=":")
            ax.axvline(20.0, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{sde_name}, {title}: sliced-KS / critical value vs NFE")
            ax.set_xlabel("NFE (model evaluations)")
            ax.set_ylabel("D / D_crit  (<= 1: indistinguishable)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6, ncol=3, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary(results: list[Result]) -> str:
    """Per SDE: the solver reaching ratio <= 1 at the smallest NFE, and reverse Euler–Maruyama's NFE."""
    out = []
    for sde_name in dict.fromkeys(r.sde for r in results):
        rows = [r for r in results if r.sde == sde_name and r.first_pass is not None]
        ranked = sorted(rows, key=lambda r: r.first_pass.nfe)
        if ranked:
            best = ranked[0]
            ties = [r.label for r in ranked if r.first_pass.nfe == best.first_pass.nfe]
            top = ", ".join(f"{r.label} ({r.first_pass.nfe})" for r in ranked[:5])
            out.append(f"{sde_name}: first to ratio <= 1: {', '.join(ties)} at {best.first_pass.nfe} NFE; top 5: {top}")
            cheap = [
                f"{r.label} {run.ratio:.2f} @ {run.nfe}"
                for r in rows
                for run in r.runs
                if run.ratio is not None and run.ratio <= 1 and run.nfe <= 20
            ]
            out.append(f"  ratio <= 1 at <= 20 NFE: {'; '.join(cheap) if cheap else 'none'}")
        else:
            out.append(f"{sde_name}: no solver reached ratio <= 1")
        em = next((r for r in results if r.sde == sde_name and r.solver == "euler" and r.grid is None), None)
        if em is not None:
            first = em.first_pass
            out.append(f"  reverse Euler–Maruyama (euler): {f'{first.nfe} NFE' if first else 'not reached'}")
    return "\n".join(out)


def main(repeats: int = 1, threads: int = 2, quick: bool = False) -> list[Result]:
    """Run all ladders, write the table and the plot, print the table and the summary.

    ``repeats`` is accepted for the ``python -m benchmarks`` runner and unused (errors, not times).
    """
    del repeats
    torch.set_num_threads(threads)
    cfg = {
        "n": QUICK_N if quick else N,
        "steps": QUICK_STEPS if quick else STEPS,
        "tols": QUICK_TOLS if quick else TOLS,
        "max_nfe": QUICK_MAX_NFE if quick else MAX_NFE,
        "variant_max_nfe": QUICK_VARIANT_MAX_NFE if quick else VARIANT_MAX_NFE,
    }
    sdes = {"VPSDE": sdekit.VPSDE(), "VESDE": sdekit.VESDE()}
    solvers = list(sdekit.solvers.available())
    print(
        f"error vs NFE: {len(solvers)} solvers (exp1-3 and fixed-step ode:* on every grid of {', '.join(GRIDS)}) "
        f"x {len(sdes)} SDEs, n = {cfg['n']:,}, float32, "
        f"torch threads = {threads}{' (quick)' if quick else ''}"
    )
    print(
        f"cost cap: step counts needing > {cfg['max_nfe']} NFE are skipped "
        f"(pc with its Langevin corrector: 2 NFE/step, ald: 3 NFE/step, ...), adaptive ladders stop near the cap"
    )
    results = []
    started = time.perf_counter()
    for sde_name, sde in sdes.items():
        for solver in solvers:
            for grid in grid_variants(solver):
                t0 = time.perf_counter()
                res = run_solver(sde_name, sde, solver, cfg, grid=grid)
                results.append(res)
                skipped = [_level(r.level, res.adaptive) for r in res.runs if r.note == "skip"]
                note = f"  (skipped over cost cap: {', '.join(skipped)})" if skipped else ""
                print(f"  {sde_name} {res.label:30s} {time.perf_counter() - t0:6.1f} s{note}", flush=True)
    table = to_markdown(results, cfg)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "error_vs_nfe.md").write_text(table + "\n\n" + summary(results) + "\n")
    plot(results, RESULTS / "error_vs_nfe.png")
    print()
    print(table)
    print(summary(results))
    print(f"\ntotal {time.perf_counter() - started:.1f} s; wrote {RESULTS / 'error_vs_nfe.md'} and error_vs_nfe.png")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.error_vs_nfe", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"n = {QUICK_N:,} and a shorter ladder")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    main(threads=args.threads, quick=args.quick)
