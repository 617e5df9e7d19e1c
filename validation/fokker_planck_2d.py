r"""A numeric Fokker–Planck solver for 2-component SDEs declared with sdekit (coupled, affine or not).

For :math:`dX = f(X, t)\,dt + G(X, t)\,dW` with :math:`X = (x_1, x_2)` and a diagonal :math:`D = GG^\top`
(degenerate allowed: CLD-like systems inject noise into one component only) the density solves

.. math::
    \partial_t p = -\partial_1 J_1 - \partial_2 J_2, \qquad
    J_i = a_i\,p - d_i\,\partial_i p, \qquad d_i = \tfrac12 D_{ii}, \quad a_i = f_i - \partial_i d_i ,

which is :math:`\partial_t p = -\sum_i\partial_i(f_ip) + \tfrac12\sum_i\partial_i^2(D_{ii}p)` in flux form.
The coefficients come from the SDE's declared sympy expressions (``sde.f``, ``sde.g``), turned into numpy
functions with ``sympy.lambdify``: nothing of sdekit's compiled code, marginals or solvers is used, so the
solution is an independent answer for ``sdekit.simulate``.

Space: finite volumes on a uniform ``cells[0] x cells[1]`` grid of ``domain = ((lo1, hi1), (lo2, hi2))`` with
zero flux through the walls (the domain must be wide enough for the density to be negligible there). The flux
through a face is central, :math:`J = a\,(p_L + p_R)/2 - d\,(p_R - p_L)/h` with :math:`a, d` at the face
centre: second order in h, mass conserved to round-off (every flux leaves one cell and enters its neighbour).
A central flux is used, not the 1-D solver's exponentially fitted one, because a component without noise
(:math:`d = 0`, pure transport) would make the fitted flux upwind, first order. Central fluxes do not guarantee
positivity; the check measures the discretisation error by grid refinement instead of assuming a sign.

Time: Crank–Nicolson with a Rannacher start (the first step as two backward-Euler half steps, which damps the
stiff modes CN does not); both use the matrix :math:`I - \tfrac{\Delta t}2 L`, factored once
(``scipy.sparse.linalg.splu``) when the coefficients do not depend on t.

Example::

    fp = FokkerPlanck2D(Duffing(), domain=((-3.5, 3.5), (-5, 5)), cells=(160, 160))
    sol = fp.solve(mean=(0.2, 0.0), std=(0.3, 0.3), T=1.0, dt=0.01)
    sol.moments()            # E x1, E x2, E x1^2, E x2^2, E x1 x2
    sol.cdf(0, edges)        # marginal CDF of x1 at points
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import sympy as sp
from scipy.special import erf

from sdekit.symbolic._symbols import t as T_SYM

if TYPE_CHECKING:  # pragma: no cover
    from sdekit import SDE

__all__ = ["FokkerPlanck2D", "FP2DSolution", "MOMENT_NAMES"]

MOMENT_NAMES = ("E x1", "E x2", "E x1^2", "E x2^2", "E x1 x2")


def _gauss_cell_mass(edges: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Exact probability of each cell under N(mean, std^2) (erf differences)."""
    cdf = 0.5 * (1 + erf((edges - mean) / (std * math.sqrt(2))))
    return np.diff(cdf)


@dataclasses.dataclass
class FP2DSolution:
    """Cell probabilities ``mass[i, j]`` (sum 1) at time ``T`` on the grid ``edges = (edges1, edges2)``."""

    mass: np.ndarray
    edges: tuple[np.ndarray, np.ndarray]
    T: float

    @property
    def centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell centres along each axis."""
        return tuple(0.5 * (e[1:] + e[:-1]) for e in self.edges)  # type: ignore[return-value]

    def moments(self) -> np.ndarray:
        r""":data:`MOMENT_NAMES`: :math:`E x_1, E x_2, E x_1^2, E x_2^2, E x_1x_2`; cell averages of a linear
        function are exact, of :math:`x_i^2` the centre value plus :math:`h_i^2/12` (the cell's own variance)."""
        c1, c2 = self.centers
        h1, h2 = (float(e[1] - e[0]) for e in self.edges)
        m1, m2 = self.mass.sum(1), self.mass.sum(0)
        return np.array(
            [
                m1 @ c1,
                m2 @ c2,
                m1 @ (c1**2 + h1**2 / 12),
                m2 @ (c2**2 + h2**2 / 12),
                c1 @ self.mass @ c2,
            ]
        )

    def cdf(self, axis: int, points: np.ndarray) -> np.ndarray:
        """The marginal CDF of component ``axis`` at ``points`` (piecewise linear between cell edges)."""
        marginal = self.mass.sum(1 - axis)
        at_edges = np.concatenate([[0.0], np.cumsum(marginal)])
        return np.interp(points, self.edges[axis], at_edges)

    def cdf_interpolation_error(self, axis: int) -> float:
        """A bound on the error of the piecewise-linear CDF inside a cell: the CDF's slope changes by at most the
        difference of neighbouring cell masses across a cell, so the chord is off by at most a quarter of it."""
        marginal = self.mass.sum(1 - axis)
        return float(np.abs(np.diff(marginal)).max() / 4)

    def edge_cdf(self, axis: int) -> np.ndarray:
        """The marginal CDF of component ``axis`` at the cell edges."""
        return np.concatenate([[0.0], np.cumsum(self.mass.sum(1 - axis))])

    def boundary_mass(self) -> float:
        """Probability in the outermost ring of cells (must be negligible: the walls are zero-flux)."""
        m = self.mass
        return float(m[0].sum() + m[-1].sum() + m[1:-1, 0].sum() + m[1:-1, -1].sum())


class FokkerPlanck2D:
    """Finite-volume Fokker–Planck solver for a 2-component SDE with diagonal :math:`GG^\\top` (module docstring).

    Args:
        sde: a 2-component :class:`sdekit.SDE` whose :math:`GG^\\top` is diagonal.
        domain: ``((lo1, hi1), (lo2, hi2))``, wide enough for the density to be negligible at the walls.
        cells: ``(n1, n2)`` cells per axis.

    Raises:
        ValueError: not a 2-component SDE, :math:`GG^\\top` not diagonal, or a bad domain / cell count.
    """

    def __init__(self, sde: SDE, domain: tuple[tuple[float, float], tuple[float, float]], cells: tuple[int, int]):
        state = tuple(getattr(sde, "state_symbols", ()))
        if len(state) != 2:
            raise ValueError(f"FokkerPlanck2D needs a 2-component SDE, got {type(sde).__name__}")
        D = (sde.g * sde.g.T).applyfunc(sde.subs)
        if sp.simplify(D[0, 1]) != 0:
            raise ValueError(f"FokkerPlanck2D needs a diagonal G G^T; {type(sde).__name__} has D_12 = {D[0, 1]}")
        if any(int(n) < 3 for n in cells) or any(not lo < hi for lo, hi in domain):
            raise ValueError(f"need cells >= 3 and lo < hi on both axes, got domain {domain}, cells {cells}")
        self.domain, self.cells = domain, (int(cells[0]), int(cells[1]))
        self.edges = tuple(np.linspace(lo, hi, n + 1) for (lo, hi), n in zip(domain, self.cells, strict=True))
        self.h = tuple(float(e[1] - e[0]) for e in self.edges)
        f = [sde.subs(e) for e in sde.f]
        d = [D[i, i] / 2 for i in range(2)]
        a = [f[i] - sp.diff(d[i], state[i]) for i in range(2)]
        self._coef = [self._fn(e, state) for e in (*a, *d)]
        self.time_dependent = any(T_SYM in sp.sympify(e).free_symbols for e in (*a, *d))

    @staticmethod
    def _fn(expr: sp.Expr, state: tuple) -> Callable[[np.ndarray, np.ndarray, float], np.ndarray]:
        fn = sp.lambdify((*state, T_SYM), expr, modules="numpy")
        return lambda x1, x2, t: np.broadcast_to(np.asarray(fn(x1, x2, t), dtype=float), np.broadcast(x1, x2).shape)

    def operator(self, t: float) -> scipy.sparse.csc_matrix:
        r"""The semi-discrete operator :math:`L(t)` of :math:`\dot p = L p` (p: cell averages, flattened C-order)."""
        n1, n2 = self.cells
        c1, c2 = (0.5 * (e[1:] + e[:-1]) for e in self.edges)
        idx = np.arange(n1 * n2).reshape(n1, n2)
        rows, cols, vals = [], [], []
        faces = (
            (0, self.edges[0][1:-1][:, None], c2[None, :], idx[:-1, :], idx[1:, :]),
            (1, c1[:, None], self.edges[1][1:-1][None, :], idx[:, :-1], idx[:, 1:]),
        )
        for axis, x1, x2, left, right in faces:
            h = self.h[axis]
            a = self._coef[axis](x1, x2, t)
            d = self._coef[2 + axis](x1, x2, t)
            # J = wl p_L + wr p_R through the face; dp_L/dt -= J / h, dp_R/dt += J / h
            wl, wr = (a / 2 + d / h).ravel(), (a / 2 - d / h).ravel()
            left, right = left.ravel(), right.ravel()
            for r, c, v in ((left, left, -wl), (left, right, -wr), (right, left, wl), (right, right, wr)):
                rows.append(r)
                cols.append(c)
                vals.append(v / h)
        L = scipy.sparse.coo_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n1 * n2, n1 * n2)
        )
        return L.tocsc()

    def initial(self, mean: tuple[float, float], std: tuple[float, float]) -> np.ndarray:
        """Cell probabilities of :math:`N(\\text{mean}, \\mathrm{diag}(\\text{std}^2))` (exact, erf products)."""
        m1 = _gauss_cell_mass(self.edges[0], mean[0], std[0])
        m2 = _gauss_cell_mass(self.edges[1], mean[1], std[1])
        return np.outer(m1, m2)

    def solve(self, mean: tuple[float, float], std: tuple[float, float], T: float, dt: float) -> FP2DSolution:
        """Evolve the Gaussian :meth:`initial` density from t = 0 to ``T`` with steps of about ``dt``."""
        steps = max(2, math.ceil(T / dt))
        dt = T / steps
        p = self.initial(mean, std).ravel() / (self.h[0] * self.h[1])  # densities (cell averages)
        eye = scipy.sparse.identity(p.size, format="csc")
        cache: dict[str, Any] = {}

        def factor(t: float) -> tuple[Any, Any]:
            if self.time_dependent or "lu" not in cache:
                L = self.operator(t)
                cache["lu"], cache["L"] = scipy.sparse.linalg.splu((eye - dt / 2 * L).tocsc()), L
            return cache["lu"], cache["L"]

        lu, _ = factor(dt / 4)
        p = lu.solve(lu.solve(p))  # Rannacher start: two backward-Euler half steps
        for n in range(1, steps):
            lu, L = factor((n + 0.5) * dt)
            p = lu.solve(p + dt / 2 * (L @ p))
        mass = p.reshape(self.cells) * (self.h[0] * self.h[1])
        return FP2DSolution(mass, self.edges, float(T))  # type: ignore[arg-type]
