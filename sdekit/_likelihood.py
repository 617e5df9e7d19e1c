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

The divergence is the trace of the Jacobian (:mod:`sdekit._traces`): ``"exact"`` (d vector-Jacobian
products in one batched pass), ``"hutchinson"`` (probes drawn once per call and held fixed along the
trajectory, so the ODE stays smooth and the result is an unbiased estimate up to solver error), or
``"auto"``: exact when the event dimension is at most :data:`EXACT_TRACE_MAX_DIM`.

See ``docs/likelihood.md`` for the derivation, the sign conventions, the prior and the
bits-per-dimension offset (:func:`~sdekit.bits_per_dim`, :func:`~sdekit.dequantize`, re-exported here).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ._checks import (
    check_batch,
    check_choice,
    check_count,
    check_eps,
    check_generator,
    check_model_output,
    check_positive,
    check_scalar_sde,
)
from ._dequantize import bits_per_dim, dequantize
from ._keywords import suggest_keywords
from ._likelihood_rhs import AugmentedFlow, NormalizedFlow, PlainFlow, per_sample_norm
from ._model_errors import CheckedModel, GuardedModel
from ._traces import PROBES, ExactTrace, HutchinsonTrace, draw_probes
from .errors import ModelOutputError, NotAffineError, SolverDivergedError
from .parameterization import model_parameterization, score_fn
from .solvers._budget import ODE_MAX_STEPS, StepBudget, check_budget, check_step_cap
from .solvers._odedriver import OdeRun, integrate, is_fixed_grid
from .solvers._option import check_given
from .solvers._torchdiffeq import backend_options, ode_method
from .symbolic.sde import SDE

__all__ = [
    "DEFAULT_LIKELIHOOD_EPS",
    "EXACT_TRACE_MAX_DIM",
    "LikelihoodInfo",
    "bits_per_dim",
    "dequantize",
    "logp",
]

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DEFAULT_LIKELIHOOD_EPS: float = 1e-5
r"""Default :math:`\epsilon` of :func:`logp`: the density returned is that of :math:`x_\epsilon`.

Likelihoods are reported at :math:`\epsilon = 10^{-5}` (Song et al. 2021), smaller than the
sampling default ``sde.default_eps`` (1e-3): :math:`p_\epsilon` should be as close to the data
density as the model allows, while sampling only needs the end point to look like data."""

EXACT_TRACE_MAX_DIM: int = 256
"""``trace="auto"`` takes the exact trace for event dimensions up to this value, Hutchinson above.

The exact trace costs one batched backward pass of d vector-Jacobian products per drift
evaluation (about d times the work of one Hutchinson probe)."""

_TRACES = ("auto", "exact", "hutchinson")


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
) -> _LogpConfig:
    """Every argument of :func:`logp` checked once, up front (one model call); the first wrong one is reported."""
    _check_data(model, sde, x)
    method = ode_method(solver, caller="logp")
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    T = float(sde.T)
    eps = check_eps(DEFAULT_LIKELIHOOD_EPS if eps is None else eps, T)
    trace_kind = _check_trace(trace, probe, n_probes, x[0].numel())
    parameterization = model_parameterization(model, parameterization)
    prior = _check_prior(sde, prior, parameterization)
    opts, budget = _check_options(method, options, steps, eps, T)
    check_generator(generator)
    if create_graph is not None and not isinstance(create_graph, bool):
        raise TypeError(f"create_graph must be True, False or None (automatic), got {create_graph!r}")
    normalized = _check_normalize(sde, normalize)
    graph = _needs_graph(model, x, eps, create_graph)
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
        adjoint_params=_check_adjoint(model, adjoint, adjoint_params, graph),
        budget=budget,
    )


def _check_data(model: Any, sde: Any, x: Any) -> None:
    if not callable(model):
        raise TypeError(f"model must be a callable model(x, t), got {type(model).__name__}")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdekit.SDE instance, got {type(sde).__name__}")
    check_scalar_sde(sde, "sdekit.logp")
    check_batch(x, finite=True)


def _check_trace(trace: Any, probe: Any, n_probes: Any, dim: int) -> str:
    """The trace to take (``"auto"`` resolved by the event dimension ``dim``)."""
    check_choice("trace", trace, _TRACES)
    check_choice("probe", probe, PROBES)
    check_count("n_probes", n_probes)
    return trace if trace != "auto" else ("exact" if dim <= EXACT_TRACE_MAX_DIM else "hutchinson")


def _check_prior(sde: SDE, prior: Any, parameterization: str) -> Any:
    if not sde.is_affine and (prior is None or parameterization != "score"):
        what = "a prior (pass prior=)" if prior is None else f"the {parameterization!r} parameterization"
        raise NotAffineError(
            f"{type(sde).__name__} is not affine, so it has no Gaussian marginal for {what}; pass prior= with "
            f"log_prob(z) and a score model"
        )
    if prior is None:
        prior = sde.prior
    if not callable(getattr(prior, "log_prob", None)):
        raise TypeError(f"prior must have a log_prob(z) method, got {type(prior).__name__}")
    return prior


def _check_options(
    method: str, options: Any, steps: Any, eps: float, T: float
) -> tuple[dict[str, Any], StepBudget | None]:
    """torchdiffeq options for ``method``: the caller's (checked), ``step_size`` from ``steps`` (at most
    :data:`~sdekit.solvers._budget.MAX_STEPS`), the per-sample norm; and the step budget of an adaptive solve
    (``max_num_steps``, taken out of the options: the driver enforces it)."""
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict of torchdiffeq options, got {type(options).__name__}")
    opts = check_given(
        options or {},
        backend_options(method),
        who=f"logp's options= for torchdiffeq's {method!r}",
        arguments=_ARGUMENTS,
        function="logp",
        keyword=False,
        note=" (torchdiffeq would ignore an unknown one)",
    )
    if is_fixed_grid(method):
        if steps is None and "step_size" not in opts and "grid_constructor" not in opts:
            raise ValueError(f"solver {method!r} takes fixed steps: pass steps=<number of steps> (or options=)")
        if steps is not None:
            opts["step_size"] = (T - eps) / check_step_cap(check_count("steps", steps))
        elif "step_size" in opts:  # torchdiffeq would build the grid of (T - eps) / step_size steps
            size = check_positive("options['step_size']", opts["step_size"])
            check_step_cap((T - eps) / size, f"options['step_size']={size:g} ({(T - eps) / size:.3g} steps)")
        return opts, None
    if steps is not None:
        raise ValueError(f"steps= is for fixed-grid solvers; {method!r} is adaptive (use rtol/atol)")
    opts.setdefault("norm", per_sample_norm)
    max_steps = check_budget("options['max_num_steps']", opts.pop("max_num_steps", ODE_MAX_STEPS))
    budget = StepBudget(
        max_steps,
        steps_option="options['max_num_steps']",
        fixed_hint="use a fixed-grid solver (solver='rk4', steps=n)",
    )
    return opts, budget


def _check_normalize(sde: SDE, normalize: Any) -> bool:
    """Whether to integrate in the normalized coordinates (default: for affine SDEs)."""
    if normalize is not None and not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True, False or None (automatic), got {normalize!r}")
    normalized = normalize is not False and sde.is_affine
    if normalize is True and not normalized:
        raise NotAffineError(
            f"normalize=True integrates in w = (x - m(t)) / c(t), which needs an affine {type(sde).__name__} "
            f"(f = a(t) x + b(t), g = g(t)); pass normalize=None or False"
        )
    return normalized


def _needs_graph(model: Any, x: torch.Tensor, eps: float, create_graph: bool | None) -> bool:
    """One model call at eps: checks its output, and whether the caller wants a graph through the model."""
    t_eps = torch.full((x.shape[0],), eps, dtype=x.dtype, device=x.device)
    with torch.enable_grad():
        out = GuardedModel(model)(x.detach(), t_eps)
    check_model_output(out, x, nonfinite_hint=f"t = eps = {eps:g}; check the model near t = 0")
    if create_graph is not None:
        return bool(create_graph) and torch.is_grad_enabled()
    return torch.is_grad_enabled() and (x.requires_grad or out.requires_grad)


def _check_adjoint(model: Any, adjoint: Any, adjoint_params: Any, graph: bool) -> tuple[torch.Tensor, ...] | None:
    """The tensors to differentiate by the adjoint method, or None (no adjoint, or no graph: a plain solve)."""
    if not isinstance(adjoint, bool):
        raise TypeError(f"adjoint must be True or False, got {adjoint!r}")
    if not (adjoint and graph):  # without a graph there is nothing to differentiate: plain solve
        return None
    if adjoint_params is None:
        adjoint_params = tuple(model.parameters()) if isinstance(model, torch.nn.Module) else ()
    adjoint_params = tuple(adjoint_params)
    if not all(isinstance(p, torch.Tensor) for p in adjoint_params):
        raise TypeError("adjoint_params must be an iterable of tensors (the parameters to differentiate)")
    return adjoint_params


# --------------------------------------------------------------------------- stage 2: the right-hand side
def _build_rhs(config: _LogpConfig, model: CheckedModel, sde: SDE, x: torch.Tensor) -> AugmentedFlow:
    """The augmented PF-ODE (x, log-density) with the configured trace, in x or in normalized coordinates."""
    score = score_fn(model, sde, config.parameterization)
    if config.trace == "hutchinson":
        trace: ExactTrace | HutchinsonTrace = HutchinsonTrace(
            draw_probes(config.probe, config.n_probes, x, config.generator)
        )
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
def _assemble(
    config: _LogpConfig, rhs: AugmentedFlow, run: OdeRun, x: torch.Tensor, started: float
) -> tuple[torch.Tensor, LikelihoodInfo]:
    """``log p_T(z) + delta`` (checked finite) and its :class:`LikelihoodInfo`."""
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
    nfe = 1 + run.evaluations  # the input check's model call, then the solve's
    if not bool(torch.isfinite(result).all()):
        raise SolverDivergedError(
            f"the log-density came out non-finite ({int((~torch.isfinite(result)).sum())} of {x.shape[0]} samples); "
            f"check the model and the prior, or lower eps/rtol/atol",
            t=config.T,
            step=nfe,
        )
    info = LikelihoodInfo(
        nfe=nfe,
        prior_logp=prior_lp,
        delta_logp=delta,
        z=z,
        solver=config.method,
        trace=config.trace,
        n_probes=config.n_probes if config.trace == "hutchinson" else 0,
        eps=config.eps,
        T=config.T,
        seconds=time.perf_counter() - started,
        normalized=rhs.normalized,
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
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, LikelihoodInfo]:
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
            <= :data:`EXACT_TRACE_MAX_DIM` = 256).
        n_probes: Hutchinson probes per sample (the estimate averages them).
        probe: ``"rademacher"`` (lowest variance for a given Jacobian) or ``"gaussian"``.
        eps: lower time; default :data:`DEFAULT_LIKELIHOOD_EPS` = 1e-5.
        parameterization: what the model predicts (``"score"``, ``"eps"``, ``"x0"``, ``"v"``, ``"denoiser"``);
            None (default): the model's declared ``parameterization`` attribute, else ``"score"``.
        prior: anything with ``log_prob(z) -> (batch,)`` used for :math:`\log p_T`; default
            ``sde.prior`` = :math:`N(m(T), \sigma(T)^2 I)`, which is only approximately
            :math:`p_T` (exact comparisons pass the exact :math:`p_T`, e.g. an oracle's ``.at(sde.T)``).
        generator: random generator for the Hutchinson probes.
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
        return_info: also return a :class:`LikelihoodInfo`.

    Returns:
        Log-density of shape (batch,) in nats (x's dtype), and the info if requested.

    Raises:
        ValueError: bad tolerance, eps, trace, probe, n_probes, steps or parameterization; an ``options`` key or
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
    )
    checked = CheckedModel(model)
    rhs = _build_rhs(config, checked, sde, x)
    try:
        run = _integrate(config, rhs, x)
        result, info = _assemble(config, rhs, run, x, started)
    except SolverDivergedError as err:
        blame = checked.verdict(err)
        if blame is None:
            raise
        raise blame from err
    return (result, info) if return_info else result


_ARGUMENTS: tuple[str, ...] = tuple(p for p in inspect.signature(logp).parameters if p != "options")
"""The names of :func:`logp`'s own arguments: the suggestions for an ``options=`` key that is one of them."""
