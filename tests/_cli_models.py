"""Importable models for ``sdekit logp --model _cli_models:...`` (tests/test_logp_cli.py).

``model`` is the exact score of the 2-D mixture of tests/_mixtures.py diffused by :data:`SDE`, so log p of the
command can be compared with the exact log-density (``EXACT.log_prob(x, eps)``). :data:`SDE` is VP with
beta_max = 40: alpha(T)^2 = exp(-20.1) ~ 1.9e-9, so the default prior N(0, I) is p_T up to ~1e-4 nats (mixture
means of size ~1 times alpha(T) ~ 4e-5).

The stall hook makes the SIGKILL test deterministic without timing: with ``SDEKIT_TEST_STALL_DIR`` set, a call
of ``model`` blocks for ever once that directory holds ``SDEKIT_TEST_STALL_AFTER`` chunk files, i.e. at the
first model call of the chunk after them; the test then kills the process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from _mixtures import small_mixture

import sdekit

SDE = sdekit.VPSDE(beta_max=40)
MIXTURE = small_mixture(torch.float64)
EXACT = MIXTURE.diffuse(SDE)
NOT_CALLABLE = 3


def _stall() -> None:
    directory = os.environ.get("SDEKIT_TEST_STALL_DIR")
    if directory is None:
        return
    after = int(os.environ["SDEKIT_TEST_STALL_AFTER"])
    while len(list(Path(directory).glob("chunk-*.npy"))) >= after:
        time.sleep(0.05)


def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact score of the diffused mixture (with the test's stall hook)."""
    _stall()
    return EXACT(x, t)


def make_model():
    """A zero-argument factory returning :func:`model`."""
    return model


class Net(torch.nn.Module):
    """An ``nn.Module`` whose forward is the exact score plus ``scale`` (a buffer, 0) times x."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.zeros(()))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert not self.training, "sdekit logp puts an nn.Module in eval mode"
        return EXACT(x, t) + self.scale * x


NET = Net()


def broken_factory():
    raise RuntimeError("no weights found")


def wrong_shape(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return x[:, :1]


def nan_far(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact score, NaN on rows with a coordinate beyond 50 (a model that fails on some data)."""
    out = EXACT(x, t)
    return torch.where((x.abs() > 50).any(dim=-1, keepdim=True), torch.nan, out)
