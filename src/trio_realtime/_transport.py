"""The seam to the WebSocket libraries: a three-method :class:`Transport`, and opening one.

Everything else in trio-realtime talks to a ``Transport``. This module checks the URL and the
credentials, opens the TCP (and TLS) stream itself — so that no socket is left open whichever
side closes first — and maps what connecting can raise to :class:`ConnectionLost`, once. The
WebSocket itself is spoken by one of two modules, chosen by ``SessionConfig.transport``:

- ``"trio-websocket"`` (:mod:`._transport_tws`, the default and a core dependency);
- ``"websockets"`` (:mod:`._transport_ws`, ``websockets``' own Trio implementation, faster;
  installed with ``pip install "trio-realtime[fast]"``).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Protocol, runtime_checkable

import attrs
import trio

from ._config import SessionConfig
from ._endpoints import Endpoint
from ._errors import ConnectionLost
from ._util import unwrap_lone_exception

__all__ = ["Target", "Transport", "close_then_drop", "open_websocket_transport"]

logger = logging.getLogger(__name__)

Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


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


@attrs.frozen
class Target:
    """Where to connect, checked: what the WebSocket modules need."""

    host: str
    port: int
    secure: bool
    #: The request target: path and query.
    resource: str
    #: The Host header's value.
    host_header: str
    headers: tuple[tuple[str, str], ...] = attrs.field(repr=False)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (credentials may go there over plain ``ws://``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def target_of(endpoint: Endpoint, config: SessionConfig) -> Target:
    """Check the URL and where credentials may go; raises ``ValueError``."""
    parts = urllib.parse.urlsplit(endpoint.url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {parts.scheme}://{parts.hostname}")
    host = parts.hostname
    secure = parts.scheme == "wss"
    if (
        not secure
        and endpoint.has_credentials
        and not is_loopback(host)
        and not config.allow_insecure
    ):
        raise ValueError(
            f"refusing to send credentials over plain ws:// to {host}; use wss:// "
            "(or SessionConfig(allow_insecure=True))"
        )
    resource = parts.path or "/"
    if parts.query:
        resource = f"{resource}?{parts.query}"
    return Target(
        host=host,
        port=parts.port or (443 if secure else 80),
        secure=secure,
        resource=resource,
        host_header=host if parts.port is None else f"{host}:{parts.port}",
        headers=tuple(endpoint.headers),
    )


def describe(exc: BaseException) -> str:
    """What went wrong, in words: the innermost cause (trio wraps TLS errors), looking inside
    exception groups (``open_tcp_stream`` puts each failed attempt in one)."""
    while True:
        if isinstance(exc, BaseExceptionGroup):
            reasons = dict.fromkeys(describe(e) for e in exc.exceptions)
            return "; ".join(reasons)
        if exc.__cause__ is None:
            break
        exc = exc.__cause__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@contextmanager
def connect_errors(target: Target) -> Iterator[None]:
    """Map the network errors of connecting to :class:`ConnectionLost`, once (as httpcore
    does); each WebSocket module maps its own handshake errors inside this."""
    try:
        yield
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        reason = "timed out" if isinstance(exc, trio.TooSlowError) else describe(exc)
        raise ConnectionLost(f"could not connect to {target.host}:{target.port}: {reason}") from exc


@asynccontextmanager
async def closed_on_error(stream: trio.abc.AsyncResource) -> AsyncIterator[None]:
    """Close ``stream`` at once if the block raises anything (cancellation included)."""
    try:
        yield
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def close_then_drop(
    graceful: Callable[[], Awaitable[None]], stream: trio.abc.AsyncResource, grace: float
) -> None:
    """Close a connection gracefully within ``grace`` seconds (shielded), then close its stream
    whatever happened: a transport's ``aclose`` always closes."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(grace):
            await graceful()
        await trio.aclose_forcefully(stream)


async def open_stream(target: Target, config: SessionConfig) -> Stream:
    """A TCP stream to the target, TLS-wrapped for ``wss://`` (certificates verified)."""
    tcp = await trio.open_tcp_stream(target.host, target.port)
    if not target.secure:
        return tcp
    context = config.ssl_context or ssl.create_default_context()
    tls = trio.SSLStream(tcp, context, server_hostname=target.host)
    async with closed_on_error(tls):
        await tls.do_handshake()
    return tls


@asynccontextmanager
async def open_websocket_transport(
    endpoint: Endpoint, config: SessionConfig, *, deadline: float
) -> AsyncIterator[Transport]:
    """Open a WebSocket to ``endpoint`` over ``config.transport``; connected by ``deadline``.

    ``wss://`` verifies certificates against the system store (or ``config.ssl_context``).
    Credentials are refused over plain ``ws://`` to a host that is not loopback unless
    ``config.allow_insecure``. Raises ``ValueError`` for a bad URL, ``ImportError`` when the
    chosen transport is not installed, :class:`ConnectionLost` when connecting fails.
    """
    target = target_of(endpoint, config)
    if config.transport == "websockets":
        if importlib.util.find_spec("websockets") is None:
            raise ImportError(
                'SessionConfig(transport="websockets") needs the websockets package: '
                'pip install "trio-realtime[fast]"'
            )
        from ._transport_ws import open_transport
    else:
        from ._transport_tws import open_transport
    with unwrap_lone_exception():
        async with trio.open_nursery() as nursery:
            with connect_errors(target), trio.fail_at(deadline):
                stream = await open_stream(target, config)
                transport = await open_transport(nursery, stream, target, config)
            path = target.resource.split("?")[0]
            logger.debug("connected to %s%s over %s", target.host_header, path, config.transport)
            try:
                yield transport
            finally:
                await transport.aclose()
