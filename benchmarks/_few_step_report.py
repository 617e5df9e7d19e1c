"""Results of :mod:`benchmarks.few_step`: the row structure, markdown tables, head-to-head summary, JSON and plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.error_vs_nfe import ALPHA, K_DIRECTIONS

DIRECTION_SEED = 0
"""Seed of the KS test's random directions."""


@dataclass
class Cell:
    """One run: target NFE, measured NFE, KS ratio (None: not run), sampling seconds."""

    target: int
    nfe: int | None = None
    ratio: float | None = None
    seconds: float = 0.0
    note: str = ""  # "n/a" (NFE not reachable with whole steps) or a failure


@dataclass
class Row:
    """One method on one grid, one SDE, one x_T seed, one stage (``"sweep"``: every grid at n = ``SWEEP_N``;
    ``"final"``: the head-to-head candidates at n = ``FINAL_N``, only the NFE values they contend at)."""

    sde: str
    method: str
    family: str  # "sdekit" or "diffusers"
    grid: str
    default_grid: str
    seed: int
    n: int = 0
    stage: str = "sweep"
    cells: list[Cell] = field(default_factory=list)

    @property
    def is_default(self) -> bool:
        return self.grid == self.default_grid

    @property
    def label(self) -> str:
        """``method (grid)`` on its default grid, ``method [grid]`` on another."""
        return f"{self.method} ({self.grid})" if self.is_default else f"{self.method} [{self.grid}]"

    def cell(self, nfe: int) -> Cell | None:
        """The cell of target ``nfe`` (None: not run at that NFE)."""
        return next((c for c in self.cells if c.target == nfe), None)


@dataclass
class OrderRow:
    """Errors of one method against the exact PF-ODE endpoint as NFE doubles; ``expected``: the published or
    declared order (0: unknown)."""

    method: str
    nfes: tuple[int, ...]
    errors: list[float]
    expected: float
    note: str = ""

    @property
    def slope(self) -> float:
        """Least-squares slope of -log(error) against log(NFE)."""
        xs = [math.log(v) for v in self.nfes]
        ys = [math.log(e) for e in self.errors]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        return -sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)

    @property
    def local_slopes(self) -> list[float]:
        """Slope between consecutive NFE values."""
        return [
            math.log(self.errors[i] / self.errors[i + 1]) / math.log(self.nfes[i + 1] / self.nfes[i])
            for i in range(len(self.errors) - 1)
        ]

    @property
    def reproduced(self) -> bool:
        """Whether the fitted order is within ``ORDER_SLACK`` below the expected one (or above it)."""
        return not self.expected or self.slope >= self.expected - ORDER_SLACK


ORDER_SLACK = 0.35
"""A method reproduces its order when the fitted slope is at least expected - 0.35 (TESTING.md: +-0.25 around
theory for clean problems; UniPC-3's p + 1 = 4 is approached from below, 3.5-3.9 over 64-512 NFE)."""


def orders_markdown(rows: list[OrderRow]) -> str:
    """The order table: RMS error per NFE, slopes between doublings, least-squares slope, expected order."""
    nfes = rows[0].nfes
    head = ["method", *(f"{v} NFE" for v in nfes), "slopes", "fitted order", "expected", "reproduced"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]
    for r in rows:
        slopes = ", ".join(f"{s:.2f}" for s in r.local_slopes)
        errs = [f"{e:.2e}" for e in r.errors]
        expected = (f"{r.expected:g}" if r.expected else "?") + (f" ({r.note})" if r.note else "")
        ok = "yes" if r.reproduced else "**no**"
        lines.append("| " + " | ".join([r.method, *errs, slopes, f"**{r.slope:.2f}**", expected, ok]) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ tables


def plain(cell: Cell) -> str:
    """A cell for the progress log: the ratio (with ``@nfe`` if it differs from the target) or its note."""
    if cell.ratio is None:
        return cell.note or "-"
    return f"{cell.ratio:.2f}" + ("" if cell.nfe == cell.target else f"@{cell.nfe}")


def group(rows: list[Row], stage: str = "sweep") -> dict[tuple[str, str, str], list[Row]]:
    """Rows of one stage with the same (sde, method, grid), one per seed."""
    out: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        if r.stage == stage:
            out.setdefault((r.sde, r.method, r.grid), []).append(r)
    return out


def _cell_text(cells: list[Cell]) -> str:
    if all(c.ratio is None for c in cells):
        return cells[0].note or "-"
    texts = []
    for c in cells:
        text = c.note if c.ratio is None else f"{c.ratio:.2f}"
        if c.ratio is not None and c.nfe != c.target:
            text += f" (NFE {c.nfe})"
        texts.append(text)
    ok = all(c.ratio is not None and c.ratio <= 1 for c in cells)
    joined = " / ".join(texts)
    return f"**{joined}**" if ok else joined


def _passes(cell: Cell | None) -> bool:
    return cell is not None and cell.ratio is not None and cell.ratio <= 1


def _mean_ratio(seed_rows: list[Row], nfe: int) -> float | None:
    """Mean ratio over the seeds at ``nfe`` (None if a seed has no ratio there)."""
    cells = [r.cell(nfe) for r in seed_rows]
    if any(c is None or c.ratio is None for c in cells):
        return None
    return sum(c.ratio for c in cells) / len(cells)  # type: ignore[union-attr, misc]


def _score(seed_rows: list[Row]) -> float:
    """Geometric mean of the ratio over the row's cells and seeds (inf if a cell failed): picks the best grid."""
    values = [c.ratio for r in seed_rows for c in r.cells if c.note != "n/a"]
    if not values or any(v is None for v in values):
        return math.inf
    return math.exp(sum(math.log(v) for v in values) / len(values))  # type: ignore[arg-type]


def best_grids(rows: list[Row]) -> dict[tuple[str, str], str]:
    """Per (sde, method): the sweep grid with the smallest geometric-mean ratio over the NFE ladder and seeds."""
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for (sde, method, grid), seed_rows in group(rows).items():
        score = _score(seed_rows)
        if (sde, method) not in best or score < best[(sde, method)][0]:
            best[(sde, method)] = (score, grid)
    return {k: v[1] for k, v in best.items()}


def first_pass(seed_rows: list[Row]) -> int | None:
    """Smallest NFE from which every seed stays at ratio <= 1 (None: not within the ladder; n/a cells skipped)."""
    cells = [c for c in seed_rows[0].cells if c.note != "n/a"]
    ok = [all(_passes(r.cell(c.target)) for r in seed_rows) for c in cells]
    for j, c in enumerate(cells):
        if all(ok[j:]):
            return c.target
    return None


def table_markdown(rows: list[Row], sde: str, compact: bool, marks: dict[str, str] | None = None) -> str:
    """One SDE's sweep table: rows ``method (default grid)`` / ``method [other grid]``, columns NFE.

    ``compact``: each method at its default grid and at its best grid (if different); else every grid. ``marks``:
    a suffix per method label (e.g. a peer whose order check failed)."""
    groups = {k: v for k, v in group(rows).items() if k[0] == sde}
    if not groups:
        return ""
    best, marks = best_grids(rows), marks or {}
    nfes = sorted({c.target for v in groups.values() for r in v for c in r.cells})
    head = ["method [grid]", *(str(v) for v in nfes), "ratio <= 1 from", "s / ladder"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]
    methods = list(dict.fromkeys(k[1] for k in groups))
    grids = list(dict.fromkeys(k[2] for k in groups))
    order = sorted(groups, key=lambda k: (methods.index(k[1]), not groups[k][0].is_default, grids.index(k[2])))
    for key in order:
        seed_rows = groups[key]
        is_best = best[(sde, key[1])] == key[2]
        if compact and not (seed_rows[0].is_default or is_best):
            continue
        label = f"`{seed_rows[0].label}`{marks.get(key[1], '')}" + (" best" if is_best else "")
        fp = first_pass(seed_rows)
        secs = sum(c.seconds for r in seed_rows for c in r.cells) / len(seed_rows)
        cells = [_cell_text([r.cell(v) or Cell(v, note="-") for r in seed_rows]) for v in nfes]
        lines.append("| " + " | ".join([label, *cells, f"{fp} NFE" if fp else "-", f"{secs:.1f}"]) + " |")
    return "\n".join(lines)


def head_to_head_rows(rows: list[Row], sde: str) -> list[tuple[int, list[Row] | None, list[Row] | None]]:
    """Per NFE of the final stage: (nfe, best sdekit seed rows, best peer seed rows) by mean ratio over the seeds."""
    groups = {k: v for k, v in group(rows, "final").items() if k[0] == sde}
    nfes = sorted({c.target for v in groups.values() for r in v for c in r.cells})
    out = []
    for nfe in nfes:
        best: dict[str, tuple[float, list[Row]]] = {}
        for seed_rows in groups.values():
            mean = _mean_ratio(seed_rows, nfe)
            fam = seed_rows[0].family
            if mean is not None and (fam not in best or mean < best[fam][0]):
                best[fam] = (mean, seed_rows)
        out.append((nfe, best.get("sdekit", (0, None))[1], best.get("diffusers", (0, None))[1]))
    return out


def head_to_head(rows: list[Row], sde: str, marks: dict[str, str] | None = None) -> str:
    """Per NFE: the most accurate sdekit method+grid and the most accurate diffusers peer+grid of the final stage
    (``FINAL_TOP`` candidates per side chosen on the sweep, re-run at n = ``FINAL_N`` with every seed), their
    ratios per seed and the ratio of their seed means (< 1: sdekit ahead)."""
    marks = marks or {}
    lines = [
        "| NFE | best sdekit [grid] | ratio | best diffusers peer [grid] | ratio | sdekit / peer |",
        "|--:|---|--:|---|--:|--:|",
    ]
    for nfe, ours, theirs in head_to_head_rows(rows, sde):
        cols = [str(nfe)]
        for seed_rows in (ours, theirs):
            if seed_rows is None:
                cols += ["-", "-"]
            else:
                mark = marks.get(seed_rows[0].method, "")
                cols += [f"`{seed_rows[0].label}`{mark}", _cell_text([r.cell(nfe) for r in seed_rows])]  # type: ignore[misc]
        ratio = "-"
        if ours is not None and theirs is not None:
            ratio = f"{_mean_ratio(ours, nfe) / _mean_ratio(theirs, nfe):.2f}"  # type: ignore[operator]
        lines.append("| " + " | ".join([*cols, ratio]) + " |")
    return "\n".join(lines)


def verdict(rows: list[Row], sde: str, lo: int = 6, hi: int = 20) -> str:
    """One line: at how many NFE in [lo, hi] sdekit's best is no worse than the best peer's, and where each side
    first stays indistinguishable."""
    h2h = head_to_head_rows(rows, sde)
    pairs = [(nfe, o, t) for nfe, o, t in h2h if lo <= nfe <= hi and o and t]
    wins = [nfe for nfe, o, t in pairs if _mean_ratio(o, nfe) <= _mean_ratio(t, nfe)]  # type: ignore[operator]
    losses = [str(nfe) for nfe, _, _ in pairs if nfe not in wins]

    def first(side: int) -> str:
        ok = []
        for nfe, *best in h2h:
            if best[side] is not None:
                ok.append((nfe, all(_passes(r.cell(nfe)) for r in best[side])))
        for j, (nfe, _) in enumerate(ok):
            if all(flag for _, flag in ok[j:]):
                return f"{nfe} NFE on"
        return "nowhere in the ladder"

    tail = f" (behind at {', '.join(losses)} NFE)" if losses else ""
    return (
        f"**{sde}**: sdekit's best is no worse than the best peer at {len(wins)} of {len(pairs)} NFE values in "
        f"{lo}-{hi}{tail}. Ratio <= 1 for every seed: sdekit from {first(0)}, the peers from {first(1)}."
    )


def report(rows: list[Row], orders: list[OrderRow], settings: dict[str, Any]) -> str:
    """The markdown report: settings, order table, then per SDE the verdict, head to head, compact sweep table;
    at the end every sweep grid per SDE."""
    marks = {o.method: " †" for o in orders if not o.reproduced and not o.method.startswith("sdekit ")}
    crit = [math.sqrt(-math.log(ALPHA / (2 * K_DIRECTIONS)) / 2) / math.sqrt(n) for n in settings["n"]]
    sdes = list(dict.fromkeys(r.sde for r in rows))
    lines = [
        f"Few-step sampling: sliced-KS statistic / critical value against the exact p_eps ({K_DIRECTIONS} directions "
        f"from seed {DIRECTION_SEED}, family-wise level {ALPHA:g}); float32 samples from exact draws of p_T. Sweep: "
        f"n = {settings['n'][0]:,} (D_crit = {crit[0]:.2e}), seed(s) {settings['sweep_seeds']}, sdekit on grids "
        f"{settings['grids']}, peers on {settings['peer_grids']}; final: the {settings['final_top']} best of each "
        f"side per NFE at n = {settings['n'][1]:,} (D_crit = {crit[1]:.2e}), seeds {settings['final_seeds']} (cells "
        "`seed a / seed b`). **bold** = ratio <= 1 for every seed. NFE counted by a wrapper around the model (every "
        "cell's NFE equals its column unless the cell says otherwise); `n/a` = NFE not reachable. `method (grid)` = "
        "its default grid, `method [grid]` = another, `best` = smallest geometric-mean ratio over the ladder. "
        "`s / ladder`: sampling seconds for the NFE ladder (one torch thread per process; KS excluded). "
        f"† = peer that did not reproduce its published order. {settings['peers_note']} "
        f"Wall time {settings['wall'] / 60:.1f} min ({settings['jobs']} processes).",
        "",
    ]
    if orders:
        lines += ["**Measured orders** (VPSDE, 1-D mixture, `logsnr`, lower_order_final=False):", ""]
        lines += [orders_markdown(orders), ""]
    for sde in sdes:
        lines += [verdict(rows, sde), ""]
        if any(r.stage == "final" and r.sde == sde for r in rows):
            lines += [f"**{sde}, head to head** (best of each side per NFE; final stage)", ""]
            lines += [head_to_head(rows, sde, marks), ""]
        lines += [f"**{sde}, default and best grid** (sweep)", "", table_markdown(rows, sde, True, marks), ""]
    for sde in sdes:
        lines += [f"**{sde}, every grid** (sweep)", "", table_markdown(rows, sde, False, marks), ""]
    return "\n".join(lines)


def write_results(rows: list[Row], orders: list[OrderRow], settings: dict[str, Any], stem: Path) -> str:
    """Write ``stem.md`` (the report), ``stem.png`` (the plot) and ``stem.json``; return the report."""
    text = report(rows, orders, settings)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(text + "\n")
    save_json(stem.with_suffix(".json"), settings, rows, orders)
    plot(rows, stem.with_suffix(".png"))
    return text


def render(path: Path) -> None:
    """Rewrite the report and the plot of a saved run (``.json``) next to it."""
    settings, rows, orders = load_json(path)
    write_results(rows, orders, settings, Path(path).with_suffix(""))
    print(f"wrote {Path(path).with_suffix('.md')} and .png")


# ------------------------------------------------------------------------------------------------ files


def save_json(path: Path, payload: dict, rows: list[Row], orders: list[OrderRow]) -> None:
    """``payload`` (settings) plus every row and order row, for re-rendering the report (:func:`load_json`)."""
    data = {**payload, "orders": [asdict(o) for o in orders], "rows": [asdict(r) for r in rows]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def load_json(path: Path) -> tuple[dict, list[Row], list[OrderRow]]:
    """Inverse of :func:`save_json`: (settings, rows, order rows)."""
    data = json.loads(Path(path).read_text())
    rows = [Row(**{**r, "cells": [Cell(**c) for c in r["cells"]]}) for r in data.pop("rows")]
    orders = [OrderRow(**{**o, "nfes": tuple(o["nfes"])}) for o in data.pop("orders")]
    return data, rows, orders


def plot(rows: list[Row], path: Path, sdes: Sequence[str] | None = None) -> None:
    """Log-log ratio vs NFE, one panel per SDE: thin lines, every method at its best sweep grid (sdekit circles,
    peers squares); thick lines, the head-to-head (best sdekit / best peer per NFE, final stage, mean of seeds)."""
    import matplotlib  # lazy: plotting only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: plotting only

    sdes = list(sdes or dict.fromkeys(r.sde for r in rows))
    best = best_grids(rows)
    fig, axes = plt.subplots(1, len(sdes), figsize=(6.5 * len(sdes), 8.5), squeeze=False)
    methods = list(dict.fromkeys(r.method for r in rows))
    cmap = plt.get_cmap("tab20")
    nfes = sorted({c.target for r in rows for c in r.cells})
    for ax, sde in zip(axes[0], sdes):
        for (s, method, grid), seed_rows in group(rows).items():
            if s != sde or grid != best[(s, method)]:
                continue
            pts = [(c.target, _mean_ratio(seed_rows, c.target)) for c in seed_rows[0].cells]
            pts = [p for p in pts if p[1] is not None]
            if pts:
                xs, ys = zip(*pts)
                marker = "o" if seed_rows[0].family == "sdekit" else "s"
                color = cmap(methods.index(method) % 20)
                ax.loglog(xs, ys, "-", marker=marker, ms=3, lw=0.9, alpha=0.8, color=color, label=seed_rows[0].label)
        for side, (style, color, name) in enumerate((("-", "k", "best sdekit"), ("--", "tab:red", "best peer"))):
            pts = []
            for nfe, *best_rows in head_to_head_rows(rows, sde):
                if best_rows[side] is not None:
                    pts.append((nfe, _mean_ratio(best_rows[side], nfe)))
            if pts:
                xs, ys = zip(*pts)
                ax.loglog(xs, ys, style, color=color, lw=2.6, label=f"{name} per NFE (final, n = 2e5)")
        ax.axhline(1.0, color="k", lw=1, ls=":")
        ax.set_xticks(nfes)
        ax.set_xticklabels([str(v) for v in nfes])
        ax.minorticks_off()
        ax.set_title(f"{sde}: sliced-KS / critical value vs NFE", fontsize=10)
        ax.set_xlabel("NFE (counted)")
        ax.set_ylabel("D / D_crit  (<= 1: indistinguishable)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6.5, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.suptitle(
        "Few-step sampling on the exact oracle: thin = each method at its best grid (sweep; sdekit circles, "
        "diffusers squares); thick = best of each side per NFE",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    from PIL import Image  # lazy: a matplotlib dependency; 64 colours keep the plot at ~130 kB instead of 530 kB

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
