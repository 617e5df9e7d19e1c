"""The digits demo's outputs: ``report.json``, the headline on stdout (quoted in ``report.md``), ``report.md``,
``samples.png`` (sample grids beside real test digits) and ``nearest.png`` (samples above their nearest training
images)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ._plots import pyplot
from ._results import fmt, write_json

__all__ = ["montage", "samples_figure", "nearest_figure", "summary_lines", "write_markdown", "write_outputs"]

GRID = 8  # a panel shows GRID x GRID images


def montage(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The first ``rows * cols`` single-channel images of ``x`` (n, 1, H, W), clipped to [-1, 1], tiled with
    one-pixel gaps of NaN (drawn in the colour map's "bad" colour; missing images are NaN too); shape
    (rows (H + 1) - 1, cols (W + 1) - 1)."""
    h, w = x.shape[-2:]
    tiles = torch.full((rows * cols, h + 1, w + 1), float("nan"))
    n = min(rows * cols, x.shape[0])
    tiles[:n, :h, :w] = x[:n, 0].detach().float().cpu().clamp(-1, 1)
    grid = tiles.reshape(rows, cols, h + 1, w + 1).permute(0, 2, 1, 3).reshape(rows * (h + 1), cols * (w + 1))
    return grid[:-1, :-1]


def _show(ax: Any, image: torch.Tensor, title: str) -> None:
    """A montage in grey levels (-1 white, 1 black: ink on paper), gaps light blue, no ticks."""
    cmap = pyplot().get_cmap("gray_r").with_extremes(bad="#c8d4e0")
    ax.imshow(image.numpy(), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def samples_figure(rep: dict, test_x: torch.Tensor, samples: dict[str, dict[str, torch.Tensor]]) -> Any:
    """``samples.png``: 64 real test digits, then per SDE (rows) 64 samples of each sampler (columns), with the
    sampler, its NFE and the SDE's test bits/dim in the titles."""
    plt = pyplot()
    sdes = list(samples)
    names = list(rep["samplers"][sdes[0]]) if sdes else []
    size = (2.3 * (len(names) + 1), 0.4 + 2.6 * len(sdes))
    fig, axes = plt.subplots(len(sdes), len(names) + 1, figsize=size, squeeze=False, layout="constrained")
    for row, key in enumerate(sdes):
        real = axes[row][0]
        if row == 0:
            _show(real, montage(test_x, GRID, GRID), "real test digits")
        else:
            real.axis("off")
        bpd = rep["bits_per_dim"][key]
        label = f"{key.upper()}: {bpd['mean']:.2f} bits/dim" if "mean" in bpd else f"{key.upper()}"
        for col, name in enumerate(names):
            entry = rep["samplers"][key][name]
            ax = axes[row][col + 1]
            if name not in samples[key]:
                ax.text(0.5, 0.5, "failed", ha="center", transform=ax.transAxes)
                ax.axis("off")
                continue
            solver = entry.get("chosen", entry.get("solver"))
            _show(ax, montage(samples[key][name], GRID, GRID), f"{label}\n{solver}, {entry['nfe']} NFE")
    fig.suptitle("sdekit demo --data digits: samples (denoised, clipped to [-1, 1]) beside real digits", fontsize=9)
    return fig


def nearest_figure(rep: dict, samples: dict[str, dict[str, torch.Tensor]], n: int = 16) -> Any:
    """``nearest.png``: per SDE and sampler, ``n`` samples (top row) above their nearest training images."""
    plt = pyplot()
    panels = [(key, name) for key, per in samples.items() for name in per if not name.endswith(":nearest")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(0.45 * n + 0.6, 1.15 * len(panels)), squeeze=False)
    for ax, (key, name) in zip(axes[:, 0], panels):
        pair = torch.cat([samples[key][name][:n], samples[key][f"{name}:nearest"][:n]])
        stats = rep["nearest_neighbour"]["samples"][key][name]
        title = f"{key.upper()} {name}: samples (top), nearest training images (bottom); median distance "
        title += f"{stats['median']:.2f}"
        _show(ax, montage(pair, 2, n), title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- text
def summary_lines(rep: dict, report_path: Path | None = None) -> list[str]:
    """The headline, printed on stdout at the end and quoted at the top of ``report.md``."""
    d = rep["data"]
    lines = [
        f"sdekit demo --data digits: {d['train']:,} training / {d['test']:,} test images (8x8, {d['levels']} levels), "
        f"seed {rep['seed']}"
    ]
    for key, name in rep["sdes"].items():
        t, b = rep["train"][key], rep["bits_per_dim"][key]
        bpd = f"{b['mean']:.3f} ± {b['se']:.3f}" if "mean" in b else f"failed ({b.get('error')})"
        nfe = ", ".join(
            f"{s} ({e['chosen']}) {e.get('nfe', 'failed')}" if "chosen" in e else f"{s} {e.get('nfe', 'failed')}"
            for s, e in rep["samplers"][key].items()
        )
        lines.append(
            f"  {key} {name}: trained {t['steps']:,} steps in {t['seconds']:.0f} s; test bits/dim {bpd} "
            f"(mean ± se over {b['n']} images); NFE: {nfe}"
        )
    base = rep["bits_per_dim_baselines"]
    pixels = base["independent_pixels"]
    lines.append(
        f"  yardsticks, bits/dim of the same test images: independent pixels (training histograms) "
        f"{pixels['mean']:.3f} ± {pixels['se']:.3f}; uniform over the levels {base['uniform_levels']:.3f}"
    )
    nn = rep["nearest_neighbour"]
    parts = [f"test images median {nn['test']['median']:.2f} ({100 * nn['test']['near_copy_fraction']:.1f}%)"]
    for key, per in nn.get("samples", {}).items():
        parts += [f"{key} {s} {v['median']:.2f} ({100 * v['near_copy_fraction']:.1f}%)" for s, v in per.items()]
    lines.append(
        f"  distance to the nearest training image (near copies: < {rep['near_copy_threshold']:.2f}): "
        + "; ".join(parts)
    )
    if report_path is not None:
        lines.append(f"  report: {report_path} ({rep['seconds'].get('total', 0):.0f} s)")
    return lines


def _table(title: str, text: str, header: list[str], rows: list[list[Any]]) -> list[str]:
    """A report section: heading, a sentence, and a markdown table."""
    out = [
        "",
        f"## {title}",
        "",
        *([text, ""] if text else []),
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _train_row(label: str, t: dict) -> list[Any]:
    loss = f"{t['loss_first_10pct']:.2f} → {t['loss_last_10pct']:.2f}"
    return [label, f"{t['steps']:,}", t["batch"], f"{t['parameters']:,}", loss, f"{t['seconds']:.1f}"]


def _bpd_row(key: str, b: dict) -> list[Any]:
    if "mean" not in b:
        return [key, f"failed: {b.get('error')}", "", "", "", "", ""]
    mean = f"{b['mean']:.3f} ± {b['se']:.3f}"
    return [key, mean, f"{b['sd']:.3f}", f"{b['hutchinson_sd']:.3f}", b["n"], b["nfe"], f"{b['seconds']:.1f}"]


def _sampler_rows(rep: dict) -> list[list[Any]]:
    rows = []
    for key, per in rep["samplers"].items():
        for name, e in per.items():
            nn = rep["nearest_neighbour"].get("samples", {}).get(key, {}).get(name, {})
            opts = ", ".join(f"{k}={v}" for k, v in e.get("options", {}).items())
            solver = e.get("chosen", e.get("solver", "")) + (f" ({opts})" if opts else "")
            rows.append([key, name, solver, e.get("nfe", e.get("error")), fmt(e.get("seconds"), ".1f")])
            rows[-1] += [fmt(nn.get("median")), fmt(nn.get("near_copy_fraction"), ".1%")]
    return rows


def write_markdown(rep: dict, path: Path, plots: bool) -> None:
    """``report.md``: the headline, then tables of training, samplers, bits/dim and wall times."""
    lines = ["# sdekit demo report: digits", "", f"`{rep['command']}`", "", "```text", *summary_lines(rep), "```"]
    cfg = rep["config"]
    lines += _table(
        "Training",
        f"`sdekit.losses.dsm` (eps prediction, weighting {cfg['weighting']}, times {cfg['time_sampling']}), Adam with "
        f"a one-cycle schedule (peak lr {cfg['lr']:g}) on freshly dequantized training images.",
        ["SDE", "steps", "batch", "parameters", "DSM loss first 10% → last 10%", "s"],
        [_train_row(rep["sdes"][k], t) for k, t in rep["train"].items()],
    )
    lines += _table(
        "Samplers",
        f"{cfg['n_samples']} samples per sampler from the same x_T, NFE counted by sdekit; distance of each sample to "
        f"its nearest training image (median; near copies: below {rep['near_copy_threshold']:.2f}).",
        ["SDE", "sampler", "solver (options)", "NFE", "s", "NN median", "near copies"],
        _sampler_rows(rep),
    )
    lines += _table(
        "Bits/dim of the test images",
        "`sdekit.logp` (Hutchinson trace) then `sdekit.bits_per_dim` (17 levels); se: standard error of the mean over "
        "images; probe sd: the Hutchinson probes' share of the per-image sd.",
        ["SDE", "mean ± se", "sd", "probe sd", "n", "NFE", "s"],
        [_bpd_row(k, b) for k, b in rep["bits_per_dim"].items()],
    )
    lines += _table("Wall times", "", ["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in rep["seconds"].items()])
    if plots:
        lines += ["", "![samples](samples.png)", "", "![nearest training images](nearest.png)"]
    path.write_text("\n".join(lines) + "\n")


def write_outputs(
    out: Path, rep: dict, data: dict[str, Any], samples: dict[str, dict[str, torch.Tensor]], plots: bool, started: float
) -> None:
    """The figures (unless ``plots`` is False), ``report.json``, ``report.md`` and the headline on stdout."""
    if plots:
        t0 = time.perf_counter()
        plt = pyplot()
        for name, draw in (
            ("samples.png", lambda: samples_figure(rep, data["test_x"], samples)),
            ("nearest.png", lambda: nearest_figure(rep, samples)),
        ):
            fig = draw()
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
        rep["seconds"]["plots"] = time.perf_counter() - t0
    rep["seconds"]["total"] = time.perf_counter() - started
    write_json(rep, out / "report.json")
    write_markdown(rep, out / "report.md", plots)
    print("\n".join(summary_lines(rep, out / "report.md")), flush=True)
