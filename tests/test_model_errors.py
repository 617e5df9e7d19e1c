"""An exception raised by the user's model propagates as itself (with the time as a note on Python >= 3.11), from
every kind of solver and from logp; before, torchdiffeq's and torchsde's drivers reported a model's
``AssertionError`` as step-size underflow or a non-finite state (issue #19, point 2)."""

from __future__ import annotations

import sys

import pytest
import torch

import sdekit
from sdekit.errors import SdekitError


class Buggy:
    """The exact N(0, 1) score under VP, asserting below ``t_fail`` (a user's bug deep in a run)."""

    def __init__(self, exc: type[Exception], t_fail: float = 0.5):
        self.exc, self.t_fail = exc, t_fail

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if bool((t < self.t_fail).any()):
            raise self.exc("bug in my model")
        return -x


def _check(info: pytest.ExceptionInfo, exc: type[Exception]) -> None:
    assert type(info.value) is exc and not isinstance(info.value, SdekitError)
    assert str(info.value) == "bug in my model"
    if sys.version_info >= (3, 11):
        notes = getattr(info.value, "__notes__", [])
        assert any(n.startswith("sdekit: raised by the model at t = ") for n in notes), notes


@pytest.mark.parametrize(
    ("solver", "steps"),
    [
        ("ode", None),
        ("srk", None),
        ("euler", 20),
        ("srk", 20),
        ("ode:rk4", 10),
        ("ode:euler", 10),
        ("ode:explicit_adams", 10),
        ("exp2", 10),
        ("unipc", 10),
        ("pc", 10),
    ],
)
@pytest.mark.parametrize("exc", [AssertionError, RuntimeError])
def test_sample_reports_the_models_own_exception(solver: str, steps: int | None, exc: type[Exception]) -> None:
    sde = sdekit.VPSDE()
    with pytest.raises(exc) as info:
        sdekit.sample(Buggy(exc), sde, (8, 2), solver=solver, steps=steps, generator=torch.Generator().manual_seed(0))
    _check(info, exc)


@pytest.mark.parametrize(("solver", "steps"), [("dopri5", None), ("rk4", 10)])
@pytest.mark.parametrize("exc", [AssertionError, RuntimeError])
def test_logp_reports_the_models_own_exception(exc: type[Exception], solver: str, steps: int | None) -> None:
    """logp integrates from eps up: the model fails above t = 0.5, inside the solve (not at the input check), also
    through the fixed-grid path, whose finiteness watch and step callback sit between torchdiffeq and the model."""
    sde = sdekit.VPSDE()
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    model = Buggy(exc, t_fail=0.5)
    with pytest.raises(exc) as info:
        sdekit.logp(lambda x, t: model(x, 1.0 - t), sde, x, solver=solver, steps=steps)
    _check(info, exc)


def test_adaptive_ode_reports_a_nan_model_as_divergence_where_it_happened() -> None:
    """A model that returns NaN below t = 0.5: the adaptive PF-ODE solve stops with SolverDivergedError at the step
    where the drift became non-finite (before: torchdiffeq's "underflow in dt", a false diagnosis)."""
    from sdekit.errors import SolverDivergedError  # lazy: only this test

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.where((t < 0.5)[:, None], torch.full_like(x, float("nan")), -x)

    with pytest.raises(SolverDivergedError, match="non-finite") as info:
        sdekit.sample(model, sdekit.VPSDE(), (8, 2), solver="ode")
    assert 0.0 < info.value.t < 0.5 and info.value.step is not None and info.value.step > 0
