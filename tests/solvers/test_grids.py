r"""Time grids of :mod:`sdekit.solvers._grids`: every kind on every zoo SDE, the t-only kinds on a non-affine SDE,
and the ``"optimized"`` grid's defining property.

Exact references only (no stored grids):

* endpoints bit-exact, strict monotonicity; ``"quadratic"`` equally spaced in :math:`\sqrt t` (1e-12: float64
  round-off of a square and a square root of numbers <= 80).
* the Gaussian denoiser path behind ``"optimized"``: Tweedie's :math:`\hat x_0` of :math:`N(\mu, c^2)` data
  along the closed-form probability-flow trajectory equals :math:`\mu + c\,g(\lambda + \log c)\,z` (1e-10:
  float64 marginal coefficients), and :func:`gaussian_denoiser_derivative` matches autograd of g (1e-12).
* equidistribution: each step of the ``"optimized"`` grid holds 1/n of the density's integral (relative 2e-3:
  the trapezoidal rule and linear inversion on a mesh of >= 4096 intervals; measured below 5e-4), and the error
  bound :math:`B = \sum_i h_i^{p+1} W(\lambda_i + h_i/2)` it minimises is within 2 % of its Hölder lower bound
  :math:`n^{-p}(\int W^{1/(p+1)} d\lambda)^{p+1}` (equality iff equidistributed; 400 steps, midpoint
  rule error O(1/n^2)) and below that of the log-SNR, arctan and EDM grids.
"""

from __future__ import annotations

import math

import pytest
import torch
from _zoo import AFFINE_ZOO

import sdekit
from sdekit.errors import SolverError
from sdekit.solvers import get
from sdekit.solvers._grids import (
    GRIDS,
    MARGINAL_FREE,
    OPTIMIZED_FLOOR,
    gaussian_denoiser_derivative,
    grid_order,
    log_snr,
    optimized_error_weight,
    optimized_log_snr,
    resolve_grid,
    solver_time_grid,
    time_grid,
)


def _nonaffine() -> sdekit.SDE:
    return sdekit.SDE.from_expressions("-x**3", "1", T=1.0)


ZOO = {**AFFINE_ZOO, "ou": sdekit.OrnsteinUhlenbeck}


def _monotone_exact(times: torch.Tensor, t0: float, t1: float, n: int) -> None:
    assert times.dtype == torch.float64 and times.shape == (n + 1,)
    assert float(times[0]) == t0 and float(times[-1]) == t1
    steps = (times[1:] - times[:-1]) * math.copysign(1.0, t1 - t0)
    assert bool((steps > 0).all()), "not strictly monotone"


@pytest.mark.parametrize("kind", GRIDS)
@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_kind_every_order_on_the_zoo(name: str, kind: str, order: int) -> None:
    sde = ZOO[name]()
    for t0, t1, n in ((sde.T, sde.default_eps, 6), (sde.default_eps, sde.T, 6), (sde.T, sde.default_eps, 50)):
        _monotone_exact(time_grid(sde, t0, t1, n, kind, order=order), t0, t1, n)


@pytest.mark.parametrize("kind", MARGINAL_FREE)
def test_marginal_free_kinds_on_a_non_affine_sde(kind: str) -> None:
    sde = _nonaffine()
    times = time_grid(sde, 1.0, 1e-3, 12, kind)
    _monotone_exact(times, 1.0, 1e-3, 12)
    assert resolve_grid(sde, kind, "logsnr", "euler") == kind
    x_T = torch.zeros(8, 1)
    x = sdekit.sample(lambda x, t: -x, sde, (8, 1), solver="euler", steps=5, grid=kind, x_T=x_T, denoise=False)
    assert bool(torch.isfinite(x).all())


def test_marginal_grids_refused_on_a_non_affine_sde() -> None:
    sde = _nonaffine()
    for kind in set(GRIDS) - set(MARGINAL_FREE):
        with pytest.raises(SolverError, match="needs the Gaussian marginal"):
            sdekit.sample(
                lambda x, t: -x, sde, (4, 1), solver="euler", steps=4, grid=kind, x_T=torch.zeros(4, 1), denoise=False
            )
    assert resolve_grid(sde, None, "optimized", "euler") == "uniform"  # a marginal default falls back
    assert resolve_grid(sde, None, "quadratic", "euler") == "quadratic"


@pytest.mark.parametrize("name", ["vp", "edm", "ou"])
def test_quadratic_is_uniform_in_sqrt_t(name: str) -> None:
    sde = ZOO[name]()
    for t0, t1 in ((sde.T, sde.default_eps), (sde.default_eps, sde.T)):
        r = time_grid(sde, t0, t1, 20, "quadratic").sqrt()
        d = r[1:] - r[:-1]
        assert float((d - (math.sqrt(t1) - math.sqrt(t0)) / 20).abs().max()) < 1e-12


def test_quadratic_needs_nonnegative_times() -> None:
    with pytest.raises(SolverError, match=">= 0"):
        time_grid(sdekit.VPSDE(), 1.0, -0.5, 4, "quadratic")


# ----------------------------------------------------------------------------- the Gaussian denoiser path
def _g(u: torch.Tensor) -> torch.Tensor:
    return (1 + torch.exp(-2 * u)) ** -0.5


@pytest.mark.parametrize("name", ["vp", "ve", "user"])
@pytest.mark.parametrize("c", [0.3, 1.0, 2.5])
def test_gaussian_denoiser_along_the_flow(name: str, c: float) -> None:
    r"""For :math:`N(\mu, c^2)` data the PF-ODE keeps :math:`z = (x_t - \alpha_t\mu - m_t)/s_t` fixed
    (:math:`s_t^2 = \alpha_t^2c^2 + \sigma_t^2`); Tweedie's denoiser there is :math:`\mu + c\,g(\lambda + \log c)z`."""
    sde, mu = ZOO[name](), 0.7
    t = torch.linspace(sde.default_eps, float(sde.T), 50, dtype=torch.float64)
    m = sde.marginal
    a, s2, off = m.alpha(t), m.sigma2(t), m.offset(t)
    z = torch.tensor([-1.3, 0.4, 2.0], dtype=torch.float64)[:, None]
    x = a * mu + off + torch.sqrt(a * a * c * c + s2) * z
    score = -(x - a * mu - off) / (a * a * c * c + s2)
    tweedie = (x - off + s2 * score) / a
    expected = mu + c * _g(log_snr(m, t) + math.log(c)) * z
    assert float((tweedie - expected).abs().max()) < 1e-10


def test_gaussian_denoiser_derivatives_match_autograd() -> None:
    u = torch.linspace(-9.0, 9.0, 73, dtype=torch.float64, requires_grad=True)
    d = _g(u)
    for p in range(1, 6):
        (d,) = torch.autograd.grad(d.sum(), u, create_graph=True)
        assert float((d.detach() - gaussian_denoiser_derivative(u.detach(), p)).abs().max()) < 1e-12, p


# ----------------------------------------------------------------------------- the optimized grid
def _ends(sde: sdekit.SDE) -> tuple[float, float]:
    lam = log_snr(sde.marginal, torch.tensor([float(sde.T), sde.default_eps], dtype=torch.float64))
    return float(lam[0]), float(lam[1])


def _density(lo: float, hi: float, order: int):
    r"""The grid's density :math:`(W/\max W + \varphi)^{1/(p+1)}` with max W over [lo, hi] (fine mesh)."""
    w_max = float(optimized_error_weight(torch.linspace(lo, hi, 400_001, dtype=torch.float64), order).max())
    return lambda x: (optimized_error_weight(x, order) / w_max + OPTIMIZED_FLOOR) ** (1 / (order + 1))


def _per_step_integrals(lam: torch.Tensor, f, panels: int = 400) -> torch.Tensor:
    """Integrals of f over each step of the increasing grid ``lam`` (composite Simpson, ``panels`` per step)."""
    w = torch.ones(panels + 1, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    x = lam[:-1, None] + (lam[1:] - lam[:-1])[:, None] * torch.linspace(0, 1, panels + 1, dtype=torch.float64)
    return (f(x) * w).sum(1) * (lam[1:] - lam[:-1]) / (3 * panels)


@pytest.mark.parametrize("name", ["vp", "ve", "edm", "user"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_optimized_grid_equidistributes_its_density(name: str, order: int) -> None:
    sde = ZOO[name]()
    n = 40
    lam = log_snr(sde.marginal, time_grid(sde, sde.T, sde.default_eps, n, "optimized", order=order))
    mass = _per_step_integrals(lam, _density(float(lam[0]), float(lam[-1]), order))
    rel = float((mass / mass.mean() - 1).abs().max())
    assert rel < 2e-3, f"steps hold unequal shares of the density: {rel:.2e}"


@pytest.mark.parametrize("name", ["vp", "ve"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_optimized_grid_attains_the_bound_minimum(name: str, order: int) -> None:
    r"""Hölder: :math:`\sum_i h_i^{p+1}\tilde W_i \ge n^{-p}\big(\int \tilde W^{1/(p+1)}d\lambda\big)^{p+1}`
    (:math:`\tilde W` = W / max W + floor at the step midpoints), with equality iff :math:`h_i\tilde W_i^{1/(p+1)}`
    is constant: the optimized grid reaches it, the other grids stay above."""
    sde = ZOO[name]()
    n = 400
    lo, hi = _ends(sde)
    density = _density(lo, hi, order)

    def bound(kind: str) -> float:
        lam = log_snr(sde.marginal, time_grid(sde, sde.T, sde.default_eps, n, kind, order=order))
        h = lam[1:] - lam[:-1]
        return float((h ** (order + 1) * density((lam[1:] + lam[:-1]) / 2) ** (order + 1)).sum())

    mesh = torch.linspace(lo, hi, 400_001, dtype=torch.float64)
    minimum = float(torch.trapezoid(density(mesh), mesh)) ** (order + 1) / n**order
    best = bound("optimized")
    assert abs(best / minimum - 1) < 0.02
    for other in ("logsnr", "arctan", "edm", "quadratic"):
        assert bound(other) > 1.1 * best, other


def test_optimized_grid_shifts_with_the_data_scale() -> None:
    r"""The density depends on :math:`\lambda + \log c` only: the grid for scale c on :math:`[a, b]` is the c = 1
    grid on :math:`[a + \log c, b + \log c]` shifted back (to the mesh's round-off, 1e-9)."""
    a, b, c = -5.0, 4.5, 0.4
    for order in (1, 3):
        lam_c = optimized_log_snr(a, b, 12, order, c)
        lam_1 = optimized_log_snr(a + math.log(c), b + math.log(c), 12, order, 1.0) - math.log(c)
        assert float((lam_c - lam_1).abs().max()) < 1e-9
        assert float(lam_c[0]) == a and float(lam_c[-1]) == b


def test_optimized_grid_cache_returns_fresh_tensors() -> None:
    first = optimized_log_snr(4.0, -4.0, 10, 2, 1.0)
    expected = first.clone()
    first.zero_()
    again = optimized_log_snr(4.0, -4.0, 10, 2, 1.0)
    assert torch.equal(again, expected) and float(again[0]) == 4.0 and float(again[-1]) == -4.0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan, True, "1"])
def test_optimized_grid_rejects_a_bad_data_scale(bad: object) -> None:
    with pytest.raises(SolverError, match="data_std"):
        time_grid(sdekit.VPSDE(), 1.0, 1e-3, 8, "optimized", data_std=bad)  # type: ignore[arg-type]


def test_grid_order_of_the_solvers() -> None:
    vp = sdekit.VPSDE()
    assert [grid_order(get(name), vp) for name in ("exp1", "exp2", "exp3")] == [1, 2, 3]
    assert grid_order(get("euler"), vp) == 1 and grid_order(get("srk"), vp) == 2 and grid_order(get("ode:rk4"), vp) == 4
    assert grid_order(get("ald"), vp) == 1  # no declared order
    assert [grid_order(get(name), vp) for name in ("dpm2", "dpm3", "dpm++2m", "dpm++3m")] == [2, 3, 2, 3]


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("corrector", [True, False])
def test_grid_order_of_unipc_follows_its_options(order: int, corrector: bool) -> None:
    """UniPC's order is an option: the ``"optimized"`` grid is shaped for the order the run has (p, plus one with
    the UniC corrector), and a run's grid is exactly that order's ``time_grid``."""
    vp, unipc = sdekit.VPSDE(), get("unipc")
    expected = order + (1 if corrector else 0)
    options = {**unipc.accepted_options(), "order": order, "corrector": corrector}
    assert grid_order(unipc, vp, options) == expected
    assert grid_order(unipc, vp) == 3  # the defaults: UniPC-2 with its corrector
    times = solver_time_grid(vp, 1.0, 1e-3, 12, unipc, {**options, "grid": "optimized"})
    assert torch.equal(times, time_grid(vp, 1.0, 1e-3, 12, "optimized", order=expected))


def test_optimized_grid_runs_through_sample() -> None:
    """``grid="optimized"`` and ``data_std=`` reach the solver; steps=k is still k model evaluations."""
    from sdekit import analytic  # lazy: test-only oracle

    sde = sdekit.VPSDE()
    oracle = analytic.GaussianMixture(torch.tensor([[0.0]]), torch.tensor([1.0]), torch.tensor([1.0])).diffuse(sde)
    gen = torch.Generator().manual_seed(0)
    for data_std in (1.0, 0.5, [1.5, 0.4]):
        x, info = sdekit.sample(
            oracle, sde, (64, 1), solver="exp2", steps=8, grid="optimized", data_std=data_std, generator=gen,
            return_info=True,
        )  # fmt: skip
        assert info.nfe == 8 and bool(torch.isfinite(x).all())


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "edm", "cosine", "ou"])
def test_capped_grid_keeps_log_snr_steps_below_the_cap(name: str) -> None:
    """The torchsde solvers' default grid: no log-SNR step longer than ``grid_max_step`` = 0.5; a step count too
    small for the cap gives the uniform log-SNR grid (the shortest longest step)."""
    sde, euler = ZOO[name](), get("euler")
    assert euler.grid == "optimized" and euler.grid_max_step == 0.5
    lo, hi = _ends(sde)
    for n in (50, 200):
        lam = log_snr(sde.marginal, solver_time_grid(sde, sde.T, sde.default_eps, n, euler, {}))
        assert float((lam[1:] - lam[:-1]).max()) <= 0.5 + 1e-6
    n = int((hi - lo) / 0.5)  # n * 0.5 <= range: the cap cannot be met
    lam = log_snr(sde.marginal, solver_time_grid(sde, sde.T, sde.default_eps, n, euler, {}))
    assert float((lam[1:] - lam[:-1] - (hi - lo) / n).abs().max()) < 1e-9


def test_capped_grid_still_equidistributes_where_the_cap_is_slack() -> None:
    """Steps well below the cap hold equal shares of the density (the capped steps hold less)."""
    sde = sdekit.VPSDE()
    lam = optimized_log_snr(*_ends(sde), 100, 1, 1.0, 0.5)
    h = lam[1:] - lam[:-1]
    mass = _per_step_integrals(lam, _density(float(lam[0]), float(lam[-1]), 1))
    free = h < 0.4  # away from the cap (a step straddling the switch to 1 / cap holds a mixed share)
    assert int(free.sum()) > 50 and int((~free).sum()) > 0
    rel = float((mass[free] / mass[free].mean() - 1).abs().max())
    assert rel < 2e-3


def test_default_grids_of_the_solver_families() -> None:
    for name in ("euler", "milstein", "srk", "heun", "midpoint"):
        assert get(name).grid == "optimized", name
    for name in ("exp1", "exp2", "exp3"):
        assert get(name).grid == "arctan" and get(name).grid_max_step is None, name


def test_data_scales_average_the_per_axis_weights() -> None:
    r"""Gaussian data with principal-axis stds :math:`(c_1, c_2)`: each axis is its own 1-D problem, and W is the
    mean of the per-axis weights (float64 round-off, 1e-15)."""
    lam = torch.linspace(-6.0, 8.0, 141, dtype=torch.float64)
    for order in (1, 2, 3):
        both = optimized_error_weight(lam, order, (1.5, 0.4))
        mean = (optimized_error_weight(lam, order, 1.5) + optimized_error_weight(lam, order, 0.4)) / 2
        assert float((both - mean).abs().max()) < 1e-15


# ---------------------------------------------------------------- a tabulated SDE, and explicit times
@pytest.mark.parametrize("kind", GRIDS)
def test_every_kind_on_a_discrete_vp_sde(kind: str) -> None:
    """The log-SNR grids invert a tabulated marginal like any other (DiscreteVPSDE: T = 1000, eps = 1)."""
    sde = sdekit.DiscreteVPSDE(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    times = time_grid(sde, sde.T, sde.default_eps, 12, kind, order=2)
    _monotone_exact(times, sde.T, sde.default_eps, 12)


def _oracle(sde: sdekit.SDE):
    from sdekit import analytic  # lazy: test-only oracle

    return analytic.GaussianMixture(torch.tensor([[-1.0], [1.0]]), torch.tensor([0.4, 0.6])).diffuse(sde)


@pytest.mark.parametrize(("solver", "kind"), [("exp1", "logsnr"), ("dpm++2m", "optimized"), ("euler", "uniform")])
def test_explicit_times_run_exactly_the_grid_of_a_kind(solver: str, kind: str) -> None:
    """grid=<the times of a kind> gives the run of grid=<kind>: bit for bit (the same float64 grid, the same loop)."""
    sde = sdekit.VPSDE()
    oracle = _oracle(sde)
    impl = get(solver)
    n = 9 if impl.steps_are_nfe else 10  # intervals: steps=10 with the denoising step, or 10 steps
    times = time_grid(sde, sde.T, sde.default_eps, n, kind, order=grid_order(impl, sde))
    x_T = torch.randn(256, 1, generator=torch.Generator().manual_seed(0))
    runs = [
        sdekit.sample(oracle, sde, (256, 1), solver=solver, x_T=x_T, return_info=True, generator=gen, **opts)
        for gen, opts in (
            (torch.Generator().manual_seed(1), {"steps": 10, "grid": kind}),
            (torch.Generator().manual_seed(1), {"grid": times}),
        )
    ]
    (a, info_a), (b, info_b) = runs
    assert torch.equal(a, b) and info_a.nfe == info_b.nfe


def test_explicit_times_start_below_T_and_set_eps() -> None:
    sde = sdekit.DiscreteVPSDE(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    oracle = _oracle(sde)
    times = torch.arange(902.0, 0.0, -100.0)  # diffusers' "leading" DDIM timesteps + 1: 902, ..., 2
    x_T = torch.randn(64, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for solver, nfe in (("exp1", 10), ("dpm++2m", 10), ("dpm2", 18), ("euler", 10), ("ode:rk4", 37), ("exp3", 11)):
        x, info = sdekit.sample(oracle, sde, (64, 1), solver=solver, x_T=x_T, grid=times, return_info=True)
        assert info.nfe == nfe and info.steps == 9 and bool(torch.isfinite(x).all()), solver
    x, path = sdekit.sample(oracle, sde, (64, 1), solver="exp1", x_T=x_T, grid=times, ts=[902, 502.0000001, 2])
    assert path.shape == (3, 64, 1) and torch.equal(path[0], x_T)
    # the run ends at the grid's last time, and denoises there
    _, plain = sdekit.sample(oracle, sde, (64, 1), solver="exp1", x_T=x_T, grid=times, denoise=False, ts=[902, 2])
    y = sdekit.sample(oracle, sde, (64, 1), solver="exp1", x_T=x_T, grid=times)
    t_end = torch.full((64,), 2.0, dtype=torch.float64)
    k = sde.marginal.at(t_end, x_T)
    want = (plain[-1] - k.offset + k.sigma**2 * oracle(plain[-1], t_end)) / k.alpha
    assert torch.allclose(y, want, rtol=1e-12, atol=1e-12)


def test_explicit_times_on_a_non_affine_sde() -> None:
    sde = _nonaffine()
    x_T = torch.randn(32, 1, generator=torch.Generator().manual_seed(0))
    x, info = sdekit.sample(
        lambda x, t: -x, sde, (32, 1), solver="euler", x_T=x_T, grid=[1.0, 0.5, 0.25, 0.1], denoise=False,
        return_info=True,
    )  # fmt: skip
    assert info.nfe == 3 and bool(torch.isfinite(x).all())


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"grid": [902.0, 2.0], "steps": 5}, ValueError, "take steps=2, not 5"),
        ({"grid": [902.0, 2.0], "eps": 1.0}, ValueError, "drop eps=1.0"),
        ({"grid": [2000.0, 2.0]}, ValueError, r"in \(0, T\]"),
        ({"grid": [3.0, 5.0, 1.0]}, SolverError, "strictly decreasing"),
        ({"grid": [[3.0, 1.0]]}, SolverError, "strictly decreasing"),
        ({"grid": [902.0, 502.0, 2.0], "ts": [902.0, 700.0, 2.0]}, ValueError, "points of the grid"),
        ({"grid": [902.0, 2.0], "solver": None}, ValueError, "needs solver="),
    ],
)
def test_explicit_times_are_checked(options: dict, error: type, match: str) -> None:
    sde = sdekit.DiscreteVPSDE(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    kwargs = {"solver": "exp1", **options}
    with pytest.raises(error, match=match):
        sdekit.sample(_oracle(sde), sde, (4, 1), **kwargs)


def test_solver_time_grid_returns_the_part_between_the_ends() -> None:
    times = torch.tensor([5.0, 4.0, 2.5, 1.0, 0.5], dtype=torch.float64)
    sde, impl = sdekit.VPSDE(T=5.0), get("exp1")
    part = solver_time_grid(sde, 4.0, 1.0, 2, impl, {"grid": times})
    assert part.tolist() == [4.0, 2.5, 1.0]
    with pytest.raises(SolverError, match="not 3"):
        solver_time_grid(sde, 4.0, 1.0, 3, impl, {"grid": times})
    with pytest.raises(SolverError, match="points of the explicit"):
        solver_time_grid(sde, 4.5, 1.0, 2, impl, {"grid": times})
