"""Command line of the validation suite: ``python -m validation`` (same as ``sdekit validate``).

Exit codes: 0 when every check passed (skipped lines do not count), 1 when any check failed or
crashed, 2 for bad arguments (argparse errors, an ``--sde`` that cannot be loaded, an unknown
``--only`` group).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

DESCRIPTION = "Check sdekit's derived objects against Fokker-Planck and exact Gaussian answers."

EPILOG = """examples:
  python -m validation --quick                     # under 3 minutes; what CI runs
  python -m validation --out validation-report     # full run: every solver, more samples, more levels
  python -m validation --quick --sde mymodule:MySDE --only symbolic
"""


class SDESpecError(ValueError):
    """An ``--sde module:Class`` that cannot be loaded (the message says why and what to pass)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the suite's options to ``parser``."""
    parser.add_argument("--quick", action="store_true", help="the quick subset (under 3 minutes on 2 cores, run in CI)")
    parser.add_argument(
        "--sde",
        action="append",
        nargs="+",
        metavar="MODULE:CLASS",
        help="check your SDE(s) instead of the built-in zoo: an sdekit.SDE subclass (instantiated with no "
        "arguments) or instance, e.g. mypkg.sdes:MySDE (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=Path("validation-report"), help="report directory")
    parser.add_argument("--seed", type=int, default=0, help="base seed of every random generator (default 0)")
    parser.add_argument(
        "--only", action="append", metavar="GROUP", help="run only this group (repeatable): " + ", ".join(_groups())
    )
    parser.add_argument(
        "--image-prefix", default="", help="prefix of figure links in report.md (e.g. img/validation/ for docs)"
    )
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _groups() -> tuple[str, ...]:
    from ._core import GROUPS

    return GROUPS


def load_sde(spec: str):
    """Load ``module:Name``: an :class:`sdekit.SDE` subclass (instantiated with no arguments) or an instance."""
    import sdekit

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SDESpecError(f"--sde {spec!r}: expected MODULE:CLASS, e.g. mypkg.sdes:MySDE")
    if os.getcwd() not in sys.path and "" not in sys.path:  # `sdekit validate` from the user's directory
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise SDESpecError(
            f"--sde {spec!r}: cannot import module {module_name!r} ({err}); run from the directory that contains it "
            "or add it to PYTHONPATH"
        ) from err
    except Exception as err:
        raise SDESpecError(f"--sde {spec!r}: importing {module_name!r} raised {type(err).__name__}: {err}") from err
    try:
        obj = getattr(module, attr)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        raise SDESpecError(
            f"--sde {spec!r}: module {module_name!r} has no attribute {attr!r} (it has: {', '.join(names[:12])})"
        ) from None
    if isinstance(obj, type) and issubclass(obj, sdekit.SDE):
        try:
            return obj()
        except Exception as err:
            raise SDESpecError(
                f"--sde {spec!r}: {attr}() raised {type(err).__name__}: {err} (give every parameter a default, "
                "or point --sde at an instance)"
            ) from err
    if isinstance(obj, sdekit.SDE):
        return obj
    raise SDESpecError(f"--sde {spec!r}: {attr} is a {type(obj).__name__}, not an sdekit.SDE subclass or instance")


def _zoo() -> list:
    from sdekit.symbolic import zoo

    return [getattr(zoo, name)() for name in zoo.__all__]


def run(args: argparse.Namespace) -> int:
    """Run the suite; return the process exit code (0 all passed, 1 a check failed, 2 bad arguments)."""
    import torch

    from ._core import Context
    from ._report import write_report
    from ._runner import load_check_modules, run_checks

    specs = [s for group in (args.sde or []) for s in group]
    only = list(args.only or [])
    unknown = [g for g in only if g not in _groups()]
    if unknown:
        print(
            f"validation: error: unknown --only group {unknown[0]!r}; choose from {', '.join(_groups())}",
            file=sys.stderr,
        )
        return 2
    try:
        sdes = [load_sde(s) for s in specs] if specs else _zoo()
    except SDESpecError as err:
        print(f"validation: error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # small batched problems: threads buy little, and CI machines are shared
    ctx = Context(sdes=sdes, quick=bool(args.quick), out=Path(args.out), seed=int(args.seed), user_sde=bool(specs))
    ctx.out.mkdir(parents=True, exist_ok=True)
    import_failures = load_check_modules()
    mode = "quick" if ctx.quick else "full"
    print(f"sdekit validation ({mode}, seed {ctx.seed}): {', '.join(repr(s) for s in sdes)}", flush=True)
    result = run_checks(ctx, only=only or None, preface=import_failures)
    md = write_report(result, ctx, image_prefix=args.image_prefix)
    print(f"report: {md} (+ report.json)")
    return result.exit_code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m validation``."""
    parser = _Parser(prog="python -m validation", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))
