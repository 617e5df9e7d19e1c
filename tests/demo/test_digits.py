"""``sdekit demo --data digits``: the shipped data, the convolutional network, a ``--quick`` run end to end and its
report, the options' checks, and the image paths of the library (any (batch, C, H, W), exact trace refused above
its limit)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

import sdekit
from sdekit.cli import main
from sdekit.demo import _digits_data
from sdekit.demo._digits_model import DigitsNet
from sdekit.solvers import default_sampler

ROOT = Path(__file__).resolve().parents[2]
# Written out here, independently of sdekit/demo/_digits_data.py: sha256 of the arrays' bytes (C order).
IMAGES_SHA256 = "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3"
LABELS_SHA256 = "8ba4f891220f5e4c9c819638d1602d74b83618f167043c6da52a2a247841ddf0"
CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # scikit-learn's load_digits().target


# --------------------------------------------------------------------------- the data
def test_the_shipped_file_is_scikit_learns_digits_as_uint8():
    with np.load(_digits_data.DATA_FILE) as f:
        assert sorted(f.files) == ["images", "labels"]
        images, labels = f["images"], f["labels"]
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.uint8
    assert (images.min(), images.max()) == (0, 16) and np.bincount(labels).tolist() == CLASS_COUNTS
    assert hashlib.sha256(images.tobytes()).hexdigest() == IMAGES_SHA256
    assert hashlib.sha256(labels.tobytes()).hexdigest() == LABELS_SHA256
    assert _digits_data.DATA_FILE.stat().st_size < 60_000  # compressed (115 kB raw)
    assert (_digits_data.DATA_FILE.parent / "README.md").read_text().count("CC BY 4.0") == 1


def test_the_file_is_package_data_and_a_damaged_copy_is_refused(tmp_path):
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "data/digits.npz" in config["tool"]["setuptools"]["package-data"]["sdekit.demo"]
    with np.load(_digits_data.DATA_FILE) as f:
        images, labels = f["images"].copy(), f["labels"]
    images[5, 3, 3] ^= 1
    np.savez_compressed(tmp_path / "bad.npz", images=images, labels=labels)
    with pytest.raises(ValueError, match="images array does not match its sha256"):
        _digits_data.load_digits(tmp_path / "bad.npz")


def test_the_split_is_deterministic_and_disjoint():
    images, _ = _digits_data.load_digits()
    train, test = _digits_data.split(images)
    assert train.shape == (1497, 1, 8, 8) and test.shape == (300, 1, 8, 8) and train.dtype == torch.int64
    assert torch.equal(test[:, 0], torch.from_numpy(images[::6].astype(np.int64)))
    assert torch.equal(train[:5, 0], torch.from_numpy(images[1:6].astype(np.int64)))
    # dequantized as documented: x = 2 (k + u) / 17 - 1 lies in level k's cell
    x = sdekit.dequantize(test, levels=17, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(torch.floor((x + 1) * 17 / 2).long(), test)


# --------------------------------------------------------------------------- the network
@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.VESDE(sigma_max=20.0)], ids=["vp", "ve"])
def test_the_network_maps_digit_batches_to_noise_of_their_shape(sde):
    torch.manual_seed(0)
    net = DigitsNet(sde, 1e-5, torch.zeros(1, 8, 8), 0.3, channels=24)
    n_params = sum(p.numel() for p in net.parameters())
    assert 50_000 <= n_params <= 200_000, n_params
    x = torch.randn(5, 1, 8, 8)
    t = torch.tensor([1e-5, 1e-3, 0.1, 0.5, 1.0])
    with torch.no_grad():
        out = net(x, t)
    assert out.shape == (5, 1, 8, 8) and out.dtype == torch.float32
    assert torch.equal(out, torch.zeros_like(out))  # the zero-initialised head: eps = 0 at initialisation


def test_the_network_is_shape_generic_per_sample_and_float64_capable():
    torch.manual_seed(0)
    sde = sdekit.VPSDE()
    net = DigitsNet(sde, 1e-3, torch.zeros(3, 7, 10), 0.3, channels=16)
    torch.nn.init.normal_(net.head.weight, std=0.1)  # a non-zero output to compare
    x = torch.randn(4, 3, 7, 10)  # odd sizes: upsampling goes back to the skip's size
    t = torch.tensor([0.01, 0.2, 0.5, 0.9])
    with torch.no_grad():
        out = net(x, t)
        single = torch.cat([net(x[i : i + 1], t[i : i + 1]) for i in range(4)])
        out64 = net.double()(x.double(), t.double())
    assert out.shape == x.shape
    # per sample (GroupNorm, no batch statistics): a batch equals its rows one by one, to float32 round-off
    assert torch.allclose(out, single, atol=1e-5)
    assert out64.dtype == torch.float64 and torch.allclose(out64.float(), out, atol=1e-4)


# --------------------------------------------------------------------------- a --quick run, end to end
class QuickDigits(NamedTuple):
    code: int
    out: Path
    report: dict
    stdout: str


@pytest.fixture(scope="module")
def quick_digits(tmp_path_factory) -> QuickDigits:
    out = tmp_path_factory.mktemp("digits")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["demo", "--data", "digits", "--quick", "--out", str(out), "--seed", "0"])
    return QuickDigits(code, out, json.loads((out / "report.json").read_text()), stdout.getvalue())


def test_quick_run_writes_its_files(quick_digits):
    assert quick_digits.code == 0
    for name in ("report.json", "report.md", "samples.png", "nearest.png"):
        assert (quick_digits.out / name).stat().st_size > 0, name


def test_quick_report_has_the_documented_keys(quick_digits):
    rep = quick_digits.report
    sdes = ["vp", "ve"]
    assert list(rep["sdes"]) == sdes and rep["sdes"]["ve"] == "VESDE(sigma_min=0.01, sigma_max=20)"
    assert rep["data"] == {"images": 1797, "train": 1497, "test": 300, "levels": 17}
    for key in sdes:
        assert rep["seconds"][f"training_{key}"] > 0 and rep["train"][key]["steps"] == 300
        b = rep["bits_per_dim"][key]
        assert b["trace"] == "hutchinson" and b["n"] == rep["config"]["n_logp"] and b["levels"] == 17
        for field in ("mean", "se", "sd", "hutchinson_sd", "nfe", "probe_seed"):
            assert isinstance(b[field], (int, float)) and math.isfinite(b[field]), field
        assert set(rep["nfe"][key]) == {"few_step", "ode:dopri5"}
        nn = rep["nearest_neighbour"]["samples"][key]
        assert set(nn) == {"few_step", "ode:dopri5"}
        for stats in nn.values():
            assert stats["n"] == rep["config"]["n_samples"]
            assert stats["min"] <= stats["q05"] <= stats["median"] <= stats["q95"]
    assert rep["nearest_neighbour"]["test"]["n"] == 300
    assert {"network_init", "test_dequantization", "vp_train", "vp_x_T", "ve_train", "ve_x_T"} <= set(rep["seeds"])
    assert rep["seconds"]["training"] == pytest.approx(rep["seconds"]["training_vp"] + rep["seconds"]["training_ve"])


def test_quick_run_uses_the_few_step_default_with_exactly_its_nfe(quick_digits):
    rep = quick_digits.report
    for key, sde in (("vp", sdekit.VPSDE()), ("ve", sdekit.VESDE(sigma_max=20.0))):
        entry = rep["samplers"][key]["few_step"]
        choice = default_sampler(sde, 20)
        assert (entry["chosen"], entry["options"]) == (choice.solver, dict(choice.options))
        assert entry["solver"] == choice.solver and rep["nfe"][key]["few_step"] == 20  # steps=k spends k calls
        assert rep["nfe"][key]["ode:dopri5"] > 20  # adaptive, plus the denoising step


def test_quick_run_beats_the_uniform_model_and_does_not_copy(quick_digits):
    rep = quick_digits.report
    for key in ("vp", "ve"):
        b = rep["bits_per_dim"][key]
        # Uniform over the 17 levels costs log2(17) = 4.09 bits/dim; even 300 training steps must beat it by far
        # more than 5 standard errors (measured: 2.8 ± 0.03 at seed 0).
        assert b["mean"] + 5 * b["se"] < math.log2(17)
        assert 0 < b["hutchinson_sd"] < b["sd"]  # the probes' share of the per-image spread
        for stats in rep["nearest_neighbour"]["samples"][key].values():
            assert stats["near_copy_fraction"] <= 0.05  # measured: 0 at seed 0
    assert rep["nearest_neighbour"]["test"]["near_copy_fraction"] <= 0.05


def test_quick_summary_matches_the_report(quick_digits):
    rep, lines = quick_digits.report, quick_digits.stdout.strip().splitlines()
    assert lines[0].startswith("sdekit demo --data digits: 1,497 training / 300 test images")
    for key, line in zip(("vp", "ve"), lines[1:3]):
        b = rep["bits_per_dim"][key]
        assert line.startswith(f"  {key} {rep['sdes'][key]}:") and f"{b['mean']:.3f} ± {b['se']:.3f}" in line
        assert f"few_step (unipc) {rep['nfe'][key]['few_step']}" in line
    assert lines[-1].startswith(f"  report: {quick_digits.out / 'report.md'}")
    assert "\n".join(lines[:-1]) in (quick_digits.out / "report.md").read_text()


# --------------------------------------------------------------------------- options
def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors
        return int(exc.code)


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--data", "digits", "--steps", "5,10"], "takes one number"),
        (["--data", "digits", "--sde", "vp,vpp"], "did you mean 'vp'?"),
        (["--data", "digits", "--solver", "eulr"], "euler"),
        (["--data", "pictures"], "invalid choice"),
        (["--sde", "vp,ve"], "one SDE"),  # the 2-D demo
    ],
)
def test_bad_digits_options_exit_2_with_one_line(extra, says, tmp_path, capsys):
    out = tmp_path / "never"
    assert _run(["demo", "--quick", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not out.exists()


def test_digits_on_another_device_is_refused(tmp_path, monkeypatch, capsys):
    from sdekit.demo import _cli

    monkeypatch.setattr(_cli, "_parse_device", lambda value: torch.device("cuda"))  # as on a machine with CUDA
    out = tmp_path / "never"
    assert _run(["demo", "--data", "digits", "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the digits demo runs on the CPU" in err[0] and not out.exists()


# --------------------------------------------------------------------------- image paths of the library
def test_image_likelihoods_refuse_the_exact_trace_above_its_limit_and_name_hutchinson():
    # (batch, C, H, W) = (2, 3, 32, 32): d = 3,072 > EXACT_TRACE_LIMIT_DIM = 1,024
    net = DigitsNet(sdekit.VPSDE(), 1e-5, torch.zeros(3, 32, 32), 0.3, channels=8)
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"trace='exact' is refused.*pass trace='hutchinson'"):
        sdekit.logp(net, sdekit.VPSDE(), x, trace="exact", parameterization="eps")
    with torch.no_grad():
        lp = sdekit.logp(net, sdekit.VPSDE(), x, parameterization="eps", solver="euler", steps=2)  # auto: Hutchinson
    assert lp.shape == (2,) and lp.dtype == torch.float32


def test_sampling_images_is_shape_generic_and_float32_by_default():
    net = DigitsNet(sdekit.VESDE(sigma_max=20.0), 1e-3, torch.zeros(2, 5, 6), 0.3, channels=8)
    with torch.no_grad():
        x, info = sdekit.sample(
            net, net.sde, (3, 2, 5, 6), steps=6, parameterization="eps", return_info=True,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
    assert x.shape == (3, 2, 5, 6) and x.dtype == torch.float32 and info.nfe == 6
