"""``sdekit demo``'s options: every mistake is one stderr line and exit code 2, before any work."""

from __future__ import annotations

import textwrap

import pytest
import torch

from sdekit.cli import main


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors
        return int(exc.code)


NON_AFFINE = textwrap.dedent(
    """
    import sdekit

    class Cubic(sdekit.SDE):
        def drift(self, x, t):
            return -x**3

        def diffusion(self, x, t):
            return 1

    class NotAnSDE:
        pass

    class Affine(sdekit.SDE):
        def drift(self, x, t):
            return -x

        def diffusion(self, x, t):
            return 1
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "sdekit_demo_user_sdes.py").write_text(NON_AFFINE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "sdekit_demo_user_sdes"


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--solver", "eulr"], "euler"),  # unknown solver: the close match is suggested
        (["--solver", "srk,nope"], "nope"),
        (["--sde", "vpp"], "did you mean 'vp'?"),
        (["--sde", "no_such_module_xyz:Foo"], "cannot import"),
        (["--sde", "USER:Cubic"], "not affine"),
        (["--sde", "USER:NotAnSDE"], "not a subclass"),
        (["--sde", "USER:Missing"], "no attribute"),
        (["--steps", "0,10"], "positive integers"),
        (["--steps", "ten"], "positive integers"),
        (["--device", "toaster"], "device"),
        (["--seed", "x"], "invalid int"),
        (["--bogus"], "unrecognized"),
    ],
)
def test_bad_options_exit_2_with_one_line(extra, says, user_module, tmp_path, capsys):
    out = tmp_path / "never"
    argv = ["demo", "--quick", "--out", str(out)] + [a.replace("USER", user_module) for a in extra]
    assert _run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    # options of the demo say "sdekit demo: error: ..."; arguments no subcommand knows, "sdekit: error: ..."
    assert err[0].startswith(("sdekit demo: error:", "sdekit: error:")) and says in err[0], err[0]
    assert not out.exists()  # rejected up front, before any work


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_unavailable_is_a_one_line_error(tmp_path, capsys):
    assert _run(["demo", "--device", "cuda", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]


def test_user_sde_spec_loads_an_affine_class(user_module):
    from sdekit.demo import _cli

    sde = _cli._parse_sde(f"{user_module}:Affine")
    assert type(sde).__name__ == "Affine" and sde.is_affine
    assert type(_cli._parse_sde("vp")).__name__ == "VPSDE"
    assert type(_cli._parse_sde("CosineVPSDE")).__name__ == "CosineVPSDE"


def test_help_lists_every_option(capsys):
    assert _run(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--sde", "--solver", "--steps", "--device", "--seed", "--out", "--quick"):
        assert opt in out
    assert _run(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


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
