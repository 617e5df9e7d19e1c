r"""Symbolic derivations for k-component SDEs (sympy only).

A k-component SDE couples k scalar components :math:`X = (x_1, \dots, x_k)` at every event position,

.. math:: dX = f(X, t)\,dt + G(X, t)\,dW_t,\qquad f \in \mathbb R^k,\ G \in \mathbb R^{k\times m},

declared by a class attribute ``components = ("x", "v")``, a ``drift(self, x, v, t)`` returning k expressions and a
``diffusion(self, x, v, t)`` returning a k x m :class:`sympy.Matrix` (a k-tuple means the diagonal matrix). With
:math:`D = G G^\top`:

* noise type: ``"additive"`` (G free of X), ``"diagonal"`` (G square and diagonal, :math:`G_{ii}` depending on
  :math:`x_i` and t only) or ``"general"``;
* Fokker–Planck: :math:`\partial_t p + \sum_i \partial_i(f_i p) - \tfrac12\sum_{ij}\partial_i\partial_j(D_{ij} p)`;
* reverse drift (Anderson) :math:`f - \nabla\!\cdot D - D s` and probability flow
  :math:`f - \tfrac12\nabla\!\cdot D - \tfrac12 D s`, with :math:`(\nabla\!\cdot D)_i = \sum_j \partial_j D_{ij}`;
* affine SDEs (:math:`f = A(t) X + b(t)`, :math:`G = G(t)`): the moment ODEs

  .. math:: \Phi' = A\Phi,\quad m' = A m + b,\quad \Sigma' = A\Sigma + \Sigma A^\top + D,

  with :math:`\Phi(0) = I`, :math:`m(0) = 0`, :math:`\Sigma(0) = 0`, solved in closed form when
  :math:`A(t) = c(t) A_0` (constant :math:`A_0`; :math:`\Phi = \exp(A_0\int_0^t c)` commutes with its
  derivative) and every entry of :math:`m = \Phi\int\Phi^{-1}b` and
  :math:`\Sigma = \Phi\left(\int\Phi^{-1}D\Phi^{-\top}\right)\Phi^\top` integrates; otherwise the runtime solves
  them numerically (:mod:`sdekit._vector_marginal`).

Unlike the scalar derivations, the marginal is derived with the parameter values inserted (as exact rationals): the
eigenstructure of :math:`A` depends on them (CLD's critical damping :math:`\Gamma^2 = 4M` is a repeated eigenvalue,
which a derivation with symbolic parameters divides by :math:`\sqrt{\Gamma^2 - 4M} = 0`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sympy as sp

from ..errors import SDEDeclarationError
from ._integrate import _Timeout, definite_integral
from ._symbols import t

__all__ = [
    "VectorAffine",
    "VectorMarginalExprs",
    "affine_parts",
    "check_components",
    "derive_marginal",
    "divergence",
    "evaluate",
    "fokker_planck",
    "noise_type",
    "probability_flow_drift",
    "reverse_drift",
    "state_symbols",
    "stratonovich_correction",
]


def state_symbols(names: Sequence[str]) -> tuple[sp.Symbol, ...]:
    """The real symbols of the components (the component named ``x`` is :data:`sdekit.x` itself)."""
    return tuple(sp.Symbol(n, real=True) for n in names)


def check_components(cls: str, components: Any, params: Sequence[str]) -> tuple[str, ...]:
    """``components`` as a tuple of distinct identifiers other than ``t`` and the parameters, or a declaration error."""
    if isinstance(components, str) or not isinstance(components, (tuple, list)) or not components:
        raise SDEDeclarationError(
            f"{cls}.components = {components!r} must be a non-empty tuple of names, e.g. components = ('x', 'v')"
        )
    names = tuple(components)
    for name in names:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise SDEDeclarationError(
                f"{cls}.components contains {name!r}; component names are identifiers such as 'x' or 'v'"
            )
    if len(set(names)) != len(names):
        raise SDEDeclarationError(f"{cls}.components = {names!r} repeats a name; each component needs its own name")
    if "t" in names:
        raise SDEDeclarationError(f"{cls}.components = {names!r} uses 't', the time symbol; rename that component")
    clash = sorted(set(names) & set(params))
    if clash:
        raise SDEDeclarationError(
            f"{cls} declares a parameter named {clash[0]!r} like one of its components {names!r}; rename the "
            f"parameter (e.g. {clash[0]}_) or the component"
        )
    return names


def declared_expression(value: Any, known: dict[str, sp.Symbol], *, returned: str, named: str, allowed: str) -> sp.Expr:
    """``value`` (what a declared ``drift``/``diffusion`` returned) as a finite scalar sympy expression in the
    ``known`` symbols (user symbols with a known name but other assumptions are renamed to them), else
    :class:`~sdekit.errors.SDEDeclarationError`. ``returned``/``named`` start the messages (``"VP.drift returned"``,
    ``"VP.drift ="``), ``allowed`` says which names may appear (``"x, t and the declared parameters (beta)"``)."""
    try:
        expr = sp.sympify(value, strict=True)
    except (sp.SympifyError, TypeError) as err:
        raise SDEDeclarationError(
            f"{returned} {value!r} of type {type(value).__name__}, which is not a sympy expression; build it from "
            f"{allowed.split(' and ')[0]}, self.<parameters> and sympy functions"
        ) from err
    if not isinstance(expr, sp.Expr):
        raise SDEDeclarationError(f"{returned} {value!r}, not a scalar sympy expression")
    rename = {s: known[s.name] for s in expr.free_symbols if s.name in known and s != known[s.name]}
    expr = expr.xreplace(rename)
    unknown = expr.free_symbols - set(known.values())
    if unknown:
        names = ", ".join(sorted(str(u) for u in unknown))
        raise SDEDeclarationError(
            f"{named} {expr} uses unknown symbol(s) {names}; only {allowed} may appear: declare {names} as a class "
            f"attribute with a numeric default"
        )
    if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise SDEDeclarationError(f"{named} {expr} is not finite")
    return expr


def _entry(cls: str, method: str, value: Any, known: dict[str, sp.Symbol]) -> sp.Expr:
    """One entry of a declared drift or diffusion as a finite sympy expression in the known symbols."""
    return declared_expression(
        value, known, returned=f"{cls}.{method} has an entry", named=f"{cls}.{method} entry",
        allowed="the components, t and the declared parameters",
    )  # fmt: skip


def evaluate(
    cls: str, call: Callable[..., Any], state: Sequence[sp.Symbol], params: dict[str, sp.Symbol]
) -> tuple[sp.Matrix, sp.Matrix]:
    """Call the declared ``drift`` and ``diffusion`` (``call(method, *symbols)``) and check their shapes and entries.

    Returns f as a k x 1 Matrix and G as a k x m Matrix (a k-tuple or list becomes ``diag``)."""
    k = len(state)
    names = ", ".join(s.name for s in state)
    known = {s.name: s for s in state} | {"t": t} | dict(params)
    results = {}
    for method in ("drift", "diffusion"):
        try:
            results[method] = call(method, *state, t)
        except AttributeError as err:
            raise SDEDeclarationError(
                f"{cls}.{method} failed with {err}; declare every parameter it uses as a class attribute with a "
                f"numeric default"
            ) from err
        except Exception as err:
            raise SDEDeclarationError(
                f"{cls}.{method}({names}, t) raised {type(err).__name__}: {err}. It receives sympy symbols and must "
                f"return sympy expressions (use sympy functions such as sympy.exp, not math or torch)"
            ) from err
    drift, diffusion = results["drift"], results["diffusion"]
    entries = list(drift) if isinstance(drift, (tuple, list, sp.MatrixBase)) else [drift]
    if (isinstance(drift, sp.MatrixBase) and 1 not in drift.shape) or len(entries) != k:
        raise SDEDeclarationError(
            f"{cls}.drift returned {drift!r}; a {k}-component SDE's drift({names}, t) returns {k} expressions, one "
            f"per component {tuple(s.name for s in state)}"
        )
    f = sp.Matrix([_entry(cls, "drift", e, known) for e in entries])
    if isinstance(diffusion, (tuple, list)):
        if len(diffusion) != k:
            raise SDEDeclarationError(
                f"{cls}.diffusion returned {len(diffusion)} entries; a tuple means the diagonal of G and needs k = {k} "
                f"(or return a {k} x m sympy.Matrix)"
            )
        G = sp.diag(*[_entry(cls, "diffusion", e, known) for e in diffusion])
    elif isinstance(diffusion, sp.MatrixBase):
        if diffusion.rows != k or diffusion.cols < 1:
            raise SDEDeclarationError(
                f"{cls}.diffusion returned a {diffusion.rows} x {diffusion.cols} matrix; it must have k = {k} rows "
                f"(one per component) and m >= 1 columns (one per Brownian motion)"
            )
        G = sp.Matrix(diffusion.rows, diffusion.cols, [_entry(cls, "diffusion", e, known) for e in diffusion])
    else:
        raise SDEDeclarationError(
            f"{cls}.diffusion returned {diffusion!r} of type {type(diffusion).__name__}; a {k}-component SDE returns "
            f"a {k} x m sympy.Matrix, or a {k}-tuple meaning the diagonal"
        )
    return f, G


def _depends(expr: sp.Expr, state: Sequence[sp.Symbol]) -> set[sp.Symbol]:
    return set(state) & sp.simplify(expr).free_symbols if set(state) & expr.free_symbols else set()


def noise_type(G: sp.Matrix, state: Sequence[sp.Symbol]) -> str:
    """``"additive"`` (G free of the state), ``"diagonal"`` (square, diagonal, :math:`G_{ii}(x_i, t)`), else
    ``"general"``."""
    deps = [[_depends(G[i, j], state) for j in range(G.cols)] for i in range(G.rows)]
    if not any(d for row in deps for d in row):
        return "additive"
    square = G.rows == G.cols
    if square and all(G[i, j] == 0 for i in range(G.rows) for j in range(G.cols) if i != j):
        if all(deps[i][i] <= {state[i]} for i in range(G.rows)):
            return "diagonal"
    return "general"


@dataclass(frozen=True)
class VectorAffine:
    """``f = A(t) X + b(t)``, ``G = G(t)``; ``reason`` is ``None`` iff the SDE is affine."""

    A: sp.Matrix | None
    b: sp.Matrix | None
    reason: str | None


def affine_parts(f: sp.Matrix, G: sp.Matrix, state: Sequence[sp.Symbol]) -> VectorAffine:
    """Split ``f`` into ``A(t) X + b(t)`` (A the Jacobian) and check ``G`` is free of the state."""
    X = sp.Matrix(state)
    A = f.jacobian(X).applyfunc(sp.simplify)
    if any(_depends(e, state) for e in A):
        return VectorAffine(None, None, f"the drift f = {list(f)} is not affine in {tuple(X)} (its Jacobian {A} "
                            f"depends on the state)")  # fmt: skip
    b = (f - A * X).applyfunc(sp.simplify)
    if any(_depends(e, state) for e in b):
        return VectorAffine(None, None, f"the drift f = {list(f)} is not affine in the state")
    if any(_depends(e, state) for e in G):
        return VectorAffine(A, b, f"the diffusion G = {G.tolist()} depends on the state (no Gaussian kernel)")
    return VectorAffine(A, b, None)


@dataclass(frozen=True)
class VectorMarginalExprs:
    r"""Marginal :math:`N(\Phi(t) X_0 + m(t), \Sigma(t))` of an affine k-component SDE, parameter values inserted.

    ``alpha`` (:math:`\Phi`, k x k), ``offset`` (k x 1), ``cov`` (k x k) are closed forms in t when ``closed``,
    else None (the runtime integrates the moment ODEs of ``A``, ``b``, ``D``)."""

    A: sp.Matrix
    b: sp.Matrix
    D: sp.Matrix
    alpha: sp.Matrix | None
    offset: sp.Matrix | None
    cov: sp.Matrix | None
    closed: bool


def _scalar_factor(A: sp.Matrix) -> tuple[sp.Expr, sp.Matrix] | None:
    """``(c(t), A0)`` with ``A = c(t) A0`` and A0 constant, or None."""
    nonzero = [e for e in A if e != 0]
    if not nonzero:
        return sp.S.One, A
    c = nonzero[0]
    A0 = (A / c).applyfunc(sp.simplify)
    return (c, A0) if not any(e.has(t) for e in A0) else None


def _tidy(e: sp.Expr) -> sp.Expr:
    return sp.factor_terms(sp.powsimp(sp.expand(e), combine="exp"))


def _real(e: sp.Expr) -> sp.Expr:
    """A real entry of a matrix exponential written without ``I``, ``re``, ``im`` (complex eigenvalues give them;
    torch compiles only the real form)."""
    if not e.has(sp.I, sp.re, sp.im):
        return e
    return sp.trigsimp(sp.powsimp(sp.expand(sp.expand_complex(e)), combine="exp"))


def _closed_form(A: sp.Matrix, b: sp.Matrix, D: sp.Matrix) -> tuple[sp.Matrix, sp.Matrix, sp.Matrix] | None:
    factor = _scalar_factor(A)
    if factor is None:
        return None
    c, A0 = factor
    C = definite_integral(c) if c.has(t) else c * t
    if C is None:
        return None
    u = sp.Dummy("u", real=True)
    E = (A0 * u).exp().applyfunc(_real)  # exp(A0 u) with u = C(t); the inverse is exp(-A0 u)
    Phi = E.subs(u, C).applyfunc(_tidy)
    Phi_inv = E.subs(u, -C).applyfunc(_tidy)

    def integrate(M: sp.Matrix) -> sp.Matrix | None:
        out = []
        for e in M:
            e = _tidy(e)
            value = sp.S.Zero if e == 0 else definite_integral(e)
            if value is None:
                return None
            out.append(value)
        return sp.Matrix(M.rows, M.cols, out)

    algebraic = _algebraic_moments(A0, (b / c).applyfunc(sp.simplify), (D / c).applyfunc(sp.simplify), Phi)
    if algebraic is not None:
        offset, cov = algebraic
    else:
        mbar = integrate(Phi_inv * b)
        Sbar = integrate(Phi_inv * D * Phi_inv.T)
        if mbar is None or Sbar is None:
            return None
        offset, cov = Phi * mbar, Phi * Sbar * Phi.T
    offset = offset.applyfunc(_tidy)
    cov = cov.applyfunc(_tidy)
    return Phi, offset, (cov + cov.T).applyfunc(lambda e: _tidy(e / 2))


def _algebraic_moments(
    A0: sp.Matrix, b0: sp.Matrix, D0: sp.Matrix, Phi: sp.Matrix
) -> tuple[sp.Matrix, sp.Matrix] | None:
    r"""Offset and covariance without quadrature when :math:`b = c(t) b_0`, :math:`D = c(t) D_0` with constant
    :math:`A_0, b_0, D_0` (in the time :math:`u = \int c`, the moment ODEs have constant coefficients):

    .. math:: m = (\Phi - I)A_0^{-1} b_0,\qquad \Sigma = X - \Phi X \Phi^\top,\quad A_0 X + X A_0^\top + D_0 = 0,

    which solve :math:`m' = A_0 m + b_0`, :math:`\Sigma' = A_0\Sigma + \Sigma A_0^\top + D_0` with zero initial
    values (differentiate). Needs :math:`A_0` invertible when :math:`b_0 \ne 0` and the Lyapunov equation uniquely
    solvable (no two eigenvalues of :math:`A_0` summing to 0); else None (the caller integrates). Fast where the
    integrals are slow: complex eigenvalues (oscillating exponentials)."""
    if any(e.has(t) for e in (*b0, *D0)):
        return None
    k = A0.rows
    if b0.is_zero_matrix:
        offset = sp.zeros(k, 1)
    elif A0.det() == 0:
        return None
    else:
        offset = (Phi - sp.eye(k)) * A0.solve(b0)
    X = sp.Matrix(k, k, lambda i, j: sp.Symbol(f"_lyap_{min(i, j)}_{max(i, j)}"))  # symmetric unknowns
    unknowns = sorted(X.free_symbols, key=str)
    solution = sp.solve(list(A0 * X + X * A0.T + D0), unknowns, dict=True)
    if len(solution) != 1 or set(solution[0]) != set(unknowns):
        return None
    X = X.subs(solution[0])
    return offset, X - Phi * X * Phi.T


def derive_marginal(A: sp.Matrix, b: sp.Matrix, G: sp.Matrix) -> VectorMarginalExprs:
    """Solve the moment ODEs of ``f = A X + b``, ``G`` (numbers inserted): closed form where possible.

    With :math:`A = c(t)A_0`, :math:`b = c(t)b_0`, :math:`D = c(t)D_0` (CLD, damped oscillators, any constant
    coefficients) the moments are algebraic (:func:`_algebraic_moments`: a matrix exponential and a linear
    Lyapunov solve, ~1 s even with complex eigenvalues); otherwise each entry's integral is bounded in time by
    :func:`~sdekit.symbolic._integrate.definite_integral` (10 s per attempt) and the moment ODEs are integrated
    numerically when sympy gives up. Results are cached on disk."""
    D = (G * G.T).applyfunc(sp.expand)
    try:
        closed = _closed_form(A, b, D)
    except (_Timeout, NotImplementedError, ValueError, TypeError, ZeroDivisionError, sp.matrices.MatrixError):
        closed = None
    if closed is None:
        return VectorMarginalExprs(A, b, D, None, None, None, False)
    return VectorMarginalExprs(A, b, D, *closed, True)


def divergence(D: sp.Matrix, state: Sequence[sp.Symbol]) -> sp.Matrix:
    r""":math:`(\nabla\!\cdot D)_i = \sum_j \partial_{x_j} D_{ij}` (zero for state-free D)."""
    return sp.Matrix([sum(sp.diff(D[i, j], state[j]) for j in range(D.cols)) for i in range(D.rows)])


def reverse_drift(f: sp.Matrix, G: sp.Matrix, score: sp.Matrix, state: Sequence[sp.Symbol]) -> sp.Matrix:
    r"""Anderson's reverse drift :math:`f - \nabla\!\cdot(GG^\top) - GG^\top s` (forward time)."""
    D = G * G.T
    return f - divergence(D, state) - D * score


def probability_flow_drift(f: sp.Matrix, G: sp.Matrix, score: sp.Matrix, state: Sequence[sp.Symbol]) -> sp.Matrix:
    r"""Probability-flow drift :math:`f - \tfrac12\nabla\!\cdot(GG^\top) - \tfrac12 GG^\top s`."""
    D = G * G.T
    return f - divergence(D, state) / 2 - D * score / 2


def stratonovich_correction(G: sp.Matrix, state: Sequence[sp.Symbol]) -> sp.Matrix:
    r"""Itô-to-Stratonovich drift term :math:`c_i = \tfrac12\sum_{j,l} G_{lj}\,\partial_{x_l} G_{ij}` (the
    Stratonovich drift is :math:`f - c`)."""
    k, m = G.shape
    return sp.Matrix(
        [sum(G[l, j] * sp.diff(G[i, j], state[l]) for j in range(m) for l in range(k)) / 2 for i in range(k)]
    )


def fokker_planck(p: sp.Expr, f: sp.Matrix, G: sp.Matrix, state: Sequence[sp.Symbol]) -> sp.Expr:
    r"""Residual :math:`\partial_t p + \sum_i\partial_i(f_i p) - \tfrac12\sum_{ij}\partial_i\partial_j(D_{ij}p)`."""
    D = G * G.T
    k = len(state)
    out = sp.diff(p, t) + sum(sp.diff(f[i] * p, state[i]) for i in range(k))
    return out - sum(sp.diff(D[i, j] * p, state[i], state[j]) for i in range(k) for j in range(k) if D[i, j] != 0) / 2
