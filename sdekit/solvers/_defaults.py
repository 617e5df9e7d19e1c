r"""The sampler :func:`sdekit.sample` runs when no ``solver=`` is named (the rule is measured, not guessed).

* ``steps=None``: ``"srk"`` with its adaptive step control (rtol/atol) on the reverse SDE: no step count to
  choose, any SDE.
* ``steps=k`` on an affine SDE: :data:`FEW_STEP_RULE`, the sampler and grid that measured most accurate at k
  model evaluations in ``benchmarks/few_step.py`` (exact mixture score, VP, VE and a user SDE; the table and
  the rule's derivation are in ``docs/benchmarks.md``). These samplers count ``steps`` as model evaluations
  (:attr:`~sdekit.solvers.Solver.steps_are_nfe`), so ``info.nfe == k``.
* ``steps=k`` on an affine k-component SDE (CLD): ``"mexp"`` (order 3, generalized log-SNR grid), k model
  evaluations; indistinguishable from the exact law at 25-30 on CLD, where ``srk`` needs 100 (docs/cld.md).
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

FEW_STEP_RULE: tuple[tuple[int, Choice], ...] = (
    (12, Choice("unipc", MappingProxyType({"order": 1, "variant": "bh1", "grid": "optimized"}))),
    (
        19,
        Choice(
            "unipc", MappingProxyType({"order": 2, "variant": "bh2", "grid": "optimized", "lower_order_final": "auto"})
        ),
    ),
    (10**9, Choice("unipc", MappingProxyType({"order": 3, "variant": "bh2", "grid": "arctan"}))),
)
"""``(up to k model evaluations, choice)`` rows, ascending: the first row whose bound is >= ``steps`` applies.

Measured by ``benchmarks/few_step.py`` (full run of 2026-12-05, 13:05-13:53 UTC: sweep at n = 1e5 over every
few-step sampler, option variant and grid, exact mixture score, VP, VE and a user SDE; the row with the smallest
*worst* sliced-KS ratio over the three SDEs at each NFE): UniPC-1 (bh1; with its corrector second order) on the
``"optimized"`` grid (now shaped for order 2) at 4-12 NFE (worst ratio 6.62, 3.86, 2.64, 1.49, 1.03, 0.85 at 4, 5,
6, 8, 10, 12; ``exp2`` on ``"optimized"`` was 2.31 at 6 and worse elsewhere, so one row), UniPC-2 (bh2) with
``lower_order_final="auto"`` on ``"optimized"`` at 13-19 (0.54 at 15: indistinguishable at n = 2e5 on all three
SDEs), UniPC-3 (bh2) on ``"arctan"`` from 20 (0.46 at 20, 0.44 at 25; UniPC-2 auto ties at 20). Full tables:
``docs/benchmarks.md``."""


def default_sampler(sde: SDE, steps: int | None) -> Choice:
    """The sampler for ``sdekit.sample(model, sde, shape, steps=steps)`` without ``solver=`` (module docstring)."""
    if steps is None:
        return ADAPTIVE
    if not sde.is_affine:  # the exponential-family samplers need the Gaussian marginal
        return Choice("srk")
    if sde.components is not None:  # the scalar few-step samplers need a scalar marginal
        return Choice("mexp")
    return next(choice for bound, choice in FEW_STEP_RULE if steps <= bound)
