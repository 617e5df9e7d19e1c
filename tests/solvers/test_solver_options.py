"""Declared solver options (sdekit/solvers/_option.py): every option of every registered solver is declared, its
default passes its own check, wrong types / out-of-range values / NaN are refused naming the solver and the option,
misspellings get suggestions (sample's keywords, logp's options= keys, simulate's and logp's keywords), the CLI lists
them and docs/solver_options.md is generated from them."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

import sdekit
from sdekit.cli import WIDTH, main
from sdekit.errors import SolverError, SolverOptionError
from sdekit.solvers import available, get
from sdekit.solvers._odestart import torchdiffeq_options
from sdekit.solvers._option import Option, close_matches
from sdekit.solvers._option_table import markdown
from sdekit.solvers._torchdiffeq import ODE_METHODS, TorchdiffeqSolver, backend_options

ROOT = Path(__file__).resolve().parents[2]
SOLVERS = sorted(available())
DECLARED = [(solver, name) for solver in SOLVERS for name in sorted(available()[solver].declared_options())]


def _bad_values(option: Option) -> list[Any]:
    """Values of the wrong type, out of range or NaN for ``option`` (each must be refused)."""
    if option.kind == "flag":
        return [1, "yes", None, np.float64(1.0)]
    if option.kind == "choice":
        return ["__nope__", 3.5, object()] + ([None] if None not in option.choices else [])
    if option.kind == "custom":
        return [object(), "x"] + ([] if option.none else [None])
    bad: list[Any] = ["1", True, [1]] + ([] if option.none else [None])
    if option.kind == "number":
        bad += [math.nan, -math.inf] + ([math.inf] if option.hi != math.inf else [])
    else:
        bad += [2.5, 1.0]
    if option.lo is not None:
        bad.append(option.lo if option.lo_open else option.lo - 1)
    if option.hi is not None and option.hi != math.inf:
        bad.append(option.hi if option.hi_open else option.hi + 1)
    return bad


# --------------------------------------------------------------------------- every option is declared
@pytest.mark.parametrize("solver", SOLVERS)
def test_every_accepted_option_is_declared_with_a_doc(solver: str) -> None:
    cls = available()[solver]
    declared = cls.declared_options()
    assert not cls._undeclared_options(), f"{solver}: declare these in options_declared: {cls._undeclared_options()}"
    for name, default in cls.accepted_options().items():
        assert name in declared and declared[name].doc.strip(), name
        assert declared[name].default == default or (default is None and declared[name].default is None)
    assert {"grid", "rho", "data_std"} <= set(declared)


@pytest.mark.parametrize(("solver", "name"), DECLARED)
def test_the_default_passes_its_own_check(solver: str, name: str) -> None:
    option = available()[solver].declared_options()[name]
    assert option.doc.strip() and option.expects()
    checked = option.check(option.default, name, f"solver {solver!r}")
    assert checked == option.default or (checked is None and option.default is None)


@pytest.mark.parametrize(("solver", "name"), DECLARED)
def test_wrong_type_out_of_range_and_nan_are_refused_naming_the_option(solver: str, name: str) -> None:
    cls = available()[solver]
    option = cls.declared_options()[name]
    for bad in _bad_values(option):
        with pytest.raises(SolverOptionError) as err:
            cls.check_options({name: bad})
        message = str(err.value)
        assert f"solver {solver!r}: option {name}=" in message and "expected" in message, message
        assert f"(default {option.shown_default()})" in message and "\n" not in message, message


def test_option_errors_are_solver_errors_and_value_errors() -> None:
    assert issubclass(SolverOptionError, SolverError) and issubclass(SolverOptionError, ValueError)


# --------------------------------------------------------------------------- the Option type
def test_numbers_are_normalised_and_bool_is_not_an_integer() -> None:
    count = Option.positive_int(3, "a count")
    assert count.check(np.int64(5), "n", "solver 'x'") == 5 and type(count.check(np.int64(5), "n", "x")) is int
    assert count.check(10**30, "n", "x") == 10**30  # a huge integer is in range, not an overflow
    with pytest.raises(SolverOptionError, match=r"n=True has the wrong type \(bool\); expected an integer >= 1"):
        count.check(True, "n", "solver 'x'")
    scale = Option.positive(1.0, "a scale")
    assert type(scale.check(2, "s", "x")) is float and scale.check(np.float32(0.5), "s", "x") == 0.5
    with pytest.raises(SolverOptionError, match="s=nan is NaN"):
        scale.check(float("nan"), "s", "x")
    with pytest.raises(SolverOptionError, match="s=inf is not finite"):
        scale.check(math.inf, "s", "x")
    with pytest.raises(SolverOptionError, match=r"has the wrong type \(Tensor\)"):
        scale.check(torch.tensor(1.0), "s", "x")
    capped = Option.number(math.inf, "a cap", lo=0.0, lo_open=True, hi=math.inf)
    assert capped.check(math.inf, "c", "x") == math.inf and capped.expects() == "a number > 0 (inf allowed)"


def test_choices_compare_type_and_value() -> None:
    order = Option.choice(2, (1, 2, 3), "an order")
    assert order.check(np.int64(3), "order", "x") == 3
    with pytest.raises(SolverOptionError, match="not one of the choices; expected one of 1, 2, 3"):
        order.check(True, "order", "x")
    flag_or_word = Option.choice(True, (True, False, "always"), "when")
    assert flag_or_word.check("always", "w", "x") == "always"
    with pytest.raises(SolverOptionError):
        flag_or_word.check(1, "w", "x")


@pytest.mark.parametrize(
    ("option", "words"),
    [
        (Option.integer(0, "d", lo=0), "an integer >= 0"),
        (Option.integer(4, "d", lo=2, hi=12), "an integer in [2, 12]"),
        (Option.number(0.5, "d", lo=0.0, hi=1.0, lo_open=True), "a number in (0, 1]"),
        (Option.positive(None, "d", none=True), "None or a number > 0"),
        (Option.flag(True, "d"), "True or False"),
        (Option.choice(None, (None, "a"), "d"), "one of None, 'a'"),
    ],
)
def test_expects_says_what_is_accepted(option: Option, words: str) -> None:
    assert option.expects() == words


def test_a_declaration_needs_a_doc_and_a_custom_one_a_test() -> None:
    with pytest.raises(ValueError, match="doc"):
        Option.flag(True, " ")
    with pytest.raises(ValueError, match="custom"):
        Option(1, "d")


def test_options_declared_by_default_alone_are_still_accepted_but_not_declared() -> None:
    """The deprecated options_defaults (a branch written before the declarations): accepted unchecked, reported by
    test_every_accepted_option_is_declared_with_a_doc when a registered solver has one."""
    base = type(get("exp2"))

    class Legacy(base):  # type: ignore[valid-type, misc]
        options_defaults: ClassVar[dict[str, Any]] = {"budget": 7}

    assert Legacy.accepted_options()["budget"] == 7 and "budget" not in Legacy.declared_options()
    assert Legacy.check_options({"budget": "anything"}) == {"budget": "anything"}


# --------------------------------------------------------------------------- where the checks run
def _counting_model() -> tuple[Any, list[int]]:
    calls = [0]

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return -x

    return model, calls


@pytest.mark.parametrize(
    ("solver", "options", "named"),
    [
        ("euler", {"steps": 10, "dt0": 0}, "dt0=0"),
        ("srk", {"dt_min": "1e-5"}, "dt_min='1e-5'"),
        ("euler", {"steps": 4, "bm": 3}, "bm=3"),
        ("euler", {"steps": 4, "check_every": True}, "check_every=True"),
        ("pc", {"steps": 4, "snr": float("nan")}, "snr=nan"),
        ("pc", {"steps": 4, "snr": "high"}, "snr='high'"),
        ("pc", {"steps": 4, "n_corrector_steps": -1}, "n_corrector_steps=-1"),
        ("ald", {"steps": 4, "rel_step": 0.0}, "rel_step=0.0"),
        ("exp2", {"steps": 6, "rho": 0}, "rho=0"),
        ("exp2", {"steps": 6, "grid": "log-snr"}, "grid='log-snr'"),
        ("exp2", {"steps": 6, "data_std": [1.0, 0.0]}, "data_std=[1.0, 0.0]"),
        ("exp2", {"steps": 6, "lower_order_final": 1}, "lower_order_final=1"),
        ("unipc", {"steps": 6, "order": True}, "order=True"),
        ("ode", {"first_step": -1.0}, "first_step=-1.0"),
        ("ode", {"max_num_steps": 0}, "max_num_steps=0"),
        ("ode:rk4", {"steps": 4, "interp": "quadratic"}, "interp='quadratic'"),
        ("ode:implicit_adams", {"steps": 8, "max_order": 13}, "max_order=13"),
    ],
)
def test_sample_refuses_a_bad_option_before_any_work(solver: str, options: dict[str, Any], named: str) -> None:
    model, calls = _counting_model()
    sde = sdekit.VPSDE()
    with pytest.raises(SolverOptionError, match=rf"solver '[^']*': option {re.escape(named)} ") as err:
        sdekit.sample(model, sde, (4, 2), solver=solver, **options)
    assert calls[0] == 0 and "default" in str(err.value)


def test_sample_suggests_its_own_argument_for_a_misspelt_keyword() -> None:
    model, calls = _counting_model()
    sde = sdekit.VPSDE()
    with pytest.raises(SolverOptionError, match=r"'stpes' \(did you mean steps=\?\)"):
        sdekit.sample(model, sde, (4, 2), stpes=10)
    with pytest.raises(SolverOptionError, match=r"'stpes' \(did you mean steps=\?\)"):
        sdekit.sample(model, sde, (4, 2), solver="exp2", stpes=10)
    with pytest.raises(SolverOptionError, match=r"'alow_unstable' \(did you mean allow_unstable=\?\)"):
        sdekit.sample(model, sde, (4, 2), solver="reversible_heun", steps=4, alow_unstable=True)
    with pytest.raises(SolverOptionError, match=r"'snrr' \(did you mean snr=\?\)"):
        sdekit.sample(model, sde, (4, 2), solver="pc", steps=4, snrr=0.2)
    with pytest.raises(SolverOptionError, match=r"'max_num_step' \(did you mean max_num_steps=\?\)"):
        sdekit.sample(model, sde, (4, 2), solver="ode", max_num_step=10)
    with pytest.raises(SolverOptionError, match=r"'grdi' \(did you mean grid=\?\)"):
        sdekit.sample(model, sde, (4, 2), solver="pc", steps=4, grdi="edm")
    assert calls[0] == 0


def test_sample_does_not_suggest_the_argument_it_passed_on_itself() -> None:
    """snr= is sample's own argument, passed to the solver when not its default: exp2 has none, and the message must
    not suggest snr= back."""
    model, _ = _counting_model()
    sde = sdekit.VPSDE()
    with pytest.raises(SolverOptionError, match=r"got unknown option\(s\) 'snr'; it accepts") as err:
        sdekit.sample(model, sde, (4, 2), solver="exp2", steps=6, snr=0.2)
    assert "did you mean" not in str(err.value)


def test_close_matches_keep_only_the_best() -> None:
    assert close_matches("stpes", ["steps", "shape", "dtype", "eps"]) == ["steps"]
    assert close_matches("zzz", ["steps"]) == []


def test_logp_options_keys_are_checked_with_suggestions() -> None:
    model, calls = _counting_model()
    sde, x = sdekit.VPSDE(), torch.zeros(2, 2)
    with pytest.raises(SolverOptionError, match=r"'max_num_step' \(did you mean 'max_num_steps'\?\)"):
        sdekit.logp(model, sde, x, options={"max_num_step": 10})
    with pytest.raises(SolverOptionError, match=r"'rtol' \(rtol is an argument of logp\(\): pass logp\(\.\.\., rtol="):
        sdekit.logp(model, sde, x, options={"rtol": 1e-3})
    with pytest.raises(SolverOptionError, match=r"option max_num_steps=0 is out of range"):
        sdekit.logp(model, sde, x, options={"max_num_steps": 0})
    with pytest.raises(SolverOptionError, match=r"option step_size=-0.1 is out of range"):
        sdekit.logp(model, sde, x, solver="rk4", options={"step_size": -0.1})
    assert calls[0] == 0
    assert torch.isfinite(sdekit.logp(model, sde, x, options={"max_num_steps": 10_000})).all()


@pytest.mark.parametrize("entry", ["simulate", "logp"])
def test_misspelt_keywords_of_fixed_signatures_suggest_the_argument(entry: str) -> None:
    """Python 3.13's message on every supported Python; the signature stays the function's own."""
    sde = sdekit.VPSDE()
    call = {
        "simulate": lambda **kw: sdekit.simulate(sde, torch.zeros(2, 1), [0.0, 1.0], **kw),
        "logp": lambda **kw: sdekit.logp(lambda x, t: -x, sde, torch.zeros(2, 1), **kw),
    }[entry]
    expected = rf"^{entry}\(\) got an unexpected keyword argument 'stpes'. Did you mean 'steps'\?$"
    with pytest.raises(TypeError, match=expected):
        call(stpes=3)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'zzz'$"):
        call(zzz=3)
    params = inspect.signature(getattr(sdekit, entry)).parameters
    assert "steps" in params and not any(p.kind is p.VAR_KEYWORD for p in params.values())


# --------------------------------------------------------------------------- torchdiffeq's own keywords
@pytest.mark.parametrize("method", ODE_METHODS)
def test_torchdiffeq_keywords_are_declared_as_the_installed_torchdiffeq_takes_them(method: str) -> None:
    """Declared = torchdiffeq's keyword arguments of the method's solver class, except that explicit_adams takes
    no implicit= (torchdiffeq fixes it: passing it is a TypeError) and no max_iters (ignored without a corrector)."""
    declared = set(backend_options(method))
    expected = set(torchdiffeq_options(method)) - ({"implicit", "max_iters"} if method == "explicit_adams" else set())
    assert declared == expected
    cls = available()[f"ode:{method}"]
    assert issubclass(cls, TorchdiffeqSolver) and all(o.passthrough for o in backend_options(method).values())
    budgets = {"max_steps", "max_rejected"} if cls.adaptive else set()  # sdekit's step budget of adaptive runs
    assert set(cls.accepted_options()) == {"grid", "rho", "data_std"} | budgets  # backend keywords: only when given


@pytest.mark.parametrize(
    ("solver", "options"),
    [
        ("ode", {"first_step": 0.01, "max_num_steps": 10_000, "safety": 0.8, "ifactor": 5, "dfactor": 0.1}),
        ("ode", {"min_step": 0, "max_step": math.inf, "jump_t": [0.5], "norm": lambda y: y.abs().max()}),
        ("ode:rk4", {"steps": 8, "interp": "cubic", "perturb": True}),
        ("ode:implicit_adams", {"steps": 8, "implicit": False, "max_iters": 2, "max_order": 5}),
    ],
)
def test_declared_torchdiffeq_keywords_reach_torchdiffeq(solver: str, options: dict[str, Any]) -> None:
    sde = sdekit.VPSDE()
    gen = torch.Generator().manual_seed(0)
    x = sdekit.sample(lambda x, t: -x, sde, (4, 2), solver=solver, generator=gen, **options)
    assert bool(torch.isfinite(x).all())


# --------------------------------------------------------------------------- CLI and docs
@pytest.mark.parametrize("solver", ["euler", "pc", "unipc", "dopri5", "ode:implicit_adams"])
def test_cli_lists_the_options_of_a_solver(solver: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solvers", "--options", solver]) == 0
    out = capsys.readouterr().out
    cls = available()[sdekit.solvers.resolve(solver)]
    for name, option in cls.declared_options().items():
        assert f"\n{name}: {option.expects()}"[:40] in out, name
    assert max(len(line) for line in out.splitlines()) <= WIDTH


def test_cli_unknown_solver_suggests_close_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solvers", "--options", "eulr"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert captured.out == "" and len(err) == 1
    assert err[0].startswith("sdekit solvers: error: --options") and "Did you mean 'euler'" in err[0]


def test_docs_page_is_generated_from_the_declarations() -> None:
    page = (ROOT / "docs" / "solver_options.md").read_text(encoding="utf-8")
    assert page == markdown(), "stale: run python -m sdekit.solvers._option_table > docs/solver_options.md"
    for solver, name in DECLARED:
        assert f"| `{name}` |" in page and f"`{solver}`" in page, (solver, name)
