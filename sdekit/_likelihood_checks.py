"""The input checks of :func:`sdekit.logp` (stage 1 of :mod:`sdekit._likelihood`) and its constants: each check
runs once, before any solve, and raises one clear error naming the argument."""

from __future__ import annotations

from typing import Any

import torch

from ._checks import (
    check_batch,
    check_choice,
    check_count,
    check_model_output,
    check_positive,
)
from ._likelihood_rhs import per_sample_norm
from ._model_errors import GuardedModel
from ._traces import PROBES
from .errors import NotAffineError
from .solvers._budget import ODE_MAX_STEPS, StepBudget, check_budget, check_step_cap
from .solvers._odedriver import is_fixed_grid
from .solvers._option import check_given
from .solvers._torchdiffeq import backend_options
from .symbolic.sde import SDE

__all__ = [
    "DEFAULT_LIKELIHOOD_EPS",
    "EXACT_TRACE_LIMIT_DIM",
    "EXACT_TRACE_MAX_DIM",
    "check_adjoint",
    "check_data",
    "check_normalize",
    "check_options",
    "check_prior",
    "check_trace",
    "needs_graph",
    "resolve_trace",
]

DEFAULT_LIKELIHOOD_EPS: float = 1e-5
r"""Default :math:`\epsilon` of :func:`logp`: the density returned is that of :math:`x_\epsilon`.

Likelihoods are reported at :math:`\epsilon = 10^{-5}` (Song et al. 2021), smaller than the
sampling default ``sde.default_eps`` (1e-3): :math:`p_\epsilon` should be as close to the data
density as the model allows, while sampling only needs the end point to look like data."""

EXACT_TRACE_MAX_DIM: int = 256
"""``trace="auto"`` takes the exact trace for event dimensions up to this value, Hutchinson above.

The exact trace costs one batched backward pass of d vector-Jacobian products per drift
evaluation (about d times the work of one Hutchinson probe)."""

EXACT_TRACE_LIMIT_DIM: int = 1024
"""An explicit ``trace="exact"`` is refused above this event dimension (``ValueError`` naming ``"hutchinson"``).

The exact trace costs d network passes (forward and backward) per drift evaluation. At d = 1024 (a 32 x 32 grey
image) an adaptive solve of ~200 evaluations already makes ~200,000 of them per batch; CIFAR-10's d = 3072 would
take ~600,000. Hutchinson's estimate (``trace="hutchinson"``) costs one backward pass per probe at any d and is
unbiased: the error it adds to a dataset's mean log-likelihood shrinks like 1/sqrt(samples x probes)."""

_TRACES = ("auto", "exact", "hutchinson")


def check_data(model: Any, sde: Any, x: Any) -> None:
    if not callable(model):
        raise TypeError(f"model must be a callable model(x, t), got {type(model).__name__}")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdekit.SDE instance, got {type(sde).__name__}")
    if sde.components is not None and (x.ndim < 2 or x.shape[1] != len(sde.components)):
        raise ValueError(
            f"{sde!r} has components {sde.components}: x must be the full state (batch, {len(sde.components)}, "
            f"*event_shape), got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    check_batch(x, finite=True)


def resolve_trace(trace: str, dim: int) -> str:
    """The trace :func:`logp` takes for event dimension ``dim``: ``"exact"`` or ``"hutchinson"``.

    ``"auto"`` is exact up to :data:`EXACT_TRACE_MAX_DIM` (256), Hutchinson above. An explicit ``"exact"`` above
    :data:`EXACT_TRACE_LIMIT_DIM` (1024) raises ``ValueError`` naming ``trace="hutchinson"``.
    """
    check_choice("trace", trace, _TRACES)
    if trace == "auto":
        return "exact" if dim <= EXACT_TRACE_MAX_DIM else "hutchinson"
    if trace == "exact" and dim > EXACT_TRACE_LIMIT_DIM:
        raise ValueError(
            f"trace='exact' is refused for event dimension {dim:,} > {EXACT_TRACE_LIMIT_DIM:,}: it costs {dim:,} "
            f"network passes per drift evaluation; pass trace='hutchinson' (unbiased, one pass per probe; n_probes= "
            f"sets the probes per sample)"
        )
    return trace


def check_trace(trace: Any, probe: Any, n_probes: Any, dim: int) -> str:
    """The trace to take (``"auto"`` resolved by the event dimension ``dim``, see :func:`resolve_trace`)."""
    kind = resolve_trace(trace, dim)
    check_choice("probe", probe, PROBES)
    check_count("n_probes", n_probes)
    return kind


def check_prior(sde: SDE, prior: Any, parameterization: str) -> Any:
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


def check_options(
    method: str, options: Any, steps: Any, eps: float, T: float, arguments: tuple[str, ...]
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
        arguments=arguments,
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


def check_normalize(sde: SDE, normalize: Any) -> bool:
    """Whether to integrate in the normalized coordinates (default: for affine SDEs)."""
    if normalize is not None and not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True, False or None (automatic), got {normalize!r}")
    normalized = normalize is not False and sde.is_affine and sde.components is None
    if normalize is True and sde.components is not None:
        raise ValueError("normalize=True needs a scalar marginal; a k-component SDE integrates in x (normalize=None)")
    if normalize is True and not normalized:
        raise NotAffineError(
            f"normalize=True integrates in w = (x - m(t)) / c(t), which needs an affine {type(sde).__name__} "
            f"(f = a(t) x + b(t), g = g(t)); pass normalize=None or False"
        )
    return normalized


def needs_graph(model: Any, x: torch.Tensor, eps: float, create_graph: bool | None) -> bool:
    """One model call at eps: checks its output, and whether the caller wants a graph through the model."""
    t_eps = torch.full((x.shape[0],), eps, dtype=x.dtype, device=x.device)
    with torch.enable_grad():
        out = GuardedModel(model)(x.detach(), t_eps)
    check_model_output(out, x, nonfinite_hint=f"t = eps = {eps:g}; check the model near t = 0")
    if create_graph is not None:
        return bool(create_graph) and torch.is_grad_enabled()
    return torch.is_grad_enabled() and (x.requires_grad or out.requires_grad)


def check_adjoint(model: Any, adjoint: Any, adjoint_params: Any, graph: bool) -> tuple[torch.Tensor, ...] | None:
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
