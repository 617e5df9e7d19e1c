r"""Compiled vectors and matrices of expressions in the k components of a state (sympy -> torch).

A k-component state is a tensor ``X`` of shape ``(batch, k, *event_shape)``; component i is ``X[:, i]``. An entry
:math:`e(x_1, \dots, x_k, t)` is compiled once (:mod:`sdekit.compile`'s code generator) and evaluated on the
component views, so every event position gets its own k-vector or k x m matrix: a drift becomes a tensor
``(batch, k, *event_shape)``, a diffusion is applied to noise of shape ``(batch, m, *event_shape)`` position by
position (:meth:`CompiledMatrix.matvec`, zero entries skipped: CLD's diffusion costs one multiplication). Dtype and
device follow ``X``; t is a number, a 0-d tensor or a ``(batch,)`` tensor; there is no host synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sympy as sp
import torch

from .compile import _build, _time_tensor, _TorchNS, expr_to_source
from .errors import SdekitError

__all__ = ["CompiledMatrix", "CompiledVector"]


class _Entry:
    """One compiled entry :math:`e(x_1..x_k, t)`; ``None`` marks a zero entry."""

    def __init__(self, expr: sp.Expr, state: Sequence[sp.Symbol], t: sp.Symbol):
        self.expr = sp.sympify(expr)
        unexpected = self.expr.free_symbols - {*state, t}
        if unexpected:
            names = sorted(map(str, unexpected))
            raise SdekitError(f"cannot compile {self.expr}: free symbols {names} besides the components and t")
        self.constant: float | None = None
        self._fn: Callable[..., Any] | None = None
        if self.expr.free_symbols:
            self._fn = _build(self.expr, [*state, t], _TorchNS)
        else:
            self.constant = float(expr_to_source(self.expr, {}).strip("()"))
        self.depends_on_state = bool(self.expr.free_symbols & set(state))

    def __call__(self, comps: Sequence[torch.Tensor], t: Any) -> torch.Tensor:
        like = comps[0]
        if self._fn is None:
            return torch.full_like(like, self.constant)
        out = self._fn(*comps, _time_tensor(t, like))
        return out if out.shape == like.shape else out.expand(like.shape)


def _components(X: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    if X.ndim < 2 or X.shape[1] != k:
        raise ValueError(f"a {k}-component state has shape (batch, {k}, *event_shape), got {tuple(X.shape)}")
    return X.unbind(1)


class CompiledVector:
    r"""A compiled k-vector :math:`e(X, t)`: ``fn(X, t)`` returns ``(batch, k, *event_shape)`` like ``X``."""

    def __init__(self, exprs: Sequence[sp.Expr], state: Sequence[sp.Symbol], t: sp.Symbol):
        self.exprs = tuple(sp.sympify(e) for e in exprs)
        self.k = len(state)
        self._entries = [None if e == 0 else _Entry(e, state, t) for e in self.exprs]
        self.depends_on_state = any(e is not None and e.depends_on_state for e in self._entries)

    def __call__(self, X: torch.Tensor, t: Any) -> torch.Tensor:
        comps = _components(X, self.k)
        zero = torch.zeros_like(comps[0])
        return torch.stack([zero if e is None else e(comps, t) for e in self._entries], dim=1)

    def __repr__(self) -> str:
        return f"CompiledVector({list(self.exprs)})"


class CompiledMatrix:
    r"""A compiled k x m matrix :math:`G(X, t)` acting per event position.

    ``fn(X, t)`` returns ``(batch, k, m, *event_shape)``; ``fn.matvec(X, t, v)`` returns :math:`G v` of shape
    ``(batch, k, *event_shape)`` for ``v`` of shape ``(batch, m, *event_shape)``; ``fn.diagonal(X, t)`` the diagonal
    ``(batch, k, *event_shape)`` of a square matrix.
    """

    def __init__(self, matrix: sp.Matrix, state: Sequence[sp.Symbol], t: sp.Symbol):
        self.matrix = sp.Matrix(matrix)
        self.k = len(state)
        self.rows, self.cols = self.matrix.shape
        self._entries = [[None if e == 0 else _Entry(e, state, t) for e in row] for row in self.matrix.tolist()]
        self.depends_on_state = any(e is not None and e.depends_on_state for row in self._entries for e in row)
        self.correction: CompiledVector | None = None
        """The Itô-to-Stratonovich drift term of this diffusion (set by the SDE that compiled it)."""

    def __call__(self, X: torch.Tensor, t: Any) -> torch.Tensor:
        comps = _components(X, self.k)
        zero = torch.zeros_like(comps[0])
        rows = [torch.stack([zero if e is None else e(comps, t) for e in row], dim=1) for row in self._entries]
        return torch.stack(rows, dim=1)

    def matvec(self, X: torch.Tensor, t: Any, v: torch.Tensor) -> torch.Tensor:
        """:math:`G(X, t)\\,v` per event position."""
        comps = _components(X, self.k)
        if v.shape[1] != self.cols:
            raise ValueError(f"v must have shape (batch, {self.cols}, *event_shape), got {tuple(v.shape)}")
        out = []
        for row in self._entries:
            acc = None
            for j, e in enumerate(row):
                if e is not None:
                    term = e(comps, t) * v[:, j]
                    acc = term if acc is None else acc + term
            out.append(torch.zeros_like(comps[0]) if acc is None else acc)
        return torch.stack(out, dim=1)

    def diagonal(self, X: torch.Tensor, t: Any) -> torch.Tensor:
        """The diagonal entries, ``(batch, k, *event_shape)`` (square matrices)."""
        comps = _components(X, self.k)
        zero = torch.zeros_like(comps[0])
        return torch.stack([zero if self._entries[i][i] is None else self._entries[i][i](comps, t)
                            for i in range(min(self.rows, self.cols))], dim=1)  # fmt: skip

    def __repr__(self) -> str:
        return f"CompiledMatrix({self.matrix.tolist()})"
