"""The small two-component 2-D Gaussian mixture that the edge-case tests of sample, logp, the solvers, the losses
and the argument checks diffuse as an exact oracle (tests/solvers/, tests/likelihood/test_logp.py,
tests/test_losses.py, tests/test_sample.py, tests/test_checks.py)."""

from __future__ import annotations

import torch

from sdekit import analytic


def small_mixture(dtype=torch.float32):
    return analytic.GaussianMixture(
        means=torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=dtype), stds=torch.tensor([0.5, 0.3], dtype=dtype)
    )
