"""Option checks shared by the commands (``sdekit demo``, ``sdekit logp``, ``sdekit validate`` /
``python -m validation``).

Each check runs before any work starts, creates nothing, and raises :class:`OptionError` with a one-line
message that names the option, says what was wrong and what to pass instead. Nothing heavy is imported.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["OptionError", "MAX_SEED", "check_seed", "check_out_dir", "check_device"]

MAX_SEED = 2**32 - 1
"""Largest accepted ``--seed``: seeds are 32-bit, so that every seed a command derives from it (e.g. the demo's
per-run ``seed * 1_000_003 + crc32(...)``) stays inside the 64-bit range of ``torch.Generator.manual_seed``."""


class OptionError(ValueError):
    """A bad command-line option (printed as ``prog: error: <message>``, exit code 2)."""


def check_seed(seed: int, option: str = "--seed") -> int:
    """``seed`` if it is an integer in [0, :data:`MAX_SEED`], else :class:`OptionError`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise OptionError(
            f"{option} {seed!r}: expected an integer from 0 to {MAX_SEED} (2**32 - 1; seeds are 32-bit so that "
            "the seeds derived from it stay in torch's range)"
        )
    return seed


def _probe(directory: Path) -> str | None:
    """Why a directory cannot be created in ``directory`` (None if it can): made and removed at once."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sdekit-write-test-", dir=directory))
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}"
    return None


def _exists(path: Path, option: str, shown: str) -> bool:
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        raise OptionError(
            f"{option} {shown!r}: cannot access {os.fspath(path)!r} ({type(err).__name__}: {err.strerror or err}); "
            "choose a location you can write to"
        ) from err
    return True


def check_out_dir(value: str | os.PathLike[str], option: str = "--out") -> Path:
    """The output directory ``value`` as a :class:`~pathlib.Path`, checked to be creatable and writable.

    Refused: a path that exists and is not a directory; a path below an existing regular file
    (``FILE/sub``); a directory (or, when the path does not exist yet, its nearest existing parent) in
    which nothing can be created (permissions, read-only or virtual file systems such as ``/proc``).
    Nothing is left behind: the write test makes an empty directory and removes it.
    """
    out = Path(value).expanduser()
    shown = os.fspath(value)
    if _exists(out, option, shown):
        if not out.is_dir():
            raise OptionError(f"{option} {shown!r} exists and is not a directory; pass a directory path")
        why = _probe(out)
        if why:
            raise OptionError(f"{option} {shown!r}: cannot write in this directory ({why}); choose a writable one")
        return out
    parent = out.parent  # as the user wrote it (relative paths end at ".", which exists)
    while not _exists(parent, option, shown):
        parent = parent.parent
    if not parent.is_dir():
        raise OptionError(
            f"{option} {shown!r}: {os.fspath(parent)!r} is a file, not a directory, so nothing can be created "
            "below it; choose another path"
        )
    why = _probe(parent)
    if why:
        raise OptionError(
            f"{option} {shown!r}: cannot create it in {os.fspath(parent)!r} ({why}); choose a writable location"
        )
    return out


def check_device(value: str, option: str = "--device") -> torch.device:
    """The torch device ``value`` (cpu, cuda[:index], mps), checked to exist on this machine (loads torch)."""
    # lazy: the commands' parsers load neither torch nor sympy
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError) as err:
        raise OptionError(f"{option} {value!r}: not a torch device ({err}); use cpu or cuda[:index]") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"{option} {value!r}: CUDA is not available on this machine; use {option} cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OptionError(f"{option} {value!r}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise OptionError(f"{option} {value!r}: MPS is not available on this machine; use {option} cpu")
    elif device.type != "cpu":
        raise OptionError(f"{option} {value!r}: use cpu, cuda[:index] or mps")
    return device
