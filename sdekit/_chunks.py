r"""A batch processed in chunks of rows: ``chunk_size=`` of :func:`sdekit.sample` and :func:`sdekit.logp`.

The rows ``[0, batch)`` are cut into consecutive chunks of at most ``chunk_size`` rows (whole random blocks
when ``chunk_size`` holds at least one: :func:`chunk_rows`); each chunk is drawn,
solved and finished on its own and its results are copied into outputs allocated once for the whole batch,
so the working memory (states, solver stages, the model's activations, autograd buffers of the divergence)
is that of one chunk. Random draws come from per-block :class:`~sdekit._random.Streams` made once from the
caller's generator: every chunk takes a fresh view of its rows, so a row's numbers do not depend on the
chunking and fixed-step results are bit-identical for every ``chunk_size`` (``docs/sampling.md``,
"Determinism and chunks").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ._random import RandomSource, Streams, block_rows

__all__ = ["Stitched", "check_chunk_size", "chunk_rows", "chunk_source", "make_streams"]


def check_chunk_size(chunk_size: Any) -> int | None:
    """``chunk_size`` if it is None or a positive int (not a bool), else a TypeError/ValueError saying what to pass."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(
            f"chunk_size must be a positive int (rows per chunk) or None (the whole batch at once), "
            f"got {type(chunk_size).__name__} {chunk_size!r}"
        )
    if chunk_size < 1:
        raise ValueError(
            f"chunk_size must be a positive int (rows per chunk) or None (the whole batch at once), got {chunk_size}"
        )
    return chunk_size


def chunk_rows(batch: int, chunk_size: int | None, row_numel: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` row ranges of at most ``chunk_size`` rows covering ``[0, batch)``.

    A ``chunk_size`` of at least one random block (:func:`~sdekit._random.block_rows` of ``row_numel``) is rounded
    down to whole blocks, so that no chunk redraws a block it shares with its neighbour; smaller chunks draw
    their block whole and keep their rows (same numbers, more drawing).
    """
    if chunk_size is None or chunk_size >= batch:
        return [(0, batch)]
    block = block_rows(row_numel)
    size = chunk_size if chunk_size < block else chunk_size // block * block
    return [(a, min(a + size, batch)) for a in range(0, batch, size)]


def make_streams(generator: torch.Generator | None, shape: Sequence[int]) -> Streams | None:
    """Per-block streams for a batch of ``shape`` (batch first) seeded by one draw from ``generator``; None
    without a generator (draws then come from torch's global generator, in chunk order)."""
    if generator is None:
        return None
    return Streams.of(generator, int(shape[0]), math.prod(shape[1:]))


def chunk_source(streams: Streams | None, start: int, stop: int) -> RandomSource:
    """What the chunk ``[start, stop)`` draws from: a fresh view of ``streams`` (None stays None)."""
    return None if streams is None else streams.chunk(start, stop)


class Stitched:
    """The whole batch's outputs, filled chunk by chunk.

    :meth:`put` takes one chunk's tensors and the dimension of each that holds the rows. A single chunk covering
    the batch is kept as it is (no copy). Otherwise each output is allocated once, at the first chunk, and every
    chunk is copied into its rows, so memory holds one copy of the results plus one chunk's work; outputs that
    carry an autograd graph are concatenated at the end instead (:meth:`result`), which keeps the graph.
    """

    def __init__(self, batch: int, dims: Sequence[int]):
        self.batch = batch
        self.dims = tuple(dims)
        self._full: list[torch.Tensor] | None = None
        self._parts: list[list[torch.Tensor]] = [[] for _ in self.dims]
        self._concat: bool | None = None

    def put(self, start: int, stop: int, tensors: Sequence[torch.Tensor]) -> None:
        """Store the chunk ``[start, stop)`` of every output."""
        if self._concat is None:  # decided at the first chunk
            self._concat = (start, stop) == (0, self.batch) or any(t.requires_grad for t in tensors)
        if self._concat:
            for parts, t in zip(self._parts, tensors, strict=True):
                parts.append(t)
            return
        if self._full is None:
            self._full = [
                t.new_empty((*t.shape[:d], self.batch, *t.shape[d + 1 :]))
                for t, d in zip(tensors, self.dims, strict=True)
            ]
        for full, t, d in zip(self._full, tensors, self.dims, strict=True):
            full.narrow(d, start, stop - start).copy_(t)

    def result(self) -> list[torch.Tensor]:
        """The outputs for the whole batch."""
        if self._full is not None:
            return self._full
        return [parts[0] if len(parts) == 1 else torch.cat(parts, dim=d) for parts, d in zip(self._parts, self.dims)]
