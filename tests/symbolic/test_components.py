"""k-component SDEs: declaration checks, noise types, compiled drift and diffusion, affine detection, the symbolic
reverse / probability-flow drifts with matrix diffusion and the multivariate Fokker–Planck operator."""

from __future__ import annotations

import pytest
import sympy as sp
import torch

import sdekit
from sdekit.errors import NotAffineError, SDEDeclarationError


class Coupled(sdekit.SDE):
    """A coupled linear SDE with a full 2 x 2 diffusion (additive, general shape)."""

    components = ("x", "y")
    a = 1
    c = sp.Rational(1, 2)

    def drift(self, x, y, t):
        return (-self.a * x + y, -2 * y + t)

    def diffusion(self, x, y, t):
        return sp.Matrix([[1, self.c], [0, sp.sqrt(1 + t)]])


def _declare(drift, diffusion, **attrs):
    body = {"components": ("x", "v"), "drift": drift, "diffusion": diffusion, **attrs}
    return type("Decl", (sdekit.SDE,), body)()


@pytest.mark.parametrize(
    ("drift", "diffusion", "attrs", "match"),
    [
        (lambda s, x, v, t: (v,), lambda s, x, v, t: (1, 1), {}, "returns 2 expressions"),
        (lambda s, x, v, t: (v, x, t), lambda s, x, v, t: (1, 1), {}, "returns 2 expressions"),
        (lambda s, x, v, t: (v, -x), lambda s, x, v, t: sp.Matrix([[1, 0]]), {}, "must have k = 2 rows"),
        (lambda s, x, v, t: (v, -x), lambda s, x, v, t: (1, 1, 1), {}, "diagonal of G and needs k = 2"),
        (lambda s, x, v, t: (v, -x), lambda s, x, v, t: 1, {}, r"2 x m sympy.Matrix"),
        (lambda s, x, v, t: (v, -x * sp.Symbol("q")), lambda s, x, v, t: (1, 1), {}, "unknown symbol"),
        (lambda s, x, v, t: (v, -x), lambda s, x, v, t: (0, 0), {}, "identically zero"),
        (lambda s, x, v, t: (v, sp.besselj(0, x)), lambda s, x, v, t: (1, 1), {}, "cannot be compiled"),
        (lambda s, x, v, t: (v, -x), lambda s, x, v, t: (0, sp.sqrt(t - 2)), {}, "not finite"),
        (lambda s, x, v, t: (v, -x), lambda s, x, v, t: (1, 1), {"v": 1.0}, "parameter named 'v'"),
        (lambda s, x, v, t: (v, "x"), lambda s, x, v, t: (1, 1), {}, "not a sympy expression"),
        (lambda s, x, v, t: (v, -x), lambda s, x, v, t: (1, 1), {"data_components": ("y",)}, "data_components"),
    ],
)
def test_declaration_errors_say_what_is_wrong(drift, diffusion, attrs, match):
    with pytest.raises(SDEDeclarationError, match=match):
        _declare(drift, diffusion, **attrs)


@pytest.mark.parametrize("components", [("x", "x"), ("x", "t"), "xv", (), ("x", 3)])
def test_bad_component_names_are_refused(components):
    with pytest.raises(SDEDeclarationError, match="components"):
        _declare(lambda s, *a: (0,) * 2, lambda s, *a: (1,) * 2, components=components)


def test_a_parameter_shadowing_an_sde_member_is_refused_for_k_components_too():
    with pytest.raises(SDEDeclarationError, match="replaces the SDE member 'marginal'"):
        _declare(lambda s, x, v, t: (v, -x), lambda s, x, v, t: (1, 1), marginal=1.0)


def test_an_initial_covariance_that_is_not_psd_is_refused():
    with pytest.raises(SDEDeclarationError, match="positive semi-definite"):
        _declare(lambda s, x, v, t: (v, -x), lambda s, x, v, t: (1, 1), initial_covariance=lambda s: sp.diag(0, -1))


def _noise(diffusion):
    return _declare(lambda s, x, v, t: (v, -x), diffusion).noise_type


def test_noise_types_are_detected():
    assert sdekit.CLDSDE().noise_type == "additive"
    assert Coupled().noise_type == "additive"
    assert _noise(lambda s, x, v, t: (sp.sqrt(1 + x**2), 2 + sp.sin(v))) == "diagonal"
    assert _noise(lambda s, x, v, t: (1 + v**2, 1)) == "general"  # G_11 depends on the other component
    assert _noise(lambda s, x, v, t: sp.Matrix([[1, x], [0, 1]])) == "general"
    assert _noise(lambda s, x, v, t: sp.Matrix([[x], [1]])) == "general"  # k x 1
    assert _noise(lambda s, x, v, t: sp.Matrix([[1, 2, 3], [0, 1, t]])) == "additive"  # k x m, state-free


def test_the_issue_declaration_is_the_zoo_cld():
    class CLD(sdekit.SDE):
        components = ("x", "v")
        beta = 4.0
        M = 0.25
        Gamma = 1.0
        T = 1.0

        def drift(self, x, v, t):
            return (self.beta / self.M * v, -self.beta * x - self.Gamma * self.beta / self.M * v)

        def diffusion(self, x, v, t):
            return sp.Matrix([[0, 0], [0, sp.sqrt(2 * self.Gamma * self.beta)]])

    mine, zoo = CLD(), sdekit.CLDSDE()
    ts = torch.linspace(0.01, 1, 7, dtype=torch.float64)
    # round-off: both closed forms are exact (floats inserted as the rationals they print as)
    torch.testing.assert_close(mine.marginal.cov(ts), zoo.marginal.cov(ts), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(mine.marginal.alpha(ts), zoo.marginal.alpha(ts), rtol=1e-13, atol=1e-15)
    assert mine.is_affine and mine.marginal.closed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_drift_and_diffusion_equal_hand_evaluated_values(dtype):
    sde = Coupled()
    X = torch.tensor([[[0.5, -1.0], [2.0, 0.25]], [[1.5, 0.0], [-3.0, 1.0]]], dtype=dtype)  # (batch 2, k 2, event 2)
    t = torch.tensor([0.3, 0.8], dtype=dtype)
    x, y = X[:, 0], X[:, 1]
    tb = t[:, None]
    f = sde.drift_fn(X, t)
    assert f.shape == X.shape and f.dtype == dtype
    torch.testing.assert_close(f[:, 0], -x + y)
    torch.testing.assert_close(f[:, 1], -2 * y + tb.expand_as(y))
    G = sde.diffusion_fn(X, t)
    assert G.shape == (2, 2, 2, 2) and G.dtype == dtype
    torch.testing.assert_close(G[:, 1, 1], torch.sqrt(1 + tb).expand_as(y))
    torch.testing.assert_close(G[:, 0, 1], torch.full_like(y, 0.5))
    torch.testing.assert_close(G[:, 1, 0], torch.zeros_like(y))
    v = torch.randn(2, 2, 2, dtype=dtype, generator=torch.Generator().manual_seed(0))
    Gv = sde.diffusion_fn.matvec(X, t, v)
    torch.testing.assert_close(Gv, torch.einsum("bijp,bjp->bip", G, v))


def test_state_dependent_diffusion_and_scalar_time():
    sde = _declare(lambda s, x, v, t: (v * t, -x), lambda s, x, v, t: sp.Matrix([[sp.exp(-(x**2)), v], [0, 1]]))
    X = torch.tensor([[0.3, -0.7], [1.1, 2.0]], dtype=torch.float64)  # event_shape ()
    G = sde.diffusion_fn(X, 0.5)
    torch.testing.assert_close(G[:, 0, 0], torch.exp(-(X[:, 0] ** 2)))
    torch.testing.assert_close(G[:, 0, 1], X[:, 1])
    torch.testing.assert_close(sde.drift_fn(X, 0.5)[:, 0], 0.5 * X[:, 1])


def test_affine_detection():
    assert sdekit.CLDSDE().is_affine and Coupled().is_affine
    nonlinear = _declare(lambda s, x, v, t: (v, -sp.sin(x)), lambda s, x, v, t: (0, 1))
    assert not nonlinear.is_affine
    with pytest.raises(NotAffineError, match="not affine"):
        _ = nonlinear.marginal
    multiplicative = _declare(lambda s, x, v, t: (v, -x), lambda s, x, v, t: (0, v))
    assert not multiplicative.is_affine
    with pytest.raises(NotAffineError, match="depends on the state"):
        _ = multiplicative.marginal
    A, b = Coupled()._affine.A, Coupled()._affine.b
    a, t = Coupled().symbols["a"], sdekit.t
    assert A == sp.Matrix([[-a, 1], [0, -2]]) and b == sp.Matrix([0, t])


def test_reverse_and_probability_flow_drifts_include_the_divergence_of_GGT():
    sde = _declare(lambda s, x, v, t: (v, -x), lambda s, x, v, t: sp.Matrix([[1 + v**2, 0], [x, 1]]))
    x, v = sde.state_symbols
    sx, sv = sp.symbols("s_x s_v")
    G = sp.Matrix([[1 + v**2, 0], [x, 1]])
    D = G * G.T  # [[(1+v^2)^2, x(1+v^2)], [x(1+v^2), x^2 + 1]]
    div = sp.Matrix([sp.diff(D[0, 0], x) + sp.diff(D[0, 1], v), sp.diff(D[1, 0], x) + sp.diff(D[1, 1], v)])
    assert div == sp.Matrix([2 * x * v, 1 + v**2])  # by hand
    f = sp.Matrix([v, -x])
    s = sp.Matrix([sx, sv])
    rev = sde.reverse((sx, sv)).f
    pf = sde.probability_flow((sx, sv)).f
    assert (rev - (f - div - D * s)).applyfunc(sp.simplify) == sp.zeros(2, 1)
    assert (pf - (f - div / 2 - D * s / 2)).applyfunc(sp.simplify) == sp.zeros(2, 1)


def test_runtime_reverse_drift_matches_the_symbolic_one():
    sde = _declare(lambda s, x, v, t: (v, -x * t), lambda s, x, v, t: sp.Matrix([[1 + v**2, 0], [x, 1]]))
    x, v = sde.state_symbols
    score = sp.Matrix([-x, -v / 2])  # any expression: the drift formula is what is compared
    X = torch.randn(5, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.full((5,), 0.4, dtype=torch.float64)

    def score_fn(X, t):
        return torch.stack([-X[:, 0], -X[:, 1] / 2], dim=1)

    for make in (sde.reverse, sde.probability_flow):
        torch.testing.assert_close(make(score_fn).drift(X, t), make(score).drift(X, t), rtol=1e-12, atol=1e-12)


def test_fokker_planck_operator_on_a_known_solution():
    # dX = G dW with constant G: p = N(0, t G G^T) solves d_t p = 1/2 sum_ij D_ij d_i d_j p
    sde = _declare(lambda s, x, v, t: (0, 0), lambda s, x, v, t: sp.Matrix([[1, 1], [0, 2]]))
    x, v = sde.state_symbols
    t = sdekit.t
    D = sp.Matrix([[2, 2], [2, 4]])
    r = sp.Matrix([x, v])
    S = D * t
    p = sp.exp(-(r.T * S.inv() * r)[0, 0] / 2) / (2 * sp.pi * sp.sqrt(S.det()))
    assert sp.simplify(sde.fokker_planck(p) / p) == 0
    assert sp.simplify(sde.fokker_planck(p.subs(t, 2 * t)) / p.subs(t, 2 * t)) != 0


def test_k_component_sdes_are_refused_where_not_supported_yet():
    """sample, logp, dsm, likelihood_bound and discretize take k-component SDEs now (tests/test_cld_*,
    tests/test_dsm_components.py); the native samplers do not yet."""
    sde = sdekit.CLDSDE()
    with pytest.raises((ValueError, sdekit.errors.SolverError)):
        sdekit.sample(lambda x, t: x, sde, shape=(4, 2, 1), solver="exp2", steps=4)


def test_latex_shows_the_declaration_and_the_derived_equations():
    text = sdekit.CLDSDE().latex()
    assert r"\Phi(t)" in text and r"\Sigma(t)" in text and "PF-ODE" in text and "reverse" in text
