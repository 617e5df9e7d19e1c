r"""``sdekit logp``: the log-likelihood of every row of a dataset, in durable, resumable chunks.

``sdekit logp --model mymodels:model --sde vp --data x.npy --out logp.npy`` computes
:math:`\log p_\epsilon(x_i)` (:func:`sdekit.logp`, nats) for every row :math:`x_i` of ``x.npy`` (shape
(n, \*event_shape), memory-mapped: never read whole), one chunk of ``--chunk-size`` rows per
:func:`sdekit.logp` call, and writes a float64 vector of shape (n,) (``.npy``) or a table with the columns
``row`` and ``logp`` (``.parquet``, with the optional extra ``sdekit[parquet]``).

Every finished chunk is written durably to the parts directory next to the result (``logp.npy.parts/``,
format in :mod:`sdekit._chunkstore`) with a manifest of what is computed. Rerunning the same command after a
crash, a kill or Ctrl-C computes only the missing chunks; rerunning with other arguments is refused
(``--overwrite`` discards). Randomness (Hutchinson probes) is per chunk: chunk i draws from
``torch.Generator().manual_seed(chunk_seed(seed, i))`` (:func:`chunk_seed`), so a resumed run writes the same
bits as an uninterrupted one with the same ``--chunk-size``.

Options are checked up front (one-line ``sdekit logp: error: ...``, exit code 2), before anything is written:
numbers, ``--out``, ``--data`` (shape, dtype; then one pass that hashes it and finds NaN/inf rows), the device,
``--sde``, ``--eps``, ``--solver``, ``--model`` (loaded and called once on the first rows) and the parts
directory. This module holds the options and imports neither torch, numpy nor sympy (``sdekit --help``
stays fast); the checks and the run are in :mod:`sdekit._logp_run`, imported by :func:`run`.
"""

from __future__ import annotations

import argparse

from ._load import sde_help, sde_metavar
from ._options import MAX_SEED

__all__ = ["HELP", "DESCRIPTION", "DEFAULT_CHUNK_SIZE", "SUFFIXES", "add_arguments", "chunk_seed", "run"]

HELP = "log-likelihood of every row of a .npy dataset, in resumable chunks"
DESCRIPTION = (
    "Compute log p_eps(x) (sdekit.logp, nats) of every row of --data (n, *event_shape) with the model --model "
    "of the SDE --sde, chunk by chunk, and write the n values to --out (.npy: float64 vector; .parquet: columns "
    "row, logp). Finished chunks are kept durably in OUT.parts/; rerun the same command to resume after a kill."
)
DEFAULT_CHUNK_SIZE = 512
"""Rows per :func:`sdekit.logp` call: memory grows linearly with it (the exact trace holds d vector-Jacobian
products per row); adaptive solvers share one step sequence per chunk, so the values depend on it in the last
digits and a resumed run must use the same one (the manifest records it)."""
SUFFIXES = {".npy": "npy", ".parquet": "parquet"}
_TRACES = ("auto", "exact", "hutchinson")
_PROBES = ("rademacher", "gaussian")
_PARAMETERIZATIONS = ("score", "eps", "x0", "v", "denoiser")


def chunk_seed(seed: int, index: int) -> int:
    """The seed of chunk ``index``'s generator: ``SeedSequence(seed, spawn_key=(index,))``'s first 64-bit word.

    numpy's ``SeedSequence`` spawning gives independent, well-mixed streams for (seed, index) pairs; the value is
    the same on every platform, so chunk i's Hutchinson probes do not depend on which run computes it.
    """
    # lazy: the parser loads neither torch nor numpy
    import numpy as np

    return int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1, np.uint64)[0])


# --------------------------------------------------------------------------- options
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``sdekit logp`` to ``parser``."""
    need = parser.add_argument_group("required")
    need.add_argument(
        "--model",
        required=True,
        metavar="MODULE:NAME",
        help="the model: 'module:name' is model(x, t) itself (function, nn.Module instance, callable), "
        "'module:factory()' (quoted in a shell) calls a zero-argument factory (function or class) and uses "
        "what it returns; the module is imported from the current directory or PYTHONPATH",
    )
    need.add_argument("--sde", required=True, metavar=sde_metavar(), help=f"the forward SDE: {sde_help()}")
    need.add_argument("--data", required=True, metavar="FILE.npy", help="data of shape (n, *event_shape), float")
    need.add_argument("--out", required=True, metavar="OUT.npy|OUT.parquet", help="where to write the n values")
    run_ = parser.add_argument_group("chunks and resuming")
    run_.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        metavar="N",
        help=f"rows per sdekit.logp call (default {DEFAULT_CHUNK_SIZE}); memory grows linearly with it",
    )
    run_.add_argument(
        "--seed",
        type=int,
        default=0,
        help=f"seed from 0 to {MAX_SEED} of the Hutchinson probes; chunk i uses its own stream (default 0)",
    )
    run_.add_argument("--overwrite", action="store_true", help="discard an existing --out and its parts directory")
    run_.add_argument("--keep-parts", action="store_true", help="keep OUT.parts/ after writing --out")
    run_.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    opts = parser.add_argument_group("sdekit.logp options")
    opts.add_argument("--solver", default="dopri5", help="torchdiffeq method, e.g. dopri5 (default), rk4 + --steps")
    opts.add_argument("--steps", type=int, metavar="N", help="uniform steps of a fixed-grid --solver (rk4, euler)")
    opts.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance, adaptive solvers (default 1e-5)")
    opts.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance, adaptive solvers (default 1e-5)")
    opts.add_argument("--trace", choices=_TRACES, default="auto", help="divergence (default: exact up to d = 256)")
    opts.add_argument("--n-probes", type=int, default=1, metavar="K", help="Hutchinson probes per row (default 1)")
    opts.add_argument("--probe", choices=_PROBES, default="rademacher", help="Hutchinson probe law")
    opts.add_argument("--eps", type=float, help="lower time: the density of x_eps (default 1e-5)")
    opts.add_argument(
        "--parameterization",
        choices=_PARAMETERIZATIONS,
        default=None,
        help="what the model predicts (default: the model's declared parameterization attribute, else score)",
    )
    opts.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, mps")
    opts.add_argument(
        "--dtype", choices=("float32", "float64"), help="compute dtype (default: the data's; float32 for float16)"
    )
    opts.add_argument(
        "--data-range",
        choices=("[0,1]", "[-1,1]"),
        help="also report the bits/dim of --n-bits data dequantized to this range (sdekit.bits_per_dim)",
    )
    opts.add_argument("--n-bits", type=int, default=8, help="bits per value of the quantized data (default 8)")


def run(args: argparse.Namespace) -> int:
    """Run ``sdekit logp``; the exit code: 0, 2 for a bad option, 130 when interrupted (finished chunks kept).

    A failure in a chunk prints which chunk and what is kept, then: an sdekit error (the solve diverged, ...)
    is one line and exit code 1; anything else (the model's own exception) propagates with its traceback.
    """
    # lazy: the parser loads neither torch, numpy nor sympy
    from ._logp_run import main

    return main(args)
