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


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> None:
    """Refuse our fixtures, with a plain message, where pytest-trio cannot run them."""
    name = fixturedef.argname
    if name not in _FIXTURES:
        return
    if not request.config.pluginmanager.hasplugin("trio"):
        why = "pytest-trio is not active"
    elif request.node.get_closest_marker("trio") is None:
        why = "it is used by a test that is not a Trio test"
    else:
        return
    pytest.fail(f"The {name} fixture cannot run: {why}; {_HOW}", pytrace=False)


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
