"""The demo's figures, drawn again from the quick run's report.json and checked on the figure objects."""

from __future__ import annotations

import re

import torch

from sdekit.demo import _config, _plots, _results


def test_samples_figure_has_ticks(quick):
    from sdekit.analytic import GaussianMixture

    rep = _results.load_report(quick.out / "report.json")
    solvers = list(dict.fromkeys(r.solver for r in rep.runs))
    x = GaussianMixture(_config.MEANS, _config.STDS, _config.WEIGHTS).sample(
        500, torch.Generator().manual_seed(quick.seed)
    )
    fig = _plots.samples_figure(rep, x, {(s, "exact"): x for s in solvers}, solvers)
    fig.canvas.draw()
    cols = len(solvers) + 1
    assert len(fig.axes) == 2 * cols
    for k, ax in enumerate(fig.axes):
        row, col = divmod(k, cols)
        for ticks, (lo, hi) in ((ax.get_xticks(), ax.get_xlim()), (ax.get_yticks(), ax.get_ylim())):
            assert sum(lo <= v <= hi for v in ticks) >= 2, (row, col)
        # labels on the outer panels (shared axes): bottom row and left column
        xlabels = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        ylabels = [t.get_text() for t in ax.get_yticklabels() if t.get_visible() and t.get_text()]
        assert (len(xlabels) >= 2) == (row == 1) and (len(ylabels) >= 2) == (col == 0), (row, col)
    finest = {(r.solver, r.model): r for r in rep.runs if r.error is None}
    for j, s in enumerate(solvers):
        assert f"KS/crit {finest[(s, 'learned')].ks_ratio:.2f}" in fig.axes[j + 1].get_title()
    _plots.pyplot().close(fig)


def test_error_figure_labels_adaptive_points_with_their_tolerance(quick):
    from matplotlib.text import Annotation

    rep = _results.load_report(quick.out / "report.json")
    fig = _plots.error_figure(rep, list(dict.fromkeys(r.solver for r in rep.runs)))
    (ax,) = fig.axes
    labels = [(a.get_text(), tuple(a.xy)) for a in ax.texts if isinstance(a, Annotation)]
    adaptive = [(r.tol, (r.nfe, r.ks_ratio)) for r in rep.runs if r.tol is not None and r.error is None]
    assert len(adaptive) == 2 * (len(_config.QUICK.tols) + len(_config.QUICK.sde_tols))  # dopri5 and srk, both models
    assert all(re.fullmatch(r"\d(\.\d+)?e-\d+", text) for text, _ in labels), labels
    assert sorted((float(text), xy) for text, xy in labels) == sorted(adaptive)
    _plots.pyplot().close(fig)
    assert [_results.tol_label(v) for v in (1e-1, 1e-3, 2.5e-4, 1e-10)] == ["1e-1", "1e-3", "2.5e-4", "1e-10"]
