"""No import circles: read from the sources, every import counted (at the top, under
``TYPE_CHECKING`` or inside a function: a lazy import is a circle all the same)."""

from __future__ import annotations

import ast
from pathlib import Path

import trio_realtime

PACKAGE = Path(trio_realtime.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                module = node.module or ""
                stem = f"{base}.{module}".rstrip(".") if node.level else module
                targets = [f"{stem}.{alias.name}" for alias in node.names]
                if node.module:  # (``from . import x`` imports x, not the package's circle)
                    targets.append(stem)
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_imports_of_every_kind() -> None:
    graph = import_graph()
    assert "trio_realtime._cli_common" in graph["trio_realtime._cli_demo"]
    assert "trio_realtime._tools" in graph["trio_realtime._session"]
    assert "trio_realtime._events" in graph["trio_realtime._codec"]


def test_no_import_circle_in_the_package() -> None:
    assert [sorted(c) for c in circles(import_graph())] == []


def test_the_tools_module_does_not_import_the_session() -> None:
    assert "trio_realtime._session" not in import_graph()["trio_realtime._tools"]
