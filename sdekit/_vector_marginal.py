r"""Torch side of the Gaussian kernels of an affine k-component SDE.

For :math:`dX = (A(t) X + b(t))\,dt + G(t)\,dW` (k components at every event position, :math:`D = GG^\top`) the law
of :math:`X_t` given the full initial state :math:`X_0` is, position by position,

.. math:: N\big(\Phi(t) X_0 + m(t),\ \Sigma(t)\big),\qquad
          \Phi' = A\Phi,\ m' = Am + b,\ \Sigma' = A\Sigma + \Sigma A^\top + D,

:math:`\Phi(0) = I`, :math:`m(0) = 0`, :math:`\Sigma(0) = 0` (closed forms from
:mod:`sdekit.symbolic._components`, else :class:`_MomentTable`: scipy DOP853 at rtol 1e-13 on a uniform grid with
cubic Hermite interpolation using the exact derivatives, ~1e-12 accurate).

Initial law. Only the *data* components (``sde.data_components``; all of them by default) of :math:`X_0` come from
data; the others start from :math:`N(0, C_0)` with :math:`C_0` = ``sde.initial_covariance()`` (CLD: the velocity
:math:`v_0 \sim N(0, \gamma M)`). ``given="data"`` marginalises them: the kernel becomes
:math:`N(\Phi X_0 + m, \Sigma + \Phi C_0 \Phi^\top)` with the non-data entries of ``X_0`` ignored (set to their
initial mean 0); ``given="state"`` (default) conditions on the whole of ``X_0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy as sp
import torch

from . import _random
from .compile import compile_time_fn
from .errors import SdekitError
from .symbolic._symbols import t as T_SYM

if TYPE_CHECKING:  # pragma: no cover
    from ._vector_discrete import VectorDiscretization
    from .symbolic._components import VectorMarginalExprs
    from .symbolic.sde import SDE

__all__ = ["VectorGaussianMarginal", "VectorGaussianPrior"]

_LOG_2PI = math.log(2 * math.pi)


def _matrix_fn(M: sp.Matrix) -> Any:
    """Compiled entries of a matrix of t: ``fn(t)`` returns ``(*t.shape, rows, cols)``."""
    fns = [[compile_time_fn(e, T_SYM) for e in row] for row in M.tolist()]

    def fn(t: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.stack([f(t) for f in row], dim=-1) for row in fns], dim=-2)

    return fn


def _apply(M: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``M`` of shape (batch, k, k) applied to ``X`` (batch, k, *event) at every event position."""
    flat = X.reshape(X.shape[0], X.shape[1], -1)
    return torch.bmm(M, flat).reshape(X.shape[0], M.shape[1], *X.shape[2:])


def _column(v: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """(batch, k) as (batch, k, 1, ..., 1), broadcastable against ``X``."""
    return v.reshape(*v.shape, *([1] * (X.ndim - 2)))


def psd_sqrt(C: torch.Tensor) -> torch.Tensor:
    r"""A square root :math:`L L^\top = C` of symmetric positive semi-definite matrices (eigenvalues clamped at 0,
    so singular covariances such as :math:`\Sigma(0) = 0` or CLD's :math:`C_0` work)."""
    w, V = torch.linalg.eigh(C)
    return V * w.clamp_min(0).sqrt().unsqueeze(-2)


class _MomentTable:
    """Numeric :math:`(\\Phi, m, \\Sigma)` on a uniform grid of [0, T], cubic Hermite interpolation."""

    def __init__(self, exprs: VectorMarginalExprs, T: float, n: int = 4096):
        # lazy: scipy's ODE solver only for a k-component marginal without a closed form
        from scipy.integrate import solve_ivp

        k = exprs.A.rows
        A, b, D = (_matrix_fn(M) for M in (exprs.A, exprs.b, exprs.D))

        def rhs(tt: float, y: np.ndarray) -> np.ndarray:
            tv = torch.tensor(tt, dtype=torch.float64)
            a, bb, d = A(tv).numpy(), b(tv).numpy(), D(tv).numpy()
            Phi, m, S = y[: k * k].reshape(k, k), y[k * k : k * k + k], y[k * k + k :].reshape(k, k)
            return np.concatenate([(a @ Phi).ravel(), a @ m + bb[:, 0], (a @ S + S @ a.T + d).ravel()])

        y0 = np.concatenate([np.eye(k).ravel(), np.zeros(k), np.zeros(k * k)])
        grid = np.linspace(0.0, T, n + 1)
        sol = solve_ivp(rhs, (0.0, T), y0, method="DOP853", t_eval=grid, rtol=1e-13, atol=1e-15)
        if not sol.success:  # pragma: no cover - defensive
            raise SdekitError(f"numeric k-component marginal failed: {sol.message}")
        self.k, self.n, self.h = k, n, T / n
        self._y = np.ascontiguousarray(sol.y.T)
        self._dy = np.stack([rhs(tt, y) for tt, y in zip(grid, self._y)])
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (t.dtype, t.device)
        if key not in self._cache:
            self._cache[key] = tuple(torch.as_tensor(a, dtype=t.dtype, device=t.device) for a in (self._y, self._dy))
        y, dy = self._cache[key]
        pos = t / self.h
        idx = pos.detach().floor().clamp(0, self.n - 1).long()
        u = (pos - idx).unsqueeze(-1)
        y0, y1, d0, d1 = y[idx], y[idx + 1], dy[idx] * self.h, dy[idx + 1] * self.h
        v = (1 + 2 * u) * (1 - u) ** 2 * y0 + u * (1 - u) ** 2 * d0 + u**2 * (3 - 2 * u) * y1 + u**2 * (u - 1) * d1
        k = self.k
        shape = t.shape
        return (v[..., : k * k].reshape(*shape, k, k), v[..., k * k : k * k + k].reshape(*shape, k),
                v[..., k * k + k :].reshape(*shape, k, k))  # fmt: skip


@dataclass(frozen=True)
class VectorGaussianPrior:
    r"""The Gaussian :math:`N(\mu, C)` of the k components at every event position (float64 ``mean`` (k,) and
    ``cov`` (k, k))."""

    mean: torch.Tensor
    cov: torch.Tensor

    def sample(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Draw a tensor of ``shape`` = ``(batch, k, *event_shape)``."""
        shape = tuple(shape)
        k = self.mean.shape[0]
        if len(shape) < 2 or shape[1] != k:
            raise ValueError(f"shape must be (batch, {k}, *event_shape), got {shape}")
        z = _random.randn(shape, generator=generator, device=device, dtype=dtype)
        L = psd_sqrt(self.cov).to(dtype=z.dtype, device=z.device).expand(shape[0], k, k)
        return _apply(L, z) + _column(self.mean.to(dtype=z.dtype, device=z.device).expand(shape[0], k), z)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density summed over event positions: shape (batch,)."""
        k = self.mean.shape[0]
        mean = self.mean.to(dtype=x.dtype, device=x.device).expand(x.shape[0], k)
        cov = self.cov.to(dtype=x.dtype, device=x.device).expand(x.shape[0], k, k)
        return _gaussian_log_prob(x - _column(mean, x), cov)


def _cholesky(cov: torch.Tensor) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError(
            "the covariance is singular at this time (e.g. t = 0, where X_t = X_0); densities and scores need t > 0"
        )
    return L


def _gaussian_log_prob(r: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """log N(r; 0, cov) per event position, summed: r (batch, k, *event), cov (batch, k, k)."""
    L = _cholesky(cov)
    flat = r.reshape(r.shape[0], r.shape[1], -1)
    y = torch.linalg.solve_triangular(L, flat, upper=False)
    positions = flat.shape[2]
    logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (y**2).sum(dim=(1, 2)) - positions * (logdet + 0.5 * r.shape[1] * _LOG_2PI)


class VectorGaussianMarginal:
    r"""Kernel :math:`p(X_t \mid X_0) = N(\Phi(t) X_0 + m(t), \Sigma(t))` of an affine k-component SDE.

    ``alpha(t)`` (:math:`\Phi`, k x k), ``offset(t)`` (:math:`m`, k), ``cov(t)`` (:math:`\Sigma`, k x k) take t a
    number or a tensor and return float64 (or t's dtype) tensors of shape ``(*t.shape, k, k)`` / ``(*t.shape, k)``.
    States have shape ``(batch, k, *event_shape)``; ``t`` in ``mean``/``sample``/``log_prob``/``score`` is a number
    or ``(batch,)``. ``given="data"`` marginalises the non-data components of :math:`X_0` over their initial law
    (module docstring).

    Attributes:
        alpha_expr, offset_expr, cov_expr: sympy matrices in t (parameter values inserted), None without a closed
            form (``closed`` False: numbers from the moment-ODE table).
        initial_cov: :math:`C_0`, float64 (k, k).
        data_index: indices of the data components.
        prior: :math:`N(m(T), \Sigma(T) + \Phi(T) C_0 \Phi(T)^\top)`: exact when the data components are a point
            mass at 0, otherwise an approximation of :math:`p_T` (error shrinks with :math:`\Phi(T)`); for data of
            mean :math:`\mu` add :math:`\Phi(T)_{:,\rm data}\,\mu`.
    """

    def __init__(self, sde: SDE, exprs: VectorMarginalExprs, initial_cov: sp.Matrix, data_index: tuple[int, ...]):
        self.sde, self.T, self.k = sde, sde.T, exprs.A.rows
        self.closed = exprs.closed
        self.alpha_expr, self.offset_expr, self.cov_expr = exprs.alpha, exprs.offset, exprs.cov
        self.data_index = data_index
        self._coefficient_exprs = (exprs.A, exprs.b, exprs.D)
        self._coefficient_fns: tuple[Any, Any, Any] | None = None
        self.initial_cov = torch.tensor(np.array(initial_cov.evalf(), dtype=float), dtype=torch.float64)
        self._table: _MomentTable | None = None
        if self.closed:
            try:
                self._fns = tuple(_matrix_fn(M) for M in (exprs.alpha, exprs.offset, exprs.cov))  # type: ignore[arg-type]
            except SdekitError:  # a closed form with a function torch lacks: integrate numerically
                self.closed = False
        if not self.closed:
            self._table = _MomentTable(exprs, sde.T)
        T = torch.tensor(self.T, dtype=torch.float64)
        self.prior = VectorGaussianPrior(mean=self.offset(T), cov=self.cov(T, given="data"))

    # -- coefficient functions of t
    @staticmethod
    def _t(t: Any) -> torch.Tensor:
        if isinstance(t, torch.Tensor):
            return t if t.is_floating_point() else t.to(torch.get_default_dtype())
        return torch.as_tensor(t, dtype=torch.float64)

    def _moments(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._table is not None:
            return self._table(t)
        alpha, offset, cov = (fn(t) for fn in self._fns)
        return alpha, offset[..., 0], cov

    def alpha(self, t: Any) -> torch.Tensor:
        r""":math:`\Phi(t)`, the k x k mean coefficient (:math:`E[X_t \mid X_0] = \Phi X_0 + m`)."""
        return self._moments(self._t(t))[0]

    def offset(self, t: Any) -> torch.Tensor:
        r""":math:`m(t)`, the mean offset (k,)."""
        return self._moments(self._t(t))[1]

    def cov(self, t: Any, given: str = "state") -> torch.Tensor:
        r""":math:`\Sigma(t)` (``given="state"``), or :math:`\Sigma + \Phi C_0 \Phi^\top` (``given="data"``)."""
        alpha, _, cov = self._moments(self._t(t))
        if _given(given) == "data":
            C0 = self.initial_cov.to(dtype=alpha.dtype, device=alpha.device)
            cov = cov + alpha @ C0 @ alpha.transpose(-1, -2)
        return cov

    def _coefficients(self, t: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._coefficient_fns is None:  # compiled on first use: only the exponential integrator asks
            self._coefficient_fns = tuple(_matrix_fn(M) for M in self._coefficient_exprs)  # type: ignore[assignment]
        A, b, D = (fn(self._t(t)) for fn in self._coefficient_fns)  # type: ignore[union-attr]
        return A, b[..., 0], D

    def drift_matrix(self, t: Any) -> torch.Tensor:
        r""":math:`A(t)` of the drift :math:`f = A(t) X + b(t)`, shape ``(*t.shape, k, k)``."""
        return self._coefficients(t)[0]

    def drift_offset(self, t: Any) -> torch.Tensor:
        r""":math:`b(t)` of the drift :math:`f = A(t) X + b(t)`, shape ``(*t.shape, k)``."""
        return self._coefficients(t)[1]

    def diffusion_matrix(self, t: Any) -> torch.Tensor:
        r""":math:`D(t) = G(t) G(t)^\top`, shape ``(*t.shape, k, k)``."""
        return self._coefficients(t)[2]

    def log_snr(self, t: Any) -> torch.Tensor:
        r"""Generalized half log-SNR :math:`\lambda(t) = \tfrac1k\big(\log|\det\Phi(t)| - \tfrac12\log\det S(t)\big)`
        with :math:`S` the kernel covariance given the data: :math:`\log(\alpha/\sigma)` for k = 1, decreasing, the
        time variable of the ``"logsnr"`` grid of k-component SDEs (:mod:`sdekit.solvers._grids`)."""
        t = self._t(t)
        _, logdet_phi = torch.linalg.slogdet(self.alpha(t))
        return (logdet_phi - 0.5 * torch.logdet(self.cov(t, given="data"))) / self.k

    # -- kernels
    def _coeffs(self, t: Any, like: torch.Tensor, given: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if like.ndim < 2 or like.shape[1] != self.k:
            raise ValueError(f"a {self.k}-component state has shape (batch, {self.k}, *event), got {tuple(like.shape)}")
        tt = self._t(t).to(device=like.device, dtype=torch.float64)
        tt = tt.expand(like.shape[0]) if tt.ndim == 0 else tt
        alpha, offset, _ = self._moments(tt)
        cov = self.cov(tt, given)
        return alpha.to(like.dtype), offset.to(like.dtype), cov.to(like.dtype)

    def _start(self, x0: torch.Tensor, given: str) -> torch.Tensor:
        if _given(given) == "state" or len(self.data_index) == self.k:
            return x0
        keep = torch.zeros(self.k, dtype=x0.dtype, device=x0.device)
        keep[list(self.data_index)] = 1
        return x0 * _column(keep.expand(x0.shape[0], self.k), x0)

    def lift(self, data: torch.Tensor) -> torch.Tensor:
        """Data ``(batch, *event_shape)`` (one data component) or ``(batch, n_data, *event_shape)`` placed in the data
        components of a zero state ``(batch, k, *event_shape)`` (the other components at their initial mean 0)."""
        if len(self.data_index) == 1:
            data = data.unsqueeze(1)
        out = data.new_zeros(data.shape[0], self.k, *data.shape[2:])
        out[:, list(self.data_index)] = data
        return out

    def mean(self, x0: torch.Tensor, t: Any, given: str = "state") -> torch.Tensor:
        r""":math:`\Phi(t) X_0 + m(t)` at every event position."""
        alpha, offset, _ = self._coeffs(t, x0, given)
        return _apply(alpha, self._start(x0, given)) + _column(offset, x0)

    def sample(
        self, x0: torch.Tensor, t: Any, generator: torch.Generator | None = None, given: str = "state"
    ) -> torch.Tensor:
        r"""Draw :math:`X_t \sim p(\cdot \mid X_0)` (one draw per row)."""
        alpha, offset, cov = self._coeffs(t, x0, given)
        z = _random.randn(tuple(x0.shape), generator=generator, dtype=x0.dtype, device=x0.device)
        L = psd_sqrt(cov.to(torch.float64)).to(x0.dtype)
        return _apply(alpha, self._start(x0, given)) + _column(offset, x0) + _apply(L, z)

    def log_prob(self, x: torch.Tensor, x0: torch.Tensor, t: Any, given: str = "state") -> torch.Tensor:
        r""":math:`\log p(X_t = x \mid X_0)` summed over event positions, shape (batch,); needs a non-singular
        covariance (t > 0)."""
        alpha, offset, cov = self._coeffs(t, x, given)
        return _gaussian_log_prob(x - _apply(alpha, self._start(x0, given)) - _column(offset, x), cov)

    def score(self, x: torch.Tensor, x0: torch.Tensor, t: Any, given: str = "state") -> torch.Tensor:
        r""":math:`\nabla_X \log p(X_t = x \mid X_0) = -\Sigma^{-1}(x - \Phi X_0 - m)`, shaped like x."""
        alpha, offset, cov = self._coeffs(t, x, given)
        r = x - _apply(alpha, self._start(x0, given)) - _column(offset, x)
        flat = r.reshape(r.shape[0], r.shape[1], -1)
        return -torch.cholesky_solve(flat, _cholesky(cov)).reshape(r.shape)

    def density_expr(self, x0: sp.Matrix | None = None, given: str = "state") -> sp.Expr:
        r"""Symbolic kernel density :math:`N(X; \Phi X_0 + m, \Sigma)` in the components and t (closed forms only;
        ``x0`` defaults to symbols ``<name>0``)."""
        if not self.closed:
            raise SdekitError("density_expr needs the closed-form marginal; this one is numeric (moment-ODE table)")
        state = sp.Matrix(self.sde.state_symbols)
        x0 = sp.Matrix([sp.Symbol(f"{s.name}0", real=True) for s in state]) if x0 is None else sp.Matrix(x0)
        cov = self.cov_expr
        if _given(given) == "data":
            C0 = sp.Matrix(self.initial_cov.tolist()).applyfunc(sp.nsimplify)
            cov = cov + self.alpha_expr * C0 * self.alpha_expr.T
            x0 = sp.Matrix([x0[i] if i in self.data_index else 0 for i in range(self.k)])
        r = state - self.alpha_expr * x0 - self.offset_expr
        quad = (r.T * cov.inv() * r)[0, 0]
        return sp.exp(-quad / 2) / sp.sqrt((2 * sp.pi) ** self.k * cov.det())

    def discretize(
        self, n: int, *, times: torch.Tensor | None = None, dtype: torch.dtype = torch.float64, device: Any = None
    ) -> VectorDiscretization:
        r"""Exact transitions :math:`X_{i+1} = \Phi_i X_i + m_i + N(0, Q_i)` between consecutive ``times`` (default:
        n uniform steps on [0, T]) with the Gaussian posterior :math:`q(X_i \mid X_{i+1}, X_0)` of ancestral
        sampling: a :class:`~sdekit._vector_discrete.VectorDiscretization` (formulas in
        :mod:`sdekit._vector_discrete`). ``times``, when given, must be n + 1 strictly increasing times in [0, T]."""
        # lazy: _vector_discrete imports this module
        from ._vector_discrete import discretize

        return discretize(self, n, times=times, dtype=dtype, device=device)


def _given(given: str) -> str:
    if given not in ("state", "data"):
        raise ValueError(f"given must be 'state' (all of X_0 is given) or 'data' (its data components), not {given!r}")
    return given
