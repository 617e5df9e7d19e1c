r"""The demo's stages: train the network, sample every (solver, level, model), exact likelihoods, paths to plot.

Every sampling run of a ladder level is seeded by (seed, solver, level) (:func:`sample_level`): the learned and
exact runs of a level see the same noise, a run does not depend on which other runs were made, and the
diagnosis's reruns (:mod:`sdekit.demo._diagnose`) are paired with the table's run.
"""

from __future__ import annotations

import math
import sys
import time
import zlib
from typing import Any

import torch

import sdekit

from .. import losses, solvers
from .._stats import sliced_ks
from ..analytic import Gaussian
from ._config import ADAPTIVE_SDE_SOLVERS, ALPHA, LOGP_TOL, DemoConfig
from ._results import SampleRun

__all__ = [
    "progress",
    "error_text",
    "train",
    "ladder",
    "sample_level",
    "sample_all",
    "held_out_logp",
    "path_times",
    "forward_paths",
    "pf_ode_paths",
]


def progress(**kwargs: Any) -> Any:
    """A tqdm progress bar on stderr (stdout carries the headline results)."""
    # lazy: tqdm only when a progress bar is shown
    from tqdm.auto import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, **kwargs)


def error_text(err: BaseException) -> str:
    """A failure as one table cell: ``"ModelOutputError: <first line of the message>"``."""
    return f"{type(err).__name__}: {str(err).splitlines()[0]}"


# --------------------------------------------------------------------------- training
def train(
    model: torch.nn.Module,
    sde: Any,
    data: Any,
    cfg: Any,
    eps: float,
    gen: torch.Generator,
    *,
    lr: float = 3e-3,
    weighting: str = "likelihood",
    time_sampling: str = "likelihood",
    desc: str = "train (dsm)",
) -> dict:
    """Adam + one-cycle schedule (peak ``lr``) on :func:`sdekit.losses.dsm` (eps-parameterised; by default likelihood
    weighting and time sampling) with batches ``data.sample(cfg.batch, gen, dtype=float32, device=)``, for
    ``cfg.train_steps`` steps; returns the report's training numbers (``cfg.width``: the network's width)."""
    device = gen.device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=cfg.train_steps, pct_start=0.1)
    history = torch.zeros(cfg.train_steps, device=device)  # losses stay on the device: no per-step sync
    started = time.perf_counter()
    bar = progress(total=cfg.train_steps, desc=desc, unit="step")
    every = max(1, cfg.train_steps // 20)
    for i in range(cfg.train_steps):
        x0 = data.sample(cfg.batch, gen, dtype=torch.float32, device=device)
        loss = losses.dsm(
            model,
            sde,
            x0,
            parameterization="eps",
            weighting=weighting,
            time_sampling=time_sampling,
            eps=eps,
            generator=gen,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history[i] = loss.detach()
        if (i + 1) % every == 0:
            bar.set_postfix_str(f"loss {float(history[i + 1 - every : i + 1].mean()):.3f}", refresh=False)
            bar.update(every)
    bar.update(cfg.train_steps - bar.n)
    bar.close()
    seconds = time.perf_counter() - started
    h = history.cpu()
    k = max(1, cfg.train_steps // 10)
    return {
        "steps": cfg.train_steps,
        "batch": cfg.batch,
        "width": cfg.width,
        "parameters": sum(p.numel() for p in model.parameters()),
        "loss_first_10pct": float(h[:k].mean()),
        "loss_last_10pct": float(h[-k:].mean()),
        "seconds": seconds,
    }


# --------------------------------------------------------------------------- sampling
def ladder(solver: str, cfg: DemoConfig, steps: tuple[int, ...] | None) -> list[tuple[int | None, float | None]]:
    """(steps, tol) pairs of one solver: the --steps override, a tolerance ladder or a step ladder."""
    if steps is not None:
        return [(s, None) for s in steps]
    cls = solvers.available()[solver]
    if cls.adaptive and cls.kind == "ode":
        return [(None, tol) for tol in cfg.tols]
    if cls.adaptive and solver in ADAPTIVE_SDE_SOLVERS:
        return [(None, tol) for tol in cfg.sde_tols]
    key = "exp" if solver.startswith("exp") else ("pc" if solver in ("pc", "ald") else "default")
    return [(s, None) for s in cfg.steps[key]]


def sample_level(
    model: Any,
    param: str,
    sde: Any,
    solver: str,
    steps: int | None,
    tol: float | None,
    x_T: torch.Tensor,
    eps: float,
    seed: int,
    **options: Any,
) -> tuple[torch.Tensor, Any]:
    """:func:`sdekit.sample` of one ladder level (``steps`` or rtol = atol = ``tol``) from ``x_T`` down to ``eps``
    (no denoising step), with solver ``options`` and the level's generator; returns ``(samples, info)``."""
    key = zlib.crc32(f"{solver}|{steps}|{tol}".encode())
    gen = torch.Generator(device=x_T.device).manual_seed(seed * 1_000_003 + key)
    kwargs: dict[str, Any] = {"steps": steps}
    if tol is not None:
        kwargs.update(rtol=tol, atol=tol)
    return sdekit.sample(
        model,
        sde,
        tuple(x_T.shape),
        solver=solver,
        eps=eps,
        x_T=x_T,
        parameterization=param,
        denoise=False,
        generator=gen,
        return_info=True,
        **kwargs,
        **options,
    )


def sample_all(
    models: dict[str, Any],
    sde: Any,
    solvers_: list[str],
    cfg: DemoConfig,
    steps: tuple[int, ...] | None,
    x_T: torch.Tensor,
    target: Any,
    directions: torch.Tensor,
    eps: float,
    seed: int,
) -> tuple[list[SampleRun], dict[tuple[str, str], torch.Tensor]]:
    """Run every (solver, level, model); return the runs and the samples of each solver's finest level."""
    plan = [(s, st, tol) for s in solvers_ for st, tol in ladder(s, cfg, steps)]
    runs: list[SampleRun] = []
    finest: dict[tuple[str, str], torch.Tensor] = {}
    bar = progress(total=len(plan) * len(models), desc="sample", unit="run")
    for solver, st, tol in plan:
        for kind, (model, param) in models.items():
            bar.set_postfix_str(f"{kind} {solver} " + (f"steps={st}" if st else f"tol={tol:g}"))
            run = SampleRun(solver, kind, st, tol)
            try:
                x, info = sample_level(model, param, sde, solver, st, tol, x_T, eps, seed)
                run.nfe, run.seconds = info.nfe, info.seconds
                # float64 statistics on the CPU (one transfer per run; CUDA/MPS samples included)
                run.ks_ratio = sliced_ks(x.cpu(), target, directions, alpha=ALPHA).ratio
                finest[(solver, kind)] = x
            except sdekit.errors.SdekitError as err:  # a run that fails is a table entry, not a crash
                run.error = error_text(err)
            runs.append(run)
            bar.update(1)
    bar.close()
    return runs, finest


# --------------------------------------------------------------------------- likelihood
def held_out_logp(
    models: dict[str, Any], sde: Any, oracle: Any, data: Any, x: torch.Tensor, eps: float
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """:func:`sdekit.logp` of the held-out ``x`` per model against the exact log p_eps (the report's ``logp``), and
    the values per model (``"exact"``: the exact density)."""
    x64 = x.detach().cpu().double()  # exact densities and gaps in float64 on the CPU (MPS has no float64)
    exact = oracle.log_prob(x64, eps)
    prior = oracle.at(sde.T)  # the exact p_T: the gap measures the score, not sde.prior's approximation
    out: dict[str, Any] = {"n": x.shape[0], "rtol": LOGP_TOL, "atol": LOGP_TOL, "prior": "exact p_T"}
    values: dict[str, torch.Tensor] = {"exact": exact}
    bar = progress(total=len(models), desc="logp (PF-ODE)", unit="model")
    for kind, (model, param) in models.items():
        bar.set_postfix_str(kind)
        try:
            with torch.no_grad():
                lp, info = sdekit.logp(
                    model,
                    sde,
                    x,
                    eps=eps,
                    parameterization=param,
                    prior=prior,
                    rtol=LOGP_TOL,
                    atol=LOGP_TOL,
                    return_info=True,
                )
        except sdekit.errors.SdekitError as err:  # reported, not a crash
            out[kind] = {"error": error_text(err)}
            values[kind] = torch.full_like(exact, math.nan)
            bar.update(1)
            continue
        lp = lp.detach().cpu().double()
        gap = exact - lp
        values[kind] = lp
        out[kind] = {
            "gap_mean": float(gap.mean()),
            "gap_se": float(gap.std() / math.sqrt(gap.numel())),
            "gap_abs_max": float(gap.abs().max()),
            "nfe": info.nfe,
            "seconds": info.seconds,
        }
        bar.update(1)
    bar.close()
    # Reference: the best single Gaussian (exact mean and covariance of p_eps); its gap is KL(p_eps || N).
    p_eps = oracle.at(eps)
    gauss = Gaussian(p_eps.mean(), cov=p_eps.covariance())
    g_gap = exact - gauss.log_prob(x64)
    out["gaussian_baseline"] = {"gap_mean": float(g_gap.mean()), "gap_se": float(g_gap.std() / math.sqrt(len(g_gap)))}
    out["exact_logp_mean"] = float(exact.mean())
    return out, values


# --------------------------------------------------------------------------- paths (for the figures)
def path_times(sde: Any, eps: float, n_times: int = 60) -> torch.Tensor:
    """Geometric grid of times from T down to eps (float64)."""
    T = float(sde.T)
    times = torch.logspace(math.log10(T), math.log10(eps), n_times, dtype=torch.float64)
    times[0], times[-1] = T, eps
    return times


def forward_paths(sde: Any, x0: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor | None:
    """Forward SDE paths from data points at eps up to T (times of :func:`path_times`), by ``sdekit.simulate``."""
    times = path_times(sde, eps).flip(0)
    try:
        with torch.no_grad():
            return sdekit.simulate(sde, x0, times.tolist(), solver="euler", steps=400, generator=gen)
    except sdekit.errors.SdekitError:  # a picture only: leave it out rather than stop the demo
        return None


def pf_ode_paths(model: Any, param: str, sde: Any, x_T: torch.Tensor, eps: float, n_times: int = 60) -> torch.Tensor:
    """PF-ODE trajectories (n_times, n, d) from x_T at T down to eps (geometric time grid), by ``sdekit.sample``'s
    ``ode`` solver (dopri5, rtol = atol = 1e-4) with ``ts=`` the path times."""
    times = path_times(sde, eps, n_times)
    with torch.no_grad():
        _, path = sdekit.sample(
            model,
            sde,
            tuple(x_T.shape),
            solver="ode",
            x_T=x_T,
            ts=times.tolist(),
            eps=eps,
            rtol=1e-4,
            atol=1e-4,
            parameterization=param,
            denoise=False,
        )
    return path
