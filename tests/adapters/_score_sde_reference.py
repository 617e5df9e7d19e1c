r"""score_sde_pytorch's conventions, transcribed from their formulas (``yang-song/score_sde_pytorch``:
``sde_lib.VPSDE`` / ``subVPSDE`` / ``VESDE`` ``marginal_prob`` and discrete tables, ``models/utils.get_score_fn``).

``get_score_fn(name, model, continuous=..., **params)(x, t)`` returns the score at score_sde's time t, exactly as the
original: VP / sub-VP divide the network output by minus the marginal std (the DDPM table's for discrete VP), VE
returns it unchanged, with the labels the original passes. ``dtype`` is that of the discrete tables (the original
builds them in float32; the tests use float64 to compare to round-off).
"""

from __future__ import annotations

import math

import torch


def _log_mean_coeff(t, beta_min, beta_max):
    return -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min


def vp_std(t, beta_min=0.1, beta_max=20.0):
    r"""``VPSDE.marginal_prob``'s std: :math:`\sqrt{1 - e^{2\ell(t)}}`."""
    return torch.sqrt(1.0 - torch.exp(2.0 * _log_mean_coeff(t, beta_min, beta_max)))


def subvp_std(t, beta_min=0.1, beta_max=20.0):
    r"""``subVPSDE.marginal_prob``'s std: :math:`1 - e^{2\ell(t)}`."""
    return 1 - torch.exp(2.0 * _log_mean_coeff(t, beta_min, beta_max))


def ve_std(t, sigma_min=0.01, sigma_max=50.0):
    r"""``VESDE.marginal_prob``'s std: :math:`\sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t`."""
    return sigma_min * (sigma_max / sigma_min) ** t


def vp_sqrt_1m_alphas_cumprod(beta_min=0.1, beta_max=20.0, N=1000, dtype=torch.float32):
    """``VPSDE.sqrt_1m_alphas_cumprod``: DDPM's table from ``linspace(beta_min / N, beta_max / N, N)``."""
    betas = torch.linspace(beta_min / N, beta_max / N, N, dtype=dtype)
    return torch.sqrt(1.0 - torch.cumprod(1.0 - betas, dim=0))


def get_score_fn(name, model, continuous=False, N=1000, dtype=torch.float32, **params):
    """``models/utils.get_score_fn(sde, model, train=False, continuous)`` for ``sde`` = sde_lib's ``name``."""
    if name in ("vpsde", "subvpsde"):
        beta_min, beta_max = params.get("beta_min", 0.1), params.get("beta_max", 20.0)

        def score_fn(x, t):
            if continuous or name == "subvpsde":
                labels = t * 999
                score = model(x, labels)
                std = (vp_std if name == "vpsde" else subvp_std)(t, beta_min, beta_max)
            else:
                labels = t * (N - 1)
                score = model(x, labels)
                std = vp_sqrt_1m_alphas_cumprod(beta_min, beta_max, N, dtype).to(labels.device)[labels.long()]
            return -score / std[:, None, None, None]

        return score_fn
    sigma_min, sigma_max = params.get("sigma_min", 0.01), params.get("sigma_max", 50.0)

    def ve_score_fn(x, t):
        if continuous:
            labels = ve_std(t, sigma_min, sigma_max)
        else:
            labels = (1 - t) * (N - 1)
            labels = torch.round(labels).long()
        return model(x, labels)

    return ve_score_fn


def ve_time_of_std(sigma, sigma_min=0.01, sigma_max=50.0):
    r"""score_sde's VE time t' with ``ve_std(t') = sigma``:
    :math:`\ln(\sigma/\sigma_{\min})/\ln(\sigma_{\max}/\sigma_{\min})`."""
    return torch.log(sigma / sigma_min) / math.log(sigma_max / sigma_min)
