"""What opening a connection can meet, mapped once at the transport seam, on both transports
(issue 13 items 4 and 5, issue 18 items 8, 9 and 10): an HTTP refusal is ``SessionRefused``
with the status and the service's own code and message; anything else is ``ConnectionLost``
that says what happened and keeps its cause; never a raw third-party exception."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from trio_realtime import (
    ConnectionLost,
    Endpoint,
    RealtimeError,
    Reconnect,
    SessionConfig,
    SessionRefused,
    open_session,
)
from trio_realtime.testing import open_fake_server

pytestmark = pytest.mark.usefixtures("transport")

# Long enough that a failure which waits for it fails the test's own guard instead.
PATIENT = SessionConfig(connect_timeout=1000, close_timeout=1)
SESSION_CREATED = json.dumps({"type": "session.created", "session": {"id": "sess_1"}})

Reply = Callable[[trio.SocketStream, bytes], Awaitable[None]]


@asynccontextmanager
async def raw_server(reply: Reply) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that reads each handshake request and answers with
    ``reply(stream, request)``."""

    async def handle(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            data = await stream.receive_some(65536)
            if not data:
                return
            request += data
        try:
            await reply(stream, request)
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime?model=m"
        nursery.cancel_scope.cancel()


def http(status: str, body: bytes = b"", headers: str = "", *, linger: bool = True) -> Reply:
    async def reply(stream: trio.SocketStream, request: bytes) -> None:
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
        await stream.send_all(head.encode() + body)
        if linger:
            with trio.move_on_after(5):
                await stream.receive_some(1)  # until the client closes

    return reply


def accept_key(request: bytes) -> str:
    import base64
    import hashlib

    for line in request.decode().split("\r\n"):
        if line.lower().startswith("sec-websocket-key:"):
            key = line.split(":", 1)[1].strip()
            digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
            return base64.b64encode(digest.digest()).decode()
    raise AssertionError("no Sec-WebSocket-Key")


def text_frame(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 65536
    if len(data) < 126:
        return bytes([0x81, len(data)]) + data
    return bytes([0x81, 126]) + struct.pack("!H", len(data)) + data


def close_frame(code: int, reason: str) -> bytes:
    payload = struct.pack("!H", code) + reason.encode()
    return bytes([0x88, len(payload)]) + payload


async def open_and_fail(url: str | Endpoint, config: SessionConfig = PATIENT) -> RealtimeError:
    with trio.fail_after(10):
        with pytest.raises(RealtimeError) as info:
            async with open_session(url, config=config):
                pass  # pragma: no cover
    error = info.value
    assert str(error), "an error says what happened"
    return error


# -- HTTP refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("linger", [True, False], ids=["then-waits", "then-closes"])
async def test_a_refused_key_is_session_refused_with_the_status_and_the_services_code(
    linger: bool,
) -> None:
    body = json.dumps(
        {"error": {"code": "invalid_api_key", "message": "Incorrect API key provided: sk-...xyz."}}
    ).encode()
    reply = http("401 Unauthorized", body, "Content-Type: application/json\r\n", linger=linger)
    async with raw_server(reply) as url:
        error = await open_and_fail(url)
    assert isinstance(error, SessionRefused)
    assert (error.status, error.code) == (401, "invalid_api_key")
    assert error.message == "Incorrect API key provided: sk-...xyz."
    assert "HTTP 401" in str(error)


async def test_an_unknown_call_is_session_refused_with_call_id_not_found() -> None:
    body = json.dumps(
        {
            "error": {
                "type": "invalid_request_error",
                "code": "call_id_not_found",
                "message": "No session found for the provided call_id",
                "param": None,
            }
        }
    ).encode()
    async with raw_server(http("404 Not Found", body)) as url:
        error = await open_and_fail(url.replace("model=m", "call_id=rtc_123"))
    assert isinstance(error, SessionRefused)
    assert (error.status, error.code) == (404, "call_id_not_found")
    assert error.message == "No session found for the provided call_id"


async def test_a_refusal_without_a_body_still_has_its_status() -> None:
    async with raw_server(http("403 Forbidden")) as url:
        error = await open_and_fail(url)
    assert isinstance(error, SessionRefused)
    assert (error.status, error.code) == (403, None)
    assert "HTTP 403" in str(error)


async def test_the_fake_servers_refusals_on_the_azure_path_and_a_wrong_path() -> None:
    async with open_fake_server() as server:
        base = f"ws://127.0.0.1:{server.port}"
        server.behavior.invalid_api_keys = frozenset({"revoked"})
        azure = Endpoint(f"{base}/openai/v1/realtime?model=d", [("api-key", "revoked")])
        error = await open_and_fail(azure)
        assert isinstance(error, SessionRefused)
        assert (error.status, error.code) == (401, "401")
        assert "revoked" not in str(error)
        error = await open_and_fail(f"{base}/v2/nowhere")
        assert isinstance(error, SessionRefused)
        assert error.status == 404


async def test_a_key_revoked_while_the_session_runs_ends_it_with_session_refused() -> None:
    """Reconnect configured; the new connection's handshake is refused with HTTP 401: the
    session ends with SessionRefused (never retried), and the block raises nothing."""
    config = SessionConfig(reconnect=Reconnect(attempts=3, initial_delay=0.05, max_delay=0.2))
    with trio.fail_after(20):
        async with open_fake_server() as server:
            url = f"ws://127.0.0.1:{server.port}/openai/v1/realtime?model=d"
            endpoint = Endpoint(url, [("api-key", "key-1")])
            async with open_session(endpoint, config=config) as session:
                server.behavior.invalid_api_keys = frozenset({"key-1"})
                await server.connections[0].abort()
                await session.wait_closed()
                with pytest.raises(SessionRefused) as info:
                    session.request_response()
                assert info.value.status == 401
            assert server.statistics().connections_refused == 1  # not retried


# -- other failures: ConnectionLost with its story ----------------------------------------------


#: Replies to the opening handshake that are not a WebSocket's.
NOT_WEBSOCKET = {
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "wrong-accept": (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: d3Jvbmc=\r\n\r\n"
    ),
}


@pytest.mark.parametrize("answer", NOT_WEBSOCKET.values(), ids=NOT_WEBSOCKET.keys())
async def test_a_reply_that_is_no_websocket_handshake_is_connection_lost_with_its_cause(
    answer: bytes,
) -> None:
    """A reply that is not HTTP, and a 101 with a wrong ``Sec-WebSocket-Accept``."""

    async def reply(stream: trio.SocketStream, request: bytes) -> None:
        await stream.send_all(answer)
        with trio.move_on_after(5):
            await stream.receive_some(1)

    async with raw_server(reply) as url:
        error = await open_and_fail(url)
    assert type(error) is ConnectionLost
    assert error.__cause__ is not None
    assert "timed out" not in str(error)


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_a_connection_that_ends_during_the_handshake_is_noticed_at_once(how: str) -> None:
    """Not after connect_timeout (here far beyond the test's own guard)."""

    async def reply(stream: trio.SocketStream, request: bytes) -> None:
        if how == "reset":
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async with raw_server(reply) as url:
        error = await open_and_fail(url)
    assert type(error) is ConnectionLost
    assert "timed out" not in str(error)
    assert str(error).split(": ")[-1].strip(), "it says why"


async def test_an_error_and_a_close_in_the_handshakes_read_are_the_servers_refusal() -> None:
    """``invalid_api_key`` and the close frame can arrive in the same read as the handshake's
    response: the session still reads the error first."""
    error_event = json.dumps(
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "code": "invalid_api_key", "message": "no"},
        }
    )

    async def reply(stream: trio.SocketStream, request: bytes) -> None:
        head = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(request)}\r\n\r\n"
        )
        await stream.send_all(
            head.encode() + text_frame(error_event) + close_frame(3000, "invalid_api_key")
        )
        with trio.move_on_after(5):
            while await stream.receive_some(65536):
                pass

    async with raw_server(reply) as url:
        error = await open_and_fail(url)
    assert isinstance(error, SessionRefused)
    assert error.code == "invalid_api_key"


async def test_no_session_created_in_time_says_so_and_is_not_empty(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def reply(stream: trio.SocketStream, request: bytes) -> None:
        head = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(request)}\r\n\r\n"
        )
        await stream.send_all(head.encode())
        await trio.sleep_forever()  # no session.created

    async with raw_server(reply) as url:
        error = await open_and_fail(url, SessionConfig(connect_timeout=5, ping_interval=None))
    assert type(error) is ConnectionLost
    assert "session.created" in str(error)


async def test_a_reconnect_that_gets_no_session_created_ends_with_what_happened(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The first connection drops; every new one opens but never says ``session.created``:
    the session ends with a ConnectionLost that says so and keeps its cause (it was
    ``ConnectionLost('')``)."""
    connections = 0

    async def reply(stream: trio.SocketStream, request: bytes) -> None:
        nonlocal connections
        connections += 1
        head = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(request)}\r\n\r\n"
        ).encode()
        if connections == 1:
            await stream.send_all(head + text_frame(SESSION_CREATED))
            await trio.sleep(1)  # then the connection drops
            return
        await stream.send_all(head)
        await trio.sleep_forever()

    config = SessionConfig(
        reconnect=Reconnect(attempts=2, initial_delay=0.05, max_delay=0.2),
        connect_timeout=5,
        ping_interval=None,
    )
    with trio.fail_after(100):
        async with raw_server(reply) as url:
            async with open_session(url, config=config) as session:
                await session.wait_closed()
                with pytest.raises(ConnectionLost) as info:
                    session.request_response()
    error = info.value
    assert connections == 3
    assert "session.created" in str(error)
    assert error.__cause__ is not None


async def test_leaving_the_block_while_a_reconnect_hangs_takes_at_most_close_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue 18, item 11: it took 4 x close_timeout. The first connection drops; the next
    one's handshake is never answered; the application leaves the block meanwhile."""
    connections = 0
    hanging = trio.Event()

    async def reply(stream: trio.SocketStream, request: bytes) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            head = (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(request)}\r\n\r\n"
            )
            await stream.send_all(head.encode() + text_frame(SESSION_CREATED))
            await trio.sleep(1)  # then the connection drops
            return
        hanging.set()
        await trio.sleep_forever()

    config = SessionConfig(
        reconnect=Reconnect(attempts=3, initial_delay=0.05, max_delay=0.2),
        connect_timeout=1000,
        close_timeout=2,
        ping_interval=None,
    )
    with trio.fail_after(300):
        async with raw_server(reply) as url:
            async with open_session(url, config=config) as session:
                await hanging.wait()
                await trio.sleep(10)  # the new connection's handshake hangs
                leaving = trio.current_time()
            assert trio.current_time() - leaving <= config.close_timeout
    assert session.statistics().reconnects == 0
