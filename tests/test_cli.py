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


@pytest.mark.parametrize("argv", [["derive", "--sde", "nope"], ["nope"], []])
def test_bad_options_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
