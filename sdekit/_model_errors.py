"""A user's model that raises is reported as itself, never as a solver fault.

torchdiffeq and torchsde signal their own failures (step-size underflow, a NaN error estimate) with
``AssertionError``, which sdekit's drivers turn into :class:`~sdekit.errors.SolverError`. A model raises
``AssertionError`` too (a shape assert, a bug), and must not be rebranded. Every entry point therefore calls the
model through :class:`GuardedModel`, which tags an exception raised inside the model (:func:`is_model_error`) and
adds a note with the time of the call; the drivers re-raise a tagged exception unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

__all__ = ["GuardedModel", "is_model_error"]

_TAG = "_sdekit_raised_by_model"


class GuardedModel:
    """``model(x, t)``; an exception it raises is tagged and, on Python >= 3.11, gets the note
    ``"raised by the model at t = ..."`` (one host read, on the failure path only)."""

    __slots__ = ("model",)

    def __init__(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.model = model

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        try:
            return self.model(x, t)
        except Exception as err:
            if not getattr(err, _TAG, False):
                setattr(err, _TAG, True)
                if sys.version_info >= (3, 11):
                    when = float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else float(t)
                    err.add_note(f"sdekit: raised by the model at t = {when:.6g}")
            raise


def is_model_error(err: BaseException) -> bool:
    """Whether ``err`` was raised inside a :class:`GuardedModel` (the user's model), not by a solver."""
    return bool(getattr(err, _TAG, False))
