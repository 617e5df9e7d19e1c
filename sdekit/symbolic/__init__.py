"""Symbolic layer (sympy only): the symbols ``x`` and ``t``, derivations (:mod:`.derive`), closed-form integrals
and the symbolic checks (:mod:`.checks`).

The :class:`~sdekit.SDE` base class (:mod:`sdekit.symbolic.sde`) and the built-in zoo (:mod:`sdekit.symbolic.zoo`)
sit one layer up: an SDE derives its expressions here and builds its compiled runtime objects (marginal, reverse
SDE, probability-flow ODE) from them, so this package does not import them.
"""

from ._symbols import t, x

__all__ = ["x", "t"]
