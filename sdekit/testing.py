r"""Property-test your own SDEs: hypothesis strategies, assertions and settings profiles.

Needs `hypothesis <https://hypothesis.readthedocs.io>`_ (``pip install sdekit[test]``); ``import sdekit``
itself does not. Everything here is public:

* **Strategies** (hypothesis ``SearchStrategy`` objects): :func:`affine_sdes`, :func:`sdes`,
  :func:`parameters`, :func:`times`, :func:`gaussian_mixtures`, :func:`event_shapes`. Drawn SDEs print as
  the declaration that rebuilds them, e.g. ``SDE.from_expressions('-x*(t + 1)', 'sqrt(2)')``, so a shrunk
  failing example can be pasted into a file.
* **Assertions** (raise ``AssertionError`` with a readable message, return the evidence on success):
  :func:`assert_fokker_planck`, :func:`assert_chapman_kolmogorov`, :func:`assert_reverse_consistent`,
  :func:`assert_samples_match`, :func:`assert_logp_matches`.
* **Profiles**: :func:`register_profiles` registers ``"ci"`` (derandomised, bounded) and ``"dev"``;
  :func:`load_profile` loads the one named by ``$HYPOTHESIS_PROFILE`` (default ``"ci"``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

try:
    from hypothesis import HealthCheck, settings
    from hypothesis import strategies as st
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sdekit.testing needs hypothesis: install it with `pip install sdekit[test]` (or `pip install hypothesis`)"
    ) from err

import sympy as sp
import torch

from .analytic import DiffusedGaussianMixture, GaussianMixture
from .symbolic._symbols import t as T_SYM
from .symbolic._symbols import x as X_SYM
from .symbolic.checks import CheckResult, chapman_kolmogorov, kernel_fokker_planck
from .symbolic.sde import SDE

__all__ = [
    "affine_sdes",
    "sdes",
    "parameters",
    "times",
    "gaussian_mixtures",
    "event_shapes",
    "assert_fokker_planck",
    "assert_chapman_kolmogorov",
    "assert_reverse_consistent",
    "assert_samples_match",
    "assert_logp_matches",
    "SamplesMatch",
    "register_profiles",
    "load_profile",
    "describe",
]

_F64 = torch.float64


# ====================================================================== profiles
def register_profiles() -> None:
    """Register the hypothesis settings profiles ``"ci"`` and ``"dev"`` (idempotent).

    * ``"ci"``: ``derandomize=True`` (the same examples on every run, so CI is reproducible),
      ``max_examples=30``, no deadline (sympy derivations take 0.1–3 s), ``print_blob=True``.
    * ``"dev"``: random examples, ``max_examples=50``, no deadline.

    Both suppress the ``too_slow`` health check (building an SDE runs sympy). A test's own
    ``@settings(max_examples=...)`` still overrides the profile.
    """
    common: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
    base = settings.get_profile("default")  # not whatever profile is loaded now
    settings.register_profile("ci", base, derandomize=True, max_examples=30, print_blob=True, **common)
    settings.register_profile("dev", base, max_examples=50, **common)


def load_profile(name: str | None = None) -> str:
    """Register the profiles and load ``name`` (default ``$HYPOTHESIS_PROFILE``, else ``"ci"``); return its name."""
    register_profiles()
    name = name or os.environ.get("HYPOTHESIS_PROFILE", "ci")
    settings.load_profile(name)
    return name


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


@st.composite
def affine_sdes(draw: st.DrawFn) -> SDE:
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


def sdes(affine: bool | None = None) -> st.SearchStrategy[SDE]:
    r"""Random SDEs with smooth drifts and strictly positive diffusions from a small expression grammar.

    The drift is a dissipative linear part plus an optional smooth perturbation,
    :math:`f = -c_0 r(t)\,x + h(x, t)` with :math:`r \in \{1, 1 + t, e^{-c_1 t}\}` and
    :math:`h \in \{0,\ c_1\sin x,\ c_1\tanh x,\ -c_1 x^3,\ c_1 x/(1+x^2),\ c_1\cos t\}`;
    the diffusion is :math:`g = u(t)\,v(x) > 0` with :math:`u \in \{c_2, c_2\sqrt{1+t}, c_2 e^{c_3 t}\}` and
    :math:`v \in \{1,\ \sqrt{1+x^2},\ (2+\sin x)/2,\ 1 + c_3 e^{-x^2}\}`.

    Args:
        affine: ``True`` only :func:`affine_sdes`; ``False`` only the general grammar (which may still
            draw an affine SDE, e.g. :math:`h = 0, v = 1`); ``None`` (default) either.
    """
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
    from .symbolic.sde import _declared_parameters

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


# ====================================================================== symbolic assertions
def _fail(title: str, sde: SDE, lines: Sequence[str]) -> None:
    body = "\n  ".join(lines)
    raise AssertionError(f"{title}\n  SDE: {describe(sde)}\n  {body}")


def _shown_residuals(result: CheckResult, limit: int = 3) -> str:
    open_ = [r for r in result.residuals if r != 0][:limit]
    return "; ".join(sp.sstr(r)[:200] for r in open_) or "(none)"


def assert_fokker_planck(sde: SDE, p: sp.Expr | str | None = None, tolerance: float = 1e-8) -> CheckResult:
    r"""Assert that a density solves the Fokker–Planck equation of ``sde``:

    .. math:: \partial_t p + \partial_x(f p) - \tfrac12\partial_x^2(g^2 p) = 0 .

    With ``p=None`` (affine SDEs) the density is sdekit's derived Gaussian kernel
    :math:`N(x; \alpha(t)x_0 + m(t), \sigma(t)^2)` for every :math:`x_0`
    (:func:`sdekit.symbolic.checks.kernel_fokker_planck`). Otherwise ``p`` is your own sympy
    expression (or string) in ``x`` and ``t`` — e.g. the stationary density of a non-affine SDE — and
    the residual :math:`\mathrm{FP}[p]/p` is decided symbolically, else evaluated at 24 seeded points
    :math:`(x, t) \in [-3, 3]\times[0.05T, T]` against ``tolerance``.

    Returns:
        the :class:`~sdekit.symbolic.checks.CheckResult` (``.symbolic`` says whether it was proved).
    """
    from .symbolic.checks import _decide

    if p is None:
        if not sde.is_affine:
            raise ValueError(
                f"{describe(sde)} is not affine, so it has no Gaussian kernel to check; pass p= a density "
                f"you know solves its Fokker–Planck equation (e.g. its stationary density)"
            )
        result = kernel_fokker_planck(sde, tolerance=tolerance)
        what = "the derived Gaussian kernel p(x_t | x_0) does not solve"
    else:
        dens = sde.subs(sde.sympify(p))
        residual = sde.subs(sde.fokker_planck(dens)) / dens
        ranges = {X_SYM: (-3.0, 3.0), T_SYM: (0.05 * sde.T, sde.T)}
        result = _decide([residual], [X_SYM, T_SYM], ranges, tolerance)
        what = f"p = {dens} does not solve"
    if not result.passed:
        _fail(
            "assert_fokker_planck failed: " + what + " dp/dt + d(f p)/dx - 1/2 d^2(g^2 p)/dx^2 = 0",
            sde,
            [
                f"max |residual / p| = {result.max_abs:.3g} at sampled points (tolerance {result.tolerance:g})",
                f"unresolved residual(s): {_shown_residuals(result)}",
            ],
        )
    return result


def assert_chapman_kolmogorov(sde: SDE, tolerance: float = 1e-8) -> CheckResult:
    r"""Assert that the derived Gaussian transition kernels compose: :math:`p_{s\to t} = p_{u\to t}\circ p_{s\to u}`.

    For kernels :math:`N(r_{st}x + \mu_{st}, v_{st})` this is
    :math:`r_{st} = r_{ut}r_{su}`, :math:`\mu_{st} = r_{ut}\mu_{su} + \mu_{ut}`,
    :math:`v_{st} = r_{ut}^2 v_{su} + v_{ut}` for all :math:`s < u < t`
    (:func:`sdekit.symbolic.checks.chapman_kolmogorov`; proved symbolically or checked at 24 seeded
    time triples to ``tolerance``). Affine SDEs only.
    """
    result = chapman_kolmogorov(sde, tolerance=tolerance)
    if not result.passed:
        names = ("scale r_st = r_ut r_su", "shift mu_st = r_ut mu_su + mu_ut", "variance v_st = r_ut^2 v_su + v_ut")
        broken = [n for n, r in zip(names, result.residuals) if r != 0]
        _fail(
            "assert_chapman_kolmogorov failed: the transition kernels s->u->t and s->t disagree",
            sde,
            [
                f"identities not verified: {', '.join(broken)}",
                f"max |residual| = {result.max_abs:.3g} at sampled s < u < t (tolerance {result.tolerance:g})",
                f"unresolved residual(s): {_shown_residuals(result)}",
            ],
        )
    return result


# Test density for assert_reverse_consistent: a Gaussian with moving mean and variance, p = exp(phi).
_MU = sp.sin(T_SYM) / 2 + sp.Rational(1, 3)
_VAR = 1 + T_SYM**2 / 2
_TEST_SCORE = -(X_SYM - _MU) / _VAR  # d phi / dx


def _flux_div(h: sp.Expr) -> sp.Expr:
    r""":math:`\partial_x(h p)/p = \partial_x h + h\,\partial_x\phi` for :math:`p = e^\phi` (exp-free residuals)."""
    return sp.diff(h, X_SYM) + h * _TEST_SCORE


def _identity_holds(residual: sp.Expr, scale: sp.Expr, sde: SDE, tolerance: float) -> CheckResult:
    """Numerically first (float64 at 64 seeded points, relative to ``1 + |scale|``), then try to prove it."""
    import numpy as np

    from .symbolic.checks import is_zero

    rng = np.random.default_rng(0)
    xs, ts = rng.uniform(-3.0, 3.0, 64), rng.uniform(0.0, sde.T, 64)
    fr = sp.lambdify((X_SYM, T_SYM), residual, "numpy")
    fs = sp.lambdify((X_SYM, T_SYM), scale, "numpy")
    with np.errstate(all="ignore"):
        r = np.broadcast_to(np.asarray(fr(xs, ts), dtype=float), xs.shape)
        w = np.broadcast_to(np.asarray(fs(xs, ts), dtype=float), xs.shape)
        # Only points where the SDE is defined (f, g finite: g = x**(1/4) lives on x >= 0) and the scale is finite.
        inside = np.isfinite(w)
        for coefficient in (sde.subs(sde.f), sde.subs(sde.g)):
            fc = sp.lambdify((X_SYM, T_SYM), coefficient, "numpy")
            inside &= np.isfinite(np.broadcast_to(np.asarray(fc(xs, ts), dtype=float), xs.shape))
    if int(inside.sum()) < 16:
        raise ValueError(
            f"assert_reverse_consistent: f, g of {describe(sde)} and the forward rate dp/dt / p are finite at only "
            f"{int(inside.sum())} of 64 sampled points (x, t) in [-3, 3] x [0, T]; the check needs at least 16. "
            f"Declare the SDE so that f and g are finite on a larger part of [-3, 3] (e.g. shift or rescale x)"
        )
    r, w = r[inside], w[inside]
    rel = np.abs(r) / (1.0 + np.abs(w))
    worst = float(np.nanmax(rel)) if np.isfinite(rel).all() else math.inf
    if worst > tolerance:
        return CheckResult(False, False, worst, tolerance, (residual,))
    proved = bool(is_zero(residual, seconds=1.0))
    return CheckResult(True, proved, 0.0 if proved else worst, tolerance, (sp.S.Zero if proved else residual,))


@dataclasses.dataclass(frozen=True)
class ReverseCheck:
    """Evidence from :func:`assert_reverse_consistent`: symbolic checks and the largest torch mismatch."""

    reverse: CheckResult
    probability_flow: CheckResult
    max_torch_error: float


def assert_reverse_consistent(sde: SDE, tolerance: float = 1e-8, rtol: float = 1e-9) -> ReverseCheck:
    r"""Assert that the reverse-time SDE and probability-flow ODE of ``sde`` are the right ones.

    Anderson's reverse drift :math:`\bar f = f - \partial_x(g^2) - g^2\partial_x\log p` and the PF drift
    :math:`v = f - \tfrac12\partial_x(g^2) - \tfrac12 g^2 \partial_x\log p` are exactly the drifts for which,
    for **any** positive density :math:`p_t(x)`,

    .. math::
        -\partial_x(f p) + \tfrac12\partial_x^2(g^2 p)
        \;=\; -\partial_x(\bar f p) - \tfrac12\partial_x^2(g^2 p)
        \;=\; -\partial_x(v p),

    i.e. running the reverse SDE backwards in time (its Fokker–Planck equation with :math:`dt < 0`), or
    transporting with the ODE, changes :math:`p` exactly as the forward SDE does. The check uses
    :math:`p_t = N(\sin(t)/2 + 1/3,\ 1 + t^2/2)`, takes :math:`\bar f, v` from
    ``sde.reverse(score).f`` / ``sde.probability_flow(score).f`` (so a missing divergence term
    :math:`\partial_x g^2` fails), evaluates :math:`(\text{lhs} - \text{rhs})/p` at 64 seeded points
    :math:`(x, t)\in[-3, 3]\times[0, T]` (relative to :math:`1 + |\text{lhs}/p|`, against ``tolerance``) and then
    tries to prove it zero (``.symbolic`` of the result says whether it did), and finally checks that the
    torch drifts built from a *callable* score, and the reverse diffusion, match the symbolic ones at a grid
    of (x, t) to ``rtol`` (float64).

    Points where ``f`` or ``g`` is not finite (outside the SDE's domain, e.g. :math:`x < 0` for
    :math:`g = \sigma\sqrt x`) are skipped, and so are torch grid points where the reference formula is not
    finite; ``ValueError`` if fewer than 16 of the 64 points, or 4 of the 13 grid points per time, remain.
    """
    f, g = sde.subs(sde.f), sde.subs(sde.g)
    score = _TEST_SCORE
    g2 = g**2
    forward = -_flux_div(f) + _flux_div(_flux_div(g2)) / 2  # (d p / dt) / p under the forward SDE
    rev_f = sde.subs(sde.reverse(score).f)
    pf_f = sde.subs(sde.probability_flow(score).f)
    reverse_rate = -_flux_div(rev_f) - _flux_div(_flux_div(g2)) / 2
    pf_rate = -_flux_div(pf_f)
    rev = _identity_holds(reverse_rate - forward, forward, sde, tolerance)
    pf = _identity_holds(pf_rate - forward, forward, sde, tolerance)
    problems = []
    if not rev.passed:
        problems.append(
            f"reverse SDE: -d(f_rev p)/dx - 1/2 d^2(g^2 p)/dx^2 != forward dp/dt (max |diff/p| = {rev.max_abs:.3g});"
            f" f_rev = {sp.sstr(rev_f)[:200]}, expected f - d(g^2)/dx - g^2 * score"
        )
    if not pf.passed:
        problems.append(
            f"probability flow: -d(v p)/dx != forward dp/dt (max |diff/p| = {pf.max_abs:.3g});"
            f" v = {sp.sstr(pf_f)[:200]}, expected f - 1/2 d(g^2)/dx - 1/2 g^2 * score"
        )
    # Torch path: callable score, compiled drifts, against the symbolic formulas, at the grid points inside the
    # SDE's domain (f, g finite: e.g. g = sqrt(x) lives on x >= 0) where the reference formula is finite.
    score_fn = _compiled_test_score()
    n_grid = 13
    xs = torch.linspace(-3.0, 3.0, n_grid, dtype=_F64).reshape(n_grid, 1)
    worst = 0.0
    want_rev = _compile(f - sp.diff(g2, X_SYM) - g2 * score)
    want_pf = _compile(f - sp.diff(g2, X_SYM) / 2 - g2 * score / 2)
    reverse_obj, pf_obj = sde.reverse(score_fn), sde.probability_flow(score_fn)
    for tv in (0.0, 0.37 * sde.T, sde.T):
        tt = torch.full((n_grid,), tv, dtype=_F64)
        domain = _finite(sde.drift_fn(xs, tt)) & _finite(sde.diffusion_fn(xs, tt))
        for label, got, want in (
            ("reverse drift", reverse_obj.drift(xs, tt), want_rev(xs, tt)),
            ("reverse diffusion", reverse_obj.diffusion(xs, tt), sde.diffusion_fn(xs, tt)),
            ("probability-flow drift", pf_obj.drift(xs, tt), want_pf(xs, tt)),
        ):
            got, want = torch.broadcast_tensors(got, want)
            keep = domain & _finite(want)
            n_kept = int(keep.sum())
            if n_kept < _MIN_GRID_POINTS:
                raise ValueError(
                    f"assert_reverse_consistent: the {label} of {describe(sde)} is finite (and f, g are defined) at "
                    f"only {n_kept} of the {n_grid} grid points x in [-3, 3] at t={tv:g}; the torch comparison needs "
                    f"at least {_MIN_GRID_POINTS}. Declare the SDE so that f and g are finite on a part of [-3, 3] "
                    f"(e.g. shift or rescale x)"
                )
            got, want = got[keep], want[keep]
            err = float(((got - want).abs() / (1 + want.abs())).max())  # NaN if got is not finite: a failure
            worst = max(worst, err) if err == err else math.inf
            if not err <= rtol:
                problems.append(
                    f"torch {label} (callable score) differs from the formula by {err:.3g} at t={tv:g}"
                    f" (max over the {n_kept} grid points x in [-3, 3] where f, g and the formula are finite)"
                )
    if problems:
        _fail(
            "assert_reverse_consistent failed: the reverse-time dynamics do not reproduce the forward marginals",
            sde,
            [*problems, "test density p_t = N(sin(t)/2 + 1/3, 1 + t^2/2), score = d/dx log p_t"],
        )
    return ReverseCheck(rev, pf, worst)


_MIN_GRID_POINTS = 4  # of the 13 torch grid points per time in assert_reverse_consistent


def _finite(values: torch.Tensor) -> torch.Tensor:
    """Per row (first axis), whether every entry is finite (rows are grid points)."""
    finite = torch.isfinite(values)
    return finite.reshape(finite.shape[0], -1).all(dim=1) if finite.ndim > 1 else finite


def _compile(expr: sp.Expr) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from .compile import compile_expr

    return compile_expr(expr, X_SYM, T_SYM)


def _compiled_test_score() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, *([1] * (x.ndim - 1)))
        mu = torch.sin(t) / 2 + 1.0 / 3.0
        return -(x - mu) / (1 + t**2 / 2)

    return score


# ====================================================================== statistical assertions
@dataclasses.dataclass(frozen=True)
class SamplesMatch:
    """Evidence from :func:`assert_samples_match`.

    Attributes:
        passed: ``p_value > alpha``.
        p_value: Bonferroni-adjusted family p-value ``min(1, m * min_j p_j)`` over the m component tests.
        alpha: the family-wise level.
        n: sample sizes ``(n_a, n_b)`` (``n_b = None`` against an exact law).
        tests: ``(name, statistic, p_value)`` per component test, e.g. ``("KS along e_1", 0.012, 0.43)``.
    """

    passed: bool
    p_value: float
    alpha: float
    n: tuple[int, int | None]
    tests: tuple[tuple[str, float, float], ...]


def _directions(d: int, directions: torch.Tensor | None, n_random: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    from ._stats import random_directions

    if directions is not None:
        u = torch.as_tensor(directions, dtype=_F64).reshape(-1, d)
        u = u / u.norm(dim=1, keepdim=True)
        return u, [f"u_{j}" for j in range(u.shape[0])]
    if d == 1:
        return torch.ones(1, 1, dtype=_F64), ["x"]
    parts, names = [], []
    if d <= 8:
        parts.append(torch.eye(d, dtype=_F64))
        names += [f"e_{i + 1}" for i in range(d)]
    else:
        n_random = max(n_random, 8)
    if n_random:
        parts.append(random_directions(d, n_random, seed=seed))
        names += [f"u_{j + 1} (random)" for j in range(n_random)]
    return torch.cat(parts), names


def _as_samples(samples: Any, name: str) -> torch.Tensor:
    """``samples`` (n, *event_shape) as a float64 CPU tensor (n, d); TypeError naming ``name`` otherwise."""
    if isinstance(samples, (GaussianMixture, DiffusedGaussianMixture)):
        raise TypeError(
            f"assert_samples_match: {name} must be samples of shape (n, *event_shape), not a "
            f"{type(samples).__name__}" + (" (only b may be the exact law, e.g. oracle.at(t))" if name == "a" else "")
        )
    try:
        values = torch.as_tensor(samples).detach()
    except (TypeError, RuntimeError, ValueError) as err:
        raise TypeError(
            f"assert_samples_match: {name} must be samples (a tensor or array of shape (n, *event_shape)); got "
            f"{type(samples).__name__}"
            + (", or the exact law as a GaussianMixture (e.g. oracle.at(t))" if name == "b" else "")
        ) from err
    if values.ndim == 0:
        raise ValueError(f"assert_samples_match: {name} must have shape (n, *event_shape); got a 0-d value")
    return values.reshape(len(values), -1).to(torch.device("cpu"), _F64)


def assert_samples_match(
    a: torch.Tensor,
    b: torch.Tensor | GaussianMixture,
    alpha: float = 1e-3,
    *,
    directions: torch.Tensor | None = None,
    n_random: int = 2,
    seed: int = 0,
) -> SamplesMatch:
    r"""Assert that samples ``a`` come from the same law as samples ``b`` (or as the exact mixture ``b``).

    A calibrated test of level ``alpha``: **if a and b have the same law, it fails with probability at
    most alpha** (measured over 400 null trials at alpha = 0.05: 0.050 in 1-D, 0.020 in 2-D two-sample; 0.028 and
    0.025 against the exact law; see ``tests/test_testing.py``). Samples of shape
    (n, \*event_shape) are flattened to :math:`\mathbb R^d` and projected on k fixed directions — the d
    coordinate axes when :math:`d \le 8`, plus ``n_random`` seeded random unit vectors (8 when d > 8), or
    your ``directions`` (k, d). Along each direction two tests run:

    * Kolmogorov–Smirnov (omnibus): two-sample (``scipy.stats.ks_2samp``, exact for small n, else
      asymptotic) or, against a :class:`~sdekit.analytic.GaussianMixture`, one-sample with the exact
      projected CDF (a 1-D mixture; exact Kolmogorov distribution);
    * a z-test of the projected mean (most powerful for a shift): Welch's
      :math:`z = (\bar a - \bar b)/\sqrt{s_a^2/n_a + s_b^2/n_b}`, or :math:`(\bar a - \mu)/(s/\sqrt{n})` with the
      exact mean and standard deviation; normal by the CLT (valid for the moderately large n these tests use).

    The family p-value is Bonferroni's :math:`\min(1, m \min_j p_j)` over the m = 2k tests, so the family-wise
    false-positive rate is :math:`\le` alpha (conservative when the tests are dependent).

    Power (measured, 1-D, unit variance, 0.1-sigma mean shift, n = 4,000, alpha = 1e-3): about 0.8 two-sample
    (:math:`z = 0.1\sqrt{n/2} = 4.5` against a critical 3.5) and 1.0 against the exact law (:math:`z = 6.3`).
    Compare with the exact law when you have it (``b=`` an oracle's ``.at(t)``), as ``docs/testing.md`` advises.

    Raises:
        AssertionError: with every component statistic when the family p-value is <= alpha.
        TypeError: if ``a`` is not samples, or ``b`` is neither samples nor a ``GaussianMixture`` (for a
            :class:`~sdekit.analytic.DiffusedGaussianMixture` oracle pass ``oracle.at(t)``).
    """
    from scipy import stats

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    xa = _as_samples(a, "a")
    exact = isinstance(b, GaussianMixture)
    d = xa.shape[1]
    if exact:
        if math.prod(b.event_shape) != d:
            raise ValueError(f"a has event dimension {d} but the mixture b has event shape {b.event_shape}")
    else:
        if isinstance(b, DiffusedGaussianMixture):
            raise TypeError(
                "assert_samples_match: b is a DiffusedGaussianMixture (a law for every t); pass its law at the time "
                "of the samples a, oracle.at(t) (a GaussianMixture), or samples of shape (n, *event_shape)"
            )
        xb = _as_samples(b, "b")
        if xb.shape[1] != d:
            raise ValueError(f"a and b have different event dimensions: {d} and {xb.shape[1]}")
    if not torch.isfinite(xa).all() or (not exact and not torch.isfinite(xb).all()):
        raise AssertionError("assert_samples_match: the samples contain NaN or inf (did the sampler diverge?)")
    u, names = _directions(d, directions, n_random, seed)
    pa = (xa @ u.T).numpy()
    tests: list[tuple[str, float, float]] = []
    if exact:
        from ._stats import mixture_projected_cdf

        cdf = mixture_projected_cdf(b, u)
        mu = b.means.reshape(b.n_components, -1).to(_F64)
        cov = b.covariances.to(_F64)
        w = b.weights.to(_F64)
        means = mu @ u.T  # (K, k)
        variances = torch.einsum("jd,kde,je->kj", u, cov, u)  # (K, k)
        mix_mean = (w[:, None] * means).sum(0)
        mix_var = (w[:, None] * (variances + means**2)).sum(0) - mix_mean**2
        n = pa.shape[0]
        for j, name in enumerate(names):
            res = stats.kstest(pa[:, j], lambda z, j=j: cdf(torch.as_tensor(z, dtype=_F64), j).numpy())
            tests.append((f"KS along {name}", float(res.statistic), float(res.pvalue)))
            z = (pa[:, j].mean() - float(mix_mean[j])) / math.sqrt(float(mix_var[j]) / n)
            tests.append((f"mean along {name}", float(z), float(2 * stats.norm.sf(abs(z)))))
        sizes: tuple[int, int | None] = (n, None)
    else:
        pb = (xb @ u.T).numpy()
        for j, name in enumerate(names):
            res = stats.ks_2samp(pa[:, j], pb[:, j])
            tests.append((f"KS along {name}", float(res.statistic), float(res.pvalue)))
            se = math.sqrt(pa[:, j].var(ddof=1) / len(pa) + pb[:, j].var(ddof=1) / len(pb))
            z = (pa[:, j].mean() - pb[:, j].mean()) / se if se > 0 else 0.0
            tests.append((f"mean along {name}", float(z), float(2 * stats.norm.sf(abs(z)))))
        sizes = (len(pa), len(pb))
    p_family = min(1.0, len(tests) * min(p for _, _, p in tests))
    result = SamplesMatch(p_family > alpha, p_family, alpha, sizes, tuple(tests))
    if not result.passed:
        against = "the exact mixture b" if exact else f"b (n = {sizes[1]})"
        lines = [f"{name}: statistic {s:.4g}, p = {p:.3g}" for name, s, p in tests]
        raise AssertionError(
            f"assert_samples_match failed: a (n = {sizes[0]}) does not match {against}: Bonferroni p = "
            f"{p_family:.3g} <= alpha = {alpha:g} over {len(tests)} tests (a false alarm has probability <= alpha)\n  "
            + "\n  ".join(lines)
        )
    return result


def assert_logp_matches(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sde: SDE,
    exact_log_prob: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor | DiffusedGaussianMixture,
    x: torch.Tensor,
    tol: float = 1e-3,
    **logp_kwargs: Any,
) -> torch.Tensor:
    r"""Assert :math:`\max_i |\,\texttt{sdekit.logp}(model, sde, x)_i - \log p_\epsilon(x_i)| \le` ``tol`` (nats).

    Args:
        model: the score model (or what ``parameterization=`` in ``logp_kwargs`` says it predicts).
        sde: the forward SDE.
        exact_log_prob: the exact log-density of the time-:math:`\epsilon` marginal, as a callable
            ``log_prob(x) -> (batch,)``, a distribution with ``.log_prob(x)`` (e.g. ``oracle.at(eps)``), a
            tensor of values, or a
            :class:`~sdekit.analytic.DiffusedGaussianMixture` (then its ``log_prob(x, eps)`` is used and, unless
            you pass ``prior=``, its exact :math:`p_T` is the prior, so only the ODE solve is tested).
        x: points of shape (batch, \*event_shape).
        tol: allowed absolute error in nats. The default 1e-3 suits ``sdekit.logp``'s defaults
            (dopri5, rtol = atol = 1e-5) with the exact prior; with ``sde.prior`` instead of :math:`p_T` expect
            up to ~1e-2 (``docs/likelihood.md``).
        **logp_kwargs: passed to :func:`sdekit.logp` (``eps``, ``solver``, ``rtol``, ``prior``, ...).

    Returns:
        the per-sample errors ``logp - exact``.

    Raises:
        ValueError: if the exact values do not have shape (batch,), one per row of ``x``.
        AssertionError: if some error exceeds ``tol`` (or is not finite).
    """
    from ._likelihood import DEFAULT_LIKELIHOOD_EPS, logp

    eps = logp_kwargs.get("eps") or DEFAULT_LIKELIHOOD_EPS
    if isinstance(exact_log_prob, DiffusedGaussianMixture):
        logp_kwargs.setdefault("prior", exact_log_prob.at(sde.T))
        exact = exact_log_prob.log_prob(x, eps)
    elif callable(exact_log_prob):
        exact = exact_log_prob(x)
    elif callable(getattr(exact_log_prob, "log_prob", None)):  # a distribution, e.g. oracle.at(eps)
        exact = exact_log_prob.log_prob(x)
    elif isinstance(exact_log_prob, torch.Tensor):
        exact = exact_log_prob
    else:
        raise TypeError(
            f"exact_log_prob must be a callable log_prob(x), an object with .log_prob(x) (e.g. oracle.at(eps)), a "
            f"tensor of values or a DiffusedGaussianMixture; got {type(exact_log_prob).__name__}"
        )
    exact = torch.as_tensor(exact)
    batch = tuple(x.shape[:1])
    if tuple(exact.shape) != batch:
        hint = ""
        if exact.shape == (*batch, 1):
            hint = " (a column: pass exact.reshape(-1))"
        elif exact.shape == batch * 2:
            hint = " (a (batch, batch) table would compare every pair: pass one value per row, e.g. log_prob(x))"
        raise ValueError(
            f"assert_logp_matches: the exact log-density values must have shape (batch,) = {batch}, one per row of "
            f"x (x has shape {tuple(x.shape)}); got shape {tuple(exact.shape)}{hint}"
        )
    got = logp(model, sde, x, **logp_kwargs)
    err = (got.detach() - exact.detach().to(got.dtype)).reshape(-1)
    if not torch.isfinite(err).all() or err.abs().max() > tol:
        i = int(torch.nan_to_num(err.abs(), nan=math.inf).argmax())
        raise AssertionError(
            f"assert_logp_matches failed: sdekit.logp differs from the exact log-density by up to "
            f"{float(err.abs().max()):.3g} nats (tol {tol:g})\n  SDE: {describe(sde)}\n  "
            f"worst sample {i}: logp = {float(got.reshape(-1)[i]):.6g}, exact = {float(exact.reshape(-1)[i]):.6g}; "
            f"median |error| = {float(err.abs().median()):.3g} over {err.numel()} points, eps = {eps:g}\n  "
            f"(a wrong model or score, a wrong sde, or a prior that is not p_T: pass prior= the exact p_T)"
        )
    return err
