"""Checks shared by every entry point: data tensors, a model's output, ``generator=``, eps, positive numbers, dtypes;
and :func:`warn_user`, a warning that points at the user's call."""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Any

import torch

from .errors import ModelOutputError

__all__ = [
    "COMPUTE_DTYPES",
    "check_batch",
    "check_choice",
    "check_compute_dtype",
    "check_count",
    "check_eps",
    "check_float_dtype",
    "check_generator",
    "check_model_output",
    "check_positive",
    "check_scalar_sde",
    "check_sde",
    "warn_user",
]

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def check_model_output(
    out: Any, x: torch.Tensor, *, what: str = "model(x, t)", nonfinite_hint: str | None = None
) -> torch.Tensor:
    """Return ``out`` if it is a tensor shaped like ``x`` with ``x``'s dtype and device, else raise ModelOutputError.

    With ``nonfinite_hint`` (where the call happened, e.g. ``"t = 0.001; check the model"``) the
    values must also be finite; that costs one host sync, so callers do it once, not per step.
    """
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelOutputError(f"{what} must return a tensor shaped like x {tuple(x.shape)}, got {got}")
    if out.dtype != x.dtype:
        raise ModelOutputError(f"{what} returned dtype {out.dtype} for x of dtype {x.dtype}; keep the dtype of x")
    if out.device != x.device:
        raise ModelOutputError(f"{what} returned a tensor on {out.device} for x on {x.device}; keep the device of x")
    if nonfinite_hint is not None and not bool(torch.isfinite(out).all()):
        raise ModelOutputError(f"{what} returned non-finite values at {nonfinite_hint}")
    return out


def check_generator(generator: Any) -> torch.Generator | None:
    """Return ``generator`` if it is None or a ``torch.Generator``, else raise TypeError saying what to pass."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, got {type(generator).__name__}; "
            "pass e.g. torch.Generator().manual_seed(0), or None for the global generator"
        )
    return generator


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float if it is a positive finite real number (not a bool), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_float_dtype(dtype: Any) -> torch.dtype | None:
    """Return ``dtype`` if it is None or a floating ``torch.dtype``, else raise TypeError saying what to pass."""
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float32, got {dtype!r}")
    return dtype


COMPUTE_DTYPES = (torch.float32, torch.float64)
"""The dtypes sdekit integrates in, at every entry point (``sample``, ``simulate``, ``logp``, Langevin, the losses):
half precision (float16, bfloat16) cannot resolve the small increments of a diffusion solve or a log-density, so
it is refused up front rather than failing later; a half-precision network can still run inside the model (cast
its input and output)."""


def check_compute_dtype(dtype: torch.dtype, what: str, fix: str) -> torch.dtype:
    """``dtype`` if it is in :data:`COMPUTE_DTYPES`, else a TypeError naming ``what`` (e.g. ``"x"``) and ``fix``."""
    if dtype not in COMPUTE_DTYPES:
        raise TypeError(
            f"{what} has dtype {dtype}, but sdekit integrates in torch.float32 or torch.float64 (half precision "
            f"cannot resolve a solver's or a log-density's small increments); {fix}. A half-precision network can "
            f"still run inside the model: cast x to its dtype there and its output back"
        )
    return dtype


def check_batch(x: Any, name: str = "x", *, finite: bool = False) -> torch.Tensor:
    """``x`` if it is a float32/float64 tensor (:data:`COMPUTE_DTYPES`) of shape (batch, *event_shape), no dimension
    empty (and, with ``finite``, no NaN/inf: one host read), else TypeError/ValueError naming ``name``."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{name} must be a floating-point tensor of shape (batch, *event_shape), got {got}")
    check_compute_dtype(x.dtype, name, f"convert it with {name}.float() or {name}.double()")
    if x.ndim < 1 or x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(
            f"{name} must have shape (batch, *event_shape) with batch >= 1 and no empty dimension, got {tuple(x.shape)}"
        )
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values; pass finite values")
    return x


def check_eps(eps: Any, T: float) -> float:
    """``eps`` as a float if it is a number with 0 < eps < T, else a ValueError saying so."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < T:
        raise ValueError(f"eps must be a number with 0 < eps < T = {T:g}, got {eps!r}")
    return float(eps)


def check_count(name: str, value: Any) -> int:
    """``value`` if it is a positive integer (not a bool), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message)`` attributed to the first caller outside the sdekit package (the user's line),
    however deep inside sdekit it is issued."""
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def check_sde(sde: Any) -> Any:
    """``sde`` if it is an :class:`sdekit.SDE` instance, else a TypeError."""
    # lazy: modules that need no SDE for some of their functions (sdekit.losses' ism and ssm) import this module,
    # and sdekit.symbolic.sde loads sympy (~2 s)
    from .symbolic.sde import SDE

    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdekit.SDE instance, got {type(sde).__name__}")
    return sde


def check_scalar_sde(sde: Any, what: str) -> Any:
    """``sde`` if it is a scalar :class:`sdekit.SDE` (no ``components``), else a TypeError or a ValueError saying that
    ``what`` does not take k-component SDEs yet (use ``sde.marginal`` and ``sdekit.simulate``)."""
    sde = check_sde(sde)
    if sde.components is not None:
        raise ValueError(
            f"{what} does not take k-component SDEs yet ({sde!r} has components {sde.components}); its marginal "
            f"(sde.marginal), reverse SDE, PF-ODE and sdekit.simulate do"
        )
    return sde
