r"""The exact Gaussian-mixture oracle of an affine k-component SDE (CLD and the like).

Data :math:`x_0 \sim \sum_j w_j N(\mu_j, C_j)` live in the single data component (``sde.data_components``); the
other components start from their initial law :math:`N(0, C_0)` (``sde.initial_covariance()``). With
:math:`a(t) = \Phi(t)_{:,\rm data}` (a k-vector) and :math:`S(t) = \Sigma(t) + \Phi C_0 \Phi^\top`
(``sde.marginal.cov(t, given="data")``) the full state :math:`X_t` (k values at each of the d event positions) is
again a Gaussian mixture with the same weights,

.. math:: X_t \sim \sum_j w_j\,N\big(a \otimes \mu_j + m(t) \otimes 1_d,\ a a^\top \otimes C_j + S \otimes I_d\big).

In the eigenbasis :math:`C_j = U_j \operatorname{diag}(\lambda_j) U_j^\top` (applied along the event axis) this
covariance is block diagonal: one k x k block :math:`\lambda_{j,i}\,a a^\top + S` per eigen-direction i, so
densities and scores need k x k Cholesky factors only. Everything comes from ``sde.marginal``; nothing is per SDE.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from .errors import SdekitError

if TYPE_CHECKING:  # pragma: no cover
    from .analytic import GaussianMixture
    from .symbolic.sde import SDE

__all__ = ["VectorDiffusedGaussianMixture"]

_LOG_2PI = math.log(2 * math.pi)


class VectorDiffusedGaussianMixture:
    r"""Exact marginals :math:`p_t` of the full state of an affine k-component SDE whose data component starts from a
    Gaussian mixture (module docstring); ``model(X, t)`` is the exact full score :math:`\nabla_X \log p_t(X)`.

    .. math:: \nabla_X \log p_t = -\sum_j r_j(X, t)\, U_j\big(\lambda_{j} a a^\top + S\big)^{-1} U_j^\top
              \big(X - a\mu_j - m\big)

    (the k x k inverse acting per eigen-direction). States have shape ``(batch, k, *event_shape)`` with
    ``event_shape`` the mixture's; ``t`` is a number, a 0-d tensor or ``(batch,)``.

    Attributes:
        data: the mixture of the data component at t = 0.
        sde: the affine k-component SDE.
    """

    def __init__(self, data: GaussianMixture, sde: SDE) -> None:
        marginal = sde.marginal  # raises NotAffineError for a non-affine SDE
        if len(marginal.data_index) != 1:
            raise SdekitError(
                f"the k-component mixture oracle needs exactly one data component; {sde!r} has data_components "
                f"{sde.data_components}; declare data_components = (<one component>,)"
            )
        self.data, self.sde, self.marginal = data, sde, marginal
        self.k, self.dim, self.event_shape = marginal.k, data.dim, data.event_shape
        self._d = marginal.data_index[0]

    def _coefficients(self, t: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """a (B|1, k), m (B|1, k), S (B|1, k, k) in ``like``'s dtype."""
        tt = torch.as_tensor(t, dtype=torch.float64).to("cpu")
        tt = tt.reshape(1) if tt.ndim == 0 else tt
        alpha = self.marginal.alpha(tt)
        out = alpha[..., :, self._d], self.marginal.offset(tt), self.marginal.cov(tt, given="data")
        return tuple(v.to(dtype=like.dtype, device=like.device) for v in out)  # type: ignore[return-value]

    def _check(self, X: torch.Tensor) -> torch.Tensor:
        if not isinstance(X, torch.Tensor) or X.ndim < 2 or X.shape[1] != self.k or math.prod(X.shape[2:]) != self.dim:
            got = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
            raise ValueError(f"X must have shape (batch, {self.k}, *{self.event_shape}), got {got}")
        return X.reshape(X.shape[0], self.k, self.dim)

    def _terms(self, X: torch.Tensor, t: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """Rotated residuals y (B, K, d, k), Cholesky factors L (B|1, K, d, k, k), log-weights + log N (B, K)."""
        Xf = self._check(X)
        mu, lam, basis, logw = self.data._params(X.dtype, X.device)  # (K, d), (K, d), (K, d, d)|None, (K,)
        a, m, S = self._coefficients(t, X)
        mean = a[:, None, :, None] * mu[None, :, None, :] + m[:, None, :, None]  # (B|1, K, k, d)
        r = Xf[:, None] - mean  # (B, K, k, d)
        y = r if basis is None else torch.einsum("bjkd,jde->bjke", r, basis)
        y = y.transpose(-1, -2)  # (B, K, d, k)
        cov = lam[None, :, :, None, None] * (a[:, :, None] * a[:, None, :])[:, None, None] + S[:, None, None]
        L, info = torch.linalg.cholesky_ex(cov)
        if bool((info != 0).any()):
            raise ValueError("the mixture's covariance at this time is singular; the oracle needs t > 0 or C_0 > 0")
        z = torch.linalg.solve_triangular(L, y.unsqueeze(-1), upper=False)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(dim=(-1, -2))  # (B|1, K)
        logc = logw - 0.5 * (z**2).sum(dim=(-1, -2, -3)) - 0.5 * logdet - 0.5 * self.k * self.dim * _LOG_2PI
        return y, L, logc, basis

    def log_prob(self, X: torch.Tensor, t: Any) -> torch.Tensor:
        r""":math:`\log p_t(X)` of the full state, shape (batch,)."""
        return torch.logsumexp(self._terms(X, t)[2], dim=1)

    def score(self, X: torch.Tensor, t: Any) -> torch.Tensor:
        r""":math:`\nabla_X \log p_t(X)`, shaped like ``X`` (all k components)."""
        y, L, logc, basis = self._terms(X, t)
        w = torch.cholesky_solve(y.unsqueeze(-1), L).squeeze(-1)  # (B, K, d, k)
        s = -w.transpose(-1, -2) if basis is None else -torch.einsum("jdi,bjik->bjkd", basis, w)
        return (torch.softmax(logc, dim=1)[:, :, None, None] * s).sum(1).reshape(X.shape)

    def __call__(self, X: torch.Tensor, t: Any) -> torch.Tensor:
        """The score: ``model(X, t) == score(X, t)``."""
        return self.score(X, t)

    def sample(
        self, n: int, t: Any, generator: torch.Generator | None = None, *, dtype: torch.dtype | None = None,
        device: Any = None,
    ) -> torch.Tensor:  # fmt: skip
        r"""Exact draws of :math:`X_t`, shape (n, k, *event_shape): :math:`x_0` from the mixture, lifted into the
        data component, then ``sde.marginal.sample(..., given="data")`` (the other components' initial law
        marginalised)."""
        x0 = self.data.sample(n, generator, dtype=dtype, device=device)
        return self.marginal.sample(self.marginal.lift(x0), t, generator=generator, given="data")

    def at(self, t: float | torch.Tensor) -> GaussianMixture:
        r"""The exact law of the full state :math:`X_t` at one time t as a :class:`~sdekit.analytic.GaussianMixture`
        on the event shape ``(k, *event_shape)``: means :math:`a\otimes\mu_j + m\otimes 1`, covariances
        :math:`aa^\top\otimes C_j + S\otimes I` (one (k d) x (k d) eigendecomposition per component, so for small d),
        same weights. ``at(sde.T)`` is the exact :math:`p_T` (``prior=`` of :func:`sdekit.logp`), and
        ``sdekit.testing.assert_samples_match(X, oracle.at(t))`` compares full-state samples with it."""
        # lazy: sdekit.analytic imports this module inside GaussianMixture.diffuse
        from .analytic import GaussianMixture

        tt = torch.as_tensor(t, dtype=torch.float64)
        if tt.numel() != 1:
            raise ValueError(f"at(t) needs a single time, got a tensor of shape {tuple(tt.shape)}")
        a, m, S = (v[0] for v in self._coefficients(float(tt), torch.empty(0, dtype=torch.float64)))
        d = self.data
        mu, lam, basis, logw = d._params(torch.float64, torch.device("cpu"))
        cov = torch.diag_embed(lam) if basis is None else basis @ torch.diag_embed(lam) @ basis.transpose(-1, -2)
        eye = torch.eye(self.dim, dtype=torch.float64)
        full = torch.stack([torch.kron(torch.outer(a, a), c) + torch.kron(S, eye) for c in cov])
        w, V = torch.linalg.eigh(full)
        means = (a[None, :, None] * mu[:, None, :] + m[None, :, None]).reshape(mu.shape[0], -1)
        return GaussianMixture._from_parts(means, w, V, logw, (self.k, *self.event_shape))

    def component(self, t: float, name: str) -> GaussianMixture:
        r"""The exact law of one component of :math:`X_t` at one time t as a :class:`~sdekit.analytic.GaussianMixture`
        on the event shape: means :math:`a_c\mu_j + m_c`, eigenvalues :math:`a_c^2\lambda_j + S_{cc}`, same bases."""
        # lazy: sdekit.analytic imports this module inside GaussianMixture.diffuse
        from .analytic import GaussianMixture

        c = list(self.sde.components).index(name)
        a, m, S = (v[0] for v in self._coefficients(float(t), torch.empty(0, dtype=torch.float64)))
        d = self.data
        return GaussianMixture._from_parts(a[c] * d._mu + m[c], a[c] ** 2 * d._lam + S[c, c], d._basis, d._logw,
                                           d.event_shape)  # fmt: skip

    def __repr__(self) -> str:
        return f"VectorDiffusedGaussianMixture({self.data!r}, sde={self.sde!r})"
