"""The model's output is checked at every call (issue #19, point 4): shape, dtype and device at once, from metadata;
finiteness on the device, named in the solver's divergence error when the model (not the solver) produced the first
NaN/inf. And one dtype policy for every entry point: float32 and float64, half precision refused up front."""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.errors import ModelOutputError, SolverDivergedError

SOLVERS = [("euler", 40), ("srk", 20), ("ode:rk4", 10), ("ode", None), ("exp2", 10), ("unipc", 10), ("pc", 10)]


class NaNBelow:
    """The exact N(0, 1) score under VP (``-x``), NaN for t below ``t_bad``; records every time it is called at."""

    def __init__(self, t_bad: float = 0.5):
        self.t_bad, self.times = t_bad, []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.times.append(float(t[0]))
        return torch.where(t[:, None] < self.t_bad, torch.full_like(x, float("nan")), -x)


@pytest.mark.parametrize(("solver", "steps"), SOLVERS)
def test_a_nan_from_the_model_is_named_with_the_time_of_its_first_bad_call(solver: str, steps: int | None) -> None:
    model = NaNBelow()
    with pytest.raises(SolverDivergedError) as info:
        sdekit.sample(
            model, sdekit.VPSDE(), (8, 2), solver=solver, steps=steps, generator=torch.Generator().manual_seed(0)
        )
    first_bad = next(k for k, t in enumerate(model.times) if t < model.t_bad)
    message = str(info.value)
    assert f"returned non-finite values for a moderate input, first at t = {model.times[first_bad]:.6g}" in message
    assert f"(its call {first_bad + 1} of " in message
    assert info.value.t is not None


def test_a_state_that_diverges_first_does_not_blame_the_model() -> None:
    """A stiff but finite score (-1e4 x) with a few explicit Euler steps: the state overflows, then the model sees an
    inf and returns an inf. The solver diverged first, so the model is not named."""
    seen = []

    def stiff(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(bool(torch.isfinite(x).all()))
        return -1e4 * x

    with pytest.raises(SolverDivergedError) as info:
        sdekit.sample(
            stiff, sdekit.VPSDE(), (8, 2), solver="euler", steps=40, generator=torch.Generator().manual_seed(0)
        )
    assert not all(seen)  # the model did receive a non-finite state
    assert "returned non-finite values" not in str(info.value)


class ShapeAt:
    """``-x`` until call ``k``, then something wrong (``bad(x)``)."""

    def __init__(self, k: int, bad):
        self.k, self.bad, self.calls = k, bad, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.bad(x) if self.calls >= self.k else -x


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (lambda x: -x[:, :1], "must return a tensor shaped like x"),
        (lambda x: -x.double(), "returned dtype torch.float64 for x of dtype torch.float32"),
        (lambda x: torch.empty(x.shape, device="meta"), "returned a tensor on meta for x on cpu"),
        (lambda x: (-x).tolist(), "got list"),
    ],
)
@pytest.mark.parametrize(("solver", "steps"), [("euler", 20), ("ode", None), ("exp2", 10)])
def test_a_later_bad_output_is_caught_at_the_call_it_happens(bad, words: str, solver: str, steps: int | None) -> None:
    model = ShapeAt(5, bad)
    with pytest.raises(ModelOutputError) as info:
        sdekit.sample(
            model, sdekit.VPSDE(), (8, 2), solver=solver, steps=steps, generator=torch.Generator().manual_seed(0)
        )
    assert words in str(info.value) and "(call 5, at t = " in str(info.value)
    assert model.calls == 5  # stopped at the bad call, not broadcast into the state


def test_logp_checks_every_call_too() -> None:
    model = ShapeAt(4, lambda x: -x[:, :1])
    with pytest.raises(ModelOutputError, match=r"\(call \d+, at t = .* must return a tensor shaped like x"):
        sdekit.logp(model, sdekit.VPSDE(), torch.randn(4, 2, generator=torch.Generator().manual_seed(0)))
    assert model.calls == 4


HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_is_refused_by_every_entry_point(dtype: torch.dtype) -> None:
    sde, g = sdekit.VPSDE(), torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, generator=g).to(dtype)
    calls = []

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return -x

    attempts = {
        "sample(dtype=)": lambda: sdekit.sample(model, sde, (8, 2), solver="euler", steps=5, dtype=dtype),
        "sample(x_T=)": lambda: sdekit.sample(model, sde, (8, 2), solver="euler", steps=5, x_T=x),
        "simulate": lambda: sdekit.simulate(sde, x, [0.0, 1.0], steps=5),
        "logp": lambda: sdekit.logp(model, sde, x),
        "langevin": lambda: sdekit.langevin(lambda x: -x, x, step_size=0.1, n_steps=5),
        "dsm": lambda: sdekit.losses.dsm(model, sde, x),
        "ssm": lambda: sdekit.losses.ssm(lambda x, t: -x, x, t=0.5),
    }
    for where, call in attempts.items():
        with pytest.raises(TypeError) as info:
            call()
        message = str(info.value)
        assert str(dtype) in message and "torch.float32 or torch.float64" in message, where
        assert "float()" in message or "dtype=torch.float32" in message, where
    assert not calls  # refused before the model ran
    assert x.dtype == dtype  # nothing passed in was converted in place


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64_run_everywhere(dtype: torch.dtype) -> None:
    sde, g = sdekit.VPSDE(), torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, generator=g, dtype=dtype)
    assert sdekit.sample(lambda x, t: -x, sde, (8, 2), solver="euler", steps=5, dtype=dtype).dtype == dtype
    assert sdekit.simulate(sde, x, [0.0, 1.0], steps=5).dtype == dtype
    assert sdekit.logp(lambda x, t: -x, sde, x, solver="rk4", steps=4).dtype == dtype


def test_the_records_stay_bounded_and_still_name_the_first_bad_call() -> None:
    """A long run's finiteness records are folded on the device every ``FOLD`` calls (bounded memory); the first bad
    call is still the one named, across fold boundaries, and a later bad call does not replace it."""
    from sdekit._model_errors import CheckedModel

    bad_calls = {2500, 4000}  # 1-based call numbers, in the third and fourth fold chunks

    class Model:
        calls = 0

        def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return torch.full_like(x, float("nan")) if self.calls in bad_calls else -x

    checked = CheckedModel(Model())
    x = torch.ones(4, 2)
    for i in range(5000):
        checked(x, torch.full((4,), i / 5000))
        assert len(checked._records) < CheckedModel.FOLD
    assert checked.first_nonfinite_call() == (2500, pytest.approx(2499 / 5000))
    clean = CheckedModel(lambda x, t: -x)
    for _ in range(3000):
        clean(x, torch.full((4,), 0.5))
    assert clean.first_nonfinite_call() is None
