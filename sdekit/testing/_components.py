r"""The symbolic assertions of :mod:`sdekit.testing` for k-component SDEs (``components = ("x", "v")``).

Densities are handled through :math:`\phi = \log p`: for :math:`p = e^\phi`,
:math:`\partial_i(hp)/p = \partial_i h + h\,\partial_i\phi`, so the multivariate Fokker–Planck residual divided by
p,

.. math:: \frac{\mathrm{FP}[p]}{p} = \partial_t\phi + \sum_i \frac{\partial_i(f_i p)}{p}
          - \frac12\sum_{ij}\frac{\partial_i\partial_j(D_{ij} p)}{p},\qquad D = GG^\top,

is free of exponentials of the state (a polynomial in it for Gaussian p).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import sympy as sp
import torch

from .._vector import exact
from ..symbolic._symbols import t as T_SYM
from ..symbolic.checks import CheckResult, _decide, is_zero
from ..symbolic.sde import SDE
from ._strategies import describe

_F64 = torch.float64


def _flux(h: sp.Expr, i: int, state: Sequence[sp.Symbol], dphi: Sequence[sp.Expr]) -> sp.Expr:
    r""":math:`\partial_i(h p)/p = \partial_i h + h\,\partial_i\phi`."""
    return sp.diff(h, state[i]) + h * dphi[i]


def _spatial_rate(
    f: sp.Matrix, D: sp.Matrix, sign: int, state: Sequence[sp.Symbol], dphi: Sequence[sp.Expr]
) -> sp.Expr:
    r""":math:`(-\sum_i\partial_i(f_i p) + \tfrac{sign}{2}\sum_{ij}\partial_i\partial_j(D_{ij}p))/p`."""
    k = len(state)
    drift = sum(_flux(f[i], i, state, dphi) for i in range(k))
    diff = sum(
        _flux(_flux(D[i, j], j, state, dphi), i, state, dphi) for i in range(k) for j in range(k) if D[i, j] != 0
    )
    return -drift + sp.Rational(sign, 2) * diff


def _fail(title: str, sde: SDE, lines: Sequence[str]) -> None:
    raise AssertionError(f"{title}\n  SDE: {describe(sde)}\n  " + "\n  ".join(lines))


def fokker_planck(sde: SDE, p: sp.Expr | str | None, tolerance: float) -> CheckResult:
    r"""k-component :func:`~sdekit.testing.assert_fokker_planck`: the derived kernel (given the whole initial state,
    closed forms only) or a user density ``p`` in the components and t."""
    state = tuple(sde.state_symbols)
    f, G = exact(sde, sde.f), exact(sde, sde.g)
    D = (G * G.T).applyfunc(sp.expand)
    if p is None:
        if not sde.is_affine:
            raise ValueError(
                f"{describe(sde)} is not affine, so it has no Gaussian kernel to check; pass p= a density you know "
                f"solves its Fokker–Planck equation (e.g. its stationary density)"
            )
        m = sde.marginal
        if not m.closed:
            raise ValueError(
                f"{describe(sde)} has no closed-form marginal (its moments are integrated numerically), so the kernel "
                f"cannot be checked symbolically; pass p= a density, or compare marginal.cov with a Lyapunov ODE solve"
            )
        X0 = sp.Matrix([sp.Symbol(f"{s.name}0", real=True) for s in state])
        S = m.cov_expr
        det = S.det()
        r = sp.Matrix(state) - m.alpha_expr * X0 - m.offset_expr
        phi = -(r.T * S.adjugate() * r)[0, 0] / (2 * det) - sp.log(det) / 2
        variables = [*state, *X0]
        what = "the derived Gaussian kernel p(X_t | X_0) does not solve"
    else:
        dens = exact(sde, sde.sympify(p)) if isinstance(p, str) else exact(sde, p)
        phi = sp.expand_log(sp.log(dens), force=True)
        variables = list(state)
        what = f"p = {dens} does not solve"
    dphi = [sp.diff(phi, s) for s in state]
    residual = sp.diff(phi, T_SYM) - _spatial_rate(f, D, 1, state, dphi)
    numerator = sp.expand(sp.powsimp(sp.expand(sp.fraction(sp.together(residual))[0]), combine="exp"))
    if numerator == 0:
        return CheckResult(True, True, 0.0, tolerance, (sp.S.Zero,))
    ranges = {s: (-3.0, 3.0) for s in variables} | {T_SYM: (0.05 * sde.T, sde.T)}
    result = _decide([residual], [*variables, T_SYM], ranges, tolerance)
    if not result.passed:
        shown = "; ".join(sp.sstr(e)[:200] for e in result.residuals if e != 0) or "(none)"
        _fail(
            f"assert_fokker_planck failed: {what} the Fokker–Planck equation dp/dt + sum_i d(f_i p)/dx_i "
            f"- 1/2 sum_ij d^2(D_ij p)/dx_i dx_j = 0 (D = G G^T)",
            sde,
            [f"max |residual| = {result.max_abs:.3g} at sampled points (tolerance {tolerance:g})",
             f"unresolved residual(s): {shown}"],
        )  # fmt: skip
    return result


def _test_density(k: int) -> tuple[sp.Matrix, sp.Matrix]:
    r"""Mean and covariance of the test density :math:`N(\mu(t), V(t))` on :math:`\mathbb R^k`:
    :math:`\mu_i = \sin(t + i)/2 + 1/3`, :math:`V = (1 + t^2/2) I + \tfrac{t}{4k}(11^\top - I)` (positive definite)."""
    mu = sp.Matrix([sp.sin(T_SYM + i) / 2 + sp.Rational(1, 3) for i in range(k)])
    V = sp.Matrix(k, k, lambda i, j: 1 + T_SYM**2 / 2 if i == j else T_SYM / (4 * k))
    return mu, V


def reverse_consistent(sde: SDE, tolerance: float, rtol: float) -> tuple[CheckResult, CheckResult, float]:
    r"""k-component :func:`~sdekit.testing.assert_reverse_consistent` (same identities with :math:`D = GG^\top`, the
    divergence :math:`(\nabla\!\cdot D)_i = \sum_j\partial_j D_{ij}` and the Gaussian test density of
    :func:`_test_density`)."""
    state = tuple(sde.state_symbols)
    k = len(state)
    f, G = sde.subs(sde.f), sde.subs(sde.g)
    D = G * G.T
    mu, V = _test_density(k)
    Vinv = V.inv()
    score = -Vinv * (sp.Matrix(state) - mu)  # grad phi
    dphi = list(score)
    forward = _spatial_rate(f, D, 1, state, dphi)
    rev_f = sde.subs(sde.reverse(score).f)
    pf_f = sde.subs(sde.probability_flow(score).f)
    rng = np.random.default_rng(0)
    points = [rng.uniform(-3.0, 3.0, 64) for _ in state] + [rng.uniform(0.0, sde.T, 64)]
    variables = [*state, T_SYM]
    scale = np.abs(_values(forward, variables, points))
    results = []
    for rate in (_spatial_rate(rev_f, D, -1, state, dphi), _spatial_rate(pf_f, D, 0, state, dphi)):
        residual = rate - forward
        rel = np.abs(_values(residual, variables, points)) / (1 + scale)
        finite = np.isfinite(rel)
        worst = float(rel[finite].max()) if finite.sum() >= 16 else math.inf
        if not worst <= tolerance:
            results.append(CheckResult(False, False, worst, tolerance, (residual,)))
            continue
        proved = bool(is_zero(residual, seconds=2.0))
        results.append(
            CheckResult(True, proved, 0.0 if proved else worst, tolerance, (sp.S.Zero if proved else residual,))
        )
    rev, pf = results
    problems = []
    if not rev.passed:
        shown = sp.sstr(list(rev_f))[:300]
        problems.append(f"reverse SDE: -div(f_rev p) - 1/2 div div(D p) != forward dp/dt (max |diff/p| = "
                        f"{rev.max_abs:.3g}); f_rev = {shown}, expected f - div D - D score")  # fmt: skip
    if not pf.passed:
        problems.append(f"probability flow: -div(v p) != forward dp/dt (max |diff/p| = {pf.max_abs:.3g}); "
                        f"v = {sp.sstr(list(pf_f))[:300]}, expected f - 1/2 div D - 1/2 D score")  # fmt: skip
    worst = _torch_mismatch(sde, f, D, score, problems, rtol)
    if problems:
        _fail(
            "assert_reverse_consistent failed: the reverse-time dynamics do not reproduce the forward marginals",
            sde,
            [*problems, "test density p_t = N(mu(t), V(t)), mu_i = sin(t + i)/2 + 1/3, V = (1 + t^2/2) I + t/(4k) "
             "(11^T - I)"],
        )  # fmt: skip
    return rev, pf, worst


def _values(expr: sp.Expr, variables: Sequence[sp.Symbol], points: Sequence[np.ndarray]) -> np.ndarray:
    with np.errstate(all="ignore"):
        fn = sp.lambdify(list(variables), expr, "numpy")
        return np.broadcast_to(np.asarray(fn(*points), dtype=float), points[0].shape)


def _torch_mismatch(
    sde: SDE, f: sp.Matrix, D: sp.Matrix, score: sp.Matrix, problems: list[str], rtol: float
) -> float:  # fmt: skip
    """Torch drifts from a callable score against the formulas f - c div D - c D s (c = 1, 1/2), and the reverse
    diffusion against G, on a grid of states; appends to ``problems``; returns the largest relative error."""
    state = tuple(sde.state_symbols)
    k = len(state)
    mu, V = _test_density(k)
    mu_fn = sp.lambdify(T_SYM, mu, "numpy")
    Vinv_fn = sp.lambdify(T_SYM, V.inv(), "numpy")

    def score_fn(X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(np.stack([np.asarray(mu_fn(float(s)), dtype=float)[:, 0] for s in t]), dtype=X.dtype)
        P = torch.tensor(np.stack([np.asarray(Vinv_fn(float(s)), dtype=float) for s in t]), dtype=X.dtype)
        return -torch.einsum("bij,bj...->bi...", P, X - m.reshape(*m.shape, *([1] * (X.ndim - 2))))

    div = sp.Matrix([sum(sp.diff(D[i, j], state[j]) for j in range(k)) for i in range(k)])
    g = np.linspace(-2.0, 2.0, 5)
    grid = np.stack(np.meshgrid(*([g] * k), indexing="ij"), -1).reshape(-1, k)
    X = torch.tensor(grid, dtype=_F64).unsqueeze(-1)  # (n, k, 1)
    worst = 0.0
    reverse_obj, pf_obj = sde.reverse(score_fn), sde.probability_flow(score_fn)
    for tv in (0.1 * sde.T, 0.37 * sde.T, sde.T):
        tt = torch.full((X.shape[0],), tv, dtype=_F64)
        for label, c, obj in (("reverse drift", 1, reverse_obj), ("probability-flow drift", sp.Rational(1, 2), pf_obj)):
            want_expr = f - c * div - c * D * score
            want = _values_matrix(want_expr, [*state, T_SYM], [*grid.T, np.full(len(grid), tv)])
            got = obj.drift(X, tt)[..., 0].numpy()
            err = float(np.nanmax(np.abs(got - want) / (1 + np.abs(want))))
            worst = max(worst, err) if err == err else math.inf
            if not err <= rtol:
                problems.append(f"torch {label} (callable score) differs from the formula by {err:.3g} at t={tv:g}")
        G_torch = reverse_obj.diffusion(X, tt)
        G_sde = sde.diffusion_fn(X, tt)
        if not torch.equal(*torch.broadcast_tensors(G_torch, G_sde)):
            problems.append(f"torch reverse diffusion differs from the forward G at t={tv:g}")
    return worst


def _values_matrix(M: sp.Matrix, variables: Sequence[sp.Symbol], points: Sequence[np.ndarray]) -> np.ndarray:
    """Entries of a k x 1 matrix at the points: (n, k)."""
    return np.stack([_values(e, variables, points) for e in M], axis=-1)
