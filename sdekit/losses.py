r"""Score-matching training losses: denoising (any affine SDE, any parameterization), implicit, sliced.

Conventions (every function here):

* A *per-sample* loss sums over the event dimensions of a sample; ``reduction="mean"`` (default)
  averages the per-sample losses over the batch, ``"sum"`` adds them, ``"none"`` returns them,
  shape (batch,).
* Times are drawn first, then the noise, from the same ``generator``: two calls with generators
  seeded alike see the same :math:`t` and :math:`z`, so differences between models are *paired*.

Denoising score matching (Vincent 2011; Song et al. 2021). For an affine SDE the kernel
:math:`p(x_t \mid x_0) = N(\alpha(t) x_0 + m(t), \sigma(t)^2 I)` is derived from the SDE
(``sde.marginal``), so :math:`x_t = \alpha x_0 + m + \sigma z` and the regression target is the kernel score

.. math::
    \nabla_{x_t}\log p(x_t \mid x_0) = -\frac{x_t - \alpha x_0 - m}{\sigma^2} = -\frac{z}{\sigma}.

:func:`dsm` estimates the time integral

.. math::
    \mathcal L_\lambda(\theta) = \frac12\int_\epsilon^T \lambda(t)\,
    E_{x_0, z}\big\|s_\theta(x_t, t) - \nabla\log p(x_t\mid x_0)\big\|^2\,dt
    = \frac12\int_\epsilon^T \frac{\lambda(t)}{\sigma(t)^2}\,E\big\|\sigma s_\theta + z\big\|^2\,dt

with :math:`\lambda = 1` (``"none"``), :math:`\sigma^2` (``"sigma2"``: for an ``"eps"`` model the
integrand is the familiar :math:`\|\hat\varepsilon - z\|^2`) or :math:`g^2` (``"likelihood"``: the
model-dependent term of the bound on :math:`-\log p_\theta`, see :func:`likelihood_bound`).

Time sampling (:func:`sample_times`). ``"uniform"``: :math:`t \sim U[\epsilon, T]`, weight
:math:`T - \epsilon`. ``"likelihood"``: importance sampling with density

.. math::
    q(t) = \frac{g(t)^2/\sigma(t)^2}{Z},\qquad
    Z = \int_\epsilon^T \frac{g^2}{\sigma^2}\,dt = \log\mathrm{SNR}(\epsilon) - \log\mathrm{SNR}(T),
    \qquad \mathrm{SNR} = \alpha^2/\sigma^2,

because :math:`(\sigma^2)' = 2a\sigma^2 + g^2` and :math:`\alpha' = a\alpha` give
:math:`g^2/\sigma^2 = -\tfrac{d}{dt}\log\mathrm{SNR}`: the CDF is
:math:`F(t) = (\log\mathrm{SNR}(\epsilon) - \log\mathrm{SNR}(t))/Z`, inverted numerically. With weight
:math:`1/q`, the likelihood-weighted integrand becomes :math:`\tfrac Z2\|\sigma s_\theta + z\|^2`:
the :math:`g^2/\sigma^2` factor, which spans orders of magnitude (it grows like :math:`1/t` near 0 for
VP), is sampled instead of multiplied, which is the variance reduction of Song et al. (2021, Sec. 5).

Implicit and sliced score matching (Hyvärinen 2005; Song et al. 2019) fit a score model of data
directly, without an SDE: :func:`ism` with the exact Jacobian trace, :func:`ssm` with random projections.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from . import _random
from ._checks import (
    check_batch,
    check_choice,
    check_count,
    check_eps,
    check_generator,
    check_model_output,
    check_scalar_sde,
    check_sde,
)
from ._hsm import hsm
from ._traces import PROBES, draw_probes, drift_and_exact_trace, hutchinson_trace
from ._vector_dsm import GIVEN, draw_at_T, log_det_alpha, log_det_snr, trace_density, vector_dsm
from .parameterization import marginal_coefficients, model_parameterization, to_score

if TYPE_CHECKING:  # pragma: no cover
    from .symbolic.sde import SDE

__all__ = [
    "hsm",
    "WEIGHTINGS",
    "TIME_SAMPLINGS",
    "sample_times",
    "likelihood_time_density",
    "dsm",
    "likelihood_bound",
    "ism",
    "ssm",
]

WEIGHTINGS: tuple[str, ...] = ("none", "sigma2", "likelihood")
"""Weightings :math:`\\lambda(t)` accepted by :func:`dsm`: 1, :math:`\\sigma(t)^2`, :math:`g(t)^2`."""

TIME_SAMPLINGS: tuple[str, ...] = ("uniform", "likelihood")
"""Time proposals of :func:`sample_times`: uniform on [eps, T], or :math:`q \\propto g^2/\\sigma^2`."""

_REDUCTIONS = ("mean", "sum", "none")
_F64 = torch.float64
_GRID = 2049  # points of each of the two grids (geometric + uniform) used to invert the CDF
_NEWTON = 4  # safeguarded Newton steps after interpolation (quadratic convergence: ~1e-15 in t)
_T_SLACK = 1e-6  # relative tolerance of the [eps, T] check of dsm(t=...): eps or T rounded to float32 pass


# --------------------------------------------------------------------------- checks
def _check_sde(sde: Any, components: bool = False) -> SDE:
    """An affine SDE; k-component ones only where ``components`` (dsm, sample_times, likelihood_bound)."""
    sde = check_sde(sde) if components else check_scalar_sde(sde, "sdekit.losses")
    sde.marginal  # noqa: B018 - raises NotAffineError (with the reason) for a non-affine SDE
    return sde


def _check_eps(sde: SDE, eps: float | None) -> float:
    return check_eps(sde.default_eps if eps is None else eps, float(sde.T))


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _event_sum(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1).sum(1)


# --------------------------------------------------------------------------- time sampling
def _log_snr(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    r""":math:`\log\mathrm{SNR}(t) = \log(\alpha^2/\sigma^2) = 2\lambda(t)` in float64, with :math:`\lambda` =
    :meth:`GaussianMarginal.log_snr <sdekit._marginal.GaussianMarginal.log_snr>` (sdekit's one convention);
    k-component SDEs: :math:`2\log|\det\Phi| - \log\det\Sigma` (:mod:`sdekit._vector_dsm`)."""
    return 2 * sde.marginal.log_snr(t.to(_F64)) if sde.components is None else log_det_snr(sde, t)


def likelihood_time_density(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    r"""Unnormalised importance density :math:`g(t)^2 / \sigma(t)^2 = -\tfrac{d}{dt}\log\mathrm{SNR}(t)` (float64);
    :math:`\operatorname{tr}(\Sigma^{-1}GG^\top)` for k-component SDEs."""
    if sde.components is not None:
        return trace_density(sde, t)
    t = t.to(_F64)
    g = sde.diffusion_fn(torch.zeros_like(t), t)
    return g * g / sde.marginal.sigma2(t)


class _LikelihoodTimeTable:
    r"""Inverse CDF of :math:`q(t) \propto g^2/\sigma^2` on [eps, T]: grid interpolation, then Newton.

    The CDF is exact in closed form through :math:`\log\mathrm{SNR}`; a grid (geometric near eps,
    where the density grows like 1/t for VP SDEs, merged with a uniform grid) brackets each
    quantile, linear interpolation gives a start and safeguarded Newton steps on the exact CDF
    (derivative :math:`q`) polish it, so draws follow the exact density used in the weights.
    """

    def __init__(self, sde: SDE, eps: float) -> None:
        T = float(sde.T)
        grid = torch.cat(
            [
                torch.logspace(math.log10(eps), math.log10(T), _GRID, dtype=_F64),
                torch.linspace(eps, T, _GRID, dtype=_F64),
            ]
        )
        grid = torch.unique(grid.clamp(eps, T))  # sorted
        keep = torch.ones_like(grid, dtype=torch.bool)
        keep[1:] = grid[1:] - grid[:-1] > 1e-9 * (T - eps)  # drop near-duplicates of the two grids
        grid = grid[keep]
        grid[0], grid[-1] = eps, T
        lsnr = _log_snr(sde, grid)
        if not bool(torch.isfinite(lsnr).all()) or not bool((lsnr[1:] < lsnr[:-1]).all()):
            raise ValueError(
                f"the likelihood time density g^2/sigma^2 of {type(sde).__name__} is not positive and finite on "
                f"[eps, T] = [{eps:g}, {T:g}] (log SNR must decrease strictly); use time_sampling='uniform'"
            )
        self.sde, self.eps, self.T = sde, eps, T
        self.grid = grid
        self.lsnr0 = lsnr[0]
        self.Z = float(lsnr[0] - lsnr[-1])
        self.cdf = (lsnr[0] - lsnr) / self.Z

    def icdf(self, u: torch.Tensor) -> torch.Tensor:
        """Times with CDF value ``u`` (float64, shape of u), on the table's (CPU) device."""
        cdf, grid = self.cdf, self.grid
        i = torch.searchsorted(cdf, u, right=True).clamp(1, grid.numel() - 1)
        lo, hi = grid[i - 1], grid[i]
        c0, c1 = cdf[i - 1], cdf[i]
        t = lo + (hi - lo) * ((u - c0) / (c1 - c0)).clamp(0, 1)
        target = self.lsnr0 - u * self.Z  # solve log SNR(t) = target
        for _ in range(_NEWTON):
            step = (_log_snr(self.sde, t) - target) / likelihood_time_density(self.sde, t)
            t = torch.minimum(torch.maximum(t + step, lo), hi)
        return t


_TABLES: weakref.WeakKeyDictionary[Any, dict[float, _LikelihoodTimeTable]] = weakref.WeakKeyDictionary()


def _table(sde: SDE, eps: float) -> _LikelihoodTimeTable:
    per_sde = _TABLES.setdefault(sde, {})
    if eps not in per_sde:
        per_sde[eps] = _LikelihoodTimeTable(sde, eps)
    return per_sde[eps]


def sample_times(
    n: int,
    sde: SDE,
    eps: float | None = None,
    kind: str = "uniform",
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Draw ``n`` times on :math:`[\epsilon, T]` and their importance weights :math:`w = 1/q(t)`.

    For any integrand h, :math:`\int_\epsilon^T h(t)\,dt = E_q[w(t)\,h(t)]`, so
    ``(w * h(t)).mean()`` estimates the integral.

    * ``kind="uniform"``: :math:`q = 1/(T - \epsilon)`, :math:`w = T - \epsilon`.
    * ``kind="likelihood"`` (k-component SDEs: :math:`\operatorname{tr}(\Sigma^{-1}GG^\top)` for
      :math:`g^2/\sigma^2`, :mod:`sdekit._vector_dsm`): :math:`q(t) = g(t)^2 / (\sigma(t)^2 Z)` with
      :math:`Z = \log\mathrm{SNR}(\epsilon) - \log\mathrm{SNR}(T)`, :math:`w = Z\sigma^2/g^2`. Drawn by
      inverting the exact CDF :math:`(\log\mathrm{SNR}(\epsilon) - \log\mathrm{SNR}(t))/Z` (grid + Newton,
      tabulated once per SDE instance and eps). This is the proposal that makes the
      likelihood-weighted DSM integrand :math:`\tfrac Z2\|\sigma s_\theta + z\|^2`.

    Args:
        n: number of times.
        sde: an affine SDE.
        eps: lower end (default ``sde.default_eps``).
        kind: ``"uniform"`` or ``"likelihood"``.
        generator: random generator (one ``torch.rand(n)`` draw).
        dtype: dtype of the result (draws are made in float64).
        device: device of the result (default: the generator's, else CPU).

    Returns:
        ``(t, w)``, both of shape (n,).
    """
    sde = _check_sde(sde, components=True)
    eps = _check_eps(sde, eps)
    check_choice("kind", kind, TIME_SAMPLINGS)
    check_count("n", n)
    check_generator(generator)
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    u = _random.rand((n,), generator=generator, dtype=_F64, device=device)
    T = float(sde.T)
    if kind == "uniform":
        t = eps + (T - eps) * u
        w = torch.full_like(t, T - eps)
    else:
        table = _table(sde, eps)
        t = table.icdf(u.cpu())
        w = table.Z / likelihood_time_density(sde, t)
    return t.to(device=device, dtype=dtype), w.to(device=device, dtype=dtype)


# --------------------------------------------------------------------------- denoising score matching
def _fixed_times(sde: SDE, t: Any, eps: float, batch: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``dsm(t=...)``: the times (batch,) in float64, checked to lie in [eps, T], and unit weights."""
    tt = torch.as_tensor(t, dtype=_F64, device=device)
    if tt.numel() == 1:
        tt = tt.reshape(()).expand(batch)
    if tt.shape != (batch,):
        raise ValueError(f"t must be a number or have shape (batch,) = ({batch},), got {tuple(tt.shape)}")
    T = float(sde.T)
    inside = (tt >= eps * (1 - _T_SLACK)) & (tt <= T * (1 + _T_SLACK))  # slack: eps or T rounded to float32
    if not bool(inside.all()):
        bad = tt[~inside]
        raise ValueError(
            f"t must lie in [eps, T] = [{eps:g}, {T:g}] (the kernel is degenerate at 0 and the SDE ends at T), "
            f"got {float(bad[0]):g}; pass times inside that range, or lower eps= to reach smaller times"
        )
    return tt, torch.ones_like(tt)


def _weight_over_sigma2(sde: SDE, weighting: str, t: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    r""":math:`\lambda(t)/\sigma(t)^2` in float64, shape of t."""
    if weighting == "sigma2":
        return torch.ones_like(sigma2)
    if weighting == "none":
        return 1 / sigma2
    return likelihood_time_density(sde, t)


def dsm(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sde: SDE,
    x0: torch.Tensor,
    *,
    parameterization: str | None = None,
    weighting: str = "none",
    eps: float | None = None,
    time_sampling: str = "uniform",
    t: torch.Tensor | float | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    given: str = "state",
) -> torch.Tensor:
    r"""Denoising score matching on the SDE's derived Gaussian kernel, for any parameterization.

    .. math::
        \mathcal L_\lambda(\theta) = \frac12\int_\epsilon^T \lambda(t)\,E_{x_0,z}\big\|s_\theta(x_t,t)
        + z/\sigma(t)\big\|^2 dt,\qquad x_t = \alpha(t)x_0 + m(t) + \sigma(t) z,

    where :math:`-z/\sigma = -(x_t - \alpha x_0 - m)/\sigma^2 = \nabla\log p(x_t\mid x_0)` and
    :math:`s_\theta` is the model output converted to a score (:func:`sdekit.parameterization.to_score`).
    One time and one noise draw per sample; the per-sample estimate is
    :math:`\tfrac12 w(t)\,\lambda(t)\,\sigma^{-2}\|\sigma s_\theta + z\|^2` with the importance weight
    :math:`w` of :func:`sample_times`. Its expectation is minimised by the exact score of the
    diffused data, and for ``weighting="likelihood"`` it is the model-dependent term of
    :func:`likelihood_bound`.

    Args:
        model: ``model(x, t) -> tensor like x`` with t of shape (batch,) in ``x0``'s dtype.
        sde: an affine SDE (its marginal kernel gives :math:`\alpha, m, \sigma`).
        x0: data, shape (batch, *event_shape).
        parameterization: what the model predicts: ``"score"``, ``"eps"``, ``"x0"``, ``"v"``, ``"denoiser"``; None
            (default): the model's declared ``parameterization`` attribute (adapters' models), else ``"score"``.
        weighting: :math:`\lambda(t)`: ``"none"`` (1), ``"sigma2"`` (:math:`\sigma^2`; an ``"eps"`` model then
            regresses :math:`\|\hat\varepsilon - z\|^2`), ``"likelihood"`` (:math:`g^2`).
        eps: smallest time (default ``sde.default_eps``).
        time_sampling: ``"uniform"`` or ``"likelihood"`` (importance sampling with :math:`q \propto g^2/\sigma^2`;
            the variance-reduced choice for ``weighting="likelihood"``), see :func:`sample_times`.
        t: fixed times in :math:`[\epsilon, T]` instead of sampled ones (a number or shape (batch,)): then no
            integral is estimated and the per-sample value is the integrand
            :math:`\tfrac12\lambda(t)\|s_\theta + z/\sigma\|^2`.
        noise: the standard normal :math:`z` (shape of ``x0``) instead of a draw.
        generator: random generator for the times (drawn first) and the noise.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"`` (shape (batch,)).
            Per-sample values are summed over event dimensions.
        given: k-component SDEs only (ignored for scalar ones, whose components are all data): condition the
            kernel on the whole initial state (``"state"``, default; the non-data components of :math:`X_0` are
            drawn from their initial law) or on the data components alone (``"data"``: they are marginalised, the
            kernel of :func:`hsm`).

    k-component affine SDEs (e.g. :class:`sdekit.CLDSDE`; :mod:`sdekit._vector_dsm`): ``x0`` is the data of the
    data components (``(batch, *event_shape)`` for one), the model returns the full score
    ``(batch, k, *event_shape)`` (``parameterization="score"`` only), ``noise`` is shaped like the full state,
    the target is :math:`-\Sigma^{-1}(X_t - \Phi X_0 - m) = -L^{-\top}z` on all components, and the weightings are
    matrices: ``"none"`` :math:`I`, ``"sigma2"`` :math:`\Sigma = LL^\top` (per sample
    :math:`\tfrac12\|L^\top s_\theta + z\|^2`), ``"likelihood"`` :math:`GG^\top`; ``time_sampling="likelihood"``
    draws t from :math:`q \propto \operatorname{tr}(\Sigma^{-1}GG^\top)` (:func:`sample_times`).

    Returns:
        The loss (0-d, or (batch,) for ``reduction="none"``), differentiable w.r.t. the model.

    Example::

        loss = sdekit.losses.dsm(net, sdekit.VPSDE(), x0, parameterization="eps", weighting="sigma2")
        loss.backward()
    """
    if not callable(model):
        raise TypeError(f"model must be a callable model(x, t), got {type(model).__name__}")
    sde = _check_sde(sde, components=True)
    x0 = check_batch(x0, "x0")
    parameterization = model_parameterization(model, parameterization)
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("time_sampling", time_sampling, TIME_SAMPLINGS)
    check_choice("reduction", reduction, _REDUCTIONS)
    check_choice("given", given, GIVEN)
    eps = _check_eps(sde, eps)
    check_generator(generator)
    if sde.components is not None and parameterization != "score":
        raise ValueError(
            f"dsm on a k-component SDE ({sde!r}) takes a full-score model (parameterization='score'), not "
            f"{parameterization!r}; for an eps-type objective use weighting='sigma2' (||L^T s + z||^2)"
        )
    batch = x0.shape[0]
    if t is None:
        tt, w = sample_times(batch, sde, eps, time_sampling, generator=generator, device=x0.device)
    else:
        tt, w = _fixed_times(sde, t, eps, batch, x0.device)
    if sde.components is not None:
        per = vector_dsm(model, sde, x0, tt, w, weighting=weighting, given=given, noise=noise, generator=generator)
        return _reduce(per, reduction)
    if noise is None:
        z = _random.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    else:
        if not isinstance(noise, torch.Tensor) or noise.shape != x0.shape:
            raise ValueError(f"noise must be a tensor shaped like x0 {tuple(x0.shape)}")
        z = noise.to(x0.dtype)
    t_model = tt.to(x0.dtype)  # the model and the coefficients see the same (rounded) times
    alpha, m, sigma2 = marginal_coefficients(sde, t_model, x0)
    sigma = torch.sqrt(sigma2)
    xt = alpha * x0 + m + sigma * z
    out = check_model_output(model(xt, t_model), xt)
    residual = sigma * to_score(out, xt, t_model, sde, parameterization) + z  # sigma (s_theta - target)
    t64 = t_model.to(_F64)
    factor = 0.5 * w.to(_F64) * _weight_over_sigma2(sde, weighting, t64, sde.marginal.sigma2(t64))
    per_sample = factor.to(x0.dtype) * _event_sum(residual * residual)
    return _reduce(per_sample, reduction)


def likelihood_bound(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sde: SDE,
    x0: torch.Tensor,
    *,
    parameterization: str | None = None,
    eps: float | None = None,
    prior: Any = None,
    time_sampling: str = "likelihood",
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Monte-Carlo upper bound on the negative log-likelihood (nats) of the model's reverse SDE.

    Song, Durkan, Murray & Ermon (2021, Thm 1) truncated at :math:`\epsilon`: per data point :math:`x_0`,

    .. math::
        \mathcal B(x_0) = -E\log\pi(x_T) + \underbrace{\frac12\int_\epsilon^T g^2 E\|s_\theta(x_t,t)
        - \nabla\log p(x_t\mid x_0)\|^2 dt}_{\texttt{dsm(weighting="likelihood")}}
        - \frac d2\int_\epsilon^T\frac{g^2}{\sigma^2}\,dt - \int_\epsilon^T E[\nabla\cdot f]\,dt,

    with :math:`E\|\nabla\log p(x_t\mid x_0)\|^2 = d/\sigma^2` and, for :math:`f = a(t)x + b(t)`,
    :math:`\nabla\cdot f = d\,a(t)`, so the last two terms are the exact constants
    :math:`-\tfrac d2[\log\mathrm{SNR}(\epsilon) - \log\mathrm{SNR}(T)] - d\,[\log\alpha(T) - \log\alpha(\epsilon)]`.

    What it bounds: let :math:`q_\epsilon` be the time-:math:`\epsilon` law of the reverse SDE driven by
    :math:`s_\theta` from :math:`x_T \sim \pi`, and :math:`p_\epsilon` the forward marginal at :math:`\epsilon`
    of the data :math:`x_0 \sim p_0`. Then (KL chain rule + Girsanov on [eps, T], the entropy identity
    :math:`\tfrac{d}{dt}H(p_t) = E[\nabla\cdot f] + \tfrac12 g^2E\|\nabla\log p_t\|^2`, and Vincent's
    DSM/ESM identity)

    .. math:: E_{x\sim p_\epsilon}[-\log q_\epsilon(x)] \le E_{x_0\sim p_0}[\mathcal B(x_0)],

    with equality when :math:`s_\theta` is the exact score and :math:`\pi = p_T`. The consistent
    comparison is therefore with the cross-entropy at time :math:`\epsilon` (e.g. ``-oracle.log_prob(x, eps)``
    for :math:`x \sim p_\epsilon`), not with :math:`\log p_0`. For a single :math:`x_0` the same
    argument bounds the cross-entropy of the kernel :math:`N(\alpha_\epsilon x_0 + m_\epsilon, \sigma_\epsilon^2)`.

    Args:
        model: score model ``model(x, t)``, as in :func:`dsm`.
        sde: the forward (affine) SDE.
        x0: data, shape (batch, *event_shape).
        parameterization: what the model predicts, as in :func:`dsm`.
        eps: lower time, as in :func:`dsm`.
        generator: times, then DSM noise, then the noise of :math:`x_T`, are drawn from it.
        prior: :math:`\pi`, anything with ``log_prob(z) -> (batch,)`` (default ``sde.prior``; an oracle's
            ``.at(sde.T)`` is the exact :math:`p_T`).
        time_sampling: ``"likelihood"`` (default, importance sampling) or ``"uniform"``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per data point, shape (batch,)).

    k-component affine SDEs (e.g. CLD; derivation in :mod:`sdekit._vector_dsm`): the bound is on the cross-entropy
    of the *joint* law of the full state at :math:`\epsilon` (data in the data components, the others from their
    initial law, drawn once per data point), with the DSM term ``given="state"``, :math:`\|\cdot\|_D^2`,
    :math:`D = GG^\top`, and the constant :math:`-\tfrac d2\log(\det\Sigma(T)/\det\Sigma(\epsilon))`;
    ``prior`` takes full states ``(batch, k, *event_shape)`` (an oracle's ``.at(sde.T)``).

    Returns:
        The bound in nats (one draw of t, z and :math:`x_T` per data point).
    """
    sde = _check_sde(sde, components=True)
    x0 = check_batch(x0, "x0")
    eps = _check_eps(sde, eps)
    check_choice("reduction", reduction, _REDUCTIONS)
    check_generator(generator)
    prior = sde.prior if prior is None else prior
    if not callable(getattr(prior, "log_prob", None)):
        raise TypeError(f"prior must have a log_prob(z) method, got {type(prior).__name__}")
    score_term = dsm(
        model,
        sde,
        x0,
        parameterization=parameterization,
        weighting="likelihood",
        eps=eps,
        time_sampling=time_sampling,
        generator=generator,
        reduction="none",
    )
    if sde.components is None:
        xT, d = sde.marginal.at(sde.T, x0).sample(x0, generator), x0[0].numel()
    else:
        xT, d = draw_at_T(sde, x0, generator)
    prior_nll = -prior.log_prob(xT)
    ends = torch.tensor([eps, float(sde.T)], dtype=_F64)
    lsnr = _log_snr(sde, ends)
    log_alpha = sde.marginal.log_alpha(ends) if sde.components is None else log_det_alpha(sde, ends)
    const = -0.5 * d * float(lsnr[0] - lsnr[1]) - d * float(log_alpha[1] - log_alpha[0])
    return _reduce(prior_nll.to(x0.dtype) + score_term + const, reduction)


# --------------------------------------------------------------------------- implicit / sliced
def _call_score(score: Callable[..., torch.Tensor], x: torch.Tensor, t: Any) -> torch.Tensor:
    out = score(x) if t is None else score(x, t)
    return check_model_output(out, x, what="score(x)" if t is None else "score(x, t)")


def _prepare(x: Any, t: Any) -> tuple[torch.Tensor, Any]:
    x = check_batch(x, "x")
    if t is not None:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.reshape(()).expand(x.shape[0]) if t.numel() == 1 else t
        if t.shape != (x.shape[0],):
            raise ValueError(
                f"t must be a number or have shape (batch,) = ({x.shape[0]},), got {tuple(t.shape)}; "
                "pass one time per sample of x"
            )
    return x.detach().requires_grad_(True), t


def ism(
    score: Callable[..., torch.Tensor],
    x: torch.Tensor,
    *,
    t: torch.Tensor | float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Implicit score matching (Hyvärinen 2005) with the exact Jacobian trace.

    .. math::
        J(\theta) = E_{x}\Big[\tfrac12\|s_\theta(x)\|^2 + \operatorname{tr}\nabla_x s_\theta(x)\Big]
        = \tfrac12 E\|s_\theta(x) - \nabla\log p(x)\|^2 - \tfrac12 E\|\nabla\log p(x)\|^2,

    (integration by parts), so it is minimised by the data score without knowing it. The trace
    costs one forward and one backward pass of a batch replicated d times (d = event size;
    chunked for large d), so use it for small d and :func:`ssm` otherwise. Samples must not
    interact through the model (no batch statistics). Differentiable w.r.t. the model's parameters
    when grad mode is on.

    Args:
        score: ``score(x)`` (or ``score(x, t)`` when ``t`` is given) returning a tensor like x.
        x: data, shape (batch, *event_shape).
        t: optional time/noise level passed to the model (a number or shape (batch,)); the model sees it
            with the batch (the trace evaluates a replicated batch, whose times are replicated alike).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
    """
    if not callable(score):
        raise TypeError(f"score must be a callable score(x), got {type(score).__name__}")
    check_choice("reduction", reduction, _REDUCTIONS)
    x, t = _prepare(x, t)
    graph = torch.is_grad_enabled()
    with torch.enable_grad():
        # (the exact trace replicates a per-sample t together with the batch)
        out, trace = drift_and_exact_trace(lambda xx, tt: _call_score(score, xx, tt), x, t, graph)
    if not graph:
        out, trace = out.detach(), trace.detach()
    return _reduce(0.5 * _event_sum(out * out) + trace, reduction)


def ssm(
    score: Callable[..., torch.Tensor],
    x: torch.Tensor,
    *,
    t: torch.Tensor | float | None = None,
    n_projections: int = 1,
    projection: str = "rademacher",
    variance_reduction: bool = True,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Sliced score matching (Song, Garg, Shi & Ermon 2019) with random projections :math:`v`, :math:`E[vv^\top] = I`.

    .. math::
        J(\theta) = E_{x, v}\Big[v^\top \nabla_x s_\theta(x)\, v + \tfrac12 (v^\top s_\theta(x))^2\Big]
        \quad\text{or, with variance reduction,}\quad
        E_{x, v}\Big[v^\top \nabla_x s_\theta(x)\, v + \tfrac12\|s_\theta(x)\|^2\Big],

    both equal to :func:`ism` in expectation over v (:math:`E[v^\top A v] = \operatorname{tr}A`). One
    vector-Jacobian product per projection, whatever d. Rademacher projections (entries :math:`\pm1`)
    give the lowest variance for a given Jacobian (and the exact trace when it is diagonal);
    Gaussian ones are the original paper's choice.

    Args:
        score: ``score(x)`` (or ``score(x, t)`` when ``t`` is given).
        x: data, shape (batch, *event_shape).
        t: optional time/noise level passed to the model.
        n_projections: projections per sample (averaged).
        projection: ``"rademacher"`` or ``"gaussian"``.
        variance_reduction: use :math:`\tfrac12\|s\|^2` (exact) instead of :math:`\tfrac12(v^\top s)^2`.
        generator: random generator for the projections.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
    """
    if not callable(score):
        raise TypeError(f"score must be a callable score(x), got {type(score).__name__}")
    check_choice("reduction", reduction, _REDUCTIONS)
    check_choice("projection", projection, PROBES)
    check_count("n_projections", n_projections)
    check_generator(generator)
    x, t = _prepare(x, t)
    graph = torch.is_grad_enabled()
    v = draw_probes(projection, n_projections, x, generator)  # (n, *x.shape)
    with torch.enable_grad():
        out = _call_score(score, x, t)
        quad = hutchinson_trace(out, x, v, graph)  # v^T J v, averaged over the projections
    if variance_reduction:
        second = 0.5 * _event_sum(out * out)
    else:
        second = 0.5 * ((v * out).reshape(n_projections, x.shape[0], -1).sum(2) ** 2).mean(0)
    per_sample = quad + second
    return _reduce(per_sample if graph else per_sample.detach(), reduction)
