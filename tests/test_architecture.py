"""The layering of docs/architecture.md, checked on the source: import graph, sympy's place, module sizes.

Static checks (ast, no imports executed): they read what the code says, so a new back-edge or cycle fails here
with the modules named, instead of surfacing as an ImportError in one import order only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sdekit"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names imported by ``from ... import ...`` (a submodule or the module holding a name)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]


def _imports(path: Path, module: str, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                found.update(_resolve(module, is_package, node))
            elif isinstance(node, ast.If) and _is_type_checking(node):
                continue
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif not top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(node.body)

    visit(tree.body)
    return found


def _graph(*, top_level_only: bool = True) -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {m for m in _imports(path, name, top_level_only=top_level_only) if m in modules and m != name}
        graph[name] = {m for m in targets if not name.startswith(m + ".")}  # a module's own package: not an edge
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


def test_the_graph_sees_the_known_edges():
    # guards the checker itself: these edges exist by design
    graph = _graph()
    assert "sdekit._marginal" in graph["sdekit.symbolic.sde"]
    assert "sdekit.compile" in graph["sdekit.symbolic.sde"]
    assert "sdekit.symbolic.derive" in graph["sdekit._dynamics"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles_among_top_level_imports():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_symbolic_layer_imports_no_runtime():
    # sdekit.symbolic's sympy-only modules never reach torch code; only the SDE hub (sde.py, zoo.py) builds it
    graph = _graph(top_level_only=False)
    pure = [
        m for m in graph if m.startswith("sdekit.symbolic") and m not in ("sdekit.symbolic.sde", "sdekit.symbolic.zoo")
    ]
    assert pure
    for module in pure:
        upward = {m for m in graph[module] if not m.startswith("sdekit.symbolic") and m != "sdekit.errors"}
        assert not upward, f"{module} imports {sorted(upward)}"


@pytest.mark.parametrize("prefix", ["sdekit.solvers", "sdekit._sample", "sdekit._likelihood", "sdekit._simulate"])
def test_no_sympy_below_the_symbolic_layer(prefix):
    for name, path in _modules().items():
        if name == prefix or name.startswith(prefix + "."):
            imported = _imports(path, name, top_level_only=False)
            assert not {m for m in imported if m == "sympy" or m.startswith("sympy.")}, f"{name} imports sympy"


def test_the_library_does_not_import_the_validation_suite():
    for name, path in _modules().items():
        imported = _imports(path, name, top_level_only=False)
        assert not {m for m in imported if m == "validation" or m.startswith("validation.")}, name


def test_only_the_console_script_imports_the_demo():
    # DESIGN.md §2: sdekit/demo/ is `sdekit demo`, not imported by the library; sdekit.cli builds its parser
    for name, path in _modules().items():
        if name == "sdekit.cli" or name == "sdekit.demo" or name.startswith("sdekit.demo."):
            continue
        imported = _imports(path, name, top_level_only=False)
        assert not {m for m in imported if m == "sdekit.demo" or m.startswith("sdekit.demo.")}, name
    assert "sdekit.demo._cli" in _imports(PACKAGE / "cli.py", "sdekit.cli", top_level_only=False)  # the check sees it


def test_the_worked_example_of_adding_a_solver_samples_the_exact_law(tmp_path):
    # docs/architecture.md's example registers a solver, so it runs in its own interpreter, not in this worker.
    # The check: its samples against the exact law (sliced KS at family-wise level 1e-3, n = 4,000, 16 directions;
    # Euler on the PF-ODE with 200 log-SNR steps is far below that resolution on this 2-D mixture).
    import re
    import subprocess
    import sys

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"<!-- fragment -->\n```python\n(.*?)```", text, flags=re.S)
    check = """
from sdekit._stats import random_directions, sliced_ks
ks = sliced_ks(x.double(), oracle.at(sde.default_eps), random_directions(2, 16, seed=0), alpha=1e-3)
assert info.nfe == 200 and "pf_euler" in sdekit.solvers.available(), info
print("ratio", ks.ratio)
assert ks.ratio <= 1.0, ks.ratio
"""
    script = tmp_path / "example.py"
    script.write_text("import torch\ntorch.manual_seed(0)\n" + block + check, encoding="utf-8")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "pf_euler 200" in run.stdout


MAX_MODULE_LINES = 600
MAX_FUNCTION_CODE_LINES = 100  # a function's lines after its docstring


def test_modules_and_functions_stay_small():
    too_long = []
    for name, path in _modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.body[0]
                has_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
                start = first.end_lineno if has_doc else node.lineno
                if node.end_lineno - start > MAX_FUNCTION_CODE_LINES:
                    too_long.append(f"{name}.{node.name}: {node.end_lineno - start} lines of code")
    assert not too_long, too_long


def _says_why(lines: list[str], lineno: int) -> bool:
    """An in-function import carries a comment saying why it is there ("lazy: ..." or "imported here ..."), on its
    line or above it (a group of consecutive imports shares one comment)."""
    i = lineno - 1
    if "#" in lines[i] and ("lazy" in lines[i] or "imported here" in lines[i]):
        return True
    for line in reversed(lines[:i]):
        text = line.strip()
        if text.startswith("#") and ("lazy" in text or "imported here" in text):
            return True
        if not (text.startswith(("#", "import ", "from ")) or text == ""):
            return False
    return False


def test_every_in_function_import_says_why():
    unexplained = []
    for path in _modules().values():
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and not _says_why(lines, node.lineno):
                        unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not unexplained, unexplained
