"""The fast transport: ``websockets``' protocol, driven by the session's own tasks
(``pip install "trio-realtime[fast]"``).

``websockets`` parses and builds WebSocket frames in a sans-I/O ``ClientProtocol``; this module
moves the bytes. It runs no task of its own: the session's reader reads the socket, and one
read hands out every message it completed without a further checkpoint each (a 64 KiB read of
small events is hundreds of messages), which is where this transport wins over a loop around
an I/O library's ``recv()``. The stream is opened by :mod:`._transport` (TLS included) and
closed here, whichever side closes first.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.uri import parse_uri

from ._config import SessionConfig
from ._errors import ConnectionLost, fresh
from ._transport_base import (
    Connected,
    RedactCredentials,
    Stream,
    Target,
    close_then_drop,
    closed_on_error,
    refusal,
)

__all__ = ["open_transport"]

#: The logger ``websockets`` reports the protocol to (handshake and frames, at DEBUG): the
#: request line (with the URL's query) and every header; credentials are kept out.
_protocol_logger = logging.getLogger(f"{__name__}.protocol")
_protocol_logger.addFilter(RedactCredentials())


class _WebsocketsTransport:
    def __init__(
        self, stream: Stream, protocol: ClientProtocol, *, close_timeout: float, read_size: int
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._close_timeout = close_timeout
        self._read_size = read_size
        self._messages: deque[str | bytes] = deque()
        self._fragments: list[bytes] = []
        self._fragmented_text = False
        self._send_lock = trio.Lock()
        self._reading = False
        self._lost: ConnectionLost | None = None
        self._closed = False
        self._pings: dict[bytes, trio.Event] = {}

    # ------------------------------------------------------------------ Transport

    async def send(self, message: str) -> None:
        if self._protocol.state is not State.OPEN:
            await trio.lowlevel.checkpoint()
            raise self._connection_lost()
        self._protocol.send_text(message.encode())
        await self._flush()

    async def receive(self) -> str | bytes:
        """The next message. Messages a socket read already completed are returned without a
        checkpoint; every read of the socket is one."""
        while not self._messages:
            if self._lost is not None:
                await trio.lowlevel.checkpoint()
                raise fresh(self._lost)
            await self._read()
        return self._messages.popleft()

    async def ping(self) -> None:
        """Send a ping; wait for its pong (read by the session's reader)."""
        if self._protocol.state is not State.OPEN:
            await trio.lowlevel.checkpoint()
            raise self._connection_lost()
        payload = os.urandom(4)
        answered = self._pings[payload] = trio.Event()
        try:
            self._protocol.send_ping(payload)
            await self._flush()
            await answered.wait()
        finally:
            self._pings.pop(payload, None)
        if self._lost is not None:
            raise fresh(self._lost)

    async def abort(self, lost: ConnectionLost) -> None:
        if self._lost is None:
            self._lost = lost
        for answered in self._pings.values():
            answered.set()
        await trio.aclose_forcefully(self._stream)  # wakes the reader

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        await close_then_drop(self._closing_handshake, self._stream, self._close_timeout)

    async def _closing_handshake(self) -> None:
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(1000)
            with contextlib.suppress(ConnectionLost):
                await self._flush()
        # The server closes the TCP connection after the closing handshake; wait for it
        # unless the reader is reading (closing the stream then wakes it).
        while not self._reading and self._protocol.state is not State.CLOSED:
            if not await self._read_once():
                break

    # ------------------------------------------------------------------ internals

    async def _flush(self) -> None:
        """Write what the protocol has to send, in order (the writer's messages, and the
        pongs and the close frame the reader's reads produce)."""
        writes = self._protocol.data_to_send()
        if not writes:
            await trio.lowlevel.checkpoint()
            return
        await self._write(writes)

    async def _write(self, writes: list[bytes]) -> None:
        lock = self._send_lock
        try:
            lock.acquire_nowait()  # uncontended (the usual case): no extra trip to the scheduler
        except trio.WouldBlock:
            await lock.acquire()
        try:
            for data in writes:
                if data:
                    await self._stream.send_all(data)
                elif isinstance(self._stream, trio.SocketStream):  # end of data (SEND_EOF)
                    await self._stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._end()
            raise self._connection_lost() from exc
        finally:
            lock.release()

    async def _read(self) -> None:
        await self._read_once()
        writes = self._protocol.data_to_send()  # pongs, the close frame's echo
        if writes:
            # Not cut short by a cancelled read: a frame half written corrupts the stream.
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(self._close_timeout),
                contextlib.suppress(ConnectionLost),  # the reader learns of it anyway
            ):
                await self._write(writes)

    async def _read_once(self) -> bool:
        """Read the socket once and take in what it completed. False at the end of it."""
        self._reading = True
        try:
            data = await self._stream.receive_some(self._read_size)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        finally:
            self._reading = False
        if data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        self._take(self._protocol.events_received())
        if not data or self._protocol.state is not State.OPEN:
            self._end()
        return bool(data)

    def _take(self, events: list[Request | Response | Frame]) -> None:
        """Assemble the messages the protocol parsed out of what was read."""
        for event in events:
            if not isinstance(event, Frame):
                continue  # the handshake's response
            opcode = event.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if event.fin:
                    self._messages.append(_message(bytes(event.data), opcode is Opcode.TEXT))
                else:
                    self._fragments = [bytes(event.data)]
                    self._fragmented_text = opcode is Opcode.TEXT
            elif opcode is Opcode.CONT:
                self._fragments.append(bytes(event.data))
                if event.fin:
                    data, self._fragments = b"".join(self._fragments), []
                    self._messages.append(_message(data, self._fragmented_text))
            elif opcode is Opcode.PONG:
                answered = self._pings.get(bytes(event.data))
                if answered is not None:
                    answered.set()

    def _end(self) -> None:
        if self._lost is None:
            self._lost = self._connection_lost()
        for answered in self._pings.values():
            answered.set()

    def _connection_lost(self) -> ConnectionLost:
        if self._lost is not None:
            return fresh(self._lost)
        close = self._protocol.close_rcvd
        if close is None:
            return ConnectionLost("connection lost")
        code = int(close.code)
        return ConnectionLost(
            f"connection closed: {code} {close.reason}".rstrip(), code=code, reason=close.reason
        )


def _message(data: bytes, text: bool) -> str | bytes:
    if not text:
        return data
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data  # skipped by the reader as malformed, as a binary frame is


async def open_transport(
    nursery: trio.Nursery, stream: Stream, target: Target, config: SessionConfig
) -> Connected:
    """The WebSocket handshake over ``stream``; an HTTP refusal raises ``SessionRefused``,
    other failures ``ConnectionLost``. Messages that came in the same reads as the response
    are kept, even when the server closed right after them (an ``invalid_api_key`` error
    and the close can share the response's read): the session reads them, then the loss."""
    scheme = "wss" if target.secure else "ws"
    protocol = ClientProtocol(
        parse_uri(f"{scheme}://{target.host_header}{target.resource}"),
        max_size=config.max_message_size,
        logger=_protocol_logger,
    )
    transport = _WebsocketsTransport(
        stream,
        protocol,
        close_timeout=config.close_timeout,
        read_size=config.receive_buffer_size,
    )
    async with closed_on_error(stream):
        request = protocol.connect()
        request.headers.update(list(target.headers))
        protocol.send_request(request)
        await transport._flush()
        while protocol.state is State.CONNECTING and protocol.handshake_exc is None:
            data = await stream.receive_some(config.receive_buffer_size)
            if not data:
                protocol.receive_eof()
                break
            protocol.receive_data(data)
            # Messages in the same read as the response (session.created) are kept.
            transport._take(protocol.events_received())
        error = protocol.handshake_exc
        if isinstance(error, InvalidStatus):
            response = error.response
            raise refusal(target, response.status_code, response.body) from error
        if error is not None or protocol.state is State.CONNECTING:
            reason = error or "the server closed the connection"
            raise ConnectionLost(f"handshake with {target.host} failed: {reason}") from error
        if protocol.state is not State.OPEN:
            transport._end()  # closed at once: what came first is still read
    return transport
