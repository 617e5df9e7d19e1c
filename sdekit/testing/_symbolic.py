"""Symbolic assertions of sdekit.testing: Fokker-Planck, Chapman-Kolmogorov, reverse-time consistency."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import sympy as sp
import torch

from ..compile import compile_expr
from ..errors import SdekitError
from ..symbolic._symbols import t as T_SYM
from ..symbolic._symbols import x as X_SYM
from ..symbolic.checks import CheckResult, _decide, chapman_kolmogorov, is_zero, kernel_fokker_planck
from ..symbolic.sde import SDE
from . import _components
from ._strategies import describe

_F64 = torch.float64


# ====================================================================== symbolic assertions
def _fail(title: str, sde: SDE, lines: Sequence[str]) -> None:
    body = "\n  ".join(lines)
    raise AssertionError(f"{title}\n  SDE: {describe(sde)}\n  {body}")


def _shown_residuals(result: CheckResult, limit: int = 3) -> str:
    open_ = [r for r in result.residuals if r != 0][:limit]
    return "; ".join(sp.sstr(r)[:200] for r in open_) or "(none)"


def assert_fokker_planck(sde: SDE, p: sp.Expr | str | None = None, tolerance: float = 1e-8) -> CheckResult:
    r"""Assert that a density solves the Fokker–Planck equation of ``sde``:

    .. math:: \partial_t p + \partial_x(f p) - \tfrac12\partial_x^2(g^2 p) = 0 .

    With ``p=None`` (affine SDEs) the density is sdekit's derived Gaussian kernel
    :math:`N(x; \alpha(t)x_0 + m(t), \sigma(t)^2)` for every :math:`x_0`
    (:func:`sdekit.symbolic.checks.kernel_fokker_planck`). Otherwise ``p`` is your own sympy
    expression (or string) in ``x`` and ``t`` — e.g. the stationary density of a non-affine SDE — and
    the residual :math:`\mathrm{FP}[p]/p` is decided symbolically, else evaluated at 24 seeded points
    :math:`(x, t) \in [-3, 3]\times[0.05T, T]` against ``tolerance``.

    k-component SDEs (``components``, e.g. :class:`sdekit.CLDSDE`): the multivariate equation
    :math:`\partial_t p + \sum_i\partial_i(f_i p) - \tfrac12\sum_{ij}\partial_i\partial_j((GG^\top)_{ij}p) = 0`,
    with ``p=None`` for the derived kernel :math:`N(X; \Phi(t)X_0 + m(t), \Sigma(t))` given the whole initial state
    (closed-form marginals only), or your ``p`` in the components and t (sampled on :math:`[-3, 3]^k`).

    Returns:
        the :class:`~sdekit.symbolic.checks.CheckResult` (``.symbolic`` says whether it was proved).
    """

    if sde.components is not None:
        return _components.fokker_planck(sde, p, tolerance)
    if p is None:
        if not sde.is_affine:
            raise ValueError(
                f"{describe(sde)} is not affine, so it has no Gaussian kernel to check; pass p= a density "
                f"you know solves its Fokker–Planck equation (e.g. its stationary density)"
            )
        result = kernel_fokker_planck(sde, tolerance=tolerance)
        what = "the derived Gaussian kernel p(x_t | x_0) does not solve"
    else:
        dens = sde.subs(sde.sympify(p))
        residual = sde.subs(sde.fokker_planck(dens)) / dens
        ranges = {X_SYM: (-3.0, 3.0), T_SYM: (0.05 * sde.T, sde.T)}
        result = _decide([residual], [X_SYM, T_SYM], ranges, tolerance)
        what = f"p = {dens} does not solve"
    if not result.passed:
        _fail(
            "assert_fokker_planck failed: " + what + " dp/dt + d(f p)/dx - 1/2 d^2(g^2 p)/dx^2 = 0",
            sde,
            [
                f"max |residual / p| = {result.max_abs:.3g} at sampled points (tolerance {result.tolerance:g})",
                f"unresolved residual(s): {_shown_residuals(result)}",
            ],
        )
    return result


def assert_chapman_kolmogorov(sde: SDE, tolerance: float = 1e-8) -> CheckResult:
    r"""Assert that the derived Gaussian transition kernels compose: :math:`p_{s\to t} = p_{u\to t}\circ p_{s\to u}`.

    For kernels :math:`N(r_{st}x + \mu_{st}, v_{st})` this is
    :math:`r_{st} = r_{ut}r_{su}`, :math:`\mu_{st} = r_{ut}\mu_{su} + \mu_{ut}`,
    :math:`v_{st} = r_{ut}^2 v_{su} + v_{ut}` for all :math:`s < u < t`
    (:func:`sdekit.symbolic.checks.chapman_kolmogorov`; proved symbolically or checked at 24 seeded
    time triples to ``tolerance``). Affine SDEs only.
    """
    if sde.components is not None:
        raise ValueError(
            f"assert_chapman_kolmogorov checks scalar kernels; {describe(sde)} has components {sde.components}: use "
            f"assert_fokker_planck (the kernel given the whole initial state) and marginal.discretize"
        )
    result = chapman_kolmogorov(sde, tolerance=tolerance)
    if not result.passed:
        names = ("scale r_st = r_ut r_su", "shift mu_st = r_ut mu_su + mu_ut", "variance v_st = r_ut^2 v_su + v_ut")
        broken = [n for n, r in zip(names, result.residuals) if r != 0]
        _fail(
            "assert_chapman_kolmogorov failed: the transition kernels s->u->t and s->t disagree",
            sde,
            [
                f"identities not verified: {', '.join(broken)}",
                f"max |residual| = {result.max_abs:.3g} at sampled s < u < t (tolerance {result.tolerance:g})",
                f"unresolved residual(s): {_shown_residuals(result)}",
            ],
        )
    return result


# Test density for assert_reverse_consistent: a Gaussian with moving mean and variance, p = exp(phi).
_MU = sp.sin(T_SYM) / 2 + sp.Rational(1, 3)
_VAR = 1 + T_SYM**2 / 2
_TEST_SCORE = -(X_SYM - _MU) / _VAR  # d phi / dx


def _flux_div(h: sp.Expr) -> sp.Expr:
    r""":math:`\partial_x(h p)/p = \partial_x h + h\,\partial_x\phi` for :math:`p = e^\phi` (exp-free residuals)."""
    return sp.diff(h, X_SYM) + h * _TEST_SCORE


def _numpy_values(expr: sp.Expr, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """``expr`` at the points (xs, ts) in float64: sdekit's own compiler (numpy flavour: it knows tabulated functions
    of t), else sympy's lambdify (functions sdekit does not compile)."""
    try:
        fn = compile_expr(expr, X_SYM, T_SYM).numpy
    except SdekitError:
        fn = sp.lambdify((X_SYM, T_SYM), expr, "numpy")
    return np.broadcast_to(np.asarray(fn(xs, ts), dtype=float), xs.shape)


def _identity_holds(residual: sp.Expr, scale: sp.Expr, sde: SDE, tolerance: float) -> CheckResult:
    """Numerically first (float64 at 64 seeded points, relative to ``1 + |scale|``), then try to prove it."""

    rng = np.random.default_rng(0)
    xs, ts = rng.uniform(-3.0, 3.0, 64), rng.uniform(0.0, sde.T, 64)
    with np.errstate(all="ignore"):
        r = _numpy_values(residual, xs, ts)
        w = _numpy_values(scale, xs, ts)
        # Only points where the SDE is defined (f, g finite: g = x**(1/4) lives on x >= 0) and the scale is finite.
        inside = np.isfinite(w)
        for coefficient in (sde.subs(sde.f), sde.subs(sde.g)):
            inside &= np.isfinite(_numpy_values(coefficient, xs, ts))
    if int(inside.sum()) < 16:
        raise ValueError(
            f"assert_reverse_consistent: f, g of {describe(sde)} and the forward rate dp/dt / p are finite at only "
            f"{int(inside.sum())} of 64 sampled points (x, t) in [-3, 3] x [0, T]; the check needs at least 16. "
            f"Declare the SDE so that f and g are finite on a larger part of [-3, 3] (e.g. shift or rescale x)"
        )
    r, w = r[inside], w[inside]
    rel = np.abs(r) / (1.0 + np.abs(w))
    worst = float(np.nanmax(rel)) if np.isfinite(rel).all() else math.inf
    if worst > tolerance:
        return CheckResult(False, False, worst, tolerance, (residual,))
    proved = bool(is_zero(residual, seconds=1.0))
    return CheckResult(True, proved, 0.0 if proved else worst, tolerance, (sp.S.Zero if proved else residual,))


@dataclasses.dataclass(frozen=True)
class ReverseCheck:
    """Evidence from :func:`assert_reverse_consistent`: symbolic checks and the largest torch mismatch."""

    reverse: CheckResult
    probability_flow: CheckResult
    max_torch_error: float


def assert_reverse_consistent(sde: SDE, tolerance: float = 1e-8, rtol: float = 1e-9) -> ReverseCheck:
    r"""Assert that the reverse-time SDE and probability-flow ODE of ``sde`` are the right ones.

    Anderson's reverse drift :math:`\bar f = f - \partial_x(g^2) - g^2\partial_x\log p` and the PF drift
    :math:`v = f - \tfrac12\partial_x(g^2) - \tfrac12 g^2 \partial_x\log p` are exactly the drifts for which,
    for **any** positive density :math:`p_t(x)`,

    .. math::
        -\partial_x(f p) + \tfrac12\partial_x^2(g^2 p)
        \;=\; -\partial_x(\bar f p) - \tfrac12\partial_x^2(g^2 p)
        \;=\; -\partial_x(v p),

    i.e. running the reverse SDE backwards in time (its Fokker–Planck equation with :math:`dt < 0`), or
    transporting with the ODE, changes :math:`p` exactly as the forward SDE does. The check uses
    :math:`p_t = N(\sin(t)/2 + 1/3,\ 1 + t^2/2)`, takes :math:`\bar f, v` from
    ``sde.reverse(score).f`` / ``sde.probability_flow(score).f`` (so a missing divergence term
    :math:`\partial_x g^2` fails), evaluates :math:`(\text{lhs} - \text{rhs})/p` at 64 seeded points
    :math:`(x, t)\in[-3, 3]\times[0, T]` (relative to :math:`1 + |\text{lhs}/p|`, against ``tolerance``) and then
    tries to prove it zero (``.symbolic`` of the result says whether it did), and finally checks that the
    torch drifts built from a *callable* score, and the reverse diffusion, match the symbolic ones at a grid
    of (x, t) to ``rtol`` (float64).

    Points where ``f`` or ``g`` is not finite (outside the SDE's domain, e.g. :math:`x < 0` for
    :math:`g = \sigma\sqrt x`) are skipped, and so are torch grid points where the reference formula is not
    finite; ``ValueError`` if fewer than 16 of the 64 points, or 4 of the 13 grid points per time, remain.

    k-component SDEs: the same identities with :math:`D = GG^\top` (Anderson's
    :math:`\bar f = f - \nabla\!\cdot D - Ds`, :math:`v = f - \tfrac12\nabla\!\cdot D - \tfrac12 Ds`,
    :math:`(\nabla\!\cdot D)_i = \sum_j\partial_j D_{ij}`),
    the test density :math:`N(\mu(t), V(t))` on :math:`\mathbb R^k` with :math:`\mu_i = \sin(t + i)/2 + 1/3`,
    :math:`V = (1 + t^2/2)I + \tfrac{t}{4k}(11^\top - I)`, 64 seeded points in :math:`[-3, 3]^k \times [0, T]`, and
    the torch drifts on a :math:`5^k` grid of :math:`[-2, 2]^k` at three times.
    """
    if sde.components is not None:
        return ReverseCheck(*_components.reverse_consistent(sde, tolerance, rtol))
    f, g = sde.subs(sde.f), sde.subs(sde.g)
    score = _TEST_SCORE
    g2 = g**2
    forward = -_flux_div(f) + _flux_div(_flux_div(g2)) / 2  # (d p / dt) / p under the forward SDE
    rev_f = sde.subs(sde.reverse(score).f)
    pf_f = sde.subs(sde.probability_flow(score).f)
    reverse_rate = -_flux_div(rev_f) - _flux_div(_flux_div(g2)) / 2
    pf_rate = -_flux_div(pf_f)
    rev = _identity_holds(reverse_rate - forward, forward, sde, tolerance)
    pf = _identity_holds(pf_rate - forward, forward, sde, tolerance)
    problems = []
    if not rev.passed:
        problems.append(
            f"reverse SDE: -d(f_rev p)/dx - 1/2 d^2(g^2 p)/dx^2 != forward dp/dt (max |diff/p| = {rev.max_abs:.3g});"
            f" f_rev = {sp.sstr(rev_f)[:200]}, expected f - d(g^2)/dx - g^2 * score"
        )
    if not pf.passed:
        problems.append(
            f"probability flow: -d(v p)/dx != forward dp/dt (max |diff/p| = {pf.max_abs:.3g});"
            f" v = {sp.sstr(pf_f)[:200]}, expected f - 1/2 d(g^2)/dx - 1/2 g^2 * score"
        )
    # Torch path: callable score, compiled drifts, against the symbolic formulas, at the grid points inside the
    # SDE's domain (f, g finite: e.g. g = sqrt(x) lives on x >= 0) where the reference formula is finite.
    score_fn = _compiled_test_score()
    n_grid = 13
    xs = torch.linspace(-3.0, 3.0, n_grid, dtype=_F64).reshape(n_grid, 1)
    worst = 0.0
    want_rev = _compile(f - sp.diff(g2, X_SYM) - g2 * score)
    want_pf = _compile(f - sp.diff(g2, X_SYM) / 2 - g2 * score / 2)
    reverse_obj, pf_obj = sde.reverse(score_fn), sde.probability_flow(score_fn)
    for tv in (0.0, 0.37 * sde.T, sde.T):
        tt = torch.full((n_grid,), tv, dtype=_F64)
        domain = _finite(sde.drift_fn(xs, tt)) & _finite(sde.diffusion_fn(xs, tt))
        for label, got, want in (
            ("reverse drift", reverse_obj.drift(xs, tt), want_rev(xs, tt)),
            ("reverse diffusion", reverse_obj.diffusion(xs, tt), sde.diffusion_fn(xs, tt)),
            ("probability-flow drift", pf_obj.drift(xs, tt), want_pf(xs, tt)),
        ):
            got, want = torch.broadcast_tensors(got, want)
            keep = domain & _finite(want)
            n_kept = int(keep.sum())
            if n_kept < _MIN_GRID_POINTS:
                raise ValueError(
                    f"assert_reverse_consistent: the {label} of {describe(sde)} is finite (and f, g are defined) at "
                    f"only {n_kept} of the {n_grid} grid points x in [-3, 3] at t={tv:g}; the torch comparison needs "
                    f"at least {_MIN_GRID_POINTS}. Declare the SDE so that f and g are finite on a part of [-3, 3] "
                    f"(e.g. shift or rescale x)"
                )
            got, want = got[keep], want[keep]
            err = float(((got - want).abs() / (1 + want.abs())).max())  # NaN if got is not finite: a failure
            worst = max(worst, err) if err == err else math.inf
            if not err <= rtol:
                problems.append(
                    f"torch {label} (callable score) differs from the formula by {err:.3g} at t={tv:g}"
                    f" (max over the {n_kept} grid points x in [-3, 3] where f, g and the formula are finite)"
                )
    if problems:
        _fail(
            "assert_reverse_consistent failed: the reverse-time dynamics do not reproduce the forward marginals",
            sde,
            [*problems, "test density p_t = N(sin(t)/2 + 1/3, 1 + t^2/2), score = d/dx log p_t"],
        )
    return ReverseCheck(rev, pf, worst)


_MIN_GRID_POINTS = 4  # of the 13 torch grid points per time in assert_reverse_consistent


def _finite(values: torch.Tensor) -> torch.Tensor:
    """Per row (first axis), whether every entry is finite (rows are grid points)."""
    finite = torch.isfinite(values)
    return finite.reshape(finite.shape[0], -1).all(dim=1) if finite.ndim > 1 else finite


def _compile(expr: sp.Expr) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:

    return compile_expr(expr, X_SYM, T_SYM)


def _compiled_test_score() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, *([1] * (x.ndim - 1)))
        mu = torch.sin(t) / 2 + 1.0 / 3.0
        return -(x - mu) / (1 + t**2 / 2)

    return score
