"""Exception hierarchy of sdekit.

Every error raised on purpose by sdekit derives from :class:`SdekitError`, so
``except sdekit.errors.SdekitError`` catches all of them. Messages say what was
wrong and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "SdekitError",
    "SDEDeclarationError",
    "NotAffineError",
    "UnknownSolverError",
    "SolverError",
    "SolverDivergedError",
    "SolverOptionError",
    "ModelOutputError",
    "AdapterError",
]


class SdekitError(Exception):
    """Base class of every error sdekit raises on purpose."""


class SDEDeclarationError(SdekitError, ValueError):
    """An :class:`sdekit.SDE` declaration is invalid (bad method, parameter or horizon)."""


class NotAffineError(SdekitError, TypeError):
    """A Gaussian marginal was requested from an SDE whose drift is not affine in x
    or whose diffusion depends on x."""


class UnknownSolverError(SdekitError, ValueError):
    """A solver name is not in the registry; the message lists close matches."""


class SolverError(SdekitError, RuntimeError):
    """A solver cannot handle the problem it was given (the message says why)."""


class SolverDivergedError(SolverError):
    """The state became non-finite; the message gives the time and step where it happened."""

    def __init__(self, message: str, *, t: float | None = None, step: int | None = None):
        super().__init__(message)
        self.t = t
        self.step = step


class SolverOptionError(SolverError, ValueError):
    """A solver option is unknown (the message suggests close names) or its value has the wrong type or lies
    outside its declared range (the message names the solver, the option, the value, what is accepted and the
    default). Also a :class:`ValueError`, as the other invalid arguments of the entry points."""


class ModelOutputError(SdekitError, ValueError):
    """A model returned a tensor of the wrong shape or dtype, or non-finite values."""


class AdapterError(SdekitError, ValueError):
    """A network adapter (:mod:`sdekit.adapters`) got a configuration that does not fit: an unknown SDE name, a noise
    range with sigma_min >= sigma_max, a network that is not callable, a bad event shape. The message names the
    argument and the accepted values."""
