"""EventStream: bounded, never blocking its producer, and fair to other tasks."""

from __future__ import annotations

import pytest
import trio

from trio_realtime import EventBufferOverflow
from trio_realtime._stream import EventStream


async def test_a_buffered_event_is_still_a_cancellation_point() -> None:
    stream = EventStream(16)
    assert stream.push({"type": "x"})
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await stream.receive()
    assert stream.buffered == 1  # nothing was lost to the cancellation
    assert await stream.receive() == {"type": "x"}


async def test_draining_a_full_buffer_lets_other_tasks_run() -> None:
    size = 1024  # yields at least every 256 events
    stream = EventStream(size)
    for i in range(size):
        assert stream.push({"type": "x", "i": i})
    stream.finish()
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.lowlevel.checkpoint()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            await trio.lowlevel.checkpoint()  # other has started
            before = turns
            received = [event["i"] async for event in stream]
            nursery.cancel_scope.cancel()
    assert received == list(range(size))
    # It yielded at least every 256 events: the other task had turns meanwhile (Trio may run
    # the two in either order within a batch, hence the margin).
    assert turns - before >= size // 256 - 2


async def test_a_consumer_too_far_behind_is_cut_off_after_what_was_buffered() -> None:
    stream = EventStream(4)
    pushed = [stream.push({"i": i}) for i in range(6)]
    assert pushed == [True, True, True, True, False, False]
    assert [await stream.receive() for _ in range(4)] == [{"i": i} for i in range(4)]
    with pytest.raises(EventBufferOverflow):
        await stream.receive()
