"""The demo's embedded problem, its statistical levels and the sizes of a run (``--quick`` or full)."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = [
    "MEANS",
    "STDS",
    "WEIGHTS",
    "ADAPTIVE_SDE_SOLVERS",
    "ALPHA",
    "K_DIRECTIONS",
    "LOGP_TOL",
    "LOW_NOISE",
    "N_PROFILE",
    "DemoConfig",
    "FULL",
    "QUICK",
]

# --------------------------------------------------------------------------- the embedded problem
MEANS = [[-2.0, 0.0], [2.0, 1.0], [0.5, -2.0]]
STDS = [0.35, 0.5, 0.4]
WEIGHTS = [0.3, 0.45, 0.25]
ADAPTIVE_SDE_SOLVERS = ("srk",)  # SDE solvers run with a tolerance ladder; other SDE solvers take fixed steps
ALPHA = 1e-3  # family-wise level of the sliced KS test
K_DIRECTIONS = 16  # fixed projection directions of the sliced KS test
LOGP_TOL = 1e-5  # rtol = atol of sdekit.logp

# --------------------------------------------------------------------------- the outlier diagnosis
LOW_NOISE = 10.0  # the diagnosis's low-noise end: t <= LOW_NOISE * eps
N_PROFILE = 4000  # draws of p_t per time of the learned score's error profile


@dataclass
class DemoConfig:
    """Sizes of one demo run (``--quick`` or full)."""

    train_steps: int
    batch: int
    width: int
    n_samples: int
    n_logp: int
    steps: dict[str, tuple[int, ...]]  # fixed-step ladders per solver kind
    tols: tuple[float, ...]  # rtol = atol ladder of adaptive ODE solvers
    sde_tols: tuple[float, ...]  # rtol = atol ladder of adaptive SDE solvers (srk)
    n_paths: int = 24


FULL = DemoConfig(
    train_steps=3000,
    batch=512,
    width=128,
    n_samples=10_000,
    n_logp=1000,
    steps={"default": (10, 30, 100), "exp": (5, 10, 20, 50), "pc": (10, 30, 60)},
    tols=(1e-1, 1e-2, 1e-3, 1e-4),
    sde_tols=(1e-1, 1e-2),
)
QUICK = replace(  # the full run, smaller: network, training, samples, held-out points, ODE tolerances
    FULL, train_steps=1500, width=64, n_samples=4000, n_logp=300, tols=(1e-1, 1e-2, 1e-3)
)
