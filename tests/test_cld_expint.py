r"""``mexp``, the matrix-exponential multistep PF-ODE sampler (sdekit/solvers/_mexp.py), on CLD and on scalar SDEs.

Exact references only:

* k = 1: order 1 is DDIM, i.e. ``exp1`` on the same grid, to the coefficients' RK4 accuracy (measured 6e-13; bound
  1e-10), on the scalar VPSDE and on VP declared as a 1-component SDE (the k x k code path with k = 1).
* coefficients: the order-1 weight is exact for point-mass data, :math:`Z_{i0} = a_{i+1} - R\,a_i` (1e-9 relative:
  RK4 error); doubling the RK4 substeps moves them by < 1e-9 relative.
* orders: Gaussian data :math:`x_0 \sim N(\mu, c^2)` under CLD, whose PF-ODE flow is linear,
  :math:`X_t - \mathrm{mean}_t = \Psi(t)(X_T - \mathrm{mean}_T)` with :math:`\Psi' = (A + \tfrac12 DK^{-1})\Psi`,
  :math:`K = c^2aa^\top + S`: :math:`\Psi(\epsilon)` from scipy DOP853 at rtol = atol = 1e-12 (float64); max error
  over 7 starting points at 20-160 NFE on the default grid, fitted log-log slope within 0.3 of p (TESTING.md;
  measured 0.90, 2.05, 2.96).
* law: the exact Gaussian-mixture oracle score (as tests/test_cld_sample.py), x at eps against its exact law
  (sliced KS + mean z-tests, family-wise level 1e-3, n = 20,000, seed fixed) at the documented 40 NFE (30 NFE:
  measured p = 0.36, 0.084 with x_T seed 2, but on the validation suite's mixture 30 NFE showed a discretization
  error at n = 20,000 over four x_T seeds, 40 did not; docs/cld.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
from _gaussflow import slope

import sdekit
from sdekit import analytic
from sdekit.errors import SolverError
from sdekit.solvers._grids import log_snr, time_grid
from sdekit.solvers._mexp import affine_matrices, mexp_coefficients
from sdekit.testing import assert_samples_match

DT = torch.float64


class VP1(sdekit.SDE):
    """VP (beta from 0.1 to 20) declared as a 1-component SDE."""

    components = ("x",)
    beta_min = sp.Rational(1, 10)
    beta_max = 20

    def drift(self, x, t):
        return (-(self.beta_min + t * (self.beta_max - self.beta_min)) * x / 2,)

    def diffusion(self, x, t):
        return (sp.sqrt(self.beta_min + t * (self.beta_max - self.beta_min)),)


def _mixture() -> analytic.GaussianMixture:
    means = torch.tensor([[1.0, -1.0], [-1.5, 0.5]])
    covs = torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.1, 0.0], [0.0, 0.4]]])
    return analytic.GaussianMixture(means, covs=covs, weights=[0.3, 0.7])


# ----------------------------------------------------------------------------- k = 1: DDIM
@pytest.mark.parametrize("grid", ["uniform", "logsnr"])
def test_order_one_is_exp1_for_a_scalar_sde(grid: str) -> None:
    vp = sdekit.VPSDE()
    oracle = analytic.GaussianMixture(torch.tensor([[1.0, -1.0], [-1.5, 0.5]]), stds=0.4).diffuse(vp)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    kw = dict(steps=12, x_T=x_T, denoise=False, grid=grid)
    ref = sdekit.sample(oracle, vp, (64, 2), solver="exp1", **kw)
    got = sdekit.sample(oracle, vp, (64, 2), solver="mexp", order=1, **kw)
    assert float((got - ref).abs().max()) < 1e-10
    one = sdekit.sample(lambda X, t: oracle(X[:, 0], t).unsqueeze(1), VP1(), (64, 1, 2), solver="mexp", order=1,
                        **{**kw, "x_T": x_T.unsqueeze(1)})  # fmt: skip
    assert float((one[:, 0] - ref).abs().max()) < 1e-10


def test_generalized_log_snr_is_the_log_snr_for_k_1() -> None:
    t = torch.linspace(1e-3, 1.0, 50, dtype=DT)
    torch.testing.assert_close(log_snr(VP1().marginal, t), sdekit.VPSDE().marginal.log_snr(t), rtol=1e-12, atol=1e-12)


def test_cld_logsnr_grid_is_uniform_in_the_generalized_log_snr() -> None:
    sde = sdekit.CLDSDE()
    times = time_grid(sde, 1.0, 1e-3, 16, "logsnr")
    assert float(times[0]) == 1.0 and float(times[-1]) == 1e-3 and bool((times[1:] < times[:-1]).all())
    lam = log_snr(sde.marginal, times)
    steps = lam[1:] - lam[:-1]
    assert float((steps - steps.mean()).abs().max()) < 1e-9 and float(steps.mean()) > 0
    with pytest.raises(SolverError, match="grid='uniform', 'quadratic' or 'logsnr'"):
        sdekit.sample(lambda x, t: -x, sde, (4, 2, 1), solver="mexp", grid="edm", steps=5)


# ----------------------------------------------------------------------------- coefficients
def test_order_one_weight_is_exact_for_a_point_mass_and_rk4_converged() -> None:
    sde = sdekit.CLDSDE()
    times = time_grid(sde, 1.0, 1e-3, 12, "logsnr")
    orders = [min(3, i + 1) for i in range(12)]
    R, Z = mexp_coefficients(sde, times, orders)
    a = affine_matrices(sde, times)[0][..., :1]  # Phi's data column
    exact = a[1:] - R @ a[:-1]
    _, Z2 = mexp_coefficients(sde, times, [1] * 12)
    assert float(((Z2[:, 0] - exact).abs() / exact.abs().amax()).max()) < 1e-9
    assert not Z2[:, 1:].any() and not Z[0, 1:].any() and not Z[1, 2:].any()  # zero beyond each step's order
    R4, Z4 = mexp_coefficients(sde, times, orders, substeps=4096)
    assert float((R4 - R).abs().max()) < 1e-9 * float(R.abs().max())
    assert float((Z4 - Z).abs().max()) < 1e-9 * float(Z.abs().max())


# ----------------------------------------------------------------------------- orders on Gaussian data
MU, C = 0.7, 0.5


def _gaussian_problem() -> tuple[sdekit.SDE, object, torch.Tensor, torch.Tensor]:
    # lazy: scipy only for the reference flow of this test
    from scipy.integrate import solve_ivp

    sde = sdekit.CLDSDE()
    M = sde.marginal
    eps, T = sde.default_eps, float(sde.T)

    def K(t: float) -> torch.Tensor:
        a = M.alpha(t)[:, 0]
        return C * C * torch.outer(a, a) + M.cov(t, given="data")

    def mean(t: float) -> torch.Tensor:
        return M.alpha(t)[:, 0] * MU + M.offset(t)

    def score(X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = float(t[0])
        r = (X - mean(tt)[None, :, None].to(X.dtype)).reshape(X.shape[0], 2, -1)
        return -torch.linalg.solve(K(tt).to(X.dtype), r).reshape(X.shape)

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        A, D = M.drift_matrix(t).numpy(), M.diffusion_matrix(t).numpy()
        return ((A + 0.5 * D @ np.linalg.inv(K(t).numpy())) @ y.reshape(2, 2)).ravel()

    sol = solve_ivp(rhs, (T, eps), np.eye(2).ravel(), method="DOP853", rtol=1e-12, atol=1e-12)
    Psi = torch.tensor(sol.y[:, -1].reshape(2, 2), dtype=DT)
    x_T = torch.randn(7, 2, 1, generator=torch.Generator().manual_seed(0), dtype=DT)
    exact = mean(eps)[None, :, None] + torch.einsum("ij,bjk->bik", Psi, x_T - mean(T)[None, :, None])
    return sde, score, x_T, exact


@pytest.mark.parametrize("order", [1, 2, 3])
def test_convergence_order_on_gaussian_data(order: int) -> None:
    sde, score, x_T, exact = _gaussian_problem()
    steps = (20, 40, 80, 160)
    errs = []
    for n in steps:
        x = sdekit.sample(score, sde, x_T.shape, solver="mexp", steps=n, order=order, x_T=x_T, denoise=False,
                          lower_order_final=False)  # fmt: skip
        errs.append(float((x - exact).abs().max()))
    assert abs(slope(steps, errs) - order) < 0.3, (order, errs)


# ----------------------------------------------------------------------------- the exact law, NFE, dtypes, chunks
def test_mixture_law_at_the_documented_steps() -> None:
    # 40 NFE (default_steps), ~5 s
    sde = sdekit.CLDSDE()
    oracle = _mixture().diffuse(sde)
    n = 20_000
    x, info = sdekit.sample(oracle, sde, (n, 2, 2), solver="mexp", denoise=False, dtype=DT, return_info=True,
                            generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert info.nfe == 40 == sdekit.solvers.get("mexp").default_steps
    assert_samples_match(x[:, 0], oracle.component(sde.default_eps, "x"), alpha=1e-3)


def test_nfe_counts_the_denoising_step_and_float32_tracks_float64() -> None:
    sde = sdekit.CLDSDE()
    oracle = _mixture().diffuse(sde)
    x_T = sde.prior.sample((16, 2, 2), generator=torch.Generator().manual_seed(2), dtype=DT)
    x64, info = sdekit.sample(oracle, sde, x_T.shape, solver="mexp", steps=12, x_T=x_T, return_info=True)
    assert info.nfe == 12 and info.steps == 11 and x64.shape == (16, 2, 2) and x64.dtype == DT
    x32 = sdekit.sample(oracle, sde, x_T.shape, solver="mexp", steps=12, x_T=x_T.float())
    assert x32.dtype == torch.float32 and float((x32.double() - x64).abs().max()) < 1e-3


def test_same_seed_same_bits_and_chunks() -> None:
    # a model that computes every row alone (the mixture oracle's batched solves are not bit-identical across batch
    # sizes, ~1e-14), as bit-identity across chunkings needs (docs/sampling.md, "Determinism and chunks")
    sde = sdekit.CLDSDE()

    def model(X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -X / (0.1 + t).reshape(-1, 1, 1)

    kw = dict(solver="mexp", steps=8, dtype=DT)
    ref = sdekit.sample(model, sde, (50, 2, 2), generator=torch.Generator().manual_seed(3), **kw)
    assert torch.isfinite(ref).all()
    assert torch.equal(ref, sdekit.sample(model, sde, (50, 2, 2), generator=torch.Generator().manual_seed(3), **kw))
    for chunk in (17, 25):
        got = sdekit.sample(model, sde, (50, 2, 2), generator=torch.Generator().manual_seed(3), chunk_size=chunk, **kw)
        assert torch.equal(ref, got), chunk


def test_scalar_only_samplers_still_refuse_and_name_mexp() -> None:
    sde = sdekit.CLDSDE()
    with pytest.raises(SolverError, match=r"written for scalar SDEs.*'mexp'"):
        sdekit.sample(_mixture().diffuse(sde), sde, (8, 2, 2), solver="exp2", steps=10)
    assert math.isfinite(float(sdekit.sample(_mixture().diffuse(sde), sde, (8, 2, 2), solver="mexp", steps=5).sum()))


def test_default_sampler_with_steps_on_cld_is_mexp() -> None:
    """sample(steps=k) without solver= on an affine k-component SDE runs mexp with k model evaluations (the rule in
    sdekit/solvers/_defaults.py); the same bits as naming it."""
    sde = sdekit.CLDSDE()
    oracle = _mixture().diffuse(sde)
    x, info = sdekit.sample(oracle, sde, (8, 2, 2), steps=12, dtype=DT, return_info=True,
                            generator=torch.Generator().manual_seed(4))  # fmt: skip
    assert (info.solver, info.nfe) == ("mexp", 12)
    named = sdekit.sample(oracle, sde, (8, 2, 2), solver="mexp", steps=12, dtype=DT,
                          generator=torch.Generator().manual_seed(4))  # fmt: skip
    assert torch.equal(x, named)
