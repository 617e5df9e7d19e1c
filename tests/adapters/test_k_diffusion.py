"""sdekit.adapters.from_k_diffusion: k-diffusion's samplers reproduced to round-off, the t <-> sigma map, the entry
points on images, and the configuration errors.

The reference is ``_k_diffusion_reference`` (k-diffusion 0.1.1.post1's formulas; the package needs torchvision and
another torch, see that module). Tolerances: float64 round-off. A sampler run is ~n steps of O(1) operations on
states of size <= 80 (sigma_max), so differences of ~80 * 2.2e-16 * n are round-off; measured max |difference| over
the runs below: 7.5e-15 (float64), 8.3e-7 (float32); the bound used is 1e-12 (float64) and 1e-5 (float32, ~80 ulps
of the O(1) result, 1e-6 measured).
"""

from __future__ import annotations

import math

import _k_diffusion_reference as K
import pytest
import torch
from _tiny_networks import TinyNet, WrongShape

import sdekit
from sdekit.adapters import KDiffusionModel, from_k_diffusion
from sdekit.errors import AdapterError, ModelOutputError

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
SHAPE = (3, 8, 8)


def _denoiser(wrapper: str, dtype=torch.float64) -> torch.nn.Module:
    net = TinyNet(SHAPE[0]).to(dtype)
    return K.KarrasDenoiser(net, sigma_data=0.5) if wrapper == "karras" else K.VDenoiser(net)


def _x_T(dtype=torch.float64, batch: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return SIGMA_MAX * torch.randn((batch, *SHAPE), generator=gen, dtype=dtype)


def _sdekit(model, sde, x_T, solver, steps, **options):
    return sdekit.sample(
        model, sde, x_T.shape, solver=solver, steps=steps, x_T=x_T, parameterization=model.parameterization,
        return_info=True, **options,
    )  # fmt: skip


# (k-diffusion sampler, sdekit solver, steps for n sigmas, model calls for n sigmas, options)
EXPONENTIAL = [
    (K.sample_euler, "exp1", lambda n: n, lambda n: n, {}),
    (K.sample_dpmpp_2m, "dpm++2m", lambda n: n, lambda n: n, {"lower_order_final": False}),
]
IN_SIGMA = [  # Runge-Kutta in t, which is sigma for EDM only
    (K.sample_euler, "ode:euler", lambda n: n - 1, lambda n: n, {}),
    (K.sample_heun, "ode:heun2", lambda n: n - 1, lambda n: 2 * n - 1, {}),
]
SCHEDULES = [(K.karras_sigmas, "edm"), (K.exponential_sigmas, "logsnr")]


@pytest.mark.parametrize("wrapper", ["karras", "v"])
@pytest.mark.parametrize(("schedule", "grid"), SCHEDULES, ids=["karras", "exponential"])
@pytest.mark.parametrize(("reference", "solver", "steps", "nfe", "options"), EXPONENTIAL + IN_SIGMA,
                         ids=["euler=exp1", "dpmpp_2m=dpm++2m", "euler=ode:euler", "heun=ode:heun2"])  # fmt: skip
def test_edm_reproduces_k_diffusion_samplers(wrapper, schedule, grid, reference, solver, steps, nfe, options):
    # sdekit's time is sigma on EDMSDE: its grids "edm" (rho = 7) and "logsnr" are get_sigmas_karras and
    # get_sigmas_exponential, and the final denoising step is k-diffusion's last step to sigma = 0
    denoiser = _denoiser(wrapper)
    model, sde = from_k_diffusion(denoiser, SIGMA_MIN, SIGMA_MAX, shape=SHAPE)
    x_T, n = _x_T(), 10
    want = reference(denoiser, x_T, schedule(n, SIGMA_MIN, SIGMA_MAX, dtype=torch.float64))
    got, info = _sdekit(model, sde, x_T, solver, steps(n), grid=grid, **options)
    assert info.nfe == nfe(n)
    assert (got - want).abs().max() <= 1e-12, (got - want).abs().max()


@pytest.mark.parametrize(("reference", "solver", "steps", "nfe", "options"), EXPONENTIAL, ids=["euler", "dpmpp_2m"])
@pytest.mark.parametrize(("schedule", "grid"), SCHEDULES, ids=["karras", "exponential"])
def test_ve_reproduces_k_diffusion_with_exponential_integrators(reference, solver, steps, nfe, options, schedule, grid):
    # the exponential integrators see only the noise levels of the grid, so on VESDE (another t <-> sigma map) they
    # still reproduce k-diffusion; Runge-Kutta in t would not (t is not sigma there)
    denoiser = _denoiser("karras")
    model, sde = from_k_diffusion(denoiser, SIGMA_MIN, SIGMA_MAX, sde="ve", shape=SHAPE)
    x_T, n = _x_T(), 12
    want = reference(denoiser, x_T, schedule(n, SIGMA_MIN, SIGMA_MAX, dtype=torch.float64))
    got, info = _sdekit(model, sde, x_T, solver, steps(n), grid=grid, **options)
    assert info.nfe == nfe(n)
    assert (got - want).abs().max() <= 1e-12, (got - want).abs().max()


def test_float32_reproduces_k_diffusion_to_float32_round_off():
    denoiser = _denoiser("karras", torch.float32)
    model, sde = from_k_diffusion(denoiser, SIGMA_MIN, SIGMA_MAX)
    x_T = _x_T(torch.float32)
    want = K.sample_euler(denoiser, x_T, K.karras_sigmas(10, SIGMA_MIN, SIGMA_MAX))  # k-diffusion's float32 schedule
    got, _ = _sdekit(model, sde, x_T, "exp1", 10, grid="edm")
    assert got.dtype == torch.float32
    assert (got - want).abs().max() <= 1e-5, (got - want).abs().max()


@pytest.mark.parametrize("kind", ["edm", "ve"])
def test_the_model_calls_the_denoiser_at_the_marginal_noise_level(kind):
    seen = []

    def denoiser(x, sigma):
        seen.append(sigma)
        return torch.zeros_like(x)

    model, sde = from_k_diffusion(denoiser, SIGMA_MIN, SIGMA_MAX, sde=kind)
    t = torch.tensor([sde.default_eps, 0.3 * sde.T, sde.T], dtype=torch.float64)
    x = torch.ones(3, *SHAPE, dtype=torch.float64)
    model(x, t)
    if kind == "edm":  # sigma(t) = t on [sigma_min, sigma_max]
        want = t
        assert (sde.default_eps, sde.T) == (SIGMA_MIN, SIGMA_MAX)
    else:  # VESDE's exact marginal std (test-side closed form), reaching sigma_min at eps and sigma_max at T
        ratio = SIGMA_MAX / SIGMA_MIN
        want = SIGMA_MIN * torch.sqrt(ratio ** (2 * t) - 1)
        assert sde.default_eps == pytest.approx(math.log(2) / (2 * math.log(ratio)), rel=1e-12)
        assert sde.T == pytest.approx(math.log1p(ratio**2) / (2 * math.log(ratio)), rel=1e-12)
    assert torch.allclose(seen[0], want, rtol=1e-12, atol=0)
    assert torch.allclose(model.sigma(t, x), want, rtol=1e-12, atol=0)
    assert seen[0].shape == (3,) and seen[0].dtype == torch.float64


def test_extra_args_reach_the_denoiser_and_a_scalar_time_is_expanded():
    calls = []

    def denoiser(x, sigma, *, cond):
        calls.append((sigma.shape, cond))
        return x * 0

    model, _ = from_k_diffusion(denoiser, SIGMA_MIN, SIGMA_MAX, extra_args={"cond": 7})
    model(torch.zeros(2, *SHAPE), torch.tensor(1.0))
    assert calls == [((2,), 7)]


# --------------------------------------------------------------------------- the entry points on images
@pytest.fixture(scope="module")
def adapted():
    model, sde = from_k_diffusion(_denoiser("karras", torch.float32), SIGMA_MIN, SIGMA_MAX, shape=SHAPE)
    return model, sde


def test_sample_on_images(adapted):
    model, sde = adapted
    gen = torch.Generator().manual_seed(0)
    x, info = sdekit.sample(
        model, sde, (5, *SHAPE), steps=8, parameterization=model.parameterization, generator=gen, return_info=True
    )
    assert x.shape == (5, *SHAPE) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert info.nfe == 8


def test_logp_and_bits_per_dim_on_images(adapted):
    model, sde = adapted
    gen = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (3, *SHAPE), generator=gen)
    x = sdekit.dequantize(levels, generator=gen, dtype=torch.float32)
    with torch.no_grad():
        lp, info = sdekit.logp(
            model, sde, x, eps=sde.default_eps, trace="hutchinson", rtol=1e-3, atol=1e-3, generator=gen,
            parameterization=model.parameterization, return_info=True,
        )  # fmt: skip
    bpd = sdekit.bits_per_dim(lp, x)
    assert lp.shape == (3,) and torch.isfinite(lp).all() and torch.isfinite(bpd).all()
    assert info.nfe > 0


def test_dsm_trains_the_network(adapted):
    model, sde = adapted
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand((4, *SHAPE), generator=gen) * 2 - 1
    model.zero_grad()
    loss = sdekit.losses.dsm(model, sde, x0, parameterization=model.parameterization, generator=gen)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_the_adapter_is_a_module_holding_the_denoiser():
    denoiser = _denoiser("karras", torch.float32)
    model, _ = from_k_diffusion(denoiser, torch.tensor(SIGMA_MIN), torch.tensor(SIGMA_MAX))  # 0-d tensors accepted
    assert isinstance(model, KDiffusionModel) and model.network is denoiser
    assert {id(p) for p in model.parameters()} == {id(p) for p in denoiser.parameters()}
    assert model.parameterization == "denoiser"


# --------------------------------------------------------------------------- configuration errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"denoiser": "net"}, "denoiser must be a callable"),
        ({"sigma_min": 80.0, "sigma_max": 80.0}, "sigma_min must be smaller than sigma_max"),
        ({"sigma_min": 1.0, "sigma_max": 0.5}, "sigma_min must be smaller than sigma_max"),
        ({"sigma_min": -1.0}, "sigma_min must be a positive finite number"),
        ({"sigma_max": float("inf")}, "sigma_max must be a positive finite number"),
        ({"sde": "vp"}, "sde must be one of 'edm', 've'"),
        ({"shape": 3}, "shape must be the event shape"),
        ({"shape": (3, 0, 8)}, "shape must be the event shape"),
        ({"extra_args": [1]}, "extra_args must be a mapping"),
    ],
)
def test_bad_configuration_is_named(kwargs, match):
    args = {"denoiser": _denoiser("karras", torch.float32), "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, **kwargs}
    with pytest.raises(AdapterError, match=match):
        from_k_diffusion(args.pop("denoiser"), args.pop("sigma_min"), args.pop("sigma_max"), **args)


def test_a_wrong_output_shape_is_found_by_the_probe():
    with pytest.raises(ModelOutputError, match=r"from_k_diffusion.*shape=\(3, 8, 8\).*\(2, 1, 8, 8\)"):
        from_k_diffusion(WrongShape(), SIGMA_MIN, SIGMA_MAX, shape=SHAPE)


def test_non_finite_output_is_found_by_the_probe():
    with pytest.raises(ModelOutputError, match="non-finite"):
        from_k_diffusion(lambda x, sigma: x / 0 * 0, SIGMA_MIN, SIGMA_MAX, shape=SHAPE)


# --------------------------------------------------------------------------- the transcription itself
def test_the_transcription_is_k_diffusions():
    # runs where k-diffusion is installed (it needs torchvision); checked once by hand against the 0.1.1.post1 wheel
    kd = pytest.importorskip("k_diffusion")
    for ours, theirs in (
        (K.karras_sigmas, kd.sampling.get_sigmas_karras),
        (K.exponential_sigmas, kd.sampling.get_sigmas_exponential),
    ):
        assert torch.equal(ours(10, SIGMA_MIN, SIGMA_MAX), theirs(10, SIGMA_MIN, SIGMA_MAX))
    net = TinyNet(SHAPE[0]).double()
    sigma = torch.tensor([0.01, 0.5, 3.0, 80.0], dtype=torch.float64)
    x, sigmas = _x_T(), K.karras_sigmas(10, SIGMA_MIN, SIGMA_MAX, dtype=torch.float64)
    pairs = ((K.KarrasDenoiser(net, 0.5), kd.layers.Denoiser(net, 0.5)), (K.VDenoiser(net), kd.external.VDenoiser(net)))
    for ours, theirs in pairs:
        assert torch.allclose(ours(x, sigma), theirs(x, sigma), rtol=1e-15, atol=0)
    denoiser = pairs[0][0]
    for name in ("euler", "heun", "dpmpp_2m"):
        want = getattr(kd.sampling, f"sample_{name}")(denoiser, x, sigmas, disable=True)
        assert torch.allclose(getattr(K, f"sample_{name}")(denoiser, x, sigmas), want, rtol=0, atol=1e-13)
