r"""What :func:`sdekit.sample` does differently for a k-component SDE (``sde.components``, e.g. CLD).

States have shape ``(batch, k, *event_shape)``; ``x_T`` is drawn from ``sde.prior`` (the k x k Gaussian of the
marginal at T with the non-data components' initial law marginalised). The solvers that integrate the reverse SDE
or the PF-ODE from ``sde.reverse(score)`` / ``sde.probability_flow(score)`` take them: the torchsde family (reverse
SDE, fixed and adaptive; diagonal or additive G, and general G for ``euler``/``heun``/``midpoint``) and the
torchdiffeq family (PF-ODE), the matrix-exponential multistep integrator ``mexp``
(:mod:`sdekit.solvers._mexp`) and the matrix ancestral sampler ``mancestral`` (:mod:`sdekit.solvers._mancestral`).
The other native fixed-grid samplers (exp*, dpm*, unipc, pc, ...) are written for a
scalar marginal and refuse. The model must return the full score (``parameterization="score"``).

``denoise=True`` is Tweedie's formula for the full state: whatever the law of :math:`X_0` (data in the data
components, the others from their initial law), :math:`X_t = \Phi X_0 + m + N(0, \Sigma)` gives

.. math:: E[X_0 \mid X_t] = \Phi(t)^{-1}\big(X_t - m(t) + \Sigma(t)\,\nabla \log p_t(X_t)\big),

with :math:`\Sigma` the kernel covariance given the whole initial state (``marginal.cov(t)``). The data
components of the result are the posterior mean of the data; the others are that of their initial values. It
needs the score of *every* component (a hybrid model that returns zeros for CLD's x-score must pass
``denoise=False``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ._vector_marginal import _apply, _column
from .errors import SolverError

if TYPE_CHECKING:  # pragma: no cover
    from .solvers._base import Solver
    from .symbolic.sde import SDE

__all__ = ["check_components", "vector_tweedie"]

_FAMILIES = ("TorchsdeSolver", "TorchdiffeqSolver", "MatrixExponential", "MatrixAncestral")


def check_components(sde: SDE, impl: Solver, name: str, parameterization: str, shape: tuple[int, ...]) -> None:
    """Refuse, with what to pass instead, what :func:`sdekit.sample` cannot do with a k-component SDE."""
    k = len(sde.components)
    if len(shape) < 2 or shape[1] != k:
        raise ValueError(
            f"{sde!r} has {k} components {sde.components}: shape must be (batch, {k}, *event_shape), got {shape}"
        )
    if not any(cls.__name__ in _FAMILIES for cls in type(impl).__mro__):
        raise SolverError(
            f"solver {name!r} is written for scalar SDEs; a k-component SDE ({sde!r}) samples with a torchsde solver "
            f"(reverse SDE: 'euler', 'srk', 'heun', ...), a torchdiffeq one (PF-ODE: 'dopri5', 'rk4', ...), or the "
            f"native affine samplers 'mexp' (PF-ODE) and 'mancestral' (reverse SDE)"
        )
    if parameterization != "score":
        raise SolverError(
            f"a k-component SDE ({sde!r}) needs a score model (parameterization='score', the score of every "
            f"component), not {parameterization!r}"
        )


def vector_tweedie(sde: SDE, score: Any, x: torch.Tensor, eps: float) -> torch.Tensor:
    r""":math:`E[X_0 \mid X_\epsilon = x] = \Phi^{-1}(x - m + \Sigma\,s(x, \epsilon))` (module docstring); one model
    evaluation."""
    marginal = sde.marginal
    t = torch.tensor(eps, dtype=torch.float64)
    alpha, offset, cov = marginal.alpha(t), marginal.offset(t), marginal.cov(t)
    inverse = torch.linalg.inv(alpha)
    b = x.shape[0]
    like = {"dtype": x.dtype, "device": x.device}
    t_batch = torch.full((b,), eps, **like)
    s = score(x, t_batch)
    y = x - _column(offset.to(**like).expand(b, -1), x) + _apply(cov.to(**like).expand(b, -1, -1), s)
    return _apply(inverse.to(**like).expand(b, -1, -1), y)
