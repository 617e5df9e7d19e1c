"""Property-test a custom SDE with sdekit.testing (docs/testing.md; this exact file runs in CI)."""

import sympy as sp
from hypothesis import given, settings

import sdekit
from sdekit import testing


class MySDE(sdekit.SDE):
    theta, sigma = 1.0, 0.5  # dx = -theta (1 + t) x dt + sigma sqrt(1 + t) dW

    def drift(self, x, t):
        return -self.theta * (1 + t) * x

    def diffusion(self, x, t):
        return self.sigma * sp.sqrt(1 + t)


@settings(max_examples=10, deadline=None)  # sympy derivations take ~0.1-1 s per SDE
@given(params=testing.parameters(MySDE))
def test_my_sde(params):
    sde = MySDE(**params)
    testing.assert_fokker_planck(sde)  # the derived kernel solves Fokker-Planck
    testing.assert_chapman_kolmogorov(sde)  # transition kernels compose
    testing.assert_reverse_consistent(sde)  # reverse SDE and PF-ODE carry the same marginals
