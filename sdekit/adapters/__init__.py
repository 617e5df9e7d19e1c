"""Pretrained networks from other diffusion libraries as sdekit models: each adapter returns ``(model, sde)``, a
callable ``model(x, t)`` whose ``parameterization`` attribute says what it predicts and an :class:`sdekit.SDE` whose
marginal matches the network's training noise levels. No optional dependency is imported here.
"""

from ._diffusers import DiffusersModel, diffusers_alphas_cumprod, diffusers_schedule, diffusers_sde, from_diffusers
from ._k_diffusion import KDiffusionModel, from_k_diffusion
from ._score_sde import ScoreSDEModel, from_score_sde

__all__ = [
    "DiffusersModel",
    "KDiffusionModel",
    "ScoreSDEModel",
    "diffusers_alphas_cumprod",
    "diffusers_schedule",
    "diffusers_sde",
    "from_diffusers",
    "from_k_diffusion",
    "from_score_sde",
]
