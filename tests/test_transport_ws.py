"""The websockets transport against a server scripted frame by frame (websockets' own sans-I/O
server protocol over a loopback TCP socket): pings, fragments, close codes, refusals."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from trio_realtime import ConnectionLost, SessionConfig, open_session

pytest.importorskip("websockets")

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

FAST = SessionConfig(transport="websockets", close_timeout=1)
SESSION_CREATED = json.dumps({"type": "session.created", "session": {"id": "sess_1"}})


class ScriptedPeer:
    """One server connection: the handshake done, frames written and read by the test."""

    def __init__(self, stream: trio.SocketStream, protocol: ServerProtocol) -> None:
        self.stream = stream
        self.protocol = protocol
        self.received: list[Frame] = []

    async def flush(self) -> None:
        data = b"".join(self.protocol.data_to_send())
        if data:
            await self.stream.send_all(data)

    async def text(self, message: str) -> None:
        self.protocol.send_text(message.encode())
        await self.flush()

    async def next_frame(self) -> Frame:
        while not self.received:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:  # the client reset the connection: its end too
                data = b""
            if not data:
                self.protocol.receive_eof()
            else:
                self.protocol.receive_data(data)
            self.received += [e for e in self.protocol.events_received() if isinstance(e, Frame)]
            await self.flush()
            if not data and not self.received:
                raise EOFError
        return self.received.pop(0)


@asynccontextmanager
async def scripted_server(
    script: Callable[[ScriptedPeer], Awaitable[None]],
    *,
    status: int = 101,
    greeting: str | None = None,
) -> AsyncIterator[str]:
    """A server running ``script`` on its one connection; ``greeting`` goes out in the same
    write as the handshake's response."""
    done = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        protocol = ServerProtocol()
        while True:
            data = await stream.receive_some(65536)
            protocol.receive_data(data)
            requests = [e for e in protocol.events_received() if isinstance(e, Request)]
            if requests:
                break
        if status == 101:
            response = protocol.accept(requests[0])
        else:
            response = protocol.reject(status, "no\n")
        protocol.send_response(response)
        if greeting is not None:
            protocol.send_text(greeting.encode())
        peer = ScriptedPeer(stream, protocol)
        await peer.flush()
        try:
            if status == 101:
                await script(peer)
        finally:
            await stream.aclose()
            done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime"
        with trio.move_on_after(5):
            await done.wait()
        nursery.cancel_scope.cancel()


async def test_pings_are_answered_and_fragments_assembled() -> None:
    pong = trio.Event()

    async def script(peer: ScriptedPeer) -> None:
        await peer.text(SESSION_CREATED)
        ready = await peer.next_frame()  # the client has subscribed
        assert json.loads(ready.data)["type"] == "client.ready"
        peer.protocol.send_ping(b"keepalive")
        await peer.flush()
        frame = await peer.next_frame()
        assert (frame.opcode, frame.data) == (Opcode.PONG, b"keepalive")
        pong.set()
        event = json.dumps({"type": "custom.event", "text": "é" * 3000}).encode()
        peer.protocol.send_text(event[:1000], fin=False)
        peer.protocol.send_continuation(event[1000:2000], fin=False)
        peer.protocol.send_continuation(event[2000:], fin=True)
        await peer.flush()
        peer.protocol.send_close(4000, "bye")
        await peer.flush()
        while True:
            try:
                await peer.next_frame()
            except EOFError:
                return

    with trio.fail_after(10):
        async with scripted_server(script) as url:
            async with open_session(url, config=FAST) as session, session.subscribe() as events:
                await session.send({"type": "client.ready"})
                event = await events.receive()
                assert event == {"type": "custom.event", "text": "é" * 3000}
                with pytest.raises(ConnectionLost) as info:
                    await events.receive()
                assert info.value.code == 4000
                assert info.value.reason == "bye"
                assert pong.is_set()


async def test_a_refused_handshake_says_the_status() -> None:
    async def script(peer: ScriptedPeer) -> None:  # pragma: no cover
        pass

    with trio.fail_after(10):
        async with scripted_server(script, status=403) as url:
            with pytest.raises(ConnectionLost, match="HTTP 403"):
                async with open_session(url, config=FAST):
                    pass  # pragma: no cover


async def test_messages_in_the_handshakes_read_are_kept() -> None:
    """session.created often arrives in the same TCP read as the handshake's response."""

    async def script(peer: ScriptedPeer) -> None:
        with trio.move_on_after(2), contextlib.suppress(EOFError):
            while True:  # until the client closes
                await peer.next_frame()

    with trio.fail_after(10):
        async with scripted_server(script, greeting=SESSION_CREATED) as url:
            async with open_session(url, config=FAST) as session:
                assert session.server_session == {"id": "sess_1"}


async def test_a_server_that_drops_the_socket_ends_the_session() -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.text(SESSION_CREATED)
        await peer.next_frame()  # the client's response.create, then the socket goes

    with trio.fail_after(10):
        async with scripted_server(script) as url:
            async with open_session(url, config=FAST) as session:
                ticket = session.request_response()
                with pytest.raises(ConnectionLost, match="connection lost"):
                    await ticket.wait_done()
