"""The demo's figures: samples per solver, sample error against NFE, trajectories, likelihood calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ._results import DemoReport, tol_label

__all__ = ["pyplot", "samples_figure", "error_figure", "write_plots"]


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (the demo only writes files)."""
    # lazy: matplotlib only when plots are written
    import matplotlib

    matplotlib.use("Agg", force=True)
    # lazy: matplotlib only when plots are written
    import matplotlib.pyplot as plt

    return plt


def _limits(data_x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Axis limits around the first 2,000 data points (1 unit of margin)."""
    pts = data_x[:2000].cpu().float()
    return (pts.min(0).values - 1.0).tolist(), (pts.max(0).values + 1.0).tolist()


def samples_figure(
    rep: DemoReport, data_x: torch.Tensor, finest: dict[tuple[str, str], torch.Tensor], solvers_: list[str]
) -> Any:
    """``samples.png``: data and each solver's finest samples, learned model (top) and exact score (bottom), on
    shared axes with ticks (labels on the outer panels)."""
    plt = pyplot()

    m = 2000  # points per scatter panel
    pts = data_x[:m].cpu().float()
    lo, hi = _limits(data_x)

    def panel(ax: Any, x: torch.Tensor | None, title: str, color: str) -> None:
        if x is not None:
            x = x[:m].cpu().float()
            ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.4, color=color, rasterized=True)
        else:
            ax.text(0.5, 0.5, "failed", ha="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)

    best = {(r.solver, r.model): r for r in rep.runs if r.error is None}
    cols = len(solvers_) + 1
    fig, axes = plt.subplots(2, cols, figsize=(2.1 * cols, 4.6), squeeze=False, sharex=True, sharey=True)
    axes[0][0].set_xlim(lo[0], hi[0])
    axes[0][0].set_ylim(lo[1], hi[1])
    for row, kind in enumerate(("learned", "exact")):
        panel(axes[row][0], pts, "data (exact p_0)", "k")
        axes[row][0].set_ylabel(f"{kind} score", fontsize=9)
        for j, s in enumerate(solvers_):
            r = best.get((s, kind))
            title = s if r is None else f"{s} ({r.nfe} NFE)\nKS/crit {r.ks_ratio:.2f}"
            panel(axes[row][j + 1], finest.get((s, kind)), title, "C0" if kind == "learned" else "C1")
    fig.suptitle(f"sdekit demo: samples per solver (finest level), SDE {rep.sde}", fontsize=10)
    fig.tight_layout()
    return fig


def error_figure(rep: DemoReport, solvers_: list[str]) -> Any:
    """``error_vs_nfe.png``: KS/crit against NFE per solver and model; adaptive points labelled with their
    tolerance (learned above the point, exact below)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8.4, 4.6))
    for j, s in enumerate(solvers_):
        for kind, style, dy in (("learned", "o-", 4), ("exact", "s--", -9)):
            rs = [r for r in rep.runs if r.solver == s and r.model == kind and r.error is None]
            if not rs:
                continue
            ax.loglog([r.nfe for r in rs], [r.ks_ratio for r in rs], style, color=f"C{j}", ms=4, label=f"{s} ({kind})")
            for r in rs:
                if r.tol is not None:
                    ax.annotate(
                        tol_label(r.tol),
                        (r.nfe, r.ks_ratio),
                        xytext=(3, dy),
                        textcoords="offset points",
                        fontsize=6,
                        color=f"C{j}",
                    )
    ax.margins(x=0.08)  # room for the labels of the last points
    ax.axhline(1.0, color="k", lw=0.8)
    ax.text(ax.get_xlim()[0], 1.02, f" noise floor (n = {rep.n_samples:,}, alpha = {rep.ks_alpha:g})", fontsize=8)
    ax.set_xlabel("NFE (model evaluations)")
    ax.set_ylabel("sliced KS / critical value")
    ax.set_title(
        "sample error vs NFE (solid: learned model, dashed: exact score;\nadaptive runs labelled with rtol = atol)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def _trajectories_figure(
    data_x: torch.Tensor, paths: dict[str, torch.Tensor], path_times: torch.Tensor, forward: torch.Tensor | None
) -> Any:
    """``trajectories.png``: PF-ODE paths per model over the data, and the first coordinate against t (forward
    SDE paths from data in grey)."""
    plt = pyplot()
    pts = data_x[:2000].cpu()
    lo, hi = _limits(data_x)
    fig, axes = plt.subplots(1, len(paths) + 1, figsize=(4.0 * (len(paths) + 1), 3.8), squeeze=False)
    for ax, (kind, p) in zip(axes[0], paths.items()):
        p = p.cpu().float()
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.15, color="k", rasterized=True)
        for i in range(p.shape[1]):
            ax.plot(p[:, i, 0], p[:, i, 1], lw=0.8, alpha=0.8, color=f"C{i % 10}")
            ax.plot(p[0, i, 0], p[0, i, 1], "x", ms=3, color=f"C{i % 10}")
            ax.plot(p[-1, i, 0], p[-1, i, 1], "o", ms=3, color=f"C{i % 10}")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(f"PF-ODE paths, {kind} score (x: x_T, o: x_eps)", fontsize=9)
    ax = axes[0][-1]
    if forward is not None:
        fwd = forward.cpu().float()
        for i in range(fwd.shape[1]):
            ax.plot(path_times.flip(0), fwd[:, i, 0], "-", lw=0.6, alpha=0.5, color="0.5")
    for p, style in zip(paths.values(), ("-", "--")):
        p = p.cpu().float()
        for i in range(min(p.shape[1], 10)):
            ax.plot(path_times, p[:, i, 0], style, lw=0.8, color=f"C{i % 10}")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("t (log scale, T → eps)")
    ax.set_ylabel("first coordinate")
    ax.set_title(
        "grey: forward SDE from data (sdekit.simulate);\nPF-ODE from x_T: solid learned, dashed exact", fontsize=8
    )
    fig.tight_layout()
    return fig


def _calibration_figure(rep: DemoReport, lp_values: dict[str, torch.Tensor]) -> Any:
    """``logp_calibration.png``: each model's logp against the exact log p_eps of the held-out points."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ex = lp_values["exact"].cpu()
    for kind, color in (("learned", "C0"), ("exact", "C1")):
        ax.scatter(ex, lp_values[kind], s=3, alpha=0.5, color=color, label=f"{kind} score")
    a, b = float(ex.min()), float(ex.max())
    ax.plot([a, b], [a, b], "k-", lw=0.8, label="y = x")
    ax.set_xlabel("exact log p_eps(x)")
    ax.set_ylabel("sdekit.logp(model, x)")
    gap = rep.logp["learned"].get("gap_mean")
    ax.set_title("logp calibration" + ("" if gap is None else f" (learned gap {gap:.3f} nats)"), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_plots(
    out: Path,
    rep: DemoReport,
    data_x: torch.Tensor,
    finest: dict[tuple[str, str], torch.Tensor],
    paths: dict[str, torch.Tensor],
    path_times: torch.Tensor,
    forward: torch.Tensor | None,
    lp_values: dict[str, torch.Tensor],
    solvers_: list[str],
) -> None:
    """Write the four PNGs of a run to ``out``."""
    plt = pyplot()
    for name, draw in (
        ("samples.png", lambda: samples_figure(rep, data_x, finest, solvers_)),
        ("error_vs_nfe.png", lambda: error_figure(rep, solvers_)),
        ("trajectories.png", lambda: _trajectories_figure(data_x, paths, path_times, forward)),
        ("logp_calibration.png", lambda: _calibration_figure(rep, lp_values)),
    ):
        fig = draw()  # one figure open at a time
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
