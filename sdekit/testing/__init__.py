r"""Property-test your own SDEs: hypothesis strategies, assertions and settings profiles.

Needs `hypothesis <https://hypothesis.readthedocs.io>`_ (``pip install sdekit[test]``); ``import sdekit``
itself does not. Everything here is public:

* **Strategies** (hypothesis ``SearchStrategy`` objects): :func:`affine_sdes`, :func:`sdes`,
  :func:`parameters`, :func:`times`, :func:`gaussian_mixtures`, :func:`event_shapes`. Drawn SDEs print as
  the declaration that rebuilds them, e.g. ``SDE.from_expressions('-x*(t + 1)', 'sqrt(2)')``, so a shrunk
  failing example can be pasted into a file. ``affine_sdes(components=2)`` draws 2-component SDEs (CLD-like), which
  print as a :func:`component_sde` call.
* **Assertions** (raise ``AssertionError`` with a readable message, return the evidence on success):
  :func:`assert_fokker_planck`, :func:`assert_chapman_kolmogorov`, :func:`assert_reverse_consistent`,
  :func:`assert_samples_match`, :func:`assert_logp_matches`. All but :func:`assert_chapman_kolmogorov` take
  k-component SDEs and full states ``(batch, k, *event_shape)`` too.
* **Profiles**: :func:`register_profiles` registers ``"ci"`` (derandomised, bounded) and ``"dev"``;
  :func:`load_profile` loads the one named by ``$HYPOTHESIS_PROFILE`` (default ``"ci"``).
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sdekit.testing needs hypothesis: install it with `pip install sdekit[test]` (or `pip install hypothesis`)"
    ) from err

from ._profiles import load_profile, register_profiles
from ._statistical import SamplesMatch, assert_logp_matches, assert_samples_match
from ._strategies import (
    affine_sdes,
    component_sde,
    describe,
    event_shapes,
    gaussian_mixtures,
    parameters,
    sdes,
    times,
)
from ._symbolic import assert_chapman_kolmogorov, assert_fokker_planck, assert_reverse_consistent

__all__ = [
    "affine_sdes",
    "component_sde",
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
