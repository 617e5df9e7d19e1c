r"""Exact likelihood through the probability-flow ODE: :func:`logp`.

The probability-flow (PF) ODE :math:`\dot x = \tilde f(x, t) = f - \tfrac12\partial_x g^2 - \tfrac12 g^2 s_\theta`
moves samples so that :math:`x_t \sim p_t` for every t. Along one of its trajectories the
instantaneous change of variables (Chen et al. 2018) gives

.. math::
    \frac{d}{dt}\log p_t(x_t) = -\nabla\!\cdot\tilde f(x_t, t)
    \quad\Longrightarrow\quad
    \log p_\epsilon(x) = \log p_T(z) + \int_\epsilon^T \nabla\!\cdot\tilde f(x_t, t)\,dt,

where :math:`x_\epsilon = x` and :math:`z = x_T`. :func:`logp` integrates the augmented state
:math:`(x_t, \Delta_t)` with :math:`\dot\Delta = \nabla\cdot\tilde f` *forward* in time from
:math:`\epsilon` to :math:`T`, then returns :math:`\log p_T(z) + \Delta_T`, in stages:

1. check the inputs once (:func:`_check_inputs`, one model call included) into a frozen :class:`_LogpConfig`;
2. build the right-hand side (:mod:`sdekit._likelihood_rhs`): the augmented PF-ODE in x, or for affine
   SDEs in the normalized coordinates :math:`w = (x - m(t))/c(t)`, where the divergence of the known
   linear part is exact and autograd runs through the score model only;
3. integrate with the torchdiffeq driver that ``sample``'s ``ode`` solvers use
   (:func:`sdekit.solvers._odedriver.integrate`);
4. assemble the log-density and its :class:`LikelihoodInfo` (:func:`_assemble`).

Stages 2-4 run once per chunk of rows (``chunk_size=``, :func:`_solve_chunks`), with Hutchinson probes from
per-block streams of the generator (:mod:`sdekit._random`), so a row's result does not depend on the chunking on
fixed grids.

The divergence is the trace of the Jacobian (:mod:`sdekit._traces`): ``"exact"`` (d vector-Jacobian
products in one batched pass), ``"hutchinson"`` (probes drawn once per call and held fixed along the
trajectory, so the ODE stays smooth and the result is an unbiased estimate up to solver error), or
``"auto"``: exact when the event dimension is at most :data:`EXACT_TRACE_MAX_DIM`. An explicit ``"exact"`` above
:data:`EXACT_TRACE_LIMIT_DIM` is refused (:func:`resolve_trace`).

See ``docs/likelihood.md`` for the derivation, the sign conventions, the prior and the
bits-per-dimension offset (:func:`~sdekit.bits_per_dim`, :func:`~sdekit.dequantize`, re-exported here).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ._checks import (
    check_eps,
    check_generator,
    check_positive,
)
from ._chunks import check_chunk_size, chunk_source
from ._dequantize import bits_per_dim, dequantize
from ._distributed import Plan, graph_option, plan_chunks
from ._keywords import suggest_keywords
from ._likelihood_checks import (
    DEFAULT_LIKELIHOOD_EPS,
    EXACT_TRACE_LIMIT_DIM,
    EXACT_TRACE_MAX_DIM,
    check_adjoint,
    check_data,
    check_normalize,
    check_options,
    check_prior,
    check_trace,
    needs_graph,
    resolve_trace,
)
from ._likelihood_rhs import AugmentedFlow, NormalizedFlow, PlainFlow
from ._model_errors import CheckedModel
from ._random import RandomSource
from ._traces import ExactTrace, HutchinsonTrace, draw_probes
from .errors import ModelOutputError, SolverDivergedError
from .parameterization import model_parameterization, score_fn
from .solvers._budget import StepBudget
from .solvers._odedriver import OdeRun, integrate
from .solvers._torchdiffeq import ode_method
from .symbolic.sde import SDE

__all__ = [
    "DEFAULT_LIKELIHOOD_EPS",
    "EXACT_TRACE_LIMIT_DIM",
    "EXACT_TRACE_MAX_DIM",
    "LikelihoodInfo",
    "bits_per_dim",
    "dequantize",
    "logp",
    "resolve_trace",
]

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LikelihoodInfo:
    r"""What :func:`logp` reports with ``return_info=True``.

    Attributes:
        nfe: drift evaluations (each one model call plus its divergence), including the
            one-off input check.
        prior_logp: :math:`\log p_T(z)`, shape (batch,).
        delta_logp: :math:`\int_\epsilon^T \nabla\cdot\tilde f\,dt`, shape (batch,); the result is
            ``prior_logp + delta_logp``.
        z: the latent :math:`x_T`, shaped like x.
        solver: torchdiffeq method used.
        trace: ``"exact"`` or ``"hutchinson"`` (``"auto"`` resolved).
        n_probes: Hutchinson probes per sample (0 for the exact trace).
        eps: lower time :math:`\epsilon`.
        T: upper time.
        seconds: wall time of the call.
        normalized: whether the ODE was integrated in the normalized coordinates
            :math:`w = (x - m(t))/c(t)` (see ``normalize=`` of :func:`logp`).
        chunks: chunks of rows the batch was solved in (``chunk_size=``); ``nfe`` is the total over them.
    """

    nfe: int
    prior_logp: torch.Tensor
    delta_logp: torch.Tensor
    z: torch.Tensor
    solver: str
    trace: str
    n_probes: int
    eps: float
    T: float
    seconds: float
    normalized: bool = False
    chunks: int = 1


@dataclass(frozen=True)
class _LogpConfig:
    """The checked inputs of one :func:`logp` call."""

    method: str
    """torchdiffeq method (resolved through the solver registry)."""
    rtol: float
    atol: float
    eps: float
    T: float
    trace: str
    """``"exact"`` or ``"hutchinson"`` (``"auto"`` resolved)."""
    n_probes: int
    probe: str
    parameterization: str
    prior: Any
    generator: torch.Generator | None
    options: dict[str, Any]
    """torchdiffeq options: the caller's, plus ``step_size`` (fixed grid) or the per-sample norm (adaptive)."""
    normalized: bool
    graph: bool
    """Keep the autograd graph through the solve."""
    adjoint_params: tuple[torch.Tensor, ...] | None
    """Differentiate by the adjoint method w.r.t. these (None: backpropagate through the solve)."""
    budget: StepBudget | None
    """Attempted-steps budget of an adaptive solve (``options["max_num_steps"]``, default
    :data:`~sdekit.solvers._budget.ODE_MAX_STEPS`); None on a fixed grid."""
    chunk_size: int | None = None
    """Rows solved at a time (None: the whole batch)."""
    plan: Plan = field(default_factory=lambda: Plan([], []))
    """The chunks and which of them this rank solves (:mod:`sdekit._distributed`)."""


# --------------------------------------------------------------------------- stage 1: check the inputs
def _check_inputs(
    model: Any,
    sde: Any,
    x: Any,
    *,
    solver: Any,
    rtol: Any,
    atol: Any,
    trace: Any,
    n_probes: Any,
    probe: Any,
    eps: Any,
    parameterization: Any,
    prior: Any,
    generator: Any,
    steps: Any,
    options: Any,
    create_graph: Any,
    normalize: Any,
    adjoint: Any,
    adjoint_params: Any,
    chunk_size: Any,
    distributed: Any = False,
    gather: Any = "all",
) -> _LogpConfig:
    """Every argument of :func:`logp` checked once, up front (one model call, on the first chunk); the first wrong
    one is reported."""
    check_data(model, sde, x)
    plan, chunk_size = plan_chunks(distributed, gather, x.shape[0], check_chunk_size(chunk_size), x[0].numel())
    method = ode_method(solver, caller="logp")
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    T = float(sde.T)
    eps = check_eps(DEFAULT_LIKELIHOOD_EPS if eps is None else eps, T)
    trace_kind = check_trace(trace, probe, n_probes, x[0].numel())
    parameterization = model_parameterization(model, parameterization)
    prior = check_prior(sde, prior, parameterization)
    opts, budget = check_options(method, options, steps, eps, T, _ARGUMENTS)
    check_generator(generator)
    if create_graph is not None and not isinstance(create_graph, bool):
        raise TypeError(f"create_graph must be True, False or None (automatic), got {create_graph!r}")
    normalized = check_normalize(sde, normalize)
    graph = needs_graph(model, x if chunk_size is None else x[:chunk_size], eps, create_graph)
    return _LogpConfig(
        method=method,
        rtol=rtol,
        atol=atol,
        eps=eps,
        T=T,
        trace=trace_kind,
        n_probes=n_probes,
        probe=probe,
        parameterization=parameterization,
        prior=prior,
        generator=generator,
        options=opts,
        normalized=normalized,
        graph=graph,
        adjoint_params=check_adjoint(model, adjoint, adjoint_params, graph),
        budget=budget,
        chunk_size=chunk_size,
        plan=plan,
    )


# --------------------------------------------------------------------------- stage 2: the right-hand side
def _build_rhs(
    config: _LogpConfig, model: CheckedModel, sde: SDE, x: torch.Tensor, source: RandomSource
) -> AugmentedFlow:
    """The augmented PF-ODE (x, log-density) with the configured trace, in x or in normalized coordinates;
    Hutchinson probes drawn from ``source``."""
    score = score_fn(model, sde, config.parameterization)
    if config.trace == "hutchinson":
        trace: ExactTrace | HutchinsonTrace = HutchinsonTrace(draw_probes(config.probe, config.n_probes, x, source))
    else:
        trace = ExactTrace(x)
    flags = {"graph": config.graph, "adjoint": config.adjoint_params is not None}
    if config.normalized:
        return NormalizedFlow(sde, score, trace, like=x, **flags)
    return PlainFlow(sde, score, trace, **flags)


# --------------------------------------------------------------------------- stage 3: integrate
def _integrate(config: _LogpConfig, rhs: AugmentedFlow, x: torch.Tensor) -> OdeRun:
    """Solve the augmented ODE from eps to T with the torchdiffeq driver shared with ``sample``."""
    start = rhs.start(x if config.graph else x.detach(), config.eps)
    times = torch.tensor([config.eps, config.T], dtype=x.dtype, device=x.device)
    return integrate(
        rhs,
        (start, x.new_zeros(x.shape[0])),
        times,
        method=config.method,
        rtol=config.rtol,
        atol=config.atol,
        options=config.options,
        graph=config.graph,
        adjoint_params=config.adjoint_params,
        watch="the probability-flow drift or its divergence",
        advice="check the model, or " + ("take more steps" if config.budget is None else "lower eps/rtol/atol"),
        budget=config.budget,
    )


# --------------------------------------------------------------------------- stage 4: assemble
def _assemble(config: _LogpConfig, rhs: AugmentedFlow, run: OdeRun, x: torch.Tensor, nfe: int) -> list[torch.Tensor]:
    """``[log p_T(z) + delta (checked finite), log p_T(z), delta, z]`` of one chunk (``nfe``: evaluations so far)."""
    xs, deltas = run.ys
    with torch.set_grad_enabled(config.graph):
        z, delta = rhs.finish(xs[-1], deltas[-1], config.eps, config.T)
    prior_lp = config.prior.log_prob(z)
    if not isinstance(prior_lp, torch.Tensor) or prior_lp.shape != (x.shape[0],):
        raise ModelOutputError(
            f"prior.log_prob(z) must return a tensor of shape (batch,) = ({x.shape[0]},), got "
            f"{tuple(prior_lp.shape) if isinstance(prior_lp, torch.Tensor) else type(prior_lp).__name__}"
        )
    result = prior_lp.to(x.dtype) + delta
    if not bool(torch.isfinite(result).all()):
        raise SolverDivergedError(
            f"the log-density came out non-finite ({int((~torch.isfinite(result)).sum())} of {x.shape[0]} samples); "
            f"check the model and the prior, or lower eps/rtol/atol",
            t=config.T,
            step=nfe,
        )
    return [result, prior_lp, delta, z]


def _solve_chunks(
    config: _LogpConfig, model: Model, sde: SDE, x: torch.Tensor, started: float
) -> tuple[torch.Tensor, LikelihoodInfo]:
    """Stages 2-4 chunk by chunk (one chunk without ``chunk_size``; this rank's chunks of ``plan``, then one gather:
    :mod:`sdekit._distributed`); the log-density and the info of the batch.

    Hutchinson probes come from per-block streams of ``generator``, so a row's probes do not depend on the chunks.
    """
    plan = config.plan
    streams = plan.streams(config.generator, x.shape) if config.trace == "hutchinson" else None
    rows = plan.local_rows
    out = plan.collector(x.shape[0], (0, 0, 0, 0))
    nfe, normalized = 1, config.normalized  # the input check's model call, then the solves'
    checked = CheckedModel(model)
    for a, b in rows:
        xc = x[a:b]
        rhs = _build_rhs(config, checked, sde, xc, chunk_source(streams, a, b))
        with checked.blame():
            run = _integrate(config, rhs, xc)
            out.put(a, b, _assemble(config, rhs, run, xc, nfe + run.evaluations))
        nfe += run.evaluations
        normalized = rhs.normalized
    result, prior_lp, delta, z = out.result()
    info = LikelihoodInfo(
        nfe=plan.total([nfe])[0],
        prior_logp=prior_lp,
        delta_logp=delta,
        z=z,
        solver=config.method,
        trace=config.trace,
        n_probes=config.n_probes if config.trace == "hutchinson" else 0,
        eps=config.eps,
        T=config.T,
        seconds=time.perf_counter() - started,
        normalized=normalized,
        chunks=len(plan.rows),
    )
    return result, info


# --------------------------------------------------------------------------- logp
def _outside_inference_mode(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` with inference mode off: the divergence needs autograd, which ``torch.inference_mode`` removes.

    Under ``torch.inference_mode()`` the call runs under ``torch.no_grad()`` instead (no graph is kept, as the
    caller asked), on a normal copy of ``x`` (inference tensors cannot enter autograd).
    """

    @functools.wraps(fn)
    def wrapper(model: Any, sde: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_inference_mode_enabled():
            return fn(model, sde, x, *args, **kwargs)
        with torch.inference_mode(False), torch.no_grad():
            return fn(model, sde, x.clone() if isinstance(x, torch.Tensor) else x, *args, **kwargs)

    return wrapper


@suggest_keywords
@_outside_inference_mode
def logp(
    model: Model,
    sde: SDE,
    x: torch.Tensor,
    *,
    solver: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    trace: str = "auto",
    n_probes: int = 1,
    probe: str = "rademacher",
    eps: float | None = None,
    parameterization: str | None = None,
    prior: Any = None,
    generator: torch.Generator | None = None,
    steps: int | None = None,
    options: dict[str, Any] | None = None,
    create_graph: bool | None = None,
    normalize: bool | None = None,
    adjoint: bool = False,
    adjoint_params: Any = None,
    chunk_size: int | None = None,
    distributed: bool = False,
    gather: str = "all",
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, LikelihoodInfo] | None:
    r"""Log-density (nats) of ``x`` under the model's time-:math:`\epsilon` marginal, by the PF-ODE.

    .. math::
        \log p_\epsilon(x) = \log p_T(z) + \int_\epsilon^T \nabla\!\cdot\tilde f(x_t, t)\,dt,\qquad
        \dot x_t = \tilde f(x_t, t),\; x_\epsilon = x,\; z = x_T,

    with :math:`\tilde f = f - \tfrac12\partial_x g^2 - \tfrac12 g^2 s_\theta` the probability-flow drift.

    Args:
        model: ``model(x, t) -> tensor like x`` (t of shape (batch,)), predicting
            ``parameterization``. Samples must not interact (no batch statistics): the
            divergence is taken per sample.
        sde: the forward SDE.
        x: data of shape (batch, *event_shape), any floating dtype.
        solver: torchdiffeq method (``"dopri5"``, ``"ode:dopri5"``, ``"ode"``, ``"dopri8"``, ...).
            Fixed-grid methods (``"rk4"``, ``"euler"``, ...) need ``steps``.
        rtol: relative tolerance of adaptive methods, applied to both x and the log-density.
        atol: absolute tolerance of adaptive methods.
        trace: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact for event dimension
            <= :data:`EXACT_TRACE_MAX_DIM` = 256). ``"exact"`` is refused above :data:`EXACT_TRACE_LIMIT_DIM`
            = 1024 (it costs d network passes per evaluation): pass ``"hutchinson"`` there.
        n_probes: Hutchinson probes per sample (the estimate averages them).
        probe: ``"rademacher"`` (lowest variance for a given Jacobian) or ``"gaussian"``.
        eps: lower time; default :data:`DEFAULT_LIKELIHOOD_EPS` = 1e-5.
        parameterization: what the model predicts (``"score"``, ``"eps"``, ``"x0"``, ``"v"``, ``"denoiser"``);
            None (default): the model's declared ``parameterization`` attribute, else ``"score"``.
        prior: anything with ``log_prob(z) -> (batch,)`` used for :math:`\log p_T`; default
            ``sde.prior`` = :math:`N(m(T), \sigma(T)^2 I)`, which is only approximately
            :math:`p_T` (exact comparisons pass the exact :math:`p_T`, e.g. an oracle's ``.at(sde.T)``).
        generator: random generator for the Hutchinson probes: one number drawn from it seeds per-block streams
            (:class:`sdekit._random.Streams`), so each sample's probes depend on its row, not on ``chunk_size``;
            ``None``: torch's global generator, in chunk order.
        steps: number of uniform steps for fixed-grid methods (at most 10**7).
        options: extra torchdiffeq ``options``, checked against the method's declared keywords
            (``sdekit solvers --options dopri5``) by name, type and range. Adaptive methods default to
            ``step_t=[T]`` (the last step ends on T: no model call past T, no interpolation error), a per-sample
            error norm (rtol/atol hold for every sample, not on average over the batch) and
            ``max_num_steps`` = 3,000 attempted steps (accepted + rejected; a solve that needs more
            stops with :class:`~sdekit.errors.SolverError`; the documented runs take at most about 90,
            :mod:`sdekit.solvers._budget`; ``{"max_num_steps": None}`` removes the limit).
        create_graph: keep the autograd graph through the solve so that the result can be
            differentiated (w.r.t. model parameters, x or SDE-independent inputs). Default
            ``None``: yes when grad mode is on and either ``x`` or the model output requires
            grad (detected with one model call), so ``logp(...).mean().backward()`` trains by
            maximum likelihood; wrap evaluation in ``torch.no_grad()`` (or pass ``False``) to
            save memory. Without a graph nothing of the solve stays alive.
        adjoint: with a graph (see ``create_graph``), differentiate by the adjoint method
            (torchdiffeq ``odeint_adjoint``: solve again backwards in time for the vector-Jacobian
            products) instead of backpropagating through the solver's operations: memory no longer
            grows with the number of steps, at the price of a second solve and gradients accurate
            to the solver tolerance (rather than exact gradients of the discretized solve).
        adjoint_params: the tensors to differentiate with ``adjoint=True`` (default: the model's
            parameters when it is a ``torch.nn.Module``, else none; gradients w.r.t. ``x`` and
            through the prior are always available). Tensors the model uses that are not listed
            receive no gradient.
        normalize: integrate in the normalized coordinates :math:`w = (x - m(t))/c(t)`,
            :math:`c^2 = \alpha^2 + \sigma^2` (the marginal's mean and scale for unit-variance data),
            where the ODE of an affine SDE reads
            :math:`\dot w = \tfrac{k}{c}\,s_\theta(c w + m, t) + \tfrac{k}{c^2} w`, :math:`k = -g^2/2`:
            the linear part that carries unit-variance data is removed, the divergence of the
            known terms is exact and autograd runs through the score model only. The
            log-determinant :math:`d\log(c(T)/c(\epsilon))` is added exactly. ``None`` (default):
            yes for affine SDEs, no otherwise; ``True`` on a non-affine SDE raises
            :class:`~sdekit.errors.NotAffineError`. For VP-type SDEs :math:`c = 1` and
            :math:`w = x`, so only the cost per evaluation changes.
        chunk_size: solve at most this many rows at a time (a positive int; ``None``: the whole batch), so that
            memory (states, solver stages, the divergence's autograd buffers) is bounded by the chunk; the
            results and the info's tensors are concatenated, ``info.nfe`` sums the chunks. Without a graph
            (``create_graph``) nothing of a finished chunk stays alive. Fixed-grid solvers give bit-identical
            results for every ``chunk_size`` (with a ``generator`` for Hutchinson); adaptive ones choose one
            step sequence per chunk (the same ``chunk_size`` gives the same bits, another one results that agree
            to rtol/atol). See ``docs/likelihood.md``, "Chunks and determinism".
        distributed: under an initialised ``torch.distributed`` process group, every rank (each passing the same
            ``x`` and arguments) solves whole chunks (chunk i on rank ``i % world_size``; without ``chunk_size``
            about one chunk per rank, :func:`sdekit._distributed.default_chunk_size`) and the chunks are gathered at
            the end: bit-identical to one process with the same seed and ``chunk_size``. No autograd graph
            (``create_graph`` defaults to False; True is refused); ``info.nfe`` is the total over the ranks. See
            ``docs/distributed.md``.
        gather: with ``distributed=True``: ``"all"`` (every rank gets the result) or ``"rank0"`` (rank 0 gets
            it; the other ranks get None, and None for the info's tensors).
        return_info: also return a :class:`LikelihoodInfo`.

    Returns:
        Log-density of shape (batch,) in nats (x's dtype), and the info if requested.

    Raises:
        ValueError: bad tolerance, eps, trace (``"exact"`` above :data:`EXACT_TRACE_LIMIT_DIM`), probe, n_probes,
            steps or parameterization; an ``options`` key or
            value torchdiffeq's method does not take (:class:`~sdekit.errors.SolverOptionError`).
        TypeError: an unknown keyword argument (the message suggests the argument meant).
        UnknownSolverError: ``solver`` is not a torchdiffeq method.
        NotAffineError: no ``prior`` given (or a non-score parameterization) for a non-affine SDE.
        ModelOutputError: the model output has the wrong shape or is not finite.
        SolverDivergedError: the state became non-finite during the solve.
        SolverError: the step budget ``max_num_steps`` is spent, or torchdiffeq failed (e.g. step size
            underflow).

    Example::

        lp = sdekit.logp(model, sdekit.VPSDE(), x)
        lp, info = sdekit.logp(model, sde, x, trace="hutchinson", n_probes=4, return_info=True)
        bpd = sdekit.bits_per_dim(lp, x, data_range="[-1,1]")
    """
    started = time.perf_counter()
    create_graph = graph_option(distributed, create_graph)
    config = _check_inputs(
        model,
        sde,
        x,
        solver=solver,
        rtol=rtol,
        atol=atol,
        trace=trace,
        n_probes=n_probes,
        probe=probe,
        eps=eps,
        parameterization=parameterization,
        prior=prior,
        generator=generator,
        steps=steps,
        options=options,
        create_graph=create_graph,
        normalize=normalize,
        adjoint=adjoint,
        adjoint_params=adjoint_params,
        chunk_size=chunk_size,
        distributed=distributed,
        gather=gather,
    )
    result, info = _solve_chunks(config, model, sde, x, started)
    return (result, info) if return_info else result


_ARGUMENTS: tuple[str, ...] = tuple(p for p in inspect.signature(logp).parameters if p != "options")
"""The names of :func:`logp`'s own arguments: the suggestions for an ``options=`` key that is one of them."""
