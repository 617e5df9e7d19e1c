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

__all__ = [
    "HELP",
    "DESCRIPTION",
    "DEFAULT_SOLVERS",
    "DIGITS_SDES",
    "DIGITS_SOLVERS",
    "MAX_STEPS",
    "DemoError",
    "add_arguments",
    "run",
]

HELP = "train a small score model on a 2-D mixture (or the 8x8 digits), sample with several solvers, report"
DESCRIPTION = (
    "The main job, end to end, on an embedded 2-D Gaussian mixture (nothing to download): train a small "
    "score network with denoising score matching on the CPU, sample it and the exact score with a set of "
    "solvers at several step counts / tolerances, compare every sample with the exact law (sliced KS "
    "test), compute exact likelihoods of held-out data, and write report.md, report.json and PNGs to --out. "
    "About 1-2 minutes on 2 CPU cores; --quick takes under 30 seconds. With --data digits: scikit-learn's 8x8 "
    "handwritten digits (shipped with sdekit), a small convolutional score network per SDE (VP and VE), few-step "
    "and adaptive samples beside real digits, test-set bits/dim and a nearest-neighbour check against copying "
    "(a few minutes; --quick well under a minute)."
)
DEFAULT_SOLVERS = ("euler", "srk", "ode", "exp2", "pc")
DIGITS_SDES = "vp,ve"
DIGITS_SOLVERS = ("ode",)
"""The digits demo's samplers besides ``sdekit.sample(..., steps=k)``'s own few-step choice."""
DEFAULT_OUT = {"toy": "sdekit-demo", "digits": "sdekit-demo-digits"}
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
        "--data",
        choices=("toy", "digits"),
        default="toy",
        help="toy (default): the 2-D Gaussian mixture with its exact oracle; digits: scikit-learn's 8x8 handwritten "
        "digits (1,797 images, shipped with sdekit), a small convolutional score network per SDE, bits/dim",
    )
    parser.add_argument(
        "--sde",
        default=None,
        metavar=sde_metavar(),
        help=f"forward SDE (default: vp; with --data digits a comma-separated list, default {DIGITS_SDES}, where ve "
        f"is VESDE(sigma_max=20)): {sde_help()}; the demo needs an affine SDE (drift a(t) x + b(t), diffusion free "
        "of x)",
    )
    parser.add_argument(
        "--solver",
        action="append",
        metavar="NAME",
        help="solver to run (repeat, or comma-separate, for several; names as in 'sdekit solvers'); "
        f"default: {', '.join(DEFAULT_SOLVERS)}; with --data digits the samplers run besides sdekit.sample's own "
        f"few-step choice, default: {', '.join(DIGITS_SOLVERS)}",
    )
    parser.add_argument(
        "--steps",
        metavar="N[,N...]",
        help="run every solver with these fixed step counts (1 to "
        f"{MAX_STEPS:,}) instead of the default ladders (default: tolerances 1e-1, 1e-2, ... for srk and "
        "adaptive ODE solvers, step counts for the others); with --data digits one number, the model evaluations "
        "of the few-step sampler (default 20)",
    )
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, mps")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help=f"random seed from 0 to {MAX_SEED} (2**32 - 1); the run is deterministic given it (default 0)",
    )
    parser.add_argument(
        "--out", default=None, help="output directory (default: sdekit-demo/, with --data digits sdekit-demo-digits/)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller network, shorter training and ladders: under 30 seconds (digits: well under a minute)",
    )
    parser.add_argument("--no-plots", action="store_true", help="write report.md and report.json only")


def _parse_sde(spec: str) -> Any:
    if "," in spec:
        raise DemoError(f"--sde {spec!r}: the 2-D demo takes one SDE (several only with --data digits)")
    try:
        return resolve_affine_sde(
            spec,
            "the demo needs its Gaussian marginal for the exact oracle and the eps-parameterised model: pass an "
            "affine SDE such as vp",
        )
    except SDESpecError as err:
        raise DemoError(f"--sde {spec!r}: {err}") from err


def _parse_solvers(values: list[str] | None, default: tuple[str, ...] = DEFAULT_SOLVERS) -> list[str]:
    # lazy: the demo's parser loads neither torch nor sympy
    from .. import solvers
    from ..errors import UnknownSolverError

    names = [s.strip() for v in (values or list(default)) for s in v.split(",") if s.strip()]
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
def _checked_sde(spec: str) -> Any:
    """:func:`_parse_sde`, with a user's declaration that fails in an unexpected way still one line."""
    try:
        return _parse_sde(spec)
    except DemoError:
        raise
    except Exception as err:
        raise DemoError(f"--sde {spec!r}: {type(err).__name__}: {str(err).splitlines()[0]}") from err


def _check_solvers(solvers_: list[str], sdes: list[Any]) -> None:
    """Every solver can sample every SDE, or a :class:`DemoError` saying why not."""
    # lazy: the demo's parser loads neither torch nor sympy
    from .. import solvers

    for s in solvers_:
        impl = solvers.get(s)
        try:
            for sde in sdes:
                impl.check(sde)
        except Exception as err:
            raise DemoError(f"--solver {s}: {str(err).splitlines()[0]}") from err
        if not impl.can_sample:
            raise DemoError(f"--solver {s}: {' '.join(impl.sample_refusal.split())}")


def _cheap_checks(args: argparse.Namespace) -> tuple[int, ...] | None:
    """Seed, steps and the output directory (``--out`` defaulted per ``--data``): the checks that load nothing."""
    if args.out is None:
        args.out = DEFAULT_OUT[args.data]
    try:
        check_seed(args.seed)
        steps = _parse_steps(args.steps)
        check_out_dir(args.out)
    except OptionError as err:
        raise DemoError(str(err)) from err
    return steps


def _prepare(args: argparse.Namespace) -> tuple[Any, list[str], tuple[int, ...] | None, torch.device]:
    """Validate every option up front, creating nothing; raise :class:`DemoError` with a one-line message.

    The checks that need no import come first (seed, steps, output directory; an unknown built-in SDE name),
    so a mistake there is reported before torch loads.
    """
    steps = _cheap_checks(args)
    args.sde = args.sde or "vp"
    sde = _checked_sde(args.sde)
    solvers_ = _parse_solvers(args.solver)
    device = _parse_device(args.device)
    _check_solvers(solvers_, [sde])
    return sde, solvers_, steps, device


def _prepare_digits(args: argparse.Namespace) -> tuple[dict[str, Any], list[str], int | None]:
    """:func:`_prepare` for ``--data digits``: SDEs keyed by their spec (built-in ``ve`` gets
    :data:`~sdekit.demo._digits_data.VE_SIGMA_MAX`), the extra samplers, the few-step NFE (None: the default)."""
    steps = _cheap_checks(args)
    if steps is not None and len(steps) > 1:
        raise DemoError(f"--steps {args.steps!r}: --data digits takes one number, the few-step sampler's NFE (e.g. 10)")
    if _parse_device(args.device).type != "cpu":
        raise DemoError(f"--device {args.device!r}: the digits demo runs on the CPU (a few minutes); pass --device cpu")
    specs = [s.strip() for s in (args.sde or DIGITS_SDES).split(",") if s.strip()]
    if not specs:
        raise DemoError(f"--sde {args.sde!r}: give at least one SDE, e.g. {DIGITS_SDES}")
    # lazy: the digits data (numpy, torch) only once the cheap checks passed
    import sdekit

    from ._digits_data import VE_SIGMA_MAX

    sdes: dict[str, Any] = {}
    for spec in specs:
        sde = _checked_sde(spec)
        if type(sde) is sdekit.VESDE and ":" not in spec:  # the built-in default sigma_max = 50 suits CIFAR-10
            sde = sdekit.VESDE(sigma_max=VE_SIGMA_MAX)
        sdes.setdefault(spec.lower(), sde)
    solvers_ = _parse_solvers(args.solver, DIGITS_SOLVERS)
    _check_solvers(solvers_, list(sdes.values()))
    return sdes, solvers_, None if steps is None else steps[0]


def run(args: argparse.Namespace) -> int:
    """Run the demo; return the process exit code (0, or 2 for a bad option)."""
    digits = getattr(args, "data", "toy") == "digits"
    try:
        prepared = _prepare_digits(args) if digits else _prepare(args)
    except DemoError as err:
        print(f"sdekit demo: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    # lazy: the demo's parser loads neither torch nor sympy
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread is as fast and leaves the other cores free
    try:
        if digits:
            # lazy: the demo's parser loads neither torch nor sympy
            from ._digits_run import digits_demo

            digits_demo(*prepared, args)
        else:
            # lazy: the demo's parser loads neither torch nor sympy
            from ._run import demo

            demo(*prepared, args)
    finally:
        torch.set_num_threads(threads)
    return 0
