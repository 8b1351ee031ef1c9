"""Session configuration: the session's own deadlines and buffer sizes."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from ._ticket import ResponseTicket

__all__ = ["SessionConfig"]


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class SessionConfig:
    """How a session queues, waits and recovers. Times are seconds (floats).

    Only the session's own deadlines live here; to bound a call, wrap it in
    ``trio.fail_after`` / ``trio.move_on_after``.
    """

    #: Most requests that may wait in the queue (not yet sent); more raise ``QueueFull``.
    max_queue: int = attrs.field(default=1024, validator=_positive)
    #: A sent ``response.create`` that sees no ``response.created`` for this long fails with
    #: ``ResponseTimeout`` and frees the slot.
    created_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: No server event of the active response for this long means it is stuck: it is cancelled.
    response_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: After a cancel, how long to wait for ``response.done`` before the slot is force-released.
    cancel_grace: float = attrs.field(default=5.0, validator=_positive)
    #: Opening the connection, up to and including the server's ``session.created``.
    connect_timeout: float = attrs.field(default=15.0, validator=_positive)
    #: Closing the WebSocket gracefully before the connection is simply dropped.
    close_timeout: float = attrs.field(default=2.0, validator=_positive)
    #: Whether out-of-band responses (``"conversation": "none"``) wait for the slot too.
    out_of_band_takes_slot: bool = False
    #: Events each subscriber or ticket iterator may fall behind before it is cut off.
    event_buffer: int = attrs.field(default=4096, validator=_positive)
    #: Client events ``send()`` may have waiting for the writer before it blocks.
    send_buffer: int = attrs.field(default=256, validator=_positive)
    #: Largest server message accepted, in bytes.
    max_message_size: int = attrs.field(default=32 * 1024 * 1024, validator=_positive)
    #: Receive buffer of the WebSocket; 64 KiB measured about 2x faster than 4 KiB on audio deltas.
    receive_buffer_size: int = attrs.field(default=64 * 1024, validator=_positive)
    #: Send credentials over plain ``ws://`` to a host that is not loopback.
    allow_insecure: bool = False
    #: The WebSocket library: ``"trio-websocket"`` (the default, a core dependency) or
    #: ``"websockets"`` (faster; ``pip install "trio-realtime[fast]"``).
    transport: Literal["trio-websocket", "websockets"] = attrs.field(
        default="trio-websocket", validator=attrs.validators.in_(("trio-websocket", "websockets"))
    )
    #: Called with each ticket as it ends (``DONE`` or ``FAILED``), synchronously in the
    #: session's task: read ``ticket.timings``, ``ticket.result`` or ``ticket.error`` and
    #: export them (Prometheus, OpenTelemetry, ...). It must not block; what it raises is
    #: logged and ignored.
    on_response: Callable[[ResponseTicket], object] | None = attrs.field(
        default=None, eq=False, repr=False
    )
    #: TLS settings for ``wss://`` (e.g. a private CA); None: the system's trust store, with
    #: certificate and host name verification.
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, eq=False, repr=False)
