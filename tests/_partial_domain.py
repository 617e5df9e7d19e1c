"""SDEs defined on part of the line, shared by tests/testing/test_strategies.py and
tests/testing/test_symbolic_assertions.py."""

from __future__ import annotations

import sympy as sp

from sdekit import SDE


class GBM(SDE):
    """Geometric Brownian motion: g = sigma x vanishes at x = 0."""

    mu = 0.5
    sigma = 0.4

    def drift(self, x, t):
        return self.mu * x

    def diffusion(self, x, t):
        return self.sigma * x


class CIR(SDE):
    """Cox-Ingersoll-Ross: dx = kappa (theta - x) dt + sigma sqrt(x) dW; g is undefined (NaN) for x < 0."""

    kappa = 2.0
    theta = 1.0
    sigma = 0.5

    def drift(self, x, t):
        return self.kappa * (self.theta - x)

    def diffusion(self, x, t):
        return self.sigma * sp.sqrt(x)
