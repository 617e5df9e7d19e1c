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
