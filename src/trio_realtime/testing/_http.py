"""The fake server's front door: one port for HTTP (call control, read with h11) and WebSocket
(handed to trio-websocket), as the service serves both on one host.

``read_request()`` reads a request head with h11; a WebSocket upgrade goes on to
trio-websocket over a ``Replayed`` stream that gives back the bytes already read; anything else
is a REST request, answered here with h11. Public trio / h11 / trio-websocket calls only.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import h11
import trio

#: The most of a request head and body read.
_MAX_REQUEST = 1 << 20


@attrs.define(eq=False)
class Request:
    """A request head as h11 read it, and every byte read so far."""

    connection: h11.Connection
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    raw: bytes

    @property
    def is_websocket(self) -> bool:
        return any(
            name.lower() == b"upgrade" and value.lower() == b"websocket"
            for name, value in self.headers
        )


async def read_request(stream: trio.abc.ReceiveStream) -> Request | None:
    """The next request head on ``stream`` (None: the peer left, or sent no HTTP)."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST)
    raw = bytearray()
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:
            return None
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            raw += data
            connection.receive_data(bytes(data))
            continue
        if isinstance(event, h11.Request):
            return Request(
                connection,
                event.method.decode("ascii", "replace"),
                event.target.decode("ascii", "replace"),
                [(name, value) for name, value in event.headers],
                bytes(raw),
            )
        return None


async def read_json_body(request: Request, stream: trio.abc.ReceiveStream) -> Any:
    """The request's body parsed as JSON (None if empty); ``ValueError`` if it is not JSON."""
    body = bytearray()
    connection = request.connection
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some()
            connection.receive_data(bytes(data))
            if not data:
                raise ValueError("the request ended before its body")
            continue
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_REQUEST:
                raise ValueError("the request body is too large")
            continue
        break
    return json.loads(body) if body.strip() else None


async def answer(request: Request, stream: trio.abc.SendStream, status: int, body: str) -> None:
    """Send the response (a JSON body, or none) and mark the connection to close."""
    data = body.encode()
    headers = [("connection", "close"), ("content-length", str(len(data)))]
    if data:
        headers.append(("content-type", "application/json"))
    connection = request.connection
    out = connection.send(h11.Response(status_code=status, headers=headers)) or b""
    if data:
        out += connection.send(h11.Data(data=data)) or b""
    out += connection.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)


class Replayed(trio.abc.Stream):
    """``stream``, with ``prefix`` read again first: trio-websocket reads the handshake that
    the front door already read."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return data
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()
