r"""Jacobian traces (divergences) per sample, by autograd: exact and Hutchinson.

Used by :func:`sdekit.logp` (the divergence of the probability-flow drift) and by
:func:`sdekit.losses.ism` / :func:`sdekit.losses.ssm` (the trace of the score's Jacobian).

* exact: :math:`\operatorname{tr} J = \sum_i e_i^\top J e_i`, all d vector-Jacobian products from
  one forward and one backward pass over the batch replicated d times (chunked to bound memory);
* Hutchinson: :math:`\operatorname{tr} J \approx \frac1n\sum_k v_k^\top J v_k` with
  :math:`E[v v^\top] = I` (Rademacher or Gaussian probes), one batched backward pass.

Both need the samples not to interact through ``fn`` (no batch statistics): the trace is per sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import _random

__all__ = ["PROBES", "ExactTrace", "HutchinsonTrace", "draw_probes", "drift_and_exact_trace", "hutchinson_trace"]

PROBES: tuple[str, ...] = ("rademacher", "gaussian")
"""Probe distributions of :func:`draw_probes`: entries :math:`\\pm 1`, or standard normal."""

_MAX_BATCHED_ELEMENTS = 2**24  # cap on (coordinates per chunk) x batch x d for the exact trace

Fn = Callable[[torch.Tensor, Any], torch.Tensor]


class ExactTrace:
    r"""Exact :math:`\operatorname{tr}\,\partial\,\mathrm{fn}/\partial x` per sample (samples must not interact).

    The batch is replicated k times (k coordinates per chunk); copy j of every sample gets the
    one-hot cotangent :math:`e_{i_j}`, so one forward and one backward pass over k x batch rows
    give k diagonal Jacobian entries for every sample. This needs nothing from the model beyond
    per-sample independence (no vmap batching rules), and for small d it is a single pass of a
    slightly larger batch. Chunks keep k x batch x d below :data:`_MAX_BATCHED_ELEMENTS`; when a
    single chunk covers all coordinates (the usual low-dimensional case) its cotangent is built
    once per tracer (one :func:`~sdekit.logp` call) instead of once per evaluation.
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

    def __call__(self, fn: Fn, x: torch.Tensor, t: Any, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
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


def drift_and_exact_trace(fn: Fn, x: torch.Tensor, t: Any, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x, t)`` and its exact Jacobian trace per sample, with a one-off :class:`ExactTrace`."""
    return ExactTrace(x)(fn, x, t, create_graph)


def hutchinson_trace(out: torch.Tensor, x: torch.Tensor, probes: torch.Tensor, create_graph: bool) -> torch.Tensor:
    r""":math:`\frac1n\sum_k v_k^\top J v_k` per sample with fixed probes of shape (n, *x.shape).

    :math:`J = \partial\,\mathrm{out}/\partial x`; ``create_graph`` keeps the graph of the result (to differentiate it).
    """
    n = probes.shape[0]
    if n == 1:
        (vjp,) = torch.autograd.grad(out, x, probes[0], retain_graph=True, create_graph=create_graph)
        return (vjp * probes[0]).reshape(x.shape[0], -1).sum(1)
    (vjp,) = torch.autograd.grad(out, x, probes, retain_graph=True, create_graph=create_graph, is_grads_batched=True)
    return (vjp * probes).reshape(n, x.shape[0], -1).sum(2).mean(0)


class HutchinsonTrace:
    """Hutchinson's estimate with fixed probes, called like :class:`ExactTrace`: ``(fn(x, t), trace)``."""

    def __init__(self, probes: torch.Tensor):
        self.probes = probes

    def __call__(self, fn: Fn, x: torch.Tensor, t: Any, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        out = fn(x, t)
        return out, hutchinson_trace(out, x, self.probes, create_graph)


def draw_probes(kind: str, n: int, like: torch.Tensor, generator: _random.RandomSource) -> torch.Tensor:
    """``n`` probes shaped like ``like`` (shape (n, *like.shape)): ``"rademacher"`` (±1) or ``"gaussian"``.

    Dimension 1 is the batch: with per-block :class:`~sdekit._random.Streams` a sample's probes depend on its
    row, not on the chunk it is computed in."""
    shape = (n, *like.shape)
    if kind == "gaussian":
        return _random.randn(shape, generator=generator, dtype=like.dtype, device=like.device, batch_dim=1)
    bits = _random.randint(0, 2, shape, generator=generator, device=like.device, batch_dim=1)
    return (2 * bits - 1).to(like.dtype)
