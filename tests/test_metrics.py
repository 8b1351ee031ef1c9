"""Latency summaries, the per-response callback, and counts that mean what they say."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from gate_helpers import created, done
from memory import connected
from trio_realtime import (
    ResponseTicket,
    SessionClosed,
    SessionConfig,
    TicketState,
)
from trio_realtime._statistics import LatencySummary


def test_summary_percentiles_by_nearest_rank() -> None:
    summary = LatencySummary.of(float(i) for i in range(1, 101))
    assert (summary.count, summary.p50, summary.p90, summary.p99, summary.max) == (
        100,
        50.0,
        90.0,
        99.0,
        100.0,
    )
    assert LatencySummary.of([]) == LatencySummary(0, None, None, None, None)


async def test_each_latency_is_measured_on_the_sessions_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ended: list[ResponseTicket] = []
    config = SessionConfig(on_response=ended.append)
    with trio.fail_after(60):
        async with connected(config) as (session, peer, _):
            first = session.request_response()
            second = session.request_response()
            create = await peer.expect("response.create")
            await trio.sleep(1)
            await peer.created(create, "resp_1")
            await trio.sleep(2)
            await peer.delta("resp_1")  # first output: 3 s after the create
            await trio.sleep(4)
            await peer.done(create, "resp_1")  # done: 7 s after the create
            second_create = await peer.expect("response.create")
            await peer.created(second_create, "resp_2")
            await peer.done(second_create, "resp_2")  # no output at all
            await second.wait_done()
            timings = first.timings
            assert timings.time_to_created == 1
            assert timings.time_to_first_output == 3
            assert timings.time_to_done == 7
            assert second.timings.queue_wait == 7  # it waited for the first's done
            latency = session.statistics().latency
            assert latency.time_to_done.count == 2
            assert latency.time_to_done.max == 7
            assert latency.queue_wait.max == 7
            assert latency.time_to_first_output.count == 1  # the second had no output
    assert ended[:2] == [first, second]
    assert all(t.state is TicketState.DONE for t in ended[:2])


async def test_cancel_latency_of_a_server_started_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with connected() as (session, peer, _):
            await peer.send(created("resp_vad"))
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.cancel_response)
                cancel = await peer.expect("response.cancel")
                assert cancel["response_id"] == "resp_vad"
                await trio.sleep(0.25)
                await peer.send(done("resp_vad", status="cancelled"))
            summary = session.statistics().latency.cancel_latency
            assert (summary.count, summary.max) == (1, 0.25)


async def test_failed_counts_every_ticket_that_ended_failed_and_the_callback_sees_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[ResponseTicket] = []

    def export(ticket: ResponseTicket) -> None:
        seen.append(ticket)
        raise RuntimeError("exporter down")  # logged, never the session's problem

    with trio.fail_after(5), caplog.at_level(logging.ERROR, logger="trio_realtime"):
        async with connected(SessionConfig(on_response=export)) as (session, peer, _):
            tickets = [session.request_response() for _ in range(3)]
            await peer.expect("response.create")
    assert all(isinstance(t.error, SessionClosed) for t in tickets)
    stats = session.statistics()
    assert stats.failed == 3
    assert stats.completed == stats.failed_by_server == 0
    assert seen == tickets
    assert "on_response raised" in caplog.text
