r"""``mexp``: a matrix-exponential multistep integrator of the PF-ODE of any affine SDE, k-component ones included.

For :math:`dX = (A(t)X + b(t))\,dt + G(t)\,dW` with k components at every event position (:math:`D = GG^\top`; a
scalar SDE is k = 1 with :math:`A = a`, :math:`D = g^2`) the probability-flow ODE is
:math:`X' = AX + b - \tfrac12 D s`. Let :math:`S(t)` = ``marginal.cov(t, given="data")`` be the kernel covariance
given the data (the non-data components' initial law, e.g. CLD's velocity :math:`N(0, \gamma M)`, marginalised),
:math:`a(t)` the data columns of :math:`\Phi(t)` = ``marginal.alpha`` and :math:`m(t)` = ``marginal.offset``.
Whatever the data law, :math:`p_t = \int N(\cdot\,; a x_0 + m, S)\,p(x_0)\,dx_0`, so the exact score is
:math:`s = -S^{-1}(X - m - a\hat x_0)` with the denoiser :math:`\hat x_0 = E[x_0 \mid X_t]`. With
:math:`Y = X - m` (:math:`m' = Am + b`) the PF-ODE splits into a linear part that carries all of the stiffness
and a smooth remainder:

.. math:: Y' = B(t)\,Y - f(t)\,\hat x_0,\qquad B = A + \tfrac12 D S^{-1},\qquad f = \tfrac12 D S^{-1} a .

(Exponentiating :math:`A` alone, as tAB-DEIS does with :math:`\varepsilon = -L^\top s`, leaves CLD's stiff
velocity relaxation :math:`\tfrac12 DS^{-1}`, rate ~1/t near 0 and 16 at equilibrium, to the explicit part:
measured in ``docs/cld.md``, it blows up below ~40 NFE. The covariance given the data, not the whole initial state,
makes the remainder the data's posterior mean, d numbers per position that the noise-carrying part :math:`Ds` of
the score determines; given the whole state it would be the posterior mean of all k components, which
:math:`Ds` does not determine when D is singular, as for CLD.)
Variation of constants from :math:`t_i` to :math:`t_{i+1}` with the transition :math:`R(t, \tau)` of B is exact,
and :math:`\hat x_0(\tau)` is replaced by the polynomial in t through its last p values (Lagrange basis
:math:`\ell_j`), which gives the update

.. math:: Y_{i+1} = R(t_{i+1}, t_i)\,Y_i + \sum_{j<p} Z_{ij}\,\hat x_0^{(i-j)},\qquad
          Z_{ij} = -\int_{t_i}^{t_{i+1}} R(t_{i+1}, \tau) f(\tau)\,\ell_j(\tau)\,d\tau .

For p = 1 it is exact whenever the data are a point mass (:math:`Z_{i0} = a_{i+1} - R\,a_i`): this is gDDIM's
deterministic sampler (Zhang, Tao & Chen 2022) and, for a scalar SDE (:math:`R = \sigma_{i+1}/\sigma_i`), DDIM,
i.e. ``exp1`` on the same grid. p = 2, 3 are multistep data-prediction methods (DPM-Solver++(2M/3M)-like,
interpolating in t instead of the log-SNR), global order p. The model's denoiser is read from the part of its
score the ODE uses: :math:`\hat x_0 = f^{+}\,\tfrac12 D (s + S^{-1} Y)` (:math:`f^+` the pseudo-inverse; exact for
the exact score, and it ignores CLD's x-score as the PF-ODE does).

Coefficients (float64, once per run). :math:`B` and :math:`R` are computed through :math:`R(t, \tau) =
L_t\,Q(t, \tau)\,L_\tau^{-1}` with :math:`LL^\top = S` (Cholesky): :math:`RR^\top = S` is preserved by B, so
:math:`Q` is orthogonal with the skew generator :math:`\Omega = L^{-1}AL + \tfrac12 L^{-1}DL^{-\top} -
\mathrm{low}(L^{-1}S'L^{-\top})` (:math:`S' = AS + SA^\top + D`; low: the lower triangle with the diagonal
halved, i.e. :math:`L^{-1}L'`), whose entries grow only like :math:`1/t` near 0. Per step, :math:`Q` and
:math:`\tilde Z_j = L^{-1}Z_j` solve :math:`\tilde Z_j' = \Omega\tilde Z_j - L^{-1}f\ell_j` in :math:`u = \log t`
by classical RK4 with substeps of at most 0.01 in :math:`u` times the largest :math:`\lVert t\,\Omega\rVert`
(all steps batched). :math:`A`, :math:`D` come from ``marginal.drift_matrix`` / ``diffusion_matrix`` (scalar SDEs:
``sde.affine_coefficients``).

The first steps use the values there are (orders 1, 2, ...: no extra model evaluation; order 3 loses a term
:math:`O(h^2)` whose constant is the rate of change of :math:`\hat x_0` at T); ``lower_order_final`` drops the
last steps of runs under 15 steps to orders 2 and 1 as DPM-Solver does. NFE: one per step (``steps`` counts model
evaluations, the final denoising step included). Grid: ``"logsnr"`` (default; for a k-component SDE the generalized
log-SNR of :mod:`sdekit.solvers._grids`, geometric in t where :math:`\tfrac12 DS^{-1}` is stiff), ``"uniform"``,
``"quadratic"``; scalar SDEs take every grid.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ..errors import SolverError
from ._native import GridSolver, StepContext
from ._option import Option
from ._registry import register

__all__ = ["MatrixExponential", "MatrixExponentialState", "affine_matrices", "mexp_coefficients"]

RK4_STEP = 0.01
"""Largest RK4 substep in log t times the generator's norm (local error ~1e-12)."""


def affine_matrices(sde: Any, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    r"""The affine SDE's :math:`(\Phi, m, S, A, D)` at float64 times ``t``: shapes ``(*t, k, k)``, ``(*t, k)``,
    ``(*t, k, k)``, ``(*t, k, k)``, ``(*t, k, k)`` (k = 1 for a scalar SDE; S given the data)."""
    marginal = sde.marginal
    if sde.components is None:
        one = (*t.shape, 1, 1)
        coef = sde.affine_coefficients
        a, g2 = (fn(t).to(torch.float64).expand(t.shape).reshape(one) for fn in (coef.a, coef.g2))
        return (marginal.alpha(t).reshape(one), marginal.offset(t).expand(t.shape).reshape(*t.shape, 1),
                marginal.sigma2(t).reshape(one), a, g2)  # fmt: skip
    k = len(sde.components)
    full = (*t.shape, k, k)
    return (marginal.alpha(t), marginal.offset(t).expand(*t.shape, k), marginal.cov(t, given="data"),
            marginal.drift_matrix(t).expand(full), marginal.diffusion_matrix(t).expand(full))  # fmt: skip


def _data_index(sde: Any) -> list[int]:
    return [0] if sde.components is None else list(sde.marginal.data_index)


def _cholesky(S: torch.Tensor) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(S)
    if bool((info != 0).any()):
        raise SolverError(
            "mexp: the kernel covariance given the data is singular on the grid (the score is undefined there); "
            "use a torchsde or torchdiffeq solver (e.g. 'dopri5')"
        )
    return L


@dataclasses.dataclass(frozen=True)
class _Pieces:
    r"""At a set of times: L, :math:`L^{-1}`, the skew generator :math:`\Omega`, :math:`L^{-1}f` and f."""

    L: torch.Tensor
    L_inv: torch.Tensor
    omega: torch.Tensor
    g: torch.Tensor
    f: torch.Tensor
    S_inv: torch.Tensor
    D: torch.Tensor


def _pieces(sde: Any, t: torch.Tensor) -> _Pieces:
    """Module docstring: everything the coefficient ODE needs at times ``t``."""
    Phi, _, S, A, D = affine_matrices(sde, t)
    L = _cholesky(S)
    eye = torch.eye(S.shape[-1], dtype=torch.float64).expand_as(S)
    L_inv = torch.linalg.solve_triangular(L, eye, upper=False)
    S_inv = L_inv.transpose(-1, -2) @ L_inv
    dS = A @ S + S @ A.transpose(-1, -2) + D
    M = L_inv @ dS @ L_inv.transpose(-1, -2)
    low = torch.tril(M, -1) + 0.5 * torch.diag_embed(torch.diagonal(M, dim1=-2, dim2=-1))
    omega = L_inv @ A @ L + 0.5 * L_inv @ D @ L_inv.transpose(-1, -2) - low
    omega = 0.5 * (omega - omega.transpose(-1, -2))  # skew up to round-off
    f = 0.5 * D @ S_inv @ Phi[..., _data_index(sde)]
    return _Pieces(L, L_inv, omega, L_inv @ f, f, S_inv, D)


def _lagrange(tau: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    r"""Lagrange basis on ``nodes`` (n, p) at ``tau`` (n, q): values (n, q, p)."""
    p = nodes.shape[1]
    out = torch.ones(*tau.shape, p, dtype=tau.dtype)
    for j in range(p):
        for m in range(p):
            if m != j:
                out[..., j] *= (tau - nodes[:, m : m + 1]) / (nodes[:, j : j + 1] - nodes[:, m : m + 1])
    return out


def _substeps(sde: Any, times: torch.Tensor) -> int:
    """RK4 substeps per step: the largest step in log t times the largest |t Omega| near it, over RK4_STEP."""
    lo, hi = torch.log(times[1:]), torch.log(times[:-1])
    probe = torch.exp(torch.stack([lo, (lo + hi) / 2, hi], dim=1))
    rate = (probe * torch.linalg.matrix_norm(_pieces(sde, probe).omega)).amax(dim=1)
    return int(min(max(math.ceil(float(((hi - lo) * (rate + 1)).max()) / RK4_STEP), 8), 4096))


def mexp_coefficients(
    sde: Any, times: torch.Tensor, orders: list[int], substeps: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Float64 :math:`R(t_{i+1}, t_i)` (n, k, k) and :math:`Z_{ij}` (n, 3, k, d; zero beyond each step's order) of
    the grid ``times`` (decreasing, > 0) at ``orders`` (module docstring), with ``substeps`` RK4 substeps per step
    (default: :func:`_substeps`)."""
    n, N = times.shape[0] - 1, substeps or _substeps(sde, times)
    lo, hi = torch.log(times[:-1]), torch.log(times[1:])  # u runs from log t_i down to log t_{i+1}
    du = ((hi - lo) / N).reshape(n, 1, 1)
    tau = torch.exp(lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.linspace(0, 1, 2 * N + 1, dtype=torch.float64))
    pcs = _pieces(sde, tau)  # (n, 2N + 1, ...)
    node_idx = (torch.arange(n).unsqueeze(1) - torch.arange(3)).clamp_min(0)  # t_i, t_{i-1}, t_{i-2}
    basis = torch.zeros(n, 2 * N + 1, 3, dtype=torch.float64)  # zero beyond each step's order
    for p in sorted(set(orders)):
        rows = torch.tensor([i for i, o in enumerate(orders) if o == p])
        basis[rows, :, :p] = _lagrange(tau[rows], times[node_idx[rows, :p]])
    k, d = pcs.g.shape[-2:]
    gen = tau[..., None, None] * pcs.omega  # d/du of Q and of each Z~_j: gen @ (.) - tau L^{-1} f l_j
    force = -(tau[..., None, None, None] * basis[..., None, None] * pcs.g.unsqueeze(2))  # (n, 2N+1, 3, k, d)
    force = force.permute(0, 1, 3, 2, 4).reshape(n, 2 * N + 1, k, 3 * d)
    eye = torch.eye(k, dtype=torch.float64).expand(n, k, k)
    Y = torch.cat([eye, torch.zeros(n, k, 3 * d, dtype=torch.float64)], -1)
    zero = torch.zeros(n, k, k, dtype=torch.float64)

    def rhs(Y: torch.Tensor, s: int) -> torch.Tensor:
        return gen[:, s] @ Y + torch.cat([zero, force[:, s]], -1)

    for j in range(N):  # classical RK4 on [u_j, u_j + du], batched over the steps
        k1 = rhs(Y, 2 * j)
        k2 = rhs(Y + 0.5 * du * k1, 2 * j + 1)
        k3 = rhs(Y + 0.5 * du * k2, 2 * j + 1)
        k4 = rhs(Y + du * k3, 2 * j + 2)
        Y = Y + du / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    L = pcs.L[:, -1]  # L(t_{i+1})
    R = L @ Y[..., :k] @ pcs.L_inv[:, 0]
    Z = (L @ Y[..., k:]).reshape(n, k, 3, d).permute(0, 2, 1, 3)
    return R, Z


def denoiser_maps(sde: Any, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`(G_s, G_y)` at ``times`` with :math:`\hat x_0 = G_s s + G_y Y`: :math:`G_s = f^+\tfrac12 D`,
    :math:`G_y = f^+\tfrac12 D S^{-1}` (shapes (n + 1, d, k); :math:`f^+` the pseudo-inverse)."""
    pcs = _pieces(sde, times)
    rank = torch.linalg.matrix_rank(pcs.f)
    if bool((rank < pcs.f.shape[-1]).any()):
        raise SolverError(
            "mexp: the noise does not reach the data components at some grid time (D S^-1 a has rank "
            f"{int(rank.min())} < {pcs.f.shape[-1]}), so the score does not determine the denoiser there"
        )
    E = torch.linalg.pinv(pcs.f)
    return 0.5 * E @ pcs.D, 0.5 * E @ pcs.D @ pcs.S_inv


@dataclasses.dataclass(frozen=True)
class MatrixExponentialState:
    r"""Per step :math:`R(t_{i+1}, t_i)` (n, k, k) and :math:`Z_{ij}` (n, 3, k, d); per grid point the offset
    :math:`m` (n + 1, k, 1) and the denoiser maps :math:`G_s, G_y` (n + 1, d, k); each step's order; the denoiser
    values of the last steps (flattened to (batch, d, positions)), newest first."""

    transition: torch.Tensor
    weights: torch.Tensor
    offset: torch.Tensor
    from_score: torch.Tensor
    from_state: torch.Tensor
    orders: list[int]
    history: tuple[torch.Tensor, ...] = ()


@register
class MatrixExponential(GridSolver[MatrixExponentialState]):
    r"""Matrix-exponential multistep PF-ODE sampler for affine SDEs, k-component ones (CLD) included.

    Module docstring for the method. Options: ``order`` (1–3, default 3) and ``lower_order_final`` (True: in runs
    of fewer than 15 steps the last steps drop to orders 2 and 1). NFE per step 1.
    """

    name = "mexp"
    kind = "ode"
    noise_types = ("additive",)
    requires_affine = True
    weak_order = 3.0
    default_steps = 40
    grid = "logsnr"
    steps_are_nfe = True
    description = (
        "matrix-exponential multistep PF-ODE integrator (gDDIM split, data prediction), orders 1-3; any affine "
        "SDE, k-component ones (CLD) included"
    )
    options_declared: ClassVar[dict[str, Option]] = {
        "order": Option.integer(3, "order p: the denoiser is interpolated over the last p steps", lo=1, hi=3),
        "lower_order_final": Option.flag(
            True, "in runs of fewer than 15 steps, the last two steps drop to orders 2 and 1 (DPM-Solver's rule)"
        ),
    }

    def grid_order(self, options: Mapping[str, Any], sde: Any = None) -> int:
        """The ``"optimized"`` grid's order (scalar SDEs): the run's ``order`` option."""
        return int(options["order"])

    def prepare(self, ctx: StepContext, opts: dict[str, Any]) -> MatrixExponentialState:
        times = ctx.times
        if not float(times[-1]) > 0:
            raise SolverError(f"mexp: the run must end at a time > 0, got {float(times[-1])}")
        n = times.shape[0] - 1
        order = int(opts["order"])
        orders = [min(order, i + 1) for i in range(n)]
        if opts["lower_order_final"] and n < 15:
            orders = [min(o, n - i) for i, o in enumerate(orders)]
        sde = ctx.problem.sde
        R, Z = mexp_coefficients(sde, times, orders)
        G_s, G_y = denoiser_maps(sde, times)
        m = affine_matrices(sde, times)[1].unsqueeze(-1)
        x = ctx.problem.x_T
        like = {"dtype": x.dtype, "device": x.device}
        return MatrixExponentialState(*(c.to(**like) for c in (R, Z, m, G_s, G_y)), orders)

    def step(
        self, ctx: StepContext, state: MatrixExponentialState, x: torch.Tensor, i: int
    ) -> tuple[torch.Tensor, MatrixExponentialState]:
        k = state.transition.shape[-1]
        y = x.reshape(x.shape[0], k, -1) - state.offset[i]
        s = ctx.score(x, i).reshape(y.shape)
        x0 = state.from_score[i] @ s + state.from_state[i] @ y
        hist = (x0, *state.history)[:3]
        w = state.weights[i]
        out = state.transition[i] @ y + state.offset[i + 1]
        for j in range(state.orders[i]):
            out = out + w[j] @ hist[j]
        return out.reshape(x.shape), dataclasses.replace(state, history=hist)
