r"""Bits per dimension of discrete data, and the uniform dequantization it assumes.

Discrete :math:`n`-bit data :math:`k` are modelled through a density on
:math:`x = a\,(k + u)/2^n + b`, :math:`u \sim U[0, 1)` (:func:`dequantize`); :func:`bits_per_dim`
turns the log-density of x (e.g. from :func:`sdekit.logp`) into the upper bound on the discrete
code length that it implies. ``docs/likelihood.md`` derives the offset.
"""

from __future__ import annotations

import math

import torch

from . import _random
from ._checks import check_count, check_float_dtype, check_generator

__all__ = ["bits_per_dim", "dequantize"]

_LOG2 = math.log(2.0)


def _data_range(data_range: str | tuple[float, float]) -> tuple[float, float]:
    named = {"[0,1]": (0.0, 1.0), "[-1,1]": (-1.0, 1.0)}
    if isinstance(data_range, str):
        key = data_range.replace(" ", "")
        if key not in named:
            raise ValueError(f"data_range must be '[0,1]', '[-1,1]' or a (low, high) pair, got {data_range!r}")
        return named[key]
    try:
        low, high = (float(v) for v in data_range)
    except (TypeError, ValueError) as err:
        raise ValueError(f"data_range must be '[0,1]', '[-1,1]' or a (low, high) pair, got {data_range!r}") from err
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"data_range (low, high) needs finite low < high, got {data_range!r}")
    return low, high


def bits_per_dim(
    logp: torch.Tensor,
    x: torch.Tensor | int,
    *,
    data_range: str | tuple[float, float] = "[-1,1]",
    n_bits: int = 8,
) -> torch.Tensor:
    r"""Bits per dimension of discrete :math:`n`-bit data from the log-density of its dequantized, scaled version.

    The data are integers :math:`k \in \{0, \dots, K-1\}^D`, :math:`K = 2^{n}`, dequantized and
    scaled as :math:`x = a\,(k + u)/K + b` with :math:`u \sim U[0, 1)^D` and ``data_range`` =
    :math:`[b, a + b]` (``"[0,1]"``: a = 1; ``"[-1,1]"``: a = 2; see :func:`dequantize`). A density
    :math:`p` on x induces the discrete model :math:`P(k) = \int_{[0,1)^D} p(x(u))\,(a/K)^D\,du`, and
    by Jensen :math:`-\log_2 P(k) \le -\log_2 p(x) + D \log_2(K/a)`. Per dimension:

    .. math::
        \mathrm{bpd} = -\frac{\log p(x)}{D \ln 2} + n - \log_2 a,

    i.e. :math:`+8` bits for 8-bit data in [0, 1] and :math:`+7` in [-1, 1]. Averaged over x this
    upper-bounds the model's discrete code length; a density that is uniform inside every
    cell attains it (``docs/likelihood.md`` derives it in full).

    Args:
        logp: log-density in nats of the dequantized scaled data, shape (batch,) (e.g. from :func:`sdekit.logp`).
        x: the data (its event size D = ``x[0].numel()``) or D itself.
        data_range: ``"[-1,1]"`` (default), ``"[0,1]"`` or a ``(low, high)`` pair.
        n_bits: bits per value of the original data (8 for images).

    Returns:
        Bits per dimension, shaped like ``logp``.
    """
    if not isinstance(logp, torch.Tensor):
        raise TypeError(f"logp must be a tensor of log-densities in nats, got {type(logp).__name__}")
    if isinstance(x, torch.Tensor):
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"x must have shape (batch, *event_shape), got {tuple(x.shape)}")
        if logp.shape != (x.shape[0],):
            raise ValueError(
                f"logp must hold one log-density per sample of x: shape ({x.shape[0]},), got {tuple(logp.shape)}"
            )
        dim = x[0].numel()
    elif isinstance(x, int) and not isinstance(x, bool) and x >= 1:
        dim = x
    else:
        raise TypeError(f"x must be the data tensor or its number of dimensions (a positive int), got {x!r}")
    low, high = _data_range(data_range)
    n_bits = check_count("n_bits", n_bits)
    offset = n_bits - math.log2(high - low)
    return -logp / (dim * _LOG2) + offset


def dequantize(
    k: torch.Tensor,
    *,
    data_range: str | tuple[float, float] = "[-1,1]",
    n_bits: int = 8,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""Uniform dequantization :math:`x = a\,(k + u)/2^{n} + b`, :math:`u \sim U[0,1)`, of integer data ``k``.

    ``data_range`` = :math:`[b, a + b]`; the convention matches :func:`bits_per_dim`.

    Args:
        k: integer levels in :math:`\{0, \dots, 2^{n} - 1\}` (an integer tensor, e.g. uint8 images, or a
            floating tensor holding whole numbers).
        data_range: ``"[-1,1]"`` (default), ``"[0,1]"`` or a ``(low, high)`` pair.
        n_bits: bits per value (8 for images).
        generator: random generator for u.
        dtype: floating dtype of the result (default: torch's default dtype).

    Raises:
        TypeError: ``k`` is not a tensor, ``dtype`` is not floating, ``generator`` is not a ``torch.Generator``.
        ValueError: ``k`` holds fractional values or levels outside :math:`[0, 2^{n})`.
    """
    if not isinstance(k, torch.Tensor):
        raise TypeError(f"k must be a tensor of integer levels (e.g. torch.as_tensor(images)), got {type(k).__name__}")
    low, high = _data_range(data_range)
    n_bits = check_count("n_bits", n_bits)
    check_float_dtype(dtype)
    check_generator(generator)
    if k.numel():
        if k.is_floating_point() and not bool((k == k.round()).all()):
            raise ValueError("k must hold whole-number levels; it has fractional values (already dequantized?)")
        lo, hi = (float(v) for v in torch.aminmax(k))  # one pass
        if lo < 0 or hi > 2**n_bits - 1:
            raise ValueError(
                f"k must hold levels in [0, {2**n_bits - 1}] for n_bits={n_bits}; got values in [{lo:g}, {hi:g}] "
                f"(pass the matching n_bits, or integer data rather than scaled data)"
            )
    dtype = dtype or torch.get_default_dtype()
    u = _random.rand(k.shape, generator=generator, dtype=dtype, device=k.device)
    return (high - low) * (k.to(dtype) + u) / 2**n_bits + low
