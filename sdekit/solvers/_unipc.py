r"""UniPC (Zhao et al., 2023): the multistep UniP predictor and the UniC corrector on the PF-ODE of any affine SDE.

Setting (the derivation of :mod:`sdekit.solvers._exponential`). With :math:`y = x - m(t)`, Tweedie's denoiser
:math:`\hat x_0 = (y + \sigma^2 s)/\alpha` and :math:`\lambda = \log(\alpha/\sigma)`, the PF-ODE is solved exactly by

.. math:: y_{t} = \frac{\sigma_t}{\sigma_s}\,y_s + \alpha_t\int_0^h e^{\tau-h}\,\hat x_0(\lambda_s+\tau)\,d\tau,
          \qquad h = \lambda_t - \lambda_s > 0 .

UniPC's B(h) form with data prediction (the paper's ``predict_x0``, diffusers'
``multistep_uni_p_bh_update`` / ``multistep_uni_c_bh_update``). Step i goes from :math:`t_i` to :math:`t_{i+1}`
with the denoiser values :math:`\hat x_0^{(i)}, \hat x_0^{(i-1)}, \dots` of the previous grid points. Let
:math:`r_k = (\lambda_{i-k} - \lambda_i)/h` (negative), :math:`D_k = (\hat x_0^{(i-k)} - \hat x_0^{(i)})/r_k`, the
moments :math:`\mu_j = \int_0^h \tau^j e^{\tau-h}d\tau` (:func:`~sdekit.solvers._exponential.exp_moments`; in the
paper's notation :math:`\mu_j = j!\,h^{j+1}\varphi_{j+1}(-h)`) and :math:`\beta = -B(h)`, with
:math:`B(h) = -h` (``"bh1"``) or :math:`B(h) = e^{-h} - 1` (``"bh2"``). The paper's right-hand sides
:math:`b_j = -h\,j!\,\varphi_{j+1}(-h)/B(h)` are

.. math:: b_j = \frac{\mu_j}{h^j\,\beta}, \qquad j = 1, 2, \dots

**UniP-p** (predictor, order p):

.. math:: y^{p}_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}\,y_i + \alpha_{i+1}\Big(\mu_0\,\hat x_0^{(i)}
          + \beta\sum_{k=1}^{p-1}\rho^{p}_k D_k\Big),\qquad
          \sum_{k=1}^{p-1}\rho^p_k\,r_k^{\,j-1} = b_j \ (j = 1..p-1),

except :math:`\rho^p_1 = 1/2` for p = 2 (the reference's simplified order-2 predictor; the solve would give
:math:`b_1 = 1/2 + O(h)`). The moment conditions make the bracket exact for :math:`\hat x_0` polynomial of degree
p - 1 in :math:`\lambda`, so UniP-1 is DDIM and UniP-3 is the Lagrange-form 3M update of ``exp3``; UniP-2 with
``"bh2"`` is the published DPM-Solver++(2M) step. The B(h) variant
matters only where :math:`\rho` is not solved for (UniP-2 and UniC-1).

**UniC-p** (corrector, no extra evaluation): the model is evaluated once at the predicted point,
:math:`\hat x_0^{(i+1)} = \hat x_0(y^p_{i+1}, t_{i+1})`, and with :math:`D_p = \hat x_0^{(i+1)} - \hat x_0^{(i)}`
(node :math:`r_p = 1`)

.. math:: y^{c}_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}\,y_i + \alpha_{i+1}\Big(\mu_0\,\hat x_0^{(i)}
          + \beta\sum_{k=1}^{p}\rho^{c}_k D_k\Big),\qquad \sum_{k=1}^{p}\rho^c_k\,r_k^{\,j-1} = b_j \ (j = 1..p),

except :math:`\rho^c_1 = 1/2` for p = 1. UniC-p raises the order to p + 1. The corrected :math:`y^c_{i+1}` is the
state the next step starts from; :math:`\hat x_0^{(i+1)}` (evaluated at the *predicted* point) enters the history
as is, so every step costs one model evaluation. In sdekit's loop step i + 1 begins with that evaluation, applies
the corrector of step i, then predicts; the last step is not corrected (no evaluation follows it), as in the
reference code and diffusers.

**Orders per step** (option ``order`` = P): step i uses UniP-:math:`p_i` and, at the start of step i + 1, UniC-
:math:`p_i`, with the multistep warm-up :math:`p_i = \min(P, i + 1)`; ``lower_order_final`` lowers the last
steps to :math:`p_i = \min(p_i, n - i)` (final step first order): ``True`` in runs of fewer than 15 steps (the
rule of DPM-Solver and of sdekit's ``exp`` samplers), ``"always"`` in every run (the rule of the UniPC reference
code and of diffusers' ``UniPCMultistepScheduler`` with ``lower_order_final=True`` when its last noise level is not
zero; with diffusers' default zero level its first-order final step is the step to :math:`\sigma = 0`, i.e. sdekit's
denoising step: ``False`` with ``denoise=True`` reproduces it for P <= 2), ``False`` never.
Convergence: UniP-P alone has global order P; with UniC, P + 1. For P = 3 the warm-up's UniC-1 step (local
:math:`O(h^3)`) caps the order at 3 in theory, but it sits at T where :math:`\hat x_0` hardly moves: measured 4.0
from 32 to 4096 steps (``docs/native_samplers.md``).

All coefficients are computed once in float64 (:func:`unipc_weights`) and folded into weights on the history,
so a step is a handful of tensor multiply-adds with Python floats (no host synchronisation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ._exponential import exp_moments, grid_log_snr, saturation_orders, weighted_sum
from ._native import GridSolver, StepContext
from ._option import Option
from ._registry import register

if TYPE_CHECKING:  # pragma: no cover
    from ..symbolic.sde import SDE

__all__ = ["UniPC", "UniPCCoefficients", "UniPCState", "unipc_orders", "unipc_rhos", "unipc_weights"]

VARIANTS: tuple[str, ...] = ("bh1", "bh2")


def unipc_orders(n: int, order: int, lower_order_final: bool | str) -> list[int]:
    """UniP order of each of the ``n`` steps: warm-up :math:`\\min(P, i + 1)`, then the lower-order final steps."""
    orders = [min(order, i + 1) for i in range(n)]
    if lower_order_final == "always" or (lower_order_final is True and n < 15):
        orders = [min(o, n - i) for i, o in enumerate(orders)]
    return orders


def unipc_rhos(h: float, mu: list[float], nodes: list[float], variant: str) -> tuple[list[float], float]:
    r"""(:math:`\rho`, :math:`\beta`) of one UniP or UniC step of log-SNR length h with the moments ``mu``
    (:math:`\mu_0, \mu_1, \dots`, at least ``len(nodes) + 1``).

    ``nodes`` are the :math:`r_k` of the history used (UniC: with the new point's node 1 last). Solves
    :math:`\sum_k \rho_k r_k^{j-1} = b_j = \mu_j/(h^j\beta)`, j = 1..len(nodes), in float64, except the reference's
    fixed :math:`\rho = (1/2)` for one node (UniP-2, UniC-1).
    """
    k = len(nodes)
    beta = h if variant == "bh1" else mu[0]  # -B(h)
    if k <= 1:
        return [0.5] * k, beta
    r = torch.tensor(nodes, dtype=torch.float64)
    R = torch.stack([r**j for j in range(k)])  # R[j, k] = r_k^j
    b = torch.tensor([mu[j] / (h**j * beta) for j in range(1, k + 1)], dtype=torch.float64)
    return torch.linalg.solve(R, b).tolist(), beta


def _fold(alpha: float, mu0: float, beta: float, rhos: list[float], nodes: list[float]) -> list[float]:
    r"""Weights on :math:`(\hat x_0^{(i)}, \text{then one per node})` of
    :math:`\alpha(\mu_0\hat x_0^{(i)} + \beta\sum_k\rho_k(\hat x_0^{(k)} - \hat x_0^{(i)})/r_k)`."""
    w = [alpha * beta * rho / r for rho, r in zip(rhos, nodes)]
    return [alpha * mu0 - sum(w), *w]


@dataclasses.dataclass(frozen=True)
class UniPCCoefficients:
    r"""Per grid point: :math:`\alpha_i`, :math:`\sigma_i^2`, :math:`m_i`; per step: :math:`\sigma_{i+1}/\sigma_i`,
    the UniP weights on :math:`(\hat x_0^{(i)}, \hat x_0^{(i-1)}, \dots)` and the UniC weights on
    :math:`(\hat x_0^{(i+1)}, \hat x_0^{(i)}, \hat x_0^{(i-1)}, \dots)` (empty: step not corrected); all include
    the factor :math:`\alpha_{i+1}`. ``orders`` are the UniP orders :math:`p_i`; ``keep`` their maximum (the
    history length)."""

    ratio: list[float]
    alpha: list[float]
    sigma2: list[float]
    m: list[float]
    predict: list[list[float]]
    correct: list[list[float]]
    orders: list[int]
    keep: int


@dataclasses.dataclass(frozen=True)
class UniPCState:
    """Coefficients, the denoiser history (newest first) and the (corrected) y the last step started from."""

    coef: UniPCCoefficients
    history: tuple[torch.Tensor, ...] = ()
    y_prev: torch.Tensor | None = None


def unipc_weights(
    lam: torch.Tensor, alpha: torch.Tensor, orders: list[int], variant: str, corrector: bool
) -> tuple[list[list[float]], list[list[float]]]:
    """UniP and UniC weights of every step (float64; see :class:`UniPCCoefficients`) on the log-SNR grid ``lam``."""
    lams, alphas = lam.tolist(), alpha.tolist()
    n = len(lams) - 1
    moments = torch.stack(exp_moments(lam[1:] - lam[:-1], max(orders) + 1), dim=1).tolist()  # mu_j of every step
    predict, correct = [], []
    for i, p in enumerate(orders):
        h, mu = lams[i + 1] - lams[i], moments[i]
        nodes = [(lams[i - k] - lams[i]) / h for k in range(1, p)]
        rhos, beta = unipc_rhos(h, mu, nodes, variant)
        predict.append(_fold(alphas[i + 1], mu[0], beta, rhos, nodes))
        if corrector and i < n - 1:
            nodes = [*nodes, 1.0]
            rhos, beta = unipc_rhos(h, mu, nodes, variant)
            w = _fold(alphas[i + 1], mu[0], beta, rhos, nodes)
            correct.append([w[-1], *w[:-1]])  # the new point first, then x0_i, x0_{i-1}, ...
        else:
            correct.append([])
    return predict, correct


@register
class UniPC(GridSolver[UniPCState]):
    r"""UniPC (Zhao et al., 2023): multistep UniP-p predictor + UniC corrector (B(h), data prediction) on the PF-ODE.

    See the module docstring for the updates. Options: ``order`` (1, 2 or 3; default 2, i.e. UniPC-2, global order
    3 with the corrector), ``variant`` (``"bh1"`` or ``"bh2"``, default ``"bh2"``), ``corrector`` (True: UniC on
    every step but the last; False or None: the plain UniP predictor), ``lower_order_final`` (True: the last steps
    drop to order 1 in runs of fewer than 15 steps; ``"always"``: in every run, like the reference code and
    diffusers; False), ``grid`` (default ``"optimized"``, measured best). Any affine SDE. NFE: one per step (the
    corrector reuses the next step's evaluation); ``steps=k`` of :func:`sdekit.sample` is k model evaluations in all.
    """

    name = "unipc"
    kind = "ode"
    weak_order = 3.0
    noise_types = ("additive",)
    requires_affine = True
    grid = "optimized"  # measured best across VP, VE and a user SDE (docs/benchmarks.md)
    steps_are_nfe = True
    default_steps = 25  # sub-VP's moment test needs it on the log-SNR grid; VP and VE pass at 20
    description = "UniPC (UniP predictor + UniC corrector, B(h)) on the PF-ODE; orders 1-3; any affine SDE"
    options_declared: ClassVar[dict[str, Option]] = {
        "order": Option.choice(2, (1, 2, 3), "order p of the UniP predictor (UniPC-p: order p + 1 with the corrector)"),
        "variant": Option.choice("bh2", VARIANTS, "B(h) of the UniPC updates: 'bh1' B(h) = -h, 'bh2' B(h) = e^-h - 1"),
        "corrector": Option.choice(
            True,
            (True, False, None, "none"),
            "the UniC corrector on every step but the last; False, None or 'none': off",
        ),
        "lower_order_final": Option.choice(
            True,
            (True, False, "always", "auto"),
            "the last steps drop to order 1 in runs of fewer than 15 steps; 'always': in every run (the reference); "
            "'auto': order 1 at the steps where, for Gaussian data of scale data_std, the constant beats every higher "
            "order (the low-noise end, where the denoiser saturates)",
        ),
    }

    def grid_order(self, options: Mapping[str, Any], sde: SDE | None = None) -> int:
        """The ``"optimized"`` grid's order: the run's ``order`` option p, plus one with the UniC corrector (UniPC-p
        then converges at order p + 1)."""
        return int(options["order"]) + (1 if options["corrector"] is True else 0)

    def prepare(self, ctx: StepContext, opts: dict[str, Any]) -> UniPCState:
        order, variant, corrector, lof = opts["order"], opts["variant"], opts["corrector"], opts["lower_order_final"]
        corrector = corrector is True  # None / "none": sdekit.sample's spelling of "predictor only"
        marginal = ctx.problem.sde.marginal
        times = ctx.times
        lam = grid_log_snr(ctx, self.name)
        alpha, sigma, m = marginal.alpha(times), marginal.sigma(times), marginal.offset(times)
        orders = unipc_orders(times.shape[0] - 1, int(order), lof if lof in ("always", "auto") else bool(lof))
        if lof == "auto":  # order 1 where the Gaussian proxy's denoiser saturates (saturation_orders)
            orders = saturation_orders(lam, orders, opts["data_std"])
        predict, correct = unipc_weights(lam, alpha, orders, variant, corrector)
        coef = UniPCCoefficients(
            (sigma[1:] / sigma[:-1]).tolist(),
            alpha.tolist(),
            (sigma**2).tolist(),
            m.tolist(),
            predict,
            correct,
            orders,
            max(orders),
        )
        return UniPCState(coef)

    def step(self, ctx: StepContext, state: UniPCState, x: torch.Tensor, i: int) -> tuple[torch.Tensor, UniPCState]:
        """One evaluation at :math:`t_i`; UniC for step i - 1 with it (when on); UniP-:math:`p_i` to :math:`t_{i+1}`."""
        c = state.coef
        y = x - c.m[i]
        hist = ((y + c.sigma2[i] * ctx.score(x, i)) / c.alpha[i], *state.history)
        if i > 0 and c.correct[i - 1]:  # UniC for step i - 1 with this evaluation (no extra NFE)
            y = c.ratio[i - 1] * state.y_prev + weighted_sum(c.correct[i - 1], hist)
        y_next = c.ratio[i] * y + weighted_sum(c.predict[i], hist)
        return y_next + c.m[i + 1], UniPCState(c, hist[: c.keep], y)
