r"""Model parameterizations and their conversions, derived from ``sde.marginal``.

With :math:`x_t = \alpha(t) x_0 + m(t) + \sigma(t)\,\varepsilon`, :math:`\varepsilon \sim N(0, I)`,
a model may predict

* ``"score"``: :math:`s = \nabla_x \log p_t(x)`;
* ``"eps"``: the noise, :math:`\hat\varepsilon = E[\varepsilon \mid x_t = x] = -\sigma s`,
  so :math:`s = -\hat\varepsilon / \sigma`;
* ``"x0"`` / ``"denoiser"`` (EDM's name): the clean data (Tweedie),
  :math:`\hat x_0 = E[x_0 \mid x_t = x] = (x - m + \sigma^2 s)/\alpha`, so
  :math:`s = (\alpha \hat x_0 + m - x) / \sigma^2`;
* ``"v"``: :math:`v = \alpha\,\hat\varepsilon - \sigma\,\hat x_0` (Salimans & Ho), so
  :math:`\hat\varepsilon = (\sigma (x - m) + \alpha v) / (\alpha^2 + \sigma^2)`.

Every solver, likelihood and loss goes through this one module. Conversions are exact
(no clamping) and need an affine SDE (a Gaussian marginal); ``"score"`` works for any SDE.
The coefficients :math:`\alpha, m, \sigma` are evaluated in float64 (when the device has it)
and then cast to the dtype of ``x``, so float32 models get correctly rounded coefficients
even at tiny t, where a float32 evaluation of e.g. :math:`\sigma^2 = 1 - \alpha^2` loses digits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .symbolic.sde import SDE

__all__ = [
    "PARAMETERIZATIONS",
    "check_parameterization",
    "model_parameterization",
    "marginal_coefficients",
    "to_score",
    "from_score",
    "convert",
    "score_fn",
    "as_model",
]

PARAMETERIZATIONS: tuple[str, ...] = ("score", "eps", "x0", "v", "denoiser")
"""The names accepted by every ``parameterization=`` argument."""

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_parameterization(name: str) -> str:
    """Return ``name`` if it is a known parameterization, else raise ``ValueError`` listing them."""
    if name not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {name!r}; choose one of {', '.join(PARAMETERIZATIONS)}")
    return name


def model_parameterization(model: Any, given: str | None) -> str:
    """What ``model`` predicts: ``given`` (checked), else the model's declared ``parameterization`` attribute (the
    adapters' models of :mod:`sdekit.adapters` declare one), else ``"score"``. A ``given`` value that contradicts
    the model's declaration raises ``ValueError`` (a model predicting eps read as a score samples garbage)."""
    declared = getattr(model, "parameterization", None)
    if declared is not None and not isinstance(declared, str):
        declared = None  # an unrelated attribute of that name (e.g. a method): not a declaration
    if given is None:
        return check_parameterization(declared or "score")
    check_parameterization(given)
    if declared is not None and declared != given:
        raise ValueError(
            f"parameterization={given!r} contradicts the model's declared parameterization {declared!r} (its "
            f"'parameterization' attribute); drop parameterization= or pass {declared!r}"
        )
    return given


def _wide_dtype(like: torch.Tensor) -> torch.dtype:
    """float64 unless the device lacks it (Apple MPS), then ``like``'s own dtype."""
    return like.dtype if like.device.type == "mps" else torch.float64


def marginal_coefficients(sde: SDE, t: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Marginal coefficients :math:`(\alpha(t), m(t), \sigma(t)^2)` shaped to broadcast against ``like``.

    ``t`` is a number, a 0-d tensor or a tensor with one entry per row of ``like`` (shape (batch,)
    or anything with ``batch`` entries); the result has ``like``'s dtype and device and shape
    ``(batch, 1, ..., 1)`` (or 0-d for a scalar t). Evaluated in float64 and then cast.
    """
    wide = _wide_dtype(like)
    if isinstance(t, torch.Tensor):
        tt = t.to(device=like.device, dtype=wide)
    else:
        tt = torch.as_tensor(t, dtype=wide, device=like.device)
    if tt.ndim > 0 and tt.numel() == 1:
        tt = tt.reshape(())
    if tt.ndim > 0:
        batch = like.shape[0] if like.ndim > 0 else None
        if tt.numel() != batch:
            raise ValueError(
                f"t has {tt.numel()} entries but x has batch size {batch}; pass one time per sample "
                f"(shape (batch,)) or a single time"
            )
        tt = tt.reshape((tt.numel(),) + (1,) * (like.ndim - 1))
    marg = sde.marginal
    return tuple(v.to(like.dtype) for v in (marg.alpha(tt), marg.offset(tt), marg.sigma2(tt)))  # type: ignore[return-value]


def _coeffs(sde: SDE, x: torch.Tensor, t: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    alpha, m, sigma2 = marginal_coefficients(sde, t, x)
    return alpha, m, torch.sqrt(sigma2)


def to_score(out: torch.Tensor, x: torch.Tensor, t: Any, sde: SDE, parameterization: str) -> torch.Tensor:
    r"""Convert a model output in ``parameterization`` to the score at (x, t).

    .. math::
        s = -\frac{\hat\varepsilon}{\sigma}, \qquad
        s = \frac{\alpha \hat x_0 + m - x}{\sigma^2}, \qquad
        s = -\frac{\sigma (x - m) + \alpha v}{\sigma (\alpha^2 + \sigma^2)}.
    """
    if parameterization == "score":
        return out
    check_parameterization(parameterization)
    alpha, m, sigma = _coeffs(sde, x, t)
    if parameterization == "eps":
        return -out / sigma
    if parameterization in ("x0", "denoiser"):
        return (alpha * out + m - x) / sigma**2
    # "v"
    eps = (sigma * (x - m) + alpha * out) / (alpha**2 + sigma**2)
    return -eps / sigma


def from_score(score: torch.Tensor, x: torch.Tensor, t: Any, sde: SDE, parameterization: str) -> torch.Tensor:
    r"""Convert a score at (x, t) to what a ``parameterization`` model would output.

    .. math::
        \hat\varepsilon = -\sigma s, \qquad
        \hat x_0 = \frac{x - m + \sigma^2 s}{\alpha}, \qquad
        v = \alpha\hat\varepsilon - \sigma \hat x_0.
    """
    if parameterization == "score":
        return score
    check_parameterization(parameterization)
    alpha, m, sigma = _coeffs(sde, x, t)
    if parameterization == "eps":
        return -sigma * score
    x0 = (x - m + sigma**2 * score) / alpha
    if parameterization in ("x0", "denoiser"):
        return x0
    # "v"
    return -alpha * sigma * score - sigma * x0


def convert(out: torch.Tensor, x: torch.Tensor, t: Any, sde: SDE, from_: str, to: str) -> torch.Tensor:
    """Convert a model output from one parameterization to another (through the score)."""
    check_parameterization(from_)
    check_parameterization(to)
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
    """Wrap a score function into a model that predicts ``parameterization`` (the inverse of :func:`score_fn`)."""
    check_parameterization(parameterization)
    if parameterization == "score":
        return score

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return from_score(score(x, t), x, t, sde, parameterization)

    return model
