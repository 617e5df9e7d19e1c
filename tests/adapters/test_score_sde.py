"""sdekit.adapters.from_score_sde: score_sde_pytorch's get_score_fn reproduced to round-off, the VE time map, the
entry points on images, and the configuration errors.

The reference is ``_score_sde_reference`` (score_sde_pytorch's ``get_score_fn`` and ``sde_lib`` formulas; the
repository is not a package). Tolerances, float64: VE and discrete VP differ by at most a few ulps (labels and
tables are computed the same way; measured 2.3e-16 relative); continuous VP / sub-VP divide by
:math:`1 - e^{2\\ell(t)}` (or its root), which the reference evaluates with a cancellation of relative error
~2.2e-16 / sigma(t)^2, up to 1e-12 at t = 1e-3 (measured 6.4e-14 relative, 2.4e-13 for beta_min = 0.05); the bound
is 1e-11.
"""

from __future__ import annotations

import _score_sde_reference as S
import pytest
import torch
from _tiny_networks import TinyNet, WrongShape

import sdekit
from sdekit.adapters import ScoreSDEModel, from_score_sde
from sdekit.errors import AdapterError, ModelOutputError

SHAPE = (3, 8, 8)

CASES = [
    ("vpsde", True, {}),
    ("vpsde", True, {"beta_min": 0.05, "beta_max": 12.0}),
    ("vpsde", False, {"N": 1000}),
    ("vpsde", False, {"N": 50, "beta_min": 0.1, "beta_max": 20.0}),
    ("subvpsde", True, {}),
    ("vesde", True, {}),
    ("vesde", True, {"sigma_min": 0.01, "sigma_max": 348.0}),
    ("vesde", False, {"N": 1000}),
    ("vesde", False, {"N": 10, "sigma_max": 1.0}),
]


def _reference_times(name, sde, t, params):
    """score_sde's time for sdekit's t: the same for VP / sub-VP; for VE the t' whose score_sde std is the sdekit
    marginal's noise level."""
    if name != "vesde":
        return t
    ve = {k: params[k] for k in ("sigma_min", "sigma_max") if k in params}
    return S.ve_time_of_std(sde.marginal.sigma(t), **ve)


@pytest.mark.parametrize(("name", "continuous", "kwargs"), CASES)
def test_the_score_is_get_score_fns(name, continuous, kwargs):
    net = TinyNet(SHAPE[0]).double()
    model, sde = from_score_sde(net, name, continuous=continuous, shape=SHAPE, **kwargs)
    t = torch.linspace(sde.default_eps, sde.T, 9, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((9, *SHAPE), generator=gen, dtype=torch.float64) * (1 + 5 * t[:, None, None, None])
    params = {k: v for k, v in kwargs.items() if k != "N"}
    reference = S.get_score_fn(name, net, continuous=continuous, N=kwargs.get("N", 1000), dtype=torch.float64, **params)
    with torch.no_grad():
        want = reference(x, _reference_times(name, sde, t, params))
        got = model(x, t)
    assert got.shape == x.shape and got.dtype == torch.float64
    rel = ((got - want).abs().amax((1, 2, 3)) / want.abs().amax((1, 2, 3))).max()
    assert rel <= 1e-11, rel


@pytest.mark.parametrize(("name", "continuous"), [("vpsde", True), ("vpsde", False), ("vesde", True), ("vesde", False)])
def test_labels_follow_score_sde(name, continuous):
    model, sde = from_score_sde(TinyNet(SHAPE[0]), name, continuous=continuous, N=None if continuous else 100)
    t = torch.tensor([sde.default_eps, 0.5, sde.T], dtype=torch.float64)
    labels = model.labels(torch.zeros(3, *SHAPE, dtype=torch.float64), t)
    if name == "vpsde":
        assert torch.allclose(labels, t * (999 if continuous else 99), rtol=1e-15, atol=0)
    elif continuous:  # the noise level: sigma_min at eps, sigma_max at T
        assert labels[0] == pytest.approx(0.01, rel=1e-12) and labels[-1] == pytest.approx(50.0, rel=1e-12)
    else:  # indices into NCSN's table, largest noise first
        assert labels.dtype == torch.long and labels[0] == 99 and labels[-1] == 0


def test_the_sdes_match_score_sdes_marginals():
    t = torch.linspace(1e-3, 1, 7, dtype=torch.float64)
    for name, std in (("vpsde", S.vp_std), ("subvpsde", S.subvp_std)):
        _, sde = from_score_sde(TinyNet(SHAPE[0]), name, beta_min=0.2, beta_max=15.0)
        assert torch.allclose(sde.marginal.sigma(t), std(t, 0.2, 15.0), rtol=1e-10, atol=0)
    _, sde = from_score_sde(TinyNet(SHAPE[0]), "vesde", sigma_min=0.02, sigma_max=90.0)
    ends = sde.marginal.sigma(torch.tensor([sde.default_eps, sde.T], dtype=torch.float64))
    assert torch.allclose(ends, torch.tensor([0.02, 90.0], dtype=torch.float64), rtol=1e-12, atol=0)
    assert sde.prior.std == pytest.approx(90.0, rel=1e-12)  # score_sde's prior N(0, sigma_max^2)


def test_float32_is_as_accurate_as_float32_allows():
    # score_sde evaluates sqrt(1 - exp(2 l(t))) in float32, which cancels at small t; sdekit evaluates the marginal in
    # float64 and casts, so its float32 score is within float32 round-off of the float64 one (measured <= 4e-7
    # relative; the original float32 get_score_fn is off by up to 1.2e-4 at t = 1e-3)
    net = TinyNet(SHAPE[0])
    model, _ = from_score_sde(net, "vpsde")
    t = torch.tensor([1e-3, 2e-3, 0.01, 0.5, 1.0])
    x = torch.randn((5, *SHAPE), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model(x, t)
        want = S.get_score_fn("vpsde", net.double(), continuous=True)(x.double(), t.double())
    rel = ((got.double() - want).abs().amax((1, 2, 3)) / want.abs().amax((1, 2, 3))).max()
    assert got.dtype == torch.float32 and rel <= 2e-6, rel


# --------------------------------------------------------------------------- the entry points on images
@pytest.fixture(scope="module", params=["vpsde", "subvpsde", "vesde"])
def adapted(request):
    return from_score_sde(TinyNet(SHAPE[0], scale=0.1), request.param, shape=SHAPE)


def test_sample_on_images(adapted):
    model, sde = adapted
    gen = torch.Generator().manual_seed(0)
    x, info = sdekit.sample(model.eval(), sde, (5, *SHAPE), solver="exp2", steps=6, generator=gen, return_info=True)
    assert x.shape == (5, *SHAPE) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert info.nfe == 6


def test_logp_and_bits_per_dim_on_images(adapted):
    model, sde = adapted
    gen = torch.Generator().manual_seed(0)
    x = sdekit.dequantize(torch.randint(0, 256, (3, *SHAPE), generator=gen), generator=gen, dtype=torch.float32)
    with torch.no_grad():
        lp, info = sdekit.logp(
            model, sde, x, eps=sde.default_eps, solver="rk4", steps=8, trace="hutchinson", generator=gen,
            return_info=True,
        )  # fmt: skip
    bpd = sdekit.bits_per_dim(lp, x)
    assert lp.shape == (3,) and torch.isfinite(lp).all() and torch.isfinite(bpd).all()
    assert info.nfe == 1 + 8 * 4  # logp's input check, then rk4's four evaluations per step


def test_dsm_trains_the_network(adapted):
    model, sde = adapted
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand((4, *SHAPE), generator=gen) * 2 - 1
    model.zero_grad()
    loss = sdekit.losses.dsm(model.train(), sde, x0, generator=gen)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_adapter_is_a_module_holding_the_network():
    net = TinyNet(SHAPE[0])
    model, _ = from_score_sde(net, "VPSDE")  # case-insensitive
    assert isinstance(model, ScoreSDEModel) and model.network is net and model.parameterization == "score"
    assert {id(p) for p in model.parameters()} == {id(p) for p in net.parameters()}
    assert "std_table" not in model.state_dict()


# --------------------------------------------------------------------------- configuration errors
@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("net", "vpsde"), {}, "model must be a callable"),
        ((None, "vp"), {}, r"sde_name must be one of 'vpsde', 'subvpsde', 'vesde'.*did you mean 'vpsde'"),
        ((None, "edm"), {}, "sde_name must be one of"),
        ((None, 3), {}, "sde_name must be one of"),
        ((None, "vesde"), {"sigma_min": 50.0, "sigma_max": 0.01}, "sigma_min must be smaller than sigma_max"),
        ((None, "vesde"), {"sigma_min": 0.0}, "sigma_min must be a positive finite number"),
        ((None, "vpsde"), {"beta_min": 20.0, "beta_max": 0.1}, "beta_min must be smaller than beta_max"),
        ((None, "vpsde"), {"sigma_max": 50.0}, "sigma_max does not apply to sde_name='vpsde'"),
        ((None, "vesde"), {"beta_min": 0.1}, "beta_min does not apply to sde_name='vesde'"),
        ((None, "vpsde"), {"N": 1000}, r"N \(config.model.num_scales\) is used only by discrete-time"),
        ((None, "subvpsde"), {"N": 1000, "continuous": False}, "is used only by discrete-time"),
        ((None, "vpsde"), {"N": 1, "continuous": False}, "N must be an integer >= 2"),
        ((None, "vpsde"), {"continuous": "yes"}, "continuous must be True or False"),
        ((None, "vpsde"), {"shape": (3, 8.0, 8)}, "shape must be the event shape"),
    ],
)
def test_bad_configuration_is_named(args, kwargs, match):
    model = TinyNet(SHAPE[0]) if args[0] is None else args[0]
    with pytest.raises(AdapterError, match=match):
        from_score_sde(model, args[1], **kwargs)


@pytest.mark.parametrize("name", ["vpsde", "vesde"])
def test_a_wrong_output_shape_is_found_by_the_probe(name):
    with pytest.raises(ModelOutputError, match=r"from_score_sde \(probe call with shape=\(3, 8, 8\)\).*\(2, 1, 8, 8\)"):
        from_score_sde(WrongShape(), name, shape=SHAPE)
