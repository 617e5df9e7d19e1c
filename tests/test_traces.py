"""sdekit._traces: the exact and Hutchinson Jacobian traces shared by logp and the losses (ism, ssm)."""

from __future__ import annotations

import math

import pytest
import torch

from sdekit import _traces
from sdekit._traces import ExactTrace, HutchinsonTrace, draw_probes, drift_and_exact_trace, hutchinson_trace

DT = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def _linear_map(d, seed):
    """fn(x, t) = x A^T + t b per sample (rows of x flattened), and A: its Jacobian for every sample is A."""
    a = torch.randn(d, d, generator=gen(seed), dtype=DT)
    b = torch.randn(d, generator=gen(seed + 1), dtype=DT)

    def fn(x, t):
        return (x.reshape(x.shape[0], -1) @ a.T + t * b).reshape(x.shape)

    return fn, a


@pytest.mark.parametrize("event_shape", [(6,), (2, 3)])
def test_exact_trace_of_a_linear_map_is_the_trace_of_its_matrix(event_shape):
    # Exact to round-off: the Jacobian of x -> A x is A for every sample, whatever x.
    fn, a = _linear_map(math.prod(event_shape), seed=0)
    x = torch.randn(5, *event_shape, generator=gen(2), dtype=DT).requires_grad_()
    out, tr = ExactTrace(x)(fn, x, 0.3, False)
    assert torch.allclose(out, fn(x, 0.3), rtol=0, atol=1e-12)
    assert torch.allclose(tr, torch.full((5,), float(a.trace()), dtype=DT), rtol=0, atol=1e-12)
    # the one-off form used by ism gives the same
    assert torch.equal(drift_and_exact_trace(fn, x, 0.3, False)[1], tr)


def test_exact_trace_in_chunks(monkeypatch):
    # Forcing chunks of 10 coordinates out of 32: every diagonal Jacobian entry is still summed once
    # (z**3 has diagonal 3 z**2; flipping an even-length axis moves every entry, adding nothing). Exact to round-off.
    monkeypatch.setattr(_traces, "_MAX_BATCHED_ELEMENTS", 3 * 32 * 10)
    x = torch.randn(3, 2, 4, 4, generator=gen(31), dtype=DT).requires_grad_()
    tracer = _traces.ExactTrace(x)
    assert tracer.chunk == 10
    out, tr = tracer(lambda z, t: z**3 + z.flip(-1), x, 0.0, False)
    assert torch.allclose(out, x**3 + x.flip(-1), rtol=0, atol=1e-12)
    assert torch.allclose(tr, (3 * x**2).reshape(3, -1).sum(1), rtol=0, atol=1e-12)


def test_exact_trace_replicates_a_per_sample_time_with_the_batch():
    # fn(x, t) = t * x per sample: the trace is d * t_b for sample b (exact), which needs t[b] on every copy of b.
    x = torch.randn(4, 3, generator=gen(3), dtype=DT).requires_grad_()
    t = torch.tensor([0.5, 1.0, 2.0, -1.0], dtype=DT)
    _, tr = ExactTrace(x)(lambda z, tt: tt[:, None] * z, x, t, False)
    assert torch.allclose(tr, 3 * t, rtol=0, atol=1e-12)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_mean_is_within_three_standard_errors_of_the_exact_trace(probe):
    # n = 4000 rows, each the same point with its own probe: 4000 independent estimates v^T A v of tr A.
    # A is not diagonal, so the estimator has variance (the standard error is checked to be positive);
    # their mean must lie within 3 standard errors of tr A (a fixed seed: the check is deterministic).
    n, d = 4000, 6
    fn, a = _linear_map(d, seed=4)
    x = torch.randn(1, d, generator=gen(6), dtype=DT).expand(n, d).clone().requires_grad_()
    probes = draw_probes(probe, 1, x, gen(7))
    with torch.enable_grad():
        est = hutchinson_trace(fn(x, 0.0), x, probes, False)
    se = est.std() / math.sqrt(n)
    assert se > 1e-3
    assert abs(est.mean() - a.trace()) < 3 * se, (est.mean(), a.trace(), se)


def test_hutchinson_with_several_probes_is_their_mean():
    # n_probes probes per sample (one batched backward pass) average the single-probe estimates: exact to round-off.
    fn, _ = _linear_map(5, seed=8)
    x = torch.randn(3, 5, generator=gen(9), dtype=DT).requires_grad_()
    probes = draw_probes("rademacher", 4, x, gen(10))
    with torch.enable_grad():
        out, together = HutchinsonTrace(probes)(fn, x, 0.0, False)
        singles = torch.stack([hutchinson_trace(out, x, probes[k : k + 1], False) for k in range(4)])
    assert torch.allclose(together, singles.mean(0), rtol=0, atol=1e-12)


def test_probe_shapes_and_values():
    # Rademacher entries are exactly +-1; Gaussian ones standard normal (shape and dtype follow like).
    like = torch.zeros(3, 2, dtype=DT)
    r = draw_probes("rademacher", 5, like, gen(11))
    assert r.shape == (5, 3, 2) and r.dtype == DT and torch.equal(r.abs(), torch.ones_like(r))
    g = draw_probes("gaussian", 5, like, gen(11))
    assert g.shape == (5, 3, 2) and not torch.equal(g.abs(), torch.ones_like(g))
