"""ResponseTicket: the application's handle on one requested response."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from ._audio import AUDIO_DELTAS
from ._errors import fresh
from ._gate import Request, TicketState
from ._result import ResponseResult
from ._statistics import TicketTimings as TicketTimings
from ._stream import EventStream

__all__ = ["ResponseTicket", "TicketTimings"]

Event = dict[str, Any]


class ResponseTicket:
    """One requested response, from the queue to its ``response.done``.

    Made by :meth:`RealtimeSession.request_response`; never constructed directly. It meets
    the session through a narrow handle: ``cancel`` (asks the session to cancel the request)
    and the buffer size of its event iterators; the session tells it of changes through
    :meth:`request_changed` and :meth:`request_event`.
    """

    def __init__(
        self,
        request: Request[ResponseTicket],
        *,
        cancel: Callable[[Request[ResponseTicket]], None],
        event_buffer: int,
    ) -> None:
        self._request = request
        self._cancel = cancel
        self._event_buffer = event_buffer
        self._created = trio.Event()
        self._done = trio.Event()
        self._streams: list[EventStream] = []
        self._interrupted = False
        self._cancel_requested_at: float | None = None

    def __repr__(self) -> str:
        return (
            f"<ResponseTicket {self._request.event_id} {self.state.value}"
            f" response_id={self.response_id!r}>"
        )

    @property
    def state(self) -> TicketState:
        return self._request.state

    @property
    def event_id(self) -> str:
        """The ``event_id`` of its ``response.create`` (also in the response's metadata)."""
        return self._request.event_id

    @property
    def response_id(self) -> str | None:
        """The server's id for the response, once ``response.created`` arrived."""
        return self._request.response_id

    @property
    def priority(self) -> int:
        return self._request.priority

    @property
    def result(self) -> ResponseResult | None:
        """How it ended, once it is ``DONE``."""
        return self._request.result

    @property
    def error(self) -> BaseException | None:
        """Why it failed, once it is ``FAILED``."""
        return self._request.error

    @property
    def timings(self) -> TicketTimings:
        r = self._request
        return TicketTimings(
            r.queued_at,
            r.sent_at,
            r.created_at,
            r.first_output_at,
            r.finished_at,
            r.attempts,
            self._cancel_requested_at,
        )

    async def wait_created(self) -> str | None:
        """Wait for ``response.created``; return the response id.

        Returns None if the ticket was cancelled before the server created it. Raises what
        the ticket failed with (``ResponseRejected``, ``ResponseTimeout``, ``ConnectionLost``,
        ``SessionClosed``). Cancelling this wait is safe and leaves the request as it is.
        """
        await self._created.wait()
        self._raise_error()
        return self._request.response_id

    async def wait_done(self) -> ResponseResult:
        """Wait for the response to end; return its result.

        A ticket cancelled before it was sent gives status ``cancelled`` and ``response``
        None. Raises what the ticket failed with. Cancelling this wait is safe.
        """
        await self._done.wait()
        self._raise_error()
        assert self._request.result is not None
        return self._request.result

    def cancel_nowait(self) -> None:
        """Ask for cancellation (see :meth:`cancel`) without waiting. Idempotent."""
        if self._cancel_requested_at is None and not self._request.state.terminal:
            self._cancel_requested_at = trio.current_time()
        self._cancel(self._request)

    async def cancel(self) -> None:
        """Cancel the response, and wait until the ticket is terminal.

        Queued: it is dropped and never sent. Sent: it is cancelled by id when the server
        creates it. Active: ``response.cancel`` is sent with its id. Idempotent; returns once
        the ticket is terminal (at once if it already is, or the session has closed).
        """
        self.cancel_nowait()
        await self._done.wait()

    def events(self) -> EventStream:
        """An async iterator over this response's server events, from ``response.created``
        to ``response.done``.

        Only events that arrive after this call are seen, so call it right after
        ``request_response``. The buffer holds ``SessionConfig.event_buffer`` events; a
        reader that falls further behind gets ``EventBufferOverflow``. Iteration ends after
        ``response.done``, or raises the ticket's error if it failed.

        Each call gives a new iterator, to be iterated once. Once the response has ended its
        events are gone: calling this then raises ``RuntimeError`` (rather than giving an
        iterator that silently yields nothing). A ticket cancelled before it was sent gives
        an iterator that ends at once; a failed one, one that raises its error.
        """
        request = self._request
        if (
            request.state is TicketState.DONE
            and request.result is not None
            and request.result.response is not None
        ):
            raise RuntimeError(
                f"response {request.response_id} already ended: its events went to the "
                "iterators made before; call events() right after request_response()"
            )
        stream = EventStream(self._event_buffer)
        if self._request.state.terminal:
            stream.finish(self._request.error)
        else:
            self._streams.append(stream)
        return stream

    def _raise_error(self) -> None:
        if self._request.error is not None:
            raise fresh(self._request.error)

    # Called by the session (synchronously) -------------------------------------------------

    def request_changed(self) -> None:
        """The request moved: wake the waiters it concerns."""
        state = self._request.state
        if state is TicketState.ACTIVE or state.terminal:
            self._created.set()
        if state.terminal:
            self._done.set()
            for stream in self._streams:
                stream.finish(self._request.error)
            self._streams.clear()

    def request_event(self, event: Event) -> None:
        """A server event of the request's response."""
        if self._streams and not (self._interrupted and event["type"] in AUDIO_DELTAS):
            self._streams = [s for s in self._streams if s.push(event)]

    def interrupted(self) -> None:
        """An interruption stopped its response: its output audio deltas are dropped from
        now on (the other events still come, up to ``response.done``)."""
        self._interrupted = True
