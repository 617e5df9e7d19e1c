r"""k-component SDEs: what :class:`sdekit.SDE` does when a class declares ``components``.

.. code-block:: python

    class CLD(sdekit.SDE):
        components = ("x", "v")          # a k-component state at every event position
        beta = 4.0; M = 0.25; Gamma = 1.0; T = 1.0
        def drift(self, x, v, t):        # sympy symbols; returns k expressions
            return (self.beta / self.M * v, -self.beta * x - self.Gamma * self.beta / self.M * v)
        def diffusion(self, x, v, t):    # a k x m sympy Matrix (a k-tuple means diagonal)
            return sp.Matrix([[0, 0], [0, sp.sqrt(2 * self.Gamma * self.beta)]])

Tensors have shape ``(batch, k, *event_shape)``. The symbolic work is in :mod:`sdekit.symbolic._components`; this
module checks the declaration, compiles it (:mod:`sdekit._compile_vector`) and builds the runtime objects: the
marginal (:mod:`sdekit._vector_marginal`), and the reverse SDE / probability-flow ODE with matrix diffusion

.. math:: f - \nabla\!\cdot D - D s, \qquad f - \tfrac12\nabla\!\cdot D - \tfrac12 D s, \qquad D = GG^\top .
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sympy as sp
import torch

from ._compile_vector import CompiledMatrix, CompiledVector
from ._vector_marginal import VectorGaussianMarginal
from .errors import SDEDeclarationError, SdekitError
from .symbolic import _components as C
from .symbolic._cache import cached_derivation
from .symbolic._symbols import t as T_SYM

if TYPE_CHECKING:  # pragma: no cover
    from .symbolic.sde import SDE

__all__ = ["VectorProbabilityFlowODE", "VectorReverseSDE", "declare"]

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def declare(sde: SDE, cache: dict[Any, dict[str, Any]]) -> None:
    """Evaluate, check and compile a k-component declaration (sets ``f``, ``g``, ``state_symbols``, the compiled
    ``drift_fn`` / ``diffusion_fn``, ``data_components`` and the initial covariance)."""
    cls = type(sde)
    name = cls.__name__
    names = C.check_components(name, cls.components, list(sde._values))
    state = C.state_symbols(names)
    sde.state_symbols = state
    shared = cache.get(sde._cache_key)
    if shared is None:
        view = copy.copy(sde)
        for p, symbol in sde._symbols.items():
            setattr(view, p, symbol)
        f, G = C.evaluate(name, lambda method, *args: getattr(cls, method)(view, *args), state, sde._symbols)
        shared = cache[sde._cache_key] = {"f": f, "g": G}
    sde.f, sde.g = shared["f"], shared["g"]
    if all(sp.simplify(exact(sde, e)) == 0 for e in sde.g):
        raise SDEDeclarationError(
            f"{sde!r}: the diffusion G = {sde.g.tolist()} is identically zero for these parameter values (that is an "
            f"ODE, not an SDE); choose parameters with non-zero noise"
        )
    data = cls.data_components if cls.data_components is not None else names
    if isinstance(data, str) or not data or not set(data) <= set(names):
        raise SDEDeclarationError(f"{name}.data_components = {data!r} must be a non-empty tuple of components {names}")
    sde._data_index = tuple(names.index(n) for n in data)
    sde._initial_cov = _initial_cov(sde, len(names))
    _compile_declaration(sde)


def exact(sde: SDE, expr: Any) -> Any:
    """``expr`` with the parameter values inserted as exact numbers (floats as the rationals they print as)."""
    values = {sde._symbols[n]: sp.nsimplify(v, rational=True) if isinstance(v, float) else sp.sympify(v)
              for n, v in sde._values.items()}  # fmt: skip
    return sp.sympify(expr).xreplace(values) if not isinstance(expr, sp.MatrixBase) else expr.xreplace(values)


def _initial_cov(sde: SDE, k: int) -> sp.Matrix:
    name = type(sde).__name__
    value = sde.initial_covariance()
    M = sp.zeros(k, k) if value is None else sp.Matrix(value)
    if M.shape != (k, k) or M.free_symbols:
        raise SDEDeclarationError(f"{name}.initial_covariance() must return None or a {k} x {k} matrix of numbers")
    M = M.applyfunc(lambda e: sp.nsimplify(e, rational=True) if isinstance(e, sp.Float) else e)
    if M != M.T or any(float(ev) < -1e-12 for ev in M.evalf().eigenvals()):
        raise SDEDeclarationError(f"{name}.initial_covariance() = {M.tolist()} is not symmetric positive semi-definite")
    return M


def _probe(sde: SDE, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    values = torch.tensor([0.5, -1.5, 0.0, 2.0], dtype=torch.float64)
    X = torch.stack([values.roll(i) for i in range(k)], dim=1).unsqueeze(-1)  # (4, k, 1)
    return X, torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64) * sde.T


def _compile_declaration(sde: SDE) -> None:
    """Compile f and G now and evaluate them at 4 probe points, so that an entry the compiler cannot translate, or
    an entry of t alone that is NaN/inf at every probe time, fails at declaration with the entry named."""
    cls = type(sde).__name__
    X, t = _probe(sde, len(sde.state_symbols))
    for method, exprs in (("drift", list(sde.f)), ("diffusion", list(sde.g))):
        for expr in exprs:
            try:
                fn = CompiledVector([sde.subs(expr)], (*sde.state_symbols,), T_SYM)
                values = fn(X, t) if fn.k else None
            except SdekitError as err:
                raise SDEDeclarationError(
                    f"{cls}.{method} entry {expr} cannot be compiled to torch code: {err}; rewrite it with those "
                    f"functions"
                ) from err
            if values is not None and not fn.depends_on_state and not bool(values.isfinite().any()):
                raise SDEDeclarationError(
                    f"{cls}.{method} entry {expr} is not finite (NaN or inf) at any of the times t = T/4, T/2, 3T/4, T "
                    f"with T = {sde.T:g}; check its domain (sqrt and log of negative numbers, division by zero)"
                )
    sde.__dict__["drift_fn"] = drift_fn(sde)
    sde.__dict__["diffusion_fn"] = diffusion_fn(sde)


def drift_fn(sde: SDE) -> CompiledVector:
    """Compiled f: ``drift_fn(X, t)`` -> ``(batch, k, *event_shape)``."""
    return CompiledVector([sde.subs(e) for e in sde.f], sde.state_symbols, T_SYM)


def diffusion_fn(sde: SDE) -> CompiledMatrix:
    """Compiled G: ``diffusion_fn(X, t)`` -> ``(batch, k, m, *event_shape)``; ``.matvec(X, t, v)`` = G v."""
    G = CompiledMatrix(sde.g.applyfunc(sde.subs), sde.state_symbols, T_SYM)
    correction = C.stratonovich_correction(sde.g, sde.state_symbols).applyfunc(sde.subs)
    G.correction = CompiledVector(list(correction), sde.state_symbols, T_SYM)  # Itô -> Stratonovich drift term
    return G


def marginal(sde: SDE) -> VectorGaussianMarginal:
    """The Gaussian kernel of an affine k-component SDE (closed form where sympy finds one, cached on disk)."""
    parts = sde._affine
    A, b, G = (sp.ImmutableMatrix(exact(sde, M)) for M in (parts.A, parts.b, sde.g))
    shared = sde._shared()
    key = ("vector-marginal", A, b, G)
    if key not in shared:
        shared[key] = cached_derivation("vector-marginal", (A, b, G), lambda: C.derive_marginal(A, b, G),
                                        C.VectorMarginalExprs)  # fmt: skip
    return VectorGaussianMarginal(sde, shared[key], sde._initial_cov, sde._data_index)


class _VectorDynamics:
    """drift = f - k div(D) - k D score, k = 1 (reverse) or 1/2 (probability flow); D = G G^T."""

    _k: Any = sp.S.One

    def __init__(self, sde: SDE, score: Score | sp.Matrix | Any):
        self.sde = sde
        state = sde.state_symbols
        self.symbolic = isinstance(score, (sp.MatrixBase, tuple, list))
        D = sde.g * sde.g.T
        if self.symbolic:
            self.score_expr = sp.Matrix([sde.sympify(e) for e in score])
            self.f = sde.f - self._k * C.divergence(D, state) - self._k * D * self.score_expr
            self.score = None
        else:
            if not callable(score):
                raise TypeError(f"score must be a callable score(X, t) or k sympy expressions, got {type(score)}")
            self.score = score
        self._D = CompiledMatrix(D.applyfunc(sde.subs), state, T_SYM)
        div = C.divergence(D, state).applyfunc(sde.subs)
        self._div = CompiledVector(list(div), state, T_SYM) if any(e != 0 for e in div) else None

    def drift(self, X: torch.Tensor, t: Any) -> torch.Tensor:
        """Drift at forward time t (number, 0-d or (batch,) tensor); X of shape (batch, k, *event_shape)."""
        if self.symbolic:  # compiled on first use: a score with free symbols is still displayable
            return self._compiled(X, t)
        tb = torch.as_tensor(t, dtype=X.dtype, device=X.device)
        tb = tb.expand(X.shape[0]) if tb.ndim == 0 else tb
        k = float(self._k)
        out = self.sde.drift_fn(X, t) - k * self._D.matvec(X, t, self.score(X, tb))
        return out - k * self._div(X, t) if self._div is not None else out

    @functools.cached_property
    def _compiled(self) -> CompiledVector:
        return CompiledVector([self.sde.subs(e) for e in self.f], self.sde.state_symbols, T_SYM)

    @functools.cached_property
    def displayed_drift(self) -> sp.Matrix:
        """The drift as a sympy matrix; a callable score shows as the symbols ``s_<component>``."""
        score = getattr(self, "score_expr", None)
        if score is None:
            score = sp.Matrix([sp.Symbol(f"s_{s.name}") for s in self.sde.state_symbols])
        D = self.sde.g * self.sde.g.T
        return (self.sde.f - self._k * C.divergence(D, self.sde.state_symbols) - self._k * D * score).applyfunc(
            sp.simplify
        )


class VectorReverseSDE(_VectorDynamics):
    r"""Reverse-time SDE :math:`dX = [f - \nabla\!\cdot(GG^\top) - GG^\top s]\,dt + G\,d\bar W` (dt < 0), forward
    time t. ``diffusion(X, t)`` is G, ``(batch, k, m, *event_shape)``."""

    def diffusion(self, X: torch.Tensor, t: Any) -> torch.Tensor:
        """:math:`G(X, t)` (the forward SDE's)."""
        return self.sde.diffusion_fn(X, t)


class VectorProbabilityFlowODE(_VectorDynamics):
    r"""Probability-flow ODE :math:`dX/dt = f - \tfrac12\nabla\!\cdot(GG^\top) - \tfrac12 GG^\top s`."""

    _k = sp.Rational(1, 2)


def latex(sde: SDE) -> str:
    """LaTeX of a k-component declaration and its derived marginal, reverse SDE and PF-ODE."""
    L = sp.latex
    X = sp.Matrix(sde.state_symbols)
    lines = [rf"d{L(X)} = {L(sde.f)}\,dt + {L(sde.g)}\,dW_t,\quad t\in[0, {L(sde.T)}]"]
    if sde.is_affine:
        m = sde.marginal
        if m.closed:
            lines.append(rf"\Phi(t) = {L(m.alpha_expr)}")
            if any(e != 0 for e in m.offset_expr):
                lines.append(rf"m(t) = {L(m.offset_expr)}")
            lines.append(rf"\Sigma(t) = {L(m.cov_expr)}")
    reverse = sde.reverse(_callable).displayed_drift
    lines.append(rf"\text{{reverse: }} d{L(X)} = {L(reverse)}\,dt + {L(sde.g)}\,d\bar W_t")
    lines.append(rf"\text{{PF-ODE: }} \frac{{d}}{{dt}}{L(X)} = {L(sde.probability_flow(_callable).displayed_drift)}")
    return "\\begin{aligned}" + r" \\ ".join(lines) + "\\end{aligned}"


def _callable(X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - display only
    return X
