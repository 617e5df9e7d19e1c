"""``sdekit demo``: its options, their checks and the entry point (the demo itself is :mod:`sdekit.demo._run`).

This module imports neither torch nor sympy at import time, so ``sdekit --help`` and ``sdekit demo --help``
answer at once; :func:`run` checks every option up front (cheap checks first, then the ones that load torch)
and only then imports :mod:`sdekit.demo._run` and trains.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .._load import SDESpecError, resolve_affine_sde, sde_help, sde_metavar
from .._options import MAX_SEED, OptionError, check_device, check_out_dir, check_seed

if TYPE_CHECKING:
    import torch

__all__ = ["HELP", "DESCRIPTION", "DEFAULT_SOLVERS", "MAX_STEPS", "DemoError", "add_arguments", "run"]

HELP = "train a small score model on a 2-D mixture, sample with several solvers, report"
DESCRIPTION = (
    "The main job, end to end, on an embedded 2-D Gaussian mixture (nothing to download): train a small "
    "score network with denoising score matching on the CPU, sample it and the exact score with a set of "
    "solvers at several step counts / tolerances, compare every sample with the exact law (sliced KS "
    "test), compute exact likelihoods of held-out data, and write report.md, report.json and PNGs to --out. "
    "About 1-2 minutes on 2 CPU cores; --quick takes under 30 seconds."
)
DEFAULT_SOLVERS = ("euler", "srk", "ode", "exp2", "pc")
MAX_STEPS = 100_000
"""Largest ``--steps``: a run allocates a time grid (and per-step coefficients) of steps + 1 entries and calls
the network once per step on every sample (10,000 in a full run), so 10^5 steps already take hours; it is
also the step budget of the adaptive torchsde solvers."""


class DemoError(OptionError):
    """A bad demo option: printed as one line ``sdekit demo: error: ...``, exit code 2."""


# --------------------------------------------------------------------------- options
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser``."""
    parser.add_argument(
        "--sde",
        default="vp",
        metavar=sde_metavar(),
        help=f"forward SDE (default: vp): {sde_help()}; the demo needs an affine SDE (drift a(t) x + b(t), "
        "diffusion free of x) for its exact oracle",
    )
    parser.add_argument(
        "--solver",
        action="append",
        metavar="NAME",
        help="solver to run (repeat, or comma-separate, for several; names as in 'sdekit solvers'); "
        f"default: {', '.join(DEFAULT_SOLVERS)}",
    )
    parser.add_argument(
        "--steps",
        metavar="N[,N...]",
        help="run every solver with these fixed step counts (1 to "
        f"{MAX_STEPS:,}) instead of the default ladders (default: tolerances 1e-1, 1e-2, ... for srk and "
        "adaptive ODE solvers, step counts for the others)",
    )
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, mps")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help=f"random seed from 0 to {MAX_SEED} (2**32 - 1); the run is deterministic given it (default 0)",
    )
    parser.add_argument("--out", default="sdekit-demo", help="output directory (default: sdekit-demo/)")
    parser.add_argument(
        "--quick", action="store_true", help="smaller network, shorter training and ladders: under 30 seconds"
    )
    parser.add_argument("--no-plots", action="store_true", help="write report.md and report.json only")


def _parse_sde(spec: str) -> Any:
    try:
        return resolve_affine_sde(
            spec,
            "the demo needs its Gaussian marginal for the exact oracle and the eps-parameterised model: pass an "
            "affine SDE such as vp",
        )
    except SDESpecError as err:
        raise DemoError(f"--sde {spec!r}: {err}") from err


def _parse_solvers(values: list[str] | None) -> list[str]:
    # lazy: the demo's parser loads neither torch nor sympy
    from .. import solvers
    from ..errors import UnknownSolverError

    names = [s.strip() for v in (values or list(DEFAULT_SOLVERS)) for s in v.split(",") if s.strip()]
    if not names:
        raise DemoError("--solver: give at least one solver name (see 'sdekit solvers')")
    out: list[str] = []
    for name in names:
        try:
            canon = solvers.resolve(name)
        except UnknownSolverError as err:
            raise DemoError(f"--solver: {err}") from err
        if canon not in out:
            out.append(canon)
    return out


def _parse_steps(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        steps = tuple(int(s) for s in value.split(",") if s.strip())
    except ValueError:
        steps = ()
    if not steps or min(steps) < 1:
        raise DemoError(f"--steps {value!r}: expected positive integers separated by commas, e.g. 10,30,100")
    if max(steps) > MAX_STEPS:
        raise DemoError(
            f"--steps {value!r}: at most {MAX_STEPS:,} steps per run (a run allocates a time grid of steps + 1 "
            "points and calls the network once per step on every sample); pass fewer steps, e.g. 10,30,100"
        )
    return tuple(sorted(set(steps)))


def _parse_device(value: str) -> torch.device:
    try:
        return check_device(value)
    except OptionError as err:
        raise DemoError(str(err)) from err


# --------------------------------------------------------------------------- entry point
def _prepare(args: argparse.Namespace) -> tuple[Any, list[str], tuple[int, ...] | None, torch.device]:
    """Validate every option up front, creating nothing; raise :class:`DemoError` with a one-line message.

    The checks that need no import come first (seed, steps, output directory; an unknown built-in SDE name),
    so a mistake there is reported before torch loads.
    """
    try:
        check_seed(args.seed)
        steps = _parse_steps(args.steps)
        check_out_dir(args.out)
    except OptionError as err:
        raise DemoError(str(err)) from err
    try:
        sde = _parse_sde(args.sde)
    except DemoError:
        raise
    except Exception as err:  # a user's declaration that fails in an unexpected way: still one line
        raise DemoError(f"--sde {args.sde!r}: {type(err).__name__}: {str(err).splitlines()[0]}") from err
    solvers_ = _parse_solvers(args.solver)
    device = _parse_device(args.device)
    # lazy: the demo's parser loads neither torch nor sympy
    from .. import solvers

    for s in solvers_:
        impl = solvers.get(s)
        try:
            impl.check(sde)
        except Exception as err:
            raise DemoError(f"--solver {s}: {str(err).splitlines()[0]}") from err
        if not impl.can_sample:
            raise DemoError(f"--solver {s}: {' '.join(impl.sample_refusal.split())}")
    return sde, solvers_, steps, device


def run(args: argparse.Namespace) -> int:
    """Run the demo; return the process exit code (0, or 2 for a bad option)."""
    try:
        sde, solvers_, steps, device = _prepare(args)
    except DemoError as err:
        print(f"sdekit demo: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    # lazy: the demo's parser loads neither torch nor sympy
    import torch

    from ._run import demo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small MLP: one thread is as fast and leaves the other cores free
    try:
        demo(sde, solvers_, steps, device, args)
    finally:
        torch.set_num_threads(threads)
    return 0
