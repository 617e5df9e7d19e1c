"""A user's model that raises is reported as itself, never as a solver fault.

torchdiffeq and torchsde signal their own failures (step-size underflow, a NaN error estimate) with
``AssertionError``, which sdekit's drivers turn into :class:`~sdekit.errors.SolverError`. A model raises
``AssertionError`` too (a shape assert, a bug), and must not be rebranded. Every entry point therefore calls the
model through :class:`GuardedModel`, which tags an exception raised inside the model (:func:`is_model_error`) and
adds a note with the time of the call; the drivers re-raise a tagged exception unchanged.

:class:`CheckedModel` adds the output checks of every call (shape, dtype, finiteness) at a negligible cost: the
shape and dtype are metadata, and finiteness after the first call is tracked on the device (no host read per call)
and read once when the run ends or a solver reports a divergence (:meth:`CheckedModel.first_nonfinite_call`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from ._checks import check_model_output
from .errors import SolverDivergedError

__all__ = ["CheckedModel", "GuardedModel", "is_model_error"]

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


def _time_of(t: torch.Tensor | float) -> float:
    return float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else float(t)


class CheckedModel:
    """``model(x, t)`` through :class:`GuardedModel`, its output checked at every call.

    * shape, dtype and device (those of ``x``): every call, from metadata, raising
      :class:`~sdekit.errors.ModelOutputError` that names the call and its time;
    * finiteness: the first call with one host read (a model broken everywhere fails before any solver step); every
      later call on the device, with no synchronisation: the sum of its output and the 2-norm of its input are kept
      (two reductions, a 0-d tensor each). A non-finite output makes the solver's state non-finite and the solver
      stops with :class:`~sdekit.errors.SolverDivergedError`; :meth:`verdict` then reads the records (one host read)
      and names the model's first call that returned a NaN or an inf for a *moderate* input: a finite state whose
      unscaled squared norm does not overflow. A model that overflows on an astronomically large state (|x| > ~1e19
      in float32, after the solver's own blow-up) is not blamed.
    """

    __slots__ = ("_records", "calls", "model", "what")
    _records: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

    def __init__(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], what: str = "model(x, t)"):
        self.model = GuardedModel(model)
        self.what = what
        self.calls = 0
        self._records = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.model(x, t)
        self.calls += 1
        if not isinstance(out, torch.Tensor) or out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
            check_model_output(out, x, what=f"{self.what} (call {self.calls}, at t = {_time_of(t):.6g})")
        if self.calls == 1:
            check_model_output(
                out, x, what=self.what, nonfinite_hint=f"t = {_time_of(t):.6g} (its first call); check the model"
            )
        else:
            # reductions, not isfinite(...).all(): one pass without a temporary, ~35x cheaper on CPU

            when = t.detach().reshape(-1)[0].clone() if isinstance(t, torch.Tensor) else torch.tensor(float(t))
            self._records.append((out.detach().sum(), torch.linalg.vector_norm(x.detach()), when))
        return out

    def first_nonfinite_call(self) -> tuple[int, float] | None:
        """The first call whose output held a NaN or an inf for a moderate input (1-based) and its time, or None (one
        host read)."""
        if not self._records:
            return None
        out_records, x_records, times = (torch.stack(column) for column in zip(*self._records, strict=True))
        bad = torch.nonzero(~torch.isfinite(out_records) & torch.isfinite(x_records))
        if not bad.numel():
            return None
        k = int(bad[0, 0])
        return k + 2, float(times[k])  # call 1 was checked on the host

    def verdict(self, err: SolverDivergedError) -> SolverDivergedError | None:
        """When the model returned non-finite values for a moderate input before the solver diverged (``err``): the
        :class:`~sdekit.errors.SolverDivergedError` to raise instead, with ``err``'s time and step, naming the
        model's call. None when the model is not to blame (its outputs were finite, or its input was already not:
        then the solver's state diverged first)."""
        found = self.first_nonfinite_call()
        if found is None:
            return None
        call, when = found
        blame = (
            f"{self.what} returned non-finite values for a moderate input, first at t = {when:.6g} (its call {call} "
            f"of {self.calls})"
        )
        return SolverDivergedError(f"{err} ({blame}; check the model there)", t=err.t, step=err.step)


def is_model_error(err: BaseException) -> bool:
    """Whether ``err`` was raised inside a :class:`GuardedModel` (the user's model), not by a solver."""
    return bool(getattr(err, _TAG, False))
