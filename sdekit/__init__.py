"""sdekit: score-based diffusion models as symbolically declared SDEs.

Declare ``dx = f(x, t) dt + g(x, t) dW`` as a small :class:`SDE` subclass; sdekit
derives the Gaussian kernels, prior, reverse-time SDE, probability-flow ODE,
Fokker–Planck operator and discretizations, and compiles them to batched torch code.
"""

from . import analytic, errors, losses
from ._dynamics import ProbabilityFlowODE, ReverseSDE
from ._langevin import annealed_langevin, langevin
from ._likelihood import LikelihoodInfo, bits_per_dim, dequantize, logp
from ._marginal import Discretization, GaussianKernel, GaussianMarginal, GaussianPrior
from ._run import RunInfo
from ._sample import SampleInfo, sample
from ._simulate import SimulateInfo, simulate
from .compile import compile_expr, compile_time_fn
from .symbolic import SDE, t, x
from .symbolic.zoo import (
    EDMSDE,
    VESDE,
    VPSDE,
    BrownianMotion,
    CosineVPSDE,
    OrnsteinUhlenbeck,
    SubVPSDE,
)

__version__ = "0.1.0"

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
    "GaussianMarginal",
    "GaussianKernel",
    "GaussianPrior",
    "Discretization",
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
