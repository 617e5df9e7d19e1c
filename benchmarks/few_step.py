r"""Few-step sampling (4–30 NFE): sdekit's samplers against DPM-Solver++ and UniPC (diffusers), same exact oracle.

Problem (as in :mod:`benchmarks.error_vs_nfe`): the 2-D, 3-component Gaussian mixture ``MEANS, STDS, WEIGHTS``
carried by ``VPSDE()``, ``VESDE()`` and a user SDE declared here, :class:`TimeVaryingOU`
(:math:`dx = -\theta(1+t)x\,dt + s\sqrt{1+t}\,dW`, :math:`\theta = 3`, :math:`s = 2`, T = 1,
``default_eps`` = 2.5e-5, where :math:`\sigma(\epsilon) = 0.010` as for VP at its :math:`\epsilon` = 1e-3).
The model is the exact score ``GaussianMixture(MEANS, STDS, WEIGHTS).diffuse(sde)``, so every error is the
sampler's. Every run starts from an exact draw of :math:`p_T` (``oracle.at(sde.T).sample``, one seed per run),
integrates the probability-flow ODE to :math:`t = \epsilon` (``sde.default_eps``; sdekit with
``denoise=False``, the peers with ``final_sigmas_type="sigma_min"``: no final denoising step) and is compared
with the exact :math:`p_\epsilon` (``oracle.at(eps)``) by the sliced Kolmogorov–Smirnov test of
:mod:`sdekit._stats` (``K_DIRECTIONS`` directions from seed 0, family-wise level ``ALPHA``). Entry:
``D / D_crit``; at most 1 means the n samples cannot be told from the exact law at that level.

Methods, found at run time (:func:`sdekit_methods`): every registered probability-flow sampler whose ``steps``
count model evaluations (class attribute ``steps_are_nfe``: ``exp1``–``exp3`` and the DPM-Solver++/DPM-Solver/
UniPC transcriptions once registered), expanded by :data:`OPTION_VARIANTS` (``unipc``: orders 1–3 x ``bh1``/``bh2``,
labelled ``unipc-2 bh2``), plus the names of :data:`CANDIDATES` that are registered (``ode:midpoint``,
``ode:rk4``); an unregistered name is skipped, as is an option set the solver does not accept. The peers
(:data:`PEERS` of :mod:`benchmarks._few_step_peers`): diffusers' DPM-Solver++(2M)/(3M) and UniPC-2/3 with ``bh1``
and ``bh2``.

NFE is counted by a wrapper around the model (:class:`CountingModel`), never from a table: every cell's
measured NFE must equal its column (a mismatch is printed in the cell). ``steps_are_nfe`` solvers run
``steps = NFE`` (their start-up evaluations included); the others ``steps = (NFE - start-up) / NFE-per-step``,
both measured by a probe run (:func:`nfe_plan`; ``ode:midpoint`` 2 and ``ode:rk4`` 4 evaluations per step run
only where the NFE is a multiple, ``n/a`` elsewhere). The peers make one evaluation per step.

Stages (:func:`run`):

1. **Sweep**: every sdekit method on every grid of :data:`sdekit.solvers._grids.GRIDS` (read at run time, so new
   grid kinds are included), every peer on the grids diffusers offers (:data:`PEER_GRIDS`: ``uniform`` =
   its default ``timestep_spacing="linspace"``, ``logsnr`` = ``use_lu_lambdas=True``, ``edm`` =
   ``use_karras_sigmas=True``), n = ``N_SWEEP``, seeds ``SWEEP_SEEDS``. A method's best grid: the smallest
   geometric-mean ratio over the NFE ladder; its default grid: the solver's (peers: ``uniform``).
2. **Final**: per SDE and NFE, the ``FINAL_TOP`` most accurate sdekit (method, grid) pairs and the ``FINAL_TOP``
   most accurate peer pairs of the sweep are run again at n = ``N_FINAL`` with seeds ``FINAL_SEEDS``; the
   head-to-head (:func:`~benchmarks._few_step_report.head_to_head`) takes the best of each side by mean ratio
   over the seeds and reports sdekit / peer.

Runs are independent jobs, spread over ``jobs`` processes of ``threads`` torch threads each.

Peer mapping (documented in :mod:`benchmarks._few_step_peers` and ``docs/benchmarks.md``): diffusers' VP
schedulers see an affine SDE with marginal :math:`x_t = \alpha x_0 + m + \sigma\varepsilon` in the variables
:math:`x^{VP} = (x - m)/s`, :math:`s = \sqrt{\alpha^2 + \sigma^2}`, with ``sigmas`` :math:`r = \sigma/\alpha`
replaced by the grid's exact float64 values, ``timesteps`` = :math:`1000\,t_i/T` (floats), the noise prediction
:math:`\hat\varepsilon(x^{VP}, \tau) = -\sigma(t)\,\nabla_x\log p_t(s x^{VP} + m)` at :math:`t = T\tau/1000`,
and the beta table of the SDE in that view (:func:`vp_betas`). Their update runs in float32 as in diffusers.

Orders (:func:`measure_orders`, before anything is compared): VPSDE, a 1-D two-component mixture (a pure
Gaussian super-converges on the uniform-:math:`\lambda` grid), ``logsnr`` grid, ``lower_order_final=False``
everywhere, 199 fixed starting points :math:`x_T = F_T^{-1}(u)`; in 1-D the PF-ODE flow is the monotone map
:math:`F_\epsilon^{-1}\circ F_T`, so the exact endpoint is :math:`F_\epsilon^{-1}(u)` (bisection in float64).
Error: RMS over the 199 points; order: least-squares slope of log error against log NFE. A peer that does not
reproduce its published order (slope below it by more than ``ORDER_SLACK``) is marked † in every table: it stays
in the comparison as what users run, but is not a reference.

Writes ``benchmarks/results/few_step.md``, ``.png`` and ``.json``. Run ``python -m benchmarks few_step
[--quick]`` or ``python -m benchmarks.few_step [--quick] [--jobs 2] [--sde VPSDE ...]``; ``--render JSON``
rewrites the report and plot from a saved run; ``--check 'LABEL@GRID' ... [--nfes 12 15]`` runs only those
(method, grid) pairs as the final stage does (:func:`check`) and prints their rows.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sympy as sp
import torch

import sdekit
from benchmarks._few_step_peers import (
    DOUBLED_D2,
    PEER_DEFAULT_GRID,
    PEER_GRIDS,
    PEERS,
    PUBLISHED_ORDER,
    TIMESTEPS,
    CountingModel,
    EpsModel,
    Peer,
    VPView,
    diffusers_or_none,
    make_scheduler,
    run_peer,
    vp_betas,
    vp_view,
)
from benchmarks._few_step_report import (
    DIRECTION_SEED,
    Cell,
    OrderRow,
    Row,
    best_grids,
    first_pass,
    group,
    load_json,
    orders_markdown,
    plain,
    render,
    report,
    write_results,
)
from benchmarks.error_vs_nfe import ALPHA, K_DIRECTIONS, MEANS, STDS, WEIGHTS
from sdekit import analytic
from sdekit._stats import mixture_projected_cdf, random_directions, sliced_ks
from sdekit.errors import SolverError
from sdekit.solvers import _grids
from sdekit.solvers._grids import time_grid

__all__ = [
    "CountingModel", "EpsModel", "Peer", "VPView", "vp_betas", "vp_view", "make_scheduler", "run_peer", "PEERS",
    "PEER_GRIDS", "TIMESTEPS", "DOUBLED_D2", "Cell", "Row", "OrderRow", "best_grids", "first_pass", "Method",
    "Config", "run", "check", "measure_orders", "main", "report", "write_results", "load_json",
]  # fmt: skip

NFES: tuple[int, ...] = (4, 5, 6, 8, 10, 12, 15, 20, 25, 30)
N_SWEEP = 100_000
N_FINAL = 200_000
SWEEP_SEEDS: tuple[int, ...] = (1,)
FINAL_SEEDS: tuple[int, ...] = (1, 2)  # two x_T seeds: a second seed can flip a rung (TESTING.md)
FINAL_TOP = 2
ORDER_NFES: tuple[int, ...] = (64, 128, 256, 512)
ORDER_MEANS = [-1.0, 1.5]
ORDER_STDS = [0.4, 0.3]
ORDER_WEIGHTS = [0.4, 0.6]
RESULTS = Path(__file__).resolve().parent / "results"
CANDIDATES: tuple[str, ...] = (
    "exp1", "exp2", "exp3", "dpm++2m", "dpm++3m", "dpm2", "dpm3", "unipc", "ode:midpoint", "ode:rk4",
)  # fmt: skip
"""Solver names run when registered (besides every registered ``steps_are_nfe`` probability-flow sampler)."""
OPTION_VARIANTS: dict[str, tuple[dict[str, Any], ...]] = {
    "unipc": (
        *({"order": p, "variant": v} for p in (1, 2, 3) for v in ("bh1", "bh2")),
        {"order": 2, "variant": "bh2", "lower_order_final": "auto"},  # the default rule's at 10-19 NFE
    ),
}
"""Option sets a solver runs with (one method each); a solver not listed runs once with its defaults."""


class TimeVaryingOU(sdekit.SDE):
    r"""A user's affine SDE: :math:`dx = -\theta(1+t)x\,dt + s\sqrt{1+t}\,dW` (time-varying OU).

    Marginal: :math:`\alpha = e^{-\theta(t + t^2/2)}`, :math:`\sigma^2 = \tfrac{s^2}{2\theta}(1 - \alpha^2)`
    (derived by sdekit): at T = 1 :math:`\alpha = 0.011`, :math:`\sigma = 0.82`; at ``default_eps`` = 2.5e-5
    :math:`\sigma = 0.010`. Not variance preserving (:math:`\alpha^2 + \sigma^2 \ne 1`), so the peers' VP view
    rescales x.
    """

    theta = 3
    sigma = 2
    T = 1.0
    default_eps = 2.5e-5

    def drift(self, x, t):
        return -self.theta * (1 + t) * x

    def diffusion(self, x, t):
        return self.sigma * sp.sqrt(1 + t)


def make_sdes() -> dict[str, sdekit.SDE]:
    """The three SDEs of the benchmark, by name."""
    return {"VPSDE": sdekit.VPSDE(), "VESDE": sdekit.VESDE(), "TimeVaryingOU": TimeVaryingOU()}


@functools.cache
def _sde(name: str) -> sdekit.SDE:
    """One SDE per process (jobs name their SDE; its derived marginal is then built once)."""
    return make_sdes()[name]


def oracle_for(sde: sdekit.SDE) -> analytic.DiffusedGaussianMixture:
    """The exact score model of the benchmark's 2-D mixture under ``sde``."""
    return analytic.GaussianMixture(torch.tensor(MEANS), torch.tensor(STDS), torch.tensor(WEIGHTS)).diffuse(sde)


# ------------------------------------------------------------------------------------------------ methods


@dataclass(frozen=True)
class Method:
    """A contender: an sdekit solver with options (``family="sdekit"``) or a diffusers :class:`Peer`."""

    label: str
    family: str
    default_grid: str
    solver: str = ""
    options: tuple[tuple[str, Any], ...] = ()
    peer: Peer | None = None


def method_label(solver: str, options: dict[str, Any]) -> str:
    """``solver`` with ``-order`` and the other option values: ``("unipc", {"order": 2, "variant": "bh2"})`` ->
    ``"unipc-2 bh2"``; a non-string value is written ``key=value``."""
    head = solver + (f"-{options['order']}" if "order" in options else "")
    rest = [v if isinstance(v, str) else f"{k}={v}" for k, v in options.items() if k != "order"]
    return " ".join([head, *rest])


def sdekit_methods(log: Callable[[str], None] | None = print) -> list[Method]:
    """sdekit's contenders, from the registry at call time (module docstring); ``log`` hears what is skipped."""
    registry = sdekit.solvers.available()
    auto = [k for k, v in registry.items() if v.kind == "ode" and v.steps_are_nfe and v.can_sample]
    methods = []
    for name in dict.fromkeys([*auto, *CANDIDATES]):
        if name not in registry:
            if log:
                log(f"few_step: {name!r} is not registered: skipped")
            continue
        cls = registry[name]
        for options in OPTION_VARIANTS.get(name, ({},)):
            unknown = set(options) - set(cls.accepted_options())
            if unknown:
                if log:
                    log(f"few_step: {name!r} does not accept {sorted(unknown)}: {method_label(name, options)} skipped")
                continue
            methods.append(Method(method_label(name, options), "sdekit", cls.grid, name, tuple(options.items())))
    return methods


def peer_methods(peers: Sequence[Peer] = PEERS) -> list[Method]:
    """The diffusers contenders (the diagnostic D2x2 variant only in the order table)."""
    return [Method(p.label, "diffusers", PEER_DEFAULT_GRID, peer=p) for p in peers if not p.doubled_d2]


@functools.cache
def nfe_plan(solver: str, sde_name: str) -> tuple[int, int]:
    """(start-up NFE, NFE per step) of an sdekit solver, measured with a counting model on a 4-sample probe."""
    sde = _sde(sde_name)
    model = CountingModel(oracle_for(sde))
    x_T = oracle_for(sde).sample(4, sde.T, generator=torch.Generator().manual_seed(0))
    counts = []
    for steps in (2, 3):
        model.calls = 0
        sdekit.sample(model, sde, x_T.shape, solver=solver, steps=steps, x_T=x_T, denoise=False)
        counts.append(model.calls)
    per_step = counts[1] - counts[0]
    return counts[0] - 2 * per_step, per_step


def sdekit_steps(method: Method, sde_name: str, nfe: int) -> int | None:
    """The ``steps=`` that spends ``nfe`` evaluations (None: not reachable with whole steps)."""
    if sdekit.solvers.available()[method.solver].steps_are_nfe:
        return nfe
    startup, per_step = nfe_plan(method.solver, sde_name)
    steps, rest = divmod(nfe - startup, per_step)
    return None if rest or steps < 1 else steps


# ------------------------------------------------------------------------------------------------ running


@dataclass(frozen=True)
class Job:
    """One method on one grid, SDE and seed over ``nfes`` at n samples (one :class:`Row`)."""

    sde: str
    method: Method
    grid: str
    seed: int
    n: int
    nfes: tuple[int, ...]
    stage: str = "sweep"


def run_job(job: Job) -> Row:
    """Run a :class:`Job`: one cell per NFE, each from the same exact x_T draw; failures are table entries."""
    sde, method = _sde(job.sde), job.method
    oracle = oracle_for(sde)
    eps = float(sde.default_eps)
    target = oracle.at(eps)
    directions = random_directions(2, K_DIRECTIONS, seed=DIRECTION_SEED)
    diffusers = diffusers_or_none() if method.peer else None
    row = Row(job.sde, method.label, method.family, job.grid, method.default_grid, job.seed, job.n, job.stage)
    x_T = oracle.at(sde.T).sample(job.n, generator=torch.Generator().manual_seed(job.seed)).to(torch.float32)
    for nfe in job.nfes:
        cell = Cell(nfe)
        row.cells.append(cell)
        model = CountingModel(oracle)
        try:
            t0 = time.perf_counter()
            if method.peer is None:
                steps = sdekit_steps(method, job.sde, nfe)
                if steps is None:
                    cell.note = "n/a"
                    continue
                x, info = sdekit.sample(
                    model, sde, x_T.shape, solver=method.solver, steps=steps, x_T=x_T, denoise=False, grid=job.grid,
                    return_info=True, **dict(method.options),
                )  # fmt: skip
                if info.nfe != model.calls:
                    cell.note = f"info.nfe {info.nfe}"
            else:
                times = time_grid(sde, float(sde.T), eps, nfe, job.grid)
                x = run_peer(make_scheduler(method.peer, sde, diffusers), sde, model, x_T, times)
            cell.seconds = time.perf_counter() - t0
            cell.nfe = model.calls
            if not bool(torch.isfinite(x).all()):
                cell.note = "non-finite"
                continue
            cell.ratio = sliced_ks(x, target, directions, alpha=ALPHA).ratio
        except SolverError as err:  # too few evaluations for the method: refused before any model call
            cell.note = "n/a" if model.calls == 0 else f"fail: {type(err).__name__}"
        except Exception as err:  # a failure is a table entry
            cell.note = f"fail: {type(err).__name__}"
    return row


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def execute(jobs: Sequence[Job], workers: int, threads: int, log: Callable[[str], None] | None) -> list[Row]:
    """Run the jobs (in ``workers`` spawned processes when > 1); rows in job order; ``log`` hears each row."""

    def report(row: Row) -> Row:
        if log is not None:
            secs = sum(c.seconds for c in row.cells)
            cells = " ".join(plain(c) for c in row.cells)
            log(f"  {row.stage:5s} {row.sde:13s} {row.label:34s} seed {row.seed} {secs:6.1f} s  {cells}")
        return row

    if workers <= 1:
        return [report(run_job(job)) for job in jobs]
    out: list[Row | None] = [None] * len(jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        index = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
        for future in as_completed(index):
            out[index[future]] = report(future.result())
    return out  # type: ignore[return-value]


@dataclass
class Config:
    """What :func:`run` runs. ``methods`` None: :func:`sdekit_methods` and (with diffusers) the peers, at run
    time; ``grids`` None: :data:`sdekit.solvers._grids.GRIDS` at run time."""

    nfes: tuple[int, ...] = NFES
    n_sweep: int = N_SWEEP
    n_final: int = N_FINAL
    sweep_seeds: tuple[int, ...] = SWEEP_SEEDS
    final_seeds: tuple[int, ...] = FINAL_SEEDS
    final_top: int = FINAL_TOP
    grids: tuple[str, ...] | None = None
    peer_grids: tuple[str, ...] = PEER_GRIDS
    methods: tuple[Method, ...] | None = None
    jobs: int = 1
    threads: int = 1
    order_nfes: tuple[int, ...] = ORDER_NFES

    def resolved(self, peers: bool = True, log: Callable[[str], None] | None = print) -> Config:
        """A copy with ``grids`` and ``methods`` filled in (peers only if ``peers`` and diffusers is installed)."""
        methods = self.methods
        if methods is None:
            with_peers = peers and diffusers_or_none() is not None
            methods = tuple(sdekit_methods(log) + (peer_methods() if with_peers else []))
        return replace(self, grids=self.grids or tuple(_grids.GRIDS), methods=methods)


QUICK = Config(nfes=(5, 10, 20), n_sweep=10_000, n_final=20_000, final_seeds=(1,), final_top=1)
"""``--quick``: a smoke run (n = 10,000 sweep, 20,000 final, NFE 5/10/20, one seed, one finalist per side)."""


def sweep_jobs(sde_names: Sequence[str], cfg: Config) -> list[Job]:
    """Stage 1: every sdekit method on every grid, every peer on ``cfg.peer_grids``, at ``cfg.n_sweep``."""
    jobs = []
    for sde in sde_names:
        for method in cfg.methods or ():
            grids = cfg.grids if method.family == "sdekit" else cfg.peer_grids
            for grid in grids or ():
                for seed in cfg.sweep_seeds:
                    jobs.append(Job(sde, method, grid, seed, cfg.n_sweep, cfg.nfes))
    return jobs


def final_jobs(sweep: list[Row], cfg: Config) -> list[Job]:
    """Stage 2: per SDE and NFE the ``cfg.final_top`` best (method, grid) of each family in the sweep (mean ratio
    over the sweep seeds), re-run at ``cfg.n_final`` with ``cfg.final_seeds`` at the NFE values they contend at."""
    by_label = {m.label: m for m in cfg.methods or ()}
    contend: dict[tuple[str, str, str], set[int]] = {}
    groups = group(sweep)
    for nfe in cfg.nfes:
        for sde in dict.fromkeys(k[0] for k in groups):
            for family in ("sdekit", "diffusers"):
                ranked = []
                for key, seed_rows in groups.items():
                    cells = [r.cell(nfe) for r in seed_rows]
                    if key[0] == sde and seed_rows[0].family == family and all(c and c.ratio for c in cells):
                        ranked.append((sum(c.ratio for c in cells) / len(cells), key))  # type: ignore[union-attr, misc]
                for _, key in sorted(ranked)[: cfg.final_top]:
                    contend.setdefault(key, set()).add(nfe)
    jobs = []
    for (sde, label, grid), nfes in contend.items():
        for seed in cfg.final_seeds:
            jobs.append(Job(sde, by_label[label], grid, seed, cfg.n_final, tuple(sorted(nfes)), "final"))
    return jobs


def run(
    sde_names: Sequence[str], cfg: Config, peers: bool = True, log: Callable[[str], None] | None = print
) -> list[Row]:
    """The benchmark's two stages (module docstring) on the named SDEs: the sweep rows, then the final rows."""
    cfg = cfg.resolved(peers, log)
    sweep = execute(sweep_jobs(sde_names, cfg), cfg.jobs, cfg.threads, log)
    return sweep + execute(final_jobs(sweep, cfg), cfg.jobs, cfg.threads, log)


def check(
    pairs: Sequence[tuple[str, str]],
    sde_names: Sequence[str],
    nfes: Sequence[int] = NFES,
    n: int = N_FINAL,
    seeds: Sequence[int] = FINAL_SEEDS,
    log: Callable[[str], None] | None = print,
    workers: int = 1,
) -> list[Row]:
    """Targeted final-stage runs (``--check``): each (method label, grid) of ``pairs`` on each SDE at n samples with
    each x_T seed, exactly as the final stage runs them (``workers`` processes); a label that is not a method raises
    ``ValueError``."""
    methods = {m.label: m for m in sdekit_methods(None) + (peer_methods() if diffusers_or_none() else [])}
    unknown = sorted({label for label, _ in pairs} - set(methods))
    if unknown:
        raise ValueError(f"unknown method label(s) {unknown}; choose from {sorted(methods)}")
    jobs = [
        Job(sde, methods[label], grid, seed, n, tuple(nfes), "final")
        for sde in sde_names
        for label, grid in pairs
        for seed in seeds
    ]
    return execute(jobs, workers, 1, log)


# ------------------------------------------------------------------------------------------------- orders


def _quantile(cdf: Callable[[torch.Tensor, int], torch.Tensor], u: torch.Tensor) -> torch.Tensor:
    """Inverse of a 1-D CDF at levels u by bisection on [-100, 100] (float64, 200 halvings)."""
    lo, hi = torch.full_like(u, -100.0), torch.full_like(u, 100.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        below = cdf(mid, 0) < u
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def expected_order(method: Method) -> tuple[float, str]:
    """(order the method should show, note): the ``order`` option or the solver's declared ``weak_order``; UniPC
    with its corrector p + 1; peers their published order."""
    if method.peer is not None:
        return float(PUBLISHED_ORDER.get(method.label, 0)), "UniC: p + 1" if "UniPC" in method.label else ""
    options = dict(method.options)
    order = float(options.get("order", sdekit.solvers.available()[method.solver].weak_order or 0))
    if method.solver == "unipc" and options.get("corrector", True):
        return order + 1, "UniC: p + 1"
    return order, ""


def measure_orders(
    nfes: Sequence[int] = ORDER_NFES, methods: Sequence[Method] | None = None, grid: str = "logsnr"
) -> list[OrderRow]:
    """RMS error of the final sample against the exact PF-ODE solution as NFE doubles (module docstring), for the
    ``steps_are_nfe`` sdekit methods and the peers (with the D2x2 diagnostic) of ``methods`` (None: all)."""
    if methods is None:
        methods = sdekit_methods(None) + (peer_methods() if diffusers_or_none() else [])
    registry = sdekit.solvers.available()
    methods = [m for m in methods if m.peer or registry[m.solver].steps_are_nfe]
    if any(m.peer for m in methods):
        diagnostic = next(p for p in PEERS if p.doubled_d2)
        methods.append(Method(DOUBLED_D2, "diffusers", PEER_DEFAULT_GRID, peer=diagnostic))
    sde = sdekit.VPSDE()
    oracle = analytic.GaussianMixture(
        torch.tensor(ORDER_MEANS), torch.tensor(ORDER_STDS), torch.tensor(ORDER_WEIGHTS)
    ).diffuse(sde)
    eps = float(sde.default_eps)
    one = torch.ones(1, 1, dtype=torch.float64)
    u = torch.linspace(0.005, 0.995, 199, dtype=torch.float64)
    x_T = _quantile(mixture_projected_cdf(oracle.at(sde.T), one), u)[:, None]
    exact = _quantile(mixture_projected_cdf(oracle.at(eps), one), u)[:, None]
    diffusers = diffusers_or_none()
    rows = []
    for method in methods:
        errors = []
        for nfe in nfes:
            model = CountingModel(oracle)
            if method.peer is None:
                options = dict(method.options)
                if "lower_order_final" in registry[method.solver].accepted_options():
                    options["lower_order_final"] = False
                x = sdekit.sample(
                    model, sde, x_T.shape, solver=method.solver, steps=nfe, x_T=x_T, denoise=False, grid=grid, **options
                )
            else:
                scheduler = make_scheduler(method.peer, sde, diffusers, lower_order_final=False)
                x = run_peer(scheduler, sde, model, x_T, time_grid(sde, float(sde.T), eps, nfe, grid))
            if model.calls != nfe:
                raise RuntimeError(f"{method.label}: {model.calls} NFE, expected {nfe}")
            errors.append(float((x - exact).pow(2).mean().sqrt()))
        label = method.label if method.peer else f"sdekit {method.label}"
        rows.append(OrderRow(label, tuple(nfes), errors, *expected_order(method)))
    return rows


def main(
    repeats: int = 1,
    threads: int = 1,
    quick: bool = False,
    sde_names: Sequence[str] | None = None,
    jobs: int = 2,
    peer_grids: Sequence[str] | None = None,
    out: Path = RESULTS,
) -> list[Row]:
    """Measure the orders, run both stages on the SDEs, print and write the report, the plot and the JSON.

    ``repeats`` is accepted for the ``python -m benchmarks`` runner and unused (errors, not timed contests)."""
    del repeats
    torch.set_num_threads(threads)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)  # before the work, not after
    cfg = replace(QUICK if quick else Config(), jobs=jobs, threads=threads)
    if peer_grids:
        cfg = replace(cfg, peer_grids=tuple(_grids.GRIDS) if list(peer_grids) == ["all"] else tuple(peer_grids))
    cfg = cfg.resolved()
    sde_names = list(sde_names or make_sdes())
    diffusers = diffusers_or_none()
    peers_note = f"Peers: diffusers {diffusers.__version__}, torch {torch.__version__}." if diffusers else (
        "Peers skipped: diffusers is not installed (pip install 'sdekit[bench]')."
    )  # fmt: skip
    print(
        f"few-step sampling: {len(cfg.methods or ())} methods x grids {cfg.grids} (peers {cfg.peer_grids}) x "
        f"{sde_names}, NFE {cfg.nfes}, sweep n = {cfg.n_sweep:,}, final n = {cfg.n_final:,} seeds {cfg.final_seeds}; "
        f"{cfg.jobs} processes x {threads} torch threads. {peers_note}"
    )
    t0 = time.perf_counter()
    orders = measure_orders(cfg.order_nfes, methods=list(cfg.methods or ()))
    print(f"\nmeasured orders ({time.perf_counter() - t0:.1f} s):\n{orders_markdown(orders)}\n", flush=True)
    rows = run(sde_names, cfg)
    settings = {
        "n": [cfg.n_sweep, cfg.n_final], "nfes": list(cfg.nfes), "sweep_seeds": list(cfg.sweep_seeds),
        "final_seeds": list(cfg.final_seeds), "final_top": cfg.final_top, "grids": list(cfg.grids or ()),
        "peer_grids": list(cfg.peer_grids), "jobs": cfg.jobs, "peers_note": peers_note,
        "wall": time.perf_counter() - started,
    }  # fmt: skip
    stem = out / "_".join(["few_step", *(sde_names if len(sde_names) < len(make_sdes()) else [])])
    text = write_results(rows, orders, settings, stem)
    print("\n" + "\n".join(line for line in text.splitlines() if "every grid" not in line)[:20000])
    print(f"total {settings['wall'] / 60:.1f} min; wrote {stem}.md, .png and .json")
    return rows


def cli(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.few_step``: see ``-h``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.few_step", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: n = 10,000/20,000, NFE 5/10/20, one seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--sde", nargs="+", choices=list(make_sdes()), help="only these SDEs (default: all 3)")
    parser.add_argument(
        "--peer-grids", nargs="+", metavar="GRID", help=f"grids of the peers (default {PEER_GRIDS}; 'all': every grid)"
    )
    parser.add_argument("--render", type=Path, metavar="JSON", help="rewrite the report and plot of a saved run")
    parser.add_argument(
        "--check", nargs="+", metavar="LABEL@GRID", help="only these methods on these grids, final stage (n = 200,000, "
        "seeds 1 and 2), e.g. 'unipc-3 bh2@optimized' 'DPM-Solver++(3M)@uniform'",
    )  # fmt: skip
    parser.add_argument("--nfes", nargs="+", type=int, help=f"with --check: these NFE (default {NFES})")
    args = parser.parse_args(argv)
    if args.render:
        render(args.render)
    elif args.check:
        torch.set_num_threads(args.threads)
        pairs = [tuple(item.rsplit("@", 1)) for item in args.check]
        check(pairs, args.sde or list(make_sdes()), tuple(args.nfes or NFES), workers=args.jobs)  # type: ignore[arg-type]
    else:
        main(threads=args.threads, quick=args.quick, sde_names=args.sde, jobs=args.jobs, peer_grids=args.peer_grids)


if __name__ == "__main__":
    import benchmarks.few_step as _self  # lazy: run through the package module so that spawned workers unpickle jobs

    _self.cli()
