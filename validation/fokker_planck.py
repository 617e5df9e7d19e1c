r"""A numeric Fokker–Planck solver for any 1-D SDE declared with sdekit (affine or not).

For :math:`dx = f(x, t)\,dt + g(x, t)\,dW` the density :math:`p(x, t)` solves

.. math::
    \partial_t p = -\partial_x J, \qquad J = A\,p - D\,\partial_x p, \qquad
    D = \tfrac12 g^2, \quad A = f - \partial_x D ,

which is :math:`\partial_t p = -\partial_x(f p) + \tfrac12\partial_x^2(g^2 p)` written in flux
form. :math:`f`, :math:`g^2` and :math:`\partial_x g^2` are the SDE's own symbolic expressions
(``sde.f``, ``sde.g``, ``sde.dg2_dx``), compiled with sdekit's numpy code generator: nothing is
written per SDE.

Space: finite volumes on a uniform grid of ``cells`` cells on ``domain = (lo, hi)`` with zero
flux through both ends (the domain must be wide enough for the density to be negligible there).
The flux through the interface :math:`x_{i+1/2}` between cells i and i+1 is Scharfetter–Gummel's
exponentially fitted flux (the member of the Chang–Cooper family that is exact when A and D are
constant on the cell pair),

.. math::
    J_{i+1/2} = \frac{D}{h}\Big[B(-\mathrm{Pe})\,p_i - B(\mathrm{Pe})\,p_{i+1}\Big], \qquad
    \mathrm{Pe} = \frac{A h}{D}, \qquad B(z) = \frac{z}{e^z - 1},

with A, D evaluated at :math:`x_{i+1/2}` (upwind flux where D = 0). The semi-discrete system
:math:`\dot p = L(t) p` has a tridiagonal :math:`L` whose off-diagonal entries are >= 0 and whose
columns sum to zero, so mass is conserved to round-off and :math:`I - \theta\,\Delta t\,L` is an
M-matrix (positivity of implicit steps). The scheme is second order in h; its zero-flux
stationary state, :math:`p_{i+1}/p_i = e^{\mathrm{Pe}_i}`, is exact for piecewise-constant A/D.

Time: Crank–Nicolson (``method="cn"``, second order) with a Rannacher start (the first step as
two backward-Euler half steps, which damps the stiff modes CN does not damp), or backward Euler
(``method="euler"``, first order, unconditionally positive). Each step solves one tridiagonal
system (``scipy.linalg.solve_banded``); :meth:`FokkerPlanck1D.operator` returns :math:`L(t)` as a
``scipy.sparse`` matrix. Time-independent coefficients are assembled once.

Example::

    sde = sdekit.SDE.from_expressions("x - x**3", "sqrt(1 + x**2)")
    fp = FokkerPlanck1D(sde, domain=(-4, 4), cells=800)
    sol = fp.solve(lambda x: np.exp(-x**2 / 0.18) / np.sqrt(0.18 * np.pi), times=[0.0, 0.5, 1.0])
    sol.density(2)          # cell averages of p at t = 1
    score = sol.score_model()   # torch score(x, t) = d/dx log p, interpolated in x and t
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg
import scipy.sparse
import torch

from sdekit.compile import compile_expr
from sdekit.symbolic._symbols import t as T_SYM
from sdekit.symbolic._symbols import x as X_SYM

if TYPE_CHECKING:  # pragma: no cover
    from sdekit import SDE

__all__ = ["FokkerPlanck1D", "FPSolution", "FPScore", "cell_averages"]

# 3-point Gauss-Legendre rule on [-1/2, 1/2] (exact for polynomials of degree 5).
_GL_NODES = np.array([-math.sqrt(3 / 5) / 2, 0.0, math.sqrt(3 / 5) / 2])
_GL_WEIGHTS = np.array([5 / 18, 8 / 18, 5 / 18])


def _bernoulli(z: np.ndarray) -> np.ndarray:
    """B(z) = z / (e^z - 1), with B(0) = 1; finite for every z (B(z) -> 0 for z -> +inf)."""
    z = np.asarray(z, dtype=float)
    out = np.ones_like(z)
    nz = np.abs(z) > 1e-12
    with np.errstate(over="ignore"):
        out[nz] = z[nz] / np.expm1(z[nz])
    return out


def cell_averages(pdf: Callable[[np.ndarray], np.ndarray], edges: np.ndarray) -> np.ndarray:
    r"""Cell averages :math:`\frac1h\int_{cell} p` of a vectorised density (3-point Gauss–Legendre, O(h^6))."""
    edges = np.asarray(edges, dtype=float)
    centers = 0.5 * (edges[1:] + edges[:-1])
    widths = np.diff(edges)
    pts = centers[:, None] + widths[:, None] * _GL_NODES[None, :]
    vals = np.asarray(pdf(pts), dtype=float).reshape(pts.shape)
    return vals @ _GL_WEIGHTS


class FokkerPlanck1D:
    r"""Finite-volume Fokker–Planck solver for a 1-D SDE :math:`dx = f\,dt + g\,dW` (see the module docstring).

    Args:
        sde: any :class:`sdekit.SDE` (acting on a scalar coordinate; affine or not).
        domain: ``(lo, hi)``, wide enough for the density to be negligible at both ends (zero-flux walls).
        cells: number of finite-volume cells (uniform width ``h = (hi - lo) / cells``).

    Raises:
        TypeError: ``sde`` is not an :class:`sdekit.SDE`.
        ValueError: bad ``domain`` or ``cells``.
    """

    def __init__(self, sde: SDE, domain: tuple[float, float], cells: int = 800) -> None:
        from sdekit import SDE as _SDE

        if not isinstance(sde, _SDE):
            raise TypeError(f"sde must be an sdekit.SDE instance, got {type(sde).__name__}")
        try:
            lo, hi = (float(v) for v in domain)
        except (TypeError, ValueError) as err:
            raise ValueError(f"domain must be a pair (lo, hi) of numbers, got {domain!r}") from err
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"domain must satisfy lo < hi (both finite), got {domain!r}")
        if isinstance(cells, bool) or not isinstance(cells, int) or cells < 3:
            raise ValueError(f"cells must be an integer >= 3, got {cells!r}")
        self.sde = sde
        self.domain = (lo, hi)
        self.cells = cells
        self.edges = np.linspace(lo, hi, cells + 1)
        self.h = (hi - lo) / cells
        self.centers = 0.5 * (self.edges[1:] + self.edges[:-1])
        self._faces = self.edges[1:-1]  # interior interfaces x_{i+1/2}, i = 0..cells-2
        f = sde.subs(sde.f)
        g2 = sde.subs(sde.g**2)
        dg2 = sde.subs(sde.dg2_dx)
        self._f = compile_expr(f, X_SYM, T_SYM)
        self._g2 = compile_expr(g2, X_SYM, T_SYM)
        self._dg2 = compile_expr(dg2, X_SYM, T_SYM)
        self.time_dependent = any(T_SYM in e.free_symbols for e in (f, g2, dg2))
        self._static: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ spatial operator
    def _face_coefficients(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) with J_{i+1/2} = a_i p_i - b_i p_{i+1} (both >= 0)."""
        if self._static is not None:
            return self._static
        x = self._faces
        D = 0.5 * self._g2.numpy(x, t)
        A = self._f.numpy(x, t) - 0.5 * self._dg2.numpy(x, t)
        if not (np.all(np.isfinite(D)) and np.all(np.isfinite(A))):
            raise ValueError(
                f"f or g^2 of {self.sde!r} is not finite on the domain {self.domain} at t = {t:g}; shrink the "
                f"domain or move away from the singular time"
            )
        if np.any(D < 0):  # pragma: no cover - g^2 >= 0 up to round-off
            D = np.maximum(D, 0.0)
        h = self.h
        pos = D > 1e-300
        a = np.where(A > 0, A, 0.0)  # upwind where D = 0
        b = np.where(A < 0, -A, 0.0)
        Dp = D[pos]
        pe = A[pos] * h / Dp
        a[pos] = Dp / h * _bernoulli(-pe)
        b[pos] = Dp / h * _bernoulli(pe)
        if not self.time_dependent:
            self._static = (a, b)
        return a, b

    def _bands(self, t: float) -> np.ndarray:
        """L(t) in LAPACK banded storage (3, cells): rows = upper, diagonal, lower."""
        a, b = self._face_coefficients(t)
        h = self.h
        ab = np.zeros((3, self.cells))
        ab[0, 1:] = b / h  # L[i, i+1]
        ab[2, :-1] = a / h  # L[i+1, i]
        ab[1, :-1] -= a / h
        ab[1, 1:] -= b / h
        return ab

    def operator(self, t: float = 0.0) -> scipy.sparse.csr_matrix:
        r"""The semi-discrete generator :math:`L(t)` (``dp/dt = L p``) as a sparse tridiagonal matrix."""
        ab = self._bands(float(t))
        return scipy.sparse.diags([ab[2, :-1], ab[1], ab[0, 1:]], [-1, 0, 1], format="csr")

    def flux(self, p: np.ndarray, t: float) -> np.ndarray:
        """Numerical fluxes J at the ``cells + 1`` interfaces (zero at both walls)."""
        a, b = self._face_coefficients(float(t))
        J = np.zeros(self.cells + 1)
        J[1:-1] = a * p[:-1] - b * p[1:]
        return J

    # ------------------------------------------------------------------ initial data
    def discretize(self, p0: Callable[[np.ndarray], np.ndarray] | np.ndarray) -> np.ndarray:
        """Cell averages of ``p0`` (a vectorised density, or an array of ``cells`` values), normalised to mass 1."""
        if callable(p0):
            p = cell_averages(p0, self.edges)
        else:
            p = np.asarray(p0, dtype=float)
            if p.shape != (self.cells,):
                raise ValueError(f"p0 must be a callable density or an array of shape ({self.cells},), got {p.shape}")
        if not np.all(np.isfinite(p)) or np.any(p < 0):
            raise ValueError("p0 must be finite and non-negative on the domain")
        mass = p.sum() * self.h
        if not mass > 0:
            raise ValueError(f"p0 has no mass on the domain {self.domain}; widen the domain or move p0")
        return p / mass

    def stationary(self, t: float = 0.0) -> np.ndarray:
        r"""The discrete zero-flux state of :math:`L(t)`: :math:`p_{i+1}/p_i = a_i/b_i = e^{\mathrm{Pe}_i}`, mass 1.

        Raises:
            ValueError: D vanishes at an interface (no unique stationary density).
        """
        a, b = self._face_coefficients(float(t))
        if np.any(a <= 0) or np.any(b <= 0):
            raise ValueError("the diffusion vanishes somewhere on the domain: no unique zero-flux stationary density")
        logp = np.concatenate([[0.0], np.cumsum(np.log(a) - np.log(b))])
        p = np.exp(logp - logp.max())
        return p / (p.sum() * self.h)

    # ------------------------------------------------------------------ time stepping
    def solve(
        self,
        p0: Callable[[np.ndarray], np.ndarray] | np.ndarray,
        times: Sequence[float],
        dt: float | None = None,
        method: str = "cn",
    ) -> FPSolution:
        r"""Integrate :math:`\dot p = L(t) p` from ``times[0]`` and return the densities at every time in ``times``.

        Args:
            p0: density at ``times[0]``: a vectorised callable ``p0(x)`` (numpy) or ``cells`` cell averages.
            times: increasing output times (the first one is the initial time).
            dt: largest time step (default: ``(times[-1] - times[0]) / 1000``); each interval between two
                output times is split into equal steps no longer than ``dt``.
            method: ``"cn"`` (Crank–Nicolson, Rannacher start; second order) or ``"euler"`` (backward Euler;
                first order, unconditionally positivity preserving).

        Returns:
            An :class:`FPSolution`.
        """
        times = np.asarray(times, dtype=float).reshape(-1)
        if times.size < 1 or not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
            raise ValueError(f"times must be a non-empty, strictly increasing sequence of finite numbers, got {times}")
        if method not in ("cn", "euler"):
            raise ValueError(f"method must be 'cn' (Crank-Nicolson) or 'euler' (backward Euler), got {method!r}")
        span = times[-1] - times[0]
        if dt is None:
            dt = span / 1000 if span > 0 else 1.0
        if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not (dt > 0 and math.isfinite(dt)):
            raise ValueError(f"dt must be a positive number, got {dt!r}")
        p = self.discretize(p0)
        out = np.empty((times.size, self.cells))
        out[0] = p
        started = False
        for k in range(1, times.size):
            t0, t1 = times[k - 1], times[k]
            n = max(1, math.ceil((t1 - t0) / dt - 1e-9))
            grid = np.linspace(t0, t1, n + 1)
            for j in range(n):
                if method == "euler":
                    p = self._theta_step(p, grid[j], grid[j + 1], 1.0)
                elif not started:  # Rannacher start: two backward-Euler half steps
                    mid = 0.5 * (grid[j] + grid[j + 1])
                    p = self._theta_step(self._theta_step(p, grid[j], mid, 1.0), mid, grid[j + 1], 1.0)
                else:
                    p = self._theta_step(p, grid[j], grid[j + 1], 0.5)
                started = True
            out[k] = p
        return FPSolution(self, times, out)

    def _theta_step(self, p: np.ndarray, t0: float, t1: float, theta: float) -> np.ndarray:
        """(I - theta dt L(t1)) p_new = (I + (1 - theta) dt L(t0)) p."""
        dt = t1 - t0
        rhs = p
        if theta < 1.0:
            ab0 = self._bands(t0)
            Lp = ab0[1] * p
            Lp[:-1] += ab0[0, 1:] * p[1:]
            Lp[1:] += ab0[2, :-1] * p[:-1]
            rhs = p + (1.0 - theta) * dt * Lp
        ab = -theta * dt * self._bands(t1)
        ab[1] += 1.0
        return scipy.linalg.solve_banded((1, 1), ab, rhs, check_finite=False)


class FPSolution:
    """Densities of a :meth:`FokkerPlanck1D.solve` run: ``p[k]`` holds the cell averages at ``times[k]``.

    Attributes:
        solver: the :class:`FokkerPlanck1D` that produced it (grid in ``solver.edges``/``solver.centers``).
        times: output times, shape (K,).
        p: cell averages, shape (K, cells); each row has mass 1 (``p[k].sum() * h``).
    """

    def __init__(self, solver: FokkerPlanck1D, times: np.ndarray, p: np.ndarray) -> None:
        self.solver = solver
        self.times = times
        self.p = p

    def index(self, t: float) -> int:
        """Index of the output time equal to ``t`` (to 1e-9 relative)."""
        k = int(np.argmin(np.abs(self.times - t)))
        if abs(self.times[k] - t) > 1e-9 * max(1.0, abs(t)):
            raise ValueError(f"t = {t} is not an output time; solve with it in times (have {self.times})")
        return k

    def density(self, k: int) -> np.ndarray:
        """Cell averages of p at ``times[k]``."""
        return self.p[k]

    def mass(self, k: int) -> float:
        """Total mass at ``times[k]`` (1 up to round-off)."""
        return float(self.p[k].sum() * self.solver.h)

    def l1(self, k: int, pdf: Callable[[np.ndarray], np.ndarray], tail_mass: float = 0.0) -> float:
        r"""L1 distance :math:`\int|p_h - p|` to an exact density, cell average against cell average.

        ``tail_mass`` is the exact law's mass outside the domain (added: p_h is 0 there).
        """
        exact = cell_averages(pdf, self.solver.edges)
        return float(np.abs(self.p[k] - exact).sum() * self.solver.h + tail_mass)

    def cdf(self, x: np.ndarray, k: int) -> np.ndarray:
        """CDF at ``times[k]`` of the piecewise-constant density (linear within a cell; 0 / 1 outside)."""
        s = self.solver
        cum = np.concatenate([[0.0], np.cumsum(self.p[k]) * s.h])
        cum /= cum[-1]
        return np.interp(np.asarray(x, dtype=float), s.edges, cum)

    def bin_probabilities(self, bin_edges: np.ndarray, k: int) -> np.ndarray:
        """Probabilities of the bins ``[e_j, e_{j+1})`` at ``times[k]`` (first/last bins take the tails)."""
        c = self.cdf(bin_edges, k)
        c[0], c[-1] = 0.0, 1.0
        return np.diff(c)

    def score_model(self, floor: float = 1e-10, dtype: torch.dtype = torch.float64) -> FPScore:
        r"""A torch score model :math:`s(x, t) = \partial_x \log p(x, t)` interpolated from the stored densities.

        See :class:`FPScore`. Store many output times (e.g. ``times = linspace(0, T, 401)``): the score is
        interpolated linearly between them.
        """
        return FPScore(self, floor=floor, dtype=dtype)


class FPScore:
    r"""Numeric score :math:`\partial_x \log p(x, t)` of an :class:`FPSolution`, as a torch model ``score(x, t)``.

    At the interior interfaces :math:`s_{i+1/2} = (\log p_{i+1} - \log p_i)/h` (second order). Where the
    density is below ``floor`` times its maximum (the far tails, where the discrete density carries round-off
    rather than information), the score is replaced by its value at the nearest reliable interface; outside
    the domain likewise. Values are interpolated bilinearly in x (between interfaces) and t (between stored
    output times) with torch ops only: no host synchronisation, dtype/device follow ``x``. A non-finite
    ``x`` gets a NaN score.

    Args:
        solution: the FP solution.
        floor: relative density below which the score is extrapolated (constant) from the reliable region.
        dtype: dtype of the stored table (cast to ``x``'s dtype/device on first use per dtype/device).
    """

    def __init__(self, solution: FPSolution, floor: float = 1e-10, dtype: torch.dtype = torch.float64) -> None:
        if solution.times.size < 2:
            raise ValueError("the score needs at least two output times; solve with more times")
        s = solution.solver
        p = solution.p
        logp = np.log(np.maximum(p, 1e-300))
        table = np.diff(logp, axis=1) / s.h  # (K, cells - 1) at interfaces
        for k in range(p.shape[0]):
            ok = (p[k, :-1] > floor * p[k].max()) & (p[k, 1:] > floor * p[k].max())
            idx = np.flatnonzero(ok)
            if idx.size == 0:
                raise ValueError(f"density at t = {solution.times[k]} is below the floor everywhere")
            lo, hi = idx[0], idx[-1]
            table[k, :lo] = table[k, lo]
            table[k, hi + 1 :] = table[k, hi]
        self.times = solution.times
        self.x0 = float(s._faces[0])
        self.h = s.h
        self.t0 = float(solution.times[0])
        self._uniform_t = bool(np.allclose(np.diff(solution.times), solution.times[1] - solution.times[0]))
        self.dt = float(solution.times[1] - solution.times[0])
        self._table = torch.as_tensor(table, dtype=dtype)
        self._times = torch.as_tensor(solution.times, dtype=dtype)
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _on(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = (
                self._table.to(dtype=like.dtype, device=like.device),
                self._times.to(dtype=like.dtype, device=like.device),
            )
        return self._cache[key]

    def __call__(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Score at x (any shape (batch, ...)) and forward time t (number, 0-d or (batch,) tensor)."""
        table, times = self._on(x)
        K, M = table.shape
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim == 1 and x.ndim > 1:
            t = t.reshape(-1, *([1] * (x.ndim - 1)))
        t = t.expand(x.shape)
        if self._uniform_t:
            u = (t - self.t0) / self.dt
        else:  # pragma: no cover - non-uniform output times
            j = torch.searchsorted(times, t.contiguous()).clamp(1, K - 1)
            u = (j - 1) + (t - times[j - 1]) / (times[j] - times[j - 1])
        u = u.clamp(0, K - 1)
        j0 = u.floor().clamp(max=K - 2).long()
        wt = u - j0
        v = torch.nan_to_num((x - self.x0) / self.h, nan=0.0).clamp(0, M - 1)  # indices stay valid for NaN x
        i0 = v.floor().clamp(max=M - 2).long()
        wx = v - i0
        flat = table.reshape(-1)

        def at(j: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            return flat[j * M + i]

        s0 = at(j0, i0) * (1 - wx) + at(j0, i0 + 1) * wx
        s1 = at(j0 + 1, i0) * (1 - wx) + at(j0 + 1, i0 + 1) * wx
        # x - x is NaN where x is NaN or infinite: a diverged state gets a NaN score (the sampler reports it).
        return s0 * (1 - wt) + s1 * wt + (x - x)
