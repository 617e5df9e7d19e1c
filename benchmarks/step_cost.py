r"""Per-step cost of fixed-step sampling: sdekit vs a hand-written loop vs torchsde's default Brownian motion.

Problem: VPSDE, 2-D Gaussian data N(mu, s^2 I) with its exact score written in plain torch
(the same model object for every contender), reverse SDE from T = 1 to eps = 1e-3 in
``STEPS`` uniform steps, float32, one torch thread.

Contenders (time per step, minimum over ``repeats`` runs, and the ratio to the hand loop):

* ``hand loop``: the Euler–Maruyama loop one writes by hand,
  ``x += (f - g^2 s) dt + g sqrt(dt) z`` with Python-float coefficients and ``torch.randn``;
* ``sdekit euler`` / ``sdekit srk``: ``sdekit.sample(..., steps=STEPS, denoise=False)``
  (torchsde's steppers driven by sdekit's light :class:`FixedStepBrownian`);
* ``torchsde euler`` / ``torchsde srk``: ``torchsde.sdeint`` on the same reverse SDE with its
  default Brownian motion (``BrownianInterval``), as a user calling torchsde directly would.

Run ``python -m benchmarks step_cost`` (or ``python -m benchmarks.step_cost``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torchsde

import sdekit

STEPS = 200
BATCHES = ((64, 2), (4096, 2))
EPS = 1e-3
BETA_MIN, BETA_MAX = 0.1, 20.0


class GaussianVPScore(torch.nn.Module):
    r"""Exact VP score of N(mu, s^2 I) data: :math:`-(x - \alpha\mu)/(\alpha^2 s^2 + 1 - \alpha^2)`."""

    def __init__(self, mu: float = 0.5, s: float = 0.8) -> None:
        super().__init__()
        self.mu, self.s2 = mu, s * s

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t[:, None]
        log_alpha = -0.25 * t * t * (BETA_MAX - BETA_MIN) - 0.5 * t * BETA_MIN
        alpha2 = torch.exp(2 * log_alpha)
        return (alpha2.sqrt() * self.mu - x) / (alpha2 * self.s2 + 1 - alpha2)


def hand_loop(model: GaussianVPScore, x_T: torch.Tensor, steps: int, gen: torch.Generator) -> torch.Tensor:
    """Reverse-time Euler–Maruyama for VP, written by hand."""
    x = x_T
    h = (1.0 - EPS) / steps
    batch = x.shape[0]
    for i in range(steps):
        t = 1.0 - i * h
        beta = BETA_MIN + t * (BETA_MAX - BETA_MIN)
        score = model(x, torch.full((batch,), t, dtype=x.dtype))
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        x = x + (0.5 * beta * x + beta * score) * h + math.sqrt(beta * h) * noise
    return x


class TorchsdeReverseVP:
    """The same reverse SDE for torchsde.sdeint, in s = 1 - t (diagonal noise, Itô)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, model: GaussianVPScore) -> None:
        self.model = model

    def f(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = 1.0 - float(s)
        beta = BETA_MIN + t * (BETA_MAX - BETA_MIN)
        return 0.5 * beta * y + beta * self.model(y, torch.full((y.shape[0],), t, dtype=y.dtype))

    def g(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = 1.0 - float(s)
        return torch.full_like(y, math.sqrt(BETA_MIN + t * (BETA_MAX - BETA_MIN)))


def _best(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main(repeats: int = 3, threads: int = 1) -> None:
    """Print per-step costs and ratios to the hand-written loop for each batch size."""
    torch.set_num_threads(threads)
    sde = sdekit.VPSDE()
    model = GaussianVPScore()
    rsde = TorchsdeReverseVP(model)
    print(f"per-step cost, VP reverse SDE, {STEPS} steps, float32, torch threads = {threads}, min of {repeats}\n")
    for shape in BATCHES:
        x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        ts = torch.tensor([0.0, 1.0 - EPS])
        h = (1.0 - EPS) / STEPS
        cases: dict[str, Callable[[], object]] = {
            "hand loop (EM)": lambda: hand_loop(model, x_T, STEPS, torch.Generator().manual_seed(1)),
            "sdekit euler": lambda: sdekit.sample(
                model,
                sde,
                shape,
                solver="euler",
                steps=STEPS,
                x_T=x_T,
                denoise=False,
                generator=torch.Generator().manual_seed(1),
            ),
            "sdekit srk": lambda: sdekit.sample(
                model,
                sde,
                shape,
                solver="srk",
                steps=STEPS,
                x_T=x_T,
                denoise=False,
                generator=torch.Generator().manual_seed(1),
            ),
            "torchsde euler + BrownianInterval": lambda: torchsde.sdeint(rsde, x_T, ts, method="euler", dt=h),
            "torchsde srk + BrownianInterval": lambda: torchsde.sdeint(rsde, x_T, ts, method="srk", dt=h),
        }
        with torch.no_grad():
            times = {name: _best(fn, repeats) for name, fn in cases.items()}
        base = times["hand loop (EM)"]
        print(f"batch {shape}:")
        for name, seconds in times.items():
            print(f"  {name:36s} {seconds / STEPS * 1e6:9.1f} us/step   {seconds / base:6.2f}x hand loop")
        print()


if __name__ == "__main__":
    main()
