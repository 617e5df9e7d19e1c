r"""Hybrid score matching (Dockhorn, Vahdat & Kreis, ICLR 2022, section 3.2) for k-component SDEs such as CLD.

The data components of :math:`X_0` are the data; the others are *marginalised* over their initial law
:math:`N(0, C_0)` instead of being sampled, so the perturbation kernel given the data alone,
:math:`p(X_t \mid x_0) = N(\Phi X_0 + m, \Sigma + \Phi C_0 \Phi^\top)` (``marginal.sample(..., given="data")``), is
the regression target's law. Only the score with respect to the non-data components (CLD's velocity) is learnt,
because only it enters the reverse SDE and the PF-ODE when :math:`GG^\top` acts on them alone:

.. math:: L_{\rm HSM} = E_{t \sim U[\epsilon, T]}\,E_{x_0}\,E_{X_t \mid x_0}
          \big\|s_\theta(X_t, t)_{\rm v} - \nabla_{v}\log p(X_t \mid x_0)\big\|^2 .

Its minimiser is :math:`\nabla_v \log p_t` (the conditional target averages to the marginal score), and its
gradient with respect to any model parameter vanishes in expectation at the true score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import _random
from ._checks import check_choice, check_eps, check_generator, check_sde
from .errors import SdekitError

__all__ = ["hsm"]


def hsm(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sde: Any,
    x0: torch.Tensor,
    t: torch.Tensor | None = None,
    *,
    eps: float | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Hybrid score-matching loss (module docstring) of a full-score ``model(X, t)`` on a k-component affine SDE.

    Args:
        model: returns the score of every component, ``(batch, k, *event_shape)``; only the non-data components
            enter the loss (the others may be zeros).
        sde: a k-component affine SDE with non-data components (e.g. :class:`sdekit.CLDSDE`).
        x0: data ``(batch, *event_shape)`` (one data component) or ``(batch, n_data, *event_shape)``.
        t: times ``(batch,)`` in [eps, T]; default uniform draws from ``generator``.
        eps: lower end of the time range (default ``sde.default_eps``).
        generator: for the times and the perturbation.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-sample losses, shape (batch,)).

    Returns:
        the loss (weight 1: the squared error summed over the non-data entries).
    """
    sde = check_sde(sde)
    check_generator(generator)
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    if sde.components is None:
        raise SdekitError("hsm is for k-component SDEs (e.g. sdekit.CLDSDE); for a scalar SDE use sdekit.losses.dsm")
    marginal = sde.marginal
    other = [i for i in range(marginal.k) if i not in marginal.data_index]
    if not other:
        raise SdekitError(
            f"hsm learns the score of the non-data components, but every component of {sde!r} is data "
            f"(data_components = {sde.data_components}); use a declaration with data_components"
        )
    eps = check_eps(sde.default_eps if eps is None else eps, float(sde.T))
    X0 = marginal.lift(x0)
    b = X0.shape[0]
    if t is None:
        u = _random.rand((b,), generator=generator, dtype=X0.dtype, device=X0.device)
        t = eps + (float(sde.T) - eps) * u
    Xt = marginal.sample(X0, t, generator=generator, given="data")
    target = marginal.score(Xt, X0, t, given="data")[:, other]
    out = model(Xt, t)
    if not isinstance(out, torch.Tensor) or out.shape != Xt.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SdekitError(f"model(X, t) must return the full score shaped like X {tuple(Xt.shape)}, got {got}")
    per = ((out[:, other] - target) ** 2).reshape(b, -1).sum(1)
    return per.mean() if reduction == "mean" else per.sum() if reduction == "sum" else per
