"""Tabulated log alpha-bar (sdekit/symbolic/_tabulated.py) and the DiscreteVPSDE declared from it (zoo.py).

Exact answers: the table itself at the knots, linearity of the log-SNR between knots, the derivatives against
central differences, and the marginal derived by sympy against the table. Tolerances are float64 round-off
(a few ulp of log/exp/log1p round trips, stated per test) unless a finite difference is involved.
"""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
import torch

import sdekit
from sdekit.compile import compile_time_fn
from sdekit.errors import SDEDeclarationError
from sdekit.symbolic._tabulated import TabulatedLogAlphaBar, log_alpha_bar_function

T = sdekit.t


def _table(n: int = 40, seed: int = 0) -> np.ndarray:
    """A random strictly decreasing alpha-bar table in (0, 1) from betas in [1e-4, 0.2]."""
    betas = np.random.default_rng(seed).uniform(1e-4, 0.2, n)
    return np.cumprod(1.0 - betas)


def _log_snr(log_ab: np.ndarray) -> np.ndarray:
    return log_ab - np.log(-np.expm1(log_ab))


def test_the_table_is_reproduced_at_the_knots_and_zero_at_the_origin():
    ab = _table()
    knots = np.arange(1, ab.size + 1, dtype=np.float64)
    L = log_alpha_bar_function(knots, ab)
    got = np.exp(L.numpy(knots))
    # log -> log-SNR -> logsigmoid -> exp round trip: a few ulp; |log ab| <= 60 here, so <= 1e-14 relative
    assert np.max(np.abs(got / ab - 1)) < 1e-14
    assert L(0) == 0 and L.numpy(0.0) == 0.0
    assert isinstance(L(T), TabulatedLogAlphaBar)


def test_the_log_snr_is_linear_between_knots_and_the_noise_ratio_on_the_first_interval():
    ab = _table(seed=1)
    knots = np.cumsum(np.random.default_rng(2).uniform(0.5, 2.0, ab.size))  # non-uniform knots
    L = log_alpha_bar_function(knots, ab)
    ell = _log_snr(np.log(ab))
    for w in (0.25, 0.5, 0.9):
        mid = (1 - w) * knots[:-1] + w * knots[1:]
        want = (1 - w) * ell[:-1] + w * ell[1:]
        assert np.max(np.abs(_log_snr(L.numpy(mid)) - want)) < 1e-12  # |ell| <= 10: round-off of a few ulp
    # [0, t_1]: r = (1 - ab)/ab linear in t from 0
    r1 = (1 - ab[0]) / ab[0]
    s = np.array([0.1, 0.5, 0.8]) * knots[0]
    assert np.allclose(np.expm1(-L.numpy(s)), r1 * s / knots[0], rtol=1e-13, atol=0)


def test_derivatives_match_central_differences_inside_intervals():
    ab = _table(seed=3)
    L = log_alpha_bar_function(np.arange(1.0, ab.size + 1), ab)
    t = np.concatenate([np.linspace(0.05, 0.95, 7), np.linspace(1.1, ab.size - 0.1, 50)])
    t = t[np.abs(t - np.round(t)) > 0.02]  # away from the knots (the derivatives jump there)
    h = 1e-5
    d1 = (L.numpy(t + h) - L.numpy(t - h)) / (2 * h)
    d2 = (L.numpy(t + h, 1) - L.numpy(t - h, 1)) / (2 * h)
    # central differences: truncation h^2 |L'''| / 6 <~ 1e-10, round-off 1e-16 * |L| / h <~ 1e-9
    assert np.max(np.abs(L.numpy(t, 1) - d1)) < 1e-8
    assert np.max(np.abs(L.numpy(t, 2) - d2)) < 1e-8
    # knots take the interval on their left: one-sided derivative from below
    k = np.arange(2.0, ab.size + 1)
    left = (L.numpy(k) - L.numpy(k - h)) / h
    assert np.max(np.abs(L.numpy(k, 1) - left)) < 1e-4  # one-sided: O(h |L''|)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_compiled_torch_function_agrees_with_numpy_and_keeps_shape_and_dtype(dtype):
    ab = _table(seed=4)
    L = log_alpha_bar_function(np.arange(1.0, ab.size + 1), ab)
    exprs = [L(T), sp.diff(L(T), T), sp.diff(L(T), T, 2), sp.exp(L(T) / 2) * sp.diff(L(T), T)]
    t = torch.linspace(0.0, ab.size + 0.5, 24, dtype=torch.float64).reshape(4, 6)
    for expr in exprs:
        fn = compile_time_fn(expr, T)
        want = torch.tensor(fn.numpy(t.numpy()))
        got = fn(t.to(dtype))
        assert got.shape == t.shape and got.dtype == dtype
        tol = 1e-13 if dtype == torch.float64 else 1e-5  # float32: a few float32 ulp of O(1) values
        assert torch.allclose(got.double(), want, rtol=tol, atol=tol)


def test_a_derivative_of_order_three_is_refused_by_the_compiler():
    L = log_alpha_bar_function([1.0, 2.0], [0.9, 0.5])
    with pytest.raises(sdekit.errors.SdekitError, match="order 1 or 2"):
        compile_time_fn(sp.diff(L(T), T, 3), T)


@pytest.mark.parametrize(
    ("knots", "values", "match"),
    [
        ([1.0, 2.0], [0.9, 0.9], "decrease strictly"),
        ([1.0, 2.0], [0.9, 0.0], "strictly between 0 and 1"),
        ([1.0, 2.0], [1.0, 0.5], "strictly between 0 and 1"),
        ([2.0, 1.0], [0.9, 0.5], "strictly increasing"),
        ([1.0, 2.0], [0.9], "same length"),
    ],
)
def test_malformed_tables_are_declaration_errors(knots, values, match):
    with pytest.raises(SDEDeclarationError, match=match):
        log_alpha_bar_function(knots, values)


def test_tables_pickle_as_their_data_and_different_tables_never_mix():
    a, b = _table(seed=5), _table(seed=6)
    La = log_alpha_bar_function(np.arange(1.0, a.size + 1), a)
    Lb = log_alpha_bar_function(np.arange(1.0, b.size + 1), b)
    assert La is not Lb and La(T) != Lb(T)
    assert log_alpha_bar_function(np.arange(1.0, a.size + 1), a) is La  # one class per table
    expr = sp.sqrt(-sp.diff(La(T), T))
    assert pickle.loads(pickle.dumps(expr)) == expr
    sde_a, sde_b = sdekit.DiscreteVPSDE(alphas_cumprod=a), sdekit.DiscreteVPSDE(alphas_cumprod=b)
    t = torch.arange(1.0, a.size + 1, dtype=torch.float64)
    assert torch.allclose(sde_a.marginal.alpha(t) ** 2, torch.from_numpy(a), rtol=1e-14, atol=0)
    assert torch.allclose(sde_b.marginal.alpha(t) ** 2, torch.from_numpy(b), rtol=1e-14, atol=0)


# ---------------------------------------------------------------- DiscreteVPSDE
def test_discrete_vp_marginal_equals_the_table_and_is_derived_in_closed_form():
    betas = np.linspace(1e-4, 0.02, 1000)
    sde = sdekit.DiscreteVPSDE(betas)
    ab = torch.from_numpy(np.cumprod(1 - betas))
    m = sde.marginal
    assert m.closed and sde.T == 1000 and sde.default_eps == 1.0 and sde.num_train_timesteps == 1000
    L = sde._log_alpha_bar(T)
    assert sp.simplify(m.alpha_expr - sp.exp(L / 2)) == 0 and sp.simplify(m.sigma2_expr - (1 - sp.exp(L))) == 0
    t = torch.arange(1.0, 1001.0, dtype=torch.float64)
    # float64 round-off: |log ab| <= 10.1 here, a few ulp each way
    assert float((m.alpha(t) ** 2 / ab - 1).abs().max()) < 1e-14
    assert float((m.sigma2(t) / (1 - ab) - 1).abs().max()) < 1e-14
    assert float(m.sigma(torch.tensor(0.0, dtype=torch.float64))) == 0.0
    assert torch.allclose(sde.alphas_cumprod, ab, rtol=1e-15, atol=0)
    # the prior is the marginal at T = N
    assert math.isclose(sde.prior.std, math.sqrt(1 - float(ab[-1])), rel_tol=1e-14)
    assert sdekit.DiscreteVPSDE.to_timestep(sdekit.DiscreteVPSDE.from_timestep(7)) == 7


def test_discrete_vp_from_betas_and_from_alphas_cumprod_agree():
    betas = torch.linspace(1e-4, 0.02, 50, dtype=torch.float64)
    a = sdekit.DiscreteVPSDE.from_betas(betas)
    b = sdekit.DiscreteVPSDE.from_alphas_cumprod(torch.cumprod(1 - betas, 0))
    t = torch.linspace(0, 50, 101, dtype=torch.float64)
    assert torch.allclose(a.marginal.sigma2(t), b.marginal.sigma2(t), rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one table"),
        ({"betas": [0.1, 0.2], "alphas_cumprod": [0.9, 0.7]}, "exactly one table"),
        ({"betas": [0.1, 1.0]}, r"betas\[1\]"),
        ({"betas": [0.1]}, "at least 2"),
        ({"betas": [[0.1, 0.2]]}, "1-D"),
        ({"alphas_cumprod": [0.9, 0.95]}, "decrease strictly"),
        ({"betas": "abc"}, "sequence of numbers"),
    ],
)
def test_discrete_vp_refuses_bad_tables(kwargs, match):
    with pytest.raises(SDEDeclarationError, match=match):
        sdekit.DiscreteVPSDE(**kwargs)


def test_discrete_vp_passes_the_symbolic_checks_of_the_testing_kit():
    sde = sdekit.DiscreteVPSDE(np.linspace(1e-4, 0.02, 100))
    assert sdekit.testing.assert_fokker_planck(sde).passed
    assert sdekit.testing.assert_chapman_kolmogorov(sde).passed
    check = sdekit.testing.assert_reverse_consistent(sde)
    assert check.reverse.passed and check.probability_flow.passed


def test_a_pickled_discrete_vp_sde_works_in_a_fresh_process(tmp_path):
    sde = sdekit.DiscreteVPSDE(np.linspace(1e-4, 0.02, 100))
    path = tmp_path / "sde.pkl"
    path.write_bytes(pickle.dumps(sde))
    want = float(sde.marginal.sigma(torch.tensor(42.5, dtype=torch.float64)))
    code = (
        f"import pickle, torch; s = pickle.load(open({str(path)!r}, 'rb'))\n"
        "print(float(s.marginal.sigma(torch.tensor(42.5, dtype=torch.float64))))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.strip()) == want
