r"""A light Brownian motion for fixed-step torchsde runs.

torchsde's default :class:`torchsde.BrownianInterval` stores a binary tree of intervals so
that any query (including the step doubling of adaptive solvers) is consistent with one
path. A fixed-step solver only ever asks for the increment over the *next* step, once, in
order, so none of that machinery is needed: :class:`FixedStepBrownian` draws

.. math::
    W_{a,b} = \sqrt{h}\,Z_1, \qquad
    U_{a,b} = \int_a^b (W_u - W_a)\,du = \tfrac{h}{2} W_{a,b} + \sqrt{h^3/12}\,Z_2,
    \qquad h = b - a,

with :math:`Z_1, Z_2 \sim N(0, I)` independent, fresh on every call, from the sampler's
``torch.Generator``. The law of :math:`U` is exact: :math:`\int_0^h W_u\,du` has variance
:math:`h^3/3`; its regression on :math:`W_h` is :math:`\tfrac h2 W_h` (variance
:math:`h^3/4`), and the residual, the integral of the Brownian bridge
:math:`\int_0^h (W_u - \tfrac uh W_h)\,du`, is independent of :math:`W_h` with variance
:math:`h^3/3 - h^3/4 = h^3/12`. This is torchsde's convention for ``return_U=True``
(``U = h (W/2 + H)`` with the space-time Lévy area :math:`H \sim N(0, h/12)`), which the
``srk`` method uses as :math:`I_{(1,0)}`.

Times may be Python floats (no tensor arithmetic, no host synchronisation) or 0-d
tensors. Measured on CPU this costs one ``randn`` per step, against 20–600x a plain
loop for :class:`~torchsde.BrownianInterval` (``python -m benchmarks``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchsde import BaseBrownian

from .. import _random

__all__ = ["FixedStepBrownian"]


def _sqrt(h: Any) -> Any:
    return math.sqrt(h) if isinstance(h, (int, float)) else h.sqrt()


class FixedStepBrownian(BaseBrownian):
    r"""Fresh Gaussian increments :math:`W_{a,b} \sim N(0, (b - a) I)` per call (optionally with :math:`U_{a,b}`).

    Only valid for solvers that query each step exactly once, in order, over
    non-overlapping intervals (every fixed-step torchsde method does). Each call is an
    independent draw: asking twice for the same interval gives two different answers.

    Args:
        size: shape of one increment, ``(batch, d)``.
        dtype, device: of the increments.
        generator: source of randomness: a ``torch.Generator``, per-block :class:`~sdekit._random.Streams`
            (:func:`sdekit.sample`) or ``None`` (torch's global generator).
        levy_area: also provide the space-time Lévy area (``return_U=True``), as ``srk`` needs.
    """

    __slots__ = ("_device", "_dtype", "_generator", "_levy", "_size")

    def __init__(
        self,
        size: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device | str | None,
        generator: _random.RandomSource = None,
        levy_area: bool = False,
    ) -> None:
        self._size = torch.Size(size)
        self._dtype = dtype
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._generator = generator
        self._levy = levy_area

    def _randn(self) -> torch.Tensor:
        return _random.randn(self._size, generator=self._generator, dtype=self._dtype, device=self._device)

    def __call__(
        self, ta: Any, tb: Any = None, return_U: bool = False, return_A: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Increment over [ta, tb] (``tb=None``: over [0, ta]); with ``return_U`` also :math:`U_{a,b}`."""
        if return_A:
            raise ValueError("FixedStepBrownian provides no space-space Lévy area (return_A); use BrownianInterval")
        if tb is None:
            ta, tb = 0.0, ta
        h = tb - ta
        sqrt_h = _sqrt(h)
        w = self._randn().mul_(sqrt_h)
        if not return_U:
            return w
        if not self._levy:
            raise ValueError("this FixedStepBrownian was built without levy_area=True, so it cannot return U")
        if isinstance(h, (int, float)):
            u = self._randn().mul_(math.sqrt(h**3 / 12)).add_(w, alpha=0.5 * h)
        else:
            u = self._randn() * (h**3 / 12).sqrt() + w * (0.5 * h)
        return w, u

    def __repr__(self) -> str:
        return f"FixedStepBrownian(size={tuple(self._size)}, dtype={self._dtype}, levy_area={self._levy})"

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the increments."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """device of the increments."""
        return self._device

    @property
    def shape(self) -> torch.Size:
        """``(batch, d)``."""
        return self._size

    @property
    def levy_area_approximation(self) -> str:
        """``"space-time"`` with ``levy_area=True`` (exact U), else ``"none"``."""
        return "space-time" if self._levy else "none"
