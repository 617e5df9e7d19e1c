"""A catalogue of bad inputs and faults, tried as a hostile user would (issue #19, point 5).

Every case asserts:
- the error type;
- that the message names the argument (or the part of the declaration) that was wrong and says what to do instead
  (``words``: every one must appear in the message);
- that nothing passed in was mutated: tensors keep their values, dtype, shape and ``requires_grad``; generators
  keep their state (a refused call draws nothing); SDE instances keep their parameters;
- for faults (a model that misbehaves mid-run): that the run stops within a bounded number of model calls
  (``max_calls``), the deterministic stand-in for "stops within a bounded time" (no timed assertions).

The command-line cases run ``sdekit`` in-process through :func:`sdekit.cli.main` and check the exit code 2 and the
one-line message on stderr.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import sympy as sp
import torch

import sdekit
from sdekit import losses
from sdekit.cli import main as cli_main
from sdekit.errors import (
    ModelOutputError,
    NotAffineError,
    SDEDeclarationError,
    SolverDivergedError,
    SolverError,
    SolverOptionError,
    UnknownSolverError,
)


@dataclasses.dataclass
class Inputs:
    """What a case passes in, to be checked unchanged afterwards."""

    tensors: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    generator: torch.Generator = dataclasses.field(default_factory=lambda: torch.Generator().manual_seed(0))
    sde: sdekit.SDE = dataclasses.field(default_factory=sdekit.VPSDE)

    def snapshot(self) -> tuple[Any, ...]:
        tensors = {k: (v.detach().clone(), v.dtype, tuple(v.shape), v.requires_grad) for k, v in self.tensors.items()}
        return tensors, self.generator.get_state().clone(), dict(self.sde.params), self.sde.T

    def assert_unchanged(self, before: tuple[Any, ...], *, drew: bool) -> None:
        """Tensors and the SDE unchanged; the generator too unless the run started (``drew``: a fault mid-run)."""
        tensors, state, params, horizon = before
        for name, (value, dtype, shape, grad) in tensors.items():
            now = self.tensors[name]
            assert now.dtype == dtype and tuple(now.shape) == shape and now.requires_grad == grad, name
            assert torch.equal(now.detach().nan_to_num(), value.nan_to_num()), name
        assert drew or torch.equal(self.generator.get_state(), state), "the generator was consumed by a refused call"
        assert dict(self.sde.params) == params and self.sde.T == horizon


class Counting:
    """A model ``-x`` (the exact N(0, 1) score under VP) that counts its calls; ``fault(x, t, n)`` may replace its
    output from some call on."""

    def __init__(self, fault: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor | None] | None = None):
        self.fault, self.calls = fault, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.fault(x, t, self.calls) if self.fault is not None else None
        return -x if out is None else out


@dataclasses.dataclass
class Case:
    name: str
    run: Callable[[Inputs, Counting], Any]
    error: type[BaseException]
    words: tuple[str, ...]
    tensors: Callable[[], dict[str, torch.Tensor]] = dict
    max_calls: int = 0  # model calls allowed before the error (0: refused before the model ran)
    fault: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor | None] | None = None


def _x(n: int = 8, d: int = 2, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(1)).to(dtype)


def _sde_class(name: str, attrs: dict[str, Any] | None = None, drift: Any = None, diffusion: Any = None) -> type:
    body: dict[str, Any] = dict(attrs or {})
    body["drift"] = drift or (lambda self, x, t: -x)
    body["diffusion"] = diffusion or (lambda self, x, t: sp.Integer(1))
    return type(name, (sdekit.SDE,), body)


class _Cubic(sdekit.SDE):
    """A non-affine SDE (no Gaussian marginal)."""

    def drift(self, x, t):
        return -(x**3)

    def diffusion(self, x, t):
        return sp.Integer(1)


def _sample(i: Inputs, m: Counting, **kw: Any) -> Any:
    kw.setdefault("solver", "euler")
    kw.setdefault("steps", 10)
    return sdekit.sample(m, i.sde, kw.pop("shape", (8, 2)), generator=i.generator, **kw)


def _logp(i: Inputs, m: Counting, **kw: Any) -> Any:
    return sdekit.logp(m, i.sde, kw.pop("x", i.tensors.get("x")), generator=i.generator, **kw)


def _simulate(i: Inputs, **kw: Any) -> Any:
    return sdekit.simulate(i.sde, kw.pop("x0", i.tensors.get("x0")), kw.pop("ts", [0.0, 0.5, 1.0]), **kw)


def _nan_below(t_bad: float) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor | None]:
    return lambda x, t, n: torch.full_like(x, float("nan")) if float(t[0]) < t_bad else None


def X() -> dict[str, torch.Tensor]:
    return {"x": _x()}


def X0() -> dict[str, torch.Tensor]:
    return {"x0": _x()}


def _nan_x() -> dict[str, torch.Tensor]:
    x = _x()
    x[0, 0] = float("nan")
    return {"x": x}


CHUNK = ("chunk_size must be a positive int", "or None")  # words of a bad chunk_size
HUGE = ("steps=", "limit of 10,000,000 fixed steps", "take at most")  # words of the refusal of a huge step count

CASES = [
    # ------------------------------------------------------------------ declarations
    Case("sde-missing-drift", lambda i, m: type("NoDrift", (sdekit.SDE,), {"diffusion": lambda s, x, t: 1})(),
         SDEDeclarationError, ("NoDrift", "drift(self, x, t)", "declare it")),
    Case("sde-unknown-keyword", lambda i, m: sdekit.VPSDE(beta_mn=0.1), SDEDeclarationError,
         ("beta_mn", "its parameters are: beta_max, beta_min")),
    Case("sde-non-numeric-parameter", lambda i, m: sdekit.VPSDE(beta_min="small"), SDEDeclarationError,
         ("beta_min='small'", "pass a float")),
    Case("sde-horizon-zero", lambda i, m: sdekit.VPSDE(T=0), SDEDeclarationError, ("horizon T", "positive number")),
    Case("sde-shadowing-parameter", lambda i, m: _sde_class("Shadow", {"marginal": 2.0})(), SDEDeclarationError,
         ("Shadow.marginal = 2.0", "rename the parameter")),
    Case("sde-uncompilable", lambda i, m: _sde_class("Odd", drift=lambda s, x, t: -sp.floor(t) * x)(),
         SDEDeclarationError, ("Odd.drift", "floor(t)", "supported are")),
    Case("sde-zero-noise", lambda i, m: sdekit.OrnsteinUhlenbeck(sigma=0), SDEDeclarationError,
         ("identically zero", "choose parameters with non-zero noise")),
    Case("sde-unknown-symbol", lambda i, m: _sde_class("Free", drift=lambda s, x, t: -sp.Symbol("k") * x)(),
         SDEDeclarationError, ("unknown symbol(s) k", "declare k as a class attribute")),
    Case("sde-bad-expression-string", lambda i, m: sdekit.SDE.from_expressions("-x*", "1"), SDEDeclarationError,
         ("cannot parse the drift", "-x*")),
    # ------------------------------------------------------------------ sample: arguments
    Case("sample-model-not-callable", lambda i, m: sdekit.sample(3, i.sde, (8, 2), steps=5), TypeError,
         ("model must be a callable model(x, t)",)),
    Case("sample-sde-not-an-sde", lambda i, m: sdekit.sample(m, "VP", (8, 2), steps=5), TypeError,
         ("sde must be an sdekit.SDE instance",)),
    Case("sample-empty-shape", lambda i, m: _sample(i, m, shape=(0, 2)), ValueError,
         ("shape must be a tuple of positive ints",)),
    Case("sample-solver-typo", lambda i, m: _sample(i, m, solver="srkk"), UnknownSolverError, ("srkk", "'srk'")),
    Case("sample-steps-zero", lambda i, m: _sample(i, m, steps=0), ValueError, ("steps must be a positive integer",)),
    Case("sample-steps-float", lambda i, m: _sample(i, m, steps=10.5), ValueError,
         ("steps must be a positive integer", "10.5")),
    Case("sample-eps-above-T", lambda i, m: _sample(i, m, eps=2.0), ValueError, ("eps must be", "0 < eps < T = 1")),
    Case("sample-rtol-negative", lambda i, m: _sample(i, m, solver="ode", steps=None, rtol=-1e-3), ValueError,
         ("rtol must be a positive finite number",)),
    Case("sample-x_T-shape", lambda i, m: _sample(i, m, x_T=i.tensors["x"]), ValueError,
         ("x_T has shape (4, 2) but shape=(8, 2)",), tensors=lambda: {"x": _x(4)}),
    Case("sample-x_T-nan", lambda i, m: _sample(i, m, x_T=i.tensors["x"]), ValueError, ("x_T contains NaN",),
         tensors=_nan_x),
    Case("sample-half-dtype", lambda i, m: _sample(i, m, dtype=torch.float16), TypeError,
         ("dtype=", "torch.float32 or torch.float64", "pass dtype=torch.float32")),
    Case("sample-generator-int", lambda i, m: sdekit.sample(m, i.sde, (8, 2), steps=5, generator=0), TypeError,
         ("generator must be a torch.Generator", "manual_seed")),
    Case("sample-parameterization", lambda i, m: _sample(i, m, parameterization="epsilon"), ValueError,
         ("parameterization 'epsilon'", "choose one of score, eps")),
    Case("sample-unknown-option", lambda i, m: _sample(i, m, fooo=1), SolverError, ("fooo", "accepts")),
    Case("sample-misspelt-keyword", lambda i, m: _sample(i, m, stpes=10), SolverError,
         ("stpes", "did you mean steps=")),
    Case("sample-option-zero", lambda i, m: _sample(i, m, dt0=0), SolverOptionError,
         ("dt0=0", "expected None or a number > 0")),
    Case("sample-option-string", lambda i, m: _sample(i, m, solver="pc", snr="high"), SolverOptionError,
         ("snr='high'", "expected a number > 0")),
    Case("sample-option-bool-as-int", lambda i, m: _sample(i, m, solver="unipc", order=True), SolverOptionError,
         ("order=True", "expected one of 1, 2, 3")),
    Case("sample-device", lambda i, m: _sample(i, m, device="nope"), ValueError,
         ("device='nope'", "use device='cpu'")),
    Case("sample-ts-increasing", lambda i, m: _sample(i, m, ts=[0.1, 0.5]), ValueError,
         ("ts must be strictly decreasing",)),
    Case("sample-non-affine-prior", lambda i, m: sdekit.sample(m, _Cubic(), (8, 2), solver="euler", steps=5),
         SolverError, ("not affine", "pass x_T=")),
    Case("sample-unstable-solver", lambda i, m: _sample(i, m, solver="reversible_heun"), SolverError,
         ("reversible_heun cannot sample", "allow_unstable=True")),
    Case("sample-steps-for-multistep", lambda i, m: _sample(i, m, solver="exp3", steps=2), ValueError,
         ("steps=2 leaves no step to take", "pass steps >=")),
    # ------------------------------------------------------------------ sample: faults mid-run
    Case("sample-model-changes-shape", lambda i, m: _sample(i, m, steps=20), ModelOutputError,
         ("(call 4, at t = ", "must return a tensor shaped like x"), max_calls=4,
         fault=lambda x, t, n: -x[:, :1] if n >= 4 else None),
    Case("sample-model-changes-dtype", lambda i, m: _sample(i, m, solver="exp2", steps=10), ModelOutputError,
         ("(call 3, at t = ", "keep the dtype of x"), max_calls=3,
         fault=lambda x, t, n: -x.double() if n >= 3 else None),
    Case("sample-model-nan-euler", lambda i, m: _sample(i, m, steps=40), SolverDivergedError,
         ("non-finite", "returned non-finite values for a moderate input", "check the model"), max_calls=40,
         fault=_nan_below(0.5)),
    Case("sample-model-nan-ode", lambda i, m: _sample(i, m, solver="ode", steps=None), SolverDivergedError,
         ("non-finite", "returned non-finite values for a moderate input"), max_calls=200, fault=_nan_below(0.5)),
    Case("sample-model-nan-first-call", lambda i, m: _sample(i, m), ModelOutputError,
         ("returned non-finite values at t = 1", "check the model"), max_calls=1, fault=_nan_below(2.0)),
    Case("sample-chunk-size-zero", lambda i, m: _sample(i, m, chunk_size=0), ValueError, CHUNK),
    Case("sample-chunk-size-float", lambda i, m: _sample(i, m, chunk_size=2.5), TypeError, CHUNK),
    Case("sample-chunk-size-with-bm", lambda i, m: _sample(i, m, solver="srk", steps=None, chunk_size=2,
         bm=__import__("torchsde").BrownianInterval(0.0, 1.0, size=(8, 2))), ValueError,
         ("option bm is one Brownian motion", "drop chunk_size")),
    Case("sample-huge-steps", lambda i, m: _sample(i, m, steps=10**12), ValueError, HUGE),
    Case("sample-stiff-model-ode-budget", lambda i, m: _sample(i, m, solver="ode", steps=None, max_steps=200),
         SolverError, ("max_steps=200", "Raise max_steps=", "loosen rtol/atol"), max_calls=6 * 200 + 10,
         fault=lambda x, t, n: -1e6 * x),
    Case("sample-stiff-model-srk-budget", lambda i, m: _sample(i, m, solver="srk", steps=None, max_steps=100),
         SolverError, ("max_steps=100", "Raise max_steps="), max_calls=10 * 100 + 10,
         fault=lambda x, t, n: -x * (1 + 0.9 * torch.sin(2e4 * t[:, None]))),
    # ------------------------------------------------------------------ simulate
    Case("simulate-half-x0", lambda i, m: _simulate(i, steps=5), TypeError, ("x0", "x0.float()"),
         tensors=lambda: {"x0": _x(dtype=torch.float16)}),
    Case("simulate-nan-x0", lambda i, m: _simulate(i, x0=i.tensors["x0"] / 0 * 0, steps=5), ValueError,
         ("x0 contains NaN",), tensors=X0),
    Case("simulate-ts-decreasing", lambda i, m: _simulate(i, ts=[1.0, 0.5], steps=5), ValueError,
         ("ts", "increasing"), tensors=X0),
    Case("simulate-native-solver", lambda i, m: _simulate(i, solver="exp2", steps=5), SolverError,
         ("'exp2' is not one", "Choose one of euler"), tensors=X0),
    Case("simulate-misspelt-keyword", lambda i, m: _simulate(i, stpes=5), TypeError, ("stpes", "Did you mean 'steps'")),
    Case("simulate-huge-dt-steps", lambda i, m: _simulate(i, dt=1e-12), ValueError, ("dt=1e-12", *HUGE[1:]),
         tensors=X0),
    Case("simulate-negative-dt", lambda i, m: _simulate(i, dt=-0.1), ValueError, ("dt",), tensors=X0),
    # ------------------------------------------------------------------ logp
    Case("logp-int-data", lambda i, m: _logp(i, m, x=torch.ones(4, 2, dtype=torch.long)), TypeError,
         ("x must be a floating-point tensor",)),
    Case("logp-half-data", lambda i, m: _logp(i, m), TypeError, ("x has dtype torch.float16", "x.float()"),
         tensors=lambda: {"x": _x(dtype=torch.float16)}),
    Case("logp-nan-data", lambda i, m: _logp(i, m, x=i.tensors["x"] / 0 * 0), ValueError, ("x contains NaN",),
         tensors=X),
    Case("logp-trace", lambda i, m: _logp(i, m, trace="approx"), ValueError, ("trace", "approx", "hutchinson"),
         tensors=X),
    Case("logp-exact-trace-too-large", lambda i, m: _logp(i, m, trace="exact"), ValueError,
         ("trace='exact'", "1,025 > 1,024", "trace='hutchinson'"), tensors=lambda: {"x": _x(d=1025)}),
    Case("logp-n-probes", lambda i, m: _logp(i, m, trace="hutchinson", n_probes=0), ValueError, ("n_probes",),
         tensors=X),
    Case("logp-sde-solver", lambda i, m: _logp(i, m, solver="srk"), UnknownSolverError, ("srk",), tensors=X),
    Case("logp-fixed-grid-needs-steps", lambda i, m: _logp(i, m, solver="rk4"), ValueError, ("rk4", "steps"),
         tensors=X),
    Case("logp-non-affine-prior", lambda i, m: sdekit.logp(m, _Cubic(), i.tensors["x"]), NotAffineError,
         ("prior",), tensors=X),
    Case("logp-option-is-an-argument", lambda i, m: _logp(i, m, options={"rtol": 1e-3}), SolverError,
         ("'rtol'", "logp()"), tensors=X),
    Case("logp-huge-steps", lambda i, m: _logp(i, m, solver="rk4", steps=10**9), ValueError, HUGE,
         tensors=X),
    Case("logp-stiff-model-budget", lambda i, m: _logp(i, m, options={"max_num_steps": 100}), SolverError,
         ("max_num_steps']=100", "Raise options['max_num_steps']="), tensors=X,
         max_calls=2 * (6 * 100 + 10), fault=lambda x, t, n: -1e6 * x),
    Case("logp-chunk-size", lambda i, m: _logp(i, m, chunk_size=-1), ValueError, CHUNK, tensors=X),
    Case("logp-rtol-zero", lambda i, m: _logp(i, m, rtol=0.0), ValueError, ("rtol",), tensors=X),
    Case("logp-model-changes-shape", lambda i, m: _logp(i, m), ModelOutputError,
         ("must return a tensor shaped like x",), tensors=X, max_calls=3,
         fault=lambda x, t, n: -x[:, :1] if n >= 3 else None),
    # ------------------------------------------------------------------ losses
    Case("dsm-weighting", lambda i, m: losses.dsm(m, i.sde, i.tensors["x"], weighting="snr"), ValueError,
         ("weighting", "snr"), tensors=X),
    Case("dsm-half-data", lambda i, m: losses.dsm(m, i.sde, i.tensors["x"]), TypeError, ("x0", "x0.float()"),
         tensors=lambda: {"x": _x(dtype=torch.bfloat16)}),
    Case("dsm-model-shape", lambda i, m: losses.dsm(lambda x, t: x[:, :1], i.sde, i.tensors["x"]), ModelOutputError,
         ("must return a tensor shaped like x",), tensors=X),
    Case("ssm-projections", lambda i, m: losses.ssm(lambda x: -x, i.tensors["x"], n_projections=0), ValueError,
         ("n_projections",), tensors=X),
    Case("likelihood-bound-reduction", lambda i, m: losses.likelihood_bound(m, i.sde, i.tensors["x"], reduction="avg"),
         ValueError, ("reduction", "avg"), tensors=X),
    # ------------------------------------------------------------------ Langevin
    Case("langevin-step-size", lambda i, m: sdekit.langevin(lambda x: -x, i.tensors["x"], -0.1, 5), ValueError,
         ("step_size",), tensors=X),
    Case("langevin-n-steps", lambda i, m: sdekit.langevin(lambda x: -x, i.tensors["x"], 0.1, -1), ValueError,
         ("n_steps must be a non-negative integer",), tensors=X),
    Case("annealed-sigmas-increasing",
         lambda i, m: sdekit.annealed_langevin(lambda x, s: -x, i.tensors["x"], [0.1, 1.0], 0.01, 2), ValueError,
         ("sigmas",), tensors=X),
]  # fmt: skip


_PENDING: dict[str, str] = {}  # case name -> why it is expected to fail (none today)


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.xfail(reason=_PENDING[c.name], strict=True)) if c.name in _PENDING else c
     for c in CASES],
    ids=[c.name for c in CASES],
)  # fmt: skip
def test_bad_input(case: Case) -> None:
    inputs = Inputs(tensors=case.tensors())
    model = Counting(case.fault)
    before = inputs.snapshot()
    with pytest.raises(case.error) as info:
        case.run(inputs, model)
    message = str(info.value)
    missing = [w for w in case.words if w not in message]
    assert not missing, f"{missing} not in {message!r}"
    assert model.calls <= case.max_calls, f"{model.calls} model calls, at most {case.max_calls} expected"
    inputs.assert_unchanged(before, drew=case.max_calls > 0)


CLI_CASES = [
    (["demo", "--seed", "-1"], ("--seed", "expected an integer from 0")),
    (["demo", "--sedd", "1"], ("unrecognized arguments", "--sedd")),
    (["derive", "NoSuchSDE"], ("NoSuchSDE",)),
    (["solvers", "--frobnicate"], ("unrecognized arguments", "--frobnicate")),
    (["solvers", "--options", "eulr"], ("eulr", "Did you mean 'euler'")),
    (
        ["logp", "--model", "m:f", "--sde", "vp", "--data", "no-such.npy", "--out", "o.npy"],
        ("--data 'no-such.npy' does not exist", "pass a .npy file"),
    ),
    (["nosuchcommand"], ("invalid choice", "nosuchcommand")),
]


@pytest.mark.parametrize(("argv", "words"), CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_bad_command_line(argv: list[str], words: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        code = cli_main(argv)
        raise SystemExit(code)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    missing = [w for w in words if w not in err]
    assert not missing, f"{missing} not in {err!r}"


def test_the_catalogue_is_large_enough() -> None:
    assert len(CASES) + len(CLI_CASES) >= 40
