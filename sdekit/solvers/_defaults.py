r"""The sampler :func:`sdekit.sample` runs when no ``solver=`` is named (the rule is measured, not guessed).

* ``steps=None``: ``"srk"`` with its adaptive step control (rtol/atol) on the reverse SDE: no step count to
  choose, any SDE.
* ``steps=k`` on an affine SDE: :data:`FEW_STEP_RULE`, the sampler and grid that measured most accurate at k
  model evaluations in ``benchmarks/few_step.py`` (exact mixture score, VP, VE and a user SDE; the table and
  the rule's derivation are in ``docs/benchmarks.md``). These samplers count ``steps`` as model evaluations
  (:attr:`~sdekit.solvers.Solver.steps_are_nfe`), so ``info.nfe == k``.
* ``steps=k`` on a non-affine SDE: ``"srk"`` with k fixed steps (the exponential-family samplers need the
  Gaussian marginal).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..symbolic.sde import SDE

__all__ = ["FEW_STEP_RULE", "Choice", "default_sampler"]


@dataclasses.dataclass(frozen=True)
class Choice:
    """A registry name and the options it runs with (the caller's own options override these)."""

    solver: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))


ADAPTIVE = Choice("srk")
"""``steps=None``: adaptive SRK on the reverse SDE."""

FEW_STEP_RULE: tuple[tuple[int, Choice], ...] = ((10**9, Choice("exp3", MappingProxyType({"grid": "arctan"}))),)
"""``(up to k model evaluations, choice)`` rows, ascending: the first row whose bound is >= ``steps`` applies."""


def default_sampler(sde: SDE, steps: int | None) -> Choice:
    """The sampler for ``sdekit.sample(model, sde, shape, steps=steps)`` without ``solver=`` (module docstring)."""
    if steps is None:
        return ADAPTIVE
    if not sde.is_affine:
        return Choice("srk")
    return next(choice for bound, choice in FEW_STEP_RULE if steps <= bound)
