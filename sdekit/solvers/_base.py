r"""Solver base class, the problems solvers receive and the one finiteness watch.

A solver integrates from ``t_start`` (usually T) down to ``t_end`` (usually eps)
either the reverse-time SDE or the probability-flow ODE of ``problem.sde`` with the
score ``problem.score`` (:meth:`Solver.solve`, for :func:`sdekit.sample`); solvers with
:attr:`Solver.can_simulate` also integrate the forward SDE (:meth:`Solver.simulate`, for
:func:`sdekit.simulate`). Capabilities are class attributes, read by the registry, by the entry
points' input checks and by the docs; the options a solver accepts are one of them
(:attr:`Solver.options_declared`: name, type, range, default and meaning of each, :mod:`sdekit.solvers._option`;
checked by :meth:`Solver.check_options` before any work and by :meth:`Solver.options`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .. import _random
from ..errors import SolverDivergedError, SolverError
from ._budget import SDE_MAX_REJECTED, SDE_MAX_STEPS
from ._grids import GRIDS, _scales, valid_grid
from ._option import Option, check_given

if TYPE_CHECKING:  # pragma: no cover
    from ..symbolic.sde import SDE

__all__ = ["FiniteWatch", "Solver", "SamplingProblem", "SimulationProblem", "SolveStats", "ensure_finite"]


@dataclasses.dataclass
class SamplingProblem:
    """What a solver needs. ``score(x, t)`` takes t of shape (batch,) and counts NFE itself.

    ``progress(n)`` advances a progress bar by n steps (a no-op when progress is off).
    ``options`` holds solver-specific keywords (``corrector``, ``snr``, ``method`` ...).
    """

    sde: SDE
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    x_T: torch.Tensor
    t_start: float
    t_end: float
    steps: int | None
    rtol: float
    atol: float
    generator: _random.RandomSource
    """Source of every draw of the solve: :func:`sdekit.sample` passes per-block :class:`~sdekit._random.Streams`
    (or None for torch's global generator); draw through :mod:`sdekit._random` (e.g.
    :meth:`~sdekit.solvers._native.StepContext.noise`), never ``torch.randn(generator=...)``."""
    progress: Callable[[int], None]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    nfe_budget: int | None = None
    """Solvers with :attr:`Solver.steps_are_nfe`: the model evaluations this solve may spend (``steps`` of
    :func:`sdekit.sample` minus its final denoising step), from which a singlestep solver plans its orders;
    None: ``steps`` intervals at the solver's full order."""


@dataclasses.dataclass(frozen=True)
class SimulationProblem:
    """What :meth:`Solver.simulate` needs: the forward SDE from ``x0`` at ``times[0]`` through the output ``times``.

    ``steps`` (uniform steps over the whole span) or ``dt`` (step size) run fixed steps that end exactly on
    every output time; neither runs the adaptive controller with ``rtol``/``atol``, at most ``max_steps``
    attempted and ``max_rejected`` rejected steps (None: no limit). ``bm`` (a torchsde Brownian motion of shape
    ``(batch, d)`` in forward time) replaces the draws from ``generator``.
    """

    sde: SDE
    x0: torch.Tensor
    times: tuple[float, ...]
    steps: int | None
    dt: float | None
    rtol: float
    atol: float
    generator: torch.Generator | None
    bm: Any
    check_every: int
    max_steps: int | None = SDE_MAX_STEPS
    max_rejected: int | None = SDE_MAX_REJECTED


@dataclasses.dataclass
class SolveStats:
    """Step counts a solver reports. Model evaluations (NFE) are counted by :func:`sdekit.sample`'s score
    wrapper; ``evaluations`` counts the drift evaluations of the solved SDE where a solver counts them
    (torchsde solvers: :func:`sdekit.simulate`'s NFE)."""

    steps: int = 0
    accepted: int = 0
    rejected: int = 0
    evaluations: int = 0


class Solver(abc.ABC):
    """Base class of every registered solver.

    Subclasses set the class attributes below and implement :meth:`_solve`. The public
    :meth:`solve` checks the SDE against the declared capabilities first.
    """

    name: ClassVar[str]
    """Registry name (``sdekit.sample(..., solver=name)``)."""
    kind: ClassVar[str]
    """``"sde"`` (integrates the reverse SDE) or ``"ode"`` (the probability-flow ODE)."""
    strong_order: ClassVar[float | None] = None
    """Strong order for diagonal noise (None for ODE / not applicable)."""
    strong_order_additive: ClassVar[float | None] = None
    """Strong order for additive noise, when higher than :attr:`strong_order`."""
    weak_order: ClassVar[float | None] = None
    """Weak order (ODE solvers: the global order of the method)."""
    weak_order_additive: ClassVar[float | None] = None
    """Weak order for additive noise, when higher than :attr:`weak_order`."""
    adaptive: ClassVar[bool] = False
    """Whether ``steps=None`` runs an adaptive step-size controller with rtol/atol."""
    noise_types: ClassVar[tuple[str, ...]] = ("additive", "diagonal")
    """Noise types of the forward SDE this solver handles."""
    requires_affine: ClassVar[bool] = False
    """Whether the solver needs the Gaussian marginal (affine SDE)."""
    default_steps: ClassVar[int | None] = None
    """Steps used when ``steps=None`` and the solver is not adaptive (the documented recommendation)."""
    recommended_steps: ClassVar[int | None] = None
    """Adaptive solvers that also take ``steps=n`` (torchsde): the documented fixed step count (the
    sliced-KS test of ``docs/sampling.md`` passes at it on every affine zoo SDE, on :attr:`grid`).
    Fixed-grid solvers document theirs as :attr:`default_steps`."""
    recommended_rtol: ClassVar[float | None] = None
    """Adaptive runs: the rtol = atol that :func:`sdekit.sample` uses when none is given (None: 1e-3); the
    sliced-KS test of ``docs/sampling.md`` passes at it."""
    grid: ClassVar[str] = "uniform"
    """Default time grid of fixed-step runs: ``"uniform"`` in t, ``"quadratic"``, ``"logsnr"``, ``"edm"``, ``"arctan"``
    or ``"optimized"`` (:mod:`sdekit.solvers._grids`; option ``grid=``). Non-affine SDEs fall back to uniform."""
    grid_max_step: ClassVar[float | None] = None
    r"""Longest step in the log-SNR :math:`\lambda` the ``"optimized"`` grid may take (None: no cap). An explicit
    method on the reverse SDE, whose drift contracts :math:`x - \alpha\hat x_0` at the rate 2 per unit of
    :math:`\lambda`, overshoots the denoised mean once :math:`1 - 2h < 0`, hence 0.5 for the SDE solvers and 1 for
    explicit probability-flow solvers in t (rate 1); the exponential integrators and the exact-kernel samplers solve
    that linear part exactly and need no cap (:mod:`sdekit.solvers._grids`)."""
    can_sample: ClassVar[bool] = True
    r"""Whether :func:`sdekit.sample` runs this solver (on the reverse SDE or the PF-ODE).

    False for a method that is fine on forward SDEs (:func:`sdekit.simulate`) but unstable on the
    reverse dynamics of a diffusion model, which contract at the rate :math:`\approx g^2/\sigma^2`
    (e.g. ``reversible_heun``, whose undamped parasitic mode grows at exactly that rate).
    :func:`sdekit.sample` then raises :class:`~sdekit.errors.SolverError` with :attr:`sample_refusal`
    unless ``allow_unstable=True`` is passed; :meth:`solve` itself does not refuse.
    """
    sample_refusal: ClassVar[str] = ""
    """Why :attr:`can_sample` is False and what to use instead (the ``SolverError`` message of ``sample``)."""
    can_simulate: ClassVar[bool] = False
    """Whether :func:`sdekit.simulate` can integrate the *forward* SDE with this solver (:meth:`simulate`;
    the torchsde solvers)."""
    options_declared: ClassVar[Mapping[str, Option]] = {
        "grid": Option.custom(
            None,
            "time grid of fixed-step runs (sdekit.solvers._grids); all kinds but 'uniform' and 'quadratic' need an "
            "affine SDE, and a non-affine SDE falls back to 'uniform' from the default; explicit times: the run "
            "goes from the first to the last on exactly these points (sample() takes steps and eps from them)",
            accepts=f"one of {', '.join(map(repr, GRIDS))} or a strictly decreasing 1-D sequence of times",
            test=valid_grid,
            none=True,
            default_note="the solver's default grid",
        ),
        "rho": Option.positive(7.0, "exponent of the 'edm' grid (Karras et al. 2022)"),
        "data_std": Option.custom(
            1.0,
            "standard deviation of the data that shapes the 'optimized' grid; a sequence: the standard deviations "
            "along the data's principal axes",
            accepts="a number > 0 or a non-empty sequence of them",
            test=lambda v: _valid_scales(v),
        ),
    }
    """Options this class adds to those of its bases (``sdekit.sample(..., **options)``): name ->
    :class:`~sdekit.solvers._option.Option` (default, accepted type and range, meaning).

    :meth:`declared_options` merges them along the class hierarchy: every solver takes ``grid``, ``rho`` and
    ``data_std`` (fixed-step time grid, :mod:`sdekit.solvers._grids`); a family adds its own (``check_every`` ...),
    a solver its own (``variance`` ...). :meth:`check_options` rejects any other key and any value outside its
    declaration. Options marked ``passthrough`` (torchdiffeq's own) are passed on only when given."""
    options_note: ClassVar[str] = ""
    """Ends the message of an unknown option (e.g. where the accepted names come from: torchdiffeq's methods)."""
    options_defaults: ClassVar[Mapping[str, Any]] = {}
    """Deprecated: options declared by default value alone (accepted unchecked; ``tests/solvers/test_solver_options.py``
    fails while any registered solver has one). Declare them in :attr:`options_declared`."""
    startup_nfe: ClassVar[int] = 0
    """Model evaluations spent once per run on top of the per-step cost (``exp3``: 1, the log-SNR midpoint of its
    singlestep first step)."""
    steps_are_nfe: ClassVar[bool] = False
    r"""Whether ``steps=k`` of :func:`sdekit.sample` means k model evaluations in all (the exponential-family and
    multistep samplers, counted as DPM-Solver and diffusers count them): the start-up, every step and the final
    denoising step at :math:`\epsilon` (``denoise=True``, one evaluation) together spend exactly k, so
    ``info.nfe == k``. :meth:`intervals` turns k into the number of grid intervals. False: ``steps`` counts
    grid intervals (``info.nfe`` is then steps times the NFE per step, plus the denoising step)."""
    description: ClassVar[str] = ""
    """One line for ``sdekit.solvers.available()`` and the docs."""

    def intervals(self, nfe: int, options: Mapping[str, Any]) -> int:
        """Grid intervals of a run that may spend ``nfe`` model evaluations (solvers with :attr:`steps_are_nfe`;
        default: one evaluation per interval after :attr:`startup_nfe`). ``options`` are the run's solver options."""
        return nfe - self.startup_nfe

    def grid_order(self, options: Mapping[str, Any], sde: SDE | None = None) -> int:
        """The order p the ``"optimized"`` grid is shaped for in a run with these ``options``
        (:mod:`sdekit.solvers._grids`): by default the declared weak order (:attr:`weak_order_additive` when ``sde``
        has additive noise and it is declared), rounded, at least 1. Solvers whose order is an option (``unipc``) or
        a class attribute ``order`` (the exponential integrators) override this with the order they actually run."""
        additive = sde is not None and sde.noise_type == "additive"
        order = (self.weak_order_additive if additive else None) or self.weak_order or 1
        return max(1, round(float(order)))

    def check(self, sde: SDE) -> None:
        """Raise :class:`~sdekit.errors.SolverError` if this solver cannot handle ``sde``."""
        if sde.noise_type not in self.noise_types:
            raise SolverError(
                f"solver {self.name!r} does not support {sde.noise_type} noise (supports: "
                f"{', '.join(self.noise_types)}); choose another solver, e.g. 'euler'"
            )
        if self.requires_affine and not sde.is_affine:
            raise SolverError(
                f"solver {self.name!r} needs the Gaussian marginal of an affine SDE, but {sde!r} is not affine; "
                f"use 'euler', 'srk' or 'ode'"
            )

    @classmethod
    def declared_options(cls) -> dict[str, Option]:
        """Every option this solver takes: name -> :class:`~sdekit.solvers._option.Option`
        (:attr:`options_declared` merged along the class hierarchy, base first)."""
        return cls._merged("options_declared")

    @classmethod
    def _undeclared_options(cls) -> dict[str, Any]:
        """Options given only a default in the deprecated :attr:`options_defaults` (merged base first)."""
        return cls._merged("options_defaults")

    @classmethod
    def _merged(cls, attribute: str) -> dict[str, Any]:
        """The class attribute ``attribute`` (a mapping) of every class in the hierarchy merged, base first."""
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get(attribute, {}))
        return merged

    @classmethod
    def accepted_options(cls) -> dict[str, Any]:
        """The options every run of this solver receives, with their defaults: the :meth:`declared_options` that
        are not ``passthrough`` (a backend's own keywords, passed on only when given)."""
        declared = {name: o.default for name, o in cls.declared_options().items() if not o.passthrough}
        return {**declared, **cls._undeclared_options()}

    @classmethod
    def check_options(
        cls,
        given: Mapping[str, Any],
        *,
        arguments: Collection[str] = (),
        function: str = "",
        note: str = "",
    ) -> dict[str, Any]:
        """``given`` options checked by name, type and range against :meth:`declared_options`, values normalised.

        An unknown name raises :class:`~sdekit.errors.SolverOptionError` listing the accepted names, with close
        matches among them and among ``arguments`` (the caller's own argument names, e.g. :func:`sdekit.sample`'s,
        so that ``stpes=10`` suggests ``steps=``); ``note`` ends that message. A value outside its declaration
        raises it naming the solver, the option, the value, the accepted type or range and the default.
        """
        return check_given(
            given,
            cls.declared_options(),
            who=f"solver {cls.name!r}",
            undeclared=cls._undeclared_options(),
            arguments=arguments,
            function=function,
            note=cls.options_note + note,
        )

    def options(self, problem: SamplingProblem, *, note: str = "") -> dict[str, Any]:
        """``problem.options`` checked (:meth:`check_options`; ``note`` ends the unknown-name message) over the
        defaults of :meth:`accepted_options`."""
        return {**self.accepted_options(), **self.check_options(problem.options, note=note)}

    def solve(self, problem: SamplingProblem) -> tuple[torch.Tensor, SolveStats]:
        """Integrate from ``problem.t_start`` to ``problem.t_end``; returns (x, stats)."""
        self.check(problem.sde)
        return self._solve(problem)

    @abc.abstractmethod
    def _solve(self, problem: SamplingProblem) -> tuple[torch.Tensor, SolveStats]:
        """Solver-specific integration (inputs already validated)."""

    def simulate(self, problem: SimulationProblem) -> tuple[torch.Tensor, SolveStats]:
        """Integrate the forward SDE through ``problem.times``; returns (states of shape ``(len(times), *x0.shape)``,
        stats). Only for solvers with :attr:`can_simulate`."""
        if not self.can_simulate:
            raise SolverError(f"solver {self.name!r} cannot integrate a forward SDE (its can_simulate is False)")
        self.check(problem.sde)
        return self._simulate(problem)

    def _simulate(self, problem: SimulationProblem) -> tuple[torch.Tensor, SolveStats]:
        """Solver-specific forward integration (solvers with :attr:`can_simulate` override it)."""
        raise NotImplementedError


def _valid_scales(value: Any) -> bool:
    """Whether ``data_std`` is a positive number or a non-empty sequence of them (:func:`~._grids._scales`)."""
    try:
        _scales(value)
    except SolverError:
        return False
    return True


def ensure_finite(y: torch.Tensor, describe: Callable[[], str], *, t: float | None, step: int | None) -> None:
    """Raise :class:`~sdekit.errors.SolverDivergedError` ``(describe(), t=t, step=step)`` if ``y`` holds a NaN or
    an inf. One host read; the message is only built on failure. Every finiteness check of the solvers goes
    through here (directly for one-off checks, through :class:`FiniteWatch` in loops)."""
    if not bool(torch.isfinite(y).all()):
        raise SolverDivergedError(describe(), t=t, step=step)


class FiniteWatch:
    """Finiteness watch of a stepping loop: one host read every ``every`` steps and at the last one (``n``).

    Call it after step ``i`` (1-based) with the new state (a tensor or a tuple of tensors). When the state
    holds a NaN or an inf it raises :class:`~sdekit.errors.SolverDivergedError` with ``describe(last_ok, i)``:
    the message and the time of step ``i``, where ``last_ok`` is the last step known to be finite (0 = the start).
    ``describe`` may instead raise a more specific error itself (Langevin: the score, not the step, is at fault).

    Between reads nothing is synchronised, so the loop stays asynchronous on a GPU. By default a read
    knows only that the state went bad since the previous read (``last_ok`` < ``i`` - 1 is possible;
    ``every=1`` pins the step). ``pin=True`` pins it at any ``every``: two device scalars (all states
    finite so far; number of finite steps) are updated at every step, costing three small tensor
    operations per step, and a failed read reports ``describe(k, k + 1)`` for the first bad step k + 1.
    """

    def __init__(
        self, every: int, n: int | None, describe: Callable[[int, int], tuple[str, float | None]], *, pin: bool = False
    ):
        self.every, self.n, self.describe, self.pin = max(1, int(every)), n, describe, pin
        self.last_ok = 0
        self._alive: torch.Tensor | None = None
        self._finite_steps: torch.Tensor | None = None

    def __call__(self, i: int, y: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
        if self.pin:
            self._record(y)
        if i % self.every and i != self.n:
            return
        if self.pin:
            if not bool(self._alive):
                k = int(self._finite_steps)  # steps 1..k were finite; step k + 1 produced the first non-finite state
                self._raise(k, k + 1)
        elif not bool(_all_finite(y)):
            self._raise(self.last_ok, i)
        self.last_ok = i

    def _record(self, y: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
        if self._alive is None:
            device = (y[0] if isinstance(y, tuple) else y).device
            self._alive = torch.ones((), dtype=torch.bool, device=device)
            self._finite_steps = torch.zeros((), dtype=torch.long, device=device)
        self._alive = self._alive & _all_finite(y)
        self._finite_steps = self._finite_steps + self._alive

    def _raise(self, last_ok: int, i: int) -> None:
        message, t = self.describe(last_ok, i)
        raise SolverDivergedError(message, t=t, step=i)


def _all_finite(y: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Device scalar: whether ``y`` (a tensor or a tuple of tensors) holds no NaN or inf."""
    if not isinstance(y, tuple):
        return torch.isfinite(y).all()
    ok = torch.isfinite(y[0]).all()
    for part in y[1:]:
        ok = ok & torch.isfinite(part).all()
    return ok
