r"""The Gaussian-proxy order rule of :mod:`sdekit.solvers._exponential` (``saturation_orders``) and UniPC's
``lower_order_final="auto"``.

* :func:`proxy_local_errors` against an independent computation: the exact step integral
  :math:`\int_0^h e^{\tau-h} g(\lambda_i + \tau)\,d\tau` and the integral of the explicitly built Lagrange polynomial
  through the earlier points, both by the trapezoidal rule on 200,001 points (error :math:`\le h^3 \max|f''|/(12
  m^2) < 1e-10` for h <= 2.5), against Simpson's rule on 64 intervals in the library (error
  :math:`\le h^5\max|f^{(4)}|/(180\cdot 64^4) < 1e-8`): tolerance 1e-8 absolute, on local errors of 1e-5 to 1e-2.
* The rule: order 1 exactly where the constant's local error is below every higher order's; on a long step at low
  noise (saturated denoiser) the constant wins, on short steps where noise and data are comparable it loses.
* UniPC with ``lower_order_final="auto"`` runs those orders, one model evaluation per step.
"""

from __future__ import annotations

import math

import pytest
import torch

import sdekit
from sdekit.solvers import get
from sdekit.solvers._exponential import proxy_local_errors, saturation_orders
from sdekit.solvers._grids import log_snr, time_grid

F64 = torch.float64


def _g(u: torch.Tensor) -> torch.Tensor:
    return (1 + torch.exp(-2 * u)) ** -0.5


def _trapezoid(f: torch.Tensor, h: float) -> float:
    return float(((f[1:] + f[:-1]) / 2).sum() * h / (f.shape[0] - 1))


def _independent_error(lam: list[float], i: int, q: int, c: float) -> float:
    h = lam[i + 1] - lam[i]
    tau = torch.linspace(0.0, h, 200_001, dtype=F64)
    nodes = [lam[i - k] - lam[i] for k in range(q)]
    values = [float(_g(torch.tensor(lam[i] + node + math.log(c), dtype=F64))) for node in nodes]
    poly = torch.zeros_like(tau)
    for j, (nj, vj) in enumerate(zip(nodes, values)):
        basis = torch.ones_like(tau)
        for k, nk in enumerate(nodes):
            if k != j:
                basis = basis * (tau - nk) / (nj - nk)
        poly = poly + vj * basis
    weight = torch.exp(tau - h)
    exact = _trapezoid(weight * _g(lam[i] + tau + math.log(c)), h)
    return abs(exact - _trapezoid(weight * poly, h))


@pytest.mark.parametrize("data_std", [1.0, 0.5, (2.0, 0.7)])
def test_local_errors_match_an_independent_computation(data_std) -> None:
    lam = torch.tensor([-5.0, -3.1, -1.9, -1.0, -0.4, 0.1, 0.7, 1.5, 2.3, 3.4, 4.6], dtype=F64)
    err = proxy_local_errors(lam, 3, data_std)
    scales = data_std if isinstance(data_std, tuple) else (data_std,)
    lam_list = lam.tolist()
    for i in range(lam.shape[0] - 1):
        for q in (1, 2, 3):
            if i < q - 1:
                assert math.isinf(float(err[i, q - 1]))
                continue
            ref = sum(_independent_error(lam_list, i, q, c) for c in scales)
            assert abs(float(err[i, q - 1]) - ref) < 1e-8, (i, q, float(err[i, q - 1]), ref)


def test_the_rule_drops_to_order_one_where_the_denoiser_saturates() -> None:
    sde = sdekit.VPSDE()
    lam = log_snr(sde.marginal, time_grid(sde, 1.0, 1e-3, 15, "optimized", order=3))
    warm = [min(2, i + 1) for i in range(15)]
    orders = saturation_orders(lam, warm)
    err = proxy_local_errors(lam, 2)
    for i, (p, o) in enumerate(zip(warm, orders)):  # the definition
        assert o == (1 if p > 1 and float(err[i, 0]) < float(err[i, 1]) else p)
    # low noise (lambda > 2, noise below 0.14 of the data scale), steps of 0.5-1.2 in lambda: the constant wins;
    # where noise and data are comparable (|lambda| < 1.5) the linear model does
    lam_start = lam[:-1]
    assert all(o == 1 for o, l0 in zip(orders, lam_start.tolist()) if l0 > 2.0)
    assert all(o == 2 for o, l0 in zip(orders, lam_start.tolist()) if abs(l0) < 1.5)
    assert orders[0] == 1 and saturation_orders(lam, [1] * 15) == [1] * 15
    # the data scale moves the saturation: smaller data saturate later (at larger lambda)
    assert sum(o == 1 for o in saturation_orders(lam, warm, 0.25)) < sum(o == 1 for o in orders)


@pytest.mark.parametrize("sde_cls", [sdekit.VPSDE, sdekit.VESDE])
def test_unipc_auto_runs_the_rules_orders(sde_cls) -> None:
    from sdekit import analytic  # lazy: test-only oracle
    from sdekit.solvers._base import SamplingProblem  # lazy: white-box check of the prepared orders
    from sdekit.solvers._native import StepContext  # lazy: as above

    sde = sde_cls()
    oracle = analytic.GaussianMixture(torch.zeros(1, 1, dtype=F64), torch.ones(1, dtype=F64), torch.ones(1, dtype=F64))
    model = oracle.diffuse(sde)
    x_T = torch.randn(64, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    _, info = sdekit.sample(
        model, sde, x_T.shape, solver="unipc", steps=15, x_T=x_T, denoise=False, lower_order_final="auto",
        return_info=True,
    )  # fmt: skip
    assert info.nfe == 15
    unipc = get("unipc")
    times = time_grid(sde, float(sde.T), float(sde.default_eps), 15, "optimized", order=3)
    problem = SamplingProblem(
        sde=sde, score=model, x_T=x_T, t_start=float(sde.T), t_end=float(sde.default_eps), steps=15, rtol=1.0,
        atol=1.0, generator=None, progress=lambda k: None,
    )  # fmt: skip
    opts = {**unipc.accepted_options(), "lower_order_final": "auto"}
    state = unipc.prepare(StepContext(problem, times), opts)
    assert state.coef.orders == saturation_orders(log_snr(sde.marginal, times), [1] + [2] * 14)
    assert state.coef.orders[-3:] == [1, 1, 1] and state.coef.orders[1:8] == [2] * 7


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_auto_keeps_the_convergence_order(name: str) -> None:
    """The rule drops a step to order 1 only where the constant beats the polynomial, which needs steps of order 1/2
    in lambda; as the steps shrink no step is lowered and UniPC-2 with UniC keeps its order 3 (1-D Gaussian data,
    32-256 steps on the arctan grid, slope within 0.3 of 3 as in tests/solvers/test_unipc.py)."""
    from _gaussflow import pf_error, slope  # lazy: test helpers shared with test_unipc.py

    sde = {"vp": sdekit.VPSDE, "ve": sdekit.VESDE}[name]()
    steps = (32, 64, 128, 256)
    errs = [pf_error(sde, "unipc", n, order=2, grid="arctan", lower_order_final="auto") for n in steps]
    assert abs(slope(steps, errs) - 3) < 0.3, errs
    lam = log_snr(sde.marginal, time_grid(sde, float(sde.T), float(sde.default_eps), 256, "arctan"))
    assert saturation_orders(lam, [1] + [2] * 255) == [1] + [2] * 255
