"""The sympy symbols every declaration uses: state ``x`` and time ``t``."""

import sympy as sp

x = sp.Symbol("x", real=True)
"""The state symbol (one coordinate of the state; the SDE acts elementwise)."""

t = sp.Symbol("t", nonnegative=True)
"""The time symbol, t in [0, T]."""

s = sp.Symbol("t_s", nonnegative=True)
"""Start time of a transition kernel (see ``GaussianMarginal.transition_expr``)."""

__all__ = ["x", "t", "s"]
