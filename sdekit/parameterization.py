r"""Model parameterizations and their conversions, derived from ``sde.marginal``.

With :math:`x_t = \alpha(t) x_0 + m(t) + \sigma(t)\,\varepsilon`, a model may predict

* ``"score"``: :math:`s = \nabla_x \log p_t(x)`;
* ``"eps"``: the noise, :math:`s = -\hat\varepsilon / \sigma`;
* ``"x0"`` / ``"denoiser"`` (EDM's name): the clean data,
  :math:`s = (\alpha \hat x_0 + m - x) / \sigma^2`;
* ``"v"``: :math:`v = \alpha\,\varepsilon - \sigma\,x_0` (Salimans & Ho), so
  :math:`\hat\varepsilon = (\sigma (x - m) + \alpha v) / (\alpha^2 + \sigma^2)`.

Every solver, likelihood and loss goes through this one module. Conversions are exact
(no clamping) and need an affine SDE (a Gaussian marginal); ``"score"`` works for any SDE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .symbolic.sde import SDE

__all__ = ["PARAMETERIZATIONS", "check_parameterization", "to_score", "from_score", "convert", "score_fn", "as_model"]

PARAMETERIZATIONS: tuple[str, ...] = ("score", "eps", "x0", "v", "denoiser")
"""The names accepted by every ``parameterization=`` argument."""

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_parameterization(name: str) -> str:
    """Return ``name`` if it is a known parameterization, else raise ``ValueError`` listing them."""
    if name not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {name!r}; choose one of {', '.join(PARAMETERIZATIONS)}")
    return name


def _coeffs(sde: SDE, x: torch.Tensor, t: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    k = sde.marginal.at(t, x)
    return k.alpha, k.offset, k.sigma


def to_score(out: torch.Tensor, x: torch.Tensor, t: Any, sde: SDE, parameterization: str) -> torch.Tensor:
    """Convert a model output in ``parameterization`` to the score at (x, t)."""
    if parameterization == "score":
        return out
    alpha, m, sigma = _coeffs(sde, x, t)
    if parameterization == "eps":
        return -out / sigma
    if parameterization in ("x0", "denoiser"):
        return (alpha * out + m - x) / sigma**2
    if parameterization == "v":
        eps = (sigma * (x - m) + alpha * out) / (alpha**2 + sigma**2)
        return -eps / sigma
    raise ValueError(check_parameterization(parameterization))


def from_score(score: torch.Tensor, x: torch.Tensor, t: Any, sde: SDE, parameterization: str) -> torch.Tensor:
    """Convert a score at (x, t) to what a ``parameterization`` model would output."""
    if parameterization == "score":
        return score
    alpha, m, sigma = _coeffs(sde, x, t)
    eps = -sigma * score
    x0 = (x - m + sigma**2 * score) / alpha
    if parameterization == "eps":
        return eps
    if parameterization in ("x0", "denoiser"):
        return x0
    if parameterization == "v":
        return alpha * eps - sigma * x0
    raise ValueError(check_parameterization(parameterization))


def convert(out: torch.Tensor, x: torch.Tensor, t: Any, sde: SDE, from_: str, to: str) -> torch.Tensor:
    """Convert a model output from one parameterization to another."""
    if from_ == to:
        return out
    return from_score(to_score(out, x, t, sde, from_), x, t, sde, to)


def score_fn(model: Model, sde: SDE, parameterization: str = "score") -> Model:
    """Wrap ``model(x, t)`` predicting ``parameterization`` into a score function ``score(x, t)``."""
    check_parameterization(parameterization)
    if parameterization == "score":
        return model

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return to_score(model(x, t), x, t, sde, parameterization)

    return score


def as_model(score: Model, sde: SDE, parameterization: str) -> Model:
    """Wrap a score function into a model that predicts ``parameterization``."""
    check_parameterization(parameterization)
    if parameterization == "score":
        return score

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return from_score(score(x, t), x, t, sde, parameterization)

    return model
