"""sdekit._random: draws follow the data's device while the generator may live on another device.

There is no GPU here, so the cross-device path is exercised with the ``meta`` device: a CPU generator
drawing for ``device="meta"`` must be consumed (its state advances by exactly one draw of that size)
and the result must be on ``meta``. On CPU the draws must equal torch's own with the same seed.
"""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit import _random, _traces


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "draw, plain",
    [
        (
            lambda g, dev: _random.randn((5, 3), generator=g, dtype=torch.float64, device=dev),
            lambda g: torch.randn(5, 3, generator=g, dtype=torch.float64),
        ),
        (
            lambda g, dev: _random.rand((7,), generator=g, dtype=torch.float32, device=dev),
            lambda g: torch.rand(7, generator=g, dtype=torch.float32),
        ),
        (
            lambda g, dev: _random.randint(0, 2, (4, 4), generator=g, device=dev),
            lambda g: torch.randint(0, 2, (4, 4), generator=g),
        ),
    ],
)
def test_same_numbers_as_torch_on_cpu_and_generator_consumed_for_another_device(draw, plain):
    assert torch.equal(draw(_gen(), "cpu"), plain(_gen()))
    g = _gen()
    out = draw(g, "meta")
    assert out.device.type == "meta"
    reference = _gen()
    plain(reference)  # one draw of the same size
    assert torch.equal(g.get_state(), reference.get_state())


def test_multinomial_follows_probs_device():
    probs = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    idx = _random.multinomial(probs, 10, generator=_gen(1))
    assert torch.equal(idx, torch.multinomial(probs, 10, replacement=True, generator=_gen(1)))
    g = _gen(1)
    out = _random.multinomial(probs, 10, generator=g, device="meta")
    assert out.device.type == "meta"
    reference = _gen(1)
    torch.multinomial(probs, 10, replacement=True, generator=reference)
    assert torch.equal(g.get_state(), reference.get_state())


def test_without_generator_draws_on_target_device():
    assert _random.randn((2,), generator=None, device="meta").device.type == "meta"
    assert _random.randn((2,), generator=None).device.type == "cpu"


def test_public_entry_points_accept_a_cpu_generator_for_other_devices():
    """The prior sampler and the Hutchinson probes of logp go through _random (a CPU generator, meta data)."""
    sde = sdekit.VPSDE()
    z = sde.prior.sample((4, 2), generator=_gen(), device="meta", dtype=torch.float32)
    assert z.device.type == "meta" and z.shape == (4, 2)
    probes = _traces.draw_probes("rademacher", 2, torch.empty(3, 5, device="meta"), _gen())
    assert probes.device.type == "meta" and probes.shape == (2, 3, 5)
