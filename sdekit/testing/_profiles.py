"""Hypothesis settings profiles of sdekit.testing: ``ci`` (derandomised, bounded) and ``dev``."""

from __future__ import annotations

import os
from typing import Any

import torch
from hypothesis import HealthCheck, settings

_F64 = torch.float64


# ====================================================================== profiles
def register_profiles() -> None:
    """Register the hypothesis settings profiles ``"ci"`` and ``"dev"`` (idempotent).

    * ``"ci"``: ``derandomize=True`` (the same examples on every run, so CI is reproducible),
      ``max_examples=30``, no deadline (sympy derivations take 0.1–3 s), ``print_blob=True``.
    * ``"dev"``: random examples, ``max_examples=50``, no deadline.

    Both suppress the ``too_slow`` health check (building an SDE runs sympy). A test's own
    ``@settings(max_examples=...)`` still overrides the profile.
    """
    common: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
    base = settings.get_profile("default")  # not whatever profile is loaded now
    settings.register_profile("ci", base, derandomize=True, max_examples=30, print_blob=True, **common)
    settings.register_profile("dev", base, max_examples=50, **common)


def load_profile(name: str | None = None) -> str:
    """Register the profiles and load ``name`` (default ``$HYPOTHESIS_PROFILE``, else ``"ci"``); return its name."""
    register_profiles()
    name = name or os.environ.get("HYPOTHESIS_PROFILE", "ci")
    settings.load_profile(name)
    return name
