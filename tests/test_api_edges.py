"""Edge cases of the public API found by an adversarial pass (regression tests).

Each xfail(strict=True) test pins a confirmed bug: it fails today and must start passing (then
drop the marker) when the fix lands. All tests are seeded, small and exact (no statistical
tolerance): they record the times at which the model is called, the exception type raised, or
compare two declared values.
"""

from __future__ import annotations

import pathlib
import re

import pytest
import torch

import sdekit
from sdekit import analytic, losses
from sdekit.errors import SdekitError, SolverError

ACCEPTED_ERRORS = (ValueError, TypeError, SdekitError)


class _TimeRecorder:
    """Wrap a model and record the smallest and largest time it was called with."""

    def __init__(self, model):
        self.model = model
        self.lo = float("inf")
        self.hi = -float("inf")

    def __call__(self, x, t):
        td = t.detach()
        self.lo = min(self.lo, float(td.min()))
        self.hi = max(self.hi, float(td.max()))
        return self.model(x, t)


def _mixture(dtype=torch.float32):
    return analytic.GaussianMixture(
        means=torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=dtype), stds=torch.tensor([0.5, 0.3], dtype=dtype)
    )


# --------------------------------------------------------------------------- model called outside [eps, T]
def test_logp_ve_float32_1d_does_not_call_the_model_past_T():
    sde = sdekit.VESDE()
    data = analytic.Gaussian(torch.zeros(1), std=0.7)
    oracle = data.diffuse(sde)
    x = data.sample(4, generator=torch.Generator().manual_seed(0))
    model = _TimeRecorder(oracle)
    lp = sdekit.logp(model, sde, x, prior=oracle.at(sde.T))
    assert model.hi <= sde.T * (1 + 1e-6)
    assert torch.isfinite(lp).all()


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


@pytest.mark.parametrize("solver", ["ode", "ode:bosh3"])
def test_sample_adaptive_ode_calls_the_model_only_on_eps_T(solver):
    sde = sdekit.OrnsteinUhlenbeck()
    model = _TimeRecorder(_mixture().diffuse(sde))
    sdekit.sample(model, sde, (16, 2), solver=solver, generator=torch.Generator().manual_seed(0))
    assert model.lo >= sde.default_eps * (1 - 1e-6)
    assert model.hi <= sde.T * (1 + 1e-6)


def test_sample_ode_works_with_a_discrete_time_model():
    sde = sdekit.OrnsteinUhlenbeck()
    oracle = analytic.Gaussian(torch.zeros(2), std=1.01).diffuse(sde)
    table = torch.zeros(1000)

    def ddpm_like(x, t):
        return oracle(x, t) + table[(t / sde.T * 999).round().long()][:, None]

    x = sdekit.sample(ddpm_like, sde, (64, 2), solver="ode", generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()


def test_logp_adjoint_backward_solve_stays_on_eps_T():
    sde = sdekit.VPSDE()
    data = _mixture(torch.float64)
    oracle = data.diffuse(sde)
    x = data.sample(8, generator=torch.Generator().manual_seed(0))

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

        def forward(self, x, t):
            return self.a * oracle(x, t)

    net = Scaled()
    model = _TimeRecorder(net)
    # (with normalize=False the same run raises SolverDivergedError: g(t) = sqrt(beta(t)) is NaN for t < 0)
    lp = sdekit.logp(model, sde, x, adjoint=True, adjoint_params=list(net.parameters()))
    lp.mean().backward()
    assert model.lo >= 1e-5 * (1 - 1e-6)
    assert model.hi <= sde.T * (1 + 1e-6)


def test_logp_backprop_without_adjoint_stays_on_eps_T():
    """Control for the test above (passes today): plain backpropagation never leaves [eps, T] on VP."""
    sde = sdekit.VPSDE()
    data = _mixture(torch.float64)
    oracle = data.diffuse(sde)
    x = data.sample(8, generator=torch.Generator().manual_seed(0)).requires_grad_()
    model = _TimeRecorder(oracle)
    sdekit.logp(model, sde, x).sum().backward()
    assert model.lo >= 1e-5 * (1 - 1e-6) and model.hi <= sde.T * (1 + 1e-6)


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


def test_dequantize_rejects_fractional_levels_and_integer_dtype():
    with pytest.raises(ValueError, match="whole-number"):
        sdekit.dequantize(torch.tensor([0.5, 3.0]))
    with pytest.raises(TypeError, match="floating"):
        sdekit.dequantize(torch.tensor([1, 2]), dtype=torch.int64)
    x = sdekit.dequantize(torch.tensor([0.0, 255.0]), data_range="[0,1]", generator=torch.Generator().manual_seed(0))
    assert ((x >= torch.tensor([0.0, 255 / 256])) & (x < torch.tensor([1 / 256, 1.0]))).all()


def test_sample_pc_corrector_none_disables_the_corrector():
    sde = sdekit.VPSDE()
    oracle = _mixture().diffuse(sde)

    def nfe(corrector):
        _, info = sdekit.sample(
            oracle, sde, (8, 2), solver="pc", steps=4, corrector=corrector, denoise=False, return_info=True,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        return info.nfe

    assert nfe("none") == 4  # predictor only: one evaluation per step
    assert nfe(None) == nfe("none")


@pytest.mark.parametrize("as_tensor", [False, True])
def test_ism_with_times_matches_the_closure(as_tensor):
    sde = sdekit.VPSDE()
    oracle = _mixture().diffuse(sde)
    x = oracle.sample(8, 0.5, generator=torch.Generator().manual_seed(0))
    t = torch.full((8,), 0.5) if as_tensor else 0.5
    expected = losses.ism(lambda y: oracle(y, torch.full((y.shape[0],), 0.5)), x)
    assert torch.allclose(losses.ism(oracle, x, t=t), expected, rtol=1e-6, atol=1e-6)


def test_ssm_with_times_runs():
    """Control (passes today): ssm passes t through unchanged (no replication)."""
    sde = sdekit.VPSDE()
    oracle = _mixture().diffuse(sde)
    x = oracle.sample(8, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(losses.ssm(oracle, x, t=0.5, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("eps", [1e-4, 1e-5])
@pytest.mark.parametrize("steps", [None, 7], ids=["adaptive", "fixed-grid"])
def test_sample_ode_float32_small_eps(eps, steps):
    sde = sdekit.VPSDE()
    model = _TimeRecorder(_mixture().diffuse(sde))
    x = sdekit.sample(
        model, sde, (64, 2), solver="ode", steps=steps, eps=eps, generator=torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(x).all()
    assert model.lo >= eps * (1 - 1e-6)


def test_sample_ode_float32_small_eps_works_with_a_float32_step_t():
    """Pins the cause (passes today): the same run with step_t in the solve's dtype stays on [eps, T]."""
    sde = sdekit.VPSDE()
    eps = 1e-4
    model = _TimeRecorder(_mixture().diffuse(sde))
    step_t = torch.tensor([eps], dtype=torch.float32)
    sdekit.sample(model, sde, (64, 2), solver="ode", eps=eps, step_t=step_t, generator=torch.Generator().manual_seed(0))
    assert model.lo >= eps * (1 - 1e-6)


def test_logp_float32_cosine_does_not_call_the_model_past_T():
    sde = sdekit.CosineVPSDE()
    data = _mixture()
    model = _TimeRecorder(data.diffuse(sde))
    sdekit.logp(model, sde, data.sample(16, generator=torch.Generator().manual_seed(0)))
    assert model.hi <= sde.T * (1 + 1e-6)


# --------------------------------------------------------------------------- option and input validation
@pytest.mark.parametrize("steps", [None, 3])
def test_sample_ode_rejects_unknown_options(steps):
    sde = sdekit.VPSDE()
    with pytest.raises(SolverError):
        sdekit.sample(_mixture().diffuse(sde), sde, (8, 2), solver="ode", steps=steps, tolerance=1e-3)


def test_sample_native_and_torchsde_reject_unknown_options():
    """Control (passes today): the other solver families do raise SolverError."""
    sde = sdekit.VPSDE()
    oracle = _mixture().diffuse(sde)
    for solver in ("euler", "pc", "exp2"):
        with pytest.raises(SolverError):
            sdekit.sample(oracle, sde, (8, 2), solver=solver, steps=2, tolerance=1e-3)


def _dsm(generator):
    sde = sdekit.VPSDE()
    return losses.dsm(_mixture().diffuse(sde), sde, torch.zeros(4, 2), generator=generator)


def _bound(generator):
    sde = sdekit.VPSDE()
    return losses.likelihood_bound(_mixture().diffuse(sde), sde, torch.zeros(4, 2), generator=generator)


def _langevin(generator):
    return sdekit.langevin(lambda x: -x, torch.zeros(4, 2), 0.1, 2, generator=generator)


def _dequantize(generator):
    return sdekit.dequantize(torch.tensor([1, 2]), generator=generator)


@pytest.mark.parametrize(
    "call", [_dsm, _bound, _langevin, _dequantize], ids=["dsm", "likelihood_bound", "langevin", "dequantize"]
)
def test_generator_must_be_a_torch_generator(call):
    with pytest.raises(TypeError, match="generator"):
        call(0)


def test_dequantize_rejects_a_list():
    with pytest.raises(TypeError):
        sdekit.dequantize([1, 2])


def test_dequantize_rejects_out_of_range_levels():
    with pytest.raises(ValueError):
        sdekit.dequantize(torch.tensor([300, -1]))


@pytest.mark.parametrize("t", [0.0, 2.0, -0.5])
def test_dsm_rejects_times_outside_eps_T(t):
    sde = sdekit.VPSDE()
    with pytest.raises(ValueError):
        losses.dsm(_mixture().diffuse(sde), sde, torch.zeros(8, 2), t=t, generator=torch.Generator().manual_seed(0))


def test_bits_per_dim_rejects_a_batch_mismatch():
    with pytest.raises(ValueError):
        sdekit.bits_per_dim(torch.zeros(3), torch.zeros(8, 2))


def test_logp_create_graph_must_be_bool_or_none():
    sde = sdekit.VPSDE()
    with pytest.raises(TypeError):
        sdekit.logp(_mixture().diffuse(sde), sde, torch.zeros(2, 2), create_graph="yes", solver="rk4", steps=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only torch")
def test_sample_unavailable_device_is_reported_up_front():
    sde = sdekit.VPSDE()
    with pytest.raises(ACCEPTED_ERRORS):
        sdekit.sample(_mixture().diffuse(sde), sde, (4, 2), solver="euler", steps=2, device="cuda")


# --------------------------------------------------------------------------- docs vs declarations
def test_sampling_docs_table_matches_declared_explicit_adams_order():
    text = (pathlib.Path(__file__).parents[1] / "docs" / "sampling.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `ode:explicit_adams`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    documented = float(re.sub(r"[^0-9.]", "", cells[3]))
    declared = float(sdekit.solvers.get("ode:explicit_adams").weak_order)
    assert documented == declared


def test_langevin_rejects_a_score_of_another_dtype():
    with pytest.raises(sdekit.errors.ModelOutputError):
        sdekit.langevin(lambda x: -x.double(), torch.zeros(4, 2), 0.1, 2, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- CLI
class _DemoStarted(Exception):
    pass


def test_demo_refuses_a_solver_that_cannot_sample_before_any_work(monkeypatch, tmp_path, capsys):
    from sdekit import cli
    from sdekit.demo import _run

    def started(*args, **kwargs):
        raise _DemoStarted

    monkeypatch.setattr(_run, "demo", started)  # the work itself: must not be reached
    argv = ["demo", "--quick", "--no-plots", "--out", str(tmp_path / "out"), "--solver", "reversible_heun"]
    try:
        code = cli.main(argv)
    except _DemoStarted:
        pytest.fail("the demo started although reversible_heun cannot sample")
    assert code == 2
    assert "reversible_heun" in capsys.readouterr().err


def test_demo_rejects_an_unknown_solver_before_any_work(monkeypatch, tmp_path, capsys):
    """Control (passes today): unknown names are refused up front with exit code 2."""
    from sdekit import cli
    from sdekit.demo import _run

    monkeypatch.setattr(_run, "demo", lambda *a, **k: (_ for _ in ()).throw(_DemoStarted()))
    assert cli.main(["demo", "--quick", "--out", str(tmp_path / "out"), "--solver", "eulr"]) == 2
    assert "eulr" in capsys.readouterr().err


# --------------------------------------------------------------------------- minor checks of the same pass
def test_logp_rejects_half_precision_with_advice():
    sde = sdekit.VPSDE()
    with pytest.raises(TypeError, match=r"x\.float\(\)"):
        sdekit.logp(_mixture().diffuse(sde), sde, torch.zeros(2, 2, dtype=torch.float16))


def test_default_eps_outside_zero_T_is_a_declaration_error():
    from sdekit.errors import SDEDeclarationError

    class LateEps(sdekit.SDE):
        default_eps = 2.0

        def drift(self, x, t):
            return -x

        def diffusion(self, x, t):
            return 1

    with pytest.raises(SDEDeclarationError, match="default_eps"):
        LateEps()


def test_assert_logp_matches_takes_a_distribution():
    """oracle.at(eps) (a distribution with .log_prob) is accepted as the exact log-density."""
    from sdekit import testing

    sde = sdekit.VPSDE()
    data = analytic.Gaussian(torch.zeros(2, dtype=torch.float64), std=0.8)
    oracle = data.diffuse(sde)
    x = data.sample(8, generator=torch.Generator().manual_seed(0))
    err = testing.assert_logp_matches(oracle, sde, oracle.at(1e-5), x, tol=1e-3, prior=oracle.at(sde.T))
    assert err.abs().max() <= 1e-3
    with pytest.raises(TypeError, match="exact_log_prob"):
        testing.assert_logp_matches(oracle, sde, "not a density", x)
