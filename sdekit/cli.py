"""The ``sdekit`` console script.

Subcommands:

- ``sdekit demo``: the main job, end to end (train a small score network on a 2-D
  Gaussian mixture, sample with several solvers, exact likelihoods, report + plots).
  Implemented in :mod:`sdekit._demo`.
- ``sdekit derive``: the declared equations of the built-in SDEs (or ``--sde module:Class``)
  and everything sdekit derives from them (marginals, prior, reverse-time SDE, probability-flow ODE).
- ``sdekit solvers``: the registered solvers with their capabilities.
- ``sdekit validate``: the Fokker-Planck / analytic validation suite (same as
  ``python -m validation``). Implemented in the ``validation`` package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import sympy as sp

__all__ = ["main"]


def _zoo() -> dict[str, type]:
    from .symbolic import zoo

    return {name: getattr(zoo, name) for name in zoo.__all__}


def _derive(args: argparse.Namespace) -> int:
    from ._load import load_sde
    from .symbolic import derive

    score = sp.Symbol("s_theta")  # not "s": a parameter may be called s (CosineVPSDE)
    zoo = _zoo()
    if args.sde is None:
        sdes = [cls() for cls in zoo.values()]
    elif args.sde in zoo:
        sdes = [zoo[args.sde]()]
    else:
        try:
            sdes = [load_sde(args.sde)]
        except ValueError as err:
            known = ", ".join(sorted(zoo))
            print(f"sdekit derive: error: --sde {args.sde!r}: {err} (built-in: {known})", file=sys.stderr)
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
        print(f"   reverse drift (score s_theta): {derive.reverse_drift(sde.f, sde.g, score)}")
        print(f"   PF-ODE drift  (score s_theta): {derive.probability_flow_drift(sde.f, sde.g, score)}")
        print()
    return 0


def _solvers(args: argparse.Namespace) -> int:
    from . import solvers

    rows = solvers.available()
    if not rows:
        print("no solvers registered")
        return 0
    print(
        f"{'name':<20}{'kind':<6}{'strong':<8}{'weak':<6}{'adaptive':<10}{'steps':<7}{'grid':<9}{'sample':<8}description"
    )
    for name, cls in sorted(rows.items()):
        steps = cls.default_steps or cls.recommended_steps
        print(
            f"{name:<20}{cls.kind:<6}{cls.strong_order!s:<8}{cls.weak_order!s:<6}{cls.adaptive!s:<10}"
            f"{steps if steps else '-'!s:<7}{cls.grid:<9}{'yes' if cls.can_sample else 'refused':<8}{cls.description}"
        )
    print(
        "steps: default (fixed-grid) or recommended fixed step count; grid: default grid of fixed-step runs; "
        "sample: 'refused' = sdekit.sample raises SolverError (Solver.can_sample; see the solver's sample_refusal)"
    )
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sdekit`` command."""
    parser = _Parser(prog="sdekit", description="Score-based diffusion models as symbolically declared SDEs.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, required=True)
    from . import _demo

    demo = sub.add_parser("demo", help=_demo.HELP, description=_demo.DESCRIPTION)
    _demo.add_arguments(demo)
    demo.set_defaults(func=_demo.run)
    derive = sub.add_parser("derive", help="show the derived equations and marginals of the built-in SDEs or yours")
    derive.add_argument(
        "--sde",
        metavar="{" + ",".join(sorted(_zoo())) + ",module:Class}",
        help="only this built-in SDE, or 'module:Class' naming your sdekit.SDE subclass (instantiated with defaults)",
    )
    derive.set_defaults(func=_derive)
    sol = sub.add_parser("solvers", help="list registered solvers and their capabilities")
    sol.set_defaults(func=_solvers)
    validate = sub.add_parser("validate", help="run the validation suite (same as python -m validation)")
    try:
        from validation import _cli as _validation_cli
    except ImportError:  # pragma: no cover - validation/ ships with the source tree
        validate.set_defaults(func=_no_validation)
    else:
        validate.description = _validation_cli.DESCRIPTION
        _validation_cli.add_arguments(validate)
        validate.set_defaults(func=_validation_cli.run)
    return parser


def _no_validation(args: argparse.Namespace) -> int:  # pragma: no cover
    print("sdekit validate: the validation package is not installed (install sdekit from a source checkout)")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sdekit`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
