r"""Time grids shared by every fixed-step solver (native, exponential, torchsde, torchdiffeq).

A grid is a decreasing float64 CPU tensor :math:`t_0 = t_{\rm start} > t_1 > \dots > t_n = t_{\rm end}`
with exact endpoints. Kinds:

* ``"uniform"``: uniform in t.
* ``"logsnr"``: uniform in the half log-SNR :math:`\lambda(t) = \log\alpha(t) - \log\sigma(t)`
  (DPM-Solver's grid; geometric noise levels for VE/EDM). Affine SDEs.
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

Grids in :math:`\lambda` or :math:`r` are mapped back to t by inverting the strictly monotone
:math:`\lambda(t)` (vectorised bisection in float64), so every affine SDE — VP, VE, sub-VP, EDM,
cosine, or a user's — gets them without a per-SDE formula.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ..errors import SolverError

if TYPE_CHECKING:  # pragma: no cover
    from .._marginal import GaussianMarginal
    from ..symbolic.sde import SDE

__all__ = ["ARCTAN_EXPONENT", "GRIDS", "log_snr", "t_of_log_snr", "time_grid", "resolve_grid"]

ARCTAN_EXPONENT = 3.0
"""The exponent :math:`q` of the ``"arctan"`` grid, uniform in :math:`\arctan r^{1/q}` (see the module docstring)."""

GRIDS: tuple[str, ...] = ("uniform", "logsnr", "edm", "arctan")
"""Grid kinds accepted by the ``grid=`` option of every fixed-step solver."""


def log_snr(marginal: GaussianMarginal, t: torch.Tensor) -> torch.Tensor:
    r"""Half log-SNR :math:`\lambda(t) = \log\alpha(t) - \log\sigma(t)`: :meth:`GaussianMarginal.log_snr`."""
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


def time_grid(sde: SDE, t_start: float, t_end: float, n: int, kind: str = "uniform", rho: float = 7.0) -> torch.Tensor:
    r"""Grid of ``n + 1`` float64 CPU times from ``t_start`` to ``t_end`` (endpoints exact; see the module docstring).

    Works in either direction (``t_start > t_end`` for sampling). ``rho`` is the exponent of ``kind="edm"``
    (the other kinds ignore it).
    """
    if kind not in GRIDS:
        raise SolverError(f"unknown grid {kind!r}; choose one of {', '.join(GRIDS)}")
    if kind == "uniform":
        times = torch.linspace(float(t_start), float(t_end), n + 1, dtype=torch.float64)
    else:
        marginal = sde.marginal
        ends = log_snr(marginal, torch.tensor([float(t_start), float(t_end)], dtype=torch.float64))
        if kind == "logsnr":
            lam = torch.linspace(float(ends[0]), float(ends[1]), n + 1, dtype=torch.float64)
        elif kind == "arctan":
            q = ARCTAN_EXPONENT
            u = torch.atan(torch.exp(-ends / q))  # arctan r^(1/q), r = exp(-lambda)
            lam = -q * torch.log(torch.tan(torch.linspace(float(u[0]), float(u[1]), n + 1, dtype=torch.float64)))
        else:
            if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not (math.isfinite(rho) and rho > 0):
                raise SolverError(f"rho must be a positive number (EDM uses 7), got {rho!r}")
            inv = (-ends / float(rho)).exp()  # r^(1/rho), r = exp(-lambda)
            lam = -float(rho) * torch.log(torch.linspace(float(inv[0]), float(inv[1]), n + 1, dtype=torch.float64))
        lo, hi = min(t_start, t_end), max(t_start, t_end)
        times = t_of_log_snr(marginal, lam, lo, hi)
    times[0], times[-1] = float(t_start), float(t_end)
    return times


def resolve_grid(sde: SDE, requested: Any, default: str, solver: str) -> str:
    """The grid kind to use: ``requested`` (validated) or the solver's ``default``.

    A non-uniform *default* falls back to ``"uniform"`` for a non-affine SDE (no marginal); an
    explicitly requested non-uniform grid on a non-affine SDE raises :class:`SolverError`.
    """
    if requested is None:
        return default if (default == "uniform" or sde.is_affine) else "uniform"
    if requested not in GRIDS:
        raise SolverError(f"{solver}: unknown grid {requested!r}; choose one of {', '.join(GRIDS)}")
    if requested != "uniform" and not sde.is_affine:
        raise SolverError(
            f"{solver}: grid={requested!r} needs the Gaussian marginal of an affine SDE; {sde!r} is not affine "
            f"(use grid='uniform')"
        )
    return requested
