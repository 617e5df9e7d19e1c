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
    diagnostics: dict[str, Any] = field(default_factory=dict)  # outliers and their diagnosis (_diagnose)
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


# --------------------------------------------------------------------------- outliers and their diagnosis
LOW_NOISE = 10.0  # the diagnosis's low-noise end: t <= LOW_NOISE * eps
N_PROFILE = 4000  # draws of p_t per time of the learned score's error profile


def _outliers(runs: list[SampleRun]) -> list[dict[str, Any]]:
    """Levels where the learned model is distinguishable from p_eps (KS/crit > 1) while the exact score, on the same
    solver, level, x_T and noise, is not (<= 1), and another solver reaches KS/crit <= 1 with the learned model at no
    more NFE. Each entry holds the level, both ratios and, per such cheaper solver, its fewest-NFE run."""
    pairs: dict[tuple[str, int | None, float | None], dict[str, SampleRun]] = {}
    for r in runs:
        if r.error is None:
            pairs.setdefault((r.solver, r.steps, r.tol), {})[r.model] = r
    found = []
    for (solver, steps, tol), pair in pairs.items():
        lr, ex = pair.get("learned"), pair.get("exact")
        if lr is None or ex is None or not lr.ks_ratio > 1.0 >= ex.ks_ratio:
            continue
        better: dict[str, SampleRun] = {}
        for r in runs:
            if r.model != "learned" or r.error is not None or r.solver == solver:
                continue
            if r.nfe <= lr.nfe and r.ks_ratio <= 1.0:
                b = better.get(r.solver)
                if b is None or (r.nfe, r.ks_ratio) < (b.nfe, b.ks_ratio):
                    better[r.solver] = r
        if better:
            found.append(
                {
                    "solver": solver,
                    "steps": steps,
                    "tol": tol,
                    "nfe": lr.nfe,
                    "learned": lr.ks_ratio,
                    "exact": ex.ks_ratio,
                    "better": [
                        {"solver": b.solver, "steps": b.steps, "tol": b.tol, "nfe": b.nfe, "ks_ratio": b.ks_ratio}
                        for b in better.values()
                    ],
                }
            )
    return found


class _LearnedBelow:
    """Score model of the diagnosis: the learned score for t <= ``t_low``, the exact score above (parameterization
    ``"score"``), to see how much of a run's error the learned score causes at low noise alone."""

    def __init__(self, learned: Any, exact: Any, t_low: float) -> None:
        self.learned, self.exact, self.t_low = learned, exact, t_low

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Score at (x, t), t of shape (batch,) or a scalar."""
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        low = (t <= self.t_low).reshape(-1, *([1] * (x.ndim - 1)))
        return torch.where(low, self.learned(x, t), self.exact(x, t))


def _rerun(
    model: Any,
    param: str,
    sde: Any,
    solver: str,
    steps: int | None,
    tol: float | None,
    x_T: torch.Tensor,
    target: Any,
    directions: torch.Tensor,
    eps: float,
    seed: int,
    **options: Any,
) -> dict[str, Any]:
    """One more run of a table level, with solver ``options``: the same x_T and the same generator seed as the
    table's run of that level (:func:`_sample_all` seeds by seed, solver and level), so the comparison is paired."""
    import sdekit

    from ._stats import sliced_ks

    key = zlib.crc32(f"{solver}|{steps}|{tol}".encode())
    gen = torch.Generator(device=x_T.device).manual_seed(seed * 1_000_003 + key)
    kwargs: dict[str, Any] = {"steps": steps}
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
            **options,
        )
    except sdekit.errors.SdekitError as err:
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
    return {"nfe": info.nfe, "ks_ratio": sliced_ks(x.cpu(), target, directions, alpha=ALPHA).ratio}


def _noise_to_signal(sde: Any, t: float) -> float:
    """sigma(t) / alpha(t) of the SDE's marginal."""
    tt = torch.tensor([t], dtype=torch.float64)
    return float(sde.marginal.sigma(tt) / sde.marginal.alpha(tt))


def _score_error(learned: Any, oracle: Any, sde: Any, eps: float, device: torch.device, seed: int) -> list[dict]:
    r"""Relative rms error :math:`\sqrt{E\lVert s_\theta - s\rVert^2 / E\lVert s\rVert^2}` of the learned score under
    the exact :math:`p_t`, at 5 times geometric from eps to T (N_PROFILE exact draws each, CPU generator)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(b"score error"))
    rows = []
    for t in _path_times(sde, eps, 5).flip(0).tolist():
        x = oracle.sample(N_PROFILE, t, gen, dtype=torch.float32)
        tt = torch.full((N_PROFILE,), t, dtype=torch.float64)
        with torch.no_grad():
            s = oracle(x.double(), tt)
            s_hat = learned(x.to(device), tt.to(device, torch.float32)).cpu().double()
        err = (s_hat - s).flatten(1).pow(2).sum(1).mean() / s.flatten(1).pow(2).sum(1).mean()
        rows.append({"t": t, "noise_to_signal": _noise_to_signal(sde, t), "rel_rms": float(err.sqrt())})
    return rows


def _score_weights(sde: Any, solver: str, steps: int, eps: float, t_low: float, oracle: Any, seed: int) -> dict | None:
    r"""How much a predictor-corrector run's predictor and corrector move x along the score at low noise.

    Over the steps of ``solver``'s default grid that start at :math:`t_i \le` ``t_low``: the predictor's weight
    :math:`\sum g(t_i)^2\Delta_i` (Euler–Maruyama on the reverse SDE moves x by :math:`g^2\Delta\,s`) and the
    Langevin corrector's :math:`\sum \epsilon_i` (it moves x by :math:`\epsilon\,s`), with
    :math:`\epsilon_i = 2\,(r\,E\lVert z\rVert / E\lVert s\rVert)^2` per corrector step (score_sde's batch rule,
    ``pc``'s default, ``snr`` r) evaluated with the exact score on N_PROFILE draws of :math:`p_{t_i}`. None for a
    solver without a Langevin corrector (or with another step rule)."""
    from . import solvers
    from .solvers._grids import resolve_grid, time_grid

    impl = solvers.get(solver)
    opts = getattr(impl, "options_defaults", {})
    if opts.get("corrector") != "langevin" or opts.get("snr_norm", "batch") != "batch" or steps is None:
        return None
    snr, n_corr = float(opts["snr"]), int(opts.get("n_corrector_steps", 1))
    times = time_grid(sde, float(sde.T), eps, steps, resolve_grid(sde, None, getattr(impl, "grid", "uniform"), solver))
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(b"score weights"))
    predictor = corrector = 0.0
    n_low = 0
    for i in range(steps):
        t = float(times[i])
        if t > t_low:
            continue
        x = oracle.sample(N_PROFILE, t, gen, dtype=torch.float64)
        tt = torch.full((N_PROFILE,), t, dtype=torch.float64)
        with torch.no_grad():
            s = oracle(x, tt).flatten(1)
            g = sde.diffusion_fn(x[:1], tt[:1])
        z = torch.randn(s.shape, generator=gen, dtype=torch.float64)
        predictor += float(g.reshape(-1)[0]) ** 2 * float(times[i] - times[i + 1])
        corrector += n_corr * 2 * (snr * float(z.norm(dim=1).mean() / s.norm(dim=1).mean())) ** 2
        n_low += 1
    return {"snr": snr, "grid_steps": n_low, "predictor": predictor, "corrector": corrector}


def _diagnose(
    models: dict[str, Any],
    sde: Any,
    oracle: Any,
    runs: list[SampleRun],
    x_T: torch.Tensor,
    target: Any,
    directions: torch.Tensor,
    eps: float,
    seed: int,
) -> dict[str, Any]:
    """The learned score's error vs t, the outlier levels (:func:`_outliers`) and, for each outlier solver's finest
    outlier level, paired reruns: without the corrector (solvers that have one, both models) and with the learned
    score only below t_low = LOW_NOISE * eps (exact score above)."""
    from . import solvers
    from .parameterization import score_fn

    net, param = models["learned"]
    device = x_T.device
    learned = score_fn(net, sde, param)
    t_low = min(LOW_NOISE * eps, float(sde.T))
    out: dict[str, Any] = {
        "t_low": t_low,
        "noise_to_signal_low": _noise_to_signal(sde, t_low),
        "score_error": _score_error(learned, oracle, sde, eps, device, seed),
        "outliers": _outliers(runs),
        "checks": [],
    }
    last: dict[str, dict] = {}
    for o in out["outliers"]:
        last[o["solver"]] = o  # runs are in ladder order: the finest outlier level of each solver
    for solver, o in last.items():
        level = (sde, solver, o["steps"], o["tol"], x_T, target, directions, eps, seed)
        check: dict[str, Any] = {"solver": solver, "steps": o["steps"], "tol": o["tol"], "variants": []}
        if "corrector" in getattr(solvers.get(solver), "options_defaults", {}):
            check["variants"].append(
                {
                    "name": "corrector=None",
                    "learned": _rerun(*models["learned"], *level, corrector=None),
                    "exact": _rerun(*models["exact"], *level, corrector=None),
                }
            )
        split = _LearnedBelow(learned, models["exact"][0], t_low)
        check["variants"].append({"name": "learned below t_low", "learned": _rerun(split, "score", *level)})
        weights = []
        for steps in sorted({r.steps for r in runs if r.solver == solver and r.steps is not None}):
            w = _score_weights(sde, solver, steps, eps, t_low, oracle, seed)
            if w is not None:
                weights.append({"steps": steps, **w})
        if weights:  # every fixed-step level of the solver in the table
            check["weights"] = weights
        out["checks"].append(check)
    return out


# --------------------------------------------------------------------------- report
def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def _nats(mean: float, se: float) -> str:
    """A likelihood gap ``mean ± se``: 3 decimals when the mean is 0.01 nats or more, else 2 significant digits
    each (a tiny gap never prints as 0)."""
    spec = ".3f" if abs(mean) >= 0.01 else ".1e"
    return f"{mean:{spec}} ± {se:{spec}}"


def _tol_label(tol: float) -> str:
    """A tolerance as ``1e-3`` / ``2.5e-4`` (the labels of adaptive points and levels)."""
    mantissa, exponent = f"{tol:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _level(steps: int | None, tol: float | None) -> str:
    """A ladder level: ``30 steps`` or ``tol 1e-3``."""
    return f"{steps} steps" if steps is not None else f"tol {_tol_label(tol)}"


def _load_report(path: Path) -> DemoReport:
    """A :class:`DemoReport` read back from ``report.json`` (to rebuild the tables or the figures)."""
    d = json.loads(Path(path).read_text())
    d["runs"] = [SampleRun(**r) for r in d["runs"]]
    return DemoReport(**d)


def _headline(rep: DemoReport) -> dict[str, dict[str, Any]]:
    """Per model (``"learned"``, ``"exact"``): ``best``, the fewest-NFE run with KS/crit <= 1 (ties: the lower
    ratio; None if no run is), and ``per_solver``, the same for each solver in run order."""
    order = list(dict.fromkeys(r.solver for r in rep.runs))

    def key(r: SampleRun) -> tuple[int, float]:
        return (r.nfe, r.ks_ratio)

    out: dict[str, dict[str, Any]] = {}
    for kind in ("learned", "exact"):
        ok = [r for r in rep.runs if r.model == kind and r.error is None and r.ks_ratio <= 1.0]
        per = {s: min((r for r in ok if r.solver == s), key=key, default=None) for s in order}
        out[kind] = {"best": min(ok, key=key, default=None), "per_solver": per}
    return out


def _summary_lines(rep: DemoReport, report_path: Path | None = None) -> list[str]:
    """The headline results, printed to stdout at the end of the run and quoted at the top of report.md: per model
    the fewest-NFE run indistinguishable from the exact law (overall and per solver), the likelihood gaps, the
    outliers and (with ``report_path``) where the report is."""
    lines = [
        f"sdekit demo: {rep.sde}, seed {rep.seed}: n = {rep.n_samples:,} samples per run against the exact p_eps; "
        f"KS/crit <= 1 means indistinguishable at level alpha = {rep.ks_alpha:g}"
    ]
    head = _headline(rep)
    for kind, label in (("learned", "learned model"), ("exact", "exact score")):
        best = head[kind]["best"]
        if best is None:
            mine = [r.ks_ratio for r in rep.runs if r.model == kind and r.error is None]
            first = "no run reaches KS/crit <= 1" + (f" (lowest {min(mine):.2f})" if mine else "")
        else:
            first = (
                f"fewest NFE with KS/crit <= 1: {best.nfe} ({best.solver}, {_level(best.steps, best.tol)}: "
                f"{best.ks_ratio:.2f})"
            )
        per = []
        for solver, r in head[kind]["per_solver"].items():
            if r is not None:
                per.append(f"{solver} {r.nfe}")
            else:
                mine = [x.ks_ratio for x in rep.runs if x.model == kind and x.solver == solver and x.error is None]
                per.append(f"{solver} none" + (f" (lowest {min(mine):.2f})" if mine else " (failed)"))
        lines.append(f"  {label + ':':<15}{first}; per solver: {', '.join(per)}")
    lp = rep.logp
    gaps = []
    for kind, label in (("learned", "learned"), ("exact", "exact score")):
        v = lp.get(kind, {})
        if "gap_mean" not in v:
            gaps.append(f"{label} failed")
            continue
        gap = f"{label} {_nats(v['gap_mean'], v['gap_se'])}"
        if kind == "exact":
            gap += f" (max |gap| {v['gap_abs_max']:.1e})"
        gaps.append(gap)
    g = lp["gaussian_baseline"]
    gaps.append(f"best single Gaussian {_nats(g['gap_mean'], g['gap_se'])}")
    lines.append(f"  likelihood gap, nats (mean ± se over {lp['n']:,} held-out points): " + "; ".join(gaps))
    outliers = rep.diagnostics.get("outliers", [])
    by_solver: dict[str, list[str]] = {}
    for o in outliers:
        by_solver.setdefault(o["solver"], []).append(_level(o["steps"], o["tol"]))
    found = "; ".join(f"{s} at {', '.join(v)}" for s, v in by_solver.items())
    lines.append(
        "  outliers (learned > 1 where exact <= 1 while another solver is <= 1 at no more NFE): "
        + (f"{found} (diagnosed in the report)" if found else "none")
    )
    if report_path is not None:
        total = rep.seconds.get("total")
        lines.append(f"  report: {report_path}" + ("" if total is None else f" ({total:.0f} s)"))
    return lines


def _outlier_markdown(rep: DemoReport) -> list[str]:
    """The report's outlier section: the outlier levels, their paired reruns and the explanation the numbers give."""
    diag = rep.diagnostics
    if not diag:
        return []
    t_low, r_low = diag["t_low"], diag["noise_to_signal_low"]
    lines = [
        "",
        "### Outliers",
        "",
        "A level is an outlier when the learned model is distinguishable from p_eps (KS/crit > 1) while the exact "
        "score, from the same x_T with the same noise, is not (<= 1), and another solver reaches KS/crit <= 1 with "
        "the learned model at no more NFE.",
        "",
    ]
    if not diag["outliers"]:
        return [*lines, "None in this run."]
    for o in diag["outliers"]:
        better = ", ".join(
            f"{b['solver']} {_level(b['steps'], b['tol'])}: {b['ks_ratio']:.2f} at {b['nfe']} NFE" for b in o["better"]
        )
        lines.append(
            f"- **{o['solver']}, {_level(o['steps'], o['tol'])}** ({o['nfe']} NFE): learned {o['learned']:.2f}, "
            f"exact score {o['exact']:.2f}; with no more NFE: {better}."
        )
    prof = diag["score_error"]
    lines += [
        "",
        "Relative rms error of the learned score under the exact p_t, sqrt(E|s_theta − s|² / E|s|²) "
        f"({N_PROFILE:,} exact draws per time):",
        "",
        "| t | " + " | ".join(f"{p['t']:.3g}" for p in prof) + " |",
        "|---" * (len(prof) + 1) + "|",
        "| sigma/alpha | " + " | ".join(f"{p['noise_to_signal']:.3g}" for p in prof) + " |",
        "| error | " + " | ".join(f"{p['rel_rms']:.3f}" for p in prof) + " |",
    ]
    worst = max(prof, key=lambda p: p["rel_rms"])
    lines += [
        "",
        f"The error is largest at t = {worst['t']:.3g} ({worst['rel_rms']:.2f}; {prof[-1]['rel_rms']:.3f} at "
        f"t = T). The network predicts the noise and its score is −eps_hat/sigma(t), so a noise error is divided "
        "by sigma(t), which is smallest at t = eps.",
    ]
    runs = {(r.solver, r.steps, r.tol, r.model): r for r in rep.runs if r.error is None}
    for check in diag["checks"]:
        solver, steps, tol = check["solver"], check["steps"], check["tol"]
        learned, exact = runs[(solver, steps, tol, "learned")], runs[(solver, steps, tol, "exact")]
        lines += [
            "",
            f"**Diagnosis of {solver} at {_level(steps, tol)}** (paired reruns: the same x_T and the same noise "
            "as the table's run):",
            "",
            "| run | NFE (learned) | KS/crit (learned) | KS/crit (exact) |",
            "|---|---|---|---|",
            f"| as in the table | {learned.nfe} | {learned.ks_ratio:.2f} | {exact.ks_ratio:.2f} |",
        ]
        names = {
            "corrector=None": "without the corrector (`corrector=None`)",
            "learned below t_low": f"learned score for t <= {t_low:.3g} (sigma/alpha <= {r_low:.3g}), exact above",
        }
        text: list[str] = []
        corrector_made_it = False
        for v in check["variants"]:
            lv, ev = v["learned"], v.get("exact")
            cells = [
                _fmt(lv.get("nfe"), "d") if "error" not in lv else "—",
                _fmt(lv.get("ks_ratio")) if "error" not in lv else "failed",
                "—" if ev is None else (_fmt(ev.get("ks_ratio")) if "error" not in ev else "failed"),
            ]
            lines.append(f"| {names.get(v['name'], v['name'])} | " + " | ".join(cells) + " |")
            if "error" in lv:
                continue
            k = lv["ks_ratio"]
            if v["name"] == "corrector=None":
                corrector_made_it = k < learned.ks_ratio
                if k <= 1.0:
                    text.append(
                        f"Without the Langevin corrector the learned model is indistinguishable from p_eps ({k:.2f} "
                        f"at {lv['nfe']} NFE, against {learned.ks_ratio:.2f} with it): the corrector makes this "
                        "outlier."
                    )
                elif k < learned.ks_ratio:
                    text.append(
                        f"Without the Langevin corrector the learned model improves from {learned.ks_ratio:.2f} to "
                        f"{k:.2f}: the corrector makes part of the excess."
                    )
                else:
                    text.append(
                        f"Without the Langevin corrector the learned model measures {k:.2f} (with it "
                        f"{learned.ks_ratio:.2f}): the corrector is not the cause."
                    )
            elif v["name"] == "learned below t_low":
                share = max(0.0, (k - exact.ks_ratio) / (learned.ks_ratio - exact.ks_ratio))  # < 0: sampling noise
                text.append(
                    f"With the learned score only for t <= {t_low:.3g} and the exact score above, the run measures "
                    f"{k:.2f}: the learned score at that low-noise end alone makes {share:.0%} of the learned "
                    f"model's excess over the exact score ({learned.ks_ratio:.2f} − {exact.ks_ratio:.2f})"
                    + (f", the learned score above t = {t_low:.3g} the rest." if share < 0.5 else ".")
                )
        weights = check.get("weights")
        if weights:
            ks = {(r.steps, r.model): r.ks_ratio for r in rep.runs if r.solver == solver and r.error is None}
            lines += [
                "",
                f"How far each part of {solver} moves x along the score over the grid steps that start at "
                f"t <= {t_low:.3g}: the predictor by g² Δt · s, the Langevin corrector by ε · s with "
                "ε = 2 (snr ‖z‖/‖s‖)² (score_sde's rule, evaluated with the exact score):",
                "",
                "| steps | grid steps at low noise | predictor Σ g² Δt | corrector Σ ε | KS/crit (learned) "
                "| KS/crit (exact) |",
                "|---|---|---|---|---|---|",
            ]
            for w in weights:
                lines.append(
                    f"| {w['steps']} | {w['grid_steps']} | {w['predictor']:.2g} | {w['corrector']:.2g} "
                    f"| {_fmt(ks.get((w['steps'], 'learned')))} | {_fmt(ks.get((w['steps'], 'exact')))} |"
                )
            w = next((w for w in weights if w["steps"] == steps), None)
            if w is not None and w["predictor"] > 0:
                ratio = w["corrector"] / w["predictor"]
                why = ""
                if ratio > 1 and corrector_made_it:
                    why = (
                        ": at low noise the corrector, not the predictor, moves the samples, along the learned "
                        "score where its error is largest (with the exact score the corrector's run measures "
                        f"{exact.ks_ratio:.2f})"
                    )
                text.append(
                    f"Over the {w['grid_steps']} grid steps at t <= {t_low:.3g} of the {steps}-step run, the "
                    f"corrector's steps (snr = {w['snr']:g}, a size set by the score's norm, not by Δt) add up to "
                    f"{w['corrector']:.2g}, {ratio:{'.2g' if ratio < 10 else '.0f'}} times the predictor's "
                    f"{w['predictor']:.2g}{why}."
                )
        if text:
            lines += ["", " ".join(text)]
    return lines


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
        "## Summary",
        "",
        "```text",
        *_summary_lines(rep),
        "```",
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
        lines.append(f"| {solver} | {_level(st, tol)} | " + " | ".join(cells) + " |")
    failures = [r for r in rep.runs if r.error]
    if failures:
        lines += ["", "Failed runs:", ""] + [f"- {r.solver} ({r.model}): {r.error}" for r in failures]
    lines += _outlier_markdown(rep)
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
            f"| {kind} | {_nats(v['gap_mean'], v['gap_se'])} | {v['gap_abs_max']:.2g} | {v['nfe']} "
            f"| {v['seconds']:.1f} |"
        )
    g = lp["gaussian_baseline"]
    lines.append(f"| best single Gaussian (reference) | {_nats(g['gap_mean'], g['gap_se'])} | | | |")
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


def _pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (the demo only writes files)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _samples_figure(
    rep: DemoReport, data_x: torch.Tensor, finest: dict[tuple[str, str], torch.Tensor], solvers_: list[str]
) -> Any:
    """``samples.png``: data and each solver's finest samples, learned model (top) and exact score (bottom), on
    shared axes with ticks (labels on the outer panels)."""
    plt = _pyplot()

    m = 2000  # points per scatter panel
    pts = data_x[:m].cpu().float()
    lo, hi = (pts.min(0).values - 1.0).tolist(), (pts.max(0).values + 1.0).tolist()

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


def _error_figure(rep: DemoReport, solvers_: list[str]) -> Any:
    """``error_vs_nfe.png``: KS/crit against NFE per solver and model; adaptive points labelled with their
    tolerance (learned above the point, exact below)."""
    plt = _pyplot()

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
                        _tol_label(r.tol),
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
    plt = _pyplot()
    pts = data_x[:2000].cpu()
    lo, hi = (pts.min(0).values - 1.0).tolist(), (pts.max(0).values + 1.0).tolist()
    for name, fig in (
        ("samples.png", _samples_figure(rep, data_x, finest, solvers_)),
        ("error_vs_nfe.png", _error_figure(rep, solvers_)),
    ):
        fig.savefig(out / name, dpi=90)
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

    t0 = time.perf_counter()
    rep.diagnostics = _diagnose(models, sde, oracle, rep.runs, x_T, oracle.at(eps), directions, eps, seed)
    rep.seconds["outlier diagnosis"] = time.perf_counter() - t0

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
    print("\n".join(_summary_lines(rep, out / "report.md")), flush=True)  # the headline results, on stdout
    return rep
