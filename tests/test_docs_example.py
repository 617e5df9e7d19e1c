"""The "Test your SDE" page's example (examples/test_my_sde.py, included verbatim by docs/testing.md) runs here."""

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "test_my_sde.py"


def test_docs_example_file_passes():
    spec = importlib.util.spec_from_file_location("example_test_my_sde", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = [getattr(module, name) for name in dir(module) if name.startswith("test_")]
    assert tests, f"{EXAMPLE} defines no tests"
    for test in tests:
        test()  # hypothesis-decorated: runs all its examples, raises on a failure
