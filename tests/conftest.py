"""Shared test configuration: hypothesis profiles (CI: derandomised and bounded), torch threads."""

import os

import pytest
import torch

from sdekit.testing import load_profile

# Profiles "ci" (derandomised, bounded) and "dev" are defined in one place: sdekit.testing.register_profiles.
load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# One torch thread for the whole suite: the tensors are small, xdist workers already use every core,
# and on the shared 2-core machines two intra-op threads were measured 10-800x slower (spin-waiting).
torch.set_num_threads(1)


@pytest.fixture
def float64_default():
    """Make float64 torch's default dtype for one test (restored afterwards); opt in with
    ``pytestmark = pytest.mark.usefixtures("float64_default")``."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)
