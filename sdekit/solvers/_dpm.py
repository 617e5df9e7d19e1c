r"""The published DPM-Solver algorithms for the PF-ODE of any affine SDE: ``dpm++2m``, ``dpm++3m``, ``dpm2``, ``dpm3``.

Transcriptions of the reference code (``dpm_solver_pytorch.py`` of Lu et al.; diffusers'
``DPMSolverMultistepScheduler`` has the same formulas), generalised from VP to every affine SDE by working with
:math:`y = x - m(t)`, :math:`\alpha(t)`, :math:`\sigma(t)` and :math:`\lambda(t) = \log(\alpha/\sigma)` of
``sde.marginal`` (the derivation is in :mod:`sdekit.solvers._exponential`):

.. math:: y_t = \frac{\sigma_t}{\sigma_s}\,y_s + \alpha_t\int_0^h e^{\tau-h}\,\hat x_0\,d\tau
              = \frac{\alpha_t}{\alpha_s}\,y_s - \sigma_t\int_0^h e^{\tau}\,\hat\varepsilon\,d\tau,
          \qquad h = \lambda_t - \lambda_s,

with the data prediction :math:`\hat x_0 = (y + \sigma^2 s)/\alpha` and the noise prediction
:math:`\hat\varepsilon = -\sigma s` of the score s. Every coefficient is computed once in float64 in ``prepare``.

**Multistep DPM-Solver++ (data prediction)**, ``dpm++2m`` / ``dpm++3m``. With :math:`m_k` the denoiser at the
k-th newest grid point, :math:`h_k` the log-SNR steps before the current one, :math:`r_k = h_k/h`,
:math:`\varphi_1 = e^{-h} - 1`, :math:`\varphi_2 = \varphi_1/h + 1`, :math:`\varphi_3 = \varphi_2/h - \tfrac12`,
:math:`D_1^{(0)} = (m_0 - m_1)/r_0`, :math:`D_1^{(1)} = (m_1 - m_2)/r_1`:

* order 1 (DDIM): :math:`y_t = \tfrac{\sigma_t}{\sigma_s} y_s - \alpha_t\varphi_1 m_0`;
* 2M (``solver_type="dpmsolver"``): :math:`y_t = \tfrac{\sigma_t}{\sigma_s} y_s - \alpha_t\varphi_1 m_0
  - \tfrac12\alpha_t\varphi_1 D_1^{(0)}`;
* 3M: :math:`D_1 = D_1^{(0)} + \tfrac{r_0}{r_0 + r_1}(D_1^{(0)} - D_1^{(1)})`,
  :math:`D_2 = \tfrac{1}{r_0 + r_1}(D_1^{(0)} - D_1^{(1)})`,
  :math:`y_t = \tfrac{\sigma_t}{\sigma_s} y_s - \alpha_t\varphi_1 m_0 + \alpha_t\varphi_2 D_1 - \alpha_t\varphi_3 D_2`.

They are linear in the :math:`m_k`, so ``prepare`` expands them into weights on :math:`m_0, m_1, m_2` and the step
is :class:`~sdekit.solvers._exponential.ExponentialIntegrator`'s (only the weights differ from ``exp2``/``exp3``'s
Lagrange weights); :math:`-\varphi_1 = \mu_0`, :math:`\varphi_2 = \mu_1/h`, :math:`-\varphi_3 = \mu_2/(2h^2)` come
from :func:`~sdekit.solvers._exponential.exp_moments` (no cancellation at small h). Start as in the reference, with
no extra evaluation: DDIM, then 2M, then 3M; ``lower_order_final`` (default True): in runs of fewer than 15 steps
the last step is first order and the one before at most second order (diffusers' rule; the current reference code
uses the threshold 10, its earlier versions 15).

**The reference 3M is second order.** Expanding :math:`m_1 = \hat x_0(-h_0)`, :math:`m_2 = \hat x_0(-h_0 - h_1)`
about the current point (derivatives in :math:`\lambda`) gives :math:`D_1 = h\hat x_0' + O(h^3)` but
:math:`D_2 = \tfrac{h^2}{2}\hat x_0'' + O(h^3)`, while the exact integral's second-order term is
:math:`\tfrac{\mu_2}{2}\hat x_0'' = -\varphi_3 h^2\,\hat x_0''`: the update carries :math:`\tfrac{\mu_2}{4}\hat x_0''`,
half of it. Its local error is :math:`\tfrac{\mu_2}{4}\hat x_0'' \approx \tfrac{h^3}{12}\hat x_0''`, so the global
error is :math:`O(h^2)` (measured: ``docs/native_samplers.md``). Doubling :math:`D_2` gives the order-3
interpolating-polynomial update of ``exp3``. ``dpm++3m`` keeps the reference's form, so its numbers are the
literature's.

**Singlestep DPM-Solver (noise prediction)**, ``dpm2`` / ``dpm3`` (Lu et al. 2022, Algorithms 1 and 2). Step
:math:`t_{i-1} \to t_i` with :math:`h = \lambda_{t_i} - \lambda_{t_{i-1}}` evaluates :math:`\hat\varepsilon` at
:math:`t_{i-1}` and at :math:`s_k = t_\lambda(\lambda_{t_{i-1}} + r_k h)`:

* DPM-Solver-2 (:math:`r_1 = \tfrac12`): :math:`u = \tfrac{\alpha_{s_1}}{\alpha_{t_{i-1}}} y
  - \sigma_{s_1}(e^{r_1 h} - 1)\hat\varepsilon_0`,
  :math:`y_{t_i} = \tfrac{\alpha_{t_i}}{\alpha_{t_{i-1}}} y - \sigma_{t_i}(e^h - 1)\hat\varepsilon_0
  - \tfrac{\sigma_{t_i}}{2r_1}(e^h - 1)(\hat\varepsilon(u, s_1) - \hat\varepsilon_0)`;
* DPM-Solver-3 (:math:`r_1 = \tfrac13`, :math:`r_2 = \tfrac23`): :math:`u_1` as above, :math:`D_1 =
  \hat\varepsilon(u_1, s_1) - \hat\varepsilon_0`, :math:`u_2 = \tfrac{\alpha_{s_2}}{\alpha_{t_{i-1}}} y
  - \sigma_{s_2}(e^{r_2 h} - 1)\hat\varepsilon_0 - \tfrac{r_2}{r_1}\sigma_{s_2}
  \big(\tfrac{e^{r_2 h} - 1}{r_2 h} - 1\big) D_1`, :math:`D_2 = \hat\varepsilon(u_2, s_2) - \hat\varepsilon_0`,
  :math:`y_{t_i} = \tfrac{\alpha_{t_i}}{\alpha_{t_{i-1}}} y - \sigma_{t_i}(e^h - 1)\hat\varepsilon_0
  - \tfrac{\sigma_{t_i}}{r_2}\big(\tfrac{e^h - 1}{h} - 1\big) D_2`;
* order 1 is DDIM, :math:`y_{t_i} = \tfrac{\alpha_{t_i}}{\alpha_{t_{i-1}}} y - \sigma_{t_i}(e^h - 1)\hat\varepsilon_0`.

NFE: every solver here has :attr:`~sdekit.solvers.Solver.steps_are_nfe`. The multistep ones spend one evaluation
per step. For the singlestep ones, k evaluations are planned like the reference's
``get_orders_and_timesteps_for_singlestep_solver`` ("DPM-Solver-fast"): order 3, :math:`K = \lfloor k/3\rfloor + 1`
steps of orders ``[3]*(K-2) + [2, 1]`` (k % 3 = 0), ``[3]*(K-1) + [1]`` (k % 3 = 1), ``[3]*(K-1) + [2]`` (k % 3 = 2);
order 2, ``[2]*(k//2)`` (k even) or ``[2]*(k//2) + [1]``; the grid (default ``"optimized"``, measured best; ``"logsnr"``
is the reference's ``skip_type="logSNR"``) has K intervals. A solve without a budget (``SamplingProblem.nfe_budget``
None) takes every
interval at full order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..errors import SolverError
from ._exponential import ExponentialIntegrator, exp_moments, grid_log_snr
from ._native import GridSolver, StepContext, t_of_log_snr
from ._registry import register

if TYPE_CHECKING:  # pragma: no cover
    from ..symbolic.sde import SDE

__all__ = [
    "DPMSolverPlusPlus2M",
    "DPMSolverPlusPlus3M",
    "DPMSolverPlusPlusMultistep",
    "DPMSolver2",
    "DPMSolver3",
    "SinglestepDPMSolver",
    "SinglestepState",
    "SinglestepStep",
    "Stage",
    "multistep_weights",
    "singlestep_orders",
]


# --------------------------------------------------------------------------- multistep DPM-Solver++
def multistep_weights(lam: torch.Tensor, orders: list[int]) -> list[list[float]]:
    r"""Weights :math:`w_j` (newest first) of the reference's multistep DPM-Solver++ updates, written as
    :math:`y_{i+1} = \tfrac{\sigma_{i+1}}{\sigma_i} y_i + \alpha_{i+1}\sum_j w_j m_{i-j}` (module docstring).

    ``lam``: float64 log-SNR of the grid (n + 1 points); ``orders``: the order of each of the n steps (step i may
    use order at most i + 1).
    """
    n = lam.shape[0] - 1
    h = lam[1:] - lam[:-1]
    mu = exp_moments(h, 3)
    phi1, phi2, phi3 = -mu[0], mu[1] / h, -mu[2] / (2 * h * h)
    idx = torch.arange(n)
    one = torch.ones_like(h)
    r0 = torch.where(idx >= 1, h[(idx - 1).clamp_min(0)] / h, one)  # h_0 / h (placeholder 1 where unused)
    r1 = torch.where(idx >= 2, h[(idx - 2).clamp_min(0)] / h, one)  # h_1 / h
    # 2M: -phi1 m0 - phi1 (m0 - m1) / (2 r0)
    w2 = (-phi1 * (1 + 0.5 / r0), 0.5 * phi1 / r0)
    # 3M: -phi1 m0 + A D1_0 + B D1_1 with D1 = (1 + c) D1_0 - c D1_1, D2 = q (D1_0 - D1_1)
    c, q = r0 / (r0 + r1), 1 / (r0 + r1)
    a, b = phi2 * (1 + c) - phi3 * q, phi3 * q - phi2 * c
    w3 = (-phi1 + a / r0, -a / r0 + b / r1, -b / r1)
    rows = {k: torch.stack(w, dim=1).tolist() for k, w in {1: (-phi1,), 2: w2, 3: w3}.items()}
    return [rows[k][i] for i, k in enumerate(orders)]


class DPMSolverPlusPlusMultistep(ExponentialIntegrator):
    r"""Multistep DPM-Solver++ of the reference code (module docstring): :class:`ExponentialIntegrator`'s step with
    the reference's weights and its start (DDIM, 2M, 3M; one NFE per step); default grid ``"optimized"`` (measured
    best; the reference's is ``"logsnr"``).

    Options: ``grid`` (``"optimized"`` default), ``lower_order_final`` (True: runs of fewer than 15 steps end with a
    second- and a first-order step). ``steps=k`` of :func:`sdekit.sample`: k model evaluations with the denoising step.
    """

    grid = "optimized"  # measured best across VP, VE and a user SDE (docs/benchmarks.md)

    def _weights(self, lam: torch.Tensor, orders: list[int]) -> list[list[float]]:
        return multistep_weights(lam, orders)


@register
class DPMSolverPlusPlus2M(DPMSolverPlusPlusMultistep):
    r"""DPM-Solver++(2M) (Lu et al. 2022b), the midpoint form (reference ``solver_type="dpmsolver"``):
    :math:`y_t = \tfrac{\sigma_t}{\sigma_s} y_s - \alpha_t\varphi_1 m_0 - \tfrac12\alpha_t\varphi_1 (m_0 - m_1)/r_0`.
    Global order 2. NFE per step 1."""

    name = "dpm++2m"
    order = 2
    weak_order = 2.0
    default_steps = 50
    description = "DPM-Solver++(2M) as published (multistep, data prediction); any affine SDE"


@register
class DPMSolverPlusPlus3M(DPMSolverPlusPlusMultistep):
    r"""DPM-Solver++(3M) of the reference code (module docstring). Its second divided difference carries half the
    Taylor-exact weight, so its global order is 2, not 3 (``exp3`` is the order-3 form). NFE per step 1."""

    name = "dpm++3m"
    order = 3
    weak_order = 2.0
    default_steps = 40
    description = "DPM-Solver++(3M) as published (multistep, data prediction; order 2); any affine SDE"


# --------------------------------------------------------------------------- singlestep DPM-Solver
def singlestep_orders(nfe: int, order: int) -> list[int]:
    """Orders of the steps of a singlestep run spending ``nfe`` evaluations (the reference's
    ``get_orders_and_timesteps_for_singlestep_solver``); [] when ``nfe`` < 1."""
    if nfe < 1:
        return []
    if order == 2:
        return [2] * (nfe // 2) + [1] * (nfe % 2)
    k = nfe // 3 + 1
    return {0: [3] * (k - 2) + [2, 1], 1: [3] * (k - 1) + [1], 2: [3] * (k - 1) + [2]}[nfe % 3]


@dataclasses.dataclass(frozen=True)
class Stage:
    r"""One intermediate evaluation: :math:`u = a\,y + \sum_j b_j\hat\varepsilon_j` at time ``t`` (a (batch,) tensor),
    then :math:`\hat\varepsilon = -\sigma\,s(u + m, t)`."""

    t: torch.Tensor
    a: float
    b: tuple[float, ...]
    m: float
    sigma: float


@dataclasses.dataclass(frozen=True)
class SinglestepStep:
    r"""One step of order ``len(stages) + 1``: its stages and :math:`y_{i+1} = a\,y_i + \sum_j b_j\hat\varepsilon_j`."""

    stages: tuple[Stage, ...]
    a: float
    b: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class SinglestepState:
    r"""Per grid point :math:`m` and :math:`\sigma`; per step its :class:`SinglestepStep`."""

    m: list[float]
    sigma: list[float]
    steps: tuple[SinglestepStep, ...]


def _combine(a: float, y: torch.Tensor, b: tuple[float, ...], eps: list[torch.Tensor]) -> torch.Tensor:
    r""":math:`a\,y + \sum_j b_j\hat\varepsilon_j` (terms with :math:`b_j = 0` skipped: no tensor operation)."""
    out = a * y
    for bj, e in zip(b, eps, strict=True):
        if bj != 0.0:
            out = out + bj * e
    return out


R: dict[int, tuple[float, ...]] = {1: (), 2: (0.5,), 3: (1 / 3, 2 / 3)}
"""Intermediate log-SNR fractions :math:`r_k` of a DPM-Solver-k step (the paper's; the reference's on its logSNR
grid, also for the second-order step inside DPM-Solver-3's plan)."""


class SinglestepDPMSolver(GridSolver[SinglestepState]):
    r"""Singlestep DPM-Solver-2/3 with noise prediction (module docstring), ``steps=k`` planned as k evaluations."""

    kind = "ode"
    order: ClassVar[int] = 2
    noise_types = ("additive",)
    requires_affine = True
    grid = "optimized"  # measured best across VP, VE and a user SDE (docs/benchmarks.md)
    steps_are_nfe = True

    def grid_order(self, options: Mapping[str, Any], sde: SDE | None = None) -> int:
        """The ``"optimized"`` grid's order: :attr:`order` (DPM-Solver-k)."""
        return self.order

    def intervals(self, nfe: int, options: Mapping[str, Any]) -> int:
        """Steps of the reference's plan for ``nfe`` evaluations (:func:`singlestep_orders`)."""
        return len(singlestep_orders(nfe, self.order))

    def prepare(self, ctx: StepContext, opts: dict[str, Any]) -> SinglestepState:
        n = ctx.times.shape[0] - 1
        budget = ctx.problem.nfe_budget
        orders = [self.order] * n if budget is None else singlestep_orders(budget, self.order)
        if len(orders) != n:
            raise SolverError(f"{self.name}: {budget} evaluations plan {len(orders)} steps, but the grid has {n}")
        marginal = ctx.problem.sde.marginal
        lam = grid_log_snr(ctx, self.name)
        h = lam[1:] - lam[:-1]
        alpha, sigma = marginal.alpha(ctx.times).tolist(), marginal.sigma(ctx.times).tolist()
        stages = _stage_points(ctx, lam, orders)
        steps = tuple(_singlestep(float(h[i]), alpha[i], alpha[i + 1], sigma[i + 1], stages[i]) for i in range(n))
        return SinglestepState(marginal.offset(ctx.times).tolist(), sigma, steps)

    def step(
        self, ctx: StepContext, state: SinglestepState, x: torch.Tensor, i: int
    ) -> tuple[torch.Tensor, SinglestepState]:
        plan = state.steps[i]
        y = x - state.m[i]
        eps = [-state.sigma[i] * ctx.score(x, i)]
        for st in plan.stages:
            u = _combine(st.a, y, st.b, eps)
            eps.append(-st.sigma * ctx.problem.score(u + st.m, st.t))
        return _combine(plan.a, y, plan.b, eps) + state.m[i + 1], state


def _stage_points(ctx: StepContext, lam: torch.Tensor, orders: list[int]) -> list[list[tuple[Any, ...]]]:
    r"""Per step, its stages' (t as a (batch,) tensor, r, alpha, sigma, m) at :math:`\lambda_i + r h`, all found
    with one vectorised :func:`t_of_log_snr`."""
    marginal = ctx.problem.sde.marginal
    x = ctx.problem.x_T
    where = [(i, r) for i, order in enumerate(orders) for r in R[order]]
    out: list[list[tuple[Any, ...]]] = [[] for _ in orders]
    if not where:
        return out
    target = torch.tensor([float(lam[i] + r * (lam[i + 1] - lam[i])) for i, r in where], dtype=torch.float64)
    t = t_of_log_snr(marginal, target, float(ctx.times[-1]), float(ctx.times[0]))
    alpha, sigma, m = marginal.alpha(t).tolist(), marginal.sigma(t).tolist(), marginal.offset(t).tolist()
    tx = t.to(dtype=x.dtype, device=x.device)
    for k, (i, r) in enumerate(where):
        out[i].append((tx[k].expand(x.shape[0]), r, alpha[k], sigma[k], m[k]))
    return out


def _singlestep(
    h: float, alpha_s: float, alpha_t: float, sigma_t: float, stages: list[tuple[Any, ...]]
) -> SinglestepStep:
    """Coefficients of one DPM-Solver step of order ``len(stages) + 1`` from the paper's formulas (module docstring);
    ``stages`` holds each intermediate point's (t, r, alpha, sigma, m)."""
    phi1 = math.expm1(h)  # e^h - 1
    if not stages:  # DDIM
        return SinglestepStep((), alpha_t / alpha_s, (-sigma_t * phi1,))
    t1, r1, a1, s1, m1 = stages[0]
    stage1 = Stage(t1, a1 / alpha_s, (-s1 * math.expm1(r1 * h),), m1, s1)
    if len(stages) == 1:  # DPM-Solver-2
        c = 0.5 / r1 * sigma_t * phi1
        return SinglestepStep((stage1,), alpha_t / alpha_s, (-sigma_t * phi1 + c, -c))
    t2, r2, a2, s2, m2 = stages[1]  # DPM-Solver-3
    phi12 = math.expm1(r2 * h)
    c2 = r2 / r1 * s2 * (phi12 / (r2 * h) - 1.0)
    stage2 = Stage(t2, a2 / alpha_s, (-s2 * phi12 + c2, -c2), m2, s2)
    c = sigma_t / r2 * (phi1 / h - 1.0)
    return SinglestepStep((stage1, stage2), alpha_t / alpha_s, (-sigma_t * phi1 + c, 0.0, -c))


@register
class DPMSolver2(SinglestepDPMSolver):
    r"""Singlestep DPM-Solver-2 (Lu et al. 2022, Algorithm 1, :math:`r_1 = 1/2`), noise prediction. ``steps=k``:
    k evaluations, k // 2 second-order steps (and one DDIM step when k is odd). Global order 2."""

    name = "dpm2"
    order = 2
    weak_order = 2.0
    default_steps = 80  # 50 failed the moment z-test on sub-VP (validation suite, n = 20,000): z 4.71
    description = "singlestep DPM-Solver-2 as published (noise prediction); any affine SDE"
    nfe_per_step = "2 (1 in a final DDIM step when steps is odd)"


@register
class DPMSolver3(SinglestepDPMSolver):
    r"""Singlestep DPM-Solver-3 (Lu et al. 2022, Algorithm 2, :math:`r_1 = 1/3`, :math:`r_2 = 2/3`), noise
    prediction. ``steps=k``: k evaluations in the reference's plan (module docstring). Global order 3."""

    name = "dpm3"
    order = 3
    weak_order = 3.0
    default_steps = 40
    description = "singlestep DPM-Solver-3 as published (noise prediction); any affine SDE"
    nfe_per_step = "3 (the plan's last one or two steps: 1-2)"
