"""The quick demo run shared by the tests of this folder: ``sdekit demo --quick --seed 0``, made once per session
(per xdist worker) and read back as its exit code, output directory, report.json and stdout."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import NamedTuple

import pytest

from sdekit.cli import main


class QuickRun(NamedTuple):
    code: int  # exit code of `sdekit demo --quick`
    out: Path  # its --out directory
    report: dict  # report.json
    stdout: str  # what it printed on stdout (the headline summary)
    seed: int  # its --seed


@pytest.fixture(scope="session")
def quick(tmp_path_factory) -> QuickRun:
    seed = 0
    out = tmp_path_factory.mktemp("demo")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["demo", "--quick", "--out", str(out), "--seed", str(seed)])
    report = json.loads((out / "report.json").read_text())
    return QuickRun(code, out, report, stdout.getvalue(), seed)
