"""sdekit.testing: strategies yield valid objects; assertions pass on right and fail on wrong SDEs/samplers.

Statistical tests are seeded; their bounds come from binomial quantiles at the 1e-3 level (stated per test).
"""

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
from scipy import stats

import sdekit
from sdekit import testing as sdt
from sdekit.analytic import GaussianMixture
from sdekit.symbolic import derive
from sdekit.symbolic.sde import SDE
from sdekit.testing._strategies import _grid_problem

F64 = torch.float64
torch.set_num_threads(1)
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


def test_profiles_registered_in_one_place():
    sdt.register_profiles()
    assert settings.get_profile("ci").derandomize is True
    assert settings.get_profile("ci").max_examples == 30
    assert settings.get_profile("dev").derandomize is False


# ---------------------------------------------------------------- symbolic assertions: right and wrong
def test_fokker_planck_passes_and_fails_readably():
    assert sdt.assert_fokker_planck(sdekit.SDE.from_expressions("-(1 + t)*x", "sqrt(2)")).symbolic
    # A wrong marginal for dx = -x dt + sqrt(2) dW: variance 1 - e^{-t} instead of 1 - e^{-2t}.
    sde = sdekit.SDE.from_expressions("-x", "sqrt(2)")
    m = sde.marginal
    sde.__dict__["marginal"] = types.SimpleNamespace(
        alpha_expr=m.alpha_expr, offset_expr=m.offset_expr, sigma2_expr=1 - sp.exp(-sdekit.t)
    )
    with pytest.raises(AssertionError, match=r"(?s)kernel.*does not solve.*SDE: CustomSDE"):
        sdt.assert_fokker_planck(sde)


def test_fokker_planck_with_a_user_density_for_a_nonaffine_sde():
    # Reversible diffusion with stationary N(0, 1): g^2 = 1 + x^2, f = (g^2)'/2 + g^2 (log p)'/2 = x/2 - x^3/2.
    sde = sdekit.SDE.from_expressions("x/2 - x**3/2", "sqrt(1 + x**2)")
    assert sdt.assert_fokker_planck(sde, p="exp(-x**2/2)").symbolic
    with pytest.raises(AssertionError, match=r"p = exp\(-x\*\*2\) does not solve"):
        sdt.assert_fokker_planck(sde, p="exp(-x**2)")
    with pytest.raises(ValueError, match="not affine"):
        sdt.assert_fokker_planck(sde)


def test_chapman_kolmogorov_passes_and_fails_readably(monkeypatch):
    sde = sdekit.VPSDE()
    assert sdt.assert_chapman_kolmogorov(sde).passed
    from sdekit._marginal import GaussianMarginal

    def wrong_transition(self):  # variance sigma^2(t) - sigma^2(s): forgets the r^2 factor
        r = self.alpha_expr / self.alpha_expr.subs(sdekit.t, derive_s())
        return r, sp.S.Zero, self.sigma2_expr - self.sigma2_expr.subs(sdekit.t, derive_s())

    monkeypatch.setattr(GaussianMarginal, "transition_expr", wrong_transition)
    with pytest.raises(AssertionError, match=r"(?s)kernels s->u->t and s->t disagree.*variance"):
        sdt.assert_chapman_kolmogorov(sdekit.VPSDE())


def derive_s():
    from sdekit.symbolic._symbols import s

    return s


NONADDITIVE = "-x + sin(x)/2"


def test_reverse_consistent_on_drawn_sdes():
    @settings(max_examples=6, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(sdt.sdes(affine=False))
    def check(sde):
        sdt.assert_reverse_consistent(sde)

    check()
    sdt.assert_reverse_consistent(sdekit.SDE.from_expressions(NONADDITIVE, "sqrt(1 + x**2)*(1 + t)"))


def test_reverse_missing_divergence_term_fails(monkeypatch):
    sde = sdekit.SDE.from_expressions(NONADDITIVE, "sqrt(1 + x**2)")
    monkeypatch.setattr(derive, "reverse_drift", lambda f, g, s: f - g**2 * s)  # Anderson without d(g^2)/dx
    with pytest.raises(AssertionError, match=r"(?s)reverse SDE: .*expected f - d\(g\^2\)/dx - g\^2 \* score"):
        sdt.assert_reverse_consistent(sde)


def test_probability_flow_with_reverse_weight_fails(monkeypatch):
    sde = sdekit.SDE.from_expressions(NONADDITIVE, "1 + t")
    monkeypatch.setattr(derive, "probability_flow_drift", lambda f, g, s: f - g**2 * s)  # factor 1, not 1/2
    with pytest.raises(AssertionError, match=r"probability flow: -d\(v p\)/dx != forward dp/dt"):
        sdt.assert_reverse_consistent(sde)


def test_torch_reverse_drift_missing_divergence_fails():
    sde = sdekit.SDE.from_expressions(NONADDITIVE, "sqrt(1 + x**2)")
    sde.__dict__["dg2_dx_fn"] = lambda x, t: torch.zeros_like(x)  # compiled path drops d(g^2)/dx
    with pytest.raises(AssertionError, match=r"torch reverse drift \(callable score\) differs"):
        sdt.assert_reverse_consistent(sde)


def test_reverse_consistent_skips_points_outside_the_sdes_domain():
    # g^2 = sqrt(x)/4 is NaN for x < 0: those points are skipped, the identities are still proved
    result = sdt.assert_reverse_consistent(sdekit.SDE.from_expressions("2*(1 - x)", "x**(1/4)/2"))
    assert result.reverse.symbolic and result.probability_flow.symbolic
    with pytest.raises(ValueError, match=r"finite at only \d+ of .* needs at least"):  # defined on x >= 2.9 only
        sdt.assert_reverse_consistent(sdekit.SDE.from_expressions("1 - x", "sqrt(x - 2.9)"))


# ---------------------------------------------------------------- assert_samples_match: calibration and power
def _upper(n: int, p: float) -> int:
    """Largest count not rejected at level 1e-3 for Binomial(n, p): P(count > bound) <= 1e-3."""
    return int(stats.binom.isf(1e-3, n, p))


def _rejections(trials, n, d, alpha, gen, shift=0.0, exact=False):
    null = GaussianMixture(torch.zeros(1, d), 1.0)
    count = 0
    for _ in range(trials):
        a = torch.randn(n, d, generator=gen, dtype=F64)
        a[:, 0] += shift
        b = null if exact else torch.randn(n, d, generator=gen, dtype=F64)
        try:
            sdt.assert_samples_match(a, b, alpha=alpha)
        except AssertionError:
            count += 1
    return count


@pytest.mark.parametrize(("d", "exact", "trials"), [(1, False, 400), (2, False, 400), (2, True, 150)])
def test_samples_match_false_positive_rate(d, exact, trials):
    """Under the null the rejection rate is <= alpha (Bonferroni) and >= alpha / m (it is at least as
    large as any one of its m calibrated component tests): both checked with binomial bounds at 1e-3."""
    alpha = 0.05
    m = 2 * (1 if d == 1 else d + 2)
    count = _rejections(trials, 1000, d, alpha, torch.Generator().manual_seed(100 + d + 10 * exact), exact=exact)
    assert count <= _upper(trials, alpha), count
    assert count >= stats.binom.ppf(1e-3, trials, alpha / m), count


def test_samples_match_detects_small_mean_shift():
    """0.1-sigma shift at n = 4,000. Against the exact law z = 0.1 sqrt(4000) = 6.3: power ~1 (every one of
    20 seeded trials). Two-sample z = 4.5 vs the critical 3.5: power measured 0.83, so >= 24 of 40
    (Binomial(40, 0.83) falls below 24 with probability < 1e-3)."""
    gen = torch.Generator().manual_seed(7)
    assert _rejections(20, 4000, 1, 1e-3, gen, shift=0.1, exact=True) == 20
    assert _rejections(40, 4000, 1, 1e-3, gen, shift=0.1) >= 24
    a = torch.randn(4000, 2, generator=gen, dtype=F64)
    a[:, 0] += 0.1
    with pytest.raises(AssertionError, match=r"(?s)does not match the exact mixture.*mean along e_1"):
        sdt.assert_samples_match(a, GaussianMixture(torch.zeros(1, 2), 1.0))


def _reverse_em(sde, score, x, steps=200):
    """Reverse-time Euler–Maruyama from T to 0 with sde.reverse(score) (forward time, dt < 0)."""
    rev = sde.reverse(score)
    gen = torch.Generator().manual_seed(3)
    h = sde.T / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), sde.T - i * h, dtype=F64)
        z = torch.randn(x.shape, generator=gen, dtype=F64)
        x = x - rev.drift(x, t) * h + rev.diffusion(x, t) * math.sqrt(h) * z
    return x


def test_samples_match_catches_sampler_missing_divergence_term():
    # Stationary reversible SDE: p_t = N(0, 1) for all t, score = -x, so the reverse run must stay N(0, 1).
    sde = sdekit.SDE.from_expressions("x/2 - x**3/2", "sqrt(1 + x**2)")
    exact = GaussianMixture(torch.zeros(1, 1), 1.0)
    x_T = exact.sample(4000, generator=torch.Generator().manual_seed(1))

    def score(x, t):
        return -x

    sdt.assert_samples_match(_reverse_em(sde, score, x_T), exact)
    sde_wrong = sdekit.SDE.from_expressions("x/2 - x**3/2", "sqrt(1 + x**2)")
    sde_wrong.__dict__["dg2_dx_fn"] = lambda x, t: torch.zeros_like(x)  # sampler forgets d(g^2)/dx
    with pytest.raises(AssertionError, match="Bonferroni p"):
        sdt.assert_samples_match(_reverse_em(sde_wrong, score, x_T), exact)


def test_samples_match_rejects_bad_input():
    with pytest.raises(AssertionError, match="NaN or inf"):
        sdt.assert_samples_match(torch.full((10, 1), math.nan), torch.zeros(10, 1))
    with pytest.raises(ValueError, match="event dimensions"):
        sdt.assert_samples_match(torch.zeros(10, 2), torch.zeros(10, 3))
    oracle = GaussianMixture(torch.zeros(1, 2), torch.ones(1)).diffuse(sdekit.VPSDE())
    with pytest.raises(TypeError, match=r"oracle\.at\(t\)"):
        sdt.assert_samples_match(torch.zeros(10, 2), oracle)
    with pytest.raises(TypeError, match="a must be samples"):
        sdt.assert_samples_match(oracle.at(0.5), torch.zeros(10, 2))
    with pytest.raises(TypeError, match="b must be samples"):
        sdt.assert_samples_match(torch.zeros(10, 2), object())


# ---------------------------------------------------------------- assert_logp_matches
def test_logp_matches_exact_and_fails_for_a_wrong_model():
    sde = sdekit.VPSDE()
    oracle = GaussianMixture(torch.tensor([[-1.0], [1.5]]), torch.tensor([0.4, 0.6])).diffuse(sde)
    x = oracle.sample(16, 1e-5, generator=torch.Generator().manual_seed(0)).to(F64)
    # tol 1e-3: dopri5 at rtol = atol = 1e-5 with the exact prior p_T (TESTING.md: errors ~1e-4).
    err = sdt.assert_logp_matches(oracle, sde, oracle, x)
    assert err.abs().max() < 1e-3

    def wrong(x, t):  # score 10% too small
        return 0.9 * oracle(x, t)

    with pytest.raises(AssertionError, match=r"(?s)logp differs from the exact log-density.*worst sample"):
        sdt.assert_logp_matches(wrong, sde, oracle, x)


def test_logp_matches_rejects_exact_values_of_shape_batch_by_batch():
    # (16,) - (16, 16) would broadcast to 256 "errors"; the exact values must be one per row of x
    sde = sdekit.VPSDE()
    oracle = GaussianMixture(torch.tensor([[-1.0], [1.5]]), torch.tensor([0.4, 0.6])).diffuse(sde)
    x = oracle.sample(16, 1e-5, generator=torch.Generator().manual_seed(0)).to(F64)
    table = oracle.log_prob(x, 1e-5)[None, :].expand(16, 16)
    with pytest.raises(ValueError, match=r"shape \(batch,\) = \(16,\).*got shape \(16, 16\)"):
        sdt.assert_logp_matches(oracle, sde, table, x)
    with pytest.raises(ValueError, match=r"got shape \(16, 1\).*reshape\(-1\)"):
        sdt.assert_logp_matches(oracle, sde, lambda x: oracle.log_prob(x, 1e-5)[:, None], x)
