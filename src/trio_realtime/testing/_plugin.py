"""pytest plugin (entry point ``trio_realtime``): fixtures serving the fake Realtime server.

``realtime_server`` (GA dialect) and ``realtime_server_beta`` are function-scoped Trio
fixtures; they need pytest-trio (``trio_mode = true`` or ``@pytest.mark.trio``). Without
pytest-trio installed this plugin defines nothing. The server module is imported only when a
fixture is used.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._server import FakeRealtimeServer

if importlib.util.find_spec("pytest_trio") is not None:

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
