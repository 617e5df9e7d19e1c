"""Tests of sdekit.bits_per_dim and sdekit.dequantize: the dequantization convention and its offsets."""

from __future__ import annotations

import math

import pytest
import torch

import sdekit

DT = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("data_range", ["[0,1]", "[-1,1]", (-3.0, 5.0)])
def test_bits_per_dim_of_exact_discrete_model(data_range):
    # Discrete 8-bit data k with known probabilities pi, dequantized and scaled to data_range:
    # the exact density of x is pi_k * K / a inside cell k (a = width of the range), so the
    # bits/dim must equal -sum_i log2 pi_{k_i} / D for every sample: exact, up to round-off.
    torch.manual_seed(0)
    n_bits, d = 8, 5
    levels = 2**n_bits
    pi = torch.softmax(torch.randn(levels, dtype=DT) * 2, 0)
    k = torch.multinomial(pi, 400 * d, replacement=True, generator=gen(11)).reshape(400, d)
    x = sdekit.dequantize(k, data_range=data_range, n_bits=n_bits, generator=gen(12), dtype=DT)
    low, high = (0.0, 1.0) if data_range == "[0,1]" else (-1.0, 1.0) if data_range == "[-1,1]" else data_range
    width = high - low
    assert x.min() >= low and x.max() < high
    cell = torch.floor((x - low) / width * levels).long()
    assert torch.equal(cell, k)
    logp = torch.log(pi[cell] * levels / width).sum(1)
    bpd = sdekit.bits_per_dim(logp, x, data_range=data_range, n_bits=n_bits)
    expected = -torch.log2(pi[k]).sum(1) / d
    assert torch.allclose(bpd, expected, rtol=0, atol=1e-12)
    # averaged over the data: the entropy of pi in bits (Monte Carlo, 5 standard errors)
    entropy = -(pi * torch.log2(pi)).sum()
    assert abs(bpd.mean() - entropy) < 5 * bpd.std() / math.sqrt(400)


def test_bits_per_dim_uniform_levels_and_offsets():
    # Uniform over all 256 levels of [0,1] or [-1,1]: the exact density is 1 and 1/2^D, and the
    # answer is 8 bits/dim in both cases: only the offsets 8 and 7 make that true.
    x01 = torch.rand(10, 3, 4, 4, dtype=DT)
    d = 48
    assert torch.allclose(
        sdekit.bits_per_dim(torch.zeros(10, dtype=DT), x01, data_range="[0,1]"), torch.full((10,), 8.0, dtype=DT)
    )
    lp = torch.full((10,), -d * math.log(2.0), dtype=DT)
    assert torch.allclose(sdekit.bits_per_dim(lp, x01 * 2 - 1, data_range="[-1,1]"), torch.full((10,), 8.0, dtype=DT))
    assert torch.allclose(sdekit.bits_per_dim(lp, d, data_range="[-1,1]"), torch.full((10,), 8.0, dtype=DT))
    # 4-bit data uniform over its 16 levels: 4 bits/dim
    assert torch.allclose(
        sdekit.bits_per_dim(torch.zeros(2, dtype=DT), 7, data_range="[0,1]", n_bits=4), torch.full((2,), 4.0, dtype=DT)
    )
    with pytest.raises(ValueError, match="data_range"):
        sdekit.bits_per_dim(lp, x01, data_range="[0,255]")


def test_levels_that_are_not_a_power_of_two():
    # 17 levels 0..16 (scikit-learn's digits) in [-1, 1]: x = 2 (k + u) / 17 - 1 fills [-1, 1) cell by cell, and
    # data uniform over the 17 levels (exact density 1/2 per dimension) give log2(17) bits/dim: offset log2(17/2).
    k = torch.arange(17).repeat(30).reshape(-1, 1)
    x = sdekit.dequantize(k, levels=17, generator=gen(3), dtype=DT)
    assert x.min() >= -1 and x.max() < 1
    assert torch.equal(torch.floor((x + 1) / 2 * 17).long(), k)
    lp = torch.full((k.shape[0],), -math.log(2.0), dtype=DT)
    assert torch.allclose(sdekit.bits_per_dim(lp, x, levels=17), torch.full_like(lp, math.log2(17)), atol=1e-12)
    # levels = 2**n_bits is the same as n_bits; a contradiction or a single level is refused
    assert torch.equal(sdekit.bits_per_dim(lp, x, levels=256), sdekit.bits_per_dim(lp, x, n_bits=8))
    assert torch.equal(sdekit.bits_per_dim(lp, x, levels=16, n_bits=4), sdekit.bits_per_dim(lp, x, n_bits=4))
    with pytest.raises(ValueError, match="n_bits=5 means 32 levels but levels=17"):
        sdekit.bits_per_dim(lp, x, levels=17, n_bits=5)
    with pytest.raises(ValueError, match="levels must be at least 2"):
        sdekit.dequantize(k, levels=1)
    with pytest.raises(ValueError, match=r"levels in \[0, 9\] for 10 levels"):
        sdekit.dequantize(k, levels=10)


# --------------------------------------------------------------------------- input checks
def test_dequantize_rejects_fractional_levels_and_integer_dtype():
    with pytest.raises(ValueError, match="whole-number"):
        sdekit.dequantize(torch.tensor([0.5, 3.0]))
    with pytest.raises(TypeError, match="floating"):
        sdekit.dequantize(torch.tensor([1, 2]), dtype=torch.int64)
    x = sdekit.dequantize(torch.tensor([0.0, 255.0]), data_range="[0,1]", generator=torch.Generator().manual_seed(0))
    assert ((x >= torch.tensor([0.0, 255 / 256])) & (x < torch.tensor([1 / 256, 1.0]))).all()


def test_dequantize_rejects_a_list():
    with pytest.raises(TypeError):
        sdekit.dequantize([1, 2])


def test_dequantize_rejects_out_of_range_levels():
    with pytest.raises(ValueError):
        sdekit.dequantize(torch.tensor([300, -1]))


def test_bits_per_dim_rejects_a_batch_mismatch():
    with pytest.raises(ValueError):
        sdekit.bits_per_dim(torch.zeros(3), torch.zeros(8, 2))
