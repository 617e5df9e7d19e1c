r"""Fokker–Planck checks of sdekit's samplers (groups ``forward`` and ``reverse``) against the numeric density.

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

The statistics and their tolerances are :mod:`validation.fp_statistics`; the problems :mod:`validation.fp_problems`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import sdekit

from ._core import CheckResult, Context, guarded, register
from ._figures import figure, hist_panel, with_figure
from .fp_problems import QUICK, Problem, Settings, Unresolved, example_problem, settings, user_problem
from .fp_statistics import ALPHA, binned_l1, cdf_interpolation_error, ks_critical, ks_statistic, richardson_error

__all__ = ["forward_statistics", "reverse_statistics", "check_forward", "check_reverse"]


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
    fp_err = richardson_error(fp, p0, ts, dt, sol)
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
    fp_err = richardson_error(fp, p0, np.array([0.0, eps]), eps / 8, at_eps)[1]
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
    except Unresolved as why:
        return [CheckResult.skip(group, name, str(why))]
    return run(problem)


def _on_problems(
    ctx: Context,
    group: str,
    what: str,
    lines: Callable[[Problem, str, list], list[CheckResult]],
    figure_name: str,
    ncols: int = 4,
) -> list[CheckResult]:
    """``lines(problem, key, panels)`` on the suite's non-affine example (key ``"example"``) or, under ``--sde``, on a
    problem for each of the user's SDEs (key: its class name; a skip line when no FP grid resolves it). A crash is
    one failed line named ``"<problem>: <what>"``; the histogram panels ``lines`` collects make ``figure_name``."""
    s = settings(ctx.quick)
    out: list[CheckResult] = []
    panels: list = []
    if not ctx.user_sde:
        out += guarded(
            group, f"double well x sqrt(1+x^2): {what}", lambda: lines(example_problem(s), "example", panels)
        )
    else:
        for sde in ctx.sdes:
            key = type(sde).__name__
            name = f"{key}: {what}"
            out += guarded(group, name, lambda: _user_lines(group, name, sde, s, ctx, lambda p: lines(p, key, panels)))

    def draw(axes: list[Any]) -> None:
        for ax, (sol, k, r, title) in zip(axes, panels):
            hist_panel(ax, sol, k, r, title)

    return with_figure(out, figure(ctx.out / figure_name, draw, len(panels), ncols=ncols) if panels else None)


@register("forward", quick=True)
def check_forward(ctx: Context) -> list[CheckResult]:
    r"""sdekit.simulate paths vs the numeric FP density at 3 times: the non-affine example (or the user's SDEs)."""
    s = settings(ctx.quick)

    def lines(problem: Problem, key: str, panels: list) -> list[CheckResult]:
        return _forward_lines(problem, s, ctx.generator("forward", key), panels)

    return _on_problems(ctx, "forward", "simulate vs numeric FP", lines, "fp_forward.png", ncols=3)


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

    On the suite's non-affine example, or on the user's SDEs (``--sde``). The control runs where the noise is not
    additive (where d(g^2)/dx is not zero): always for the example, whose g = sqrt(1 + x^2)."""
    s = settings(ctx.quick)

    def lines(problem: Problem, key: str, panels: list) -> list[CheckResult]:
        return _reverse_lines(problem, s, ctx, panels, control=problem.sde.noise_type != "additive")

    return _on_problems(ctx, "reverse", "reverse SDE / PF-ODE with the FP score", lines, "fp_reverse.png")
