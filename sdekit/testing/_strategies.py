"""Hypothesis strategies of sdekit.testing: SDEs that print as their declaration, parameters, times, mixtures."""

from __future__ import annotations

import math
from typing import Any

import sympy as sp
import torch
from hypothesis import strategies as st

from ..analytic import GaussianMixture
from ..symbolic._symbols import t as T_SYM
from ..symbolic._symbols import x as X_SYM
from ..symbolic.sde import SDE, _declared_parameters

_F64 = torch.float64


# ====================================================================== readable SDEs
class _DeclaredSDE(SDE):
    """An :class:`SDE` made by :meth:`SDE.from_expressions` whose repr is that declaration."""

    _declaration: str = ""

    def __repr__(self) -> str:
        return self._declaration or super().__repr__()


_DECLARED: dict[tuple[str, str, float], SDE] = {}


def _declare(drift: sp.Expr, diffusion: sp.Expr, T: float = 1.0) -> SDE:
    """Build (or reuse: derivations are cached on the instance) the SDE declared by two expressions."""
    f_text, g_text = str(drift), str(diffusion)
    key = (f_text, g_text, T)
    if key not in _DECLARED:
        if len(_DECLARED) >= 1024:
            _DECLARED.clear()
        sde = _DeclaredSDE.from_expressions(f_text, g_text, T=T, name="DrawnSDE")
        horizon = "" if T == 1.0 else f", T={T!r}"
        sde._declaration = f"SDE.from_expressions({f_text!r}, {g_text!r}{horizon})"
        _DECLARED[key] = sde
    return _DECLARED[key]


def describe(sde: SDE) -> str:
    """One line naming ``sde``: its repr and, when that does not show them, its drift and diffusion."""
    text = repr(sde)
    if "from_expressions" in text:
        return text
    return f"{text} with f = {sde.subs(sde.f)}, g = {sde.subs(sde.g)}"


# ====================================================================== strategies
_NICE = [sp.Integer(1), sp.Integer(2), sp.Rational(1, 2), sp.Integer(3), sp.Rational(3, 2), sp.Rational(1, 4)]


def _coefficients() -> st.SearchStrategy[sp.Rational]:
    """Exact positive rationals in [1/10, 4]; shrinks towards 1 (readable, and symbolic checks can decide)."""
    return st.one_of(st.sampled_from(_NICE), st.integers(1, 40).map(lambda k: sp.Rational(k, 10)))


def affine_sdes(components: int = 1) -> st.SearchStrategy[SDE]:
    r"""Random affine SDEs: scalar ones (``components=1``, :func:`_scalar_affine_sdes`) or 2-component ones
    (``components=2``): :math:`f = c(t)(A_0 X + b_0)`, :math:`G = \sqrt{c(t)}\,G_0` with
    :math:`c \in \{1, 1 + c_1 t\}`, :math:`A_0` a companion matrix
    :math:`\begin{pmatrix}0 & 1\\ -\lambda_1\lambda_2 & -(\lambda_1 + \lambda_2)\end{pmatrix}` (CLD-like, noise
    only in v) or upper triangular :math:`\begin{pmatrix}-\lambda_1 & c\\ 0 & -\lambda_2\end{pmatrix}`, real
    distinct :math:`\lambda_i \in \{1/2, 1, 2, 3\}`, state-free :math:`G_0` (possibly singular, or 2 x 1),
    :math:`b_0 \in \{0, (0, g_2)\}`, and either every component data or ``data_components = ("x",)`` with
    :math:`v_0 \sim N(0, c_0)`. Only draws whose kernel covariance :math:`\Sigma(T/2)` is positive definite are kept
    (the noise reaches both components). They print as a :func:`component_sde` call. Each new draw costs a sympy
    derivation of ~1-3 s (cached on disk), so use a small ``max_examples``.
    """
    if components == 1:
        return _scalar_affine_sdes()
    if components != 2:
        raise ValueError(f"affine_sdes draws scalar (components=1) or 2-component SDEs, not components={components!r}")
    return _component_sdes().filter(_component_ok)


@st.composite
def _scalar_affine_sdes(draw: st.DrawFn) -> SDE:
    r"""Random affine SDEs :math:`f = a(t)x + b(t)`, :math:`g = g(t) > 0` whose marginals sympy derives in closed form.

    Families (all coefficients exact positive rationals, so symbolic checks decide exactly):

    * OU-like: :math:`a = -c_0`, :math:`b \in \{0, c_2, c_2 t\}`,
      :math:`g \in \{\sqrt{c_1 + c_2 t},\ c_1 e^{c_2 t},\ c_1 (1 + t)\}`;
    * VP-like: :math:`a = -\beta(t)/2`, :math:`g = \sqrt{c_2 \beta(t)}` with
      :math:`\beta \in \{c_0 + c_1 t^p\ (p = 1, 2, 3),\ c_0 e^{c_1 t}\}`;
    * VE-like: :math:`a = 0`, :math:`g \in \{c_1 e^{c_2 t},\ \sqrt{c_1 + c_2 t^2}\}`.

    Shrinks towards ``SDE.from_expressions('-x', 'sqrt(t + 1)')``.
    """
    tt, xx = T_SYM, X_SYM
    family = draw(st.sampled_from(["ou", "vp-poly", "vp-exp", "ve"]))  # first: shrinking simplifies it first
    c0, c1, c2 = draw(_coefficients()), draw(_coefficients()), draw(_coefficients())
    if family == "ou":
        b = draw(st.sampled_from([sp.S.Zero, c2, c2 * tt]))
        g = draw(st.sampled_from([sp.sqrt(c1 + c2 * tt), c1 * sp.exp(c2 * tt), c1 * (1 + tt)]))
        return _declare(-c0 * xx + b, g)
    if family == "ve":
        g = draw(st.sampled_from([c1 * sp.exp(c2 * tt), sp.sqrt(c1 + c2 * tt**2)]))
        return _declare(sp.S.Zero, g)
    rate = c0 + c1 * tt ** draw(st.sampled_from([1, 2, 3])) if family == "vp-poly" else c0 * sp.exp(c1 * tt)
    return _declare(-rate * xx / 2, sp.sqrt(c2 * rate))


# ====================================================================== k-component SDEs
_COMPONENT_SDES: dict[str, SDE] = {}


def component_sde(
    drift: tuple[str, ...],
    diffusion: str,
    *,
    components: tuple[str, ...] = ("x", "v"),
    data_components: tuple[str, ...] | None = None,
    initial_covariance: str | None = None,
    T: float = 1.0,
) -> SDE:
    """A k-component SDE declared by strings (drift: k expressions in the components and ``t``; diffusion and
    initial covariance: sympy matrix text such as ``"Matrix([[0, 0], [0, 1]])"``); its repr is this call, so a drawn
    example of :func:`affine_sdes` (``components=2``) can be pasted back. Instances are cached per declaration."""
    args = f"drift={tuple(drift)!r}, diffusion={diffusion!r}"
    if components != ("x", "v"):
        args += f", components={tuple(components)!r}"
    if data_components is not None:
        args += f", data_components={tuple(data_components)!r}"
    if initial_covariance is not None:
        args += f", initial_covariance={initial_covariance!r}"
    if T != 1.0:
        args += f", T={T!r}"
    call = f"component_sde({args})"
    if call not in _COMPONENT_SDES:
        local = {n: sp.Symbol(n, real=True) for n in components} | {"t": T_SYM, "Matrix": sp.Matrix}
        f = tuple(sp.sympify(e, locals=local) for e in drift)
        G = sp.sympify(diffusion, locals=local)
        C0 = None if initial_covariance is None else sp.sympify(initial_covariance, locals=local)
        attrs: dict[str, Any] = {
            "components": tuple(components),
            "data_components": None if data_components is None else tuple(data_components),
            "T": T,
            "drift": lambda self, *args: f,
            "diffusion": lambda self, *args: G,
            "initial_covariance": lambda self: C0,
            "__repr__": lambda self: call,
        }
        _COMPONENT_SDES[call] = type("DrawnComponentSDE", (SDE,), attrs)()
    return _COMPONENT_SDES[call]


_RATES = [sp.Rational(1, 2), sp.Integer(1), sp.Integer(2), sp.Integer(3)]


@st.composite
def _component_sdes(draw: st.DrawFn) -> SDE:
    r"""2-component affine SDEs :math:`f = c(t)(A_0 X + b_0)`, :math:`G = \sqrt{c(t)}\,G_0` with real, *distinct*
    eigenvalues :math:`-\lambda_1 \ne -\lambda_2` of :math:`A_0` (repeated ones, as CLD's, take sympy 10-30 s)."""
    l1, l2 = draw(st.lists(st.sampled_from(_RATES), min_size=2, max_size=2, unique=True))
    g1, g2 = draw(_coefficients()), draw(_coefficients())
    family = draw(st.sampled_from(["companion", "triangular"]))
    if family == "companion":  # CLD-like: noise only in v, v drives x
        A0 = sp.Matrix([[0, 1], [-l1 * l2, -(l1 + l2)]])
        G0 = sp.Matrix([[0, 0], [0, g1]])
    else:
        c = draw(st.sampled_from([sp.Integer(1), sp.Rational(1, 2), sp.Integer(-1)]))
        A0 = sp.Matrix([[-l1, c], [0, -l2]])
        G0 = draw(
            st.sampled_from(
                [sp.Matrix([[0, 0], [0, g1]]), sp.diag(g1, g2), sp.Matrix([[g1, 0], [g2, g1]]), sp.Matrix([g1, g2])]
            )
        )
    rate = draw(st.sampled_from([sp.S.One, 1 + draw(_coefficients()) * T_SYM]))
    b0 = draw(st.sampled_from([sp.zeros(2, 1), sp.Matrix([0, g2])]))
    x, v = sp.Symbol("x", real=True), sp.Symbol("v", real=True)
    f = rate * (A0 * sp.Matrix([x, v]) + b0)
    G = (sp.sqrt(rate) * G0) if rate != 1 else G0
    data = draw(st.sampled_from([None, ("x",)]))
    C0 = None if data is None else str(sp.diag(0, draw(st.sampled_from([sp.Rational(1, 25), sp.Integer(1)]))))
    return component_sde(tuple(str(e) for e in f), str(G), data_components=data, initial_covariance=C0)


def _component_ok(sde: SDE) -> bool:
    """The kernel covariance given the state is positive definite at T/2 (the noise reaches every component)."""
    try:
        return bool(torch.linalg.cholesky_ex(sde.marginal.cov(0.5 * sde.T))[1] == 0)
    except Exception:
        return False


@st.composite
def _nonaffine_sdes(draw: st.DrawFn) -> SDE:
    tt, xx = T_SYM, X_SYM
    c0, c1, c2, c3 = (draw(_coefficients()) for _ in range(4))
    rate = draw(st.sampled_from([c0, c0 * (1 + tt), c0 * sp.exp(-c1 * tt)]))
    bump = draw(
        st.sampled_from(
            [sp.S.Zero, c1 * sp.sin(xx), c1 * sp.tanh(xx), -c1 * xx**3, c1 * xx / (1 + xx**2), c1 * sp.cos(tt)]
        )
    )
    g_time = draw(st.sampled_from([c2, c2 * sp.sqrt(1 + tt), c2 * sp.exp(c3 * tt)]))
    g_space = draw(st.sampled_from([sp.S.One, sp.sqrt(1 + xx**2), (2 + sp.sin(xx)) / 2, 1 + c3 * sp.exp(-(xx**2))]))
    return _declare(-rate * xx + bump, g_time * g_space)


def sdes(affine: bool | None = None, components: int = 1) -> st.SearchStrategy[SDE]:
    r"""Random SDEs with smooth drifts and strictly positive diffusions from a small expression grammar.

    The drift is a dissipative linear part plus an optional smooth perturbation,
    :math:`f = -c_0 r(t)\,x + h(x, t)` with :math:`r \in \{1, 1 + t, e^{-c_1 t}\}` and
    :math:`h \in \{0,\ c_1\sin x,\ c_1\tanh x,\ -c_1 x^3,\ c_1 x/(1+x^2),\ c_1\cos t\}`;
    the diffusion is :math:`g = u(t)\,v(x) > 0` with :math:`u \in \{c_2, c_2\sqrt{1+t}, c_2 e^{c_3 t}\}` and
    :math:`v \in \{1,\ \sqrt{1+x^2},\ (2+\sin x)/2,\ 1 + c_3 e^{-x^2}\}`.

    Args:
        affine: ``True`` only :func:`affine_sdes`; ``False`` only the general grammar (which may still
            draw an affine SDE, e.g. :math:`h = 0, v = 1`); ``None`` (default) either.
        components: 1 (scalar SDEs), or 2: 2-component SDEs, affine only (``affine_sdes(components=2)``; there is
            no non-affine 2-component grammar yet).
    """
    if components != 1:
        if affine is False:
            raise ValueError("sdes(components=2) draws affine SDEs only; there is no non-affine k-component grammar")
        return affine_sdes(components)
    if affine is True:
        return affine_sdes()
    if affine is False:
        return _nonaffine_sdes()
    return st.one_of(affine_sdes(), _nonaffine_sdes())


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def _grid_problem(sde: SDE, n: int = 7) -> str | None:
    """Why ``sde`` is unusable on the grid of (x, t) in [-3, 3] x [0, T], or ``None``.

    Points where f or g is NaN are outside the SDE's domain (e.g. x < 0 for g = sigma sqrt(x)) and are skipped;
    at every grid time some x must be inside, f and g must be finite (not +-inf) there, and g must not vanish
    at every such point (g = sigma x is zero at x = 0 only, which is fine).
    """
    x = torch.linspace(-3.0, 3.0, n, dtype=_F64)
    g_nonzero = False
    for t in torch.linspace(0.0, sde.T, n, dtype=_F64):
        f, g = torch.broadcast_tensors(sde.drift_fn(x, t), sde.diffusion_fn(x, t))
        inside = ~(torch.isnan(f) | torch.isnan(g))
        if not inside.any():
            return f"f or g is NaN at every x in [-3, 3] at t = {float(t):g}"
        if not (torch.isfinite(f[inside]).all() and torch.isfinite(g[inside]).all()):
            return f"f or g is infinite at some x in [-3, 3] at t = {float(t):g}"
        g_nonzero = g_nonzero or bool((g[inside] != 0).any())
    if not g_nonzero:
        return "g is zero at every grid point (x, t) in [-3, 3] x [0, T]"
    return None


def parameters(
    sde_class: type[SDE], *, exact: bool = True, **strategies: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    r"""Valid keyword parameters for ``sde_class``: ``sde_class(**drawn)`` builds a usable SDE.

    Each declared parameter with default :math:`v \ne 0` is drawn as :math:`v\,e^u`,
    :math:`u \in [-\ln 2, \ln 2]` (same sign and order of magnitude, rounded to 4 significant digits;
    shrinks to the default); a zero default is drawn from [-1, 1]. With ``exact=True`` (default) values are
    exact sympy rationals (``sympy.Rational('0.1234')``), so the symbolic assertions prove their residuals
    zero instead of sampling them (with floats sympy cannot cancel and falls back to slow numeric checks).
    Pass ``name=strategy`` to override one. Draws are kept only if the instance builds and, on the grid
    :math:`[-3, 3] \times [0, T]`, f and g are finite wherever they are defined (NaN marks points outside the
    SDE's domain, e.g. :math:`x < 0` for :math:`g = \sigma\sqrt x`; every grid time needs some), g is not zero
    at every point (it may vanish at some, as :math:`g = \sigma x` does at 0), and, for affine SDEs,
    :math:`\alpha, \sigma` are finite with :math:`\sigma(T) > 0`.

    Example::

        @given(params=sdekit.testing.parameters(sdekit.VPSDE))
        def test_vp(params):
            sdekit.testing.assert_fokker_planck(sdekit.VPSDE(**params))
    """

    declared = _declared_parameters(sde_class)
    unknown = set(strategies) - set(declared)
    if unknown:
        raise ValueError(f"{sde_class.__name__} has no parameter(s) {sorted(unknown)}; it has {sorted(declared)}")
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name, default in declared.items():
        if name in strategies:
            fields[name] = strategies[name]
            continue
        v = float(default)
        if v == 0.0:
            draw = st.floats(-1.0, 1.0).map(_round)
        else:
            draw = st.floats(-math.log(2), math.log(2)).map(lambda u, v=v: _round(v * math.exp(u)))
        fields[name] = draw.map(lambda r: sp.Rational(str(r))) if exact else draw

    def valid(params: dict[str, Any]) -> bool:
        try:
            sde = sde_class(**params)
            if _grid_problem(sde) is not None:
                return False
            if sde.is_affine:
                tt = torch.tensor([0.5 * sde.T, sde.T], dtype=_F64)
                a, s = sde.marginal.alpha(tt), sde.marginal.sigma(tt)
                return bool(torch.isfinite(a).all() and torch.isfinite(s).all() and (s > 0).all())
        except Exception:
            return False
        return True

    return st.fixed_dictionaries(fields).filter(valid)


def times(sde: SDE, eps: float | None = None) -> st.SearchStrategy[float]:
    """Times in ``[eps, sde.T]`` (default ``eps = sde.default_eps``), as floats."""
    lo = sde.default_eps if eps is None else eps
    return st.floats(min_value=lo, max_value=sde.T, allow_nan=False)


def event_shapes(max_dims: int = 3, max_side: int = 4) -> st.SearchStrategy[tuple[int, ...]]:
    """Event shapes ``(d,)``, ``(c, h)``, ... with 1 to ``max_dims`` axes of size 1 to ``max_side``."""
    return st.lists(st.integers(1, max_side), min_size=1, max_size=max_dims).map(tuple)


class _ShownMixture(GaussianMixture):
    """A :class:`GaussianMixture` whose repr is the constructor call that rebuilds it."""

    _call: str = ""

    def __repr__(self) -> str:
        return self._call or super().__repr__()


@st.composite
def gaussian_mixtures(
    draw: st.DrawFn, dim: int | st.SearchStrategy[int] = 2, max_components: int = 3, diagonal: bool = True
) -> GaussianMixture:
    r"""Gaussian mixtures on :math:`\mathbb R^{d}`: 1 to ``max_components`` components, means in [-3, 3],
    standard deviations in [0.2, 2] (isotropic, or per-coordinate when ``diagonal``), weights in [0.1, 1]
    (normalised). Values are rounded to 3 decimals so the printed example is short.

    Args:
        dim: the event dimension d, or a strategy for it (e.g. ``st.integers(1, 4)``).
    """
    d = draw(dim) if isinstance(dim, st.SearchStrategy) else int(dim)
    k = draw(st.integers(1, max_components))
    num = st.floats(-3.0, 3.0).map(lambda v: round(v, 3))
    pos = st.floats(0.2, 2.0).map(lambda v: round(v, 3))
    means = [[draw(num) for _ in range(d)] for _ in range(k)]
    per_coord = diagonal and d > 1 and draw(st.booleans())
    stds = [[draw(pos) for _ in range(d)] for _ in range(k)] if per_coord else [draw(pos) for _ in range(k)]
    weights = [draw(st.floats(0.1, 1.0).map(lambda v: round(v, 3))) for _ in range(k)]
    mixture = _ShownMixture(means, stds, weights)
    mixture._call = f"GaussianMixture(means={means}, stds={stds}, weights={weights})"
    return mixture
