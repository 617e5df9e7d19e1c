r"""Exact discrete transitions of an affine k-component SDE (``sde.marginal.discretize(n)`` for CLD and the like).

On a grid :math:`t_0 < \dots < t_n` the kernel of :mod:`sdekit._vector_marginal`,
:math:`X_t \mid X_0 \sim N(\Phi(t)X_0 + m(t), \Sigma(t))`, factors into exact Gaussian transitions
(the SDE is Markov, its moments compose):

.. math::
    X_{i+1} = \Phi_i X_i + m_i + \xi_i,\quad \xi_i \sim N(0, Q_i),\qquad
    \Phi_i = \Phi(t_{i+1})\Phi(t_i)^{-1},\quad m_i = m(t_{i+1}) - \Phi_i m(t_i),\quad
    Q_i = \Sigma(t_{i+1}) - \Phi_i\Sigma(t_i)\Phi_i^\top,

k x k at every event position. Indeed :math:`\Phi(t) = \Psi(t, 0)` with :math:`\Psi` the state-transition matrix of
:math:`A`, so :math:`\Psi(t_{i+1}, t_i) = \Phi(t_{i+1})\Phi(t_i)^{-1}` (it is invertible: :math:`\det\Phi =
e^{\int \operatorname{tr} A}`), and the mean and covariance of :math:`X_{t_{i+1}}` given :math:`X_0` are those of
:math:`X_{t_i}` pushed through the transition. Everything comes from ``marginal.alpha/offset/cov``.

Posterior (what an ancestral sampler uses, with a prediction :math:`\hat X_0`). Given :math:`X_0` the pair
:math:`(X_i, X_{i+1})` is jointly Gaussian with means :math:`\mu_j = \Phi(t_j)X_0 + m(t_j)`, covariances
:math:`S_j` = ``marginal.cov(t_j, given)`` and cross-covariance :math:`S_i\Phi_i^\top`, so

.. math::
    X_i \mid X_{i+1}, X_0 \sim N\big(\mu_i + K_i(X_{i+1} - \mu_{i+1}),\ S_i - K_i\Phi_i S_i\big),\qquad
    K_i = S_i\Phi_i^\top S_{i+1}^{-1},

with :math:`S_{i+1} = \Phi_i S_i\Phi_i^\top + Q_i`. Only :math:`S_{i+1}` is inverted (it is non-singular for
:math:`t_{i+1} > 0` when the noise reaches every component, as for CLD); :math:`S_i` may be singular (at
:math:`t_0 = 0`, :math:`K_0 = 0` and the posterior is the point mass :math:`X_0`). ``given="data"`` conditions on the
data components of :math:`X_0` only (:math:`S_j = \Sigma + \Phi C_0\Phi^\top`, the other entries of :math:`X_0`
ignored); the transitions are the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from . import _random
from ._marginal import discretization_grid
from ._vector_marginal import _apply, _column, _given, psd_sqrt
from .errors import SdekitError

if TYPE_CHECKING:  # pragma: no cover
    from ._vector_marginal import VectorGaussianMarginal

__all__ = ["VectorDiscretization", "discretize", "gaussian_posterior"]


@dataclass(frozen=True)
class VectorDiscretization:
    r"""Exact Gaussian transitions :math:`X_{i+1} = \Phi_i X_i + m_i + N(0, Q_i)` of an affine k-component SDE.

    The k-component analogue of :class:`~sdekit.Discretization` (module :mod:`sdekit._vector_discrete` has the
    formulas). States have shape ``(batch, k, *event_shape)``; the k x k matrices act at every event position.

    Attributes:
        times: the n + 1 grid times.
        scale: :math:`\Phi_i` (n, k, k).
        shift: :math:`m_i` (n, k).
        cov: :math:`Q_i` (n, k, k), the transition covariance.
        alpha, offset, marginal_cov: :math:`\Phi(t_j)` (n + 1, k, k), :math:`m(t_j)` (n + 1, k) and
            :math:`\Sigma(t_j)` (n + 1, k, k), the kernel given the whole initial state at the grid times.
        initial_cov: :math:`C_0` (k, k), the initial law of the non-data components (for ``given="data"``).
        data_index: indices of the data components.
    """

    times: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    cov: torch.Tensor
    alpha: torch.Tensor
    offset: torch.Tensor
    marginal_cov: torch.Tensor
    initial_cov: torch.Tensor
    data_index: tuple[int, ...]

    def __len__(self) -> int:
        return self.scale.shape[0]

    @property
    def noise(self) -> torch.Tensor:
        r"""A square root :math:`L_i L_i^\top = Q_i` (n, k, k) (the analogue of the scalar ``noise``, :math:`c_i`)."""
        return psd_sqrt(self.cov.to(torch.float64)).to(self.cov.dtype)

    def _index(self, i: int) -> int:
        n = len(self)
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise IndexError(f"step index i must be an integer in [0, {n}) for a {n}-step discretization, got {i!r}")
        return i % n

    def step(self, x: torch.Tensor, i: int, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Draw :math:`X_{i+1} \sim N(\Phi_i x + m_i, Q_i)` for ``x`` = :math:`X_i` (one draw per row)."""
        i = self._index(i)
        _check_state(x, self.scale.shape[-1])
        z = _random.randn(tuple(x.shape), generator=generator, dtype=x.dtype, device=x.device)
        L = psd_sqrt(self.cov[i].to(torch.float64))
        Phi, m, L = (_like(v, x) for v in (self.scale[i], self.shift[i], L))
        return _apply(Phi, x) + _column(m, x) + _apply(L, z)

    def posterior_coefficients(
        self, i: int, given: str = "state"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""``(K, B, c, P)`` (float64 k x k, k x k, k, k x k) of :math:`q(X_i \mid X_{i+1}, X_0) =
        N(K X_{i+1} + B X_0 + c, P)`: :math:`K = S_i\Phi_i^\top S_{i+1}^{-1}`, :math:`B = \Phi(t_i) -
        K\Phi(t_{i+1})` (non-data columns zero for ``given="data"``), :math:`c = m(t_i) - K m(t_{i+1})`,
        :math:`P = S_i - K\Phi_i S_i` (module docstring)."""
        i = self._index(i)
        f64 = torch.float64
        Phi_i, alpha, offset = self.scale[i].to(f64), self.alpha[i : i + 2].to(f64), self.offset[i : i + 2].to(f64)
        S = self.marginal_cov[i : i + 2].to(f64)
        if _given(given) == "data":
            S = S + alpha @ self.initial_cov.to(dtype=f64, device=S.device) @ alpha.transpose(-1, -2)
        L, info = torch.linalg.cholesky_ex(S[1])
        if int(info) != 0:
            raise SdekitError(
                f"the kernel covariance (given={given!r}) at t = {float(self.times[i + 1]):g} is singular, so the "
                f"posterior of step {i} is not defined; use a grid whose times after the first are > 0"
            )
        K, B, c, P = gaussian_posterior(Phi_i, alpha, offset, S[0], L)
        if _given(given) == "data":
            keep = torch.zeros(B.shape[-1], dtype=f64, device=B.device)
            keep[list(self.data_index)] = 1
            B = B * keep
        return K, B, c, P

    def posterior(
        self, x_next: torch.Tensor, x0: torch.Tensor, i: int, given: str = "state"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Mean (shaped like ``x_next``) and covariance P (k x k, ``x_next``'s dtype) of
        :math:`q(X_i \mid X_{i+1} = x_{\rm next}, X_0 = x_0)`; ``x0`` may be a prediction :math:`\hat X_0`."""
        _check_state(x_next, self.scale.shape[-1])
        _check_state(x0, self.scale.shape[-1])
        K, B, c, P = self.posterior_coefficients(i, given)
        K, B, c = (_like(v, x_next) for v in (K, B, c))
        return _apply(K, x_next) + _apply(B, x0) + _column(c, x_next), P.to(dtype=x_next.dtype, device=x_next.device)

    def posterior_sample(
        self, x_next: torch.Tensor, x0: torch.Tensor, i: int, generator: torch.Generator | None = None,
        given: str = "state",
    ) -> torch.Tensor:  # fmt: skip
        r"""Draw :math:`X_i \sim q(\cdot \mid X_{i+1} = x_{\rm next}, X_0 = x_0)` (one ancestral step)."""
        mean, P = self.posterior(x_next, x0, i, given)
        z = _random.randn(tuple(x_next.shape), generator=generator, dtype=x_next.dtype, device=x_next.device)
        L = psd_sqrt(P.to(torch.float64)).to(x_next.dtype)
        return mean + _apply(L.expand(x_next.shape[0], *L.shape), z)


def gaussian_posterior(
    F: torch.Tensor, alpha: torch.Tensor, offset: torch.Tensor, S_i: torch.Tensor, L_next: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``(K, B, c, P)`` of :math:`q(X_i \mid X_{i+1}, X_0) = N(K X_{i+1} + B X_0 + c, P)` (module docstring),
    batched over leading dimensions: ``F`` = :math:`\Phi_i` (..., k, k) the transition from :math:`t_i` to
    :math:`t_{i+1}`, ``alpha`` (..., 2, k, k) and ``offset`` (..., 2, k) :math:`\Phi` and m at :math:`(t_i, t_{i+1})`,
    ``S_i`` (..., k, k) the kernel covariance at :math:`t_i` and ``L_next`` a Cholesky factor of the one at
    :math:`t_{i+1}` (the caller checks that it exists). :math:`K = S_i\Phi_i^\top S_{i+1}^{-1}`,
    :math:`B = \Phi(t_i) - K\Phi(t_{i+1})`, :math:`c = m(t_i) - K m(t_{i+1})`, :math:`P = S_i - K\Phi_i S_i`."""
    K = torch.cholesky_solve(F @ S_i, L_next).transpose(-1, -2)  # S_i F^T S_{i+1}^{-1} (S symmetric)
    B = alpha[..., 0, :, :] - K @ alpha[..., 1, :, :]
    c = offset[..., 0, :] - (K @ offset[..., 1, :, None])[..., 0]
    P = S_i - K @ F @ S_i
    return K, B, c, 0.5 * (P + P.transpose(-1, -2))


def _check_state(x: torch.Tensor, k: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[1] != k:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"a {k}-component state has shape (batch, {k}, *event_shape), got {got}")


def _like(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-step coefficient in ``x``'s dtype and device, with a leading batch dimension."""
    return v.to(dtype=x.dtype, device=x.device).expand(x.shape[0], *v.shape)


def discretize(
    marginal: VectorGaussianMarginal,
    n: int,
    *,
    times: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    device: Any = None,
) -> VectorDiscretization:
    """Exact transitions between consecutive ``times`` (default n uniform steps on [0, T]), computed in float64
    from the marginal and stored in ``dtype`` on ``device``."""
    grid = discretization_grid(n, times, marginal.T, dtype, device)
    t64 = grid.detach().to(dtype=torch.float64, device="cpu")
    alpha, offset, cov = marginal.alpha(t64), marginal.offset(t64), marginal.cov(t64)
    scale = torch.linalg.solve(alpha[:-1], alpha[1:], left=False)  # Phi_i Phi(t_i) = Phi(t_{i+1})
    shift = offset[1:] - (scale @ offset[:-1, :, None])[..., 0]
    Q = cov[1:] - scale @ cov[:-1] @ scale.transpose(-1, -2)
    out = (scale, shift, 0.5 * (Q + Q.transpose(-1, -2)), alpha, offset, cov, marginal.initial_cov)
    return VectorDiscretization(grid, *(v.to(dtype=dtype, device=grid.device) for v in out), marginal.data_index)
