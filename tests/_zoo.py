"""The affine zoo of the grid and exponential-integrator tests (tests/solvers/test_grids.py,
tests/solvers/test_exponential.py): every built-in affine SDE plus a user SDE with a nonzero offset m(t)."""

from __future__ import annotations

import sdekit


def user_sde() -> sdekit.SDE:
    """An affine SDE with a nonzero offset m(t) and a numerically derived marginal."""
    return sdekit.SDE.from_expressions("-(1 + t) * x + 2", "sqrt(1 + t)", T=2.0)


AFFINE_ZOO = {
    "vp": sdekit.VPSDE,
    "ve": sdekit.VESDE,
    "subvp": sdekit.SubVPSDE,
    "edm": sdekit.EDMSDE,
    "cosine": sdekit.CosineVPSDE,
    "user": user_sde,
}
"""Name -> constructor."""
