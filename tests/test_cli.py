"""The sdekit console script: subcommands, help, the shared SDE vocabulary, and one-line errors with exit code 2.

The option mistakes are run through the installed console script (a subprocess, as a user runs it): each must
exit with code 2, print exactly one line on stderr naming the option, and create nothing, before any work.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import sdekit
from sdekit.cli import COMMAND_GROUP, WIDTH, main

ROOT = Path(__file__).resolve().parents[1]


def test_demo_prints_derived_marginal(capsys):
    assert main(["derive", "--sde", "VPSDE"]) == 0
    out = capsys.readouterr().out
    assert "alpha(t)" in out and "sigma(t)^2" in out and "prior" in out and "PF-ODE" in out


def test_solvers_lists_registry(capsys):
    assert main(["solvers"]) == 0
    out = capsys.readouterr().out
    for name in ("euler", "srk", "ode:dopri5", "pc", "exp2"):
        assert name in out


def test_solvers_table_fits_100_columns(capsys):
    assert main(["solvers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert WIDTH == 100
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    assert any("Rößler" in line for line in lines)  # the descriptions are still there, wrapped


def test_derive_unknown_sde_exits_2_with_one_line(capsys):
    assert main(["derive", "--sde", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0] and "VPSDE" in err[0]


def test_derive_a_user_sde_by_module_and_class(capsys, monkeypatch):
    """A non-affine user SDE (CIR): equations, why there is no Gaussian marginal, reverse and PF drifts."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    assert main(["derive", "--sde", "_partial_domain:CIR"]) == 0
    out = capsys.readouterr().out
    assert "noise: diagonal" in out and "no Gaussian marginal" in out and "PF-ODE drift" in out


@pytest.mark.parametrize("argv", [["derive", "ou"], ["derive", "OrnsteinUhlenbeck"], ["derive", "--sde", "ou"]])
def test_derive_takes_the_sde_as_a_positional_or_an_option(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("== ") == 1 and "== OrnsteinUhlenbeck(" in out


def test_derive_refuses_two_different_sdes(capsys):
    assert main(["derive", "vp", "--sde", "ve"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sde" in err[0]


def test_derive_score_symbol_does_not_collide_with_a_parameter(capsys):
    assert main(["derive", "--sde", "CosineVPSDE"]) == 0
    out = capsys.readouterr().out
    names = set(re.findall(r"drift\s+\(score (\S+)\)", out))
    assert names, out
    assert not names & set(sdekit.CosineVPSDE().params), (names, out)


def test_bad_options_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["nope"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]


def test_bare_sdekit_prints_the_usage_and_the_commands_exit_2(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: sdekit")
    for command in ("demo", "derive", "solvers", "validate"):
        assert f"\n    {command} " in captured.err, command


# --------------------------------------------------------------------------- fast help, no validation in the library
def test_building_the_parser_imports_neither_torch_nor_sympy():
    code = (
        "import sys, sdekit.cli; sdekit.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'sympy', 'sdekit.demo._run', 'validation._runner') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_validate_is_an_entry_point_and_the_library_never_imports_validation():
    eps = {ep.name: ep.value for ep in entry_points(group=COMMAND_GROUP)}
    assert eps.get("validate") == "validation._cli:register"
    for path in (ROOT / "sdekit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not any(n == "validation" or n.startswith("validation.") for n in names), path


def test_a_broken_command_plugin_is_one_line_not_a_crash(monkeypatch, capsys):
    import importlib.metadata as md

    broken = md.EntryPoint(name="broken", value="no_such_module_xyz:register", group=COMMAND_GROUP)
    monkeypatch.setattr(md, "entry_points", lambda group=None: [broken] if group == COMMAND_GROUP else [])
    assert main(["broken"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sdekit broken: error:" in err[0] and "no_such_module_xyz" in err[0]


# --------------------------------------------------------------------------- one SDE vocabulary
def test_short_names_cover_the_zoo():
    from sdekit._load import SHORT_NAMES
    from sdekit.symbolic import zoo

    assert sorted(SHORT_NAMES.values()) == sorted(zoo.__all__)
    assert len(set(SHORT_NAMES.values())) == len(SHORT_NAMES)


@pytest.mark.parametrize("short", ["vp", "subvp", "ve", "cosine", "edm", "ou", "bm"])
def test_short_class_and_module_names_resolve_to_the_same_sde(short):
    from sdekit._load import SHORT_NAMES, resolve_sde

    cls = SHORT_NAMES[short]
    for spec in (short, short.upper(), cls, cls.lower(), f"sdekit.symbolic.zoo:{cls}", f"sdekit:{cls}"):
        assert type(resolve_sde(spec)).__name__ == cls, spec


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("vpp", "did you mean 'vp'?"),
        ("VPSDF", "did you mean 'VPSDE'?"),
        ("sdekit:VPSDF", "did you mean 'VPSDE'?"),
        ("", "empty SDE name"),
        ("a:b:c", "expected 'module:Class'"),
        ("no_such_module_xyz:Foo", "cannot import module 'no_such_module_xyz'"),
        ("sdekit:sample", "not a subclass of sdekit.SDE"),
    ],
)
def test_unresolvable_names_are_one_line_with_advice(spec, says):
    from sdekit._load import SDESpecError, resolve_sde

    with pytest.raises(SDESpecError) as info:
        resolve_sde(spec)
    message = str(info.value)
    assert says in message and "\n" not in message


USER_SDES = textwrap.dedent(
    """
    import sympy as sp
    import sdekit

    class FloorDrift(sdekit.SDE):
        def drift(self, x, t):
            return -sp.floor(1 + t) * x

        def diffusion(self, x, t):
            return 1

    class Cubic(sdekit.SDE):
        def drift(self, x, t):
            return -x**3

        def diffusion(self, x, t):
            return 1

    OU_INSTANCE = sdekit.OrnsteinUhlenbeck(theta=2)
    """
)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A directory with the module ``cli_user_sdes`` (importable from it: commands import from the cwd)."""
    (tmp_path / "cli_user_sdes.py").write_text(USER_SDES)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("cli_user_sdes", None)


def test_instances_are_accepted_and_uncompilable_expressions_are_named(user_dir):
    from sdekit._load import SDESpecError, resolve_sde

    assert resolve_sde("cli_user_sdes:OU_INSTANCE").params["theta"] == 2
    with pytest.raises(SDESpecError, match=r"FloorDrift: FloorDrift\.drift = .*floor\(t\).* cannot be compiled"):
        resolve_sde("cli_user_sdes:FloorDrift")


# --------------------------------------------------------------------------- mistakes through the console script
def _script() -> list[str]:
    exe = Path(sys.executable).parent / ("sdekit.exe" if os.name == "nt" else "sdekit")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sdekit"]


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["demo", "--out", "/proc/sdekit-out"], "--out"),
        (["demo", "--out", "FILE/sub"], "--out"),
        (["demo", "--out", "FILE"], "--out"),
        (["demo", "--seed", "-1"], "--seed"),
        (["demo", "--seed", str(2**63)], "--seed"),
        (["demo", "--steps", "10000000000000"], "--steps"),
        (["demo", "--sde", "vpp"], "--sde"),
        (["demo", "--sde", "cli_user_sdes:FloorDrift"], "--sde"),
        (["demo", "--sde", "cli_user_sdes:Cubic"], "--sde"),
        (["demo", "--solver", "reversible_heun"], "--solver"),
        (["validate", "--out", "/proc/sdekit-out"], "--out"),
        (["validate", "--out", "FILE/sub"], "--out"),
        (["validate", "--seed", str(2**64)], "--seed"),
        (["validate", "--sde", "cli_user_sdes:FloorDrift"], "--sde"),
        (["validate", "--sde", "nope"], "--sde"),
        (["derive", "cli_user_sdes:FloorDrift"], "SDE"),
        (["-m validation", "--out", "FILE/sub"], "--out"),
        (["-m validation", "--seed", "-5"], "--seed"),
    ],
)
def test_mistakes_are_one_line_exit_2_and_create_nothing(argv, option, user_dir):
    (user_dir / "FILE").write_text("a regular file\n")
    out = user_dir / "never"
    if "--out" not in argv and argv[0] != "derive":
        argv = [*argv, "--out", str(out)]
    before = sorted(p.name for p in user_dir.iterdir())
    cmd = [sys.executable, "-m", "validation", *argv[1:]] if argv[0] == "-m validation" else [*_script(), *argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, cwd=user_dir, capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1, done.stderr
    assert ": error: " in lines[0] and option in lines[0], lines[0]
    assert done.stdout == ""
    assert sorted(p.name for p in user_dir.iterdir() if p.name != "__pycache__") == [
        n for n in before if n != "__pycache__"
    ]
