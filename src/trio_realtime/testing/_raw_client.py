"""A bare WebSocket client for driving the fake server in tests: JSON in, JSON out, nothing
else. It is not the trio-realtime client (which the fake server must not depend on).

It opens the TCP stream itself and closes it in a ``finally``: trio-websocket 0.12.2 leaves
the client socket open when the server closes first.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

_MAX_MESSAGE_SIZE = 32 * 2**20


@attrs.define(eq=False)
class RawClient:
    """``received`` holds every event read so far, in order."""

    ws: WebSocketConnection
    received: list[dict[str, Any]] = attrs.field(factory=list, init=False)

    async def send(self, event: Mapping[str, Any]) -> None:
        await self.ws.send_message(json.dumps(event))

    async def recv(self) -> dict[str, Any]:
        """The next event; raises ``trio_websocket.ConnectionClosed`` after a close."""
        message = await self.ws.get_message()
        event: dict[str, Any] = json.loads(message)
        self.received.append(event)
        return event

    async def expect(self, type: str) -> dict[str, Any]:
        """The next event, which must be of ``type``."""
        event = await self.recv()
        assert event.get("type") == type, f"expected {type!r}, got {event!r}"
        return event

    async def recv_until(self, type: str, *others: str) -> list[dict[str, Any]]:
        """Every event up to and including the next one of ``type`` (or of ``others``)."""
        wanted = {type, *others}
        events: list[dict[str, Any]] = []
        while True:
            event = await self.recv()
            events.append(event)
            if event.get("type") in wanted:
                return events


@asynccontextmanager
async def open_raw_client(
    port: int,
    resource: str = "/v1/realtime?model=gpt-realtime",
    *,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    receive_buffer_size: int | None = 4096,
) -> AsyncIterator[RawClient]:
    """Connect to ``ws://127.0.0.1:<port><resource>``; close everything on exit."""
    async with trio.open_nursery() as nursery:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            ws = await wrap_client_stream(
                nursery,
                stream,
                "127.0.0.1",
                resource,
                extra_headers=extra_headers,
                max_message_size=_MAX_MESSAGE_SIZE,
                receive_buffer_size=receive_buffer_size,
            )
            try:
                yield RawClient(ws)
            finally:
                with trio.move_on_after(1) as scope:
                    scope.shield = True
                    await ws.aclose()
        finally:
            await stream.aclose()
