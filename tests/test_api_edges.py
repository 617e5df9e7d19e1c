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


def _mixture(dtype=torch.float32):
    return analytic.GaussianMixture(
        means=torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=dtype), stds=torch.tensor([0.5, 0.3], dtype=dtype)
    )


# --------------------------------------------------------------------------- dequantize, pc corrector, ism/ssm times
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


# --------------------------------------------------------------------------- option and input validation
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
