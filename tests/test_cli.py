"""The sdekit console script: subcommands, help, and one-line errors with exit code 2."""

from __future__ import annotations

import pytest

from sdekit.cli import main


def test_demo_prints_derived_marginal(capsys):
    assert main(["derive", "--sde", "VPSDE"]) == 0
    out = capsys.readouterr().out
    assert "alpha(t)" in out and "sigma(t)^2" in out and "prior" in out and "PF-ODE" in out


def test_solvers_lists_registry(capsys):
    assert main(["solvers"]) == 0
    out = capsys.readouterr().out
    for name in ("euler", "srk", "ode:dopri5", "pc", "exp2"):
        assert name in out


def test_derive_unknown_sde_exits_2_with_one_line(capsys):
    assert main(["derive", "--sde", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0] and "VPSDE" in err[0]


def test_derive_a_user_sde_by_module_and_class(capsys, monkeypatch):
    """A non-affine user SDE (CIR): equations, why there is no Gaussian marginal, reverse and PF drifts."""
    import pathlib

    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parent))
    assert main(["derive", "--sde", "_partial_domain:CIR"]) == 0
    out = capsys.readouterr().out
    assert "noise: diagonal" in out and "no Gaussian marginal" in out and "PF-ODE drift" in out


@pytest.mark.parametrize("argv", [["nope"], []])
def test_bad_options_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
