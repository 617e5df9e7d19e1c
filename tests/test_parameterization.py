"""Tests of sdekit.parameterization: score / eps / x0 / v / denoiser conversions.

Round trips are checked on exact scores (sdekit.analytic oracles), for hypothesis-drawn
mixtures, SDEs (closed-form and quadrature marginals) and per-sample times from 1e-5 T to T;
the conversions themselves are checked against closed-form posterior means of Gaussian data.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from _analytic_cases import DT, SDE_NAMES, gen, get_sde, mixtures, random_mixture, time_fracs
from hypothesis import given, settings
from hypothesis import strategies as st

import sdekit
from sdekit import analytic
from sdekit import parameterization as P
from sdekit.errors import NotAffineError

KINDS = P.PARAMETERIZATIONS
X0_LIKE = ("x0", "denoiser")
EPS64 = torch.finfo(DT).eps


def _rows(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1).abs().max(dim=1).values


def _x0_roundoff(kind: str, x: torch.Tensor, sde: sdekit.SDE, t: torch.Tensor) -> torch.Tensor:
    r"""Per-row error a round trip kind -> x0 -> kind cannot avoid in float64.

    x0 = (x - m + sigma^2 s) / alpha stores the score in sigma^2 s, a small correction to x - m:
    forming it loses eps * |x - m| absolutely, i.e. eps |x - m| / sigma^2 in the score,
    eps |x - m| / sigma in eps and eps |x - m| (alpha^2 + sigma^2) / (alpha sigma) in v. This is
    the known ill-conditioning of x0-prediction at low noise, not an error of the formulas.
    """
    alpha, m, sigma2 = (v.reshape(-1) for v in P.marginal_coefficients(sde, t, x))
    size = _rows(x) + m.abs()
    sigma = sigma2.sqrt()
    kappa = {
        "score": 1 / sigma2,
        "eps": 1 / sigma,
        "v": (alpha**2 + sigma2) / (alpha * sigma),
        "x0": 1 / alpha,
        "denoiser": 1 / alpha,
    }
    return 8 * EPS64 * size * kappa[kind]


def _scale(kind: str, outs: dict, x: torch.Tensor, sde: sdekit.SDE, t: torch.Tensor) -> torch.Tensor:
    """Per-row size of ``kind``'s output: its magnitude, or for v = alpha eps - sigma x0 the sum of
    the magnitudes of the two terms (v itself can cancel to ~0 when the data match the prior)."""
    if kind != "v":
        return _rows(outs[kind])
    alpha, _, sigma2 = (v.reshape(-1) for v in P.marginal_coefficients(sde, t, x))
    return alpha * _rows(outs["eps"]) + sigma2.sqrt() * _rows(outs["x0"])


@settings(max_examples=40, deadline=None)
@given(gm=mixtures(), name=st.sampled_from(SDE_NAMES), fracs=st.lists(time_fracs, min_size=6, max_size=6))
def test_every_parameterization_round_trips(gm, name, fracs):
    # Every pair (a, b): convert a -> b -> a recovers a to 1e-12 relative (float64 round-off of
    # a handful of operations, measured <= 5e-14), plus, only for trips that rebuild x0 from the
    # score (x0/denoiser <-> score/eps/v, and v, which is alpha eps - sigma x0), the unavoidable
    # loss bounded in _x0_roundoff: up to 4e-5 relative for sub-VP at t = 1e-5 T (sigma^2 = 1e-12),
    # 5e-11 for VP there, ~5e-12 for v at VP's t = T (alpha = 0.0066), ~1e-16 in between.
    sde = get_sde(name)
    diffused = gm.diffuse(sde)
    t = torch.as_tensor(fracs, dtype=DT) * sde.T
    x = diffused.sample(6, t, gen(0), dtype=DT)
    score = diffused.score(x, t)
    outs = {k: P.from_score(score, x, t, sde, k) for k in KINDS}
    for a, b in itertools.product(KINDS, KINDS):
        there = P.convert(outs[a], x, t, sde, a, b)
        back = P.convert(there, x, t, sde, b, a)
        err = _rows(back - outs[a])
        tol = 1e-12 * _scale(a, outs, x, sde, t)
        if (a in X0_LIKE) != (b in X0_LIKE) or "v" in (a, b):  # these trips rebuild x0 from the score
            tol = tol + _x0_roundoff(a, x, sde, t)
        assert (err <= tol).all(), (a, b, (err / _rows(outs[a])).max().item())
    # score -> kind -> score through to_score, and the oracle's own as_model
    for k in KINDS:
        back = P.to_score(outs[k], x, t, sde, k)
        tol = 1e-12 * _rows(score) + (_x0_roundoff("score", x, sde, t) if k in X0_LIKE else 0)
        assert (_rows(back - score) <= tol).all(), k
        assert torch.equal(diffused.as_model(k)(x, t), outs[k])


@pytest.mark.parametrize("name", ["vp", "ve", "offset", "numeric"])
def test_conversions_match_gaussian_posterior_means(name):
    # Independent closed forms for Gaussian data x0 ~ N(mu, c I): with x_t = alpha x0 + m + sigma z,
    #   E[x0 | x_t] = mu + alpha c (x - alpha mu - m) / (alpha^2 c + sigma^2),
    #   E[z | x_t] = sigma (x - alpha mu - m) / (alpha^2 c + sigma^2),  v = alpha E[z] - sigma E[x0].
    # The converted exact score must equal them: float64 round-off (1e-12 relative).
    sde = get_sde(name)
    mu = torch.tensor([0.7, -1.2, 0.4], dtype=DT)
    c = 0.3
    diffused = analytic.Gaussian(mu, c**0.5).diffuse(sde)
    t = torch.tensor([0.02, 0.3, 0.7, 1.0], dtype=DT) * sde.T
    x = diffused.sample(4, t, gen(3), dtype=DT)
    alpha, m, sigma2 = P.marginal_coefficients(sde, t, x)
    resid = x - alpha * mu - m
    x0 = mu + alpha * c * resid / (alpha**2 * c + sigma2)
    eps = sigma2.sqrt() * resid / (alpha**2 * c + sigma2)
    want = {
        "eps": eps,
        "x0": x0,
        "denoiser": x0,
        "v": alpha * eps - sigma2.sqrt() * x0,
        "score": -resid / (alpha**2 * c + sigma2),
    }
    for kind, value in want.items():
        got = diffused.as_model(kind)(x, t)
        assert torch.allclose(got, value, rtol=1e-12, atol=1e-12 * float(value.abs().max())), kind


def test_mixture_denoiser_is_posterior_mean():
    # For a mixture, E[x0 | x_t] = sum_k r_k(x) E_k[x0 | x_t] with responsibilities r_k from the
    # diffused components: written out here per component (float64 round-off, 1e-12).
    sde = get_sde("custom")
    means = torch.tensor([[-1.5, 0.5], [1.0, -1.0], [0.0, 2.0]], dtype=DT)
    stds = torch.tensor([0.4, 0.6, 0.3], dtype=DT)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=DT)
    diffused = analytic.GaussianMixture(means, stds, weights).diffuse(sde)
    t = torch.tensor([0.05, 0.2, 0.5, 0.9, 1.0], dtype=DT)
    x = diffused.sample(5, t, gen(4), dtype=DT)
    alpha, m, sigma2 = (v[:, None] for v in P.marginal_coefficients(sde, t, x))  # (B, 1, 1)
    var = alpha**2 * stds[:, None] ** 2 + sigma2  # (B, K, 1)
    resid = x[:, None, :] - alpha * means - m  # (B, K, d)
    logr = torch.log(weights) - 0.5 * (resid**2 / var).sum(-1) - torch.log(var).squeeze(-1)  # d = 2
    r = torch.softmax(logr, dim=1)[..., None]
    x0 = (r * (means + alpha * stds[:, None] ** 2 * resid / var)).sum(1)
    assert torch.allclose(diffused.as_model("x0")(x, t), x0, rtol=1e-12, atol=1e-12)


def test_float32_coefficients_are_computed_in_float64():
    # Cosine schedule at t = 1e-5: sigma^2 evaluated in float32 is off by 0.3% (cancellation);
    # the conversions evaluate coefficients in float64 and round once, so a float32 eps agrees
    # with the float64 one to float32 accuracy (1e-5 relative, a few ulps of chained operations).
    sde = sdekit.CosineVPSDE()
    t = torch.full((4,), 1e-5, dtype=DT)
    x = torch.randn(4, 2, generator=gen(5), dtype=DT)
    score = -x / 0.3
    e64 = P.from_score(score, x, t, sde, "eps")
    e32 = P.from_score(score.float(), x.float(), t.float(), sde, "eps")
    assert e32.dtype == torch.float32
    assert torch.allclose(e32.double(), e64, rtol=1e-5, atol=0)
    a, _, s2 = P.marginal_coefficients(sde, t.float(), x.float())
    assert a.dtype == torch.float32 and a.shape == (4, 1)
    assert torch.allclose(s2.double(), sde.marginal.sigma2(t)[:, None], rtol=1e-6, atol=0)


def test_time_shapes_event_shapes_and_wrappers():
    sde = get_sde("vp")
    gm = random_mixture(seed=9, k=2, d=6, kind="diag")
    diffused = gm.diffuse(sde)
    x = diffused.sample(3, 0.4, gen(6), dtype=DT).reshape(3, 2, 3)
    t = torch.full((3,), 0.4, dtype=DT)
    score = diffused.score(x, t)
    assert score.shape == (3, 2, 3)
    for k in KINDS:
        ref = P.from_score(score, x, t, sde, k)
        assert ref.shape == x.shape
        for tt in (0.4, torch.tensor(0.4, dtype=DT), t, t.reshape(3, 1)):
            assert torch.allclose(P.from_score(score, x, tt, sde, k), ref, rtol=0, atol=1e-15)
        model = P.as_model(diffused.score, sde, k)
        assert torch.allclose(P.score_fn(model, sde, k)(x, t), score, rtol=1e-10, atol=1e-10)
    f = diffused.score
    assert P.score_fn(diffused, sde) is diffused and P.as_model(f, sde, "score") is f
    assert P.convert(score, x, t, sde, "eps", "eps") is score
    with pytest.raises(ValueError, match="batch size"):
        P.to_score(score, x, torch.zeros(2, dtype=DT), sde, "eps")


def test_unknown_names_and_non_affine():
    sde = get_sde("vp")
    x = torch.zeros(2, 2, dtype=DT)
    for call in (
        lambda: P.to_score(x, x, 0.5, sde, "noise"),
        lambda: P.from_score(x, x, 0.5, sde, "noise"),
        lambda: P.convert(x, x, 0.5, sde, "score", "noise"),
        lambda: P.score_fn(lambda y, t: y, sde, "noise"),
        lambda: P.as_model(lambda y, t: y, sde, "noise"),
    ):
        with pytest.raises(ValueError, match="choose one of"):
            call()
    cubic = sdekit.SDE.from_expressions("-x**3", "1")
    assert P.to_score(x, x, 0.5, cubic, "score") is x  # the score needs no marginal
    with pytest.raises(NotAffineError):
        P.to_score(x, x, 0.5, cubic, "eps")


# --------------------------------------------------------------------------- a model's declared parameterization
class _Declared:
    """``-x`` under VP read as eps is a different model than read as a score: the declaration must be honoured."""

    def __init__(self, parameterization):
        self.parameterization = parameterization

    def __call__(self, x, t):
        return -x


def test_entry_points_read_a_models_declared_parameterization():
    sde, g = sdekit.VPSDE(), torch.Generator().manual_seed(0)
    x_T = torch.randn(16, 2, generator=g, dtype=torch.float64)
    run = dict(solver="ode:rk4", steps=5, x_T=x_T, denoise=False)  # deterministic: equal iff the same score
    declared = sdekit.sample(_Declared("eps"), sde, x_T.shape, **run)
    explicit = sdekit.sample(lambda x, t: -x, sde, x_T.shape, parameterization="eps", **run)
    as_score = sdekit.sample(lambda x, t: -x, sde, x_T.shape, **run)
    assert torch.equal(declared, explicit) and not torch.equal(declared, as_score)
    x = torch.randn(4, 2, generator=g, dtype=torch.float64)
    kw = dict(solver="rk4", steps=4)
    assert torch.equal(
        sdekit.logp(_Declared("eps"), sde, x, **kw), sdekit.logp(lambda x, t: -x, sde, x, parameterization="eps", **kw)
    )
    loss = dict(generator=torch.Generator().manual_seed(1))
    declared_loss = sdekit.losses.dsm(_Declared("x0"), sde, x, **loss)
    explicit_loss = sdekit.losses.dsm(
        lambda x, t: -x, sde, x, parameterization="x0", generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(declared_loss, explicit_loss)


def test_a_contradicting_parameterization_is_refused():
    with pytest.raises(
        ValueError, match=r"parameterization='score' contradicts the model's declared parameterization 'eps'"
    ):
        sdekit.sample(_Declared("eps"), sdekit.VPSDE(), (4, 2), solver="euler", steps=5, parameterization="score")


def test_an_unrelated_attribute_of_that_name_is_not_a_declaration():
    model = _Declared(None)
    model.parameterization = lambda: "eps"  # a method, not a declaration
    x = sdekit.sample(
        model, sdekit.VPSDE(), (4, 2), solver="euler", steps=5, generator=torch.Generator().manual_seed(0)
    )
    assert x.shape == (4, 2)
