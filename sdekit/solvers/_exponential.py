r"""Exponential integrators of order 1–3 for the probability-flow ODE of any affine SDE.

Derivation (DPM-Solver++ data-prediction form, Lu et al. 2022, for general
:math:`\alpha(t), m(t), \sigma(t)`). For :math:`f = a(t)x + b(t)`, :math:`g = g(t)` the
marginal is :math:`x_t = \alpha x_0 + m + \sigma\varepsilon` with
:math:`(\log\alpha)' = a`, :math:`m' = a m + b`, :math:`(\sigma^2)' = 2a\sigma^2 + g^2`.
The offset is deterministic, so :math:`y = x - m(t)` obeys the zero-offset PF-ODE

.. math:: \frac{dy}{dt} = a\,y - \tfrac12 g^2\,s(x, t).

Write the score through Tweedie's denoiser :math:`\hat x_0 = (y + \sigma^2 s)/\alpha`, i.e.
:math:`s = -(y - \alpha\hat x_0)/\sigma^2`, and use :math:`g^2 = (\sigma^2)' - 2a\sigma^2`:

.. math:: \frac{dy}{dt} = \frac{\sigma'}{\sigma}\,y + \lambda'\,\alpha\,\hat x_0,
          \qquad \lambda(t) = \log\frac{\alpha(t)}{\sigma(t)} .

Variation of constants from s to t (:math:`h = \lambda_t - \lambda_s > 0` when sampling):

.. math:: y_t = \frac{\sigma_t}{\sigma_s}\,y_s + \sigma_t\int_{\lambda_s}^{\lambda_t} e^{\lambda}\,\hat x_0\,d\lambda
              = \frac{\sigma_t}{\sigma_s}\,y_s + \alpha_t\int_0^h e^{\tau - h}\,\hat x_0(\lambda_s + \tau)\,d\tau .

Only the integral is approximated: :math:`\hat x_0(\lambda_s + \tau)` is replaced by the
polynomial interpolating the last k denoiser values (nodes :math:`\tau_j` = their
:math:`\lambda` minus :math:`\lambda_s`), which is integrated exactly against
:math:`e^{\tau-h}` with the moments
:math:`\mu_n = \int_0^h \tau^n e^{\tau - h} d\tau` (:math:`\mu_0 = 1 - e^{-h}`,
:math:`\mu_1 = h - 1 + e^{-h}`, :math:`\mu_2 = h^2 - 2h + 2 - 2e^{-h}`):

.. math:: y_t = \frac{\sigma_t}{\sigma_s} y_s + \alpha_t \sum_j w_j\,\hat x_0^{(j)},\qquad
          w_j = \int_0^h e^{\tau-h} L_j(\tau)\,d\tau,

with :math:`L_j` the Lagrange basis. k = 1 is DDIM
(:math:`y_t = \tfrac{\sigma_t}{\sigma_s} y_s + \alpha_t(1 - e^{-h})\hat x_0`); k = 2, 3 with the
previous grid points are the multistep DPM-Solver++(2M)/(3M) (the interpolating-polynomial
form; local error :math:`O(h^{k+1})`, global :math:`O(h^k)`).

Warm-up keeps the global order: ``exp2`` starts with one DDIM step (local :math:`O(h^2)`, once,
so global :math:`O(h^2)`); ``exp3`` starts with a singlestep second-order step (DPM-Solver++(2S):
one extra evaluation at the log-SNR midpoint, local :math:`O(h^3)`) and then one 2M step, so it
keeps order 3. The one-NFE-per-step multistep start of DPM-Solver++(3M)'s reference code (DDIM,
then 2M, then 3M) was tried: its DDIM step adds a global :math:`O(h^2)` term, small (its constant
is the rate of change of :math:`\hat x_0` at T) but visible in the validation suite's order check
on VE from 128 to 2048 steps (slope 2.62 instead of 3); at equal NFE its KS ratio on the 2-D
mixture of ``benchmarks/error_vs_nfe.py`` (n = 1e5) was 0.85 against 0.90 (VE) and 0.89 (VP) at
20 NFE. For VE/EDM :math:`\alpha = 1`, :math:`\lambda = -\log\sigma`.

NFE: ``exp1``/``exp2`` one per step; ``exp3`` one per step plus one. ``sdekit.sample(..., steps=k)`` means k
model evaluations in all (:attr:`~sdekit.solvers.Solver.steps_are_nfe`): with the final denoising step,
``exp2`` takes k - 1 steps and ``exp3`` k - 2. The
default grid is ``"arctan"`` (:mod:`sdekit.solvers._grids`: finest log-SNR steps where signal and
noise are comparable, coarser towards both ends, where :math:`\hat x_0` hardly changes);
``grid="logsnr"`` is DPM-Solver's uniform-:math:`\lambda` grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..errors import SolverError
from ._grids import _scales
from ._native import GridSolver, StepContext, log_snr, t_of_log_snr
from ._option import Option
from ._registry import register

if TYPE_CHECKING:  # pragma: no cover
    from ..symbolic.sde import SDE

__all__ = [
    "Exp1",
    "Exp2",
    "Exp3",
    "ExpCoefficients",
    "ExpState",
    "ExponentialIntegrator",
    "MidpointStart",
    "exp_moments",
    "grid_log_snr",
    "lagrange_weights",
    "proxy_local_errors",
    "saturation_orders",
    "weighted_sum",
]


def exp_moments(h: torch.Tensor, order: int) -> list[torch.Tensor]:
    r""":math:`\mu_n = \int_0^h \tau^n e^{\tau-h}\,d\tau` for n < ``order`` (float64, elementwise in h).

    For :math:`h > 1` the closed forms (:math:`n \ge 3`: the recursion :math:`\mu_n = h^n - n\,\mu_{n-1}`, by
    parts); for :math:`h \le 1`, where they cancel, the positive series
    :math:`\mu_n = e^{-h}\sum_{k\ge0} h^{n+k+1} / (k!\,(n+k+1))` (35 terms: exact to round-off).
    """
    h = h.to(torch.float64)
    em = torch.expm1(-h)  # e^{-h} - 1
    closed = [-em, h + em, h * h - 2 * h - 2 * em]
    for n in range(3, order):
        closed.append(h**n - n * closed[-1])
    small = h <= 1
    out = []
    for n in range(order):
        series = torch.zeros_like(h)
        term = torch.ones_like(h)  # h^k / k!
        for k in range(35):
            series = series + term * h ** (n + 1) / (n + k + 1)
            term = term * h / (k + 1)
        out.append(torch.where(small, torch.exp(-h) * series, closed[n]))
    return out


def grid_log_snr(ctx: StepContext, name: str) -> torch.Tensor:
    r"""The float64 log-SNR :math:`\lambda(t_i)` of ``ctx``'s grid, checked strictly increasing (``name``: the solver,
    for the error message)."""
    lam = log_snr(ctx.problem.sde.marginal, ctx.times)
    if not bool((lam[1:] > lam[:-1]).all()):
        raise SolverError(f"{name}: the log-SNR must increase along the grid; is g(t) zero somewhere?")
    return lam


def weighted_sum(weights: list[float], values: tuple[torch.Tensor, ...]) -> torch.Tensor:
    r""":math:`\sum_j w_j v_j` over the first ``len(weights)`` values (newest first): the multistep update of the
    exponential integrators and UniPC, Python-float weights times tensors."""
    out = weights[0] * values[0]
    for w, v in zip(weights[1:], values[1:]):
        out = out + w * v
    return out


def lagrange_weights(h: torch.Tensor, nodes: list[torch.Tensor]) -> list[torch.Tensor]:
    r"""Weights :math:`w_j = \int_0^h e^{\tau-h} L_j(\tau)\,d\tau` of the Lagrange basis on ``nodes``.

    ``nodes[0]`` must be 0 (the current point); 1, 2 or 3 nodes (elementwise tensors).
    """
    mu = exp_moments(h, len(nodes))
    if len(nodes) == 1:
        return [mu[0]]
    if len(nodes) == 2:
        a = nodes[1]
        return [mu[0] - mu[1] / a, mu[1] / a]
    if len(nodes) == 3:
        a, b = nodes[1], nodes[2]
        return [
            (mu[2] - (a + b) * mu[1] + a * b * mu[0]) / (a * b),
            (mu[2] - b * mu[1]) / (a * (a - b)),
            (mu[2] - a * mu[1]) / (b * (b - a)),
        ]
    raise ValueError(f"lagrange_weights supports 1-3 nodes, got {len(nodes)}")


PROXY_QUADRATURE = 64
"""Simpson intervals per step of :func:`proxy_local_errors`' quadrature of the exact step integral."""


def proxy_local_errors(lam: torch.Tensor, max_order: int, data_std: float | tuple[float, ...] = 1.0) -> torch.Tensor:
    r"""Local errors, for Gaussian data, of the order-q interpolating step at every step of the log-SNR grid ``lam``:
    a float64 tensor (n, ``max_order``), entry (i, q - 1) for q = 1 .. ``max_order`` (inf where step i has fewer
    than q - 1 earlier points).

    For data :math:`N(\mu, c^2 I)` the denoiser along the probability-flow trajectory is
    :math:`\hat x_0 = \mu + c\,g(\lambda + \log c)\,z`, :math:`g(u) = (1 + e^{-2u})^{-1/2}` (:mod:`._grids`). Step i
    (:math:`h = \lambda_{i+1} - \lambda_i`) replaces :math:`\int_0^h e^{	au-h}\hat x_0(\lambda_i + 	au)\,d	au` by
    the integral of the polynomial through :math:`\hat x_0` at :math:`\lambda_i, \lambda_{i-1}, \dots` (q points,
    :func:`lagrange_weights`); the entry is the absolute difference per unit :math:`c\,z`, the exact integral by
    Simpson's rule (:data:`PROXY_QUADRATURE` intervals), summed over the scales of ``data_std`` (a number or the
    standard deviations along the data's principal axes).
    """
    lam = lam.to(torch.float64)
    n = lam.shape[0] - 1
    h = lam[1:] - lam[:-1]
    m = PROXY_QUADRATURE
    frac = torch.linspace(0.0, 1.0, m + 1, dtype=torch.float64)
    tau = h[:, None] * frac[None, :]  # (n, m + 1)
    simpson = torch.ones(m + 1, dtype=torch.float64)
    simpson[1:-1] = torch.where(torch.arange(1, m) % 2 == 1, 4.0, 2.0)
    out = torch.zeros(n, max_order, dtype=torch.float64)
    idx = torch.arange(n)
    for c in _scales(data_std):
        shift = torch.log(torch.tensor(c, dtype=torch.float64))

        def den(x: torch.Tensor, shift: torch.Tensor = shift) -> torch.Tensor:
            return torch.rsqrt(1 + torch.exp(-2 * (x + shift)))

        exact = (simpson * torch.exp(tau - h[:, None]) * den(lam[:-1, None] + tau)).sum(1) * h / (3 * m)
        for q in range(1, max_order + 1):
            back = [lam[(idx - k).clamp_min(0)] - lam[:-1] for k in range(q)]  # nodes 0, -h_0, ...
            back = [torch.where(idx >= k, b, -(k + 1) * h) for k, b in enumerate(back)]  # placeholders, masked below
            weights = lagrange_weights(h, back)
            approx = sum(w * den(lam[:-1] + b) for w, b in zip(weights, back))
            out[:, q - 1] += (exact - approx).abs()
    ok = idx[:, None] >= torch.arange(max_order)[None, :]
    return torch.where(ok, out, torch.full_like(out, torch.inf))


def saturation_orders(lam: torch.Tensor, orders: list[int], data_std: float | tuple[float, ...] = 1.0) -> list[int]:
    r"""``orders`` with order 1 at every step where, for Gaussian data of scale ``data_std``, the constant (order-1)
    model of :math:`\hat x_0` has a smaller local error than every higher order the step could use
    (:func:`proxy_local_errors`).

    Why: at low noise (:math:`u = \lambda + \log c \gg 0`) the Gaussian denoiser saturates,
    :math:`g(u) pprox 1 - 	frac12 e^{-2u}`: every derivative decays like :math:`e^{-2\lambda}`, so over a step that
    is long against 1/2 in :math:`\lambda` a polynomial extrapolated from earlier (larger-derivative) points
    overshoots, while the constant is off by the remaining decay only. On the ``"optimized"`` grid this drops the
    last 3-4 steps of a 12-20 step run to order 1.
    """
    top = max(orders)
    if top <= 1:
        return list(orders)
    err = proxy_local_errors(lam, top, data_std)
    return [1 if p > 1 and bool(err[i, 0] < err[i, 1:p].min()) else p for i, p in enumerate(orders)]


@dataclasses.dataclass(frozen=True)
class ExpCoefficients:
    r"""Per grid point / step floats: :math:`\sigma_{i+1}/\sigma_i`, :math:`\alpha_i`, :math:`\sigma_i^2`, :math:`m_i`,
    and the Lagrange weights of each step (as many as its order)."""

    ratio: list[float]
    alpha: list[float]
    sigma2: list[float]
    m: list[float]
    weights: list[list[float]]


@dataclasses.dataclass(frozen=True)
class MidpointStart:
    r"""``exp3``'s singlestep 2S start: the log-SNR midpoint of step 0 (time tensor, :math:`\alpha`,
    :math:`\sigma^2`, m), :math:`\sigma_{\rm mid}/\sigma_0` and the DDIM weight of the half step."""

    t: torch.Tensor
    alpha: float
    sigma2: float
    m: float
    ratio: float
    w: float


@dataclasses.dataclass(frozen=True)
class ExpState:
    """Coefficients, the 2S start (``exp3`` only) and the history of denoiser values, newest first."""

    coef: ExpCoefficients
    start: MidpointStart | None = None
    history: tuple[torch.Tensor, ...] = ()


class ExponentialIntegrator(GridSolver[ExpState]):
    r"""Multistep exponential integrator of order :attr:`order` on the PF-ODE (see module docstring).

    Options: ``grid`` (``"arctan"`` default; ``"logsnr"``, ``"edm"``, ``"uniform"`` in t), ``lower_order_final``
    (True: for runs of fewer than 15 steps the last steps drop to order 1–2, as DPM-Solver
    does for stability at very few steps).
    """

    kind = "ode"
    order: ClassVar[int] = 1
    noise_types = ("additive",)
    requires_affine = True
    grid = "arctan"
    steps_are_nfe = True
    options_declared: ClassVar[dict[str, Option]] = {
        "lower_order_final": Option.flag(
            True, "in runs of fewer than 15 steps, the last two steps drop to orders 2 and 1 (DPM-Solver's rule)"
        )
    }

    def grid_order(self, options: Mapping[str, Any], sde: SDE | None = None) -> int:
        """The ``"optimized"`` grid's order: :attr:`order`, the degree + 1 of the interpolant each step integrates."""
        return self.order

    def prepare(self, ctx: StepContext, opts: dict[str, Any]) -> ExpState:
        marginal = ctx.problem.sde.marginal
        times = ctx.times
        lam = grid_log_snr(ctx, self.name)
        alpha, sigma, m = marginal.alpha(times), marginal.sigma(times), marginal.offset(times)
        orders = self._orders(times.shape[0] - 1, opts["lower_order_final"])
        coef = ExpCoefficients(
            (sigma[1:] / sigma[:-1]).tolist(),
            alpha.tolist(),
            (sigma**2).tolist(),
            m.tolist(),
            self._weights(lam, orders),
        )
        start = _midpoint_start(ctx, lam, sigma) if orders[0] == 2 else None  # exp3's 2S warm-up
        return ExpState(coef, start)

    def _orders(self, n: int, lower_order_final: bool) -> list[int]:
        """Order of each of the n steps: the multistep warm-up (1, 2, ... up to :attr:`order`, one NFE each) and, with
        ``lower_order_final`` in runs of fewer than 15 steps, order at most 1 in the last step and 2 in the one before
        (DPM-Solver's and diffusers' rule)."""
        orders = [min(self.order, i + 1) for i in range(n)]
        if lower_order_final and n < 15:
            orders = [min(o, n - i) for i, o in enumerate(orders)]
        return orders

    def _weights(self, lam: torch.Tensor, orders: list[int]) -> list[list[float]]:
        """Weights :math:`w_j` of every step on the denoiser values, newest first (here: the Lagrange form)."""
        return _weights(lam, orders)

    def step(self, ctx: StepContext, state: ExpState, x: torch.Tensor, i: int) -> tuple[torch.Tensor, ExpState]:
        c = state.coef
        y = x - c.m[i]
        x0 = (y + c.sigma2[i] * ctx.score(x, i)) / c.alpha[i]
        hist = (x0, *state.history)[: self.order]
        w = c.weights[i]
        if i == 0 and state.start is not None:  # exp3 warm-up: DDIM to the midpoint, then 2S
            est = w[0] * x0 + w[1] * _midpoint_x0(ctx, state.start, y, x0)
        else:
            est = weighted_sum(w, hist)
        return c.ratio[i] * y + c.alpha[i + 1] * est + c.m[i + 1], dataclasses.replace(state, history=hist)


def _weights(lam: torch.Tensor, orders: list[int]) -> list[list[float]]:
    """Lagrange weights of every step at its order, for all steps and orders at once (vectorised; placeholders
    where unused)."""
    n = lam.shape[0] - 1
    h = lam[1:] - lam[:-1]
    idx = torch.arange(n)
    a = lam[(idx - 1).clamp_min(0)] - lam[idx]  # node of x0_{i-1} relative to lambda_i
    b = lam[(idx - 2).clamp_min(0)] - lam[idx]  # node of x0_{i-2}
    a = torch.where(idx >= 1, a, h / 2)  # step 0: the 2S midpoint node (+h/2)
    b = torch.where(idx >= 2, b, -h)  # unused placeholder, keeps the formulas finite
    zero = torch.zeros_like(h)
    table = {
        1: lagrange_weights(h, [zero]),
        2: lagrange_weights(h, [zero, a]),
        3: lagrange_weights(h, [zero, a, b]),
    }
    rows = {k: torch.stack(w, dim=1).tolist() for k, w in table.items()}
    return [rows[k][i] for i, k in enumerate(orders)]


def _midpoint_start(ctx: StepContext, lam: torch.Tensor, sigma: torch.Tensor) -> MidpointStart:
    """The log-SNR midpoint of the first step, for ``exp3``'s singlestep 2S warm-up."""
    marginal = ctx.problem.sde.marginal
    times = ctx.times
    h0 = lam[1] - lam[0]
    lam_mid = (lam[0] + h0 / 2).reshape(1)
    t_mid = t_of_log_snr(marginal, lam_mid, float(times[-1]), float(times[0]))
    x = ctx.problem.x_T
    return MidpointStart(
        t=t_mid.to(dtype=x.dtype, device=x.device).expand(x.shape[0]),
        alpha=float(marginal.alpha(t_mid)),
        sigma2=float(marginal.sigma2(t_mid)),
        m=float(marginal.offset(t_mid)),
        ratio=float(marginal.sigma(t_mid) / sigma[0]),
        w=float(lagrange_weights((lam[1:2] - lam[0:1]) / 2, [torch.zeros(1, dtype=torch.float64)])[0]),
    )


def _midpoint_x0(ctx: StepContext, mid: MidpointStart, y: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Denoiser at the log-SNR midpoint after a DDIM half step from ``y`` (one NFE)."""
    u = mid.ratio * y + mid.alpha * mid.w * x0
    return (u + mid.sigma2 * ctx.problem.score(u + mid.m, mid.t)) / mid.alpha


@register
class Exp1(ExponentialIntegrator):
    r"""First-order exponential integrator (DDIM, :math:`\eta = 0`) on the PF-ODE of any affine SDE.

    :math:`y_{t} = \tfrac{\sigma_t}{\sigma_s} y_s + \alpha_t(1 - e^{-h})\hat x_0`, :math:`y = x - m(t)`. NFE per step 1.
    """

    name = "exp1"
    order = 1
    weak_order = 1.0
    default_steps = 200
    description = "exponential integrator, order 1 (DDIM) on the PF-ODE in log-SNR; any affine SDE"


@register
class Exp2(ExponentialIntegrator):
    r"""Second-order multistep exponential integrator (DPM-Solver++(2M)) on the PF-ODE. NFE per step 1."""

    name = "exp2"
    order = 2
    weak_order = 2.0
    default_steps = 50
    description = "exponential integrator, order 2 (DPM-Solver++(2M)) on the PF-ODE; any affine SDE"


@register
class Exp3(ExponentialIntegrator):
    r"""Third-order multistep exponential integrator (DPM-Solver++(3M), 2S warm-up) on the PF-ODE.

    NFE: steps + 1 (the first step evaluates the log-SNR midpoint too).
    """

    name = "exp3"
    order = 3
    weak_order = 3.0
    default_steps = 40
    description = "exponential integrator, order 3 (DPM-Solver++(3M)) on the PF-ODE; any affine SDE"
    nfe_per_step = "1 (+1 in the first step)"
    startup_nfe = 1

    def _orders(self, n: int, lower_order_final: bool) -> list[int]:
        """:meth:`ExponentialIntegrator._orders` with the singlestep 2S warm-up as step 0 (always: it is the
        startup NFE; local :math:`O(h^3)` keeps order 3)."""
        orders = super()._orders(n, lower_order_final)
        orders[0] = 2
        return orders
