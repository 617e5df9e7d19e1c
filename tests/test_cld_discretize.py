"""Exact discrete transitions of k-component affine SDEs (``sde.discretize`` -> ``VectorDiscretization``).

* composing the transitions reproduces the marginal (Phi, m, Sigma) at every grid time (1e-10: float64 round-off),
  for CLD, an SDE with an offset, and one whose moments come from the numeric moment-ODE table;
* the posterior q(X_i | X_{i+1}, X_0) equals brute-force conditioning of the joint Gaussian (X_i, X_{i+1}) given X_0,
  built with the time-homogeneous transition Phi(t - s) instead of Phi(t) Phi(s)^{-1};
* the forward chain and the ancestral (posterior) chain have the marginal moments (5 standard errors);
* one component gives the scalar Discretization of the same SDE; dtype and device follow the inputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.linalg import expm
from test_cld_marginal import TimeVarying  # no closed form (A is not c(t) A0): the numeric moment-ODE table

import sdekit

F64 = torch.float64


class Offset(sdekit.SDE):
    """Triangular A with real eigenvalues -1, -2 and an offset b (m(t) != 0); v_0 ~ N(0, 1/3)."""

    components = ("x", "v")
    data_components = ("x",)

    def drift(self, x, v, t):
        return (-x + v + sp.Rational(1, 2), -2 * v + 1)

    def diffusion(self, x, v, t):
        return (sp.Rational(3, 10), 1)

    def initial_covariance(self):
        return sp.diag(0, sp.Rational(1, 3))


class OU1(sdekit.SDE):
    components = ("x",)

    def drift(self, x, t):
        return (-sp.Rational(3, 2) * (x - sp.Rational(2, 5)),)

    def diffusion(self, x, t):
        return (sp.Rational(7, 10),)


class OU(sdekit.SDE):
    def drift(self, x, t):
        return -sp.Rational(3, 2) * (x - sp.Rational(2, 5))

    def diffusion(self, x, t):
        return sp.Rational(7, 10)


@pytest.fixture(scope="module")
def cld():
    return sdekit.CLDSDE()


GRID = torch.tensor([0.0, 1e-3, 0.01, 0.05, 0.2, 0.21, 0.5, 0.9, 1.0], dtype=F64)


@pytest.mark.parametrize("name", ["cld", "offset", "numeric"])
def test_composed_transitions_reproduce_the_marginal(cld, name):
    sde = {"cld": cld, "offset": Offset(), "numeric": TimeVarying()}[name]
    m = sde.marginal
    for d in (sde.discretize(50), sde.discretize(len(GRID) - 1, times=GRID)):
        k = m.k
        Phi, off, S = torch.eye(k, dtype=F64), torch.zeros(k, dtype=F64), torch.zeros(k, k, dtype=F64)
        worst = 0.0
        for i in range(len(d)):
            Phi = d.scale[i] @ Phi
            off = d.scale[i] @ off + d.shift[i]
            S = d.scale[i] @ S @ d.scale[i].T + d.cov[i]
            t = d.times[i + 1]
            for got, want in ((Phi, m.alpha(t)), (off, m.offset(t)), (S, m.cov(t))):
                worst = max(worst, float((got - want).abs().max()))
        assert worst < 1e-10, worst  # float64 round-off of n products
        assert bool((torch.linalg.eigvalsh(d.cov) > -1e-12).all())  # Q_i is a covariance
    if name == "offset":
        assert float(d.shift.abs().max()) > 0.05  # the offset is exercised


def test_cld_transitions_equal_van_loans_matrix_exponential(cld):
    # independent numbers: for constant A, Phi_i = expm(A h) and Q_i = int_0^h e^{As} D e^{A^T s} ds, both from one
    # scipy expm of [[-A, D], [0, A^T]] h (Van Loan 1978); Q_xx ~ 6.7e-7 at h = 1e-3 is a difference of O(1)
    # covariances, so the tolerance is absolute float64 round-off (1e-13)
    beta, M, Gam = (float(getattr(cld, p)) for p in ("beta", "M", "Gamma"))
    A = np.array([[0.0, beta / M], [-beta, -Gam * beta / M]])
    D = np.diag([0.0, 2 * Gam * beta])
    d = cld.discretize(1000)
    for i in (0, 17, 500, 999):
        h = float(d.times[i + 1] - d.times[i])
        F = expm(np.block([[-A, D], [np.zeros((2, 2)), A.T]]) * h)
        Phi = F[2:, 2:].T
        np.testing.assert_allclose(d.scale[i].numpy(), Phi, rtol=0, atol=1e-13)
        np.testing.assert_allclose(d.cov[i].numpy(), Phi @ F[:2, 2:], rtol=0, atol=1e-13)
    assert float(d.cov[-1, 0, 0]) == pytest.approx(2 * Gam * beta * (beta / M) ** 2 / 3 * 1e-9, rel=0.02)  # h^3 law


def _brute_force_posterior(m, t_s, t_t, x_next, x0, given):
    """Condition the joint N((mu_s, mu_t), [[S_s, S_s Psi^T], [Psi S_s, S_t]]) with Psi = Phi(t - s) (the SDE is
    time-homogeneous) on X_t = x_next; float64, one (k,) state."""
    S_s, S_t = m.cov(t_s, given), m.cov(t_t, given)
    x0 = x0.clone()
    if given == "data":
        x0[1:] = 0
    mu_s, mu_t = m.alpha(t_s) @ x0 + m.offset(t_s), m.alpha(t_t) @ x0 + m.offset(t_t)
    C12 = S_s @ m.alpha(t_t - t_s).T
    gain = C12 @ torch.linalg.inv(S_t)
    return mu_s + gain @ (x_next - mu_t), S_s - gain @ C12.T


@pytest.mark.parametrize("given", ["state", "data"])
@pytest.mark.parametrize("name", ["cld", "offset"])
def test_posterior_equals_brute_force_gaussian_conditioning(cld, name, given):
    sde = cld if name == "cld" else Offset()
    m = sde.marginal
    d = sde.discretize(len(GRID) - 1, times=GRID)
    gen = torch.Generator().manual_seed(3)
    x_next = torch.randn(5, 2, 3, dtype=F64, generator=gen)
    x0 = torch.randn(5, 2, 3, dtype=F64, generator=gen)
    for i in range(len(d)):
        mean, P = d.posterior(x_next, x0, i, given)
        assert P.shape == (2, 2)
        for b, j in ((0, 0), (3, 2), (4, 1)):
            want_mean, want_P = _brute_force_posterior(m, GRID[i], GRID[i + 1], x_next[b, :, j], x0[b, :, j], given)
            torch.testing.assert_close(mean[b, :, j], want_mean, rtol=1e-9, atol=1e-10)  # round-off of k x k solves
            torch.testing.assert_close(P, want_P, rtol=1e-9, atol=1e-10)
    mean, P = d.posterior(x_next, x0, 0, given)  # t_0 = 0: X_0 itself (given its data part: x0 exactly, v0 not)
    if given == "state":
        assert float(P.abs().max()) < 1e-12
        torch.testing.assert_close(mean, x0, rtol=0, atol=1e-10)
    else:
        assert float(P[0].abs().max()) < 1e-12 and float(P[1, 1]) > 0
        torch.testing.assert_close(mean[:, 0], x0[:, 0], rtol=0, atol=1e-10)


def _check_moments(x, mean, cov, n):
    """Mean within 5 standard errors; covariance entries within 5 standard errors of a sample covariance,
    sqrt((S_ii S_jj + S_ij^2) / n)."""
    flat = x.reshape(n, 2, -1).permute(0, 2, 1).reshape(-1, 2)  # every event position is an independent draw
    N = flat.shape[0]
    se_mean = cov.diagonal().sqrt() / math.sqrt(N)
    assert bool(((flat.mean(0) - mean).abs() < 5 * se_mean).all()), (flat.mean(0), mean, se_mean)
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / N).sqrt()
    assert bool(((torch.cov(flat.T) - cov).abs() < 5 * se_cov).all()), (torch.cov(flat.T), cov, se_cov)


def test_the_forward_chain_has_the_marginal_moments(cld):
    # n = 20,000 rows x 2 positions, 20 steps of CLD from a fixed X_0; moments at t = 0.25 and T, 5 standard errors
    n, sde = 20_000, cld
    d = sde.discretize(20)
    gen = torch.Generator().manual_seed(11)
    X0 = torch.tensor([1.5, -0.3], dtype=F64)
    x = X0[None, :, None].expand(n, 2, 2).clone()
    for i in range(len(d)):
        x = d.step(x, i, generator=gen)
        if i + 1 in (5, 20):
            t = d.times[i + 1]
            _check_moments(x, sde.marginal.alpha(t) @ X0 + sde.marginal.offset(t), sde.marginal.cov(t), n)


@pytest.mark.parametrize("given", ["state", "data"])
def test_the_ancestral_chain_has_the_marginal_moments(given):
    # n = 20,000 rows x 2 positions: X_T from the kernel given X_0, then posterior draws down the 10-step grid;
    # every X_i must follow the kernel at t_i (5 standard errors; Offset SDE, so m(t) != 0)
    n, sde = 20_000, Offset()
    m = sde.marginal
    d = sde.discretize(10)
    gen = torch.Generator().manual_seed(5)
    X0 = torch.tensor([0.8, 2.0], dtype=F64)
    x0 = X0[None, :, None].expand(n, 2, 2).clone()
    x = m.sample(x0, d.times[-1], generator=gen, given=given)
    X0_eff = X0 if given == "state" else torch.tensor([0.8, 0.0], dtype=F64)
    for i in reversed(range(1, len(d))):
        x = d.posterior_sample(x, x0, i, generator=gen, given=given)
        t = d.times[i]
        _check_moments(x, m.alpha(t) @ X0_eff + m.offset(t), m.cov(t, given), n)


def test_one_component_equals_the_scalar_discretization():
    d1, d = OU1().discretize(7), OU().discretize(7)
    assert isinstance(d, sdekit.Discretization) and isinstance(d1, sdekit.VectorDiscretization)
    torch.testing.assert_close(d1.scale[:, 0, 0], d.scale, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(d1.shift[:, 0], d.shift, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(d1.noise[:, 0, 0], d.noise, rtol=1e-12, atol=1e-14)


def test_scalar_discretize_is_unchanged():
    d = sdekit.VPSDE().discretize(4)
    alpha = sdekit.VPSDE().marginal.alpha(d.times)
    torch.testing.assert_close(d.betas, 1 - (alpha[1:] / alpha[:-1]) ** 2, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="times must increase strictly"):
        sdekit.VPSDE().discretize(2, times=[0.0, 0.5, 0.4])


def test_dtype_and_device_follow_the_inputs(cld):
    d = cld.discretize(5)
    assert d.scale.dtype == F64 and d.times.dtype == F64
    x = torch.randn(3, 2, 4, dtype=torch.float32)
    for out in (d.step(x, 1), d.posterior(x, x, 2)[0], d.posterior_sample(x, x, 2)):
        assert out.dtype == torch.float32 and out.shape == x.shape
    d32 = cld.discretize(5, dtype=torch.float32, device="cpu")
    assert d32.cov.dtype == torch.float32 and d32.times.device.type == "cpu"
    torch.testing.assert_close(d32.cov, d.cov.float())
    if torch.cuda.is_available():  # pragma: no cover - CPU-only machines
        xc = x.cuda()
        assert d.step(xc, 0).device == xc.device


def test_bad_arguments_are_refused(cld):
    d = cld.discretize(4)
    x = torch.zeros(2, 2, 3)
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        d.step(x, 4)
    with pytest.raises(ValueError, match="2-component state"):
        d.step(torch.zeros(2, 3), 0)
    with pytest.raises(ValueError, match="given must be"):
        d.posterior(x, x, 1, given="x")
    with pytest.raises(ValueError, match="positive integer"):
        cld.discretize(0)
    with pytest.raises(ValueError, match="n \\+ 1"):
        cld.discretize(3, times=[0.0, 0.5, 1.0])


def test_a_singular_kernel_covariance_is_refused():
    class Silent(sdekit.SDE):  # noise never reaches x
        components = ("x", "v")

        def drift(self, x, v, t):
            return (-x, -v)

        def diffusion(self, x, v, t):
            return (0, 1)

    d = Silent().discretize(3)
    with pytest.raises(sdekit.errors.SdekitError, match="singular"):
        d.posterior(torch.zeros(1, 2, 1), torch.zeros(1, 2, 1), 1)
