"""Statistical assertions of sdekit.testing: samples and likelihoods against an exact law."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch

from .._likelihood import DEFAULT_LIKELIHOOD_EPS, logp
from .._stats import mixture_projected_cdf, random_directions
from .._vector_analytic import VectorDiffusedGaussianMixture
from ..analytic import DiffusedGaussianMixture, GaussianMixture
from ..symbolic.sde import SDE
from ._strategies import describe

_F64 = torch.float64


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
    if isinstance(samples, (GaussianMixture, DiffusedGaussianMixture, VectorDiffusedGaussianMixture)):
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
    0.025 against the exact law; see ``tests/testing/test_statistical_assertions.py``). Samples of shape
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

    k-component SDEs: samples of the full state ``(n, k, *event_shape)`` are flattened alike (the k d coordinate
    axes when k d <= 8); the exact law is the k-component oracle's ``.at(t)``, a mixture on ``(k, *event_shape)``
    (for one component, e.g. x, pass ``a[:, 0]`` and ``oracle.component(t, "x")``).

    Raises:
        AssertionError: with every component statistic when the family p-value is <= alpha.
        TypeError: if ``a`` is not samples, or ``b`` is neither samples nor a ``GaussianMixture`` (for a
            :class:`~sdekit.analytic.DiffusedGaussianMixture` oracle pass ``oracle.at(t)``).
    """
    # lazy: scipy.stats only for the two-sample comparison
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
        if isinstance(b, (DiffusedGaussianMixture, VectorDiffusedGaussianMixture)):
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
        x: points of shape (batch, \*event_shape); for a k-component SDE full states (batch, k, \*event_shape),
            with the k-component oracle (``gm.diffuse(sdekit.CLDSDE())``) as ``exact_log_prob`` (joint density).
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

    eps = logp_kwargs.get("eps") or DEFAULT_LIKELIHOOD_EPS
    if isinstance(exact_log_prob, (DiffusedGaussianMixture, VectorDiffusedGaussianMixture)):
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
