"""pytest plugin (entry point ``trio_realtime``): fixtures serving the fake Realtime server.

``realtime_server`` (GA dialect) and ``realtime_server_beta`` are function-scoped Trio
fixtures: they run inside the test's Trio loop, so they need pytest-trio and a Trio test
(``trio_mode = true`` in the pytest configuration, or ``@pytest.mark.trio`` on the test).
Used any other way, they fail at setup with a message saying what is missing, instead of
misbehaving. The server module is imported only when a fixture is used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._server import FakeRealtimeServer

_FIXTURES = frozenset({"realtime_server", "realtime_server_beta"})
_HOW = (
    "it runs the fake server inside the test's Trio loop, so it needs pytest-trio "
    "(pip install pytest-trio) and a Trio test: set `trio_mode = true` in your pytest "
    "configuration (or mark the test with @pytest.mark.trio) and make the test `async def`."
)


def _refusal(config: pytest.Config, node: pytest.Item | pytest.Collector, name: str) -> str | None:
    """Why fixture ``name`` cannot run for ``node`` (None: it can)."""
    if not config.pluginmanager.hasplugin("trio"):
        why = "pytest-trio is not active"
    elif node.get_closest_marker("trio") is None:
        why = "it is used by a test that is not a Trio test"
    else:
        return None
    return f"The {name} fixture cannot run: {why}; {_HOW}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Refuse a test that uses our fixtures where pytest-trio cannot run them, before any of
    its fixtures is set up (as pytest's own skip marks do): every such test gets the plain
    message, not only the first."""
    for name in sorted(_FIXTURES.intersection(getattr(item, "fixturenames", ()))):
        if (message := _refusal(item.config, item, name)) is not None:
            pytest.fail(message, pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> None:
    """The same refusal for a fixture requested on the fly (``request.getfixturevalue``)."""
    name = fixturedef.argname
    if name not in _FIXTURES:
        return
    message = _refusal(request.config, request.node, name)
    if message is None:
        return
    try:
        pytest.fail(message, pytrace=False)
    except pytest.fail.Exception as exc:
        # Cache the failure as pytest does for a fixture that raised, so that the fixture
        # is torn down and the next test that requests it gets this message too.
        fixturedef.cached_result = (None, fixturedef.cache_key(request), (exc, exc.__traceback__))
        raise


@pytest.fixture
async def realtime_server() -> AsyncIterator[FakeRealtimeServer]:
    """A fake Realtime server speaking the GA protocol, for one test."""
    from ._server import open_fake_server

    async with open_fake_server(dialect="ga") as server:
        yield server


@pytest.fixture
async def realtime_server_beta() -> AsyncIterator[FakeRealtimeServer]:
    """A fake Realtime server speaking the beta protocol, for one test."""
    from ._server import open_fake_server

    async with open_fake_server(dialect="beta") as server:
        yield server
