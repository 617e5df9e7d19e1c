r"""``sdekit demo --data digits``: the 8 x 8 digits, a small convolutional score network per SDE (VP and VE by
default), few-step and adaptive samples, test-set bits/dim and a nearest-neighbour check against copying.

Stages, per SDE: train :class:`~sdekit.demo._digits_model.DigitsNet` with :func:`sdekit.losses.dsm` on dequantized
training images (:func:`sdekit.demo._stages.train`, the 2-D demo's loop); sample it from the same :math:`x_T` with
``sdekit.sample(..., steps=k)`` (no ``solver=``: the measured best few-step sampler,
:func:`sdekit.solvers.default_sampler`) and with every ``--solver`` (default ``ode``: dopri5, adaptive); bits/dim of
the dequantized test images with :func:`sdekit.logp` (Hutchinson trace) and :func:`sdekit.bits_per_dim`; distances
of every sample, and of every test image, to its nearest training image. Every random stream is a generator seeded
by (``--seed``, a name), recorded in ``report.json``.
"""

from __future__ import annotations

import argparse
import math
import time
import zlib
from pathlib import Path
from typing import Any

import torch

import sdekit

from .._dequantize import bits_per_dim, dequantize
from .._likelihood import DEFAULT_LIKELIHOOD_EPS
from ..solvers import available, default_sampler
from ._digits_data import DIGITS_FULL, DIGITS_QUICK, LEVELS, DequantizedImages, DigitsConfig, load_digits, split
from ._digits_model import DigitsNet
from ._digits_report import write_outputs
from ._results import sde_label
from ._stages import error_text, progress, train

__all__ = ["FEW_STEP", "NEAR_COPY", "digits_demo", "independent_pixels", "nearest_stats", "stream"]

FEW_STEP = "few_step"
"""The report's key of ``sdekit.sample(..., steps=k)`` with no ``solver=``; other samplers are keyed by name."""
NEAR_COPY = 8 * 2 / LEVELS
"""A sample is a near copy of a training image when their distance is below 8 x 2/17 = 0.94 in [-1, 1]^64: a root
mean square difference per pixel under one level (2/17)."""
TRAIN_EPS = 1e-5
"""Smallest training time: :func:`sdekit.logp`'s default eps, where the bits/dim are measured."""


def stream(seed: int, *names: str) -> tuple[torch.Generator, int]:
    """A CPU generator for one named random stream of the run, and its integer seed (recorded in the report)."""
    value = (seed * 1_000_003 + zlib.crc32("|".join(names).encode())) % 2**63
    return torch.Generator().manual_seed(value), value


# --------------------------------------------------------------------------- stages
def _sampler_kwargs(name: str, cfg: DigitsConfig, steps: int) -> dict[str, Any]:
    """``sdekit.sample`` keywords of one sampler: the few-step default at ``steps`` NFE, an adaptive solver at
    rtol = atol = ``cfg.ode_tol`` (srk: 10x that), a fixed-step solver at ``steps`` steps."""
    if name == FEW_STEP:
        return {"steps": steps}
    cls = available()[name]
    if cls.adaptive:
        tol = cfg.ode_tol * (10 if cls.kind == "sde" else 1)
        return {"solver": name, "rtol": tol, "atol": tol, "steps": None}
    return {"solver": name, "steps": steps}


def sample_sde(
    net: DigitsNet, sde: Any, samplers: list[str], cfg: DigitsConfig, steps: int, x_T: torch.Tensor, seed: int, key: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Every sampler from the same ``x_T`` (with Tweedie's final denoising step); per sampler the report's entry
    (solver, options, NFE counted by sdekit, seconds) and the samples."""
    entries: dict[str, Any] = {}
    samples: dict[str, torch.Tensor] = {}
    for name in samplers:
        kwargs = _sampler_kwargs(name, cfg, steps)
        gen, value = stream(seed, key, "sample", name)
        entry: dict[str, Any] = {"seed": value, **{k: v for k, v in kwargs.items() if v is not None}}
        if name == FEW_STEP:
            choice = default_sampler(sde, steps)
            entry.update(chosen=choice.solver, options=dict(choice.options))
        try:
            with torch.no_grad():
                x, info = sdekit.sample(
                    net,
                    sde,
                    tuple(x_T.shape),
                    x_T=x_T,
                    parameterization="eps",
                    generator=gen,
                    return_info=True,
                    **kwargs,
                )
            entry.update(solver=info.solver, nfe=info.nfe, seconds=info.seconds)
            samples[name] = x
        except sdekit.errors.SdekitError as err:  # a sampler that fails is a report entry, not a crash
            entry["error"] = error_text(err)
        entries[name] = entry
    return entries, samples


def held_out_bits_per_dim(
    net: DigitsNet, sde: Any, x: torch.Tensor, cfg: DigitsConfig, seed: int, key: str
) -> tuple[dict[str, Any], torch.Tensor | None]:
    r"""Bits/dim of the dequantized test images ``x``: :func:`sdekit.logp` (PF-ODE, Hutchinson trace, dopri5 at
    rtol = atol = ``cfg.logp_tol``, eps = 1e-5, prior ``sde.prior``) then :func:`sdekit.bits_per_dim` (17 levels).

    ``se`` is the standard error of the mean over images: each image's value is one draw of (image, dequantization,
    probes), so it covers all three. ``hutchinson_sd`` isolates the probes' part: the same images again with
    independent probes, :math:`\mathrm{sd}(b_1 - b_2)/\sqrt2` per image (on the first ``cfg.n_logp // 4``)."""
    out: dict[str, Any] = {"n": x.shape[0], "n_probes": cfg.n_probes, "rtol": cfg.logp_tol, "atol": cfg.logp_tol}
    out.update(eps=DEFAULT_LIKELIHOOD_EPS, trace="hutchinson", levels=LEVELS, prior="sde.prior")
    values: list[torch.Tensor] = []
    for rep, rows in (("", x), ("repeat", x[: max(2, x.shape[0] // 4)])):
        gen, value = stream(seed, key, "logp", rep)
        try:
            with torch.no_grad():
                lp, info = sdekit.logp(
                    net, sde, rows, trace="hutchinson", n_probes=cfg.n_probes, rtol=cfg.logp_tol, atol=cfg.logp_tol,
                    parameterization="eps", generator=gen, return_info=True,
                )  # fmt: skip
        except sdekit.errors.SdekitError as err:
            out["error"] = error_text(err)
            return out, None
        values.append(bits_per_dim(lp.double(), rows, levels=LEVELS))
        out[f"probe_seed{'_' + rep if rep else ''}"] = value
        if not rep:
            out.update(nfe=info.nfe, seconds=info.seconds)
    bpd, again = values
    out.update(mean=float(bpd.mean()), se=float(bpd.std() / math.sqrt(bpd.numel())), sd=float(bpd.std()))
    out["hutchinson_sd"] = float((bpd[: again.numel()] - again).std() / math.sqrt(2))
    return out, bpd


def independent_pixels(train_k: torch.Tensor, test_k: torch.Tensor) -> dict[str, float]:
    r"""The yardstick: bits/dim of the test images under independent pixels, each with its level histogram from the
    training images (add-one smoothing), :math:`-\frac1D\sum_i \log_2 \hat\pi_i(k_i)`; mean and standard error over
    the test images. A model that learned only each pixel's marginal gets this; uniform levels give log2(17)."""
    train_flat, test_flat = train_k.reshape(train_k.shape[0], -1), test_k.reshape(test_k.shape[0], -1)
    counts = torch.ones(train_flat.shape[1], LEVELS, dtype=torch.float64)  # add-one smoothing
    counts.scatter_add_(1, train_flat.T, torch.ones(train_flat.T.shape, dtype=torch.float64))
    probs = counts / counts.sum(1, keepdim=True)
    bpd = -torch.log2(probs.gather(1, test_flat.T)).mean(0)
    return {"mean": float(bpd.mean()), "se": float(bpd.std() / math.sqrt(bpd.numel())), "n": bpd.numel()}


def nearest_stats(points: torch.Tensor, train: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
    """Distances of each of ``points`` (n, ...) to its nearest row of ``train`` (m, ...) in float64: quantiles, the
    fraction below :data:`NEAR_COPY`, and the nearest training indices."""
    dist = torch.cdist(points.reshape(points.shape[0], -1).double(), train.reshape(train.shape[0], -1).double())
    best, idx = dist.min(dim=1)
    q = torch.quantile(best, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    stats = {"n": best.numel(), "min": float(best.min()), "q05": float(q[0]), "median": float(q[1]), "q95": float(q[2])}
    stats["near_copy_fraction"] = float((best < NEAR_COPY).double().mean())
    return stats, idx


# --------------------------------------------------------------------------- the run
def _one_sde(
    key: str, sde: Any, data: dict[str, Any], cfg: DigitsConfig, samplers: list[str], steps: int, seed: int, rep: dict
) -> dict[str, torch.Tensor]:
    """Train, sample, bits/dim and nearest neighbours for one SDE; fills ``rep`` and returns the samples."""
    train_x: torch.Tensor = data["train_x"]
    torch.manual_seed(seed)  # network initialisation: the same for every SDE
    mean, var = train_x.mean(0), float(train_x.var(0).mean())
    net = DigitsNet(sde, TRAIN_EPS, mean, var, channels=cfg.width)
    gen, value = stream(seed, key, "train")
    rep["seeds"][f"{key}_train"] = value
    loss = {"lr": cfg.lr, "weighting": cfg.weighting, "time_sampling": cfg.time_sampling}
    rep["train"][key] = train(net, sde, data["batches"], cfg, TRAIN_EPS, gen, **loss, desc=f"train {key} (dsm)")
    rep["seconds"][f"training_{key}"] = rep["train"][key]["seconds"]
    net.eval().requires_grad_(False)

    t0 = time.perf_counter()
    gen, value = stream(seed, key, "x_T")
    rep["seeds"][f"{key}_x_T"] = value
    x_T = sde.prior.sample((cfg.n_samples, *train_x.shape[1:]), generator=gen).to(torch.float32)
    rep["samplers"][key], samples = sample_sde(net, sde, samplers, cfg, steps, x_T, seed, key)
    rep["nfe"][key] = {name: e.get("nfe") for name, e in rep["samplers"][key].items()}
    rep["seconds"][f"sampling_{key}"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rep["bits_per_dim"][key], _ = held_out_bits_per_dim(net, sde, data["test_x"][: cfg.n_logp], cfg, seed, key)
    rep["seconds"][f"likelihood_{key}"] = time.perf_counter() - t0

    nn_rep = rep["nearest_neighbour"].setdefault("samples", {}).setdefault(key, {})
    for name, x in list(samples.items()):
        nn_rep[name], idx = nearest_stats(x, data["train_centres"])
        samples[f"{name}:nearest"] = data["train_centres"][idx]
    return samples


def _load(seed: int, rep: dict) -> dict[str, Any]:
    """The shipped digits, split; the test images dequantized once (shared by every SDE: paired bits/dim)."""
    images, _ = load_digits()
    train_k, test_k = split(images)
    gen, value = stream(seed, "test-dequantization")
    rep["seeds"]["test_dequantization"] = value
    test_x = dequantize(test_k, levels=LEVELS, generator=gen, dtype=torch.float32)
    centres = 2 * (train_k.to(torch.float32) + 0.5) / LEVELS - 1
    rep["data"] = {"images": images.shape[0], "train": train_k.shape[0], "test": test_k.shape[0], "levels": LEVELS}
    rep["nearest_neighbour"]["test"], _ = nearest_stats(test_x, centres)
    pixels = independent_pixels(train_k, test_k[: rep["config"]["n_logp"]])
    rep["bits_per_dim_baselines"] = {"uniform_levels": math.log2(LEVELS), "independent_pixels": pixels}
    return {"train_x": centres, "test_x": test_x, "train_centres": centres, "batches": DequantizedImages(train_k)}


def digits_demo(sdes: dict[str, Any], samplers: list[str], steps: int | None, args: argparse.Namespace) -> dict:
    """The digits demo (options already checked); writes ``report.json``, ``report.md`` and the PNGs to ``--out``
    and returns the report."""
    started = time.perf_counter()
    cfg = DIGITS_QUICK if args.quick else DIGITS_FULL
    steps = cfg.few_steps if steps is None else steps
    samplers = [FEW_STEP, *(s for s in samplers if s != FEW_STEP)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rep: dict[str, Any] = {
        "command": "sdekit demo --data digits" + (" --quick" if args.quick else "") + f" --seed {args.seed}",
        "seed": args.seed,
        "quick": bool(args.quick),
        "config": dict(cfg.__dict__, few_steps=steps),
        "sdes": {k: sde_label(s) for k, s in sdes.items()},
        "near_copy_threshold": NEAR_COPY,
        **{k: {} for k in ("seeds", "train", "samplers", "nfe", "bits_per_dim", "nearest_neighbour", "seconds")},
    }
    rep["seeds"]["network_init"] = args.seed
    data = _load(args.seed, rep)
    samples = {}
    bar = progress(total=len(sdes), desc="SDEs", unit="sde")
    for key, sde in sdes.items():
        samples[key] = _one_sde(key, sde, data, cfg, samplers, steps, args.seed, rep)
        bar.update(1)
    bar.close()
    rep["seconds"]["training"] = sum(rep["seconds"][f"training_{k}"] for k in sdes)
    write_outputs(out, rep, data, samples, plots=not getattr(args, "no_plots", False), started=started)
    return rep
