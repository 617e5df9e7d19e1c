"""Symbolic layer: declarations (:class:`SDE`), derivations and the built-in zoo."""

from ._symbols import t, x
from .sde import SDE

__all__ = ["SDE", "x", "t"]
