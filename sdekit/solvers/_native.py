r"""Native fixed-grid samplers sharing one stepping loop: ``pc``, ``ancestral``, ``ald``.

Every native sampler (these and the exponential integrators of
:mod:`sdekit.solvers._exponential`) is a :class:`GridSolver`: it picks a decreasing time
grid :math:`t_0 = t_{\rm start} > t_1 > \dots > t_n = t_{\rm end}`, precomputes its
per-step coefficients once (in float64, on the CPU, as Python floats) and then runs
the *one* loop of :meth:`GridSolver._solve`, which calls :meth:`GridSolver.step` for
:math:`t_i \to t_{i+1}`, advances the progress bar and watches for non-finite states.

The finiteness watch costs no host synchronisation per step: it keeps two device
scalars (``alive``: all states so far finite; ``ok``: number of finite steps) and only
reads them every ``check_every`` steps (option, default 16) and at the end, so a
divergence is reported with the exact step and time where it first happened.

Samplers (NFE = score evaluations):

* ``pc`` — Euler–Maruyama on the reverse SDE (``sde.reverse(score)``) as predictor plus
  ``n_corrector_steps`` Langevin corrector steps at signal-to-noise ratio ``snr``
  (Song et al. 2021). Any SDE. NFE per step ``1 + n_corrector_steps``.
* ``ancestral`` — exact Gaussian posterior :math:`q(x_s \mid x_t, \hat x_0)` of the
  SDE's kernel with Tweedie's :math:`\hat x_0`; DDPM for VP, SMLD's sampler for VE.
  Affine SDEs. NFE per step 1; default 1000 steps (its variance is biased low by O(1/steps)).
* ``ald`` — annealed Langevin dynamics of NCSN (Song & Ermon 2019) with noise levels
  :math:`\sigma(t_i)` of the marginal. Affine SDEs. NFE per step ``n_steps_each``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from .. import _random
from ..errors import SolverDivergedError, SolverError
from ._base import SamplingProblem, Solver, SolveStats
from ._grids import GRIDS, log_snr, resolve_grid, t_of_log_snr, time_grid
from ._registry import register

__all__ = [
    "GRIDS",
    "Ancestral",
    "AnnealedLangevin",
    "GridSolver",
    "PredictorCorrector",
    "StepContext",
    "log_snr",
    "t_of_log_snr",
    "time_grid",
]


# --------------------------------------------------------------------------- shared loop
class StepContext:
    """Per-solve state handed to :meth:`GridSolver.step`.

    Attributes:
        problem: the :class:`SamplingProblem`.
        times: the float64 CPU grid (n + 1 decreasing times).
        t: the grid as Python floats.
        tx: the grid in x's dtype/device, shape (n + 1, batch), so ``tx[i]`` is the
            (batch,) time tensor the score takes (a view: no copy per step).
        coef: solver-specific precomputed coefficients (lists of Python floats).
        state: solver-specific mutable state (e.g. the multistep history).
        generator: the problem's generator.
    """

    def __init__(self, problem: SamplingProblem, times: torch.Tensor):
        x = problem.x_T
        self.problem = problem
        self.times = times
        self.t: list[float] = times.tolist()
        self.tx = times.to(device=x.device, dtype=x.dtype).unsqueeze(1).expand(-1, x.shape[0])
        self.coef: dict[str, list[float]] = {}
        self.state: dict[str, Any] = {}
        self.generator = problem.generator
        self.nfe_extra = 0

    def score(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """The score at grid time ``t_i`` (one NFE)."""
        return self.problem.score(x, self.tx[i])

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``like`` from the problem's generator."""
        return _random.randn(like.shape, generator=self.generator, dtype=like.dtype, device=like.device)


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over all but the batch dimension, shaped to broadcast against ``v``."""
    n = torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1)
    return n.reshape(v.shape[0], *([1] * (v.ndim - 1)))


class GridSolver(Solver):
    r"""Base class of the native fixed-grid samplers: one loop, per-step updates in :meth:`step`.

    Subclasses set the capability attributes, ``grid`` (default grid kind),
    ``options_defaults`` (accepted options and their defaults), and implement
    :meth:`prepare` (precompute coefficients on the grid) and :meth:`step`
    (:math:`x_{t_i} \mapsto x_{t_{i+1}}`).

    Common options: ``grid`` (``"uniform"`` in t, ``"logsnr"``, ``"edm"`` or ``"arctan"``, see
    :mod:`sdekit.solvers._grids`; default :attr:`grid`), ``rho`` (7, the ``"edm"`` exponent) and ``check_every``
    (steps between the host reads of the finiteness watch, default 16).
    """

    adaptive: ClassVar[bool] = False
    grid: ClassVar[str] = "uniform"
    """Default time grid (``"uniform"``, ``"logsnr"``, ``"edm"`` or ``"arctan"``; non-affine SDEs: uniform)."""
    options_defaults: ClassVar[dict[str, Any]] = {}
    """Solver-specific options and their defaults (``grid`` and ``check_every`` are always accepted)."""
    nfe_per_step: ClassVar[str] = "1"
    """NFE per step, for the docs."""

    def options(self, problem: SamplingProblem) -> dict[str, Any]:
        """The options of ``problem`` merged over the defaults; unknown keys raise :class:`SolverError`."""
        allowed = {"grid": None, "rho": 7.0, "check_every": 16, **self.options_defaults}
        unknown = set(problem.options) - set(allowed)
        if unknown:
            raise SolverError(
                f"solver {self.name!r} got unknown option(s) {', '.join(sorted(unknown))}; "
                f"it accepts: {', '.join(sorted(allowed))}"
            )
        opts = {**allowed, **problem.options}
        opts["grid"] = resolve_grid(problem.sde, opts["grid"], self.grid, self.name)
        if int(opts["check_every"]) < 1:
            raise SolverError(f"check_every must be a positive integer, got {opts['check_every']!r}")
        return opts

    def num_steps(self, problem: SamplingProblem) -> int:
        """``problem.steps`` or :attr:`default_steps`, validated."""
        n = problem.steps if problem.steps is not None else self.default_steps
        if n is None or int(n) != n or n < 1:
            raise SolverError(f"solver {self.name!r} needs a positive integer number of steps, got {n!r}")
        return int(n)

    def prepare(self, ctx: StepContext, opts: dict[str, Any]) -> None:
        """Precompute per-step coefficients into ``ctx.coef`` / ``ctx.state`` (default: nothing)."""

    def step(self, ctx: StepContext, x: torch.Tensor, i: int) -> torch.Tensor:
        """Advance ``x`` from ``ctx.t[i]`` to ``ctx.t[i + 1]``."""
        raise NotImplementedError

    def _solve(self, problem: SamplingProblem) -> tuple[torch.Tensor, SolveStats]:
        if not (problem.t_start > problem.t_end):
            raise SolverError(f"t_start must exceed t_end, got t_start={problem.t_start}, t_end={problem.t_end}")
        opts = self.options(problem)
        n = self.num_steps(problem)
        times = time_grid(problem.sde, problem.t_start, problem.t_end, n, opts["grid"], rho=opts["rho"])
        ctx = StepContext(problem, times)
        self.prepare(ctx, opts)
        every = int(opts["check_every"])
        x = problem.x_T
        alive = torch.ones((), dtype=torch.bool, device=x.device)
        ok = torch.zeros((), dtype=torch.long, device=x.device)
        for i in range(n):
            x = self.step(ctx, x, i)
            alive = alive & torch.isfinite(x).all()
            ok = ok + alive
            problem.progress(1)
            if (i + 1) % every == 0 or i == n - 1:
                self._check(alive, ok, ctx, n)
        return x, SolveStats(steps=n, accepted=n, rejected=0)

    def _check(self, alive: torch.Tensor, ok: torch.Tensor, ctx: StepContext, n: int) -> None:
        """Raise :class:`SolverDivergedError` at the first non-finite step (one host sync)."""
        if bool(alive):
            return
        k = int(ok)  # steps 0..k-1 were finite; step k (0-based) produced the first non-finite state
        t0, t1 = ctx.t[k], ctx.t[k + 1]
        raise SolverDivergedError(
            f"solver {self.name!r} diverged: the state became non-finite at step {k + 1} of {n} "
            f"(t = {t0:.6g} -> {t1:.6g}); try more steps, a larger eps, or check the model output",
            t=t1,
            step=k + 1,
        )


# --------------------------------------------------------------------------- pc
@register
class PredictorCorrector(GridSolver):
    r"""Reverse-diffusion predictor + Langevin corrector (Song et al. 2021, Algorithms 2–3).

    On the grid :math:`t_0 > \dots > t_n` with :math:`\Delta_i = t_i - t_{i+1} > 0`, step i is

    1. corrector (``n_corrector_steps`` times, at :math:`t_i`): with :math:`s = s_\theta(x, t_i)`,
       :math:`z \sim N(0, I)` and per-sample step
       :math:`\epsilon = 2\,(r\,\lVert z\rVert / \lVert s\rVert)^2` (r = ``snr``),
       :math:`x \leftarrow x + \epsilon\,s + \sqrt{2\epsilon}\,z`;
    2. predictor (Euler–Maruyama on the reverse SDE, run backwards in time):
       :math:`x \leftarrow x - [f - \partial_x g^2 - g^2 s_\theta](x, t_i)\,\Delta_i + g(x, t_i)\sqrt{\Delta_i}\,z`.

    Options: ``corrector`` (``"langevin"`` or None), ``snr`` (0.16), ``n_corrector_steps`` (1).
    Works for any SDE. NFE per step: ``1 + n_corrector_steps`` (1 without corrector).
    """

    name = "pc"
    kind = "sde"
    strong_order = 0.5
    strong_order_additive = 1.0
    weak_order = 1.0
    noise_types = ("additive", "diagonal")
    requires_affine = False
    default_steps = 400
    grid = "logsnr"
    description = "reverse-diffusion (Euler–Maruyama) predictor + Langevin corrector (Song et al. 2021); any SDE"
    options_defaults: ClassVar[dict[str, Any]] = {
        "corrector": "langevin",
        "snr": 0.16,
        "n_corrector_steps": 1,
        "snr_norm": "batch",
    }
    nfe_per_step = "1 + n_corrector_steps"

    def prepare(self, ctx: StepContext, opts: dict[str, Any]) -> None:
        corrector = opts["corrector"]
        if corrector not in ("langevin", None, "none"):
            raise SolverError(f"pc: unknown corrector {corrector!r}; choose 'langevin' or None")
        nc = int(opts["n_corrector_steps"]) if corrector == "langevin" else 0
        if nc < 0 or float(opts["snr"]) <= 0:
            raise SolverError("pc: n_corrector_steps must be >= 0 and snr > 0")
        ctx.state["n_corr"] = nc
        ctx.state["snr"] = float(opts["snr"])
        if opts["snr_norm"] not in ("batch", "sample"):
            raise SolverError(f"pc: snr_norm must be 'batch' or 'sample', got {opts['snr_norm']!r}")
        ctx.state["per_sample"] = opts["snr_norm"] == "sample"
        ctx.state["reverse"] = ctx.problem.sde.reverse(ctx.problem.score)

    def step(self, ctx: StepContext, x: torch.Tensor, i: int) -> torch.Tensor:
        snr, per_sample = ctx.state["snr"], ctx.state["per_sample"]
        for _ in range(ctx.state["n_corr"]):
            s = ctx.score(x, i)
            z = ctx.noise(x)
            if per_sample:
                ratio = _per_sample_norm(z) / _per_sample_norm(s).clamp_min(torch.finfo(x.dtype).tiny)
            else:  # score_sde: ratio of the batch means of the per-sample norms
                ratio = _per_sample_norm(z).mean() / _per_sample_norm(s).mean().clamp_min(torch.finfo(x.dtype).tiny)
            eps = torch.nan_to_num(2 * (snr * ratio) ** 2, posinf=0.0)  # zero score: no correction
            x = x + eps * s + torch.sqrt(2 * eps) * z
        rev = ctx.state["reverse"]
        t, dt = ctx.tx[i], ctx.t[i] - ctx.t[i + 1]
        drift = rev.drift(x, t)
        g = rev.diffusion(x, t)
        return x - drift * dt + g * math.sqrt(dt) * ctx.noise(x)


# --------------------------------------------------------------------------- ancestral
@register
class Ancestral(GridSolver):
    r"""Ancestral sampling with the exact Gaussian kernel of an affine SDE (DDPM / SMLD).

    From :math:`t = t_i` to :math:`s = t_{i+1}` the forward kernel is
    :math:`x_t = r x_s + c + \sqrt v\,z` with :math:`r = \alpha_t/\alpha_s`,
    :math:`c = m_t - r m_s`, :math:`v = \sigma_t^2 - r^2\sigma_s^2`. The posterior
    :math:`q(x_s \mid x_t, x_0)` is Gaussian with variance :math:`\sigma_s^2 v / \sigma_t^2`;
    with Tweedie's :math:`\hat x_0 = (x_t - m_t + \sigma_t^2 s_\theta)/\alpha_t` its mean
    simplifies (using :math:`r^2\sigma_s^2 + v = \sigma_t^2`) to

    .. math:: x_s = \frac{x_t - c + v\,s_\theta(x_t, t)}{r} + \frac{\sigma_s\sqrt v}{\sigma_t}\,z,

    which is DDPM's update :math:`(x_t + \beta_t s)/\sqrt{1-\beta_t} + \tilde\sigma_t z` for VP (with the exact
    :math:`\beta_t = 1 - r^2` of this grid, not DDPM's beta table; see :class:`~sdekit.Discretization`) and
    SMLD's :math:`x + (\sigma_t^2 - \sigma_s^2)s + \dots` for VE. No division by a small
    :math:`\alpha`. Option ``variance``: ``"posterior"`` (default, :math:`\tilde\beta`) or
    ``"forward"`` (:math:`v`, DDPM's :math:`\sigma_t^2 = \beta_t`). NFE per step 1.

    **Bias and default.** The plug-in :math:`\hat x_0` drops :math:`\mathrm{Var}[x_0 \mid x_t]` from the
    true reverse kernel: each step misses :math:`(\text{coefficient of } x_0)^2\,\mathrm{Var}[x_0\mid x_t]
    = O(\Delta\lambda^2)`, so the variance is biased low by :math:`O(1/n)`. Measured on 1-D Gaussian
    data (mean 0.7, std 0.4, VP, n = 1e5, seed 5): variance -24.7 / -8.2 / -2.3 % at 50 / 200 / 1000
    uniform-t steps and -17.0 / -5.0 / -1.8 % on the log-SNR grid. Hence the default: 1000 steps
    (DDPM's count) on the log-SNR grid, where the deficit is below the Monte-Carlo error of 20,000
    samples on every affine zoo SDE (``docs/native_samplers.md``).
    """

    name = "ancestral"
    kind = "sde"
    weak_order = 1.0
    noise_types = ("additive",)
    requires_affine = True
    default_steps = 1000
    grid = "logsnr"
    description = "ancestral sampling with the exact Gaussian posterior (DDPM for VP, SMLD for VE); affine SDEs"
    options_defaults: ClassVar[dict[str, Any]] = {"variance": "posterior"}

    def prepare(self, ctx: StepContext, opts: dict[str, Any]) -> None:
        if opts["variance"] not in ("posterior", "forward"):
            raise SolverError(f"ancestral: variance must be 'posterior' or 'forward', got {opts['variance']!r}")
        marginal = ctx.problem.sde.marginal
        t, s = ctx.times[:-1], ctx.times[1:]
        k = marginal.transition(s, t)
        v = k.sigma**2
        var_post = marginal.sigma2(s) * v / marginal.sigma2(t) if opts["variance"] == "posterior" else v
        ctx.coef = {
            "inv_r": (1 / k.alpha).tolist(),
            "shift": k.offset.tolist(),
            "v": v.tolist(),
            "std": torch.sqrt(var_post).tolist(),
        }

    def step(self, ctx: StepContext, x: torch.Tensor, i: int) -> torch.Tensor:
        c = ctx.coef
        s = ctx.score(x, i)
        return (x - c["shift"][i] + c["v"][i] * s) * c["inv_r"][i] + c["std"][i] * ctx.noise(x)


# --------------------------------------------------------------------------- ald
@register
class AnnealedLangevin(GridSolver):
    r"""Annealed Langevin dynamics (NCSN, Song & Ermon 2019, Algorithm 1) on the marginal's noise levels.

    The levels are the grid times :math:`t_1 > \dots > t_n = t_{\rm end}` (log-SNR-uniform
    by default: geometric :math:`\sigma_i` for VE as in NCSN) with :math:`\sigma_i = \sigma(t_i)`.
    Step i runs ``n_steps_each`` Langevin steps on :math:`p_{t_{i+1}}`:

    .. math:: a_i = \epsilon\,\sigma_i^2/\sigma_L^2,\qquad
              x \leftarrow x + \tfrac{a_i}{2}\,s_\theta(x, t_{i+1}) + \sqrt{a_i}\,z,

    with :math:`\epsilon` = ``step_lr`` (NCSN's absolute :math:`\epsilon`). By default
    :math:`\epsilon = c\,\sigma_L^2` with the relative step c = ``rel_step`` (0.5), i.e.
    :math:`a_i = c\,\sigma_i^2` independent of the SDE's scale. NFE per step ``n_steps_each``.

    **Signal scale.** NCSN is a VE method: its targets share the data's scale. When :math:`\alpha(t)`
    or :math:`m(t)` vary (VP, sub-VP, OU, ...) the mean and scale of :math:`p_t` move with t, and at
    low noise (:math:`\sigma \ll` data scale) Langevin relaxes far too slowly to follow them
    (measured on sub-VP before this step: mean off by :math:`\approx \mu(1 - \alpha)` where
    :math:`\sigma` falls below the data scale, KS ratio 2.5, moment z 17). So each level first maps
    x through the inverse of the kernel's mean map, :math:`x \leftarrow (x - c_i)/r_i` with
    :math:`r_i = \alpha_{t_i}/\alpha_{t_{i+1}}`, :math:`c_i = m_{t_i} - r_i m_{t_{i+1}}`
    (``marginal.transition``): the same Langevin dynamics in :math:`y = (x - m)/\alpha`, where every
    affine SDE is VE-like. For VE/EDM :math:`r_i = 1`, :math:`c_i = 0`: NCSN exactly.
    """

    name = "ald"
    kind = "sde"
    weak_order = None
    noise_types = ("additive",)
    requires_affine = True
    default_steps = 1000
    grid = "logsnr"
    description = "annealed Langevin dynamics (NCSN) on the noise levels sigma(t_i) of the marginal; affine SDEs"
    options_defaults: ClassVar[dict[str, Any]] = {"step_lr": None, "rel_step": 0.5, "n_steps_each": 3}
    nfe_per_step = "n_steps_each"

    def prepare(self, ctx: StepContext, opts: dict[str, Any]) -> None:
        k = int(opts["n_steps_each"])
        if k < 1:
            raise SolverError(f"ald: n_steps_each must be >= 1, got {opts['n_steps_each']!r}")
        sig2 = ctx.problem.sde.marginal.sigma2(ctx.times[1:])
        lr = opts["step_lr"]
        rel = float(opts["rel_step"]) if lr is None else float(lr) / float(sig2[-1])
        if not rel > 0:
            raise SolverError("ald: step_lr / rel_step must be positive")
        a = rel * sig2
        kern = ctx.problem.sde.marginal.transition(ctx.times[1:], ctx.times[:-1])  # x_{t_i} = r x_{t_i+1} + c + ...
        ctx.coef = {
            "half": (a / 2).tolist(),
            "sqrt": torch.sqrt(a).tolist(),
            "inv_r": (1 / kern.alpha).tolist(),
            "shift": kern.offset.tolist(),
        }
        ctx.state["k"] = k

    def step(self, ctx: StepContext, x: torch.Tensor, i: int) -> torch.Tensor:
        half, sq = ctx.coef["half"][i], ctx.coef["sqrt"][i]
        inv_r, shift = ctx.coef["inv_r"][i], ctx.coef["shift"][i]
        if inv_r != 1.0 or shift != 0.0:  # follow the signal's mean map (class docstring)
            x = (x - shift) * inv_r
        for _ in range(ctx.state["k"]):
            x = x + half * ctx.score(x, i + 1) + sq * ctx.noise(x)
        return x
