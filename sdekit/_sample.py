r"""``sdekit.sample``: draw samples by integrating the reverse SDE or the probability-flow ODE.

Starting from :math:`x_T \sim` ``sde.prior`` (or a given ``x_T``), a registered solver
(:mod:`sdekit.solvers`) integrates from :math:`T` down to :math:`\epsilon` either

.. math::
    dx = \big[f - \partial_x(g^2) - g^2 s_\theta\big]\,dt + g\,d\bar W_t
    \quad\text{(reverse SDE, ``kind="sde"``)}
    \qquad\text{or}\qquad
    \frac{dx}{dt} = f - \tfrac12\partial_x(g^2) - \tfrac12 g^2 s_\theta
    \quad\text{(PF-ODE, ``kind="ode"``)},

with :math:`s_\theta` the model's score. For affine SDEs a final Tweedie step
(``denoise=True``) returns the posterior mean of :math:`x_0` given :math:`x_\epsilon`,

.. math::
    \hat x_0 = \frac{x_\epsilon - m(\epsilon) + \sigma(\epsilon)^2\, s_\theta(x_\epsilon, \epsilon)}{\alpha(\epsilon)} .

See ``docs/sampling.md``.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ._checks import check_compute_dtype, check_float_dtype, check_generator, check_positive, check_sde
from ._chunks import check_chunk_size, chunk_source
from ._distributed import plan_chunks
from ._model_errors import CheckedModel
from ._random import RandomSource
from ._run import RunInfo, check_steps, lookup_solver
from ._sample_path import check_path_times, segment_steps, segments
from ._sample_vector import check_components, vector_tweedie
from .errors import SolverError
from .parameterization import model_parameterization, score_fn
from .solvers import SamplingProblem, Solver, SolveStats
from .solvers._base import ensure_finite
from .solvers._defaults import default_sampler
from .solvers._grids import explicit_times

if TYPE_CHECKING:  # pragma: no cover
    from .symbolic.sde import SDE

__all__ = ["sample", "SampleInfo"]

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SampleInfo = RunInfo
"""What :func:`sample` reports with ``return_info=True``: a :class:`sdekit.RunInfo` (``nfe``: model evaluations,
including the one-off output check and the denoising step). ``sdekit.SimulateInfo`` is the same class."""


@dataclass(frozen=True)
class _Config:
    """Everything :func:`sample` decided from its arguments, checked once."""

    name: str
    shape: tuple[int, ...]
    T: float
    eps: float
    path_times: list[float] | None
    steps: int | None
    rtol: float
    atol: float
    parameterization: str
    denoise: bool
    generator: torch.Generator | None
    x_T: torch.Tensor | None
    dtype: torch.dtype
    device: torch.device
    progress: bool
    options: dict[str, Any]
    nfe_budget: int | None
    chunk_size: int | None


class _CountingScore:
    """``score(x, t)`` that counts model evaluations (a Python int: no host synchronisation)."""

    __slots__ = ("fn", "nfe")

    def __init__(self, fn: Model):
        self.fn = fn
        self.nfe = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.fn(x, t)


class _Progress:
    def __init__(self, enabled: bool, total: int | None, desc: str):
        self.bar = None
        if enabled:
            # lazy: tqdm only with progress=True
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step")

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) < 1
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
    ):
        raise ValueError(f"shape must be a tuple of positive ints (batch, *event_shape), got {shape!r}")
    return tuple(shape)


DEFAULT_RTOL = 1e-3
"""rtol = atol of adaptive :func:`sample` runs whose solver declares no ``recommended_rtol``."""


def _check_device(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device`` that this torch build can allocate on, else a ValueError saying so."""
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError, TypeError, ValueError) as err:
        raise ValueError(
            f"device={device!r} is not usable with this torch build ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'unavailable'}); use device='cpu' or install a torch "
            f"build for that device"
        ) from err
    return dev


def sample(
    model: Model,
    sde: SDE,
    shape: tuple[int, ...],
    solver: str | None = None,
    steps: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    eps: float | None = None,
    x_T: torch.Tensor | None = None,
    parameterization: str | None = None,
    corrector: str | None = "default",
    snr: float = 0.16,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    return_info: bool = False,
    ts: torch.Tensor | Sequence[float] | None = None,
    chunk_size: int | None = None,
    distributed: bool = False,
    gather: str = "all",
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, ...] | None:
    r"""Sample from the model by integrating from :math:`T` to :math:`\epsilon` (reverse SDE or PF-ODE).

    .. math::
        x_T \sim \texttt{sde.prior},\qquad
        dx = \big[f - \partial_x(g^2) - g^2 s_\theta\big]dt + g\,d\bar W_t
        \ \text{ or }\ \dot x = f - \tfrac12\partial_x(g^2) - \tfrac12 g^2 s_\theta,

    then (``denoise=True``, affine SDEs) Tweedie's
    :math:`\hat x_0 = (x_\epsilon - m + \sigma^2 s_\theta(x_\epsilon, \epsilon))/\alpha` at :math:`t = \epsilon`.

    Args:
        model: ``model(x, t) -> tensor like x`` with t of shape (batch,), predicting ``parameterization``.
        sde: the forward SDE.
        shape: ``(batch, *event_shape)`` of the samples.
        solver: registry name (``sdekit.solvers.available()``), or None (default) to let sdekit pick: adaptive
            ``"srk"`` when ``steps`` is None, else the sampler and grid that measured best at ``steps`` model
            evaluations (:func:`sdekit.solvers.default_sampler`, ``docs/sampling.md``). Names: torchsde
            ``"euler"``, ``"milstein"``, ``"srk"``, ``"heun"``, ``"midpoint"``, ``"reversible_heun"``; torchdiffeq
            ``"ode"``, ``"ode:<method>"`` / ``"dopri5"``, ``"rk4"``, ...; native ``"pc"``, ``"ancestral"``, ``"ald"``,
            ``"exp1"``–``"exp3"``, ``"unipc"``.
        steps: number of steps on the solver's time grid (its default ``grid``, e.g. ``"logsnr"``, or the
            ``grid=`` option); ``None`` runs adaptive solvers with ``rtol``/``atol`` and fixed-grid ones with
            their ``default_steps``.
        rtol: relative tolerance of adaptive runs (default: the solver's ``recommended_rtol``, 1e-3 for
            most; ``bosh3`` 1e-4 and ``fehlberg2`` 1e-5, whose error estimates are too optimistic at 1e-3).
        atol: absolute tolerance of adaptive runs (default: the same value as the default rtol).
        eps: smallest time, ``0 < eps < T`` (default ``sde.default_eps``).
        x_T: starting point of shape ``shape`` (default: a draw from ``sde.prior``).
        parameterization: ``"score"``, ``"eps"``, ``"x0"``, ``"v"`` or ``"denoiser"``; None (default): the model's
            declared ``parameterization`` attribute (the :mod:`sdekit.adapters` models have one), else ``"score"``.
        corrector: Langevin corrector of predictor-corrector samplers: ``"default"`` (the solver's own;
            ``"langevin"`` for ``"pc"``), ``"langevin"``, or ``None`` / ``"none"`` to run the predictor
            alone; ``"unipc"``: True (its UniC corrector, the default) or False / None. Anything but ``"default"`` is
            passed to the solver; solvers without a corrector reject it.
        snr: signal-to-noise ratio of the Langevin corrector (passed on when not the default 0.16).
        denoise: final Tweedie denoising step at eps (affine SDEs only; +1 NFE).
        generator: ``torch.Generator`` for the prior and the noise: the same seed gives bit-identical samples.
            One number drawn from it seeds per-block streams (:class:`sdekit._random.Streams`), so each sample's
            draws depend on its row, not on ``chunk_size``. ``None``: torch's global generator, in chunk order.
        device: device of the samples (default: ``x_T``'s, else the CPU).
        dtype: ``torch.float32`` (default: ``x_T``'s, else ``torch.get_default_dtype()``) or ``torch.float64``.
        progress: show a tqdm progress bar.
        return_info: also return a :class:`SampleInfo`.
        ts: also return the trajectory at these times (strictly decreasing, within ``[eps, T]``): the
            result becomes ``(x, path[, info])`` with ``path`` of shape ``(len(ts), *shape)`` holding the raw
            states :math:`x_{t}` (``path[k]`` at ``ts[k]``; ``x_T`` for ``T``; never denoised). The run is split
            at the interior times: each segment gets the steps of the solver's full ``steps``-step grid
            (its default ``grid`` or ``grid=``) that fall in it (at least 1), on the same kind of grid, and
            multistep solvers restart their history at each cut.
        chunk_size: draw, solve and denoise at most this many samples at a time (a positive int; ``None``: the
            whole batch at once), so that memory is bounded by the chunk: results, ``path`` and the info's
            counts (``nfe``, ``steps``, ...) cover all the chunks (``info.chunks`` of them). Fixed-step solvers
            with a ``generator`` give bit-identical samples for every ``chunk_size``; adaptive ones choose their
            steps per chunk (the same ``chunk_size`` gives the same bits, another one results that agree to the
            tolerance). See ``docs/sampling.md``, "Determinism and chunks".
        distributed: under an initialised ``torch.distributed`` process group, every rank solves whole chunks
            (chunk i on rank ``i % world_size``; without ``chunk_size``, about one chunk per rank:
            :func:`sdekit._distributed.default_chunk_size`) and the chunks are gathered at the end (the only
            communication, besides one broadcast of the seed): bit-identical to one process with the same seed and
            ``chunk_size``. Every rank makes the same call (same arguments); the streams' seed is drawn from every
            rank's generator and rank 0's is used. Counts of the info are totals over the ranks. See
            ``docs/distributed.md``.
        gather: with ``distributed=True``: ``"all"`` (every rank gets the samples) or ``"rank0"`` (rank 0 gets
            them, the other ranks None for the samples and the path).
        **options: solver-specific options (declared on each solver: ``sdekit solvers --options NAME``,
            ``docs/solver_options.md``; checked by name, type and range before any work), and
            ``allow_unstable=True`` to run a solver whose ``can_sample`` is False (``reversible_heun``)
            instead of getting a :class:`~sdekit.errors.SolverError` (no effect on the other solvers).
            ``grid=`` takes a grid kind or the grid itself, strictly decreasing times in (0, T] (e.g. a
            diffusers scheduler's timesteps in sdekit time): the run goes from the first time (where ``x_T``, drawn
            from ``sde.prior`` unless given, is placed) to the last (the run's ``eps``, where ``denoise`` applies)
            on exactly these points; ``steps`` may then be omitted (it follows from the times) and ``solver`` must
            be named.

    Returns:
        Samples of ``shape``; then the path if ``ts`` is given; then the info if ``return_info``.

    Raises:
        UnknownSolverError: ``solver`` is not registered (the message suggests close names).
        SolverOptionError: an unknown keyword (the message suggests close names among the solver's options and
            these arguments) or an option value outside its declared type or range.
        SolverError: the solver cannot handle this SDE or option, or cannot sample at all
            (``Solver.can_sample`` False; the message says why and what to use).
        ModelOutputError: the model output has the wrong shape/dtype or is non-finite (checked once).
        SolverDivergedError: the state became non-finite (the message names the time and step).
        ValueError, TypeError: any other invalid argument.

    Example::

        x = sdekit.sample(model, sdekit.VPSDE(), (1000, 2), solver="euler", steps=500)
        x, info = sdekit.sample(model, sde, (64, 3, 32, 32), solver="ode", return_info=True)
    """
    started = time.perf_counter()
    impl, cfg = _check_inputs(
        model, sde, shape, solver, steps, rtol, atol, eps, x_T, parameterization, corrector, snr, denoise,
        generator, device, dtype, progress, ts, chunk_size, options,
    )  # fmt: skip
    with torch.no_grad():
        checked = CheckedModel(model)
        score = _CountingScore(score_fn(checked, sde, cfg.parameterization))
        with checked.blame():
            x, path, stats, chunks, nfe = _run_chunks(impl, cfg, sde, score, distributed, gather)
    info = RunInfo.of(stats, nfe, cfg.name, started, chunks)
    out = (x,) + ((path,) if cfg.path_times is not None else ()) + ((info,) if return_info else ())
    return out[0] if len(out) == 1 else out


def _run_chunks(
    impl: Solver, cfg: _Config, sde: SDE, score: _CountingScore, distributed: Any, gather: Any
) -> tuple[torch.Tensor | None, torch.Tensor | None, SolveStats, int, int]:
    """Draw, solve and denoise chunk by chunk (one chunk without ``chunk_size``; this rank's chunks with
    ``distributed``, :mod:`sdekit._distributed`): samples, path, summed steps, number of chunks, model evaluations.
    Each chunk draws from its own view of the run's per-block streams."""
    plan, _ = plan_chunks(distributed, gather, cfg.shape[0], cfg.chunk_size, math.prod(cfg.shape[1:]))
    if plan.distributed and cfg.options.get("bm") is not None:
        raise ValueError("option bm is one Brownian motion for the whole batch: it cannot be split across ranks")
    streams = plan.streams(cfg.generator, cfg.shape)
    rows = plan.local_rows
    n_total = cfg.steps if cfg.steps is not None else (None if impl.adaptive else impl.default_steps)
    bar = _Progress(cfg.progress, None if n_total is None else n_total * len(rows), f"sdekit.sample[{cfg.name}]")
    out = plan.collector(cfg.shape[0], (0, 1) if cfg.path_times is not None else (0,))
    stats = SolveStats()
    try:
        for a, b in rows:
            source = chunk_source(streams, a, b)
            shape = (b - a, *cfg.shape[1:])
            x_T = (
                cfg.x_T[a:b]
                if cfg.x_T is not None
                else sde.prior.sample(shape, generator=source, device=cfg.device, dtype=cfg.dtype)
            )
            x, path, seg = _integrate(impl, cfg, sde, score, x_T, source, bar, n_total)
            x = _finish(cfg, sde, score, x, seg)
            out.put(a, b, [x] + ([torch.stack(path, dim=0)] if cfg.path_times is not None else []))
            stats = SolveStats(stats.steps + seg.steps, stats.accepted + seg.accepted, stats.rejected + seg.rejected)
    finally:
        bar.close()
    x, *path = out.result()
    totals = plan.total([stats.steps, stats.accepted, stats.rejected, score.nfe])
    return x, (path[0] if path else None), SolveStats(*totals[:3]), len(plan.rows), totals[3]


def _check_inputs(
    model: Any,
    sde: Any,
    shape: Any,
    solver: Any,
    steps: Any,
    rtol: Any,
    atol: Any,
    eps: Any,
    x_T: Any,
    parameterization: str,
    corrector: Any,
    snr: float,
    denoise: bool,
    generator: Any,
    device: Any,
    dtype: Any,
    progress: bool,
    ts: Any,
    chunk_size: Any,
    options: dict[str, Any],
) -> tuple[Solver, _Config]:
    """Every argument of :func:`sample` checked once, up front: the solver and the frozen configuration."""
    if not callable(model):
        raise TypeError(f"model must be a callable model(x, t), got {type(model).__name__}")
    sde = check_sde(sde)
    shape = _check_shape(shape)
    steps = check_steps(steps, " (adaptive / solver default)")
    if solver is None:
        if options.get("grid") is not None and not isinstance(options.get("grid"), str):
            raise ValueError("grid=<times> needs solver=: the times fix the steps, so name the sampler (e.g. 'exp1')")
        choice = default_sampler(sde, steps)
        solver, options = choice.solver, {**choice.options, **options}
    name, impl, opts = _check_solver(solver, sde, options, corrector, snr)
    parameterization = model_parameterization(model, parameterization)
    if sde.components is not None:
        check_components(sde, impl, name, parameterization, shape)
    if parameterization != "score" and not sde.is_affine:
        raise SolverError(
            f"the {parameterization!r} parameterization needs the Gaussian marginal of an affine SDE; "
            f"{type(sde).__name__} is not affine, so pass a score model (parameterization='score')"
        )
    grid_times = explicit_times(opts.get("grid"))
    T, eps = _run_span(sde, eps, grid_times)
    path_times = check_path_times(ts, T, eps, grid_times)
    default_tol = impl.recommended_rtol or DEFAULT_RTOL
    rtol = check_positive("rtol", default_tol if rtol is None else rtol)
    atol = check_positive("atol", default_tol if atol is None else atol)
    if steps is None and not impl.adaptive and impl.default_steps is None:
        raise ValueError(f"solver {name!r} takes fixed steps: pass steps=<number of steps>")
    check_generator(generator)
    if check_float_dtype(dtype) is not None:
        check_compute_dtype(dtype, "dtype=", "pass dtype=torch.float32 (the default) or torch.float64")
    x_T, dtype, device = _check_start(x_T, shape, dtype, device)
    _check_affine_needs(sde, x_T, denoise, shape)
    if grid_times is None:
        steps, budget = _plan_steps(impl, name, steps, denoise, opts)
    else:
        steps, budget = _plan_grid(impl, name, steps, denoise, opts, grid_times.numel() - 1)
    chunk_size = check_chunk_size(chunk_size)
    if chunk_size is not None and chunk_size < shape[0] and opts.get("bm") is not None:
        raise ValueError(
            f"option bm is one Brownian motion for the whole batch of {shape[0]}, so chunk_size={chunk_size} cannot "
            f"split it: drop chunk_size (or bm, to draw the noise from generator=)"
        )
    config = _Config(
        name, shape, T, eps, path_times, steps, rtol, atol, parameterization, denoise, generator, x_T, dtype, device,
        progress, opts, budget, chunk_size,
    )  # fmt: skip
    return impl, config


def _plan_steps(
    impl: Solver, name: str, steps: int | None, denoise: bool, opts: dict[str, Any]
) -> tuple[int | None, int | None]:
    """(grid intervals, NFE budget of the solve). Solvers with ``steps_are_nfe`` read ``steps`` (or their
    ``default_steps``) as the run's total model evaluations, of which the denoising step takes one; the others
    take ``steps`` intervals (budget None)."""
    if not impl.steps_are_nfe:
        return steps, None
    nfe = steps if steps is not None else impl.default_steps
    assert nfe is not None  # every steps_are_nfe solver has default_steps
    n = impl.intervals(nfe - int(denoise), opts)
    if n < 1:
        least = next(k for k in range(nfe + 1, nfe + 10) if impl.intervals(k - int(denoise), opts) >= 1)
        raise ValueError(
            f"solver {name!r} counts steps= as model evaluations (the start-up, every step"
            f"{' and the final denoising step' if denoise else ''}): steps={nfe} leaves no step to take; "
            f"pass steps >= {least}"
        )
    return n, nfe - int(denoise)


def _run_span(sde: SDE, eps: Any, grid_times: torch.Tensor | None) -> tuple[float, float]:
    """(start, end) of the run: (T, eps), or the first and last of explicit ``grid=`` times (in (0, T])."""
    T = float(sde.T)
    if grid_times is None:
        eps = sde.default_eps if eps is None else eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < T:
            raise ValueError(f"eps must be a number with 0 < eps < T = {T:g}, got {eps!r}")
        return T, float(eps)
    start, end = float(grid_times[0]), float(grid_times[-1])
    if start > T * (1 + 1e-12) or end <= 0:
        raise ValueError(f"grid= times must lie in (0, T] = (0, {T:g}], got times from {start:g} down to {end:g}")
    if eps is not None and eps != end:
        raise ValueError(f"grid= times end at {end:g}, the run's eps; drop eps={eps!r} or end the times there")
    return start, end


def _plan_grid(
    impl: Solver, name: str, steps: int | None, denoise: bool, opts: dict[str, Any], n: int
) -> tuple[int, int | None]:
    """(grid intervals, NFE budget) of a run on n explicit ``grid=`` steps. ``steps`` may be None (taken from the
    grid: the fewest model evaluations that plan n steps) or must plan exactly n (see :func:`_plan_steps`)."""
    if not impl.steps_are_nfe:
        if steps not in (None, n):
            raise ValueError(f"grid= holds {n} steps ({n + 1} times); pass steps=None or steps={n}, not {steps}")
        return n, None
    plans = [k for k in range(1, 4 * n + 8) if impl.intervals(k - int(denoise), opts) == n]
    if not plans:
        raise ValueError(f"solver {name!r} cannot plan exactly {n} steps for the grid= times; choose another solver")
    if steps is None:
        steps = plans[0]
    elif steps not in plans:
        raise ValueError(
            f"solver {name!r} counts steps= as model evaluations: {n} steps on the grid= times"
            f"{' and the denoising step' if denoise else ''} take steps={plans[0]}, not {steps}; drop steps="
        )
    return n, steps - int(denoise)


def _check_options(impl: Solver, options: dict[str, Any], corrector: Any, snr: Any) -> dict[str, Any]:
    """The solver's options of this run (``**options``, and ``corrector``/``snr`` when not their defaults),
    checked by name, type and range (:meth:`Solver.check_options`); an unknown keyword gets close matches among the
    solver's options and :func:`sample`'s own arguments (``stpes=10``: *did you mean steps=?*)."""
    opts = {k: v for k, v in options.items() if k != "allow_unstable"}
    if not (isinstance(corrector, str) and corrector == "default"):
        opts["corrector"] = corrector
    if not (isinstance(snr, float) and snr == 0.16):
        opts["snr"] = snr
    return impl.check_options(
        opts,
        arguments=_ARGUMENTS,
        function="sample",
        note=f" (sample() passes keywords that are not its own to the solver; sdekit solvers --options {impl.name})",
    )


def _check_solver(
    solver: Any, sde: SDE, options: dict[str, Any], corrector: Any, snr: Any
) -> tuple[str, Solver, dict[str, Any]]:
    """The registry's solver named ``solver``, if it can handle ``sde`` and sample (or ``allow_unstable=True``), and
    its checked options (:func:`_check_options`: a misspelt ``allow_unstable`` is reported as such)."""
    name, impl = lookup_solver(solver, "srk")
    impl.check(sde)
    opts = _check_options(impl, options, corrector, snr)
    allow_unstable = options.get("allow_unstable", False)
    if not isinstance(allow_unstable, bool):
        raise TypeError(f"allow_unstable must be True or False, got {allow_unstable!r}")
    if not impl.can_sample and not allow_unstable:
        raise SolverError(f"{name} cannot sample: {impl.sample_refusal}; pass allow_unstable=True to run it anyway")
    return name, impl, opts


def _check_start(
    x_T: Any, shape: tuple[int, ...], dtype: torch.dtype | None, device: Any
) -> tuple[torch.Tensor | None, torch.dtype, torch.device]:
    """A given ``x_T`` (its dtype and device then win), else the dtype and a usable device of the draw."""
    if x_T is not None:
        if not isinstance(x_T, torch.Tensor) or not x_T.is_floating_point():
            raise TypeError("x_T must be a floating-point tensor of the given shape")
        check_compute_dtype(x_T.dtype, "x_T", "convert it with x_T.float() or x_T.double()")
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={shape}")
        if dtype is not None and x_T.dtype != dtype:
            raise ValueError(f"x_T has dtype {x_T.dtype} but dtype={dtype}; convert x_T or drop dtype=")
        if device is not None and x_T.device != torch.device(device):
            raise ValueError(f"x_T is on {x_T.device} but device={device}; move x_T or drop device=")
        if not bool(torch.isfinite(x_T).all()):
            raise ValueError("x_T contains NaN or infinite values")
        return x_T, x_T.dtype, x_T.device
    device = _check_device(device) if device is not None else torch.device("cpu")
    return None, dtype or torch.get_default_dtype(), device


def _check_affine_needs(sde: SDE, x_T: torch.Tensor | None, denoise: bool, shape: tuple[int, ...]) -> None:
    """A non-affine SDE has no Gaussian prior (x_T must be given) and no Tweedie step (denoise=False)."""
    if x_T is None and not sde.is_affine:
        raise SolverError(
            f"{type(sde).__name__} is not affine, so it has no Gaussian prior to draw x_T from: pass x_T= "
            f"(a tensor of shape {shape} drawn from p_T, e.g. with sdekit.simulate) and denoise=False"
        )
    if denoise and not sde.is_affine:
        raise SolverError(
            f"denoise=True needs the Gaussian marginal of an affine SDE; {type(sde).__name__} is not affine: "
            f"pass denoise=False"
        )


def _integrate(
    impl: Solver,
    cfg: _Config,
    sde: SDE,
    score: _CountingScore,
    x_T: torch.Tensor,
    source: RandomSource,
    bar: _Progress,
    n_total: int | None,
) -> tuple[torch.Tensor, list[torch.Tensor], SolveStats]:
    """Solve from T to eps, segment by segment through the requested path times, drawing from ``source``; the end,
    the path and the steps."""
    spans = segments(cfg.T, cfg.eps, cfg.path_times)
    split = segment_steps(sde, impl, cfg.options, cfg.T, cfg.eps, n_total, spans)
    x, path, stats = x_T, [], SolveStats()
    for (a, b), seg_steps in zip(spans, split, strict=True):
        if cfg.path_times is not None and a in cfg.path_times:
            path.append(x)
        problem = SamplingProblem(
            sde=sde,
            score=score,
            x_T=x,
            t_start=a,
            t_end=b,
            steps=seg_steps if (cfg.steps is not None or not impl.adaptive) else None,
            rtol=cfg.rtol,
            atol=cfg.atol,
            generator=source,
            progress=bar,
            options=cfg.options,
            nfe_budget=cfg.nfe_budget if len(spans) == 1 else None,
        )
        x, seg = impl.solve(problem)
        stats = SolveStats(stats.steps + seg.steps, stats.accepted + seg.accepted, stats.rejected + seg.rejected)
    if cfg.path_times is not None and cfg.eps in cfg.path_times:
        path.append(x)
    return x, path, stats


def _finish(cfg: _Config, sde: SDE, score: _CountingScore, x: torch.Tensor, stats: SolveStats) -> torch.Tensor:
    """Tweedie's denoising step at eps (``denoise=True``); the samples, checked finite."""
    if cfg.denoise and sde.components is not None:
        x = vector_tweedie(sde, score, x, cfg.eps)
    elif cfg.denoise:
        t_eps = torch.full((x.shape[0],), cfg.eps, dtype=x.dtype, device=x.device)
        k = sde.marginal.at(t_eps, x)
        x = (x - k.offset + k.sigma**2 * score(x, t_eps)) / k.alpha
    ensure_finite(
        x,
        lambda: (
            f"{cfg.name}: the samples are non-finite at t = eps = {cfg.eps:g}"
            + (" after the denoising step" if cfg.denoise else "")
            + "; check the model near t = eps or raise eps"
        ),
        t=cfg.eps,
        step=stats.steps,
    )
    return x


_ARGUMENTS: tuple[str, ...] = (*(p for p in inspect.signature(sample).parameters if p != "options"), "allow_unstable")
"""The names of :func:`sample`'s own arguments (and ``allow_unstable``): the suggestions for an unknown keyword."""
