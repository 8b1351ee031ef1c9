"""A WebSocket server scripted with ``websockets``' sans-I/O server protocol, for tests that
misbehave below the Realtime protocol (a connection that goes silent, a close without a code).
Import it after ``pytest.importorskip("websockets")``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import trio
from websockets.http11 import Request
from websockets.server import ServerProtocol

SESSION_CREATED = json.dumps({"type": "session.created", "session": {"id": "sess_1"}})


async def accept(stream: trio.SocketStream) -> ServerProtocol | None:
    """Read the opening handshake and accept it, with ``session.created`` queued after the
    response (the caller sends ``data_to_send()``); None when the client left first."""
    protocol = ServerProtocol()
    while True:
        data = await stream.receive_some(65536)
        if not data:
            return None
        protocol.receive_data(data)
        requests = [e for e in protocol.events_received() if isinstance(e, Request)]
        if requests:
            protocol.send_response(protocol.accept(requests[0]))
            protocol.send_text(SESSION_CREATED.encode())
            return protocol


@asynccontextmanager
async def serving(handle: Callable[[trio.SocketStream], Awaitable[None]]) -> AsyncIterator[str]:
    """Serve ``handle`` on 127.0.0.1, a port of its own; yields the Realtime URL."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime"
        nursery.cancel_scope.cancel()
