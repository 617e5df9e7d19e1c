"""Durable, resumable per-chunk results of ``sdekit logp``: the parts directory and the final assembly.

A run over n rows in chunks of ``chunk_size`` keeps its finished chunks in a *parts directory* next to the
result (``results.npy`` -> ``results.npy.parts/``)::

    results.npy.parts/
        manifest.json       what is being computed (data identity, model, SDE, options, seed, chunk size)
        chunk-000000.npy    log p of rows [0, chunk_size), float64, shape (rows of the chunk,)
        chunk-000001.npy    ...
        .lock               held (flock) by the running process

Every file is written *durably*: to a temporary file in the same directory, flushed and ``os.fsync``-ed,
renamed over its final name with ``os.replace`` (atomic on POSIX and Windows) and the directory fsync-ed so
the rename itself survives a crash. A chunk file therefore either exists complete or not at all; a killed
run leaves at most a temporary ``.chunk-*.tmp`` file, which the next run deletes. Chunk i always holds rows
``[i * chunk_size, min((i + 1) * chunk_size, n))``, so resuming recomputes exactly the missing chunks: no row
is lost or written twice. The result (``.npy`` or ``.parquet``) is assembled the same way, streaming chunk
by chunk (memory bounded by one chunk), and only then is the parts directory removed.

This module needs numpy only (pyarrow for parquet, imported when a parquet file is written).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "FORMAT",
    "MANIFEST",
    "ChunkStore",
    "Lock",
    "differences",
    "fsync_dir",
    "parts_dir",
    "read_manifest",
    "write_atomic",
    "write_npy",
    "write_parquet",
]

FORMAT = "sdekit-logp-parts/1"
"""``manifest["format"]``: the layout described in this module's docstring, version 1."""

MANIFEST = "manifest.json"
_CHUNK = re.compile(r"chunk-(\d+)\.npy")
_TEMP_PREFIX = ".tmp-"

INFORMATIONAL = ("data_path", "versions", "created")
"""Manifest keys recorded for the reader but not compared on resume (the data may move; a new torch may be
installed mid-job: the rows already written stay valid, the new ones may differ in the last bits)."""


def parts_dir(out: Path) -> Path:
    """The parts directory of the result ``out``: ``out`` with ``.parts`` appended (``results.npy.parts``)."""
    return out.with_name(out.name + ".parts")


def fsync_dir(directory: Path) -> None:
    """Flush ``directory``'s entries (a rename or a new file in it) to disk; a no-op where directories cannot be
    opened (Windows, whose ``os.replace`` is durable by itself)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename is then as durable as they allow
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` durably: ``write(file)`` into a temporary file of the same directory, flush, fsync,
    ``os.replace`` onto ``path``, fsync the directory. Readers see the old file or the complete new one."""
    fd, tmp = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of a parts directory (None if it has none); ValueError if it is not a readable manifest."""
    path = directory / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{os.fspath(path)!r} is not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a manifest of format {FORMAT!r}")
    return manifest


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"key old -> new"`` for every compared manifest entry that differs (keys of :data:`INFORMATIONAL` are not
    compared; the command-line options of ``manifest["arguments"]`` are shown by their name, ``--seed 0 -> 1``)."""
    a = _flat({k: v for k, v in old.items() if k not in INFORMATIONAL})
    b = _flat({k: v for k, v in new.items() if k not in INFORMATIONAL})
    return [
        f"{key.removeprefix('arguments.')} {_short(a.get(key))} -> {_short(b.get(key))}"
        for key in sorted(a.keys() | b.keys())
        if a.get(key) != b.get(key)
    ]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Lock:
    """An exclusive ``flock`` on ``directory/.lock`` for one run (released by the OS if the process dies).

    Where ``fcntl`` does not exist (Windows) it locks nothing: two concurrent runs on one result then compute the
    same chunks twice, each written whole, so the result is still right.
    """

    def __init__(self, directory: Path):
        self.path = directory / ".lock"
        self.file: IO[str] | None = None

    def acquire(self) -> int | None:
        """Take the lock; on failure return the pid written by the holder (0 if unknown) and hold nothing."""
        try:
            # lazy: POSIX only
            import fcntl
        except ImportError:
            return None
        f = open(self.path, "a+", encoding="utf-8")  # held open for the run: closing it releases the lock
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            return int(holder) if holder.isdigit() else 0
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self.file = f
        return None

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing releases the flock
            self.file = None


@dataclass
class ChunkStore:
    """The finished chunks of a run: chunk i is ``chunk-{i:06d}.npy`` holding log p of rows
    ``[i * chunk_size, min((i + 1) * chunk_size, rows))`` as float64."""

    directory: Path
    rows: int
    chunk_size: int

    @property
    def n_chunks(self) -> int:
        return -(-self.rows // self.chunk_size)

    def bounds(self, index: int) -> tuple[int, int]:
        """The rows ``[start, stop)`` of chunk ``index``."""
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.rows)

    def path(self, index: int) -> Path:
        return self.directory / f"chunk-{index:06d}.npy"

    def create(self, manifest: dict[str, Any]) -> None:
        """Make the directory (and its parents) and write ``manifest`` durably if there is none yet."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fsync_dir(self.directory.parent)
        if not (self.directory / MANIFEST).exists():
            text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            write_atomic(self.directory / MANIFEST, lambda f: f.write(text.encode("utf-8")))

    def chunk_files(self) -> dict[int, Path]:
        """Index -> file of every chunk file present (not checked)."""
        found = {}
        for entry in self.directory.iterdir():
            match = _CHUNK.fullmatch(entry.name)
            if match:
                found[int(match.group(1))] = entry
        return found

    def finished(self) -> tuple[set[int], list[str]]:
        """The chunks already written and valid, and what was discarded: temporary files of a killed run, and
        chunk files that do not hold the right number of finite float64 values (which the atomic writes rule
        out short of disk corruption or a hand edit), so that they are computed again."""
        discarded = []
        for entry in self.directory.iterdir():
            if entry.name.startswith(_TEMP_PREFIX):
                entry.unlink()
                discarded.append(entry.name)
        done = set()
        for index, path in sorted(self.chunk_files().items()):
            if index < self.n_chunks and self._valid(index, path):
                done.add(index)
            else:
                path.unlink()
                discarded.append(path.name)
        if discarded:
            fsync_dir(self.directory)
        return done, discarded

    def _valid(self, index: int, path: Path) -> bool:
        try:
            values = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return False
        start, stop = self.bounds(index)
        return values.dtype == np.float64 and values.shape == (stop - start,) and bool(np.isfinite(values).all())

    def write(self, index: int, values: np.ndarray) -> None:
        """Write chunk ``index`` durably (``values``: float64 of the chunk's length)."""
        start, stop = self.bounds(index)
        values = np.ascontiguousarray(values, dtype=np.float64)
        if values.shape != (stop - start,):
            raise ValueError(f"chunk {index} holds rows [{start}, {stop}), got {values.shape[0]} values")
        write_atomic(self.path(index), lambda f: np.save(f, values, allow_pickle=False))

    def values(self) -> Iterator[np.ndarray]:
        """The finished chunks in order (every chunk must be finished)."""
        for index in range(self.n_chunks):
            yield np.load(self.path(index), allow_pickle=False)

    def remove(self) -> None:
        """Delete the parts directory."""
        shutil.rmtree(self.directory)
        fsync_dir(self.directory.parent)


def write_npy(out: Path, rows: int, chunks: Iterator[np.ndarray]) -> None:
    """Write the float64 vector of length ``rows`` from ``chunks`` to ``out`` (.npy) durably, one chunk in memory."""

    def write(f: IO[bytes]) -> None:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (rows,)})
        for values in chunks:
            f.write(values.astype("<f8", copy=False).tobytes())

    write_atomic(out, write)


def write_parquet(out: Path, chunks: Iterator[np.ndarray]) -> None:
    """Write columns ``row`` (int64, the row of the data) and ``logp`` (float64) to ``out`` (.parquet) durably,
    one row group per chunk."""
    # lazy: pyarrow is the optional extra sdekit[parquet], needed only for .parquet results
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("row", pa.int64()), ("logp", pa.float64())])

    def write(f: IO[bytes]) -> None:
        start = 0
        with pq.ParquetWriter(f, schema) as writer:
            for values in chunks:
                rows = np.arange(start, start + len(values), dtype=np.int64)
                writer.write_table(pa.table({"row": rows, "logp": values}, schema=schema))
                start += len(values)

    write_atomic(out, write)
