"""``python -m benchmarks``: a help written for users (each benchmark, its cost, examples); one-line errors."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import ABOUT, MODULES, main


def test_help_describes_every_benchmark_with_its_duration(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert set(ABOUT) == set(MODULES)
    for name in MODULES:
        assert f"  {name}:" in out
        assert "About " in ABOUT[name] and "QUICK_MINUTES" not in ABOUT[name]
    for option in ("--repeats", "--threads", "--quick"):
        assert option in out
    assert "examples:" in out and "python -m benchmarks error_vs_nfe --quick" in out
    assert max(len(line) for line in out.splitlines()) <= 100


@pytest.mark.parametrize(("argv", "option"), [(["--repeats", "0"], "--repeats"), (["nope"], "nope")])
def test_bad_options_are_one_line_exit_2(argv, option, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0]
