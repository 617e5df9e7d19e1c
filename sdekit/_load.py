"""Load a user's SDE class named ``module:Class`` (the command-line form shared by ``sdekit demo`` and ``derive``)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__all__ = ["load_sde"]


def load_sde(spec: str) -> Any:
    """Import ``module``, take its ``Class`` (an ``sdekit.SDE`` subclass) and instantiate it with its defaults.

    The current directory is importable (console scripts do not put it on ``sys.path``). Every failure is a
    ``ValueError`` with a one-line reason.
    """
    from .symbolic.sde import SDE

    if spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError("expected 'module:Class' (e.g. mypkg.sdes:MySDE)")
    mod_name, cls_name = spec.split(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except Exception as err:
        raise ValueError(f"cannot import module {mod_name!r} ({type(err).__name__}: {err})") from err
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ValueError(f"module {mod_name!r} has no attribute {cls_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, SDE)):
        raise ValueError(f"{cls_name} is not a subclass of sdekit.SDE")
    try:
        return cls()
    except Exception as err:
        raise ValueError(f"{cls_name}() failed ({type(err).__name__}: {err})") from err
