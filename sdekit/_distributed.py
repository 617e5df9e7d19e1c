r"""``distributed=True`` of :func:`sdekit.sample` and :func:`sdekit.logp`: whole chunks per rank, one gather at the end.

Under an initialised ``torch.distributed`` process group of W ranks (``torchrun --nproc-per-node W``), the batch's
rows are cut into chunks exactly as a single process cuts them (:func:`~sdekit._chunks.chunk_rows` of
``chunk_size``), chunk i is solved by rank ``i % W``, and the finished chunks are gathered in row order:

* **Random numbers.** The base seed of the per-block streams (:class:`~sdekit._random.Streams`) is drawn from the
  user's generator on every rank (so every generator advances as in one process) and rank 0's value is broadcast
  (one collective, before any solve). Each chunk then draws from a fresh view of its own rows, so row i gets the
  numbers it gets in one process, whichever rank solves it.
* **No collective inside a solve.** Each rank runs its chunks to the end on its own (adaptive solvers choose their
  steps per chunk, as in one process); the only communication afterwards is one exchange of the pieces' sizes, one
  gather per output (padded to the largest piece) and one ``all_reduce`` of the counts (``nfe``, steps).
* **The result** is therefore bit-identical to one process with the same seed, solver and ``chunk_size``, for any
  number of ranks. Without ``chunk_size`` the batch is split into :func:`default_chunk_size` rows per chunk (about
  one chunk per rank, whole random blocks): one process reproduces it with that ``chunk_size``.

See ``docs/distributed.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._chunks import Stitched, chunk_rows, make_streams
from ._random import Streams, block_rows

__all__ = ["GATHERS", "Plan", "default_chunk_size", "graph_option", "plan_chunks"]

GATHERS = ("all", "rank0")
"""``gather=``: ``"all"`` (every rank gets the whole result) or ``"rank0"`` (rank 0 gets it, the others None)."""


def default_chunk_size(batch: int, world: int, row_numel: int) -> int:
    """Rows per chunk of a distributed run without ``chunk_size``: ``ceil(batch / world)``, rounded up to whole
    random blocks (:func:`~sdekit._random.block_rows`) when it holds at least one, so each rank gets at most one
    contiguous chunk and no block is drawn by two ranks."""
    per = -(-batch // world)
    block = block_rows(row_numel)
    return per if per < block else -(-per // block) * block


def graph_option(distributed: Any, create_graph: Any) -> Any:
    """``create_graph`` of a :func:`sdekit.logp` call: False by default with ``distributed=True`` (the gathered
    result carries no graph), True refused; unchanged otherwise."""
    if distributed is not True:
        return create_graph
    if create_graph is True:
        raise ValueError(
            "distributed=True gathers results without their autograd graph, so create_graph=True cannot hold; "
            "drop distributed=True to differentiate (e.g. wrap the model in DistributedDataParallel per rank)"
        )
    return False if create_graph is None else create_graph


def _check_group(distributed: Any, gather: Any) -> tuple[int, int] | None:
    """(rank, world size) of the default process group for ``distributed=True`` (None: run in this process)."""
    if not isinstance(distributed, bool):
        raise TypeError(f"distributed must be True or False, got {distributed!r}")
    if not isinstance(gather, str) or gather not in GATHERS:
        raise ValueError(f"gather must be 'all' (every rank gets the result) or 'rank0' (rank 0 only), got {gather!r}")
    if not distributed:
        if gather != "all":
            raise ValueError(f"gather={gather!r} needs distributed=True; drop gather= or pass distributed=True")
        return None
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "distributed=True needs an initialised torch.distributed process group: launch with torchrun and call "
            "torch.distributed.init_process_group() first (backend 'gloo' on CPU, 'nccl' on GPUs), or drop "
            "distributed=True"
        )
    return dist.get_rank(), dist.get_world_size()


def _comm_device() -> torch.device:
    """Where the collectives' tensors live: the current CUDA device under NCCL, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclass
class Plan:
    """The chunks of a run and which of them this process solves.

    Attributes:
        rows: every chunk's ``(start, stop)`` rows, in order (the same on every rank).
        mine: the indices of the chunks this rank solves (all of them without distribution).
        rank, world: this rank and the number of ranks (0 and 1 without distribution).
        gather: ``"all"`` or ``"rank0"``.
    """

    rows: list[tuple[int, int]]
    mine: list[int]
    rank: int = 0
    world: int = 1
    gather: str = "all"

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def local_rows(self) -> list[tuple[int, int]]:
        """The ``(start, stop)`` of this rank's chunks, in order."""
        return [self.rows[i] for i in self.mine]

    @property
    def receives(self) -> bool:
        """Whether this rank gets the result (every rank with ``gather="all"``, rank 0 with ``"rank0"``)."""
        return self.gather == "all" or self.rank == 0

    def streams(self, generator: torch.Generator | None, shape: Sequence[int]) -> Streams | None:
        """The run's per-block streams (:func:`~sdekit._chunks.make_streams`), with rank 0's base seed on every
        rank (the seed is drawn on every rank, so the generators advance alike, then broadcast once)."""
        streams = make_streams(generator, shape)
        if streams is None or not self.distributed:
            return streams
        seed = torch.tensor([streams.seed - 2**63], dtype=torch.int64, device=_comm_device())  # a signed int64
        torch.distributed.broadcast(seed, src=0)
        return Streams(int(seed.item()) + 2**63, streams.batch, streams.block, streams.device)

    def collector(self, batch: int, dims: Sequence[int]) -> Stitched | _Pieces:
        """Where the chunks' outputs go: :class:`~sdekit._chunks.Stitched` in one process, else :class:`_Pieces`."""
        return _Pieces(self, dims) if self.distributed else Stitched(batch, dims)

    def total(self, counts: Sequence[int]) -> list[int]:
        """``counts`` summed over the ranks (one ``all_reduce`` after the solves; as they are in one process)."""
        if not self.distributed:
            return list(counts)
        t = torch.tensor(list(counts), dtype=torch.int64, device=_comm_device())
        torch.distributed.all_reduce(t)
        return [int(v) for v in t.tolist()]


def plan_chunks(
    distributed: Any, gather: Any, batch: int, chunk_size: int | None, row_numel: int
) -> tuple[Plan, int | None]:
    """The run's :class:`Plan` and its chunk size (:func:`default_chunk_size` for a distributed run without one).

    ``distributed=True`` under a group of one rank runs in this process as if it were False (``gather`` is then
    moot). Raises TypeError/ValueError for bad arguments and RuntimeError without an initialised group.
    """
    group = _check_group(distributed, gather)
    if group is None or group[1] == 1:
        rows = chunk_rows(batch, chunk_size, row_numel)
        return Plan(rows, list(range(len(rows)))), chunk_size
    rank, world = group
    size = default_chunk_size(batch, world, row_numel) if chunk_size is None else chunk_size
    rows = chunk_rows(batch, size, row_numel)
    return Plan(rows, list(range(rank, len(rows), world)), rank, world, gather), size


class _Pieces:
    """A rank's finished chunks of every output, gathered in row order by :meth:`result` (after every solve).

    Each output is moved to row-major (rows first), this rank's chunks are concatenated and flattened, the sizes
    and layouts are exchanged (``all_gather_object``: ranks without a chunk have none), every piece is padded to
    the largest and gathered (``all_gather``, or ``gather`` to rank 0), and the chunks are put back in order.
    """

    def __init__(self, plan: Plan, dims: Sequence[int]):
        self.plan, self.dims = plan, tuple(dims)
        self.parts: list[list[torch.Tensor]] = [[] for _ in self.dims]

    def put(self, start: int, stop: int, tensors: Sequence[torch.Tensor]) -> None:
        """Keep this rank's chunk ``[start, stop)`` of every output."""
        for parts, t, d in zip(self.parts, tensors, self.dims, strict=True):
            parts.append(t.detach().movedim(d, 0))

    def result(self) -> list[torch.Tensor | None]:
        """The outputs for the whole batch on the receiving ranks (None elsewhere); a collective: every rank calls
        it once, after its solves."""
        dist, plan = torch.distributed, self.plan
        local = [torch.cat(parts) if parts else None for parts in self.parts]
        layout = [
            None if t is None else (tuple(t.shape[1:]), str(t.dtype).removeprefix("torch."), t.device) for t in local
        ]
        layouts: list[Any] = [None] * plan.world
        dist.all_gather_object(layouts, layout)
        return [self._gather(k, local[k], layouts, d) for k, d in enumerate(self.dims)]

    def _gather(self, k: int, local: torch.Tensor | None, layouts: list[Any], dim: int) -> torch.Tensor | None:
        dist, plan, comm = torch.distributed, self.plan, _comm_device()
        tail, dtype_name, device = next(lay[k] for lay in layouts if lay is not None)
        dtype = getattr(torch, dtype_name)
        row_numel = math.prod(tail)
        counts = [sum(b - a for a, b in plan.rows[r :: plan.world]) * row_numel for r in range(plan.world)]
        flat = torch.zeros(max(counts), dtype=dtype, device=comm)
        if local is not None:
            flat[: local.numel()].copy_(local.reshape(-1))
        if plan.gather == "all":
            pieces = [torch.empty_like(flat) for _ in range(plan.world)]
            dist.all_gather(pieces, flat)
        else:
            pieces = [torch.empty_like(flat) for _ in range(plan.world)] if plan.rank == 0 else None
            dist.gather(flat, pieces, dst=0)
        if not plan.receives:
            return None
        assert pieces is not None
        offsets = [0] * plan.world
        chunks = []
        for i, (a, b) in enumerate(plan.rows):
            r, n = i % plan.world, (b - a) * row_numel
            chunks.append(pieces[r][offsets[r] : offsets[r] + n].reshape(b - a, *tail))
            offsets[r] += n
        return torch.cat(chunks).to(device).movedim(0, dim)
