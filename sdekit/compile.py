r"""Compile sympy expressions into batched torch (or numpy) callables.

One function, :func:`compile_expr`, turns a sympy expression in the state
symbol ``x`` and the time symbol ``t`` into a callable ``fn(x, t)`` that
**always** returns a tensor broadcast to ``x.shape`` with ``x``'s dtype and
device, whatever the expression is (a constant, a function of ``t`` only, ...).
``t`` may be a Python number, a 0-d tensor or a tensor of shape ``(batch,)``.

:func:`compile_time_fn` does the same for expressions of ``t`` alone, returning
tensors shaped like ``t``.

The code generator is sdekit's own (not :func:`sympy.lambdify`) so that:

* constant sub-expressions (``sqrt(2)``, ``log(5000)``, ``Max(1, 2)``) are folded to
  float literals at compile time, so no torch function ever receives a Python scalar;
* ``Max``/``Min``/``Piecewise``/relationals/``And``/``Or`` map to
  ``torch.maximum``/``torch.minimum``/``torch.where``/``&``/``|``;
* ``c**u`` with a numeric base becomes ``exp(u * log c)`` and ``exp(u) - 1`` becomes
  ``expm1(u)``, which keeps variance schedules such as ``1 - exp(-B(t))`` accurate in
  float32 at tiny ``t``;
* a tabulated function of time (:class:`~sdekit.symbolic._tabulated.TabulatedLogAlphaBar`, a table of
  :math:`\log\bar\alpha` interpolated in log-SNR) and its first two derivatives become a batched lookup
  (``searchsorted`` on the knots, then the interpolation formula) on the argument's device and dtype, with no
  host synchronisation (:func:`sdekit.symbolic._tabulated.log_alpha_bar`).

The same generator emits numpy code (``namespace="numpy"``), used by the
numeric quadrature of marginals.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import sympy as sp
import torch

from .errors import SdekitError
from .symbolic._tabulated import TabulatedLogAlphaBar, log_alpha_bar

__all__ = [
    "compile_expr",
    "compile_time_fn",
    "compile_float_fn",
    "CompiledExpr",
    "CompiledTimeFn",
    "FloatFn",
    "expr_to_source",
]

FloatFn = Callable[[float], float]
"""A plain-float function of time (no tensors): per-step scalar coefficients of fixed-step loops."""

_FUNCS = {
    sp.exp: "exp",
    sp.log: "log",
    sp.sin: "sin",
    sp.cos: "cos",
    sp.tan: "tan",
    sp.sinh: "sinh",
    sp.cosh: "cosh",
    sp.tanh: "tanh",
    sp.asin: "asin",
    sp.acos: "acos",
    sp.atan: "atan",
    sp.asinh: "asinh",
    sp.acosh: "acosh",
    sp.atanh: "atanh",
    sp.erf: "erf",
    sp.erfc: "erfc",
    sp.Abs: "abs",
    sp.sign: "sign",
    sp.Heaviside: "heaviside",
}


class _TorchNS:
    """Functions the generated code calls (torch flavour). Arguments are tensors."""

    exp = staticmethod(torch.exp)
    expm1 = staticmethod(torch.expm1)
    log = staticmethod(torch.log)
    log1p = staticmethod(torch.log1p)
    sqrt = staticmethod(torch.sqrt)
    sin = staticmethod(torch.sin)
    cos = staticmethod(torch.cos)
    tan = staticmethod(torch.tan)
    sinh = staticmethod(torch.sinh)
    cosh = staticmethod(torch.cosh)
    tanh = staticmethod(torch.tanh)
    asin = staticmethod(torch.asin)
    acos = staticmethod(torch.acos)
    atan = staticmethod(torch.atan)
    asinh = staticmethod(torch.asinh)
    acosh = staticmethod(torch.acosh)
    atanh = staticmethod(torch.atanh)
    erf = staticmethod(torch.erf)
    erfc = staticmethod(torch.erfc)
    abs = staticmethod(torch.abs)
    sign = staticmethod(torch.sign)

    sigmoid = staticmethod(torch.sigmoid)

    @staticmethod
    def logsigmoid(u: torch.Tensor) -> torch.Tensor:
        # min(u, 0) - log1p(e^{-|u|}): exact for every u (torch's log_sigmoid measured ~1000x slower on the CPU)
        return torch.clamp(u, max=0) - torch.log1p(torch.exp(-torch.abs(u)))

    @staticmethod
    def heaviside(u: Any, h0: Any = 0.5) -> Any:
        return torch.where(u > 0, 1.0, torch.where(u < 0, 0.0, h0))

    @staticmethod
    def clip(u: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return torch.clamp(u, lo, hi)

    @staticmethod
    def searchsorted(knots: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(knots, t.contiguous().reshape(-1)).reshape(t.shape)

    @staticmethod
    def table(cls: type[TabulatedLogAlphaBar], t: Any, order: int) -> torch.Tensor:
        r""":math:`L^{(order)}(t)` of a tabulated :math:`\log\bar\alpha` (tables cached per dtype and device)."""
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=torch.float64)
        key = (cls.digest, t.dtype, t.device)
        tables = _TABLES.get(key)
        if tables is None:
            tables = tuple(torch.tensor(a, dtype=t.dtype, device=t.device) for a in (cls.knots, cls.log_snr))
            _TABLES[key] = tables
        return log_alpha_bar(_TorchNS, cls, tables, t, order)

    @staticmethod
    def where(cond: Any, a: Any, b: Any) -> Any:
        return torch.where(cond, a, b)

    @staticmethod
    def maximum(*args: Any) -> Any:
        return functools.reduce(_binary(torch.maximum), args)

    @staticmethod
    def minimum(*args: Any) -> Any:
        return functools.reduce(_binary(torch.minimum), args)


class _NumpyNS:
    """Functions the generated code calls (numpy flavour)."""

    exp = staticmethod(np.exp)
    expm1 = staticmethod(np.expm1)
    log = staticmethod(np.log)
    log1p = staticmethod(np.log1p)
    sqrt = staticmethod(np.sqrt)
    sin = staticmethod(np.sin)
    cos = staticmethod(np.cos)
    tan = staticmethod(np.tan)
    sinh = staticmethod(np.sinh)
    cosh = staticmethod(np.cosh)
    tanh = staticmethod(np.tanh)
    asin = staticmethod(np.arcsin)
    acos = staticmethod(np.arccos)
    atan = staticmethod(np.arctan)
    asinh = staticmethod(np.arcsinh)
    acosh = staticmethod(np.arccosh)
    atanh = staticmethod(np.arctanh)
    abs = staticmethod(np.abs)
    sign = staticmethod(np.sign)

    @staticmethod
    def erf(u: Any) -> Any:
        # lazy: scipy only when a numpy-compiled expression uses erf/erfc
        from scipy.special import erf

        return erf(u)

    @staticmethod
    def erfc(u: Any) -> Any:
        # lazy: scipy only when a numpy-compiled expression uses erf/erfc
        from scipy.special import erfc

        return erfc(u)

    @staticmethod
    def heaviside(u: Any, h0: Any = 0.5) -> Any:
        return np.heaviside(u, h0)

    @staticmethod
    def table(cls: type[TabulatedLogAlphaBar], t: Any, order: int) -> np.ndarray:
        r""":math:`L^{(order)}(t)` of a tabulated :math:`\log\bar\alpha`, float64."""
        return cls.numpy(t, order)

    @staticmethod
    def where(cond: Any, a: Any, b: Any) -> Any:
        return np.where(cond, a, b)

    @staticmethod
    def maximum(*args: Any) -> Any:
        return functools.reduce(np.maximum, args)

    @staticmethod
    def minimum(*args: Any) -> Any:
        return functools.reduce(np.minimum, args)


_TABLES: dict[tuple[str, torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}
"""Knots and log-SNR of each tabulated function as tensors, per (digest, dtype, device)."""


def _binary(op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if not isinstance(a, torch.Tensor):
            a, b = b, a
        if not isinstance(b, torch.Tensor):
            b = torch.as_tensor(b, dtype=a.dtype)  # 0-d CPU scalar tensors broadcast on any device
        return op(a, b)

    return apply


class _CodeGen:
    """Recursive sympy -> Python source translator."""

    def __init__(self, names: dict[sp.Symbol, str]):
        self.names = names
        self.tables: dict[str, type[TabulatedLogAlphaBar]] = {}

    def __call__(self, e: sp.Basic) -> str:
        if not e.free_symbols:
            return self._const(e)
        if isinstance(e, (TabulatedLogAlphaBar, sp.Derivative)):
            return self._table(e)
        if isinstance(e, sp.Symbol):
            if e not in self.names:
                raise SdekitError(f"cannot compile: unexpected free symbol {e!r} in the expression")
            return self.names[e]
        if isinstance(e, sp.Add):
            return self._add(e)
        if isinstance(e, sp.Mul):
            return "(" + " * ".join(self(a) for a in e.args) + ")"
        if isinstance(e, sp.Pow):
            return self._pow(e)
        if isinstance(e, sp.Piecewise):
            return self._piecewise(list(e.args))
        if isinstance(e, (sp.Max, sp.Min)):
            fn = "maximum" if isinstance(e, sp.Max) else "minimum"
            return f"_ns.{fn}(" + ", ".join(self(a) for a in e.args) + ")"
        if isinstance(e, sp.core.relational.Relational):
            return f"({self(e.lhs)} {e.rel_op} {self(e.rhs)})"
        if isinstance(e, sp.And):
            return "(" + " & ".join(self(a) for a in e.args) + ")"
        if isinstance(e, sp.Or):
            return "(" + " | ".join(self(a) for a in e.args) + ")"
        if isinstance(e, sp.Not):
            return f"(~{self(e.args[0])})"
        for klass, name in _FUNCS.items():
            if isinstance(e, klass):
                return f"_ns.{name}(" + ", ".join(self(a) for a in e.args) + ")"
        raise SdekitError(
            f"cannot compile {type(e).__name__} in {e}: supported are arithmetic, powers, "
            f"{', '.join(sorted(set(_FUNCS.values())))}, Max, Min, Piecewise and relationals"
        )

    def _table(self, e: sp.Basic) -> str:
        """``L(u)``, ``Derivative(L(t), t)`` or ``Derivative(L(t), (t, 2))`` of a tabulated function L."""
        order, inner = 0, e
        if isinstance(e, sp.Derivative):
            inner = e.expr
            ok = isinstance(inner, TabulatedLogAlphaBar) and len(e.variable_count) == 1
            var, order = e.variable_count[0]
            if not ok or var != inner.args[0] or order > 2:
                raise SdekitError(
                    f"cannot compile {e}: derivatives are compiled only for tabulated functions L(t), of order 1 or 2"
                )
        cls = type(inner)
        name = f"_tab{len(self.tables)}"
        for known, klass in self.tables.items():
            if klass is cls:
                name = known
        self.tables[name] = cls
        return f"_ns.table({name}, {self(inner.args[0])}, {int(order)})"

    def _const(self, e: sp.Basic) -> str:
        if e in (sp.true, sp.false):
            return "True" if e == sp.true else "False"
        value = complex(sp.N(e, 20))
        if value.imag != 0:
            raise SdekitError(f"cannot compile: the constant {e} is not real")
        v = value.real
        if math.isnan(v) or math.isinf(v):
            raise SdekitError(f"cannot compile: the constant {e} is not finite")
        return repr(v) if v >= 0 else f"({v!r})"

    def _add(self, e: sp.Add) -> str:
        # k e^{E(t)} + c with k e^{E(0)} = -c  ->  k e^{E(0)} expm1(E(t) - E(0)): accurate near
        # t = 0 (variance schedules such as 1 - exp(-B(t)) at tiny t, in float32 too).
        args = list(e.args)
        consts = [a for a in args if not a.free_symbols]
        rest = [a for a in args if a.free_symbols]
        if len(consts) == 1:
            c = float(sp.N(consts[0]))
            for i, a in enumerate(rest):
                coeff, core = a.as_independent(*a.free_symbols)
                core = sp.powsimp(core.rewrite(sp.exp), combine="exp")
                if not isinstance(core, sp.exp):
                    continue
                exponent = sp.expand(core.args[0])
                e0, _ = exponent.as_independent(*exponent.free_symbols, as_Add=True)
                scale = float(sp.N(coeff * sp.exp(e0)))
                if c != 0 and abs(scale + c) <= 1e-12 * abs(c):
                    others = rest[:i] + rest[i + 1 :]
                    term = f"({self._const(coeff * sp.exp(e0))} * _ns.expm1({self(exponent - e0)}))"
                    return "(" + " + ".join([term] + [self(o) for o in others]) + ")"
        return "(" + " + ".join(self(a) for a in args) + ")"

    def _pow(self, e: sp.Pow) -> str:
        base, ex = e.args
        if not base.free_symbols:  # c**u = exp(u log c)
            return self(sp.exp(ex * sp.log(base)))
        if ex == sp.Rational(1, 2):
            return f"_ns.sqrt({self(base)})"
        if ex == -sp.Rational(1, 2):
            return f"(1.0 / _ns.sqrt({self(base)}))"
        if ex.is_Integer:
            return f"({self(base)} ** {int(ex)})"
        return f"({self(base)} ** {self(ex)})"

    def _piecewise(self, pieces: list[tuple[sp.Basic, sp.Basic]]) -> str:
        (expr, cond), tail = pieces[0], pieces[1:]
        if cond == sp.true or not tail:
            return self(expr)
        return f"_ns.where({self(cond)}, {self(expr)}, {self._piecewise(tail)})"


def expr_to_source(expr: sp.Basic, names: dict[sp.Symbol, str]) -> str:
    """Python source of ``expr`` calling ``_ns.<fn>``; symbols are renamed by ``names``. (Tabulated functions
    appear as ``_tab<i>``, names that :func:`_build` binds.)"""
    return _CodeGen(names)(sp.sympify(expr))


def _build(expr: sp.Basic, symbols: Sequence[sp.Symbol], namespace: type) -> Callable[..., Any]:
    argnames = [f"_a{i}" for i in range(len(symbols))]
    gen = _CodeGen(dict(zip(symbols, argnames)))
    body = gen(sp.sympify(expr))
    src = f"def _compiled({', '.join(argnames)}):\n    return {body}\n"
    scope: dict[str, Any] = {"_ns": namespace, **gen.tables}
    exec(compile(src, f"<sdekit:{expr}>", "exec"), scope)
    fn = scope["_compiled"]
    fn.__sdekit_source__ = src
    return fn


def _time_tensor(t: Any, like: torch.Tensor) -> torch.Tensor:
    """t (number, 0-d or (batch,) tensor) as a tensor broadcastable against ``like``."""
    if not isinstance(t, torch.Tensor):
        return torch.as_tensor(t, dtype=like.dtype, device=like.device)
    t = t.to(dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        return t
    if t.ndim == 1 and like.ndim >= 1 and t.shape[0] in (like.shape[0], 1):
        return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))
    if t.numel() == 1:
        return t.reshape(())
    raise ValueError(
        f"t must be a number, a 0-d tensor or a tensor of shape (batch,) = ({like.shape[0]},); "
        f"got shape {tuple(t.shape)} for x of shape {tuple(like.shape)}"
    )


class CompiledExpr:
    r"""A compiled expression :math:`e(x, t)`; call as ``fn(x, t)``.

    Returns a tensor of ``x.shape`` with ``x``'s dtype and device (a broadcast,
    read-only view when the expression does not depend on ``x``).
    """

    def __init__(self, expr: sp.Basic, x: sp.Symbol, t: sp.Symbol):
        self.expr = sp.sympify(expr)
        unexpected = self.expr.free_symbols - {x, t}
        if unexpected:
            raise SdekitError(f"cannot compile {self.expr}: free symbols {sorted(map(str, unexpected))} besides x, t")
        self.depends_on_x = x in self.expr.free_symbols
        self.depends_on_t = t in self.expr.free_symbols
        self.constant: float | None = None
        if not self.expr.free_symbols:
            self.constant = float(expr_to_source(self.expr, {}).strip("()"))
            self._fn = None
        else:
            self._fn = _build(self.expr, [x, t], _TorchNS)
        self._np = None
        self._syms = (x, t)

    def __call__(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        if self._fn is None:
            return torch.full_like(x, self.constant)
        out = self._fn(x, _time_tensor(t, x))
        return out if out.shape == x.shape else out.expand(x.shape)

    def numpy(self, x: np.ndarray | float, t: np.ndarray | float) -> np.ndarray:
        """Evaluate with numpy (float64), broadcasting ``x`` and ``t``."""
        if self._np is None:
            self._np = _build(self.expr, list(self._syms), _NumpyNS)
        shape = np.broadcast(np.asarray(x), np.asarray(t)).shape
        return np.broadcast_to(np.asarray(self._np(np.asarray(x, float), np.asarray(t, float)), float), shape)

    def __repr__(self) -> str:
        return f"CompiledExpr({self.expr})"


class CompiledTimeFn:
    r"""A compiled expression :math:`e(t)` of time only; call as ``fn(t)``.

    ``t`` may be a number (then ``dtype``/``device`` choose the result, default
    float64 on the CPU) or a tensor of any shape (the result has its shape, dtype and
    device).
    """

    def __init__(self, expr: sp.Basic, t: sp.Symbol):
        self.expr = sp.sympify(expr)
        unexpected = self.expr.free_symbols - {t}
        if unexpected:
            raise SdekitError(
                f"cannot compile {self.expr} as a function of t: free symbols {sorted(map(str, unexpected))}"
            )
        self.constant = None if self.expr.free_symbols else float(expr_to_source(self.expr, {}).strip("()"))
        self._fn = None if self.constant is not None else _build(self.expr, [t], _TorchNS)
        self._np = None
        self._t = t

    def __call__(self, t: Any, *, dtype: torch.dtype | None = None, device: Any = None) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=dtype or torch.float64, device=device)
        elif not t.is_floating_point():
            t = t.to(dtype or torch.get_default_dtype())
        if self._fn is None:
            return torch.full_like(t, self.constant)
        out = self._fn(t)
        return out if out.shape == t.shape else out.expand(t.shape)

    def numpy(self, t: np.ndarray | float) -> np.ndarray:
        """Evaluate with numpy in float64."""
        t = np.asarray(t, dtype=float)
        if self.constant is not None:
            return np.full(t.shape, self.constant)
        if self._np is None:
            self._np = _build(self.expr, [self._t], _NumpyNS)
        return np.broadcast_to(np.asarray(self._np(t), float), t.shape)

    def __repr__(self) -> str:
        return f"CompiledTimeFn({self.expr})"


def compile_expr(expr: sp.Basic, x: sp.Symbol, t: sp.Symbol) -> CompiledExpr:
    """Compile ``expr(x, t)`` (parameters already substituted) to a broadcasting torch callable."""
    return CompiledExpr(expr, x, t)


def compile_time_fn(expr: sp.Basic, t: sp.Symbol) -> CompiledTimeFn:
    """Compile ``expr(t)`` (parameters already substituted) to a torch callable of time."""
    return CompiledTimeFn(expr, t)


def compile_float_fn(expr: sp.Basic, t: sp.Symbol, probe: float) -> FloatFn | None:
    r"""Compile ``expr(t)`` to a plain-float closure with Python's ``math`` module, or None.

    About 1 us a call against ~10 us for a 0-d tensor operation: for coefficients that a solver loop
    needs once per step as numbers (:math:`a(t)`, :math:`g(t)`, :math:`\alpha(t)`, ...). None when the
    expression has no ``math``-module form (e.g. an unevaluated integral) or is not a finite real number
    at ``probe``; callers then evaluate the tensor version (:func:`compile_time_fn`).
    """
    try:
        fn = sp.lambdify(t, expr, modules="math")
        value = fn(probe)
    except Exception:
        return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return fn
