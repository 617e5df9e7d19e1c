r"""The one torchsde driver (:mod:`sdekit.solvers._torchsde_driver`) behind ``sample`` and ``simulate``.

The two time maps are checked against each other on one process solved both ways. For a forward SDE
:math:`A`: :math:`dx = f_A(x, t)\,dt + g_A(x, t)\,dW` on :math:`[0, T]`, declare :math:`B` with
:math:`g_B(x, t) = g_A(x, T - t)` and :math:`f_B(x, t) = -f_A(x, T - t) + \partial_x g_B^2(x, t)`. With a zero
score, the reverse map of :math:`B` integrates :math:`F = -[f_B - \partial_x g_B^2](x, T - s) = f_A(x, s)`,
:math:`G = g_A(x, s)` in :math:`s \in [0, T]`: the forward SDE :math:`A` in its own time. So ``sample``'s solver
run on :math:`B` (reverse map, s = T - t) and ``simulate`` on :math:`A` (forward map, t = s) take the same steps
on the same Brownian increments, and agree up to the round-off of their grids (``T - t_i`` against ``i T/n``):
float64, relative 1e-10.
"""

from __future__ import annotations

import pytest
import torch
import torchsde

import sdekit
from sdekit._random import Streams
from sdekit.analytic import GaussianMixture
from sdekit.solvers import SamplingProblem, get
from sdekit.solvers import _torchsde_driver as driver
from sdekit.solvers._brownian import FixedStepBrownian
from sdekit.solvers._torchsde import forward_grid

F64 = torch.float64
T = 1.0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# A: an affine SDE with additive noise and a non-affine one with state-dependent noise (g^2 = (1 + x^2)/4 (1 + t),
# d/dx g^2 = x/2 (1 + t)); B: the same process declared for the reverse map (module docstring).
PAIRS = {
    "affine": (("-(1 + t)*x + 1/2", "sqrt(1 + t)"), ("(2 - t)*x - 1/2", "sqrt(2 - t)")),
    "diagonal": (
        ("sin(3*t) - x**3/4", "sqrt((1 + x**2)*(1 + t))/2"),
        ("x**3/4 - sin(3*(1 - t)) + x*(2 - t)/2", "sqrt((1 + x**2)*(2 - t))/2"),
    ),
}


def _pair(kind: str) -> tuple[sdekit.SDE, sdekit.SDE]:
    (fa, ga), (fb, gb) = PAIRS[kind]
    return sdekit.SDE.from_expressions(fa, ga, T=T), sdekit.SDE.from_expressions(fb, gb, T=T)


def _reverse_run(solver: str, sde_b: sdekit.SDE, x0: torch.Tensor, steps: int | None, **options) -> torch.Tensor:
    problem = SamplingProblem(
        sde=sde_b, score=lambda x, t: torch.zeros_like(x), x_T=x0, t_start=T, t_end=0.0, steps=steps,
        rtol=1e-3, atol=1e-3, generator=options.pop("generator", None), progress=lambda n: None,
        options={"grid": "uniform", **options} if steps is not None else options,
    )  # fmt: skip
    with torch.no_grad():
        return get(solver).solve(problem)[0]


@pytest.mark.parametrize("kind", list(PAIRS))
@pytest.mark.parametrize("solver", ["euler", "milstein", "srk", "heun", "midpoint", "reversible_heun"])
def test_forward_and_reverse_maps_agree_on_one_process(kind: str, solver: str) -> None:
    """The reverse map of B (sample's solver) equals simulate of A on the same fixed-step increments."""
    sde_a, sde_b = _pair(kind)
    x0 = 0.3 + torch.randn(64, 2, 3, generator=_gen(0), dtype=F64)  # an event shape: flattening and views
    bm = FixedStepBrownian((64, 6), F64, "cpu", _gen(1), levy_area=True)  # sample's fused Euler needs its own bm
    reverse = _reverse_run(solver, sde_b, x0, 40, bm=bm)
    forward = sdekit.simulate(sde_a, x0, [0.0, T], solver=solver, steps=40, generator=_gen(1))[-1]
    torch.testing.assert_close(reverse, forward, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", list(PAIRS))
def test_forward_and_reverse_maps_agree_on_one_brownian_path(kind: str) -> None:
    """The same on one Brownian path: a BrownianInterval on [0, T] with one seed (s = t for both maps), fixed steps
    and an adaptive run. (A fresh interval per run: a BrownianInterval's values depend on the order of its queries.)"""
    sde_a, sde_b = _pair(kind)
    x0 = torch.randn(32, 1, generator=_gen(2), dtype=F64)

    def path() -> torchsde.BrownianInterval:
        return torchsde.BrownianInterval(
            t0=0.0, t1=T, size=(32, 1), dtype=F64, entropy=3, levy_area_approximation="space-time"
        )

    for steps in (16, None):
        reverse = _reverse_run("srk", sde_b, x0, steps, bm=path())
        forward = sdekit.simulate(sde_a, x0, [0.0, T], solver="srk", steps=steps, bm=path())[-1]
        torch.testing.assert_close(reverse, forward, rtol=1e-10, atol=1e-10)


def test_simulate_is_the_driver_with_the_forward_map() -> None:
    """simulate = drive(Forward) on a Fixed plan through the output times, bit for bit."""
    sde = sdekit.OrnsteinUhlenbeck()
    x0 = torch.randn(8, 3, generator=_gen(4), dtype=F64)
    times = [0.0, 0.3, 1.0, 2.5]
    paths = sdekit.simulate(sde, x0, times, solver="srk", dt=0.07, generator=_gen(5))
    grid, marks = forward_grid(times, 0.07)
    ys, stats = driver.drive(
        get("srk"), driver.Forward(sde, False), x0, (3,), driver.Fixed(grid, marks, 32), bm=None,
        generator=_gen(5), progress=lambda n: None,
    )  # fmt: skip
    assert torch.equal(paths, torch.stack([x0, *ys]))
    assert stats.steps == len(grid) - 1 == 5 + 10 + 22  # ceil(0.3 / 0.07), ceil(0.7 / 0.07), ceil(1.5 / 0.07)


def test_forward_grid_ends_steps_on_the_output_times() -> None:
    grid, marks = forward_grid([0.0, 0.25, 1.0], 0.1)
    assert marks == [3, 11] and grid[3] == 0.25 and grid[11] == 1.0 and len(grid) == 12
    grid, marks = forward_grid([0.0, 0.5, 1.0], 0.01)  # on the uniform 100-step grid: exactly 100 steps
    assert marks == [50, 100]


def test_sample_and_simulate_share_the_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every torchsde run of both entry points goes through the driver's one fixed and one adaptive loop."""
    seen: list[str] = []
    real_fixed, real_adaptive = driver.run_fixed, driver.run_adaptive
    monkeypatch.setattr(driver, "run_fixed", lambda *a, **k: seen.append("fixed") or real_fixed(*a, **k))
    monkeypatch.setattr(driver, "run_adaptive", lambda *a, **k: seen.append("adaptive") or real_adaptive(*a, **k))
    sde = sdekit.VPSDE()
    model = GaussianMixture(torch.tensor([[0.5]]), torch.tensor([0.3])).diffuse(sde)
    x0 = torch.zeros(4, 1)
    sdekit.sample(model, sde, (4, 1), solver="euler", steps=5, generator=_gen(0))  # the fused Euler step
    sdekit.sample(model, sde, (4, 1), solver="srk", steps=5, generator=_gen(0))
    sdekit.simulate(sde, x0, [0.0, 1.0], solver="euler", steps=5, generator=_gen(0))
    sdekit.sample(model, sde, (4, 1), solver="srk", generator=_gen(0))
    sdekit.simulate(sde, x0, [0.0, 0.5, 1.0], solver="srk", generator=_gen(0))
    assert seen == ["fixed", "fixed", "fixed", "adaptive", "adaptive"]


@pytest.mark.parametrize("sde_name", ["VPSDE", "VESDE", "SubVPSDE"])
def test_fused_euler_matches_torchsde_euler(sde_name: str) -> None:
    """The fused affine Euler step equals torchsde's Euler step on the same increments (float64 round-off)."""
    sde = getattr(sdekit, sde_name)()
    oracle = GaussianMixture(
        torch.tensor([[1.5, 0.5], [-1.0, -1.0]], dtype=F64),
        torch.tensor([0.4, 0.6], dtype=F64),
        torch.tensor([0.4, 0.6], dtype=F64),
    ).diffuse(sde)
    x_T = sde.prior.sample((32, 2), generator=_gen(0), dtype=F64)
    kw = dict(solver="euler", steps=50, x_T=x_T, denoise=False)
    fused = sdekit.sample(oracle, sde, (32, 2), generator=_gen(5), **kw)
    streams = Streams.of(_gen(5), 32, 2)  # what sample draws from with generator=_gen(5)
    generic = sdekit.sample(oracle, sde, (32, 2), bm=FixedStepBrownian((32, 2), F64, "cpu", streams), **kw)
    torch.testing.assert_close(fused, generic, rtol=1e-10, atol=1e-10)


def test_reverse_map_watches_the_states_the_model_sees() -> None:
    """Adaptive reverse runs check every drift input (the model never sees NaN); forward runs do not need to."""
    sde = sdekit.VPSDE()
    flat = driver.FlatSDE(driver.Reverse(sde, False, lambda x, t: -x, 1.0), (1,), "additive", "ito", watch=True)
    with pytest.raises(sdekit.errors.SolverDivergedError, match=r"before t = 0.75 \(drift evaluation 1\)"):
        flat.f(0.25, torch.tensor([[float("nan")]]))
    forward = driver.FlatSDE(driver.Forward(sde, False), (1,), "additive", "ito", watch=True)
    assert not forward.watch and forward.f(0.25, torch.tensor([[float("nan")]])).isnan().all()


@pytest.mark.parametrize(("solver", "per_step", "own_bm"), [("euler", 1, False), ("euler", 1, True), ("srk", 2, False)])
def test_drift_evaluations_are_counted_on_every_path(solver: str, per_step: int, own_bm: bool) -> None:
    """SolveStats.evaluations: one per Euler step, fused (no bm) or torchsde's (a bm given); two per SRA1 step
    (torchsde's repeated stage call is memoised)."""
    sde = sdekit.VPSDE()
    x_T = torch.zeros(4, 2, 3, dtype=F64)
    options = {"bm": FixedStepBrownian((4, 6), F64, "cpu", _gen(0), levy_area=True)} if own_bm else {}
    problem = SamplingProblem(sde, lambda x, t: -x, x_T, 1.0, 1e-3, 7, 1e-3, 1e-3, _gen(0), lambda n: None, options)
    x, stats = get(solver).solve(problem)
    assert x.shape == (4, 2, 3) and stats.steps == 7 and stats.evaluations == 7 * per_step
