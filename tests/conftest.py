"""Shared test configuration: hypothesis profiles (CI: derandomised and bounded), torch threads."""

import os

import torch

from sdekit.testing import load_profile

# Profiles "ci" (derandomised, bounded) and "dev" are defined in one place: sdekit.testing.register_profiles.
load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread per xdist worker: the workers already use every core.
    torch.set_num_threads(1)
