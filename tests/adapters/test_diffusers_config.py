"""sdekit.adapters' diffusers config reading, without diffusers installed: the beta tables against their closed
forms, the errors for configs that do not fit, and that the package never imports diffusers.

The tables of diffusers itself are compared in test_diffusers.py (which needs diffusers)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import sdekit
from sdekit.adapters import diffusers_alphas_cumprod, diffusers_sde, from_diffusers
from sdekit.errors import AdapterError

BASE = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "prediction_type": "epsilon"}


def test_the_adapters_import_without_diffusers():
    code = (
        "import sys; sys.modules['diffusers'] = None\n"
        "import sdekit.adapters as a\n"
        "print(float(a.diffusers_alphas_cumprod({'num_train_timesteps': 10, 'beta_schedule': 'linear', "
        "'beta_start': 0.1, 'beta_end': 0.2})[-1]))\n"
        "assert sys.modules['diffusers'] is None\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert math.isclose(float(run.stdout), float(np.prod(1 - np.linspace(0.1, 0.2, 10))), rel_tol=1e-6)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
def test_tables_match_their_closed_forms_to_float32_round_off(schedule):
    n = 1000
    ab = diffusers_alphas_cumprod({**BASE, "beta_schedule": schedule}).numpy()
    lo, hi = BASE["beta_start"], BASE["beta_end"]
    if schedule == "linear":
        betas = np.linspace(lo, hi, n)
    elif schedule == "scaled_linear":
        betas = np.linspace(lo**0.5, hi**0.5, n) ** 2
    elif schedule == "sigmoid":
        betas = 1 / (1 + np.exp(-np.linspace(-6, 6, n))) * (hi - lo) + lo
    else:
        f = np.cos((np.arange(n + 1) / n + 0.008) / 1.008 * np.pi / 2) ** 2
        betas = np.minimum(1 - f[1:] / f[:-1], 0.999)
    want = np.cumprod(1 - betas)
    # float32 betas (relative 2^-24 each) and a float32 product of 1000 factors: relative error <~ 1000 * 2^-24
    # on the product in the worst case (measured ~1e-5 on the smallest entries of the cosine table)
    assert np.max(np.abs(ab / want - 1)) < 1000 * 2.0**-24


def test_trained_betas_and_the_sde_of_a_config():
    betas = np.random.default_rng(0).uniform(1e-4, 0.05, 200)
    ab = diffusers_alphas_cumprod({"trained_betas": betas.tolist(), "num_train_timesteps": 200})
    assert torch.equal(ab, torch.cumprod(1 - torch.tensor(betas, dtype=torch.float32), 0).double())
    sde = diffusers_sde({"trained_betas": betas.tolist(), "num_train_timesteps": 200})
    assert isinstance(sde, sdekit.DiscreteVPSDE) and sde.T == 200
    t = torch.arange(1.0, 201.0, dtype=torch.float64)
    assert torch.allclose(sde.marginal.alpha(t) ** 2, ab, rtol=1e-14, atol=0)  # float64 round-off


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({**BASE, "beta_schedule": "quadratic"}, "unknown beta_schedule 'quadratic'; accepted: 'linear'"),
        ({**BASE, "beta_schedule": "linear", "prediction_type": "flow"}, "unsupported prediction_type 'flow'"),
        ({"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_end": 0.02, "prediction_type": "epsilon"},
         "no 'beta_start'"),
        ({**BASE, "beta_schedule": "linear", "prediction_type": None}, "no 'prediction_type'.*'epsilon'"),
        ({"_class_name": "KarrasVeScheduler", "sigma_min": 0.02, "sigma_max": 100, "prediction_type": "epsilon"},
         "KarrasVeScheduler is a sigma-parameterised scheduler.*from_k_diffusion"),
        ({"_class_name": "EDMEulerScheduler", "sigma_data": 0.5}, "EDMEulerScheduler is a sigma"),
        ({**BASE, "beta_schedule": "linear", "rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
        ({**BASE, "beta_schedule": "linear", "num_train_timesteps": 1}, "num_train_timesteps must be an integer"),
        ({**BASE, "beta_schedule": "linear", "beta_end": 1.5}, "does not declare an SDE"),
    ],
)  # fmt: skip
def test_configs_that_do_not_fit_are_adapter_errors(config, match):
    with pytest.raises(AdapterError, match=match):
        from_diffusers(lambda x, t: x, config)


def test_the_network_must_be_callable_and_the_scheduler_a_config():
    with pytest.raises(AdapterError, match="callable"):
        from_diffusers(object(), {**BASE, "beta_schedule": "linear"})
    with pytest.raises(AdapterError, match="config dict"):
        from_diffusers(lambda x, t: x, 42)


@pytest.mark.parametrize(("kind", "name"), [("epsilon", "eps"), ("v_prediction", "v"), ("sample", "x0")])
def test_prediction_types_map_to_parameterizations_and_times_to_timesteps(kind, name):
    seen = []

    def network(x, timestep):
        seen.append(timestep)
        return x * 0.5

    model, sde = from_diffusers(network, {**BASE, "beta_schedule": "linear", "prediction_type": kind})
    assert model.parameterization == name and sde.T == 1000
    x = torch.ones(3, 2, 4, 4)
    out = model(x, torch.tensor([1.0, 500.0, 1000.0]))
    assert torch.equal(out, x * 0.5) and seen[-1].tolist() == [0.0, 499.0, 999.0] and seen[-1].dtype == torch.float32
    model(x, 250.5)
    assert seen[-1].tolist() == [249.5] * 3


def test_learned_variance_keeps_the_first_half_of_the_channels():
    model, _ = from_diffusers(
        lambda x, t: torch.cat([x, -x], dim=1), {**BASE, "beta_schedule": "linear", "variance_type": "learned_range"}
    )
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(model(x, torch.tensor([3.0, 4.0])), x)
