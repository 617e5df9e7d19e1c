r"""The digits demo's network: a small time-conditioned convolutional U-Net predicting the noise, for any
(batch, C, H, W) and any affine SDE (its scalings come from ``sde.marginal``)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..parameterization import marginal_coefficients

__all__ = ["DigitsNet", "TimeEmbedding", "FiLMBlock"]


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 channels per group (at least one group)."""
    return max(1, channels // 8)


class TimeEmbedding(nn.Module):
    r"""Fourier features :math:`(\sin(\pi 2^k u/2), \cos(\pi 2^k u/2))_{k < n}` of a scalar u per sample, then a
    two-layer SiLU MLP: the embedding (batch, ``dim``) that every block reads."""

    def __init__(self, dim: int, n_freq: int = 8) -> None:
        super().__init__()
        self.register_buffer("freq", math.pi * 2.0 ** torch.arange(n_freq, dtype=torch.float32) / 2)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """The embedding of ``u`` (shape (batch,))."""
        angles = u.reshape(-1, 1) * self.freq.to(u.dtype)
        return self.mlp(torch.cat([torch.sin(angles), torch.cos(angles)], dim=1))


class FiLMBlock(nn.Module):
    r"""Residual block :math:`h + \mathrm{conv}(\phi(\mathrm{GN}(\mathrm{FiLM}(\mathrm{conv}(\phi(\mathrm{GN}(h)))))))`,
    :math:`\phi` = SiLU, with the time embedding applied as FiLM, :math:`(1 + \gamma(e))\,h + \beta(e)`, per channel."""

    def __init__(self, channels: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * channels)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The block at feature map ``h`` (batch, channels, H, W) and time embedding ``emb`` (batch, emb_dim)."""
        y = self.conv1(F.silu(self.norm1(h)))
        gamma, beta = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        y = y * (1 + gamma) + beta
        return h + self.conv2(F.silu(self.norm2(y)))


class DigitsNet(nn.Module):
    r"""Noise prediction :math:`\hat\varepsilon(x, t)` for images of shape (batch, C, H, W), any C, H, W.

    Preconditioned by the SDE's own marginal (nothing per SDE), as :class:`sdekit.demo.ScoreNet`: with
    :math:`(\alpha, m, \sigma^2)` = ``sde.marginal`` at t, per-pixel data mean :math:`\bar\mu` and mean per-pixel
    variance :math:`s_d^2`, the network sees

    .. math::
        \frac{x - \alpha\bar\mu - m}{\sqrt{\alpha^2 s_d^2 + \sigma^2}}\quad\text{and}\quad
        u = \frac{\lambda(t) - \lambda(\epsilon)}{\lambda(T) - \lambda(\epsilon)},\quad
        \lambda = \log\frac{\sigma}{\alpha},

    (unit-variance input and u in [0, 1] for VP, VE, EDM, ...). The U-Net: a 3x3 stem to ``channels``, a
    :class:`FiLMBlock` at full resolution, a stride-2 convolution to ``2 * channels``, a block at half resolution,
    nearest upsampling back to the skip's size (so odd H, W work too), a 3x3 convolution, the skip added, a block,
    and a zero-initialised 3x3 head (GroupNorm, SiLU) to C channels. The time embedding
    (:class:`TimeEmbedding` of u) enters every block by FiLM. Every operation is per sample (GroupNorm, no batch
    statistics), so the divergence in :func:`sdekit.logp` is per sample. For C = 1: 101,825 parameters with
    ``channels=24`` (the full run), 51,201 with 16 (``--quick``).
    """

    def __init__(
        self,
        sde: Any,
        eps: float,
        data_mean: torch.Tensor,
        data_var: float,
        channels: int = 32,
        emb_dim: int = 64,
    ) -> None:
        super().__init__()
        self._coeffs = marginal_coefficients
        self.sde = sde
        c_in = data_mean.shape[0]
        self.register_buffer("data_mean", data_mean.to(torch.float32)[None])  # (1, C, H, W)
        self.data_var = float(data_var)
        ends = torch.tensor([eps, float(sde.T)], dtype=torch.float64)
        alpha, _, sigma2 = marginal_coefficients(sde, ends, ends[:, None])
        lam = 0.5 * torch.log(sigma2.reshape(-1)) - torch.log(alpha.reshape(-1))
        self.lam0, self.lam_span = float(lam[0]), float(lam[1] - lam[0])
        c, c2 = channels, 2 * channels
        self.embed = TimeEmbedding(emb_dim)
        self.stem = nn.Conv2d(c_in, c, 3, padding=1)
        self.block1 = FiLMBlock(c, emb_dim)
        self.down = nn.Conv2d(c, c2, 3, stride=2, padding=1)
        self.block2 = FiLMBlock(c2, emb_dim)
        self.up = nn.Conv2d(c2, c, 3, padding=1)
        self.block3 = FiLMBlock(c, emb_dim)
        self.head_norm = nn.GroupNorm(_groups(c), c)
        self.head = nn.Conv2d(c, c_in, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise, shaped like ``x`` (batch, C, H, W); ``t`` of shape (batch,) or a scalar."""
        alpha, m, sigma2 = self._coeffs(self.sde, t, x)
        h = (x - alpha * self.data_mean.to(x.dtype) - m) * torch.rsqrt(alpha * alpha * self.data_var + sigma2)
        lam = 0.5 * torch.log(sigma2) - torch.log(alpha)
        u = ((lam - self.lam0) / self.lam_span).reshape(-1).expand(x.shape[0])
        emb = self.embed(u)
        h = self.stem(h)
        skip = self.block1(h, emb)
        h = self.block2(self.down(skip), emb)
        h = self.up(F.interpolate(h, size=skip.shape[-2:], mode="nearest")) + skip
        h = self.block3(h, emb)
        return self.head(F.silu(self.head_norm(h)))
