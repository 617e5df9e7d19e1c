"""sdekit.adapters.from_diffusers against diffusers itself, on a random tiny UNet2DModel (seeded, 8x8, 3 channels).

* Tables: :func:`diffusers_alphas_cumprod` equals each scheduler's own ``alphas_cumprod`` bit for bit, and the
  DiscreteVPSDE's derived marginal reproduces it at t = n + 1 to float64 round-off (1e-14 relative).
* Samplers, float64 network: sdekit's ``exp1`` on :func:`diffusers_schedule`'s grid reproduces ``DDIMScheduler``
  (eta = 0) and ``dpm++2m`` reproduces ``DPMSolverMultistepScheduler`` (dpmsolver++, order 2, midpoint) from the same
  x_T. diffusers rounds its coefficients to float32 (``alphas_cumprod``, ``sigmas``) and DPM-Solver's ``step`` casts
  the state to float32, so the comparison is made twice:

  - *float64 diffusers*: the same table in float64 (DDIM: ``alphas_cumprod`` and ``final_alpha_cumprod`` as float64;
    DPM-Solver: its update functions with float64 sigmas, without ``step``'s float32 cast, :func:`_dpm_float64`).
    Tolerance 1e-12 relative to max |x|: the two sides differ only in the rounding of the same float64 formulas
    (coefficients from log/exp/sqrt round trips, a few ulp each, over <= 20 steps; measured ~1e-15).
  - *stock diffusers*: tolerance ``steps * 2**-21`` relative to max |x|: each step rounds a handful of coefficients
    (and for DPM-Solver the state) to float32, relative 2**-24 each; measured <= 6e-7 relative at 20 steps.

* sample / logp (Hutchinson) / losses.dsm run on the adapted model with finite outputs of the right shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sdekit
from sdekit.adapters import diffusers_alphas_cumprod, diffusers_schedule, from_diffusers
from sdekit.errors import AdapterError

diffusers = pytest.importorskip("diffusers")

C = 3  # channels of the tiny network
SHAPE = (4, C, 8, 8)


def _unet(dtype: torch.dtype = torch.float64, out_channels: int = C) -> torch.nn.Module:
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=C, out_channels=out_channels, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )  # fmt: skip
    return unet.to(dtype).eval()


@pytest.fixture(scope="module")
def unet64() -> torch.nn.Module:
    return _unet()


def _x_T(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=dtype)


def _diffusers_loop(scheduler, unet, x_T: torch.Tensor) -> torch.Tensor:
    """diffusers' own sampling loop: the network at each timestep, then ``scheduler.step`` (DDIM: eta = 0)."""
    x = x_T
    with torch.no_grad():
        for ts in scheduler.timesteps:
            out = unet(x, ts).sample
            x = scheduler.step(out, ts, x).prev_sample
    return x


def _dpm_float64(scheduler, unet, x_T: torch.Tensor) -> torch.Tensor:
    """``DPMSolverMultistepScheduler.step`` (order 2) in float64: its own update functions (``convert_model_output``,
    ``dpm_solver_first_order_update``, ``multistep_dpm_solver_second_order_update``) and its order rule (first order at
    the first step and at a lower-order final step), with float64 sigmas of the same table and without ``step``'s
    float32 cast of the state."""
    ab = scheduler.alphas_cumprod.double()
    sig = torch.sqrt((1 - ab) / ab)
    final = 0.0 if scheduler.config.final_sigmas_type == "zero" else float(sig[0])
    scheduler.sigmas = torch.cat([sig[scheduler.timesteps], torch.tensor([final], dtype=torch.float64)])
    n = len(scheduler.timesteps)
    lower_final = scheduler.config.final_sigmas_type == "zero" or (scheduler.config.lower_order_final and n < 15)
    x, outputs = x_T, []
    with torch.no_grad():
        for i, ts in enumerate(scheduler.timesteps):
            scheduler._step_index = i
            outputs.append(scheduler.convert_model_output(unet(x, ts).sample, sample=x))
            if i == 0 or (i == n - 1 and lower_final):
                x = scheduler.dpm_solver_first_order_update(outputs[-1], sample=x)
            else:
                x = scheduler.multistep_dpm_solver_second_order_update(outputs[-2:], sample=x)
    return x


def _sdekit(unet, scheduler, solver: str, x_T: torch.Tensor) -> tuple[torch.Tensor, sdekit.RunInfo]:
    model, sde = from_diffusers(unet, scheduler)
    return sdekit.sample(
        model, sde, tuple(x_T.shape), solver=solver, x_T=x_T, parameterization=model.parameterization,
        return_info=True, **diffusers_schedule(scheduler),
    )  # fmt: skip


def _relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max())


# ---------------------------------------------------------------- tables
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "trained"])
@pytest.mark.parametrize("kind", ["DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler"])
def test_the_table_is_diffusers_own_and_the_marginal_reproduces_it(schedule, kind):
    if schedule == "sigmoid" and kind != "DDPMScheduler":
        pytest.skip("only DDPMScheduler has the sigmoid schedule")
    config = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012}
    if schedule == "trained":
        config["trained_betas"] = np.random.default_rng(0).uniform(1e-4, 0.02, 1000).tolist()
    else:
        config["beta_schedule"] = schedule
    scheduler = getattr(diffusers, kind)(**config)
    table = diffusers_alphas_cumprod(scheduler)
    assert torch.equal(table.float(), scheduler.alphas_cumprod)  # bit for bit
    _, sde = from_diffusers(lambda x, t: x, scheduler)
    t = torch.arange(1.0, 1001.0, dtype=torch.float64)
    assert float((sde.marginal.alpha(t) ** 2 / table - 1).abs().max()) < 1e-14
    assert float((sde.marginal.sigma2(t) / (1 - table) - 1).abs().max()) < 1e-14


# ---------------------------------------------------------------- DDIM
@pytest.mark.parametrize(
    ("prediction", "spacing", "offset", "to_one", "steps"),
    [
        ("epsilon", "leading", 0, True, 10),
        ("epsilon", "leading", 1, False, 10),
        ("v_prediction", "trailing", 0, True, 20),
        ("sample", "leading", 1, True, 8),
        ("epsilon", "trailing", 0, False, 25),
    ],
)
def test_exp1_reproduces_ddim(unet64, prediction, spacing, offset, to_one, steps):
    scheduler = diffusers.DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
        prediction_type=prediction, timestep_spacing=spacing, steps_offset=offset, set_alpha_to_one=to_one,
    )  # fmt: skip
    scheduler.set_timesteps(steps)
    x_T = _x_T()
    x, info = _sdekit(unet64, scheduler, "exp1", x_T)
    assert info.nfe == steps  # one network call per diffusers timestep
    stock = _diffusers_loop(scheduler, unet64, x_T)
    assert _relative(x, stock) < steps * 2.0**-21
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    scheduler.final_alpha_cumprod = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float64)
    assert _relative(x, _diffusers_loop(scheduler, unet64, x_T)) < 1e-12


# ---------------------------------------------------------------- DPM-Solver++(2M)
@pytest.mark.parametrize(
    ("prediction", "final", "steps"),
    [("epsilon", "zero", 10), ("epsilon", "sigma_min", 10), ("v_prediction", "zero", 20), ("epsilon", "sigma_min", 20)],
)
def test_dpmpp2m_reproduces_dpm_solver_multistep(unet64, prediction, final, steps):
    scheduler = diffusers.DPMSolverMultistepScheduler(
        beta_schedule="linear", algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
        final_sigmas_type=final, prediction_type=prediction,
    )  # fmt: skip
    scheduler.set_timesteps(steps)
    x_T = _x_T()
    x, info = _sdekit(unet64, scheduler, "dpm++2m", x_T)
    assert info.nfe == steps
    assert _relative(x, _diffusers_loop(scheduler, unet64, x_T)) < steps * 2.0**-21
    scheduler.set_timesteps(steps)
    assert _relative(x, _dpm_float64(scheduler, unet64, x_T)) < 1e-12


def test_schedules_sdekit_cannot_match_are_refused():
    ddim = diffusers.DDIMScheduler(timestep_spacing="linspace")
    ddim.set_timesteps(7)  # DDIM steps by N // 7 = 142, its linspace timesteps are 166 apart
    with pytest.raises(AdapterError, match="not to its own timesteps"):
        diffusers_schedule(ddim)
    karras = diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True)
    karras.set_timesteps(10)
    with pytest.raises(AdapterError, match="Karras"):
        diffusers_schedule(karras)
    with pytest.raises(AdapterError, match="set_timesteps"):
        diffusers_schedule(diffusers.DDIMScheduler())


# ---------------------------------------------------------------- the entry points on the adapted model
def test_sample_logp_and_dsm_run_on_the_adapted_model():
    unet = _unet(torch.float32)
    scheduler = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    model, sde = from_diffusers(unet, scheduler)
    gen = torch.Generator().manual_seed(0)
    x, info = sdekit.sample(model, sde, SHAPE, steps=8, parameterization=model.parameterization, generator=gen,
                            return_info=True)  # fmt: skip
    assert x.shape == SHAPE and x.dtype == torch.float32 and bool(torch.isfinite(x).all()) and info.nfe == 8
    data = torch.rand(SHAPE, generator=gen) * 2 - 1
    lp, linfo = sdekit.logp(
        model, sde, data, trace="hutchinson", rtol=1e-3, atol=1e-3, parameterization=model.parameterization,
        generator=gen, return_info=True,
    )  # fmt: skip
    assert lp.shape == (SHAPE[0],) and bool(torch.isfinite(lp).all()) and linfo.nfe > 0
    bpd = sdekit.bits_per_dim(lp.detach(), data)
    assert bool(torch.isfinite(bpd).all())
    loss = sdekit.losses.dsm(model, sde, data, parameterization=model.parameterization, generator=gen)
    loss.backward()
    assert bool(torch.isfinite(loss)) and unet.conv_out.weight.grad is not None


def test_learned_variance_networks_sample_with_the_first_half_of_their_output():
    unet = _unet(torch.float32, out_channels=2 * C)
    scheduler = diffusers.DDPMScheduler(variance_type="learned_range")
    model, sde = from_diffusers(unet, scheduler)
    x = sdekit.sample(model, sde, SHAPE, solver="exp2", steps=4, parameterization=model.parameterization,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert x.shape == SHAPE and bool(torch.isfinite(x).all())
