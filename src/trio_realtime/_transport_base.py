"""What both WebSocket adapters share: the :class:`Transport` protocol, the checked
:class:`Target`, the TCP/TLS stream, closing, keeping a connection honest (pings), the one
mapping of what opening a connection can raise, and redaction of credentials in log lines.

Imported by :mod:`._transport` (which chooses an adapter) and by both adapters
(:mod:`._transport_tws`, :mod:`._transport_ws`); it imports neither, so there is no circle.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Protocol, runtime_checkable

import attrs
import trio

from ._config import SessionConfig
from ._endpoints import Endpoint, is_secret_header, redact_url
from ._errors import ConnectionLost, RealtimeError, SessionRefused

__all__ = [
    "Connected",
    "Stream",
    "Target",
    "Transport",
    "close_then_drop",
    "closed_on_error",
    "describe",
    "is_loopback",
    "keep_alive",
    "open_stream",
    "opening_errors",
    "refusal",
    "target_of",
]

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


class Connected(Transport, Protocol):
    """What an adapter opens: a :class:`Transport` that can also be kept honest."""

    async def ping(self) -> None:
        """Send a ping and wait for its pong. Raises :class:`ConnectionLost` when gone."""
        ...

    async def abort(self, lost: ConnectionLost) -> None:
        """Drop the connection at once (no closing handshake): ``receive`` and ``send`` then
        raise ``lost``."""
        ...


@attrs.frozen
class Target:
    """Where to connect, checked: what the WebSocket modules need."""

    host: str
    port: int
    secure: bool
    #: The request target: path and query.
    resource: str = attrs.field(repr=False)
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


# -- what went wrong ---------------------------------------------------------------------------


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
    if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError) and not str(exc):
        return "the connection was closed"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def refusal(target: Target, status: int, body: bytes | bytearray | None) -> SessionRefused:
    """The server refused the handshake with HTTP ``status``: a :class:`SessionRefused` with
    the service's ``error.code`` / ``error.message`` when the body carries them (``401``
    ``invalid_api_key``; ``404`` ``call_id_not_found`` for a sideband's unknown call)."""
    code: str | None = None
    message = ""
    try:
        error = json.loads(body or b"").get("error")
    except (ValueError, AttributeError, UnicodeDecodeError):
        error = None
    if isinstance(error, dict):
        if isinstance(error.get("code"), str | int):
            code = str(error["code"])
        if isinstance(error.get("message"), str):
            message = error["message"]
    words = f"handshake with {target.host} rejected: HTTP {status}"
    if code is not None:
        words += f" ({code})"
    if message:
        words += f": {message}"
    return SessionRefused(code, message or f"HTTP {status}", status=status, description=words)


@contextmanager
def opening_errors(target: Target) -> Iterator[None]:
    """Map whatever opening a connection raises to :class:`ConnectionLost`, once (as httpcore
    does at its boundary): the network's errors, a timeout, the WebSocket library's own
    handshake errors (a reply that is not HTTP, a wrong ``Sec-WebSocket-Accept``); each
    with what happened and its cause. An adapter's :func:`refusal` passes through."""
    try:
        yield
    except RealtimeError:
        raise
    except trio.TooSlowError as exc:
        raise ConnectionLost(
            f"could not connect to {target.host}:{target.port}: timed out (connect_timeout)"
        ) from exc
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise ConnectionLost(
            f"could not connect to {target.host}:{target.port}: {describe(exc)}"
        ) from exc
    except Exception as exc:
        raise ConnectionLost(f"handshake with {target.host} failed: {describe(exc)}") from exc


# -- the stream --------------------------------------------------------------------------------


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


# -- keeping the connection honest -------------------------------------------------------------


async def keep_alive(
    ping: Callable[[], Awaitable[None]],
    silent: Callable[[ConnectionLost], Awaitable[None]],
    config: SessionConfig,
) -> None:
    """Every ``ping_interval`` seconds, send a ping and wait ``ping_timeout`` for its pong; when
    none comes the connection has gone silent (a NAT or load balancer dropped it, the network
    went away): ``silent`` is told, as an abnormal loss. Ends when ``ping`` raises
    :class:`ConnectionLost` (the connection is gone anyway)."""
    interval, timeout = config.ping_interval, config.ping_timeout
    if interval is None:
        return
    try:
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(timeout) as answered:
                await ping()
            if answered.cancelled_caught:
                lost = ConnectionLost(
                    f"connection silent: no answer to a ping within {timeout:g} s (ping_timeout)"
                )
                logger.warning("%s", lost)
                await silent(lost)
                return
    except ConnectionLost:
        return


# -- credentials never in log lines ------------------------------------------------------------

#: Headers the WebSocket handshake itself writes (a log line shows them): no credential.
#: Every other header is judged by the endpoint's allow-list (:func:`._endpoints.is_secret_header`).
_HANDSHAKE_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "content-length",
        "date",
        "server",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-key",
        "sec-websocket-accept",
    }
)


class RedactCredentials(logging.Filter):
    """Keep credentials out of a third-party logger's records: header values (``name: value``
    lines, logged as two arguments) unless the header is known to be harmless, and query
    values in any argument or message (:func:`._endpoints.redact_url`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            if (
                len(args) == 2
                and isinstance(args[0], str)
                and ": " in str(record.msg)
                and args[0].lower() not in _HANDSHAKE_HEADERS
                and is_secret_header(args[0])
            ):
                args = (args[0], "<redacted>")
            record.args = tuple(redact_url(a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str):
            record.msg = redact_url(record.msg)
        return True
