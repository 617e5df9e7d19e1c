r"""Seeded random draws that follow the data's device while the generator may live on another.

Every random number in sdekit is drawn through these functions. torch raises when a generator's
device differs from the device of the draw (``torch.randn(..., generator=<cpu generator>,
device="cuda")`` fails), and users usually seed a CPU ``torch.Generator``. So the draw is made on
the generator's device and moved to the target device: a CPU generator works with CUDA data, and
the same seed gives the same numbers on every device (the GPU then pays one host-to-device copy per
draw; pass a generator on the data's device to draw in place). Without a generator the draw is made
on the target device from torch's default generator for that device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["multinomial", "rand", "randint", "randn"]


def _source(generator: torch.Generator | None, device: torch.device | str | None) -> tuple[torch.device, torch.device]:
    target = torch.device(device) if device is not None else torch.device("cpu")
    return (generator.device if generator is not None else target), target


def _moved(z: torch.Tensor, source: torch.device, target: torch.device) -> torch.Tensor:
    return z if source == target else z.to(target)


def _floating(draw: Callable[..., torch.Tensor], what: str) -> Callable[..., torch.Tensor]:
    def sampler(
        shape: Sequence[int],
        *,
        generator: torch.Generator | None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        source, target = _source(generator, device)
        return _moved(draw(tuple(shape), generator=generator, dtype=dtype, device=source), source, target)

    sampler.__name__ = sampler.__qualname__ = draw.__name__
    sampler.__doc__ = f"{what} draws of ``shape`` on ``device`` (drawn on the generator's device)."
    return sampler


randn = _floating(torch.randn, "Standard normal")
rand = _floating(torch.rand, "Uniform [0, 1)")


def randint(
    low: int,
    high: int,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Integers uniform in [low, high) of ``shape`` on ``device`` (drawn on the generator's device)."""
    source, target = _source(generator, device)
    return _moved(torch.randint(low, high, tuple(shape), generator=generator, device=source), source, target)


def multinomial(
    probs: torch.Tensor, n: int, *, generator: torch.Generator | None, device: torch.device | str | None = None
) -> torch.Tensor:
    """``n`` indices drawn with replacement from ``probs`` (1-D), on ``device`` (default: ``probs``' device)."""
    source, target = _source(generator, probs.device if device is None else device)
    idx = torch.multinomial(probs.to(source), n, replacement=True, generator=generator)
    return _moved(idx, source, target)
