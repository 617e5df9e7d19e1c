r"""The :class:`SDE` base class: a forward SDE declared symbolically.

.. math::
    dx = f(x, t)\,dt + g(x, t)\,dW_t, \qquad t \in [0, T],

acting elementwise (diagonal noise) on every coordinate of a tensor of shape
``(batch, *event_shape)``. Subclasses declare numeric parameters as class
attributes and return sympy expressions from :meth:`SDE.drift` and
:meth:`SDE.diffusion`; everything else is derived (see ``sdekit.symbolic.derive``).
"""

from __future__ import annotations

import copy
import functools
import math
import numbers
from typing import TYPE_CHECKING, Any, ClassVar

import sympy as sp

from .. import _vector
from .._coefficients import AffineCoefficients, FloatCoefficients
from .._dynamics import ProbabilityFlowODE, ReverseSDE
from .._marginal import GaussianMarginal
from ..compile import CompiledExpr, compile_expr, compile_float_fn, compile_time_fn
from ..errors import NotAffineError, SDEDeclarationError, SdekitError
from . import _components, derive
from ._cache import cached_derivation
from ._symbols import t as T_SYM
from ._symbols import x as X_SYM

if TYPE_CHECKING:  # pragma: no cover
    from .._marginal import Discretization, GaussianPrior
    from .._vector_discrete import VectorDiscretization

__all__ = ["SDE"]

_RESERVED = frozenset({"T", "default_eps", "components", "data_components"})
_SYMBOLIC_CACHE: dict[tuple[type, tuple[tuple[str, int], ...]], dict[str, Any]] = {}


def _is_numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):
        return math.isfinite(float(value))
    if isinstance(value, sp.Basic):
        return bool(value.is_number) and value.is_real is not False and sp.N(value).is_finite is True
    return False


def _is_data_attribute(value: Any) -> bool:
    return not (callable(value) or isinstance(value, (property, staticmethod, classmethod, functools.cached_property)))


def _declared_parameters(cls: type) -> dict[str, Any]:
    """Public data class attributes of ``cls`` (below :class:`SDE`), nearest class first."""
    found: dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass is SDE or klass is object:
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in _RESERVED or name in found or not _is_data_attribute(value):
                continue
            found[name] = value
    return found


def _members() -> frozenset[str]:
    """Public names of :class:`SDE` itself (methods, properties, derived members): a parameter must not replace one."""
    return frozenset(n for n in dir(SDE) if not n.startswith("_")) - _RESERVED | {"f", "g"}


def _probe_points(T: float) -> tuple[Any, Any]:
    """(x, t) for the declaration-time probe of the compiled f and g: 4 states at 4 times in (0, T], float64."""
    # lazy: torch is loaded by the compiler anyway; imported here to keep this module's top light
    import torch

    x = torch.tensor([[0.5], [-1.5], [0.0], [2.0]], dtype=torch.float64)
    t = torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64) * T
    return x, t


def _sign(value: Any) -> int:
    v = float(sp.N(value)) if isinstance(value, sp.Basic) else float(value)
    return (v > 0) - (v < 0)


def _symbol(name: str, sign: int) -> sp.Symbol:
    if sign > 0:
        return sp.Symbol(name, positive=True)
    if sign < 0:
        return sp.Symbol(name, negative=True)
    return sp.Symbol(name, real=True)


def _vanishes(g: sp.Expr) -> bool:
    """Whether g (parameters substituted) is identically zero: a cheap numeric screen, then ``simplify``."""
    if g.is_zero:
        return True
    for xv, tv in ((0.37, 0.31), (-1.3, 0.77), (2.1, 0.05)):
        try:
            value = complex(g.subs({X_SYM: xv, T_SYM: tv}).evalf())
        except (TypeError, ValueError):  # not a number there (e.g. undefined): not evidence of zero
            return False
        if value != 0:
            return False
    return sp.simplify(g) == 0


class SDE:
    r"""A forward SDE :math:`dx = f(x, t)\,dt + g(x, t)\,dW` declared symbolically.

    Declare parameters as class attributes with numeric defaults (override them per
    instance with keywords), the horizon ``T`` (default 1; ``T=`` and ``default_eps=`` may also be passed per
    instance) and the two methods
    ``drift(self, x, t)`` and ``diffusion(self, x, t)`` returning sympy expressions.
    Inside these methods ``self.<param>`` is a sympy symbol; on the instance it is
    the numeric value. Attributes whose name starts with ``_`` are not parameters.

    Example::

        class TimeVaryingOU(sdekit.SDE):
            theta = 1.0
            sigma = 0.5

            def drift(self, x, t):
                return -self.theta * (1 + t) * x

            def diffusion(self, x, t):
                return self.sigma * sp.sqrt(1 + t)

        sde = TimeVaryingOU(theta=2.0)
        sde.marginal.alpha_expr        # exp(-theta*t*(t + 2)/2)

    Derived members (never written per SDE): :attr:`f`, :attr:`g`, :attr:`is_affine`,
    :attr:`noise_type`, :attr:`drift_fn`, :attr:`diffusion_fn`, :attr:`marginal`,
    :attr:`prior`, :meth:`reverse`, :meth:`probability_flow`, :meth:`fokker_planck`,
    :meth:`discretize`, :meth:`latex`.

    Raises:
        SDEDeclarationError: at construction, for a missing method, a result that is
            not a sympy expression, unknown free symbols, a diffusion identically zero,
            an unknown keyword, a non-numeric parameter, ``T <= 0`` or ``default_eps`` outside (0, T).
    """

    T: ClassVar[float] = 1.0
    """Horizon: the SDE runs on [0, T]."""

    default_eps: ClassVar[float] = 1e-3
    """Default smallest time for sampling and likelihoods (the SDE is not run down to 0)."""

    components: ClassVar[tuple[str, ...] | None] = None
    """Names of the k components of a k-component SDE (``("x", "v")``; docs/architecture.md); None: scalar SDE."""

    data_components: ClassVar[tuple[str, ...] | None] = None
    """k-component SDEs: the components that hold data (default: all); the others start from
    :meth:`initial_covariance` (CLD: ``("x",)``, the velocity starts from N(0, gamma M))."""

    def __init__(self, **overrides: Any) -> None:
        cls = type(self)
        for method in ("drift", "diffusion"):
            if getattr(cls, method) is getattr(SDE, method):
                raise SDEDeclarationError(
                    f"{cls.__name__} does not define {method}(self, x, t); declare it and return a "
                    f"sympy expression in x, t and the parameters"
                )
        declared = _declared_parameters(cls)
        values: dict[str, Any] = {}
        shadowing = sorted(set(declared) & _members())
        if shadowing:
            name = shadowing[0]
            raise SDEDeclarationError(
                f"{cls.__name__}.{name} = {declared[name]!r} replaces the SDE member {name!r} "
                f"(sdekit.SDE.{name}), which sdekit needs; rename the parameter, e.g. to {name}_ or {name}0"
            )
        for name, value in declared.items():
            if not _is_numeric(value):
                raise SDEDeclarationError(
                    f"{cls.__name__}.{name} = {value!r} is not a finite real number; parameters are public class "
                    f"attributes with numeric defaults (rename it to _{name} if it is not a parameter)"
                )
            values[name] = value
        horizon = overrides.pop("T", cls.T)
        eps = overrides.pop("default_eps", cls.default_eps)
        for name, value in overrides.items():
            if name not in values:
                close = ", ".join(sorted(values)) or "none"
                raise SDEDeclarationError(
                    f"{cls.__name__} got an unknown keyword {name!r}; its parameters are: {close} (and T, default_eps)"
                )
            if not _is_numeric(value):
                raise SDEDeclarationError(
                    f"parameter {name}={value!r} of {cls.__name__} is not a finite real number; pass a float, "
                    f"an int or an exact sympy number such as sympy.sqrt(2)"
                )
            values[name] = value
        for name in ("x", "t"):
            if name in values:
                raise SDEDeclarationError(f"{cls.__name__} declares a parameter named {name!r}; x and t are reserved")
        if not _is_numeric(horizon) or float(horizon) <= 0:
            raise SDEDeclarationError(f"{cls.__name__}: the horizon T must be a positive number, got T={horizon!r}")
        self.T = float(horizon)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < self.T:
            raise SDEDeclarationError(
                f"{cls.__name__}: default_eps must be a number with 0 < default_eps < T = {self.T:g}, got {eps!r} "
                f"(it is the smallest time sampling runs to; 1e-3 is the usual choice)"
            )
        if eps != cls.default_eps:
            self.default_eps = float(eps)  # type: ignore[misc]  # a per-instance value (keyword default_eps=)
        self._values = values
        for name, value in values.items():
            setattr(self, name, value)
        signs = tuple((name, _sign(v)) for name, v in values.items())
        self._symbols = {name: _symbol(name, sign) for name, sign in signs}
        self._cache_key = (cls, signs, self._declaration_data())
        if cls.components is not None:  # k components: sdekit._vector declares, checks and compiles
            _vector.declare(self, _SYMBOLIC_CACHE)
            return
        sym = self._symbolic()
        self.f: sp.Expr = sym["f"]
        self.g: sp.Expr = sym["g"]
        if _vanishes(self.subs(self.g)):
            raise SDEDeclarationError(
                f"{self!r}: the diffusion g = {self.g} is identically zero for these parameter values (that is an "
                f"ODE, not an SDE); choose parameters with non-zero noise"
            )
        self._compile_declaration()

    def _compile_declaration(self) -> None:
        """Compile f and g now (kept as :attr:`drift_fn` / :attr:`diffusion_fn`) and evaluate them at
        :func:`_probe_points`, so that an expression the compiler cannot translate, or one of t alone that is NaN/inf
        at every probe time (``sqrt(t - 2)`` on [0, 1]), fails at declaration with the expression named, not at the
        first solve. (Expressions in x are not judged by the probe: the state's domain may be anything, e.g. x > 4.)"""
        cls = type(self).__name__
        x, t = _probe_points(self.T)
        for method, expr, attr in (("drift", self.f, "drift_fn"), ("diffusion", self.g, "diffusion_fn")):
            try:
                fn = compile_expr(self.subs(expr), X_SYM, T_SYM)
                values = fn(x, t)
            except SdekitError as err:
                raise SDEDeclarationError(
                    f"{cls}.{method} = {expr} cannot be compiled to torch code: {err}; rewrite it with those functions"
                ) from err
            if not fn.depends_on_x and not bool(values.isfinite().any()):  # x's domain may be anything (x > 4)
                raise SDEDeclarationError(
                    f"{cls}.{method} = {expr} is not finite (NaN or inf) at any of the times t = T/4, T/2, 3T/4, T "
                    f"with T = {self.T:g}; check its domain (sqrt and log of negative numbers, division by zero)"
                )
            self.__dict__[attr] = fn

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the declaration, not the derived members: compiled functions are generated code that
        cannot be pickled, and every ``functools.cached_property`` is rebuilt on first use after loading
        (the symbolic derivations come back from the in-process and on-disk caches)."""
        derived = {
            name for klass in type(self).__mro__ for name, v in vars(klass).items()
            if isinstance(v, functools.cached_property)
        }  # fmt: skip
        return {k: v for k, v in self.__dict__.items() if k not in derived}

    # ----------------------------------------------------------------- declaration
    def _declaration_data(self) -> tuple[Any, ...]:
        """What the declaration depends on besides the class and its parameters' signs (hashable): the symbolic
        work is shared by every instance with the same key. Empty for SDEs declared by formulas; an SDE declared
        from data (:class:`~sdekit.DiscreteVPSDE`'s table) returns a digest of it."""
        return ()

    def drift(self, x: sp.Symbol, t: sp.Symbol) -> sp.Expr:
        """Drift f(x, t) as a sympy expression (override in subclasses)."""
        raise NotImplementedError

    def initial_covariance(self) -> Any:
        """k-component SDEs: the k x k covariance of the initial law of the non-data components (mean 0), with
        parameter values; None (default): zero. CLD: ``diag(0, gamma M)``."""
        return None

    def diffusion(self, x: sp.Symbol, t: sp.Symbol) -> sp.Expr:
        """Diffusion g(x, t) as a sympy expression (override in subclasses)."""
        raise NotImplementedError

    @classmethod
    def from_expressions(
        cls, drift: str | sp.Expr, diffusion: str | sp.Expr, *, T: float = 1.0, name: str = "CustomSDE", **params: Any
    ) -> SDE:
        """Declare an SDE in one line from two expressions in ``x``, ``t`` and the named parameters.

        Example: ``SDE.from_expressions("-theta*x", "sigma", theta=1.0, sigma=0.5, T=1.0)``.
        """
        local = {"x": X_SYM, "t": T_SYM, **{p: sp.Symbol(p) for p in params}}

        def parse(text: str | sp.Expr, what: str) -> sp.Expr:
            try:
                return sp.sympify(text, locals=local) if isinstance(text, str) else text
            except (sp.SympifyError, SyntaxError, TypeError) as err:
                raise SDEDeclarationError(f"cannot parse the {what} {text!r} as a sympy expression: {err}") from err

        f_expr, g_expr = parse(drift, "drift"), parse(diffusion, "diffusion")
        attrs: dict[str, Any] = dict(params)
        attrs["T"] = T
        attrs["__doc__"] = f"dx = ({f_expr}) dt + ({g_expr}) dW"
        attrs["drift"] = lambda self, x, t: f_expr
        attrs["diffusion"] = lambda self, x, t: g_expr
        return type(name, (cls,), attrs)()

    def _symbolic(self) -> dict[str, Any]:
        cached = _SYMBOLIC_CACHE.get(self._cache_key)
        if cached is None:
            cached = {"f": self._evaluate("drift"), "g": self._evaluate("diffusion")}
            if sp.simplify(cached["g"]) == 0:
                raise SDEDeclarationError(
                    f"{type(self).__name__}.diffusion is identically zero: that is an ODE, not an SDE; "
                    f"return a non-zero expression"
                )
            _SYMBOLIC_CACHE[self._cache_key] = cached
        return cached

    def _shared(self) -> dict[str, Any]:
        """The symbolic work shared by every instance with this cache key (re-seeded from :attr:`f` and :attr:`g` in a
        process that unpickled the SDE without declaring it)."""
        return _SYMBOLIC_CACHE.setdefault(self._cache_key, {"f": self.f, "g": self.g})

    def _evaluate(self, method: str) -> sp.Expr:
        view = copy.copy(self)
        for name, symbol in self._symbols.items():
            setattr(view, name, symbol)
        cls = type(self).__name__
        try:
            result = getattr(type(self), method)(view, X_SYM, T_SYM)
        except AttributeError as err:
            raise SDEDeclarationError(
                f"{cls}.{method} failed with {err}; declare every parameter it uses as a class attribute "
                f"with a numeric default"
            ) from err
        except Exception as err:
            raise SDEDeclarationError(
                f"{cls}.{method}(x, t) raised {type(err).__name__}: {err}. It receives sympy symbols and must "
                f"return a sympy expression (use sympy functions such as sympy.exp, not math or torch)"
            ) from err
        known = {"x": X_SYM, "t": T_SYM} | self._symbols
        return _components.declared_expression(
            result, known, returned=f"{cls}.{method} returned", named=f"{cls}.{method} =",
            allowed=f"x, t and the declared parameters ({', '.join(self._symbols) or 'none'})",
        )  # fmt: skip

    # ----------------------------------------------------------------- basic derived
    @property
    def params(self) -> dict[str, Any]:
        """Parameter values by name (as given: floats, ints or exact sympy numbers)."""
        return dict(self._values)

    @property
    def symbols(self) -> dict[str, sp.Symbol]:
        """Parameter symbols by name, as they appear in :attr:`f`, :attr:`g` and derived expressions."""
        return dict(self._symbols)

    def subs(self, expr: sp.Expr) -> sp.Expr:
        """Substitute this instance's parameter values into a symbolic expression."""
        return sp.sympify(expr).subs({self._symbols[n]: sp.sympify(v) for n, v in self._values.items()})

    @functools.cached_property
    def _affine(self) -> derive.AffineParts:
        cached = self._shared()
        if "affine" not in cached:
            cached["affine"] = (
                derive.affine_parts(self.f, self.g) if self.components is None
                else _components.affine_parts(self.f, self.g, self.state_symbols)
            )  # fmt: skip
        return cached["affine"]

    @property
    def is_affine(self) -> bool:
        """True when f is affine in x and g does not depend on x (Gaussian kernels exist)."""
        return self._affine.reason is None

    @functools.cached_property
    def noise_type(self) -> str:
        """``"additive"`` when g does not depend on x, else ``"diagonal"`` (decided once per class and signs)."""
        cached = self._shared()
        if "noise_type" not in cached and self.components is not None:
            cached["noise_type"] = _components.noise_type(self.g, self.state_symbols)
        if "noise_type" not in cached:
            cached["noise_type"] = "diagonal" if derive.depends_on_x(self.g) else "additive"
        return cached["noise_type"]

    @functools.cached_property
    def dg2_dx(self) -> sp.Expr:
        r"""Symbolic :math:`\partial_x g(x, t)^2` (zero for additive noise)."""
        return sp.simplify(sp.diff(self.g**2, X_SYM))

    @functools.cached_property
    def drift_fn(self) -> CompiledExpr:
        """Compiled f: ``drift_fn(x, t)`` returns a tensor of ``x.shape``; t scalar or (batch,). (k components:
        a :class:`~sdekit._compile_vector.CompiledVector`, X of shape (batch, k, *event_shape).)"""
        if self.components is not None:
            return _vector.drift_fn(self)
        return compile_expr(self.subs(self.f), X_SYM, T_SYM)

    @functools.cached_property
    def diffusion_fn(self) -> CompiledExpr:
        """Compiled g: ``diffusion_fn(x, t)`` returns a tensor of ``x.shape``; t scalar or (batch,). (k components:
        a :class:`~sdekit._compile_vector.CompiledMatrix`: G of shape (batch, k, m, *event_shape), ``.matvec``.)"""
        if self.components is not None:
            return _vector.diffusion_fn(self)
        return compile_expr(self.subs(self.g), X_SYM, T_SYM)

    @functools.cached_property
    def dg2_dx_fn(self) -> CompiledExpr:
        r"""Compiled :math:`\partial_x g^2` (the divergence term of the reverse SDE)."""
        return compile_expr(self.subs(self.dg2_dx), X_SYM, T_SYM)

    @functools.cached_property
    def affine_coefficients(self) -> AffineCoefficients:
        r"""Compiled :math:`a(t), b(t), g(t), g^2`, and the score's coefficients :math:`r = -g^2` (reverse drift)
        and :math:`k = -g^2/2` (probability-flow drift) of an affine SDE, as tensor functions of time and, where
        possible, plain-float closures (:class:`sdekit._coefficients.AffineCoefficients`). What solvers and the
        likelihood need from the declaration, derived and compiled once per instance. Raises
        :class:`~sdekit.errors.NotAffineError` for a non-affine SDE.
        """
        self._require_affine("affine coefficients")
        if self.components is not None:
            raise SdekitError(f"{self!r} has k components: affine_coefficients are scalar; use sde.marginal")
        parts = self._affine
        reverse_scale, flow_scale = derive.score_scales(self.f, self.g)
        exprs = [self.subs(e) for e in (parts.a, parts.b, self.g, self.g**2, reverse_scale, flow_scale)]
        a, b, g, g2, r, k = (compile_time_fn(e, T_SYM) for e in exprs)
        probe = 0.5 * float(self.T)
        floats = [compile_float_fn(e, T_SYM, probe) for e in (exprs[0], exprs[1], exprs[2], exprs[4], exprs[5])]
        return AffineCoefficients(
            a, b, g, g2, r, k, FloatCoefficients(*floats) if all(fn is not None for fn in floats) else None
        )

    # ----------------------------------------------------------------- Gaussian kernel
    def _require_affine(self, what: str) -> None:
        if not self.is_affine:
            raise NotAffineError(
                f"{type(self).__name__} has no {what}: {self._affine.reason}. Marginals, priors, "
                f"discretizations and exponential integrators need f = a(t) x + b(t) and g = g(t)"
            )

    def _marginal_exprs(self) -> derive.MarginalExprs:
        self._require_affine("Gaussian marginal")
        cached = self._shared()
        if "marginal" not in cached:
            affine = self._affine
            cached["marginal"] = cached_derivation(
                "marginal", (self.f, self.g), lambda: derive.derive_marginal(affine, self.g), derive.MarginalExprs
            )
        return cached["marginal"]

    @functools.cached_property
    def marginal(self) -> GaussianMarginal:
        r"""Gaussian kernel :math:`p(x_t \mid x_0) = N(\alpha(t) x_0 + m(t), \sigma(t)^2 I)`.

        Closed form where sympy integrates the moment ODEs, accurate cached numeric
        quadrature otherwise. Raises :class:`~sdekit.errors.NotAffineError` for a
        non-affine SDE.
        """
        if self.components is not None:  # k components: VectorGaussianMarginal (alpha, offset, cov k x k)
            self._require_affine("Gaussian marginal")
            return _vector.marginal(self)
        return GaussianMarginal(self, self._marginal_exprs())

    @property
    def prior(self) -> GaussianPrior:
        r"""The Gaussian :math:`N(m(T), \sigma(T)^2 I)` used as the distribution of :math:`x_T`.

        Exact when the data are a point mass at 0; otherwise an approximation of
        :math:`p_T` (error shrinks with :math:`\alpha(T)`).
        """
        return self.marginal.prior

    def discretize(self, n: int, **kwargs: Any) -> Discretization | VectorDiscretization:
        """Exact per-step Gaussian transitions of this continuous SDE on a grid of ``n`` steps (see
        :meth:`GaussianMarginal.discretize`); for VP/VE these are not DDPM's beta table or SMLD's noise levels
        (:class:`~sdekit.Discretization` gives the measured differences). k-component SDEs return a
        :class:`~sdekit.VectorDiscretization` (k x k transitions and the ancestral posterior)."""
        return self.marginal.discretize(n, **kwargs)

    # ----------------------------------------------------------------- reverse time
    def reverse(self, score: Any) -> ReverseSDE:
        r"""Anderson's reverse-time SDE for a score :math:`s(x, t) \approx \nabla_x \log p_t(x)`.

        .. math:: dx = [f - \partial_x(g^2) - g^2 s]\,dt + g\,d\bar W, \quad dt < 0.

        ``score`` is a callable ``score(x, t)`` (t of shape (batch,)) or a sympy
        expression in x and t (then ``.f`` and ``.g`` of the result are symbolic too).
        """
        return ReverseSDE(self, score) if self.components is None else _vector.VectorReverseSDE(self, score)

    def probability_flow(self, score: Any) -> ProbabilityFlowODE:
        r"""The probability-flow ODE :math:`dx/dt = f - \tfrac12 \partial_x(g^2) - \tfrac12 g^2 s`."""
        if self.components is not None:
            return _vector.VectorProbabilityFlowODE(self, score)
        return ProbabilityFlowODE(self, score)

    def sympify(self, expr: sp.Expr | str) -> sp.Expr:
        """A user's expression in this SDE's own symbols: a string, or a sympy expression written with
        ``sympy.Symbol("x")``, ``sympy.Symbol("t")`` or parameter names, is read with :data:`sdekit.x`,
        :data:`sdekit.t` and the SDE's parameter symbols (which carry sign assumptions, so a plain
        ``Symbol("x")`` is a different symbol to sympy and would be treated as a constant)."""
        names: dict[str, sp.Symbol] = {"x": X_SYM, "t": T_SYM, **self._symbols}
        names.update({s.name: s for s in getattr(self, "state_symbols", ())})
        if isinstance(expr, str):
            try:
                return sp.sympify(expr, locals=names)
            except (sp.SympifyError, SyntaxError, TypeError) as err:
                raise ValueError(f"cannot parse {expr!r} as a sympy expression: {err}") from err
        expr = sp.sympify(expr)
        renamed = {s: names[s.name] for s in expr.free_symbols if s.name in names and s != names[s.name]}
        return expr.xreplace(renamed) if renamed else expr

    def fokker_planck(self, p: sp.Expr | str) -> sp.Expr:
        r"""Fokker–Planck residual :math:`\partial_t p + \partial_x(f p) - \tfrac12\partial_x^2(g^2 p)`.

        ``p`` is a sympy expression (or a string) in x, t and parameter names, read by :meth:`sympify`;
        the residual is zero iff p solves the forward equation. Not simplified.
        """
        if self.components is not None:  # sum_i d_i(f_i p) - 1/2 sum_ij d_i d_j (D_ij p), D = G G^T
            return _components.fokker_planck(self.sympify(p), self.f, self.g, self.state_symbols)
        return derive.fokker_planck(self.sympify(p), self.f, self.g)

    # ----------------------------------------------------------------- display
    def latex(self) -> str:
        """LaTeX of the declared SDE and of what is derived from it."""
        if self.components is not None:
            return _vector.latex(self)
        L = sp.latex
        lines = [rf"dx = \left({L(self.f)}\right) dt + \left({L(self.g)}\right) dW_t,\quad t\in[0, {L(self.T)}]"]
        if self.is_affine:
            m = self.marginal
            lines.append(rf"\alpha(t) = {L(m.alpha_expr)}")
            if m.offset_expr != 0:
                lines.append(rf"m(t) = {L(m.offset_expr)}")
            lines.append(rf"\sigma(t)^2 = {L(m.sigma2_expr)}")
        s_ = sp.Symbol(r"s_\theta")
        lines.append(
            rf"\text{{reverse: }} dx = \left({L(derive.reverse_drift(self.f, self.g, s_))}\right) dt"
            rf" + \left({L(self.g)}\right) d\bar W_t"
        )
        lines.append(rf"\text{{PF-ODE: }} \frac{{dx}}{{dt}} = {L(derive.probability_flow_drift(self.f, self.g, s_))}")
        return "\\begin{aligned}" + r" \\ ".join(lines) + "\\end{aligned}"

    def _repr_latex_(self) -> str:
        return "$$" + self.latex() + "$$"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self._values.items())
        sep = ", " if args else ""
        eps = "" if self.default_eps == type(self).default_eps else f", default_eps={self.default_eps:g}"
        return f"{type(self).__name__}({args}{sep}T={self.T:g}{eps})"
