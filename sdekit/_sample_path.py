"""The trajectory of :func:`sdekit.sample` (``ts=``): the requested times checked, and the run cut into segments
that share the solver's own time grid."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import torch

from .solvers._grids import solver_time_grid

if TYPE_CHECKING:  # pragma: no cover
    from .symbolic.sde import SDE

__all__ = ["check_path_times", "segment_steps", "segments"]


def check_path_times(ts: Any, T: float, eps: float, grid_times: torch.Tensor | None = None) -> list[float] | None:
    """``ts`` of :func:`sample` as a strictly decreasing list of floats in [eps, T], or None; with explicit
    ``grid=`` times, each snapped onto its grid point (within 1e-6 T), which it must be."""
    if ts is None:
        return None
    if isinstance(ts, torch.Tensor):
        if ts.ndim != 1 or not (ts.is_floating_point() or ts.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"ts must be a 1-D real tensor of times, got shape {tuple(ts.shape)}, dtype {ts.dtype}")
        times = [float(v) for v in ts.detach().cpu().to(torch.float64).tolist()]
    elif isinstance(ts, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ts):
        times = [float(v) for v in ts]
    else:
        raise TypeError(f"ts must be a 1-D tensor or a sequence of times, got {type(ts).__name__}")
    if not times or not all(math.isfinite(v) for v in times):
        raise ValueError("ts must be a non-empty sequence of finite times")
    if any(b >= a for a, b in itertools.pairwise(times)):
        raise ValueError(f"ts must be strictly decreasing (sampling runs from T down to eps), got {times}")
    tol = 1e-6 * T  # float32 times (e.g. torch.linspace(T, eps, k)) snap onto T and eps
    if times[0] > T + tol or times[-1] < eps - tol:
        raise ValueError(f"ts must lie in [eps, T] = [{eps:g}, {T:g}], got [{times[-1]:g}, {times[0]:g}]")
    times = [T if abs(v - T) <= tol else eps if abs(v - eps) <= tol else v for v in times]
    if grid_times is not None:
        nearest = [float(grid_times[int((grid_times - v).abs().argmin())]) for v in times]
        off = [v for v, g in zip(times, nearest) if abs(v - g) > tol]
        if off:
            raise ValueError(f"with explicit grid= times, ts must be points of the grid; {off[0]:g} is not")
        times = nearest
    if any(b >= a for a, b in itertools.pairwise(times)):
        raise ValueError(f"ts has times closer than {tol:g} to each other or to eps/T: {times}")
    return times


def segment_steps(
    sde: SDE, impl: Any, opts: dict[str, Any], T: float, eps: float, n_total: int | None, segments: list
) -> list[int | None]:
    """Steps of each (start, end) segment: the share of the solver's own n_total-step grid that lies in it.

    The full grid (kind from ``grid=`` or the solver's default :attr:`~sdekit.solvers.Solver.grid`) is
    built once; each interior cut takes the index of its nearest grid time, and a segment gets the
    index difference (at least 1), so the steps add up to n_total and follow the grid's density (e.g.
    log-SNR: most steps at small t). One segment (no interior ``ts``): n_total itself.
    """
    if n_total is None:
        return [None] * len(segments)
    if len(segments) == 1:
        return [n_total]
    full = solver_time_grid(sde, T, eps, n_total, impl, opts)
    idx = [0] + [int((full - b).abs().argmin()) for _, b in segments[:-1]] + [n_total]
    return [max(1, hi - lo) for lo, hi in itertools.pairwise(idx)]


def segments(T: float, eps: float, path_times: list[float] | None) -> list[tuple[float, float]]:
    """Consecutive (start, end) pairs from T down to eps through the requested output times."""
    cuts = [T, *(v for v in (path_times or []) if eps < v < T), eps]
    return list(itertools.pairwise(cuts))
