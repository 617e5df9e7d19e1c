r"""Symbolic derivations from a declared SDE :math:`dx = f(x, t)\,dt + g(x, t)\,dW`.

Everything here works on sympy expressions in :data:`sdekit.x`, :data:`sdekit.t`
and the parameter symbols; nothing imports torch solvers.

Gaussian marginal of an affine SDE :math:`f = a(t) x + b(t)`, :math:`g = g(t)`:
the moments of :math:`x_t \mid x_0` solve

.. math::
    \alpha' = a\,\alpha,\quad m' = a\,m + b,\quad (\sigma^2)' = 2 a \sigma^2 + g^2,

with :math:`\alpha(0) = 1`, :math:`m(0) = \sigma^2(0) = 0`, so

.. math::
    \alpha(t) = e^{\int_0^t a},\quad m(t) = \alpha(t)\int_0^t \frac{b}{\alpha},\quad
    \sigma^2(t) = \alpha(t)^2 \int_0^t \frac{g^2}{\alpha^2}.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ._integrate import definite_integral
from ._symbols import t, x

_TAU = sp.Dummy("tau", nonnegative=True)

__all__ = [
    "AffineParts",
    "MarginalExprs",
    "affine_parts",
    "derive_marginal",
    "fokker_planck",
    "reverse_drift",
    "probability_flow_drift",
    "score_scales",
]


@dataclass(frozen=True)
class AffineParts:
    """``f = a(t) x + b(t)``, ``g = g(t)``; ``reason`` is ``None`` iff the SDE is affine."""

    a: sp.Expr | None
    b: sp.Expr | None
    reason: str | None


@dataclass(frozen=True)
class MarginalExprs:
    r"""Symbolic marginal :math:`N(\alpha x_0 + m, \sigma^2)`.

    ``closed`` is True when all three integrals have closed forms; otherwise the
    expressions contain unevaluated :class:`sympy.Integral` objects (still exact, and
    differentiable by sympy) and numbers come from numeric quadrature.
    """

    a: sp.Expr
    b: sp.Expr
    g2: sp.Expr
    alpha: sp.Expr
    offset: sp.Expr
    sigma2: sp.Expr
    closed: bool


def depends_on_x(expr: sp.Expr) -> bool:
    r"""Whether ``expr`` depends on x after simplification.

    Tested on the free symbols, not with :math:`\partial_x` = 0: the derivative of a Piecewise that is
    constant on each side of a jump in x is 0 although the expression depends on x.
    """
    return x in sp.simplify(expr).free_symbols


def affine_parts(f: sp.Expr, g: sp.Expr) -> AffineParts:
    """Split ``f`` into ``a(t) x + b(t)`` and check ``g`` is free of ``x``."""
    a = sp.simplify(sp.diff(f, x))
    if a.has(x):
        return AffineParts(None, None, f"the drift f = {f} is not affine in x (df/dx = {a} depends on x)")
    b = sp.simplify(f - a * x)
    if b.has(x):
        return AffineParts(None, None, f"the drift f = {f} is not affine in x")
    if depends_on_x(g):
        return AffineParts(a, b, f"the diffusion g = {g} depends on x (state-dependent noise has no Gaussian kernel)")
    return AffineParts(a, b, None)


def _integral(h: sp.Expr) -> tuple[sp.Expr, bool]:
    """``int_0^t h`` in closed form when possible, else an unevaluated Integral."""
    h = sp.sympify(h)
    if h == 0:
        return sp.S.Zero, True
    closed = definite_integral(h)
    if closed is not None:
        return closed, True
    return sp.Integral(h.subs(t, _TAU), (_TAU, 0, t)), False


def derive_marginal(parts: AffineParts, g: sp.Expr) -> MarginalExprs:
    """Solve the moment ODEs of an affine SDE (closed form where sympy can)."""
    assert parts.reason is None and parts.a is not None and parts.b is not None
    a, b = parts.a, parts.b
    g2 = g**2
    log_alpha, ok_a = _integral(a)
    alpha = sp.simplify(sp.exp(log_alpha)) if ok_a else sp.exp(log_alpha)
    closed = ok_a
    if b == 0:
        offset = sp.S.Zero
    else:
        mbar, ok_m = _integral(b / alpha)
        offset = alpha * mbar
        closed = closed and ok_m
    ibar, ok_s = _integral(g2 / alpha**2)
    sigma2 = alpha**2 * ibar
    if ok_s and closed:
        sigma2 = _tidy(sigma2)
        offset = _tidy(offset)
    closed = closed and ok_s
    return MarginalExprs(a=a, b=b, g2=g2, alpha=alpha, offset=offset, sigma2=sigma2, closed=closed)


def _tidy(e: sp.Expr) -> sp.Expr:
    """Numerically friendly form: exponentials combined, and polynomials in one exponential factored.

    For example the sub-VP variance ``e^{-2B} - 2 e^{-B} + 1`` becomes ``(e^{-B} - 1)^2``, which
    the compiler evaluates with ``expm1`` (no cancellation at small t).
    """
    e = sp.powsimp(sp.expand(e), combine="exp")
    exponents = sorted({sp.expand(a.args[0]) for a in e.atoms(sp.exp)}, key=sp.count_ops)
    if len(exponents) >= 2:
        base = exponents[0]
        ratios = [sp.simplify(k / base) for k in exponents]
        if all(r.is_Rational for r in ratios):
            step = sp.Rational(1, sp.ilcm(*[r.q for r in ratios]))
            w = sp.Dummy("w", positive=True)
            poly = e.xreplace({sp.exp(k): w ** (r / step) for k, r in zip(exponents, ratios)})
            if not poly.has(sp.exp):
                factored = sp.factor(poly, w)
                return sp.factor_terms(factored.xreplace({w: sp.exp(base * step)}))
    return sp.factor_terms(e)


def fokker_planck(p: sp.Expr, f: sp.Expr, g: sp.Expr) -> sp.Expr:
    r"""Residual :math:`\partial_t p + \partial_x (f p) - \tfrac12 \partial_x^2 (g^2 p)`."""
    return sp.diff(p, t) + sp.diff(f * p, x) - sp.diff(g**2 * p, x, 2) / 2


def reverse_drift(f: sp.Expr, g: sp.Expr, score: sp.Expr) -> sp.Expr:
    r"""Anderson's reverse drift :math:`f - \partial_x(g^2) - g^2\,\nabla_x \log p_t` (forward time)."""
    return f - sp.diff(g**2, x) - g**2 * score


def probability_flow_drift(f: sp.Expr, g: sp.Expr, score: sp.Expr) -> sp.Expr:
    r"""Probability-flow drift :math:`f - \tfrac12 \partial_x(g^2) - \tfrac12 g^2\,\nabla_x \log p_t`."""
    return f - sp.diff(g**2, x) / 2 - g**2 * score / 2


def score_scales(f: sp.Expr, g: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    r"""Coefficients of the score in the reverse and probability-flow drifts: :math:`(r, k)` with

    .. math:: f_{\rm rev} = f - \partial_x(g^2) + r\,s, \qquad f_{\rm PF} = f - \tfrac12\partial_x(g^2) + k\,s,

    read off :func:`reverse_drift` and :func:`probability_flow_drift` (so :math:`r = -g^2`, :math:`k = -g^2/2`).
    """
    score = sp.Dummy("score")
    return sp.diff(reverse_drift(f, g, score), score), sp.diff(probability_flow_drift(f, g, score), score)
