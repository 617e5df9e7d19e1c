r"""Measured convergence orders (group ``"orders"``): fitted log-log slopes vs theory +- 0.25.

Three families, each on a problem whose exact answer is known, over 4 (quick) or 5 (full) step
sizes :math:`h = T/2^k`; the slope of :math:`\log(\text{error})` against :math:`\log h` is fitted by least
squares and must be within 0.25 of the solver's declared order (``TESTING.md``: the fit over a few
levels of a Monte-Carlo mean error scatters by about that much). Plotted to ``orders_*.png``.

**Strong order** (torchsde solvers through sdekit's adapter). With a zero score the adapter integrates
:math:`dX = -[f - \partial_x g^2](X, T - s)\,ds + g(X, T - s)\,dB_s` in :math:`s = T - t`, so two forward
SDEs declared for the purpose give test problems with pathwise closed forms (T = 1):

* additive noise, :math:`f = \lambda x`, :math:`g = (2 - t)^2 e^{-\lambda(1 - t)}`:
  :math:`dX = -\lambda X\,ds + (1 + s)^2 e^{-\lambda s}\,dB`, so
  :math:`X_1 = e^{-\lambda}[X_0 + 4B_1 - 2\int_0^1 B_u\,du - 2\int_0^1 u B_u\,du]`;
* diagonal noise (time-dependent geometric Brownian motion), :math:`f = \mu x`, :math:`g = (a + b(1 - t))x`:
  :math:`X_1 = X_0 \exp\big(-\mu + \tfrac32\int_0^1\sigma_s^2 + (a + b)B_1 - b\int_0^1 B_u\,du\big)`,
  :math:`\sigma_s(u) = a + bu`.

One seeded :class:`torchsde.BrownianInterval` (space-time Lévy area) drives every step count, so
the error :math:`E|X_h - X_1|` is pathwise. These closed forms are the reference answers of the check
(like the published formulas in tests), not something sdekit uses. Time-dependent coefficients avoid
the super-convergence of constant-coefficient problems; ``srk`` on additive noise still
super-converges on a linear drift (slope 2), so there only ``slope >= 1.5 - 0.25`` is required.

**Weak order** of the same runs: :math:`|E\,X_h^2 - E\,X_1^2|` estimated with common random numbers
(:math:`\overline{X_h^2 - X_1^2}` over the same paths, whose Monte-Carlo error is of the size of the
strong error over :math:`\sqrt n`, below the weak error it measures). The weak order is a guaranteed
*rate*, so the rule is one-sided: slope >= order - 0.25. (The upper side is not informative here: the
lognormal tails of GBM make the finest level's estimate noisy; srk on GBM measured 1.80, 2.31, 1.97
with seeds 0, 1, 2 at 1,000 paths.)

Theory is the solver's declared ``weak_order`` (``weak_order_additive`` on the additive problem when
declared: ``srk``'s SRA1 scheme has weak order 2.0, measured 1.99).

Strong orders are checked two-sided, except where the declared order is only a lower bound
(:data:`STRONG_ONE_SIDED`): ``srk`` on additive noise (super-convergence, above), and where the
declaration is a proven bound whose sharpness for that noise type is unknown: ``reversible_heun`` on
diagonal noise is proven order 0.5 (Kidger et al. 2021; torchsde calls its diagonal-noise order
unknown) and measured 0.94 on the GBM problem, so there only ``slope >= 0.5 - 0.25`` is required.

**ODE solvers** (fixed-step torchdiffeq methods and the exponential integrators) on the
probability-flow ODE of a 1-D two-component Gaussian mixture with the exact score (a nonlinear
score, so no special structure helps any method). In 1-D the flow is the monotone rearrangement
:math:`x_\epsilon = F_\epsilon^{-1}(F_T(x_T))` between the exact marginal CDFs (from ``oracle.at(t)``,
derived by sdekit; inverted by bisection to round-off). Error: max over 64 quantiles, float64.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ._core import CheckResult, Context, guarded, register

GROUP = "orders"
F64 = torch.float64
WIDTH = 0.25
LAM, MU, A, B = 1.0, 0.5, 0.5, 0.5
# Grid for int_0^1 u B_u du: its error has std ~ 0.7 FINE^-2 (7e-7 at 2^10, 4e-8 at 2^12), 1-5 % of the
# smallest strong error measured (srk, additive: 1.5e-5 at h = 2^-7, quick; 4e-6 at 2^-8, full).
FINE_QUICK, FINE_FULL = 2**10, 2**12

ODE_ROUNDOFF = 1e-11

# (solver, noise kind) whose declared strong order is only checked as a lower bound (module docstring).
STRONG_ONE_SIDED = {("srk", "additive"), ("reversible_heun", "diagonal")}

STRONG_QUICK = ("euler", "milstein", "srk")
STRONG_FULL = ("euler", "milstein", "srk", "heun", "midpoint", "reversible_heun")
ODE_QUICK = ("ode:euler", "ode:midpoint", "ode:rk4", "exp1", "exp2", "exp3")
ODE_FULL = (
    "ode:euler",
    "ode:midpoint",
    "ode:heun2",
    "ode:heun3",
    "ode:rk4",
    "ode:explicit_adams",
    "ode:implicit_adams",
    "exp1",
    "exp2",
    "exp3",
)


@dataclass
class Ladder:
    """Errors at step sizes ``hs`` and the fitted log-log slope."""

    hs: list[float]
    errors: list[float]

    floor: float = 0.0

    @property
    def slope(self) -> float:
        """Least-squares slope of log(error) vs log(h) (nan if an error is not positive and finite).

        Levels whose error is below :attr:`floor` (round-off) are left out of the fit while 3 levels remain.
        """
        e = np.asarray(self.errors, dtype=float)
        h = np.asarray(self.hs, dtype=float)
        if not np.all(np.isfinite(e)) or np.any(e <= 0):
            return math.nan
        keep = e >= self.floor
        if keep.sum() >= 3:
            e, h = e[keep], h[keep]
        return float(np.polyfit(np.log(h), np.log(e), 1)[0])


# ---------------------------------------------------------------------------- strong / weak
@functools.cache
def strong_problem(kind: str):
    """The forward SDE whose zero-score reverse run has a pathwise closed form (``"additive"`` or ``"diagonal"``)."""
    import sdekit

    if kind == "additive":
        return sdekit.SDE.from_expressions("lam*x", "(2 - t)**2*exp(-lam*(1 - t))", lam=LAM, name="AdditiveTest")
    if kind == "diagonal":
        return sdekit.SDE.from_expressions("mu*x", "(a + b*(1 - t))*x", mu=MU, a=A, b=B, name="GBMTest")
    raise ValueError(f"kind must be 'additive' or 'diagonal', got {kind!r}")


def _int_u_w(bm, fine: int) -> torch.Tensor:
    r""":math:`\int_0^1 u B_u\,du` from a fine grid of exact increments and space-time Lévy areas."""
    total = 0.0
    w_a = 0.0
    for i in range(fine):
        a, b = i / fine, (i + 1) / fine
        dw, du = bm(a, b, return_U=True)
        total = total + w_a * (b * b - a * a) / 2 + (a + b) / 2 * du
        w_a = w_a + dw
    return total


def exact_solution(kind: str, x0: torch.Tensor, bm, fine: int = FINE_FULL) -> torch.Tensor:
    """Pathwise closed-form X_1 of :func:`strong_problem` on the Brownian path ``bm`` (module docstring)."""
    w, u = bm(0.0, 1.0, return_U=True)
    if kind == "additive":
        return math.exp(-LAM) * (x0 + 4 * w - 2 * u - 2 * _int_u_w(bm, fine))
    int_sigma2 = A * A + A * B + B * B / 3
    return x0 * torch.exp(-MU + 1.5 * int_sigma2 + (A + B) * w - B * u)


def solve_on_path(solver: str, sde, x0: torch.Tensor, bm, steps: int) -> torch.Tensor:
    """Run ``solver`` through sdekit's adapter with a zero score on the given Brownian path, T -> 0."""
    import sdekit
    from sdekit.solvers import SamplingProblem

    problem = SamplingProblem(
        sde=sde,
        score=lambda x, t: torch.zeros_like(x),
        x_T=x0,
        t_start=float(sde.T),
        t_end=0.0,
        steps=steps,
        rtol=1e-3,
        atol=1e-3,
        generator=None,
        progress=lambda n: None,
        options={"bm": bm, "grid": "uniform"},  # h = 1/steps exactly; t_end = 0 has no log-SNR
    )
    with torch.no_grad():
        x, _ = sdekit.solvers.get(solver).solve(problem)
    return x


@functools.lru_cache(maxsize=4)
def _paths(kind: str, paths: int, seed: int, fine: int) -> tuple[torch.Tensor, object, torch.Tensor]:
    """Start points, one seeded Brownian path per sample (reused by every solver) and the exact X_1."""
    import torchsde

    x0 = torch.ones(paths, 1, dtype=F64)
    bm = torchsde.BrownianInterval(
        t0=0.0, t1=1.0, size=(paths, 1), dtype=F64, entropy=seed, levy_area_approximation="space-time"
    )
    return x0, bm, exact_solution(kind, x0, bm, fine)


def strong_weak_errors(solver: str, kind: str, levels: tuple[int, ...], paths: int, seed: int) -> tuple[Ladder, Ladder]:
    """Strong errors E|X_h - X_1| and weak errors |mean(X_h^2 - X_1^2)| at h = 2^-k, one Brownian path set."""
    sde = strong_problem(kind)
    x0, bm, exact = _paths(kind, paths, seed, FINE_QUICK if paths <= 1000 else FINE_FULL)
    hs, strong, weak = [], [], []
    for k in levels:
        xh = solve_on_path(solver, sde, x0, bm, 2**k)
        hs.append(2.0**-k)
        strong.append(float((xh - exact).abs().mean()))
        weak.append(float((xh**2 - exact**2).mean().abs()))
    return Ladder(hs, strong), Ladder(hs, weak)


# ---------------------------------------------------------------------------- PF-ODE
def _quantile(cdf: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Solve cdf(x) = u by bisection (float64; 100 halvings of [lo, hi] reach round-off)."""
    a = torch.full_like(u, lo)
    b = torch.full_like(u, hi)
    for _ in range(100):
        mid = (a + b) / 2
        below = cdf(mid) < u
        a = torch.where(below, mid, a)
        b = torch.where(below, b, mid)
    return (a + b) / 2


def ode_errors(solver: str, sde, levels: tuple[int, ...], n: int = 64) -> Ladder:
    r"""Max error of ``solver`` on the PF-ODE of a 1-D Gaussian mixture vs the exact transport map.

    In 1-D the probability-flow map is the monotone rearrangement :math:`x_\epsilon = F_\epsilon^{-1}(F_T(x_T))`
    with the exact marginal CDFs of ``oracle.at(t)``; the start points are the quantiles
    :math:`x_T = F_T^{-1}(u_i)`, :math:`u_i` evenly spaced in [0.02, 0.98].
    """
    import sdekit
    from sdekit import analytic
    from sdekit._stats import mixture_projected_cdf

    data = analytic.GaussianMixture(
        torch.tensor([-1.5, 1.0], dtype=F64), torch.tensor([0.4, 0.6], dtype=F64), torch.tensor([0.4, 0.6])
    )
    oracle = data.diffuse(sde)
    eps = sde.default_eps
    one = torch.ones(1, 1, dtype=F64)
    u = torch.linspace(0.02, 0.98, n, dtype=F64)
    ends = []
    for t in (sde.T, eps):
        law = oracle.at(t)
        cdf = mixture_projected_cdf(law, one)
        spread = 12 * float(law.covariance().sqrt()) + float(law.mean().abs())
        ends.append(_quantile(lambda z, cdf=cdf: cdf(z, 0), u, -spread, spread).reshape(n, 1))
    x_T, want = ends
    hs, errs = [], []
    for k in levels:
        steps = 2**k
        x = sdekit.sample(oracle, sde, (n, 1), solver=solver, steps=steps, x_T=x_T, eps=eps, denoise=False, dtype=F64)
        hs.append(1.0 / steps)
        errs.append(float((x - want).abs().max()))
    # Below ~1e-11 (states of size ~1, float64 over hundreds of steps, bisection to 1e-15) errors are round-off.
    return Ladder(hs, errs, floor=ODE_ROUNDOFF)


# ---------------------------------------------------------------------------- checks
def _plot(ctx: Context, name: str, title: str, curves: dict[str, tuple[Ladder, float]], xlabel: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (label, (lad, order)) in enumerate(curves.items()):
        color = f"C{i % 10}"
        e = np.asarray(lad.errors, dtype=float)
        ok = np.isfinite(e) & (e > 0)
        if not ok.any():
            continue
        hs = np.asarray(lad.hs)[ok]
        ax.loglog(hs, e[ok], "o-", color=color, label=f"{label}: slope {lad.slope:.2f} (theory {order:g})")
        ax.loglog(hs, e[ok][0] * (hs / hs[0]) ** order, ":", color=color, lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("error")
    ax.set_title(title + "  (dotted: theory slope)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(ctx.figure_path(name), dpi=90)
    plt.close(fig)
    return name


def _slope_line(name: str, lad: Ladder, order: float, where: str, at_least: bool = False) -> CheckResult:
    errs = ", ".join(f"{e:.2g}" for e in lad.errors)
    if at_least:
        return CheckResult.at_least(
            GROUP,
            name,
            lad.slope,
            order - WIDTH,
            f"{where}; slope >= {order:g} - 0.25 (one-sided); errors {errs}",
        )
    return CheckResult.within(GROUP, name, lad.slope, order, WIDTH, f"{where}; theory {order:g} +- 0.25; errors {errs}")


def _with_figure(lines: list[CheckResult], fig: Callable[[], str]) -> list[CheckResult]:
    import dataclasses

    if lines:
        try:
            lines[-1] = dataclasses.replace(lines[-1], figure=fig())
        except Exception as err:  # a plotting problem must not hide the measured lines
            lines.append(CheckResult.crashed(GROUP, "orders plot", err))
    return lines


@register(GROUP, quick=True, per_sde=False)
def strong_and_weak(ctx: Context):
    """Strong and weak orders of the torchsde solvers on two pathwise-solvable problems."""
    import sdekit

    # From h = 2^-4: at 2^-3 the weak error of E X^2 under GBM is pre-asymptotic (euler 0.76 over 2^-3..2^-6,
    # 0.86 over 2^-4..2^-7; measured with 1000 paths).
    levels = (4, 5, 6, 7) if ctx.quick else (4, 5, 6, 7, 8)
    paths = 1000 if ctx.quick else 4000
    solvers = STRONG_QUICK if ctx.quick else STRONG_FULL
    avail = sdekit.solvers.available()
    strong_lines: list[CheckResult] = []
    weak_lines: list[CheckResult] = []
    strong_curves: dict[str, tuple[Ladder, float]] = {}
    weak_curves: dict[str, tuple[Ladder, float]] = {}
    where = f"{paths} paths, h = 2^-{levels[0]}..2^-{levels[-1]}"
    for solver in solvers:
        if solver not in avail:
            continue
        cls = avail[solver]
        for kind in ("additive", "diagonal"):
            order = cls.strong_order_additive if kind == "additive" and cls.strong_order_additive else cls.strong_order
            res: dict[str, tuple[Ladder, Ladder]] = {}

            def measure(solver=solver, kind=kind, order=order, res=res) -> CheckResult:
                res["r"] = strong_weak_errors(solver, kind, levels, paths, ctx.seed + 1234)
                lad = res["r"][0]
                one_sided = (solver, kind) in STRONG_ONE_SIDED
                return _slope_line(f"strong order {solver} ({kind} noise)", lad, order, where, at_least=one_sided)

            line = guarded(GROUP, f"strong order {solver} ({kind} noise)", measure)
            strong_lines += line
            while len(strong_lines) > 1:  # hold the last line back: it carries the plot
                yield strong_lines.pop(0)
            if "r" not in res:
                continue
            strong_curves[f"{solver} {kind}"] = (res["r"][0], order)
            w_order = cls.weak_order_additive if kind == "additive" and cls.weak_order_additive else cls.weak_order
            if w_order is None:
                continue
            weak_curves[f"{solver} {kind}"] = (res["r"][1], w_order)
            w = _slope_line(
                f"weak order {solver} ({kind} noise), |E X^2 error|",
                res["r"][1],
                w_order,
                where + ", common random numbers",
                at_least=True,
            )
            weak_lines.append(w)
    yield from _with_figure(
        strong_lines, lambda: _plot(ctx, "orders_strong.png", "strong error E|X_h - X|", strong_curves, "h")
    )
    yield from _with_figure(
        weak_lines, lambda: _plot(ctx, "orders_weak.png", "weak error |E X_h^2 - E X^2|", weak_curves, "h")
    )


@register(GROUP, quick=True)
def ode_orders(ctx: Context):
    """Global orders of fixed-step PF-ODE solvers against the exact Gaussian transport map."""
    import sdekit
    from sdekit.symbolic import zoo

    avail = sdekit.solvers.available()
    if ctx.user_sde:
        sdes = [s for s in ctx.sdes if s.is_affine]
        for s in ctx.sdes:
            if not s.is_affine:
                yield CheckResult.skip(GROUP, f"{type(s).__name__}: PF-ODE orders", "needs an affine SDE (exact map)")
    else:
        sdes = [zoo.VPSDE()] if ctx.quick else [zoo.VPSDE(), zoo.VESDE()]
    solvers = ODE_QUICK if ctx.quick else ODE_FULL
    # Full run from 128: the Adams methods' start (3 rk4 steps, then AB3 + AM4) is pre-asymptotic below that
    # (implicit_adams error ratios per doubling: VP 2.3, 17, 16, 16 from 32 steps; VE 4.1, 17, 16, 16 from 64).
    # Quick from 64: on the default log-SNR grid ode:euler is pre-asymptotic at 32 steps on VP (errors 0.088, 0.056,
    # 0.032 at 32, 64, 128; slope 0.93 from 64 to 1024).
    levels = (6, 7, 8, 9) if ctx.quick else (7, 8, 9, 10, 11)
    lines: list[CheckResult] = []
    curves: dict[str, tuple[Ladder, float]] = {}
    for sde in sdes:
        for solver in solvers:
            if solver not in avail:
                continue
            order = avail[solver].weak_order
            name = f"PF-ODE order {solver} ({type(sde).__name__}, 1-D mixture)"
            res: dict[str, Ladder] = {}

            def measure(solver=solver, sde=sde, order=order, res=res, name=name) -> CheckResult:
                res["l"] = ode_errors(solver, sde, levels)
                return _slope_line(name, res["l"], float(order), f"64 quantiles, steps 2^{levels[0]}..2^{levels[-1]}")

            got = guarded(GROUP, name, measure)
            if "l" in res:
                curves[f"{solver} {type(sde).__name__}"] = (res["l"], float(order))
            lines += got
            if len(lines) > 1:
                yield lines.pop(0)
    yield from _with_figure(
        lines,
        lambda: _plot(ctx, "orders_ode.png", "PF-ODE error vs exact transport map (1-D mixture)", curves, "1 / steps"),
    )
