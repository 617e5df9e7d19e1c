"""Solver registry and solvers: torchsde (reverse SDE), torchdiffeq (PF-ODE), native samplers."""

from . import _exponential, _native, _torchdiffeq, _torchsde  # noqa: F401  (register every solver)
from ._base import SamplingProblem, Solver, SolveStats
from ._registry import available, get, register, resolve

__all__ = ["Solver", "SamplingProblem", "SolveStats", "available", "get", "register", "resolve"]
