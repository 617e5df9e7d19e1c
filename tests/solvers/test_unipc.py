r"""UniPC (``unipc``): every step against an independent transcription of diffusers' B(h) updates, convergence orders
on the closed-form Gaussian PF-ODE flow, NFE accounting, and the exact law at a documented step count.

* Transcription: :func:`_diffusers_unipc` re-writes ``UniPCMultistepScheduler.step`` with
  ``multistep_uni_p_bh_update`` / ``multistep_uni_c_bh_update`` (``predict_x0=True``, data prediction) in the
  scheduler's own shape (``rks``, ``D1s``, the :math:`h\varphi_k` recursion, ``R``/``b`` and the linear solves,
  the fixed :math:`\rho = 1/2` cases, the warm-up counter and ``last_sample``) on the VP schedule in closed form,
  :math:`\alpha(t) = \exp(-t^2(\beta_{\max}-\beta_{\min})/4 - t\beta_{\min}/2)` with VPSDE's defaults
  (0.1, 20), :math:`\sigma = \sqrt{1-\alpha^2}`, :math:`\lambda = \log(\alpha/\sigma)`; model: the exact score of
  a 2-D Gaussian mixture (float64). Every predicted state and every corrected state must agree to
  :data:`ROUNDOFF` (float64 round-off: :math:`\hat x_0` divides by :math:`\alpha_T \approx 6.6\cdot 10^{-3}`, so an
  ulp of x becomes ~2e-14 in :math:`\hat x_0`; measured differences are below 1e-13 over 16 steps).
* diffusers itself, when importable: the same comparison against the real scheduler fed sdekit's grid as its
  ``sigmas`` (:math:`\sigma/\alpha = e^{-\lambda}`) and the exact noise prediction :math:`-\sigma\,s`.
* Orders: 1-D Gaussian data (``tests/_gaussflow.py``), max error over 7 starting points at 32–256 steps on the
  ``"arctan"`` grid (the uniform-:math:`\lambda` grid super-converges for Gaussian data), slope within 0.3 of the
  order (TESTING.md).
"""

from __future__ import annotations

import math

import pytest
import torch
from _gaussflow import gauss as _gauss
from _gaussflow import gauss_score as _gauss_score
from _gaussflow import pf_error as _pf_error
from _gaussflow import slope as _slope

import sdekit
from sdekit import analytic
from sdekit._stats import random_directions, sliced_ks
from sdekit.errors import SolverError
from sdekit.solvers import get
from sdekit.solvers._base import SamplingProblem
from sdekit.solvers._exponential import exp_moments, lagrange_weights
from sdekit.solvers._grids import log_snr, time_grid
from sdekit.solvers._native import StepContext
from sdekit.solvers._unipc import unipc_orders, unipc_weights

ROUNDOFF = 1e-11
"""Absolute tolerance of the step-by-step comparisons (states of size <= 5; see the module docstring)."""

BETA_MIN, BETA_MAX = 0.1, 20.0


def _mixture() -> analytic.GaussianMixture:
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.5, -2.0]], dtype=torch.float64)
    return analytic.GaussianMixture(
        means, torch.tensor([0.3, 0.5, 0.4], dtype=torch.float64), torch.tensor([0.3, 0.4, 0.3], dtype=torch.float64)
    )


def _vp_alpha(t: float) -> float:
    return math.exp(-t * t * (BETA_MAX - BETA_MIN) / 4 - t * BETA_MIN / 2)


# ----------------------------------------------------------------------------- the transcription
def _diffusers_unipc(model_x0, x, times, order, variant, use_corrector, lower_order_final):
    """diffusers' UniPCMultistepScheduler.step loop (predict_x0, bh1/bh2), transcribed; returns the state after each
    step (``prev_sample``) and the sample each step started from after its correction (``last_sample``)."""
    alpha = [_vp_alpha(t) for t in times]
    sigma = [math.sqrt(1 - a * a) for a in alpha]
    lam = [math.log(a) - math.log(s) for a, s in zip(alpha, sigma)]
    n = len(times) - 1
    model_outputs = [None] * order
    lower_order_nums, last_sample, this_order = 0, None, None

    def coefficients(h, rks, k):
        hh = -h
        h_phi_1 = math.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        B_h = hh if variant == "bh1" else math.expm1(hh)
        R, b = [], []
        for i in range(1, k + 1):
            R.append([rk ** (i - 1) for rk in rks])
            b.append(h_phi_k * factorial_i / B_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        return h_phi_1, B_h, torch.tensor(R, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)

    def uni_p(x, k, idx):  # multistep_uni_p_bh_update: from t_idx to t_idx+1
        m0 = model_outputs[-1]
        h = lam[idx + 1] - lam[idx]
        rks, D1s = [], []
        for i in range(1, k):
            rk = (lam[idx - i] - lam[idx]) / h
            rks.append(rk)
            D1s.append((model_outputs[-(i + 1)] - m0) / rk)
        rks.append(1.0)
        h_phi_1, B_h, R, b = coefficients(h, rks, k)
        pred_res = 0
        if D1s:
            rhos_p = [0.5] if k == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
            pred_res = sum(r * d for r, d in zip(rhos_p, D1s))
        x_t_ = sigma[idx + 1] / sigma[idx] * x - alpha[idx + 1] * h_phi_1 * m0
        return x_t_ - alpha[idx + 1] * B_h * pred_res

    def uni_c(model_t, x, k, idx):  # multistep_uni_c_bh_update: corrects the step t_idx-1 -> t_idx
        m0 = model_outputs[-1]
        h = lam[idx] - lam[idx - 1]
        rks, D1s = [], []
        for i in range(1, k):
            rk = (lam[idx - (i + 1)] - lam[idx - 1]) / h
            rks.append(rk)
            D1s.append((model_outputs[-(i + 1)] - m0) / rk)
        rks.append(1.0)
        h_phi_1, B_h, R, b = coefficients(h, rks, k)
        rhos_c = [0.5] if k == 1 else torch.linalg.solve(R, b).tolist()
        corr_res = sum(r * d for r, d in zip(rhos_c[:-1], D1s))
        x_t_ = sigma[idx] / sigma[idx - 1] * x - alpha[idx] * h_phi_1 * m0
        return x_t_ - alpha[idx] * B_h * (corr_res + rhos_c[-1] * (model_t - m0))

    prev_samples, last_samples = [], []
    for step_index in range(n):
        m = model_x0(x, step_index, alpha[step_index], sigma[step_index])
        if use_corrector and step_index > 0 and last_sample is not None:
            x = uni_c(m, last_sample, this_order, step_index)
        model_outputs = [*model_outputs[1:], m]
        this_order = min(order, n - step_index) if lower_order_final else order
        this_order = min(this_order, lower_order_nums + 1)  # warm-up
        last_sample = x
        x = uni_p(x, this_order, step_index)
        lower_order_nums = min(lower_order_nums + 1, order)
        prev_samples.append(x)
        last_samples.append(last_sample)
    return prev_samples, last_samples


def _sdekit_steps(sde, score, x, steps, **options):
    """Run ``unipc`` step by step: (states after each step, corrected state each step started from, times), on the
    reference's ``logsnr`` grid unless ``grid=`` says otherwise."""
    options = {"grid": "logsnr", **options}
    problem = SamplingProblem(
        sde=sde, score=score, x_T=x, t_start=sde.T, t_end=sde.default_eps, steps=steps, rtol=1.0, atol=1.0,
        generator=None, progress=lambda k: None, options=options,
    )  # fmt: skip
    solver = get("unipc")
    opts = solver.options(problem)
    times = time_grid(sde, sde.T, sde.default_eps, steps, opts["grid"])
    ctx = StepContext(problem, times)
    state = solver.prepare(ctx, opts)
    outs, starts = [], []
    for i in range(steps):
        x, state = solver.step(ctx, state, x, i)
        outs.append(x)
        starts.append(state.y_prev)  # VP: m(t) = 0, so y = x
    return outs, starts, times.tolist()


# (steps, sdekit's lower_order_final, the transcription's flag): True lowers only runs of < 15 steps.
RUNS = [(6, True, True), (16, True, False), (7, "always", True), (5, False, False)]


@pytest.mark.parametrize(("steps", "lof", "reference_lof"), RUNS)
@pytest.mark.parametrize("corrector", [True, False])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_step_matches_the_transcribed_reference(order, variant, corrector, steps, lof, reference_lof) -> None:
    sde = sdekit.VPSDE()
    oracle = _mixture().diffuse(sde)
    x_T = oracle.sample(16, sde.T, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    outs, starts, times = _sdekit_steps(
        sde, oracle, x_T, steps, order=order, variant=variant, corrector=corrector, lower_order_final=lof
    )

    def model_x0(x, i, a, s):
        eps = -s * oracle(x, torch.full((x.shape[0],), times[i], dtype=torch.float64))
        return (x - s * eps) / a

    ref, ref_starts = _diffusers_unipc(model_x0, x_T, times, order, variant, corrector, reference_lof)
    for i in range(steps):
        assert float((outs[i] - ref[i]).abs().max()) < ROUNDOFF, f"step {i}"
        assert float((starts[i] - ref_starts[i]).abs().max()) < ROUNDOFF, f"corrected start of step {i}"
    x = sdekit.sample(
        oracle, sde, x_T.shape, solver="unipc", steps=steps, x_T=x_T, denoise=False, order=order, variant=variant,
        corrector=corrector, lower_order_final=lof, grid="logsnr",
    )  # fmt: skip
    assert float((x - ref[-1]).abs().max()) < ROUNDOFF


def test_the_corrector_moves_each_steps_start() -> None:
    """With UniC on, step i starts from the corrected state, not from step i - 1's predicted output."""
    sde = sdekit.VPSDE()
    oracle = _mixture().diffuse(sde)
    x_T = oracle.sample(16, sde.T, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    outs, starts, _ = _sdekit_steps(sde, oracle, x_T, 8)
    for i in range(1, 8):
        assert float((starts[i] - outs[i - 1]).abs().max()) > 1e-6, f"step {i - 1} not corrected"


@pytest.mark.parametrize(("steps", "lof"), [(6, True), (16, "always"), (16, False), (9, False)])
@pytest.mark.parametrize("corrector", [True, False])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_step_matches_diffusers(order, variant, corrector, steps, lof, float64_default) -> None:
    """The real ``UniPCMultistepScheduler`` (skipped without diffusers) on sdekit's grid: its ``sigmas`` are
    :math:`e^{-\\lambda_i}`, its model output the exact noise :math:`-\\sigma_i s(x, t_i)`. diffusers lowers the
    final orders in every run (``lower_order_final=True``), sdekit's True only below 15 steps (``"always"``: every
    run)."""
    diffusers = pytest.importorskip("diffusers")
    sde = sdekit.VPSDE()
    oracle = _mixture().diffuse(sde)
    x_T = oracle.sample(16, sde.T, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    outs, starts, times = _sdekit_steps(
        sde, oracle, x_T, steps, order=order, variant=variant, corrector=corrector, lower_order_final=lof
    )
    scheduler = diffusers.UniPCMultistepScheduler(
        solver_order=order, solver_type=variant, prediction_type="epsilon", lower_order_final=lof is not False,
        disable_corrector=[] if corrector else list(range(steps)),
    )  # fmt: skip
    scheduler.set_timesteps(steps)
    tt = torch.tensor(times, dtype=torch.float64)
    scheduler.sigmas = torch.exp(-log_snr(sde.marginal, tt))
    sig = sde.marginal.sigma(tt).tolist()
    x = x_T
    for i, timestep in enumerate(scheduler.timesteps):
        eps = -sig[i] * oracle(x, tt[i].expand(x.shape[0]))
        x = scheduler.step(eps, timestep, x).prev_sample
        assert float((outs[i] - x).abs().max()) < ROUNDOFF, f"step {i}"
        assert float((starts[i] - scheduler.last_sample).abs().max()) < ROUNDOFF, f"corrected start of step {i}"


@pytest.mark.parametrize("steps", [8, 20])
def test_with_denoising_equals_diffusers_default_run(steps: int, float64_default) -> None:
    """diffusers' default UniPC-2 (``final_sigmas_type="zero"``, ``lower_order_final=True``) with k inference steps:
    k - 1 steps, then a first-order step to sigma = 0 that returns the denoiser at the predicted point. That is
    ``unipc`` with steps=k and its denoising step; diffusers' order lowering is spent on the step to sigma = 0, so
    sdekit runs with ``lower_order_final=False`` (skipped without diffusers)."""
    diffusers = pytest.importorskip("diffusers")
    sde = sdekit.VPSDE()
    oracle = _mixture().diffuse(sde)
    x_T = oracle.sample(16, sde.T, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    x = sdekit.sample(
        oracle, sde, x_T.shape, solver="unipc", steps=steps, x_T=x_T, lower_order_final=False, grid="logsnr"
    )
    times = time_grid(sde, sde.T, sde.default_eps, steps - 1, "logsnr")
    scheduler = diffusers.UniPCMultistepScheduler(solver_order=2, solver_type="bh2")
    scheduler.set_timesteps(steps)
    scheduler.sigmas = torch.cat([torch.exp(-log_snr(sde.marginal, times)), torch.zeros(1, dtype=torch.float64)])
    sig = sde.marginal.sigma(times).tolist()
    y = x_T
    for i, timestep in enumerate(scheduler.timesteps):
        y = scheduler.step(-sig[i] * oracle(y, times[i].expand(y.shape[0])), timestep, y).prev_sample
    assert float((x - y).abs().max()) < ROUNDOFF


# ----------------------------------------------------------------------------- coefficients
def test_orders_per_step() -> None:
    assert unipc_orders(6, 3, True) == [1, 2, 3, 3, 2, 1]
    assert unipc_orders(16, 3, True) == [1, 2] + [3] * 14
    assert unipc_orders(16, 3, "always") == [1, 2] + [3] * 12 + [2, 1]
    assert unipc_orders(4, 2, False) == [1, 2, 2, 2]
    assert unipc_orders(1, 3, True) == [1]


def test_unip3_is_the_lagrange_3m_step_and_unip1_is_ddim() -> None:
    """The moment conditions make UniP-p exact for polynomials of degree p - 1 in lambda: UniP-1 is DDIM and UniP-3
    the Lagrange-form 3M weights of ``exp3`` (both variants: beta cancels where rho is solved for)."""
    sde = sdekit.VESDE()
    times = time_grid(sde, sde.T, sde.default_eps, 12, "arctan")
    lam = log_snr(sde.marginal, times)
    alpha = sde.marginal.alpha(times)
    for variant in ("bh1", "bh2"):
        predict, _ = unipc_weights(lam, alpha, unipc_orders(12, 3, False), variant, corrector=False)
        for i in (0, 5, 11):
            h = lam[i + 1 : i + 2] - lam[i : i + 1]
            nodes = [torch.zeros(1, dtype=torch.float64)] + [lam[i - k : i - k + 1] - lam[i : i + 1] for k in (1, 2)]
            nodes = nodes[: min(3, i + 1)]
            expected = [float(alpha[i + 1] * w) for w in lagrange_weights(h, nodes)]
            if i == 0:  # DDIM
                assert predict[i] == pytest.approx(expected, abs=1e-14)
            else:
                assert predict[i] == pytest.approx(expected, rel=1e-11, abs=1e-14)


def test_unip2_bh2_is_the_published_dpm_solver_pp_2m_step() -> None:
    r"""UniP-2 with bh2 (:math:`\rho = 1/2`, :math:`\beta = 1 - e^{-h}`) is DPM-Solver++(2M) (Lu et al. 2022,
    Algorithm 2): :math:`\alpha_{i+1}(1 - e^{-h})[(1 + \tfrac1{2r})\hat x_0^{(i)} - \tfrac1{2r}\hat x_0^{(i-1)}]`,
    :math:`r = h_{i-1}/h_i`."""
    sde = sdekit.VPSDE()
    times = time_grid(sde, sde.T, sde.default_eps, 10, "edm")  # unequal steps: r != 1
    lam = log_snr(sde.marginal, times).tolist()
    alpha = sde.marginal.alpha(times)
    predict, _ = unipc_weights(
        torch.tensor(lam, dtype=torch.float64), alpha, unipc_orders(10, 2, False), "bh2", corrector=False
    )
    for i in range(1, 10):
        h, r = lam[i + 1] - lam[i], (lam[i] - lam[i - 1]) / (lam[i + 1] - lam[i])
        c = float(alpha[i + 1]) * -math.expm1(-h)
        assert predict[i] == pytest.approx([c * (1 + 1 / (2 * r)), -c / (2 * r)], rel=1e-13)


# ----------------------------------------------------------------------------- orders
STEPS = (32, 64, 128, 256)  # errors 5e-2 .. 2e-7 (far above round-off), asymptotic from 32 (measured)
ZOO = {
    "vp": sdekit.VPSDE,
    "ve": sdekit.VESDE,
    "user": lambda: sdekit.SDE.from_expressions("-(1 + t) * x + 2", "sqrt(1 + t)", T=2.0),  # offset m(t) != 0
}
ORDERS = [(1, False, 1), (2, False, 2), (3, False, 3), (1, True, 2), (2, True, 3), (3, True, 4)]


@pytest.mark.parametrize(("order", "corrector", "expected"), ORDERS)
@pytest.mark.parametrize("name", list(ZOO))
def test_convergence_order(name: str, order: int, corrector: bool, expected: int) -> None:
    """UniP-p alone has order p; with UniC p + 1. For p = 3 the warm-up's UniC-1 step (local O(h^3)) caps the
    order at 3 in theory, but it sits at T where the denoiser barely moves: measured 4.0 down to 4096 steps."""
    sde = ZOO[name]()
    errs = [_pf_error(sde, "unipc", n, order=order, corrector=corrector, grid="arctan") for n in STEPS]
    slope = _slope(STEPS, errs)
    assert abs(slope - expected) < 0.3, f"unipc-{order} corrector={corrector} on {name}: slope {slope:.2f}, {errs}"


def test_variants_converge_alike() -> None:
    """bh1 and bh2 differ only in UniP-2 and UniC-1 (rho fixed at 1/2): same orders."""
    sde = sdekit.VPSDE()
    for order, corrector, expected in ((2, False, 2), (1, True, 2), (2, True, 3)):
        errs = [
            _pf_error(sde, "unipc", n, order=order, corrector=corrector, grid="arctan", variant="bh1") for n in STEPS
        ]
        assert abs(_slope(STEPS, errs) - expected) < 0.3, (order, corrector, errs)


# ----------------------------------------------------------------------------- NFE and options
def _gauss_run(steps: int, denoise: bool, **options):
    sde = sdekit.VESDE()
    x_T = _gauss(sde, sde.T)[1] * torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    return sdekit.sample(
        _gauss_score(sde), sde, x_T.shape, solver="unipc", steps=steps, x_T=x_T, denoise=denoise, return_info=True,
        **options,
    )  # fmt: skip


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("steps", [2, 3, 7, 20])
def test_steps_are_model_evaluations(steps: int, order: int) -> None:
    """steps=k spends exactly k model evaluations, with or without the final denoising step (the corrector reuses the
    next step's evaluation)."""
    _, info = _gauss_run(steps, denoise=False, order=order)
    assert info.nfe == steps and info.steps == steps
    _, info = _gauss_run(steps, denoise=True, order=order)
    assert info.nfe == steps and info.steps == steps - 1


@pytest.mark.parametrize(
    ("option", "value"),
    [("order", 4), ("order", 0), ("order", True), ("variant", "bh3"), ("corrector", "yes"), ("lower_order_final", 2)],
)
def test_bad_options_are_refused(option: str, value) -> None:
    with pytest.raises(SolverError, match=option):
        _gauss_run(5, denoise=False, **{option: value})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64(dtype) -> None:
    sde = sdekit.VPSDE()
    x = sdekit.sample(_gauss_score(sde), sde, (7, 1), solver="unipc", steps=10, dtype=dtype)
    assert x.dtype == dtype and bool(torch.isfinite(x).all())


def test_default_grid_is_the_measured_best() -> None:
    """ "optimized": the best grid of UniPC-2/3 (bh1, bh2) over the NFE ladder on VP, VE and a user SDE
    (benchmarks/few_step.py, docs/benchmarks.md)."""
    assert get("unipc").grid == "optimized" and get("unipc").steps_are_nfe


# ----------------------------------------------------------------------------- the exact law
@pytest.mark.parametrize("denoise", [False, True])
@pytest.mark.parametrize("sde_cls", [sdekit.VPSDE, sdekit.VESDE])  # about 1.5 s each
def test_indistinguishable_from_exact_at_the_documented_steps(sde_cls, denoise: bool) -> None:
    """``unipc`` with its defaults (UniPC-2 with UniC, bh2, optimized grid) at steps=20 (20 NFE: 20 steps, or 19 and
    the denoising step) on benchmarks/error_vs_nfe's mixture (exact score, x_T from the exact p_T): n = 20,000
    samples pass the sliced KS test against the exact p_eps (the data law after denoising) with 32 directions at
    family-wise level 1e-3, so an exact sampler fails with probability <= 1e-3; seed fixed. Measured ratios
    0.54-0.62 here; at n = 1e5 (seeds 1, 2) 0.86-0.97 without and 0.87-1.01 with the denoising step (docs)."""
    sde = sde_cls()
    mixture = _mixture()
    oracle = mixture.diffuse(sde)
    x_T = oracle.sample(20_000, sde.T, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x, info = sdekit.sample(
        oracle, sde, x_T.shape, solver="unipc", steps=20, x_T=x_T, denoise=denoise, return_info=True
    )
    assert info.nfe == 20
    exact = mixture if denoise else oracle.at(sde.default_eps)
    ks = sliced_ks(x, exact, random_directions(2, 32, seed=0), alpha=1e-3)
    assert ks.passed, f"ratio {ks.ratio:.2f}"


def test_fourth_moment_for_the_order3_corrector() -> None:
    r""":func:`exp_moments` with order 4 (UniC-3 needs :math:`\mu_3`): the by-parts recursion (h > 1) and the series
    (h <= 1) against :math:`\mu_3 = h^3 - 3h^2 + 6h - 6 + 6e^{-h}` in 40-digit arithmetic (relative 1e-13)."""
    import sympy as sp  # lazy: the test's exact reference only

    hs = [1e-3, 0.1, 0.5, 1.0, 1.0 + 1e-12, 1.5, 3.0, 10.0]
    mu3 = exp_moments(torch.tensor(hs, dtype=torch.float64), 4)[3].tolist()
    for h, got in zip(hs, mu3):
        hh = sp.Rational(h)
        exact = float((hh**3 - 3 * hh**2 + 6 * hh - 6 + 6 * sp.exp(-hh)).evalf(40))
        assert got == pytest.approx(exact, rel=1e-13), h


@pytest.mark.parametrize("seed", [0, 1])
def test_default_steps_pass_the_validation_sampler_check_on_subvp(seed: int) -> None:
    """At its default 25 NFE ``unipc`` passes the validation suite's sampler check (``run_sampler``: n = 20,000,
    float32, x_T from the exact p_T, sliced KS at family-wise level 1e-3 and the Bonferroni moment z-test) on sub-VP,
    the zoo SDE that needs the most steps on the log-SNR grid (at 20 NFE |z| reached 4.27 against 4.21). Measured
    here: KS 0.46-0.59, |z| at most 2.48."""
    from validation.analytic_checks import oracles, run_sampler  # lazy: the validation suite's own check

    for name, data in oracles().items():
        s = run_sampler(sdekit.SubVPSDE(), data, "unipc", 20_000, torch.Generator().manual_seed(seed))
        assert s.nfe == 25, s
        assert s.ks_ratio < 1 and s.z_max < s.z_crit, (name, s)
