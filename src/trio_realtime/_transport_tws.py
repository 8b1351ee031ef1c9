"""The default transport: trio-websocket (in maintenance mode, so it stays behind this seam).

trio-websocket 0.12.2 leaves the client socket open when the server closes first, so the
stream is opened by :mod:`._transport`, wrapped here with ``wrap_client_stream``, and closed
here whatever happens.
"""

from __future__ import annotations

import trio
import trio_websocket

from ._config import SessionConfig
from ._errors import ConnectionLost
from ._transport import Stream, Target, Transport, close_then_drop, closed_on_error, describe

__all__ = ["open_transport"]


class _TrioWebSocketTransport:
    def __init__(
        self, ws: trio_websocket.WebSocketConnection, stream: Stream, close_timeout: float
    ) -> None:
        self._ws = ws
        self._stream = stream
        self._close_timeout = close_timeout
        self._closed = False

    async def send(self, message: str) -> None:
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise _lost(exc) from exc

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _lost(exc) from exc

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        await close_then_drop(self._ws.aclose, self._stream, self._close_timeout)


def _lost(exc: trio_websocket.ConnectionClosed) -> ConnectionLost:
    reason = exc.reason
    if reason is None:
        return ConnectionLost("connection lost")
    return ConnectionLost(
        f"connection closed: {reason.code} {reason.name} {reason.reason or ''}".rstrip(),
        code=reason.code,
        reason=reason.reason,
    )


async def open_transport(
    nursery: trio.Nursery, stream: Stream, target: Target, config: SessionConfig
) -> Transport:
    """The WebSocket handshake over ``stream``; its errors mapped to ``ConnectionLost``."""
    async with closed_on_error(stream):
        try:
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                target.host_header,
                target.resource,
                extra_headers=[(k.encode(), v.encode()) for k, v in target.headers],
                max_message_size=config.max_message_size,
                receive_buffer_size=config.receive_buffer_size,
            )
        except trio_websocket.ConnectionRejected as exc:
            raise ConnectionLost(
                f"handshake with {target.host} rejected: HTTP {exc.status_code}"
            ) from exc
        except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
            raise ConnectionLost(f"handshake with {target.host} failed: {describe(exc)}") from exc
    return _TrioWebSocketTransport(ws, stream, config.close_timeout)
