r"""Reverse-time SDE and probability-flow ODE of a declared SDE, given a score.

For :math:`dx = f\,dt + g\,dW` with marginals :math:`p_t`, Anderson's reverse process
(run with :math:`dt < 0`) and the probability-flow ODE share the marginals:

.. math::
    dx = \left[f - \partial_x(g^2) - g^2 \nabla_x\log p_t\right] dt + g\, d\bar W_t,\qquad
    \frac{dx}{dt} = f - \tfrac12\partial_x(g^2) - \tfrac12 g^2 \nabla_x\log p_t .

The :math:`\partial_x(g^2)` terms vanish for additive noise and are kept for
state-dependent diffusions. Both objects take forward time ``t``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sympy as sp
import torch

from .compile import compile_expr
from .symbolic import derive
from .symbolic._symbols import t as T_SYM
from .symbolic._symbols import x as X_SYM

if TYPE_CHECKING:  # pragma: no cover
    from .symbolic.sde import SDE

__all__ = ["ReverseSDE", "ProbabilityFlowODE"]

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_SCORE_SYMBOL = sp.Symbol("s_theta")


def _batch_time(t: Any, x: torch.Tensor) -> torch.Tensor:
    """t as a (batch,) tensor in x's dtype/device (models take t of shape (batch,))."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


class _ScoreDynamics:
    """Shared machinery: drift = f - k * d(g^2)/dx - k * g^2 * score (k = 1 reverse, 1/2 PF)."""

    _k: float = 1.0

    def __init__(self, sde: SDE, score: Score | sp.Expr):
        self.sde = sde
        self.symbolic = isinstance(score, (sp.Expr, str))
        if self.symbolic:
            score_expr = sde.sympify(score)
            self.score_expr = score_expr
            self.f = self._drift_expr(score_expr)
            self._compiled = compile_expr(sde.subs(self.f), X_SYM, T_SYM)
            self.score = None
        else:
            if not callable(score):
                raise TypeError(f"score must be a callable score(x, t) or a sympy expression, got {type(score)}")
            self.score = score
        self._has_divergence = sde.noise_type != "additive"

    def _drift_expr(self, score: sp.Expr) -> sp.Expr:
        raise NotImplementedError

    def _score_label(self) -> str:
        if self.symbolic:
            return str(self.score_expr)
        return getattr(self.score, "__name__", None) or type(self.score).__name__

    def displayed_drift(self) -> sp.Expr:
        """The drift as a simplified sympy expression in x, t and the parameters; a callable score shows as
        the symbol ``s_theta`` (named so as not to clash with a parameter called ``s``, as in CosineVPSDE)."""
        score = self.score_expr if self.symbolic else _SCORE_SYMBOL
        return sp.simplify(self._drift_expr(score))

    def _equation(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        score = "" if self.symbolic else f"; s_theta = {self._score_label()}(x, t)"
        return f"{type(self).__name__} of {self.sde!r}: {self._equation()}{score}"

    def drift(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Drift at forward time t (number, 0-d or (batch,) tensor)."""
        if self.symbolic:
            return self._compiled(x, t)
        sde = self.sde
        g = sde.diffusion_fn(x, t)
        out = sde.drift_fn(x, t) - self._k * g**2 * self.score(x, _batch_time(t, x))
        if self._has_divergence:
            out = out - self._k * sde.dg2_dx_fn(x, t)
        return out


class ReverseSDE(_ScoreDynamics):
    r"""Reverse-time SDE :math:`dx = [f - \partial_x g^2 - g^2 s]\,dt + g\,d\bar W` (dt < 0).

    ``drift(x, t)`` and ``diffusion(x, t)`` take forward time. With a sympy score,
    ``.f`` and ``.g`` are the symbolic reverse drift and diffusion.
    """

    _k = 1.0

    def __init__(self, sde: SDE, score: Score | sp.Expr):
        super().__init__(sde, score)
        self.g = sde.g

    def _drift_expr(self, score: sp.Expr) -> sp.Expr:
        return derive.reverse_drift(self.sde.f, self.sde.g, score)

    def diffusion(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Diffusion g(x, t) (the same as the forward SDE's)."""
        return self.sde.diffusion_fn(x, t)

    def _equation(self) -> str:
        return f"dx = ({self.displayed_drift()}) dt + ({self.sde.g}) dW_bar, run from t = T down to 0 (dt < 0)"


class ProbabilityFlowODE(_ScoreDynamics):
    r"""Probability-flow ODE :math:`dx/dt = f - \tfrac12\partial_x g^2 - \tfrac12 g^2 s`.

    ``drift(x, t)`` takes forward time; with a sympy score ``.f`` is symbolic.
    """

    _k = 0.5

    def _drift_expr(self, score: sp.Expr) -> sp.Expr:
        return derive.probability_flow_drift(self.sde.f, self.sde.g, score)

    def _equation(self) -> str:
        return f"dx/dt = {self.displayed_drift()}"
