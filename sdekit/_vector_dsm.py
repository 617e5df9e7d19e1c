r"""Denoising score matching (:func:`sdekit.losses.dsm`) on affine k-component SDEs such as CLD.

Kernel given the whole initial state (``given="state"``, default). The data components of :math:`X_0` are the data
(``marginal.lift(x0)``), the others are *drawn* from their initial law :math:`N(0, C_0)`
(``sde.initial_covariance()``; CLD: :math:`v_0 \sim N(0, \gamma M)`), and

.. math:: X_t = \Phi X_0 + m + L z,\qquad \Sigma = LL^\top\ (\text{Cholesky}),\qquad z \sim N(0, I),

.. math:: \nabla_{X_t}\log p(X_t \mid X_0) = -\Sigma^{-1}(X_t - \Phi X_0 - m) = -L^{-\top} z

on all k components. ``given="data"`` instead marginalises the non-data components of :math:`X_0` (the kernel of
:func:`~sdekit.losses.hsm`): :math:`\Sigma` is replaced by :math:`S = \Sigma + \Phi C_0\Phi^\top`
(``marginal.cov(t, given="data")``) and nothing is drawn for them. Both conditionals average to the marginal score
:math:`\nabla\log p_t`, so both losses are minimised by it. The per-sample loss, with the importance weight w of
the time draw, is :math:`\tfrac12 w\,(s_\theta - \text{target})^\top W (s_\theta - \text{target})` summed over event
positions, with the weighting matrix

* ``"none"``: :math:`W = I`;
* ``"sigma2"``: :math:`W = \Sigma` (the kernel covariance): :math:`\|L^\top(s_\theta - \text{target})\|^2
  = \|L^\top s_\theta + z\|^2`, the eps-prediction loss :math:`\|\hat\varepsilon - z\|^2` of a model
  :math:`\hat\varepsilon = -L^\top s_\theta`; for k = 1 it is :math:`\|\sigma s_\theta + z\|^2`;
* ``"likelihood"``: :math:`W = D = GG^\top`: :math:`\|G^\top(s_\theta - \text{target})\|^2`, the generalisation of
  :math:`g^2`. With ``given="state"`` it is the model-dependent term of the bound (Girsanov with matrix diffusion)
  on the cross-entropy of the *joint* law of the full state at :math:`\epsilon`; only the components that
  :math:`D` reaches (CLD: the velocity) enter, which are exactly the score entries the reverse SDE uses.

Likelihood bound (:func:`sdekit.losses.likelihood_bound`). For the joint law :math:`p_t` of the full state
(:math:`X_0`: data in the data components, the others from :math:`N(0, C_0)`), d event positions, the model's
reverse SDE :math:`dX = [f - Ds_\theta]dt + G\,d\bar W` from :math:`X_T \sim \pi` with time-:math:`\epsilon`
law :math:`q_\epsilon`: Girsanov (the two reverse drifts differ by :math:`D(s_\theta - \nabla\log p_t)`, in the
range of G, so a singular D is fine), the entropy identity :math:`\tfrac{d}{dt}H(p_t) = E[\nabla\cdot f] +
\tfrac12 E\|\nabla\log p_t\|_D^2` (Fokker–Planck with state-free D, integrated by parts) and Vincent's identity
with the kernel given the whole initial state give

.. math:: E_{p_\epsilon}[-\log q_\epsilon] \le E\Big[-\log\pi(X_T) + \frac12\int_\epsilon^T
          \big(\|s_\theta - \nabla\log p(X_t\mid X_0)\|_D^2 - \|\nabla\log p(X_t\mid X_0)\|_D^2
          - 2\nabla\cdot f\big)dt\Big],

with equality for :math:`s_\theta = \nabla\log p_t` and :math:`\pi = p_T` (then :math:`q_\epsilon =
p_\epsilon` and the right side is the entropy :math:`H(p_\epsilon)`). The first integral is
``dsm(weighting="likelihood", given="state")``; the others are exact constants:
:math:`E\|\nabla\log p(X_t\mid X_0)\|_D^2 = d\,\operatorname{tr}(\Sigma^{-1}D)` and
:math:`\nabla\cdot f = d\operatorname{tr}A`, and from :math:`\Sigma' = A\Sigma + \Sigma A^\top + D`,
:math:`(\log\det\Sigma)' = 2\operatorname{tr}A + \operatorname{tr}(\Sigma^{-1}D)` and
:math:`(\log\det\Phi)' = \operatorname{tr}A` (Liouville). So with the generalised log-SNR
:math:`\lambda(t) = 2\log|\det\Phi| - \log\det\Sigma` (k = 1: :math:`\log(\alpha^2/\sigma^2)`),
:math:`\operatorname{tr}(\Sigma^{-1}D) = -\lambda'` plays the part of :math:`g^2/\sigma^2` (the importance
density of ``time_sampling="likelihood"``) and the constant terms sum to
:math:`-\tfrac d2[\lambda(\epsilon) - \lambda(T)] - d[\log|\det\Phi(T)| - \log|\det\Phi(\epsilon)|]
= -\tfrac d2\log\frac{\det\Sigma(T)}{\det\Sigma(\epsilon)}`, the scalar formula with :math:`\alpha \to
|\det\Phi|`, :math:`\mathrm{SNR} \to e^\lambda`. The bound is on the joint law of all components; for CLD the
data alone satisfy :math:`E[-\log q^x_\epsilon(x)] \le \text{bound} - E_x H(p_\epsilon(v \mid x))`, which tends
to the bound minus :math:`\tfrac d2\log(2\pi e\gamma M)` as :math:`\epsilon \to 0`.

All three weightings have bounded per-sample variance only for ``"sigma2"``: the target :math:`-L^{-\top}z` is of
size :math:`\Sigma^{-1/2}`, and CLD's :math:`\Sigma_{xx}` vanishes like :math:`t^3` (noise reaches x only through
v), so ``"none"`` is dominated by small times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from . import _random
from ._checks import check_model_output
from ._vector_marginal import _apply, psd_sqrt
from .errors import SdekitError

if TYPE_CHECKING:  # pragma: no cover
    from .symbolic.sde import SDE

__all__ = ["GIVEN", "draw_at_T", "log_det_alpha", "log_det_snr", "trace_density", "vector_dsm"]

GIVEN: tuple[str, ...] = ("state", "data")
"""What the DSM kernel of a k-component SDE is conditioned on: the whole initial state, or its data components."""


def _event_sum(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1).sum(1)


def lift_data(sde: SDE, x0: torch.Tensor) -> torch.Tensor:
    """``x0`` (data of the data components) placed in a zero full state ``(batch, k, *event_shape)``."""
    marginal = sde.marginal
    n_data = len(marginal.data_index)
    if n_data == marginal.k:
        if x0.ndim < 2 or x0.shape[1] != marginal.k:
            raise ValueError(
                f"every component of {sde!r} is data: x0 must be the full state (batch, {marginal.k}, *event_shape), "
                f"got shape {tuple(x0.shape)}"
            )
        return x0
    if n_data > 1 and (x0.ndim < 2 or x0.shape[1] != n_data):
        raise ValueError(
            f"{sde!r} has {n_data} data components {sde.data_components}: x0 must have shape (batch, {n_data}, "
            f"*event_shape), got {tuple(x0.shape)}"
        )
    return marginal.lift(x0)


def _cholesky(cov: torch.Tensor, tt: torch.Tensor, given: str) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        bad = float(tt[(info != 0).nonzero()[0, 0]])
        raise SdekitError(
            f"the kernel covariance (given={given!r}) is singular at t = {bad:g}: some combination of components "
            f"receives no noise (directly or through the drift) by then, so the kernel has no score there; pass "
            f"larger times (eps=) or an SDE whose noise reaches every component"
        )
    return L


def vector_dsm(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sde: SDE,
    x0: torch.Tensor,
    tt: torch.Tensor,
    w: torch.Tensor,
    *,
    weighting: str,
    given: str,
    noise: torch.Tensor | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    r"""Per-sample DSM losses (batch,) of a full-score ``model(X, t)`` (module docstring); ``tt`` float64 times and
    ``w`` their importance weights, drawn or checked by :func:`sdekit.losses.dsm`."""
    marginal = sde.marginal
    X0 = lift_data(sde, x0)
    k = marginal.k
    C0 = marginal.initial_cov
    if given == "state" and bool((C0 != 0).any()):  # draw the non-data components from N(0, C0)
        z0 = _random.randn(tuple(X0.shape), generator=generator, dtype=X0.dtype, device=X0.device)
        L0 = psd_sqrt(C0).to(dtype=X0.dtype, device=X0.device).expand(X0.shape[0], k, k)
        X0 = X0 + _apply(L0, z0)
    if noise is None:
        z = _random.randn(tuple(X0.shape), generator=generator, dtype=X0.dtype, device=X0.device)
    else:
        if not isinstance(noise, torch.Tensor) or noise.shape != X0.shape:
            got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise must be a tensor shaped like the full state {tuple(X0.shape)}, got {got}")
        z = noise.to(X0.dtype)
    t_model = tt.to(X0.dtype)  # the model and the kernel see the same (rounded) times
    t64 = t_model.to(torch.float64)
    L64 = _cholesky(marginal.cov(t64, given), t64, given)
    L = L64.to(X0.dtype)
    Xt = marginal.mean(X0, t64, given) + _apply(L, z)
    s = check_model_output(model(Xt, t_model), Xt)
    if weighting == "sigma2":
        e = _apply(L.transpose(-1, -2), s) + z  # L^T (s - target)
    else:
        flat = z.reshape(z.shape[0], k, -1)
        target = -torch.linalg.solve_triangular(L.transpose(-1, -2), flat, upper=True).reshape(z.shape)
        e = s - target
        if weighting == "likelihood":  # G^T (s - target) has the squared norm (s - target)^T D (s - target)
            e = _apply(psd_sqrt(marginal.diffusion_matrix(t64)).transpose(-1, -2).to(X0.dtype), e)
    return 0.5 * w.to(X0.dtype) * _event_sum(e * e)


def log_det_alpha(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    r""":math:`\log|\det\Phi(t)|` (float64, shape of t): :math:`\log\alpha` of a scalar SDE."""
    return torch.linalg.slogdet(sde.marginal.alpha(t.to(torch.float64)))[1]


def log_det_snr(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    r"""The generalised log-SNR :math:`\lambda = 2\log|\det\Phi| - \log\det\Sigma` of the kernel given the whole
    initial state (float64, shape of t; module docstring); decreasing,
    :math:`-\lambda' = \operatorname{tr}(\Sigma^{-1}D)`."""
    t = t.to(torch.float64)
    return 2 * log_det_alpha(sde, t) - torch.linalg.slogdet(sde.marginal.cov(t))[1]


def trace_density(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    r""":math:`\operatorname{tr}(\Sigma(t)^{-1}D(t)) = -\lambda'(t)` (float64, shape of t), the k-component
    :math:`g^2/\sigma^2`."""
    t = t.to(torch.float64)
    flat = t.reshape(-1)
    L = _cholesky(sde.marginal.cov(flat), flat, "state")
    D = sde.marginal.diffusion_matrix(flat)
    return torch.cholesky_solve(D, L).diagonal(dim1=-2, dim2=-1).sum(-1).reshape(t.shape)


def draw_at_T(sde: SDE, x0: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, int]:
    r"""A draw of :math:`X_T` given the data ``x0`` (the non-data components marginalised over their initial law)
    and the number d of event positions."""
    X0 = lift_data(sde, x0)
    return sde.marginal.sample(X0, sde.T, generator=generator, given="data"), X0[0, 0].numel()
