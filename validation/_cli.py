"""Command line of the validation suite: ``python -m validation`` (same as ``sdekit validate``).

Exit codes: 0 when every check passed (skipped lines do not count), 1 when any check failed or
crashed, 2 for bad arguments (one line on stderr, before any work starts: argparse errors, an ``--sde``
that cannot be resolved or compiled, an unknown ``--only`` group, an ``--out`` that cannot be created,
a ``--seed`` out of range).

``sdekit validate`` is registered through the ``sdekit.commands`` entry point (``validation._cli:register``
in ``pyproject.toml``); this module imports neither torch nor sympy until a run starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sdekit._load import SDESpecError, resolve_sde, sde_help, sde_metavar
from sdekit._options import MAX_SEED, OptionError, check_out_dir, check_seed

__all__ = ["DESCRIPTION", "SDESpecError", "add_arguments", "register", "run", "main"]

DESCRIPTION = "Check sdekit's derived objects against Fokker-Planck and exact Gaussian answers."

EPILOG = """examples:
  python -m validation --quick                     # under 3 minutes; what CI runs
  python -m validation --out validation-report     # full run: every solver, more samples, more levels
  python -m validation --quick --sde vp --only symbolic
  python -m validation --quick --sde CLDSDE           # a k-component SDE: the checks of component_checks
  python -m validation --quick --sde mymodule:MySDE
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the suite's options to ``parser``."""
    parser.add_argument("--quick", action="store_true", help="the quick subset (under 3 minutes on 2 cores, run in CI)")
    parser.add_argument(
        "--sde",
        action="append",
        nargs="+",
        metavar=sde_metavar(),
        help=f"check these SDEs instead of the built-in zoo (repeatable): {sde_help()}. Only the checks about "
        "them are run; the suite's own test problems (double well, solver orders) are left out",
    )
    parser.add_argument("--out", type=Path, default=Path("validation-report"), help="report directory")
    parser.add_argument(
        "--seed", type=int, default=0, help=f"base seed of every random generator, 0 to {MAX_SEED} (default 0)"
    )
    parser.add_argument(
        "--only", action="append", metavar="GROUP", help="run only this group (repeatable): " + ", ".join(_groups())
    )
    parser.add_argument(
        "--image-prefix", default="", help="prefix of figure links in report.md (e.g. img/validation/ for docs)"
    )
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def register(subparsers: Any, name: str) -> argparse.ArgumentParser:
    """Add the ``sdekit <name>`` subcommand (the ``sdekit.commands`` entry point); returns its parser."""
    parser = subparsers.add_parser(
        name, help="run the validation suite (same as python -m validation)", description=DESCRIPTION
    )
    add_arguments(parser)
    parser.set_defaults(func=run, prog=f"sdekit {name}")
    return parser


def _groups() -> tuple[str, ...]:
    from ._core import GROUPS

    return GROUPS


def _zoo() -> list:
    from sdekit.symbolic import zoo

    return [getattr(zoo, name)() for name in zoo.__all__] + [zoo.CLDSDE()]


def _user_sdes(specs: list[str]) -> list:
    """Resolve ``--sde`` specs (each SDE once); two different SDEs of one class would share report lines."""
    sdes: list = []
    seen: dict[str, str] = {}
    for spec in specs:
        try:
            sde = resolve_sde(spec)
        except SDESpecError as err:
            raise OptionError(f"--sde {spec!r}: {err}") from err
        if any(repr(s) == repr(sde) for s in sdes):
            continue  # the same SDE twice (e.g. vp and VPSDE): checked once
        name = type(sde).__name__
        if name in seen:
            raise OptionError(
                f"--sde {seen[name]!r} and {spec!r} are two different {name} SDEs; the report names SDEs by "
                "class, so check them in two runs"
            )
        seen[name] = spec
        sdes.append(sde)
    return sdes


def _check(args: argparse.Namespace) -> tuple[list, list[str], Path]:
    """Every option, up front and creating nothing: (SDEs, --only groups, output directory)."""
    check_seed(args.seed)
    only = list(args.only or [])
    unknown = [g for g in only if g not in _groups()]
    if unknown:
        raise OptionError(f"unknown --only group {unknown[0]!r}; choose from {', '.join(_groups())}")
    out = check_out_dir(args.out)
    specs = [s for group in (args.sde or []) for s in group]
    return (_user_sdes(specs) if specs else []), only, out


def run(args: argparse.Namespace) -> int:
    """Run the suite; return the process exit code (0 all passed, 1 a check failed, 2 bad arguments)."""
    prog = getattr(args, "prog", "python -m validation")
    try:
        user, only, out = _check(args)
    except OptionError as err:
        print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    import torch

    from ._core import Context, left_out
    from ._report import write_report
    from ._runner import load_check_modules, run_checks

    sdes = user or _zoo()
    torch.set_num_threads(1)  # small batched problems: threads buy little, and CI machines are shared
    scalar = [s for s in sdes if s.components is None]
    vector = [s for s in sdes if s.components is not None]  # k components: validation.component_checks
    ctx = Context(scalar, vector, quick=bool(args.quick), out=out, seed=int(args.seed), user_sde=bool(user))
    ctx.out.mkdir(parents=True, exist_ok=True)
    import_failures = load_check_modules()
    mode = "quick" if ctx.quick else "full"
    print(f"sdekit validation ({mode}, seed {ctx.seed}): {', '.join(repr(s) for s in sdes)}", flush=True)
    if ctx.user_sde:
        n = left_out(ctx.quick)
        print(
            f"--sde: only the checks about these SDEs; {n} check(s) of the suite's own test problems left out "
            "(run without --sde for them)",
            flush=True,
        )
    result = run_checks(ctx, only=only or None, preface=import_failures)
    md = write_report(result, ctx, image_prefix=args.image_prefix)
    print(f"report: {md} (+ report.json)")
    return result.exit_code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m validation``."""
    parser = _Parser(prog="python -m validation", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(prog=parser.prog)
    return run(parser.parse_args(argv))
