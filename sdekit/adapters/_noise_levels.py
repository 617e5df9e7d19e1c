r"""What the k-diffusion and score_sde adapters share: noise levels read off an SDE's marginal, the SDEs that span a
network's trained range of noise levels, the adaptation-time checks and the probe call.

A network conditioned on a noise level :math:`\sigma_{\rm net}` was trained on
:math:`x_0 + \sigma_{\rm net}\,\varepsilon`. An affine SDE's marginal is
:math:`x_t = \alpha(t) x_0 + m(t) + \sigma(t)\varepsilon`, so

.. math:: \frac{x_t - m(t)}{\alpha(t)} = x_0 + r(t)\,\varepsilon, \qquad r(t) = \frac{\sigma(t)}{\alpha(t)}
          = e^{-\lambda(t)},

and the network is evaluated at :math:`\sigma_{\rm net} = r(t)` on the rescaled state. Everything here is read from
``sde.marginal`` (:math:`\alpha`, :math:`m`, :math:`\sigma`, :math:`\lambda`): no per-SDE formula.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from .._checks import check_model_output
from ..errors import AdapterError, ModelOutputError
from ..parameterization import _wide_dtype, marginal_coefficients
from ..solvers._grids import t_of_log_snr
from ..symbolic.zoo import EDMSDE, VESDE

if TYPE_CHECKING:  # pragma: no cover
    from ..symbolic.sde import SDE

__all__ = [
    "check_callable",
    "check_noise_range",
    "check_positive_number",
    "noise_to_signal",
    "probe",
    "sde_spanning",
    "standardized_input",
    "time_of_noise_to_signal",
    "times_of",
]


def times_of(t: Any, like: torch.Tensor) -> torch.Tensor:
    """``t`` (a number, a 0-d tensor or one time per row of ``like``) as a (batch,) tensor on ``like``'s device in
    float64 (the device's widest float: Apple MPS has no float64)."""
    wide = _wide_dtype(like)
    tt = t.to(device=like.device, dtype=wide) if isinstance(t, torch.Tensor) else torch.tensor(float(t), dtype=wide)
    tt = tt.to(like.device).reshape(-1)
    batch = like.shape[0]
    if tt.numel() == 1:
        return tt.expand(batch)
    if tt.numel() != batch:
        raise ValueError(f"t has {tt.numel()} entries but x has batch size {batch}; pass one time per sample")
    return tt


def noise_to_signal(sde: SDE, t: Any, like: torch.Tensor) -> torch.Tensor:
    r""":math:`r(t) = \sigma(t)/\alpha(t)` of ``sde.marginal``, one per row of ``like``: shape (batch,), dtype of
    ``like``.

    Evaluated in float64 and then cast, like every marginal coefficient in sdekit. For EDM
    (:math:`\sigma(t) = t`) :math:`r = t` exactly; for VE :math:`r(t) = \sigma(t)` is the noise level itself.
    """
    tt = times_of(t, like)
    marg = sde.marginal
    return (marg.sigma(tt) / marg.alpha(tt)).to(like.dtype)


def standardized_input(sde: SDE, x: torch.Tensor, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``((x - m(t)) / alpha(t), r(t))``: the state on the scale of :math:`x_0 + r\varepsilon` a network
    conditioned on the noise level was trained on, and its noise level r of shape (batch,). For VE and EDM
    (:math:`\alpha = 1`, :math:`m = 0`, exactly) the state is ``x`` itself: :math:`(x - 0)/1` rounds to x. No host
    synchronisation."""
    tt = times_of(t, x)
    alpha, m, _ = marginal_coefficients(sde, tt, x)
    return (x - m) / alpha, noise_to_signal(sde, tt, x)


def time_of_noise_to_signal(sde: SDE, r: float, *, t_hi: float | None = None) -> float:
    r"""The time t with :math:`\sigma(t)/\alpha(t) = r` (float64 bisection in the log-SNR :math:`\lambda = -\log r`,
    :func:`~sdekit.solvers._grids.t_of_log_snr`). The bracket is :math:`[0, t_{\rm hi}]`, ``t_hi`` (default
    ``sde.T``) doubled until :math:`r(t_{\rm hi}) \ge r`; the marginal need not stop at ``sde.T``."""
    marg = sde.marginal
    hi = float(sde.T if t_hi is None else t_hi)
    target = torch.tensor([-math.log(r)], dtype=torch.float64)
    for _ in range(64):
        if float(marg.log_snr(torch.tensor([hi], dtype=torch.float64))[0]) <= float(target[0]):
            break
        hi *= 2
    return float(t_of_log_snr(marg, target, 0.0, hi)[0])


def sde_spanning(kind: str, sigma_min: float, sigma_max: float) -> SDE:
    r"""An SDE whose noise-to-signal ratio :math:`r(t) = \sigma(t)/\alpha(t)` runs over exactly
    :math:`[\sigma_{\min}, \sigma_{\max}]` on :math:`[\epsilon, T]` = ``[sde.default_eps, sde.T]``.

    * ``"edm"``: :class:`~sdekit.EDMSDE` (:math:`\sigma(t) = t`) with ``T = sigma_max``, ``default_eps = sigma_min``.
    * ``"ve"``: :class:`~sdekit.VESDE` with these ``sigma_min`` and ``sigma_max``. Its exact marginal
      :math:`\sigma(t)^2 = \sigma_{\min}^2\big((\sigma_{\max}/\sigma_{\min})^{2t} - 1\big)` reaches
      :math:`\sigma_{\min}` at :math:`\epsilon = \ln 2 / (2\ln(\sigma_{\max}/\sigma_{\min}))` and
      :math:`\sigma_{\max}` at
      :math:`T = \ln(1 + (\sigma_{\max}/\sigma_{\min})^2) / (2\ln(\sigma_{\max}/\sigma_{\min}))`, slightly past 1;
      both are found by inverting the derived marginal (:func:`time_of_noise_to_signal`), not from these formulas.
      The prior is then :math:`N(0, \sigma_{\max}^2 I)`, score_sde's ``prior_logp``.
    """
    if kind == "edm":
        return EDMSDE(T=sigma_max, default_eps=sigma_min)
    base = VESDE(sigma_min=sigma_min, sigma_max=sigma_max)
    T = time_of_noise_to_signal(base, sigma_max)
    eps = time_of_noise_to_signal(base, sigma_min)
    return VESDE(sigma_min=sigma_min, sigma_max=sigma_max, T=T, default_eps=eps)


# --------------------------------------------------------------------------- checks
def check_callable(value: Any, name: str, adapter: str, expected: str) -> Callable[..., Any]:
    """``value`` if it is callable, else :class:`~sdekit.errors.AdapterError` naming the argument."""
    if not callable(value):
        raise AdapterError(f"{adapter}: {name} must be a callable {expected}, got {type(value).__name__}")
    return value


def check_positive_number(value: Any, name: str, adapter: str) -> float:
    """``value`` as a float if it is a positive finite real number (or a 0-d tensor holding one), else
    :class:`~sdekit.errors.AdapterError` naming the argument."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise AdapterError(f"{adapter}: {name} must be a positive finite number, got {value!r}")
    return float(value)


def check_noise_range(sigma_min: Any, sigma_max: Any, adapter: str) -> tuple[float, float]:
    """``(sigma_min, sigma_max)`` as floats with 0 < sigma_min < sigma_max, else
    :class:`~sdekit.errors.AdapterError`."""
    lo = check_positive_number(sigma_min, "sigma_min", adapter)
    hi = check_positive_number(sigma_max, "sigma_max", adapter)
    if not lo < hi:
        raise AdapterError(
            f"{adapter}: sigma_min must be smaller than sigma_max (the network's smallest and largest noise "
            f"levels), got sigma_min={lo:g}, sigma_max={hi:g}"
        )
    return lo, hi


def _probe_like(model: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """A batch of 2 standard normal states of ``shape`` on the device of ``model``'s first parameter (float64 if that
    parameter is float64, else float32), from a fixed seed (the probe changes no global random state)."""
    param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    device = param.device if param is not None else torch.device("cpu")
    dtype = torch.float64 if param is not None and param.dtype == torch.float64 else torch.float32
    gen = torch.Generator().manual_seed(0)
    return torch.randn((2, *shape), generator=gen, dtype=dtype).to(device)


def probe(adapted: Any, sde: SDE, shape: Any, adapter: str, what: str) -> None:
    r"""One call of the adapted ``model(x, t)`` on a batch of 2 at :math:`t = (T, \epsilon)` (``sde.T``,
    ``sde.default_eps``), :math:`x = \sqrt{\alpha^2 + \sigma^2}\,z` (the marginal's scale for unit-variance data):
    the output must be a finite tensor shaped like x, else :class:`~sdekit.errors.ModelOutputError` naming ``what``
    (the user's network and its call) and ``shape``.

    ``shape`` is the event shape ``(C, H, W)`` (any tuple of positive ints); ``None`` skips the probe.
    """
    if shape is None:
        return
    if (
        not isinstance(shape, (tuple, list))
        or not shape
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape)
    ):
        raise AdapterError(
            f"{adapter}: shape must be the event shape of one sample, a tuple of positive ints such as (3, 32, 32), "
            f"got {shape!r}"
        )
    z = _probe_like(adapted.network, tuple(shape))
    t = torch.tensor([float(sde.T), float(sde.default_eps)], dtype=torch.float64)
    alpha, m, sigma2 = marginal_coefficients(sde, t, z)
    x = m + torch.sqrt(alpha**2 + sigma2) * z
    try:
        with torch.no_grad():
            out = adapted(x, t.to(x.dtype))
        check_model_output(out, x, what=what, nonfinite_hint=f"t = {float(sde.T):g} and {float(sde.default_eps):g}")
    except ModelOutputError as err:
        message = str(err).removeprefix(f"{adapter}: ")
        raise ModelOutputError(f"{adapter} (probe call with shape={tuple(shape)}): {message}") from None
