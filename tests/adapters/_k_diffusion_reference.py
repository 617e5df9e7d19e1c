r"""k-diffusion's conventions and samplers, transcribed from their formulas (k_diffusion 0.1.1.post1:
``sampling.get_sigmas_karras``, ``get_sigmas_exponential``, ``to_d``, ``sample_euler``, ``sample_heun``,
``sample_dpmpp_2m`` with their defaults (no churn), ``layers.Denoiser`` and ``external.VDenoiser``).

The package itself needs torchvision, which pins another torch than this project's, so the tests compare sdekit
with this transcription; ``test_k_diffusion.py::test_the_transcription_is_k_diffusions`` compares the transcription
with the real package when it is importable (it was checked once, bit for bit, on this machine against the wheel's
``sampling.py``). Schedules are built in ``dtype`` (k-diffusion: float32) so the comparisons can run in float64.
"""

from __future__ import annotations

import math

import torch


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, dtype=torch.float32) -> torch.Tensor:
    r"""Karras et al.'s schedule, then 0 appended (n + 1 values):
    :math:`\sigma_i = (\sigma_{\max}^{1/\rho} + \tfrac{i}{n-1}(\sigma_{\min}^{1/\rho}
    - \sigma_{\max}^{1/\rho}))^\rho`, i < n.
    """
    ramp = torch.linspace(0, 1, n, dtype=dtype)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=dtype)])


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float, dtype=torch.float32) -> torch.Tensor:
    """n noise levels geometric from sigma_max to sigma_min, then 0."""
    sig = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=dtype).exp()
    return torch.cat([sig, torch.zeros(1, dtype=dtype)])


def _expand(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim))


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    r"""The Karras ODE's derivative :math:`dx/d\sigma = (x - D)/\sigma`."""
    return (x - denoised) / _expand(sigma, x)


@torch.no_grad()
def sample_euler(model, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    r"""Euler in sigma: :math:`x \leftarrow x + (\sigma_{i+1} - \sigma_i)\,(x - D(x, \sigma_i))/\sigma_i`."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        d = to_d(x, sigmas[i], model(x, sigmas[i] * ones))
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_heun(model, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Heun in sigma (Karras et al. Algorithm 2 without churn); Euler for the last step to sigma = 0."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        d = to_d(x, sigmas[i], model(x, sigmas[i] * ones))
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * ones))
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    r"""DPM-Solver++(2M) in :math:`t = -\log\sigma`: first order on the first step and on the last (to sigma = 0)."""
    ones = x.new_ones([x.shape[0]])
    old = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        ratio = (-t_next).exp() / (-t).exp()
        if old is None or sigmas[i + 1] == 0:
            x = ratio * x - (-h).expm1() * denoised
        else:
            r = (t - (-sigmas[i - 1].log())) / h
            corrected = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            x = ratio * x - (-h).expm1() * corrected
        old = denoised
    return x


class KarrasDenoiser(torch.nn.Module):
    r"""``layers.Denoiser``: :math:`D = c_{\rm skip} x + c_{\rm out} F(c_{\rm in} x, \sigma)`."""

    def __init__(self, inner_model, sigma_data: float = 1.0):
        super().__init__()
        self.inner_model, self.sigma_data = inner_model, sigma_data

    def get_scalings(self, sigma):
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2) ** 0.5
        c_in = 1 / (sigma**2 + sd2) ** 0.5
        return c_skip, c_out, c_in

    def forward(self, x, sigma, **kwargs):
        c_skip, c_out, c_in = (_expand(c, x) for c in self.get_scalings(sigma))
        return self.inner_model(x * c_in, sigma, **kwargs) * c_out + x * c_skip


class VDenoiser(torch.nn.Module):
    r"""``external.VDenoiser``: v-prediction, F receives :math:`\tfrac2\pi\arctan\sigma`."""

    def __init__(self, inner_model):
        super().__init__()
        self.inner_model = inner_model

    def forward(self, x, sigma, **kwargs):
        c_skip = _expand(1 / (sigma**2 + 1), x)
        c_out = _expand(-sigma / (sigma**2 + 1) ** 0.5, x)
        c_in = _expand(1 / (sigma**2 + 1) ** 0.5, x)
        return self.inner_model(x * c_in, sigma.atan() / math.pi * 2, **kwargs) * c_out + x * c_skip
