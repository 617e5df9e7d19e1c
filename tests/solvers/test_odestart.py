"""sdekit.solvers._odestart: torchdiffeq's first-step heuristic, bounded to the interval, with no extra evaluations."""

from __future__ import annotations

import pytest
import torch
from torchdiffeq import odeint
from torchdiffeq._impl.misc import _rms_norm, _select_initial_step
from torchdiffeq._impl.odeint import SOLVERS

from sdekit.solvers._odestart import bounded_start, end_time, uses_first_step


class _Counted:
    def __init__(self):
        self.calls, self.times = 0, []

    def __call__(self, t, y):
        self.calls += 1
        self.times.append(float(t))
        return -2.0 * y * (1.0 + t)  # y' = -2 (1 + t) y


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "dopri8", "adaptive_heun", "fehlberg2"])
def test_same_first_step_as_torchdiffeq_when_the_probe_fits(method):
    y0 = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    t = torch.tensor([0.0, 10.0], dtype=torch.float64)
    func = _Counted()
    _, first = bounded_start(func, y0, t, method=method, rtol=1e-6, atol=1e-6, norm=_rms_norm)
    tol = torch.tensor(1e-6, dtype=torch.float64)
    reference = _select_initial_step(_Counted(), t[0], y0, SOLVERS[method].order - 1, tol, tol, _rms_norm)
    assert first == pytest.approx(float(reference), rel=1e-12)
    assert func.calls == 2  # f0 and the probe


def test_same_solution_and_evaluations_as_torchdiffeq():
    y0 = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    plain = _Counted()
    ref = odeint(plain, y0, t, rtol=1e-7, atol=1e-7, method="dopri5")
    ours = _Counted()
    func, first = bounded_start(ours, y0, t, method="dopri5", rtol=1e-7, atol=1e-7, norm=_rms_norm)
    out = odeint(func, y0, t, rtol=1e-7, atol=1e-7, method="dopri5", options={"first_step": first})
    assert torch.equal(out, ref)
    assert ours.calls == plain.calls  # f0 is handed back on torchdiffeq's first call


@pytest.mark.parametrize("direction", [1, -1])
def test_probe_stays_inside_a_short_interval(direction):
    """A slowly varying ODE on a short interval: torchdiffeq's probe h0 = 0.01 d0/d1 is far longer than it."""
    y0 = torch.ones(3, dtype=torch.float64)
    ends = [0.5, 0.5 + 1e-3]
    t = torch.tensor(ends[::direction], dtype=torch.float64)
    func = _Counted()
    _, first = bounded_start(func, y0, t, method="dopri5", rtol=1e-5, atol=1e-5, norm=_rms_norm)
    assert min(func.times) >= min(ends) and max(func.times) <= max(ends)
    assert 0 < first <= 1e-3 * (1 + 1e-12)
    unbounded = _Counted()
    _select_initial_step(unbounded, t[0], y0, 4, torch.tensor(1e-5), torch.tensor(1e-5), _rms_norm)
    assert max(abs(s - 0.5) for s in unbounded.times) > 1e-3  # what bounded_start prevents


def test_tuple_states_and_end_time():
    y0 = (torch.ones(4, 2, dtype=torch.float32), torch.zeros(4, dtype=torch.float32))
    t = torch.tensor([1e-5, 0.995], dtype=torch.float32)

    def func(tt, state):
        return (-state[0], state[0].sum(1))

    def norm(state):  # torchdiffeq's mixed norm for tuple states
        return torch.stack([_rms_norm(part) for part in state]).max()

    wrapped, first = bounded_start(func, y0, t, method="dopri5", rtol=1e-5, atol=1e-5, norm=norm)
    assert wrapped(t[0], tuple(p.clone() for p in y0))[0] is not None
    assert 0 < first <= float(t[1] - t[0])
    # float32 T = 0.995 rounds; step_t must hold the float32 value, compared by torchdiffeq in float64
    assert end_time(t).dtype == torch.float64 and float(end_time(t)) == float(t[1])
    assert float(end_time(t)) != 0.995
    assert uses_first_step("dopri5") and not uses_first_step("rk4")
