r"""Fokker–Planck checks of the numeric solver itself (group ``fokker-planck``), against exact answers first.

The numeric solver (:mod:`validation.fokker_planck`): L1 distance to the exact Gaussian kernels of the affine SDEs
(``sdekit.analytic``), to the stationary Gibbs density :math:`\propto e^{-U}` of overdamped Langevin dynamics
:math:`dx = -U'(x)\,dt + \sqrt2\,dW` (drift derived from U with sympy), its convergence order in h and dt, its
operator against sdekit's symbolic Fokker–Planck operator, mass conservation and positivity.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import scipy.linalg
import sympy as sp
import torch

import sdekit
from sdekit.symbolic._symbols import t as T_SYM
from sdekit.symbolic._symbols import x as X_SYM

from ._core import CheckResult, Context, guarded, register
from ._figures import figure, with_figure
from .fokker_planck import FokkerPlanck1D, FPSolution, cell_averages
from .fp_problems import Settings, example_sde, langevin_sde, numpy_pdf, settings

__all__ = [
    "KERNEL_L1_TOL",
    "kernel_errors",
    "stationary_errors",
    "spectral_gap",
    "time_order",
    "operator_errors",
    "check_kernels",
    "check_operator",
    "check_stationary",
    "check_time_order",
]

KERNEL_L1_TOL = 1e-3
"""Target L1 error of the numeric solver against exact densities (issue #8)."""


def _kernel_case(sde: sdekit.SDE, m0: float, s0: float, max_sd: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Output times (up to where the marginal std reaches max_sd) and a domain for a Gaussian p0."""
    ts = np.linspace(0.0, sde.T, 401)[1:]
    tt = torch.as_tensor(ts)
    alpha = sde.marginal.alpha(tt).numpy()
    off = sde.marginal.offset(tt).numpy()
    sig = sde.marginal.sigma(tt).numpy()
    mean = alpha * m0 + off
    sd = np.sqrt(alpha**2 * s0**2 + sig**2)
    ok = np.flatnonzero(sd <= max_sd)
    t_max = ts[ok[-1]] if ok.size and ok[0] == 0 else ts[0]
    times = np.array([0.0, t_max / 4, t_max / 2, 3 * t_max / 4, t_max])
    keep = ts <= t_max
    width = 10 * max(s0, float(sd[keep].max()))
    return times, (min(m0, float(mean[keep].min())) - width, max(m0, float(mean[keep].max())) + width)


def kernel_errors(
    sde: sdekit.SDE,
    h: float = 0.02,
    steps: int = 400,
    m0: float = 0.5,
    s0: float = 0.3,
    max_sd: float = 5.0,
    method: str = "cn",
) -> tuple[np.ndarray, np.ndarray, FPSolution]:
    r"""L1 errors of the numeric solution from :math:`p_0 = N(m_0, s_0^2)` against the exact Gaussian kernels.

    The exact :math:`p_t` is ``sdekit.analytic.Gaussian(m0, s0).diffuse(sde).at(t)`` (derived from the
    marginal). Times run up to the largest t in [0, T] where the marginal std stays below ``max_sd``
    (VE/EDM: the grid must resolve both p_0 and p_t). Returns ``(times, l1, solution)``.
    """
    times, domain = _kernel_case(sde, m0, s0, max_sd)
    cells = max(3, math.ceil((domain[1] - domain[0]) / h))
    fp = FokkerPlanck1D(sde, domain, cells)
    oracle = sdekit.analytic.Gaussian(torch.tensor([m0], dtype=torch.float64), torch.tensor([s0], dtype=torch.float64))
    sol = fp.solve(numpy_pdf(oracle), times, dt=times[-1] / steps, method=method)
    diffused = oracle.diffuse(sde)
    l1 = np.array([sol.l1(k, numpy_pdf(diffused.at(float(t)))) for k, t in enumerate(times)])
    return times, l1, sol


def spectral_gap(fp: FokkerPlanck1D, t: float = 0.0) -> float:
    r"""Spectral gap :math:`-\lambda_2` of :math:`L(t)` (relaxation rate to the stationary state).

    In 1-D the zero-flux L satisfies detailed balance, so it is similar to the symmetric tridiagonal matrix with
    the same diagonal and off-diagonal :math:`\sqrt{L_{i,i+1} L_{i+1,i}}`; its top eigenvalues come from
    ``scipy.linalg.eigvalsh_tridiagonal`` (no dense eigensolver).
    """
    L = fp.operator(t)
    off = np.sqrt(L.diagonal(1) * L.diagonal(-1))
    top = scipy.linalg.eigvalsh_tridiagonal(L.diagonal(), off, select="i", select_range=(fp.cells - 2, fp.cells - 1))
    return float(-top[0])


def stationary_errors(
    U: str = "x**4/4 - x**2/2",
    cells: int = 400,
    domain: tuple[float, float] = (-4.0, 4.0),
    t_end: float = 20.0,
    steps: int = 1000,
) -> tuple[float, float, float]:
    r"""L1 distances to the Gibbs density :math:`e^{-U}/Z` for :math:`dx = -U'\,dt + \sqrt2\,dW`.

    Returns ``(l1_stationary_state, l1_long_time, mass_error)``: the discrete zero-flux state, the
    solution at ``t_end`` from :math:`p_0 = N(1, 0.3^2)`, and its largest mass deviation. The double well's
    spectral gap is 0.79 (eigenvalues of L on 400 cells), so at ``t_end = 20`` the distance left from
    relaxation is ~e^{-16}; at t = 10 it would be 3.6e-4.
    """
    from scipy.integrate import quad

    Ue = sp.sympify(U, locals={"x": X_SYM})
    U_np = sp.lambdify(X_SYM, Ue, "numpy")
    Z = quad(lambda z: math.exp(-float(U_np(z))), -50, 50, limit=200)[0]
    tail = (
        quad(lambda z: math.exp(-float(U_np(z))), -50, domain[0], limit=200)[0]
        + quad(lambda z: math.exp(-float(U_np(z))), domain[1], 50, limit=200)[0]
    )
    gibbs = lambda z: np.exp(-U_np(z)) / Z  # noqa: E731
    fp = FokkerPlanck1D(langevin_sde(Ue), domain, cells)
    st = FPSolution(fp, np.array([0.0]), fp.stationary()[None])
    p0 = lambda z: np.exp(-((z - 1.0) ** 2) / (2 * 0.09)) / math.sqrt(2 * math.pi * 0.09)  # noqa: E731
    sol = fp.solve(p0, [0.0, t_end / 2, t_end], dt=t_end / steps)
    mass = max(abs(sol.mass(k) - 1) for k in range(3))
    return st.l1(0, gibbs, tail / Z), sol.l1(2, gibbs, tail / Z), mass


def time_order(method: str = "cn", dts: tuple[float, ...] = (0.05, 0.025, 0.0125), cells: int = 2000) -> float:
    r"""Fitted order in dt of the L1 error at t = 0.5 for VPSDE (time-dependent coefficients) from N(0.5, 0.3^2).

    On 2000 cells of [-5, 5] the spatial part of the error is ~2e-6, below the time error at these dt.
    """
    sde = sdekit.VPSDE()
    f64 = torch.float64
    oracle = sdekit.analytic.Gaussian(torch.tensor([0.5], dtype=f64), torch.tensor([0.3], dtype=f64))
    exact = numpy_pdf(oracle.diffuse(sde).at(0.5))
    fp = FokkerPlanck1D(sde, (-5.0, 5.0), cells)
    errs = [fp.solve(numpy_pdf(oracle), [0.0, 0.5], dt=dt, method=method).l1(1, exact) for dt in dts]
    return float(np.polyfit(np.log(dts), np.log(errs), 1)[0])


def operator_errors(sde: sdekit.SDE, t: float, cells: tuple[int, ...] = (200, 400, 800)) -> np.ndarray:
    r"""Max error on :math:`|x| \le 3` of :math:`L(t)\,p_h` against sdekit's symbolic Fokker–Planck operator.

    For :math:`p = e^{-x^2}/\sqrt\pi` (free of t), :math:`\partial_t p = -\texttt{sde.fokker\_planck}(p)`
    = :math:`-(f p)' + \tfrac12 (g^2 p)''`, evaluated in cell averages; grid (-6, 6) with ``cells`` cells.
    """
    p_expr = sp.exp(-(X_SYM**2)) / sp.sqrt(sp.pi)
    rhs = sp.lambdify((X_SYM, T_SYM), -sde.subs(sde.fokker_planck(p_expr)), "numpy")
    p_np = sp.lambdify(X_SYM, p_expr, "numpy")
    errs = []
    for c in cells:
        fp = FokkerPlanck1D(sde, (-6.0, 6.0), c)
        Lp = fp.operator(t) @ cell_averages(p_np, fp.edges)
        exact = cell_averages(lambda z: np.broadcast_to(rhs(z, t), np.shape(z)), fp.edges)
        errs.append(float(np.abs(Lp - exact)[np.abs(fp.centers) <= 3].max()))
    return np.array(errs)


def _affine(ctx: Context) -> list[sdekit.SDE]:
    sdes = [sde for sde in ctx.sdes if sde.is_affine]
    if not ctx.user_sde and not any(isinstance(s_, sdekit.OrnsteinUhlenbeck) for s_ in sdes):
        sdes.append(sdekit.OrnsteinUhlenbeck())
    return sdes


def _kernel_lines(sde: sdekit.SDE, s: Settings, panels: list) -> list[CheckResult]:
    start = time.perf_counter()
    times, l1, sol = kernel_errors(sde, h=s.h_kernel, steps=s.steps_kernel)
    panels.append((sde, times, sol))
    name = type(sde).__name__
    return [
        CheckResult.below(
            "fokker-planck",
            f"{name}: numeric FP vs exact Gaussian kernel, max L1 over t <= {times[-1]:.3g}",
            float(l1.max()),
            KERNEL_L1_TOL,
            f"issue #8 target; scheme error O(h^2 + dt^2) at h = {s.h_kernel}, {s.steps_kernel} CN steps; "
            f"exact: sdekit.analytic.Gaussian(0.5, 0.3).diffuse(sde)",
            seconds=time.perf_counter() - start,
        ),
        CheckResult.below(
            "fokker-planck",
            f"{name}: mass conserved by the FP solver",
            max(abs(sol.mass(k) - 1) for k in range(times.size)),
            1e-10,
            "round-off: conservative fluxes, the columns of L sum to 0 (1e-16 per step and cell, with margin)",
        ),
    ]


@register("fokker-planck", quick=True)
def check_kernels(ctx: Context) -> list[CheckResult]:
    """Numeric FP vs the exact Gaussian kernel of every affine SDE (L1 < 1e-3), with mass conservation."""
    s = settings(ctx.quick)
    out: list[CheckResult] = []
    panels: list = []
    sdes = _affine(ctx)
    if not sdes:
        return [
            CheckResult.skip(
                "fokker-planck",
                "numeric FP vs exact Gaussian kernels",
                "no affine SDE to check (the kernel needs f = a(t) x + b(t), g = g(t))",
            )
        ]
    for sde in sdes:
        out += guarded(
            "fokker-planck",
            f"{type(sde).__name__}: numeric FP vs exact Gaussian kernel",
            lambda: _kernel_lines(sde, s, panels),
        )

    def draw(axes: list[Any]) -> None:
        gauss = sdekit.analytic.Gaussian(
            torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64)
        )
        for ax, (sde, times, sol) in zip(axes, panels):
            x = sol.solver.centers
            for k in range(1, times.size):
                ax.plot(x, sol.p[k], lw=1, label=f"t={times[k]:.2g}")
                ax.plot(x, numpy_pdf(gauss.diffuse(sde).at(float(times[k])))(x), "k:", lw=1)
            half = min(8.0, max(abs(x[0]), abs(x[-1])))
            ax.set_xlim(-half, half)
            ax.set_title(f"{type(sde).__name__}: FP (solid) vs exact (dotted)", fontsize=9)
            ax.legend(fontsize=6)

    return with_figure(out, figure(ctx.out / "fp_kernels.png", draw, len(panels)) if panels else None)


@register("fokker-planck", quick=True)
def check_operator(ctx: Context) -> list[CheckResult]:
    """The numeric FP operator converges (order 2 in h) to sdekit's symbolic Fokker-Planck operator, every SDE.

    The suite's non-affine example is checked too, except when the SDEs are the user's (``--sde``)."""
    cells = (200, 400, 800)
    out: list[CheckResult] = []
    for sde in [*ctx.sdes] + ([] if ctx.user_sde else [example_sde()]):
        name = type(sde).__name__
        t = 0.5 * sde.T

        def line(sde: sdekit.SDE = sde, name: str = name, t: float = t) -> CheckResult:
            errs = operator_errors(sde, t, cells)
            slope = float(-np.polyfit(np.log(cells), np.log(errs), 1)[0])
            return CheckResult.within(
                "fokker-planck",
                f"{name}: numeric FP operator -> sde.fokker_planck, order in h at t = {t:g}",
                slope,
                2.0,
                0.25,
                f"target 2 (second-order fluxes), +-0.25 (TESTING.md); p = e^(-x^2)/sqrt(pi), |x| <= 3, "
                f"max error {errs[-1]:.1e} at {cells[-1]} cells of (-6, 6)",
            )

        out += guarded("fokker-planck", f"{name}: numeric FP operator vs sde.fokker_planck", line)
    return out


@register("fokker-planck", quick=True, per_sde=False)
def check_stationary(ctx: Context) -> list[CheckResult]:
    r"""Numeric FP vs the Gibbs density e^{-U}/Z (double well U = x^4/4 - x^2/2), and its order in h."""
    start = time.perf_counter()
    cells = (100, 200, 400, 800)
    errs = [stationary_errors(cells=c, steps=800 if ctx.quick else 2000) for c in cells]
    gap = spectral_gap(FokkerPlanck1D(langevin_sde("x**4/4 - x**2/2"), (-4.0, 4.0), 400))
    st = np.array([e[0] for e in errs])
    slope = float(-np.polyfit(np.log(cells), np.log(st), 1)[0])
    where = "issue #8 target; exact: p_inf = e^{-U}/Z (Z by quadrature) for dx = -U' dt + sqrt(2) dW"
    sec = time.perf_counter() - start
    return [
        CheckResult.below(
            "fokker-planck",
            "double well: zero-flux stationary state vs e^{-U}/Z (L1, 400 cells)",
            st[2],
            KERNEL_L1_TOL,
            where,
            seconds=sec,
        ),
        CheckResult.below(
            "fokker-planck",
            "double well: p(t = 20) from N(1, 0.3^2) vs e^{-U}/Z (L1, 400 cells)",
            errs[2][1],
            KERNEL_L1_TOL,
            f"{where}; spectral gap of L = {gap:.3g}: e^(-gap t) = {math.exp(-20 * gap):.1e} at t = 20",
        ),
        CheckResult.within(
            "fokker-planck",
            "double well: order of the L1 error in h (100..800 cells)",
            slope,
            2.0,
            0.25,
            "target 2 (second-order scheme), +-0.25 (TESTING.md)",
        ),
        CheckResult.below(
            "fokker-planck",
            "double well: mass conserved over 20 time units",
            errs[2][2],
            1e-10,
            "round-off (conservative scheme)",
        ),
    ]


@register("fokker-planck", quick=True, per_sde=False)
def check_time_order(ctx: Context) -> list[CheckResult]:
    """Order in dt of the FP time stepping on VPSDE: Crank-Nicolson 2, backward Euler 1."""
    where = "target {} ({}), +-0.25 (TESTING.md); VPSDE, dt = 0.05, 0.025, 0.0125, 2000 cells"
    return [
        CheckResult.within(
            "fokker-planck",
            "VPSDE: order in dt of Crank-Nicolson (Rannacher start)",
            time_order("cn"),
            2.0,
            0.25,
            where.format(2, "second order"),
        ),
        CheckResult.within(
            "fokker-planck",
            "VPSDE: order in dt of backward Euler",
            time_order("euler"),
            1.0,
            0.25,
            where.format(1, "first order"),
        ),
    ]
