"""Native samplers (pc, ancestral, ald, exp1-3) against exact laws.

Statistical tests: sliced Kolmogorov-Smirnov (sdekit._stats) of 20,000 float64 samples at
t = eps (denoise=False) against the exact diffused mixture p_eps, family-wise level 1e-3
over 8 fixed directions, fixed seeds; the same test must reject a too-coarse step count.
Order tests: deterministic PF-ODE from fixed x_T for Gaussian data, where the exact flow
map is affine. Measured on this machine (n = 5e4, KS / critical value): exp1 50 steps 1.4,
exp2 40 steps 0.65-0.85, exp3 20 steps 0.8-1.3, ancestral 200 steps 0.67-0.87, pc 200 steps
0.4-0.9, ald 500 levels x 3 steps 0.61 (n = 2e4); coarse runs 4-35. Runs of 1,000+ NFE at
n = 20,000 (ancestral's and ald's defaults) are marked slow (CI runs them).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from _mixtures import small_mixture as _mixture

import sdekit
from sdekit._random import Streams
from sdekit._stats import random_directions, sliced_ks
from sdekit.analytic import GaussianMixture
from sdekit.errors import SolverDivergedError, SolverError
from sdekit.solvers import SamplingProblem, get

N = 20_000
MEANS = torch.tensor([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]], dtype=torch.float64)
STDS = torch.tensor([0.3, 0.5, 0.4], dtype=torch.float64)
WEIGHTS = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)
DIRS = random_directions(2, 8, seed=0)


class _IsoMixtureScore:
    """Exact score of the diffused isotropic mixture, closed form (cheaper than the general oracle):
    component k diffuses to N(alpha mu_k + m, (alpha^2 s_k^2 + sigma^2) I)."""

    def __init__(self, sde: sdekit.SDE, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor):
        self.m, self.mu, self.s2, self.logw = sde.marginal, means, stds**2, torch.log(weights)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, off, sig2 = self.m.alpha(t)[:, None], self.m.offset(t)[:, None], self.m.sigma2(t)[:, None]
        mu = self.mu.to(x)
        var = a**2 * self.s2.to(x) + sig2  # (B, K)
        y = x - off
        d2 = (y * y).sum(1, keepdim=True) - 2 * a * (y @ mu.T) + a**2 * (mu * mu).sum(1)
        logp = self.logw.to(x) - 0.5 * d2 / var - 0.5 * x.shape[1] * torch.log(var)
        rv = torch.softmax(logp, dim=1) / var
        return -y * rv.sum(1, keepdim=True) + a * (rv @ mu)


SDES = {"vp": sdekit.VPSDE, "ve": sdekit.VESDE}
# solver -> (recommended steps (None = the solver's default_steps), too-coarse steps)
CASES = {
    "exp1": (None, 10),
    "exp2": (None, 8),
    "exp3": (None, 8),
    "ancestral": (None, 20),
    "pc": (None, 8),
    "ald": (None, 20),
}


def _ks_ratio(sde_name: str, solver: str, steps: int | None, seed: int = 0) -> float:
    sde = SDES[sde_name]()
    mix = GaussianMixture(MEANS, STDS, WEIGHTS)
    oracle = mix.diffuse(sde)
    g = torch.Generator().manual_seed(seed)
    score = _IsoMixtureScore(sde, MEANS, STDS, WEIGHTS)
    x = sdekit.sample(score, sde, (N, 2), solver=solver, steps=steps, denoise=False, generator=g, dtype=torch.float64)
    return sliced_ks(x, oracle.at(sde.default_eps), DIRS).ratio


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize(
    "solver",
    [pytest.param(s, marks=pytest.mark.slow) if s in ("ald", "ancestral", "exp1", "pc") else s for s in CASES],
)  # default steps: ald 3,000 NFE, ancestral 1,000, pc 800, exp1 200: ~5-20 s per SDE on the shared CPUs
def test_sliced_ks_recommended_steps_pass(sde_name: str, solver: str) -> None:
    ratio = _ks_ratio(sde_name, solver, CASES[solver][0])
    assert ratio < 1.0, f"{solver} on {sde_name}: sliced KS / critical = {ratio:.2f}"


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("solver", list(CASES))
def test_sliced_ks_too_coarse_fails(sde_name: str, solver: str) -> None:
    ratio = _ks_ratio(sde_name, solver, CASES[solver][1])
    assert ratio > 1.0, f"{solver} on {sde_name} at {CASES[solver][1]} steps unexpectedly passes ({ratio:.2f})"


# ----------------------------------------------------------------------------- 1-D Gaussian data
MU, S = 0.7, 0.4
GAUSS = (
    torch.tensor([[MU]], dtype=torch.float64),
    torch.tensor([S], dtype=torch.float64),
    torch.ones(1, dtype=torch.float64),
)


def _gauss_moments(sde: sdekit.SDE, t: float) -> tuple[float, float]:
    tt = torch.tensor(t, dtype=torch.float64)
    m = sde.marginal
    a = float(m.alpha(tt))
    return a * MU + float(m.offset(tt)), math.sqrt(a * a * S * S + float(m.sigma2(tt)))


def _pf_error(sde: sdekit.SDE, solver: str, steps: int, t_end: float) -> float:
    """Max error of the solver's PF-ODE map from fixed x_T against the exact affine flow map."""
    oracle = _IsoMixtureScore(sde, *GAUSS)
    mT, sT = _gauss_moments(sde, sde.T)
    me, se = _gauss_moments(sde, t_end)
    x_T = mT + sT * torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    problem = SamplingProblem(
        sde=sde, score=oracle, x_T=x_T, t_start=sde.T, t_end=t_end, steps=steps, rtol=1.0, atol=1.0,
        generator=None, progress=lambda k: None, options={"grid": "logsnr"},  # step ranges below: log-SNR grid
    )  # fmt: skip
    x, stats = get(solver).solve(problem)
    assert stats.steps == steps
    return float((x - (me + se / sT * (x_T - mT))).abs().max())


# Stopping at t_end where sigma ~ the data std: integrating to eps super-converges for Gaussian
# data on the log-SNR grid (the leading error term integrates to a boundary term that vanishes
# at both ends), which hides the order. Step ranges are in the asymptotic regime (measured).
@pytest.mark.parametrize(
    ("sde_cls", "t_end", "solver", "order", "steps"),
    [
        (sdekit.VPSDE, 0.2, "exp1", 1, (32, 64, 128, 256)),
        (sdekit.VPSDE, 0.2, "exp2", 2, (32, 64, 128, 256)),
        pytest.param(sdekit.VPSDE, 0.2, "exp3", 3, (256, 512, 1024, 2048), marks=pytest.mark.slow),  # 3,840 NFE
        (sdekit.VESDE, 0.4, "exp1", 1, (32, 64, 128, 256)),
        (sdekit.VESDE, 0.4, "exp2", 2, (64, 128, 256, 512)),
        (sdekit.VESDE, 0.4, "exp3", 3, (32, 64, 128, 256)),
        (sdekit.EDMSDE, 0.5, "exp3", 3, (128, 256, 512, 1024)),
        (sdekit.SubVPSDE, 0.2, "exp2", 2, (32, 64, 128, 256)),
        (sdekit.SubVPSDE, 0.2, "exp3", 3, (64, 128, 256, 512)),
    ],
)
def test_exponential_integrator_order(sde_cls, t_end: float, solver: str, order: int, steps) -> None:
    sde = sde_cls()
    errs = [_pf_error(sde, solver, n, t_end) for n in steps]
    xs = torch.log(torch.tensor(steps, dtype=torch.float64))
    ys = torch.log(torch.tensor(errs, dtype=torch.float64))
    slope = -float(((xs - xs.mean()) * (ys - ys.mean())).sum() / ((xs - xs.mean()) ** 2).sum())
    assert abs(slope - order) < 0.3, f"{solver} on {sde}: slope {slope:.2f}, errors {errs}"


def test_exponential_integrator_with_offset() -> None:
    """A custom affine SDE with a nonzero offset m(t): exp3 follows the exact flow map."""
    sde = sdekit.SDE.from_expressions("-(1 + t) * x + 2", "sqrt(1 + t)", T=2.0)
    assert float(sde.marginal.offset(torch.tensor(1.0))) != 0
    assert _pf_error(sde, "exp3", 200, 1e-3) < 1e-4
    assert _pf_error(sde, "exp1", 200, 1e-3) < 5e-2


def _gauss_z(solver: str, steps: int | None, n: int = 20_000) -> tuple[float, float]:
    """z-scores of the sample mean and variance at eps against the exact 1-D Gaussian law (VP, float64).

    SE(mean) = std / sqrt(n), SE(var) = var sqrt(2 / (n - 1)) (Gaussian samples).
    """
    sde = sdekit.VPSDE()
    oracle = _IsoMixtureScore(sde, *GAUSS)
    g = torch.Generator().manual_seed(1)
    x = sdekit.sample(oracle, sde, (n, 1), solver=solver, steps=steps, denoise=False, generator=g, dtype=torch.float64)
    mean, std = _gauss_moments(sde, sde.default_eps)
    se_mean, se_var = std / math.sqrt(n), std**2 * math.sqrt(2 / (n - 1))
    return (float(x.mean()) - mean) / se_mean, (float(x.var()) - std**2) / se_var


@pytest.mark.parametrize(
    "solver", ["pc", pytest.param("ald", marks=pytest.mark.slow), pytest.param("ancestral", marks=pytest.mark.slow)]
)  # ald: 1,500 NFE; ancestral: 1,000 steps (~10-20 s each on the shared CPUs)
def test_stochastic_samplers_gaussian_moments(solver: str) -> None:
    """1-D Gaussian data under VP at the solver's default steps: mean and variance at eps within 4 MC standard
    errors (n = 20,000; a correct sampler fails one of the two with probability ~1.3e-4).

    ancestral's default is 1000 log-SNR steps because its plug-in posterior misses Var[x0 | x_t]
    (variance deficit O(1/steps): measured -1.8 % at 1000, n = 1e5, i.e. ~1.8 SE at n = 20,000).
    """
    z_mean, z_var = _gauss_z(solver, None)
    assert abs(z_mean) < 4 and abs(z_var) < 4, (z_mean, z_var)


def test_ancestral_variance_bias_at_coarse_steps() -> None:
    """The same 4-SE variance test fails for ancestral at 50 steps: deficit O(1/steps), measured -17 % on the
    log-SNR grid (n = 1e5), i.e. ~ -17 SE at n = 20,000 (so the default-steps test above can fail)."""
    _, z_var = _gauss_z("ancestral", 50)
    assert z_var < -4, z_var


# ----------------------------------------------------------------------------- mechanics
def _toy(solver: str, steps: int = 12, dtype=torch.float64, seed: int = 3, score=None, **options):
    sde = sdekit.VPSDE()
    oracle = _IsoMixtureScore(sde, MEANS, STDS, WEIGHTS)
    g = torch.Generator().manual_seed(seed)
    x_T = sde.prior.sample((64, 2), generator=torch.Generator().manual_seed(99), dtype=torch.float64).to(dtype)
    return sdekit.sample(
        score or oracle, sde, (64, 2), solver=solver, steps=steps, generator=g, x_T=x_T,
        return_info=True, **options,
    )  # fmt: skip


@pytest.mark.parametrize("solver", list(CASES))
def test_same_seed_same_samples_and_nfe(solver: str) -> None:
    (x1, info), (x2, _) = _toy(solver), _toy(solver)
    assert torch.equal(x1, x2)
    nfe = {"ancestral": 12, "pc": 24, "ald": 36}.get(solver, 11)  # exp1-3 count steps=12 as NFE, denoising included
    assert info.nfe == nfe + 1  # + the denoising step of sample()
    assert sdekit.solvers.available()[solver].startup_nfe == (1 if solver == "exp3" else 0)
    assert info.steps == {"exp1": 11, "exp2": 11, "exp3": 10}.get(solver, 12)


@pytest.mark.parametrize("solver", list(CASES))
def test_float32_follows_x_T(solver: str) -> None:
    x, _ = _toy(solver, dtype=torch.float32)
    x64, _ = _toy(solver, dtype=torch.float64)
    assert x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    if solver.startswith("exp"):  # deterministic given x_T: float32 tracks float64
        assert float((x.double() - x64).abs().max()) < 1e-3


def test_divergence_reports_step_and_time() -> None:
    sde = sdekit.VPSDE()
    oracle = _IsoMixtureScore(sde, MEANS, STDS, WEIGHTS)

    def bad(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = oracle(x, t)
        return torch.where(t[:, None] < 0.5, s * float("inf"), s)

    x_T = sde.prior.sample((8, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    problem = SamplingProblem(sde, bad, x_T, 1.0, 1e-3, 40, 1.0, 1.0, None, lambda k: None, {"grid": "uniform"})
    with pytest.raises(SolverDivergedError) as err:
        get("ancestral").solve(problem)
    # uniform grid: step i goes from 1 - i*h to 1 - (i+1)*h, h = 0.999/40; the first t < 0.5 is step 21
    assert err.value.step == 22 and err.value.t == pytest.approx(1 - 22 * 0.999 / 40)


def test_options_validated() -> None:
    with pytest.raises(SolverError, match="unknown option"):
        _toy("exp2", snr=0.2)
    with pytest.raises(SolverError, match="corrector"):
        _toy("pc", corrector="hmc")
    _toy("pc", corrector="none")


def test_pc_works_for_non_affine_sde() -> None:
    """pc needs only the score: a diagonal-noise SDE, exact score of its stationary-like law not needed."""
    sde = sdekit.SDE.from_expressions("-x", "sqrt(1 + x**2)", T=1.0)
    x_T = torch.zeros(16, 2, dtype=torch.float64)
    problem = SamplingProblem(
        sde, lambda x, t: -x, x_T, 1.0, 1e-3, 20, 1.0, 1.0, torch.Generator().manual_seed(0), lambda k: None, {}
    )
    x, stats = get("pc").solve(problem)
    assert stats.steps == 20 and bool(torch.isfinite(x).all())
    with pytest.raises(SolverError):
        get("exp1").solve(problem)


def test_sample_pc_corrector_none_disables_the_corrector():
    sde = sdekit.VPSDE()
    oracle = _mixture().diffuse(sde)

    def nfe(corrector):
        _, info = sdekit.sample(
            oracle, sde, (8, 2), solver="pc", steps=4, corrector=corrector, denoise=False, return_info=True,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        return info.nfe

    assert nfe("none") == 4  # predictor only: one evaluation per step
    assert nfe(None) == nfe("none")


# --------------------------------------------------------------------------- typed state, shared Langevin update
@pytest.mark.parametrize(
    ("solver", "state"),
    [("pc", "PCState"), ("ancestral", "AncestralState"), ("ald", "ALDState"), ("exp3", "ExpState")],
)
def test_prepare_returns_the_solvers_frozen_state(solver: str, state: str) -> None:
    """prepare() hands step() a frozen dataclass of the solver's coefficients; step() returns the state it continues
    with (exp3: a new one holding the denoiser history, newest first, at most 3 long)."""
    from sdekit.solvers import _exponential, _native
    from sdekit.solvers._native import StepContext

    sde = sdekit.VPSDE()
    impl = get(solver)
    x = sde.prior.sample((4, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    problem = SamplingProblem(
        sde, _IsoMixtureScore(sde, MEANS, STDS, WEIGHTS), x, 1.0, 1e-3, 5, 1, 1, None, lambda k: None, {}
    )
    opts = impl.options(problem)
    ctx = StepContext(problem, sdekit.solvers._grids.time_grid(sde, 1.0, 1e-3, 5, opts["grid"]))
    st = impl.prepare(ctx, opts)
    assert type(st).__name__ == state and type(st) is getattr(_native, state, getattr(_exponential, state, None))
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.foo = 1  # type: ignore[attr-defined]
    for i in range(5):
        x, new = impl.step(ctx, st, x, i)
        assert (new is st) != (solver == "exp3")
        st = new
    if solver == "exp3":
        assert len(st.history) == 3 and st.start is not None


def test_ald_runs_annealed_langevins_update() -> None:
    """On VE (kernel mean map = identity) the ald sampler is sdekit.annealed_langevin on the levels sigma(t_i): the same
    update and the same draws for one seed; their step sizes eps sigma_i^2 / sigma_L^2 differ in rounding only."""
    sde = sdekit.VESDE()
    n, k, step_lr = 12, 3, 2e-5
    times = sdekit.solvers._grids.time_grid(sde, sde.T, sde.default_eps, n, "logsnr")
    sigmas = sde.marginal.sigma(times[1:])

    def score_t(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # exact score of N(0.5, 0.3^2) data under VE
        return -(x - 0.5) / (0.09 + sde.marginal.sigma2(t)[:, None])

    def score_sigma(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return -(x - 0.5) / (0.09 + s[:, None] ** 2)

    x_T = sde.prior.sample((64, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = dict(solver="ald", steps=n, step_lr=step_lr, n_steps_each=k, grid="logsnr", x_T=x_T, denoise=False)
    ald = sdekit.sample(score_t, sde, (64, 1), generator=torch.Generator().manual_seed(1), **kw)
    # sample draws from per-block streams of its generator; 64 rows are one block, i.e. one torch.Generator
    block = Streams.of(torch.Generator().manual_seed(1), 64, 1).generator(0)
    ncsn = sdekit.annealed_langevin(score_sigma, x_T, sigmas, step_lr, k, generator=block)
    torch.testing.assert_close(ald, ncsn, rtol=1e-10, atol=1e-10)
