r"""Seeded random draws: per-block streams that make results independent of chunking, on any device.

Every random number in sdekit is drawn through these functions, from one of three sources:

* ``None``: torch's default generator for the target device (no reproducibility beyond
  ``torch.manual_seed``, and results depend on how a batch is split into chunks);
* a ``torch.Generator``: draws straight from it (:func:`sdekit.simulate`, the losses, Langevin, the
  oracles' ``sample``);
* a :class:`Streams` (what :func:`sdekit.sample` and :func:`sdekit.logp` make from the user's
  generator): the batch is cut into fixed blocks of :attr:`Streams.block` rows, block k draws from its
  own generator seeded from (base seed, k), and a draw of shape ``(rows, ...)`` is assembled block by
  block. Row i's numbers therefore depend only on the seed, its block ``i // block``, the batch size
  (the last block may be short) and how many draws came before; not on which chunk of rows is being
  computed. A chunk that starts or ends inside a block draws that whole block and keeps its rows, so
  every chunk size gives the same numbers (sizes that are multiples of the block waste nothing).

torch raises when a generator's device differs from the device of the draw (``torch.randn(...,
generator=<cpu generator>, device="cuda")`` fails), and users usually seed a CPU ``torch.Generator``.
So the draw is made on the generator's device and moved to the target device: a CPU generator works
with CUDA data, and the same seed gives the same numbers on every device (the GPU then pays one
host-to-device copy per draw; pass a generator on the data's device to draw in place). Without a
generator the draw is made on the target device from torch's default generator for that device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["BLOCK_ELEMENTS", "RandomSource", "Streams", "block_rows", "multinomial", "rand", "randint", "randn"]

BLOCK_ELEMENTS: int = 2**16
"""Target number of random numbers per block and draw: :func:`block_rows` takes the least power of two of rows
that holds at least this many (32,768 rows for 2-D points, 32 for 3x32x32 images, one row from 65,536 numbers per
row on). Each block costs a few microseconds per draw on top of the numbers themselves (about 4-7 ns per float32
normal on CPU): measured +3-9 % on a float32 draw at this size, +13-17 % at 2^14 and +34-39 % at 2^12
(``docs/benchmarks.md``, "Random streams")."""

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF


def _fmix32(h: int) -> int:
    """MurmurHash3's 32-bit finaliser: a bijection of [0, 2^32) that scrambles neighbouring integers."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


def _mix64(x: int) -> int:
    """SplitMix64's finaliser (a bijection of [0, 2^64))."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def block_rows(row_numel: int) -> int:
    """Rows per block of a :class:`Streams` whose rows hold ``row_numel`` numbers: the least power of two with
    ``rows * row_numel >= BLOCK_ELEMENTS`` (32,768 rows for 2-D points, 32 for 3x32x32 images, 1 from 65,536)."""
    rows = 1
    while rows * max(1, row_numel) < BLOCK_ELEMENTS:
        rows *= 2
    return rows


class Streams:
    r"""Per-block random streams over rows ``[start, stop)`` of a batch of ``batch`` rows.

    Block k (rows ``[k B, min((k+1) B, batch))``, :math:`B` = :attr:`block`) draws from a ``torch.Generator``
    seeded with :math:`\mathrm{fmix32}((s + k) \bmod 2^{32})` (s the base seed): distinct blocks of one run never
    share a seed (torch's CPU generator keeps 32 bits of a seed), and neighbouring blocks get unrelated ones.
    The generators are made on first use; :meth:`chunk` gives a fresh view over some rows, whose draws for
    those rows equal the whole batch's.

    Args:
        seed: base seed (see :meth:`of`).
        batch: rows of the whole batch.
        block: rows per block (:func:`block_rows`).
        device: device of the generators (draws are moved to the data's device afterwards).
        start, stop: the rows this view draws (default: all).
    """

    __slots__ = ("_entropies", "_generators", "_whole", "batch", "block", "device", "seed", "start", "stop")

    def __init__(
        self,
        seed: int,
        batch: int,
        block: int,
        device: torch.device | str = "cpu",
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        stop = batch if stop is None else stop
        if batch < 1 or block < 1 or not 0 <= start < stop <= batch:
            raise ValueError(
                f"Streams needs 1 <= block and 0 <= start < stop <= batch, got {block=}, {start=}, {stop=}, {batch=}"
            )
        self.seed = int(seed) & _MASK64
        self.batch, self.block, self.start, self.stop = batch, block, start, stop
        self.device = torch.device(device)
        self._generators: dict[int, torch.Generator] = {}
        self._entropies = 0
        k = start // block  # a view of exactly one whole block (the usual small batch) draws without the loop
        self._whole = k if (start == k * block and stop == min((k + 1) * block, batch)) else None

    @classmethod
    def of(cls, generator: torch.Generator, batch: int, row_numel: int) -> Streams:
        """Streams for a batch of ``batch`` rows of ``row_numel`` numbers, seeded by one draw from ``generator``
        (which advances, so consecutive calls with one generator differ, as with direct draws)."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
        return cls(seed, batch, block_rows(row_numel), generator.device)

    @property
    def rows(self) -> int:
        """Rows this view draws: ``stop - start``."""
        return self.stop - self.start

    def chunk(self, start: int, stop: int) -> Streams:
        """A fresh view over rows ``[start, stop)`` of the batch (its generators start at the first draw)."""
        return Streams(self.seed, self.batch, self.block, self.device, start, stop)

    def entropy(self) -> int:
        """A 31-bit seed for one more random object of this view (torchsde's ``BrownianInterval``, one per solve
        segment): a hash of the base seed, the view's rows and how many seeds it gave before, so a given split of
        the batch always gets the same seeds and two objects of one view never share one."""
        self._entropies += 1
        return _mix64(_mix64(_mix64(self.seed ^ self.start) ^ self.stop) ^ self._entropies) >> 33

    def generator(self, k: int) -> torch.Generator:
        """Block k's generator (made and seeded on first use)."""
        g = self._generators.get(k)
        if g is None:
            g = torch.Generator(device=self.device)
            g.manual_seed(_fmix32((self.seed + k) & _MASK32))
            self._generators[k] = g
        return g

    def draw(
        self,
        fill: Callable[[torch.Tensor, torch.Generator], object],
        shape: Sequence[int],
        dtype: torch.dtype,
        batch_dim: int = 0,
    ) -> torch.Tensor:
        """A tensor of ``shape`` (``shape[batch_dim]`` = :attr:`rows`) on :attr:`device`, block by block.

        ``fill(t, g)`` fills a contiguous tensor shaped like one block in place from generator g. Whole blocks
        inside the view are filled where they lie; a block cut by the view is filled whole and its rows copied.
        """
        shape = tuple(shape)
        if shape[batch_dim] != self.rows:
            raise ValueError(
                f"a draw of shape {shape} from Streams over rows [{self.start}, {self.stop}) must have "
                f"{self.rows} rows along dim {batch_dim}"
            )
        out = torch.empty(shape, dtype=dtype, device=self.device)
        if self._whole is not None:
            fill(out, self.generator(self._whole))
            return out
        b = self.block
        for k in range(self.start // b, (self.stop - 1) // b + 1):
            lo, hi = k * b, min((k + 1) * b, self.batch)
            first, last = max(lo, self.start), min(hi, self.stop)
            view = out.narrow(batch_dim, first - self.start, last - first)
            if (first, last) == (lo, hi) and view.is_contiguous():
                fill(view, self.generator(k))
            else:
                whole_shape = (*shape[:batch_dim], hi - lo, *shape[batch_dim + 1 :])
                whole = torch.empty(whole_shape, dtype=dtype, device=self.device)
                fill(whole, self.generator(k))
                view.copy_(whole.narrow(batch_dim, first - lo, last - first))
        return out

    def __repr__(self) -> str:
        return (
            f"Streams(batch={self.batch}, block={self.block}, rows=[{self.start}, {self.stop}), device={self.device})"
        )


RandomSource = torch.Generator | Streams | None
"""Where draws come from: torch's default generator (None), a ``torch.Generator``, or :class:`Streams`."""


_CPU = torch.device("cpu")


def _source(generator: RandomSource, device: torch.device | str | None) -> tuple[torch.device, torch.device]:
    target = device if isinstance(device, torch.device) else _CPU if device is None else torch.device(device)
    return (generator.device if generator is not None else target), target


def _moved(z: torch.Tensor, source: torch.device, target: torch.device) -> torch.Tensor:
    return z if source == target else z.to(target)


def _floating(
    draw: Callable[..., torch.Tensor], fill: Callable[[torch.Tensor, torch.Generator], object], what: str
) -> Callable[..., torch.Tensor]:
    def sampler(
        shape: Sequence[int],
        *,
        generator: RandomSource,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        batch_dim: int = 0,
    ) -> torch.Tensor:
        source, target = _source(generator, device)
        if isinstance(generator, Streams):
            z = generator.draw(fill, shape, dtype or torch.get_default_dtype(), batch_dim)
        else:
            z = draw(tuple(shape), generator=generator, dtype=dtype, device=source)
        return _moved(z, source, target)

    sampler.__name__ = sampler.__qualname__ = draw.__name__
    sampler.__doc__ = (
        f"{what} draws of ``shape`` on ``device`` (drawn on the generator's device); with :class:`Streams`, "
        f"``shape[batch_dim]`` is the batch dimension."
    )
    return sampler


randn = _floating(torch.randn, lambda t, g: t.normal_(generator=g), "Standard normal")
rand = _floating(torch.rand, lambda t, g: t.uniform_(generator=g), "Uniform [0, 1)")


def randint(
    low: int,
    high: int,
    shape: Sequence[int],
    *,
    generator: RandomSource,
    device: torch.device | str | None = None,
    batch_dim: int = 0,
) -> torch.Tensor:
    """Integers uniform in [low, high) of ``shape`` on ``device`` (drawn on the generator's device); with
    :class:`Streams`, ``shape[batch_dim]`` is the batch dimension."""
    source, target = _source(generator, device)
    if isinstance(generator, Streams):
        z = generator.draw(lambda t, g: t.random_(low, high, generator=g), shape, torch.int64, batch_dim)
    else:
        z = torch.randint(low, high, tuple(shape), generator=generator, device=source)
    return _moved(z, source, target)


def multinomial(
    probs: torch.Tensor, n: int, *, generator: RandomSource, device: torch.device | str | None = None
) -> torch.Tensor:
    """``n`` indices drawn with replacement from ``probs`` (1-D), on ``device`` (default: ``probs``' device)."""
    source, target = _source(generator, probs.device if device is None else device)
    p = probs.to(source)
    if isinstance(generator, Streams):
        idx = generator.draw(
            lambda t, g: t.copy_(torch.multinomial(p, t.shape[0], replacement=True, generator=g)), (n,), torch.int64
        )
    else:
        idx = torch.multinomial(p, n, replacement=True, generator=generator)
    return _moved(idx, source, target)
