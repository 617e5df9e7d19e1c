r"""Time grids shared by every fixed-step solver (native, exponential, torchsde, torchdiffeq).

A grid is a decreasing float64 CPU tensor :math:`t_0 = t_{\rm start} > t_1 > \dots > t_n = t_{\rm end}`
with exact endpoints. Kinds:

* ``"uniform"``: uniform in t.
* ``"logsnr"``: uniform in the half log-SNR :math:`\lambda(t) = \log\alpha(t) - \log\sigma(t)`
  (DPM-Solver's grid; geometric noise levels for VE/EDM). Affine SDEs, k-component ones too, with the
  generalized log-SNR :math:`\lambda(t) = \tfrac1k\big(\log|\det\Phi(t)| - \tfrac12\log\det S(t)\big)`
  (:math:`S` = ``marginal.cov(t, given="data")``; :func:`log_snr`), which is :math:`\lambda` for k = 1. Its rate
  :math:`-\lambda' = \mathrm{tr}(S^{-1}D)/2k` (from :math:`S' = AS + SA^\top + D`) is the rate at which the
  PF-ODE's score term relaxes the state, so the grid is geometric in t where that term is stiff (CLD near 0).
* ``"edm"``: Karras et al. (2022)'s :math:`\rho`-schedule on the noise-to-signal ratio
  :math:`r(t) = \sigma(t)/\alpha(t) = e^{-\lambda(t)}`:
  :math:`r_i = \big(r_{\max}^{1/\rho} + \tfrac in (r_{\min}^{1/\rho} - r_{\max}^{1/\rho})\big)^\rho`,
  :math:`\rho = 7` by default (option ``rho``); for EDM/VE :math:`r = \sigma`, exactly EDM's
  schedule. Affine SDEs.
* ``"arctan"``: uniform in :math:`u(t) = \arctan\big(r(t)^{1/3}\big) = \arctan e^{-\lambda(t)/3}`
  (:math:`r_i = \tan(u_i)^3`). In :math:`\lambda` the step is
  :math:`\Delta\lambda \approx \tfrac{6\,\Delta u}{\sin 2u}`: finest at :math:`r = 1`
  (signal = noise, :math:`\lambda = 0`), growing like :math:`e^{|\lambda|/3}` towards both ends,
  where a data-prediction (exponential) integrator has little to do: at :math:`r \ll` the data
  scale the denoiser :math:`\hat x_0` is constant up to :math:`O(r^2)`, at :math:`r \gg` it
  moves by :math:`O(1/r)`. Equidistributing an order-3 local error
  :math:`h^4\,|\partial_\lambda^3\hat x_0|` over Gaussian data gives the exponents 2 (low
  noise) and 4 (high noise); 3 sits between them. Of the exponents scanned for ``exp2``/``exp3`` at
  20 NFE on the VP and VE problem of ``benchmarks/error_vs_nfe.py`` (n = 1e5; 1.5, 2, 3, 4 with one
  seed, 2.5, 3, 3.5 with another), 2.5–3.5 were the most accurate (3 best on VE, within the KS
  noise on VP). The exponent 1 would be the cosine schedule's angle. The grid is centred at
  :math:`r = 1`, which suits data of unit scale (as the standard SDEs assume); it has no other
  parameter. Trade-offs (measured): at 10 steps or fewer the uniform-:math:`\lambda` grid was more
  accurate on that problem, and for purely Gaussian data the uniform-:math:`\lambda` grid
  super-converges (the leading error terms telescope), which a non-uniform grid does not. Affine SDEs.

* ``"quadratic"``: uniform in :math:`\sqrt t`, :math:`t_i = \big(\sqrt{t_{\rm start}} + \tfrac in
  (\sqrt{t_{\rm end}} - \sqrt{t_{\rm start}})\big)^2` (DDIM's and DPM-Solver's "time_quadratic"); needs
  :math:`t \ge 0` and no marginal, so it works for any SDE, like ``"uniform"``.
* ``"optimized"``: equidistributes a global error bound of an order-p sampler computed from the SDE's Gaussian
  marginal on Gaussian data :math:`N(\mu, c^2 I)` (options ``data_std`` = c, default 1, the scale the standard
  SDEs assume; p = the order the run has, :func:`grid_order`: ``unipc``'s ``order`` option plus one with its
  corrector, the exponential integrators' ``order``, else the weak order), in the spirit of "Align Your
  Steps" (Sabour et al. 2024) but computed, not learned. Affine SDEs. Derivation:

  1. *Denoiser path.* With :math:`y = x - m(t)`, :math:`y_t = \alpha x_0 + \sigma\varepsilon`, the marginal of
     :math:`y_t` is :math:`N(\alpha\mu, s_t^2 I)`, :math:`s_t^2 = \alpha^2c^2 + \sigma^2`, and Tweedie gives
     :math:`\hat x_0 = \mu + \alpha c^2 (y - \alpha\mu)/s_t^2`. The PF-ODE of a Gaussian is linear and keeps
     :math:`z = (y_t - \alpha\mu)/s_t` fixed, so along a trajectory, with :math:`\lambda = \log(\alpha/\sigma)`,

     .. math:: \hat x_0(\lambda) = \mu + \frac{c^2}{\sqrt{c^2 + e^{-2\lambda}}}\,z = \mu + c\,g(\lambda + \log c)\,z,
               \qquad g(u) = (1 + e^{-2u})^{-1/2} = \sqrt{\mathrm{sigmoid}(2u)} .

     With :math:`s = \mathrm{sigmoid}(2u)`, :math:`s' = 2s(1-s)`, induction gives
     :math:`g^{(p)} = \sqrt s\,(1-s)\,R_p(s)`, :math:`R_1 = 1`, :math:`R_{p+1} = (1-3s)R_p + 2s(1-s)R_p'`
     (:math:`R_2 = 1 - 3s`, :math:`R_3 = 1 - 12s + 15s^2`): :func:`gaussian_denoiser_derivative`.
  2. *Local error.* An order-p exponential integrator step of length h in :math:`\lambda`
     (:mod:`sdekit.solvers._exponential`) replaces :math:`\hat x_0` in
     :math:`\alpha_t\int_0^h e^{\tau-h}\hat x_0\,d\tau` by a degree p - 1 interpolant, so its local error in
     :math:`y/\alpha` is :math:`\le C_p\,h^{p+1}\max|\partial_\lambda^p\hat x_0| = C_p\,c\,h^{p+1}|g^{(p)}|`.
  3. *Propagation.* The flow carries a deviation of :math:`y/\alpha` at :math:`\lambda` to the end multiplied
     by :math:`(s/\alpha)_{\rm end}/(s/\alpha)_\lambda = \sqrt{c^2 + e^{-2\lambda_{\rm end}}}/\sqrt{c^2 +
     e^{-2\lambda}} \approx g(u)` (:math:`\lambda_{\rm end} \gg -\log c`): errors made at high noise are
     damped. The global error bound is :math:`\sum_i h_i^{p+1} W(\lambda_i)`,
     :math:`W = g(u)\,|g^{(p)}(u)|` (:func:`optimized_error_weight`).
  4. *Optimum.* For n steps (:math:`\sum h_i = \lambda_{\rm end} - \lambda_{\rm start}`) Hölder's inequality
     gives :math:`\sum h_i^{p+1}W_i \ge n^{-p}\big(\int W^{1/(p+1)}d\lambda\big)^{p+1}`, with equality iff
     :math:`h_i^{p+1}W_i` is the same for every step: the grid equidistributes the density
     :math:`W^{1/(p+1)}` in :math:`\lambda`. Computed on a uniform mesh of ``OPTIMIZED_MESH + 8 n`` intervals
     (trapezoidal cumulative integral, linear inversion), vectorised, float64, cached per
     (:math:`\lambda` ends, n, p, c), then mapped to t like the other kinds.
  5. *Floor.* :math:`W` vanishes at the zeros of :math:`g^{(p)}` (artefacts of the proxy) and underflows far
     out; the density is :math:`(W/\max W + \varphi)^{1/(p+1)}`, :math:`\varphi` = :data:`OPTIMIZED_FLOOR` =
     1e-6, so no step is more than :math:`\approx 100` times the finest.
  6. *Stability cap* (solvers with ``grid_max_step`` = :math:`h_{\max}`). An explicit method on the reverse SDE
     contracts :math:`x - \alpha\hat x_0` by :math:`1 - 2h` per step of h in :math:`\lambda` (exactly
     :math:`e^{-2h}`), and overshoots the denoised mean once :math:`h > 1/2`; explicit PF-ODE methods in t
     (rate 1) once :math:`h > 1`. The exponential integrators and the exact-kernel samplers integrate this
     linear part exactly, so the bound above is theirs alone; the others get steps per unit :math:`\lambda` of
     :math:`\max(k\rho, 1/h_{\max})` with k (bisection) such that there are n steps (uniform in :math:`\lambda`
     when :math:`n\,h_{\max}` does not exceed the range). The torchsde solvers and ``pc`` use
     :math:`h_{\max} = 1/2`, the fixed-step torchdiffeq solvers 1.

  ``data_std`` may also be a sequence :math:`(c_1, \dots, c_K)`: Gaussian data whose principal axes have these
  standard deviations. Each axis is a 1-D problem of its own scale and W is the mean of the per-axis weights
  (each relative to its axis's scale). For p = 1 and one scale, :math:`W = s(1 - s) = \tfrac14\mathrm{sech}^2 u`
  and the density is :math:`\propto \mathrm{sech}\,u`: the grid is uniform in :math:`\arctan(c\,e^{\lambda})`,
  which for the cosine VP schedule (:math:`\lambda = -\log\tan(\pi t'/2)`) is uniform in t.

  Shape: in :math:`\lambda` the density decays like :math:`e^{-2|u|/(p+1)}` on both sides of
  :math:`u = \lambda + \log c \approx 0` (noise comparable to the data scale), steeper than ``"arctan"``
  (:math:`e^{-|\lambda|/3}`): few steps go to the ends. What was tried (``benchmarks/grids.py``, 2-D mixture,
  ``exp2``/``exp3``, VP and VE, 6–20 NFE, n = 1e5, one seed): the local bound without the propagation factor
  (:math:`|g^{(p)}|^{1/(p+1)}`) was worse at 6–8 NFE (``exp2``: 8.7 / 8.5 against 2.6 / 2.6 at 6 NFE on VP / VE);
  floors :math:`\varphi` of 0.01, 0.05 and 0.2 made 6–8 NFE worse by factors 2–10 (``exp2`` on VE at 6 NFE:
  6.1, 18.9, 25.5) without reaching ``"arctan"`` at 20 NFE; exponents :math:`1/p` and :math:`1/(p+2)`, a
  step-ratio cap (consecutive steps within 1.5x or 2x) and a step-wise envelope
  :math:`|g^{(p)}| + \tfrac h2|g^{(p+1)}|` traded 6–10 NFE for 15–20 NFE without beating ``"arctan"`` there
  (``exp3`` at 20 NFE: 1.0–1.3 against 0.89–0.90); ``data_std = 0.5`` (the mixture's components have std
  0.3–0.5) helped at 15–20 NFE and hurt at 6–10. A KL bound between the exact and the discretised Gaussian
  marginals was not tried: for Gaussian data the uniform-:math:`\lambda` grid super-converges, so such a bound
  would favour it, and it measured among the worst grids here. For reverse Euler–Maruyama the uncapped grid
  was the best kind on VP, VE, EDM and cosine VP but failed on sub-VP (one final step of 5.6 in
  :math:`\lambda`, ratio 2.26 at 50 steps), which the cap (item 6) fixed (1.03). Measured results:
  ``docs/sampling.md``, "Time grids".

  Tried at 15 NFE (issue #18 follow-up; same mixture, n = 200,000, x_T seeds 1 / 2; the best before was ``dpm3``
  on this grid, VP 1.20 / 1.23, VE 1.34 / 1.24): the grid's order p for UniPC-2 (bh2) 2 / 3 / 4 / 5 gave VP
  2.34 / 2.35, 1.37 / 1.22, 1.22 / 1.09, 1.27 / 1.21 and VE (p = 2-5) 3.35 / 3.31, 1.64 / 1.46, 1.40 / 1.24,
  1.50 / 1.39; ``data_std`` = the benchmark data's principal standard deviations (1.78, 1.23; its first two
  moments) made UniPC-2 worse (VP 1.91 / 1.82, VE 2.55 / 2.37), as did scales spread below 1 (``data_std`` =
  5 scales from 1 to 0.3 or 0.1: VP 1.37 / 1.27, 1.50 / 1.35). An "Align Your Steps"-style grid minimising the
  closed-form KL between the sampler's output law and the exact :math:`p_\epsilon` for Gaussian data (the
  samplers are linear maps of :math:`x_T` there; L-BFGS on the step lengths) drives that KL from ~5e-5 to
  1e-17 by cancelling errors between steps, and measured worse (VP: UniPC-2 1.87 / 1.73, ``exp3`` 3.19 / 3.31,
  UniPC-3 1.67 / 1.51, ``dpm++3m`` 2.20 / 2.05; VE: UniPC-2 2.23 / 2.12, ``exp3`` 3.06 / 3.09), so it was not
  kept.

**Explicit times.** ``grid=`` also takes the grid itself: a strictly decreasing 1-D sequence or tensor of times
(e.g. a diffusers scheduler's timesteps mapped to sdekit time). :func:`sdekit.sample` then runs from its first
time to its last on exactly these points (``steps`` and ``eps`` follow from it); :func:`explicit_times` reads it,
:func:`solver_time_grid` returns the part between a run's ends.

Grids in :math:`\lambda` or :math:`r` are mapped back to t by inverting the strictly monotone
:math:`\lambda(t)` (vectorised bisection in float64), so every affine SDE — VP, VE, sub-VP, EDM,
cosine, or a user's — gets them without a per-SDE formula.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..errors import SolverError

if TYPE_CHECKING:  # pragma: no cover
    from .._marginal import GaussianMarginal
    from ..symbolic.sde import SDE
    from ._base import Solver

__all__ = [
    "ARCTAN_EXPONENT",
    "GRIDS",
    "explicit_times",
    "valid_grid",
    "MARGINAL_FREE",
    "grid_order",
    "log_snr",
    "optimized_density",
    "optimized_error_weight",
    "optimized_log_snr",
    "gaussian_denoiser_derivative",
    "resolve_grid",
    "solver_time_grid",
    "t_of_log_snr",
    "time_grid",
]

ARCTAN_EXPONENT = 3.0
"""The exponent :math:`q` of the ``"arctan"`` grid, uniform in :math:`\arctan r^{1/q}` (see the module docstring)."""

GRIDS: tuple[str, ...] = ("uniform", "quadratic", "logsnr", "edm", "arctan", "optimized")
"""Grid kinds accepted by the ``grid=`` option of every fixed-step solver."""

MARGINAL_FREE: tuple[str, ...] = ("uniform", "quadratic")
"""Grid kinds defined in t alone (any SDE, affine or not); the others need the Gaussian marginal."""
COMPONENT_GRIDS: tuple[str, ...] = (*MARGINAL_FREE, "logsnr")
"""Grid kinds of an affine k-component SDE (the generalized log-SNR, :func:`log_snr`)."""

OPTIMIZED_FLOOR = 1e-6
r"""Floor of the ``"optimized"`` grid's error density, relative to its peak (before the power
:math:`1/(p+1)`): keeps every step finite where the Gaussian bound vanishes (see the module docstring)."""


def _r_coefficients(p: int) -> list[float]:
    r"""Coefficients (ascending powers of s) of :math:`R_p` in :math:`g^{(p)}(u) = \sqrt s\,(1 - s)\,R_p(s)`.

    :math:`R_1 = 1`, :math:`R_{p+1} = (1 - 3s)R_p + 2s(1 - s)R_p'` (module docstring).
    """
    coef = [1.0]
    for _ in range(p - 1):
        new = [0.0] * (len(coef) + 1)
        for i, a in enumerate(coef):  # (1 - 3s) R
            new[i] += a
            new[i + 1] -= 3 * a
        for i in range(1, len(coef)):  # 2 s (1 - s) R'
            new[i] += 2 * i * coef[i]
            new[i + 1] -= 2 * i * coef[i]
        coef = new
    return coef


def gaussian_denoiser_derivative(u: torch.Tensor, p: int) -> torch.Tensor:
    r""":math:`g^{(p)}(u)` (p >= 1) of :math:`g(u) = (1 + e^{-2u})^{-1/2}`, elementwise.

    For Gaussian data :math:`N(\mu, c^2 I)` the denoiser along a probability-flow trajectory is
    :math:`\hat x_0(\lambda) = \mu + c\,g(\lambda + \log c)\,z` (module docstring), so
    :math:`\partial_\lambda^p \hat x_0 = c\,g^{(p)}(\lambda + \log c)\,z`. Evaluated as
    :math:`\sqrt s\,(1 - s)\,R_p(s)` with :math:`s = \mathrm{sigmoid}(2u)` and :math:`1 - s = \mathrm{sigmoid}(-2u)`
    (no cancellation at either end).
    """
    s, sbar = torch.sigmoid(2 * u), torch.sigmoid(-2 * u)
    acc = torch.zeros_like(u)
    for a in reversed(_r_coefficients(p)):
        acc = acc * s + a
    return torch.sqrt(s) * sbar * acc


def optimized_error_weight(lam: torch.Tensor, order: int, data_std: float | tuple[float, ...] = 1.0) -> torch.Tensor:
    r""":math:`W(\lambda) = \tfrac1K\sum_k g(u_k)\,|g^{(p)}(u_k)|`, :math:`u_k = \lambda + \log c_k`: the global error
    (relative to each direction's scale) a unit-length step of order p at :math:`\lambda` contributes per
    :math:`h^{p+1}`, for Gaussian data with standard deviations ``data_std`` = :math:`(c_1, \dots, c_K)` along its
    principal axes (one number: :math:`N(\mu, c^2 I)`; module docstring)."""
    scales = _scales(data_std)
    lam = lam.to(torch.float64)
    w = torch.zeros_like(lam)
    for c in scales:
        u = lam + math.log(c)
        w = w + torch.sqrt(torch.sigmoid(2 * u)) * gaussian_denoiser_derivative(u, order).abs()
    return w / len(scales)


def optimized_density(lam: torch.Tensor, order: int, data_std: float | tuple[float, ...] = 1.0) -> torch.Tensor:
    r"""Unnormalised density in :math:`\lambda` of the ``"optimized"`` grid on the mesh ``lam``:
    :math:`\big(W/\max W + \varphi\big)^{1/(p+1)}`, W = :func:`optimized_error_weight`, the max over ``lam``,
    :math:`\varphi` = :data:`OPTIMIZED_FLOOR`."""
    w = optimized_error_weight(lam, order, data_std)
    return (w / w.max() + OPTIMIZED_FLOOR) ** (1.0 / (order + 1))


@functools.lru_cache(maxsize=256)
def _optimized_log_snr(
    lo: float, hi: float, n: int, order: int, data_std: tuple[float, ...], max_step: float | None
) -> torch.Tensor:
    mesh_n = OPTIMIZED_MESH + 8 * n
    mesh = torch.linspace(lo, hi, mesh_n + 1, dtype=torch.float64)
    dx = (hi - lo) / mesh_n
    dens = optimized_density(mesh, order, data_std)
    if max_step is not None:
        if n * max_step <= hi - lo:  # the cap leaves no freedom: uniform in lambda has the shortest longest step
            return torch.linspace(lo, hi, n + 1, dtype=torch.float64)
        # steps per unit lambda: max(k * density, 1 / max_step), with k (bisection in log k) such that they add to n
        lo_k, hi_k = torch.tensor(-60.0, dtype=torch.float64), torch.tensor(60.0, dtype=torch.float64)
        for _ in range(100):
            mid = (lo_k + hi_k) / 2
            f = torch.clamp(mid.exp() * dens, min=1.0 / max_step)
            over = float(torch.sum((f[1:] + f[:-1]) / 2) * dx) > n
            lo_k, hi_k = (lo_k, mid) if over else (mid, hi_k)
        dens = torch.clamp(((lo_k + hi_k) / 2).exp() * dens, min=1.0 / max_step)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum((dens[1:] + dens[:-1]) / 2, 0)])
    cdf = cdf / cdf[-1]
    target = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
    j = torch.searchsorted(cdf, target).clamp(1, mesh_n)
    frac = ((target - cdf[j - 1]) / (cdf[j] - cdf[j - 1])).clamp(0, 1)
    lam = mesh[j - 1] + frac * (mesh[j] - mesh[j - 1])
    lam[0], lam[-1] = lo, hi
    return lam


def _scales(data_std: Any) -> tuple[float, ...]:
    """``data_std`` as a tuple of positive floats, or :class:`SolverError`."""
    values = [data_std] if isinstance(data_std, (int, float)) else data_std
    try:
        scales = tuple(values)
    except TypeError:
        scales = ()
    if not scales or any(
        isinstance(c, bool) or not isinstance(c, (int, float)) or not (math.isfinite(c) and c > 0) for c in scales
    ):
        raise SolverError(
            f"data_std must be a positive number or a sequence of them (the data's standard deviations along its "
            f"principal axes), got {data_std!r}"
        )
    return tuple(float(c) for c in scales)


def optimized_log_snr(
    lam_start: float,
    lam_end: float,
    n: int,
    order: int = 1,
    data_std: float | tuple[float, ...] = 1.0,
    max_step: float | None = None,
) -> torch.Tensor:
    r"""The ``"optimized"`` grid in :math:`\lambda`: ``n + 1`` float64 values from ``lam_start`` to ``lam_end``
    (exact) that equidistribute :func:`optimized_density` (each step holds 1/n of its integral, by the trapezoidal
    rule on a uniform mesh of ``OPTIMIZED_MESH + 8 n`` intervals and linear inversion of the cumulative integral).

    Cached per (ends, n, order, data_std); a fresh tensor is returned each call.
    """
    scales = _scales(data_std)
    lo, hi = min(lam_start, lam_end), max(lam_start, lam_end)
    cap = None if max_step is None else float(max_step)
    lam = _optimized_log_snr(float(lo), float(hi), int(n), int(order), scales, cap).clone()
    return lam if lam_start <= lam_end else lam.flip(0)


OPTIMIZED_MESH = 4096
"""Base number of mesh intervals of the ``"optimized"`` grid's quadrature (plus 8 per step)."""


def log_snr(marginal: Any, t: torch.Tensor) -> torch.Tensor:
    r"""Half log-SNR :math:`\lambda(t) = \log\alpha(t) - \log\sigma(t)`: :meth:`GaussianMarginal.log_snr`; for the
    k x k marginal of a k-component SDE the generalized
    :math:`\tfrac1k\big(\log|\det\Phi(t)| - \tfrac12\log\det S(t)\big)` (module docstring)."""
    return marginal.log_snr(t)


def t_of_log_snr(
    marginal: GaussianMarginal, lam: torch.Tensor, t_lo: float, t_hi: float, iters: int = 64
) -> torch.Tensor:
    r"""Invert :math:`\lambda(t)` on :math:`[t_{\rm lo}, t_{\rm hi}]` by vectorised bisection (float64).

    :math:`\lambda` is decreasing, so the bracket halves towards larger t while
    :math:`\lambda(t_{\rm mid}) > \lambda`. 64 halvings shrink the bracket below float64
    resolution for any horizon used in practice; values outside the bracket are clamped.
    """
    lam = lam.to(torch.float64)
    lo = torch.full_like(lam, float(t_lo))
    hi = torch.full_like(lam, float(t_hi))
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = log_snr(marginal, mid) > lam
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    return 0.5 * (lo + hi)


def time_grid(
    sde: SDE,
    t_start: float,
    t_end: float,
    n: int,
    kind: str = "uniform",
    rho: float = 7.0,
    *,
    order: int = 1,
    data_std: float | tuple[float, ...] = 1.0,
    max_step: float | None = None,
) -> torch.Tensor:
    r"""Grid of ``n + 1`` float64 CPU times from ``t_start`` to ``t_end`` (endpoints exact; see the module docstring).

    Works in either direction (``t_start > t_end`` for sampling). ``rho`` is the exponent of ``kind="edm"``;
    ``order`` (the sampler's order p) and ``data_std`` (the scale c of the Gaussian data proxy) shape
    ``kind="optimized"``; the other kinds ignore them.
    """
    if kind not in GRIDS:
        raise SolverError(f"unknown grid {kind!r}; choose one of {', '.join(GRIDS)}")
    if kind == "uniform":
        times = torch.linspace(float(t_start), float(t_end), n + 1, dtype=torch.float64)
    elif kind == "quadratic":
        if min(t_start, t_end) < 0:
            raise SolverError(f"grid='quadratic' needs times >= 0, got [{t_start}, {t_end}]")
        times = torch.linspace(math.sqrt(t_start), math.sqrt(t_end), n + 1, dtype=torch.float64) ** 2
    else:
        marginal = sde.marginal
        ends = log_snr(marginal, torch.tensor([float(t_start), float(t_end)], dtype=torch.float64))
        if kind == "logsnr":
            lam = torch.linspace(float(ends[0]), float(ends[1]), n + 1, dtype=torch.float64)
        elif kind == "arctan":
            q = ARCTAN_EXPONENT
            u = torch.atan(torch.exp(-ends / q))  # arctan r^(1/q), r = exp(-lambda)
            lam = -q * torch.log(torch.tan(torch.linspace(float(u[0]), float(u[1]), n + 1, dtype=torch.float64)))
        elif kind == "optimized":
            lam = optimized_log_snr(float(ends[0]), float(ends[1]), n, int(order), data_std, max_step)
        else:
            if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not (math.isfinite(rho) and rho > 0):
                raise SolverError(f"rho must be a positive number (EDM uses 7), got {rho!r}")
            inv = (-ends / float(rho)).exp()  # r^(1/rho), r = exp(-lambda)
            lam = -float(rho) * torch.log(torch.linspace(float(inv[0]), float(inv[1]), n + 1, dtype=torch.float64))
        lo, hi = min(t_start, t_end), max(t_start, t_end)
        times = t_of_log_snr(marginal, lam, lo, hi)
    times[0], times[-1] = float(t_start), float(t_end)
    return times


def explicit_times(value: Any) -> torch.Tensor | None:
    """``grid=`` given as times: a float64 CPU copy of them (1-D, at least 2, finite, strictly decreasing), or None
    when ``value`` is None or a grid kind. Raises :class:`SolverError` for malformed times."""
    if value is None or isinstance(value, str):
        return None
    try:
        if isinstance(value, torch.Tensor):
            times = value.detach().to("cpu", torch.float64).clone()
        else:
            times = torch.tensor([float(v) for v in value], dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise SolverError(f"grid= must be a grid kind ({', '.join(GRIDS)}) or a sequence of times: {err}") from err
    if times.ndim != 1 or times.numel() < 2 or not bool(torch.isfinite(times).all()):
        raise SolverError(f"grid= times must be a 1-D sequence of >= 2 finite times, got shape {tuple(times.shape)}")
    if not bool((times[1:] < times[:-1]).all()):
        raise SolverError("grid= times must decrease strictly (sampling runs from the first time down to the last)")
    return times


def valid_grid(value: Any) -> bool:
    """Whether ``value`` is accepted by the ``grid`` option: None, a kind of :data:`GRIDS` or explicit times."""
    if value is None or isinstance(value, str):
        return value is None or value in GRIDS
    try:
        return explicit_times(value) is not None
    except SolverError:
        return False


def _explicit_part(times: torch.Tensor, t_start: float, t_end: float, n: int, solver: str) -> torch.Tensor:
    """The points of explicit ``times`` from ``t_start`` to ``t_end`` (both must be points of it), n + 1 of them."""
    hits = [torch.nonzero(times == float(v)).flatten() for v in (t_start, t_end)]
    if any(h.numel() == 0 for h in hits):
        raise SolverError(
            f"{solver}: the run from t = {t_start:g} to {t_end:g} does not start and end on points of the explicit "
            f"grid= ({times.numel()} times from {float(times[0]):g} to {float(times[-1]):g})"
        )
    i, j = int(hits[0][0]), int(hits[1][0])
    if j - i != n:
        raise SolverError(f"{solver}: the explicit grid has {j - i} steps from t = {t_start:g} to {t_end:g}, not {n}")
    return times[i : j + 1].clone()


def _scalar_marginal(sde: SDE) -> bool:
    """Whether ``sde`` has the scalar marginal (alpha, sigma, log-SNR) the non-uniform grids are defined by: affine
    and not a k-component SDE (whose k x k marginal has no single log-SNR)."""
    return sde.is_affine and sde.components is None


def resolve_grid(sde: SDE, requested: Any, default: str, solver: str) -> str:
    """The grid kind to use: ``requested`` (validated) or the solver's ``default``; ``"explicit"`` for times.

    A non-uniform *default* falls back to ``"uniform"`` for a non-affine SDE (no marginal); an
    explicitly requested non-uniform grid on a non-affine SDE raises :class:`SolverError`.
    """
    if explicit_times(requested) is not None:
        return "explicit"
    if requested is None:
        return default if _has_grid(sde, default) else "uniform"
    if requested not in GRIDS:
        raise SolverError(f"{solver}: unknown grid {requested!r}; choose one of {', '.join(GRIDS)}")
    if not _has_grid(sde, requested):
        which = "an affine SDE" if requested in COMPONENT_GRIDS else "a scalar affine SDE"
        choices = "'uniform', 'quadratic' or 'logsnr'" if sde.is_affine else "'uniform' or 'quadratic'"
        raise SolverError(
            f"{solver}: grid={requested!r} needs the Gaussian marginal of {which}; {sde!r} is not one "
            f"(use grid={choices})"
        )
    return requested


def _has_grid(sde: SDE, kind: str) -> bool:
    """Whether the grid ``kind`` is defined for ``sde`` (every kind for a scalar affine SDE; uniform, quadratic and
    the generalized log-SNR for an affine k-component one; uniform and quadratic otherwise)."""
    if kind in MARGINAL_FREE or _scalar_marginal(sde):
        return True
    return kind in COMPONENT_GRIDS and sde.is_affine


def grid_order(solver: Solver, sde: SDE | None = None, options: Mapping[str, Any] | None = None) -> int:
    """The order p the ``"optimized"`` grid is shaped for: :meth:`Solver.grid_order` of ``solver`` with the run's
    ``options`` (None: the solver's defaults), i.e. the order the run actually has (``unipc``: its ``order`` option,
    plus one with the corrector; the exponential integrators: their ``order``; else the weak order)."""
    if options is None:
        options = solver.accepted_options()
    return solver.grid_order(options, sde)


def solver_time_grid(
    sde: SDE, t_start: float, t_end: float, n: int, solver: Solver, options: Mapping[str, Any]
) -> torch.Tensor:
    """:func:`time_grid` of a solver's run: kind from ``options["grid"]`` or ``solver.grid``
    (:func:`resolve_grid`), ``rho`` and ``data_std`` from ``options``, ``order`` from :func:`grid_order` (with the
    run's options); explicit times in ``options["grid"]``: their points from ``t_start`` to ``t_end`` (n + 1 of
    them, else SolverError)."""
    explicit = explicit_times(options.get("grid"))
    if explicit is not None:
        return _explicit_part(explicit, t_start, t_end, n, solver.name)
    kind = resolve_grid(sde, options.get("grid"), solver.grid, solver.name)
    return time_grid(
        sde, t_start, t_end, n, kind, rho=options.get("rho", 7.0), order=grid_order(solver, sde, options),
        data_std=options.get("data_std", 1.0), max_step=solver.grid_max_step,
    )  # fmt: skip
