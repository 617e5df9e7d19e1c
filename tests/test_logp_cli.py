"""``sdekit logp``: a dataset's log-likelihood in durable, resumable chunks (issue #19 point 8).

The model is the exact score of a 2-D mixture (tests/_cli_models.py), so the values can be compared with the exact
log-density; the resume tests compare bits: a run that is killed (SIGKILL) and resumed writes exactly the rows of an
uninterrupted run, which equal :func:`sdekit.logp` called chunk by chunk with the documented per-chunk seeds. Most
runs use rk4 with a few steps (fixed cost; accuracy is not what they test) and in-process ``main``; the kill test
runs ``python -m sdekit logp`` as a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import _cli_models
import numpy as np
import pytest
import torch

import sdekit
from sdekit._chunkstore import Lock
from sdekit._logp_cli import DEFAULT_CHUNK_SIZE
from sdekit.cli import main

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
MODEL = ["--model", "_cli_models:model", "--sde", "_cli_models:SDE", "--no-progress"]
FAST = ["--solver", "rk4", "--steps", "6"]


def _save_data(path: Path, n: int, seed: int = 0) -> np.ndarray:
    x = _cli_models.MIXTURE.sample(n, generator=torch.Generator().manual_seed(seed)).double().numpy()
    np.save(path, x)
    return x


def _run(*argv: str | Path) -> int:
    return main(["logp", *MODEL, *map(str, argv)])


def _chunk_seed(seed: int, index: int) -> int:
    """The per-chunk seed as documented (docs/likelihood.md), written out independently of sdekit's code."""
    return int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1, np.uint64)[0])


# --------------------------------------------------------------------------- values
def test_values_match_the_exact_log_density(tmp_path, capsys):
    """dopri5 at rtol = atol = 1e-5 (the defaults) with the exact trace, 3 chunks (the last one partial).

    Error budget: the per-sample step control at 1e-5 over the ~25 accepted steps, plus the default prior N(0, I)
    standing in for p_T, off by ~alpha(T) |mu| ~ 1e-4 nats (tests/_cli_models.py): bound 1e-3 (measured 3e-5).
    """
    x = _save_data(tmp_path / "x.npy", 24)
    out = tmp_path / "lp.npy"
    assert _run("--data", tmp_path / "x.npy", "--out", out, "--chunk-size", 10) == 0
    lp = np.load(out)
    assert lp.dtype == np.float64 and lp.shape == (24,)
    exact = _cli_models.EXACT.log_prob(torch.from_numpy(x), 1e-5).numpy()  # 1e-5: the default --eps.numpy()
    assert np.abs(lp - exact).max() < 1e-3, np.abs(lp - exact).max()
    assert not (tmp_path / "lp.npy.parts").exists()
    text = capsys.readouterr().out
    assert "24 rows (d = 2) in 3 chunk(s) of 10" in text and f"mean log p = {lp.mean():.6g} nats" in text
    assert f"{-lp.mean() / (2 * np.log(2)):.6g} bits/dim of the density" in text
    assert _run("--data", tmp_path / "x.npy", "--out", tmp_path / "b.npy", "--data-range", "[-1,1]") == 0
    bpd = float(sdekit.bits_per_dim(torch.tensor(lp.mean()), 2, data_range="[-1,1]"))
    assert f"{bpd:.6g} bits/dim of 8-bit data dequantized to [-1,1]" in capsys.readouterr().out


def test_a_run_equals_logp_chunk_by_chunk_with_the_per_chunk_seeds(tmp_path):
    """Hutchinson probes: chunk i's generator is seeded with SeedSequence(seed, spawn_key=(i,)); bit for bit."""
    x = _save_data(tmp_path / "x.npy", 20)
    out = tmp_path / "lp.npy"
    args = ("--trace", "hutchinson", "--seed", 5, "--chunk-size", 7)
    assert _run("--data", tmp_path / "x.npy", "--out", out, *FAST, *args) == 0
    expected = []
    for i, start in enumerate(range(0, 20, 7)):
        generator = torch.Generator().manual_seed(_chunk_seed(5, i))
        with torch.no_grad():
            lp = sdekit.logp(
                _cli_models.model,
                _cli_models.SDE,
                torch.from_numpy(x[start : start + 7]),
                solver="rk4",
                steps=6,
                trace="hutchinson",
                generator=generator,
            )
        expected.append(lp.numpy())
    got = np.load(out)
    assert np.array_equal(got, np.concatenate(expected)), np.flatnonzero(got != np.concatenate(expected))
    # the probes matter (a different seed gives other values), so the equality above checks the seeding
    assert _run("--data", tmp_path / "x.npy", "--out", tmp_path / "b.npy", *FAST, *args[:3], 6, *args[4:]) == 0
    assert not np.array_equal(np.load(tmp_path / "b.npy"), got)


def test_parquet_has_the_row_index_and_the_same_values(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    _save_data(tmp_path / "x.npy", 13)
    args = ("--data", tmp_path / "x.npy", *FAST, "--trace", "hutchinson", "--chunk-size", 5)
    assert _run(*args, "--out", tmp_path / "lp.npy") == 0
    assert _run(*args, "--out", tmp_path / "lp.parquet") == 0
    table = pq.read_table(tmp_path / "lp.parquet")
    assert table.column_names == ["row", "logp"]
    assert table.column("row").to_pylist() == list(range(13))
    assert np.array_equal(table.column("logp").to_numpy(), np.load(tmp_path / "lp.npy"))


def test_an_nn_module_is_put_in_eval_mode_and_fingerprinted(tmp_path):
    _save_data(tmp_path / "x.npy", 6)
    reference = tmp_path / "ref.npy"
    assert _run("--data", tmp_path / "x.npy", "--out", reference, *FAST) == 0
    for spec, out in (("_cli_models:NET", "a.npy"), ("_cli_models:Net()", "b.npy")):
        argv = ["logp", "--model", spec, "--sde", "_cli_models:SDE", "--no-progress", "--keep-parts", *FAST]
        assert main([*argv, "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / out)]) == 0
        np.testing.assert_allclose(np.load(tmp_path / out), np.load(reference), rtol=0, atol=1e-12)  # + 0 * x
        manifest = json.loads((tmp_path / f"{out}.parts" / "manifest.json").read_text())
        assert len(manifest["model_state_sha256"]) == 64, manifest


# --------------------------------------------------------------------------- kill and resume
def _env() -> dict[str, str]:
    path = os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX")
def test_sigkill_mid_run_then_resume_gives_the_rows_of_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    """6 chunks of 5 rows with Hutchinson probes. The first process stalls at its first model call after 2 chunks
    are written (tests/_cli_models.py's hook: no timing), is killed with SIGKILL, leaves a half-written temporary
    file as a kill during a write would; the rerun computes the 4 missing chunks. Row by row, bit for bit, against an
    uninterrupted run (so chunks 0-1, computed by the killed process, also match this process's bits)."""
    _save_data(tmp_path / "x.npy", 30)
    out = tmp_path / "lp.npy"
    parts = tmp_path / "lp.npy.parts"
    argv = ["logp", *MODEL, "--data", "x.npy", "--out", "lp.npy", *FAST, "--trace", "hutchinson", "--seed", "11"]
    argv += ["--chunk-size", "5"]
    env = {**_env(), "SDEKIT_TEST_STALL_DIR": str(parts), "SDEKIT_TEST_STALL_AFTER": "2"}
    cmd = [sys.executable, "-m", "sdekit", *argv]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # generous: only guards against a hang, asserts nothing about speed
        while proc.poll() is None and len(list(parts.glob("chunk-*.npy"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()  # stalled in chunk 2, not finished nor crashed
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert sorted(p.name for p in parts.glob("chunk-*.npy")) == ["chunk-000000.npy", "chunk-000001.npy"]
    (parts / ".tmp-chunk-000002.npy.x1y2").write_bytes(b"\x93NUMPY half a chunk")

    monkeypatch.chdir(tmp_path)  # the same command again (in this process: the kept chunks come from another one)
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "computed 4 chunk(s)" in captured.out and "2 chunk(s) were already done" in captured.out, captured.out
    assert ".tmp-chunk-000002.npy.x1y2" in captured.err and not parts.exists()

    reference = tmp_path / "ref.npy"
    assert main([*argv[:6], "--data", str(tmp_path / "x.npy"), "--out", str(reference), *argv[10:]]) == 0
    resumed, uninterrupted = np.load(out), np.load(reference)
    assert resumed.shape == uninterrupted.shape == (30,)
    assert np.array_equal(resumed, uninterrupted), np.flatnonzero(resumed != uninterrupted)


def test_changed_arguments_are_refused_and_overwrite_discards(tmp_path, capsys):
    _save_data(tmp_path / "x.npy", 12)
    out, parts = tmp_path / "lp.npy", tmp_path / "lp.npy.parts"
    args = ["--data", tmp_path / "x.npy", "--out", out, *FAST, "--chunk-size", 5, "--keep-parts"]
    assert _run(*args) == 0
    first = np.load(out)
    capsys.readouterr()

    assert _run(*args) == 0  # the same arguments: nothing to compute, the same result
    assert "computed 0 chunk(s)" in capsys.readouterr().out and np.array_equal(np.load(out), first)
    listing = sorted((p.name, p.stat().st_mtime_ns) for p in parts.iterdir())

    for change, says in (
        (["--seed", 1], "--seed 0 -> 1"),
        (["--chunk-size", 4], "--chunk-size 5 -> 4"),
        (["--steps", 7], "--steps 6 -> 7"),
        (["--trace", "hutchinson"], "--trace 'exact' -> 'hutchinson'"),
    ):
        assert _run(*args, *change) == 2, change
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0] and "--overwrite" in err[0], err
    x = np.load(tmp_path / "x.npy")
    x[3, 0] += 1e-9
    np.save(tmp_path / "x.npy", x)
    assert _run(*args) == 2
    assert "data.sha256" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in parts.iterdir()) == listing  # refusals touch nothing

    assert _run(*args, "--seed", 1, "--overwrite") == 0
    assert json.loads((parts / "manifest.json").read_text())["arguments"]["--seed"] == 1
    assert not np.array_equal(np.load(out), first)  # the changed row


def test_a_damaged_chunk_file_is_computed_again(tmp_path, capsys):
    _save_data(tmp_path / "x.npy", 12)
    out, parts = tmp_path / "lp.npy", tmp_path / "lp.npy.parts"
    args = ["--data", tmp_path / "x.npy", "--out", out, *FAST, "--chunk-size", 5, "--keep-parts"]
    assert _run(*args) == 0
    first = np.load(out)
    chunk = parts / "chunk-000001.npy"
    chunk.write_bytes(chunk.read_bytes()[:-8])  # short of disk corruption the atomic writes never leave this
    capsys.readouterr()
    assert _run(*args) == 0
    captured = capsys.readouterr()
    assert "computed 1 chunk(s)" in captured.out and "chunk-000001.npy" in captured.err
    assert np.array_equal(np.load(out), first)


def test_a_failing_chunk_keeps_the_finished_ones(tmp_path, capsys):
    """The model returns NaN on one row of chunk 2 (caught by logp's check of the first call): exit code 1, the chunk
    and the error on stderr, chunks 0-1 kept."""
    x = _save_data(tmp_path / "x.npy", 20)
    x[12] = [60.0, 0.0]
    np.save(tmp_path / "x.npy", x)
    argv = ["logp", "--model", "_cli_models:nan_far", "--sde", "_cli_models:SDE", "--no-progress", *FAST]
    assert main([*argv, "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "lp.npy"), "--chunk-size", "5"]) == 1
    err = capsys.readouterr().err
    assert "chunk 2 (rows 10 to 14) failed; 2 of 4 finished chunks are kept" in err, err
    assert "error: ModelOutputError: model(x, t) returned non-finite values" in err
    assert sorted(p.name for p in (tmp_path / "lp.npy.parts").glob("chunk-*")) == [
        "chunk-000000.npy",
        "chunk-000001.npy",
    ]


def test_a_second_run_on_the_same_result_is_refused(tmp_path, capsys):
    _save_data(tmp_path / "x.npy", 4)
    (tmp_path / "lp.npy.parts").mkdir()
    lock = Lock(tmp_path / "lp.npy.parts")
    if lock.acquire() is not None:
        pytest.fail("could not take the lock")
    if lock.file is None:
        pytest.skip("no fcntl: runs are not locked on this platform")
    try:
        assert _run("--data", tmp_path / "x.npy", "--out", tmp_path / "lp.npy", *FAST) == 2
    finally:
        lock.release()
    assert f"another sdekit logp (pid {os.getpid()})" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad options
BAD = [
    (["--data", "missing.npy"], "--data", "does not exist"),
    (["--data", "flat.npy"], "--data", "shape (5,)"),
    (["--data", "ints.npy"], "--data", "dequantize"),
    (["--data", "nan.npy"], "--data", "row 3 holds NaN"),
    (["--data", "arch.npz"], "--data", "numpy.save"),
    (["--data", "text.npy"], "--data", "not a readable .npy"),
    (["--model", "no_such_module_xyz:model"], "--model", "cannot import module"),
    (["--model", "_cli_models:modle"], "--model", "did you mean 'model'?"),
    (["--model", "_cli_models:NOT_CALLABLE"], "--model", "not callable"),
    (["--model", "_cli_models:Net"], "--model", "'_cli_models:Net()'"),
    (["--model", "_cli_models:make_model"], "--model", "'_cli_models:make_model()'"),
    (["--model", "_cli_models:broken_factory()"], "--model", "no weights found"),
    (["--model", "_cli_models:wrong_shape"], "--model", "shape"),
    (["--model", "nocolon"], "--model", "module:name"),
    (["--chunk-size", "0"], "--chunk-size", "positive"),
    (["--chunk-size", "many"], "--chunk-size", "invalid int"),
    (["--out", "lp.csv"], "--out", ".parquet"),
    (["--out", "exists.npy"], "--out", "--overwrite"),
    (["--out", "adir"], "--out", "directory"),
    (["--sde", "vpp"], "--sde", "did you mean 'vp'?"),
    (["--sde", "_partial_domain:CIR"], "--sde", "not affine"),
    (["--solver", "dopri6"], "--solver", "dopri5"),
    (["--solver", "rk4"], "--solver", "--steps"),
    (["--steps", "10"], "--steps", "adaptive"),
    (["--eps", "1.5"], "--eps", "T = 1"),
    (["--eps", "0"], "--eps", "positive"),
    (["--rtol", "0"], "--rtol", "positive"),
    (["--seed", "-1"], "--seed", "4294967295"),
    (["--trace", "hutch"], "--trace", "invalid choice"),
    (["--data", "wide.npy", "--trace", "exact"], "--trace", "pass --trace hutchinson"),  # d = 1025 > 1024
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device", "--device"),
]


@pytest.mark.parametrize(("change", "option", "says"), BAD, ids=[" ".join(c) for c, _, _ in BAD])
def test_bad_options_exit_2_with_one_line_and_create_nothing(change, option, says, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _save_data(tmp_path / "x.npy", 4)
    np.save(tmp_path / "flat.npy", np.zeros(5))
    np.save(tmp_path / "wide.npy", np.zeros((3, 1025)))
    np.save(tmp_path / "ints.npy", np.zeros((5, 2), dtype=np.int64))
    nan = np.zeros((6, 2))
    nan[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.savez(tmp_path / "arch.npz", x=np.zeros((3, 2)))
    (tmp_path / "text.npy").write_text("1,2\n3,4\n")
    (tmp_path / "exists.npy").write_bytes(b"")
    (tmp_path / "adir").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = dict(zip(["--data", "--out"], ["x.npy", "lp.npy"]))
    for key, value in zip(change[::2], change[1::2]):
        argv[key] = value
    flat = [item for pair in argv.items() for item in pair]
    if change[0] == "--model":
        flat += ["--sde", "_cli_models:SDE"]
    else:
        flat = [*MODEL, *flat]
    try:
        code = main(["logp", "--no-progress", *flat])
    except SystemExit as exit_:  # argparse's own errors (a bad int or choice)
        code = exit_.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured
    assert len(lines) == 1, lines
    assert lines[0].startswith("sdekit logp: error: ") and option in lines[0] and says in lines[0], lines[0]
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == before


def test_parquet_without_pyarrow_is_an_option_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # importlib.util.find_spec then answers None
    _save_data(tmp_path / "x.npy", 4)
    assert _run("--data", tmp_path / "x.npy", "--out", tmp_path / "lp.parquet") == 2
    err = capsys.readouterr().err
    assert "--out" in err and "pip install 'sdekit[parquet]'" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "x.npy"]


def test_the_choices_are_the_library_s():
    from sdekit import _likelihood_checks, _logp_cli, _traces, parameterization

    assert _logp_cli._TRACES == _likelihood_checks._TRACES
    assert _logp_cli._PROBES == _traces.PROBES
    assert _logp_cli._PARAMETERIZATIONS == parameterization.PARAMETERIZATIONS
    assert DEFAULT_CHUNK_SIZE == 512


def test_the_parser_loads_neither_the_run_nor_numpy():
    code = (
        "import sys, sdekit.cli; p = sdekit.cli.build_parser(); assert 'logp' in p.format_help(); "
        "print(sorted(m for m in ('torch', 'numpy', 'sympy', 'sdekit._logp_run') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]"
