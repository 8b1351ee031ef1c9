"""Session configuration: the session's own deadlines and buffer sizes."""

from __future__ import annotations

import math
import numbers
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from ._ticket import ResponseTicket

__all__ = ["Reconnect", "SessionConfig"]


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _count(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A whole number of things, at least 1 (``True`` is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, got {_describe(value)}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


def _seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A duration in seconds: a real number (not a bool), > 0; ``math.inf`` means never."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{attribute.name} must be a number of seconds (int or float), got {_describe(value)}"
        )
    if math.isnan(value) or not float(value) > 0:
        raise ValueError(f"{attribute.name} must be > 0 seconds, got {value!r}")


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_describe(value)}")


def _ssl_context(name: str, value: object) -> None:
    if value is not None and not isinstance(value, ssl.SSLContext):
        raise TypeError(f"{name} must be an ssl.SSLContext or None, got {type(value).__name__}")


TRANSPORTS = ("trio-websocket", "websockets")


def _transport(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    choices = " or ".join(repr(name) for name in TRANSPORTS)
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be {choices}, got {_describe(value)}")
    if value not in TRANSPORTS:
        raise ValueError(f"{attribute.name} must be {choices}, got {value!r}")


def _reconnect(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Reconnect):
        raise TypeError(
            f"{attribute.name} must be a Reconnect(...) policy or None, got {_describe(value)}"
        )


def _callback(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(
            f"{attribute.name} must be a callable (given each ticket as it ends) or None, "
            f"got {_describe(value)}"
        )


@attrs.frozen(kw_only=True)
class Reconnect:
    """How a session opens a new connection after an unexpected loss (see
    ``SessionConfig.reconnect``): up to ``attempts`` tries, the n-th after a delay drawn
    uniformly between half and all of ``min(max_delay, initial_delay * 2**n)`` (jitter)."""

    #: Tries before the session gives up and ends with the last error.
    attempts: int = attrs.field(default=5, validator=_count)
    #: Delay before the first try, in seconds.
    initial_delay: float = attrs.field(default=0.5, validator=_seconds)
    #: Longest delay between tries, in seconds.
    max_delay: float = attrs.field(default=10.0, validator=_seconds)

    def delay(self, attempt: int, random: float) -> float:
        """The delay before try ``attempt`` (0-based), given a ``random`` number in [0, 1)."""
        ceiling = min(self.max_delay, self.initial_delay * 2.0**attempt)
        return ceiling * (0.5 + random / 2)


def _optional_seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _seconds(instance, attribute, value)


@attrs.frozen(kw_only=True)
class SessionConfig:
    """How a session queues, waits and recovers. Times are seconds (floats).

    Every argument is checked when the config is made: a wrong type raises ``TypeError`` and
    an out-of-range value ``ValueError``, each naming the argument. Counts are ints (>= 1),
    times are real numbers of seconds (> 0; ``math.inf`` means no deadline), flags are bools.

    Only the session's own deadlines live here; to bound a call, wrap it in
    ``trio.fail_after`` / ``trio.move_on_after``.
    """

    #: Most requests that may wait in the queue (not yet sent); more raise ``QueueFull``.
    max_queue: int = attrs.field(default=1024, validator=_count)
    #: A sent ``response.create`` that sees no ``response.created`` for this long fails with
    #: ``ResponseTimeout`` and frees the slot.
    created_timeout: float = attrs.field(default=10.0, validator=_seconds)
    #: No server event of the active response for this long means it is stuck: it is cancelled.
    response_timeout: float = attrs.field(default=30.0, validator=_seconds)
    #: After a cancel, how long to wait for ``response.done`` before the slot is force-released.
    cancel_grace: float = attrs.field(default=5.0, validator=_seconds)
    #: Opening the connection, up to and including the server's ``session.created``.
    connect_timeout: float = attrs.field(default=15.0, validator=_seconds)
    #: Closing the WebSocket gracefully before the connection is simply dropped.
    close_timeout: float = attrs.field(default=2.0, validator=_seconds)
    #: Whether out-of-band responses (``"conversation": "none"``) wait for the slot too.
    out_of_band_takes_slot: bool = False
    #: Events each subscriber or ticket iterator may fall behind before it is cut off.
    event_buffer: int = attrs.field(default=4096, validator=_count)
    #: Client events ``send()`` may have waiting for the writer before it blocks.
    send_buffer: int = attrs.field(default=256, validator=_count)
    #: Largest server message accepted, in bytes.
    max_message_size: int = attrs.field(default=32 * 1024 * 1024, validator=_count)
    #: Receive buffer of the WebSocket; 64 KiB measured about 2x faster than 4 KiB on audio deltas.
    receive_buffer_size: int = attrs.field(default=64 * 1024, validator=_count)
    #: Send credentials over plain ``ws://`` to a host that is not loopback.
    allow_insecure: bool = False
    #: The WebSocket library: ``"trio-websocket"`` (the default, a core dependency) or
    #: ``"websockets"`` (faster; ``pip install "trio-realtime[fast]"``).
    transport: Literal["trio-websocket", "websockets"] = attrs.field(
        default="trio-websocket", validator=_transport
    )
    #: Called with each ticket as it ends (``DONE`` or ``FAILED``), in order, in a reporter
    #: task of the session's own (never the reader, never the application's task): read
    #: ``ticket.timings``, ``ticket.result`` or ``ticket.error`` and export them (Prometheus,
    #: OpenTelemetry, ...). It must not block; what it raises is logged and ignored; more
    #: than 1024 tickets behind, tickets are dropped (logged).
    on_response: Callable[[ResponseTicket], object] | None = attrs.field(
        default=None, eq=False, repr=False, validator=_callback
    )
    #: TLS settings for ``wss://`` (e.g. a private CA); None: the system's trust store, with
    #: certificate and host name verification.
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, eq=False, repr=False)
    #: Open a new connection after an unexpected loss (an abnormal close, a close with
    #: 1001/1011/1012/1013, ``session_expired``) and carry on in the same block, replaying the
    #: configuration and the conversation; None (the default): the loss ends the session.
    reconnect: Reconnect | None = attrs.field(default=None, validator=_reconnect)
    #: Move to a new connection at the first quiet moment after this many seconds (before
    #: the service's cap: 60 minutes on OpenAI, 30 on Azure), replaying as a reconnect does;
    #: None (the default): never.
    rollover_after: float | None = attrs.field(default=None, validator=_optional_seconds)
    #: Most conversation items replayed into a new connection (the oldest are left out).
    replay_items: int = attrs.field(default=200, validator=_count)
    #: Send a WebSocket ping after this many seconds, and again after each answer, so that a
    #: connection gone silent (a NAT or load balancer that dropped it, a dead network) is
    #: noticed; None: never.
    ping_interval: float | None = attrs.field(default=15.0, validator=_optional_seconds)
    #: A ping unanswered for this long is an abnormal loss: the session reconnects when
    #: ``reconnect`` allows it, else it ends with ``ConnectionLost``. A silent connection is
    #: noticed within ``ping_interval + ping_timeout`` seconds (25 by default).
    ping_timeout: float = attrs.field(default=10.0, validator=_seconds)

    def __attrs_post_init__(self) -> None:
        # The fields without a validator of their own: flags and the TLS context.
        for name in ("out_of_band_takes_slot", "allow_insecure"):
            _flag(name, getattr(self, name))
        _ssl_context("ssl_context", self.ssl_context)
