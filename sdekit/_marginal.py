r"""Torch side of the Gaussian kernels derived from an affine SDE.

For :math:`f = a(t)x + b(t)`, :math:`g = g(t)` the law of :math:`x_t` given :math:`x_s` is

.. math::
    N\!\left(\tfrac{\alpha(t)}{\alpha(s)} x_s + m(t) - \tfrac{\alpha(t)}{\alpha(s)} m(s),\;
    \sigma(t)^2 - \tfrac{\alpha(t)^2}{\alpha(s)^2}\sigma(s)^2\right),

with :math:`\alpha, m, \sigma` from ``sdekit.symbolic.derive``. When sympy finds no
closed form, :class:`_QuadratureTable` integrates the moment ODEs numerically once
(scipy DOP853, rtol 1e-13) and interpolates with cubic Hermite splines that use the
exact derivatives, so values are accurate to ~1e-12 relative and differentiable in t.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy as sp
import torch

from . import _random
from .compile import CompiledTimeFn, FloatFn, compile_float_fn, compile_time_fn
from .errors import SdekitError
from .symbolic._symbols import s as S_SYM
from .symbolic._symbols import t as T_SYM
from .symbolic._symbols import x as X_SYM

if TYPE_CHECKING:  # pragma: no cover
    from .symbolic.derive import MarginalExprs
    from .symbolic.sde import SDE

__all__ = ["GaussianKernel", "GaussianMarginal", "GaussianPrior", "Discretization"]

_LOG_2PI = math.log(2 * math.pi)


def _event_sum(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1).sum(dim=1) if v.ndim > 1 else v


def _batch_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a 0-d or (batch,) tensor so it broadcasts against ``like``."""
    if v.ndim == 1 and like.ndim > 1:
        return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))
    return v


class GaussianKernel:
    r"""The Gaussian :math:`N(\alpha\,x_{\rm in} + \mu, \sigma^2 I)` (coefficients already broadcastable)."""

    def __init__(self, alpha: torch.Tensor, offset: torch.Tensor, sigma: torch.Tensor):
        self.alpha, self.offset, self.sigma = alpha, offset, sigma

    def mean(self, x_in: torch.Tensor) -> torch.Tensor:
        r""":math:`\alpha x_{\rm in} + \mu`."""
        return self.alpha * x_in + self.offset

    def std(self) -> torch.Tensor:
        r""":math:`\sigma`."""
        return self.sigma

    def sample(self, x_in: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw per row of ``x_in``."""
        z = _random.randn(x_in.shape, generator=generator, dtype=x_in.dtype, device=x_in.device)
        return self.mean(x_in) + self.sigma * z

    def log_prob(self, x: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
        """Log-density of ``x`` given ``x_in``, summed over event dimensions: shape (batch,)."""
        z = (x - self.mean(x_in)) / self.sigma
        per = -0.5 * z**2 - torch.log(self.sigma) - 0.5 * _LOG_2PI
        return _event_sum(per.expand(x.shape))

    def score(self, x: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla_x \log p = -(x - \alpha x_{\rm in} - \mu)/\sigma^2`."""
        return -(x - self.mean(x_in)) / self.sigma**2


@dataclass(frozen=True)
class GaussianPrior:
    r"""Isotropic Gaussian :math:`N(\mu, s^2 I)` over the event dimensions."""

    mean: float
    std: float

    def sample(
        self,
        shape: tuple[int, ...],
        generator: _random.RandomSource = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Draw a tensor of ``shape`` (batch first) from ``generator`` (a ``torch.Generator``, per-block
        :class:`~sdekit._random.Streams` or None)."""
        z = _random.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        return self.mean + self.std * z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density summed over all but the first dimension: shape (batch,)."""
        per = -0.5 * ((x - self.mean) / self.std) ** 2 - math.log(self.std) - 0.5 * _LOG_2PI
        return _event_sum(per)


@dataclass(frozen=True)
class Discretization:
    r"""Exact Gaussian transitions on a grid: :math:`x_{i+1} = a_i x_i + b_i + c_i z`.

    ``times`` has n + 1 entries; ``scale`` (a), ``shift`` (b) and ``noise`` (c) have n. They are the exact
    transitions of the continuous SDE between consecutive times, not the tables of the discrete models:

    * VP (:class:`~sdekit.VPSDE`): :attr:`betas` :math:`= 1 - a_i^2 = 1 - \exp(-\int_{t_i}^{t_{i+1}}\beta(s)\,ds)`,
      so :math:`\bar\alpha_i = \prod_{j\le i}(1 - \beta_j) = \alpha(t_{i+1})^2` exactly. They are not DDPM's
      ``linspace(1e-4, 0.02, 1000)``, which is :math:`\beta(i/999)/1000`, the schedule at the left ends of a
      grid of spacing 1/999: for n = 1000 on [0, 1] (beta_min = 0.1, beta_max = 20) they differ from it,
      relative to the table, by up to 9.9% per beta (the first, 1.0994e-4 against 1e-4; the last by 1.0%) and
      by up to 7.0% in :math:`\bar\alpha` (at the last step, 4.3186e-5 against 4.0358e-5).
    * VE (:class:`~sdekit.VESDE`): ``noise**2`` :math:`= \sigma(t_{i+1})^2 - \sigma(t_i)^2`, the differences of
      the geometric table :math:`\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t` (SMLD's noise
      levels where they fall on the same times), but the chain starts from the data itself at t = 0, not from
      data perturbed at SMLD's smallest level :math:`\sigma_{\min}`: the marginal variance at :math:`t_i` is
      :math:`\sigma(t_i)^2 - \sigma_{\min}^2`, so the first step's noise is
      :math:`\sigma_{\min}\sqrt{(\sigma_{\max}/\sigma_{\min})^{2/n} - 1}`, 1.311e-3 for n = 1000 on [0, 1]
      (sigma_min = 0.01, sigma_max = 50): 7.6 times below sigma_min.

    (The numbers are computed in tests/symbolic/test_discretize.py.)
    """

    times: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    noise: torch.Tensor

    @property
    def betas(self) -> torch.Tensor:
        r""":math:`1 - a_i^2`: for a variance-preserving SDE the exact per-step
        :math:`\beta_i = 1 - \exp(-\int_{t_i}^{t_{i+1}}\beta(s)\,ds)` of its continuous schedule on this grid
        (not DDPM's ``linspace`` table; see the class docstring)."""
        return 1 - self.scale**2

    def __len__(self) -> int:
        return self.scale.shape[0]


def discretization_grid(n: int, times: Any, T: float, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """The n + 1 grid times of ``discretize``: ``times`` checked (strictly increasing in [0, T]), or uniform."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"discretize(n) needs a positive integer number of steps, got {n!r}")
    if times is None:
        return torch.linspace(0.0, T, int(n) + 1, dtype=dtype, device=device)
    times = torch.as_tensor(times, dtype=torch.float64).detach()
    if times.ndim != 1 or times.numel() != n + 1:
        raise ValueError(f"times must hold n + 1 = {n + 1} times (1-D), got shape {tuple(times.shape)}")
    lo, hi = float(times.min()), float(times.max())
    if not bool((times[1:] > times[:-1]).all()) or lo < 0 or hi > T * (1 + 1e-6):
        raise ValueError(f"times must increase strictly within [0, T] = [0, {T:g}], got {times.tolist()}")
    return times.to(dtype=dtype, device=device)


class _QuadratureTable:
    r"""Numeric :math:`\log\alpha`, :math:`\bar m = \int b/\alpha` and :math:`\bar I = \int g^2/\alpha^2`
    on a uniform grid with cubic Hermite interpolation using exact derivatives."""

    def __init__(self, a: CompiledTimeFn, b: CompiledTimeFn, g2: CompiledTimeFn, T: float, n: int = 4096):
        # lazy: scipy's ODE solver only for a marginal without a closed form
        from scipy.integrate import solve_ivp

        def rhs(tt: float, y: np.ndarray) -> np.ndarray:
            ea = math.exp(-y[0])
            return np.array([float(a.numpy(tt)), float(b.numpy(tt)) * ea, float(g2.numpy(tt)) * ea * ea])

        grid = np.linspace(0.0, T, n + 1)
        sol = solve_ivp(rhs, (0.0, T), np.zeros(3), method="DOP853", t_eval=grid, rtol=1e-13, atol=1e-16)
        if not sol.success:  # pragma: no cover - defensive
            raise RuntimeError(f"numeric marginal quadrature failed: {sol.message}")
        y = sol.y  # (3, n + 1)
        ea = np.exp(-y[0])
        dy = np.stack([a.numpy(grid), b.numpy(grid) * ea, g2.numpy(grid) * ea * ea])
        self.h = T / n
        self.n = n
        self.T = T
        self._y = np.ascontiguousarray(y.T)
        self._dy = np.ascontiguousarray(dy.T)
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """Interpolated (log alpha, mbar, Ibar) at ``t``: shape (*t.shape, 3)."""
        key = (t.dtype, t.device)
        if key not in self._cache:
            self._cache[key] = (
                torch.as_tensor(self._y, dtype=t.dtype, device=t.device),
                torch.as_tensor(self._dy, dtype=t.dtype, device=t.device),
            )
        y, dy = self._cache[key]
        pos = t / self.h
        idx = pos.detach().floor().clamp(0, self.n - 1).long()
        u = (pos - idx).unsqueeze(-1)
        y0, y1, d0, d1 = y[idx], y[idx + 1], dy[idx] * self.h, dy[idx + 1] * self.h
        return (1 + 2 * u) * (1 - u) ** 2 * y0 + u * (1 - u) ** 2 * d0 + u**2 * (3 - 2 * u) * y1 + u**2 * (u - 1) * d1


class GaussianMarginal:
    r"""Marginal kernel :math:`p(x_t \mid x_0) = N(\alpha(t) x_0 + m(t), \sigma(t)^2 I)` of an affine SDE.

    Attributes:
        alpha_expr, offset_expr, sigma2_expr, sigma_expr: sympy expressions in
            :data:`sdekit.t` and the parameter symbols (``sde.subs`` inserts values);
            they contain unevaluated integrals when ``closed`` is False.
        closed: whether numbers come from compiled closed forms (otherwise from quadrature: sympy
            found no closed form, or it uses a function torch lacks such as erfi).
    """

    def __init__(self, sde: SDE, exprs: MarginalExprs):
        self.sde = sde
        self.closed = exprs.closed
        self.alpha_expr = exprs.alpha
        self.offset_expr = exprs.offset
        self.sigma2_expr = exprs.sigma2
        self.sigma_expr = sp.sqrt(exprs.sigma2)
        self.T = sde.T
        self._table = None
        if exprs.closed:
            try:
                self._alpha = compile_time_fn(sde.subs(exprs.alpha), T_SYM)
                self._log_alpha = compile_time_fn(sp.expand_log(sde.subs(sp.log(exprs.alpha)), force=True), T_SYM)
                self._offset = compile_time_fn(sde.subs(exprs.offset), T_SYM)
                self._sigma2 = compile_time_fn(sde.subs(exprs.sigma2), T_SYM)
            except SdekitError:  # closed form uses a function torch lacks (e.g. erfi): use quadrature
                self.closed = False
        if not self.closed:
            self._table = _QuadratureTable(
                compile_time_fn(sde.subs(exprs.a), T_SYM),
                compile_time_fn(sde.subs(exprs.b), T_SYM),
                compile_time_fn(sde.subs(exprs.g2), T_SYM),
                sde.T,
            )
        self.prior = GaussianPrior(
            mean=float(self.offset(torch.tensor(self.T, dtype=torch.float64))),
            std=float(self.sigma(torch.tensor(self.T, dtype=torch.float64))),
        )

    # -- coefficient functions of t (t: number or tensor; result shaped like t)
    @staticmethod
    def _t(t: Any, dtype: torch.dtype | None = None, device: Any = None) -> torch.Tensor:
        if isinstance(t, torch.Tensor):
            return t if t.is_floating_point() else t.to(torch.get_default_dtype())
        return torch.as_tensor(t, dtype=dtype or torch.float64, device=device)

    def log_alpha(self, t: Any) -> torch.Tensor:
        r""":math:`\log\alpha(t) = \int_0^t a`."""
        t = self._t(t)
        return self._table(t)[..., 0] if self._table is not None else self._log_alpha(t)

    def alpha(self, t: Any) -> torch.Tensor:
        r"""Mean coefficient :math:`\alpha(t)`."""
        t = self._t(t)
        return torch.exp(self._table(t)[..., 0]) if self._table is not None else self._alpha(t)

    def offset(self, t: Any) -> torch.Tensor:
        r"""Mean offset :math:`m(t)` (zero for drifts without an x-free term)."""
        t = self._t(t)
        if self._table is None:
            return self._offset(t)
        y = self._table(t)
        return torch.exp(y[..., 0]) * y[..., 1]

    def sigma2(self, t: Any) -> torch.Tensor:
        r"""Variance :math:`\sigma(t)^2` (clamped at 0 against round-off)."""
        t = self._t(t)
        if self._table is None:
            return self._sigma2(t).clamp_min(0)
        y = self._table(t)
        return (torch.exp(2 * y[..., 0]) * y[..., 2]).clamp_min(0)

    def sigma(self, t: Any) -> torch.Tensor:
        r"""Standard deviation :math:`\sigma(t)`."""
        return torch.sqrt(self.sigma2(t))

    def log_snr(self, t: Any) -> torch.Tensor:
        r"""Half log signal-to-noise ratio :math:`\lambda(t) = \log\alpha(t) - \log\sigma(t)`.

        sdekit's one log-SNR convention (time grids, exponential integrators, the likelihood time sampling of
        :mod:`sdekit.losses`, whose :math:`\log\mathrm{SNR} = 2\lambda`). Strictly decreasing wherever
        :math:`g \ne 0`, for every affine SDE: with :math:`y = x - m(t)`, :math:`\sigma^2/\alpha^2 =
        \int_0^t g^2/\alpha^2`. For VE/EDM (:math:`\alpha = 1`) it is :math:`-\log\sigma`.
        """
        t = self._t(t)
        return self.log_alpha(t) - 0.5 * torch.log(self.sigma2(t))

    @functools.cached_property
    def floats(self) -> tuple[FloatFn, FloatFn, FloatFn] | None:
        r"""Plain-float closures ``t -> float`` of :math:`(\alpha, m, \sigma^2)` for closed-form marginals (``math``
        module, ~1 us a call: per-step scalar coefficients), or None (quadrature, or no ``math``-module form)."""
        if not self.closed:
            return None
        sde, probe = self.sde, 0.5 * float(self.T)
        fns = [
            compile_float_fn(sde.subs(e), T_SYM, probe) for e in (self.alpha_expr, self.offset_expr, self.sigma2_expr)
        ]
        return (fns[0], fns[1], fns[2]) if all(fn is not None for fn in fns) else None

    # -- kernels
    def at(self, t: Any, like: torch.Tensor) -> GaussianKernel:
        """Kernel x_0 -> x_t with coefficients broadcastable against ``like`` (batch-first)."""
        # Coefficients in float64 (cheap: one value per row), then cast: float32 schedules such as
        # the cosine one lose ~0.3% of sigma^2 at t = 1e-5 otherwise.
        tt = self._t(t, torch.float64, like.device).to(device=like.device, dtype=torch.float64)
        coeffs = (self.alpha(tt), self.offset(tt), self.sigma(tt))
        return GaussianKernel(*(_batch_view(c.to(like.dtype), like) for c in coeffs))

    def transition(self, s: Any, t: Any, like: torch.Tensor | None = None) -> GaussianKernel:
        r"""Kernel :math:`p(x_t \mid x_s)`, :math:`s \le t`.

        :math:`N(r x_s + m(t) - r m(s), \sigma_t^2 - r^2\sigma_s^2)` with :math:`r = \alpha(t)/\alpha(s)`.
        ``like`` (optional) fixes dtype/device and broadcasting."""
        device = like.device if like is not None else None
        s_, t_ = self._t(s, None, device), self._t(t, None, device)
        if like is not None:  # float64 coefficients, cast at the end (see ``at``)
            s_, t_ = s_.to(device=device, dtype=torch.float64), t_.to(device=device, dtype=torch.float64)
        r = torch.exp(self.log_alpha(t_) - self.log_alpha(s_))
        shift = self.offset(t_) - r * self.offset(s_)
        var = (self.sigma2(t_) - r**2 * self.sigma2(s_)).clamp_min(0)
        parts = [r, shift, torch.sqrt(var)]
        if like is not None:
            parts = [_batch_view(p.to(like.dtype), like) for p in parts]
        return GaussianKernel(*parts)

    def mean(self, x0: torch.Tensor, t: Any) -> torch.Tensor:
        r""":math:`\alpha(t) x_0 + m(t)`; t a number or shape (batch,)."""
        return self.at(t, x0).mean(x0)

    def std(self, t: Any) -> torch.Tensor:
        r""":math:`\sigma(t)`, shaped like t."""
        return self.sigma(t)

    def sample(self, x0: torch.Tensor, t: Any, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Draw :math:`x_t \sim p(\cdot \mid x_0)`."""
        return self.at(t, x0).sample(x0, generator)

    def log_prob(self, x: torch.Tensor, x0: torch.Tensor, t: Any) -> torch.Tensor:
        r""":math:`\log p(x_t = x \mid x_0)` summed over event dims, shape (batch,)."""
        return self.at(t, x).log_prob(x, x0)

    def score(self, x: torch.Tensor, x0: torch.Tensor, t: Any) -> torch.Tensor:
        r""":math:`\nabla_x \log p(x_t = x \mid x_0)`."""
        return self.at(t, x).score(x, x0)

    def density_expr(self, x0: sp.Symbol | sp.Expr | None = None) -> sp.Expr:
        r"""Symbolic kernel density :math:`N(x; \alpha x_0 + m, \sigma^2)` in x, t (and ``x0``)."""
        x0 = sp.Symbol("x0", real=True) if x0 is None else x0
        return sp.exp(-((X_SYM - self.alpha_expr * x0 - self.offset_expr) ** 2) / (2 * self.sigma2_expr)) / sp.sqrt(
            2 * sp.pi * self.sigma2_expr
        )

    def transition_expr(self) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
        r"""Symbolic (scale, shift, variance) of the kernel from time :data:`s` to time ``t``."""
        r = self.alpha_expr / self.alpha_expr.subs(T_SYM, S_SYM)
        return (
            r,
            self.offset_expr - r * self.offset_expr.subs(T_SYM, S_SYM),
            (self.sigma2_expr - r**2 * self.sigma2_expr.subs(T_SYM, S_SYM)),
        )

    def discretize(
        self,
        n: int,
        *,
        times: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float64,
        device: Any = None,
    ) -> Discretization:
        """Exact transitions of the continuous SDE between consecutive ``times`` (default: n uniform steps on
        [0, T]); :class:`Discretization` says how they differ from DDPM's beta table and SMLD's noise levels.

        ``times``, when given, must be n + 1 strictly increasing times in [0, T] (a tensor or a sequence).
        """
        times = discretization_grid(n, times, self.T, dtype, device)
        k = self.transition(times[:-1], times[1:])
        return Discretization(times=times, scale=k.alpha, shift=k.offset, noise=k.sigma)
