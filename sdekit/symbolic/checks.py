r"""Symbolic self-checks of derived objects (used by tests, ``sdekit.testing`` and ``validation/``).

:func:`kernel_fokker_planck` verifies that the derived Gaussian kernel
:math:`p = N(x; \alpha x_0 + m, \sigma^2)` solves the Fokker–Planck equation. For a
Gaussian, :math:`\mathrm{FP}[p]/p` is a polynomial in :math:`x` and :math:`x_0`; each
coefficient (a function of t) must vanish. Coefficients are decided symbolically with
cheap normal forms first (numerator of ``together``, exponentials combined), then
``sympy.simplify`` under a time limit, then numerically at sample times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from typing import TYPE_CHECKING

import sympy as sp

from ._integrate import _Timeout, time_limit
from ._symbols import s as S_SYM
from ._symbols import t as T_SYM
from ._symbols import x as X_SYM

if TYPE_CHECKING:  # pragma: no cover
    from .sde import SDE

__all__ = ["CheckResult", "is_zero", "kernel_fokker_planck", "chapman_kolmogorov"]


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """Outcome of a symbolic check.

    Attributes:
        passed: all residuals vanish (symbolically, or numerically within ``tolerance``).
        symbolic: every residual was decided symbolically (no numeric fallback needed).
        max_abs: largest absolute residual found numerically (0.0 when decided symbolically).
        tolerance: the numeric tolerance used for undecided residuals.
        residuals: the simplified residual expressions (zeros when proved).
    """

    passed: bool
    symbolic: bool
    max_abs: float
    tolerance: float
    residuals: tuple[sp.Expr, ...]


def _normal_form(e: sp.Expr) -> sp.Expr:
    num, _ = sp.fraction(sp.together(e))
    return sp.expand(sp.powsimp(sp.expand(num), combine="exp"))


def is_zero(e: sp.Expr, seconds: float = 4.0) -> bool | None:
    """True if ``e`` is provably zero, None if undecided (never claims non-zero symbolically)."""
    if e == 0:
        return True
    with contextlib.suppress(_Timeout, NotImplementedError, RecursionError, TypeError):
        with time_limit(seconds):
            if _normal_form(e) == 0:
                return True
            simple = sp.simplify(e)
            if simple == 0 or _normal_form(sp.expand_trig(simple)) == 0:
                return True
    return None


def _numeric_max(
    exprs: list[sp.Expr],
    variables: list[sp.Symbol],
    ranges: dict[sp.Symbol, tuple[float, float]],
    n_points: int = 24,
    seed: int = 0,
) -> float:
    rng = random.Random(seed)
    worst = 0.0
    for _ in range(n_points):
        point = {v: rng.uniform(*ranges[v]) for v in variables}
        for e in exprs:
            val = complex(sp.N(e.subs(point), 30))
            worst = max(worst, abs(val))
    return worst


def _decide(
    residuals: list[sp.Expr], variables: list[sp.Symbol], ranges: dict[sp.Symbol, tuple[float, float]], tolerance: float
) -> CheckResult:
    decided = [is_zero(r) for r in residuals]
    open_ = [r for r, d in zip(residuals, decided) if not d]
    max_abs = _numeric_max(open_, variables, ranges) if open_ else 0.0
    shown = tuple(sp.S.Zero if d else r for r, d in zip(residuals, decided))
    return CheckResult(
        passed=max_abs <= tolerance, symbolic=not open_, max_abs=max_abs, tolerance=tolerance, residuals=shown
    )


def kernel_fokker_planck(sde: SDE, tolerance: float = 1e-8) -> CheckResult:
    r"""Check :math:`\partial_t p + \partial_x(fp) - \tfrac12\partial_x^2(g^2 p) = 0` for the derived kernel.

    Parameter values of ``sde`` are substituted; undecided coefficients are evaluated
    at random (t, x) with t in (0, T] and compared with ``tolerance`` (relative to p,
    i.e. the residual of FP[p]/p).
    """
    x0 = sp.Symbol("x0", real=True)
    m = sde.marginal
    # p = N(x; M(t), V(t)) with placeholder functions: FP[p]/p is then free of sqrt(V), and the
    # derived mean and variance are inserted after differentiation.
    M, V = sp.Function("M")(T_SYM), sp.Function("V")(T_SYM)
    p = sp.exp(-((X_SYM - M) ** 2) / (2 * V)) / sp.sqrt(2 * sp.pi * V)
    mean = m.alpha_expr * x0 + m.offset_expr
    ratio = sp.expand(sde.fokker_planck(p) / p)
    ratio = ratio.xreplace(
        {sp.Derivative(M, T_SYM): sp.diff(mean, T_SYM), sp.Derivative(V, T_SYM): sp.diff(m.sigma2_expr, T_SYM)}
    )
    ratio = sp.expand(ratio.xreplace({M: mean, V: m.sigma2_expr}))
    coeffs = sp.Poly(ratio, X_SYM, x0).coeffs()
    residuals = [sde.subs(c) for c in coeffs]
    return _decide(residuals, [T_SYM], {T_SYM: (0.05 * sde.T, sde.T)}, tolerance)


def chapman_kolmogorov(sde: SDE, tolerance: float = 1e-8) -> CheckResult:
    r"""Check that the kernel from s to u composed with u to t equals the kernel from s to t.

    Gaussian kernels compose exactly when scale, shift and variance do:
    :math:`r_{st} = r_{ut} r_{su}`, :math:`\mu_{st} = r_{ut}\mu_{su} + \mu_{ut}`,
    :math:`v_{st} = r_{ut}^2 v_{su} + v_{ut}`.
    """
    u = sp.Symbol("t_u", nonnegative=True)
    r, mu, v = (sde.subs(e) for e in sde.marginal.transition_expr())  # kernel t_s -> t

    def kernel(a: sp.Symbol, b: sp.Symbol) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
        return tuple(e.xreplace({S_SYM: a, T_SYM: b}) for e in (r, mu, v))  # type: ignore[return-value]

    r_su, m_su, v_su = kernel(S_SYM, u)
    r_ut, m_ut, v_ut = kernel(u, T_SYM)
    r_st, m_st, v_st = kernel(S_SYM, T_SYM)
    residuals = [r_ut * r_su - r_st, r_ut * m_su + m_ut - m_st, r_ut**2 * v_su + v_ut - v_st]
    # Ordered times s < u < t: draw s and t from disjoint ranges with u between them.
    T = sde.T
    ranges = {S_SYM: (0.05 * T, 0.3 * T), u: (0.35 * T, 0.6 * T), T_SYM: (0.65 * T, T)}
    return _decide(residuals, [S_SYM, u, T_SYM], ranges, tolerance)
