"""The default transport: trio-websocket (in maintenance mode, so it stays behind this seam).

trio-websocket 0.12.2 leaves the client socket open when the server closes first, so the
stream is opened by :mod:`._transport`, wrapped here with ``wrap_client_stream``, and closed
here whatever happens. Its reader task runs in a task of ours, so that what it raises during
the handshake (an HTTP refusal, a reply that is not HTTP, a reset) reaches the opener, mapped
(:func:`._transport_base.opening_errors`), instead of escaping from the transport's nursery;
and a stream that breaks during the handshake ends the wait at once.
"""

from __future__ import annotations

import logging
from typing import cast

import trio
import trio_websocket

from ._config import SessionConfig
from ._errors import ConnectionLost, fresh
from ._transport_base import (
    Connected,
    Stream,
    Target,
    close_then_drop,
    closed_on_error,
    describe,
    opening_errors,
    refusal,
)
from ._util import unwrap_lone_exception

__all__ = ["open_transport"]

logger = logging.getLogger(__name__)


class _TrioWebSocketTransport:
    def __init__(
        self, ws: trio_websocket.WebSocketConnection, stream: Stream, close_timeout: float
    ) -> None:
        self._ws = ws
        self._stream = stream
        self._close_timeout = close_timeout
        self._closed = False
        self._silent: ConnectionLost | None = None

    async def send(self, message: str) -> None:
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise self._lost(exc) from exc

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise self._lost(exc) from exc

    async def ping(self) -> None:
        try:
            await self._ws.ping()
        except trio_websocket.ConnectionClosed as exc:
            raise self._lost(exc) from exc

    async def abort(self, lost: ConnectionLost) -> None:
        self._silent = lost
        await trio.aclose_forcefully(self._stream)  # the reader task then ends the socket

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        await close_then_drop(self._ws.aclose, self._stream, self._close_timeout)

    def _lost(self, exc: trio_websocket.ConnectionClosed) -> ConnectionLost:
        if self._silent is not None:
            return fresh(self._silent)
        reason = exc.reason
        if reason is None:
            return ConnectionLost("connection lost")
        return ConnectionLost(
            f"connection closed: {reason.code} {reason.name} {reason.reason or ''}".rstrip(),
            code=reason.code,
            reason=reason.reason,
        )


class _Handshake:
    """Ends the wait for the handshake's response when the stream breaks first."""

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None
        self.broken: tuple[str, BaseException | None] | None = None  # (reason, cause)

    def stream_broke(self, reason: str, cause: BaseException | None) -> None:
        if self.scope is not None and self.broken is None:
            self.broken = (reason, cause)
            self.scope.cancel()


class _WatchedStream(trio.abc.Stream):
    """The stream, telling the handshake when it breaks or ends before the response."""

    def __init__(self, stream: Stream, handshake: _Handshake) -> None:
        self.stream = stream
        self._handshake = handshake

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._handshake.stream_broke(describe(exc), exc)
            raise
        if not data:
            self._handshake.stream_broke("the server closed the connection", None)
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()


async def _run_websocket(
    stream: Stream,
    target: Target,
    config: SessionConfig,
    *,
    task_status: trio.TaskStatus[trio_websocket.WebSocketConnection],
) -> None:
    """Run trio-websocket's reader task in a nursery of this task: during the handshake what
    it raises is mapped and raised to the opener; afterwards the connection ends quietly."""
    handshake = _Handshake()
    started = False
    try:
        with opening_errors(target):
            try:
                with unwrap_lone_exception():
                    async with trio.open_nursery() as nursery:
                        with trio.CancelScope() as handshake.scope:
                            ws = await trio_websocket.wrap_client_stream(
                                nursery,
                                # (its annotation names trio's two stream classes; any
                                # trio Stream works)
                                cast(Stream, _WatchedStream(stream, handshake)),
                                target.host_header,
                                target.resource,
                                extra_headers=[(k.encode(), v.encode()) for k, v in target.headers],
                                max_message_size=config.max_message_size,
                                receive_buffer_size=config.receive_buffer_size,
                            )
                            handshake.scope = None
                            task_status.started(ws)
                            started = True
                        # (unless the reader raised first: its error is the story)
                        if handshake.broken is not None and not nursery.cancel_scope.cancel_called:
                            reason, cause = handshake.broken
                            nursery.cancel_scope.cancel()
                            raise ConnectionLost(
                                f"handshake with {target.host} failed: {reason}"
                            ) from cause
            except trio_websocket.ConnectionRejected as exc:
                raise refusal(target, exc.status_code, exc.body) from exc
    except Exception as exc:
        if not started:
            raise
        logger.debug("the WebSocket ended: %r", exc)


async def open_transport(
    nursery: trio.Nursery, stream: Stream, target: Target, config: SessionConfig
) -> Connected:
    """The WebSocket handshake over ``stream``; its errors mapped to ``ConnectionLost`` (an
    HTTP refusal to ``SessionRefused``)."""
    async with closed_on_error(stream):
        ws = await nursery.start(_run_websocket, stream, target, config)
    return _TrioWebSocketTransport(ws, stream, config.close_timeout)
