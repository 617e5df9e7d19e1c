"""The sympy -> torch compiler: shapes, dtypes, constants, special functions."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch

import sdekit
from sdekit.compile import compile_expr, compile_time_fn

x, t = sdekit.x, sdekit.t


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5,), (5, 3), (5, 2, 4)])
def test_shapes_and_dtypes(dtype, shape):
    X = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    exprs = [
        sp.Integer(3),
        sp.sqrt(2),
        t**2,
        x * t,
        sp.exp(-(x**2)) + t,
        sp.Max(t, sp.Rational(1, 2)),
        sp.Min(x, 1),
        sp.Piecewise((x, t < sp.Rational(1, 2)), (2 * x, True)),
        sp.sqrt(2 + t) * sp.log(5),
    ]
    for e in exprs:
        fn = compile_expr(e, x, t)
        for tt in (0.3, torch.tensor(0.3, dtype=dtype), torch.full((shape[0],), 0.3, dtype=dtype)):
            out = fn(X, tt)
            assert isinstance(out, torch.Tensor) and out.shape == X.shape and out.dtype == dtype, (e, tt)
            ref = sp.lambdify((x, t), e, "math")
            expected = torch.tensor([ref(float(v), 0.3) for v in X.flatten()], dtype=torch.float64).reshape(shape)
            tol = 1e-6 if dtype == torch.float32 else 1e-14
            assert torch.allclose(out.double(), expected, rtol=tol, atol=tol), e


def test_batch_times_broadcast_per_row():
    X = torch.ones(3, 2, dtype=torch.float64)
    out = compile_expr(t * x, x, t)(X, torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    assert torch.equal(out, torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], dtype=torch.float64))


def test_bad_time_shape_is_explained():
    with pytest.raises(ValueError, match="shape"):
        compile_expr(t * x, x, t)(torch.ones(3, 2), torch.ones(4))


def test_time_functions_and_expm1_accuracy():
    fn = compile_time_fn(1 - sp.exp(-t), t)
    tt = torch.tensor([1e-7, 0.5], dtype=torch.float32)
    out = fn(tt)
    assert out.dtype == torch.float32 and out.shape == (2,)
    # Written naively, 1 - exp(-1e-7) is 1.19e-7 in float32 (19% off); expm1 keeps it exact.
    assert out[0].item() == pytest.approx(-math.expm1(-1e-7), rel=1e-6)
    assert compile_time_fn(sp.Integer(2), t)(0.5).dtype == torch.float64
    assert compile_time_fn(sp.Integer(2), t)(torch.zeros(4)).shape == (4,)


def test_sde_compiled_members():
    sde = sdekit.VESDE()
    X = torch.zeros(4, 3)
    g = sde.diffusion_fn(X, torch.rand(4))
    assert g.shape == X.shape and g.dtype == torch.float32
    f = sde.drift_fn(X, 0.5)
    assert torch.equal(f, torch.zeros_like(X))
    assert sde.drift_fn is sde.drift_fn  # compiled once, cached


def test_unsupported_function_is_reported():
    with pytest.raises(sdekit.errors.SdekitError, match="cannot compile"):
        compile_expr(sp.gamma(x), x, t)
