r"""Tests of ``sdekit.simulate`` (forward paths) against published closed forms.

* Ornstein–Uhlenbeck :math:`dx = -x\,dt + \sqrt2\,dW` from a point: :math:`x_t \sim N(x_0 e^{-t}, 1 - e^{-2t})`.
* VP (Song et al. 2021) from a point: mean :math:`x_0 e^{-\frac14 t^2(\beta_1 - \beta_0) - \frac12 t\beta_0}`,
  variance :math:`1 - e^{-\frac12 t^2(\beta_1 - \beta_0) - t\beta_0}`.
* Geometric Brownian motion :math:`dx = \mu x\,dt + (a + bt)x\,dW` (diagonal noise, not affine):
  :math:`E x_t = x_0 e^{\mu t}`, :math:`E x_t^2 = x_0^2 e^{2\mu t + \int_0^t (a + bu)^2 du}`, and the pathwise
  solution :math:`x_1 = x_0\exp(\mu - \tfrac12\int_0^1 (a + bu)^2 du + (a + b)W_1 - b\int_0^1 W_u\,du)`.

Every statistical test is seeded; the tolerances are Monte-Carlo standard errors at the stated n.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torchsde

import sdekit
from sdekit.errors import SolverError, UnknownSolverError

F64 = torch.float64
TS = [0.0, 0.1, 0.4, 1.0]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_gaussian(x: torch.Tensor, mean: float, var: float, n: int) -> None:
    """Sample mean and variance within 4 SE (SE(mean) = sqrt(var/n), SE(var) = var sqrt(2/(n-1)), Gaussian).

    With 2 statistics at each of 3 times a fresh seed fails with probability ~ 6 * 6.3e-5 = 4e-4.
    """
    x = x.to(F64)
    assert abs(float(x.mean()) - mean) < 4 * math.sqrt(var / n), (float(x.mean()), mean)
    assert abs(float(x.var()) - var) < 4 * var * math.sqrt(2 / (n - 1)), (float(x.var()), var)


# --------------------------------------------------------------------------- exact marginals from a point
@pytest.mark.parametrize(
    ("solver", "kw"),
    [("euler", {"steps": 1000}), ("srk", {"steps": 50}), ("heun", {"dt": 0.01}), ("srk", {})],
)
def test_ou_marginals_from_a_point(solver: str, kw: dict) -> None:
    """OU from x0 = 1.5: N(x0 e^-t, 1 - e^-2t) at every output time (n = 20,000; 4 SE).

    Discretisation bias is far below the SE (0.006 for the variance): Euler's stationary variance
    is 2/(2 - h) = 1 + h/2 = 1 + 5e-4 at h = 1e-3; srk (weak order 2 here) and heun at h <= 0.02 are
    below that; the adaptive srk run (rtol = atol = 1e-3) steps exactly on the output times.
    """
    n, x0 = 20_000, 1.5
    sde = sdekit.OrnsteinUhlenbeck()
    paths = sdekit.simulate(sde, torch.full((n, 1), x0, dtype=F64), TS, solver=solver, generator=_gen(1), **kw)
    assert paths.shape == (len(TS), n, 1)
    assert torch.equal(paths[0], torch.full((n, 1), x0, dtype=F64))
    for k, t in enumerate(TS[1:], start=1):
        _check_gaussian(paths[k], x0 * math.exp(-t), 1 - math.exp(-2 * t), n)


def test_vp_marginals_from_a_point() -> None:
    """VP (beta 0.1 -> 20) from x0 = 2, event shape (2, 3): the published alpha(t), sigma(t)^2 (n = 4,000 x 6; 4 SE)."""
    n, x0, b0, b1 = 4000, 2.0, 0.1, 20.0
    sde = sdekit.VPSDE()
    x = torch.full((n, 2, 3), x0, dtype=F64)
    paths = sdekit.simulate(sde, x, TS, solver="srk", steps=200, generator=_gen(2))
    assert paths.shape == (len(TS), n, 2, 3)
    for k, t in enumerate(TS[1:], start=1):
        log_alpha = -0.25 * t * t * (b1 - b0) - 0.5 * t * b0
        _check_gaussian(paths[k], x0 * math.exp(log_alpha), 1 - math.exp(2 * log_alpha), 6 * n)


def test_gbm_moments_diagonal_noise() -> None:
    """Non-affine (x-dependent) noise: E x_t = x0 e^{mu t}, E x_t^2 = x0^2 e^{2 mu t + int sigma^2} (n = 20,000).

    x_t is log-normal; SE(mean) = sqrt(Var x_t / n) with the exact Var; the second moment is checked
    with 4 SE computed from the sample (its 4th moment is finite: log-variance <= 0.58 here).
    """
    n, mu, a, b = 20_000, 0.5, 0.5, 0.5
    sde = sdekit.SDE.from_expressions("mu*x", "(a + b*t)*x", mu=mu, a=a, b=b)
    assert not sde.is_affine and sde.noise_type == "diagonal"
    for solver in ("milstein", "srk"):
        paths = sdekit.simulate(sde, torch.ones(n, 1, dtype=F64), TS, solver=solver, steps=200, generator=_gen(3))
        for k, t in enumerate(TS[1:], start=1):
            int_s2 = a * a * t + a * b * t * t + b * b * t**3 / 3
            m1, m2 = math.exp(mu * t), math.exp(2 * mu * t + int_s2)
            x = paths[k].flatten()
            assert abs(float(x.mean()) - m1) < 4 * math.sqrt((m2 - m1 * m1) / n), (solver, t)
            sq = x * x
            assert abs(float(sq.mean()) - m2) < 4 * float(sq.std()) / math.sqrt(n), (solver, t)


def _gbm_strong_slope(solver: str) -> float:
    """Fitted log-log slope of E|x_h(1) - x(1)| over h = 2^-3..2^-7 on one BrownianInterval per path."""
    paths, mu, a, b = 2000, 0.5, 0.5, 0.5
    sde = sdekit.SDE.from_expressions("mu*x", "(a + b*t)*x", mu=mu, a=a, b=b)
    bm = torchsde.BrownianInterval(
        t0=0.0, t1=1.0, size=(paths, 1), dtype=F64, entropy=42, levy_area_approximation="space-time"
    )
    w, u = bm(0.0, 1.0, return_U=True)  # W_1 and int_0^1 W_u du
    int_s2 = a * a + a * b + b * b / 3
    x0 = torch.ones(paths, 1, dtype=F64)
    exact = x0 * torch.exp(mu - 0.5 * int_s2 + (a + b) * w - b * u)
    levels = (3, 4, 5, 6, 7)
    errs = [
        float((sdekit.simulate(sde, x0, [0.0, 1.0], solver=solver, steps=2**k, bm=bm)[-1] - exact).abs().mean())
        for k in levels
    ]
    return float(np.polyfit(np.log([2.0**-k for k in levels]), np.log(errs), 1)[0])


@pytest.mark.parametrize(("solver", "order"), [("euler", 0.5), ("milstein", 1.0)])
def test_strong_order_on_gbm(solver: str, order: float) -> None:
    """Strong order of the forward solvers on a time-dependent GBM (pathwise closed form): slope within 0.25
    of theory (TESTING.md; 2,000 paths, 5 levels)."""
    slope = _gbm_strong_slope(solver)
    assert abs(slope - order) <= 0.25, f"{solver}: slope {slope:.3f}, theory {order}"


# --------------------------------------------------------------------------- grids, seeds, dtypes, info
def test_output_times_are_hit_and_steps_counted() -> None:
    """steps=n over [ts0, tsK] with ts on the uniform grid takes exactly n steps; dt splits each interval."""
    sde = sdekit.OrnsteinUhlenbeck()
    x0 = torch.zeros(8, 1, dtype=F64)
    _, info = sdekit.simulate(sde, x0, [0.0, 0.25, 1.0], steps=100, return_info=True, generator=_gen(0))
    assert (info.steps, info.nfe, info.solver) == (100, 100, "euler")
    _, info = sdekit.simulate(sde, x0, [0.0, 0.3, 1.0], dt=0.1, return_info=True, generator=_gen(0))
    assert info.steps == 3 + 7
    _, info = sdekit.simulate(sde, x0, torch.tensor([0.2, 0.5]), dt=0.07, return_info=True, generator=_gen(0))
    assert info.steps == 5  # ceil(0.3 / 0.07)


@pytest.mark.parametrize("solver", ["euler", "srk", "reversible_heun"])
def test_same_seed_same_paths(solver: str) -> None:
    sde = sdekit.OrnsteinUhlenbeck()
    x0 = torch.zeros(32, 2, dtype=F64)
    a = sdekit.simulate(sde, x0, TS, solver=solver, steps=20, generator=_gen(5))
    b = sdekit.simulate(sde, x0, TS, solver=solver, steps=20, generator=_gen(5))
    c = sdekit.simulate(sde, x0, TS, solver=solver, steps=20, generator=_gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    a = sdekit.simulate(sde, x0, TS, solver="srk", generator=_gen(5))  # adaptive: seeded BrownianInterval
    b = sdekit.simulate(sde, x0, TS, solver="srk", generator=_gen(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype: torch.dtype) -> None:
    """dtype and device follow x0; float32 paths are right in law (OU at t = 1: 4 SE of mean and variance, n = 20k)."""
    n = 20_000
    sde = sdekit.OrnsteinUhlenbeck()
    paths = sdekit.simulate(sde, torch.ones(n, 1, dtype=dtype), [0.0, 1.0], steps=500, generator=_gen(7))
    assert paths.dtype == dtype and paths.device.type == "cpu"
    _check_gaussian(paths[-1], math.exp(-1), 1 - math.exp(-2), n)


@pytest.mark.parametrize(
    "make",
    [lambda: sdekit.SDE.from_expressions("-x", "1", T=0.3), lambda: sdekit.CosineVPSDE()],
    ids=["custom-T0.3", "CosineVPSDE-T0.995"],
)
def test_simulate_accepts_a_float32_linspace_up_to_T(make):
    # T = 0.3 or 0.995 is not a float32 number: float32(T) > T, and simulate raised
    # "ts must lie in [0, T] = [0, 0.995], got [0, 0.995]".
    sde = make()
    ts = torch.linspace(0.0, sde.T, 4)  # float32, the docstring's own idiom
    out = sdekit.simulate(sde, torch.zeros(4, 2), ts, steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 4, 2)


def test_simulate_accepts_a_float64_linspace_up_to_T():
    """Control for the test above (passes today)."""
    sde = sdekit.SDE.from_expressions("-x", "1", T=0.3)
    ts = torch.linspace(0.0, sde.T, 4, dtype=torch.float64)
    out = sdekit.simulate(sde, torch.zeros(4, 2), ts, steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 4, 2)


def test_simulate_takes_numpy_times():
    sde = sdekit.OrnsteinUhlenbeck()
    x0 = torch.zeros(4, 1, dtype=torch.float64)
    a = sdekit.simulate(sde, x0, np.linspace(0.0, 1.0, 5), steps=8, generator=torch.Generator().manual_seed(0))
    b = sdekit.simulate(
        sde, x0, torch.linspace(0.0, 1.0, 5, dtype=torch.float64), steps=8, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x0": [0.0, 1.0]}, TypeError, "x0"),
        ({"x0": torch.zeros(4, 1, dtype=torch.long)}, TypeError, "x0"),
        ({"x0": torch.zeros(())}, ValueError, "x0"),
        ({"x0": torch.full((4, 1), float("nan"))}, ValueError, "NaN"),
        ({"ts": [0.0]}, ValueError, "at least two"),
        ({"ts": [0.0, 0.5, 0.5]}, ValueError, "strictly increasing"),
        ({"ts": [0.5, 0.2]}, ValueError, "strictly increasing"),
        ({"ts": [-0.1, 0.5]}, ValueError, r"\[0, T\]"),
        ({"ts": [0.0, 5.5]}, ValueError, r"\[0, T\]"),  # OU: T = 5
        ({"ts": torch.zeros(2, 2)}, ValueError, "1-D"),
        ({"ts": "01"}, TypeError, "ts"),
        ({"ts": [0.0, float("nan")]}, ValueError, "NaN"),
        ({"solver": "ode"}, SolverError, "torchsde solver"),
        ({"solver": "pc"}, SolverError, "torchsde solver"),
        ({"solver": "eulr"}, UnknownSolverError, "euler"),
        ({"solver": 3}, TypeError, "solver"),
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 10, "dt": 0.1}, ValueError, "not both"),
        ({"dt": -0.1}, ValueError, "dt"),
        ({"rtol": 0.0}, ValueError, "rtol"),
        ({"generator": 1}, TypeError, "generator"),
        ({"sde": "ou"}, TypeError, "sde"),
        ({"bm": 1}, TypeError, "bm"),
    ],
)
def test_input_errors(kwargs: dict, error: type[Exception], match: str) -> None:
    args = {"sde": sdekit.OrnsteinUhlenbeck(), "x0": torch.zeros(4, 1), "ts": [0.0, 1.0], **kwargs}
    with pytest.raises(error, match=match):
        sdekit.simulate(args.pop("sde"), args.pop("x0"), args.pop("ts"), **args)


def test_divergence_is_reported() -> None:
    """dx = x^2 dt from x0 = 1 explodes at t = 1: SolverDivergedError naming a time window."""
    sde = sdekit.SDE.from_expressions("x**2", "0.1", T=2.0)
    with pytest.raises(sdekit.errors.SolverDivergedError, match="non-finite"):
        sdekit.simulate(sde, torch.ones(4, 1, dtype=F64), [0.0, 2.0], steps=2000)


def test_simulate_rejects_a_brownian_motion_that_ends_before_the_last_time():
    bm = torchsde.BrownianInterval(t0=0.0, t1=0.5, size=(4, 2), dtype=torch.float64, entropy=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchsde warns at every step past t1 = 0.5 and extrapolates
        with pytest.raises(ValueError, match="bm"):
            x0 = torch.zeros(4, 2, dtype=torch.float64)
            sdekit.simulate(sdekit.OrnsteinUhlenbeck(), x0, [0.0, 1.0], steps=10, bm=bm)
