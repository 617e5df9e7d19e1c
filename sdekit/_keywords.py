"""Close-match suggestions for a misspelt keyword argument of an entry point with a fixed signature.

Python 3.13 adds "Did you mean ...?" to the ``TypeError`` of an unexpected keyword argument; Python 3.10–3.12
(sdekit supports 3.10+) say only ``simulate() got an unexpected keyword argument 'stpes'``.
:func:`suggest_keywords` gives every supported Python the 3.13 message for :func:`sdekit.simulate` and
:func:`sdekit.logp`: before the call it compares the keyword names with the function's parameters (one set
difference) and raises the same ``TypeError`` with the close matches. The signature is unchanged for ``help()``,
:func:`inspect.signature` (through ``__wrapped__``), the docs and type checkers (``ParamSpec``).

:func:`sdekit.sample` takes ``**options`` (the solver's options), so a misspelt keyword reaches the solver's option
check instead, which suggests among the solver's options and ``sample``'s own arguments
(:meth:`sdekit.solvers.Solver.check_options`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from .solvers._option import close_matches

__all__ = ["suggest_keywords", "unexpected_keyword"]

P = ParamSpec("P")
R = TypeVar("R")


def unexpected_keyword(function: str, key: str, names: list[str]) -> TypeError:
    """The ``TypeError`` of Python 3.13 for ``function(..., key=...)``: close matches of ``key`` among ``names``."""
    close = close_matches(key, names)
    hint = f". Did you mean {' or '.join(map(repr, close))}?" if close else ""
    return TypeError(f"{function}() got an unexpected keyword argument {key!r}{hint}")


def suggest_keywords(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` raising :func:`unexpected_keyword`'s ``TypeError`` for a keyword that is none of its parameters.

    Functions with ``**kwargs`` are returned unchanged (every keyword is theirs).
    """
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return fn
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    known = frozenset(names)
    qualname = getattr(fn, "__name__", "function")

    @functools.wraps(fn)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        if not known.issuperset(kwargs):
            key = next(k for k in kwargs if k not in known)
            raise unexpected_keyword(qualname, key, names)
        return fn(*args, **kwargs)

    return checked
