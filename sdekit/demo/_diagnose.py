r"""Outliers of the sampling table and their diagnosis by paired reruns (the report's ``diagnostics``).

A level is an outlier when the learned model is distinguishable from :math:`p_\epsilon` (KS/crit > 1) while the
exact score, on the same solver, level, :math:`x_T` and noise, is not (<= 1), and another solver reaches
KS/crit <= 1 with the learned model at no more NFE (:func:`find_outliers`). :func:`diagnose` measures the learned
score's error against t and reruns each outlier solver's finest outlier level: without the corrector, and with the
learned score only at low noise.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch

import sdekit

from .. import solvers
from .._stats import sliced_ks
from ..parameterization import score_fn
from ..solvers._grids import solver_time_grid
from ._config import ALPHA, LOW_NOISE, N_PROFILE
from ._results import SampleRun
from ._stages import error_text, path_times, sample_level

__all__ = ["find_outliers", "diagnose"]


def find_outliers(runs: list[SampleRun]) -> list[dict[str, Any]]:
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
        better = _cheaper_witnesses(runs, solver, lr.nfe)
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


def _cheaper_witnesses(runs: list[SampleRun], solver: str, nfe: int) -> dict[str, SampleRun]:
    """Per other solver, its fewest-NFE learned run with KS/crit <= 1 and at most ``nfe`` NFE (ties: lower ratio)."""
    better: dict[str, SampleRun] = {}
    for r in runs:
        if r.model != "learned" or r.error is not None or r.solver == solver:
            continue
        if r.nfe <= nfe and r.ks_ratio <= 1.0:
            b = better.get(r.solver)
            if b is None or (r.nfe, r.ks_ratio) < (b.nfe, b.ks_ratio):
                better[r.solver] = r
    return better


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
    table's run of that level (:func:`~sdekit.demo._stages.sample_level`), so the comparison is paired."""
    try:
        x, info = sample_level(model, param, sde, solver, steps, tol, x_T, eps, seed, **options)
    except sdekit.errors.SdekitError as err:
        return {"error": error_text(err)}
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
    for t in path_times(sde, eps, 5).flip(0).tolist():
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
    impl = solvers.get(solver)
    opts = impl.accepted_options()
    if opts.get("corrector") != "langevin" or opts.get("snr_norm", "batch") != "batch" or steps is None:
        return None
    snr, n_corr = float(opts["snr"]), int(opts.get("n_corrector_steps", 1))
    times = solver_time_grid(sde, float(sde.T), eps, steps, impl, {})
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


def diagnose(
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
    """The learned score's error vs t, the outlier levels (:func:`find_outliers`) and, for each outlier solver's
    finest outlier level, paired reruns: without the corrector (solvers that have one, both models) and with the
    learned score only below t_low = LOW_NOISE * eps (exact score above)."""
    net, param = models["learned"]
    learned = score_fn(net, sde, param)
    t_low = min(LOW_NOISE * eps, float(sde.T))
    out: dict[str, Any] = {
        "t_low": t_low,
        "noise_to_signal_low": _noise_to_signal(sde, t_low),
        "score_error": _score_error(learned, oracle, sde, eps, x_T.device, seed),
        "outliers": find_outliers(runs),
        "checks": [],
    }
    last: dict[str, dict] = {}
    for o in out["outliers"]:
        last[o["solver"]] = o  # runs are in ladder order: the finest outlier level of each solver
    for solver, o in last.items():
        level = (sde, solver, o["steps"], o["tol"], x_T, target, directions, eps, seed)
        check: dict[str, Any] = {"solver": solver, "steps": o["steps"], "tol": o["tol"], "variants": []}
        if "corrector" in solvers.get(solver).accepted_options():
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
