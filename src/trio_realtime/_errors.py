"""One exception hierarchy for everything trio-realtime raises.

"You closed it" (:class:`SessionClosed`) is kept apart from "the other side broke it"
(:class:`ConnectionLost`), as trio keeps ``ClosedResourceError`` apart from
``BrokenResourceError``. Transport exceptions are translated into these exactly once, at the
transport seam, with ``raise ... from exc``. No message ever contains a credential.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = [
    "CallEnded",
    "ConnectionLost",
    "EventBufferOverflow",
    "QueueFull",
    "RealtimeError",
    "ResponseRejected",
    "ResponseTimeout",
    "SessionClosed",
    "SessionRefused",
    "fresh",
]

E = TypeVar("E", bound=BaseException)


class RealtimeError(Exception):
    """Base class of every error trio-realtime raises."""


class SessionClosed(RealtimeError):
    """The session was closed by this side (its ``async with`` block ended)."""


class ConnectionLost(RealtimeError):
    """The connection to the Realtime server broke, or the server closed it.

    ``code`` and ``reason`` carry the WebSocket close code and reason when the server sent one
    (:class:`SessionRefused`: the server's error code instead).
    """

    def __init__(
        self, message: str, *, code: int | str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.code: int | str | None = code
        self.reason = reason


class SessionRefused(ConnectionLost):
    """The server refused the session before ``session.created``: with an ``error`` event
    (e.g. ``invalid_api_key``) or at the WebSocket handshake, with an HTTP status (``401`` for
    a refused key, ``404`` for a wrong path or a sideband's unknown call).

    ``code`` is the server's error code (not a close code) when it gave one, ``message`` its
    message, and ``status`` the HTTP status of a refused handshake (else None).
    """

    def __init__(
        self,
        code: str | None,
        message: str,
        *,
        status: int | None = None,
        description: str | None = None,
    ):
        super().__init__(
            description or f"the server refused the session ({code}): {message}", code=code
        )
        self.message = message
        self.status = status


class CallEnded(SessionRefused):
    """A sideband's call is over, or never was: the service refused to attach to it (HTTP 404
    ``call_id_not_found`` at the handshake, the first one or a re-attach after a drop) or said
    so with an ``error`` event. ``code`` is the service's (``call_id_not_found``);
    ``call_id`` the call's. A :class:`SessionRefused`, so never tried again."""

    def __init__(
        self,
        code: str | None,
        message: str,
        *,
        call_id: str | None = None,
        status: int | None = None,
        description: str | None = None,
    ):
        super().__init__(
            code,
            message,
            status=status,
            description=description or f"the call has ended ({code}): {message}",
        )
        self.call_id = call_id


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


def fresh(error: E) -> E:
    """A new exception equal to ``error``, to raise where ``error`` is stored and shared.

    Raising one stored exception from many places grows its traceback and lets any raise
    rewrite its ``__cause__`` for everyone; as trio's channels do, each raise gets its own
    exception, with the stored one's cause.
    """
    new = type(error).__new__(type(error), *error.args)
    new.__dict__.update(error.__dict__)
    new.__cause__ = error.__cause__
    new.__suppress_context__ = True
    return new
