"""The argument checks shared by every entry point (:mod:`sdekit._checks`), seen through the entry points."""

from __future__ import annotations

import pytest
import torch
from _mixtures import small_mixture as _mixture

import sdekit
from sdekit import losses


# --------------------------------------------------------------------------- generator=
def _dsm(generator):
    sde = sdekit.VPSDE()
    return losses.dsm(_mixture().diffuse(sde), sde, torch.zeros(4, 2), generator=generator)


def _bound(generator):
    sde = sdekit.VPSDE()
    return losses.likelihood_bound(_mixture().diffuse(sde), sde, torch.zeros(4, 2), generator=generator)


def _langevin(generator):
    return sdekit.langevin(lambda x: -x, torch.zeros(4, 2), 0.1, 2, generator=generator)


def _dequantize(generator):
    return sdekit.dequantize(torch.tensor([1, 2]), generator=generator)


@pytest.mark.parametrize(
    "call", [_dsm, _bound, _langevin, _dequantize], ids=["dsm", "likelihood_bound", "langevin", "dequantize"]
)
def test_generator_must_be_a_torch_generator(call):
    with pytest.raises(TypeError, match="generator"):
        call(0)
