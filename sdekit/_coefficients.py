r"""What the runtime needs from an affine SDE's declaration, compiled once per SDE.

For :math:`f = a(t)\,x + b(t)`, :math:`g = g(t)` the reverse-time and probability-flow drifts are

.. math:: a x + b + r(t)\,s_\theta(x, t), \qquad a x + b + k(t)\,s_\theta(x, t),

with :math:`r = -g^2` and :math:`k = -g^2/2` read off the symbolic drifts
(:func:`sdekit.symbolic.derive.score_scales`). :attr:`sdekit.SDE.affine_coefficients` holds them as
tensor functions of time and, where Python's ``math`` module can evaluate them, as plain-float
closures for loops that need them once per step. Solvers and the likelihood ask for these; they never
differentiate or lambdify an expression themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from .compile import CompiledTimeFn, FloatFn

__all__ = ["AffineCoefficients", "FloatCoefficients"]


@dataclass(frozen=True)
class FloatCoefficients:
    """Plain-float closures ``t -> float`` of :math:`a, b, g, r = -g^2, k = -g^2/2` (``math`` module)."""

    a: FloatFn
    b: FloatFn
    g: FloatFn
    reverse_scale: FloatFn
    flow_scale: FloatFn


@dataclass(frozen=True)
class AffineCoefficients:
    r"""Compiled coefficients of an affine SDE :math:`dx = (a(t)x + b(t))\,dt + g(t)\,dW` (tensor in, tensor out).

    Attributes:
        a, b, g, g2: :math:`a(t)`, :math:`b(t)`, :math:`g(t)`, :math:`g(t)^2`.
        reverse_scale: :math:`r(t) = -g^2`, the score's coefficient in the reverse drift.
        flow_scale: :math:`k(t) = -g^2/2`, the score's coefficient in the probability-flow drift.
        floats: the same as plain-float closures, or None when one of them has no ``math``-module form.
    """

    a: CompiledTimeFn
    b: CompiledTimeFn
    g: CompiledTimeFn
    g2: CompiledTimeFn
    reverse_scale: CompiledTimeFn
    flow_scale: CompiledTimeFn
    floats: FloatCoefficients | None
