"""The figures of the Fokker–Planck checks: a grid of panels saved as a PNG, and a histogram against a density."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._core import CheckResult
from .fokker_planck import FPSolution

__all__ = ["figure", "hist_panel", "with_figure"]


def figure(path: Path, draw: Callable[[list[Any]], None], panels: int, ncols: int = 4) -> str | None:
    """Draw ``panels`` axes (rows of ``ncols``) with ``draw(axes)`` into the PNG ``path``; returns its file name."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # pragma: no cover - matplotlib missing
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    ncols = max(1, min(ncols, panels))
    nrows = max(1, math.ceil(panels / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
    flat = list(axes.reshape(-1))
    for ax in flat[panels:]:
        ax.set_visible(False)
    draw(flat[:panels])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def hist_panel(ax: Any, sol: FPSolution, k: int, row: dict, title: str) -> None:
    s = sol.solver
    edges, counts, n = row["edges"], row["counts"], row["n"]
    width = np.diff(edges)
    ax.bar(edges[:-1], counts[1:-1] / (n * width), width=width, align="edge", alpha=0.45, label="samples")
    ax.plot(s.centers, sol.p[k], "k-", lw=1.2, label="Fokker-Planck")
    pad = 0.15 * (edges[-1] - edges[0])
    ax.set_xlim(edges[0] - pad, edges[-1] + pad)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def with_figure(results: list[CheckResult], fig: str | None) -> list[CheckResult]:
    if fig and results:
        results[0] = dataclasses.replace(results[0], figure=fig)
    return results
