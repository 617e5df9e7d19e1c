r"""Exact Gaussian and Gaussian-mixture oracles, and their exact diffusion under any affine SDE.

A Gaussian mixture :math:`p_0 = \sum_k w_k\,N(\mu_k, C_k)` on :math:`\mathbb R^d` is an exact data
distribution: its density, score and samples are closed forms. Under an affine SDE, whose
marginal kernel is :math:`x_t = \alpha(t) x_0 + m(t) + \sigma(t)\,z`, every component stays
Gaussian and the weights do not change:

.. math::
    p_t(x) = \sum_k w_k\,N\!\big(x;\ \alpha\mu_k + m,\ \alpha^2 C_k + \sigma^2 I\big).

:meth:`GaussianMixture.diffuse` returns that family as an exact score model
(:class:`DiffusedGaussianMixture`), for every affine SDE, including those whose marginal is
computed by quadrature. Nothing is written per SDE: :math:`\alpha, m, \sigma` come from
``sde.marginal``.

Numerics. Each covariance is stored in its eigenbasis, :math:`C_k = U_k \operatorname{diag}(\lambda_k) U_k^\top`
(diagonal and isotropic components need no basis), so that

.. math::
    \alpha^2 C_k + \sigma^2 I = U_k \operatorname{diag}(\alpha^2\lambda_k + \sigma^2)\,U_k^\top

is diagonalised exactly at every t with one rotation of :math:`x - \alpha\mu_k - m`: no
factorization per time, and log-determinants and solves are sums and divisions.
Log-densities and scores combine components with log-sum-exp / softmax, so they stay finite
far in the tails (50 standard deviations and more) in float32 as in float64. Parameters are
stored in float64 and cast (once per dtype/device, cached) to the dtype and device of the input.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from . import _random
from . import parameterization as _param

if TYPE_CHECKING:  # pragma: no cover
    from .symbolic.sde import SDE

__all__ = ["Gaussian", "GaussianMixture", "DiffusedGaussianMixture"]

_LOG_2PI = math.log(2 * math.pi)
_F64 = torch.float64

_Params = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None", torch.Tensor]


def _as_f64(value: Any, name: str) -> torch.Tensor:
    try:
        # Python numbers and lists go straight to float64 (torch.as_tensor would round them to float32)
        src = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=_F64)
        out = src.detach().to(dtype=_F64, device="cpu").clone()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor or a nested sequence of numbers, got {type(value).__name__}") from err
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} contains non-finite values")
    return out


def _flatten(x: torch.Tensor, dim: int, event_shape: tuple[int, ...]) -> torch.Tensor:
    """View ``x`` of shape (batch, *event) with prod(event) = dim as (batch, dim)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError(f"x must have a batch dimension: shape (batch, *{event_shape}), got a scalar")
    if math.prod(x.shape[1:]) != dim:
        raise ValueError(
            f"x has shape {tuple(x.shape)}: expected (batch, *event) with {dim} values per sample "
            f"(event shape {event_shape})"
        )
    return x.reshape(x.shape[0], dim)


def _component_terms(
    x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, basis: torch.Tensor | None, logw: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Rotated residuals :math:`y_k = U_k^\top(x - \mu_k)` (B, K, d) and log-weights + log N (B, K).

    ``mean`` and ``var`` are (B or 1, K, d): means and eigenvalue variances of each component.
    """
    diff = x[:, None, :] - mean
    y = diff if basis is None else torch.einsum("bkd,kde->bke", diff, basis)
    d = x.shape[-1]
    logc = logw - 0.5 * (y * y / var).sum(-1) - 0.5 * torch.log(var).sum(-1) - 0.5 * d * _LOG_2PI
    return y, logc


def _log_prob(
    x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, basis: torch.Tensor | None, logw: torch.Tensor
) -> torch.Tensor:
    return torch.logsumexp(_component_terms(x, mean, var, basis, logw)[1], dim=1)


def _score(
    x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, basis: torch.Tensor | None, logw: torch.Tensor
) -> torch.Tensor:
    y, logc = _component_terms(x, mean, var, basis, logw)
    weighted = torch.softmax(logc, dim=1)[..., None] * (-y / var)  # responsibilities times component scores
    if basis is None:
        return weighted.sum(1)
    return torch.einsum("bke,kde->bd", weighted, basis)


class GaussianMixture:
    r"""Exact Gaussian mixture :math:`p(x) = \sum_{k=1}^K w_k\,N(x; \mu_k, C_k)` on :math:`\mathbb R^d`.

    .. math::
        \log p(x) = \operatorname{logsumexp}_k\Big[\log w_k - \tfrac12 (x-\mu_k)^\top C_k^{-1}(x-\mu_k)
        - \tfrac12\log\det(2\pi C_k)\Big],\qquad
        \nabla\log p(x) = -\sum_k r_k(x)\,C_k^{-1}(x - \mu_k),

    with responsibilities :math:`r_k(x) = w_k N(x;\mu_k,C_k)/p(x)` (a softmax of the bracket).

    Args:
        means: shape (K, *event_shape) (K component means; event_shape may be any shape, e.g.
            (d,) or (C, H, W); d = prod(event_shape)). A 1-D tensor of shape (K,) means K
            one-dimensional components (event shape (1,)).
        stds: component standard deviations: a number or shape (K,) for isotropic
            :math:`C_k = s_k^2 I`, or shape (K, d) / (K, *event_shape) for diagonal
            :math:`C_k = \operatorname{diag}(s_{k}^2)`. All > 0.
        weights: shape (K,), non-negative, normalised here (default uniform).
        covs: full covariances, shape (K, d, d), symmetric positive definite (instead of ``stds``).

    Data are (batch, *event_shape); any input of shape (batch, *e) with prod(e) = d is accepted
    and results follow its dtype and device. Parameters are kept in float64.
    """

    def __init__(
        self,
        means: Any,
        stds: Any = None,
        weights: Any = None,
        *,
        covs: Any = None,
    ) -> None:
        mu = _as_f64(means, "means")
        if mu.ndim == 0:
            raise ValueError("means must have shape (K, *event_shape), got a scalar")
        if mu.ndim == 1:
            mu = mu[:, None]
        k = mu.shape[0]
        if k == 0:
            raise ValueError("a mixture needs at least one component (means has K = 0 rows)")
        event_shape = tuple(mu.shape[1:])
        d = math.prod(event_shape)
        mu = mu.reshape(k, d)
        if (stds is None) == (covs is None):
            raise ValueError("pass exactly one of stds= (isotropic or diagonal components) and covs= (full)")
        basis: torch.Tensor | None = None
        if covs is not None:
            c = _as_f64(covs, "covs")
            if c.shape != (k, d, d):
                raise ValueError(f"covs must have shape (K, d, d) = ({k}, {d}, {d}), got {tuple(c.shape)}")
            if not torch.allclose(c, c.transpose(-1, -2), rtol=1e-10, atol=1e-12 * float(c.abs().max())):
                raise ValueError("covs must be symmetric")
            c = 0.5 * (c + c.transpose(-1, -2))
            if (torch.linalg.cholesky_ex(c).info != 0).any():
                raise ValueError("covs must be positive definite (a Cholesky factorization failed)")
            lam, basis = torch.linalg.eigh(c)
            if (lam <= 0).any():
                raise ValueError("covs must be positive definite (an eigenvalue is <= 0)")
        else:
            s = _as_f64(stds, "stds")
            if s.ndim == 0:
                s = s.expand(k)
            if s.shape == (k,):
                s = s[:, None].expand(k, d)
            elif s.shape in ((k, d), (k, *event_shape)):
                s = s.reshape(k, d)
            else:
                raise ValueError(
                    f"stds must be a number, shape (K,) = ({k},) or (K, d) = ({k}, {d}), got {tuple(s.shape)}"
                )
            if (s <= 0).any():
                raise ValueError("stds must be > 0")
            lam = (s * s).contiguous()
        if weights is None:
            w = torch.full((k,), 1.0 / k, dtype=_F64)
        else:
            w = _as_f64(weights, "weights")
            if w.shape != (k,):
                raise ValueError(f"weights must have shape (K,) = ({k},), got {tuple(w.shape)}")
            if (w < 0).any() or w.sum() <= 0:
                raise ValueError("weights must be non-negative with a positive sum")
            w = w / w.sum()
        self._set(mu, lam, basis, torch.log(w), event_shape)

    def _set(
        self, mu: torch.Tensor, lam: torch.Tensor, basis: torch.Tensor | None, logw: torch.Tensor, event_shape: tuple
    ) -> None:
        self._mu, self._lam, self._basis, self._logw = mu, lam, basis, logw
        self.event_shape: tuple[int, ...] = tuple(event_shape)
        """Shape of one sample."""
        self.dim: int = mu.shape[1]
        """d = prod(event_shape)."""
        self._cache: dict[tuple[torch.dtype, torch.device], _Params] = {}

    @classmethod
    def _from_parts(
        cls, mu: torch.Tensor, lam: torch.Tensor, basis: torch.Tensor | None, logw: torch.Tensor, event_shape: tuple
    ) -> GaussianMixture:
        obj = cls.__new__(cls)
        GaussianMixture._set(obj, mu, lam, basis, logw, event_shape)
        return obj

    # ----------------------------------------------------------------- parameters
    def _params(self, dtype: torch.dtype, device: torch.device) -> _Params:
        key = (dtype, torch.device(device))
        if key not in self._cache:
            basis = None if self._basis is None else self._basis.to(dtype=dtype, device=device)
            self._cache[key] = tuple(  # type: ignore[assignment]
                v if v is None else v.to(dtype=dtype, device=device) for v in (self._mu, self._lam, basis, self._logw)
            )
        return self._cache[key]

    @property
    def n_components(self) -> int:
        """K, the number of components."""
        return self._mu.shape[0]

    @property
    def means(self) -> torch.Tensor:
        r"""Component means :math:`\mu_k`, shape (K, *event_shape), float64."""
        return self._mu.reshape(self.n_components, *self.event_shape)

    @property
    def weights(self) -> torch.Tensor:
        """Normalised weights :math:`w_k`, shape (K,), float64."""
        return torch.exp(self._logw)

    @property
    def covariances(self) -> torch.Tensor:
        r"""Component covariances :math:`C_k` over the flattened event, shape (K, d, d), float64."""
        if self._basis is None:
            return torch.diag_embed(self._lam)
        return self._basis @ (self._lam[..., None] * self._basis.transpose(-1, -2))

    @property
    def is_diagonal(self) -> bool:
        """True when every covariance is diagonal (isotropic or per-coordinate stds)."""
        return self._basis is None

    def mean(self) -> torch.Tensor:
        r"""Mixture mean :math:`\sum_k w_k\mu_k`, shape event_shape, float64."""
        return (self.weights[:, None] * self._mu).sum(0).reshape(self.event_shape)

    def covariance(self) -> torch.Tensor:
        r"""Mixture covariance :math:`\sum_k w_k (C_k + \mu_k\mu_k^\top) - \bar\mu\bar\mu^\top`, shape (d, d)."""
        w = self.weights
        bar = (w[:, None] * self._mu).sum(0)
        second = (w[:, None, None] * (self.covariances + self._mu[:, :, None] * self._mu[:, None, :])).sum(0)
        return second - bar[:, None] * bar[None, :]

    # ----------------------------------------------------------------- density
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x)`, shape (batch,), by log-sum-exp over components."""
        xf = _flatten(x, self.dim, self.event_shape)
        mu, lam, basis, logw = self._params(x.dtype, x.device)
        return _log_prob(xf, mu[None], lam[None], basis, logw)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla_x\log p(x) = -\sum_k r_k(x) C_k^{-1}(x-\mu_k)`, shaped like ``x``."""
        xf = _flatten(x, self.dim, self.event_shape)
        mu, lam, basis, logw = self._params(x.dtype, x.device)
        return _score(xf, mu[None], lam[None], basis, logw).reshape(x.shape)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: Any = None,
    ) -> torch.Tensor:
        r"""Draw ``n`` samples, shape (n, *event_shape): pick :math:`k \sim w`, then
        :math:`x = \mu_k + U_k \operatorname{diag}(\sqrt{\lambda_k})\,z`, :math:`z \sim N(0, I)`.

        ``dtype`` defaults to ``torch.get_default_dtype()``; ``device`` to the generator's device
        (CPU without a generator). Draws are made on ``device`` with ``generator``.
        """
        if int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        n = int(n)
        dtype = dtype or torch.get_default_dtype()
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        device = torch.device(device)
        mu, lam, basis, _ = self._params(dtype, device)
        if self.n_components == 1 or n == 0:  # (torch.multinomial refuses n = 0)
            comp = torch.zeros(n, dtype=torch.long, device=device)
        else:
            comp = _random.multinomial(torch.exp(self._logw), n, generator=generator, device=device)
        z = _random.randn((n, self.dim), generator=generator, dtype=dtype, device=device)
        y = torch.sqrt(lam)[comp] * z
        if basis is not None:
            rotated = torch.empty_like(y)
            for k in range(self.n_components):
                sel = comp == k
                rotated[sel] = y[sel] @ basis[k].T
            y = rotated
        return (mu[comp] + y).reshape(n, *self.event_shape)

    # ----------------------------------------------------------------- diffusion
    def diffuse(self, sde: SDE) -> DiffusedGaussianMixture:
        r"""The exact law of :math:`x_t` when :math:`x_0 \sim` this mixture and x follows the affine ``sde``:

        .. math:: p_t = \sum_k w_k\,N(\alpha(t)\mu_k + m(t),\ \alpha(t)^2 C_k + \sigma(t)^2 I).

        Raises :class:`~sdekit.errors.NotAffineError` if ``sde`` has no Gaussian marginal. For a k-component SDE
        (``sde.components``) the mixture is the law of the data component and the result is the exact law of the
        full state, :class:`sdekit._vector_analytic.VectorDiffusedGaussianMixture`.
        """
        if getattr(sde, "components", None) is not None:
            # lazy: the k-component oracle module imports this one
            from ._vector_analytic import VectorDiffusedGaussianMixture

            return VectorDiffusedGaussianMixture(self, sde)  # type: ignore[return-value]
        return DiffusedGaussianMixture(self, sde)

    def __repr__(self) -> str:
        kind = "full" if self._basis is not None else "diagonal"
        return f"{type(self).__name__}(K={self.n_components}, event_shape={self.event_shape}, covariance={kind})"


class Gaussian(GaussianMixture):
    r"""Exact Gaussian :math:`N(\mu, C)`: a one-component :class:`GaussianMixture`.

    .. math:: \log p(x) = -\tfrac12 (x-\mu)^\top C^{-1} (x-\mu) - \tfrac12\log\det(2\pi C),\qquad
              \nabla\log p(x) = -C^{-1}(x - \mu).

    Args:
        mean: shape event_shape (e.g. (d,)); a number means d = 1.
        std: a number (isotropic, :math:`C = s^2 I`) or shape event_shape (diagonal). Default 1.
        cov: full covariance, shape (d, d) (instead of ``std``).
    """

    def __init__(self, mean: Any, std: Any = None, *, cov: Any = None) -> None:
        mu = _as_f64(mean, "mean")
        if mu.ndim == 0:
            mu = mu.reshape(1)
        if cov is not None:
            if std is not None:
                raise ValueError("pass at most one of std= and cov=")
            super().__init__(mu[None], covs=_as_f64(cov, "cov")[None])
            return
        s = _as_f64(1.0 if std is None else std, "std")
        super().__init__(mu[None], s.reshape(1) if s.ndim == 0 else s[None])


class DiffusedGaussianMixture:
    r"""Exact marginals :math:`p_t` of a Gaussian mixture carried by an affine SDE: an exact score model.

    .. math::
        p_t(x) = \sum_k w_k\,N\!\big(x;\ \alpha(t)\mu_k + m(t),\ \Sigma_k(t)\big),\qquad
        \Sigma_k(t) = \alpha(t)^2 C_k + \sigma(t)^2 I,

    .. math::
        \nabla_x\log p_t(x) = -\sum_k r_k(x, t)\,\Sigma_k(t)^{-1}\big(x - \alpha(t)\mu_k - m(t)\big).

    Calling it, ``model(x, t)``, returns the score, so it is a model with ``parameterization="score"``;
    :meth:`as_model` gives it in any other parameterization. ``t`` is a number, a 0-d tensor or a
    tensor of shape (batch,); coefficients :math:`\alpha, m, \sigma^2` are taken from
    ``sde.marginal`` in float64 and cast to ``x``'s dtype.

    Attributes:
        data: the mixture at t = 0.
        sde: the affine SDE.
    """

    def __init__(self, data: GaussianMixture, sde: SDE) -> None:
        sde.marginal  # noqa: B018 - raises NotAffineError now, with the reason, for a non-affine SDE
        self.data = data
        self.sde = sde
        self.event_shape = data.event_shape
        self.dim = data.dim

    def _terms(self, x: torch.Tensor, t: Any) -> tuple[torch.Tensor, ...]:
        xf = _flatten(x, self.dim, self.event_shape)
        mu, lam, basis, logw = self.data._params(x.dtype, x.device)
        alpha, m, sigma2 = _param.marginal_coefficients(self.sde, t, xf[:, None, :])  # (B|1, 1, 1) or 0-d
        return xf, alpha * mu + m, alpha * alpha * lam + sigma2, basis, logw

    def log_prob(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        r""":math:`\log p_t(x)`, shape (batch,)."""
        xf, mean, var, basis, logw = self._terms(x, t)
        if mean.ndim == 2:
            mean, var = mean[None], var[None]
        return _log_prob(xf, mean, var, basis, logw)

    def score(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        r""":math:`\nabla_x \log p_t(x)`, shaped like ``x``."""
        xf, mean, var, basis, logw = self._terms(x, t)
        if mean.ndim == 2:
            mean, var = mean[None], var[None]
        return _score(xf, mean, var, basis, logw).reshape(x.shape)

    def __call__(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """The score: ``model(x, t) == score(x, t)``."""
        return self.score(x, t)

    def sample(
        self,
        n: int,
        t: Any,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: Any = None,
    ) -> torch.Tensor:
        r"""Exact draws of :math:`x_t`, shape (n, *event_shape): :math:`x_0 \sim p_0`, then
        :math:`x_t = \alpha(t) x_0 + m(t) + \sigma(t) z`. ``t`` is a number or shape (n,)."""
        x0 = self.data.sample(n, generator, dtype=dtype, device=device).reshape(n, self.dim)
        alpha, m, sigma2 = _param.marginal_coefficients(self.sde, t, x0)
        z = _random.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        return (alpha * x0 + m + torch.sqrt(sigma2) * z).reshape(n, *self.event_shape)

    def at(self, t: float | torch.Tensor) -> GaussianMixture:
        r"""The exact marginal at one time t as a :class:`GaussianMixture`
        (:math:`\mu_k \to \alpha\mu_k + m`, :math:`\lambda_k \to \alpha^2\lambda_k + \sigma^2`, same eigenbases
        and weights), with ``log_prob(x)`` of shape (batch,) and ``sample(n, generator=)``.
        ``at(sde.T)`` is the exact :math:`p_T`, e.g. ``prior=`` of :func:`sdekit.logp`."""
        tt = torch.as_tensor(t, dtype=_F64)
        if tt.numel() != 1:
            raise ValueError(f"at(t) needs a single time, got a tensor of shape {tuple(tt.shape)}")
        like = torch.empty(1, dtype=_F64)
        alpha, m, sigma2 = (v.reshape(()) for v in _param.marginal_coefficients(self.sde, tt.reshape(()), like))
        d = self.data
        return GaussianMixture._from_parts(
            alpha * d._mu + m, alpha * alpha * d._lam + sigma2, d._basis, d._logw, d.event_shape
        )

    def as_model(self, parameterization: str = "score") -> _param.Model:
        """The exact oracle as a model predicting ``parameterization`` (``"score"``, ``"eps"``, ``"x0"``,
        ``"v"``, ``"denoiser"``), via :func:`sdekit.parameterization.as_model`."""
        return _param.as_model(self.score, self.sde, parameterization)

    def __repr__(self) -> str:
        return f"DiffusedGaussianMixture({self.data!r}, sde={self.sde!r})"
