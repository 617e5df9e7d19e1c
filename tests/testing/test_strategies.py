"""sdekit.testing's strategies (:mod:`sdekit.testing._strategies`): 200 drawn examples each are valid objects,
and a shrunk failure prints the declaration that rebuilds it."""

from __future__ import annotations

import math
import types

import pytest
import sympy as sp
import torch
from _partial_domain import CIR as _CIR
from _partial_domain import GBM as _GBM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sdekit
from sdekit import testing as sdt
from sdekit.analytic import GaussianMixture
from sdekit.symbolic.sde import SDE
from sdekit.testing._strategies import _grid_problem

F64 = torch.float64
MANY = settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))


def _finite_kernels(sde: SDE) -> None:
    x = torch.linspace(-3, 3, 7, dtype=F64)
    for t in (0.0, 0.5 * sde.T, sde.T):
        f, g = sde.drift_fn(x, t), sde.diffusion_fn(x, t)
        assert torch.isfinite(f).all() and torch.isfinite(g).all() and (g > 0).all(), sde


# ---------------------------------------------------------------- strategies: 200 valid examples each
def test_sdes_yield_valid_declarations():
    """200 draws of sdes(): declarations build, f/g finite with g > 0, the printed declaration rebuilds the
    SDE (checked on every 10th draw); the marginal of every 8th affine one (~10 draws; deriving all ~80
    takes ~50 s of sympy) is finite with sigma > 0."""
    drawn: list[SDE] = []

    @MANY
    @given(sdt.sdes())
    def check(sde):
        _finite_kernels(sde)
        assert repr(sde).startswith("SDE.from_expressions(")
        if len(drawn) % 10 == 0:
            rebuilt = eval(repr(sde), {"SDE": SDE})  # the printed example is the declaration
            assert sp.simplify(rebuilt.f - sde.f) == 0 and sp.simplify(rebuilt.g - sde.g) == 0
        drawn.append(sde)

    check()
    assert len(drawn) >= 200
    affine = [s for s in drawn if s.is_affine]
    assert 40 <= len(affine) < len(drawn)  # both branches of the grammar are exercised
    tt = torch.tensor([1e-3, 0.5, 1.0], dtype=F64)
    for sde in affine[::8]:
        m = sde.marginal
        assert torch.isfinite(m.alpha(tt)).all() and torch.isfinite(m.offset(tt)).all(), sde
        assert (m.sigma(tt) > 0).all() and torch.isfinite(m.sigma(tt)).all(), sde


def test_affine_sdes_are_affine():
    @MANY
    @given(sdt.affine_sdes())
    def check(sde):
        assert sde.is_affine and sde.noise_type == "additive", sde
        _finite_kernels(sde)

    check()


def test_shrunk_failure_prints_the_declaration():
    # Asserts only what sdekit controls: hypothesis's report wording changes between releases ("Falsifying
    # example:" until 6.158, "Failing test case:" from 6.159), but it prints a drawn object by its repr, and
    # sdekit makes that repr the declaration that rebuilds the SDE.
    seen: list[SDE] = []

    @settings(max_examples=20, derandomize=True, deadline=None, database=None)
    @given(sdt.affine_sdes())
    def prop(sde):
        seen.append(sde)
        assert not sde.g.has(sp.exp)  # false for some draws: hypothesis shrinks and reports one

    with pytest.raises(AssertionError) as info:
        prop()
    shrunk = seen[-1]  # hypothesis replays the shrunk example last, and that replay raised
    assert shrunk.g.has(sp.exp)
    declaration = repr(shrunk)
    assert declaration.startswith("SDE.from_expressions(")
    assert eval(declaration, {"SDE": SDE}).g.has(sp.exp)  # the printed declaration reproduces the failure
    report = "\n".join(getattr(info.value, "__notes__", []))
    squeeze = "".join  # hypothesis may wrap a long repr over lines: compare without whitespace
    assert squeeze(declaration.split()) in squeeze(report.split()), report


@pytest.mark.parametrize("cls", [sdekit.VPSDE, sdekit.VESDE, sdekit.OrnsteinUhlenbeck])
def test_parameters_are_valid(cls):
    @MANY
    @given(sdt.parameters(cls))
    def check(params):
        assert set(params) == set(cls().params)
        sde = cls(**params)
        _finite_kernels(sde)
        assert math.isfinite(sde.marginal.sigma(torch.tensor([sde.T], dtype=F64)).item())

    check()


@pytest.mark.parametrize("cls", [_GBM, _CIR])
def test_parameters_of_sdes_with_a_vanishing_or_partly_undefined_diffusion(cls):
    # the validity filter used to require g > 0 on all of [-3, 3]: no draw ever passed (hypothesis Unsatisfiable)
    drawn = []

    @settings(max_examples=10, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(sdt.parameters(cls))
    def check(params):
        assert set(params) == set(cls().params)
        sde = cls(**params)
        x = torch.linspace(0.0, 3.0, 7, dtype=F64)  # where both SDEs are defined
        assert torch.isfinite(sde.drift_fn(x, 0.5)).all() and torch.isfinite(sde.diffusion_fn(x, 0.5)).all()
        assert (sde.diffusion_fn(x[1:], 0.5) != 0).all()
        drawn.append(params)

    check()
    assert len(drawn) == 10


def test_parameters_filter_names_the_problem():
    assert _grid_problem(_CIR()) is None and _grid_problem(_GBM()) is None
    quiet = types.SimpleNamespace(T=1.0, drift_fn=lambda x, t: -x, diffusion_fn=lambda x, t: torch.zeros_like(x))
    assert "zero at every grid point" in _grid_problem(quiet)
    assert "NaN at every x" in _grid_problem(SDE.from_expressions("-x", "sqrt(x - 4)"))
    assert "infinite" in _grid_problem(SDE.from_expressions("1/x", "1"))


def test_parameters_rejects_unknown_override():
    with pytest.raises(ValueError, match="no parameter"):
        sdt.parameters(sdekit.VPSDE, gamma=None)


def test_times_mixtures_and_shapes_are_valid():
    sde = sdekit.VPSDE()

    @MANY
    @given(t=sdt.times(sde), mix=sdt.gaussian_mixtures(dim=st.integers(1, 3)), shape=sdt.event_shapes())
    def check(t, mix, shape):
        assert sde.default_eps <= t <= sde.T
        assert all(isinstance(s, int) and s >= 1 for s in shape) and 1 <= len(shape) <= 3
        x = mix.sample(8, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(mix.log_prob(x)).all()
        assert repr(mix).startswith("GaussianMixture(means=")
        rebuilt = eval(repr(mix), {"GaussianMixture": GaussianMixture})
        assert torch.allclose(rebuilt.log_prob(x), mix.log_prob(x))

    check()
