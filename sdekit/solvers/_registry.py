"""The one solver registry: name -> Solver subclass."""

from __future__ import annotations

import difflib

from ..errors import UnknownSolverError
from ._base import Solver

__all__ = ["register", "get", "available", "REGISTRY"]

REGISTRY: dict[str, type[Solver]] = {}
_ALIASES: dict[str, str] = {}


def register(cls: type[Solver] | None = None, *, aliases: tuple[str, ...] = ()):
    """Class decorator adding a :class:`Solver` subclass to the registry under ``cls.name``."""

    def add(klass: type[Solver]) -> type[Solver]:
        if not (isinstance(klass, type) and issubclass(klass, Solver)):
            raise TypeError(f"register() takes a Solver subclass, got {klass!r}")
        REGISTRY[klass.name] = klass
        for alias in aliases:
            _ALIASES[alias] = klass.name
        return klass

    return add(cls) if cls is not None else add


def resolve(name: str) -> str:
    """Canonical registry name for ``name`` (aliases such as ``dopri5`` -> ``ode:dopri5``)."""
    if name in REGISTRY:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    known = sorted(set(REGISTRY) | set(_ALIASES))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownSolverError(f"unknown solver {name!r}.{hint} Available: {', '.join(sorted(REGISTRY))}")


def get(name: str) -> Solver:
    """A fresh instance of the solver registered as ``name`` (or an alias)."""
    return REGISTRY[resolve(name)]()


def available() -> dict[str, type[Solver]]:
    """Registered solvers by name (a copy)."""
    return dict(REGISTRY)
