"""The seam to the WebSocket library: a three-method :class:`Transport`.

Everything else in trio-realtime talks to a ``Transport``; only this module imports
trio-websocket (which is in maintenance mode, so it stays behind this one small seam), and its
exceptions are translated here, once, into :class:`ConnectionLost`.

trio-websocket 0.12.2 leaves the client socket open when the server closes first, so the TCP
(and TLS) stream is opened here, wrapped with ``wrap_client_stream``, and closed here.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Protocol, runtime_checkable

import trio
import trio_websocket

from ._config import SessionConfig
from ._endpoints import Endpoint
from ._errors import ConnectionLost
from ._util import unwrap_lone_exception

__all__ = ["Transport", "open_websocket_transport"]

logger = logging.getLogger(__name__)


@runtime_checkable
class Transport(Protocol):
    """A message-oriented, bidirectional connection to a Realtime server."""

    async def send(self, message: str) -> None:
        """Send one text message. Raises :class:`ConnectionLost` when the connection is gone."""
        ...

    async def receive(self) -> str | bytes:
        """The next message. Raises :class:`ConnectionLost` when the connection is gone."""
        ...

    async def aclose(self) -> None:
        """Close; idempotent, always closes (gracefully when it can, within bounded time)."""
        ...


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _WebSocketTransport:
    def __init__(
        self, ws: trio_websocket.WebSocketConnection, stream: trio.abc.Stream, close_timeout: float
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
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self._close_timeout):
                await self._ws.aclose()
            await trio.aclose_forcefully(self._stream)


def _describe(exc: BaseException) -> str:
    """What went wrong, in words: the innermost cause (trio wraps TLS errors), looking inside
    exception groups (``open_tcp_stream`` puts each failed attempt in one)."""
    while True:
        if isinstance(exc, BaseExceptionGroup):
            reasons = dict.fromkeys(_describe(e) for e in exc.exceptions)
            return "; ".join(reasons)
        if exc.__cause__ is None:
            break
        exc = exc.__cause__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@contextmanager
def _connect_errors(host: str, port: int) -> Iterator[None]:
    """Map what connecting can raise to :class:`ConnectionLost`, once (as httpcore does)."""
    try:
        yield
    except trio_websocket.ConnectionRejected as exc:
        raise ConnectionLost(f"handshake with {host} rejected: HTTP {exc.status_code}") from exc
    except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
        raise ConnectionLost(f"handshake with {host} failed: {_describe(exc)}") from exc
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        reason = "timed out" if isinstance(exc, trio.TooSlowError) else _describe(exc)
        raise ConnectionLost(f"could not connect to {host}:{port}: {reason}") from exc


def _lost(exc: trio_websocket.ConnectionClosed) -> ConnectionLost:
    reason = exc.reason
    if reason is None:
        return ConnectionLost("connection lost")
    return ConnectionLost(
        f"connection closed: {reason.code} {reason.name} {reason.reason or ''}".rstrip(),
        code=reason.code,
        reason=reason.reason,
    )


@asynccontextmanager
async def open_websocket_transport(
    endpoint: Endpoint, config: SessionConfig, *, deadline: float
) -> AsyncIterator[Transport]:
    """Open a WebSocket to ``endpoint``; connecting must finish by ``deadline``.

    ``wss://`` verifies certificates against the system store. Credentials are refused over
    plain ``ws://`` to a host that is not loopback unless ``config.allow_insecure``.
    """
    parts = urllib.parse.urlsplit(endpoint.url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {parts.scheme}://{parts.hostname}")
    host = parts.hostname
    secure = parts.scheme == "wss"
    if (
        not secure
        and endpoint.has_credentials
        and not _is_loopback(host)
        and not config.allow_insecure
    ):
        raise ValueError(
            f"refusing to send credentials over plain ws:// to {host}; use wss:// "
            "(or SessionConfig(allow_insecure=True))"
        )
    port = parts.port or (443 if secure else 80)
    resource = parts.path or "/"
    if parts.query:
        resource = f"{resource}?{parts.query}"
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    headers = [(k.encode(), v.encode()) for k, v in endpoint.headers]
    with unwrap_lone_exception():
        async with trio.open_nursery() as nursery:
            stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
            with _connect_errors(host, port), trio.fail_at(deadline):
                stream = await trio.open_tcp_stream(host, port)
                try:
                    if secure:
                        context = config.ssl_context or ssl.create_default_context()
                        stream = trio.SSLStream(stream, context, server_hostname=host)
                        await stream.do_handshake()
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,
                        host_header,
                        resource,
                        extra_headers=headers,
                        max_message_size=config.max_message_size,
                        receive_buffer_size=config.receive_buffer_size,
                    )
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
            logger.debug("connected to %s%s", host_header, parts.path)
            transport = _WebSocketTransport(ws, stream, config.close_timeout)
            try:
                yield transport
            finally:
                await transport.aclose()
