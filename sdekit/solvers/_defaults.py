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
    (6, Choice("exp2", MappingProxyType({"grid": "optimized"}))),
    (9, Choice("unipc", MappingProxyType({"order": 2, "variant": "bh2", "grid": "optimized"}))),
    (
        19,
        Choice(
            "unipc", MappingProxyType({"order": 2, "variant": "bh2", "grid": "optimized", "lower_order_final": "auto"})
        ),
    ),
    (10**9, Choice("unipc", MappingProxyType({"order": 3, "variant": "bh2", "grid": "arctan"}))),
)
"""``(up to k model evaluations, choice)`` rows, ascending: the first row whose bound is >= ``steps`` applies.

Measured by ``benchmarks/few_step.py`` (sweep at n = 1e5 over every few-step sampler and grid, exact mixture score,
VP, VE and a user SDE; the row with the smallest *worst* sliced-KS ratio over the three SDEs at each NFE):
``exp2`` on the ``"optimized"`` grid at 4-6 NFE (worst ratio 2.31 at 6, against 2.96 for DPM-Solver++(2M) on the same
grid), UniPC-2 (bh2) on ``"optimized"`` at 8-15 (2.00, 1.93, 1.45, 1.14 at 8, 10, 12, 15), UniPC-3 (bh2) on
``"arctan"`` from 20 (0.46 at 20, 0.44 at 25). Then (issue #18 follow-up, n = 200,000, seeds 1 / 2, final-stage
runs) UniPC-2 with ``lower_order_final="auto"`` (order 1 where the Gaussian proxy's denoiser saturates) at 10-19:
worst over VP, VE and the user SDE 2.41 at 10 (the same sampler with ``True``: 2.81), 1.32 at 12, 0.74 at 15
(indistinguishable; before: 1.2-1.3); at 8 ``"auto"`` was worse (4.03 against 2.62), so 7-9 keep ``True`` (9 not
measured). Full tables: ``docs/benchmarks.md``."""


def default_sampler(sde: SDE, steps: int | None) -> Choice:
    """The sampler for ``sdekit.sample(model, sde, shape, steps=steps)`` without ``solver=`` (module docstring)."""
    if steps is None:
        return ADAPTIVE
    if not sde.is_affine:  # the exponential-family samplers need the Gaussian marginal
        return Choice("srk")
    if sde.components is not None:  # the scalar few-step samplers need a scalar marginal
        return Choice("mexp")
    return next(choice for bound, choice in FEW_STEP_RULE if steps <= bound)
