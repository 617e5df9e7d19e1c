r"""Fokker–Planck checks: the numeric solver's self-validation, forward paths, and the reverse check.

Three groups (registered with :func:`validation._core.register`):

``fokker-planck``
    The numeric solver (:mod:`validation.fokker_planck`) checked against exact answers first:
    L1 distance to the exact Gaussian kernels of the affine SDEs (``sdekit.analytic``), to the
    stationary Gibbs density :math:`\propto e^{-U}` of overdamped Langevin dynamics
    :math:`dx = -U'(x)\,dt + \sqrt2\,dW` (drift derived from U with sympy), its convergence order in
    h, mass conservation and positivity.
``forward``
    Paths of a non-affine SDE simulated with :func:`sdekit.simulate` against the numeric
    Fokker–Planck density at several times: Kolmogorov–Smirnov distance (exact critical value)
    and binned L1 (McDiarmid bound).
``reverse``
    The strongest check: for a non-affine SDE with a state-dependent diffusion
    (:math:`dx = (x - x^3)\,dt + \sqrt{1 + x^2}\,dW` by default), the numeric score
    :math:`\partial_x \log p_t` from the Fokker–Planck solution drives the *derived* reverse SDE and
    probability-flow ODE (:func:`sdekit.sample` with ``x_T`` drawn from the numeric :math:`p_T`)
    back to :math:`t = \epsilon`; the samples are compared with the numeric :math:`p_\epsilon`. No
    closed form exists, and the divergence term :math:`\partial_x g^2` matters: a negative control
    drops it and must fail.

Tolerances (each result's ``where`` states its origin):

* KS: the exact one-sample Kolmogorov critical value ``scipy.stats.kstwo.ppf(1 - alpha/k, n)``
  (family-wise level alpha over k comparisons), plus half the estimated L1 error of the numeric
  density (a density L1 error e moves the CDF by at most e/2).
* Binned L1 :math:`\sum_j |N_j/n - P_j|`: :math:`E \le \sum_j \sqrt{P_j(1-P_j)/n}` (Jensen) and,
  since one sample moves it by at most 2/n, McDiarmid gives
  :math:`P(L1 > E + \sqrt{2\ln(k/\alpha)/n}) \le \alpha/k`; plus the numeric density's L1 error.
* The numeric density's error is estimated by Richardson: :math:`\|p_h - p_{2h}\|_1 / 3` for a
  second-order scheme, measured on the run itself.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import sympy as sp
import torch
from scipy.stats import kstwo

import sdekit
from sdekit.symbolic._symbols import t as T_SYM
from sdekit.symbolic._symbols import x as X_SYM

from ._core import CheckResult, Context, guarded, register
from .fokker_planck import FokkerPlanck1D, FPSolution, cell_averages

__all__ = [
    "example_sde",
    "example_p0",
    "langevin_sde",
    "Settings",
    "Problem",
    "example_problem",
    "user_problem",
    "settings",
    "kernel_errors",
    "stationary_errors",
    "spectral_gap",
    "time_order",
    "operator_errors",
    "forward_statistics",
    "reverse_statistics",
    "ks_statistic",
    "ks_critical",
    "cdf_interpolation_error",
    "binned_l1",
    "check_kernels",
    "check_operator",
    "check_stationary",
    "check_time_order",
    "check_forward",
    "check_reverse",
]

ALPHA = 1e-3
"""Family-wise false-failure rate of each statistical check."""

KERNEL_L1_TOL = 1e-3
"""Target L1 error of the numeric solver against exact densities (issue #8)."""


# ---------------------------------------------------------------------------- problems
def example_sde() -> sdekit.SDE:
    r"""The non-affine example :math:`dx = (x - x^3)\,dt + \sqrt{1 + x^2}\,dW`, T = 1.

    A double well with multiplicative noise: :math:`\partial_x g^2 = 2x`, so the divergence term of the
    reverse drift matters.
    """
    return sdekit.SDE.from_expressions("x - x**3", "sqrt(1 + x**2)", T=1.0, name="DoubleWellMultiplicative")


def example_p0() -> sdekit.analytic.GaussianMixture:
    """The asymmetric bimodal data law of the forward/reverse checks: 0.35 N(-1, 0.25^2) + 0.65 N(0.8, 0.2^2)."""
    return sdekit.analytic.GaussianMixture(
        torch.tensor([[-1.0], [0.8]]), torch.tensor([0.25, 0.2]), torch.tensor([0.35, 0.65])
    )


def langevin_sde(U: sp.Expr | str) -> sdekit.SDE:
    r"""Overdamped Langevin dynamics :math:`dx = -U'(x)\,dt + \sqrt2\,dW` in a potential U(x).

    The drift is derived from U with sympy; the stationary density is :math:`e^{-U}/Z`.
    """
    U = sp.sympify(U, locals={"x": X_SYM})
    return sdekit.SDE.from_expressions(-sp.diff(U, X_SYM), sp.sqrt(2), T=10.0, name="OverdampedLangevin")


def _numpy_pdf(dist: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A vectorised numpy density from a 1-D sdekit.analytic distribution (log_prob on (n, 1) float64)."""

    def pdf(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        lp = dist.log_prob(torch.as_tensor(x.reshape(-1, 1), dtype=torch.float64))
        return np.exp(lp.numpy()).reshape(x.shape)

    return pdf


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of one run (quick or full)."""

    h_kernel: float  # cell width of the Gaussian-kernel cases (p0 std 0.3)
    steps_kernel: int  # time steps of the Gaussian-kernel cases
    cells: int  # cells of the example SDE on its domain
    fp_steps: int  # FP time steps on [0, T] for the example SDE
    n_forward: int
    steps_forward: int
    n_reverse: int
    steps_reverse: int  # reverse-SDE Euler steps
    steps_pf: int  # PF-ODE rk4 steps


QUICK = Settings(0.02, 400, 800, 800, 20_000, 400, 20_000, 1000, 100)
FULL = Settings(0.01, 1000, 1600, 2000, 100_000, 2000, 100_000, 4000, 200)


def settings(quick: bool) -> Settings:
    """The quick or full sizes."""
    return QUICK if quick else FULL


# ---------------------------------------------------------------------------- statistics
def ks_statistic(samples: torch.Tensor | np.ndarray, solution: FPSolution, k: int) -> float:
    """Kolmogorov–Smirnov distance between the samples and the numeric CDF at ``times[k]``."""
    x = np.sort(np.asarray(samples, dtype=float).reshape(-1))
    n = x.size
    F = solution.cdf(x, k)
    i = np.arange(1, n + 1)
    return float(max((i / n - F).max(), (F - (i - 1) / n).max()))


def ks_critical(n: int, alpha: float) -> float:
    """Exact critical value of the one-sample KS statistic at level alpha (``scipy.stats.kstwo``)."""
    return float(kstwo.ppf(1.0 - alpha, n))


def binned_l1(
    samples: torch.Tensor | np.ndarray, solution: FPSolution, k: int, bins: int = 40, alpha: float = ALPHA
) -> tuple[float, float, np.ndarray, np.ndarray]:
    r"""Binned L1 :math:`\sum_j |N_j/n - P_j|` and its Monte-Carlo bound at level alpha.

    Bins: about ``bins`` equal bins between the numeric 0.1% and 99.9% quantiles, snapped to cell edges
    (so each :math:`P_j` is an exact sum of cell masses), plus the two tails.
    Returns ``(l1, bound, bin_edges, counts)``; the bound is
    :math:`\sum_j\sqrt{P_j(1-P_j)/n} + \sqrt{2\ln(1/\alpha)/n}` (Jensen + McDiarmid).
    """
    x = np.asarray(samples, dtype=float).reshape(-1)
    n = x.size
    s = solution.solver
    cum = solution.cdf(s.edges, k)
    lo, hi = np.interp([1e-3, 1 - 1e-3], cum, s.edges)
    idx = np.unique(np.rint((np.linspace(lo, hi, bins + 1) - s.edges[0]) / s.h).astype(int).clip(1, s.cells - 1))
    inner = s.edges[idx]
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    P = solution.bin_probabilities(np.concatenate([[s.edges[0]], inner, [s.edges[-1]]]), k)
    counts = np.histogram(x, edges)[0]
    l1 = float(np.abs(counts / n - P).sum())
    bound = float(np.sqrt(P * (1 - P) / n).sum() + math.sqrt(2 * math.log(1 / alpha) / n))
    return l1, bound, inner, counts


def cdf_interpolation_error(solution: FPSolution, k: int) -> float:
    r"""Bound on the CDF error from interpolating linearly within a cell: :math:`h \max_i |p_{i+1} - p_i| / 2`.

    Within a cell the density differs from its average by at most its oscillation over the cell (about
    :math:`|p_{i+1} - p_i|`), integrated over at most half a cell width from the nearer edge.
    """
    return float(solution.solver.h * np.abs(np.diff(solution.p[k])).max() / 2)


def _richardson(fp: FokkerPlanck1D, p0: Callable, times: np.ndarray, dt: float, sol: FPSolution) -> np.ndarray:
    """Estimated L1 error of ``sol`` at each output time: ||p_h - p_2h||_1 / 3 (second order in h)."""
    coarse = FokkerPlanck1D(fp.sde, fp.domain, fp.cells // 2)
    c = coarse.solve(p0, times, dt=dt).p
    fine = 0.5 * (sol.p[:, 0::2] + sol.p[:, 1::2])  # fine solution averaged onto the coarse cells
    return np.abs(fine - c).sum(axis=1) * coarse.h / 3


# ---------------------------------------------------------------------------- self-validation
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
    sol = fp.solve(_numpy_pdf(oracle), times, dt=times[-1] / steps, method=method)
    diffused = oracle.diffuse(sde)
    l1 = np.array([sol.l1(k, _numpy_pdf(diffused.at(float(t)))) for k, t in enumerate(times)])
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
    exact = _numpy_pdf(oracle.diffuse(sde).at(0.5))
    fp = FokkerPlanck1D(sde, (-5.0, 5.0), cells)
    errs = [fp.solve(_numpy_pdf(oracle), [0.0, 0.5], dt=dt, method=method).l1(1, exact) for dt in dts]
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


# ---------------------------------------------------------------------------- forward / reverse
class _Unresolved(ValueError):
    """The uniform FP grid cannot resolve this SDE's range of scales (the check is skipped)."""


@dataclasses.dataclass
class Problem:
    """An SDE, a data law p_0 (1-D Gaussian mixture) and the FP grid to solve it on."""

    sde: sdekit.SDE
    p0: sdekit.analytic.GaussianMixture
    domain: tuple[float, float]
    cells: int
    label: str

    def solve(self, times: np.ndarray, dt: float) -> tuple[FokkerPlanck1D, FPSolution, Callable]:
        """The FP solver, its solution at ``times`` and the numpy p_0."""
        fp = FokkerPlanck1D(self.sde, self.domain, self.cells)
        p0 = _numpy_pdf(self.p0)
        return fp, fp.solve(p0, times, dt=dt), p0


def example_problem(s: Settings) -> Problem:
    """The non-affine example on [-6, 6] (its density is below 1e-10 of its peak at +-5 for t in [0, 1])."""
    return Problem(example_sde(), example_p0(), (-6.0, 6.0), s.cells, "double well x sqrt(1+x^2)")


def user_problem(
    sde: sdekit.SDE,
    s: Settings,
    generator: torch.Generator,
    h: float = 0.01,
    max_cells: int = 20_000,
    max_h: float = 0.05,
) -> Problem:
    """A problem for any SDE: p_0 = :func:`example_p0`, domain from a pilot simulation.

    4,000 pilot paths (``sdekit.simulate``, Euler, 400 steps) give the range [lo, hi] visited on [0, T];
    the domain is that range padded by its width on each side (zero-flux walls far from the mass), with
    cells of width ``h`` (at most ``max_cells``; the Richardson error estimate then grows and enters the
    tolerances).

    Raises:
        _Unresolved: even ``max_cells`` cells would be wider than ``max_h`` (VE/EDM-like scale ranges).
    """
    data = example_p0()
    x0 = data.sample(4000, generator=generator).to(torch.float64)
    ts = torch.linspace(0.0, float(sde.T), 21, dtype=torch.float64)
    paths = sdekit.simulate(sde, x0, ts, solver="euler", steps=400, generator=generator)
    lo, hi = float(paths.min()), float(paths.max())
    pad = max(hi - lo, 2.0)
    domain = (lo - pad, hi + pad)
    cells = int(min(max_cells, max(400, math.ceil((domain[1] - domain[0]) / h))))
    if (domain[1] - domain[0]) / cells > max_h:
        raise _Unresolved(
            f"{type(sde).__name__} spreads p_0 (std 0.2) over [{domain[0]:.3g}, {domain[1]:.3g}]: a uniform grid of "
            f"{max_cells} cells has h = {(domain[1] - domain[0]) / max_cells:.3g} > {max_h}, too coarse for p_0; "
            f"the symbolic and analytic checks cover such SDEs"
        )
    cells += cells % 2  # even, for the Richardson estimate on cells // 2
    return Problem(sde, data, domain, cells, type(sde).__name__)


def forward_statistics(
    s: Settings,
    problem: Problem | None = None,
    generator: torch.Generator | None = None,
    fractions: tuple[float, ...] = (0.1, 0.3, 1.0),
) -> dict[str, Any]:
    """Simulate ``problem.sde`` with :func:`sdekit.simulate` from p_0 and compare with the numeric density.

    Compared at times ``fractions * T``: KS and binned L1 per time, with the bounds described in the
    module docstring (family-wise level :data:`ALPHA` over the times).
    """
    problem = problem or example_problem(s)
    generator = generator or torch.Generator().manual_seed(0)
    sde = problem.sde
    ts = np.concatenate([[0.0], sde.T * np.asarray(fractions, dtype=float)])
    dt = sde.T / s.fp_steps
    fp, sol, p0 = problem.solve(ts, dt)
    fp_err = _richardson(fp, p0, ts, dt, sol)
    x0 = problem.p0.sample(s.n_forward, generator=generator).to(torch.float64)
    paths = sdekit.simulate(sde, x0, torch.as_tensor(ts), solver="euler", steps=s.steps_forward, generator=generator)
    k_tests = len(fractions)
    rows = []
    for k in range(1, ts.size):
        xk = paths[k].reshape(-1).numpy()
        ks = ks_statistic(xk, sol, k)
        ks_tol = ks_critical(xk.size, ALPHA / k_tests) + fp_err[k] / 2 + cdf_interpolation_error(sol, k)
        l1, bound, edges, counts = binned_l1(xk, sol, k, alpha=ALPHA / k_tests)
        rows.append(
            dict(
                t=ts[k],
                ks=ks,
                ks_tol=ks_tol,
                l1=l1,
                l1_tol=bound + fp_err[k],
                fp_err=fp_err[k],
                edges=edges,
                counts=counts,
                n=xk.size,
            )
        )
    return dict(solution=sol, rows=rows, problem=problem)


def reverse_statistics(
    s: Settings,
    problem: Problem | None = None,
    generator: torch.Generator | None = None,
    eps: float | None = None,
    drop_divergence: bool = False,
    kinds: tuple[str, ...] = ("sde", "ode"),
    n: int | None = None,
    steps_reverse: int | None = None,
) -> dict[str, Any]:
    r"""Derived reverse SDE and PF-ODE of ``problem.sde``, driven by the numeric score, vs :math:`p_\epsilon`.

    The FP solution on [0, T] is stored at ``fp_steps // 2 + 1`` times; its score
    (:class:`~validation.fokker_planck.FPScore`) is the model of :func:`sdekit.sample` (``parameterization="score"``,
    ``x_T`` drawn from the numeric :math:`p_T` by inverse CDF, ``denoise=False``); the reverse SDE runs with
    ``euler``, the PF-ODE with ``ode:rk4``, from T to ``eps`` (default ``sde.default_eps``).

    ``drop_divergence=True`` is the negative control: the samplers get the score
    :math:`s - \partial_x g^2 / g^2`, so that the drift they integrate, :math:`f - k\,\partial_x g^2 - k g^2 s'`
    (k = 1 reverse, 1/2 PF), is exactly :math:`f - k g^2 s`: the derived drift with its divergence term dropped.
    """
    problem = problem or example_problem(s)
    generator = generator or torch.Generator().manual_seed(0)
    sde = problem.sde
    T = sde.T
    eps = sde.default_eps if eps is None else eps
    n = n or s.n_reverse
    K = s.fp_steps // 2 + 1
    fp, sol, p0 = problem.solve(np.linspace(0.0, T, K), T / s.fp_steps)
    at_eps = fp.solve(p0, [0.0, eps], dt=eps / 8)
    fp_err = _richardson(fp, p0, np.array([0.0, eps]), eps / 8, at_eps)[1]
    score = sol.score_model()
    if drop_divergence:

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return score(x, t) - sde.dg2_dx_fn(x, t) / sde.diffusion_fn(x, t) ** 2
    else:
        model = score
    u = torch.rand(n, generator=generator, dtype=torch.float64).numpy()
    x_T = torch.as_tensor(np.interp(u, sol.cdf(fp.edges, K - 1), fp.edges)).reshape(n, 1)
    rows = {}
    m = 2 * len(kinds)
    for kind in kinds:
        solver, steps = ("euler", steps_reverse or s.steps_reverse) if kind == "sde" else ("ode:rk4", s.steps_pf)
        x = sdekit.sample(
            model, sde, (n, 1), solver=solver, steps=steps, x_T=x_T, eps=eps, denoise=False, generator=generator
        )
        xs = x.reshape(-1).numpy()
        ks = ks_statistic(xs, at_eps, 1)
        l1, bound, edges, counts = binned_l1(xs, at_eps, 1, alpha=ALPHA / m)
        ks_tol = ks_critical(n, ALPHA / m) + fp_err / 2 + cdf_interpolation_error(at_eps, 1)
        rows[kind] = dict(
            solver=solver,
            steps=steps,
            ks=ks,
            ks_tol=ks_tol,
            l1=l1,
            l1_tol=bound + fp_err,
            edges=edges,
            counts=counts,
            n=n,
            fp_err=fp_err,
        )
    return dict(solution=at_eps, rows=rows, x_T=x_T, problem=problem, eps=eps)


# ---------------------------------------------------------------------------- figures
def _figure(path: Path, draw: Callable[[list[Any]], None], panels: int, ncols: int = 4) -> str | None:
    """Draw ``panels`` axes (rows of ``ncols``) with ``draw(axes)`` into the PNG ``path``; returns its file name."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # pragma: no cover - matplotlib missing
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    ncols = max(1, min(ncols, panels))
    nrows = max(1, math.ceil(panels / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
    flat = list(axes.reshape(-1))
    for ax in flat[panels:]:
        ax.set_visible(False)
    draw(flat[:panels])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _hist_panel(ax: Any, sol: FPSolution, k: int, row: dict, title: str) -> None:
    s = sol.solver
    edges, counts, n = row["edges"], row["counts"], row["n"]
    width = np.diff(edges)
    ax.bar(edges[:-1], counts[1:-1] / (n * width), width=width, align="edge", alpha=0.45, label="samples")
    ax.plot(s.centers, sol.p[k], "k-", lw=1.2, label="Fokker-Planck")
    pad = 0.15 * (edges[-1] - edges[0])
    ax.set_xlim(edges[0] - pad, edges[-1] + pad)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def _with_figure(results: list[CheckResult], fig: str | None) -> list[CheckResult]:
    if fig and results:
        results[0] = dataclasses.replace(results[0], figure=fig)
    return results


# ---------------------------------------------------------------------------- registered checks
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
                ax.plot(x, _numpy_pdf(gauss.diffuse(sde).at(float(times[k])))(x), "k:", lw=1)
            half = min(8.0, max(abs(x[0]), abs(x[-1])))
            ax.set_xlim(-half, half)
            ax.set_title(f"{type(sde).__name__}: FP (solid) vs exact (dotted)", fontsize=9)
            ax.legend(fontsize=6)

    return _with_figure(out, _figure(ctx.out / "fp_kernels.png", draw, len(panels)) if panels else None)


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


def _forward_lines(problem: Problem, s: Settings, gen: torch.Generator, panels: list) -> list[CheckResult]:
    start = time.perf_counter()
    res = forward_statistics(s, problem, gen)
    sol, rows = res["solution"], res["rows"]
    sec = (time.perf_counter() - start) / (2 * len(rows))
    out = []
    for k, r in enumerate(rows, start=1):
        n = r["n"]
        panels.append((sol, k, r, f"{problem.label}: forward, t = {r['t']:g}"))
        out.append(
            CheckResult.below(
                "forward",
                f"{problem.label}: simulate (euler, {s.steps_forward} steps) vs numeric FP, KS at t = {r['t']:g}",
                r["ks"],
                r["ks_tol"],
                f"exact KS critical value, n = {n}, alpha = {ALPHA:g} over {len(rows)} times; + FP error/2 "
                f"({r['fp_err']:.1e}, Richardson)",
                seconds=sec,
            )
        )
        out.append(
            CheckResult.below(
                "forward",
                f"{problem.label}: simulate vs numeric FP, binned L1 at t = {r['t']:g}",
                r["l1"],
                r["l1_tol"],
                f"sum sqrt(P(1-P)/n) + sqrt(2 ln(k/alpha)/n) (Jensen + McDiarmid), n = {n}, alpha = {ALPHA:g}; "
                f"+ FP error",
                seconds=sec,
            )
        )
    return out


def _user_lines(
    group: str, name: str, sde: sdekit.SDE, s: Settings, ctx: Context, run: Callable[[Problem], list[CheckResult]]
) -> list[CheckResult]:
    try:
        problem = user_problem(sde, s, ctx.generator(group + "-domain", type(sde).__name__))
    except _Unresolved as why:
        return [CheckResult.skip(group, name, str(why))]
    return run(problem)


@register("forward", quick=True)
def check_forward(ctx: Context) -> list[CheckResult]:
    r"""sdekit.simulate paths vs the numeric FP density at 3 times: the non-affine example (or the user's SDEs)."""
    s = settings(ctx.quick)
    out: list[CheckResult] = []
    panels: list = []
    if not ctx.user_sde:
        out += guarded(
            "forward",
            "double well x sqrt(1+x^2): simulate vs numeric FP",
            lambda: _forward_lines(example_problem(s), s, ctx.generator("forward", "example"), panels),
        )
    else:
        for sde in ctx.sdes:
            name = type(sde).__name__
            out += guarded(
                "forward",
                f"{name}: simulate vs numeric FP",
                lambda: _user_lines(
                    "forward",
                    f"{name}: simulate vs numeric FP",
                    sde,
                    s,
                    ctx,
                    lambda problem: _forward_lines(problem, s, ctx.generator("forward", name), panels),
                ),
            )

    def draw(axes: list[Any]) -> None:
        for ax, (sol, k, r, title) in zip(axes, panels):
            _hist_panel(ax, sol, k, r, title)

    return _with_figure(out, _figure(ctx.out / "fp_forward.png", draw, len(panels), ncols=3) if panels else None)


_KIND = {"sde": "reverse SDE", "ode": "PF-ODE"}


def _reverse_lines(problem: Problem, s: Settings, ctx: Context, panels: list, control: bool) -> list[CheckResult]:
    start = time.perf_counter()
    res = reverse_statistics(s, problem, ctx.generator("reverse", problem.label))
    sol, rows = res["solution"], res["rows"]
    out = []
    for kind, r in rows.items():
        what = f"{problem.label}: {_KIND[kind]} ({r['solver']}, {r['steps']} steps) with the FP score"
        panels.append((sol, 1, r, f"{problem.label}: {_KIND[kind]} -> t = {res['eps']:g}"))
        sec = (time.perf_counter() - start) / 2
        out.append(
            CheckResult.below(
                "reverse",
                f"{what} vs p_eps, KS",
                r["ks"],
                r["ks_tol"],
                f"exact KS critical value, n = {r['n']}, alpha = {ALPHA:g} over 4 tests; + FP error/2 "
                f"({r['fp_err']:.1e}, Richardson)",
                seconds=sec,
            )
        )
        out.append(
            CheckResult.below(
                "reverse",
                f"{what} vs p_eps, binned L1",
                r["l1"],
                r["l1_tol"],
                f"Jensen + McDiarmid bound, n = {r['n']}, alpha = {ALPHA:g} over 4 tests; + FP error",
                seconds=sec,
            )
        )
    if control:
        start = time.perf_counter()
        n = min(s.n_reverse, QUICK.n_reverse)
        wrong = reverse_statistics(
            s,
            problem,
            ctx.generator("reverse-control", problem.label),
            drop_divergence=True,
            n=n,
            steps_reverse=min(s.steps_reverse, 500),
        )["rows"]
        for kind, r in wrong.items():
            panels.append((sol, 1, r, f"{_KIND[kind]} without d(g^2)/dx"))
            out.append(
                CheckResult.at_least(
                    "reverse",
                    f"negative control: {problem.label}: {_KIND[kind]} without d(g^2)/dx must FAIL the KS test",
                    r["ks"],
                    r["ks_tol"],
                    "passes when the KS statistic EXCEEDS its critical value: "
                    "the check detects a missing divergence term",
                    seconds=(time.perf_counter() - start) / 2,
                )
            )
    return out


@register("reverse", quick=True)
def check_reverse(ctx: Context) -> list[CheckResult]:
    r"""Derived reverse SDE and PF-ODE with the numeric FP score vs p_eps; the no-divergence negative control fails.

    On the suite's non-affine example, or on the user's SDEs (``--sde``)."""
    s = settings(ctx.quick)
    out: list[CheckResult] = []
    panels: list = []
    if not ctx.user_sde:
        out += guarded(
            "reverse",
            "double well x sqrt(1+x^2): reverse SDE / PF-ODE with the FP score",
            lambda: _reverse_lines(example_problem(s), s, ctx, panels, control=True),
        )
    else:
        for sde in ctx.sdes:
            name = type(sde).__name__
            out += guarded(
                "reverse",
                f"{name}: reverse SDE / PF-ODE with the FP score",
                lambda: _user_lines(
                    "reverse",
                    f"{name}: reverse SDE / PF-ODE with the FP score",
                    sde,
                    s,
                    ctx,
                    lambda problem: _reverse_lines(problem, s, ctx, panels, control=sde.noise_type != "additive"),
                ),
            )

    def draw(axes: list[Any]) -> None:
        for ax, (sol, k, r, title) in zip(axes, panels):
            _hist_panel(ax, sol, k, r, title)

    return _with_figure(out, _figure(ctx.out / "fp_reverse.png", draw, len(panels)) if panels else None)
