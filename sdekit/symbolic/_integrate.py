"""Closed-form definite integrals int_0^t h(s) ds, fast paths first, bounded in time.

sympy's general ``integrate`` can take minutes on schedule integrals such as the
sub-VP variance; most integrals that arise from affine SDEs are sums of terms
``c(s) exp(E(s))`` with ``c / E'`` constant (a chain rule in reverse), polynomials or
exponentials. We try, in order: that pattern, ``manualintegrate``, then
``sympy.integrate`` under a time limit. ``None`` means "no closed form found": the
caller falls back to numeric quadrature.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import sympy as sp
from sympy.integrals.manualintegrate import manualintegrate

from ._symbols import t

__all__ = ["definite_integral", "time_limit"]

_DUMMY = sp.Dummy("u", nonnegative=True)


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``_Timeout`` after ``seconds`` (only in the main thread; elsewhere no limit)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def handler(signum, frame):
        raise _Timeout

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _split_exp(term: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    coeff, exponent = sp.S.One, sp.S.Zero
    for factor in sp.Mul.make_args(term):
        if isinstance(factor, sp.exp):
            exponent += factor.args[0]
        elif factor.is_Pow and isinstance(factor.base, sp.exp):
            exponent += factor.base.args[0] * factor.exp
        else:
            coeff *= factor
    return coeff, sp.expand(exponent)


def _antiderivative(h: sp.Expr, u: sp.Symbol) -> sp.Expr | None:
    groups: dict[sp.Expr, sp.Expr] = {}
    for term in sp.Add.make_args(sp.expand(h)):
        c, e = _split_exp(term)
        groups[e] = groups.get(e, sp.S.Zero) + c
    total = sp.S.Zero
    for e, c in groups.items():
        if e.has(u):
            ratio = sp.simplify(c / sp.diff(e, u))
            if not ratio.has(u):
                total += ratio * sp.exp(e)
                continue
        part = manualintegrate(c * sp.exp(e), u)
        if part.has(sp.Integral):
            return None
        total += part
    return total


def _candidates(h: sp.Expr) -> list[sp.Expr]:
    """Equivalent forms of the integrand; the fast rules succeed on different ones."""
    forms = [h, sp.powsimp(sp.expand(h), combine="exp")]
    if any(p.exp.has(t) or p.exp.has(_DUMMY) for p in h.atoms(sp.Pow)):  # c**t: as exp(t log c), then chain rule
        forms.insert(0, sp.powsimp(sp.expand(h.rewrite(sp.exp)), combine="exp"))
    with contextlib.suppress(_Timeout):
        with time_limit(10.0):
            simple = sp.simplify(h)
            forms += [simple, simple.replace(sp.tan, lambda a: sp.sin(a) / sp.cos(a))]
    return list(dict.fromkeys(forms))


def definite_integral(h: sp.Expr, seconds: float = 10.0) -> sp.Expr | None:
    """Closed form of ``int_0^t h(s) ds`` as an expression in ``t``, or ``None``.

    Fast rules (reverse chain rule, ``manualintegrate``) are tried on several
    equivalent forms of ``h`` first; ``sympy.integrate`` runs last, for at most
    ``seconds``.
    """
    h = sp.sympify(h)
    if not h.has(t):
        return h * t
    u = _DUMMY
    errors = (_Timeout, NotImplementedError, ValueError, TypeError, RecursionError)
    for form in _candidates(h):
        hu = form.subs(t, u)
        try:
            with time_limit(seconds):
                anti = _antiderivative(hu, u)
                if anti is None:
                    continue
                at0 = anti.subs(u, 0)
                if at0.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
                    at0 = sp.limit(anti, u, 0, "+")
                return sp.simplify(anti.subs(u, t) - at0)
        except errors:
            continue
    try:
        with time_limit(seconds):
            result = sp.integrate(h.subs(t, u), (u, 0, t))
    except errors:
        return None
    if result.has(sp.Integral) or result.has(sp.Piecewise):
        return None
    return result
