"""Where ``on_response`` runs (issue 13, item 6): in the session's reporter task, fed through a
bounded channel, so that it can neither stall nor kill the reader, nor run in the application's
task; what it raises is logged; tickets it falls too far behind on are dropped and logged."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from memory import connected
from trio_realtime import ResponseTicket, SessionClosed, SessionConfig


async def test_on_response_runs_in_the_reporter_task_never_the_callers() -> None:
    tasks: list[trio.lowlevel.Task] = []

    def export(ticket: ResponseTicket) -> None:
        tasks.append(trio.lowlevel.current_task())

    me = trio.lowlevel.current_task()
    with trio.fail_after(5):
        async with connected(SessionConfig(on_response=export)) as (session, peer, _):
            session.request_response()  # in flight
            waiting = session.request_response()
            await peer.expect("response.create")
            waiting.cancel_nowait()  # ends in this task ...
            await trio.testing.wait_all_tasks_blocked()
            assert len(tasks) == 1  # ... and is reported in another
        # Ended by leaving the block (in this task too): reported before the block is left.
    assert len(tasks) == 2
    assert all(task is not me for task in tasks)
    assert {task.name for task in tasks} == {"trio_realtime._reporter.Reporter.run"}


async def test_a_callback_that_raises_never_reaches_the_reader(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def export(ticket: ResponseTicket) -> None:
        raise RuntimeError("exporter down")

    with trio.fail_after(5), caplog.at_level(logging.ERROR, logger="trio_realtime"):
        async with connected(SessionConfig(on_response=export)) as (session, peer, _):
            first = session.request_response()
            create = await peer.expect("response.create")
            await peer.created(create, "resp_1")
            await peer.done(create, "resp_1")
            await first.wait_done()
            second = session.request_response()  # the reader still reads
            create = await peer.expect("response.create")
            await peer.created(create, "resp_2")
            await peer.done(create, "resp_2")
            assert (await second.wait_done()).status == "completed"
    assert caplog.text.count("on_response raised") == 2


async def test_tickets_the_reporter_cannot_keep_up_with_are_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[ResponseTicket] = []
    config = SessionConfig(on_response=seen.append, max_queue=2000)
    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="trio_realtime"):
        async with connected(config) as (session, peer, _):
            tickets = [session.request_response() for _ in range(1100)]
            await peer.expect("response.create")
        # All 1,100 end at once, as the block is left: the reporter's buffer holds 1,024.
    assert all(isinstance(t.error, SessionClosed) for t in tickets)
    dropped = [r for r in caplog.records if "not reported" in r.getMessage()]
    assert dropped
    assert dropped[-1].getMessage().endswith(f"({len(dropped)} dropped)")
    assert len(seen) + len(dropped) == len(tickets)
    assert len(seen) >= 1024
    assert set(seen) <= set(tickets)
