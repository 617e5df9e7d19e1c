r"""A stochastic fixed-grid sampler for affine SDEs, k-component ones (CLD) included: ``mancestral``.

It moves along a decreasing grid :math:`t_0 = T > \dots > t_n = \epsilon` and uses only Gaussian facts of the
kernel given the data: :math:`X_t \mid x_0 \sim N(a(t)x_0 + m(t), S(t))` with :math:`a` the data columns of
:math:`\Phi(t)` = ``marginal.alpha``, :math:`m` = ``marginal.offset`` and :math:`S` = ``marginal.cov(t,
given="data")`` (the non-data components' initial law marginalised; a scalar SDE is k = 1). For two times
:math:`s < t` the posterior of the kernel is (:func:`sdekit._vector_discrete.gaussian_posterior`, the formulas of
:class:`~sdekit.VectorDiscretization`)

.. math:: X_s \mid X_t, x_0 \sim N\big(KX_t + Bx_0 + c,\ P\big),\qquad K = S_sF^\top S_t^{-1},\quad
          B = a_s - Ka_t,\quad c = m_s - Km_t,\quad P = S_s - KFS_s,

with :math:`F = \Phi(t)\Phi(s)^{-1}` the forward transition.

``mancestral`` (matrix ancestral sampling; DDPM's / gDDIM's stochastic sampler for any affine SDE): per step one
model evaluation gives the denoiser :math:`\hat x_0` as ``mexp`` reads it, :math:`\hat x_0 = G_s s + G_y(X - m)`
(:func:`sdekit.solvers._mexp.denoiser_maps`: from the noise-carrying part :math:`Ds` of the score only, so a hybrid
model's x-score is never used), and the step draws :math:`X_{t_{i+1}} \sim q(\cdot \mid X_{t_i}, x_0 = \hat x_0)`.
Exact for point-mass data (the exact denoiser of a point mass is the point: every step then draws the exact reverse
transition). For k = 1 it is ``ancestral`` with ``variance="posterior"``. Like every plug-in ancestral sampler it
drops :math:`\mathrm{Var}[x_0 \mid X_t]` from each step, a variance deficit of order one over the number of steps.

Coefficients: float64, once per run, from ``marginal`` (``affine_matrices``); NFE one per step (``steps`` counts
model evaluations, the final denoising step included). Grid: ``"logsnr"`` (default), ``"uniform"``, ``"quadratic"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .._vector_discrete import gaussian_posterior
from .._vector_marginal import psd_sqrt
from ..errors import SolverError
from ._mexp import _cholesky, _data_index, affine_matrices, denoiser_maps
from ._native import GridSolver, StepContext
from ._registry import register

__all__ = ["MatrixAncestral", "MatrixAncestralState", "posterior_steps"]


def posterior_steps(
    sde: Any, t_from: torch.Tensor, t_to: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``(K, B, c, P)`` of :math:`q(X_{t_{\rm to}} \mid X_{t_{\rm from}}, x_0)` for float64 times
    ``t_to < t_from`` (n,) given the data (module docstring): shapes (n, k, k), (n, k, d), (n, k), (n, k, k)."""
    Phi_s, m_s, S_s = affine_matrices(sde, t_to)[:3]
    Phi_t, m_t, S_t = affine_matrices(sde, t_from)[:3]
    F = torch.linalg.solve(Phi_s, Phi_t, left=False)  # F Phi(s) = Phi(t)
    K, B, c, P = gaussian_posterior(
        F, torch.stack([Phi_s, Phi_t], -3), torch.stack([m_s, m_t], -2), S_s, _cholesky(S_t)
    )
    return K, B[..., _data_index(sde)], c, P


def _check_end(name: str, times: torch.Tensor) -> None:
    if not float(times[-1]) > 0:
        raise SolverError(f"{name}: the run must end at a time > 0 (no score at 0), got {float(times[-1])}")


@dataclasses.dataclass(frozen=True)
class MatrixAncestralState:
    r"""Per step: :math:`X_{i+1} = W_x X_i + W_s\,s + w + L z` with :math:`W_x = K + BG_y`, :math:`W_s = BG_s`,
    :math:`w = c - BG_y m_i` (n, k, k), (n, k, k), (n, k, 1) and :math:`LL^\top = P` (n, k, k)."""

    from_state: torch.Tensor
    from_score: torch.Tensor
    shift: torch.Tensor
    noise: torch.Tensor


@register
class MatrixAncestral(GridSolver[MatrixAncestralState]):
    r"""Matrix ancestral sampler: the exact Gaussian posterior step :math:`q(X_{t_{i+1}} \mid X_{t_i}, \hat x_0)`
    of any affine SDE's kernel given the data, k-component ones (CLD) included (module docstring). NFE per step 1.
    """

    name = "mancestral"
    kind = "sde"
    noise_types = ("additive",)
    requires_affine = True
    weak_order = 1.0
    default_steps = 200
    grid = "logsnr"
    steps_are_nfe = True
    description = (
        "matrix ancestral sampling: exact Gaussian posterior step with the denoiser read from D s (DDPM / stochastic "
        "gDDIM); any affine SDE, k-component ones (CLD) included"
    )

    def prepare(self, ctx: StepContext, opts: dict[str, Any]) -> MatrixAncestralState:
        times = ctx.times
        _check_end(self.name, times)
        sde = ctx.problem.sde
        K, B, c, P = posterior_steps(sde, times[:-1], times[1:])
        G_s, G_y = denoiser_maps(sde, times[:-1])
        m = affine_matrices(sde, times[:-1])[1].unsqueeze(-1)
        out = (K + B @ G_y, B @ G_s, c.unsqueeze(-1) - B @ G_y @ m, psd_sqrt(P))
        like = {"dtype": ctx.problem.x_T.dtype, "device": ctx.problem.x_T.device}
        return MatrixAncestralState(*(v.to(**like) for v in out))

    def step(
        self, ctx: StepContext, state: MatrixAncestralState, x: torch.Tensor, i: int
    ) -> tuple[torch.Tensor, MatrixAncestralState]:
        k = state.from_state.shape[-1]
        y = x.reshape(x.shape[0], k, -1)
        s = ctx.score(x, i).reshape(y.shape)
        z = ctx.noise(x).reshape(y.shape)
        out = state.from_state[i] @ y + state.from_score[i] @ s + state.shift[i] + state.noise[i] @ z
        return out.reshape(x.shape), state
