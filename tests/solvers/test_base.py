"""The solver base (:mod:`sdekit.solvers._base`): the finiteness watch, the option check and the simulate capability."""

from __future__ import annotations

import pytest
import torch
from _mixtures import small_mixture as _mixture

import sdekit
from sdekit.errors import SolverDivergedError, SolverError
from sdekit.solvers import SamplingProblem, SimulationProblem, get
from sdekit.solvers._base import FiniteWatch, ensure_finite

GOOD, BAD = torch.zeros(3), torch.tensor([0.0, float("nan"), 0.0])


# --------------------------------------------------------------------------- finiteness
def test_finite_watch_reads_every_k_steps_and_at_the_end() -> None:
    # The watch of the fixed-step loops: a NaN is only seen at a read (steps 4, 8, ... and the last), and the
    # error names the window since the last finite read.
    calls: list[tuple[int, int]] = []

    def describe(last_ok: int, i: int) -> tuple[str, float]:
        calls.append((last_ok, i))
        return f"non-finite between {last_ok} and {i}", float(i)

    watch = FiniteWatch(4, 10, describe)
    good, bad = GOOD, BAD
    for i in (1, 2, 3, 4, 5):
        watch(i, good)
    watch(6, bad)  # not a read: passes silently
    assert calls == [] and watch.last_ok == 4
    with pytest.raises(sdekit.errors.SolverDivergedError, match="between 4 and 8") as err:
        watch(8, bad)
    assert err.value.t == 8.0 and err.value.step == 8
    last = FiniteWatch(4, 10, describe)
    with pytest.raises(sdekit.errors.SolverDivergedError, match="between 0 and 10"):
        last(10, bad)  # the last step is always read


def test_pinned_watch_names_the_first_bad_step_at_the_next_read() -> None:
    """pin=True: the read at step 8 reports step 6, the first non-finite state, even if later states look finite."""
    seen: list[tuple[int, int]] = []

    def describe(last_ok: int, i: int) -> tuple[str, float]:
        seen.append((last_ok, i))
        return f"first bad step {i}", 0.5 * i

    watch = FiniteWatch(4, 10, describe, pin=True)
    for i, y in enumerate([GOOD] * 5 + [BAD, GOOD], start=1):
        watch(i, y)  # no read reports anything yet (steps 4 only)
    with pytest.raises(SolverDivergedError, match="first bad step 6") as err:
        watch(8, GOOD)
    assert seen == [(5, 6)] and err.value.step == 6 and err.value.t == 3.0


def test_ensure_finite_builds_the_message_only_on_failure() -> None:
    def boom() -> str:
        raise AssertionError("message built for a finite state")

    ensure_finite(GOOD, boom, t=0.1, step=3)
    with pytest.raises(SolverDivergedError, match=r"bad at 0\.1") as err:
        ensure_finite(BAD, lambda: "bad at 0.1", t=0.1, step=3)
    assert (err.value.t, err.value.step) == (0.1, 3)


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("solver", "own"),
    [
        ("euler", {"bm", "check_every", "dt0", "dt_min", "max_steps", "max_rejected"}),
        ("pc", {"check_every", "corrector", "snr", "n_corrector_steps", "snr_norm"}),
        ("ancestral", {"check_every", "variance"}),
        ("exp3", {"check_every", "lower_order_final"}),
        ("ode:rk4", set()),
        ("ode", {"max_steps", "max_rejected"}),
    ],
)
def test_accepted_options_merge_along_the_class_hierarchy(solver: str, own: set[str]) -> None:
    """Every solver takes grid, rho and data_std (Solver); a family and a solver add theirs, with their defaults."""
    options = get(solver).accepted_options()
    assert set(options) == {"grid", "rho", "data_std"} | own
    assert options["grid"] is None and options["rho"] == 7.0 and options["data_std"] == 1.0
    if "check_every" in own:
        assert options["check_every"] == (32 if solver == "euler" else 16)


@pytest.mark.parametrize("solver", ["euler", "pc", "exp2", "ode:rk4", "ode"])
def test_unknown_options_get_one_message_in_every_family(solver: str) -> None:
    sde = sdekit.VPSDE()
    x_T = torch.zeros(4, 1)
    problem = SamplingProblem(sde, lambda x, t: -x, x_T, 1.0, 0.01, 3, 1e-3, 1e-3, None, lambda n: None, {"bogus": 1})
    with pytest.raises(SolverError, match=r"solver '.*' got unknown option\(s\) 'bogus'; it accepts .*grid.*rho"):
        get(solver).solve(problem)


def test_ode_solvers_also_accept_torchdiffeq_options() -> None:
    sde = sdekit.VPSDE()
    x = sdekit.sample(lambda x, t: -x, sde, (4, 1), solver="ode", first_step=0.01, generator=torch.Generator())
    assert x.shape == (4, 1)
    with pytest.raises(SolverError, match="torchdiffeq's options of 'dopri5'"):
        sdekit.sample(lambda x, t: -x, sde, (4, 1), solver="ode", frist_step=0.01)


def test_sample_native_and_torchsde_reject_unknown_options():
    """Control (passes today): the other solver families do raise SolverError."""
    sde = sdekit.VPSDE()
    oracle = _mixture().diffuse(sde)
    for solver in ("euler", "pc", "exp2"):
        with pytest.raises(SolverError):
            sdekit.sample(oracle, sde, (8, 2), solver=solver, steps=2, tolerance=1e-3)


# --------------------------------------------------------------------------- simulate capability
def test_solvers_without_can_simulate_refuse_a_forward_problem() -> None:
    sde = sdekit.OrnsteinUhlenbeck()
    problem = SimulationProblem(sde, torch.zeros(4, 1), (0.0, 1.0), 10, None, 1e-3, 1e-3, None, None, 32)
    for name in ("pc", "exp2", "ode"):
        assert not get(name).can_simulate
        with pytest.raises(SolverError, match="can_simulate is False"):
            get(name).simulate(problem)
    paths, stats = get("euler").simulate(problem)
    assert paths.shape == (2, 4, 1) and stats.steps == 10 and stats.evaluations == 10
