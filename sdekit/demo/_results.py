"""The demo's records (one sampling run, the whole report) and the way its numbers are written."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SampleRun",
    "DemoReport",
    "load_report",
    "write_json",
    "sde_label",
    "fmt",
    "nats",
    "tol_label",
    "level_label",
]


@dataclass
class SampleRun:
    """One sampling run: solver, ladder level, which score, NFE, KS ratio, seconds (or the failure)."""

    solver: str
    model: str  # "learned" or "exact"
    steps: int | None
    tol: float | None
    nfe: int | None = None
    ks_ratio: float | None = None
    seconds: float | None = None
    error: str | None = None


@dataclass
class DemoReport:
    """Everything ``report.json`` holds."""

    command: str
    sde: str
    seed: int
    quick: bool
    device: str
    eps: float
    n_samples: int
    ks_alpha: float
    ks_directions: int
    ks_critical: float
    train: dict[str, Any] = field(default_factory=dict)
    runs: list[SampleRun] = field(default_factory=list)
    logp: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)  # outliers and their diagnosis (_diagnose)
    seconds: dict[str, float] = field(default_factory=dict)


def load_report(path: Path) -> DemoReport:
    """A :class:`DemoReport` read back from ``report.json`` (to rebuild the tables or the figures)."""
    d = json.loads(Path(path).read_text())
    d["runs"] = [SampleRun(**r) for r in d["runs"]]
    return DemoReport(**d)


def write_json(rep: DemoReport | dict[str, Any], path: Path) -> None:
    """``report.json``: every number of the run (a :class:`DemoReport` is read back by :func:`load_report`; the
    digits demo's report is a plain dict)."""
    path.write_text(json.dumps(rep if isinstance(rep, dict) else asdict(rep), indent=1) + "\n")


# --------------------------------------------------------------------------- numbers as text
def sde_label(sde: Any) -> str:
    """``VESDE(sigma_min=0.01, sigma_max=20)``: the SDE's class and parameters, as the reports name it."""
    return f"{type(sde).__name__}({', '.join(f'{k}={float(v):g}' for k, v in sde.params.items())})"


def fmt(v: float | None, spec: str = ".2f") -> str:
    """``v`` in format ``spec``, or an em dash for a missing value."""
    return "—" if v is None else format(v, spec)


def nats(mean: float, se: float) -> str:
    """A likelihood gap ``mean ± se``: 3 decimals when the mean is 0.01 nats or more, else 2 significant digits
    each (a tiny gap never prints as 0)."""
    spec = ".3f" if abs(mean) >= 0.01 else ".1e"
    return f"{mean:{spec}} ± {se:{spec}}"


def tol_label(tol: float) -> str:
    """A tolerance as ``1e-3`` / ``2.5e-4`` (the labels of adaptive points and levels)."""
    mantissa, exponent = f"{tol:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def level_label(steps: int | None, tol: float | None) -> str:
    """A ladder level: ``30 steps`` or ``tol 1e-3``."""
    return f"{steps} steps" if steps is not None else f"tol {tol_label(tol)}"
