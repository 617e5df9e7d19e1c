"""Persistent cache of symbolic derivations, shared by every process of a user.

Deriving the Gaussian marginal of an affine SDE means integrating its moment ODEs with
sympy, which costs from a fraction of a second to ~10 s per SDE class (the cosine
schedule; a few seconds more when sympy has to time out before the quadrature fallback).
Within a process the result is cached per class already (``_SYMBOLIC_CACHE`` in
:mod:`sdekit.symbolic.sde`); this module keeps it across processes: test workers,
``sdekit demo``, ``python -m validation`` and a user's scripts derive each SDE once.

Entries are pickles of the derived sympy expressions, named by a hash of

* what was derived (``kind``) and the exact symbolic inputs (``sympy.srepr`` of the drift and
  diffusion, so parameter symbols and their assumptions are part of the key), and
* a fingerprint of the code that derives: the source of :mod:`sdekit.symbolic.derive` and
  :mod:`sdekit.symbolic._integrate` and the sympy and Python versions,

so an edit of the derivation code or an upgrade of sympy never reads an old entry. A
missing, unreadable or corrupt entry is recomputed (and rewritten atomically); a cache
directory that cannot be written is silently skipped.

Location: ``$SDEKIT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/sdekit`` or
``~/.cache/sdekit``. ``SDEKIT_NO_CACHE=1`` turns the disk cache off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sympy as sp

from . import _components, _integrate, derive

__all__ = ["cache_dir", "cached_derivation"]

T = TypeVar("T")


def cache_dir() -> Path | None:
    """The directory of the derivation cache, or None when ``SDEKIT_NO_CACHE`` is set (not "0" or empty)."""
    if os.environ.get("SDEKIT_NO_CACHE", "") not in ("", "0"):
        return None
    explicit = os.environ.get("SDEKIT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "sdekit"


@functools.cache
def _code_fingerprint() -> str:
    digest = hashlib.sha256()
    digest.update(f"sympy {sp.__version__} python {sys.version_info[:2]}".encode())
    for module in (derive, _integrate, _components):
        digest.update(Path(module.__file__).read_bytes())  # type: ignore[arg-type]
    return digest.hexdigest()


def _entry(kind: str, inputs: tuple[sp.Basic, ...]) -> str:
    digest = hashlib.sha256(_code_fingerprint().encode())
    digest.update(kind.encode())
    for expr in inputs:
        digest.update(b"\0" + sp.srepr(expr).encode())
    return f"{kind}-{digest.hexdigest()[:32]}.pkl"


def cached_derivation(kind: str, inputs: tuple[sp.Basic, ...], compute: Callable[[], T], expect: type[T]) -> T:
    """``compute()``, read from / written to the disk cache under a key made of ``kind`` and ``inputs``.

    ``inputs`` must determine the result completely (together with the derivation code, which is
    part of the key). Any failure to read or write the cache falls back to computing, and so does an
    entry that unpickles to something other than an ``expect`` instance.
    """
    directory = cache_dir()
    if directory is None:
        return compute()
    path = directory / _entry(kind, inputs)
    try:
        with path.open("rb") as fh:
            value = pickle.load(fh)
        if isinstance(value, expect):
            return value
    except Exception:  # missing, corrupt or incompatible entry: compute (and overwrite) it
        pass
    value = compute()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pkl")
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)  # atomic: concurrent processes never see a partial entry
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except Exception:  # read-only home, full disk, unpicklable value: the cache is an optimisation only
        pass
    return value
