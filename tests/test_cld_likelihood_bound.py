"""sdekit.losses.likelihood_bound on k-component SDEs (CLD): the bound on the cross-entropy of the joint law of the
full state at eps, with the exact Gaussian oracle.

* Theory pieces: tr(Sigma^-1 D) = -d/dt lambda for the generalised log-SNR lambda = 2 log|det Phi| - log det Sigma
  (finite differences), and the constant -d/2 [lambda(eps) - lambda(T)] - d [log|det Phi(T)| - log|det Phi(eps)|]
  equals -1/2 int d tr(Sigma^-1 D) - int d tr A dt by quadrature, with tr A = -Gamma beta / M from the drift.
* Tightness: Gaussian data, the exact score and the exact p_T as prior give E[bound] = H(p_eps), the entropy of the
  joint (x, v) law at eps (closed form), within 5 standard errors (n = 40,000); with sde.prior the paired difference
  is KL(p_T || prior) (closed form); a score scaled by 0.8 raises the bound (paired, > 5 standard errors).
* The k-component likelihood time sampling: importance weights average to T - eps.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

import sdekit
from sdekit import analytic, losses
from sdekit._vector_dsm import log_det_alpha, log_det_snr, trace_density

F64 = torch.float64
MU, STD, EPS = torch.tensor([[0.5, -1.0]], dtype=F64), 0.6, 1e-3


@pytest.fixture(scope="module")
def setup():
    sde = sdekit.CLDSDE()
    gm = analytic.GaussianMixture(MU, stds=torch.tensor([STD], dtype=F64))
    return sde, gm, gm.diffuse(sde)


def _joint_law(sde, t):
    """Mean (k d,) and covariance (k d, k d) of the full state at t for Gaussian data N(MU, STD^2 I):
    a (x) mu + m (x) 1 and a a^T (x) C + S (x) I (flattened component-major, like X.reshape(batch, -1))."""
    m = sde.marginal
    tt = torch.tensor(t, dtype=F64)
    a, off, S = m.alpha(tt)[:, 0], m.offset(tt), m.cov(tt, given="data")
    d = MU.shape[1]
    mean = torch.kron(a, MU[0]) + torch.kron(off, torch.ones(d, dtype=F64))
    cov = torch.kron(torch.outer(a, a), STD**2 * torch.eye(d, dtype=F64)) + torch.kron(S, torch.eye(d, dtype=F64))
    return mean, cov


def _entropy(cov):
    return 0.5 * float(torch.logdet(2 * math.pi * math.e * cov))


@pytest.mark.parametrize("t", [1e-3, 0.05, 0.4, 0.9])
def test_trace_density_is_minus_the_derivative_of_the_generalised_log_snr(setup, t):
    sde = setup[0]
    h = 1e-5 * t
    ts = torch.tensor([t - h, t + h], dtype=F64)
    lam = log_det_snr(sde, ts)
    fd = -(lam[1] - lam[0]) / (2 * h)
    # central differences: relative error ~ h^2 lambda''' / lambda' plus round-off 1e-16 / h: < 1e-6 here
    assert float(abs(fd / trace_density(sde, torch.tensor(t, dtype=F64)) - 1)) < 1e-6


def test_the_constant_equals_its_quadrature(setup):
    sde = setup[0]
    d, T = 3, float(sde.T)
    ends = torch.tensor([EPS, T], dtype=F64)
    lam, log_alpha = log_det_snr(sde, ends), log_det_alpha(sde, ends)
    const = -0.5 * d * float(lam[0] - lam[1]) - d * float(log_alpha[1] - log_alpha[0])
    dens = lambda s: float(trace_density(sde, torch.tensor(s, dtype=F64)))  # noqa: E731
    integral = sum(quad(dens, a, b, epsabs=0, epsrel=1e-12, limit=200)[0] for a, b in ((EPS, 0.01), (0.01, T)))
    tr_A = -float(sde.Gamma) * float(sde.beta) / float(sde.M)  # the drift (beta/M v, -beta x - Gamma beta/M v)
    expect = -0.5 * d * integral - d * tr_A * (T - EPS)
    assert const == pytest.approx(expect, rel=1e-9, abs=1e-9)  # quad at rtol 1e-12
    S = sde.marginal.cov(ends)
    assert const == pytest.approx(-0.5 * d * float(torch.logdet(S[1]) - torch.logdet(S[0])), rel=1e-12)


def test_the_bound_is_tight_for_the_exact_score_and_prior(setup):
    # n = 40,000 data points; per-sample std ~28 nats (the DSM term at the exact score is ~ Z/2 (chi^2 - 1) per
    # position, Z = lambda(eps) - lambda(T) ~ 60), so the standard error is ~0.14 nats; 5 standard errors.
    sde, gm, oracle = setup
    n = 40_000
    x0 = gm.sample(n, torch.Generator().manual_seed(0), dtype=F64)
    exact = losses.likelihood_bound(oracle, sde, x0, eps=EPS, prior=oracle.at(sde.T),
                                    generator=torch.Generator().manual_seed(1), reduction="none")  # fmt: skip
    H = _entropy(_joint_law(sde, EPS)[1])
    se = float(exact.std()) / math.sqrt(n)
    assert abs(float(exact.mean()) - H) < 5 * se, (float(exact.mean()), H, se)
    # the same generator: same t, z and X_T, so the difference is -log prior(X_T) + log p_T(X_T) exactly
    default = losses.likelihood_bound(oracle, sde, x0, eps=EPS, generator=torch.Generator().manual_seed(1),
                                      reduction="none")  # fmt: skip
    mT, CT = _joint_law(sde, float(sde.T))
    P = torch.kron(sde.prior.cov, torch.eye(MU.shape[1], dtype=F64))
    r = mT - torch.kron(sde.prior.mean, torch.ones(MU.shape[1], dtype=F64))
    kl = 0.5 * float(torch.trace(torch.linalg.solve(P, CT)) + r @ torch.linalg.solve(P, r) - len(r)
                     + torch.logdet(P) - torch.logdet(CT))  # fmt: skip
    diff = default - exact
    assert abs(float(diff.mean()) - kl) < 5 * float(diff.std()) / math.sqrt(n) + 1e-12, (float(diff.mean()), kl)
    worse = losses.likelihood_bound(lambda X, t: 0.8 * oracle(X, t), sde, x0, eps=EPS, prior=oracle.at(sde.T),
                                    generator=torch.Generator().manual_seed(1), reduction="none")  # fmt: skip
    gap = worse - exact
    assert float(gap.mean()) > 5 * float(gap.std()) / math.sqrt(n)


def test_uniform_time_sampling_and_float32(setup):
    # n = 4,000, both time samplings are unbiased: their means agree within 5 standard errors of the difference
    sde, gm, oracle = setup
    n = 4_000
    x0 = gm.sample(n, torch.Generator().manual_seed(2), dtype=F64)
    kw = dict(eps=EPS, prior=oracle.at(sde.T), reduction="none")
    imp = losses.likelihood_bound(oracle, sde, x0, generator=torch.Generator().manual_seed(3), **kw)
    uni = losses.likelihood_bound(oracle, sde, x0, time_sampling="uniform", generator=torch.Generator().manual_seed(4),
                                  **kw)  # fmt: skip
    se = math.sqrt(float(imp.var() + uni.var()) / n)
    assert abs(float(imp.mean() - uni.mean())) < 5 * se
    assert float(uni.std()) > 2 * float(imp.std())  # the importance density reduces the variance
    b32 = losses.likelihood_bound(oracle, sde, x0[:64].float(), eps=EPS, generator=torch.Generator().manual_seed(3))
    assert b32.dtype == torch.float32 and bool(torch.isfinite(b32))


def test_likelihood_time_sampling_weights_average_to_the_interval(setup):
    # E_q[1/q] = T - eps; n = 100,000 draws, 5 standard errors
    sde = setup[0]
    t, w = losses.sample_times(100_000, sde, EPS, "likelihood", generator=torch.Generator().manual_seed(0))
    assert bool((t >= EPS).all() and (t <= sde.T).all())
    assert abs(float(w.mean()) - (float(sde.T) - EPS)) < 5 * float(w.std()) / math.sqrt(len(w))
