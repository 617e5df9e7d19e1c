r"""Samplers and likelihood against exact laws (group ``"analytic"``).

Data: two exact oracles of :mod:`sdekit.analytic` in 2-D, a correlated Gaussian and a 3-component
Gaussian mixture. Carried by an affine SDE, their marginals :math:`p_t` and scores are exact
(``oracle = data.diffuse(sde)``), so with the exact score as the model the only errors left are the
solver's.

**Samplers** (every registered solver x every affine SDE in the full run; a representative subset
under ``--quick``). Each run starts from exact draws of :math:`p_T` (``oracle.sample(n, T)``: the
mismatch of ``sde.prior`` is not counted), integrates to :math:`\epsilon` = ``sde.default_eps``
with ``denoise=False`` at the solver's documented recommendation (``docs/sampling.md``,
``docs/native_samplers.md``) and compares the n samples with the exact :math:`p_\epsilon`
(``oracle.at(eps)``) in two ways:

* *moments*: z-scores of the 2 coordinate means (standard error from the exact variance) and of the
  2 second central moments about the exact mean (standard error estimated from the sample, CLT);
  the largest :math:`|z|` must stay below the Bonferroni normal quantile
  :math:`\Phi^{-1}(1 - \alpha/8)` (4 two-sided tests, :math:`\alpha = 10^{-4}`: 4.17);
* *sliced KS*: :math:`D/D_{crit}` over 16 fixed directions (:mod:`sdekit._stats`,
  family-wise :math:`\alpha = 10^{-4}`), must be <= 1.

At :math:`\alpha = 10^{-4}` per line the full run's ~300 statistical lines raise a false alarm with
probability <= 3 % (the seed is fixed, so a run is reproducible). What n can see: KS at n samples
detects a CDF error of about :math:`D_{crit} \approx 2.5/\sqrt n` (0.018 at n = 20,000, both modes) and
moments a bias of about 4 standard errors. ``TESTING.md``: n = 4,000 cannot see the discretisation
error of 20 reverse Euler steps; at n = 20,000 the solver table of ``docs/sampling.md`` was
calibrated, so the runs check the recommendations.

**Likelihood**: ``sdekit.logp`` (dopri5, rtol = atol = 1e-5, exact trace) with the exact prior
``prior=oracle.at(T)`` against the exact :math:`\log p_\epsilon` at exact draws of
:math:`p_\epsilon`. Tolerance 1e-3 nats: the adaptive solver keeps each step's local error below
rtol times the state (|log p| ~ 1-10) and takes ~10-100 steps, so the accumulated error is
O(1e-4 to 1e-3); with ``sde.prior`` instead of :math:`p_T` the error would be ~1e-2 (``TESTING.md``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from ._core import CheckResult, Context, guarded, register

GROUP = "analytic"
F32 = torch.float32
ALPHA = 1e-4
K_DIRECTIONS = 16
N_FULL, N_QUICK = 20_000, 20_000
N_LOGP = 64
LOGP_TOL = 1e-3

QUICK_SOLVERS = ("euler", "srk", "ode:dopri5", "exp2", "ancestral")
QUICK_SDES = ("VPSDE", "VESDE")


def oracles() -> dict[str, object]:
    """The two 2-D data laws: a correlated Gaussian and a 3-component mixture (``sdekit.analytic``)."""
    from sdekit import analytic

    return {
        "gaussian": analytic.Gaussian(torch.tensor([0.5, -1.0]), cov=torch.tensor([[0.6, 0.2], [0.2, 0.3]])),
        "mixture": analytic.GaussianMixture(
            torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.5, -2.0]]),
            torch.tensor([0.3, 0.5, 0.4]),
            torch.tensor([0.3, 0.4, 0.3]),
        ),
    }


@dataclass
class SampleStats:
    """Evidence of one sampler run: KS ratio, largest moment z, NFE."""

    ks_ratio: float
    z_max: float
    z_crit: float
    nfe: int
    seconds: float


def z_critical(alpha: float = ALPHA, m: int = 4) -> float:
    """Two-sided Bonferroni normal quantile for m tests at family-wise level alpha."""
    from scipy.stats import norm

    return float(norm.isf(alpha / (2 * m)))


def moment_z(x: torch.Tensor, law) -> float:
    """Largest |z| of the coordinate means and second central moments of ``x`` against the exact ``law``."""
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    n = x.shape[0]
    mu = law.mean().reshape(-1).to(torch.float64)
    var = torch.diagonal(law.covariance()).to(torch.float64)
    z_mean = (x.mean(0) - mu) / torch.sqrt(var / n)
    sq = (x - mu) ** 2
    z_var = (sq.mean(0) - var) / (sq.std(0) / math.sqrt(n))
    return float(torch.cat([z_mean, z_var]).abs().max())


def solver_kwargs(name: str) -> dict:
    """The recommended ``steps`` / ``rtol`` of a solver, read from its class (see the module docstring).

    torchsde solvers: their fixed-step ``recommended_steps`` (``steps=None`` would make them adaptive);
    adaptive ODE solvers: ``recommended_rtol``; fixed-grid solvers: ``steps=None``, i.e. their
    ``default_steps``. Every fixed-step run uses the solver's default grid.
    """
    import sdekit
    from sdekit.solvers._torchdiffeq import TorchdiffeqSolver
    from sdekit.solvers._torchsde import TorchsdeSolver

    cls = sdekit.solvers.available()[name]
    if issubclass(cls, TorchsdeSolver):
        return {"steps": cls.recommended_steps}
    if issubclass(cls, TorchdiffeqSolver) and cls.adaptive:
        return {"steps": None, "rtol": cls.recommended_rtol, "atol": cls.recommended_rtol}
    return {"steps": None}  # the solver's default_steps (its documented recommendation)


def run_sampler(sde, data, solver: str, n: int, generator: torch.Generator) -> SampleStats:
    """Sample n points with ``solver`` from exact p_T with the exact score; compare with exact p_eps."""
    import sdekit
    from sdekit._stats import random_directions, sliced_ks

    oracle = data.diffuse(sde)
    eps = sde.default_eps
    x_T = oracle.sample(n, sde.T, generator=generator, dtype=F32)
    start = time.perf_counter()
    x, info = sdekit.sample(
        oracle,
        sde,
        (n, 2),
        solver=solver,
        x_T=x_T,
        eps=eps,
        denoise=False,
        generator=generator,
        dtype=F32,
        return_info=True,
        **solver_kwargs(solver),
    )
    seconds = time.perf_counter() - start
    law = oracle.at(eps)
    ks = sliced_ks(x, law, random_directions(2, K_DIRECTIONS, seed=0), alpha=ALPHA)
    return SampleStats(ks.ratio, moment_z(x, law), z_critical(), int(info.nfe), seconds)


def _sampler_lines(sde, oracle_name: str, data, solver: str, n: int, gen: torch.Generator) -> list[CheckResult]:
    from sdekit._stats import ks_critical_value

    s = run_sampler(sde, data, solver, n, gen)
    kw = solver_kwargs(solver)
    how = f"steps={kw['steps']}" if kw.get("steps") else (f"rtol={kw['rtol']:g}" if "rtol" in kw else "default steps")
    label = f"{type(sde).__name__} / {oracle_name} / {solver} ({how}, {s.nfe} NFE, n={n})"
    return [
        CheckResult.below(
            GROUP,
            f"{label}: sliced KS D/D_crit",
            s.ks_ratio,
            1.0,
            f"16 directions, family-wise alpha = 1e-4 (DKW-Massart); D_crit = "
            f"{ks_critical_value(n, K_DIRECTIONS, ALPHA):.3f}",
        ),
        CheckResult.below(
            GROUP,
            f"{label}: moments max |z|",
            s.z_max,
            s.z_crit,
            "2 means + 2 variances vs exact, Bonferroni alpha = 1e-4 (normal quantile)",
        ),
    ]


def logp_error(sde, data, n: int, generator: torch.Generator) -> float:
    """Largest |sdekit.logp - exact log p_eps| (nats) at n exact draws of p_eps, with the exact prior."""
    import sdekit

    oracle = data.diffuse(sde)
    eps = sde.default_eps
    x = oracle.sample(n, eps, generator=generator, dtype=torch.float64)
    got = sdekit.logp(oracle, sde, x, eps=eps, prior=oracle.at(sde.T), rtol=1e-5, atol=1e-5, trace="exact")
    return float((got - oracle.log_prob(x, eps)).abs().max())


def _affine(ctx: Context) -> tuple[list, list[CheckResult]]:
    keep, skipped = [], []
    for sde in ctx.sdes:
        if sde.is_affine:
            keep.append(sde)
        else:
            skipped.append(
                CheckResult.skip(GROUP, f"{type(sde).__name__}: samplers and logp vs exact laws", "needs an affine SDE")
            )
    if ctx.quick and not ctx.user_sde:
        keep = [s for s in keep if type(s).__name__ in QUICK_SDES]
    return keep, skipped


def _solvers(ctx: Context) -> list[str]:
    import sdekit

    names = sorted(sdekit.solvers.available())
    return [s for s in names if s in QUICK_SOLVERS] if ctx.quick else names


@register(GROUP, quick=True)
def samplers(ctx: Context):
    """Every solver (quick: 5) x affine SDE (quick: VP, VE) x oracle: moments and sliced KS vs the exact law."""
    import sdekit

    sdes, skipped = _affine(ctx)
    yield from skipped
    n = N_QUICK if ctx.quick else N_FULL
    oracle_set = oracles()
    if ctx.quick:
        oracle_set = {"mixture": oracle_set["mixture"]}
    rows: list = []
    last: list[CheckResult] = []  # the last line is held back to carry the summary figure
    for sde in sdes:
        for solver in _solvers(ctx):
            cls = sdekit.solvers.available()[solver]
            if sde.noise_type not in cls.noise_types:
                yield CheckResult.skip(GROUP, f"{type(sde).__name__} / {solver}", f"{sde.noise_type} noise unsupported")
                continue
            if not cls.can_sample:  # declared: sample() refuses it (Solver.can_sample, sample_refusal)
                yield CheckResult.skip(GROUP, f"{type(sde).__name__} / {solver}", "cannot sample (sample() refuses it)")
                continue
            for oname, data in oracle_set.items():
                gen = ctx.generator("analytic", type(sde).__name__, oname, solver)
                label = f"{type(sde).__name__} / {oname} / {solver}: sample"
                lines = guarded(GROUP, label, lambda: _sampler_lines(sde, oname, data, solver, n, gen))
                rows += [(type(sde).__name__, solver, oname, r) for r in lines if "sliced KS" in r.name]
                yield from last
                last = lines
    if last and rows:
        last[-1] = dataclasses.replace(last[-1], figure=_plot(ctx, rows, n))
    yield from last


@register(GROUP, quick=True)
def likelihood(ctx: Context):
    """sdekit.logp with the exact prior vs the exact log-density, per affine SDE (quick: VP, VE) and oracle."""
    sdes, skipped = _affine(ctx)
    yield from skipped
    oracle_set = oracles()
    for sde in sdes:
        for oname, data in oracle_set.items():
            gen = ctx.generator("logp", type(sde).__name__, oname)
            name = f"{type(sde).__name__} / {oname}: max |logp - exact| (nats, {N_LOGP} points, dopri5 rtol 1e-5)"
            yield from guarded(
                GROUP,
                name,
                lambda: CheckResult.below(
                    GROUP,
                    name,
                    logp_error(sde, data, N_LOGP, gen),
                    LOGP_TOL,
                    "adaptive dopri5, rtol = atol = 1e-5 accumulated over its steps; exact prior p_T",
                ),
            )


def _plot(ctx: Context, rows: list, n: int) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [(f"{s} {o[:3]}", solver, r.value) for s, solver, o, r in rows]
    solvers = list(dict.fromkeys(v[1] for v in values))
    cases = list(dict.fromkeys(v[0] for v in values))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(solvers) + 2), 4.0))
    width = 0.8 / max(1, len(cases))
    for i, case in enumerate(cases):
        ys = [next((v[2] for v in values if v[0] == case and v[1] == s), math.nan) for s in solvers]
        ys = [min(y, 30.0) if math.isfinite(y) else 30.0 for y in ys]
        ax.bar([j + i * width for j in range(len(solvers))], ys, width, label=case)
    ax.axhline(1.0, color="k", lw=1, ls="--", label="critical (alpha 1e-4)")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.1)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(solvers))], solvers, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("sliced KS  D / D_crit  (capped at 30)")
    ax.set_title(f"samplers vs exact p_eps, n = {n}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    name = "analytic_ks.png"
    fig.savefig(ctx.figure_path(name), dpi=90)
    plt.close(fig)
    return name
