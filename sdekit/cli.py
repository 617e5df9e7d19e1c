"""The ``sdekit`` console script.

Subcommands:

- ``sdekit demo``: the main job, end to end (train a small score network on a 2-D Gaussian
  mixture, sample with several solvers, exact likelihoods, report + plots). Options in
  :mod:`sdekit.demo._cli`, the run in :mod:`sdekit.demo._run`.
- ``sdekit derive [SDE]``: the declared equations of the built-in SDEs (or of one SDE: ``vp``, ``VPSDE``,
  ``module:Class``) and everything sdekit derives from them (marginals, prior, reverse-time SDE, PF-ODE).
- ``sdekit solvers``: the registered solvers with their capabilities; ``sdekit solvers --options NAME``: the
  options of one solver (name, accepted values, default, meaning), from its declarations.
- ``sdekit logp``: the log-likelihood of every row of a ``.npy`` dataset, in durable, resumable chunks
  (options and run in :mod:`sdekit._logp_cli`, the chunk files in :mod:`sdekit._chunkstore`).
- Commands of other packages, discovered through the ``sdekit.commands`` entry-point group: each entry
  point names a function ``register(subparsers, name)`` that adds the subparser ``name`` and sets its
  ``func``. sdekit's own source tree registers ``sdekit validate`` there (the validation suite, same as
  ``python -m validation``); the library itself never imports it.

A bare ``sdekit`` prints the usage with the list of commands to stderr and exits with code 2. Every option
mistake is one line on stderr (``sdekit <command>: error: ...``) and exit code 2, reported before any work
starts. Building the parser imports neither torch nor sympy: ``sdekit --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "build_parser", "COMMAND_GROUP"]

COMMAND_GROUP = "sdekit.commands"
"""Entry-point group of the subcommands other packages add (``name = "package.module:register"``)."""

_DERIVE_HELP = "show the derived equations and marginals of the built-in SDEs or yours"


def _derive(args: argparse.Namespace) -> int:
    # lazy: `sdekit --help` and the parser load neither torch nor sympy
    import sympy as sp

    from ._load import SDESpecError, resolve_sde
    from .symbolic import derive, zoo

    spec = args.sde_option if args.sde_option is not None else args.sde
    if args.sde_option is not None and args.sde is not None and args.sde != args.sde_option:
        print(
            f"sdekit derive: error: two SDEs given ({args.sde!r} and --sde {args.sde_option!r}); pass one",
            file=sys.stderr,
        )
        return 2
    score = sp.Symbol("s_theta")  # not "s": a parameter may be called s (CosineVPSDE)
    if spec is None:
        sdes = [getattr(zoo, name)() for name in zoo.__all__]
    else:
        try:
            sdes = [resolve_sde(spec)]
        except SDESpecError as err:
            option = "--sde" if args.sde_option is not None else "SDE"
            print(f"sdekit derive: error: {option} {spec!r}: {err}", file=sys.stderr)
            return 2
    for sde in sdes:
        print(f"== {sde!r}")
        print(f"   dx = ({sde.f}) dt + ({sde.g}) dW        noise: {sde.noise_type}")
        if sde.is_affine:
            m = sde.marginal
            how = "closed form" if m.closed else "numeric quadrature"
            print(f"   alpha(t)   = {m.alpha_expr}")
            if m.offset_expr != 0:
                print(f"   m(t)       = {m.offset_expr}")
            print(f"   sigma(t)^2 = {m.sigma2_expr}    [{how}]")
            print(f"   prior x_T ~ N({sde.prior.mean:.6g}, {sde.prior.std:.6g}^2)")
        else:
            print(f"   no Gaussian marginal: {sde._affine.reason}")
        # simplified, as repr(sde.reverse(score)) and repr(sde.probability_flow(score)) show them
        print(f"   reverse drift (score s_theta): {sp.simplify(derive.reverse_drift(sde.f, sde.g, score))}")
        print(f"   PF-ODE drift  (score s_theta): {sp.simplify(derive.probability_flow_drift(sde.f, sde.g, score))}")
        print()
    return 0


WIDTH = 100
"""Width of the ``sdekit solvers`` table (every line fits a 100-column terminal)."""


def _solver_options(name: str) -> int:
    """``sdekit solvers --options NAME``: the declared options of one solver (exit code 2 for an unknown name)."""
    # lazy: `sdekit --help` and the parser load neither torch nor sympy
    from . import solvers
    from .errors import UnknownSolverError
    from .solvers._option_table import listing

    try:
        cls = solvers.available()[solvers.resolve(name)]
    except UnknownSolverError as err:
        print(f"sdekit solvers: error: --options: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(listing(cls, WIDTH))
    return 0


def _solvers(args: argparse.Namespace) -> int:
    if args.options is not None:
        return _solver_options(args.options)
    # lazy: `sdekit --help` and the parser load neither torch nor sympy
    import textwrap

    from . import solvers

    rows = solvers.available()
    if not rows:
        print("no solvers registered")
        return 0
    columns = ("name", 19), ("kind", 5), ("strong", 7), ("weak", 5), ("adaptive", 9), ("steps", 6), ("grid", 7)
    print("".join(f"{title:<{w}}" for title, w in columns) + "sample")
    wrap = textwrap.TextWrapper(width=WIDTH, initial_indent="    ", subsequent_indent="    ")
    for name, cls in sorted(rows.items()):
        steps = cls.default_steps or cls.recommended_steps
        cells = (
            name,
            cls.kind,
            "-" if cls.strong_order is None else cls.strong_order,
            "-" if cls.weak_order is None else cls.weak_order,
            "yes" if cls.adaptive else "no",
            steps if steps else "-",
            cls.grid,
        )
        line = "".join(f"{cell!s:<{w - 1}} " for cell, (_, w) in zip(cells, columns))
        print(line + ("yes" if cls.can_sample else "refused"))
        print(wrap.fill(cls.description))
    print()
    legend = (
        "strong, weak: declared orders of convergence ('-': none declared). adaptive: runs with rtol/atol when "
        "steps=None. steps: default (fixed-grid) or recommended fixed step count ('-': adaptive only). grid: "
        "default time grid of fixed-step runs. sample: 'refused' = sdekit.sample raises SolverError "
        "(Solver.can_sample; see the solver's sample_refusal)."
    )
    print(textwrap.fill(legend, width=WIDTH))
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _plugin_commands(sub: Any, taken: set[str]) -> None:
    """Add the subcommands of the ``sdekit.commands`` entry points (loading only their ``register``)."""
    # lazy: `sdekit --help` and the parser load neither torch nor sympy
    from importlib.metadata import entry_points

    seen: set[str] = set()
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        if ep.name in taken or ep.name in seen:  # built-ins win; the first of two equal names wins
            continue
        seen.add(ep.name)
        try:
            register = ep.load()
            register(sub, ep.name)
        except Exception as err:  # a broken plugin must not break the other commands
            why = f"{type(err).__name__}: {' '.join(str(err).split())}"
            broken = sub.add_parser(ep.name, help=f"(unavailable: {ep.value} failed to load)")
            broken.set_defaults(func=_unavailable(ep.name, ep.value, why))


def _unavailable(name: str, value: str, why: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        print(
            f"sdekit {name}: error: its implementation {value} could not be loaded ({why}); reinstall the package "
            "that provides it (for 'validate': pip install -e . in a source checkout of sdekit)",
            file=sys.stderr,
        )
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sdekit`` command (imports neither torch nor sympy)."""
    # lazy: `sdekit --help` and the parser load neither torch nor sympy
    from . import _logp_cli as logp_cli
    from ._load import sde_help, sde_metavar
    from .demo import _cli as demo_cli

    parser = _Parser(
        prog="sdekit",
        description="Score-based diffusion models as symbolically declared SDEs.",
        epilog="Run 'sdekit COMMAND --help' for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND", title="commands")
    demo = sub.add_parser("demo", help=demo_cli.HELP, description=demo_cli.DESCRIPTION)
    demo_cli.add_arguments(demo)
    demo.set_defaults(func=demo_cli.run)
    derive = sub.add_parser("derive", help=_DERIVE_HELP, description=_DERIVE_HELP[0].upper() + _DERIVE_HELP[1:] + ".")
    derive.add_argument("sde", nargs="?", metavar="SDE", help=f"only this SDE: {sde_help()} (default: the whole zoo)")
    derive.add_argument("--sde", dest="sde_option", metavar=sde_metavar(), help="the same as the positional SDE")
    derive.set_defaults(func=_derive)
    sol = sub.add_parser("solvers", help="list registered solvers and their capabilities")
    sol.add_argument(
        "--options",
        metavar="NAME",
        help="list the options of solver NAME instead (name, accepted values, default, meaning)",
    )
    sol.set_defaults(func=_solvers)
    logp = sub.add_parser("logp", help=logp_cli.HELP, description=logp_cli.DESCRIPTION)
    logp_cli.add_arguments(logp)
    logp.set_defaults(func=logp_cli.run)
    _plugin_commands(sub, set(sub.choices))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sdekit`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:  # a bare `sdekit`: the usage and the commands, exit code 2
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
