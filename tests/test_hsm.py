"""Hybrid score matching (sdekit.losses.hsm) on CLD with the exact Gaussian-mixture oracle.

At the true score the gradient of the loss with respect to a scale c of the model, s_c = c * score, vanishes in
expectation (the conditional target averages to the marginal velocity score): the per-sample derivative
2 (s_v - target_v) . s_v has mean 0, checked to 5 standard errors at n = 20,000; at c = 0.8 it is clearly negative
(the loss decreases towards c = 1).
"""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit import analytic
from sdekit.errors import SdekitError
from sdekit.losses import hsm

DT = torch.float64


def _setup() -> tuple[analytic.GaussianMixture, sdekit.SDE, object]:
    gm = analytic.GaussianMixture(torch.tensor([[1.0, -1.0], [-1.5, 0.5]]), stds=torch.tensor([0.5, 0.3]))
    sde = sdekit.CLDSDE()
    return gm, sde, gm.diffuse(sde)


def _derivative(c: float) -> tuple[float, float]:
    gm, sde, oracle = _setup()
    n = 20_000
    x0 = gm.sample(n, torch.Generator().manual_seed(0), dtype=DT)
    scale = torch.tensor(c, dtype=DT, requires_grad=True)
    per = hsm(lambda X, t: scale * oracle(X, t), sde, x0, generator=torch.Generator().manual_seed(1),
              reduction="none")  # fmt: skip
    (grad,) = torch.autograd.grad(per.sum(), scale)
    # per-sample derivatives d per_i / dc from three evaluations (each per_i is quadratic in c)
    with torch.no_grad():
        per0 = hsm(lambda X, t: 0 * oracle(X, t), sde, x0, generator=torch.Generator().manual_seed(1),
                   reduction="none")  # fmt: skip
        per1 = hsm(lambda X, t: oracle(X, t), sde, x0, generator=torch.Generator().manual_seed(1), reduction="none")
        per2 = hsm(lambda X, t: 2 * oracle(X, t), sde, x0, generator=torch.Generator().manual_seed(1),
                   reduction="none")  # fmt: skip
    # per(c) = A c^2 + B c + C (quadratic in c): per'(c) = 2 A c + B with A = (per2 - 2 per1 + per0)/2
    A = (per2 - 2 * per1 + per0) / 2
    B = per1 - per0 - A
    d = 2 * A * c + B
    torch.testing.assert_close(d.sum(), grad, rtol=1e-8, atol=1e-6)
    return float(d.mean()), float(d.std() / n**0.5)


def test_gradient_vanishes_at_the_true_score() -> None:
    mean, se = _derivative(1.0)
    assert abs(mean) < 5 * se
    mean, se = _derivative(0.8)
    assert mean < -10 * se


def test_refusals() -> None:
    gm, _, _ = _setup()
    x0 = gm.sample(4, torch.Generator().manual_seed(0), dtype=DT)
    with pytest.raises(SdekitError, match="k-component"):
        hsm(lambda X, t: X, sdekit.VPSDE(), x0)
