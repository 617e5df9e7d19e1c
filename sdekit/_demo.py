r"""``sdekit demo``: the whole framework on an embedded 2-D Gaussian mixture, nothing to download.

What one run does (every number is compared with an exact answer):

1. **Data.** A 3-component 2-D Gaussian mixture :math:`p_0` (:class:`sdekit.analytic.GaussianMixture`).
   Carried by any affine SDE its marginals :math:`p_t` stay exact mixtures (``data.diffuse(sde)``), so the
   exact score :math:`\nabla\log p_t` and density :math:`\log p_t` are available as an oracle.
2. **Training.** A small MLP predicting the noise (``parameterization="eps"``) is trained with
   :func:`sdekit.losses.dsm` (likelihood weighting :math:`\lambda = g^2` and likelihood time sampling
   :math:`q(t)\propto g^2/\sigma^2`, i.e. uniform in log-SNR). The network sees the input scaled by the
   marginal, :math:`(x - \alpha\bar\mu - m)/\sqrt{\alpha^2 s_d^2 + \sigma^2}`, and the time as the normalised
   half log-SNR :math:`\log(\sigma/\alpha)`; both come from ``sde.marginal``, so the same network works for
   VP, sub-VP, VE, EDM and a user's affine SDE.
3. **Sampling.** Every solver of the set (default: ``euler``, ``srk`` adaptive, ``ode`` (dopri5, adaptive),
   ``exp2`` (exponential integrator), ``pc`` (predictor-corrector)) runs a ladder of step counts or
   tolerances, from the learned model and from the exact score, starting from the same exact draws of
   :math:`p_T`. Samples at :math:`t = \epsilon` (``denoise=False``) are compared with the exact
   :math:`p_\epsilon` by the sliced Kolmogorov–Smirnov test (:mod:`sdekit._stats`): the metric is
   :math:`D / D_{\rm crit}` with :math:`D_{\rm crit} = \sqrt{-\ln(\alpha/(2k))/2}/\sqrt n`, so a value
   :math:`\le 1` means the n samples cannot be told from the exact law at family-wise level :math:`\alpha`.
4. **Likelihood.** :func:`sdekit.logp` (PF-ODE, exact trace) of held-out draws of :math:`p_\epsilon` for the
   learned model and the exact score, both with the exact :math:`p_T` as prior, against the exact
   :math:`\log p_\epsilon`. The mean gap :math:`E[\log p_\epsilon - \log p_\theta]` estimates
   :math:`KL(p_\epsilon\,\|\,p_\theta) \ge 0`; the exact score's gap is solver error only. The reference
   is the KL of the best single Gaussian (same mean and covariance), a model that learned nothing beyond
   second moments.
5. **Report.** ``report.md`` + ``report.json`` (every number) and PNGs in ``--out``.

Nothing here is written per SDE: alpha, sigma, prior, reverse drift and PF-ODE come from the SDE object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

# The options, their checks and the entry point live in a module that does not import torch (fast --help).
from ._demo_cli import DESCRIPTION, HELP, DemoError, add_arguments, run

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run", "DemoConfig", "DemoError"]

# --------------------------------------------------------------------------- the embedded problem
MEANS = [[-2.0, 0.0], [2.0, 1.0], [0.5, -2.0]]
STDS = [0.35, 0.5, 0.4]
WEIGHTS = [0.3, 0.45, 0.25]
ADAPTIVE_SDE_SOLVERS = ("srk",)  # SDE solvers run with a tolerance ladder; other SDE solvers take fixed steps
ALPHA = 1e-3  # family-wise level of the sliced KS test
K_DIRECTIONS = 16  # fixed projection directions of the sliced KS test
LOGP_TOL = 1e-5  # rtol = atol of sdekit.logp


@dataclass
class DemoConfig:
    """Sizes of one demo run (``--quick`` or full)."""

    train_steps: int
    batch: int
    width: int
    n_samples: int
    n_logp: int
    steps: dict[str, tuple[int, ...]]  # fixed-step ladders per solver kind
    tols: tuple[float, ...]  # rtol = atol ladder of adaptive ODE solvers
    sde_tols: tuple[float, ...]  # rtol = atol ladder of adaptive SDE solvers (srk)
    n_paths: int = 24


FULL = DemoConfig(
    train_steps=3000,
    batch=512,
    width=128,
    n_samples=10_000,
    n_logp=1000,
    steps={"default": (10, 30, 100), "exp": (5, 10, 20, 50), "pc": (10, 30, 60)},
    tols=(1e-1, 1e-2, 1e-3, 1e-4),
    sde_tols=(1e-1, 1e-2),
)
QUICK = DemoConfig(
    train_steps=1500,
    batch=512,
    width=64,
    n_samples=4000,
    n_logp=300,
    steps={"default": (10, 30, 100), "exp": (5, 10, 20, 50), "pc": (10, 30, 60)},
    tols=(1e-1, 1e-2, 1e-3),
    sde_tols=(1e-1, 1e-2),
)


# --------------------------------------------------------------------------- model
class ScoreNet(nn.Module):
    r"""Noise-prediction MLP preconditioned by the SDE's own marginal (nothing per SDE).

    With :math:`(\alpha, m, \sigma^2)` = ``sde.marginal`` at t, data mean :math:`\bar\mu` and per-coordinate
    variance :math:`s_d^2`:

    .. math::
        \hat\varepsilon(x, t) = \mathrm{MLP}\Big(\frac{x - \alpha\bar\mu - m}{\sqrt{\alpha^2 s_d^2 + \sigma^2}},\
        \phi(u)\Big),\qquad u = \frac{\lambda(t) - \lambda(\epsilon)}{\lambda(T) - \lambda(\epsilon)},\quad
        \lambda = \log\frac{\sigma}{\alpha},

    where :math:`\phi` are Fourier features. The scaled input has unit variance at every t and u runs over
    [0, 1] for any affine SDE (VP, VE, EDM, ...), so one network and one learning rate fit all of them.
    """

    def __init__(self, sde: Any, eps: float, data_mean: torch.Tensor, data_var: float, width: int = 128) -> None:
        super().__init__()
        from .parameterization import marginal_coefficients

        self._coeffs = marginal_coefficients
        self.sde = sde
        d = data_mean.numel()
        self.register_buffer("data_mean", data_mean.reshape(1, d).to(torch.float32))
        self.data_var = float(data_var)
        ends = torch.tensor([eps, float(sde.T)], dtype=torch.float64)
        alpha, _, sigma2 = marginal_coefficients(sde, ends, ends[:, None])
        lam = 0.5 * torch.log(sigma2.reshape(-1)) - torch.log(alpha.reshape(-1))
        self.lam0, self.lam_span = float(lam[0]), float(lam[1] - lam[0])
        n_freq = 6
        self.register_buffer("freq", math.pi * 2.0 ** torch.arange(n_freq, dtype=torch.float32) / 2)
        self.net = nn.Sequential(
            nn.Linear(d + 2 * n_freq, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, d),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise, shaped like ``x`` (t: shape (batch,) or a scalar)."""
        alpha, m, sigma2 = self._coeffs(self.sde, t, x)
        x_in = (x - alpha * self.data_mean.to(x.dtype) - m) * torch.rsqrt(alpha * alpha * self.data_var + sigma2)
        lam = 0.5 * torch.log(sigma2) - torch.log(alpha)
        u = ((lam - self.lam0) / self.lam_span).expand(x.shape[0], 1)
        angles = u * self.freq.to(x.dtype)
        return self.net(torch.cat([x_in, torch.sin(angles), torch.cos(angles)], dim=1))


# --------------------------------------------------------------------------- results
@dataclass
class SampleRun:
    """One sampling run: solver, ladder level, which score, NFE, KS ratio, seconds (or the failure)."""

    solver: str
    model: str  # "learned" or "exact"
    steps: int | None
    tol: float | None
    nfe: int | None = None
    ks_ratio: float | None = None
    seconds: float | None = None
    error: str | None = None


@dataclass
class DemoReport:
    """Everything ``report.json`` holds."""

    command: str
    sde: str
    seed: int
    quick: bool
    device: str
    eps: float
    n_samples: int
    ks_alpha: float
    ks_directions: int
    ks_critical: float
    train: dict[str, Any] = field(default_factory=dict)
    runs: list[SampleRun] = field(default_factory=list)
    logp: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- stages
def _bar(**kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, **kwargs)


def _train(model: ScoreNet, sde: Any, data: Any, cfg: DemoConfig, eps: float, gen: torch.Generator) -> dict:
    from . import losses

    device = gen.device
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=cfg.train_steps, pct_start=0.1)
    history = torch.zeros(cfg.train_steps, device=device)  # losses stay on the device: no per-step sync
    started = time.perf_counter()
    bar = _bar(total=cfg.train_steps, desc="train (dsm)", unit="step")
    every = max(1, cfg.train_steps // 20)
    for i in range(cfg.train_steps):
        x0 = data.sample(cfg.batch, gen, dtype=torch.float32, device=device)
        loss = losses.dsm(
            model,
            sde,
            x0,
            parameterization="eps",
            weighting="likelihood",
            time_sampling="likelihood",
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


def _ladder(solver: str, cfg: DemoConfig, steps: tuple[int, ...] | None) -> list[tuple[int | None, float | None]]:
    """(steps, tol) pairs of one solver: the --steps override, a tolerance ladder or a step ladder."""
    from . import solvers

    if steps is not None:
        return [(s, None) for s in steps]
    cls = solvers.available()[solver]
    if cls.adaptive and cls.kind == "ode":
        return [(None, tol) for tol in cfg.tols]
    if cls.adaptive and solver in ADAPTIVE_SDE_SOLVERS:
        return [(None, tol) for tol in cfg.sde_tols]
    key = "exp" if solver.startswith("exp") else ("pc" if solver in ("pc", "ald") else "default")
    return [(s, None) for s in cfg.steps[key]]


def _sample_all(
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
    import sdekit

    from ._stats import sliced_ks

    plan = [(s, st, tol) for s in solvers_ for st, tol in _ladder(s, cfg, steps)]
    runs: list[SampleRun] = []
    finest: dict[tuple[str, str], torch.Tensor] = {}
    bar = _bar(total=len(plan) * len(models), desc="sample", unit="run")
    for solver, st, tol in plan:
        for kind, (model, param) in models.items():
            bar.set_postfix_str(f"{kind} {solver} " + (f"steps={st}" if st else f"tol={tol:g}"))
            run = SampleRun(solver, kind, st, tol)
            # seeded by (seed, solver, level): the learned and exact runs of a level see the same noise, and a
            # run does not depend on which other runs were made
            key = zlib.crc32(f"{solver}|{st}|{tol}".encode())
            gen = torch.Generator(device=x_T.device).manual_seed(seed * 1_000_003 + key)
            kwargs: dict[str, Any] = {"steps": st}
            if tol is not None:
                kwargs.update(rtol=tol, atol=tol)
            try:
                x, info = sdekit.sample(
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
                )
                run.nfe, run.seconds = info.nfe, info.seconds
                # float64 statistics on the CPU (one transfer per run; CUDA/MPS samples included)
                run.ks_ratio = sliced_ks(x.cpu(), target, directions, alpha=ALPHA).ratio
                finest[(solver, kind)] = x
            except sdekit.errors.SdekitError as err:  # a run that fails is a table entry, not a crash
                run.error = f"{type(err).__name__}: {str(err).splitlines()[0]}"
            runs.append(run)
            bar.update(1)
    bar.close()
    return runs, finest


def _logp(
    models: dict[str, Any], sde: Any, oracle: Any, data: Any, x: torch.Tensor, eps: float
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    import sdekit

    x64 = x.detach().cpu().double()  # exact densities and gaps in float64 on the CPU (MPS has no float64)
    exact = oracle.log_prob(x64, eps)
    prior = oracle.at(sde.T)  # the exact p_T: the gap measures the score, not sde.prior's approximation
    out: dict[str, Any] = {"n": x.shape[0], "rtol": LOGP_TOL, "atol": LOGP_TOL, "prior": "exact p_T"}
    values: dict[str, torch.Tensor] = {"exact": exact}
    bar = _bar(total=len(models), desc="logp (PF-ODE)", unit="model")
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
            out[kind] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
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
    from .analytic import Gaussian

    gauss = Gaussian(p_eps.mean(), cov=p_eps.covariance())
    g_gap = exact - gauss.log_prob(x64)
    out["gaussian_baseline"] = {"gap_mean": float(g_gap.mean()), "gap_se": float(g_gap.std() / math.sqrt(len(g_gap)))}
    out["exact_logp_mean"] = float(exact.mean())
    return out, values


def _path_times(sde: Any, eps: float, n_times: int = 60) -> torch.Tensor:
    """Geometric grid of times from T down to eps (float64)."""
    T = float(sde.T)
    times = torch.logspace(math.log10(T), math.log10(eps), n_times, dtype=torch.float64)
    times[0], times[-1] = T, eps
    return times


def _forward_paths(sde: Any, x0: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor | None:
    """Forward SDE paths from data points at eps up to T (times of :func:`_path_times`), by ``sdekit.simulate``."""
    import sdekit

    times = _path_times(sde, eps).flip(0)
    try:
        with torch.no_grad():
            return sdekit.simulate(sde, x0, times.tolist(), solver="euler", steps=400, generator=gen)
    except sdekit.errors.SdekitError:  # a picture only: leave it out rather than stop the demo
        return None


def _paths(model: Any, param: str, sde: Any, x_T: torch.Tensor, eps: float, n_times: int = 60) -> torch.Tensor:
    """PF-ODE trajectories (n_times, n, d) from x_T at T down to eps (geometric time grid), by torchdiffeq."""
    from torchdiffeq import odeint

    from .parameterization import score_fn

    flow = sde.probability_flow(score_fn(model, sde, param))
    T = float(sde.T)
    times = _path_times(sde, eps, n_times)
    s_grid = (T - times).to(x_T)  # integrate in s = T - t (increasing), as the sdekit ODE adapter does

    def rhs(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -flow.drift(x, (T - s).expand(x.shape[0]))

    with torch.no_grad():
        # step_t: the last step ends on s = T - eps (no drift evaluation past t = eps, where it may not exist)
        return odeint(rhs, x_T, s_grid, method="dopri5", rtol=1e-4, atol=1e-4, options={"step_t": s_grid[-1:]})


# --------------------------------------------------------------------------- report
def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def _write_markdown(rep: DemoReport, path: Path, plots: bool) -> None:
    lines = [
        "# sdekit demo report",
        "",
        f"`{rep.command}` — SDE `{rep.sde}`, seed {rep.seed}, device {rep.device}"
        + (", **quick**" if rep.quick else ""),
        "",
        "Data: a 2-D Gaussian mixture of 3 components whose diffused marginals are exact, so every number below "
        "is measured against the truth.",
        "",
        "## Training",
        "",
        f"An MLP (width {rep.train['width']}, {rep.train['parameters']:,} parameters) predicting the noise, "
        f"trained with `sdekit.losses.dsm` (likelihood weighting and time sampling) for {rep.train['steps']} "
        f"Adam steps of batch {rep.train['batch']} in {rep.train['seconds']:.1f} s. DSM loss: "
        f"{rep.train['loss_first_10pct']:.3f} (first 10% of steps) → {rep.train['loss_last_10pct']:.3f} (last 10%).",
        "",
        "## Sample quality vs NFE",
        "",
        f"n = {rep.n_samples:,} samples per run, integrated from the same exact draws of p_T down to "
        f"t = eps = {rep.eps:g} (no denoising step) and compared with the exact p_eps by the sliced KS test "
        f"({rep.ks_directions} fixed directions). Metric: D / D_crit with D_crit = {rep.ks_critical:.4f} "
        f"(family-wise level alpha = {rep.ks_alpha:g} at this n): **<= 1 means indistinguishable from the exact "
        "law at level alpha** (the noise floor of n samples); the learned model's values floor at its own error.",
        "",
        "| solver | steps / tol | NFE (learned) | KS/crit (learned) | NFE (exact) | KS/crit (exact) "
        "| s (learned) | s (exact) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_key: dict[tuple, dict[str, SampleRun]] = {}
    for r in rep.runs:
        by_key.setdefault((r.solver, r.steps, r.tol), {})[r.model] = r
    for (solver, st, tol), pair in by_key.items():
        lv = f"{st} steps" if st is not None else f"tol {tol:g}"
        cells = []
        for kind in ("learned", "exact"):
            r = pair.get(kind)
            if r is None or r.error:
                cells += ["—", "failed" if r is not None else "—"]
            else:
                cells += [str(r.nfe), _fmt(r.ks_ratio)]
        for kind in ("learned", "exact"):
            r = pair.get(kind)
            cells.append(_fmt(r.seconds if r else None))
        lines.append(f"| {solver} | {lv} | " + " | ".join(cells) + " |")
    failures = [r for r in rep.runs if r.error]
    if failures:
        lines += ["", "Failed runs:", ""] + [f"- {r.solver} ({r.model}): {r.error}" for r in failures]
    lp = rep.logp
    lines += [
        "",
        "## Likelihood of held-out data",
        "",
        f"`sdekit.logp` (PF-ODE, dopri5, exact trace, rtol = atol = {lp['rtol']:g}, exact p_T as prior) of "
        f"{lp['n']} held-out draws of p_eps. Gap = mean of exact log p_eps − model logp (nats; estimates "
        "KL(p_eps ‖ model) ≥ 0), ± one standard error.",
        "",
        "| model | mean gap (nats) | max abs gap | NFE | seconds |",
        "|---|---|---|---|---|",
    ]
    for kind in ("learned", "exact"):
        v = lp[kind]
        if "error" in v:
            lines.append(f"| {kind} | failed: {v['error']} | | | |")
            continue
        lines.append(
            f"| {kind} | {v['gap_mean']:.4f} ± {v['gap_se']:.4f} | {v['gap_abs_max']:.4f} | {v['nfe']} "
            f"| {v['seconds']:.1f} |"
        )
    g = lp["gaussian_baseline"]
    lines.append(f"| best single Gaussian (reference) | {g['gap_mean']:.4f} ± {g['gap_se']:.4f} | | | |")
    lines += [
        "",
        f"Mean exact log p_eps of the held-out data: {lp['exact_logp_mean']:.3f} nats.",
        "",
        "## Wall times",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in rep.seconds.items()]
    if plots:
        lines += [
            "",
            "## Plots",
            "",
            "![samples](samples.png)",
            "",
            "![error vs NFE](error_vs_nfe.png)",
            "",
            "![trajectories](trajectories.png)",
            "",
            "![logp calibration](logp_calibration.png)",
        ]
    path.write_text("\n".join(lines) + "\n")


def _plots(
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
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    m = 2000  # points per scatter panel
    pts = data_x[:m].cpu()
    lo, hi = (pts.min(0).values - 1.0).tolist(), (pts.max(0).values + 1.0).tolist()

    def panel(ax: Any, x: torch.Tensor | None, title: str, color: str) -> None:
        if x is not None:
            x = x[:m].cpu().float()
            ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.4, color=color, rasterized=True)
        else:
            ax.text(0.5, 0.5, "failed", ha="center", transform=ax.transAxes)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)

    best = {(r.solver, r.model): r for r in rep.runs if r.error is None}
    cols = len(solvers_) + 1
    fig, axes = plt.subplots(2, cols, figsize=(2.1 * cols, 4.4), squeeze=False)
    for row, kind in enumerate(("learned", "exact")):
        panel(axes[row][0], pts, "data (exact p_0)", "k")
        axes[row][0].set_ylabel(f"{kind} score", fontsize=9)
        for j, s in enumerate(solvers_):
            r = best.get((s, kind))
            title = s if r is None else f"{s} ({r.nfe} NFE): KS/crit {r.ks_ratio:.2f}"
            panel(axes[row][j + 1], finest.get((s, kind)), title, "C0" if kind == "learned" else "C1")
    fig.suptitle(f"sdekit demo: samples per solver (finest level), SDE {rep.sde}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for j, s in enumerate(solvers_):
        for kind, style in (("learned", "o-"), ("exact", "s--")):
            rs = [r for r in rep.runs if r.solver == s and r.model == kind and r.error is None]
            if rs:
                ax.loglog(
                    [r.nfe for r in rs], [r.ks_ratio for r in rs], style, color=f"C{j}", ms=4, label=f"{s} ({kind})"
                )
    ax.axhline(1.0, color="k", lw=0.8)
    ax.text(ax.get_xlim()[0], 1.02, f" noise floor (n = {rep.n_samples:,}, alpha = {rep.ks_alpha:g})", fontsize=8)
    ax.set_xlabel("NFE (model evaluations)")
    ax.set_ylabel("sliced KS / critical value")
    ax.set_title("sample error vs NFE (solid: learned model, dashed: exact score)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "error_vs_nfe.png", dpi=90)
    plt.close(fig)

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
    fig.savefig(out / "trajectories.png", dpi=90)
    plt.close(fig)

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
    fig.savefig(out / "logp_calibration.png", dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- the run
def demo(
    sde: Any, solvers_: list[str], steps: tuple[int, ...] | None, device: torch.device, args: argparse.Namespace
) -> DemoReport:
    """The demo proper (options already validated); writes the report and returns it."""
    from ._stats import ks_critical_value, random_directions
    from .analytic import GaussianMixture

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

    cmd = "sdekit demo" + "".join(
        f" {a}" for a in (("--quick",) if args.quick else ()) + ("--sde", args.sde, "--seed", str(seed))
    )
    rep = DemoReport(
        command=cmd,
        sde=f"{type(sde).__name__}({', '.join(f'{k}={float(v):g}' for k, v in sde.params.items())})",
        seed=seed,
        quick=bool(args.quick),
        device=str(device),
        eps=eps,
        n_samples=cfg.n_samples,
        ks_alpha=ALPHA,
        ks_directions=K_DIRECTIONS,
        ks_critical=ks_critical_value(cfg.n_samples, K_DIRECTIONS, ALPHA),
    )
    rep.train = _train(net, sde, data, cfg, eps, gen)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    rep.seconds["training"] = rep.train["seconds"]

    models = {"learned": (net, "eps"), "exact": (oracle, "score")}
    t0 = time.perf_counter()
    x_T = oracle.at(sde.T).sample(cfg.n_samples, gen, dtype=torch.float32, device=device)
    directions = random_directions(2, K_DIRECTIONS, seed=seed)
    rep.runs, finest = _sample_all(models, sde, solvers_, cfg, steps, x_T, oracle.at(eps), directions, eps, seed)
    rep.seconds["sampling (all runs)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    x_test = oracle.sample(cfg.n_logp, eps, gen, dtype=torch.float32, device=device)
    rep.logp, lp_values = _logp(models, sde, oracle, data, x_test, eps)
    rep.seconds["likelihood"] = time.perf_counter() - t0

    plots = not getattr(args, "no_plots", False)
    if plots:
        t0 = time.perf_counter()
        paths = {k: _paths(m, p, sde, x_T[: cfg.n_paths], eps) for k, (m, p) in models.items()}
        data_x = data.sample(2000, gen, dtype=torch.float32, device=device)
        forward = _forward_paths(sde, data_x[:12], eps, gen)
        _plots(out, rep, data_x, finest, paths, _path_times(sde, eps), forward, lp_values, solvers_)
        rep.seconds["plots"] = time.perf_counter() - t0
    rep.seconds["total"] = time.perf_counter() - started
    _write_markdown(rep, out / "report.md", plots)
    (out / "report.json").write_text(json.dumps(asdict(rep), indent=1) + "\n")
    print(f"sdekit demo: wrote {out / 'report.md'} ({rep.seconds['total']:.0f} s)", file=sys.stderr)
    return rep
