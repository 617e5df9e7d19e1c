"""Every ```python block of README.md and docs/*.md runs as written.

Each block runs on its own, in a fresh namespace, with the working directory in a temporary
folder, one torch thread and the Agg matplotlib backend. A block that is deliberately a fragment
(a signature listing, say) is skipped when the line before its opening fence is
``<!-- fragment -->``; a block that imports an optional extra (:data:`OPTIONAL`) is skipped where it is
missing. pymdownx.snippets includes (``--8<-- "path"``) are replaced by the file, as mkdocs does. Test ids
are ``file:line`` of the opening fence.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FRAGMENT = "<!-- fragment -->"
SLOW: set[str] = {"docs/images.md:14"}  # ids ("docs/x.md:12") of blocks that take more than a few seconds
OPTIONAL = {"diffusers"}  # optional extras: a block that imports one is skipped where it is not installed

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_SNIPPET = re.compile(r"""^\s*--8<--\s+["']?(?P<path>[^"'\s]+)["']?\s*$""")


def _blocks(path: Path) -> list[tuple[int, str]]:
    """(line of the opening fence, source) of every ```python block that is not marked as a fragment."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        start = i
        body = []
        i += 1
        while i < len(lines) and not _closes(lines[i], fence):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        language = info.split()[0].lstrip("{.").rstrip("}") if info else ""
        fragment = start > 0 and lines[start - 1].strip() == FRAGMENT
        if language in ("python", "py") and not fragment:
            found.append((start + 1, "\n".join(_resolve_snippets(body)) + "\n"))
    return found


def _closes(line: str, fence: str) -> bool:
    """A closing fence: only the opening fence's character, at least as many times."""
    text = line.strip()
    return len(text) >= len(fence) and text == fence[0] * len(text)


def _resolve_snippets(body: list[str]) -> list[str]:
    out = []
    for line in body:
        m = _SNIPPET.match(line)
        out.extend((ROOT / m["path"]).read_text(encoding="utf-8").splitlines() if m else [line])
    return out


def _cases():
    for path in FILES:
        rel = path.relative_to(ROOT).as_posix()
        for line, source in _blocks(path):
            block_id = f"{rel}:{line}"
            marks = [pytest.mark.slow] if block_id in SLOW else []
            yield pytest.param(rel, line, source, id=block_id, marks=marks)


CASES = list(_cases())


def test_the_docs_have_python_blocks():
    assert len(CASES) >= 10, [c.id for c in CASES]


@pytest.mark.parametrize(("rel", "line", "source"), CASES)
def test_docs_block_runs(rel, line, source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)  # as a reader's session: conftest may have changed it
    where = f"{rel}:{line}"
    try:
        code = compile(source, where, "exec")
        exec(code, {"__name__": "__docs_block__"})
    except ModuleNotFoundError as exc:
        if exc.name not in OPTIONAL:
            pytest.fail(f"the ```python block at {where} failed: {type(exc).__name__}: {exc}", pytrace=False)
        pytest.skip(f"{where} needs the optional package {exc.name}")
    except Exception as exc:
        pytest.fail(f"the ```python block at {where} failed: {type(exc).__name__}: {exc}", pytrace=False)
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        try:
            import matplotlib.pyplot as plt

            plt.close("all")
        except ImportError:  # pragma: no cover
            pass
    assert os.getcwd() == str(tmp_path)


def test_extractor_skips_fragments_and_other_languages_and_resolves_snippets(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\na = 1\n```\n\n<!-- fragment -->\n```python\nf(x, *, y=...)\n```\n\n"
        "```bash\nls\n```\n\n* item\n\n    ```python\n    b = 2\n    ```\n\n"
        '```python\n--8<-- "examples/test_my_sde.py"\n```\n',
        encoding="utf-8",
    )
    blocks = _blocks(page)
    assert [line for line, _ in blocks] == [3, 18, 22]
    assert blocks[0][1] == "a = 1\n" and blocks[1][1] == "b = 2\n"
    assert blocks[2][1].rstrip("\n") == (ROOT / "examples" / "test_my_sde.py").read_text(encoding="utf-8").rstrip("\n")
