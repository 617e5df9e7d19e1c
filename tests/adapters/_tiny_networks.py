"""A tiny randomly initialised convolutional network conditioned on a scalar per sample, for the adapter tests.

``TinyNet(channels)(x, cond)``: conv 3x3 -> SiLU + an embedding of ``cond`` -> conv 3x3, output shaped like x.
``cond`` is whatever the library passes (k-diffusion's sigma, score_sde's labels: 999 t, a noise level or an integer
index); it enters through smooth features of ``log(1 + |cond|)``, so every value is finite. Weights are drawn from a
fixed seed without touching the global generator.
"""

from __future__ import annotations

import torch


class TinyNet(torch.nn.Module):
    def __init__(self, channels: int = 3, width: int = 8, seed: int = 0, scale: float = 1.0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv_in = torch.nn.Conv2d(channels, width, 3, padding=1)
            self.embed = torch.nn.Linear(3, width)
            self.conv_out = torch.nn.Conv2d(width, channels, 3, padding=1)
        self.scale = scale

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = torch.log1p(cond.to(x.dtype).abs()).reshape(-1, 1)
        feats = torch.cat([c, torch.sin(c), torch.cos(2 * c)], dim=1)
        h = torch.nn.functional.silu(self.conv_in(x) + self.embed(feats)[:, :, None, None])
        return self.scale * self.conv_out(h)


class WrongShape(torch.nn.Module):
    """Returns one channel whatever x has: the mistake the adapters' probe must catch."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.w * x[:, :1]
