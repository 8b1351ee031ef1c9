"""One exception hierarchy for everything trio-realtime raises.

"You closed it" (:class:`SessionClosed`) is kept apart from "the other side broke it"
(:class:`ConnectionLost`), as trio keeps ``ClosedResourceError`` apart from
``BrokenResourceError``. Transport exceptions are translated into these exactly once, at the
transport seam, with ``raise ... from exc``. No message ever contains a credential.
"""

from __future__ import annotations

__all__ = [
    "ConnectionLost",
    "EventBufferOverflow",
    "QueueFull",
    "RealtimeError",
    "ResponseRejected",
    "ResponseTimeout",
    "SessionClosed",
]


class RealtimeError(Exception):
    """Base class of every error trio-realtime raises."""


class SessionClosed(RealtimeError):
    """The session was closed by this side (its ``async with`` block ended)."""


class ConnectionLost(RealtimeError):
    """The connection to the Realtime server broke, or the server closed it.

    ``code`` and ``reason`` carry the WebSocket close code and reason when the server sent one.
    """

    def __init__(self, message: str, *, code: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason


class QueueFull(RealtimeError):
    """``max_queue`` requests are already waiting; this one was not queued."""


class ResponseRejected(RealtimeError):
    """The server answered a ``response.create`` with an ``error`` event.

    The one-active-response conflict never surfaces as this: it is absorbed and retried.
    """

    def __init__(self, code: str | None, message: str):
        super().__init__(f"response rejected ({code}): {message}")
        self.code = code
        self.message = message


class ResponseTimeout(RealtimeError):
    """A response did not start or did not finish within the session's deadlines."""


class EventBufferOverflow(RealtimeError):
    """A subscriber or ticket iterator fell more than its buffer behind and was cut off."""
