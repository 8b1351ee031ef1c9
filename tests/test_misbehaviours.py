"""The misbehaviours the first gate hid (issue 7), one test or more each.

Each failed before the gate's second edition; see the issue for how each was found.
"""

from __future__ import annotations

import traceback
from typing import Any

import pytest
import trio
import trio.testing

from gate_helpers import Driver, conflict, created, done, error
from memory import connected, memory_pair
from trio_realtime import (
    ConnectionLost,
    RealtimeError,
    ResponseRejected,
    ResponseTimeout,
    SessionConfig,
    SessionRefused,
    TicketState,
    open_session,
)
from trio_realtime.testing import open_fake_server

Event = dict[str, Any]

LEGACY_CONFLICT = "Conversation already has an active response"


# 1 and 2: leaving the block raises nothing of ours; no create overtakes a SENT one ---------


async def test_leaving_the_block_never_raises_and_sent_means_next_on_the_wire() -> None:
    """The issue's reproduction, many times over real loopback WebSockets: it raised a raw
    ``BrokenResourceError`` in an ``ExceptionGroup`` about one run in ten."""
    for _ in range(30):
        with trio.fail_after(10):
            async with open_fake_server() as server:
                async with open_session(server.url) as session:
                    g = session.request_response()
                    await trio.lowlevel.checkpoint()
                    g_was_sent = g.state is TicketState.SENT
                    a = session.request_response(priority=1)
                    await a.wait_done()
                    await session.cancel_response()
                creates = [e["event_id"] for e in server.received if e["type"] == "response.create"]
                # Priorities order only what is queued: a SENT request is next on the wire.
                assert creates[0] == (g.event_id if g_was_sent else a.event_id)
                assert server.statistics().max_in_band_active == 1


async def test_a_sent_request_is_never_overtaken_by_a_higher_priority() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            g = session.request_response()
            await trio.testing.wait_all_tasks_blocked()
            assert g.state is TicketState.SENT
            a = session.request_response(priority=5)
            first = await peer.expect("response.create")
            assert first["event_id"] == g.event_id
            await trio.testing.wait_all_tasks_blocked()
            assert peer.unread() == []  # a waits for the slot
            assert a.state is TicketState.QUEUED
            assert session.statistics().in_flight == 1
            await peer.complete(first, "resp_g")
            second = await peer.expect("response.create")
            assert second["event_id"] == a.event_id
            assert g.timings.sent_at is not None
            assert a.timings.sent_at is not None
            assert g.timings.sent_at <= a.timings.sent_at


# 3: an old-shape conflict after the blocker finished --------------------------------------


def test_blind_conflict_with_nothing_running_is_retried_at_once() -> None:
    d = Driver()
    d.feed(created("resp_vad"))
    mine = d.submit()
    d.feed(done("resp_vad"))  # mine goes out; the server had not seen resp_vad's end yet
    assert mine.state is TicketState.SENT
    d.feed(error(None, LEGACY_CONFLICT, None))  # code null, names nothing, event_id null
    assert mine.state is TicketState.SENT
    assert mine.attempts == 2
    assert d.gate.slot_holder is mine


async def test_blind_conflict_after_the_blockers_done_does_not_stall_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with connected() as (session, peer, _):
            await peer.send(created("resp_vad"))
            await trio.testing.wait_all_tasks_blocked()
            ticket = session.request_response()
            await peer.send(done("resp_vad"))
            create = await peer.expect("response.create")
            start = trio.current_time()
            await peer.send(error(None, LEGACY_CONFLICT, None))
            retry = await peer.expect("response.create")
            assert retry["event_id"] == ticket.event_id
            assert trio.current_time() == start  # not 35 s later
            await peer.complete(create, "resp_1")
            assert (await ticket.wait_done()).status == "completed"
            assert session.statistics().conflicts_absorbed == 1


def test_a_second_blind_conflict_in_a_row_waits_for_an_in_band_done() -> None:
    d = Driver()
    mine = d.submit()
    d.feed(created("resp_vad"))  # overtakes ours, and ends: the server may still name it
    d.feed(done("resp_vad"))
    d.feed(conflict(None, legacy=True))  # retried at once (rule 4)
    d.feed(conflict(None, legacy=True))  # something runs after all: no retry storm
    assert mine.state is TicketState.QUEUED
    assert d.gate.slot_holder == "?"
    assert len(d.creates()) == 2
    d.feed(done("resp_unseen"))
    assert mine.state is TicketState.SENT


# 4: a late created of an abandoned request is always cancelled ---------------------------


@pytest.mark.parametrize("echo", [True, False])
async def test_late_created_is_cancelled_even_after_cancel_not_active(
    autojump_clock: trio.testing.MockClock, echo: bool
) -> None:
    config = SessionConfig(created_timeout=10)
    with trio.fail_after(60):
        async with connected(config) as (session, peer, _):
            ticket = session.request_response()
            create = await peer.expect("response.create")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.cancel_response)
                cancel = await peer.expect("response.cancel")
                assert "response_id" not in cancel  # not created yet: nothing to name
                await peer.send(
                    error(
                        "response_cancel_not_active",
                        "Cancellation failed: no active response found",
                        cancel["event_id"] if echo else None,
                    )
                )
                with pytest.raises(ResponseTimeout):
                    await ticket.wait_done()
            await peer.created(create, "resp_late")  # the server started it anyway
            late_cancel = await peer.expect("response.cancel")
            assert late_cancel["response_id"] == "resp_late"


def test_late_created_after_a_refused_cancel_is_cancelled_by_id() -> None:
    d = Driver(created_timeout=10.0)
    mine = d.submit()
    d.gate.cancel(mine, now=d.now)
    d.gate.cancel_active(now=d.now)
    d.pump()
    [untargeted] = d.cancels()
    d.feed(error("response_cancel_not_active", "no active response", untargeted["event_id"]))
    d.advance(10.1)
    assert isinstance(mine.error, ResponseTimeout)
    d.feed(created("resp_late", mine.event_id))
    assert d.cancels()[-1]["response_id"] == "resp_late"


# 5: a rejection without error.event_id ----------------------------------------------------


def test_null_id_rejection_of_the_only_unanswered_create_fails_it() -> None:
    d = Driver()
    mine = d.submit({"modalities": ["nope"]})
    following = d.submit()
    d.feed(error("unknown_parameter", "Unknown parameter: 'response.modalities'.", None))
    assert mine.state is TicketState.FAILED
    assert isinstance(mine.error, ResponseRejected)
    assert mine.error.code == "unknown_parameter"
    assert following.state is TicketState.SENT  # the slot is free at once


def test_null_id_error_answers_an_older_application_event_first() -> None:
    d = Driver()
    d.gate.client_event_sent({"type": "session.update", "event_id": "evt_1"}, now=d.now)
    mine = d.submit()
    d.feed(error("invalid_value", "Invalid session", None))  # read first: the update's
    assert mine.state is TicketState.SENT
    d.feed(error("unknown_parameter", "Unknown parameter", None))  # then the create's
    assert isinstance(mine.error, ResponseRejected)


def test_null_id_error_is_ambiguous_while_a_later_event_awaits_an_answer() -> None:
    d = Driver()
    mine = d.submit()
    d.gate.client_event_sent({"type": "session.update", "event_id": "evt_1"}, now=d.now)
    d.feed(error("unknown_parameter", "Unknown parameter", None))  # mine's or the update's
    assert mine.state is TicketState.SENT  # not guessed
    d.feed({"type": "session.updated", "event_id": "ev_s1", "session": {}})
    assert mine.state is TicketState.SENT


def test_audio_appends_await_no_answer() -> None:
    d = Driver()
    d.gate.client_event_sent(
        {"type": "input_audio_buffer.append", "event_id": "evt_a", "audio": ""}, now=d.now
    )
    mine = d.submit()
    d.feed(error("unknown_parameter", "Unknown parameter", None))
    assert isinstance(mine.error, ResponseRejected)


async def test_null_id_rejection_reaches_the_ticket_over_a_session() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            await session.send({"type": "session.update", "session": {"type": "realtime"}})
            update = await peer.expect("session.update")
            await peer.send({"type": "session.updated", "event_id": "ev_1", "session": {}})
            ticket = session.request_response({"bogus": 1})
            await peer.expect("response.create")
            unknown = error("unknown_parameter", "Unknown parameter: 'response.bogus'.", None)
            await peer.send(unknown)
            with pytest.raises(ResponseRejected, match="unknown_parameter"):
                await ticket.wait_done()
            assert update["event_id"] != ticket.event_id


# 6: every raise gets its own exception --------------------------------------------------


async def test_each_raise_is_a_fresh_exception_with_the_stored_cause() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _transport):
            tickets = [session.request_response() for _ in range(3)]
            async with session.subscribe() as one, session.subscribe() as two:
                await peer.expect("response.create")
                peer.close()  # the server vanishes
                raised: list[BaseException] = []
                for ticket in [*tickets, tickets[0], tickets[0]]:
                    with pytest.raises(ConnectionLost) as info:
                        await ticket.wait_done()
                    raised.append(info.value)
                with pytest.raises(ConnectionLost) as drained:
                    async for _ in one:
                        pass
                with pytest.raises(ConnectionLost) as other:
                    async for _ in two:
                        pass
            with pytest.raises(ConnectionLost) as submit:
                session.request_response()
    everything = [*raised, drained.value, other.value, submit.value]
    assert len({id(e) for e in everything}) == len(everything)
    causes = {id(e.__cause__) for e in everything}
    assert len(causes) == 1
    assert everything[0].__cause__ is not None
    depths = [len(traceback.extract_tb(e.__traceback__)) for e in raised[2:]]
    assert depths[0] == depths[1] == depths[2]  # the same raise does not grow


# 7: connect errors keep their reason -----------------------------------------------------


async def test_refused_connection_says_connection_refused() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with trio.fail_after(5), pytest.raises(ConnectionLost) as info:
        async with open_session(f"ws://127.0.0.1:{port}/v1/realtime"):
            pass  # pragma: no cover
    assert "refused" in str(info.value).lower()
    assert "ExceptionGroup" not in str(info.value)


async def test_refusal_before_session_created_carries_the_servers_code() -> None:
    transport, peer = memory_pair()
    message = "Incorrect API key provided."
    await peer.send(
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "code": "invalid_api_key",
                "message": message,
            },
        }
    )
    peer.close()
    with trio.fail_after(5), pytest.raises(SessionRefused) as info:
        async with open_session(transport):
            pass  # pragma: no cover
    assert isinstance(info.value, ConnectionLost)
    assert info.value.code == "invalid_api_key"
    assert info.value.message == message
    assert not isinstance(info.value.__cause__, SessionRefused)


# 8: response.done without response.created; an interruption ending incomplete -------------


@pytest.mark.parametrize("status", ["cancelled", "incomplete", "completed"])
async def test_done_without_created_finishes_the_request_and_frees_the_slot(status: str) -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            first = session.request_response()
            second = session.request_response()
            create = await peer.expect("response.create")
            await peer.done(create, "resp_1", status=status)  # no response.created before it
            result = await first.wait_done()
            assert (result.status, result.response_id) == (status, "resp_1")
            assert first.response_id == "resp_1"
            following = await peer.expect("response.create")
            assert following["event_id"] == second.event_id


async def test_interrupted_response_ending_incomplete_releases_the_slot() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            first = session.request_response()
            create = await peer.expect("response.create")
            await peer.created(create, "resp_1")
            await first.wait_created()
            waiting = session.request_response()
            details = {"type": "incomplete", "reason": "turn_detected"}
            await peer.done(create, "resp_1", status="incomplete", status_details=details)
            assert (await first.wait_done()).status == "incomplete"
            following = await peer.expect("response.create")
            assert following["event_id"] == waiting.event_id
            assert session.statistics().incomplete == 1


# 9: a function-call follow-up whose turn's done never comes -------------------------------


async def test_follow_up_goes_out_once_its_turns_response_is_given_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SessionConfig(response_timeout=30, cancel_grace=5)
    with trio.fail_after(120):
        async with connected(config) as (session, peer, _):
            turn = session.request_response({"tools": [{"type": "function", "name": "f"}]})
            create = await peer.expect("response.create")
            await peer.created(create, "resp_1")
            call = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
            await peer.send(
                {
                    "type": "response.output_item.added",
                    "response_id": "resp_1",
                    "output_index": 0,
                    "item": call,
                }
            )
            await turn.wait_created()
            await trio.testing.wait_all_tasks_blocked()
            follow_up = await session.send_function_result("call_1", '{"ok": true}')
            await peer.expect("conversation.item.create")
            assert follow_up.state is TicketState.QUEUED  # held: the turn has not ended
            cancel = await peer.expect("response.cancel")  # resp_1 went silent
            assert cancel["response_id"] == "resp_1"
            with pytest.raises(ResponseTimeout):
                await turn.wait_done()  # force-released: the library gave it up
            again = await peer.expect("response.create")
            assert again["event_id"] == follow_up.event_id
            await peer.complete(again, "resp_2")
            assert (await follow_up.wait_done()).status == "completed"


def test_statistics_count_what_their_names_say() -> None:
    from trio_realtime import SessionClosed

    d = Driver()
    tickets = [d.submit() for _ in range(3)]
    d.gate.close(SessionClosed("closed"), now=d.now)
    stats = d.gate.statistics()
    assert all(t.state is TicketState.FAILED for t in tickets)
    assert stats.failed == 3
    assert isinstance(tickets[0].error, RealtimeError)
