"""sdekit: score-based diffusion models as symbolically declared SDEs.

Declare ``dx = f(x, t) dt + g(x, t) dW`` as a small :class:`SDE` subclass; sdekit
derives the Gaussian kernels, prior, reverse-time SDE, probability-flow ODE,
Fokker–Planck operator and discretizations, and compiles them to batched torch code.

The names below are imported on first use (PEP 562 module ``__getattr__``): ``import sdekit`` costs
nothing until ``sdekit.sample`` or another name is touched, so the ``sdekit`` console script answers
``--help`` without loading torch or sympy. ``from sdekit import sample`` and ``sdekit.VPSDE`` work as usual.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names for type checkers and the API docs; imported lazily at run time
    from . import analytic, errors, losses
    from ._dequantize import bits_per_dim, dequantize
    from ._dynamics import ProbabilityFlowODE, ReverseSDE
    from ._langevin import annealed_langevin, langevin
    from ._likelihood import LikelihoodInfo, logp
    from ._marginal import Discretization, GaussianKernel, GaussianMarginal, GaussianPrior
    from ._run import RunInfo
    from ._sample import SampleInfo, sample
    from ._simulate import SimulateInfo, simulate
    from ._vector_discrete import VectorDiscretization
    from .compile import compile_expr, compile_time_fn
    from .symbolic import t, x
    from .symbolic.sde import SDE
    from .symbolic.zoo import (
        CLDSDE,
        EDMSDE,
        VESDE,
        VPSDE,
        BrownianMotion,
        CosineVPSDE,
        DiscreteVPSDE,
        OrnsteinUhlenbeck,
        SubVPSDE,
    )

__version__ = "0.1.0"

# Public name -> the module that defines it ("" = the name is a submodule of sdekit).
_EXPORTS: dict[str, str] = {
    "analytic": "",
    "errors": "",
    "losses": "",
    "ProbabilityFlowODE": "._dynamics",
    "ReverseSDE": "._dynamics",
    "annealed_langevin": "._langevin",
    "langevin": "._langevin",
    "LikelihoodInfo": "._likelihood",
    "bits_per_dim": "._dequantize",
    "dequantize": "._dequantize",
    "logp": "._likelihood",
    "Discretization": "._marginal",
    "GaussianKernel": "._marginal",
    "GaussianMarginal": "._marginal",
    "GaussianPrior": "._marginal",
    "VectorDiscretization": "._vector_discrete",
    "RunInfo": "._run",
    "SampleInfo": "._sample",
    "sample": "._sample",
    "SimulateInfo": "._simulate",
    "simulate": "._simulate",
    "compile_expr": ".compile",
    "compile_time_fn": ".compile",
    "SDE": ".symbolic.sde",
    "t": ".symbolic",
    "x": ".symbolic",
    "EDMSDE": ".symbolic.zoo",
    "VESDE": ".symbolic.zoo",
    "VPSDE": ".symbolic.zoo",
    "BrownianMotion": ".symbolic.zoo",
    "CLDSDE": ".symbolic.zoo",
    "CosineVPSDE": ".symbolic.zoo",
    "DiscreteVPSDE": ".symbolic.zoo",
    "OrnsteinUhlenbeck": ".symbolic.zoo",
    "SubVPSDE": ".symbolic.zoo",
}


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule such as ``sdekit.solvers``) on first use and cache it."""
    where = _EXPORTS.get(name)
    if where is None:
        if name.startswith("__") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        where = ""
    module = importlib.import_module(where or f".{name}", __name__)
    value = module if not where else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "SDE",
    "x",
    "t",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "CosineVPSDE",
    "EDMSDE",
    "OrnsteinUhlenbeck",
    "BrownianMotion",
    "DiscreteVPSDE",
    "CLDSDE",
    "GaussianMarginal",
    "GaussianKernel",
    "GaussianPrior",
    "Discretization",
    "VectorDiscretization",
    "ReverseSDE",
    "ProbabilityFlowODE",
    "logp",
    "bits_per_dim",
    "dequantize",
    "LikelihoodInfo",
    "sample",
    "SampleInfo",
    "simulate",
    "SimulateInfo",
    "RunInfo",
    "compile_expr",
    "compile_time_fn",
    "errors",
    "analytic",
    "losses",
    "langevin",
    "annealed_langevin",
    "__version__",
]
