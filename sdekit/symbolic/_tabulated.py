r"""Tabulated functions of time: a table as a sympy function whose derivative sympy knows.

A discrete-time diffusion model is trained on a table, not on a formula: DDPM's
:math:`\bar\alpha_n = \prod_{j \le n}(1 - \beta_j)`, n = 0, ..., N - 1. To declare its SDE like any other
(drift and diffusion as expressions, everything else derived), the table enters the declaration as one
sympy function of t, :math:`L(t) = \log\bar\alpha(t)`, made by :func:`log_alpha_bar_function`:

* at the knots :math:`0 = t_0 < t_1 < \dots < t_N` it takes the tabulated values, :math:`L(0) = 0`
  (clean data) and :math:`L(t_k) = \log\bar\alpha_k` (exactly, to float64 round-off);
* between two knots :math:`t_k, t_{k+1}` (k >= 1) it interpolates **linearly in the log-SNR**
  :math:`\ell = \log\frac{\bar\alpha}{1 - \bar\alpha}`, so :math:`L = \log\mathrm{sigmoid}(\ell)`; on the first
  interval, where :math:`\ell(0) = +\infty`, the noise-to-signal ratio :math:`r = e^{-\ell} =
  (1 - \bar\alpha)/\bar\alpha` is linear in t instead (from 0), so :math:`L = -\log(1 + r)` and the diffusion
  :math:`g^2 = -L'` stays finite at t = 0 (a Brownian start, like every continuous VP schedule);
* beyond :math:`t_N` the last interval is extended (:math:`\ell` linear).

sympy differentiates it as an unevaluated ``Derivative(L(t), t)`` and integrates that back to L (the
derivation of the marginal uses exactly that: :math:`\int_0^t L' = L(t) - L(0)` and the chain rule
:math:`\int_0^t -L' e^{-L} = e^{-L(t)} - 1`), and :func:`log_alpha_bar` evaluates L, L' and L'' in any
array namespace: :mod:`sdekit.compile` translates ``L(t)`` and its derivatives to torch (``searchsorted`` and
the formulas above, batched, on t's device and dtype) or numpy with it.

The derivatives are one-sided at the knots: :func:`log_alpha_bar` takes the interval to the **left** of a knot
(the one a reverse-time step starting there traverses).

Every table gets its own function class, named ``logab_<hash>`` after a digest of the knots and values, so that
expressions (and the derivation cache, keyed by ``srepr``) of different tables never mix; the class pickles as
its table and is rebuilt (once per process and table) on loading.
"""

from __future__ import annotations

import copyreg
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import sympy as sp
from sympy.core.function import FunctionClass

from ..errors import SDEDeclarationError

__all__ = ["TabulatedLogAlphaBar", "log_alpha_bar", "log_alpha_bar_function"]


class _TableClass(FunctionClass):
    """Metaclass of the tabulated functions: pickled as their table (:func:`_reduce`), not by name."""


class TabulatedLogAlphaBar(sp.Function, metaclass=_TableClass):
    r""":math:`L(t) = \log\bar\alpha(t)` of a table (module docstring); make one with :func:`log_alpha_bar_function`.

    Class attributes of a table's class: ``knots`` (float64, :math:`t_0 = 0 < \dots < t_N`), ``log_alpha_bar``
    (L at the knots, ``[0, log ab_1, ...]``), ``log_snr`` (:math:`\ell` at the knots; :math:`+\infty` at 0),
    ``first_ratio`` (:math:`r(t_1) = (1 - \bar\alpha_1)/\bar\alpha_1`, r is linear on the first interval) and
    ``digest``.
    """

    nargs = 1
    is_real = True
    knots: np.ndarray
    log_alpha_bar: np.ndarray
    log_snr: np.ndarray
    first_ratio: float
    digest: str

    @classmethod
    def eval(cls, arg: sp.Basic) -> sp.Expr | None:
        """``L(0) = 0`` exactly (clean data); other arguments stay unevaluated."""
        if arg.is_zero:
            return sp.S.Zero
        return None

    def _eval_evalf(self, prec: int) -> sp.Expr | None:
        """A number at a numeric argument (float64 precision: the table's)."""
        arg = self.args[0]
        if not arg.is_number:
            return None
        value = type(self).numpy(np.asarray(float(arg), dtype=np.float64), 0)
        return sp.Float(float(value), prec)

    @classmethod
    def numpy(cls, t: Any, order: int = 0) -> np.ndarray:
        """:math:`L^{(order)}(t)` with numpy in float64 (:func:`log_alpha_bar`)."""
        t = np.asarray(t, dtype=np.float64)
        return np.asarray(log_alpha_bar(_NumpyOps, cls, (cls.knots, cls.log_snr), t, order), dtype=np.float64)

    def _latex(self, printer: Any) -> str:
        return r"\log\bar\alpha\left(" + printer._print(self.args[0]) + r"\right)"


class _NumpyOps:
    """The array functions :func:`log_alpha_bar` needs, numpy flavour (torch's: :mod:`sdekit.compile`)."""

    clip = staticmethod(np.clip)
    where = staticmethod(np.where)
    log1p = staticmethod(np.log1p)
    exp = staticmethod(np.exp)

    @staticmethod
    def searchsorted(knots: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.searchsorted(knots, t, side="left")

    @staticmethod
    def logsigmoid(u: np.ndarray) -> np.ndarray:
        return np.minimum(u, 0.0) - np.log1p(np.exp(-np.abs(u)))

    @staticmethod
    def sigmoid(u: np.ndarray) -> np.ndarray:
        return np.exp(-np.logaddexp(0.0, -u))


_CLASSES: dict[str, type[TabulatedLogAlphaBar]] = {}


def _check_table(knots: np.ndarray, alpha_bar: np.ndarray) -> None:
    if knots.ndim != 1 or alpha_bar.shape != knots.shape or knots.size < 1:
        raise SDEDeclarationError(
            f"a tabulated alpha-bar needs two 1-D arrays of the same length >= 1 (times and values), got shapes "
            f"{knots.shape} and {alpha_bar.shape}"
        )
    if not (np.all(np.isfinite(knots)) and knots[0] > 0 and np.all(np.diff(knots) > 0)):
        raise SDEDeclarationError("the knots of a tabulated alpha-bar must be finite, positive and strictly increasing")
    bad = np.flatnonzero(~((alpha_bar > 0) & (alpha_bar < 1)))
    if bad.size:
        k = int(bad[0])
        raise SDEDeclarationError(
            f"alpha_bar must lie strictly between 0 and 1 (a finite log-SNR), got alpha_bar[{k}] = {alpha_bar[k]!r}; "
            f"zero terminal SNR (alpha_bar = 0) has no Gaussian prior: clip it, e.g. to 2**-24 as diffusers does"
        )
    rising = np.flatnonzero(np.diff(alpha_bar) >= 0)
    if rising.size:
        k = int(rising[0])
        raise SDEDeclarationError(
            f"alpha_bar must decrease strictly (every beta > 0), but alpha_bar[{k + 1}] = {alpha_bar[k + 1]!r} >= "
            f"alpha_bar[{k}] = {alpha_bar[k]!r}"
        )


def log_alpha_bar_function(knots: Sequence[float] | np.ndarray, alpha_bar: Sequence[float] | np.ndarray) -> type:
    r"""The sympy function :math:`L(t) = \log\bar\alpha(t)` with :math:`L(t_k) = \log\bar\alpha_k` at ``knots``
    (strictly increasing, > 0) and :math:`L(0) = 0`, interpolated in log-SNR (module docstring).

    ``alpha_bar`` must lie in (0, 1) and decrease strictly. One class per table (cached by its digest).

    Raises:
        SDEDeclarationError: a malformed table (the message names the first bad entry).
    """
    knots_ = np.array(knots, dtype=np.float64).reshape(-1)
    ab = np.array(alpha_bar, dtype=np.float64).reshape(-1)
    _check_table(knots_, ab)
    digest = hashlib.sha256(knots_.tobytes() + b"|" + ab.tobytes()).hexdigest()[:16]
    cls = _CLASSES.get(digest)
    if cls is None:
        log_ab = np.log(ab)
        ell = log_ab - np.log1p(-ab)  # log(ab / (1 - ab)), no cancellation near ab = 1
        attrs = {
            "__module__": __name__,
            "__doc__": f"log alpha-bar of a table of {ab.size} values (digest {digest})",
            "knots": np.concatenate([[0.0], knots_]),
            "log_alpha_bar": np.concatenate([[0.0], log_ab]),
            "log_snr": np.concatenate([[np.inf], ell]),
            "first_ratio": float((1.0 - ab[0]) / ab[0]),
            "digest": digest,
            "_alpha_bar": ab,
        }
        for array in ("knots", "log_alpha_bar", "log_snr"):
            attrs[array].setflags(write=False)
        cls = _TableClass(f"logab_{digest}", (TabulatedLogAlphaBar,), attrs)
        _CLASSES[digest] = cls
    return cls


def _reduce(cls: _TableClass) -> Any:
    if cls is TabulatedLogAlphaBar:
        return cls.__name__  # the base class itself: pickled by name
    return log_alpha_bar_function, (cls.knots[1:].copy(), cls._alpha_bar.copy())


copyreg.pickle(_TableClass, _reduce)


def log_alpha_bar(ns: Any, cls: type[TabulatedLogAlphaBar], tables: tuple[Any, Any], t: Any, order: int) -> Any:
    r""":math:`L^{(order)}(t)` (order 0, 1 or 2) of the table ``cls``, elementwise, in the array namespace ``ns``.

    ``ns`` provides ``searchsorted`` (left), ``clip``, ``where``, ``log1p``, ``exp``, ``logsigmoid`` and ``sigmoid``
    (sdekit.compile's torch and numpy namespaces); ``tables`` are ``cls.knots`` and ``cls.log_snr`` as arrays of
    that namespace (t's dtype and device). With :math:`w = (t - t_{k-1})/(t_k - t_{k-1})` on the interval
    :math:`[t_{k-1}, t_k]` (k >= 2; knots belong to the interval on their left):

    .. math:: \ell = (1 - w)\ell_{k-1} + w\ell_k,\quad L = \log\mathrm{sigmoid}\,\ell,\quad
              L' = \ell'\,\mathrm{sigmoid}(-\ell),\quad L'' = -\ell'^2\,\mathrm{sigmoid}(\ell)\,\mathrm{sigmoid}(-\ell);

    on :math:`[0, t_1]`, with :math:`r = r_1 t/t_1` (:math:`r_1` = ``first_ratio``), :math:`c = r_1/t_1`:
    :math:`L = -\log(1 + r)`,
    :math:`L' = -c/(1 + r)`, :math:`L'' = c^2/(1 + r)^2`. At a knot :math:`w = 1` exactly, so
    :math:`L(t_k) = \log\mathrm{sigmoid}(\ell_k)`, :math:`\log\bar\alpha_k` to round-off.
    """
    knots, ell = tables
    n = len(cls.knots) - 1
    k = ns.clip(ns.searchsorted(knots, t), 2, max(n, 2)) if n >= 2 else None
    t1 = float(cls.knots[1])
    c = cls.first_ratio / t1
    r = cls.first_ratio * (t / t1)  # exactly r_1 at t = t_1
    if order == 0:
        first = -ns.log1p(r)
    elif order == 1:
        first = -c / (1 + r)
    else:
        first = (c / (1 + r)) ** 2
    if k is None:  # one knot: the first interval, extended
        return first
    lo, hi = knots[k - 1], knots[k]
    w = (t - lo) / (hi - lo)
    ell_lo, ell_hi = ell[k - 1], ell[k]
    lam = (1 - w) * ell_lo + w * ell_hi
    if order == 0:
        rest = ns.logsigmoid(lam)
    else:
        slope = (ell_hi - ell_lo) / (hi - lo)
        rest = slope * ns.sigmoid(-lam) if order == 1 else -(slope**2) * ns.sigmoid(lam) * ns.sigmoid(-lam)
    return ns.where(t <= knots[1], first, rest)
