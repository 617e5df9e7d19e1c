"""No hangs (issue #19, point 1) and fixed-grid divergence where it happens (point 2).

* every adaptive solve has a step budget: a hopeless solve (a stiff score, a score oscillating in t) stops with
  ``SolverError`` after a bounded number of model evaluations, naming the time reached, the step size, the steps
  spent and the option to raise; the defaults never trigger on the zoo runs of the docs;
* a huge ``steps`` (or ``dt``, or logp's ``step_size``) is refused before anything is allocated: the model is never
  called;
* a fixed-grid torchdiffeq solve (``ode:rk4``, ``ode:euler``, ...; ``logp`` with ``rk4``) with a model that returns
  NaN past a time t* stops with ``SolverDivergedError`` at the first step that evaluates past t* (the step index is
  computed from the grid).

Work is bounded by counting model calls (or the steps in the message), never by wall time.
"""

from __future__ import annotations

import re

import pytest
import torch
from _mixtures import small_mixture

import sdekit
from sdekit.errors import SolverDivergedError, SolverError, SolverOptionError
from sdekit.solvers import _budget
from sdekit.solvers._budget import MAX_STEPS, ODE_MAX_REJECTED, ODE_MAX_STEPS, SDE_MAX_REJECTED, SDE_MAX_STEPS
from sdekit.solvers._grids import solver_time_grid

F64 = torch.float64
VP = sdekit.VPSDE()
ADAPTIVE_ODE = ["ode:dopri5", "ode:dopri8", "ode:bosh3", "ode:fehlberg2", "ode:adaptive_heun"]
NFE_PER_ATTEMPT = {"ode:dopri5": 6, "ode:dopri8": 13, "ode:bosh3": 3, "ode:fehlberg2": 3, "ode:adaptive_heun": 2}
"""Upper bounds on model evaluations per attempted step (FSAL methods reuse one; dopri8 has 13 stages)."""


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Counting:
    """``fn(x, t)`` counting its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fn(x, t)


def stiff(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A score a million times too steep: the PF-ODE's stability limit is a step of ~1e-7."""
    return -1e6 * x


def oscillating(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A score oscillating in t with period 3e-4: adaptive methods must resolve every period."""
    return -x * (1 + 0.9 * torch.sin(2e4 * t))[:, None]


def _spent(err: SolverError) -> tuple[int, int]:
    """(accepted, rejected) steps that a budget error reports."""
    found = re.search(r"\((\d+) accepted, (\d+) rejected\)", str(err))
    assert found, str(err)
    return int(found[1]), int(found[2])


def _check_message(err: SolverError, option: str) -> None:
    """The budget message names the time reached, the step size, the option to raise and the alternatives."""
    text = str(err)
    assert type(err) is SolverError, type(err)
    assert re.search(r"stopped at t = [0-9.e-]+ with step size [0-9.e-]+", text), text
    assert f"Raise {option}=" in text and "loosen rtol/atol" in text, text
    assert "\n" not in text


# --------------------------------------------------------------------------- adaptive PF-ODE (sample)
@pytest.mark.parametrize("solver", ADAPTIVE_ODE)
def test_ode_sample_stops_after_max_steps_attempts(solver: str) -> None:
    """max_steps=K: exactly K attempted steps (accepted + rejected), then SolverError; at most 2 evaluations to start
    (f0 and the first-step probe), the per-attempt stages of K attempts and the one-off output check."""
    model, k = Counting(stiff), 40
    with pytest.raises(SolverError) as info:
        sdekit.sample(model, VP, (4, 2), solver=solver, max_steps=k, max_rejected=None, generator=_gen())
    _check_message(info.value, "max_steps")
    assert sum(_spent(info.value)) == k
    assert model.calls <= 1 + 2 + NFE_PER_ATTEMPT[solver] * k


def test_ode_sample_stops_after_max_rejected() -> None:
    model = Counting(stiff)
    with pytest.raises(SolverError) as info:
        sdekit.sample(model, VP, (4, 2), solver="ode", max_rejected=5, generator=_gen())
    _check_message(info.value, "max_rejected")
    accepted, rejected = _spent(info.value)
    assert rejected == 6 and model.calls <= 1 + 2 + 6 * (accepted + rejected)


def test_ode_default_budget_stops_an_oscillating_score() -> None:
    """With the default budget (no option passed) the oscillating score stops within ODE_MAX_STEPS attempts."""
    model = Counting(oscillating)
    with pytest.raises(SolverError) as info:
        sdekit.sample(model, VP, (4, 2), solver="ode:adaptive_heun", generator=_gen())
    accepted, rejected = _spent(info.value)
    assert accepted + rejected <= ODE_MAX_STEPS and rejected <= ODE_MAX_REJECTED + 1
    assert model.calls <= 1 + 2 + 2 * ODE_MAX_STEPS


def test_ode_max_num_steps_is_the_attempts_budget_and_none_removes_limits() -> None:
    """torchdiffeq's own max_num_steps (passed through) is the attempted-steps budget and is named in the message;
    with max_steps too it is ambiguous; None removes a limit."""
    with pytest.raises(SolverError) as info:
        sdekit.sample(stiff, VP, (4, 2), solver="ode", max_num_steps=30, max_rejected=None, generator=_gen())
    _check_message(info.value, "max_num_steps")
    assert sum(_spent(info.value)) == 30
    with pytest.raises(SolverError, match="not both"):
        sdekit.sample(stiff, VP, (4, 2), solver="ode", max_num_steps=30, max_steps=30)
    oracle = small_mixture(F64).diffuse(VP)
    _, run = sdekit.sample(oracle, VP, (4, 2), solver="ode", dtype=F64, max_steps=None, max_rejected=None,
                           return_info=True)  # fmt: skip
    assert run.accepted > 0


def test_ode_budget_does_not_apply_to_fixed_steps() -> None:
    """steps=n pins an adaptive method to the grid: n steps, whatever max_steps says."""
    oracle = small_mixture(F64).diffuse(VP)
    _, run = sdekit.sample(oracle, VP, (4, 2), solver="ode", steps=20, max_steps=5, dtype=F64, return_info=True)
    assert run.steps == 20


@pytest.mark.parametrize(("value", "exc"), [(0, ValueError), (-3, ValueError), ("10", TypeError), (2.5, TypeError)])
@pytest.mark.parametrize("option", ["max_steps", "max_rejected"])
def test_budget_options_are_checked(option: str, value, exc: type[Exception]) -> None:
    model = Counting(stiff)
    for solver in ("ode", "srk"):  # sample's declared options: SolverOptionError (a ValueError) for every bad value
        with pytest.raises(SolverOptionError, match=option):
            sdekit.sample(model, VP, (4, 2), solver=solver, **{option: value})
    with pytest.raises(exc, match=option):
        sdekit.simulate(sdekit.OrnsteinUhlenbeck(), torch.zeros(4, 2), [0.0, 1.0], **{option: value})
    with pytest.raises(SolverOptionError, match="max_num_steps"):  # logp's options= are declared too
        sdekit.logp(model, VP, torch.zeros(4, 2), options={"max_num_steps": value})


def test_declared_defaults() -> None:
    ode, srk = sdekit.solvers.get("ode").accepted_options(), sdekit.solvers.get("srk").accepted_options()
    assert (ode["max_steps"], ode["max_rejected"]) == (ODE_MAX_STEPS, ODE_MAX_REJECTED)
    assert (srk["max_steps"], srk["max_rejected"]) == (SDE_MAX_STEPS, SDE_MAX_REJECTED)
    assert "max_steps" not in sdekit.solvers.get("ode:rk4").accepted_options()  # fixed grid: no budget


# --------------------------------------------------------------------------- logp
def test_logp_stops_after_max_num_steps() -> None:
    """logp's budget is torchdiffeq's max_num_steps (attempted steps): evaluations <= the input check, 2 to start
    and 6 per attempt (dopri5)."""
    model = Counting(oscillating)
    with pytest.raises(SolverError) as info:
        sdekit.logp(model, VP, torch.randn(4, 2, generator=_gen()), options={"max_num_steps": 50})
    _check_message(info.value, "options['max_num_steps']")
    assert "fixed-grid solver" in str(info.value)
    assert sum(_spent(info.value)) == 50
    assert model.calls <= 1 + 2 + 6 * 50


def test_logp_default_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without options, logp runs under ODE_MAX_STEPS (lowered here so that the hopeless solve is short)."""
    monkeypatch.setattr(sdekit._likelihood_checks, "ODE_MAX_STEPS", 25)
    model = Counting(oscillating)
    with pytest.raises(SolverError, match=r"options\['max_num_steps'\]=25") as info:
        sdekit.logp(model, VP, torch.randn(4, 2, generator=_gen()))
    assert sum(_spent(info.value)) == 25 and model.calls <= 1 + 2 + 6 * 25


# --------------------------------------------------------------------------- torchsde (sample, simulate)
@pytest.mark.parametrize("solver", ["euler", "srk", "heun"])
def test_sde_sample_stops_after_max_steps(solver: str) -> None:
    """Step doubling: 3 steps of at most 3 evaluations each per attempt (srk, diagonal-free here: 2 per step)."""
    model, k = Counting(oscillating), 30
    with pytest.raises(SolverError) as info:
        sdekit.sample(model, VP, (4, 2), solver=solver, max_steps=k, max_rejected=None, generator=_gen())
    _check_message(info.value, "max_steps")
    assert sum(_spent(info.value)) == k
    assert model.calls <= 1 + 3 * 2 * k


def test_sde_sample_stops_after_max_rejected() -> None:
    with pytest.raises(SolverError) as info:
        sdekit.sample(oscillating, VP, (4, 2), solver="srk", max_rejected=3, generator=_gen())
    _check_message(info.value, "max_rejected")
    assert _spent(info.value)[1] == 4


def test_sde_default_budget_stops_an_oscillating_score() -> None:
    model = Counting(oscillating)
    with pytest.raises(SolverError) as info:
        sdekit.sample(model, VP, (64, 2), solver="euler", generator=_gen())
    accepted, rejected = _spent(info.value)
    assert accepted + rejected <= SDE_MAX_STEPS and rejected <= SDE_MAX_REJECTED + 1
    assert model.calls <= 1 + 3 * SDE_MAX_STEPS


def test_simulate_has_a_budget() -> None:
    """The forward SDE with a drift oscillating in t: max_steps / max_rejected of simulate, then the defaults."""
    sde = sdekit.SDE.from_expressions("-x * (1 + 0.9 * sin(20000 * t))", "1", T=1.0)
    x0 = torch.zeros(4, 2)
    with pytest.raises(SolverError) as info:
        sdekit.simulate(sde, x0, [0.0, 0.5, 1.0], max_steps=40, max_rejected=None, generator=_gen())
    _check_message(info.value, "max_steps")
    assert sum(_spent(info.value)) == 40 and "pass steps= or dt=" in str(info.value)
    with pytest.raises(SolverError) as info:
        sdekit.simulate(sde, x0, [0.0, 1.0], solver="srk", max_rejected=2, generator=_gen())
    assert _spent(info.value)[1] == 3
    paths = sdekit.simulate(sdekit.OrnsteinUhlenbeck(), x0, [0.0, 1.0], max_steps=None, generator=_gen())
    assert paths.shape == (2, 4, 2)


# --------------------------------------------------------------------------- the defaults leave the zoo alone
ZOO = ["VPSDE", "SubVPSDE", "VESDE", "CosineVPSDE", "EDMSDE", "OrnsteinUhlenbeck", "BrownianMotion"]


@pytest.mark.parametrize("name", ZOO)
def test_default_budgets_leave_the_zoo_runs_alone(name: str) -> None:
    """Every adaptive ODE method at its default tolerance, logp at its default and srk at its default on the exact
    mixture score: measured at most 125 attempts (adaptive_heun, VE), 40 (logp), 195 (srk, EDM); asserted: a
    quarter of the budget at most."""
    sde = getattr(sdekit, name)()
    oracle = small_mixture().diffuse(sde)
    for solver in ADAPTIVE_ODE:
        _, run = sdekit.sample(oracle, sde, (64, 2), solver=solver, generator=_gen(), return_info=True)
        assert run.accepted + run.rejected <= ODE_MAX_STEPS // 4 and run.rejected <= ODE_MAX_REJECTED // 4, solver
    _, run = sdekit.sample(oracle, sde, (64, 2), solver="srk", generator=_gen(), return_info=True)
    assert run.accepted + run.rejected <= SDE_MAX_STEPS // 4 and run.rejected <= SDE_MAX_REJECTED // 4
    x = small_mixture().sample(64, generator=_gen(1))
    _, info = sdekit.logp(oracle, sde, x, return_info=True)
    assert (info.nfe - 3) / 6 <= ODE_MAX_STEPS // 4


# --------------------------------------------------------------------------- huge step counts
HUGE = 10**12


@pytest.mark.parametrize("solver", ["euler", "srk", "ode:rk4", "ode", "exp2", "pc", "ancestral", "unipc"])
def test_huge_steps_are_refused_before_the_model_runs(solver: str) -> None:
    model = Counting(stiff)
    with pytest.raises(ValueError, match=r"steps=1000000000000 is more than sdekit's limit of 10,000,000"):
        sdekit.sample(model, VP, (4, 2), solver=solver, steps=HUGE)
    assert model.calls == 0


def test_huge_steps_are_refused_by_simulate_and_logp() -> None:
    x0 = torch.zeros(4, 2)
    ou = sdekit.OrnsteinUhlenbeck()
    with pytest.raises(ValueError, match="limit of 10,000,000"):
        sdekit.simulate(ou, x0, [0.0, 1.0], steps=HUGE)
    with pytest.raises(ValueError, match=r"dt=1e-12 .* is more than sdekit's limit"):
        sdekit.simulate(ou, x0, [0.0, 1.0], dt=1e-12)
    model = Counting(stiff)
    with pytest.raises(ValueError, match="limit of 10,000,000"):
        sdekit.logp(model, VP, x0, solver="rk4", steps=HUGE)
    with pytest.raises(ValueError, match=r"options\['step_size'\]=1e-12"):
        sdekit.logp(model, VP, x0, solver="rk4", options={"step_size": 1e-12})
    assert model.calls == 0


def test_step_cap() -> None:
    assert _budget.check_step_cap(MAX_STEPS) == MAX_STEPS
    with pytest.raises(ValueError, match="GB"):
        _budget.check_step_cap(MAX_STEPS + 1)


# --------------------------------------------------------------------------- fixed-grid torchdiffeq divergence
T_STAR = 0.3


def nan_below(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The N(0, I) score above t*, NaN below (a model that breaks late in sampling)."""
    return torch.where((t < T_STAR)[:, None], torch.full_like(x, float("nan")), -x)


@pytest.mark.parametrize(("solver", "evaluates_end"), [("ode:rk4", True), ("ode:midpoint", False),
                                                       ("ode:euler", False), ("ode:heun3", True)])  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_fixed_grid_ode_names_the_first_nan_step(solver: str, evaluates_end: bool, dtype: torch.dtype) -> None:
    """Sampling runs from T down: step i (1-based) spans grid[i-1] -> grid[i]. rk4 and heun3 evaluate at its end, so
    the first bad step is the first i with grid[i] < t*; euler evaluates only at its start (first i with grid[i-1]
    < t*), midpoint at its start and middle. The error names that step and its end time; the model is called at
    most 16 steps (the watch's read interval) past it."""
    n = 40
    impl = sdekit.solvers.get(solver)
    grid = solver_time_grid(VP, VP.T, VP.default_eps, n, impl, impl.accepted_options()).tolist()
    if evaluates_end:
        expected = next(i for i in range(1, n + 1) if grid[i] < T_STAR)
    elif solver == "ode:midpoint":
        expected = next(i for i in range(1, n + 1) if (grid[i - 1] + grid[i]) / 2 < T_STAR)
    else:
        expected = next(i for i in range(1, n + 1) if grid[i - 1] < T_STAR)
    model = Counting(nan_below)
    with pytest.raises(SolverDivergedError) as info:
        sdekit.sample(model, VP, (4, 2), solver=solver, steps=n, dtype=dtype, generator=_gen())
    assert info.value.step == expected
    assert info.value.t == pytest.approx(grid[expected], rel=1e-6)
    assert f"at step {expected} of {n}" in str(info.value)
    stages = {"ode:rk4": 4, "ode:heun3": 3, "ode:midpoint": 2, "ode:euler": 1}[solver]
    assert model.calls <= 1 + stages * (expected + 16)


def test_fixed_grid_adams_in_the_log_snr_variable_names_times_in_t() -> None:
    """explicit_adams steps in u (log-SNR) on the default grid: the message still gives the step's times in t."""
    n = 40
    impl = sdekit.solvers.get("ode:explicit_adams")
    grid = solver_time_grid(VP, VP.T, VP.default_eps, n, impl, impl.accepted_options()).tolist()
    with pytest.raises(SolverDivergedError) as info:
        sdekit.sample(nan_below, VP, (4, 2), solver="ode:explicit_adams", steps=n, generator=_gen())
    i = info.value.step
    assert grid[i - 1] >= T_STAR * (1 - 1e-6) or grid[i] < T_STAR  # the bad step reaches below t*
    assert info.value.t == pytest.approx(grid[i], rel=1e-6) and grid[i] < T_STAR


def test_fixed_grid_logp_names_the_first_nan_step() -> None:
    """logp integrates from eps up on torchdiffeq's uniform grid eps + k (T - eps)/n; rk4 evaluates at each step's
    end, so the first bad step is the first k with eps + k h > t*."""
    n, eps = 40, 1e-5
    h = (VP.T - eps) / n
    expected = next(k for k in range(1, n + 1) if eps + k * h > T_STAR)
    model = Counting(lambda x, t: torch.where((t > T_STAR)[:, None], torch.full_like(x, float("nan")), -x))
    with pytest.raises(SolverDivergedError) as info:
        sdekit.logp(model, VP, torch.randn(4, 2, generator=_gen()), solver="rk4", steps=n)
    assert info.value.step == expected
    assert info.value.t == pytest.approx(eps + expected * h, rel=1e-6)  # a float32 grid
    assert "take more steps" in str(info.value)
