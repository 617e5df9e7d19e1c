r"""Exact likelihood through the probability-flow ODE, and bits per dimension.

The probability-flow (PF) ODE :math:`\dot x = \tilde f(x, t) = f - \tfrac12\partial_x g^2 - \tfrac12 g^2 s_\theta`
moves samples so that :math:`x_t \sim p_t` for every t. Along one of its trajectories the
instantaneous change of variables (Chen et al. 2018) gives

.. math::
    \frac{d}{dt}\log p_t(x_t) = -\nabla\!\cdot\tilde f(x_t, t)
    \quad\Longrightarrow\quad
    \log p_\epsilon(x) = \log p_T(z) + \int_\epsilon^T \nabla\!\cdot\tilde f(x_t, t)\,dt,

where :math:`x_\epsilon = x` and :math:`z = x_T`. :func:`logp` integrates the augmented state
:math:`(x_t, \Delta_t)` with :math:`\dot\Delta = \nabla\cdot\tilde f` *forward* in time from
:math:`\epsilon` to :math:`T`, then returns :math:`\log p_T(z) + \Delta_T`.

The divergence is the trace of the Jacobian of the full drift (model, :math:`f` and, for a
state-dependent diffusion, :math:`-\tfrac12\partial_x g^2`), taken by autograd:

* ``"exact"``: :math:`\operatorname{tr} J = \sum_i e_i^\top J e_i`, all d vector-Jacobian
  products from one forward and one backward pass over the batch replicated d times
  (chunked to bound memory);
* ``"hutchinson"``: :math:`\operatorname{tr} J \approx \frac1n\sum_k v_k^\top J v_k` with
  :math:`E[v v^\top] = I` (Rademacher or Gaussian probes), one backward pass per probe;
  the probes are drawn once per call and held fixed along the trajectory, so the ODE
  stays smooth and the result is an unbiased estimate of :math:`\log p_\epsilon(x)`
  (up to solver error);
* ``"auto"``: exact when the event dimension is at most :data:`EXACT_TRACE_MAX_DIM`.

For affine SDEs the ODE is integrated in the normalized coordinates
:math:`w = (x - m(t))/c(t)`, :math:`c^2 = \alpha^2 + \sigma^2` (:class:`_NormalizedFlow`): the
divergence of the known linear part is exact, autograd runs through the score model only and
the log-determinant :math:`d\log(c(T)/c(\epsilon))` is added in closed form. Every method is
torchdiffeq's.

See ``docs/likelihood.md`` for the derivation, the sign conventions, the prior and the
bits-per-dimension offset.
"""

from __future__ import annotations

import difflib
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from . import _random
from ._checks import check_float_dtype, check_generator, check_model_output, check_positive
from .errors import ModelOutputError, NotAffineError, SolverDivergedError, SolverError, UnknownSolverError
from .parameterization import check_parameterization, score_fn
from .solvers._odestart import end_time, keep_inside, torchdiffeq_options

if TYPE_CHECKING:  # pragma: no cover
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

_FIXED_GRID = frozenset(
    {"euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams"}
)
_TRACES = ("auto", "exact", "hutchinson")
_PROBES = ("rademacher", "gaussian")
_MAX_BATCHED_ELEMENTS = 2**24  # cap on (coordinates per chunk) x batch x d for the exact trace
_LOG2 = math.log(2.0)


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


# --------------------------------------------------------------------------- traces
class _ExactTrace:
    r"""Exact :math:`\operatorname{tr}\,\partial\,\mathrm{fn}/\partial x` per sample (samples must not interact).

    The batch is replicated k times (k coordinates per chunk); copy j of every sample gets the
    one-hot cotangent :math:`e_{i_j}`, so one forward and one backward pass over k x batch rows
    give k diagonal Jacobian entries for every sample. This needs nothing from the model beyond
    per-sample independence (no vmap batching rules), and for small d it is a single pass of a
    slightly larger batch. Chunks keep k x batch x d below :data:`_MAX_BATCHED_ELEMENTS`; when a
    single chunk covers all coordinates (the usual low-dimensional case) its cotangent is built
    once per :func:`logp` call instead of once per evaluation.
    """

    def __init__(self, like: torch.Tensor):
        self.shape = tuple(like.shape)
        self.batch = like.shape[0]
        self.d = like[0].numel()
        self.chunk = max(1, min(self.d, _MAX_BATCHED_ELEMENTS // max(1, self.batch * self.d)))
        self._like = like
        self._cached = self._cotangent(0, self.d) if self.chunk >= self.d else None

    def _cotangent(self, start: int, k: int) -> torch.Tensor:
        cot = self._like.new_zeros(k, self.batch, self.d)
        rows = torch.arange(k, device=self._like.device)
        cot[rows, :, start + rows] = 1
        return cot.reshape(k * self.batch, *self.shape[1:])

    def __call__(
        self, fn: Callable[[torch.Tensor, Any], torch.Tensor], x: torch.Tensor, t: Any, create_graph: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``fn(x, t)`` and the trace of its Jacobian for every sample, shape (batch,).

        ``t`` is passed as given, except a per-sample ``t`` of shape (batch,), which is replicated like the
        batch (rows ``j * batch + b`` get ``t[b]``).
        """
        batch, d = self.batch, self.d
        per_sample = isinstance(t, torch.Tensor) and t.shape == (batch,)
        total: torch.Tensor | None = None
        out0: torch.Tensor | None = None
        for start in range(0, d, self.chunk):
            k = min(self.chunk, d - start)
            xr = x.unsqueeze(0).expand(k, *x.shape).reshape(k * batch, *x.shape[1:])
            out = fn(xr, t.repeat(k) if per_sample else t)
            cot = self._cached if self._cached is not None else self._cotangent(start, k)
            (jac,) = torch.autograd.grad(out, xr, cot, create_graph=create_graph, retain_graph=True)
            # entry (j, b, start + j) of the (k, batch, d) view is dF_i/dx_i with i = start + j
            jac = jac.reshape(k, batch, d)
            part = (jac if k == d else jac[:, :, start : start + k]).diagonal(dim1=0, dim2=2).sum(-1)
            total = part if total is None else total + part
            if out0 is None:
                out0 = out.reshape(k, *x.shape)[0]
        assert out0 is not None and total is not None
        return out0, total


def _drift_and_exact_trace(
    drift: Callable[[torch.Tensor, Any], torch.Tensor], x: torch.Tensor, t: Any, create_graph: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-off :class:`_ExactTrace` (kept for callers outside :func:`logp`)."""
    return _ExactTrace(x)(drift, x, t, create_graph)


def _hutchinson_trace(out: torch.Tensor, x: torch.Tensor, probes: torch.Tensor, create_graph: bool) -> torch.Tensor:
    r""":math:`\frac1n\sum_k v_k^\top J v_k` per sample with fixed probes of shape (n, *x.shape)."""
    n = probes.shape[0]
    if n == 1:
        (vjp,) = torch.autograd.grad(out, x, probes[0], retain_graph=True, create_graph=create_graph)
        return (vjp * probes[0]).reshape(x.shape[0], -1).sum(1)
    (vjp,) = torch.autograd.grad(out, x, probes, retain_graph=True, create_graph=create_graph, is_grads_batched=True)
    return (vjp * probes).reshape(n, x.shape[0], -1).sum(2).mean(0)


def _draw_probes(kind: str, n: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    shape = (n, *like.shape)
    if kind == "gaussian":
        return _random.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
    bits = _random.randint(0, 2, shape, generator=generator, device=like.device)
    return (2 * bits - 1).to(like.dtype)


def _per_sample_norm(scaled_error: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    r"""Largest per-sample RMS of the scaled error over (x, log-density): tolerances hold for every sample.

    torchdiffeq's default RMS over the whole batch lets one sample's error be :math:`\sqrt{B}`
    times the tolerance; on a 2-D mixture at rtol = atol = 1e-5 that was 10x the worst-case
    log-density error of this norm, for about 25% fewer steps.
    """
    x_err, delta_err = scaled_error
    batch = delta_err.shape[0]
    mean_square = (x_err.reshape(batch, -1).pow(2).sum(1) + delta_err.pow(2)) / (x_err[0].numel() + 1)
    return mean_square.max().sqrt()


class _CheckedNorm:
    """Wrap a step-error norm: a non-finite error (NaN or inf in the step) raises :class:`SolverDivergedError`.

    torchdiffeq reads the norm on the host once per step anyway (to accept or reject it), so the
    check costs no extra synchronisation per model call; ``where`` holds the last evaluated time.
    """

    def __init__(self, norm: Callable[[Any], torch.Tensor], where: list[float | torch.Tensor]):
        self.norm, self.where = norm, where

    def __call__(self, scaled_error: Any) -> torch.Tensor:
        value = self.norm(scaled_error)
        if not bool(torch.isfinite(value)):
            t = float(self.where[0])
            raise SolverDivergedError(
                f"the probability-flow drift or its divergence became non-finite in the step ending near t = "
                f"{t:.6g} (after {int(self.where[1])} evaluations); check the model, or lower eps/rtol/atol",
                t=t,
                step=int(self.where[1]),
            )
        return value


# --------------------------------------------------------------------------- normalized coordinates
class _NormalizedFlow:
    r"""The PF-ODE of an affine SDE in :math:`w = (x - m(t))/c(t)`, :math:`c^2 = \alpha^2 + \sigma^2`.

    With :math:`\tilde f = f + k s` (:math:`k = -g^2/2`), :math:`f = a x + b`,
    :math:`m' = a m + b` and :math:`c'/c = a - k/c^2`:

    .. math::
        \dot w = \frac{k}{c}\, s(c w + m, t) + \frac{k}{c^2}\, w, \qquad
        \nabla_w\!\cdot\dot w = k\,\nabla_x\!\cdot s + d\,\frac{k}{c^2},

    and

    .. math::
        \log p_\epsilon(x) = \log p_T(z) + d\log\frac{c(T)}{c(\epsilon)}
        + \int_\epsilon^T \nabla_w\!\cdot\dot w\,dt .

    The coefficients come from ``sde.marginal`` and the derived PF drift; the divergence needs
    autograd through the score model only.
    """

    def __init__(self, sde: SDE, like: torch.Tensor):
        self.marginal = sde.marginal
        coefficients = sde.affine_coefficients
        self.k_fn = coefficients.flow_scale
        # plain-float closures (math module): ~1 us per call instead of ~10 us per torch op
        marginal_floats = self.marginal.floats
        self.numpy = (
            None
            if marginal_floats is None or coefficients.floats is None
            else (*marginal_floats, coefficients.floats.flow_scale)
        )
        self.dtype = like.dtype
        self.d = like[0].numel()

    def coefficients(self, t: Any) -> tuple[Any, Any, Any, Any]:
        """(m, c, k, k / c^2) at time ``t``: Python floats for a float t, else 0-d tensors in the state dtype.

        Computed in float64 either way (float32 states get float64-accurate coefficients).
        """
        if isinstance(t, float):
            if self.numpy is not None:
                alpha, m, s2, k = (float(fn(t)) for fn in self.numpy)
            else:
                t64 = torch.tensor(t, dtype=torch.float64)
                alpha, m, s2, k = (
                    float(v)
                    for v in (
                        self.marginal.alpha(t64),
                        self.marginal.offset(t64),
                        self.marginal.sigma2(t64),
                        self.k_fn(t64),
                    )
                )
            c2 = alpha * alpha + max(s2, 0.0)
            return m, math.sqrt(c2), k, k / c2
        t64 = t.to(torch.float64)
        alpha = self.marginal.alpha(t64)
        c2 = alpha * alpha + self.marginal.sigma2(t64)
        k = self.k_fn(t64)
        out = (self.marginal.offset(t64), c2.sqrt(), k, k / c2)
        return tuple(v.to(self.dtype) for v in out)


# --------------------------------------------------------------------------- checks
def _resolve_solver(solver: str) -> str:
    from torchdiffeq._impl.odeint import SOLVERS

    if not isinstance(solver, str):
        raise TypeError(f"solver must be a torchdiffeq method name such as 'dopri5', got {type(solver).__name__}")
    name = solver
    if name == "ode":
        name = "dopri5"
    elif name.startswith("ode:"):
        name = name[4:]
    if name not in SOLVERS or name == "scipy_solver":
        known = sorted(m for m in SOLVERS if m != "scipy_solver")
        close = difflib.get_close_matches(name, known + [f"ode:{m}" for m in known], n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownSolverError(
            f"logp integrates an ODE with torchdiffeq; {solver!r} is not one of its methods.{hint} "
            f"Available: {', '.join(known)} (also written 'ode:<method>'; 'ode' means dopri5)"
        )
    return name


def _needs_graph(x: torch.Tensor, out: torch.Tensor, create_graph: bool | None) -> bool:
    if create_graph is not None:
        return bool(create_graph) and torch.is_grad_enabled()
    return torch.is_grad_enabled() and (x.requires_grad or out.requires_grad)


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
    parameterization: str = "score",
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
        parameterization: what the model predicts (``"score"``, ``"eps"``, ``"x0"``, ``"v"``,
            ``"denoiser"``).
        prior: anything with ``log_prob(z) -> (batch,)`` used for :math:`\log p_T`; default
            ``sde.prior`` = :math:`N(m(T), \sigma(T)^2 I)`, which is only approximately
            :math:`p_T` (exact comparisons pass the exact :math:`p_T`, e.g. an oracle's ``.at(sde.T)``).
        generator: random generator for the Hutchinson probes.
        steps: number of uniform steps for fixed-grid methods.
        options: extra torchdiffeq ``options`` (e.g. ``{"max_num_steps": 10000}``). Adaptive
            methods default to ``step_t=[T]`` (the last step ends on T: no model call past T, no
            interpolation error) and a per-sample error norm (rtol/atol hold for every sample,
            not on average over the batch).
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
        ValueError: bad tolerance, eps, trace, probe, n_probes, steps or parameterization.
        UnknownSolverError: ``solver`` is not a torchdiffeq method.
        NotAffineError: no ``prior`` given (or a non-score parameterization) for a non-affine SDE.
        ModelOutputError: the model output has the wrong shape or is not finite.
        SolverDivergedError: the state became non-finite during the solve.
        SolverError: torchdiffeq failed (e.g. step size underflow).

    Example::

        lp = sdekit.logp(model, sdekit.VPSDE(), x)
        lp, info = sdekit.logp(model, sde, x, trace="hutchinson", n_probes=4, return_info=True)
        bpd = sdekit.bits_per_dim(lp, x, data_range="[-1,1]")
    """
    from torchdiffeq import odeint

    from .symbolic.sde import SDE as _SDE

    started = time.perf_counter()
    # ---------------------------------------------------------------- input check (once)
    if not callable(model):
        raise TypeError(f"model must be a callable model(x, t), got {type(model).__name__}")
    if not isinstance(sde, _SDE):
        raise TypeError(f"sde must be an sdekit.SDE instance, got {type(sde).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor of shape (batch, *event_shape), got "
            f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}"
        )
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"logp integrates in float32 or float64, got x of dtype {x.dtype} (half precision cannot resolve the "
            f"log-density's increments); convert with x.float() or x.double()"
        )
    if x.ndim < 1 or x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(
            f"x must have shape (batch, *event_shape) with batch >= 1 and no empty dimension, got {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinite values")
    method = _resolve_solver(solver)
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    T = float(sde.T)
    eps = DEFAULT_LIKELIHOOD_EPS if eps is None else eps
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < T:
        raise ValueError(f"eps must be a number with 0 < eps < T = {T:g}, got {eps!r}")
    eps = float(eps)
    if trace not in _TRACES:
        raise ValueError(f"trace must be one of {', '.join(_TRACES)}, got {trace!r}")
    if probe not in _PROBES:
        raise ValueError(f"probe must be one of {', '.join(_PROBES)}, got {probe!r}")
    if isinstance(n_probes, bool) or not isinstance(n_probes, int) or n_probes < 1:
        raise ValueError(f"n_probes must be a positive integer, got {n_probes!r}")
    check_parameterization(parameterization)
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
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict of torchdiffeq options, got {type(options).__name__}")
    opts = dict(options or {})
    unknown = set(opts) - torchdiffeq_options(method)
    if unknown:
        raise ValueError(
            f"options has key(s) {', '.join(sorted(map(repr, unknown)))} that torchdiffeq's {method!r} does not take "
            f"(it would ignore them); it accepts {', '.join(sorted(torchdiffeq_options(method)))}"
        )
    if method in _FIXED_GRID:
        if steps is None and "step_size" not in opts and "grid_constructor" not in opts:
            raise ValueError(f"solver {method!r} takes fixed steps: pass steps=<number of steps> (or options=)")
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ValueError(f"steps must be a positive integer, got {steps!r}")
            opts["step_size"] = (T - eps) / steps
    else:
        if steps is not None:
            raise ValueError(f"steps= is for fixed-grid solvers; {method!r} is adaptive (use rtol/atol)")
        opts.setdefault("norm", _per_sample_norm)
    check_generator(generator)
    if create_graph is not None and not isinstance(create_graph, bool):
        raise TypeError(f"create_graph must be True, False or None (automatic), got {create_graph!r}")

    dim = x[0].numel()
    trace_kind = trace if trace != "auto" else ("exact" if dim <= EXACT_TRACE_MAX_DIM else "hutchinson")
    if normalize is not None and not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True, False or None (automatic), got {normalize!r}")
    normalized = normalize is not False and sde.is_affine
    if normalize is True and not normalized:
        raise NotAffineError(
            f"normalize=True integrates in w = (x - m(t)) / c(t), which needs an affine {type(sde).__name__} "
            f"(f = a(t) x + b(t), g = g(t)); pass normalize=None or False"
        )

    # one model call: output check, and whether the caller wants a graph through the model
    t_eps = torch.full((x.shape[0],), eps, dtype=x.dtype, device=x.device)
    with torch.enable_grad():
        out0 = model(x.detach(), t_eps)
    check_model_output(out0, x, nonfinite_hint=f"t = eps = {eps:g}; check the model near t = 0")
    graph = _needs_graph(x, out0, create_graph)
    del out0
    if not isinstance(adjoint, bool):
        raise TypeError(f"adjoint must be True or False, got {adjoint!r}")
    use_adjoint = adjoint and graph  # without a graph there is nothing to differentiate: plain solve
    if use_adjoint:
        if adjoint_params is None:
            adjoint_params = tuple(model.parameters()) if isinstance(model, torch.nn.Module) else ()
        adjoint_params = tuple(adjoint_params)
        if not all(isinstance(p, torch.Tensor) for p in adjoint_params):
            raise TypeError("adjoint_params must be an iterable of tensors (the parameters to differentiate)")

    score = score_fn(model, sde, parameterization)
    probes = _draw_probes(probe, n_probes, x, generator) if trace_kind == "hutchinson" else None
    exact = _ExactTrace(x) if probes is None else None
    where: list[Any] = [eps, 1]  # last evaluated time, evaluations (for messages and info)
    if "norm" in opts:
        opts["norm"] = _CheckedNorm(opts["norm"], where)

    def graph_now() -> bool:
        # the adjoint's forward solve runs without grad and its backward solve with grad: follow grad mode
        return torch.is_grad_enabled() if use_adjoint else graph

    def jacobian_trace(fn: Callable[[torch.Tensor, Any], torch.Tensor], xin: torch.Tensor, t: torch.Tensor, g: bool):
        if exact is not None:
            return exact(fn, xin, t, g)
        out = fn(xin, t)
        return out, _hutchinson_trace(out, xin, probes, g)

    def leaf(v: torch.Tensor, g: bool) -> torch.Tensor:
        return v if (g and v.requires_grad) else v.detach().requires_grad_(True)

    flow = _NormalizedFlow(sde, x) if normalized else None
    if flow is None:
        drift = sde.probability_flow(score).drift

        def func(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            where[0] = t
            where[1] += 1
            g = graph_now()
            with torch.enable_grad():
                out, div = jacobian_trace(drift, leaf(state[0], g), t, g)
            return (out, div) if g else (out.detach(), div.detach())

        start = x if graph else x.detach()
    else:

        def score_rows(xr: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return score(xr, t.expand(xr.shape[0]))

        def func(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            where[0] = t
            where[1] += 1
            w = state[0]
            # On the CPU the coefficients are Python floats (no tensor dispatch, no sync to avoid);
            # elsewhere 0-d tensors on the state's device (no host synchronisation per evaluation),
            # and tensors too when t carries a graph (adaptive steps depend on the parameters).
            plain = t.device.type == "cpu" and not t.requires_grad
            m, c, k, k_c2 = flow.coefficients(float(t) if plain else t)
            g = graph_now()
            no_offset = isinstance(m, float) and m == 0.0  # (a tensor m is never compared: no host sync)
            with torch.enable_grad():
                s, div = jacobian_trace(score_rows, leaf(w * c if no_offset else w * c + m, g), t, g)
            if not g:
                s, div = s.detach(), div.detach()
            if isinstance(k, float):
                return torch.add(w * k_c2, s, alpha=k / c), div * k + dim * k_c2
            return torch.addcmul(k_c2 * w, s, k / c), div * k + dim * k_c2

        m0, c0, _, _ = flow.coefficients(eps)
        start = ((x if graph else x.detach()) - m0) / c0
        log_c0 = math.log(c0)

    times = torch.tensor([eps, T], dtype=x.dtype, device=x.device)
    batch = x.shape[0]
    state0 = (start, x.new_zeros(batch))
    if method not in _FIXED_GRID:
        # torchdiffeq's adaptive solvers otherwise step past T and interpolate back (evaluating the model at
        # t > T and adding the dense-output error): step_t makes the last step end on T, given in the solve's
        # dtype (torchdiffeq compares in float64: float64(T) != float32(T) for T = 0.995). Their first-step
        # probe is unbounded (it reached t = 2437 on sub-VP): bounded_start keeps it inside [eps, T].
        with torch.set_grad_enabled(graph and not use_adjoint):  # the adjoint's forward solve runs without grad
            func = keep_inside(func, state0, times, opts, method=method, rtol=rtol, atol=atol, norm=opts["norm"])
    with torch.set_grad_enabled(graph):
        try:
            integrate, extra = odeint, {}
            if use_adjoint:
                from torchdiffeq import odeint_adjoint as integrate

                # the backward solve (T down to eps) ends on eps and starts with the forward's bounded first step
                adjoint_options = {k: v for k, v in opts.items() if k not in ("norm", "step_t")}
                if method not in _FIXED_GRID:
                    adjoint_options["step_t"] = end_time(times[:1])
                extra = {"adjoint_options": adjoint_options, "adjoint_params": adjoint_params}
            xs, deltas = integrate(
                func,
                state0,
                times,
                rtol=rtol,
                atol=atol,
                method=method,
                options=opts or None,
                **extra,
            )
        except AssertionError as err:  # torchdiffeq signals step-size underflow and non-finite states with assert
            if "non-finite" in str(err):
                raise SolverDivergedError(
                    f"the probability-flow state became non-finite near t = {float(where[0]):.6g} (evaluation "
                    f"{where[1]}); check the model, or lower eps/rtol/atol",
                    t=float(where[0]),
                    step=int(where[1]),
                ) from err
            raise SolverError(
                f"torchdiffeq {method} failed while integrating the probability-flow ODE from eps = {eps:g} to "
                f"T = {T:g}: {err}. Try looser rtol/atol, a larger eps or another solver"
            ) from err
        z, delta = xs[-1], deltas[-1]
        if flow is not None:  # back to x, with the log-determinant d log(c(T) / c(eps)) of the change of variables
            mT, cT, _, _ = flow.coefficients(T)
            z = cT * z + mT
            delta = delta + dim * (math.log(cT) - log_c0)
    prior_lp = prior.log_prob(z)
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
            t=T,
            step=int(where[1]),
        )
    if not return_info:
        return result
    info = LikelihoodInfo(
        nfe=int(where[1]),
        prior_logp=prior_lp,
        delta_logp=delta,
        z=z,
        solver=method,
        trace=trace_kind,
        n_probes=n_probes if trace_kind == "hutchinson" else 0,
        eps=eps,
        T=T,
        seconds=time.perf_counter() - started,
        normalized=flow is not None,
    )
    return result, info


# --------------------------------------------------------------------------- bits per dim
def _data_range(data_range: str | tuple[float, float]) -> tuple[float, float]:
    named = {"[0,1]": (0.0, 1.0), "[-1,1]": (-1.0, 1.0)}
    if isinstance(data_range, str):
        key = data_range.replace(" ", "")
        if key not in named:
            raise ValueError(f"data_range must be '[0,1]', '[-1,1]' or a (low, high) pair, got {data_range!r}")
        return named[key]
    try:
        low, high = (float(v) for v in data_range)
    except (TypeError, ValueError) as err:
        raise ValueError(f"data_range must be '[0,1]', '[-1,1]' or a (low, high) pair, got {data_range!r}") from err
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"data_range (low, high) needs finite low < high, got {data_range!r}")
    return low, high


def _check_bits(n_bits: int) -> int:
    if isinstance(n_bits, bool) or not isinstance(n_bits, int) or n_bits < 1:
        raise ValueError(f"n_bits must be a positive integer, got {n_bits!r}")
    return n_bits


def bits_per_dim(
    logp: torch.Tensor,
    x: torch.Tensor | int,
    *,
    data_range: str | tuple[float, float] = "[-1,1]",
    n_bits: int = 8,
) -> torch.Tensor:
    r"""Bits per dimension of discrete :math:`n`-bit data from the log-density of its dequantized, scaled version.

    The data are integers :math:`k \in \{0, \dots, K-1\}^D`, :math:`K = 2^{n}`, dequantized and
    scaled as :math:`x = a\,(k + u)/K + b` with :math:`u \sim U[0, 1)^D` and ``data_range`` =
    :math:`[b, a + b]` (``"[0,1]"``: a = 1; ``"[-1,1]"``: a = 2; see :func:`dequantize`). A density
    :math:`p` on x induces the discrete model :math:`P(k) = \int_{[0,1)^D} p(x(u))\,(a/K)^D\,du`, and
    by Jensen :math:`-\log_2 P(k) \le -\log_2 p(x) + D \log_2(K/a)`. Per dimension:

    .. math::
        \mathrm{bpd} = -\frac{\log p(x)}{D \ln 2} + n - \log_2 a,

    i.e. :math:`+8` bits for 8-bit data in [0, 1] and :math:`+7` in [-1, 1]. Averaged over x this
    upper-bounds the model's discrete code length; a density that is uniform inside every
    cell attains it (``docs/likelihood.md`` derives it in full).

    Args:
        logp: log-density in nats of the dequantized scaled data, shape (batch,) (e.g. from :func:`logp`).
        x: the data (its event size D = ``x[0].numel()``) or D itself.
        data_range: ``"[-1,1]"`` (default), ``"[0,1]"`` or a ``(low, high)`` pair.
        n_bits: bits per value of the original data (8 for images).

    Returns:
        Bits per dimension, shaped like ``logp``.
    """
    if not isinstance(logp, torch.Tensor):
        raise TypeError(f"logp must be a tensor of log-densities in nats, got {type(logp).__name__}")
    if isinstance(x, torch.Tensor):
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"x must have shape (batch, *event_shape), got {tuple(x.shape)}")
        if logp.shape != (x.shape[0],):
            raise ValueError(
                f"logp must hold one log-density per sample of x: shape ({x.shape[0]},), got {tuple(logp.shape)}"
            )
        dim = x[0].numel()
    elif isinstance(x, int) and not isinstance(x, bool) and x >= 1:
        dim = x
    else:
        raise TypeError(f"x must be the data tensor or its number of dimensions (a positive int), got {x!r}")
    low, high = _data_range(data_range)
    n_bits = _check_bits(n_bits)
    offset = n_bits - math.log2(high - low)
    return -logp / (dim * _LOG2) + offset


def dequantize(
    k: torch.Tensor,
    *,
    data_range: str | tuple[float, float] = "[-1,1]",
    n_bits: int = 8,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""Uniform dequantization :math:`x = a\,(k + u)/2^{n} + b`, :math:`u \sim U[0,1)`, of integer data ``k``.

    ``data_range`` = :math:`[b, a + b]`; the convention matches :func:`bits_per_dim`.

    Args:
        k: integer levels in :math:`\{0, \dots, 2^{n} - 1\}` (an integer tensor, e.g. uint8 images, or a
            floating tensor holding whole numbers).
        data_range: ``"[-1,1]"`` (default), ``"[0,1]"`` or a ``(low, high)`` pair.
        n_bits: bits per value (8 for images).
        generator: random generator for u.
        dtype: floating dtype of the result (default: torch's default dtype).

    Raises:
        TypeError: ``k`` is not a tensor, ``dtype`` is not floating, ``generator`` is not a ``torch.Generator``.
        ValueError: ``k`` holds fractional values or levels outside :math:`[0, 2^{n})`.
    """
    if not isinstance(k, torch.Tensor):
        raise TypeError(f"k must be a tensor of integer levels (e.g. torch.as_tensor(images)), got {type(k).__name__}")
    low, high = _data_range(data_range)
    n_bits = _check_bits(n_bits)
    check_float_dtype(dtype)
    check_generator(generator)
    if k.numel():
        if k.is_floating_point() and not bool((k == k.round()).all()):
            raise ValueError("k must hold whole-number levels; it has fractional values (already dequantized?)")
        lo, hi = (float(v) for v in torch.aminmax(k))  # one pass
        if lo < 0 or hi > 2**n_bits - 1:
            raise ValueError(
                f"k must hold levels in [0, {2**n_bits - 1}] for n_bits={n_bits}; got values in [{lo:g}, {hi:g}] "
                f"(pass the matching n_bits, or integer data rather than scaled data)"
            )
    dtype = dtype or torch.get_default_dtype()
    u = _random.rand(k.shape, generator=generator, dtype=dtype, device=k.device)
    return (high - low) * (k.to(dtype) + u) / 2**n_bits + low
