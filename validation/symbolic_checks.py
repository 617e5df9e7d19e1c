r"""Symbolic checks of what sdekit derives (group ``"symbolic"``), for every SDE of the run.

Per SDE:

* **Kernel solves Fokker–Planck**: :math:`p = N(x; \alpha x_0 + m, \sigma^2)` from ``sde.marginal``
  satisfies :math:`\partial_t p + \partial_x(fp) - \tfrac12\partial_x^2(g^2p) = 0`
  (:func:`sdekit.symbolic.checks.kernel_fokker_planck`: each coefficient of FP[p]/p, a polynomial
  in x and x_0, is proved zero, else evaluated with 30 digits at 24 random t; tolerance 1e-8 relative to p).
* **Chapman–Kolmogorov**: ``transition(s, u)`` then ``transition(u, t)`` equals ``transition(s, t)``
  (scale, shift and variance compose; :func:`~sdekit.symbolic.checks.chapman_kolmogorov`, same rule).
* **Reverse SDE and PF-ODE**: the drifts of ``sde.reverse(score)`` and ``sde.probability_flow(score)``
  move a test density exactly as the forward SDE does (:func:`sdekit.testing.assert_reverse_consistent`;
  symbolic residual 1e-8 relative, torch drifts vs the formulas 1e-9 relative in float64).
* **Compiled = symbolic**: ``drift_fn``, ``diffusion_fn`` and the marginal's ``alpha``, ``offset``,
  ``sigma2`` (torch, float64) against the sympy expressions evaluated with 30 digits, at seeded points
  :math:`t \in [10^{-3}T, T]`, :math:`x \in [-3, 3]`; relative error (to :math:`1 + |{\rm exact}|`)
  below 1e-9 (float64 round-off of expressions of a few dozen operations is ~1e-14; numeric-quadrature
  marginals are checked to their table accuracy 1e-7 instead).
* **discretize(n) composes to the marginal**: the n = 1000 exact steps of ``sde.discretize``,
  composed, give :math:`(\alpha(T), m(T), \sigma^2(T))` (float64 round-off over 1000 steps: 1e-10 relative).

Checks that need a Gaussian kernel are skipped, with the reason, for non-affine SDEs. ``--quick``
skips the Fokker–Planck proof of the one slow kernel of the zoo (CosineVPSDE, see
:data:`QUICK_MAX_OPS`); a user's ``--sde`` is always checked in full.
"""

from __future__ import annotations

import math
import random

import sympy as sp
import torch

from ._core import CheckResult, Context, guarded, register

GROUP = "symbolic"
F64 = torch.float64
FP_TOL = 1e-8
COMPILE_TOL = 1e-9
MIN_DEFINED_POINTS = 4  # of the 16 points of "compiled = symbolic" where f (or g) must be a finite real
QUADRATURE_TOL = 1e-7
COMPOSE_TOL = 1e-10
N_STEPS = 1000
# --quick skips the Fokker–Planck proof of kernels whose alpha, m, sigma^2 expressions together exceed this many
# sympy operations (of the zoo only CosineVPSDE, 30: 10-30 s of sympy against < 10 s for all the others).
QUICK_MAX_OPS = 25


def _kernel_ops(sde) -> int:
    m = sde.marginal
    return int(sum(sp.count_ops(e) for e in (m.alpha_expr, m.offset_expr, m.sigma2_expr)))


def _name(sde) -> str:
    return type(sde).__name__ if type(sde).__name__ != "SDE" else repr(sde)


def _how(res) -> str:
    if res.symbolic:
        return "proved zero symbolically (sympy)"
    return "not proved; max |residual| at 24 random times, 30-digit evaluation, vs 1e-8 relative"


def _non_affine(sde) -> str:
    return f"needs a Gaussian kernel; {_name(sde)} is not affine ({sde._affine.reason})"


def _kernel_fp(sde) -> CheckResult:
    from sdekit.symbolic.checks import kernel_fokker_planck

    res = kernel_fokker_planck(sde, tolerance=FP_TOL)
    return CheckResult.below(GROUP, f"{_name(sde)}: kernel solves Fokker–Planck", res.max_abs, FP_TOL, _how(res))


def _chapman(sde) -> CheckResult:
    from sdekit.symbolic.checks import chapman_kolmogorov

    res = chapman_kolmogorov(sde, tolerance=FP_TOL)
    name = f"{_name(sde)}: Chapman–Kolmogorov transition(s,u)∘transition(u,t) = transition(s,t)"
    return CheckResult.below(GROUP, name, res.max_abs, FP_TOL, _how(res))


def _reverse(sde) -> CheckResult:
    from sdekit.testing import assert_reverse_consistent

    name = f"{_name(sde)}: reverse SDE and PF-ODE reproduce the forward dp/dt"
    try:
        ev = assert_reverse_consistent(sde, tolerance=FP_TOL, rtol=COMPILE_TOL)
    except AssertionError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        return CheckResult(GROUP, name, math.inf, FP_TOL, False, "; ".join(lines[:3])[:300])
    value = max(ev.reverse.max_abs, ev.probability_flow.max_abs)
    how = "proved zero symbolically" if ev.reverse.symbolic and ev.probability_flow.symbolic else "numeric, 64 points"
    return CheckResult.below(
        GROUP,
        name,
        value,
        FP_TOL,
        f"{how}; torch drifts with a callable score match the formulas to {ev.max_torch_error:.1e} (rtol 1e-9)",
    )


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float(((got - want).abs() / (1 + want.abs())).max())


def _exact(expr: sp.Expr, symbols: tuple, points: list[tuple[float, ...]]) -> torch.Tensor:
    """``expr`` at each point to 30 digits; NaN where it is not a finite real (outside the SDE's domain)."""
    values = []
    for p in points:
        v = sp.N(expr.subs(dict(zip(symbols, p))), 30)
        if v.free_symbols:
            raise TypeError(f"{expr} still has free symbols {sorted(map(str, v.free_symbols))} at {p}")
        values.append(float(v) if v.is_extended_real and v.is_finite else math.nan)
    return torch.tensor(values, dtype=F64)


def _rel_where_defined(got: torch.Tensor, want: torch.Tensor, label: str) -> tuple[float, int]:
    """:func:`_rel` at the points where the sympy value ``want`` is a finite real; (error, number of points)."""
    keep = torch.isfinite(want)
    n = int(keep.sum())
    if n < MIN_DEFINED_POINTS:
        raise ValueError(
            f"the sympy {label} is a finite real at only {n} of {want.numel()} sampled points x in [-3, 3]; the "
            f"check needs {MIN_DEFINED_POINTS}: declare the SDE so that it is defined on more of [-3, 3]"
        )
    return _rel(got[keep], want[keep]), n


def _compiled(sde, seed: int) -> CheckResult:
    from sdekit import t as T_SYM
    from sdekit import x as X_SYM

    rng = random.Random(seed)
    T = float(sde.T)
    pts = [(rng.uniform(-3.0, 3.0), T * 10 ** rng.uniform(-3.0, 0.0)) for _ in range(16)]
    xs = torch.tensor([p[0] for p in pts], dtype=F64).reshape(-1, 1)
    ts = torch.tensor([p[1] for p in pts], dtype=F64)
    errs, used = {}, {}
    for label, fn, expr in (("drift", sde.drift_fn, sde.f), ("diffusion", sde.diffusion_fn, sde.g)):
        got = fn(xs, ts).reshape(-1)
        got = got.expand(len(pts)) if got.numel() == 1 else got
        errs[label], used[label] = _rel_where_defined(got, _exact(sde.subs(expr), (X_SYM, T_SYM), pts), label)
    tol, note = COMPILE_TOL, "float64 round-off"
    skipped = [f"{label} at {n} of {len(pts)}" for label, n in used.items() if n < len(pts)]
    if skipped:  # e.g. g = sigma sqrt(x) is complex for x < 0
        note += f"; only where the sympy value is a finite real: {', '.join(skipped)} points"
    if sde.is_affine:
        m = sde.marginal
        tpts = [(p[1],) for p in pts]
        if m.closed:
            for label, fn, expr in (
                ("alpha", m.alpha, m.alpha_expr),
                ("offset", m.offset, m.offset_expr),
                ("sigma2", m.sigma2, m.sigma2_expr),
            ):
                errs[label] = _rel(fn(ts).reshape(-1), _exact(sde.subs(expr), (T_SYM,), tpts))
        else:
            note = "marginal by numeric quadrature: drift/diffusion only (the table is checked by Fokker–Planck)"
    worst = max(errs, key=errs.get)
    return CheckResult.below(
        GROUP,
        f"{_name(sde)}: compiled torch functions = sympy expressions",
        errs[worst],
        tol,
        f"{note}; max relative error over 16 points, t in [1e-3 T, T] (worst: {worst}; checked: {', '.join(errs)})",
    )


def _compose(sde) -> CheckResult:
    m = sde.marginal
    d = sde.discretize(N_STEPS)
    scale, shift, var = (torch.ones((), dtype=F64), torch.zeros((), dtype=F64), torch.zeros((), dtype=F64))
    for a, b, c in zip(d.scale.to(F64), d.shift.to(F64), d.noise.to(F64)):
        scale, shift, var = a * scale, a * shift + b, a * a * var + c * c
    T = torch.tensor(float(sde.T), dtype=F64)
    a0, m0, v0 = m.alpha(torch.zeros((), dtype=F64)), m.offset(torch.zeros((), dtype=F64)), m.sigma2(torch.zeros(()))
    # Kernel from 0 to T, composed; the marginal at T is that kernel applied to x_0 (alpha(0) = 1, m(0) = v(0) = 0).
    errs = [
        _rel(scale * a0, m.alpha(T)),
        _rel(scale * m0 + shift, m.offset(T)),
        _rel(scale * scale * v0.to(F64) + var, m.sigma2(T)),
    ]
    return CheckResult.below(
        GROUP,
        f"{_name(sde)}: discretize({N_STEPS}) composes to the marginal at T",
        max(errs),
        COMPOSE_TOL,
        "float64 round-off over 1000 composed steps; relative to 1 + |exact|",
    )


@register(GROUP, quick=True)
def symbolic_checks(ctx: Context):
    """Fokker–Planck, Chapman–Kolmogorov, reverse/PF consistency, compilation and discretisation, per SDE."""
    for sde in ctx.sdes:
        name = _name(sde)
        if sde.is_affine and ctx.quick and not ctx.user_sde and _kernel_ops(sde) > QUICK_MAX_OPS:
            yield CheckResult.skip(
                GROUP,
                f"{name}: kernel solves Fokker–Planck",
                f"--quick: kernel of {_kernel_ops(sde)} > {QUICK_MAX_OPS} sympy ops (10-30 s); the full run checks it",
            )
            yield from guarded(GROUP, f"{name}: Chapman–Kolmogorov", lambda: _chapman(sde))
        elif sde.is_affine:
            yield from guarded(GROUP, f"{name}: kernel solves Fokker–Planck", lambda: _kernel_fp(sde))
            yield from guarded(GROUP, f"{name}: Chapman–Kolmogorov", lambda: _chapman(sde))
        else:
            yield CheckResult.skip(GROUP, f"{name}: kernel solves Fokker–Planck", _non_affine(sde))
            yield CheckResult.skip(GROUP, f"{name}: Chapman–Kolmogorov", _non_affine(sde))
        yield from guarded(GROUP, f"{name}: reverse SDE and PF-ODE", lambda: _reverse(sde))
        yield from guarded(GROUP, f"{name}: compiled = symbolic", lambda: _compiled(sde, ctx.seed))
        if sde.is_affine:
            yield from guarded(GROUP, f"{name}: discretize composes", lambda: _compose(sde))
        else:
            yield CheckResult.skip(GROUP, f"{name}: discretize composes", _non_affine(sde))
