r"""Checks of k-component (coupled) SDEs: CLD (or the user's k-component SDE) and a coupled non-affine oscillator.

Per k-component SDE of the run (``ctx.component_sdes``: ``sdekit.CLDSDE`` by default, or ``--sde CLDSDE`` /
``--sde module:Class``):

* **symbolic / kernel solves Fokker–Planck**: the exact Gaussian kernel :math:`N(\Phi X_0 + m, \Sigma)` given the
  full initial state (and given the data alone, :math:`\Sigma + \Phi C_0\Phi^\top`, when the SDE declares an
  initial covariance :math:`C_0`) put into sdekit's multivariate operator ``sde.fokker_planck``:
  :math:`p = E(\varphi)/\sqrt{\det\Sigma}` with :math:`E` an exponential kept as one atom, so that
  :math:`FP[p]/p\cdot\sqrt{\det\Sigma}` is a rational function whose numerator must expand to exactly 0.
* **symbolic / reverse SDE and PF-ODE**: for an arbitrary density :math:`p = e^{\varphi(X, t)}` (``varphi`` an
  undefined sympy function, score :math:`\nabla\varphi`), the drifts of ``sde.reverse(score)`` and
  ``sde.probability_flow(score)`` move p exactly as the forward SDE does:
  :math:`\nabla\cdot(f_{pf}p) = \nabla\cdot(fp) - \tfrac12\sum_{ij}\partial_i\partial_j(D_{ij}p)` and
  :math:`\nabla\cdot(f_{rev}p) + \tfrac12\sum\partial_i\partial_j(D_{ij}p) = \nabla\cdot(fp) -
  \tfrac12\sum\partial_i\partial_j(D_{ij}p)`, :math:`D = GG^\top`; residual / p simplified to 0.
* **analytic / Lyapunov**: ``marginal.alpha``, ``.offset``, ``.cov`` (and ``.cov(given="data")``) against an
  independent scipy DOP853 solution (rtol 1e-12) of :math:`\Phi' = A\Phi`, :math:`m' = Am + b`,
  :math:`\Sigma' = A\Sigma + \Sigma A^\top + GG^\top`, with A, b, G read off the declaration by sympy
  (Jacobian); tolerance 1e-8 absolute.
* **analytic / sampling with the exact oracle score**: ``sdekit.sample`` with the score of
  ``GaussianMixture(...).diffuse(sde)`` (a 2-D, 2-component mixture in the data component), data component at
  eps against its exact law ``oracle.component(eps, name)``: sliced KS over 16 directions, family-wise level
  1e-3, value :math:`D/D_{crit}` <= 1. Quick: the PF-ODE (dopri5 and ``mexp`` at 40 NFE), n = 4,000; full:
  n = 20,000, those and the reverse SDE (srk, 50 steps: ``docs/cld.md``).

Suite problems (left out under ``--sde``):

* **symbolic / multivariate Fokker–Planck operator** of :class:`~validation.component_problems.Duffing` against
  the hand-expanded :math:`p_t + v p_x + (x - x^3 - \gamma v)p_v - \gamma p - \tfrac{\sigma^2}2 p_{vv}`
  (p an undefined function), and reverse/PF consistency on torchsde's general-noise problem (state-dependent
  3 x 2 G: the :math:`\nabla\cdot D` terms matter).
* **forward / 2-D Fokker–Planck**: the Duffing oscillator from :math:`N((0.2, 0), 0.3^2 I)` to T = 1, solved by
  :class:`~validation.fokker_planck_2d.FokkerPlanck2D` on two grids (h and h/2, dt halved too), against
  ``sdekit.simulate`` (srk, 100 steps: additive noise, weak order 2) with n paths. Moments
  :math:`E x, E v, E x^2, E v^2, E xv`: :math:`|MC - FP| \le z\,SE + e_{grid}`, z = 4.26 (Bonferroni, 5
  two-sided tests at family-wise level 1e-4), SE the sample standard error, :math:`e_{grid} = |FP_h - FP_{h/2}|`
  (second order: three times the fine grid's own error). Marginal CDFs of x and v: KS distance
  :math:`\le D_{crit}(\alpha = 10^{-4}, 2\text{ tests}) + e_{grid} + e_{interp}`. Each value is the ratio to its
  tolerance (<= 1 passes).
"""

from __future__ import annotations

import math
import random
import time

import numpy as np
import sympy as sp
import torch

from ._core import CheckResult, Context, guarded, register

F64 = torch.float64
FP_TOL = 1e-8
LYAP_TOL = 1e-8
ALPHA_KS = 1e-3
ALPHA_FP = 1e-4
Z_FP = 4.26  # Phi^{-1}(1 - 1e-4 / 10): 5 two-sided moment tests at family-wise level 1e-4
TIMES = (1e-3, 0.01, 0.1, 0.3, 0.5, 0.77, 1.0)
DUFFING_START = ((0.2, 0.0), (0.3, 0.3))
DUFFING_DOMAIN = ((-3.5, 3.5), (-5.0, 5.0))


def _name(sde) -> str:
    return type(sde).__name__


class _Exp(sp.Function):
    """exp kept as one atom under differentiation (d/du E(u) = E(u)), so that FP[p]/p is a rational function."""

    def fdiff(self, argindex=1):
        return _Exp(self.args[0])


# ---------------------------------------------------------------------------- symbolic
def kernel_residual(sde, given: str = "state") -> float:
    """0 when sdekit's Fokker–Planck operator annihilates the exact kernel symbolically; else the largest
    |numerator| at 16 seeded random points (module docstring)."""
    from sdekit._vector import exact

    m = sde.marginal
    k = len(sde.state_symbols)
    X0 = sp.Matrix(sp.symbols(f"z0:{k}", real=True))
    S = m.cov_expr
    if given == "data":
        S = S + m.alpha_expr * sde._initial_cov * m.alpha_expr.T
        X0 = sp.Matrix([X0[i] if i in sde._data_index else 0 for i in range(k)])
    r = sp.Matrix(sde.state_symbols) - m.alpha_expr * X0 - m.offset_expr
    det = S.det()
    phi = -(r.T * S.adjugate() * r)[0, 0] / (2 * det)
    residual = exact(sde, sde.fokker_planck(_Exp(phi) / sp.sqrt(det)))
    residual = sp.expand(residual.replace(lambda e: isinstance(e, _Exp), lambda e: sp.S.One) * sp.sqrt(det))
    numerator, _ = sp.fraction(sp.together(residual))
    numerator = sp.expand(numerator)
    if numerator == 0:
        return 0.0
    rng = random.Random(0)
    symbols = sorted(numerator.free_symbols, key=str)
    values = [abs(complex(numerator.evalf(30, subs={s: rng.uniform(0.05, 1) for s in symbols}))) for _ in range(16)]
    return max(values)


def transport_residual(sde) -> tuple[sp.Expr, sp.Expr]:
    r"""(PF-ODE residual, reverse-SDE residual) / p for :math:`p = e^{\varphi(X, t)}`, simplified (0 when right)."""
    state = list(sde.state_symbols)
    from sdekit.symbolic._symbols import t

    phi = sp.Function("varphi")(*state, t)
    p = sp.exp(phi)
    score = [sp.diff(phi, s) for s in state]
    D = (sde.g * sde.g.T).applyfunc(sde.subs)
    f = sde.f.applyfunc(sde.subs)
    k = len(state)

    def div(drift) -> sp.Expr:
        return sum(sp.diff(drift[i] * p, state[i]) for i in range(k))

    second = sum(sp.diff(D[i, j] * p, state[i], state[j]) for i in range(k) for j in range(k) if D[i, j] != 0) / 2
    forward = div(f) - second
    pf = sde.probability_flow(sp.Matrix(score)).f.applyfunc(sde.subs)
    rev = sde.reverse(sp.Matrix(score)).f.applyfunc(sde.subs)
    out = []
    for got in (div(pf), div(rev) + second):
        out.append(sp.simplify(sp.expand((got - forward) / p)))
    return out[0], out[1]


def _transport_line(sde, label: str) -> CheckResult:
    pf, rev = transport_residual(sde)
    bad = [name for name, r in (("PF-ODE", pf), ("reverse", rev)) if r != 0]
    name = f"{label}: reverse SDE and PF-ODE reproduce the forward dp/dt (any p = exp(varphi))"
    where = "proved zero symbolically (sympy), D = G G^T with its divergence" if not bad else f"nonzero: {bad}"
    return CheckResult.below("symbolic", name, float(len(bad)), 0.0, where)


def duffing_operator_difference() -> sp.Expr:
    """sdekit's ``fokker_planck`` of the Duffing oscillator minus the hand-expanded formula (simplified)."""
    from sdekit.symbolic._symbols import t

    from .component_problems import Duffing

    sde = Duffing()
    x, v = sde.state_symbols
    p = sp.Function("p")(x, v, t)
    g, s = sp.Rational(1, 2), sp.Integer(1)  # Duffing.gamma, Duffing.sigma
    hand = sp.diff(p, t) + v * sp.diff(p, x) + (x - x**3 - g * v) * sp.diff(p, v) - g * p - s**2 / 2 * sp.diff(p, v, 2)
    return sp.simplify(sp.expand(sde.subs(sde.fokker_planck(p)) - hand))


@register("symbolic", quick=True)
def component_symbolic(ctx: Context):
    """Kernel Fokker–Planck residual and reverse/PF consistency per k-component SDE; Duffing's FP operator."""
    for sde in ctx.component_sdes:
        name = _name(sde)
        if sde.is_affine:
            # --quick: given the state only (CLD: 13 s of sympy each); "given the data" runs in the full suite
            with_data = sde._initial_cov != sp.zeros(*sde._initial_cov.shape) and not (ctx.quick and not ctx.user_sde)
            givens = ["state"] + (["data"] if with_data else [])
            for given in givens:
                label = f"{name}: kernel given the {given} solves the multivariate Fokker–Planck equation"
                yield from guarded(
                    "symbolic",
                    label,
                    lambda given=given, label=label: CheckResult.below(
                        "symbolic",
                        label,
                        kernel_residual(sde, given),
                        FP_TOL,
                        "numerator expanded by sympy: 0 = proved",
                    ),
                )
        else:
            yield CheckResult.skip("symbolic", f"{name}: kernel solves Fokker–Planck", "needs an affine SDE")
        yield from guarded("symbolic", f"{name}: reverse SDE and PF-ODE", lambda sde=sde: _transport_line(sde, name))
    if ctx.user_sde:
        return
    label = "Duffing (2 components): sdekit's multivariate Fokker–Planck operator = hand-expanded formula"
    yield from guarded(
        "symbolic",
        label,
        lambda: CheckResult.below(
            "symbolic", label, 0.0 if duffing_operator_difference() == 0 else 1.0, 0.0, "sympy difference is 0"
        ),
    )
    from .component_problems import GeneralNoise

    label = "torchsde general-noise problem (3 x 2 state-dependent G)"
    yield from guarded("symbolic", label, lambda: _transport_line(GeneralNoise(), label))


# ---------------------------------------------------------------------------- analytic
def lyapunov_errors(sde) -> dict[str, float]:
    """Max abs differences of ``marginal.alpha``, ``.offset``, ``.cov`` (and ``.cov(given="data")``) at
    :data:`TIMES` (scaled by T) against an independent scipy solution of the moment ODEs."""
    from scipy.integrate import solve_ivp

    from sdekit.symbolic._symbols import t as T

    state = list(sde.state_symbols)
    k = len(state)
    f = sde.f.applyfunc(sde.subs)
    A_fn = sp.lambdify(T, f.jacobian(state), "numpy")
    b_fn = sp.lambdify(T, f.subs(dict.fromkeys(state, 0)), "numpy")
    G = sde.g.applyfunc(sde.subs)
    D_fn = sp.lambdify(T, G * G.T, "numpy")
    C0 = np.array(sde._initial_cov.evalf(), dtype=float)
    times = np.array(TIMES) * float(sde.T)

    def rhs(t, y):
        A = np.array(A_fn(t), dtype=float)
        Phi, m, S = y[: k * k].reshape(k, k), y[k * k : k * k + k], y[k * k + k :].reshape(k, k)
        dS = A @ S + S @ A.T + np.array(D_fn(t), dtype=float)
        return np.concatenate([(A @ Phi).ravel(), A @ m + np.array(b_fn(t), dtype=float).ravel(), dS.ravel()])

    y0 = np.concatenate([np.eye(k).ravel(), np.zeros(k), np.zeros(k * k)])
    sol = solve_ivp(rhs, (0.0, times[-1]), y0, method="DOP853", t_eval=times, rtol=1e-12, atol=1e-14).y.T
    Phi, m, S = sol[:, : k * k].reshape(-1, k, k), sol[:, k * k : k * k + k], sol[:, k * k + k :].reshape(-1, k, k)
    tt = torch.tensor(times, dtype=F64)
    mar = sde.marginal
    out = {
        "Phi": float(np.abs(mar.alpha(tt).numpy() - Phi).max()),
        "m": float(np.abs(mar.offset(tt).numpy() - m).max()),
        "Sigma": float(np.abs(mar.cov(tt).numpy() - S).max()),
    }
    if np.any(C0):
        S_data = S + np.einsum("tij,jk,tlk->til", Phi, C0, Phi)
        out["Sigma (given data)"] = float(np.abs(mar.cov(tt, given="data").numpy() - S_data).max())
    return out


def oracle_sampling(sde, solver: str, steps: int | None, n: int, seed: int) -> float:
    """Sliced-KS ratio D / D_crit of the data component of ``sdekit.sample`` with the exact oracle score."""
    import sdekit
    from sdekit import analytic
    from sdekit._stats import random_directions, sliced_ks

    means = torch.tensor([[1.0, -1.0], [-1.5, 0.5]])
    covs = torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.1, 0.0], [0.0, 0.4]]])
    oracle = analytic.GaussianMixture(means, covs=covs, weights=[0.3, 0.7]).diffuse(sde)
    k = len(sde.state_symbols)
    gen = torch.Generator().manual_seed(seed)
    x = sdekit.sample(
        oracle, sde, (n, k, 2), solver=solver, steps=steps, denoise=False, generator=gen, dtype=F64
    )  # fmt: skip
    data = sde._data_index[0]
    law = oracle.component(sde.default_eps, sde.components[data])
    return sliced_ks(x[:, data], law, random_directions(2, 16, seed=seed), alpha=ALPHA_KS).ratio


@register("analytic", quick=True)
def component_analytic(ctx: Context):
    """Moment ODEs vs scipy and sampling with the exact oracle score, per affine k-component SDE."""
    for sde in ctx.component_sdes:
        name = _name(sde)
        if not sde.is_affine:
            yield CheckResult.skip("analytic", f"{name}: Lyapunov / oracle sampling", "needs an affine SDE")
            continue
        res: dict[str, dict[str, float]] = {}

        def lyap(sde=sde, res=res, name=name) -> CheckResult:
            res["e"] = lyapunov_errors(sde)
            parts = ", ".join(f"{k} {v:.1e}" for k, v in res["e"].items())
            return CheckResult.below(
                "analytic",
                f"{name}: marginal Phi, m, Sigma vs an independent scipy solution of the moment (Lyapunov) ODEs",
                max(res["e"].values()),
                LYAP_TOL,
                f"scipy DOP853 rtol 1e-12 at {len(TIMES)} times; {parts}",
            )

        yield from guarded("analytic", f"{name}: Lyapunov", lyap)
        if len(sde._data_index) != 1:
            yield CheckResult.skip(
                "analytic", f"{name}: oracle sampling", "the mixture oracle needs one data component"
            )
            continue
        n = 4_000 if ctx.quick else 20_000
        runs = [("dopri5", None), ("mexp", 40)] + ([] if ctx.quick else [("srk", 50)])
        for solver, steps in runs:
            label = (
                f"{name}: sample ({solver}{'' if steps is None else f', {steps} steps'}) with the exact oracle score"
            )
            seed = ctx.seed + 11
            yield from guarded(
                "analytic",
                label,
                lambda solver=solver, steps=steps, label=label, seed=seed, sde=sde: CheckResult.below(
                    "analytic",
                    label + ", data component vs its exact law (sliced KS, D / D_crit)",
                    oracle_sampling(sde, solver, steps, n, seed),
                    1.0,
                    f"n = {n}, 16 directions, family-wise level {ALPHA_KS:g}",
                ),
            )


# ---------------------------------------------------------------------------- 2-D Fokker–Planck
def duffing_fp(cells: int, dt: float):
    """The Duffing density at T = 1 on a ``cells x cells`` grid (:class:`.fokker_planck_2d.FokkerPlanck2D`)."""
    from .component_problems import Duffing
    from .fokker_planck_2d import FokkerPlanck2D

    mean, std = DUFFING_START
    return FokkerPlanck2D(Duffing(), DUFFING_DOMAIN, (cells, cells)).solve(mean, std, 1.0, dt)


def duffing_monte_carlo(n: int, seed: int, sde=None) -> np.ndarray:
    """``sdekit.simulate`` of the Duffing oscillator (or ``sde``) to T = 1 (srk, 100 steps), n paths: array (n, 2)."""
    import sdekit

    from .component_problems import Duffing

    sde = Duffing() if sde is None else sde
    (m1, m2), (s1, s2) = DUFFING_START
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.stack(
        [m1 + s1 * torch.randn(n, generator=gen, dtype=F64), m2 + s2 * torch.randn(n, generator=gen, dtype=F64)], 1
    )
    out = sdekit.simulate(sde, x0, [0.0, 1.0], solver="srk", steps=100, generator=gen)
    return out[-1].numpy()


def duffing_comparison(n: int, cells: int, dt: float, seed: int, simulated=None) -> dict[str, object]:
    """Moments and marginal-CDF statistics of the Monte-Carlo sample against the FP solution (module docstring).

    ``simulated``: the SDE to simulate instead of the Duffing oscillator itself (tests: a wrong one must fail)."""
    from .fokker_planck_2d import MOMENT_NAMES

    coarse, fine = duffing_fp(cells, dt), duffing_fp(2 * cells, dt / 2)
    X = duffing_monte_carlo(n, seed, simulated)
    x, v = X[:, 0], X[:, 1]
    q = np.stack([x, v, x**2, v**2, x * v])
    se = q.std(1, ddof=1) / math.sqrt(n)
    grid = np.abs(fine.moments() - coarse.moments())
    diff = np.abs(q.mean(1) - fine.moments())
    moment_ratio = diff / (Z_FP * se + grid)
    ks_crit = math.sqrt(-math.log(ALPHA_FP / 4) / 2) / math.sqrt(n)  # 2 two-sided KS tests, family-wise 1e-4
    ks = []
    for axis, s in ((0, x), (1, v)):
        s = np.sort(s)
        F = fine.cdf(axis, s)
        d = max(float(np.max(np.arange(1, n + 1) / n - F)), float(np.max(F - np.arange(n) / n)))
        g = float(np.abs(fine.edge_cdf(axis)[::2] - coarse.edge_cdf(axis)).max())
        tol = ks_crit + g + fine.cdf_interpolation_error(axis)
        ks.append((d, tol, g))
    return {
        "moments": dict(
            zip(MOMENT_NAMES, zip(q.mean(1), fine.moments(), se, grid, moment_ratio, strict=True), strict=True)
        ),
        "moment_ratio": float(moment_ratio.max()),
        "ks": ks,
        "boundary": fine.boundary_mass(),
        "mass": float(fine.mass.sum()),
    }


@register("forward", quick=True, per_sde=False)
def coupled_fokker_planck(ctx: Context):
    """The Duffing oscillator: 2-D numeric Fokker–Planck vs sdekit.simulate (moments and marginal CDFs)."""
    n = 20_000 if ctx.quick else 100_000
    cells, dt = (70, 0.02) if ctx.quick else (140, 0.01)
    res: dict[str, dict] = {}
    where = f"n = {n} (srk, 100 steps); FP grids {cells}^2 and {2 * cells}^2, dt {dt:g} and {dt / 2:g}"

    def moments() -> CheckResult:
        started = time.perf_counter()
        res["r"] = duffing_comparison(n, cells, dt, ctx.seed + 22)
        r = res["r"]
        parts = "; ".join(
            f"{k}: MC {a:.4f} FP {b:.4f} (SE {c:.1e}, grid {d:.1e})" for k, (a, b, c, d, _) in r["moments"].items()
        )
        return CheckResult.below(
            "forward",
            "Duffing oscillator (2 components, non-affine): moments of simulate vs 2-D Fokker–Planck, |MC - FP| / tol",
            r["moment_ratio"],
            1.0,
            f"tol = {Z_FP} SE + |FP_h - FP_h/2| (5 tests, family-wise 1e-4); {where}; {parts}",
            seconds=time.perf_counter() - started,
        )

    yield from guarded("forward", "Duffing: moments", moments)
    if "r" not in res:
        return
    for axis, label in ((0, "x"), (1, "v")):
        d, tol, g = res["r"]["ks"][axis]
        yield CheckResult.below(
            "forward",
            f"Duffing oscillator: marginal CDF of {label}, KS distance / tol",
            d / tol,
            1.0,
            f"KS {d:.4f}, tol {tol:.4f} = D_crit (2 tests, family-wise 1e-4) + grid {g:.1e} + interpolation; {where}",
        )
    yield CheckResult.below(
        "forward",
        "Duffing oscillator: FP probability in the outer ring of cells (zero-flux walls far enough)",
        res["r"]["boundary"],
        1e-6,
        f"mass conserved: total {res['r']['mass']:.15f}",
    )
