"""sdekit.logp against the usual hand-written likelihood (scipy RK45 on the flattened state).

The reference is the approach of the score_sde code base: ``scipy.integrate.solve_ivp``
(RK45) on the flattened (x, log-density) state, converting numpy <-> torch at every call,
the drift evaluated once without grad and once more with grad for the divergence (exact:
one backward pass per coordinate; Hutchinson: one probe, the same probes as sdekit's).
Same model, same tolerances, float64 on both sides, one torch thread (the machines are
shared; small tensors only lose to intra-op spin-waits).

Cases: a 2-D, 3-component Gaussian mixture under VPSDE at batch 256 with the exact trace
(exact density known, so both errors are printed), and an image-sized batch
(8, 3, 32, 32) with Hutchinson: a two-component isotropic mixture score plus a small
convolutional residual (conv cost of a real model, well-posed ODE).

Printed: time of each side (min of 3 repeats), speed ratio, NFE, max |sdekit - reference|,
and for 2-D the max error of each against the exact log-density. Run
``python -m benchmarks.likelihood``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp

import sdekit

DT = torch.float64


class MixtureScore(torch.nn.Module):
    """Exact score and log-density of isotropic Gaussian-mixture data diffused by an affine SDE."""

    def __init__(self, sde: sdekit.SDE, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor | None = None):
        super().__init__()
        self.sde = sde
        self.means = means.to(DT)
        self.stds = stds.to(DT)
        k = means.shape[0]
        w = torch.full((k,), 1.0 / k, dtype=DT) if weights is None else weights.to(DT)
        self.logw = torch.log(w / w.sum())

    def _parts(self, x: torch.Tensor, t: torch.Tensor):
        t = torch.as_tensor(t, dtype=DT).expand(x.shape[0])
        marg = self.sde.marginal
        alpha, m, sig2 = marg.alpha(t), marg.offset(t), marg.sigma2(t)
        xf = x.reshape(x.shape[0], 1, -1)
        mean = alpha[:, None, None] * self.means.reshape(1, self.means.shape[0], -1) + m[:, None, None]
        var = alpha[:, None] ** 2 * self.stds**2 + sig2[:, None]
        diff = xf - mean
        logc = self.logw - 0.5 * (diff**2).sum(-1) / var - 0.5 * xf.shape[-1] * torch.log(2 * math.pi * var)
        return diff, var, logc

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        diff, var, logc = self._parts(x, t)
        r = torch.softmax(logc, dim=1)
        return (-(r / var)[..., None] * diff).sum(1).reshape(x.shape)

    def log_prob(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return torch.logsumexp(self._parts(x, t)[2], dim=1)

    def at(self, t: float):
        outer = self

        class _Marginal:
            def log_prob(self, z: torch.Tensor) -> torch.Tensor:
                return outer.log_prob(z, t)

        return _Marginal()


class ConvPerturbed(torch.nn.Module):
    """Image-sized model: exact mixture score plus a small fixed convolutional residual."""

    def __init__(self, base: MixtureScore, channels: int = 3, hidden: int = 32, scale: float = 0.05):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.base = base
        self.conv1 = torch.nn.Conv2d(channels, hidden, 3, padding=1, dtype=DT)
        self.conv2 = torch.nn.Conv2d(hidden, channels, 3, padding=1, dtype=DT)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=DT) * 0.1)
        self.scale = scale
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.base(x, t) + self.scale * self.conv2(torch.tanh(self.conv1(x)))


def reference_logp(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sde: sdekit.SDE,
    x: torch.Tensor,
    *,
    rtol: float,
    atol: float,
    eps: float,
    prior,
    probe: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """The usual implementation: scipy RK45 on the flattened state, numpy <-> torch at every call."""
    shape, batch, dim = x.shape, x.shape[0], x[0].numel()
    pf = sde.probability_flow(score)

    def ode_func(t: float, y: np.ndarray) -> np.ndarray:
        xs = torch.from_numpy(y[:-batch]).reshape(shape).to(DT)
        tt = torch.tensor(t, dtype=DT)
        with torch.no_grad():
            drift = pf.drift(xs, tt)
        with torch.enable_grad():
            xg = xs.clone().requires_grad_(True)
            out = pf.drift(xg, tt)
            if probe is not None:
                (g,) = torch.autograd.grad((out * probe).sum(), xg)
                div = (g * probe).reshape(batch, -1).sum(1)
            else:
                flat = out.reshape(batch, -1)
                div = sum(
                    torch.autograd.grad(flat[:, i].sum(), xg, retain_graph=True)[0].reshape(batch, -1)[:, i]
                    for i in range(dim)
                )
        return np.concatenate([drift.numpy().reshape(-1), div.detach().numpy()])

    y0 = np.concatenate([x.numpy().reshape(-1), np.zeros(batch)])
    sol = solve_ivp(ode_func, (eps, sde.T), y0, rtol=rtol, atol=atol, method="RK45")
    if not sol.success:  # pragma: no cover
        raise RuntimeError(sol.message)
    z = torch.from_numpy(sol.y[:-batch, -1]).reshape(shape)
    delta = torch.from_numpy(sol.y[-batch:, -1])
    return prior.log_prob(z) + delta, int(sol.nfev)


def _best_of(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _case(name, model, sde, x, *, trace, rtol, atol, eps, prior, exact, repeats, ref_tol=None):
    ref_tol = rtol if ref_tol is None else ref_tol
    probe = None
    if trace == "hutchinson":  # the very probes sdekit draws with this seed
        probe = sdekit._likelihood._draw_probes("rademacher", 1, x, torch.Generator().manual_seed(0))[0]

    def ours():
        with torch.no_grad():
            return sdekit.logp(
                model,
                sde,
                x,
                rtol=rtol,
                atol=atol,
                eps=eps,
                trace=trace,
                prior=prior,
                generator=torch.Generator().manual_seed(0),
                return_info=True,
            )

    def ref():
        return reference_logp(model, sde, x, rtol=ref_tol, atol=ref_tol, eps=eps, prior=prior, probe=probe)

    t_ours, (lp, info) = _best_of(ours, repeats)
    t_ref, (lp_ref, nfe_ref) = _best_of(ref, repeats)
    print(f"{name}  (trace={trace}, rtol=atol={rtol:g}, reference at {ref_tol:g}, best of {repeats})")
    print(f"  sdekit.logp : {t_ours:8.3f} s   nfe {info.nfe:5d}")
    print(f"  reference   : {t_ref:8.3f} s   nfe {nfe_ref:5d}")
    print(f"  speed ratio : {t_ref / t_ours:8.2f}x   max |sdekit - reference| = {(lp - lp_ref).abs().max():.2e} nats")
    if exact is not None:
        print(
            f"  max |error| vs exact log-density: sdekit {(lp - exact).abs().max():.2e}, "
            f"reference {(lp_ref - exact).abs().max():.2e}  (median {(lp - exact).abs().median():.1e} / "
            f"{(lp_ref - exact).abs().median():.1e})"
        )
    return t_ref / t_ours


def main(repeats: int = 3, threads: int = 1) -> None:
    torch.set_num_threads(threads)
    eps = 1e-5
    print(f"sdekit.logp vs scipy RK45 reference (float64, torch threads = {threads})\n")

    sde = sdekit.VPSDE()
    gen = torch.Generator().manual_seed(1)
    mix = MixtureScore(
        sde,
        torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]]),
        torch.tensor([0.4, 0.6, 0.5]),
        torch.tensor([0.3, 0.5, 0.2]),
    )
    x2 = torch.randn(256, 2, generator=gen, dtype=DT) * 1.5
    exact2 = mix.log_prob(x2, eps)
    # same tolerances, then the reference at 10x tighter tolerances (comparable worst-case error)
    for tol, ref_tol in ((1e-5, 1e-5), (1e-5, 1e-6), (1e-7, 1e-7)):
        _case(
            "2-D mixture, batch 256",
            mix,
            sde,
            x2,
            trace="exact",
            rtol=tol,
            atol=tol,
            eps=eps,
            prior=mix.at(sde.T),
            exact=exact2,
            repeats=repeats,
            ref_tol=ref_tol,
        )
        print()

    means = torch.stack([torch.full((3, 32, 32), -0.3), torch.full((3, 32, 32), 0.4)])
    img_base = MixtureScore(sde, means, torch.tensor([0.5, 0.3]))
    img = ConvPerturbed(img_base)
    ximg = means[0].to(DT) + 0.5 * torch.randn(8, 3, 32, 32, generator=gen, dtype=DT)
    _case(
        "images (8, 3, 32, 32)",
        img,
        sde,
        ximg,
        trace="hutchinson",
        rtol=1e-5,
        atol=1e-5,
        eps=eps,
        prior=img_base.at(sde.T),
        exact=None,
        repeats=repeats,
    )


if __name__ == "__main__":
    main()
