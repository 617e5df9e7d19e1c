r"""The checks and the run of ``sdekit logp`` (its options: :mod:`sdekit._logp_cli`; its files:
:mod:`sdekit._chunkstore`).

:func:`main` checks every option up front, cheapest first, creating nothing (:func:`_prepare`: numbers,
``--out``, ``--data``'s header, the device, ``--sde``, ``--eps``, ``--solver``, ``--model`` loaded and called once
on the first rows, one pass over ``--data`` that hashes it and finds NaN/inf rows, the parts directory's
manifest), then computes the missing chunks, each written durably as it finishes (:func:`_execute`), assembles
the result and prints a summary.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from ._checks import check_model_output
from ._chunkstore import FORMAT, ChunkStore, Lock, differences, parts_dir, read_manifest, write_npy, write_parquet
from ._dequantize import bits_per_dim
from ._likelihood import DEFAULT_LIKELIHOOD_EPS, EXACT_TRACE_LIMIT_DIM, logp, resolve_trace
from ._load import ModelSpecError, SDESpecError, resolve_affine_sde, resolve_model
from ._logp_cli import SUFFIXES, chunk_seed
from ._model_errors import is_model_error
from ._options import OptionError, check_device, check_out_dir, check_seed
from .errors import ModelOutputError, SdekitError, UnknownSolverError
from .solvers._odedriver import is_fixed_grid
from .solvers._torchdiffeq import ode_method

__all__ = ["main"]

_SCAN_BYTES = 64 << 20
"""Block size of the pass that hashes ``--data`` and looks for NaN/inf (memory bounded by it)."""


@dataclass
class _Job:
    """Everything :func:`run` needs, checked."""

    out: Path
    fmt: str
    data: np.ndarray
    data_path: Path
    model: Any
    sde: Any
    device: torch.device
    dtype: torch.dtype
    options: dict[str, Any]
    manifest: dict[str, Any]
    args: argparse.Namespace


def _check_numbers(args: argparse.Namespace) -> None:
    if args.chunk_size < 1:
        raise OptionError(f"--chunk-size {args.chunk_size}: expected a positive number of rows, e.g. 512")
    check_seed(args.seed)
    for name in ("rtol", "atol"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise OptionError(f"--{name} {value!r}: expected a positive finite tolerance, e.g. 1e-5")
    if args.steps is not None and args.steps < 1:
        raise OptionError(f"--steps {args.steps}: expected a positive number of steps, e.g. 100")
    if args.n_probes < 1:
        raise OptionError(f"--n-probes {args.n_probes}: expected a positive number of probes, e.g. 1")
    if args.n_bits < 1:
        raise OptionError(f"--n-bits {args.n_bits}: expected a positive number of bits, e.g. 8")
    if args.eps is not None and not (math.isfinite(args.eps) and args.eps > 0):
        raise OptionError(f"--eps {args.eps!r}: expected a small positive time, e.g. 1e-5")


def _check_out(value: str, data: str, overwrite: bool) -> tuple[Path, str]:
    out = Path(value).expanduser()
    if out.is_dir():
        raise OptionError(f"--out {value!r} is a directory; pass a file name ending in .npy or .parquet")
    fmt = SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        raise OptionError(
            f"--out {value!r}: unsupported suffix {out.suffix or '(none)'!r}; use .npy (float64 vector of the n "
            "values) or .parquet (columns row and logp)"
        )
    if fmt == "parquet":
        # lazy: only to see whether the optional extra is installed
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise OptionError(
                f"--out {value!r}: writing .parquet needs pyarrow, which is not installed; "
                "pip install 'sdekit[parquet]' (or write .npy)"
            )
    if out.exists() and out.resolve() == Path(data).expanduser().resolve():
        raise OptionError(f"--out {value!r} is the --data file; choose another name")
    check_out_dir(out.parent if out.parent != Path("") else Path("."), option="--out")
    if out.exists() and not overwrite and not parts_dir(out).exists():
        raise OptionError(f"--out {value!r} exists; pass --overwrite to replace it, or choose another path")
    return out, fmt


def _open_data(value: str) -> np.ndarray:
    """The memory-mapped array of ``--data`` (nothing read but its header)."""
    path = Path(value).expanduser()
    if not path.is_file():
        why = "is a directory" if path.is_dir() else "does not exist"
        raise OptionError(f"--data {value!r} {why}; pass a .npy file of shape (n, *event_shape)")
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise OptionError(
            f"--data {value!r}: not a readable .npy array ({' '.join(str(err).split())}); save it with numpy.save"
        ) from err
    if not isinstance(data, np.ndarray):  # an .npz archive
        raise OptionError(f"--data {value!r}: an .npz archive, not one array; save the data with numpy.save")
    if data.ndim < 2 or 0 in data.shape:
        raise OptionError(
            f"--data {value!r}: shape {data.shape}; expected (n, *event_shape) with n >= 1 rows, e.g. (n, 2) for "
            "2-D points (reshape one sample to (1, d))"
        )
    if data.dtype.kind != "f" or data.dtype.itemsize not in (2, 4, 8):
        raise OptionError(
            f"--data {value!r}: dtype {data.dtype}; expected float16/32/64 (scale and dequantize integer data "
            "first, e.g. with sdekit.dequantize)"
        )
    return data


def _scan(data: np.ndarray, value: str) -> str:
    """sha256 of the data (dtype, shape, rows in C order), read in blocks; OptionError at the first NaN/inf row."""
    digest = hashlib.sha256(f"{data.dtype.str}{data.shape}".encode())
    row_bytes = data[0].nbytes
    block = max(1, _SCAN_BYTES // row_bytes)
    for start in range(0, data.shape[0], block):
        part = np.ascontiguousarray(data[start : start + block])
        bad = ~np.isfinite(part.reshape(part.shape[0], -1)).all(axis=1)
        if bad.any():
            row = start + int(np.argmax(bad))
            raise OptionError(f"--data {value!r}: row {row} holds NaN or inf; remove or fix the non-finite rows")
        digest.update(memoryview(part).cast("B"))
    return digest.hexdigest()


def _load_sde(spec: str) -> Any:
    try:
        return resolve_affine_sde(
            spec, "it has no Gaussian prior p_T for log p: pass an affine SDE, or call sdekit.logp with prior="
        )
    except SDESpecError as err:
        raise OptionError(f"--sde {spec!r}: {err}") from err


def _solver_options(args: argparse.Namespace, sde: Any, dim: int) -> dict[str, Any]:
    """The keywords of :func:`sdekit.logp` (only those that matter: no tolerances on a fixed grid, ...)."""
    eps = DEFAULT_LIKELIHOOD_EPS if args.eps is None else args.eps
    if not eps < float(sde.T):
        raise OptionError(f"--eps {args.eps!r}: expected 0 < eps < T = {float(sde.T):g} of --sde {args.sde!r}")
    try:
        method = ode_method(args.solver, caller="sdekit logp")
    except UnknownSolverError as err:
        raise OptionError(f"--solver {args.solver!r}: {err}") from err
    fixed = is_fixed_grid(method)
    if fixed and args.steps is None:
        raise OptionError(f"--solver {args.solver!r} takes fixed steps: pass --steps N (e.g. 100), or use dopri5")
    if not fixed and args.steps is not None:
        raise OptionError(f"--steps {args.steps}: {method!r} is adaptive (use --rtol/--atol), or pick e.g. rk4")
    try:
        trace = resolve_trace(args.trace, dim)
    except ValueError as err:
        raise OptionError(
            f"--trace exact: the rows have {dim:,} dimensions, above the exact trace's limit of "
            f"{EXACT_TRACE_LIMIT_DIM:,} (it costs {dim:,} network passes per evaluation); pass --trace hutchinson "
            "(unbiased; --n-probes N probes per row)"
        ) from err
    hutchinson = trace == "hutchinson"
    return {
        "solver": method,
        "steps": args.steps if fixed else None,
        "rtol": None if fixed else args.rtol,
        "atol": None if fixed else args.atol,
        "trace": trace,
        "n_probes": args.n_probes if hutchinson else 1,
        "probe": args.probe if hutchinson else "rademacher",
        "eps": eps,
        "parameterization": args.parameterization,
    }


def _load_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> tuple[Any, str | None]:
    """The model on ``device``/``dtype`` (an ``nn.Module`` is moved and set to eval mode) and, for an
    ``nn.Module``, the sha256 of its parameters and buffers as loaded (recorded in the manifest)."""
    try:
        model = resolve_model(args.model)
    except ModelSpecError as err:
        raise OptionError(f"--model {args.model!r}: {err}") from err
    if not isinstance(model, torch.nn.Module):
        return model, None
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return model.to(device=device, dtype=dtype).eval(), digest.hexdigest()


def _probe_model(model: Any, data: np.ndarray, args: argparse.Namespace, eps: float, like: Any) -> None:
    """Call the model once on the first rows at t = eps (as :func:`sdekit.logp` does) and check its output."""
    x = _rows(data, 0, min(2, data.shape[0]), like)
    t = torch.full((x.shape[0],), eps, dtype=x.dtype, device=x.device)
    try:
        with torch.enable_grad():
            out = model(x, t)
        check_model_output(out, x, nonfinite_hint=f"t = eps = {eps:g}; check the model near t = 0")
    except ModelOutputError as err:
        raise OptionError(f"--model {args.model!r}: {' '.join(str(err).split())}") from err
    except Exception as err:
        raise OptionError(
            f"--model {args.model!r}: model(x, t) on the first rows of --data (x of shape {tuple(x.shape)}, "
            f"{x.dtype}) raised {type(err).__name__}: {' '.join(str(err).split())}"
        ) from err


def _rows(data: np.ndarray, start: int, stop: int, like: Any) -> torch.Tensor:
    """Rows ``[start, stop)`` of the memory-mapped data as a tensor of ``like``'s device and dtype."""
    return torch.from_numpy(np.array(data[start:stop])).to(device=like.device, dtype=like.dtype)


def _check_parts(out: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Refuse a parts directory of other arguments (or unreadable) unless ``--overwrite``; creates nothing."""
    directory = parts_dir(out)
    if overwrite or not directory.exists():
        return
    if not directory.is_dir():
        raise OptionError(f"--out {os.fspath(out)!r}: {os.fspath(directory)!r} is not a directory; remove it")
    try:
        old = read_manifest(directory)
    except ValueError as err:
        raise OptionError(f"--out {os.fspath(out)!r}: {err}; pass --overwrite to discard {directory.name}") from err
    store = ChunkStore(directory, manifest["rows"], manifest["arguments"]["--chunk-size"])
    chunks = len(store.chunk_files())
    if old is None:
        if chunks:
            raise OptionError(
                f"--out {os.fspath(out)!r}: {directory.name} holds {chunks} chunk file(s) but no manifest, so they "
                "cannot be checked; pass --overwrite to discard them"
            )
        return
    changed = differences(old, manifest)
    if changed:
        raise OptionError(
            f"--out {os.fspath(out)!r}: {directory.name} holds {chunks} finished chunk(s) of a run with other "
            f"arguments ({'; '.join(changed[:4])}); rerun with the same arguments to resume, or pass --overwrite "
            "to discard them"
        )


def _manifest(args: argparse.Namespace, job: dict[str, Any], fingerprint: str | None, digest: str) -> dict[str, Any]:
    data = job["data"]
    arguments = {
        "--chunk-size": args.chunk_size,
        "--seed": args.seed,
        "--model": args.model.strip(),
        "--sde": args.sde.strip(),
        "--dtype": str(job["dtype"]).removeprefix("torch."),
        "--device": str(job["device"]),
        **{"--" + key.replace("_", "-"): value for key, value in job["options"].items()},
    }
    return {
        "format": FORMAT,
        "rows": int(data.shape[0]),
        "arguments": arguments,
        "data": {"shape": list(data.shape), "dtype": data.dtype.str, "sha256": digest},
        "model_state_sha256": fingerprint,
        "sde_repr": repr(job["sde"]),
        "chunk_seeds": "chunk i: torch.Generator().manual_seed(numpy SeedSequence(--seed, spawn_key=(i,)) "
        "first uint64)",
        "data_path": os.fspath(job["data_path"].resolve()),
        "versions": {"sdekit": __version__, "torch": torch.__version__, "numpy": np.__version__},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _prepare(args: argparse.Namespace, ranks: _Ranks) -> _Job:
    """Check every option, cheapest first, creating nothing; :class:`OptionError` names the first wrong one.
    Under torchrun, ``--device cuda`` means each rank's own GPU (``cuda:LOCAL_RANK``)."""
    _check_numbers(args)
    out, fmt = _check_out(args.out, args.data, args.overwrite)
    data = _open_data(args.data)
    named = check_device(args.device)
    device = named
    if ranks.world > 1 and named.type == "cuda" and named.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float64 if data.dtype.itemsize == 8 else torch.float32)
    sde = _load_sde(args.sde)
    options = _solver_options(args, sde, int(math.prod(data.shape[1:])))
    model, fingerprint = _load_model(args, device, dtype)
    like = torch.empty((), device=device, dtype=dtype)
    _probe_model(model, data, args, options["eps"], like)
    digest = _scan(data, args.data)
    parts = {"data": data, "data_path": Path(args.data).expanduser(), "sde": sde, "options": options}
    manifest = _manifest(args, {**parts, "dtype": dtype, "device": named}, fingerprint, digest)
    _check_parts(out, manifest, args.overwrite)
    return _Job(out, fmt, data, parts["data_path"], model, sde, device, dtype, options, manifest, args)


# --------------------------------------------------------------------------- the run
@dataclass
class _Stats:
    """Streaming count, mean, M2 (Chan et al.'s pairwise update), min and max of the log-densities."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, values: np.ndarray) -> np.ndarray:
        k = len(values)
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        delta, total = mean - self.mean, self.n + k
        self.mean += delta * k / total
        self.m2 += m2 + delta**2 * self.n * k / total
        self.n = total
        self.low, self.high = min(self.low, float(values.min())), max(self.high, float(values.max()))
        return values


def _chunk_logp(job: _Job, store: ChunkStore, index: int) -> tuple[np.ndarray, int]:
    """log p of chunk ``index`` (float64 numpy) and the model evaluations it took."""
    start, stop = store.bounds(index)
    x = _rows(job.data, start, stop, torch.empty((), device=job.device, dtype=job.dtype))
    generator = torch.Generator().manual_seed(chunk_seed(job.args.seed, index))
    with torch.no_grad():
        options = {key: value for key, value in job.options.items() if value is not None}  # None: does not apply
        lp, info = logp(job.model, job.sde, x, generator=generator, create_graph=False, return_info=True, **options)
    return lp.detach().to(device="cpu", dtype=torch.float64).numpy(), info.nfe


def _progress(job: _Job, total: int, initial: int, rank: int) -> Any:
    # lazy: tqdm only for the run
    from tqdm.auto import tqdm

    disable = True if job.args.no_progress or rank != 0 else None  # None: shown on a terminal only
    return tqdm(total=total, initial=initial, unit="row", desc="logp", file=sys.stderr, disable=disable)


def _compute(job: _Job, store: ChunkStore, todo: list[int], done_rows: int, rank: int = 0) -> int:
    """Compute and write the chunks ``todo``; return the model evaluations (a progress bar on rank 0 only)."""
    nfe = 0
    with _progress(job, store.rows, done_rows, rank) as bar:
        for index in todo:
            try:
                values, calls = _chunk_logp(job, store, index)
                store.write(index, values)
            except BaseException as err:
                _kept(store, index, "interrupted" if isinstance(err, KeyboardInterrupt) else "failed")
                raise
            nfe += calls
            bar.update(len(values))
    return nfe


def _kept(store: ChunkStore, index: int, what: str) -> None:
    start, stop = store.bounds(index)
    print(
        f"sdekit logp: chunk {index} (rows {start} to {stop - 1}) {what}; {len(store.chunk_files())} of "
        f"{store.n_chunks} finished chunks are kept in {os.fspath(store.directory)!r}: run the same command "
        "again to resume",
        file=sys.stderr,
    )


def _summary(job: _Job, store: ChunkStore, stats: _Stats, computed: int, nfe: int, seconds: float) -> None:
    dim = math.prod(job.data.shape[1:])
    std = math.sqrt(stats.m2 / (stats.n - 1)) if stats.n > 1 else 0.0
    resumed = store.n_chunks - computed
    print(
        f"sdekit logp: {stats.n:,} rows (d = {dim}) in {store.n_chunks} chunk(s) of {store.chunk_size} -> "
        f"{os.fspath(job.out)}"
    )
    print(
        f"  computed {computed} chunk(s) in {seconds:.1f} s ({nfe:,} model evaluations)"
        + (f"; {resumed} chunk(s) were already done" if resumed else "")
    )
    print(
        f"  mean log p = {stats.mean:.6g} nats (std {std:.4g}, standard error {std / math.sqrt(stats.n):.2g}), "
        f"min {stats.low:.6g}, max {stats.high:.6g}"
    )
    if job.args.data_range is None:
        bpd = -stats.mean / (dim * math.log(2))
        print(f"  {bpd:.6g} bits/dim of the density (-mean log p / (d ln 2); --data-range for quantized data)")
    else:
        mean = torch.tensor(stats.mean, dtype=torch.float64)
        bpd = float(bits_per_dim(mean, dim, data_range=job.args.data_range, n_bits=job.args.n_bits))
        print(f"  {bpd:.6g} bits/dim of {job.args.n_bits}-bit data dequantized to {job.args.data_range}")


@dataclass
class _Ranks:
    """This process's rank among ``world`` ``sdekit logp`` processes (``torchrun``: ``WORLD_SIZE`` > 1), and whether
    it made the process group (then it destroys it at the end). Ranks exchange only small Python objects (the
    results go through the parts directory), over gloo, outside any solve."""

    rank: int = 0
    world: int = 1
    created: bool = False

    @classmethod
    def join(cls) -> _Ranks:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        # a long timeout: ranks wait at the end for the slowest one (torchrun stops them all if one fails)
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
        return cls(dist.get_rank(), dist.get_world_size(), True)

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def collect(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, value)
        return out

    def leave(self) -> None:
        if self.created:
            torch.distributed.destroy_process_group()


def _open_store(job: _Job) -> tuple[ChunkStore, Lock, int | None, set[int], list[str]]:
    """Rank 0's set-up of the parts directory: --overwrite, the manifest, the lock, the finished chunks."""
    store = ChunkStore(parts_dir(job.out), job.manifest["rows"], job.args.chunk_size)
    if job.args.overwrite:
        if store.directory.exists():
            store.remove()
        job.out.unlink(missing_ok=True)
    store.create(job.manifest)
    lock = Lock(store.directory)
    holder = lock.acquire()
    if holder is not None:
        return store, lock, holder, set(), []
    done, discarded = store.finished()
    return store, lock, None, done, discarded


def _execute(job: _Job, ranks: _Ranks) -> int:
    """Compute the missing chunks and assemble the result. With several ranks, rank 0 alone touches the manifest,
    the lock, leftovers and the result; the missing chunks are dealt round-robin (rank r computes ``todo[r::W]``),
    each rank writing its own chunk files; the ranks meet before (rank 0's set-up) and after the work."""
    if ranks.rank == 0:
        store, lock, holder, done, discarded = _open_store(job)
        setup = (holder, sorted(done), discarded)
    else:
        store, lock = ChunkStore(parts_dir(job.out), job.manifest["rows"], job.args.chunk_size), None
    holder, done_list, discarded = ranks.share(setup if ranks.rank == 0 else None)
    if holder is not None:
        if ranks.rank == 0:
            print(
                f"sdekit logp: error: --out {os.fspath(job.out)!r}: another sdekit logp (pid {holder or '?'}) is "
                "writing this result; wait for it to finish or choose another --out",
                file=sys.stderr,
            )
        return 2
    try:
        if discarded and ranks.rank == 0:
            print(f"sdekit logp: discarded {', '.join(discarded)} (left by a killed run)", file=sys.stderr)
        done = set(done_list)
        todo = [i for i in range(store.n_chunks) if i not in done]
        started = time.perf_counter()
        done_rows = sum(stop - start for start, stop in map(store.bounds, done))
        failed: BaseException | None = None
        try:
            nfe = _compute(job, store, todo[ranks.rank :: ranks.world], done_rows, ranks.rank)
        except Exception as err:  # the other ranks learn of it at the meeting below, then it is raised
            failed, nfe = err, 0
        reports = ranks.collect((nfe, failed is None))
        if failed is not None:
            raise failed
        if not all(ok for _, ok in reports):
            return 1  # another rank failed and reported it
        if ranks.rank != 0:
            return 0
        seconds = time.perf_counter() - started
        stats = _Stats()
        values = (stats.add(v) for v in store.values())
        if job.fmt == "npy":
            write_npy(job.out, store.rows, values)
        else:
            write_parquet(job.out, values)
    finally:
        if lock is not None:
            lock.release()
    if not job.args.keep_parts:
        store.remove()
    _summary(job, store, stats, len(todo), sum(n for n, _ in reports), seconds)
    return 0


def main(args: argparse.Namespace) -> int:
    """Run ``sdekit logp``; the exit code: 0, 2 for a bad option, 130 when interrupted (finished chunks kept).

    A failure in a chunk prints which chunk and what is kept, then: an sdekit error (the solve diverged, ...)
    is one line and exit code 1; anything else (the model's own exception) propagates with its traceback.
    Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank checks the options and computes its share of the chunks;
    rank 0 writes the result (``docs/distributed.md``).
    """
    ranks = _Ranks.join()
    try:
        return _main(args, ranks)
    finally:
        ranks.leave()


def _main(args: argparse.Namespace, ranks: _Ranks) -> int:
    try:
        job = _prepare(args, ranks)
        error = None
    except OptionError as err:
        job, error = None, f"sdekit logp: error: {' '.join(str(err).split())}"
    errors = ranks.collect(error)  # every rank checked the options before rank 0 touches the parts directory
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        if ranks.rank == 0 or (error is not None and errors[0] is None):
            print(error or first, file=sys.stderr)
        return 2
    assert job is not None
    try:
        return _execute(job, ranks)
    except KeyboardInterrupt:
        return 130
    except SdekitError as err:
        if is_model_error(err):
            raise
        print(f"sdekit logp: error: {type(err).__name__}: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
