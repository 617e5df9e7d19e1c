r"""Test problems of the k-component checks: torchsde's strong-order problems declared as ``sdekit.SDE``\ s, the
pathwise answers they are compared with, a grid Brownian motion shared by every step size, and the coupled
non-affine oscillator of the 2-D Fokker–Planck check.

**Strong-order problems** (k = 3 components at every event position; the declarations are sdekit's, the
problems torchsde's own, ``tests/problems.py`` of google-research/torchsde):

* :class:`GeneralNoise`: torchsde's ``Ex4`` (general noise, "constructed to test schemes for SDEs with general
  noise"), d = 3, m = 2: :math:`f_i = \sin y_i + t`,
  :math:`G_{ij} = c\,[0.2\cos(j\,y_i + 0.1t) + 0.1\cos(y_1 + y_2 + y_3)]`, a state-dependent,
  non-commutative 3 x 2 diffusion. torchsde's scale is c = 1; here c = :data:`GENERAL_SCALE` = 5, because at
  c = 1 the order-0.5 term (iterated integrals of two Brownian motions, :math:`\propto G\,\partial G`) is below the
  O(h) drift error at every step size a check can afford (measured slopes 0.93-0.97 for euler, heun and midpoint
  over h = 2^-2..2^-7: pre-asymptotic). No closed form: the answer is a fine-step run on the same path.
* :class:`AdditiveNoise`: torchsde's ``Ex3Additive``,
  :math:`dy_i = (b_i/\sqrt{1+t} - y_i/(2+2t))\,dt + a_ib_i/\sqrt{1+t}\,dW_i`, mixed by a constant invertible
  matrix R (:math:`Y = Ry`) so that the diffusion :math:`G = R\,\mathrm{diag}(a\circ b)/\sqrt{1+t}` is a full
  3 x 3 matrix (torchsde's is diagonal); pathwise
  :math:`Y_t = (Y_0 + R\,[b\circ(t + a\circ W_t)])/\sqrt{1+t}`.
* :class:`DiagonalNoise`: torchsde's ``Ex2``, :math:`dy_i = -p_i^2\sin y_i\cos^3 y_i\,dt + p_i\cos^2 y_i\,dW_i`,
  diagonal state-dependent noise; pathwise :math:`y_t = \arctan(p_i W_t + \tan y_0)`.

**Oscillator** (:class:`Duffing`): a stochastic double-well (Duffing) oscillator with friction
:math:`dx = v\,dt`, :math:`dv = (x - x^3 - \gamma v)\,dt + \sigma\,dW`, k = 2: non-affine drift, singular
(degenerate) diffusion, the same coupling structure as CLD.
"""

from __future__ import annotations

import math
from typing import Any

import sympy as sp
import torch
from torchsde import BaseBrownian

import sdekit

__all__ = [
    "GENERAL_SCALE",
    "AdditiveNoise",
    "DiagonalNoise",
    "Duffing",
    "GeneralNoise",
    "GridBrownian",
    "exact_solution",
    "strong_problem",
]

F64 = torch.float64
GENERAL_SCALE = 5
"""Factor on torchsde's ``Ex4`` diffusion (module docstring: at scale 1 the order-0.5 regime is out of reach)."""
_R = ((1, sp.Rational(1, 2), 0), (0, 1, sp.Rational(1, 2)), (sp.Rational(1, 2), 0, 1))
_A = (sp.Rational(1, 2), 1, sp.Rational(3, 2))
_B = (1, sp.Rational(1, 2), 1)
_P = (sp.Rational(1, 2), 1, sp.Rational(3, 2))


class GeneralNoise(sdekit.SDE):
    r"""torchsde's ``Ex4`` (d = 3, m = 2), diffusion scaled by :data:`GENERAL_SCALE`: general noise.

    .. math:: f_i = \sin y_i + t,\qquad G_{ij} = c\,[0.2\cos(j\,y_i + 0.1t) + 0.1\cos(y_1 + y_2 + y_3)],
        \quad j = 0, 1 .
    """

    components = ("y1", "y2", "y3")
    scale = GENERAL_SCALE

    def drift(self, y1, y2, y3, t):
        return tuple(sp.sin(y) + t for y in (y1, y2, y3))

    def diffusion(self, y1, y2, y3, t):
        common = sp.cos(y1 + y2 + y3) / 10
        return sp.Matrix([[self.scale * (sp.cos(j * y + t / 10) / 5 + common) for j in range(2)] for y in (y1, y2, y3)])


class AdditiveNoise(sdekit.SDE):
    r"""torchsde's ``Ex3Additive`` (d = 3) mixed by R: :math:`dY = (Rb/\sqrt{1+t} - Y/(2+2t))\,dt
    + R\,\mathrm{diag}(a\circ b)/\sqrt{1+t}\,dW`, a full 3 x 3 additive diffusion."""

    components = ("y1", "y2", "y3")

    def drift(self, y1, y2, y3, t):
        R, b = sp.Matrix(_R), sp.Matrix(_B)
        return tuple(R * b / sp.sqrt(1 + t) - sp.Matrix([y1, y2, y3]) / (2 + 2 * t))

    def diffusion(self, y1, y2, y3, t):
        return sp.Matrix(_R) * sp.diag(*[a * b for a, b in zip(_A, _B, strict=True)]) / sp.sqrt(1 + t)


class DiagonalNoise(sdekit.SDE):
    r"""torchsde's ``Ex2`` (d = 3): :math:`dy_i = -p_i^2\sin y_i\cos^3 y_i\,dt + p_i\cos^2 y_i\,dW_i`."""

    components = ("y1", "y2", "y3")

    def drift(self, y1, y2, y3, t):
        return tuple(-(p**2) * sp.sin(y) * sp.cos(y) ** 3 for p, y in zip(_P, (y1, y2, y3), strict=True))

    def diffusion(self, y1, y2, y3, t):
        return tuple(p * sp.cos(y) ** 2 for p, y in zip(_P, (y1, y2, y3), strict=True))


class Duffing(sdekit.SDE):
    r"""Stochastic Duffing (double-well) oscillator: :math:`dx = v\,dt`, :math:`dv = (x - x^3 - \gamma v)\,dt +
    \sigma\,dW` with :math:`\gamma = 1/2`, :math:`\sigma = 1`, T = 1 (non-affine, degenerate diffusion)."""

    components = ("x", "v")
    gamma = sp.Rational(1, 2)
    sigma = 1

    def drift(self, x, v, t):
        return (v, x - x**3 - self.gamma * v)

    def diffusion(self, x, v, t):
        return sp.Matrix([[0], [self.sigma]])


def strong_problem(kind: str) -> sdekit.SDE:
    """The strong-order problem of noise type ``kind`` (``"general"``, ``"additive"`` or ``"diagonal"``)."""
    problems = {"general": GeneralNoise, "additive": AdditiveNoise, "diagonal": DiagonalNoise}
    if kind not in problems:
        raise ValueError(f"kind must be one of {', '.join(problems)}, got {kind!r}")
    return problems[kind]()


def start_point(kind: str, paths: int, positions: int) -> torch.Tensor:
    """The start state ``(paths, 3, positions)`` of problem ``kind`` (the same at every path)."""
    y0 = {"general": (0.1, 0.1, 0.1), "additive": (0.5, -0.5, 1.0), "diagonal": (0.3, -0.6, 1.0)}[kind]
    return torch.tensor(y0, dtype=F64)[None, :, None].expand(paths, 3, positions).clone()


def exact_solution(kind: str, y0: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
    """Pathwise closed form at t = 1 of the ``"additive"`` or ``"diagonal"`` problem given W_1 of shape
    ``(paths, 3, positions)`` (module docstring)."""
    if kind == "additive":
        R = torch.tensor([[float(v) for v in row] for row in _R], dtype=F64)
        a = torch.tensor([float(v) for v in _A], dtype=F64)[:, None]
        b = torch.tensor([float(v) for v in _B], dtype=F64)[:, None]
        mixed = torch.einsum("ij,bjp->bip", R, b * (1.0 + a * w1))
        return (y0 + mixed) / math.sqrt(2.0)
    if kind == "diagonal":
        p = torch.tensor([float(v) for v in _P], dtype=F64)[:, None]
        return torch.atan(p * w1 + torch.tan(y0))
    raise ValueError(f"no closed form for kind {kind!r}")


class GridBrownian(BaseBrownian):
    r"""A Brownian motion on [0, T] sampled on a fine uniform grid of ``cells`` cells, queried at grid points only.

    Each cell carries an exact increment :math:`\Delta W \sim N(0, h)` and an independent space-time Lévy area
    :math:`H \sim N(0, h/12)` (:math:`\int_{cell}(W_s - W_a)\,ds = h(\Delta W/2 + H)`); prefix sums give the
    increment and :math:`U = \int_{t_a}^{t_b}(W_s - W_{t_a})\,ds` of any grid interval exactly, in O(1). Every
    step size :math:`T/2^j` with :math:`2^j \le` ``cells`` therefore sees the same path (torchsde's
    ``BrownianInterval`` does too, but a query costs a tree walk: 2^12 Euler steps took 50 s here). Full Lévy
    area (``return_A``) is not provided: no solver used here needs it.
    """

    def __init__(self, shape: tuple[int, int], cells: int, generator: torch.Generator, T: float = 1.0) -> None:
        self._shape, self.cells, self.T = tuple(shape), int(cells), float(T)
        h = self.T / self.cells
        dw = torch.randn(self.cells, *self._shape, generator=generator, dtype=F64) * math.sqrt(h)
        H = torch.randn(self.cells, *self._shape, generator=generator, dtype=F64) * math.sqrt(h / 12)
        zero = torch.zeros(1, *self._shape, dtype=F64)
        self.W = torch.cat([zero, dw.cumsum(0)])
        # S[i] = int_0^{t_i} W_s ds, exactly: each cell adds W_a h + h (dW/2 + H)
        self.S = torch.cat([zero, (self.W[:-1] * h + h * (dw / 2 + H)).cumsum(0)])

    def _index(self, t: Any) -> int:
        pos = float(t) / self.T * self.cells
        i = round(pos)
        if abs(pos - i) > 1e-6 or not 0 <= i <= self.cells:
            raise ValueError(f"GridBrownian is queried at t = {float(t)!r}, not a point of its {self.cells}-cell grid")
        return i

    def __call__(self, ta: Any, tb: Any = None, return_U: bool = False, return_A: bool = False) -> Any:
        if return_A:
            raise ValueError("GridBrownian has no full Levy area (return_A)")
        if tb is None:
            ta, tb = 0.0, ta
        ia, ib = self._index(ta), self._index(tb)
        w = self.W[ib] - self.W[ia]
        if not return_U:
            return w
        return w, self.S[ib] - self.S[ia] - self.W[ia] * (float(tb) - float(ta))

    def __repr__(self) -> str:
        return f"GridBrownian(shape={self._shape}, cells={self.cells}, T={self.T:g})"

    @property
    def dtype(self) -> torch.dtype:
        return F64

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def levy_area_approximation(self) -> str:
        return "space-time"
