"""The light fixed-step Brownian motion of the torchsde solvers (:mod:`sdekit.solvers._brownian`)."""

from __future__ import annotations

import math

import torch

from sdekit.solvers._brownian import FixedStepBrownian

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_fixed_step_brownian_law() -> None:
    """W ~ N(0, h), U = int_0^h W ds: Var U = h^3/3, Cov(W, U) = h^2/2 (4 SE at n = 400k; fresh seed fails ~1e-4)."""
    n, h = 400_000, 0.3
    bm = FixedStepBrownian((n, 1), F64, "cpu", _gen(0), levy_area=True)
    w, u = bm(0.1, 0.1 + h, return_U=True)
    w, u = w.flatten(), u.flatten()
    assert abs(float(w.var()) - h) < 4 * h * math.sqrt(2 / n)
    assert abs(float(u.var()) - h**3 / 3) < 4 * h**3 / 3 * math.sqrt(2 / n)
    cov = float((w * u).mean())
    # Var(W U) = E[W^2 U^2] - (h^2/2)^2 = h * h^3/3 + 2 (h^2/2)^2 - h^4/4 = h^4 (1/3 + 1/4)
    assert abs(cov - h**2 / 2) < 4 * math.sqrt(h**4 * (1 / 3 + 1 / 4) / n)
    w2 = bm(torch.tensor(0.0, dtype=F64), torch.tensor(h, dtype=F64))
    assert w2.shape == (n, 1) and not torch.equal(w2.flatten(), w)
