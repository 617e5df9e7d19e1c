"""Shared cases for tests/test_analytic.py and tests/test_parameterization.py.

SDEs are built once per process (the sympy derivation of a class costs 0.1-3 s the first
time); hypothesis draws their names, never new classes.
"""

from __future__ import annotations

import functools

import torch
from hypothesis import strategies as st

import sdekit
from sdekit import analytic

DT = torch.float64

_BUILDERS = {
    "vp": lambda: sdekit.VPSDE(),
    "ve": lambda: sdekit.VESDE(),
    "subvp": lambda: sdekit.SubVPSDE(),
    "edm": lambda: sdekit.EDMSDE(),
    "ou": lambda: sdekit.OrnsteinUhlenbeck(),
    # time-dependent rate and diffusion, closed-form marginal
    "custom": lambda: sdekit.SDE.from_expressions("-theta*(1+t)*x", "sigma*sqrt(1+t)", theta=1.0, sigma=0.5),
    # non-zero mean offset m(t)
    "offset": lambda: sdekit.SDE.from_expressions("-theta*x + b*t", "sigma", theta=1.0, b=0.8, sigma=0.7),
    # no closed form: alpha, m, sigma come from the numeric quadrature table
    "numeric": lambda: sdekit.SDE.from_expressions("-x*(1+t**2) + 1/2", "1"),
}
SDE_NAMES = tuple(_BUILDERS)


@functools.cache
def get_sde(name: str) -> sdekit.SDE:
    return _BUILDERS[name]()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_mixture(seed: int, k: int, d: int, kind: str, spread: float = 2.0, scale: float = 0.7):
    """A mixture with K components in d dims: ``kind`` is "iso", "diag" or "full"."""
    g = gen(seed)
    means = spread * torch.randn(k, d, generator=g, dtype=DT)
    weights = torch.rand(k, generator=g, dtype=DT) + 0.05
    if kind == "iso":
        return analytic.GaussianMixture(means, scale * (0.4 + torch.rand(k, generator=g, dtype=DT)), weights)
    if kind == "diag":
        return analytic.GaussianMixture(means, scale * (0.4 + torch.rand(k, d, generator=g, dtype=DT)), weights)
    a = torch.randn(k, d, d, generator=g, dtype=DT)
    covs = scale**2 * (a @ a.transpose(-1, -2) / d + 0.15 * torch.eye(d, dtype=DT))
    return analytic.GaussianMixture(means, weights=weights, covs=covs)


@st.composite
def mixtures(draw, max_k: int = 4, max_d: int = 3):
    """Hypothesis strategy: random mixtures of every covariance kind."""
    return random_mixture(
        seed=draw(st.integers(0, 2**31 - 1)),
        k=draw(st.integers(1, max_k)),
        d=draw(st.integers(1, max_d)),
        kind=draw(st.sampled_from(["iso", "diag", "full"])),
        spread=draw(st.floats(0.0, 4.0)),
        scale=draw(st.floats(0.05, 2.0)),
    )


def times(sde: sdekit.SDE, fracs) -> torch.Tensor:
    """Times ``frac * T`` (fracs in (0, 1]) as a float64 tensor."""
    return torch.as_tensor(fracs, dtype=DT) * sde.T


# Log-uniform fractions of T in [1e-5, 1]: tiny times are where conversions are worst conditioned.
time_fracs = st.floats(-5.0, 0.0).map(lambda e: 10.0**e)
