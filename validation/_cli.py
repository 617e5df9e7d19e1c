"""Command line of the validation suite (placeholder until issue #8 lands)."""

from __future__ import annotations

import argparse

DESCRIPTION = "Check sdekit's derived objects against Fokker-Planck and exact Gaussian answers."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the suite's options to ``parser``."""
    parser.add_argument("--quick", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Run the suite; return the process exit code."""
    raise NotImplementedError("validation is being written (issue #8)")


def main(argv=None) -> int:
    """Entry point of ``python -m validation``."""
    parser = argparse.ArgumentParser(prog="python -m validation", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))
