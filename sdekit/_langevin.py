r"""Langevin dynamics with a score: unadjusted Langevin and NCSN's annealed Langevin.

The Langevin diffusion :math:`dx = \nabla\log p(x)\,dt + \sqrt2\,dB` has :math:`p` as its stationary
law. Its Euler–Maruyama discretisation with step :math:`h` is the unadjusted Langevin algorithm (ULA)

.. math:: x_{k+1} = x_k + h\,s(x_k) + \sqrt{2h}\,z_k,\qquad z_k \sim N(0, I),

whose stationary law is :math:`p` up to an :math:`O(h)` bias (for :math:`N(0, s^2)` its variance is
:math:`s^2/(1 - h/(2s^2))`). Annealed Langevin (Song & Ermon 2019, Algorithm 1) runs ULA through
decreasing noise levels :math:`\sigma_1 > \dots > \sigma_L` with the noise-conditional score
:math:`s(x, \sigma_i)` and step :math:`\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2`:

.. math:: x \leftarrow x + \tfrac{\alpha_i}{2}\,s(x, \sigma_i) + \sqrt{\alpha_i}\,z,

i.e. ULA with :math:`h = \alpha_i/2` at level i. Large levels connect separated modes (so mode
weights come out right, which plain Langevin gets wrong for well separated modes in any
practical number of steps); small levels refine.

Both run the one Langevin update of the solver layer (:func:`sdekit.solvers._native.langevin_steps`, which the
``ald`` sampler runs too) under a finiteness watch that reads the state at every step and tells a broken
score from a step size too large for it.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from . import _random
from ._checks import check_batch, check_generator, check_model_output, check_positive
from .errors import ModelOutputError
from .solvers._base import FiniteWatch
from .solvers._native import langevin_steps

__all__ = ["langevin", "annealed_langevin"]


_RUNAWAY = 1e6  # a state this many times larger than the first one has run away (a divergence, not a bad score)


def _check_steps(n_steps: Any, name: str = "n_steps") -> int:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {n_steps!r}")
    return n_steps


def _check_sigmas(sigmas: Any) -> list[float]:
    """The noise levels as a list of floats: a 1-D tensor or a sequence of numbers, non-empty, positive, decreasing."""
    how = "pass e.g. sigmas=torch.logspace(1, -2, 10) or [10.0, 1.0, 0.1] (largest first)"
    if isinstance(sigmas, (torch.Tensor, np.ndarray)):
        if sigmas.ndim != 1:
            raise ValueError(
                f"sigmas must be a 1-D tensor or array of noise levels, got {sigmas.ndim}-D of shape "
                f"{tuple(sigmas.shape)}; {how} (a single level: sigmas=[sigma])"
            )
        sigmas = sigmas.tolist()
    elif isinstance(sigmas, (str, bytes)) or not isinstance(sigmas, Iterable):
        raise TypeError(
            f"sigmas must be a sequence or 1-D tensor of noise levels, got {type(sigmas).__name__}; "
            f"{how} (a single level: sigmas=[sigma])"
        )
    sigmas = list(sigmas)
    if any(isinstance(s, bool) or not isinstance(s, numbers.Real) for s in sigmas):
        raise TypeError(f"sigmas must hold numbers, got {sigmas!r}; {how}")
    levels = [float(s) for s in sigmas]
    finite = all(0 < s < float("inf") for s in levels)
    if not levels or not finite or any(b > a for a, b in itertools.pairwise(levels)):
        raise ValueError(
            f"sigmas must be a non-empty decreasing sequence of positive finite noise levels, got {levels!r}; {how}"
        )
    return levels


class _Chain:
    """The score of one Langevin run, checked at every call; remembers its last input and output so that a
    non-finite state can be blamed on the score or on the step size (:meth:`diagnose`)."""

    def __init__(self, score: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, where: str, what: str):
        self.score, self.x0, self.where, self.what = score, x0, where, what
        self.x, self.s = x0, x0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.x, self.s = x, check_model_output(self.score(x), x, what=self.what)
        return self.s

    def diagnose(self, last_ok: int, step: int) -> tuple[str, None]:
        """The :class:`~sdekit.solvers._base.FiniteWatch` message of a non-finite state after ``step``; raises
        :class:`ModelOutputError` instead when the score broke at a state of moderate size."""
        size = float(self.x.abs().max())
        if bool(torch.isfinite(self.s).all()):
            return (
                f"Langevin dynamics diverged (non-finite state, finite score) at step {step}{self.where}; lower the "
                "step size (it is too large for the score's stiffness)",
                None,
            )
        scale = size if last_ok == 0 else max(1.0, float(self.x0.abs().max()))
        if size <= _RUNAWAY * scale:
            # the state is still of the size it started at: the score itself is broken there
            raise ModelOutputError(
                f"{self.what} returned non-finite values (NaN or inf) at step {step}{self.where}, at finite states of "
                f"moderate size (largest |x| = {size:.3g}); check the score function (e.g. a log or a "
                "division by zero): a smaller step size would not help"
            )
        return (
            f"Langevin dynamics diverged at step {step}{self.where}: {self.what} returned non-finite values after the "
            f"chain ran away (largest |x| = {size:.3g}, started within {scale:.3g}); lower the step size "
            "(it is too large for the score's stiffness)",
            None,
        )


def _ula(
    score: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    h: float,
    n_steps: int,
    generator: torch.Generator | None,
    where: str,
    what: str = "score(x)",
) -> torch.Tensor:
    """``n_steps`` of ULA with step h, every state checked (one host read per step)."""
    chain = _Chain(score, x, where, what)

    def noise(like: torch.Tensor) -> torch.Tensor:
        return _random.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)

    return langevin_steps(chain, x, h, (2 * h) ** 0.5, n_steps, noise, FiniteWatch(1, n_steps, chain.diagnose))


def langevin(
    score: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    step_size: float,
    n_steps: int,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Unadjusted Langevin algorithm: :math:`x_{k+1} = x_k + h\,s(x_k) + \sqrt{2h}\,z_k`.

    The Euler–Maruyama discretisation of :math:`dx = s(x)\,dt + \sqrt2\,dB` with :math:`dt = h`; with the
    exact score :math:`s = \nabla\log p` the chain approaches :math:`p` (after a time
    :math:`n h` of a few mixing times) up to an :math:`O(h)` bias. No Metropolis correction.

    Args:
        score: ``score(x) -> tensor like x`` (e.g. ``mixture.score`` or ``lambda x: model(x, t)``).
        x0: initial states, shape (batch, *event_shape); each row is an independent chain.
        step_size: :math:`h > 0` (time step of the diffusion).
        n_steps: number of steps.
        generator: random generator for the noise.

    Returns:
        The states after ``n_steps`` steps, shaped like ``x0`` (no graph is kept).

    Raises:
        SolverDivergedError: the state became non-finite with a finite score (step too large for the score's
            stiffness).
        ModelOutputError: the score's output is not a tensor with x's shape and dtype, or it is non-finite.
    """
    if not callable(score):
        raise TypeError(f"score must be a callable score(x), got {type(score).__name__}")
    x = check_batch(x0, "x0").detach()
    h = check_positive("step_size", step_size)
    n_steps = _check_steps(n_steps)
    check_generator(generator)
    with torch.no_grad():
        return _ula(score, x, h, n_steps, generator, "")


def annealed_langevin(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    step_lr: float,
    n_steps_each: int,
    *,
    generator: torch.Generator | None = None,
    denoise: bool = False,
) -> torch.Tensor:
    r"""Annealed Langevin dynamics (NCSN, Song & Ermon 2019, Algorithm 1).

    For each noise level :math:`\sigma_i` (largest first), ``n_steps_each`` steps of

    .. math:: x \leftarrow x + \tfrac{\alpha_i}{2}\,s(x, \sigma_i) + \sqrt{\alpha_i}\,z,
              \qquad \alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2,

    with :math:`\epsilon` = ``step_lr`` and :math:`\sigma_L` the smallest level. With ``denoise=True`` a
    final Tweedie step :math:`x + \sigma_L^2 s(x, \sigma_L)` removes the last level's noise (the posterior
    mean of the clean sample).

    To use an sdekit time-conditioned model trained on a variance-exploding SDE, map levels to times,
    e.g. ``score = lambda x, s: model(x, t_of_sigma(s))``.

    Args:
        score: noise-conditional score ``score(x, sigma) -> tensor like x``; ``sigma`` is passed as a
            tensor of shape (batch,) filled with the current level (x's dtype and device).
        x0: initial states, shape (batch, *event_shape) (NCSN: uniform noise or a wide Gaussian).
        sigmas: noise levels, decreasing, all > 0.
        step_lr: :math:`\epsilon > 0`, the step at the smallest level.
        n_steps_each: steps per level.
        generator: random generator for the noise.
        denoise: add the final Tweedie denoising step.

    Returns:
        Samples shaped like ``x0``.
    """
    if not callable(score):
        raise TypeError(f"score must be a callable score(x, sigma), got {type(score).__name__}")
    x = check_batch(x0, "x0").detach()
    levels = _check_sigmas(sigmas)
    eps = check_positive("step_lr", step_lr)
    n_steps_each = _check_steps(n_steps_each, "n_steps_each")
    check_generator(generator)
    if not isinstance(denoise, bool):
        raise TypeError(f"denoise must be True or False, got {denoise!r}")
    smallest = levels[-1]
    with torch.no_grad():
        for i, sigma in enumerate(levels):
            level = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
            alpha = eps * sigma**2 / smallest**2
            x = _ula(
                lambda y, level=level: score(y, level),
                x,
                alpha / 2,
                n_steps_each,
                generator,
                f" of noise level {i} (sigma = {sigma:g})",
                "score(x, sigma)",
            )
        if denoise:
            level = torch.full((x.shape[0],), smallest, dtype=x.dtype, device=x.device)
            x = x + smallest**2 * check_model_output(score(x, level), x, what="score(x, sigma)")
    return x
