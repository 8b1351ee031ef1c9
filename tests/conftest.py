"""Shared fixtures."""

from __future__ import annotations

import attrs
import pytest

from trio_realtime import _session

TRANSPORTS = ("trio-websocket", "websockets")


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once over each WebSocket transport: every session it opens by URL or
    :class:`Endpoint` uses that transport, whatever its configuration says."""
    name: str = request.param
    original = _session.open_websocket_transport

    def over(endpoint, config, *, deadline):  # type: ignore[no-untyped-def]
        return original(endpoint, attrs.evolve(config, transport=name), deadline=deadline)

    monkeypatch.setattr(_session, "open_websocket_transport", over)
    return name
