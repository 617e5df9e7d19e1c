"""Tests of sdekit.analytic: exact Gaussian / Gaussian-mixture oracles and their diffusion.

float64 unless stated. Independent checks: autograd (score vs log_prob), quadrature
(normalisation), the Fokker–Planck equation built from the declared f and g only (not from
the derived marginal), scipy's multivariate normal with published closed-form schedules,
and Kolmogorov–Smirnov tests against exact CDFs for the samplers.
"""

from __future__ import annotations

import math

import pytest
import torch
from _analytic_cases import DT, SDE_NAMES, gen, get_sde, mixtures, random_mixture, time_fracs
from hypothesis import given, settings
from hypothesis import strategies as st

import sdekit
from sdekit import analytic
from sdekit.errors import NotAffineError

KINDS = ("score", "eps", "x0", "v", "denoiser")


def autograd_score(fn, x):
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x).sum(), x)
    return grad


def far_points(at: analytic.GaussianMixture, n_sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Points n_sigma of the widest component std away from each component mean, random directions."""
    cov = at.covariances
    widest = torch.linalg.eigvalsh(cov).max().sqrt()
    mu = at.means.reshape(at.n_components, -1)
    u = torch.randn(mu.shape, generator=generator, dtype=DT)
    u = u / u.norm(dim=1, keepdim=True)
    return torch.cat([mu + n_sigma * widest * u, mu - n_sigma * widest * u]).reshape(-1, *at.event_shape)


# --------------------------------------------------------------------------- score == grad log_prob
@settings(max_examples=40, deadline=None)
@given(gm=mixtures(), name=st.sampled_from(SDE_NAMES), fracs=st.lists(time_fracs, min_size=4, max_size=4))
def test_score_is_gradient_of_log_prob(gm, name, fracs):
    # Both sides are float64 closed forms of the same density, evaluated by different
    # expressions (hand-derived score vs autograd of log-sum-exp): they differ by round-off
    # only, ~1e-15 relative per operation times a few dozen operations -> 1e-10 has margin.
    sde = get_sde(name)
    diffused = gm.diffuse(sde)
    g = gen(0)
    t = torch.as_tensor(fracs, dtype=DT) * sde.T
    x = diffused.sample(4, t, g, dtype=DT)
    x_far = far_points(diffused.at(float(t[0])), 8.0, g)[:4]
    x = torch.cat([x, x_far])[:4]
    got = diffused.score(x, t)
    want = autograd_score(lambda y: diffused.log_prob(y, t), x)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10), (got - want).abs().max()
    assert torch.equal(diffused(x, t), got)
    # the undiffused mixture too
    x0 = gm.sample(4, g, dtype=DT)
    assert torch.allclose(gm.score(x0), autograd_score(gm.log_prob, x0), rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- normalisation
def _trapezoid_grid(at: analytic.GaussianMixture, n_sd: float = 12.0, per_sd: float = 3.0):
    """Axis grids covering every component to n_sd stds with spacing (smallest std) / per_sd."""
    cov = at.covariances
    mu = at.means.reshape(at.n_components, -1)
    sd_axis = torch.diagonal(cov, dim1=-2, dim2=-1).sqrt()  # (K, d)
    h = float(torch.linalg.eigvalsh(cov).min().sqrt()) / per_sd
    lo = (mu - n_sd * sd_axis).min(0).values
    hi = (mu + n_sd * sd_axis).max(0).values
    return [torch.arange(float(a), float(b) + h, h, dtype=DT) for a, b in zip(lo, hi, strict=True)], h


@pytest.mark.parametrize("name", ["vp", "ve", "custom", "numeric"])
@pytest.mark.parametrize("dim", [1, 2])
def test_log_prob_integrates_to_one(name, dim):
    # Trapezoid rule on a uniform grid over +-12 stds: for a Gaussian the rule's error is
    # ~exp(-2 pi^2 lambda_min / h^2) = exp(-18 pi^2) ~ 1e-77 (Poisson summation) with
    # h = sqrt(lambda_min) / 3, and the mass beyond 12 stds is ~1e-32; what is left is
    # float64 round-off of the sum, ~1e-13. Tolerance 1e-6 as required (actual ~1e-13).
    sde = get_sde(name)
    gm = random_mixture(seed=7, k=3, d=dim, kind="full" if dim == 2 else "iso", spread=1.5, scale=0.6)
    diffused = gm.diffuse(sde)
    for frac in (1e-3, 0.3, 1.0):
        t = frac * sde.T
        axes, h = _trapezoid_grid(diffused.at(t))
        pts = torch.cartesian_prod(*axes).reshape(-1, dim)
        p = diffused.log_prob(pts, torch.full((pts.shape[0],), t, dtype=DT)).exp()
        total = float(p.sum()) * h**dim  # interior trapezoid weights are 1; the ends are ~0
        assert abs(total - 1.0) < 1e-6, (name, dim, t, total)


# --------------------------------------------------------------------------- Fokker–Planck
def _d1(F, h):  # 4th-order central first derivative from F(k) = F at offset k*h
    return (-F(2) + 8 * F(1) - 8 * F(-1) + F(-2)) / (12 * h)


def _d2(F, h):  # 4th-order central second derivative
    return (-F(2) + 16 * F(1) - 30 * F(0) + 16 * F(-1) - F(-2)) / (12 * h * h)


@pytest.mark.parametrize("name", ["vp", "ve", "custom", "offset", "numeric"])
@pytest.mark.parametrize("dim", [1, 2])
def test_diffused_density_solves_fokker_planck(name, dim):
    # Residual of dp/dt + sum_i d_i(f_i p) - 1/2 sum_i d_i^2(g^2 p) with f, g the compiled
    # *declared* drift and diffusion (independent of the derived marginal), by 4th-order
    # central differences: step h_x = 3e-3 * (smallest std) gives truncation ~(3e-3)^4 ~ 1e-10
    # and round-off ~eps / (3e-3)^2 ~ 3e-11 relative to the second-derivative scale; h_t = 1e-4 T
    # is 1e-3 of the fastest time scale of these schedules (>= 0.05 T), truncation ~1e-12.
    # Residual measured <= 4e-10 of the size of the terms; tolerance 1e-6.
    sde = get_sde(name)
    gm = random_mixture(seed=3, k=2, d=dim, kind="full" if dim == 2 else "diag", spread=1.0, scale=0.8)
    diffused = gm.diffuse(sde)
    for frac in (0.05, 0.4, 0.9):
        t0 = frac * sde.T
        x = diffused.sample(16, t0, gen(1), dtype=DT)
        n = x.shape[0]
        t = torch.full((n,), t0, dtype=DT)
        hx = 3e-3 * float(torch.linalg.eigvalsh(diffused.at(t0).covariances).min().sqrt())
        ht = 1e-4 * sde.T

        def p(y, tt):
            return diffused.log_prob(y, tt).exp()

        dpdt = _d1(lambda k: p(x, t + k * ht), ht)
        div = torch.zeros(n, dtype=DT)
        lap = torch.zeros(n, dtype=DT)
        for i in range(dim):
            e = torch.zeros(dim, dtype=DT)
            e[i] = hx

            def flux(k, i=i, e=e):
                y = x + k * e
                return sde.drift_fn(y, t)[:, i] * p(y, t)

            def spread(k, i=i, e=e):
                y = x + k * e
                return sde.diffusion_fn(y, t)[:, i] ** 2 * p(y, t)

            div = div + _d1(flux, hx)
            lap = lap + _d2(spread, hx)
        residual = dpdt + div - 0.5 * lap
        scale = (dpdt.abs() + div.abs() + 0.5 * lap.abs()).max()
        assert (residual.abs().max() / scale) < 1e-6, (name, dim, t0, float(residual.abs().max() / scale))


# --------------------------------------------------------------------------- independent references
def test_log_prob_matches_scipy_with_published_schedules():
    # scipy's multivariate normal with the VP and VE closed forms of Song et al. (2021),
    # written here from the paper: float64 round-off only (1e-10).
    from scipy.stats import multivariate_normal

    gm = random_mixture(seed=11, k=3, d=3, kind="full")
    x = torch.randn(6, 3, generator=gen(2), dtype=DT) * 2

    def reference(alpha, sigma2):
        total = 0.0
        for w, mu, c in zip(gm.weights, gm.means, gm.covariances, strict=True):
            cov = (alpha**2 * c + sigma2 * torch.eye(3, dtype=DT)).numpy()
            total = total + float(w) * multivariate_normal(mean=(alpha * mu).numpy(), cov=cov).pdf(x.numpy())
        return torch.log(torch.as_tensor(total, dtype=DT))

    assert torch.allclose(gm.log_prob(x), reference(1.0, 0.0), rtol=0, atol=1e-10)
    t = 0.37
    b0, b1 = 0.1, 20.0
    alpha = math.exp(-0.25 * t**2 * (b1 - b0) - 0.5 * t * b0)
    got = gm.diffuse(get_sde("vp")).log_prob(x, t)
    assert torch.allclose(got, reference(alpha, 1 - alpha**2), rtol=0, atol=1e-10)
    smin, smax = 0.01, 50.0
    got = gm.diffuse(get_sde("ve")).log_prob(x, t)
    assert torch.allclose(got, reference(1.0, smin**2 * ((smax / smin) ** (2 * t) - 1)), rtol=0, atol=1e-10)


def test_covariance_kinds_agree_and_gaussian_is_one_component():
    # The same law written as isotropic, diagonal and full (identity-rotated) covariances, and
    # Gaussian vs a one-component mixture: identical up to round-off (1e-12).
    means = torch.tensor([[0.5, -1.0, 2.0], [-1.0, 0.0, 0.3]], dtype=DT)
    stds = torch.tensor([0.3, 1.2], dtype=DT)
    iso = analytic.GaussianMixture(means, stds, [0.2, 0.8])
    diag = analytic.GaussianMixture(means, stds[:, None].expand(2, 3), [2.0, 8.0])
    full = analytic.GaussianMixture(means, covs=torch.diag_embed(stds[:, None].expand(2, 3) ** 2), weights=[1, 4])
    x = torch.randn(7, 3, generator=gen(4), dtype=DT)
    t = torch.rand(7, generator=gen(5), dtype=DT)
    sde = get_sde("vp")
    for other in (diag, full):
        assert torch.allclose(iso.log_prob(x), other.log_prob(x), rtol=0, atol=1e-12)
        assert torch.allclose(iso.diffuse(sde).score(x, t), other.diffuse(sde).score(x, t), rtol=0, atol=1e-12)
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=DT)
    g1 = analytic.Gaussian(torch.tensor([0.1, 0.2], dtype=DT), cov=cov)
    g2 = analytic.GaussianMixture(torch.tensor([[0.1, 0.2]], dtype=DT), covs=cov[None])
    y = torch.randn(5, 2, generator=gen(6), dtype=DT)
    assert torch.allclose(g1.log_prob(y), g2.log_prob(y), rtol=0, atol=1e-14)
    assert torch.allclose(g1.score(y), -torch.linalg.solve(cov, (y - g1.mean()).T).T, rtol=0, atol=1e-12)
    std = analytic.Gaussian(torch.zeros(2, dtype=DT), 2.0)
    assert torch.allclose(std.covariance(), 4 * torch.eye(2, dtype=DT), rtol=0, atol=1e-14)


def test_time_zero_is_the_data_and_at_matches_log_prob():
    # At t = 0, alpha = 1, m = 0, sigma = 0 exactly, so p_0 is the data law (round-off only).
    gm = random_mixture(seed=12, k=3, d=2, kind="full")
    x = torch.randn(6, 2, generator=gen(7), dtype=DT)
    for name in ("vp", "ve", "offset"):
        diffused = gm.diffuse(get_sde(name))
        assert torch.allclose(diffused.log_prob(x, 0.0), gm.log_prob(x), rtol=0, atol=1e-12)
        assert torch.allclose(diffused.score(x, torch.zeros(6, dtype=DT)), gm.score(x), rtol=0, atol=1e-12)
        for t in (1e-5, 0.3, diffused.sde.T):
            at = diffused.at(t)
            assert torch.allclose(at.log_prob(x), diffused.log_prob(x, t), rtol=0, atol=1e-12)
            assert torch.allclose(at.score(x), diffused.score(x, t), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- tails, tiny t, float32
@pytest.mark.parametrize("name", SDE_NAMES)
def test_finite_far_away_tiny_t_and_T_in_float32(name):
    # Points 50 (and 1000) stds from every component at t = 1e-5 and t = T: every output finite
    # in float32 and float64. float32 agrees with float64 to float32 accuracy: the log-density
    # (magnitude ~1e3 here) to 1e-5 relative, the score to 1e-3 relative (the responsibilities
    # are a softmax of log-densities ~1e3 whose float32 round-off is ~1e-4 absolute).
    sde = get_sde(name)
    gm = random_mixture(seed=5, k=3, d=2, kind="full", spread=2.0, scale=0.5)
    diffused = gm.diffuse(sde)
    for t in (1e-5, sde.T):
        x64 = torch.cat([far_points(diffused.at(t), 50.0, gen(8)), far_points(diffused.at(t), 1000.0, gen(9))])
        n = x64.shape[0]
        for dtype in (torch.float32, torch.float64):
            x = x64.to(dtype)
            tt = torch.full((n,), t, dtype=dtype)
            lp = diffused.log_prob(x, tt)
            assert lp.dtype == dtype and torch.isfinite(lp).all(), (name, t, dtype)
            for kind in KINDS:
                out = diffused.as_model(kind)(x, tt)
                assert out.dtype == dtype and out.shape == x.shape
                assert torch.isfinite(out).all(), (name, t, dtype, kind)
        lp32 = diffused.log_prob(x64[:6].float(), t).double()
        lp64 = diffused.log_prob(x64[:6], t)
        assert torch.allclose(lp32, lp64, rtol=1e-5, atol=0), (lp32 - lp64).abs().max()
        s32 = diffused.score(x64[:6].float(), t).double()
        s64 = diffused.score(x64[:6], t)
        assert ((s32 - s64).norm(dim=1) <= 1e-3 * s64.norm(dim=1)).all()
        z = diffused.at(t).sample(8, gen(10), dtype=torch.float32)
        assert torch.isfinite(diffused.at(t).log_prob(z)).all() and torch.isfinite(gm.score(z)).all()


# --------------------------------------------------------------------------- sampling
def _projected_cdf(at: analytic.GaussianMixture, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Exact CDF of u . X at y (a projected Gaussian mixture is a 1-D Gaussian mixture)."""
    mu = at.means.reshape(at.n_components, -1) @ u
    sd = torch.sqrt(torch.einsum("i,kij,j->k", u, at.covariances, u))
    z = (y[:, None] - mu) / sd
    return (at.weights * 0.5 * torch.erfc(-z / math.sqrt(2))).sum(1)


def _sliced_ks(samples: torch.Tensor, at: analytic.GaussianMixture, n_dirs: int = 8) -> float:
    """max over fixed random directions of the KS distance to the exact projected CDF, divided by
    the critical value at family-wise level 1e-3 (Bonferroni over 2 sides and the directions)."""
    n = samples.shape[0]
    flat = samples.reshape(n, -1).to(DT)
    dirs = torch.randn(n_dirs, flat.shape[1], generator=gen(99), dtype=DT)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    worst = 0.0
    ecdf_hi = torch.arange(1, n + 1, dtype=DT) / n
    ecdf_lo = torch.arange(0, n, dtype=DT) / n
    for u in dirs:
        y = (flat @ u).sort().values
        cdf = _projected_cdf(at, u, y)
        worst = max(worst, float(torch.maximum(ecdf_hi - cdf, cdf - ecdf_lo).max()))
    critical = math.sqrt(-math.log(1e-3 / (2 * n_dirs)) / 2) / math.sqrt(n)
    return worst / critical


def test_samples_follow_the_exact_law():
    # Sliced KS against the exact projected CDFs at family-wise level 1e-3 (false-failure rate
    # <= 1e-3 per check; seeds fixed and passing). n = 20,000, 8 directions.
    n = 20_000
    gm = random_mixture(seed=21, k=3, d=3, kind="full", spread=2.0, scale=0.6)
    assert _sliced_ks(gm.sample(n, gen(30), dtype=DT), gm) < 1.0
    for name in ("vp", "ve", "offset"):
        sde = get_sde(name)
        diffused = gm.diffuse(sde)
        t = 0.2 * sde.T
        a = diffused.sample(n, t, gen(31), dtype=DT)
        assert a.shape == (n, 3) and a.dtype == DT
        assert _sliced_ks(a, diffused.at(t)) < 1.0
        assert _sliced_ks(diffused.at(t).sample(n, gen(32), dtype=DT), diffused.at(t)) < 1.0
        # a (n,) tensor of equal times consumes the generator identically to the scalar
        assert torch.equal(a, diffused.sample(n, torch.full((n,), t, dtype=DT), gen(31), dtype=DT))


def test_samples_with_one_time_per_row():
    # Per-row times: the probability integral transform u_i = F_{t_i}(w . x_i) is Uniform(0, 1)
    # exactly; KS against the uniform at level 1e-3 (critical value sqrt(-ln(5e-4)/2)/sqrt(n)).
    n = 10_000
    sde = get_sde("vp")
    gm = random_mixture(seed=22, k=2, d=2, kind="diag", spread=2.0)
    diffused = gm.diffuse(sde)
    t = torch.rand(n, generator=gen(40), dtype=DT) * sde.T
    x = diffused.sample(n, t, gen(41), dtype=DT)
    w = torch.tensor([0.6, 0.8], dtype=DT)
    u = torch.stack(
        [_projected_cdf(diffused.at(float(ti)), w, (xi @ w)[None])[0] for ti, xi in zip(t[:2000], x[:2000])]
    )
    u = u.sort().values
    m = u.shape[0]
    d = float(torch.maximum(torch.arange(1, m + 1, dtype=DT) / m - u, u - torch.arange(m, dtype=DT) / m).max())
    assert d < math.sqrt(-math.log(5e-4) / 2) / math.sqrt(m), d


def test_mixture_sample_zero_rows():
    mix = analytic.GaussianMixture(means=[[-1.0, 0.0], [1.0, 0.5]], stds=[0.5, 0.3])
    assert mix.sample(0, generator=torch.Generator().manual_seed(0)).shape == (0, 2)


def test_single_component_sample_zero_rows():
    """Control for the test above (passes today): one component skips the multinomial."""
    assert analytic.Gaussian(torch.zeros(2), std=1.0).sample(0).shape == (0, 2)


# --------------------------------------------------------------------------- shapes, dtypes, errors
def test_event_shapes_and_dtypes():
    # Image-like event shape (2, 3) behaves as the flattened 6-dim mixture (round-off only).
    means = torch.randn(2, 2, 3, generator=gen(50), dtype=DT)
    stds = torch.rand(2, 2, 3, generator=gen(51), dtype=DT) + 0.3
    img = analytic.GaussianMixture(means, stds)
    flat = analytic.GaussianMixture(means.reshape(2, 6), stds.reshape(2, 6))
    assert img.event_shape == (2, 3) and img.dim == 6 and img.means.shape == (2, 2, 3)
    x = img.sample(5, gen(52), dtype=DT)
    assert x.shape == (5, 2, 3)
    assert torch.allclose(img.log_prob(x), flat.log_prob(x.reshape(5, 6)), rtol=0, atol=1e-13)
    diffused = img.diffuse(get_sde("vp"))
    t = torch.rand(5, generator=gen(53), dtype=DT)
    assert diffused.score(x, t).shape == (5, 2, 3)
    assert diffused.sample(4, 0.5, gen(54)).shape == (4, 2, 3)
    assert diffused.sample(4, 0.5, gen(54)).dtype == torch.get_default_dtype()
    # 1-D: means of shape (K,), data of shape (batch, 1) or (batch,)
    one = analytic.GaussianMixture([-1.0, 2.0], [0.5, 0.7])
    y = one.sample(6, gen(55), dtype=torch.float32)
    assert y.shape == (6, 1) and y.dtype == torch.float32
    assert torch.equal(one.log_prob(y), one.log_prob(y[:, 0]))
    assert one.score(y[:, 0]).shape == (6,) and one.log_prob(y).dtype == torch.float32
    g = analytic.Gaussian(0.5, 2.0)
    assert g.event_shape == (1,)
    ref = -0.5 * ((y[:, 0].double() - 0.5) / 2) ** 2 - math.log(2 * math.sqrt(2 * math.pi))
    assert torch.allclose(g.log_prob(y.double()), ref, rtol=0, atol=1e-14)
    # t as a Python number, 0-d tensor, (batch,) tensor
    s = diffused.score(x, t[0].item())
    assert torch.allclose(s, diffused.score(x, t[0]), rtol=0, atol=0)
    assert torch.allclose(s, diffused.score(x, t[0].expand(5)), rtol=0, atol=1e-15)
    assert repr(img).startswith("GaussianMixture(K=2")


def test_exact_prior_for_logp():
    # The exact p_T as prior=: at(T) has log_prob(z) of shape (batch,) and sample(n, generator=).
    sde = get_sde("vp")
    gm = random_mixture(seed=60, k=2, d=2, kind="iso")
    prior = gm.diffuse(sde).at(sde.T)
    z = prior.sample(9, generator=gen(61), dtype=DT)
    assert z.shape == (9, 2) and prior.log_prob(z).shape == (9,)
    lp = sdekit.logp(gm.diffuse(sde), sde, z[:3], prior=prior, rtol=1e-6, atol=1e-6)
    # PF-ODE solver error at rtol = atol = 1e-6 is ~1e-5 nats (see tests/likelihood/test_logp.py); 1e-3 margin
    assert (lp - gm.diffuse(sde).log_prob(z[:3], 1e-5)).abs().max() < 1e-3


def test_input_validation():
    m = [[0.0, 0.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="exactly one"):
        analytic.GaussianMixture(m)
    with pytest.raises(ValueError, match="exactly one"):
        analytic.GaussianMixture(m, [1.0, 1.0], covs=torch.eye(2).expand(2, 2, 2))
    with pytest.raises(ValueError, match="> 0"):
        analytic.GaussianMixture(m, [1.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        analytic.GaussianMixture(m, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="positive definite"):
        analytic.GaussianMixture(m, covs=torch.tensor([[[1.0, 2.0], [2.0, 1.0]]] * 2))
    with pytest.raises(ValueError, match="symmetric"):
        analytic.GaussianMixture(m, covs=torch.tensor([[[1.0, 0.5], [0.0, 1.0]]] * 2))
    with pytest.raises(ValueError, match="weights"):
        analytic.GaussianMixture(m, [1.0, 1.0], [-1.0, 2.0])
    with pytest.raises(ValueError, match="non-finite"):
        analytic.GaussianMixture([[math.nan, 0.0]], [1.0])
    gm = analytic.GaussianMixture(m, [1.0, 1.0])
    with pytest.raises(ValueError, match="values per sample"):
        gm.log_prob(torch.zeros(4, 3))
    diffused = gm.diffuse(get_sde("vp"))
    with pytest.raises(ValueError, match="batch size"):
        diffused.score(torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="single time"):
        diffused.at(torch.tensor([0.1, 0.2]))
    with pytest.raises(NotAffineError):
        gm.diffuse(sdekit.SDE.from_expressions("-x**3", "1"))
