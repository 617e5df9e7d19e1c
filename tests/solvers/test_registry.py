"""The one solver registry (:mod:`sdekit.solvers._registry`): registration, lookup, capabilities, entry points."""

from __future__ import annotations

import ast
import subprocess
import sys
from typing import ClassVar

import pytest
import torch

import sdekit
from sdekit.errors import SolverError, UnknownSolverError
from sdekit.solvers import SamplingProblem, SimulationProblem, Solver, SolveStats, _registry, available, get, resolve

TORCHSDE = {"euler", "milstein", "srk", "heun", "midpoint", "reversible_heun"}
NATIVE = {"pc", "ancestral", "ald", "exp1", "exp2", "exp3", "dpm++2m", "dpm++3m", "dpm2", "dpm3"}


def test_importing_the_solvers_package_registers_every_solver() -> None:
    """Registration does not depend on the API layer: the solvers package imported on its own (sdekit's __init__,
    which imports sample and simulate, bypassed) registers every family and imports no entry point."""
    code = (
        "import importlib.util, sys, types\n"
        "pkg = types.ModuleType('sdekit')\n"
        "pkg.__path__ = list(importlib.util.find_spec('sdekit').submodule_search_locations)\n"
        "sys.modules['sdekit'] = pkg\n"
        "import sdekit.solvers as s\n"
        "print(sorted(s.available()))\n"
        "print(sorted(m for m in sys.modules if m.startswith('sdekit.') and not m.startswith('sdekit.solvers')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == str(sorted(available()))
    assert TORCHSDE | NATIVE | {"ode:dopri5", "ode:rk4", "ode:euler"} <= set(available())
    above = {"sdekit._sample", "sdekit._simulate", "sdekit._likelihood", "sdekit._langevin", "sdekit.cli"}
    assert not above & set(ast.literal_eval(out[1]))  # no entry point: the solver layer stands on its own


def test_names_aliases_and_suggestions() -> None:
    assert resolve("ode") == resolve("dopri5") == "ode:dopri5"
    assert resolve("euler") == "euler" and resolve("ode:euler") == "ode:euler"  # the bare name is torchsde's
    assert isinstance(get("srk"), available()["srk"]) and get("srk") is not get("srk")  # a fresh instance
    with pytest.raises(UnknownSolverError, match=r"Did you mean.*'srk'"):
        resolve("srkk")
    with pytest.raises(TypeError, match="Solver subclass"):
        _registry.register(int)  # type: ignore[arg-type]


def test_can_simulate_is_the_torchsde_family() -> None:
    able = {name for name, cls in available().items() if cls.can_simulate}
    assert able == TORCHSDE
    with pytest.raises(SolverError, match="can_simulate") as err:
        sdekit.simulate(sdekit.OrnsteinUhlenbeck(), torch.zeros(2, 1), [0.0, 1.0], solver="pc", steps=2)
    assert all(name in str(err.value) for name in TORCHSDE)  # the message lists the solvers that can


class _Probe(Solver):
    """A registered test solver recording which entry point ran it."""

    name = "test:probe"
    kind = "sde"
    can_simulate = True
    default_steps = 3
    calls: ClassVar[list[str]] = []

    def _solve(self, problem: SamplingProblem) -> tuple[torch.Tensor, SolveStats]:
        self.calls.append("solve")
        return problem.x_T, SolveStats(3, 3, 0)

    def _simulate(self, problem: SimulationProblem) -> tuple[torch.Tensor, SolveStats]:
        self.calls.append("simulate")
        return problem.x0.expand(len(problem.times), *problem.x0.shape), SolveStats(1, 1, 0, evaluations=7)


@pytest.fixture
def probe():
    _registry.register(_Probe, aliases=("probe",))
    _Probe.calls.clear()
    yield _Probe
    del _registry.REGISTRY["test:probe"]
    del _registry._ALIASES["probe"]


def test_sample_and_simulate_resolve_solvers_through_the_registry(probe) -> None:
    sde = sdekit.OrnsteinUhlenbeck()
    x_T = torch.ones(4, 1)
    x, info = sdekit.sample(lambda x, t: -x, sde, (4, 1), solver="probe", x_T=x_T, denoise=False, return_info=True)
    assert torch.equal(x, x_T) and (info.solver, info.steps) == ("test:probe", 3)
    paths, info = sdekit.simulate(sde, x_T, [0.0, 0.5, 1.0], solver="probe", steps=2, return_info=True)
    assert paths.shape == (3, 4, 1) and (info.solver, info.nfe) == ("test:probe", 7)
    assert probe.calls == ["solve", "simulate"]
