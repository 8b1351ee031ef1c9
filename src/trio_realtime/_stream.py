"""A bounded, never-blocking event buffer: what subscribers and ticket iterators read.

The producer (the reader or the dispatcher task) must never wait for a consumer: a slow
application would otherwise stall the session and make live responses look stuck. Each stream
buffers up to ``size`` events; a consumer that falls further behind is cut off, and its next
read after the buffered events raises :class:`EventBufferOverflow`. Memory stays bounded.
"""

from __future__ import annotations

from typing import Any, Generic, NoReturn, TypeVar

import trio

from ._errors import EventBufferOverflow, RealtimeError, fresh

__all__ = ["BoundedStream", "EventStream"]

Event = dict[str, Any]
T = TypeVar("T")


class BoundedStream(Generic[T]):
    """An async iterator of what the session hands out (server events, audio chunks).

    Iteration ends normally when the stream is finished; after an overflow, or when the
    connection was lost, the buffered items are delivered first and then the error is raised.
    """

    def __init__(self, size: int) -> None:
        self._send, self._receive = trio.open_memory_channel[T](size)
        self._error: RealtimeError | None = None
        self._finished = False
        # Buffered events are handed out with a cancellation point each, and a schedule
        # point every ``_yield_every``: the reader buffers a whole socket read at once, so a
        # reader that yielded after every event could never catch up.
        self._yield_every = max(64, size // 4)
        self._unyielded = 0

    def push(self, event: T) -> bool:
        """Buffer one event; False once the stream is finished, cut off or abandoned."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.finish(EventBufferOverflow("consumer fell too far behind; events were dropped"))
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._finished = True
            return False
        return True

    @property
    def push_allowed(self) -> bool:
        """False once the stream is finished, cut off or abandoned by its reader."""
        return not self._finished

    def finish(self, error: RealtimeError | None = None) -> None:
        """No more events; the consumer sees ``error`` after the buffered ones. Idempotent."""
        if not self._finished:
            self._finished = True
            self._error = error
            self._send.close()

    @property
    def buffered(self) -> int:
        """Events waiting to be read."""
        return self._receive.statistics().current_buffer_used

    def __aiter__(self) -> BoundedStream[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def receive(self) -> T:
        """The next event. Raises ``trio.EndOfChannel`` when the stream ended normally.

        A checkpoint for cancellation always; it yields to other tasks when it waits, and at
        least once every ``max(64, size // 4)`` buffered events.
        """
        await trio.lowlevel.checkpoint_if_cancelled()  # before taking the event: none is lost
        try:
            event = self._receive.receive_nowait()
        except trio.WouldBlock:
            self._unyielded = 0
            try:
                return await self._receive.receive()
            except trio.EndOfChannel:
                self._raise_end()
        except trio.EndOfChannel:
            self._raise_end()
        self._unyielded += 1
        if self._unyielded >= self._yield_every:
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
        return event

    def _raise_end(self) -> NoReturn:
        if self._error is not None:
            raise fresh(self._error)
        raise trio.EndOfChannel

    def close(self) -> None:
        """Stop reading: the producer drops further events for this stream."""
        self._receive.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()


class EventStream(BoundedStream[Event]):
    """An async iterator of server events (dicts)."""
