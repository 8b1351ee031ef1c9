"""``session_expired`` alone heals with a reconnect (issue 18, item 4): whatever close follows
it (1000, 1008, or one without a code), the session opens a new connection when ``reconnect``
is configured. Both transports, against a server scripted with ``websockets``' sans-I/O
server protocol."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from trio_realtime import ConnectionLost, Reconnect, SessionConfig, open_session

pytest.importorskip("websockets")

from websockets.http11 import Request
from websockets.server import ServerProtocol

pytestmark = pytest.mark.usefixtures("transport")

SESSION_CREATED = json.dumps({"type": "session.created", "session": {"id": "sess_1"}})
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
        protocol = ServerProtocol()
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            protocol.receive_data(data)
            requests = [e for e in protocol.events_received() if isinstance(e, Request)]
            if requests:
                protocol.send_response(protocol.accept(requests[0]))
                break
        protocol.send_text(SESSION_CREATED.encode())
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

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime", accepted, written
        nursery.cancel_scope.cancel()


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
