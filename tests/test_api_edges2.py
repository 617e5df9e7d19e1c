"""Edge cases of the public API found by a second adversarial pass (regression tests).

Focus: ``sdekit.simulate``, user-declared (non-affine, piecewise, zero-noise) SDEs, ``sde.fokker_planck``,
``sdekit.testing`` on SDEs that live on x >= 0, ``sdekit.analytic`` and the ``sdekit derive`` printout.
Each ``xfail(strict=True)`` test pins a confirmed bug: it fails today and must start passing (then drop
the marker) when the fix lands. Every test is seeded, small and exact (no statistical tolerance).
"""

from __future__ import annotations

import re
import warnings

import pytest
import sympy as sp
import torch
from _partial_domain import CIR as _CIR

import sdekit
from sdekit import analytic, testing
from sdekit.errors import NotAffineError, SDEDeclarationError


class _RegimeVol(sdekit.SDE):
    """OU drift with a state-dependent, piecewise-constant volatility (regime switching at x = 0)."""

    s1 = 1.0
    s2 = 2.0

    def drift(self, x, t):
        return -x

    def diffusion(self, x, t):
        return sp.Piecewise((self.s1, x > 0), (self.s2, True))


# --------------------------------------------------------------------------- simulate
@pytest.mark.parametrize(
    "make",
    [lambda: sdekit.SDE.from_expressions("-x", "1", T=0.3), lambda: sdekit.CosineVPSDE()],
    ids=["custom-T0.3", "CosineVPSDE-T0.995"],
)
def test_simulate_accepts_a_float32_linspace_up_to_T(make):
    # T = 0.3 or 0.995 is not a float32 number: float32(T) > T, and simulate raised
    # "ts must lie in [0, T] = [0, 0.995], got [0, 0.995]".
    sde = make()
    ts = torch.linspace(0.0, sde.T, 4)  # float32, the docstring's own idiom
    out = sdekit.simulate(sde, torch.zeros(4, 2), ts, steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 4, 2)


def test_simulate_accepts_a_float64_linspace_up_to_T():
    """Control for the test above (passes today)."""
    sde = sdekit.SDE.from_expressions("-x", "1", T=0.3)
    ts = torch.linspace(0.0, sde.T, 4, dtype=torch.float64)
    out = sdekit.simulate(sde, torch.zeros(4, 2), ts, steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 4, 2)


def test_simulate_rejects_a_brownian_motion_that_ends_before_the_last_time():
    import torchsde

    bm = torchsde.BrownianInterval(t0=0.0, t1=0.5, size=(4, 2), dtype=torch.float64, entropy=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchsde warns at every step past t1 = 0.5 and extrapolates
        with pytest.raises(ValueError, match="bm"):
            x0 = torch.zeros(4, 2, dtype=torch.float64)
            sdekit.simulate(sdekit.OrnsteinUhlenbeck(), x0, [0.0, 1.0], steps=10, bm=bm)


# --------------------------------------------------------------------------- pickling
def test_an_sde_still_pickles_after_it_has_been_used():
    # A fresh SDE pickles (DataLoader workers under spawn, torch.save of a checkpoint dict, multiprocessing);
    # after one drift_fn call it raised PicklingError "Can't pickle <function _compiled ...>".
    import pickle

    sde = sdekit.OrnsteinUhlenbeck()
    x = torch.ones(2, 1, dtype=torch.float64)
    before = pickle.loads(pickle.dumps(sde)).drift_fn(x, 0.5)
    sde.drift_fn(x, 0.5)
    after = pickle.loads(pickle.dumps(sde)).drift_fn(x, 0.5)
    assert torch.equal(before, after)


# --------------------------------------------------------------------------- declarations
@pytest.mark.parametrize(
    "make",
    [
        lambda: sdekit.OrnsteinUhlenbeck(sigma=0),
        lambda: sdekit.SDE.from_expressions("-x", "sigma", sigma=0.0),
        lambda: sdekit.VESDE(sigma_min=1.0, sigma_max=1.0),
    ],
    ids=["ou-sigma0", "from_expressions-sigma0", "ve-equal-sigmas"],
)
def test_zero_diffusion_after_parameter_values_is_a_declaration_error(make):
    # Today these build; sample() then returns exact zeros and losses.dsm returns inf.
    with pytest.raises(SDEDeclarationError, match="zero"):
        make()


def test_piecewise_state_dependent_diffusion_is_not_affine():
    sde = _RegimeVol()
    g = sde.diffusion_fn(torch.tensor([[-1.0], [1.0]]), 0.5).flatten().tolist()
    assert g == [2.0, 1.0]  # the noise does depend on x
    assert not sde.is_affine
    assert sde.noise_type == "diagonal"
    with pytest.raises(NotAffineError):  # today: sympy PolynomialError from the marginal derivation
        sde.marginal


def test_latex_of_a_piecewise_state_dependent_diffusion():
    assert "Piecewise" in _RegimeVol().latex() or r"\begin{cases}" in _RegimeVol().latex()


# --------------------------------------------------------------------------- discretize(times=)
@pytest.mark.parametrize(
    ("n", "times"),
    [(2, [0.0, 1.5, 0.5]), (2, [0.0, 3.0, 4.0]), (5, [0.0, 0.5, 1.0])],
    ids=["decreasing", "past-T", "n-mismatch"],
)
def test_discretize_rejects_invalid_times(n, times):
    # today: a decreasing grid gives scale e^1 > 1 and noise 0; times past T and a wrong n pass silently
    sde = sdekit.OrnsteinUhlenbeck(T=2.0)
    with pytest.raises(ValueError):
        sde.discretize(n, times=torch.tensor(times, dtype=torch.float64))


# --------------------------------------------------------------------------- fokker_planck with user symbols
@pytest.mark.parametrize(
    "density",
    ["exp(-x**2/2)", sp.exp(-(sp.Symbol("x") ** 2) / 2)],
    ids=["string", "plain-Symbol-x"],
)
def test_fokker_planck_accepts_user_spelled_x(density):
    # N(0, 1) is stationary for dx = -x dt + sqrt(2) dW; today x is treated as a constant and the
    # residual comes out as -exp(-x**2/2) (silently wrong).
    ou = sdekit.OrnsteinUhlenbeck()
    assert sp.simplify(ou.subs(ou.fokker_planck(density))) == 0


def test_fokker_planck_with_sdekit_x_is_zero_for_the_stationary_density():
    """Control for the test above (passes today)."""
    ou = sdekit.OrnsteinUhlenbeck()
    assert sp.simplify(ou.subs(ou.fokker_planck(sp.exp(-(sdekit.x**2) / 2)))) == 0


# --------------------------------------------------------------------------- sdekit.testing
def test_assert_fokker_planck_string_density_with_parameter_names():
    # The stationary density of dx = -theta x dt + sigma dW is N(0, sigma^2 / (2 theta)); with the SDE's own
    # symbols the check proves it (below), with the names in a string it raised TypeError ("Cannot convert
    # expression to float") because theta and sigma stay free symbols.
    ou = sdekit.OrnsteinUhlenbeck()
    assert testing.assert_fokker_planck(ou, "exp(-theta*x**2/sigma**2)").passed


def test_assert_fokker_planck_density_with_the_sdes_own_symbols():
    """Control for the test above (passes today)."""
    ou = sdekit.OrnsteinUhlenbeck()
    theta, sigma = ou.symbols["theta"], ou.symbols["sigma"]
    assert testing.assert_fokker_planck(ou, sp.exp(-theta * sdekit.x**2 / sigma**2)).symbolic


def test_assert_reverse_consistent_passes_on_an_sde_defined_for_positive_x():
    # The symbolic identities hold (proved); only the torch grid on x in [-3, 3] hits NaN = NaN -> "differs by nan".
    result = testing.assert_reverse_consistent(_CIR())
    assert result.reverse.passed and result.probability_flow.passed


@pytest.mark.parametrize("bad", ["column", "scalar"])
def test_assert_logp_matches_rejects_exact_values_of_the_wrong_shape(bad):
    sde = sdekit.VPSDE()
    data = analytic.Gaussian(torch.zeros(2, dtype=torch.float64), std=0.5)
    oracle = data.diffuse(sde)
    x = data.sample(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = oracle.log_prob(x, 1e-5)
    exact = exact[:, None] if bad == "column" else exact[0]
    # today: IndexError from inside the failure message (the (4,) - (4, 1) broadcast gives 16 "errors")
    with pytest.raises((ValueError, TypeError), match="shape"):
        testing.assert_logp_matches(oracle, sde, exact, x, solver="rk4", steps=2, prior=oracle.at(sde.T))


def test_assert_samples_match_explains_a_diffused_mixture_argument():
    # today: RuntimeError "Could not infer dtype of DiffusedGaussianMixture" (assert_logp_matches accepts one)
    oracle = analytic.Gaussian(torch.zeros(2), std=1.0).diffuse(sdekit.VPSDE())
    a = oracle.sample(64, 0.5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match=r"\.at\("):
        testing.assert_samples_match(a, oracle)


# --------------------------------------------------------------------------- analytic
def test_mixture_sample_zero_rows():
    mix = analytic.GaussianMixture(means=[[-1.0, 0.0], [1.0, 0.5]], stds=[0.5, 0.3])
    assert mix.sample(0, generator=torch.Generator().manual_seed(0)).shape == (0, 2)


def test_single_component_sample_zero_rows():
    """Control for the test above (passes today): one component skips the multinomial."""
    assert analytic.Gaussian(torch.zeros(2), std=1.0).sample(0).shape == (0, 2)


# --------------------------------------------------------------------------- CLI
def test_derive_score_symbol_does_not_collide_with_a_parameter(capsys):
    from sdekit.cli import main

    assert main(["derive", "--sde", "CosineVPSDE"]) == 0
    out = capsys.readouterr().out
    names = set(re.findall(r"drift\s+\(score (\S+)\)", out))
    assert names, out
    assert not names & set(sdekit.CosineVPSDE().params), (names, out)


def test_simulate_takes_numpy_times():
    import numpy as np

    sde = sdekit.OrnsteinUhlenbeck()
    x0 = torch.zeros(4, 1, dtype=torch.float64)
    a = sdekit.simulate(sde, x0, np.linspace(0.0, 1.0, 5), steps=8, generator=torch.Generator().manual_seed(0))
    b = sdekit.simulate(
        sde, x0, torch.linspace(0.0, 1.0, 5, dtype=torch.float64), steps=8, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(a, b)
