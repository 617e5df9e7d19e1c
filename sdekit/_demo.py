"""``sdekit demo``: the main job, end to end (placeholder until issue #10 lands)."""

from __future__ import annotations

import argparse

HELP = "train a small score model on a 2-D mixture, sample with several solvers, report"
DESCRIPTION = HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser``."""
    parser.add_argument("--quick", action="store_true", help="a run of under 30 seconds")


def run(args: argparse.Namespace) -> int:
    """Run the demo; return the process exit code."""
    raise NotImplementedError("sdekit demo is being written (issue #10)")
