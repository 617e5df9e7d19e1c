r"""Right-hand sides of :func:`sdekit.logp`: the probability-flow ODE augmented with its divergence.

The state is :math:`(x_t, \Delta_t)` with :math:`\dot x = \tilde f(x, t)` and
:math:`\dot\Delta = \nabla\!\cdot\tilde f`, integrated forward from :math:`\epsilon` to :math:`T`
(``docs/likelihood.md``). Two forms, both torchdiffeq's ``func(t, state)``:

* :class:`PlainFlow`: in x, the divergence of the full PF drift by autograd (any SDE);
* :class:`NormalizedFlow`: for affine SDEs, in :math:`w = (x - m(t))/c(t)`, where the linear part is
  known and autograd runs through the score model only.

Each maps the data to its start state (:meth:`~AugmentedFlow.start`) and the end state back to
:math:`(z, \Delta)` in x coordinates (:meth:`~AugmentedFlow.finish`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ._traces import ExactTrace, HutchinsonTrace

if TYPE_CHECKING:  # pragma: no cover
    from .symbolic.sde import SDE

__all__ = ["AugmentedFlow", "NormalizedFlow", "PlainFlow", "per_sample_norm"]

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
State = tuple[torch.Tensor, torch.Tensor]


def per_sample_norm(scaled_error: State) -> torch.Tensor:
    r"""Largest per-sample RMS of the scaled error over (x, log-density): tolerances hold for every sample.

    torchdiffeq's default RMS over the whole batch lets one sample's error be :math:`\sqrt{B}`
    times the tolerance; on a 2-D mixture at rtol = atol = 1e-5 that was 10x the worst-case
    log-density error of this norm, for about 25% fewer steps.
    """
    x_err, delta_err = scaled_error
    batch = delta_err.shape[0]
    mean_square = (x_err.reshape(batch, -1).pow(2).sum(1) + delta_err.pow(2)) / (x_err[0].numel() + 1)
    return mean_square.max().sqrt()


class AugmentedFlow:
    """Base of the augmented right-hand sides: a Jacobian trace and when to keep the autograd graph.

    ``graph``: differentiate through the solve. With ``adjoint`` the forward solve runs without grad and
    the adjoint's backward solve with grad, so the graph follows grad mode.
    """

    normalized: ClassVar[bool]
    """Whether the state is in the normalized coordinates (reported as ``LikelihoodInfo.normalized``)."""

    def __init__(self, trace: ExactTrace | HutchinsonTrace, *, graph: bool, adjoint: bool):
        self.trace, self.graph, self.adjoint = trace, graph, adjoint

    def __call__(self, t: torch.Tensor, state: State) -> State:
        raise NotImplementedError

    def start(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """The state's first part at time ``eps`` for data ``x``."""
        raise NotImplementedError

    def finish(self, end: torch.Tensor, delta: torch.Tensor, eps: float, T: float) -> State:
        """``(z, delta)``: the end point in x coordinates and the integrated divergence for it."""
        raise NotImplementedError

    def _with_trace(self, fn: Score, x: torch.Tensor, t: torch.Tensor) -> State:
        """``fn(x, t)`` and the trace of its Jacobian in x, detached unless a graph is kept."""
        g = torch.is_grad_enabled() if self.adjoint else self.graph
        leaf = x if (g and x.requires_grad) else x.detach().requires_grad_(True)
        with torch.enable_grad():
            out, div = self.trace(fn, leaf, t, g)
        return (out, div) if g else (out.detach(), div.detach())


class PlainFlow(AugmentedFlow):
    r""":math:`(\dot x, \dot\Delta) = (\tilde f, \nabla\!\cdot\tilde f)` with the SDE's derived PF drift."""

    normalized = False

    def __init__(self, sde: SDE, score: Score, trace: ExactTrace | HutchinsonTrace, *, graph: bool, adjoint: bool):
        super().__init__(trace, graph=graph, adjoint=adjoint)
        self.drift = sde.probability_flow(score).drift

    def __call__(self, t: torch.Tensor, state: State) -> State:
        return self._with_trace(self.drift, state[0], t)

    def start(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        return x

    def finish(self, end: torch.Tensor, delta: torch.Tensor, eps: float, T: float) -> State:
        return end, delta


class NormalizedFlow(AugmentedFlow):
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

    The coefficients come from ``sde.marginal`` and ``sde.affine_coefficients``; the divergence needs
    autograd through the score model only.
    """

    normalized = True

    def __init__(
        self,
        sde: SDE,
        score: Score,
        trace: ExactTrace | HutchinsonTrace,
        *,
        graph: bool,
        adjoint: bool,
        like: torch.Tensor,
    ):
        super().__init__(trace, graph=graph, adjoint=adjoint)
        self.score = score
        self.marginal = sde.marginal
        coefficients = sde.affine_coefficients
        self.k_fn = coefficients.flow_scale
        # plain-float closures (math module): ~1 us per call instead of ~10 us per torch op
        marginal_floats = self.marginal.floats
        self.floats = (
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
            if self.floats is not None:
                alpha, m, s2, k = (float(fn(t)) for fn in self.floats)
            else:
                t64 = torch.tensor(t, dtype=torch.float64)
                marginal = self.marginal
                values = (marginal.alpha(t64), marginal.offset(t64), marginal.sigma2(t64), self.k_fn(t64))
                alpha, m, s2, k = (float(v) for v in values)
            c2 = alpha * alpha + max(s2, 0.0)
            return m, math.sqrt(c2), k, k / c2
        t64 = t.to(torch.float64)
        alpha = self.marginal.alpha(t64)
        c2 = alpha * alpha + self.marginal.sigma2(t64)
        k = self.k_fn(t64)
        out = (self.marginal.offset(t64), c2.sqrt(), k, k / c2)
        return tuple(v.to(self.dtype) for v in out)

    def _score_rows(self, xr: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.score(xr, t.expand(xr.shape[0]))

    def __call__(self, t: torch.Tensor, state: State) -> State:
        w = state[0]
        # On the CPU the coefficients are Python floats (no tensor dispatch, no sync to avoid);
        # elsewhere 0-d tensors on the state's device (no host synchronisation per evaluation),
        # and tensors too when t carries a graph (adaptive steps depend on the parameters).
        plain = t.device.type == "cpu" and not t.requires_grad
        m, c, k, k_c2 = self.coefficients(float(t) if plain else t)
        no_offset = isinstance(m, float) and m == 0.0  # (a tensor m is never compared: no host sync)
        s, div = self._with_trace(self._score_rows, w * c if no_offset else w * c + m, t)
        if isinstance(k, float):
            return torch.add(w * k_c2, s, alpha=k / c), div * k + self.d * k_c2
        return torch.addcmul(k_c2 * w, s, k / c), div * k + self.d * k_c2

    def start(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        m0, c0, _, _ = self.coefficients(eps)
        return (x - m0) / c0

    def finish(self, end: torch.Tensor, delta: torch.Tensor, eps: float, T: float) -> State:
        # back to x, with the log-determinant d log(c(T) / c(eps)) of the change of variables
        mT, cT, _, _ = self.coefficients(T)
        _, c0, _, _ = self.coefficients(eps)
        return cT * end + mT, delta + self.d * (math.log(cT) - math.log(c0))
