r"""Experiment: can a fixed-grid exponential integrator cut the evaluations ``logp`` needs?

``sdekit.logp`` integrates the probability-flow ODE with torchdiffeq's adaptive ``dopri5``, which needs
about as many evaluations as the scipy RK45 reference (same Dormand–Prince pair) for the same worst-case
error. Sampling reaches the exact law in 20 evaluations with ``exp3`` on the ``arctan`` grid, so this
script measures whether the same integrator, plus a quadrature for the log-density, does better for
likelihoods. It is an experiment, not a solver of the library: its result (no, see docs/likelihood.md)
is why ``logp`` stays on torchdiffeq.

The method, for an affine SDE with marginal :math:`x_t = \alpha x_0 + m + \sigma\varepsilon` and half
log-SNR :math:`\lambda = \log(\alpha/\sigma)`: the state moves from :math:`\epsilon` to T with the
third-order data-prediction multistep update of :mod:`sdekit.solvers._exponential` (DPM-Solver++(3M),
2S warm-up) on a grid decreasing in :math:`\lambda`, and the log-density change is

.. math::
    \int_\epsilon^T \nabla\!\cdot\tilde f\,dt
    = d\log\frac{\alpha(T)}{\alpha(\epsilon)}
      + \int_{\lambda(\epsilon)}^{\lambda(T)} \sigma^2\,\nabla\!\cdot s\,d\lambda,

(from :math:`\dot y = \tfrac{\sigma'}{\sigma} y + \lambda'\alpha\hat x_0`, :math:`\alpha\hat x_0 = y + \sigma^2 s`),
whose integrand :math:`\sigma^2\nabla\!\cdot s \in [-d, 0]` is smooth in :math:`\lambda`; it is integrated
by the composite rule that integrates the cubic through the four nearest grid nodes on each interval
(fourth order). Evaluations: steps + 1 on the grid (the last node, T, only for the quadrature) + 1 (warm-up).

Case: the 2-D three-component mixture of ``benchmarks.likelihood`` (exact score and exact density,
exact :math:`p_T` as prior), batch 256, float64, exact trace. Printed per grid and step count: NFE and the
worst / median error against the exact log-density, beside the reference (scipy RK45 at 1e-5) and
``sdekit.logp`` (dopri5) at a few tolerances. Run ``python -m benchmarks.likelihood_fixed_grid``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import sdekit
from sdekit._traces import ExactTrace
from sdekit.solvers._exponential import lagrange_weights
from sdekit.solvers._grids import log_snr, t_of_log_snr, time_grid

from .likelihood import DT, mixture_2d, reference_logp


def cubic_quadrature_weights(nodes: np.ndarray) -> np.ndarray:
    r"""Weights :math:`w_i` with :math:`\sum_i w_i q(\lambda_i) \approx \int_{\lambda_0}^{\lambda_n} q\,d\lambda`.

    On each interval the cubic through the four nearest nodes is integrated exactly (4-point Gauss–Legendre
    on the interval); any monotone node order, the integral is signed like :math:`\lambda_n - \lambda_0`.
    """
    n = len(nodes) - 1
    k = min(4, n + 1)
    gx, gw = np.polynomial.legendre.leggauss(4)
    w = np.zeros(n + 1)
    for i in range(n):
        lo = min(max(i - (k // 2 - 1), 0), n + 1 - k)
        idx = range(lo, lo + k)
        a, b = nodes[i], nodes[i + 1]
        xs, ws = 0.5 * (b - a) * gx + 0.5 * (a + b), 0.5 * (b - a) * gw
        for j in idx:
            basis = np.ones_like(xs)
            for m in idx:
                if m != j:
                    basis *= (xs - nodes[m]) / (nodes[j] - nodes[m])
            w[j] += float((ws * basis).sum())
    return w


def exp3_logp(score, sde: sdekit.SDE, x: torch.Tensor, steps: int, *, eps: float, grid: str, prior) -> tuple:
    """Log-density by the exponential integrator + quadrature above; returns (logp, nfe)."""
    marginal, T = sde.marginal, float(sde.T)
    times = time_grid(sde, eps, T, steps, grid)  # increasing t, decreasing lambda
    lam = log_snr(marginal, times)
    h = lam[1:] - lam[:-1]
    alpha, sigma, m = marginal.alpha(times).tolist(), marginal.sigma(times), marginal.offset(times).tolist()
    sig2, ratio = (sigma**2).tolist(), (sigma[1:] / sigma[:-1]).tolist()
    idx = torch.arange(steps)
    a = torch.where(idx >= 1, lam[(idx - 1).clamp_min(0)] - lam[idx], h / 2)  # step 0: the 2S midpoint node
    b = torch.where(idx >= 2, lam[(idx - 2).clamp_min(0)] - lam[idx], -h)  # placeholder where unused
    zero = torch.zeros_like(h)
    table = {1: lagrange_weights(h, [zero]), 2: lagrange_weights(h, [zero, a]), 3: lagrange_weights(h, [zero, a, b])}
    table = {k: torch.stack(w, 1).tolist() for k, w in table.items()}
    weights = [table[2][0]] + [table[min(3, i + 1)][i] for i in range(1, steps)]
    t_mid = t_of_log_snr(marginal, (lam[0] + h[0] / 2).reshape(1), eps, T)
    mid_alpha, mid_sig2 = float(marginal.alpha(t_mid)), float(marginal.sigma2(t_mid))
    mid_m = float(marginal.offset(t_mid))
    mid_ratio = float(marginal.sigma(t_mid) / sigma[0])
    mid_w = float(lagrange_weights(h[0:1] / 2, [torch.zeros(1, dtype=torch.float64)])[0])

    trace = ExactTrace(x)
    nfe = 0

    def evaluate(state: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal nfe
        nfe += 1
        with torch.enable_grad():
            s, div = trace(
                lambda xr, tt: score(xr, tt.expand(xr.shape[0])),
                state.detach().requires_grad_(True),
                torch.tensor(t, dtype=x.dtype),
                False,
            )
        return s.detach(), div.detach()

    q, history, state = [], [], x.clone()
    for i in range(steps):
        y = state - m[i]
        s, div = evaluate(state, float(times[i]))
        q.append(sig2[i] * div)
        history.insert(0, (y + sig2[i] * s) / alpha[i])
        del history[3:]
        w = weights[i]
        if i == 0:  # 2S warm-up: DDIM to the log-SNR midpoint, then the second-order step
            u = mid_ratio * y + mid_alpha * mid_w * history[0]
            s_mid, _ = evaluate(u + mid_m, float(t_mid))
            est = w[0] * history[0] + w[1] * (u + mid_sig2 * s_mid) / mid_alpha
        else:
            est = sum(w[j] * history[j] for j in range(len(w)))
        state = ratio[i] * y + alpha[i + 1] * est + m[i + 1]
    _, div = evaluate(state, T)
    q.append(sig2[steps] * div)
    quad = cubic_quadrature_weights(lam.numpy())
    delta = x[0].numel() * math.log(alpha[steps] / alpha[0]) + sum(float(quad[i]) * q[i] for i in range(steps + 1))
    return prior.log_prob(state) + delta, nfe


def main(repeats: int = 3, threads: int = 1) -> None:
    del repeats  # accuracy only: nothing is timed
    torch.set_num_threads(threads)
    eps = 1e-5
    x2 = torch.randn(256, 2, generator=torch.Generator().manual_seed(1), dtype=DT) * 1.5
    print("Fixed-grid exp3 + cubic quadrature of sigma^2 div s vs adaptive solvers (2-D mixture, batch 256, float64)")
    for sde_name, sde in (("VP", sdekit.VPSDE()), ("VE", sdekit.VESDE())):
        mix = mixture_2d(sde)
        exact, prior = mix.log_prob(x2, eps), mix.at(sde.T)

        def row(label: str, lp: torch.Tensor, nfe: int) -> None:
            err = (lp - exact).abs()
            print(f"  {label:34s} nfe {nfe:4d}   worst {err.max():.1e}   median {err.median():.1e}")

        print(f"{sde_name}:")
        lp_ref, nfe_ref = reference_logp(mix, sde, x2, rtol=1e-5, atol=1e-5, eps=eps, prior=prior)
        row("reference RK45, rtol=atol=1e-5", lp_ref, nfe_ref)
        for tol in (1e-4, 5e-5, 1e-5):
            with torch.no_grad():
                lp, info = sdekit.logp(mix, sde, x2, rtol=tol, atol=tol, eps=eps, prior=prior, return_info=True)
            row(f"sdekit.logp dopri5, {tol:g}", lp, info.nfe)
        for grid in ("arctan", "logsnr"):
            for steps in (20, 40, 80, 160, 320):
                lp, nfe = exp3_logp(mix, sde, x2, steps, eps=eps, grid=grid, prior=prior)
                row(f"exp3 + quadrature, {grid}, {steps} steps", lp, nfe)


if __name__ == "__main__":
    main()
