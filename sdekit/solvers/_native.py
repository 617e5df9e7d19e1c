r"""Native fixed-grid samplers sharing one stepping loop: ``pc``, ``ancestral``, ``ald``.

Every native sampler (these and the exponential integrators of
:mod:`sdekit.solvers._exponential`) is a :class:`GridSolver`: it picks a decreasing time
grid :math:`t_0 = t_{\rm start} > t_1 > \dots > t_n = t_{\rm end}`, :meth:`GridSolver.prepare`
precomputes its per-step coefficients once (in float64, on the CPU, as Python floats) into a
small typed state (a dataclass per solver, e.g. :class:`AncestralState`), and then the *one* loop of
:meth:`GridSolver._solve` calls :meth:`GridSolver.step` for :math:`t_i \to t_{i+1}` with that state
(which the step returns, updated for multistep solvers), advances the progress bar and watches for
non-finite states.

The finiteness watch (:class:`~sdekit.solvers._base.FiniteWatch` with ``pin=True``) costs no host
synchronisation per step: it keeps two device scalars (all states so far finite; number of finite
steps) and only reads them every ``check_every`` steps (option, default 16) and at the end, so a
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

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import torch

from .. import _random
from ..errors import SolverError
from ._base import FiniteWatch, SamplingProblem, Solver, SolveStats
from ._grids import GRIDS, explicit_times, log_snr, resolve_grid, solver_time_grid, t_of_log_snr, time_grid
from ._option import Option
from ._registry import register

if TYPE_CHECKING:  # pragma: no cover
    from .._dynamics import ReverseSDE

__all__ = [
    "GRIDS",
    "ALDState",
    "Ancestral",
    "AncestralState",
    "AnnealedLangevin",
    "GridSolver",
    "PCState",
    "PredictorCorrector",
    "StepContext",
    "langevin_steps",
    "log_snr",
    "t_of_log_snr",
    "time_grid",
]

State = TypeVar("State")


# --------------------------------------------------------------------------- shared loop
class StepContext:
    """The grid of one solve and its helpers, handed to :meth:`GridSolver.prepare` and :meth:`GridSolver.step`.

    Solver-specific coefficients and history live in the solver's own state dataclass, not here.

    Attributes:
        problem: the :class:`SamplingProblem`.
        times: the float64 CPU grid (n + 1 decreasing times).
        t: the grid as Python floats.
        tx: the grid in x's dtype/device, shape (n + 1, batch), so ``tx[i]`` is the
            (batch,) time tensor the score takes (a view: no copy per step).
        generator: the problem's source of randomness (see :attr:`SamplingProblem.generator`).
    """

    def __init__(self, problem: SamplingProblem, times: torch.Tensor):
        x = problem.x_T
        self.problem = problem
        self.times = times
        self.t: list[float] = times.tolist()
        self.tx = times.to(device=x.device, dtype=x.dtype).unsqueeze(1).expand(-1, x.shape[0])
        self.generator = problem.generator

    def score(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """The score at grid time ``t_i`` (one NFE)."""
        return self.problem.score(x, self.tx[i])

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``like`` (batch first) from the problem's generator: the one way a
        native solver draws, so that every row's noise is independent of the chunking (``chunk_size``)."""
        return _random.randn(like.shape, generator=self.generator, dtype=like.dtype, device=like.device)


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over all but the batch dimension, shaped to broadcast against ``v``."""
    n = torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1)
    return n.reshape(v.shape[0], *([1] * (v.ndim - 1)))


def langevin_steps(
    score: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    step: float,
    noise_scale: float,
    n: int,
    noise: Callable[[torch.Tensor], torch.Tensor],
    watch: FiniteWatch | None = None,
) -> torch.Tensor:
    r"""``n`` Langevin steps :math:`x \leftarrow x + \text{step}\,s(x) + \text{noise\_scale}\,z`, z ~ N(0, I).

    The one Langevin update of sdekit: ULA (:func:`sdekit.langevin`, step h, noise scale :math:`\sqrt{2h}`), one
    noise level of annealed Langevin (:func:`sdekit.annealed_langevin` and the ``ald`` solver, step
    :math:`a_i/2`, noise scale :math:`\sqrt{a_i}`). ``noise(x)`` draws z; ``watch(k, x)`` (optional) sees
    the state after step k (1-based).
    """
    for k in range(n):
        x = x + step * score(x) + noise_scale * noise(x)
        if watch is not None:
            watch(k + 1, x)
    return x


class GridSolver(Solver, Generic[State]):
    r"""Base class of the native fixed-grid samplers: one loop, per-step updates in :meth:`step`.

    Subclasses set the capability attributes, ``grid`` (default grid kind),
    ``options_declared`` (their own options, :class:`~sdekit.solvers._option.Option`), and implement
    :meth:`prepare` (precompute coefficients on the grid; returns the solver's state, a small dataclass)
    and :meth:`step` (:math:`x_{t_i} \mapsto x_{t_{i+1}}`; returns the new x and state).

    Common options: ``grid`` (``"uniform"`` in t, ``"quadratic"``, ``"logsnr"``, ``"edm"``, ``"arctan"`` or
    ``"optimized"``, see :mod:`sdekit.solvers._grids`; default :attr:`grid`), ``rho`` (7, the ``"edm"`` exponent),
    ``data_std`` (1, the data scale of the ``"optimized"`` grid) and ``check_every``
    (steps between the host reads of the finiteness watch, default 16).
    """

    adaptive: ClassVar[bool] = False
    grid: ClassVar[str] = "uniform"
    """Default time grid (a kind of :data:`~sdekit.solvers._grids.GRIDS`; non-affine SDEs: uniform)."""
    options_declared: ClassVar[dict[str, Option]] = {
        "check_every": Option.positive_int(
            16, "steps between the host reads of the finiteness watch (it still pins the first non-finite step)"
        )
    }
    nfe_per_step: ClassVar[str] = "1"
    """NFE per step, for the docs."""

    def options(self, problem: SamplingProblem, **kwargs: Any) -> dict[str, Any]:
        """:meth:`Solver.options`, with the grid kind resolved."""
        opts = super().options(problem, **kwargs)
        if explicit_times(opts["grid"]) is None:  # explicit times stay as given (solver_time_grid reads them)
            opts["grid"] = resolve_grid(problem.sde, opts["grid"], self.grid, self.name)
        return opts

    def num_steps(self, problem: SamplingProblem) -> int:
        """``problem.steps`` or :attr:`default_steps`, validated."""
        n = problem.steps if problem.steps is not None else self.default_steps
        if n is None or int(n) != n or n < 1:
            raise SolverError(f"solver {self.name!r} needs a positive integer number of steps, got {n!r}")
        return int(n)

    @abc.abstractmethod
    def prepare(self, ctx: StepContext, opts: dict[str, Any]) -> State:
        """Precompute the per-step coefficients on ``ctx``'s grid; the solver's initial state."""

    @abc.abstractmethod
    def step(self, ctx: StepContext, state: State, x: torch.Tensor, i: int) -> tuple[torch.Tensor, State]:
        """Advance ``x`` from ``ctx.t[i]`` to ``ctx.t[i + 1]``; the new x and state."""

    def _solve(self, problem: SamplingProblem) -> tuple[torch.Tensor, SolveStats]:
        if not (problem.t_start > problem.t_end):
            raise SolverError(f"t_start must exceed t_end, got t_start={problem.t_start}, t_end={problem.t_end}")
        opts = self.options(problem)
        n = self.num_steps(problem)
        times = solver_time_grid(problem.sde, problem.t_start, problem.t_end, n, self, opts)
        ctx = StepContext(problem, times)
        state = self.prepare(ctx, opts)
        watch = FiniteWatch(int(opts["check_every"]), n, self._divergence(ctx, n), pin=True)
        x = problem.x_T
        for i in range(n):
            x, state = self.step(ctx, state, x, i)
            problem.progress(1)
            watch(i + 1, x)
        return x, SolveStats(steps=n, accepted=n, rejected=0)

    def _divergence(self, ctx: StepContext, n: int) -> Callable[[int, int], tuple[str, float]]:
        """Message and time of the first non-finite step k + 1 (the watch pins it)."""

        def describe(k: int, _: int) -> tuple[str, float]:
            t0, t1 = ctx.t[k], ctx.t[k + 1]
            return (
                f"solver {self.name!r} diverged: the state became non-finite at step {k + 1} of {n} "
                f"(t = {t0:.6g} -> {t1:.6g}); try more steps, a larger eps, or check the model output",
                t1,
            )

        return describe


# --------------------------------------------------------------------------- per-solver state
@dataclasses.dataclass(frozen=True)
class PCState:
    """``pc``: corrector steps per step, its signal-to-noise ratio and norm, and the reverse SDE (the predictor)."""

    n_corrector_steps: int
    snr: float
    per_sample: bool
    reverse: ReverseSDE


@dataclasses.dataclass(frozen=True)
class AncestralState:
    """``ancestral``: per step, :math:`1/r`, the kernel offset c, its variance v and the posterior std (floats)."""

    inv_r: list[float]
    shift: list[float]
    v: list[float]
    std: list[float]


@dataclasses.dataclass(frozen=True)
class ALDState:
    r"""``ald``: per level, the Langevin step :math:`a_i/2`, the noise scale :math:`\sqrt{a_i}`, the inverse mean map
    :math:`1/r_i` and offset :math:`c_i` (floats); Langevin steps per level."""

    half: list[float]
    sqrt: list[float]
    inv_r: list[float]
    shift: list[float]
    n_steps_each: int


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
    grid_max_step = 0.5
    description = "reverse-diffusion (Euler–Maruyama) predictor + Langevin corrector (Song et al. 2021); any SDE"
    options_declared: ClassVar[dict[str, Option]] = {
        "corrector": Option.choice(
            "langevin", ("langevin", "none", None), "Langevin corrector after each predictor step, or none"
        ),
        "snr": Option.positive(0.16, "signal-to-noise ratio r of the corrector's step 2 (r |z| / |s|)^2"),
        "n_corrector_steps": Option.integer(1, "corrector steps per predictor step", lo=0),
        "snr_norm": Option.choice(
            "batch",
            ("batch", "sample"),
            "norms of the corrector's step: batch means of the per-sample norms (score_sde) or per sample",
        ),
    }
    nfe_per_step = "1 + n_corrector_steps"

    def prepare(self, ctx: StepContext, opts: dict[str, Any]) -> PCState:
        nc = opts["n_corrector_steps"] if opts["corrector"] == "langevin" else 0
        reverse = ctx.problem.sde.reverse(ctx.problem.score)
        return PCState(nc, float(opts["snr"]), opts["snr_norm"] == "sample", reverse)

    def step(self, ctx: StepContext, state: PCState, x: torch.Tensor, i: int) -> tuple[torch.Tensor, PCState]:
        for _ in range(state.n_corrector_steps):
            x = self._correct(ctx, state, x, i)
        t, dt = ctx.tx[i], ctx.t[i] - ctx.t[i + 1]
        drift = state.reverse.drift(x, t)
        g = state.reverse.diffusion(x, t)
        return x - drift * dt + g * math.sqrt(dt) * ctx.noise(x), state

    @staticmethod
    def _correct(ctx: StepContext, state: PCState, x: torch.Tensor, i: int) -> torch.Tensor:
        """One Langevin corrector step at ``t_i`` with the step size set by the signal-to-noise ratio."""
        s = ctx.score(x, i)
        z = ctx.noise(x)
        tiny = torch.finfo(x.dtype).tiny
        if state.per_sample:
            ratio = _per_sample_norm(z) / _per_sample_norm(s).clamp_min(tiny)
        else:  # score_sde: ratio of the batch means of the per-sample norms
            ratio = _per_sample_norm(z).mean() / _per_sample_norm(s).mean().clamp_min(tiny)
        eps = torch.nan_to_num(2 * (state.snr * ratio) ** 2, posinf=0.0)  # zero score: no correction
        return x + eps * s + torch.sqrt(2 * eps) * z


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
    options_declared: ClassVar[dict[str, Option]] = {
        "variance": Option.choice(
            "posterior",
            ("posterior", "forward"),
            "noise variance of each step: the exact posterior's (beta tilde) or the forward kernel's (DDPM's beta)",
        )
    }

    def prepare(self, ctx: StepContext, opts: dict[str, Any]) -> AncestralState:
        marginal = ctx.problem.sde.marginal
        t, s = ctx.times[:-1], ctx.times[1:]
        k = marginal.transition(s, t)
        v = k.sigma**2
        var_post = marginal.sigma2(s) * v / marginal.sigma2(t) if opts["variance"] == "posterior" else v
        return AncestralState((1 / k.alpha).tolist(), k.offset.tolist(), v.tolist(), torch.sqrt(var_post).tolist())

    def step(
        self, ctx: StepContext, state: AncestralState, x: torch.Tensor, i: int
    ) -> tuple[torch.Tensor, AncestralState]:
        c = state
        s = ctx.score(x, i)
        return (x - c.shift[i] + c.v[i] * s) * c.inv_r[i] + c.std[i] * ctx.noise(x), state


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
    options_declared: ClassVar[dict[str, Option]] = {
        "step_lr": Option.positive(
            None,
            "NCSN's absolute step epsilon: a_i = epsilon sigma_i^2 / sigma_L^2",
            none=True,
            default_note="from rel_step",
        ),
        "rel_step": Option.positive(0.5, "relative step c: a_i = c sigma_i^2 (used when step_lr is None)"),
        "n_steps_each": Option.positive_int(3, "Langevin steps per noise level"),
    }
    nfe_per_step = "n_steps_each"

    def prepare(self, ctx: StepContext, opts: dict[str, Any]) -> ALDState:
        k = opts["n_steps_each"]
        sig2 = ctx.problem.sde.marginal.sigma2(ctx.times[1:])
        lr = opts["step_lr"]
        rel = opts["rel_step"] if lr is None else lr / float(sig2[-1])
        a = rel * sig2
        kern = ctx.problem.sde.marginal.transition(ctx.times[1:], ctx.times[:-1])  # x_{t_i} = r x_{t_i+1} + c + ...
        return ALDState((a / 2).tolist(), torch.sqrt(a).tolist(), (1 / kern.alpha).tolist(), kern.offset.tolist(), k)

    def step(self, ctx: StepContext, state: ALDState, x: torch.Tensor, i: int) -> tuple[torch.Tensor, ALDState]:
        inv_r, shift = state.inv_r[i], state.shift[i]
        if inv_r != 1.0 or shift != 0.0:  # follow the signal's mean map (class docstring)
            x = (x - shift) * inv_r
        x = langevin_steps(
            lambda y: ctx.score(y, i + 1), x, state.half[i], state.sqrt[i], state.n_steps_each, ctx.noise
        )
        return x, state
