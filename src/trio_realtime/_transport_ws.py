"""The fast transport: ``websockets``' own Trio implementation (``pip install
"trio-realtime[fast]"``).

The stream is opened by :mod:`._transport` (TLS included) and handed to ``websockets``, which
speaks the WebSocket protocol over it in a task of the session's transport nursery and closes
it when the connection ends, whichever side closes first.
"""

from __future__ import annotations

import logging

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.trio.client import ClientConnection
from websockets.uri import parse_uri

from ._config import SessionConfig
from ._errors import ConnectionLost
from ._transport import Stream, Target, Transport, closed_on_error, describe

__all__ = ["open_transport"]

#: Messages ``websockets`` buffers before it stops reading the socket (backpressure).
_MAX_QUEUE = 256
_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key"})


class _RedactCredentials(logging.Filter):
    """``websockets`` logs every handshake header at DEBUG: keep credentials out."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            isinstance(args, tuple)
            and len(args) == 2
            and str(args[0]).lower() in _CREDENTIAL_HEADERS
        ):
            record.args = (args[0], "[redacted]")
        return True


#: The logger ``websockets`` reports the protocol to (handshake and frames, at DEBUG).
_protocol_logger = logging.getLogger(f"{__name__}.protocol")
_protocol_logger.addFilter(_RedactCredentials())


class _WebsocketsTransport:
    def __init__(self, ws: ClientConnection, stream: Stream, close_timeout: float) -> None:
        self._ws = ws
        self._stream = stream
        self._close_timeout = close_timeout
        self._closed = False

    async def send(self, message: str) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise _lost(exc) from exc

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise _lost(exc) from exc

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self._close_timeout):
                await self._ws.aclose()
            await trio.aclose_forcefully(self._stream)


def _lost(exc: ConnectionClosed) -> ConnectionLost:
    close = exc.rcvd
    if close is None:
        return ConnectionLost("connection lost")
    code = int(close.code)
    return ConnectionLost(
        f"connection closed: {code} {close.reason}".rstrip(), code=code, reason=close.reason
    )


async def open_transport(
    nursery: trio.Nursery, stream: Stream, target: Target, config: SessionConfig
) -> Transport:
    """The WebSocket handshake over ``stream``; its errors mapped to ``ConnectionLost``."""
    scheme = "wss" if target.secure else "ws"
    protocol = ClientProtocol(
        parse_uri(f"{scheme}://{target.host_header}{target.resource}"),
        max_size=config.max_message_size,
        logger=_protocol_logger,
    )
    async with closed_on_error(stream):
        ws = ClientConnection(
            nursery,
            stream,
            protocol,
            ping_interval=None,
            close_timeout=config.close_timeout,
            max_queue=_MAX_QUEUE,
        )
        try:
            await ws.handshake(list(target.headers))
        except InvalidStatus as exc:
            raise ConnectionLost(
                f"handshake with {target.host} rejected: HTTP {exc.response.status_code}"
            ) from exc
        except (InvalidHandshake, ConnectionClosed) as exc:
            raise ConnectionLost(f"handshake with {target.host} failed: {describe(exc)}") from exc
    return _WebsocketsTransport(ws, stream, config.close_timeout)
