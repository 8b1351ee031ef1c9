"""An in-memory Transport and a scripted server peer, for session tests without sockets."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from trio_realtime import ConnectionLost, RealtimeSession, SessionConfig, open_session

Event = dict[str, Any]


class MemoryTransport:
    def __init__(
        self,
        send: trio.MemorySendChannel[str],
        receive: trio.MemoryReceiveChannel[str | bytes],
    ) -> None:
        self._send = send
        self._receive = receive
        self.closed = False

    async def send(self, message: str) -> None:
        try:
            await self._send.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionLost("peer gone") from exc

    async def receive(self) -> str | bytes:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            raise ConnectionLost("peer closed") from exc

    async def aclose(self) -> None:
        self.closed = True
        self._send.close()
        self._receive.close()
        await trio.lowlevel.checkpoint()


class Peer:
    """The server side: reads what the client sent, sends what the test scripts."""

    def __init__(
        self,
        send: trio.MemorySendChannel[str | bytes],
        receive: trio.MemoryReceiveChannel[str],
    ) -> None:
        self._send = send
        self._receive = receive
        self.received: list[Event] = []

    async def send(self, event: Event) -> None:
        await self._send.send(json.dumps(event))

    async def send_raw(self, data: str | bytes) -> None:
        await self._send.send(data)

    async def receive(self) -> Event:
        event: Event = json.loads(await self._receive.receive())
        self.received.append(event)
        return event

    def unread(self) -> list[Event]:
        """Client events sent but not yet read by the test."""
        events: list[Event] = []
        while True:
            try:
                events.append(json.loads(self._receive.receive_nowait()))
            except trio.WouldBlock:
                return events

    async def expect(self, event_type: str) -> Event:
        """The next client event, which must be of ``event_type``."""
        event = await self.receive()
        assert event["type"] == event_type, event
        return event

    def close(self) -> None:
        self._send.close()
        self._receive.close()

    async def created(self, create: Event, rid: str, **response: Any) -> None:
        body = create["response"]
        await self.send(
            {
                "type": "response.created",
                "event_id": f"ev_{rid}_c",
                "response": {
                    "id": rid,
                    "status": "in_progress",
                    "metadata": body.get("metadata"),
                    "conversation_id": None if body.get("conversation") == "none" else "conv_1",
                    **response,
                },
            }
        )

    async def done(
        self, create: Event | None, rid: str, status: str = "completed", **response: Any
    ) -> None:
        body = create["response"] if create is not None else {}
        await self.send(
            {
                "type": "response.done",
                "event_id": f"ev_{rid}_d",
                "response": {
                    "id": rid,
                    "status": status,
                    "metadata": body.get("metadata"),
                    "conversation_id": None if body.get("conversation") == "none" else "conv_1",
                    "output": [],
                    **response,
                },
            }
        )

    async def delta(self, rid: str, text: str = "x") -> None:
        await self.send({"type": "response.output_text.delta", "response_id": rid, "delta": text})

    async def complete(self, create: Event, rid: str) -> None:
        await self.created(create, rid)
        await self.delta(rid)
        await self.done(create, rid)


def memory_pair() -> tuple[MemoryTransport, Peer]:
    to_server_send, to_server_receive = trio.open_memory_channel[str](math.inf)
    to_client_send, to_client_receive = trio.open_memory_channel[str | bytes](math.inf)
    return (
        MemoryTransport(to_server_send, to_client_receive),
        Peer(to_client_send, to_server_receive),
    )


SESSION_CREATED: Event = {
    "type": "session.created",
    "event_id": "ev_0",
    "session": {"id": "sess_1", "object": "realtime.session"},
}


@asynccontextmanager
async def connected(
    config: SessionConfig | None = None,
) -> AsyncIterator[tuple[RealtimeSession, Peer, MemoryTransport]]:
    """A session over an in-memory transport, its peer greeted with ``session.created``."""
    transport, peer = memory_pair()
    await peer.send(SESSION_CREATED)
    async with open_session(transport, config=config) as session:
        yield session, peer, transport
