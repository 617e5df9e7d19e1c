r"""Strong convergence orders of the torchsde solvers through sdekit's adapter (slow).

The adapter integrates the reverse SDE in :math:`s = T - t`. With a **zero score** that is
:math:`dX = -[f - \partial_x g^2](X, T - s)\,ds + g(X, T - s)\,dB_s`, so declaring the forward
SDE suitably gives test problems with pathwise closed forms in s (T = 1, s from 0 to 1):

* additive noise: :math:`f = \lambda x`, :math:`g = (2 - t)^2 e^{-\lambda(1 - t)}`, i.e.
  :math:`dX = -\lambda X\,ds + (1 + s)^2 e^{-\lambda s}\,dB`, solved by
  :math:`X_1 = e^{-\lambda}\big[X_0 + 4B_1 - 2\int_0^1 (1 + u) B_u\,du\big]`
  (integration by parts of :math:`\int_0^1 (1 + u)^2\,dB_u`). With a linear
  :math:`(1 + u)` instead, (B_1, the Lévy area) would capture the noise exactly; the
  quadratic needs :math:`\int_0^1 u B_u\,du`, summed
  over a fine grid (h = 2^-12: :math:`\sum_i [B_{a_i}(b_i^2 - a_i^2)/2 + \tfrac{a_i + b_i}2 U_i]`,
  error std ~h^2 ~ 6e-8, far below the coarsest-level errors);
* diagonal noise (time-dependent geometric Brownian motion): :math:`f = \mu x`,
  :math:`g = \sigma(t)x` with :math:`\sigma_s(u) = \sigma(1 - u) = a + bu`, i.e.
  :math:`dX = (-\mu + 2\sigma_s^2)X\,ds + \sigma_s X\,dB`, solved by
  :math:`X_1 = X_0\exp\big(\int_0^1(-\mu + \tfrac32\sigma_s^2)\,du + (a + b)B_1 - b\int_0^1 B_u\,du\big)`.

The closed forms need :math:`B_1` and :math:`\int_0^1 B_u\,du`, which a seeded
:class:`torchsde.BrownianInterval` with space-time Lévy area gives exactly
(``bm(0, 1, return_U=True)``); the same interval drives every step count (option ``bm``), so
the error at :math:`h = 2^{-k}` is a pathwise (strong) error. Time-dependent coefficients
prevent the super-convergence of constant-coefficient problems. The fitted log-log slope of
:math:`E|X_h - X_1|` over :math:`h = 2^{-3} \dots 2^{-7}` must be within 0.25 of the solver's
declared order (TESTING.md), except ``srk`` on additive noise, which super-converges (slope
2.0) on this linear drift and is only checked to reach at least 1.5 - 0.25.

Measured slopes (4000 paths): euler 1.01 / 0.54 (additive / diagonal), milstein 1.01 / 0.95,
srk 2.02 / 1.44, heun 1.00 / 0.95, midpoint 1.00 / 0.97.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchsde

import sdekit
from validation.order_checks import FINE_FULL, exact_solution, solve_on_path, strong_problem

pytestmark = pytest.mark.slow

F64 = torch.float64
LEVELS = (3, 4, 5, 6, 7)
PATHS = 4000


def _slope(solver: str, kind: str) -> float:
    # The problems, their pathwise closed forms and the zero-score adapter run are shared with the
    # validation suite's order checks (validation/order_checks.py), so the two cannot drift apart.
    sde = strong_problem(kind)
    x0 = torch.ones(PATHS, 1, dtype=F64)
    bm = torchsde.BrownianInterval(
        t0=0.0, t1=1.0, size=(PATHS, 1), dtype=F64, entropy=1234, levy_area_approximation="space-time"
    )
    exact = exact_solution(kind, x0, bm, FINE_FULL)
    errs = [float((solve_on_path(solver, sde, x0, bm, 2**k) - exact).abs().mean()) for k in LEVELS]
    hs = [2.0**-k for k in LEVELS]
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


CASES = [
    ("euler", "additive"),
    ("euler", "diagonal"),
    ("milstein", "additive"),
    ("milstein", "diagonal"),
    ("srk", "additive"),
    ("srk", "diagonal"),
    ("heun", "additive"),
    ("heun", "diagonal"),
    ("midpoint", "additive"),
    ("midpoint", "diagonal"),
]


@pytest.mark.parametrize(("solver", "kind"), CASES)
def test_strong_order(solver: str, kind: str) -> None:
    cls = sdekit.solvers.available()[solver]
    order = cls.strong_order_additive if kind == "additive" else cls.strong_order
    slope = _slope(solver, kind)
    msg = f"{solver} ({kind}): fitted slope {slope:.3f}, declared order {order}"
    if (solver, kind) == ("srk", "additive"):
        # SRA1 super-converges on linear drift (measured slope 2.0 with both the linear and the
        # quadratic noise coefficient): its order-1.5 error terms need a nonlinear drift, for which
        # no pathwise closed form exists. Only the lower bound is checked here.
        assert slope >= order - 0.25, msg
        return
    # +-0.25 around theory (TESTING.md): the fit over 5 levels of a 4000-path mean error.
    assert abs(slope - order) <= 0.25, msg
