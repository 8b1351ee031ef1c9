"""``session_expired`` alone heals with a reconnect (issue 18, item 4): whatever close follows
it (1000, 1008, or one without a code), the session opens a new connection when ``reconnect``
is configured. Both transports, against a server scripted with ``websockets``' sans-I/O
server protocol."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from trio_realtime import ConnectionLost, Reconnect, SessionConfig, open_session

pytest.importorskip("websockets")

from sansio_server import accept, serving

pytestmark = pytest.mark.usefixtures("transport")

EXPIRED = json.dumps(
    {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "code": "session_expired",
            "message": "Your session hit the maximum duration of 60 minutes.",
        },
    }
)


@asynccontextmanager
async def expiring_server(
    close_code: int | None, error: str = EXPIRED
) -> AsyncIterator[tuple[str, list[int], trio.Event]]:
    """The first connection sends ``error`` (``session_expired``), then closes with
    ``close_code`` (None: without a code); later ones stay open until the client leaves.
    Yields the URL, the connections' numbers, and an event set when a later connection
    receives a message."""
    accepted: list[int] = []
    written = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        number = len(accepted)
        accepted.append(number)
        protocol = await accept(stream)
        if protocol is None:
            return
        if number == 0:
            protocol.send_text(error.encode())
            if close_code is None:
                protocol.send_close()
            else:
                protocol.send_close(close_code, "")
        await stream.send_all(b"".join(protocol.data_to_send()))
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            protocol.receive_data(data)
            if number > 0 and protocol.events_received():
                written.set()
            out = b"".join(protocol.data_to_send())
            if out:
                await stream.send_all(out)
            if protocol.close_rcvd is not None:
                return

    async with serving(handle) as url:
        yield url, accepted, written


@pytest.mark.parametrize("close_code", [1000, 1008, None])
async def test_session_expired_then_any_close_reconnects(close_code: int | None) -> None:
    config = SessionConfig(reconnect=Reconnect(attempts=2, initial_delay=0.05, max_delay=0.1))
    with trio.fail_after(20):
        async with expiring_server(close_code) as (url, accepted, written):
            async with open_session(url, config=config) as session:
                # Sent once the session has a connection again.
                await session.send({"type": "input_audio_buffer.clear"})
                await written.wait()
                assert not session.closed
                assert session.statistics().reconnects == 1
            assert accepted == [0, 1]


@pytest.mark.parametrize("close_code", [1000, 1008])
async def test_without_session_expired_those_closes_still_end_the_session(
    close_code: int,
) -> None:
    """A normal or policy close after another error is not a loss to heal."""
    config = SessionConfig(reconnect=Reconnect(attempts=2, initial_delay=0.05, max_delay=0.1))
    other = json.dumps({"type": "error", "error": {"code": "other", "message": "x"}})
    with trio.fail_after(20):
        async with expiring_server(close_code, other) as (url, accepted, _):
            async with open_session(url, config=config) as session:
                await session.wait_closed()
                with pytest.raises(ConnectionLost):
                    session.request_response()
            assert accepted == [0]
