"""Solver registry and solvers: torchsde (reverse and forward SDE), torchdiffeq (PF-ODE), native samplers.

Importing this package registers every solver: each solver module below adds its classes to the one
registry (:mod:`sdekit.solvers._registry`) when it is imported, and every entry point looks solvers up there.
"""

from . import _dpm, _exponential, _mancestral, _mexp, _native, _torchdiffeq, _torchsde, _unipc  # noqa: F401  (register every solver)
from ._base import SamplingProblem, SimulationProblem, Solver, SolveStats
from ._defaults import default_sampler
from ._option import Option
from ._registry import available, get, register, resolve

__all__ = [
    "Option",
    "Solver",
    "SamplingProblem",
    "SimulationProblem",
    "SolveStats",
    "available",
    "default_sampler",
    "get",
    "register",
    "resolve",
]
