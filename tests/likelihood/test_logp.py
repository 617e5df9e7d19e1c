"""Tests of sdekit.logp against exact densities (float64), and its input checks.

Oracles are written here from the Gaussian marginal of each affine SDE: isotropic
Gaussian-mixture data sum_k w_k N(mu_k, s_k^2 I) diffuse to
sum_k w_k N(alpha mu_k + m, (alpha^2 s_k^2 + sigma^2) I), whose score and log-density are
closed forms. Every comparison passes the oracle's exact p_T as prior= (sde.prior is only
approximately p_T; see TESTING.md), so what is left is solver error only.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from _mixtures import small_mixture as _mixture

import sdekit
from sdekit.errors import ModelOutputError, NotAffineError, UnknownSolverError

DT = torch.float64


# --------------------------------------------------------------------------- oracles
class At:
    """A time-indexed density ``log_prob(x, t)`` at a fixed t: anything with ``log_prob(x)``, as ``prior=`` takes."""

    def __init__(self, log_prob, t):
        self.log_prob = lambda x: log_prob(x, t)


class Mixture:
    """Exact law of x_t when x_0 ~ sum_k w_k N(mu_k, s_k^2 I) and the SDE is affine.

    ``means`` has shape (K, *event_shape); ``stds`` and ``weights`` shape (K,).
    """

    def __init__(self, sde, means, stds, weights=None):
        self.sde = sde
        self.means = torch.as_tensor(means, dtype=DT)
        self.stds = torch.as_tensor(stds, dtype=DT)
        k = self.means.shape[0]
        w = torch.full((k,), 1.0 / k, dtype=DT) if weights is None else torch.as_tensor(weights, dtype=DT)
        self.logw = torch.log(w / w.sum())

    def _components(self, x, t):
        t = torch.as_tensor(t, dtype=DT).expand(x.shape[0])
        marg = self.sde.marginal
        alpha, m, sig2 = marg.alpha(t), marg.offset(t), marg.sigma2(t)
        b = x.shape[0]
        xf = x.reshape(b, 1, -1)  # (B, 1, d)
        mean = alpha[:, None, None] * self.means.reshape(1, self.means.shape[0], -1) + m[:, None, None]
        var = alpha[:, None] ** 2 * self.stds[None, :] ** 2 + sig2[:, None]  # (B, K)
        d = xf.shape[-1]
        diff = xf - mean  # (B, K, d)
        logc = self.logw - 0.5 * (diff**2).sum(-1) / var - 0.5 * d * torch.log(2 * math.pi * var)
        return diff, var, logc

    def log_prob(self, x, t):
        return torch.logsumexp(self._components(x, t)[2], dim=1)

    def score(self, x, t):
        diff, var, logc = self._components(x, t)
        r = torch.softmax(logc, dim=1)
        return (-(r / var)[..., None] * diff).sum(1).reshape(x.shape)

    def at(self, t):
        return At(self.log_prob, t)


def custom_affine():
    return sdekit.SDE.from_expressions("-theta*(1+t)*x", "sigma*sqrt(1+t)", theta=1.0, sigma=0.5)


SDES = {
    "vp": lambda: sdekit.VPSDE(),
    "ve": lambda: sdekit.VESDE(),
    "custom": custom_affine,
}


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("name", list(SDES))
def test_gaussian_data_matches_exact_density(name):
    # Solver error only (exact score, exact p_T): at rtol = atol = 1e-7 dopri5's global error
    # on log p is ~1e-6 (measured), so 1e-4 nats has two decades of margin.
    sde = SDES[name]()
    oracle = Mixture(sde, [[0.5, -1.0, 0.3]], [0.7])
    eps = 1e-5
    x = torch.randn(4, 3, generator=gen(0), dtype=DT) * 0.8 + 0.2
    lp, info = sdekit.logp(
        oracle.score, sde, x, rtol=1e-7, atol=1e-7, eps=eps, prior=oracle.at(sde.T), return_info=True
    )
    truth = oracle.log_prob(x, eps)
    assert lp.shape == (4,) and lp.dtype == DT
    assert torch.allclose(lp, truth, rtol=0, atol=1e-4), (lp - truth).abs().max()
    assert info.trace == "exact" and info.solver == "dopri5" and info.nfe > 10
    assert torch.allclose(lp, info.prior_logp + info.delta_logp, rtol=0, atol=1e-12)


def test_event_shape_and_x0_parameterization():
    # Image-like event shape (2, 3): the density of 6 iid coordinates; x0-parameterized model.
    sde = sdekit.VPSDE()
    mean = torch.tensor([[[0.2, -0.4, 0.1], [0.0, 0.5, -0.3]]], dtype=DT)
    oracle = Mixture(sde, mean, [0.6])
    x = torch.randn(3, 2, 3, generator=gen(1), dtype=DT) * 0.6

    def x0_model(xt, t):  # exact denoiser from the exact score (Tweedie)
        return sdekit.parameterization.from_score(oracle.score(xt, t), xt, t, sde, "x0")

    lp = sdekit.logp(x0_model, sde, x, parameterization="x0", rtol=1e-7, atol=1e-7, prior=oracle.at(sde.T))
    assert lp.shape == (3,)
    assert torch.allclose(lp, oracle.log_prob(x, 1e-5), rtol=0, atol=1e-4)


def test_mixture_2d_default_tolerances():
    # rtol = atol = 1e-5 (defaults): global dopri5 error measured ~1e-4 nats on this mixture.
    sde = sdekit.VPSDE()
    oracle = Mixture(sde, [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]], [0.4, 0.6, 0.5], [0.3, 0.5, 0.2])
    x = torch.randn(16, 2, generator=gen(2), dtype=DT) * 1.5
    lp = sdekit.logp(oracle.score, sde, x, prior=oracle.at(sde.T))
    err = (lp - oracle.log_prob(x, 1e-5)).abs().max()
    assert err < 1e-3, err


def test_with_analytic_oracle_if_available():
    analytic = pytest.importorskip("sdekit.analytic")
    sde = sdekit.VPSDE()
    gm = analytic.GaussianMixture(
        torch.tensor([[-1.5, 0.5], [1.0, -1.0]], dtype=DT), torch.tensor([0.5, 0.3], dtype=DT)
    )
    diffused = gm.diffuse(sde)
    x = torch.randn(8, 2, generator=gen(3), dtype=DT)
    lp = sdekit.logp(diffused, sde, x, prior=diffused.at(sde.T))
    assert (lp - diffused.at(1e-5).log_prob(x)).abs().max() < 1e-3


def test_state_dependent_diffusion_lognormal():
    # Geometric Brownian motion dx = mu x dt + s x dW keeps a log-normal law exactly:
    # log x_t ~ N(m0 + (mu - s^2/2) t, v0 + s^2 t). Its PF drift contains -1/2 d(g^2)/dx = -s^2 x,
    # whose divergence logp must include.
    mu, s, m0, v0 = 0.3, 0.6, 0.1, 0.2
    sde = sdekit.SDE.from_expressions("mu*x", "s*x", mu=mu, s=s)
    assert sde.noise_type == "diagonal"

    def moments(t):
        return m0 + (mu - s**2 / 2) * t, v0 + s**2 * t

    def log_prob(x, t):
        m, v = moments(t)
        y = torch.log(x)
        return (-y - 0.5 * (y - m) ** 2 / v - 0.5 * math.log(2 * math.pi * v)).sum(1)

    def score(x, t):
        m, v = moments(t.reshape(-1, 1))
        return -1 / x - (torch.log(x) - m) / (v * x)

    x = torch.exp(m0 + math.sqrt(v0) * torch.randn(5, 2, generator=gen(4), dtype=DT))
    lp = sdekit.logp(score, sde, x, rtol=1e-7, atol=1e-7, eps=1e-3, prior=At(log_prob, sde.T))
    assert torch.allclose(lp, log_prob(x, 1e-3), rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- Hutchinson
@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe):
    # 200 copies of two points in one batch: every row gets its own probe draw (drawn once per
    # call), so the rows are 200 independent Hutchinson estimates along the same trajectory.
    # Their mean must be within 3 standard errors of the exact-trace result, plus the solver
    # tolerance (the shared adaptive steps differ slightly between the two solves): 1e-4.
    sde = sdekit.VPSDE()
    oracle = Mixture(sde, [[-1.0, -1.0], [1.0, 1.5]], [0.5, 0.35])
    points = torch.tensor([[0.3, -0.2], [1.2, 0.8]], dtype=DT)
    x = points.repeat_interleave(200, dim=0)
    kw = {"prior": oracle.at(sde.T), "rtol": 1e-6, "atol": 1e-6}
    exact = sdekit.logp(oracle.score, sde, points, trace="exact", **kw)
    est = sdekit.logp(oracle.score, sde, x, trace="hutchinson", probe=probe, generator=gen(5), **kw).reshape(2, 200)
    se = est.std(dim=1) / math.sqrt(200)
    assert (se > 1e-4).all()  # the mixture's Jacobian is not diagonal: the estimator has variance
    assert ((est.mean(1) - exact).abs() < 3 * se + 1e-4).all(), (est.mean(1) - exact, se)
    # several probes per sample average: the spread shrinks like 1 / sqrt(n_probes)
    est4 = sdekit.logp(oracle.score, sde, x[:200], trace="hutchinson", n_probes=4, probe=probe, generator=gen(6), **kw)
    ratio = est4.std() / est[0].std()
    assert 0.3 < ratio < 0.75, ratio
    again = sdekit.logp(oracle.score, sde, x[:5], trace="hutchinson", probe=probe, generator=gen(5), **kw)
    assert torch.equal(
        again, sdekit.logp(oracle.score, sde, x[:5], trace="hutchinson", probe=probe, generator=gen(5), **kw)
    )


def test_auto_trace_choice():
    sde = sdekit.VPSDE()
    small = Mixture(sde, torch.zeros(1, 256, dtype=DT), [1.0])
    big = Mixture(sde, torch.zeros(1, 257, dtype=DT), [1.0])
    x_small, x_big = torch.zeros(2, 256, dtype=DT), torch.zeros(2, 257, dtype=DT)
    assert sdekit.logp(small.score, sde, x_small, rtol=1e-3, atol=1e-3, return_info=True)[1].trace == "exact"
    info = sdekit.logp(big.score, sde, x_big, rtol=1e-3, atol=1e-3, return_info=True)[1]
    assert info.trace == "hutchinson" and info.n_probes == 1


# --------------------------------------------------------------------------- gradients
class LearnedGaussian(torch.nn.Module):
    """Exact score of diffused N(mu, s^2 I) with learnable mu and log s."""

    def __init__(self, sde, mu, s):
        super().__init__()
        self.sde = sde
        self.mu = torch.nn.Parameter(torch.as_tensor(mu, dtype=DT))
        self.log_s = torch.nn.Parameter(torch.tensor(math.log(s), dtype=DT))

    def var(self, t):
        return self.sde.marginal.alpha(t) ** 2 * torch.exp(2 * self.log_s) + self.sde.marginal.sigma2(t)

    def mean(self, t):
        return self.sde.marginal.alpha(t)[:, None] * self.mu + self.sde.marginal.offset(t)[:, None]

    def forward(self, x, t):
        return -(x - self.mean(t)) / self.var(t)[:, None]

    def log_prob(self, x, t):
        t = torch.as_tensor(t, dtype=DT).expand(x.shape[0])
        v = self.var(t)[:, None]
        return (-0.5 * (x - self.mean(t)) ** 2 / v - 0.5 * torch.log(2 * math.pi * v)).sum(1)

    def at(self, t):
        return At(self.log_prob, t)


def test_gradient_wrt_parameters_matches_finite_difference():
    # Central differences with h = 1e-4 at rtol = atol = 1e-9: truncation ~h^2 = 1e-8 and
    # solver noise ~1e-9 / h = 1e-5, so 1e-4 relative agreement is the honest tolerance.
    sde = sdekit.VPSDE()
    model = LearnedGaussian(sde, [0.3, -0.5], 0.8)

    x = torch.randn(3, 2, generator=gen(7), dtype=DT)
    kw = {"rtol": 1e-9, "atol": 1e-9, "prior": model.at(sde.T)}
    lp = sdekit.logp(model, sde, x, **kw)
    assert lp.requires_grad  # parameters require grad and grad mode is on: a graph is kept
    grads = torch.autograd.grad(lp.sum(), [model.mu, model.log_s])

    h = 1e-4
    with torch.no_grad():
        for param, grad in zip([model.mu, model.log_s], grads, strict=True):
            flat, gflat = param.view(-1), grad.reshape(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + h
                up = sdekit.logp(model, sde, x, **kw).sum()
                flat[i] = old - h
                down = sdekit.logp(model, sde, x, **kw).sum()
                flat[i] = old
                fd = (up - down) / (2 * h)
                assert abs(fd - gflat[i]) < 1e-4 * max(1.0, abs(fd)), (fd, gflat[i])
    # and both agree with the exact gradient of the exact log-density (solver tolerance)
    exact = torch.autograd.grad(model.log_prob(x, 1e-5).sum(), [model.mu, model.log_s])
    for g, e in zip(grads, exact, strict=True):
        assert torch.allclose(g, e, rtol=0, atol=1e-5)


def test_gradient_wrt_x_is_the_score():
    # d log p_eps(x) / dx is the exact score at t = eps (solver tolerance 1e-7 -> 1e-4 margin).
    sde = custom_affine()
    oracle = Mixture(sde, [[0.5, -0.5]], [0.6])
    x = torch.randn(3, 2, generator=gen(8), dtype=DT).requires_grad_()
    lp = sdekit.logp(oracle.score, sde, x, rtol=1e-8, atol=1e-8, prior=oracle.at(sde.T))
    (g,) = torch.autograd.grad(lp.sum(), x)
    assert torch.allclose(g, oracle.score(x.detach(), torch.full((3,), 1e-5, dtype=DT)), rtol=0, atol=1e-4)


def test_documented_gradient_path_runs_without_warnings():
    # docs/likelihood.md "Gradients": x.requires_grad_() and (-logp(...).mean()).backward(), float32 default.
    # The first-step probe reads norms of tensors in the graph; it must read them detached (no torch warning).
    sde = sdekit.VPSDE()
    oracle = sdekit.analytic.GaussianMixture(means=[[0.5, -0.5]], stds=[0.6]).diffuse(sde)
    model = LearnedGaussian(sde, [0.0, 0.0], 1.0).float()
    x = torch.randn(4, 2, generator=gen(10)).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (-sdekit.logp(oracle, sde, x).mean()).backward()
        (-sdekit.logp(model, sde, x.detach()).mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_no_graph_kept_unless_needed():
    sde = sdekit.VPSDE()
    oracle = Mixture(sde, [[0.0, 0.0]], [1.0])
    x = torch.randn(4, 2, generator=gen(9), dtype=DT)
    lp, info = sdekit.logp(oracle.score, sde, x, rtol=1e-3, atol=1e-3, return_info=True)
    assert not lp.requires_grad and not info.z.requires_grad
    model = LearnedGaussian(sde, [0.0, 0.0], 1.0)
    with torch.no_grad():
        assert not sdekit.logp(model, sde, x, rtol=1e-3, atol=1e-3).requires_grad
    assert not sdekit.logp(model, sde, x, rtol=1e-3, atol=1e-3, create_graph=False).requires_grad


# --------------------------------------------------------------------------- options and errors
def test_solver_names_and_fixed_grid():
    sde = sdekit.VPSDE()
    oracle = Mixture(sde, [[0.2, 0.1]], [0.5])
    x = torch.randn(4, 2, generator=gen(10), dtype=DT)
    kw = {"prior": oracle.at(sde.T)}
    a = sdekit.logp(oracle.score, sde, x, solver="dopri5", **kw)
    assert torch.equal(a, sdekit.logp(oracle.score, sde, x, solver="ode:dopri5", **kw))
    assert torch.equal(a, sdekit.logp(oracle.score, sde, x, solver="ode", **kw))
    rk4, info = sdekit.logp(oracle.score, sde, x, solver="rk4", steps=200, return_info=True, **kw)
    assert info.nfe == 1 + 4 * 200
    assert torch.allclose(rk4, oracle.log_prob(x, 1e-5), rtol=0, atol=1e-3)


def test_input_errors():
    sde = sdekit.VPSDE()
    oracle = Mixture(sde, [[0.0, 0.0]], [1.0])
    x = torch.zeros(2, 2, dtype=DT)
    with pytest.raises(UnknownSolverError, match="dopri5"):
        sdekit.logp(oracle.score, sde, x, solver="dopri")
    with pytest.raises(ValueError, match="eps"):
        sdekit.logp(oracle.score, sde, x, eps=2.0)
    with pytest.raises(ValueError, match="trace"):
        sdekit.logp(oracle.score, sde, x, trace="exactly")
    with pytest.raises(ValueError, match="probe"):
        sdekit.logp(oracle.score, sde, x, probe="normal")
    with pytest.raises(ValueError, match="n_probes"):
        sdekit.logp(oracle.score, sde, x, n_probes=0)
    with pytest.raises(ValueError, match="steps"):
        sdekit.logp(oracle.score, sde, x, solver="rk4")
    with pytest.raises(ValueError, match="rtol"):
        sdekit.logp(oracle.score, sde, x, rtol=-1.0)
    with pytest.raises(ValueError, match="parameterization"):
        sdekit.logp(oracle.score, sde, x, parameterization="noise")
    with pytest.raises(ModelOutputError, match="shaped like x"):
        sdekit.logp(lambda x, t: x[:, :1], sde, x)
    with pytest.raises(ModelOutputError, match="non-finite"):
        sdekit.logp(lambda x, t: x / 0.0, sde, x)
    gbm = sdekit.SDE.from_expressions("x", "x")
    with pytest.raises(NotAffineError, match="prior="):
        sdekit.logp(oracle.score, gbm, x)


# --------------------------------------------------------------------------- normalized coordinates
NORMALIZED_SDES = {
    "vp": lambda: sdekit.VPSDE(),
    "ve": lambda: sdekit.VESDE(),
    "subvp": lambda: sdekit.SubVPSDE(),
    "custom": custom_affine,
    # no closed-form marginal (numeric quadrature); sympy needs ~15 s to give up on the integrals: slow
    "quadrature": lambda: sdekit.SDE.from_expressions("-x*(1+t**2)", "sqrt(1+t)"),
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "quadrature" else n for n in NORMALIZED_SDES]
)
def test_normalized_coordinates_match_plain_t_and_exact(name):
    # w = (x - m)/c with c^2 = alpha^2 + sigma^2 is an exact change of variables (log-det d log c(T)/c(eps)),
    # so both paths solve the same problem: each must match the exact density to solver tolerance
    # (rtol = atol = 1e-7, global error measured ~1e-6 -> 1e-4 nats), hence each other to 2e-4.
    sde = NORMALIZED_SDES[name]()
    if name == "quadrature":
        assert not sde.marginal.closed
    oracle = Mixture(sde, [[0.5, -1.0, 0.3], [-0.4, 0.2, 0.9]], [0.5, 0.3])
    x = torch.randn(6, 3, generator=gen(20), dtype=DT) * 0.8
    kw = {"rtol": 1e-7, "atol": 1e-7, "prior": oracle.at(sde.T), "return_info": True}
    lp_w, info_w = sdekit.logp(oracle.score, sde, x, **kw)
    lp_x, info_x = sdekit.logp(oracle.score, sde, x, normalize=False, **kw)
    assert info_w.normalized and not info_x.normalized
    truth = oracle.log_prob(x, 1e-5)
    assert (lp_w - truth).abs().max() < 1e-4, (lp_w - truth).abs().max()
    assert (lp_x - truth).abs().max() < 1e-4, (lp_x - truth).abs().max()
    assert torch.allclose(lp_w, info_w.prior_logp + info_w.delta_logp, rtol=0, atol=1e-12)
    # z is reported in x coordinates either way (same trajectory end point to solver tolerance)
    assert torch.allclose(info_w.z, info_x.z, rtol=1e-4, atol=1e-4)


def test_normalized_hutchinson_and_eps_parameterization():
    # The Hutchinson estimate in w-coordinates uses the same probes on the same Jacobian (scaled by k(t)):
    # with a diagonal Jacobian (isotropic Gaussian data) Rademacher probes are exact, so it equals the
    # exact-trace result to solver tolerance (1e-7 -> 1e-4). The eps-parameterized model is converted by sdekit.
    sde = sdekit.VESDE()
    oracle = Mixture(sde, [[0.3, -0.2, 0.1, 0.4]], [0.6])

    def eps_model(xt, t):
        return sdekit.parameterization.from_score(oracle.score(xt, t), xt, t, sde, "eps")

    x = torch.randn(5, 4, generator=gen(21), dtype=DT)
    kw = {"rtol": 1e-7, "atol": 1e-7, "prior": oracle.at(sde.T), "parameterization": "eps"}
    hutch = sdekit.logp(eps_model, sde, x, trace="hutchinson", generator=gen(22), **kw)
    exact = sdekit.logp(eps_model, sde, x, trace="exact", **kw)
    assert torch.allclose(hutch, exact, rtol=0, atol=1e-4)
    assert torch.allclose(exact, oracle.log_prob(x, 1e-5), rtol=0, atol=1e-4)


def test_non_affine_sde_uses_plain_coordinates():
    gbm = sdekit.SDE.from_expressions("mu*x", "s*x", mu=0.3, s=0.6)

    class Prior:
        def log_prob(self, z):
            return -torch.log(z).sum(1)  # any log_prob works for this check

    x = torch.ones(2, 2, dtype=DT)

    def score(xt, t):
        return -1 / xt

    _, info = sdekit.logp(score, gbm, x, rtol=1e-3, atol=1e-3, prior=Prior(), return_info=True)
    assert not info.normalized
    with pytest.raises(NotAffineError, match="normalize"):
        sdekit.logp(score, gbm, x, prior=Prior(), normalize=True)
    with pytest.raises(TypeError, match="normalize"):
        sdekit.logp(score, sdekit.VPSDE(), x, normalize="yes")


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_high_dimensional_gaussian_is_exact(sde_name):
    # d = 512 (Hutchinson, as logp's "auto" picks above 256 dimensions): isotropic Gaussian data make the score
    # Jacobian a multiple of I, so one Rademacher probe gives the exact trace and the only error left is the
    # solver's. |log p| ~ 500 nats; at rtol = atol = 1e-7 the local error of the log-density is bounded by about
    # 1e-7 * |delta log p| ~ 5e-5 per step, and 1e-3 nats leaves room for its accumulation over the ~15-25
    # accepted steps.
    sde = NORMALIZED_SDES[sde_name]()
    d = 512
    oracle = Mixture(sde, torch.full((1, d), 0.2), [0.5])
    x = 0.2 + 0.5 * torch.randn(4, d, generator=gen(25), dtype=DT)
    lp, info = sdekit.logp(
        oracle.score, sde, x, rtol=1e-7, atol=1e-7, prior=oracle.at(sde.T), trace="hutchinson",
        generator=gen(26), return_info=True,
    )  # fmt: skip
    assert info.normalized and info.trace == "hutchinson"
    assert (lp - oracle.log_prob(x, 1e-5)).abs().max() < 1e-3


def test_float32_follows_input_dtype():
    # float32 state, float64 coefficients: round-off ~6e-8 relative on states of size <= 50 (VE) over ~100
    # evaluations stays below 1e-3 nats; the solver error at rtol = atol = 1e-5 is ~1e-4 (float64 measurement).
    sde = sdekit.VESDE()
    oracle = Mixture(sde, [[0.5, -0.5]], [0.6])
    x = torch.randn(8, 2, generator=gen(24), dtype=DT)
    truth = oracle.log_prob(x, 1e-5)
    prior64 = oracle.at(sde.T)

    class Prior32:
        def log_prob(self, z):
            return prior64.log_prob(z.to(DT)).float()

    def score32(xt, t):
        return oracle.score(xt.to(DT), t.to(DT)).float()

    lp = sdekit.logp(score32, sde, x.float(), prior=Prior32())
    assert lp.dtype == torch.float32
    assert (lp.double() - truth).abs().max() < 1e-3, (lp.double() - truth).abs().max()


def test_native_loop_reports_divergence():
    from sdekit.errors import SolverDivergedError

    sde = sdekit.VPSDE()

    def blows_up(xt, t):  # finite at t = eps (passes the up-front check), NaN later
        return torch.where(t[:, None] > 0.5, torch.full_like(xt, float("nan")), -xt)

    with pytest.raises(SolverDivergedError, match="non-finite"):
        sdekit.logp(blows_up, sde, torch.zeros(3, 2, dtype=DT), rtol=1e-3, atol=1e-3)


def test_adjoint_gradients_match_exact_and_backprop():
    # adjoint=True solves backwards for the vector-Jacobian products: the gradients are those of the exact ODE
    # solution up to the solver tolerance (rtol = atol = 1e-9 forward and backward; the backprop gradients
    # matched central differences to 1e-4 relative and the exact gradient to 1e-5 above), so the same 1e-5
    # against the exact gradient of the exact log-density, and against backprop through the solver.
    sde = sdekit.VPSDE()
    model = LearnedGaussian(sde, [0.3, -0.5], 0.8)

    x = torch.randn(3, 2, generator=gen(30), dtype=DT).requires_grad_()
    kw = {"rtol": 1e-9, "atol": 1e-9, "prior": model.at(sde.T), "solver": "dopri5"}
    params = [model.mu, model.log_s]
    lp_adj = sdekit.logp(model, sde, x, adjoint=True, **kw)
    g_adj = torch.autograd.grad(lp_adj.sum(), [*params, x])
    lp_bp = sdekit.logp(model, sde, x, **kw)
    g_bp = torch.autograd.grad(lp_bp.sum(), [*params, x])
    exact = torch.autograd.grad(model.log_prob(x, 1e-5).sum(), [*params, x])
    assert torch.allclose(lp_adj, lp_bp, rtol=0, atol=1e-6)
    for a, b, e in zip(g_adj, g_bp, exact, strict=True):
        assert torch.allclose(a, e, rtol=0, atol=1e-5), (a, e)
        assert torch.allclose(a, b, rtol=0, atol=1e-5), (a, b)
    with pytest.raises(TypeError, match="adjoint"):
        sdekit.logp(model, sde, x, adjoint="yes")


# --------------------------------------------------------------------------- edge cases of the public API
@pytest.mark.parametrize("parameterization", ["x0", "v", "denoiser"])
def test_logp_subvp_runs_for_x0_like_parameterizations(parameterization):
    sde = sdekit.SubVPSDE()
    data = _mixture(torch.float64)
    oracle = data.diffuse(sde)
    x = data.sample(32, generator=torch.Generator().manual_seed(0))
    lp = sdekit.logp(
        oracle.as_model(parameterization), sde, x, parameterization=parameterization, prior=oracle.at(sde.T)
    )
    exact = oracle.log_prob(x, torch.full((32,), 1e-5, dtype=torch.float64))
    assert (lp - exact).abs().max() < 1e-3


def test_logp_under_inference_mode_works():
    """Inference mode removes autograd, which the divergence needs: logp leaves it (running under no_grad)."""
    sde = sdekit.VPSDE()
    data = _mixture()
    oracle = data.diffuse(sde)
    x = data.sample(4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = sdekit.logp(oracle, sde, x, solver="rk4", steps=2)
    with torch.inference_mode():
        x_inference = x.clone()
        lp = sdekit.logp(oracle, sde, x_inference, solver="rk4", steps=2)
        assert torch.is_inference_mode_enabled()
    assert torch.equal(lp, expected) and not lp.requires_grad


def test_logp_rejects_options_torchdiffeq_would_ignore():
    sde = sdekit.VPSDE()
    with pytest.raises(ValueError, match="max_num_step"):
        sdekit.logp(_mixture().diffuse(sde), sde, torch.zeros(2, 2), options={"max_num_step": 10})


def test_logp_create_graph_must_be_bool_or_none():
    sde = sdekit.VPSDE()
    with pytest.raises(TypeError):
        sdekit.logp(_mixture().diffuse(sde), sde, torch.zeros(2, 2), create_graph="yes", solver="rk4", steps=2)


def test_logp_rejects_half_precision_with_advice():
    sde = sdekit.VPSDE()
    with pytest.raises(TypeError, match=r"x\.float\(\)"):
        sdekit.logp(_mixture().diffuse(sde), sde, torch.zeros(2, 2, dtype=torch.float16))


def test_exact_trace_is_refused_above_its_limit_and_auto_is_unchanged():
    from sdekit._likelihood import EXACT_TRACE_LIMIT_DIM, EXACT_TRACE_MAX_DIM, resolve_trace

    assert (EXACT_TRACE_MAX_DIM, EXACT_TRACE_LIMIT_DIM) == (256, 1024)  # the documented values
    assert resolve_trace("auto", 256) == "exact" and resolve_trace("auto", 257) == "hutchinson"
    assert resolve_trace("auto", 10**6) == "hutchinson"  # "auto" never refuses
    assert resolve_trace("exact", 1024) == "exact" and resolve_trace("hutchinson", 10**6) == "hutchinson"
    # an image batch (B, C, H, W) above the limit: refused up front, before any model call, naming the alternative
    calls = []

    def model(x, t):
        calls.append(1)
        return -x

    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"event dimension 3,072 > 1,024.*pass trace='hutchinson'"):
        sdekit.logp(model, sdekit.VPSDE(), x, trace="exact")
    assert calls == []
    lp = sdekit.logp(model, sdekit.VPSDE(), x, trace="hutchinson", solver="euler", steps=2)
    assert lp.shape == (2,) and lp.dtype == torch.float32
