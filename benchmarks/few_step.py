r"""Few-step sampling (4–30 NFE): sdekit's samplers against DPM-Solver++ and UniPC (diffusers), same exact oracle.

Problem (as in :mod:`benchmarks.error_vs_nfe`): the 2-D, 3-component Gaussian mixture ``MEANS, STDS, WEIGHTS``
carried by ``VPSDE()``, ``VESDE()`` and a user SDE declared here, :class:`TimeVaryingOU`
(:math:`dx = -\theta(1+t)x\,dt + s\sqrt{1+t}\,dW`, :math:`\theta = 3`, :math:`s = 2`, T = 1,
``default_eps`` = 2.5e-5, where :math:`\sigma(\epsilon) = 0.010` as for VP at its :math:`\epsilon` = 1e-3).
The model is the exact score ``GaussianMixture(MEANS, STDS, WEIGHTS).diffuse(sde)``, so every error is the
sampler's. Every run starts from the same exact draw of :math:`p_T` (``oracle.at(sde.T).sample``, seed per
row of the table), integrates the probability-flow ODE to :math:`t = \epsilon` (``sde.default_eps``; sdekit
with ``denoise=False``, the peers with ``final_sigmas_type="sigma_min"``: no final denoising step) and is
compared with the exact :math:`p_\epsilon` (``oracle.at(eps)``) by the sliced Kolmogorov–Smirnov test of
:mod:`sdekit._stats` (``K_DIRECTIONS`` directions from seed 0, family-wise level ``ALPHA``). Entry:
``D / D_crit``; at most 1 means the n samples cannot be told from the exact law at that level.

NFE is counted by a wrapper around the model (:class:`CountingModel`), never from a table: every cell's
measured NFE must equal its column (a mismatch is printed in the cell). sdekit's solvers take
``steps = (NFE - start-up) / NFE-per-step``, both measured by a probe run (``exp3`` spends one extra
evaluation on its 2S start, so it runs NFE - 1 steps; ``ode:midpoint`` 2 and ``ode:rk4`` 4 evaluations per
step run only where the NFE is a multiple). The peers make one evaluation per step.

Grids: every method runs on every grid of :data:`sdekit.solvers._grids.GRIDS` (``uniform`` in t, ``logsnr``
uniform in :math:`\lambda = \log(\alpha/\sigma)`, ``edm`` = Karras' :math:`\rho = 7` on
:math:`r = \sigma/\alpha`, ``arctan`` uniform in :math:`\arctan r^{1/3}`), the same times for sdekit and
the peers. Default grids: sdekit's solver defaults (``arctan`` for exp1–3, ``logsnr`` for ``ode:*``); for
the peers ``uniform``, which is what diffusers' default ``timestep_spacing="linspace"`` gives
(``linspace(0, 999, n + 1)`` integer timesteps, t = timestep / 1000). ``use_lu_lambdas=True`` is the
``logsnr`` grid and ``use_karras_sigmas=True`` the ``edm`` grid.

Peer mapping (diffusers' ``DPMSolverMultistepScheduler`` / ``UniPCMultistepScheduler``, epsilon
prediction, ``final_sigmas_type="sigma_min"``, otherwise their defaults). Both are written for a VP
process :math:`x^{VP} = \alpha^{VP} x_0 + \sigma^{VP}\varepsilon`, :math:`(\alpha^{VP})^2 + (\sigma^{VP})^2 = 1`,
parameterised by their ``sigmas`` :math:`r = \sigma^{VP}/\alpha^{VP}` (``alpha_t = 1/sqrt(1 + r^2)``,
``sigma_t = r alpha_t`` in ``_sigma_to_alpha_sigma_t``). An affine SDE with marginal
:math:`x_t = \alpha(t)x_0 + m(t) + \sigma(t)\varepsilon` is the same process in scaled variables
(:func:`vp_view`):

.. math::
    s(t) = \sqrt{\alpha^2 + \sigma^2},\quad x^{VP} = \frac{x - m}{s},\quad
    \alpha^{VP} = \frac{\alpha}{s},\quad \sigma^{VP} = \frac{\sigma}{s},\quad r = \frac{\sigma}{\alpha},

so :math:`\lambda` and the PF-ODE are unchanged (DPM-Solver's paper and k-diffusion use this change of
variables). For VP :math:`s = 1` (:math:`x^{VP} = x`); for VE (:math:`\alpha = 1`, :math:`m = 0`)
:math:`x^{VP} = x/\sqrt{1+\sigma^2}`, :math:`\alpha^{VP} = 1/\sqrt{1+\sigma^2}`,
:math:`\sigma^{VP} = \sigma/\sqrt{1+\sigma^2}`, :math:`r = \sigma`. The noise is the same in both views, so
the peers' model is :math:`\hat\varepsilon(x^{VP}, \tau) = -\sigma(t)\,\nabla_x\log p_t(s x^{VP} + m)` with
time map :math:`t = T\tau/1000` (:class:`EpsModel`). The scheduler is constructed with the SDE's own
1000-step beta table in this view (:func:`vp_betas`; for VP it equals ``VPSDE().discretize(1000).betas``,
table index k at t = (k + 1) / 1000), then ``set_timesteps(n)`` resets its state and its ``sigmas`` and
``timesteps`` are replaced by the grid's exact values: ``sigmas`` = :math:`r(t_0), \dots, r(t_n)`
(:math:`t_0 = T`, :math:`t_n = \epsilon`; float64, where diffusers would round its own to float32) and
``timesteps`` = :math:`1000\,t_i / T` (float, so the model is evaluated at the grid's exact times instead
of integer timesteps). Neither scheduler has a public interface for continuous sigmas in this version
(UniPC's ``set_timesteps(sigmas=)`` is for flow-matching sigmas only; DPM-Solver's ``timesteps=`` are
integers); their ``step`` reads only ``sigmas[step_index ± k]``. The final sample is mapped back,
:math:`x = s(\epsilon)\,x^{VP} + m(\epsilon)`. Their update runs in float32 as in diffusers.

Peers (:data:`PEERS`): DPM-Solver++(2M) and (3M) (``algorithm_type="dpmsolver++"``, default ``"midpoint"``
form), UniPC of order 2 and 3 with ``bh1`` and ``bh2``, and a diagnostic: DPM-Solver++(3M) with the exact weight
of its second divided difference (twice diffusers', :func:`_fixed_3m_class`), which separates that weight from
exp3's other difference to DPM-Solver++(3M), its 2S start.

Orders (:func:`measure_orders`, printed and written with the table): before the peers are compared, each
method's convergence order is measured on the oracle: VPSDE, a 1-D two-component mixture (a pure
Gaussian super-converges on the uniform-:math:`\lambda` grid), ``logsnr`` grid (DPM-Solver's and UniPC's
own), ``lower_order_final=False`` everywhere, 199 fixed starting points :math:`x_T = F_T^{-1}(u)`; in 1-D
the PF-ODE flow is the monotone map :math:`F_\epsilon^{-1}\circ F_T` (order-preserving and pushing
:math:`p_T` to :math:`p_\epsilon`), so the exact endpoint is :math:`F_\epsilon^{-1}(u)` (bisection in
float64). The error is the RMS over the 199 points (the maximum sits at the point between the two modes,
where the map is steepest, and converges irregularly); the order is the least-squares slope of log error
against log NFE.

Writes ``benchmarks/results/few_step.md``, ``.png`` and ``.json`` (the rows, for merging). Run
``python -m benchmarks few_step [--quick]``, or split over processes and merge:
``python -m benchmarks.few_step --seeds 1`` (writes ``few_step_seed1.*``; or ``--sde VPSDE``), ... then
``python -m benchmarks.few_step --merge benchmarks/results/few_step_*.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sympy as sp
import torch

import sdekit
from benchmarks.error_vs_nfe import ALPHA, K_DIRECTIONS, MEANS, STDS, WEIGHTS
from sdekit import analytic
from sdekit._stats import mixture_projected_cdf, random_directions, sliced_ks
from sdekit.solvers._grids import GRIDS, time_grid

N = 200_000
QUICK_N = 20_000
NFES: tuple[int, ...] = (4, 5, 6, 8, 10, 12, 15, 20, 25, 30)
QUICK_NFES: tuple[int, ...] = (5, 10, 20)
SEEDS: tuple[int, ...] = (1, 2)  # x_T seeds (two: a second seed can flip a rung, TESTING.md)
QUICK_SEEDS: tuple[int, ...] = (1,)
DIRECTION_SEED = 0
SDEKIT_SOLVERS: tuple[str, ...] = ("exp1", "exp2", "exp3", "ode:midpoint", "ode:rk4")
PEER_DEFAULT_GRID = "uniform"  # diffusers' timestep_spacing="linspace" (integer timesteps uniform in t)
TIMESTEPS = 1000  # diffusers' time map: timestep = 1000 t / T
ORDER_NFES: tuple[int, ...] = (64, 128, 256, 512)
ORDER_MEANS = [-1.0, 1.5]
ORDER_STDS = [0.4, 0.3]
ORDER_WEIGHTS = [0.4, 0.6]
RESULTS = Path(__file__).resolve().parent / "results"
DOUBLED_D2 = "DPM-Solver++(3M) D2x2 (diagnostic)"
PUBLISHED_ORDER = {
    "DPM-Solver++(2M)": "2",
    "DPM-Solver++(3M)": "3",
    DOUBLED_D2: "3",
    "UniPC-2 bh1": "3 (UniC: p + 1)",
    "UniPC-2 bh2": "3 (UniC: p + 1)",
    "UniPC-3 bh1": "4 (UniC: p + 1)",
    "UniPC-3 bh2": "4 (UniC: p + 1)",
}
"""Orders the peers' papers state for their multistep methods (UniPC-p with its corrector: p + 1)."""


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


def oracle_for(sde: sdekit.SDE) -> analytic.DiffusedGaussianMixture:
    """The exact score model of the benchmark's 2-D mixture under ``sde``."""
    return analytic.GaussianMixture(torch.tensor(MEANS), torch.tensor(STDS), torch.tensor(WEIGHTS)).diffuse(sde)


# --------------------------------------------------------------------------------------------- the VP view


@dataclass
class VPView:
    r"""The SDE's marginal at times t in diffusers' VP variables (float64): :math:`x^{VP} = (x - m)/s`."""

    alpha: torch.Tensor  # alpha(t)
    sigma: torch.Tensor  # sigma(t)
    offset: torch.Tensor  # m(t)
    scale: torch.Tensor  # s(t) = sqrt(alpha^2 + sigma^2)
    alpha_vp: torch.Tensor  # alpha / s = 1 / sqrt(1 + r^2)
    sigma_vp: torch.Tensor  # sigma / s = r / sqrt(1 + r^2)
    r: torch.Tensor  # sigma / alpha: diffusers' `sigmas`

    def to_vp(self, x: torch.Tensor, i: int | slice = 0) -> torch.Tensor:
        """x (SDE variables) at time index i -> x^VP."""
        return (x - self.offset[i].to(x.dtype)) / self.scale[i].to(x.dtype)

    def from_vp(self, x_vp: torch.Tensor, i: int | slice = -1) -> torch.Tensor:
        """x^VP at time index i -> x (SDE variables)."""
        return x_vp * self.scale[i].to(x_vp.dtype) + self.offset[i].to(x_vp.dtype)


def vp_view(sde: sdekit.SDE, t: Any) -> VPView:
    r""":class:`VPView` of an affine SDE at times ``t`` (float64): :math:`s = \sqrt{\alpha^2+\sigma^2}`,
    :math:`\alpha^{VP} = \alpha/s`, :math:`\sigma^{VP} = \sigma/s`, :math:`r = \sigma/\alpha`."""
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    marginal = sde.marginal
    alpha, sigma, offset = marginal.alpha(t), marginal.sigma(t), marginal.offset(t)
    scale = torch.sqrt(alpha**2 + sigma**2)
    return VPView(alpha, sigma, offset, scale, alpha / scale, sigma / scale, sigma / alpha)


def vp_betas(sde: sdekit.SDE, n: int = TIMESTEPS) -> torch.Tensor:
    r"""The SDE's n-step DDPM beta table in the VP view: ``alphas_cumprod[k]`` :math:`= (\alpha^{VP})^2` at
    :math:`t_{k+1} = T(k+1)/n`, i.e. :math:`\beta_k = 1 - \bar\alpha_k/\bar\alpha_{k-1}` (:math:`\bar\alpha_{-1}`
    at t = 0). For ``VPSDE`` this is ``sde.discretize(n).betas``."""
    times = torch.linspace(0.0, float(sde.T), n + 1, dtype=torch.float64)
    view = vp_view(sde, times)
    acp = view.alpha_vp**2
    acp[0] = 1.0 if float(view.sigma[0]) == 0.0 else acp[0]
    return 1.0 - acp[1:] / acp[:-1]


class CountingModel:
    """Wraps a model ``model(x, t)`` and counts its calls (one call = one NFE for the whole batch)."""

    def __init__(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.model = model
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x, t)


class EpsModel:
    r"""The peers' noise-prediction model in the VP view: :math:`\hat\varepsilon(x^{VP}, \tau) =
    -\sigma(t)\,\text{score}(s(t)x^{VP} + m(t), t)`, :math:`t = T\tau/1000`. ``score`` is called once per call."""

    def __init__(self, score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sde: sdekit.SDE) -> None:
        self.score = score
        self.sde = sde

    def __call__(self, x_vp: torch.Tensor, timestep: Any) -> torch.Tensor:
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(()) * float(self.sde.T) / TIMESTEPS
        view = vp_view(self.sde, t)
        x = view.from_vp(x_vp, 0)
        return -view.sigma[0].to(x_vp.dtype) * self.score(x, t.to(x_vp.dtype).expand(x_vp.shape[0]))


# ------------------------------------------------------------------------------------------------ methods


@dataclass(frozen=True)
class Peer:
    """A diffusers scheduler configuration (``doubled_d2``: the diagnostic variant of :func:`_fixed_3m_class`)."""

    label: str
    cls: str
    kwargs: tuple[tuple[str, Any], ...]
    doubled_d2: bool = False


PEERS: tuple[Peer, ...] = (
    Peer("DPM-Solver++(2M)", "DPMSolverMultistepScheduler", (("algorithm_type", "dpmsolver++"), ("solver_order", 2))),
    Peer("DPM-Solver++(3M)", "DPMSolverMultistepScheduler", (("algorithm_type", "dpmsolver++"), ("solver_order", 3))),
    Peer(
        "DPM-Solver++(3M) D2x2 (diagnostic)",
        "DPMSolverMultistepScheduler",
        (("algorithm_type", "dpmsolver++"), ("solver_order", 3)),
        doubled_d2=True,
    ),
    Peer("UniPC-2 bh1", "UniPCMultistepScheduler", (("solver_order", 2), ("solver_type", "bh1"))),
    Peer("UniPC-2 bh2", "UniPCMultistepScheduler", (("solver_order", 2), ("solver_type", "bh2"))),
    Peer("UniPC-3 bh1", "UniPCMultistepScheduler", (("solver_order", 3), ("solver_type", "bh1"))),
    Peer("UniPC-3 bh2", "UniPCMultistepScheduler", (("solver_order", 3), ("solver_type", "bh2"))),
)
"""The peers: DPM-Solver++ multistep of order 2 and 3, UniPC (with its corrector UniC) of order 2 and 3, bh1/bh2;
and, as a diagnostic, DPM-Solver++(3M) with the exact weight of its second divided difference (twice diffusers')."""


def diffusers_or_none() -> Any:
    """The ``diffusers`` module, or None when it is not installed (``pip install 'sdekit[bench]'``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import diffusers
    except ImportError:
        return None
    return diffusers


def _fixed_3m_class(diffusers: Any) -> type:
    """Diagnostic for the order table only: DPM-Solver++(3M) with the weight of its second divided difference
    ``D2`` doubled, i.e. the exact integral of the interpolating quadratic (see :func:`measure_orders`)."""
    base = diffusers.DPMSolverMultistepScheduler

    class DoubledD2(base):  # type: ignore[misc, valid-type]
        def multistep_dpm_solver_third_order_update(self, model_output_list, *args, sample=None, **kwargs):
            i = self.step_index
            al = [self._sigma_to_alpha_sigma_t(self.sigmas[j]) for j in (i + 1, i, i - 1, i - 2)]
            lam = [torch.log(a) - torch.log(s) for a, s in al]
            m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
            h, h0, h1 = lam[0] - lam[1], lam[1] - lam[2], lam[2] - lam[3]
            r0, r1 = h0 / h, h1 / h
            d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            (alpha_t, sigma_t), (_, sigma_s0) = al[0], al[1]
            phi1 = torch.expm1(-h)
            return (
                (sigma_t / sigma_s0) * sample
                - alpha_t * phi1 * m0
                + alpha_t * (phi1 / h + 1.0) * d1
                - 2.0 * alpha_t * ((phi1 + h) / h**2 - 0.5) * d2
            )

    return DoubledD2


def make_scheduler(peer: Peer, sde: sdekit.SDE, diffusers: Any, **overrides: Any) -> Any:
    """A diffusers scheduler for ``peer`` on ``sde``'s VP-view beta table (:func:`vp_betas`), ending at the last
    grid sigma (``final_sigmas_type="sigma_min"``)."""
    cls = _fixed_3m_class(diffusers) if peer.doubled_d2 else getattr(diffusers, peer.cls)
    kwargs = dict(peer.kwargs)
    kwargs.update(
        num_train_timesteps=TIMESTEPS,
        trained_betas=vp_betas(sde, TIMESTEPS).tolist(),
        prediction_type="epsilon",
        final_sigmas_type="sigma_min",
    )
    kwargs.update(overrides)
    return cls(**kwargs)


def run_peer(scheduler: Any, sde: sdekit.SDE, model: Callable, x_T: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Integrate from ``x_T`` at ``times[0]`` to ``times[-1]`` with a diffusers multistep scheduler on the exact
    grid ``times`` (decreasing, float64): one ``model`` call per step (see the module docstring's mapping)."""
    n = times.shape[0] - 1
    view = vp_view(sde, times)
    with warnings.catch_warnings():  # diffusers' own np.array(torch tensor) under numpy 2: DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        scheduler.set_timesteps(n)  # resets the multistep history and counters
    scheduler.sigmas = view.r.clone()
    scheduler.timesteps = times[:-1] * (TIMESTEPS / float(sde.T))
    scheduler.set_begin_index(0)
    eps_model = EpsModel(model, sde)
    x = view.to_vp(x_T, 0)
    for timestep in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, timestep)
        x = scheduler.step(eps_model(x_in, timestep), timestep, x).prev_sample
    return view.from_vp(x, -1)


def nfe_plan(solver: str, sde: sdekit.SDE) -> tuple[int, int]:
    """(start-up NFE, NFE per step) of an sdekit solver, measured with a counting model on a 4-sample probe."""
    model = CountingModel(oracle_for(sde))
    x_T = oracle_for(sde).sample(4, sde.T, generator=torch.Generator().manual_seed(0))
    counts = []
    for steps in (2, 3):
        model.calls = 0
        sdekit.sample(model, sde, x_T.shape, solver=solver, steps=steps, x_T=x_T, denoise=False)
        counts.append(model.calls)
    per_step = counts[1] - counts[0]
    return counts[0] - 2 * per_step, per_step


# ---------------------------------------------------------------------------------------------- the table


@dataclass
class Cell:
    """One run: target NFE, measured NFE, KS ratio (None: not run), sampling seconds."""

    target: int
    nfe: int | None = None
    ratio: float | None = None
    seconds: float = 0.0
    note: str = ""  # "n/a" (NFE not reachable with whole steps) or a failure


@dataclass
class Row:
    """One method on one grid, one SDE, one x_T seed."""

    sde: str
    method: str
    family: str  # "sdekit" or "diffusers"
    grid: str
    default_grid: str
    seed: int
    cells: list[Cell] = field(default_factory=list)

    @property
    def is_default(self) -> bool:
        return self.grid == self.default_grid

    @property
    def label(self) -> str:
        """``method (grid)`` on its default grid, ``method [grid]`` on another."""
        return f"{self.method} ({self.grid})" if self.is_default else f"{self.method} [{self.grid}]"


@dataclass
class Config:
    n: int
    nfes: tuple[int, ...]
    seeds: tuple[int, ...]
    grids: tuple[str, ...] = GRIDS
    solvers: tuple[str, ...] = SDEKIT_SOLVERS
    peers: tuple[Peer, ...] = PEERS


def run_method(
    sde_name: str, sde: sdekit.SDE, method: str, grid: str, cfg: Config, seed: int, diffusers: Any = None
) -> Row:
    """Run one method (an sdekit solver name or a :class:`Peer` label) on one grid over ``cfg.nfes``."""
    oracle = oracle_for(sde)
    eps = float(sde.default_eps)
    target = oracle.at(eps)
    directions = random_directions(2, K_DIRECTIONS, seed=DIRECTION_SEED)
    peer = next((p for p in cfg.peers if p.label == method), None)
    if peer is None:
        default_grid = sdekit.solvers.available()[method].grid
        startup, per_step = nfe_plan(method, sde)
        family = "sdekit"
    else:
        default_grid, family = PEER_DEFAULT_GRID, "diffusers"
    row = Row(sde_name, method, family, grid, default_grid, seed)
    x_T = oracle.at(sde.T).sample(cfg.n, generator=torch.Generator().manual_seed(seed)).to(torch.float32)
    for nfe in cfg.nfes:
        cell = Cell(nfe)
        row.cells.append(cell)
        model = CountingModel(oracle)
        try:
            t0 = time.perf_counter()
            if peer is None:
                steps, rest = divmod(nfe - startup, per_step)
                if rest or steps < 1:
                    cell.note = "n/a"
                    continue
                x, info = sdekit.sample(
                    model, sde, x_T.shape, solver=method, steps=steps, x_T=x_T, denoise=False, grid=grid,
                    return_info=True,
                )  # fmt: skip
                if info.nfe != model.calls:
                    cell.note = f"info.nfe {info.nfe}"
            else:
                times = time_grid(sde, float(sde.T), eps, nfe, grid)
                x = run_peer(make_scheduler(peer, sde, diffusers), sde, model, x_T, times)
            cell.seconds = time.perf_counter() - t0
            cell.nfe = model.calls
            if not bool(torch.isfinite(x).all()):
                cell.note = "non-finite"
                continue
            cell.ratio = sliced_ks(x, target, directions, alpha=ALPHA).ratio
        except Exception as err:  # a failure is a table entry
            cell.note = f"fail: {type(err).__name__}"
    return row


def run(
    sdes: dict[str, sdekit.SDE], cfg: Config, peers: bool = True, log: Callable[[str], None] | None = print
) -> list[Row]:
    """The benchmark's core: every method x grid x seed on every SDE (peers only if ``peers`` and diffusers is
    installed). Returns the rows; ``log`` gets one line per row (None: silent)."""
    diffusers = diffusers_or_none() if peers else None
    methods = list(cfg.solvers) + ([p.label for p in cfg.peers] if diffusers is not None else [])
    rows = []
    for sde_name, sde in sdes.items():
        for method in methods:
            for grid in cfg.grids:
                for seed in cfg.seeds:
                    t0 = time.perf_counter()
                    row = run_method(sde_name, sde, method, grid, cfg, seed, diffusers)
                    rows.append(row)
                    if log is not None:
                        cells = " ".join(_plain(c) for c in row.cells)
                        log(f"  {sde_name:13s} {row.label:28s} seed {seed} {time.perf_counter() - t0:6.1f} s  {cells}")
    return rows


# ------------------------------------------------------------------------------------------------- orders


@dataclass
class OrderRow:
    method: str
    nfes: tuple[int, ...]
    errors: list[float]
    expected: str

    @property
    def slope(self) -> float:
        """Least-squares slope of -log(error) against log(NFE)."""
        xs = [math.log(v) for v in self.nfes]
        ys = [math.log(e) for e in self.errors]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        return -sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)

    @property
    def local_slopes(self) -> list[float]:
        """Slope between consecutive NFE values."""
        return [
            math.log(self.errors[i] / self.errors[i + 1]) / math.log(self.nfes[i + 1] / self.nfes[i])
            for i in range(len(self.errors) - 1)
        ]


def _quantile(cdf: Callable[[torch.Tensor, int], torch.Tensor], u: torch.Tensor) -> torch.Tensor:
    """Inverse of a 1-D CDF at levels u by bisection on [-100, 100] (float64, 200 halvings)."""
    lo, hi = torch.full_like(u, -100.0), torch.full_like(u, 100.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        below = cdf(mid, 0) < u
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def measure_orders(nfes: Sequence[int] = ORDER_NFES, peers: bool = True, grid: str = "logsnr") -> list[OrderRow]:
    """RMS error of the final sample against the exact PF-ODE solution as NFE doubles (module docstring)."""
    sde = sdekit.VPSDE()
    data = analytic.GaussianMixture(torch.tensor(ORDER_MEANS), torch.tensor(ORDER_STDS), torch.tensor(ORDER_WEIGHTS))
    oracle = data.diffuse(sde)
    eps = float(sde.default_eps)
    one = torch.ones(1, 1, dtype=torch.float64)
    u = torch.linspace(0.005, 0.995, 199, dtype=torch.float64)
    x_T = _quantile(mixture_projected_cdf(oracle.at(sde.T), one), u)[:, None]
    exact = _quantile(mixture_projected_cdf(oracle.at(eps), one), u)[:, None]
    nfes = tuple(nfes)
    rows = []
    for solver, expected in (("exp1", "1"), ("exp2", "2"), ("exp3", "3")):
        startup, _ = nfe_plan(solver, sde)
        errors = []
        for nfe in nfes:
            model = CountingModel(oracle)
            x = sdekit.sample(
                model, sde, x_T.shape, solver=solver, steps=nfe - startup, x_T=x_T, denoise=False, grid=grid,
                lower_order_final=False,
            )  # fmt: skip
            if model.calls != nfe:
                raise RuntimeError(f"{solver}: {model.calls} NFE, expected {nfe}")
            errors.append(float((x - exact).pow(2).mean().sqrt()))
        rows.append(OrderRow(f"sdekit {solver}", nfes, errors, expected))
    diffusers = diffusers_or_none() if peers else None
    if diffusers is not None:
        for peer in PEERS:
            label, expected = peer.label, PUBLISHED_ORDER.get(peer.label, "")
            errors = []
            for nfe in nfes:
                model = CountingModel(oracle)
                scheduler = make_scheduler(peer, sde, diffusers, lower_order_final=False)
                x = run_peer(scheduler, sde, model, x_T, time_grid(sde, float(sde.T), eps, nfe, grid))
                if model.calls != nfe:
                    raise RuntimeError(f"{label}: {model.calls} NFE, expected {nfe}")
                errors.append(float((x - exact).pow(2).mean().sqrt()))
            rows.append(OrderRow(label, nfes, errors, expected))
    return rows


def orders_markdown(rows: list[OrderRow]) -> str:
    """The order table: max error per NFE, slopes between doublings, least-squares slope."""
    nfes = rows[0].nfes
    head = ["method", *(f"{v} NFE" for v in nfes), "slopes", "fitted order", "published"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]
    for r in rows:
        slopes = ", ".join(f"{s:.2f}" for s in r.local_slopes)
        errs = [f"{e:.2e}" for e in r.errors]
        lines.append("| " + " | ".join([r.method, *errs, slopes, f"**{r.slope:.2f}**", r.expected]) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ reports


def _plain(cell: Cell) -> str:
    if cell.ratio is None:
        return cell.note or "-"
    return f"{cell.ratio:.2f}" + ("" if cell.nfe == cell.target else f"@{cell.nfe}")


def _group(rows: list[Row]) -> dict[tuple[str, str, str], list[Row]]:
    """Rows of the same (sde, method, grid), one per seed."""
    out: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        out.setdefault((r.sde, r.method, r.grid), []).append(r)
    return out


def _cell(seed_rows: list[Row], j: int) -> str:
    cells = [r.cells[j] for r in seed_rows]
    if all(c.ratio is None for c in cells):
        return cells[0].note or "-"
    texts = []
    for c in cells:
        text = c.note if c.ratio is None else f"{c.ratio:.2f}"
        if c.ratio is not None and c.nfe != c.target:
            text += f" (NFE {c.nfe})"
        texts.append(text)
    ok = all(c.ratio is not None and c.ratio <= 1 for c in cells)
    joined = " / ".join(texts)
    return f"**{joined}**" if ok else joined


def _score(seed_rows: list[Row]) -> float:
    """Geometric mean of the ratio over the row's cells and seeds (inf if a cell failed): picks the best grid."""
    values = [c.ratio for r in seed_rows for c in r.cells if c.note != "n/a"]
    if not values or any(v is None for v in values):
        return math.inf
    return math.exp(sum(math.log(v) for v in values) / len(values))


def best_grids(rows: list[Row]) -> dict[tuple[str, str], str]:
    """Per (sde, method): the grid with the smallest geometric-mean ratio over the NFE ladder and seeds."""
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for (sde, method, grid), seed_rows in _group(rows).items():
        score = _score(seed_rows)
        if (sde, method) not in best or score < best[(sde, method)][0]:
            best[(sde, method)] = (score, grid)
    return {k: v[1] for k, v in best.items()}


def first_pass(seed_rows: list[Row]) -> int | None:
    """Smallest NFE from which every seed stays at ratio <= 1 (None: not within the ladder)."""
    n = len(seed_rows[0].cells)
    ok = [all(r.cells[j].ratio is not None and r.cells[j].ratio <= 1 for r in seed_rows) for j in range(n)]
    for j in range(n):
        if all(ok[j:]):
            return seed_rows[0].cells[j].target
    return None


def table_markdown(rows: list[Row], sde: str, compact: bool) -> str:
    """One SDE's table: rows ``method (default grid)`` / ``method [other grid]``, columns NFE.

    ``compact``: each method at its default grid and at its best grid (if different); else every grid. Rows by
    method, the default grid first."""
    groups = {k: v for k, v in _group(rows).items() if k[0] == sde}
    if not groups:
        return ""
    best = best_grids(rows)
    nfes = [c.target for c in next(iter(groups.values()))[0].cells]
    head = ["method [grid]", *(str(v) for v in nfes), "ratio <= 1 from", "s / ladder"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]
    methods = list(dict.fromkeys(k[1] for k in groups))
    order = sorted(groups, key=lambda k: (methods.index(k[1]), not groups[k][0].is_default, GRIDS.index(k[2])))
    for key in order:
        seed_rows = groups[key]
        is_best = best[(sde, key[1])] == key[2]
        if compact and not (seed_rows[0].is_default or is_best):
            continue
        label = f"`{seed_rows[0].label}`" + (" best" if is_best else "")
        fp = first_pass(seed_rows)
        secs = sum(c.seconds for r in seed_rows for c in r.cells) / len(seed_rows)
        cells = [_cell(seed_rows, j) for j in range(len(nfes))]
        lines.append("| " + " | ".join([label, *cells, f"{fp} NFE" if fp else "-", f"{secs:.1f}"]) + " |")
    return "\n".join(lines)


def head_to_head(rows: list[Row], sde: str) -> str:
    """Per NFE: the most accurate sdekit method and the most accurate diffusers peer (diagnostic rows excluded), each
    over every grid (mean ratio over the seeds; chosen after the fact, so both are biased low by the KS noise)."""
    groups = {k: v for k, v in _group(rows).items() if k[0] == sde and "diagnostic" not in k[1]}
    if not any(v[0].family == "diffusers" for v in groups.values()):
        return ""
    nfes = [c.target for c in next(iter(groups.values()))[0].cells]
    lines = [
        "| NFE | best sdekit [grid] | ratio | best diffusers peer [grid] | ratio | sdekit / peer |",
        "|--:|---|--:|---|--:|--:|",
    ]
    for j, nfe in enumerate(nfes):
        best: dict[str, tuple[float, list[Row]]] = {}
        for seed_rows in groups.values():
            vals = [r.cells[j].ratio for r in seed_rows]
            if any(v is None for v in vals):
                continue
            mean = sum(vals) / len(vals)
            fam = seed_rows[0].family
            if fam not in best or mean < best[fam][0]:
                best[fam] = (mean, seed_rows)
        if len(best) < 2:
            continue
        (ms, rs), (mp, rp) = best["sdekit"], best["diffusers"]
        lines.append(f"| {nfe} | `{rs[0].label}` | {_cell(rs, j)} | `{rp[0].label}` | {_cell(rp, j)} | {ms / mp:.2f} |")
    return "\n".join(lines)


def report(rows: list[Row], orders: list[OrderRow] | None, cfg: Config, wall: float, peers_note: str) -> str:
    """The markdown report: settings, order table, compact and full tables per SDE."""
    crit = math.sqrt(-math.log(ALPHA / (2 * K_DIRECTIONS)) / 2) / math.sqrt(cfg.n)
    seeds = ", ".join(str(s) for s in cfg.seeds)
    lines = [
        f"Few-step sampling: sliced-KS statistic / critical value against the exact p_eps (n = {cfg.n:,} float32 "
        f"samples, k = {K_DIRECTIONS} directions from seed {DIRECTION_SEED}, family-wise level {ALPHA:g}, "
        f"D_crit = {crit:.2e}); x_T = exact draws of p_T with seed(s) {seeds} "
        f"(cells `seed {seeds.replace(', ', ' / ')}`); **bold** = ratio <= 1 for every seed. "
        "NFE counted by a wrapper around the model (every cell's NFE equals its column unless the cell says "
        "otherwise); `n/a` = NFE not reachable with whole steps. `method (grid)` = the method's default grid, "
        "`method [grid]` = another grid, `best` = smallest geometric mean ratio over the ladder and seeds. "
        "`ratio <= 1 from`: smallest NFE from which every later column passes. `s / ladder`: sampling seconds "
        "for the whole NFE ladder (mean over seeds, 1 torch thread, KS not included). "
        f"{peers_note} Total wall time {wall / 60:.1f} min.",
        "",
    ]
    if orders:
        lines += [
            "**Measured orders** (VPSDE, 1-D two-component mixture, `logsnr` grid, lower_order_final=False): RMS "
            "error of the final sample against the exact PF-ODE endpoint over 199 starting points x_T = F_T^-1(u), "
            "u = 0.005..0.995; `slopes` between doublings, `fitted order` = least-squares slope over all columns:",
            "",
            orders_markdown(orders),
            "",
        ]
    for sde in dict.fromkeys(r.sde for r in rows):
        lines += [f"**{sde}, default and best grid**", "", table_markdown(rows, sde, compact=True), ""]
        h2h = head_to_head(rows, sde)
        if h2h:
            lines += [f"**{sde}, head to head** (best of each side per NFE, any grid; mean of the seeds)", "", h2h, ""]
    for sde in dict.fromkeys(r.sde for r in rows):
        lines += [f"**{sde}, every grid**", "", table_markdown(rows, sde, compact=False), ""]
    return "\n".join(lines)


def save_json(path: Path, rows: list[Row], orders: list[OrderRow], cfg: Config, wall: float, peers_note: str) -> None:
    """Everything the report needs, so that runs split over processes (``--sde``) can be merged (``--merge``)."""
    payload = {
        "config": {"n": cfg.n, "nfes": list(cfg.nfes), "seeds": list(cfg.seeds)},
        "wall": wall,
        "peers_note": peers_note,
        "orders": [asdict(o) for o in orders],
        "rows": [asdict(r) for r in rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))


def load_json(path: Path) -> tuple[list[Row], list[OrderRow], Config, float, str]:
    """Inverse of :func:`save_json`."""
    payload = json.loads(Path(path).read_text())
    rows = [Row(**{**r, "cells": [Cell(**c) for c in r["cells"]]}) for r in payload["rows"]]
    orders = [OrderRow(o["method"], tuple(o["nfes"]), o["errors"], o["expected"]) for o in payload["orders"]]
    c = payload["config"]
    return rows, orders, Config(c["n"], tuple(c["nfes"]), tuple(c["seeds"])), payload["wall"], payload["peers_note"]


def write_report(rows: list[Row], orders: list[OrderRow], cfg: Config, wall: float, peers_note: str, stem: Path) -> str:
    """Write ``stem.md`` (the report) and ``stem.png`` (the plot); return the report."""
    text = report(rows, orders, cfg, wall, peers_note)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(text + "\n")
    plot(rows, stem.with_suffix(".png"))
    return text


def merge(paths: Sequence[Path], stem: Path = RESULTS / "few_step") -> list[Row]:
    """Merge the JSON files of runs split over processes (same configuration) into one report and plot.

    Wall time in the report: the longest of the runs (they ran in parallel)."""
    parts = [load_json(p) for p in paths]
    rows = [r for part in parts for r in part[0]]
    _, orders, cfg, _, note = parts[0]
    cfg.seeds = tuple(sorted({s for part in parts for s in part[2].seeds}))
    rows.sort(key=lambda r: r.seed)  # stable: the seed rows of one (sde, method, grid) in seed order
    write_report(rows, orders, cfg, max(p[3] for p in parts), note, stem)
    for sde in dict.fromkeys(r.sde for r in rows):
        print(f"{sde}, default and best grid:\n{table_markdown(rows, sde, compact=True)}\n")
    print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.png').name}")
    return rows


def plot(rows: list[Row], path: Path) -> None:
    """Log-log ratio vs NFE, one panel per SDE: each method at its best grid (solid) and, where different, its
    default grid (dotted); geometric mean over the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sdes = list(dict.fromkeys(r.sde for r in rows))
    best = best_grids(rows)
    fig, axes = plt.subplots(1, len(sdes), figsize=(6.5 * len(sdes), 8.5), squeeze=False)
    methods = list(dict.fromkeys(r.method for r in rows))
    cmap = plt.get_cmap("tab20")
    nfes = sorted({c.target for r in rows for c in r.cells})
    for ax, sde in zip(axes[0], sdes):
        for (s, method, grid), seed_rows in _group(rows).items():
            if s != sde or not (grid == best[(s, method)] or seed_rows[0].is_default):
                continue
            pts = []
            for j, c in enumerate(seed_rows[0].cells):
                vals = [r.cells[j].ratio for r in seed_rows]
                if all(v is not None for v in vals):
                    pts.append((c.target, math.exp(sum(math.log(v) for v in vals) / len(vals))))
            if not pts:
                continue
            i = methods.index(method)
            style = "-" if grid == best[(s, method)] else ":"
            marker = "o" if seed_rows[0].family == "sdekit" else "s"
            xs, ys = zip(*pts)
            label = seed_rows[0].label + (" best" if grid == best[(s, method)] else "")
            ax.loglog(xs, ys, style, marker=marker, ms=3.5, lw=1.3, color=cmap(i % 20), label=label)
        ax.axhline(1.0, color="k", lw=1, ls="--")
        ax.set_xticks(nfes)
        ax.set_xticklabels([str(v) for v in nfes])
        ax.minorticks_off()
        ax.set_title(f"{sde}: sliced-KS / critical value vs NFE", fontsize=10)
        ax.set_xlabel("NFE (counted)")
        ax.set_ylabel("D / D_crit  (<= 1: indistinguishable; geometric mean of the seeds)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6.5, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.suptitle(
        "Few-step sampling on the exact oracle: sdekit (circles) vs diffusers (squares); solid = the method's best "
        "grid, dotted = its default grid",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    from PIL import Image  # a matplotlib dependency: 64 colours keep the plot at about 130 kB instead of 530 kB

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(
    repeats: int = 1,
    threads: int = 1,
    quick: bool = False,
    sde_names: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    out: Path = RESULTS,
) -> list[Row]:
    """Measure the orders, run every method on every grid and SDE, print and write the report and the plot.

    ``repeats`` is accepted for the ``python -m benchmarks`` runner and unused (errors, not timed contests)."""
    del repeats
    torch.set_num_threads(threads)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)  # before hours of work, not after
    cfg = Config(
        n=QUICK_N if quick else N,
        nfes=QUICK_NFES if quick else NFES,
        seeds=tuple(seeds) if seeds else (QUICK_SEEDS if quick else SEEDS),
    )
    sdes = make_sdes()
    if sde_names:
        sdes = {k: sdes[k] for k in sde_names}
    diffusers = diffusers_or_none()
    if diffusers is None:
        peers_note = "Peers skipped: diffusers is not installed."
        print("few_step: diffusers is not installed (pip install 'sdekit[bench]'): DPM-Solver++/UniPC peers skipped")
    else:
        peers_note = f"Peers: diffusers {diffusers.__version__}, torch {torch.__version__}."
    print(
        f"few-step sampling: {len(cfg.solvers)} sdekit solvers"
        f"{f' + {len(cfg.peers)} diffusers schedulers' if diffusers else ''} x {len(cfg.grids)} grids x "
        f"{len(sdes)} SDEs x seeds {cfg.seeds}, NFE {cfg.nfes}, n = {cfg.n:,}, float32, torch threads = {threads}"
    )
    t0 = time.perf_counter()
    orders = measure_orders(peers=diffusers is not None)
    print(f"\nmeasured orders ({time.perf_counter() - t0:.1f} s):\n{orders_markdown(orders)}\n", flush=True)
    rows = run(sdes, cfg, peers=diffusers is not None)
    wall = time.perf_counter() - started
    parts = ([*sdes] if sde_names else []) + ([f"seed{'_'.join(map(str, cfg.seeds))}"] if seeds else [])
    stem = out / "_".join(["few_step", *parts])
    save_json(stem.with_suffix(".json"), rows, orders, cfg, wall, peers_note)
    write_report(rows, orders, cfg, wall, peers_note, stem)
    print()
    for sde in sdes:
        print(f"{sde}, default and best grid:\n{table_markdown(rows, sde, compact=True)}\n")
    print(f"total {wall / 60:.1f} min; wrote {stem}.md, .png and .json")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.few_step", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"n = {QUICK_N:,}, NFE {QUICK_NFES}, one seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--sde", nargs="+", choices=list(make_sdes()), help="only these SDEs (default: all 3); writes few_step_<SDE>.*"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, metavar="SEED", help=f"x_T seeds (default {SEEDS}); writes few_step_seed<S>.*"
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="merge the .json files of split runs into few_step.md, .png",
    )
    args = parser.parse_args()
    if args.merge:
        merge(args.merge)
    else:
        main(threads=args.threads, quick=args.quick, sde_names=args.sde, seeds=args.seeds)
