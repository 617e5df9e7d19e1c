r"""k-diffusion denoisers :math:`D(x, \sigma)` as sdekit models: :func:`from_k_diffusion`.

**k-diffusion's convention** (Crowson's ``k_diffusion``, 0.1.1; Karras et al. 2022). Data are noised as
:math:`x = x_0 + \sigma\varepsilon` (variance exploding, no rescaling) and a *denoiser* ``D(x, sigma, **extra_args)``
(sigma of shape (batch,)) returns the estimate of :math:`x_0`; every k-diffusion sampler takes this wrapped
denoiser and the ODE :math:`dx/d\sigma = (x - D(x, \sigma))/\sigma` (``to_d``). The wrappers build D from a raw
network F with the preconditioning :math:`D = c_{\rm skip}\,x + c_{\rm out}\,F(c_{\rm in}\,x, c_{\rm noise})`
(:math:`\sigma_d` = ``sigma_data``):

* ``layers.Denoiser`` (Karras et al.; EDM): :math:`c_{\rm skip} = \sigma_d^2/(\sigma^2+\sigma_d^2)`,
  :math:`c_{\rm out} = \sigma\sigma_d/\sqrt{\sigma^2+\sigma_d^2}`, :math:`c_{\rm in} = 1/\sqrt{\sigma^2+\sigma_d^2}`;
  F receives sigma itself (its own :math:`c_{\rm noise} = \tfrac14\ln\sigma` inside, e.g. ``image_v1``).
* ``external.VDenoiser`` (v-diffusion, :math:`\sigma_d = 1`): the same :math:`c_{\rm skip}`, :math:`c_{\rm in}`,
  :math:`c_{\rm out} = -\sigma/\sqrt{\sigma^2+1}`; F receives :math:`\tfrac2\pi\arctan\sigma` and predicts v.
* ``external.DiscreteEpsDDPMDenoiser`` (``OpenAIDenoiser``, ``CompVisDenoiser``): :math:`c_{\rm skip} = 1`,
  :math:`c_{\rm out} = -\sigma`, :math:`c_{\rm in} = 1/\sqrt{\sigma^2+1}`; F receives the DDPM timestep of sigma
  (interpolated in log sigma on its table) and predicts :math:`\varepsilon`.
* ``external.DiscreteVDDPMDenoiser`` (``CompVisVDenoiser``): the ``VDenoiser`` scalings with the DDPM timestep.

(EDM's own ``EDMPrecond`` is the first item with :math:`c_{\rm noise} = \tfrac14\ln\sigma` applied outside F.) The
discrete wrappers run a VP network :math:`x_t = \sqrt{\bar\alpha}\,x_0 + \sqrt{1-\bar\alpha}\,\varepsilon` in
variance-exploding coordinates :math:`x = x_t/\sqrt{\bar\alpha}`, :math:`\sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}`,
between their ``sigma_min`` and ``sigma_max``.

**What the adapter expects**: the *wrapped* denoiser, whatever its wrapper (the object k-diffusion's samplers
call), returning :math:`\hat x_0`. The adapted model predicts :math:`\hat x_0`, sdekit's ``"denoiser"`` (= ``"x0"``)
parameterization (:attr:`KDiffusionModel.parameterization`).

**t <-> sigma**, read from the SDE's marginal :math:`x_t = \alpha x_0 + m + \sigma(t)\varepsilon`: the model at time t
calls ``D((x - m(t))/alpha(t), sigma(t)/alpha(t))`` (:mod:`sdekit.adapters._noise_levels`); for the SDEs built here
:math:`\alpha = 1`, :math:`m = 0`, so it calls ``D(x, sigma(t))``:

* ``sde="edm"`` (default): :class:`~sdekit.EDMSDE`, :math:`\sigma(t) = t`, ``T = sigma_max``,
  ``default_eps = sigma_min``: sdekit's time *is* k-diffusion's sigma.
* ``sde="ve"``: :class:`~sdekit.VESDE` (``sigma_min``, ``sigma_max``),
  :math:`\sigma(t) = \sigma_{\min}\sqrt{(\sigma_{\max}/\sigma_{\min})^{2t} - 1}`, on :math:`[\epsilon, T]` with
  :math:`\sigma(\epsilon) = \sigma_{\min}`, :math:`\sigma(T) = \sigma_{\max}`
  (:func:`~sdekit.adapters._noise_levels.sde_spanning`).

The probability-flow ODE depends on the noise level alone, so on the same sigma grid both SDEs give the same
samples (measured in ``tests/adapters/test_k_diffusion.py``).

**Equivalences** (k-diffusion sampler with ``n`` sigmas before the appended 0, all measured to float64 round-off in
``tests/adapters/test_k_diffusion.py`` on a random preconditioned network, EDM and VE):

* ``sample_euler`` on ``get_sigmas_karras(n, sigma_min, sigma_max, rho)`` = ``sdekit.sample(model, sde, shape,
  solver="exp1", steps=n, grid="edm", rho=rho, parameterization="denoiser")`` (DDIM in sigma is Euler in sigma:
  :math:`x' = \tfrac{\sigma'}{\sigma}x + (1 - \tfrac{\sigma'}{\sigma})D`) = ``solver="ode:euler", steps=n - 1``
  (the PF-ODE of EDM in t = sigma is ``to_d``); the last step to sigma = 0, :math:`x = D(x, \sigma_{\min})`, is
  sdekit's final denoising step. n model calls.
* ``sample_heun`` = ``solver="ode:heun2", steps=n - 1, grid="edm"``: 2n - 1 model calls.
* ``sample_dpmpp_2m`` = ``solver="dpm++2m", steps=n, grid="edm", lower_order_final=False``.
* ``get_sigmas_exponential`` is ``grid="logsnr"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .._checks import check_choice
from ..errors import AdapterError, ModelOutputError
from ._noise_levels import check_callable, check_noise_range, probe, sde_spanning, standardized_input

if TYPE_CHECKING:  # pragma: no cover
    from ..symbolic.sde import SDE

__all__ = ["KDIFFUSION_SDES", "KDiffusionModel", "from_k_diffusion"]

KDIFFUSION_SDES: tuple[str, ...] = ("edm", "ve")
"""Values of ``from_k_diffusion(sde=...)``: :class:`~sdekit.EDMSDE` (sigma(t) = t) or :class:`~sdekit.VESDE`."""

_ADAPTER = "from_k_diffusion"


class KDiffusionModel(torch.nn.Module):
    r"""A k-diffusion denoiser as an sdekit model: ``model(x, t)`` returns
    :math:`\hat x_0 = D\big((x - m(t))/\alpha(t),\ \sigma(t)/\alpha(t)\big)` (module docstring).

    A ``torch.nn.Module`` holding the denoiser as ``network`` (so ``.parameters()``, ``.eval()``, ``.to()`` and
    :func:`sdekit.logp`'s ``adjoint`` reach it); ``extra_args`` (k-diffusion's name: conditioning such as class
    labels) are passed to every call. Pass ``parameterization=model.parameterization`` (``"denoiser"``) to
    :func:`sdekit.sample`, :func:`sdekit.logp` and :func:`sdekit.losses.dsm`.
    """

    parameterization: ClassVar[str] = "denoiser"
    """sdekit's name for what the model predicts: Tweedie's :math:`\\hat x_0` (EDM's "denoiser")."""

    def __init__(self, denoiser: Any, sde: SDE, extra_args: Mapping[str, Any] | None = None):
        super().__init__()
        self.network = denoiser
        self.sde = sde
        self.extra_args = dict(extra_args or {})

    def sigma(self, t: Any, like: torch.Tensor) -> torch.Tensor:
        r"""k-diffusion's sigma at sdekit time t: :math:`\sigma(t)/\alpha(t)`, shape (batch,), ``like``'s dtype."""
        return standardized_input(self.sde, like, t)[1]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """:math:`\\hat x_0` at (x, t) (class docstring); t of shape (batch,) or a single time."""
        x_in, sigma = standardized_input(self.sde, x, t)
        out = self.network(x_in, sigma, **self.extra_args)
        if not isinstance(out, torch.Tensor) or out.shape != x_in.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelOutputError(
                f"{_ADAPTER}: denoiser(x, sigma) returned {got} for x of shape {tuple(x_in.shape)}; it must return "
                f"the denoised x0 shaped like x (pass k-diffusion's wrapped denoiser, e.g. "
                f"k_diffusion.layers.Denoiser(inner_model, sigma_data), the object its samplers call)"
            )
        return out


def from_k_diffusion(
    denoiser: Any,
    sigma_min: float,
    sigma_max: float,
    *,
    sde: str = "edm",
    shape: tuple[int, ...] | None = None,
    extra_args: Mapping[str, Any] | None = None,
) -> tuple[KDiffusionModel, SDE]:
    r"""Adapt a k-diffusion denoiser :math:`D(x, \sigma) \approx E[x_0 \mid x_0 + \sigma\varepsilon = x]` to sdekit.

    Args:
        denoiser: the *wrapped* denoiser ``D(x, sigma, **extra_args) -> x0`` (``k_diffusion.layers.Denoiser``,
            ``external.VDenoiser``, ``external.CompVisDenoiser``, ... or any callable with this convention: the
            object k-diffusion's samplers take; module docstring).
        sigma_min: the smallest noise level to sample down to (the network's ``sigma_min``; numbers or 0-d tensors,
            e.g. a ``DiscreteSchedule``'s ``denoiser.sigma_min``).
        sigma_max: the largest noise level, where sampling starts (prior :math:`N(0, \sigma_{\max}^2 I)`).
        sde: ``"edm"`` (default: :class:`~sdekit.EDMSDE` with ``T = sigma_max``, ``default_eps = sigma_min``, so t
            is sigma) or ``"ve"`` (:class:`~sdekit.VESDE` spanning the same noise levels on ``[default_eps, T]``).
        shape: the event shape of one sample, e.g. ``(3, 32, 32)``: the denoiser is called once now, on a batch of
            2 at sigma_max and sigma_min, and a wrong output shape or non-finite values raise here. ``None``: no
            probe (sdekit's entry points still check every model output).
        extra_args: keyword arguments passed to every call of the denoiser (k-diffusion's ``extra_args``).

    Returns:
        ``(model, sde)``: a :class:`KDiffusionModel` predicting ``"denoiser"`` (pass
        ``parameterization=model.parameterization``) and the SDE, whose ``default_eps`` and ``T`` sit at sigma_min and
        sigma_max.

    Raises:
        AdapterError: ``denoiser`` is not callable, ``sigma_min``/``sigma_max`` are not positive with
            ``sigma_min < sigma_max``, ``sde`` is not one of ``"edm"``, ``"ve"``, or ``shape`` is not a tuple of
            positive ints.
        ModelOutputError: the probe call (with ``shape``) returned the wrong shape or non-finite values.

    Example::

        model, sde = sdekit.adapters.from_k_diffusion(denoiser, 0.002, 80.0, shape=(3, 32, 32))
        x = sdekit.sample(model, sde, (16, 3, 32, 32), solver="dpm++2m", steps=20,
                          parameterization=model.parameterization)
    """
    check_callable(denoiser, "denoiser", _ADAPTER, "D(x, sigma) returning the denoised x0")
    lo, hi = check_noise_range(sigma_min, sigma_max, _ADAPTER)
    try:
        kind = check_choice("sde", sde, KDIFFUSION_SDES)
    except ValueError as err:
        raise AdapterError(f"{_ADAPTER}: {err}") from None
    if extra_args is not None and not isinstance(extra_args, Mapping):
        raise AdapterError(
            f"{_ADAPTER}: extra_args must be a mapping of keyword arguments (k-diffusion's extra_args), "
            f"got {type(extra_args).__name__}"
        )
    built = sde_spanning(kind, lo, hi)
    model = KDiffusionModel(denoiser, built, extra_args)
    probe(model, built, shape, _ADAPTER, "denoiser(x, sigma)")
    return model, built
