"""The demo proper: its stages in order, timed, then the report, the figures and the headline on stdout."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from .._stats import ks_critical_value, random_directions
from ..analytic import GaussianMixture
from ._config import ALPHA, FULL, K_DIRECTIONS, MEANS, QUICK, STDS, WEIGHTS, DemoConfig
from ._diagnose import diagnose
from ._model import ScoreNet
from ._plots import write_plots
from ._report import summary_lines, write_markdown
from ._results import DemoReport, sde_label, write_json
from ._stages import forward_paths, held_out_logp, path_times, pf_ode_paths, sample_all, train

__all__ = ["demo"]


def _new_report(sde: Any, args: argparse.Namespace, cfg: DemoConfig, device: torch.device, eps: float) -> DemoReport:
    """The report of this run before any stage: the command, the SDE and the sizes of the test."""
    cmd = "sdekit demo" + "".join(
        f" {a}" for a in (("--quick",) if args.quick else ()) + ("--sde", args.sde, "--seed", str(args.seed))
    )
    return DemoReport(
        command=cmd,
        sde=sde_label(sde),
        seed=args.seed,
        quick=bool(args.quick),
        device=str(device),
        eps=eps,
        n_samples=cfg.n_samples,
        ks_alpha=ALPHA,
        ks_directions=K_DIRECTIONS,
        ks_critical=ks_critical_value(cfg.n_samples, K_DIRECTIONS, ALPHA),
    )


def demo(
    sde: Any, solvers_: list[str], steps: tuple[int, ...] | None, device: torch.device, args: argparse.Namespace
) -> DemoReport:
    """The demo proper (options already validated); writes the report and returns it."""
    started = time.perf_counter()
    cfg = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed = args.seed
    eps = float(sde.default_eps)
    torch.manual_seed(seed)  # network initialisation
    gen = torch.Generator(device=device).manual_seed(seed)

    data = GaussianMixture(MEANS, STDS, WEIGHTS)
    oracle = data.diffuse(sde)
    x_fit = data.sample(10_000, gen, dtype=torch.float32, device=device)  # the net's input scaling
    net = ScoreNet(sde, eps, x_fit.mean(0), float(x_fit.var(0).mean()), width=cfg.width).to(device)

    rep = _new_report(sde, args, cfg, device, eps)
    rep.train = train(net, sde, data, cfg, eps, gen)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    rep.seconds["training"] = rep.train["seconds"]

    models = {"learned": (net, "eps"), "exact": (oracle, "score")}
    t0 = time.perf_counter()
    x_T = oracle.at(sde.T).sample(cfg.n_samples, gen, dtype=torch.float32, device=device)
    directions = random_directions(2, K_DIRECTIONS, seed=seed)
    rep.runs, finest = sample_all(models, sde, solvers_, cfg, steps, x_T, oracle.at(eps), directions, eps, seed)
    rep.seconds["sampling (all runs)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    x_test = oracle.sample(cfg.n_logp, eps, gen, dtype=torch.float32, device=device)
    rep.logp, lp_values = held_out_logp(models, sde, oracle, data, x_test, eps)
    rep.seconds["likelihood"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rep.diagnostics = diagnose(models, sde, oracle, rep.runs, x_T, oracle.at(eps), directions, eps, seed)
    rep.seconds["outlier diagnosis"] = time.perf_counter() - t0

    plots = not getattr(args, "no_plots", False)
    if plots:
        t0 = time.perf_counter()
        paths = {k: pf_ode_paths(m, p, sde, x_T[: cfg.n_paths], eps) for k, (m, p) in models.items()}
        data_x = data.sample(2000, gen, dtype=torch.float32, device=device)
        forward = forward_paths(sde, data_x[:12], eps, gen)
        write_plots(out, rep, data_x, finest, paths, path_times(sde, eps), forward, lp_values, solvers_)
        rep.seconds["plots"] = time.perf_counter() - t0
    rep.seconds["total"] = time.perf_counter() - started
    write_markdown(rep, out / "report.md", plots)
    write_json(rep, out / "report.json")
    print("\n".join(summary_lines(rep, out / "report.md")), flush=True)  # the headline results, on stdout
    return rep
