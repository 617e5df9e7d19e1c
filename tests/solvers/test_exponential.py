r"""Exponential integrators (``exp1``–``exp3``) and the time grids of :mod:`sdekit.solvers._grids`.

Exact references only:

* grids: endpoints bit-exact, strict monotonicity, and inverse consistency (the grid's defining
  coordinate — t, :math:`\lambda`, :math:`r^{1/\rho}` or :math:`\arctan r^{1/3}` — is equally spaced
  after mapping back to t by bisection); tolerance 1e-9, float64 bisection to the last bit in t
  times :math:`|d\lambda/dt| \le 10^3` near :math:`\epsilon` is ~1e-13.
* orders: 1-D Gaussian data :math:`N(\mu, s^2)`, whose PF-ODE map is affine,
  :math:`x_t = \mathrm{mean}_t + \tfrac{s_t}{s_T}(x_T - \mathrm{mean}_T)` with
  :math:`\mathrm{mean}_t = \alpha_t\mu + m_t`, :math:`s_t^2 = \alpha_t^2 s^2 + \sigma_t^2`; exact
  score, float64, integrated to ``sde.default_eps``, max error over 7 starting points (helpers in
  ``tests/_gaussflow.py``), log-log
  slope over 4 step counts within 0.3 of the order (TESTING.md). On the default ``"arctan"`` grid
  there is no super-convergence (the uniform-:math:`\lambda` grid's leading error telescopes for
  Gaussian data; the test in ``tests/solvers/test_native.py`` stops at an interior t for that reason).
* ``exp3``'s singlestep 2S warm-up: steps + 1 model evaluations, a first step that is not DDIM
  (so exp3 differs from exp2 from the first step on), order 3 kept (the order tests above).
"""

from __future__ import annotations

import math

import pytest
import torch
from _gaussflow import ZOO, gauss, gauss_score, pf_error, slope

import sdekit
from sdekit import analytic
from sdekit._stats import random_directions, sliced_ks
from sdekit.errors import SolverError
from sdekit.solvers import get
from sdekit.solvers._grids import ARCTAN_EXPONENT, GRIDS, log_snr, time_grid


# ----------------------------------------------------------------------------- grids
@pytest.mark.parametrize("kind", GRIDS)
@pytest.mark.parametrize("name", list(ZOO))
def test_grid_endpoints_exact_and_monotone(name: str, kind: str) -> None:
    sde = ZOO[name]()
    eps = sde.default_eps
    for t0, t1 in ((sde.T, eps), (eps, sde.T)):  # sampling direction and the forward direction
        times = time_grid(sde, t0, t1, 17, kind)
        assert times.dtype == torch.float64 and times.shape == (18,)
        assert float(times[0]) == t0 and float(times[-1]) == t1
        steps = times[1:] - times[:-1]
        assert bool((steps * math.copysign(1.0, t1 - t0) > 0).all()), f"{kind} on {name}: not strictly monotone"


def _coordinate(kind: str, lam: torch.Tensor, rho: float = 7.0) -> torch.Tensor:
    """The quantity each non-uniform grid kind spaces equally, as a function of the log-SNR."""
    if kind == "logsnr":
        return lam
    if kind == "edm":
        return torch.exp(-lam / rho)  # r^(1/rho)
    return torch.atan(torch.exp(-lam / ARCTAN_EXPONENT))  # arctan r^(1/3)


@pytest.mark.parametrize("kind", ["logsnr", "edm", "arctan"])
@pytest.mark.parametrize("name", list(ZOO))
def test_grid_inverse_consistent(name: str, kind: str) -> None:
    """Mapping the grid back through lambda(t) gives equally spaced values of the grid's coordinate."""
    sde = ZOO[name]()
    n = 25
    times = time_grid(sde, sde.T, sde.default_eps, n, kind)
    u = _coordinate(kind, log_snr(sde.marginal, times))
    du = (u[-1] - u[0]) / n
    assert float((u[1:] - u[:-1] - du).abs().max()) < 1e-9 * max(1.0, float(u.abs().max()))


@pytest.mark.parametrize("name", ["vp", "ve", "edm"])
def test_arctan_grid_finest_at_unit_snr(name: str) -> None:
    r"""The arctan grid's log-SNR steps are :math:`\approx 2q\,\Delta u/\sin 2u`: smallest where
    :math:`\lambda` crosses 0 and growing towards both ends."""
    sde = ZOO[name]()
    times = time_grid(sde, sde.T, sde.default_eps, 40, "arctan")
    lam = log_snr(sde.marginal, times)
    assert float(lam[0]) < 0 < float(lam[-1])
    dlam = lam[1:] - lam[:-1]
    k = int(torch.argmin(dlam))
    assert float(lam[k - 1]) <= 0 <= float(lam[k + 2]), f"finest step at lambda {float(lam[k]):.2f}"
    assert float(dlam[0]) > 1.5 * float(dlam[k]) and float(dlam[-1]) > 1.5 * float(dlam[k])


def test_arctan_grid_needs_an_affine_sde() -> None:
    sde = sdekit.SDE.from_expressions("-x**3", "1", T=1.0)
    with pytest.raises(SolverError, match="not affine"):
        sdekit.sample(lambda x, t: -x, sde, (4, 1), solver="ode:rk4", steps=4, grid="arctan")


def test_exponential_integrators_default_to_the_arctan_grid() -> None:
    for name in ("exp1", "exp2", "exp3"):
        assert get(name).grid == "arctan"


# ----------------------------------------------------------------------------- orders
STEPS = (32, 64, 128, 256)  # errors 3e-3 .. 4e-6 for exp3 (far above round-off), asymptotic from 32 (measured)


@pytest.mark.parametrize(
    ("name", "solver", "order"),
    [(name, "exp3", 3) for name in ZOO] + [("ve", "exp2", 2), ("user", "exp2", 2), ("vp", "exp1", 1)],
)
def test_order_to_eps_on_default_grid(name: str, solver: str, order: int) -> None:
    sde = ZOO[name]()
    errs = [pf_error(sde, solver, n) for n in STEPS]
    got = slope(STEPS, errs)
    assert abs(got - order) < 0.3, f"{solver} on {name}: slope {got:.2f}, errors {errs}"


# ----------------------------------------------------------------------------- exp3 warm-up
def _run(solver: str, steps: int, **options) -> tuple[torch.Tensor, int]:
    sde = sdekit.VESDE()
    x_T = gauss(sde, sde.T)[1] * torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    x, info = sdekit.sample(
        gauss_score(sde), sde, x_T.shape, solver=solver, steps=steps, x_T=x_T, denoise=False, return_info=True,
        **options,
    )  # fmt: skip
    return x, info.nfe


@pytest.mark.parametrize("steps", [2, 3, 7, 20])
@pytest.mark.parametrize("solver", ["exp1", "exp2", "exp3"])
def test_steps_are_model_evaluations(solver: str, steps: int) -> None:
    """steps=k spends exactly k model evaluations, with or without the final denoising step (exp3: its 2S start
    takes one of them, so it runs one step fewer)."""
    assert _run(solver, steps)[1] == steps
    sde = sdekit.VESDE()
    _, info = sdekit.sample(gauss_score(sde), sde, (7, 1), solver=solver, steps=steps + 1, return_info=True)
    assert info.nfe == steps + 1 and info.steps == steps - (solver == "exp3")


def test_too_few_steps_is_refused_with_the_least_count() -> None:
    sde = sdekit.VESDE()
    with pytest.raises(ValueError, match=r"steps=2 leaves no step to take; pass steps >= 3"):
        sdekit.sample(gauss_score(sde), sde, (7, 1), solver="exp3", steps=2)


def test_exp3_start_is_more_accurate_than_exp2s() -> None:
    """exp3's 2S start (local O(h^3)) then 2M beats exp2's DDIM start (local O(h^2)) then 2M at a few steps.

    Without the lower-order finish, exp3 with 2 steps is 2S + 2M and exp2 is DDIM + 2M: the only
    difference is the first step, so this isolates the warm-up."""
    for name in ("vp", "ve"):
        sde = ZOO[name]()
        e3 = pf_error(sde, "exp3", 2, lower_order_final=False)
        e2 = pf_error(sde, "exp2", 2, lower_order_final=False)
        assert e3 < e2, (name, e3, e2)


# ----------------------------------------------------------------------------- <= 20 NFE
@pytest.mark.slow
@pytest.mark.parametrize("sde_cls", [sdekit.VPSDE, sdekit.VESDE])
def test_exp3_twenty_nfe_indistinguishable_from_exact(sde_cls) -> None:
    """exp3 at its default grid, steps=20 = 20 NFE (its 2S start and 19 steps), on benchmarks/error_vs_nfe's
    mixture (exact score, x_T from the exact p_T): n = 1e5 samples pass the sliced KS test against the exact p_eps
    (32 directions, family-wise level 1e-3, so an exact sampler fails with probability <= 1e-3; seed fixed). Measured
    ratios at 20 NFE 0.89-0.97 (seeds 1, 2; n = 1e5); on the logsnr grid 0.80-1.33 (21 NFE)."""
    sde = sde_cls()
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.5, -2.0]])
    mix = analytic.GaussianMixture(means, torch.tensor([0.3, 0.5, 0.4]), torch.tensor([0.3, 0.4, 0.3]))
    oracle = mix.diffuse(sde)
    gen = torch.Generator().manual_seed(1)
    x_T = oracle.sample(100_000, sde.T, generator=gen, dtype=torch.float64)
    x, info = sdekit.sample(oracle, sde, x_T.shape, solver="exp3", steps=20, x_T=x_T, denoise=False, return_info=True)
    assert info.nfe == 20
    ks = sliced_ks(x, oracle.at(sde.default_eps), random_directions(2, 32, seed=0), alpha=1e-3)
    assert ks.passed, f"ratio {ks.ratio:.2f}"
