"""What the installed package imports is what it declares: every third-party module a module
of the package imports when it loads is a core dependency in pyproject.toml, but for the named
exceptions (an extra's module that is loaded only when chosen; the pytest plugin)."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import trio_realtime

PACKAGE = Path(trio_realtime.__file__).parent
PYPROJECT = PACKAGE.parent.parent / "pyproject.toml"

#: (module, imported package) pairs allowed beyond the core dependencies, and why.
EXCEPTIONS = {
    # The [fast] transport: imported only when a session asks for it.
    ("trio_realtime._transport_ws", "websockets"),
    # The pytest plugin is loaded by pytest.
    ("trio_realtime.testing._plugin", "pytest"),
    # The fake server's REST door parses HTTP with h11, which trio-websocket brings (through
    # wsproto, whose handshake speaks it): the core install stays trio, trio-websocket, attrs.
    ("trio_realtime.testing._http", "h11"),
}


def _distribution_name(requirement: str) -> str:
    name = requirement
    for stop in "<>=!~[; ":
        name = name.split(stop, 1)[0]
    return name.strip().lower().replace("-", "_")


def core_dependencies() -> set[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return {_distribution_name(r) for r in project["dependencies"]}


def test_the_core_install_is_trio_trio_websocket_and_attrs() -> None:
    assert core_dependencies() == {"trio", "trio_websocket", "attrs"}


def test_h11_comes_with_trio_websocket() -> None:
    from importlib.metadata import requires

    wsproto = {_distribution_name(r) for r in requires("wsproto") or []}
    assert "wsproto" in {_distribution_name(r) for r in requires("trio-websocket") or []}
    assert "h11" in wsproto


def imported_on_load() -> set[tuple[str, str]]:
    """(module, top-level package) for each third-party import at a module's top level."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        for node in ast.parse(path.read_text(), str(path)).body:
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".", 1)[0]
                if top not in sys.stdlib_module_names and top != "trio_realtime":
                    found.add((module, top))
    return found


def test_every_import_on_load_is_a_core_dependency() -> None:
    imports = imported_on_load()
    undeclared = {
        (module, package)
        for module, package in imports - EXCEPTIONS
        if package not in core_dependencies()
    }
    assert not undeclared, f"imported but not a core dependency in pyproject.toml: {undeclared}"
    assert imports >= EXCEPTIONS, "an exception no longer needed: remove it"
