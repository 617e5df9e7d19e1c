"""The validation suite: runner exit codes, table and report, --sde loading, and checks that can fail.

The checks' own numbers are tested by running them (they compare with exact answers); here we
test that the machinery reports them honestly: a failing or crashing check makes the run exit 1,
bad arguments exit 2, a wrong kernel fails the Fokker–Planck line, a biased sample fails the
moment test, and slopes are fitted correctly.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap

import pytest
import torch

import sdekit
from validation import _cli, _core, _runner
from validation._core import CheckResult, Context


@pytest.fixture
def registry(monkeypatch):
    """An empty check registry (and no module imports) for one test."""
    reg: list = []
    monkeypatch.setattr(_core, "_REGISTRY", reg)
    monkeypatch.setattr(_runner, "load_check_modules", lambda modules=None: [])
    return reg


def _register(group: str, fn, quick: bool = True) -> None:
    _core.register(group, quick=quick)(fn)


def _ok(ctx):
    return [CheckResult.below("symbolic", "fine check", 1e-12, 1e-8, "round-off")]


def _bad(ctx):
    yield CheckResult.below("analytic", "too large", 2.0, 1.0, "Monte-Carlo, 4 sigma")


def _boom(ctx):
    yield CheckResult.below("orders", "before the crash", 0.1, 1.0)
    raise RuntimeError("deliberate crash in a check")


def _skip(ctx):
    return [CheckResult.skip("analytic", "needs affine", "needs an affine SDE")]


def _run(tmp_path, *extra: str) -> int:
    return _cli.main(["--quick", "--out", str(tmp_path / "out"), *extra])


def test_all_pass_exit_0_and_report(registry, tmp_path, capsys):
    _register("symbolic", _ok)
    _register("analytic", _skip)
    assert _run(tmp_path, "--only", "symbolic", "--only", "analytic") == 0
    out = capsys.readouterr().out
    assert "group" in out and "tolerance" in out
    assert "pass" in out and "fine check" in out and "skip" in out
    assert "2 checks: 1 passed, 0 failed, 1 skipped" in out
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| fine check | 1.00e-12 | 1.00e-08 | pass |" in md
    assert "needs an affine SDE" in md
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["meta"]["passed"] == 1 and data["meta"]["skipped"] == 1 and data["meta"]["mode"] == "quick"
    assert {r["status"] for r in data["results"]} == {"pass", "skip"}


def test_failing_check_exits_1_and_is_listed(registry, tmp_path, capsys):
    _register("symbolic", _ok)
    _register("analytic", _bad)
    assert _run(tmp_path) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "too large" in out
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Failures" in md and "Monte-Carlo, 4 sigma" in md


def test_crashing_check_is_a_failed_line_and_the_run_goes_on(registry, tmp_path, capsys):
    _register("orders", _boom)
    _register("symbolic", _ok)
    assert _run(tmp_path) == 1
    out = capsys.readouterr().out
    assert "before the crash" in out
    assert "fine check" in out  # the next check still ran
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    crashed = [r for r in data["results"] if r["status"] == "FAIL"]
    assert len(crashed) == 1 and "RuntimeError: deliberate crash in a check" in crashed[0]["where"]


def test_quick_runs_only_quick_checks_and_only_filters(registry, tmp_path, capsys):
    _register("analytic", _bad, quick=False)
    _register("symbolic", _ok)
    assert _run(tmp_path) == 0  # the failing check is full-mode only
    assert _run(tmp_path, "--only", "analytic") == 0  # nothing quick in that group
    assert _cli.main(["--out", str(tmp_path / "full"), "--only", "symbolic"]) == 0
    assert _cli.main(["--out", str(tmp_path / "full")]) == 1


def test_broken_check_module_is_a_failed_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(_core, "_REGISTRY", [])
    failures = _runner.load_check_modules(["validation.no_such_check_module"])
    assert len(failures) == 1 and failures[0].status == "FAIL" and "ModuleNotFoundError" in failures[0].where


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "not a built-in SDE"),
        ("vpp", "did you mean 'vp'?"),
        ("no_such_module_xyz:Thing", "cannot import module"),
        ("sdekit:NoSuchSDE", "has no attribute 'NoSuchSDE'"),
        ("sdekit:logp", "not a subclass of sdekit.SDE"),
    ],
)
def test_bad_sde_spec_exits_2_with_one_line(registry, tmp_path, capsys, spec, message):
    assert _run(tmp_path, "--sde", spec) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_arguments_exit_2(registry, tmp_path, capsys):
    assert _run(tmp_path, "--only", "nonsense") == 2
    assert "unknown --only group 'nonsense'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        _cli.main(["--seed", "not-a-number"])
    assert info.value.code == 2


def test_sdekit_validate_is_the_same_command(registry, tmp_path):
    from sdekit import cli

    _register("analytic", _bad)
    assert cli.main(["validate", "--quick", "--out", str(tmp_path / "o")]) == 1


def test_user_sde_runs_only_the_checks_about_it(registry, tmp_path, capsys):
    """--sde: the suite's own problems (per_sde=False) are left out and said so; per-SDE checks see only it."""
    seen: list = []

    def about_sdes(ctx):
        seen.append([type(s).__name__ for s in ctx.sdes])
        return [CheckResult.below("symbolic", f"{type(s).__name__}: fine", 0.0, 1.0) for s in ctx.sdes]

    def suite_problem(ctx):
        return [CheckResult.below("orders", "double well: suite problem", 0.0, 1.0)]

    _register("symbolic", about_sdes)
    _core.register("orders", quick=True, per_sde=False)(suite_problem)
    assert _run(tmp_path, "--sde", "vp", "VPSDE", "--sde", "sdekit:VPSDE") == 0
    out = capsys.readouterr().out
    assert seen == [["VPSDE"]]  # one SDE, named three ways: checked once
    assert "VPSDE: fine" in out and "suite problem" not in out
    assert "1 check(s) of the suite's own test problems left out" in out
    assert _run(tmp_path) == 0  # without --sde: the zoo, and the suite's problems run
    out = capsys.readouterr().out
    assert "suite problem" in out and "left out" not in out and len(seen[-1]) == 7


def test_two_different_sdes_of_one_class_exit_2(registry, tmp_path, capsys, monkeypatch):
    import types

    mod = types.ModuleType("two_vps_xyz")
    mod.SMALL, mod.LARGE = sdekit.VPSDE(beta_max=10), sdekit.VPSDE(beta_max=20.5)
    monkeypatch.setitem(sys.modules, "two_vps_xyz", mod)
    assert _run(tmp_path, "--sde", "two_vps_xyz:SMALL", "two_vps_xyz:LARGE") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "two different VPSDE SDEs" in err[0]
    assert not (tmp_path / "out").exists()


def test_real_checks_with_sde_vp_report_only_vp_lines_once(tmp_path, capsys):
    code = _cli.main(
        ["--quick", "--sde", "vp", "--only", "symbolic", "--only", "fokker-planck", "--out", str(tmp_path / "o")]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    data = json.loads((tmp_path / "o" / "report.json").read_text())
    names = [r["name"] for r in data["results"]]
    assert names and all(n.startswith("VPSDE: ") for n in names), names
    assert len(names) == len(set(names))
    assert not any("double well" in n or "DoubleWell" in n for n in names)


USER_MODULE = '''
import sympy as sp
import sdekit

class MyOU(sdekit.SDE):
    """dx = -theta (1 + t) x dt + sigma dW."""
    theta = sp.Rational(1, 2)
    sigma = 1

    def drift(self, x, t):
        return -self.theta * (1 + t) * x

    def diffusion(self, x, t):
        return self.sigma

class DoubleWell(sdekit.SDE):
    def drift(self, x, t):
        return x - x**3

    def diffusion(self, x, t):
        return sp.sqrt(1 + x**2)

class NeedsArgs(sdekit.SDE):
    def __init__(self, a):
        super().__init__()

    def drift(self, x, t):
        return -x

    def diffusion(self, x, t):
        return 1

INSTANCE = sdekit.SDE.from_expressions("-x", "sqrt(2)")
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_user_sdes.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_user_sdes"
    sys.modules.pop("my_user_sdes", None)


def test_user_sde_runs_the_real_symbolic_checks(tmp_path, user_module, capsys):
    code = _cli.main(["--quick", "--sde", f"{user_module}:MyOU", "--only", "symbolic", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "MyOU: kernel solves Fokker–Planck" in out and "MyOU: Chapman–Kolmogorov" in out
    assert "(from `--sde`)" in (tmp_path / "o" / "report.md").read_text()


def test_non_affine_user_sde_skips_kernel_checks_with_a_reason(tmp_path, user_module, capsys):
    args = ["--quick", "--sde", f"{user_module}:DoubleWell", f"{user_module}:INSTANCE", "--out", str(tmp_path / "o")]
    assert _cli.main([*args, "--only", "symbolic"]) == 0
    data = json.loads((tmp_path / "o" / "report.json").read_text())
    skipped = [r for r in data["results"] if r["status"] == "skip"]
    assert any("DoubleWell: kernel solves" in r["name"] and "not affine" in r["where"] for r in skipped)
    assert any("reverse SDE and PF-ODE" in r["name"] and r["status"] == "pass" for r in data["results"])
    assert len(data["meta"]["sdes"]) == 2


def test_user_sde_class_that_needs_arguments_exits_2(tmp_path, user_module, capsys):
    assert _cli.main(["--quick", "--sde", f"{user_module}:NeedsArgs", "--out", str(tmp_path / "o")]) == 2
    assert "give every parameter a default" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the checks can fail
def test_symbolic_checks_catch_a_wrong_kernel(tmp_path):
    from validation import symbolic_checks

    sde = sdekit.SDE.from_expressions("-x", "sqrt(2)")
    wrong = sdekit.SDE.from_expressions("-2*x", "sqrt(2)")  # another SDE's (valid) kernel
    sde.__dict__["marginal"] = wrong.marginal
    lines = list(symbolic_checks.symbolic_checks(Context(sdes=[sde], out=tmp_path)))
    fp = next(r for r in lines if "Fokker–Planck" in r.name)
    assert fp.status == "FAIL" and fp.value > 1e-3
    right = sdekit.SDE.from_expressions("-x", "sqrt(2)")
    fp_right = symbolic_checks._kernel_fp(right)
    assert fp_right.status == "pass" and fp_right.value == 0


def test_symbolic_checks_catch_a_wrong_reverse_drift(tmp_path, monkeypatch):
    from validation import symbolic_checks

    sde = sdekit.SDE.from_expressions("-x", "sqrt(1 + x**2)")
    # Drop the divergence term d(g^2)/dx of Anderson's reverse drift: the check must notice.
    monkeypatch.setattr(type(sde), "dg2_dx", property(lambda self: sdekit.x * 0), raising=False)
    sde.__dict__.pop("dg2_dx", None)
    line = symbolic_checks._reverse(sde)
    assert line.status == "FAIL"


def test_moment_z_sees_a_bias_that_the_exact_law_does_not_have():
    from validation.analytic_checks import moment_z, oracles, z_critical

    law = oracles()["mixture"]
    g = torch.Generator().manual_seed(3)
    x = law.sample(4000, generator=g)
    assert moment_z(x, law) < z_critical()  # exact draws: fails with probability 1e-4 (seeded)
    # A 0.2 shift is 0.2 / (sd ~1.6 / sqrt(4000)) ~ 8 standard errors.
    assert moment_z(x + torch.tensor([0.2, 0.0]), law) > z_critical()
    assert moment_z(x * 1.1, law) > z_critical()


def test_ladder_slope_fits_a_power_law():
    from validation.order_checks import Ladder

    hs = [2.0**-k for k in range(3, 8)]
    assert Ladder(hs, [3.0 * h**1.5 for h in hs]).slope == pytest.approx(1.5, abs=1e-12)
    assert math.isnan(Ladder(hs, [0.0, *hs[1:]]).slope)
    # Round-off-limited levels are left out of the fit (while 3 levels remain).
    errs = [h**4 for h in hs[:3]] + [1e-14, 1e-15]
    assert Ladder(hs, errs, floor=1e-11).slope == pytest.approx(4.0, abs=1e-12)


def test_ode_order_of_euler_against_the_exact_transport_map():
    from validation.order_checks import ode_errors

    # from 128 steps: on the default log-SNR grid 32-128 steps are pre-asymptotic (slope 0.73 there)
    lad = ode_errors("ode:euler", sdekit.VPSDE(), (7, 8, 9), n=16)
    assert abs(lad.slope - 1.0) <= 0.25  # theory 1 +- 0.25 (TESTING.md)
    assert lad.errors[-1] < lad.errors[0]


def test_slope_result_rules():
    r = CheckResult.within("orders", "slope", 1.2, 1.0, 0.25)
    assert r.passed and r.tolerance == 0.25
    assert not CheckResult.within("orders", "slope", 1.3, 1.0, 0.25).passed
    assert CheckResult.at_least("orders", "slope", 2.0, 1.25).passed
    assert not CheckResult.below("a", "nan", math.nan, 1.0).passed
    assert CheckResult.skip("a", "b", "why").status == "skip"
