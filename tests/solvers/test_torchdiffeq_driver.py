"""The one torchdiffeq driver (sdekit.solvers._odedriver) behind sample's ``ode`` solvers and sdekit.logp.

* the driver itself: every registered ``ode:<method>`` integrates a linear ODE with a known solution at
  its declared order; step statistics, the finite watch, error translation, tuple states, the adjoint;
* both entry points go through it, resolve names through the registry alike and reject the same options;
* it keeps every solve inside its interval (the model is called only on [eps, T]: regression tests
  of the adversarial API pass).
"""

from __future__ import annotations

import math
import pathlib
import re

import pytest
import torch
from _mixtures import small_mixture as _mixture

import sdekit
from sdekit import analytic
from sdekit.errors import SolverDivergedError, SolverError, UnknownSolverError
from sdekit.solvers import _odedriver
from sdekit.solvers._odedriver import integrate, is_fixed_grid
from sdekit.solvers._torchdiffeq import ODE_METHODS, ode_method

F64 = torch.float64


# --------------------------------------------------------------------------- the driver on a linear ODE
Y0 = torch.tensor([1.0, -0.5, 2.0], dtype=F64)


def _linear(t, y):
    """y' = -2 (1 + t) y: y(t) = y(0) exp(-2 t - t^2)."""
    return -2.0 * (1.0 + t) * y


def _exact(t0, t1, y0):
    return y0 * math.exp(-(2 * t1 + t1**2) + (2 * t0 + t0**2))


def _error_on_grid(method, n):
    """Max error at t = 1 after n equal steps (adaptive methods pinned to the grid as sample's steps=n does)."""
    t = torch.tensor([0.0, 1.0], dtype=F64)
    if is_fixed_grid(method):
        options, tol = {"step_size": 1.0 / n}, 1e-7
        if "adams" in method:
            options["max_order"] = 4  # the order sdekit declares for them (torchdiffeq's default is 12)
    else:  # every step ends on the grid (step_t) and is accepted (huge tolerances)
        options = {"step_t": torch.linspace(0.0, 1.0, n + 1, dtype=F64)[1:], "first_step": 2.0 / n}
        tol = 1e10
    run = integrate(_linear, Y0, t, method=method, rtol=tol, atol=tol, options=options)
    return float((run.ys[-1] - _exact(0.0, 1.0, Y0)).abs().max())


@pytest.mark.parametrize("method", ODE_METHODS)
def test_every_registered_method_converges_at_its_declared_order(method):
    # Observed order log2(e(n) / e(2n)) on a smooth scalar-coefficient ODE; n is chosen per order so that e(2n) stays
    # far above float64 round-off (dopri8 at 8 steps: 2e-11). Measured: within 0.02-0.9 above the declared order
    # (pre-asymptotic: explicit_adams 3.8 at 16 steps, dopri8 8.9 at 4), never below by more than 0.2.
    order = sdekit.solvers.available()[f"ode:{method}"].weak_order
    n = {8: 4, 5: 8}.get(order, 16)
    observed = math.log2(_error_on_grid(method, n) / _error_on_grid(method, 2 * n))
    assert order - 0.3 < observed < order + 1.0, (method, order, observed)


def test_sampling_docs_table_matches_declared_explicit_adams_order():
    text = (pathlib.Path(__file__).parents[2] / "docs" / "sampling.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `ode:explicit_adams`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    documented = float(re.sub(r"[^0-9.]", "", cells[3]))
    declared = float(sdekit.solvers.get("ode:explicit_adams").weak_order)
    assert documented == declared


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_adaptive_run_meets_its_tolerance_and_counts_its_steps(direction):
    # dopri5 at rtol = atol = 1e-9: the global error measured 9e-10 forward; 1e-7 leaves two decades. FSAL: 2
    # evaluations to start (f0 and the bounded first-step probe), then 6 per attempted step, accepted or not.
    t0, t1 = (0.0, 1.0) if direction == "forward" else (1.0, 0.0)
    y0 = _exact(0.0, t0, Y0)
    times = torch.tensor([t0, t1], dtype=F64)
    run = integrate(_linear, y0, times, method="dopri5", rtol=1e-9, atol=1e-9, options={})
    assert (run.ys[-1] - _exact(t0, t1, y0)).abs().max() < 1e-7
    assert run.accepted > 0 and run.rejected >= 0
    assert run.evaluations == 2 + 6 * (run.accepted + run.rejected)
    assert run.ys.shape == (2, 3) and torch.equal(run.ys[0], y0)


def test_fixed_grid_run_reports_no_step_counts():
    run = integrate(_linear, Y0, torch.tensor([0.0, 1.0], dtype=F64), method="rk4", rtol=1, atol=1,
                    options={"step_size": 0.25})  # fmt: skip
    assert run.evaluations == 4 * 4 and run.accepted is None and run.rejected is None


def test_tuple_state_and_the_model_stays_inside_the_interval():
    # (y, integral of sum y): the augmented form of logp. The quadrature of y(t) = y0 exp(-2t - t^2) over [0, 1] is
    # sum(y0) * sqrt(pi)/2 * e * (erf(2) - erf(1)); at rtol = atol = 1e-9 the error is ~1e-9 (1e-7 asserted).
    seen = []

    def func(t, state):
        seen.append(float(t))
        return _linear(t, state[0]), state[0].sum().reshape(1)

    state0 = (Y0, torch.zeros(1, dtype=F64))
    run = integrate(func, state0, torch.tensor([0.0, 1.0], dtype=F64), method="bosh3", rtol=1e-9, atol=1e-9, options={})
    integral = float(Y0.sum()) * math.sqrt(math.pi) / 2 * math.e * (math.erf(2.0) - math.erf(1.0))
    assert abs(float(run.ys[1][-1]) - integral) < 1e-7
    assert min(seen) >= 0.0 and max(seen) <= 1.0
    assert run.evaluations == len(seen)


def test_adjoint_gradient_of_a_linear_ode():
    # y' = a y, y(1) = y0 e^a: d y(1) / d a = y0 e^a (adjoint solve at rtol = atol = 1e-10: 1e-7 asserted).
    a = torch.tensor(-0.7, dtype=F64, requires_grad=True)
    times = torch.tensor([0.0, 1.0], dtype=F64)
    run = integrate(lambda t, y: a * y, Y0, times, method="dopri5", rtol=1e-10, atol=1e-10, options={},
                    graph=True, adjoint_params=(a,))  # fmt: skip
    (grad,) = torch.autograd.grad(run.ys[-1].sum(), a)
    assert abs(float(grad) - float(Y0.sum()) * math.exp(-0.7)) < 1e-7


def test_watch_names_the_time_and_unwatched_runs_fail_with_a_solver_error():
    def blows_up(t, y):  # NaN past t = 0.5
        return torch.where(t > 0.5, torch.full_like(y, float("nan")), -y)

    times = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(SolverDivergedError, match="the test ODE became non-finite") as err:
        integrate(blows_up, Y0, times, method="dopri5", rtol=1e-6, atol=1e-6, options={}, watch="the test ODE")
    assert 0.5 < err.value.t <= 1.0 and err.value.step > 0
    # without a watch torchdiffeq rejects the step until its size underflows: a SolverError saying what to change
    with pytest.raises(SolverError, match="Loosen rtol/atol"):
        integrate(blows_up, Y0, times, method="dopri5", rtol=1e-6, atol=1e-6, options={})


def test_options_are_not_modified():
    options = {"max_num_steps": 1000}
    integrate(_linear, Y0, torch.tensor([0.0, 1.0], dtype=F64), method="dopri5", rtol=1e-6, atol=1e-6, options=options)
    assert options == {"max_num_steps": 1000}


# --------------------------------------------------------------------------- sample and logp share the driver
def test_sample_and_logp_integrate_through_the_driver(monkeypatch):
    calls = []
    solve = _odedriver.odeint

    def recording(func, y0, t, **kw):
        calls.append((kw["method"], type(y0).__name__))
        return solve(func, y0, t, **kw)

    monkeypatch.setattr(_odedriver, "odeint", recording)
    sde = sdekit.VPSDE()
    oracle = _mixture().diffuse(sde)
    sdekit.sample(oracle, sde, (8, 2), solver="ode:bosh3", generator=torch.Generator().manual_seed(0))
    sdekit.logp(oracle, sde, torch.zeros(4, 2), solver="ode:bosh3")
    assert calls == [("bosh3", "Tensor"), ("bosh3", "tuple")]


@pytest.mark.parametrize("name", ["ode", "dopri5", "ode:dopri5", "ode:rk4", "bosh3", "ode:euler"])
def test_logp_resolves_names_through_the_registry_like_sample(name):
    assert ode_method(name) == sdekit.solvers._registry.get(name).method


def test_logp_reads_bare_names_of_sde_solvers_as_the_ode_method():
    # sample's "euler" is torchsde's; logp integrates an ODE, so its "euler" is torchdiffeq's (as before the driver)
    assert sdekit.solvers._registry.get("euler").kind == "sde"
    assert ode_method("euler") == "euler" and ode_method("midpoint") == "midpoint"


@pytest.mark.parametrize("name", ["dopri6", "ode:dopri6"])
def test_unknown_names_raise_the_same_error_with_suggestions(name):
    sde = sdekit.VPSDE()
    oracle = _mixture().diffuse(sde)
    with pytest.raises(UnknownSolverError, match=r"Did you mean.*dopri5"):
        sdekit.sample(oracle, sde, (4, 2), solver=name)
    with pytest.raises(UnknownSolverError, match=r"Did you mean.*dopri5"):
        sdekit.logp(oracle, sde, torch.zeros(2, 2), solver=name)
    with pytest.raises(UnknownSolverError, match="not one of its methods"):
        sdekit.logp(oracle, sde, torch.zeros(2, 2), solver="srk")  # an SDE solver
    with pytest.raises(TypeError, match="solver"):
        sdekit.logp(oracle, sde, torch.zeros(2, 2), solver=5)


def test_sample_and_logp_reject_an_option_torchdiffeq_would_ignore():
    # torchdiffeq only warns about unknown options; both entry points refuse them, naming the key
    # (sample: SolverError, as its other solver families; logp: ValueError, as its other arguments).
    sde = sdekit.VPSDE()
    oracle = _mixture().diffuse(sde)
    with pytest.raises(SolverError, match="max_num_step"):
        sdekit.sample(oracle, sde, (4, 2), solver="ode", max_num_step=10)
    with pytest.raises(ValueError, match="max_num_step"):
        sdekit.logp(oracle, sde, torch.zeros(2, 2), options={"max_num_step": 10})


def test_sample_ode_works_with_a_discrete_time_model():
    sde = sdekit.OrnsteinUhlenbeck()
    oracle = analytic.Gaussian(torch.zeros(2), std=1.01).diffuse(sde)
    table = torch.zeros(1000)

    def ddpm_like(x, t):
        return oracle(x, t) + table[(t / sde.T * 999).round().long()][:, None]

    x = sdekit.sample(ddpm_like, sde, (64, 2), solver="ode", generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("steps", [None, 3])
def test_sample_ode_rejects_unknown_options(steps):
    sde = sdekit.VPSDE()
    with pytest.raises(SolverError):
        sdekit.sample(_mixture().diffuse(sde), sde, (8, 2), solver="ode", steps=steps, tolerance=1e-3)


# --------------------------------------------------------------------------- the model is called only on [eps, T]
class _TimeRecorder:
    """Wrap a model and record the smallest and largest time it was called with."""

    def __init__(self, model):
        self.model = model
        self.lo = float("inf")
        self.hi = -float("inf")

    def __call__(self, x, t):
        td = t.detach()
        self.lo = min(self.lo, float(td.min()))
        self.hi = max(self.hi, float(td.max()))
        return self.model(x, t)


def test_logp_ve_float32_1d_does_not_call_the_model_past_T():
    sde = sdekit.VESDE()
    data = analytic.Gaussian(torch.zeros(1), std=0.7)
    oracle = data.diffuse(sde)
    x = data.sample(4, generator=torch.Generator().manual_seed(0))
    model = _TimeRecorder(oracle)
    lp = sdekit.logp(model, sde, x, prior=oracle.at(sde.T))
    assert model.hi <= sde.T * (1 + 1e-6)
    assert torch.isfinite(lp).all()


def test_logp_float32_cosine_does_not_call_the_model_past_T():
    sde = sdekit.CosineVPSDE()
    data = _mixture()
    model = _TimeRecorder(data.diffuse(sde))
    sdekit.logp(model, sde, data.sample(16, generator=torch.Generator().manual_seed(0)))
    assert model.hi <= sde.T * (1 + 1e-6)


def test_logp_adjoint_backward_solve_stays_on_eps_T():
    sde = sdekit.VPSDE()
    data = _mixture(torch.float64)
    oracle = data.diffuse(sde)
    x = data.sample(8, generator=torch.Generator().manual_seed(0))

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

        def forward(self, x, t):
            return self.a * oracle(x, t)

    net = Scaled()
    model = _TimeRecorder(net)
    # (with normalize=False the same run raises SolverDivergedError: g(t) = sqrt(beta(t)) is NaN for t < 0)
    lp = sdekit.logp(model, sde, x, adjoint=True, adjoint_params=list(net.parameters()))
    lp.mean().backward()
    assert model.lo >= 1e-5 * (1 - 1e-6)
    assert model.hi <= sde.T * (1 + 1e-6)


def test_logp_backprop_without_adjoint_stays_on_eps_T():
    """Control for the test above (passes today): plain backpropagation never leaves [eps, T] on VP."""
    sde = sdekit.VPSDE()
    data = _mixture(torch.float64)
    oracle = data.diffuse(sde)
    x = data.sample(8, generator=torch.Generator().manual_seed(0)).requires_grad_()
    model = _TimeRecorder(oracle)
    sdekit.logp(model, sde, x).sum().backward()
    assert model.lo >= 1e-5 * (1 - 1e-6) and model.hi <= sde.T * (1 + 1e-6)


@pytest.mark.parametrize("solver", ["ode", "ode:bosh3"])
def test_sample_adaptive_ode_calls_the_model_only_on_eps_T(solver):
    sde = sdekit.OrnsteinUhlenbeck()
    model = _TimeRecorder(_mixture().diffuse(sde))
    sdekit.sample(model, sde, (16, 2), solver=solver, generator=torch.Generator().manual_seed(0))
    assert model.lo >= sde.default_eps * (1 - 1e-6)
    assert model.hi <= sde.T * (1 + 1e-6)


@pytest.mark.parametrize("eps", [1e-4, 1e-5])
@pytest.mark.parametrize("steps", [None, 7], ids=["adaptive", "fixed-grid"])
def test_sample_ode_float32_small_eps(eps, steps):
    sde = sdekit.VPSDE()
    model = _TimeRecorder(_mixture().diffuse(sde))
    x = sdekit.sample(
        model, sde, (64, 2), solver="ode", steps=steps, eps=eps, generator=torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(x).all()
    assert model.lo >= eps * (1 - 1e-6)


def test_sample_ode_float32_small_eps_works_with_a_float32_step_t():
    """Pins the cause (passes today): the same run with step_t in the solve's dtype stays on [eps, T]."""
    sde = sdekit.VPSDE()
    eps = 1e-4
    model = _TimeRecorder(_mixture().diffuse(sde))
    step_t = torch.tensor([eps], dtype=torch.float32)
    sdekit.sample(model, sde, (64, 2), solver="ode", eps=eps, step_t=step_t, generator=torch.Generator().manual_seed(0))
    assert model.lo >= eps * (1 - 1e-6)
