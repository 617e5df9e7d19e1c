r"""The demo's network: an MLP on Fourier features of time, preconditioned by the SDE's own marginal."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..parameterization import marginal_coefficients

__all__ = ["FourierMLP", "ScoreNet"]


class FourierMLP(nn.Module):
    r"""MLP on ``(x, sin(u w_k), cos(u w_k))`` with :math:`w_k = \pi 2^k / 2`, k < ``n_freq``: 3 hidden SiLU layers.

    ``u`` is a scalar time input per sample (shape (batch,), (batch, 1) or a scalar): the raw t, or
    :class:`ScoreNet`'s normalised log-SNR. The output has ``dim`` features, like ``x``.
    """

    def __init__(self, dim: int, width: int = 128, n_freq: int = 8) -> None:
        super().__init__()
        self.register_buffer("freq", math.pi * 2.0 ** torch.arange(n_freq, dtype=torch.float32) / 2)
        self.net = nn.Sequential(
            nn.Linear(dim + 2 * n_freq, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, dim),
        )

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The network at ``x`` (batch, dim) and time input ``u``."""
        angles = u.reshape(-1, 1).to(x.dtype).expand(x.shape[0], 1) * self.freq.to(x.dtype)
        return self.net(torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=1))


class ScoreNet(nn.Module):
    r"""Noise-prediction MLP preconditioned by the SDE's own marginal (nothing per SDE).

    With :math:`(\alpha, m, \sigma^2)` = ``sde.marginal`` at t, data mean :math:`\bar\mu` and per-coordinate
    variance :math:`s_d^2`:

    .. math::
        \hat\varepsilon(x, t) = \mathrm{MLP}\Big(\frac{x - \alpha\bar\mu - m}{\sqrt{\alpha^2 s_d^2 + \sigma^2}},\
        \phi(u)\Big),\qquad u = \frac{\lambda(t) - \lambda(\epsilon)}{\lambda(T) - \lambda(\epsilon)},\quad
        \lambda = \log\frac{\sigma}{\alpha},

    where :math:`\phi` are Fourier features (:class:`FourierMLP`). The scaled input has unit variance at every t
    and u runs over [0, 1] for any affine SDE (VP, VE, EDM, ...), so one network and one learning rate fit all
    of them.
    """

    def __init__(self, sde: Any, eps: float, data_mean: torch.Tensor, data_var: float, width: int = 128) -> None:
        super().__init__()
        self._coeffs = marginal_coefficients
        self.sde = sde
        d = data_mean.numel()
        self.register_buffer("data_mean", data_mean.reshape(1, d).to(torch.float32))
        self.data_var = float(data_var)
        ends = torch.tensor([eps, float(sde.T)], dtype=torch.float64)
        alpha, _, sigma2 = marginal_coefficients(sde, ends, ends[:, None])
        lam = 0.5 * torch.log(sigma2.reshape(-1)) - torch.log(alpha.reshape(-1))
        self.lam0, self.lam_span = float(lam[0]), float(lam[1] - lam[0])
        self.mlp = FourierMLP(d, width, n_freq=6)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise, shaped like ``x`` (t: shape (batch,) or a scalar)."""
        alpha, m, sigma2 = self._coeffs(self.sde, t, x)
        x_in = (x - alpha * self.data_mean.to(x.dtype) - m) * torch.rsqrt(alpha * alpha * self.data_var + sigma2)
        lam = 0.5 * torch.log(sigma2) - torch.log(alpha)
        return self.mlp(x_in, (lam - self.lam0) / self.lam_span)
