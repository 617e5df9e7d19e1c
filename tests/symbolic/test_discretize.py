"""Discretizations of the derived marginals (``sde.discretize``): VP betas and VE noise levels vs exact answers,
the numbers the Discretization docstring quotes, and invalid time grids."""

from __future__ import annotations

import math

import pytest
import torch

import sdekit

F64 = torch.float64


# ---------------------------------------------------------------- discretization
def test_vp_betas_approach_beta_t_over_n_and_compose():
    sde = sdekit.VPSDE()
    errs = []
    for n in (100, 200, 400, 800):
        d = sde.discretize(n)
        beta_t = 0.1 + d.times[:-1] * 19.9
        errs.append((d.betas - beta_t / n).abs().max().item())
        # Exact composition: product of scales = alpha(T); propagated variance = sigma(T)^2.
        assert torch.prod(d.scale).item() == pytest.approx(sde.marginal.alpha(1.0).item(), rel=1e-10)
        var = torch.zeros((), dtype=F64)
        for a, c in zip(d.scale, d.noise):
            var = a**2 * var + c**2
        assert var.item() == pytest.approx(sde.marginal.sigma2(1.0).item(), rel=1e-10)
    ratios = [errs[i] / errs[i + 1] for i in range(len(errs) - 1)]
    # O(1/n^2): halving the step divides the error by ~4.
    assert all(3.5 < r < 4.5 for r in ratios), (errs, ratios)


def test_ve_discretization_adds_the_marginal_variance_differences():
    sde = sdekit.VESDE()
    d = sde.discretize(10)
    sig2 = sde.marginal.sigma2(d.times)
    assert torch.allclose(d.noise**2, sig2[1:] - sig2[:-1], rtol=1e-12)
    assert torch.all(d.scale == 1) and torch.all(d.shift == 0)


def _doc_number(x: float, digits: int) -> str:
    """x as the Discretization docstring writes it: 1.0994e-4 (no zero-padded exponent)."""
    return f"{x:.{digits}e}".replace("e-0", "e-")


def test_vp_betas_are_the_exact_transitions_not_ddpm_table():
    # Discretization's docstring: betas_i = 1 - exp(-int_{t_i}^{t_{i+1}} beta), alpha-bar_i = alpha(t_{i+1})^2, and
    # DDPM's linspace(1e-4, 0.02, 1000) is beta(i/999)/1000, a different table; the numbers it quotes are these.
    n = 1000
    d = sdekit.VPSDE().discretize(n)
    t = d.times

    def integral(a, b):  # int_a^b beta(s) ds for beta(s) = 0.1 + 19.9 s, closed form
        return 0.1 * (b - a) + 19.9 * (b**2 - a**2) / 2

    # 1 - a^2 with beta ~ 1e-4 loses 4 of float64's 16 digits: relative round-off ~1e-12, bound 1e-10
    assert torch.allclose(d.betas, -torch.expm1(-integral(t[:-1], t[1:])), rtol=1e-10, atol=0)
    abar = torch.cumprod(1 - d.betas, 0)
    assert torch.allclose(abar, torch.exp(-integral(0.0, t[1:])), rtol=1e-10, atol=0)
    ddpm = torch.linspace(1e-4, 0.02, n, dtype=F64)
    assert torch.allclose(ddpm, (0.1 + 19.9 * torch.arange(n, dtype=F64) / (n - 1)) / n, rtol=1e-12)
    ddpm_abar = torch.cumprod(1 - ddpm, 0)
    rel_beta = (d.betas - ddpm).abs() / ddpm
    rel_abar = (abar - ddpm_abar).abs() / ddpm_abar
    # the largest beta difference is the first step's: the integral over [0, 1/n] against beta(0)/n
    first = -math.expm1(-integral(0.0, 1 / n)) / 1e-4 - 1
    assert int(rel_beta.argmax()) == 0 and rel_beta.max().item() == pytest.approx(first, rel=1e-9)
    assert int(rel_abar.argmax()) == n - 1  # the differences compound: largest at the last step
    doc = sdekit.Discretization.__doc__
    assert f"up to {100 * first:.1f}% per beta" in doc
    assert f"the first, {_doc_number(d.betas[0].item(), 4)} against 1e-4" in doc
    assert f"the last by {100 * rel_beta[-1].item():.1f}%" in doc
    assert f"up to {100 * rel_abar.max().item():.1f}% in" in doc
    assert f"{_doc_number(abar[-1].item(), 4)} against {_doc_number(ddpm_abar[-1].item(), 4)}" in doc


def test_ve_discretization_starts_from_the_data_not_at_sigma_min():
    # Discretization's docstring: each step adds the difference of the geometric table sigma(t)^2, but the chain
    # starts from the data (variance 0), not from SMLD's smallest level sigma_min; its numbers are these.
    smin, smax, n = 0.01, 50.0, 1000
    d = sdekit.VESDE().discretize(n)
    sigma = smin * (smax / smin) ** d.times
    assert torch.allclose(d.noise**2, sigma[1:] ** 2 - sigma[:-1] ** 2, rtol=1e-10, atol=0)
    assert torch.allclose(torch.cumsum(d.noise**2, 0), sigma[1:] ** 2 - smin**2, rtol=1e-10, atol=0)
    first = smin * math.sqrt((smax / smin) ** (2 / n) - 1)
    assert d.noise[0].item() == pytest.approx(first, rel=1e-10)
    assert first < smin  # the first step is not SMLD's sigma_min
    doc = sdekit.Discretization.__doc__
    assert f"{_doc_number(first, 3)} for n = 1000" in doc
    assert f"{smin / first:.1f} times below sigma_min" in doc


# ---------------------------------------------------------------- discretize(times=)
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
