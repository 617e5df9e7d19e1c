r"""Bits per dimension of discrete data, and the uniform dequantization it assumes.

Discrete data :math:`k \in \{0, \dots, K-1\}` (:math:`K = 2^n` levels of n-bit data, or any ``levels=K``, e.g.
the 17 levels 0..16 of scikit-learn's digits) are modelled through a density on
:math:`x = a\,(k + u)/K + b`, :math:`u \sim U[0, 1)` (:func:`dequantize`); :func:`bits_per_dim`
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


def _levels(n_bits: int | None, levels: int | None) -> int:
    """The number of levels K: ``levels``, else ``2**n_bits`` (n_bits = 8 when neither is given)."""
    if levels is None:
        return 2 ** check_count("n_bits", 8 if n_bits is None else n_bits)
    levels = check_count("levels", levels)
    if levels < 2:
        raise ValueError(f"levels must be at least 2 (the number of values the data take), got {levels}")
    if n_bits is not None and 2 ** check_count("n_bits", n_bits) != levels:
        raise ValueError(f"n_bits={n_bits} means {2**n_bits} levels but levels={levels}; pass one of them")
    return levels


def bits_per_dim(
    logp: torch.Tensor,
    x: torch.Tensor | int,
    *,
    data_range: str | tuple[float, float] = "[-1,1]",
    n_bits: int | None = None,
    levels: int | None = None,
) -> torch.Tensor:
    r"""Bits per dimension of discrete data (:math:`K` levels) from the log-density of its dequantized, scaled version.

    The data are integers :math:`k \in \{0, \dots, K-1\}^D`, :math:`K = 2^{n}` (or ``levels``), dequantized and
    scaled as :math:`x = a\,(k + u)/K + b` with :math:`u \sim U[0, 1)^D` and ``data_range`` =
    :math:`[b, a + b]` (``"[0,1]"``: a = 1; ``"[-1,1]"``: a = 2; see :func:`dequantize`). A density
    :math:`p` on x induces the discrete model :math:`P(k) = \int_{[0,1)^D} p(x(u))\,(a/K)^D\,du`, and
    by Jensen :math:`-\log_2 P(k) \le -\log_2 p(x) + D \log_2(K/a)`. Per dimension:

    .. math::
        \mathrm{bpd} = -\frac{\log p(x)}{D \ln 2} + \log_2 K - \log_2 a,

    i.e. :math:`+8` bits for 8-bit data in [0, 1], :math:`+7` in [-1, 1] and :math:`\log_2(17/2)` for 17 levels in
    [-1, 1]. Averaged over x this
    upper-bounds the model's discrete code length; a density that is uniform inside every
    cell attains it (``docs/likelihood.md`` derives it in full).

    Args:
        logp: log-density in nats of the dequantized scaled data, shape (batch,) (e.g. from :func:`sdekit.logp`).
        x: the data (its event size D = ``x[0].numel()``) or D itself.
        data_range: ``"[-1,1]"`` (default), ``"[0,1]"`` or a ``(low, high)`` pair.
        n_bits: bits per value of the original data, K = 2**n_bits (default 8, as for images).
        levels: the number of levels K instead, for data whose alphabet is not a power of two (17 for the 8 x 8
            digits, values 0..16); ``n_bits`` and ``levels`` must agree when both are given.

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
    offset = math.log2(_levels(n_bits, levels)) - math.log2(high - low)
    return -logp / (dim * _LOG2) + offset


def dequantize(
    k: torch.Tensor,
    *,
    data_range: str | tuple[float, float] = "[-1,1]",
    n_bits: int | None = None,
    levels: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""Uniform dequantization :math:`x = a\,(k + u)/K + b`, :math:`u \sim U[0,1)`, of integer data ``k``.

    :math:`K = 2^n` levels (``n_bits``, default 8) or ``levels``.

    ``data_range`` = :math:`[b, a + b]`; the convention matches :func:`bits_per_dim`.

    Args:
        k: integer levels in :math:`\{0, \dots, K - 1\}` (an integer tensor, e.g. uint8 images, or a
            floating tensor holding whole numbers).
        data_range: ``"[-1,1]"`` (default), ``"[0,1]"`` or a ``(low, high)`` pair.
        n_bits: bits per value, K = 2**n_bits (default 8, as for images).
        levels: the number of levels K instead (e.g. 17 for values 0..16); must agree with ``n_bits`` if both given.
        generator: random generator for u.
        dtype: floating dtype of the result (default: torch's default dtype).

    Raises:
        TypeError: ``k`` is not a tensor, ``dtype`` is not floating, ``generator`` is not a ``torch.Generator``.
        ValueError: ``k`` holds fractional values or levels outside :math:`[0, K)`.
    """
    if not isinstance(k, torch.Tensor):
        raise TypeError(f"k must be a tensor of integer levels (e.g. torch.as_tensor(images)), got {type(k).__name__}")
    low, high = _data_range(data_range)
    levels = _levels(n_bits, levels)
    check_float_dtype(dtype)
    check_generator(generator)
    if k.numel():
        if k.is_floating_point() and not bool((k == k.round()).all()):
            raise ValueError("k must hold whole-number levels; it has fractional values (already dequantized?)")
        lo, hi = (float(v) for v in torch.aminmax(k))  # one pass
        if lo < 0 or hi > levels - 1:
            raise ValueError(
                f"k must hold levels in [0, {levels - 1}] for {levels} levels; got values in [{lo:g}, {hi:g}] "
                f"(pass the matching n_bits or levels, or integer data rather than scaled data)"
            )
    dtype = dtype or torch.get_default_dtype()
    u = _random.rand(k.shape, generator=generator, dtype=dtype, device=k.device)
    return (high - low) * (k.to(dtype) + u) / levels + low
