r"""Strong orders of ``sdekit.simulate`` on k-component SDEs (group ``"orders"``): torchsde's own test problems.

The problems (:mod:`validation.component_problems`) are torchsde's ``Ex4`` (general noise, 3 components, a
state-dependent 3 x 2 diffusion), ``Ex3Additive`` mixed into a full 3 x 3 additive diffusion, and ``Ex2``
(diagonal state-dependent noise), each declared as a k-component ``sdekit.SDE`` and simulated at two event
positions, states ``(paths, 3, 2)``. Every step size :math:`h = 2^{-j}` is driven by one
:class:`~validation.component_problems.GridBrownian` (``simulate(..., bm=...)``), so the errors are pathwise.

Answers: the pathwise closed forms for the additive and diagonal problems (as in
:mod:`validation.order_checks`); for general noise there is none, so the answer is an Euler run at
:math:`h_{ref}` = 2^-11 (quick) / 2^-12 (full) on the same path. Its own error is reported: the gap between the
Euler and midpoint references (both converge to the Itô solution; midpoint gets the Itô-to-Stratonovich
correction), and the coarsest level used is chosen so that the finest level's error is several times that gap.

The slope of :math:`\log E|X_h - X|` against :math:`\log h` must be within 0.25 of the declared order (the scalar
checks' rule, ``TESTING.md``): general noise 0.5 for euler, heun and midpoint (no Lévy areas); additive: euler
and milstein 1.0, srk >= 1.25 (SRA1; super-converges to 2 here like on the scalar problem), heun/midpoint
>= 0.75 (declared 1.0, measured 2.0 on this problem); diagonal: euler 0.5, milstein, heun, midpoint 1.0,
srk 1.5.
"""

from __future__ import annotations

import torch

from ._core import CheckResult, Context, guarded, register
from .order_checks import Ladder, _plot, _slope_line, _with_figure

GROUP = "orders"
POSITIONS = 2
# (kind, solver) -> (declared order, one-sided); general noise: strong order 0.5 without Levy areas
ORDERS = {
    ("general", "euler"): (0.5, False),
    ("general", "heun"): (0.5, False),
    ("general", "midpoint"): (0.5, False),
    ("additive", "euler"): (1.0, False),
    ("additive", "milstein"): (1.0, False),
    ("additive", "srk"): (1.5, True),
    ("additive", "heun"): (1.0, True),
    ("additive", "midpoint"): (1.0, True),
    ("diagonal", "euler"): (0.5, False),
    ("diagonal", "milstein"): (1.0, False),
    ("diagonal", "srk"): (1.5, False),
    ("diagonal", "heun"): (1.0, False),
    ("diagonal", "midpoint"): (1.0, False),
}
QUICK = {"general": ("euler", "midpoint"), "additive": ("euler", "srk"), "diagonal": ("euler", "milstein", "srk")}
FULL = {
    "general": ("euler", "heun", "midpoint"),
    "additive": ("euler", "milstein", "srk", "heun", "midpoint"),
    "diagonal": ("euler", "milstein", "srk", "heun", "midpoint"),
}
# General noise from h = 2^-2: measured (256 paths x 2 positions) euler 0.40-0.58, heun 0.38-0.68, midpoint
# 0.47-0.70 over windows of 4 levels in 2^-2..2^-8. Additive/diagonal from 2^-4 as in the scalar checks (diagonal
# heun is pre-asymptotic before: 0.69 over 2^-2..2^-5, 0.91 over 2^-4..2^-7).
LEVELS = {
    ("general", True): (2, 3, 4, 5),
    ("general", False): (2, 3, 4, 5, 6),
    ("closed", True): (4, 5, 6, 7),
    ("closed", False): (4, 5, 6, 7, 8),
}


def strong_errors(
    kind: str, solvers: tuple[str, ...], levels: tuple[int, ...], paths: int, seed: int, ref: int, gap: bool = True
) -> tuple[dict[str, Ladder], float]:
    """({solver: Ladder}, reference gap): E|X_h - X_1| over ``paths`` x :data:`POSITIONS` at h = 2^-level.

    ``ref`` is log2 of the reference's steps (general noise) and of the grid Brownian's cells; ``gap=False``
    skips the midpoint reference (nan gap)."""
    import sdekit

    from .component_problems import GridBrownian, exact_solution, start_point, strong_problem

    sde = strong_problem(kind)
    m = sde.diffusion_fn.cols
    cells = 2**ref if kind == "general" else 2 ** max(levels)
    bm = GridBrownian((paths, m * POSITIONS), cells, torch.Generator().manual_seed(seed))
    y0 = start_point(kind, paths, POSITIONS)

    def run(solver: str, steps: int) -> torch.Tensor:
        return sdekit.simulate(sde, y0, [0.0, 1.0], solver=solver, steps=steps, bm=bm)[-1]

    ref_gap = float("nan")
    if kind == "general":
        exact = run("euler", cells)
        ref_gap = float((exact - run("midpoint", cells)).abs().mean()) if gap else ref_gap
    else:
        exact = exact_solution(kind, y0, bm(0.0, 1.0).view(paths, m, POSITIONS))
    out = {}
    for solver in solvers:
        hs, errs = [], []
        for j in levels:
            hs.append(2.0**-j)
            errs.append(float((run(solver, 2**j) - exact).abs().mean()))
        out[solver] = Ladder(hs, errs)
    return out, ref_gap


@register(GROUP, quick=True, per_sde=False)
def component_strong_orders(ctx: Context):
    """Strong orders of sdekit.simulate on torchsde's general, additive and diagonal test problems (k = 3)."""
    paths = 200 if ctx.quick else 1000
    table = QUICK if ctx.quick else FULL
    ref = 11 if ctx.quick else 12
    lines: list[CheckResult] = []
    curves: dict[str, tuple[Ladder, float]] = {}
    names = {"general": "Ex4, 3 x 2 G(y, t)", "additive": "Ex3Additive mixed, 3 x 3 G(t)", "diagonal": "Ex2, diag G(y)"}
    for kind, solvers in table.items():
        levels = LEVELS[("general" if kind == "general" else "closed", ctx.quick)]
        res: dict = {}

        def measure(kind=kind, solvers=solvers, levels=levels, res=res) -> list[CheckResult]:
            res["r"] = strong_errors(kind, solvers, levels, paths, ctx.seed + 4321, ref, gap=not ctx.quick)
            ladders, gap = res["r"]
            where = f"{paths} paths x {POSITIONS} positions, h = 2^-{levels[0]}..2^-{levels[-1]}"
            if kind == "general":
                where += f", answer: euler at 2^-{ref}"
                where += "" if ctx.quick else f" (its gap to midpoint there: {gap:.2g})"
            else:
                where += ", pathwise closed form"
            out = []
            for solver, lad in ladders.items():
                order, one_sided = ORDERS[(kind, solver)]
                name = f"k-component strong order {solver} ({kind} noise: torchsde {names[kind]})"
                out.append(_slope_line(name, lad, order, where, at_least=one_sided))
                curves[f"{solver} {kind}"] = (lad, order)
            return out

        lines += guarded(GROUP, f"k-component strong orders ({kind} noise)", measure)
        while len(lines) > 1:
            yield lines.pop(0)
    yield from _with_figure(
        lines,
        lambda: _plot(ctx, "orders_components.png", "k-component strong error E|X_h - X|", curves, "h"),
    )
