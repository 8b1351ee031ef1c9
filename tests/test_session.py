"""The session's tasks over an in-memory transport: rules end to end, and every way it ends."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from memory import connected, memory_pair
from trio_realtime import (
    ConnectionLost,
    EventBufferOverflow,
    QueueFull,
    ResponseRejected,
    ResponseTimeout,
    SessionClosed,
    SessionConfig,
    TicketState,
    open_session,
)


async def test_request_response_round_trip() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            assert session.server_session["id"] == "sess_1"
            ticket = session.request_response({"instructions": "hi"})
            events = ticket.events()
            create = await peer.expect("response.create")
            assert ticket.state is TicketState.SENT
            await peer.created(create, "resp_1")
            assert await ticket.wait_created() == "resp_1"
            await peer.delta("resp_1", "hello")
            await peer.done(create, "resp_1")
            result = await ticket.wait_done()
            assert result.status == "completed"
            assert result.response_id == "resp_1"
            seen = [event["type"] async for event in events]
            assert seen == ["response.created", "response.output_text.delta", "response.done"]
            stats = session.statistics()
            assert (stats.sent, stats.completed, stats.queue_depth) == (1, 1, 0)


async def test_next_create_goes_out_the_moment_the_slot_frees(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Rule 9: no fixed delay. With the autojump clock any sleep would show as elapsed time."""
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            first = session.request_response()
            second = session.request_response()
            create1 = await peer.expect("response.create")
            await peer.created(create1, "resp_1")
            await trio.testing.wait_all_tasks_blocked()
            assert second.state is TicketState.QUEUED
            start = trio.current_time()
            await peer.done(create1, "resp_1")
            create2 = await peer.expect("response.create")
            assert create2["event_id"] == second.event_id
            assert trio.current_time() == start
            assert (await first.wait_done()).status == "completed"


async def test_conflict_never_reaches_the_caller() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            ticket = session.request_response()
            create = await peer.expect("response.create")
            await peer.created({"response": {}}, "resp_vad")  # server-started, races ours
            await peer.send(
                {
                    "type": "error",
                    "event_id": "ev_e",
                    "error": {
                        "type": "invalid_request_error",
                        "code": "conversation_already_has_active_response",
                        "message": "Conversation already has an active response in progress: "
                        "resp_vad. Wait until the response is finished before creating a new one.",
                        "param": None,
                        "event_id": create["event_id"],
                    },
                }
            )
            await peer.done(None, "resp_vad")
            retry = await peer.expect("response.create")
            assert retry["event_id"] == create["event_id"]
            await peer.complete(retry, "resp_1")
            assert (await ticket.wait_done()).status == "completed"
            assert session.statistics().conflicts_absorbed == 1
            assert session.statistics().server_started == 1


async def test_other_rejection_raises_response_rejected() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            ticket = session.request_response({"modalities": ["bogus"]})
            create = await peer.expect("response.create")
            await peer.send(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "code": "invalid_value",
                        "message": "Invalid modalities",
                        "param": "response.modalities",
                        "event_id": create["event_id"],
                    },
                }
            )
            with pytest.raises(ResponseRejected) as info:
                await ticket.wait_done()
            assert info.value.code == "invalid_value"
            assert ticket.state is TicketState.FAILED


async def test_created_timeout(autojump_clock: trio.testing.MockClock) -> None:
    config = SessionConfig(created_timeout=3.0)
    with trio.fail_after(60):
        async with connected(config) as (session, peer, _):
            start = trio.current_time()
            ticket = session.request_response()
            await peer.expect("response.create")
            with pytest.raises(ResponseTimeout):
                await ticket.wait_created()
            assert trio.current_time() - start == pytest.approx(3.0)
            nxt = session.request_response()
            await peer.expect("response.create")  # the slot was freed
            assert nxt.state is TicketState.SENT


async def test_stuck_response_is_cancelled_then_force_released(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = SessionConfig(response_timeout=10.0, cancel_grace=2.0)
    with trio.fail_after(120):
        async with connected(config) as (session, peer, _):
            stuck = session.request_response()
            waiting = session.request_response()
            create = await peer.expect("response.create")
            await peer.created(create, "resp_1")
            cancel = await peer.expect("response.cancel")  # after 10 s of silence
            assert cancel["response_id"] == "resp_1"
            with caplog.at_level(logging.WARNING, logger="trio_realtime"):
                nxt = await peer.expect("response.create")  # after 2 s more: force-released
            assert nxt["event_id"] == waiting.event_id
            with pytest.raises(ResponseTimeout):
                await stuck.wait_done()
            assert "force-released" in caplog.text
            assert session.statistics().forced_releases == 1


async def test_slow_reader_does_not_look_stuck_and_is_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Neither a subscriber nor a ticket iterator that stops reading stalls the session."""
    config = SessionConfig(response_timeout=5.0, event_buffer=8)
    with trio.fail_after(120):
        async with connected(config) as (session, peer, _):
            async with session.subscribe() as everything:
                ticket = session.request_response()
                events = ticket.events()  # never read
                create = await peer.expect("response.create")
                await peer.created(create, "resp_1")
                for _ in range(20):  # 80 s of activity, 4 s apart: never silent for 5 s
                    await trio.sleep(4)
                    await peer.delta("resp_1")
                await peer.done(create, "resp_1")
                assert (await ticket.wait_done()).status == "completed"
                assert session.statistics().forced_releases == 0
                await trio.testing.wait_all_tasks_blocked()
                assert peer.unread() == []  # no response.cancel was sent
                assert events.buffered <= 8
                with pytest.raises(EventBufferOverflow):
                    async for _ in events:
                        pass
                with pytest.raises(EventBufferOverflow):
                    async for _ in everything:
                        pass


async def test_malformed_frames_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            ticket = session.request_response()
            create = await peer.expect("response.create")
            for bad in ["{not json", b"\x00\x01binary", "[1, 2]", '{"no": "type"}', '{"type": 7}']:
                await peer.send_raw(bad)
            await peer.complete(create, "resp_1")
            assert (await ticket.wait_done()).status == "completed"
            assert session.statistics().malformed_frames == 5
            assert "malformed" in caplog.text


async def test_unknown_events_reach_subscribers() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _), session.subscribe() as events:
            await peer.send({"type": "something.new", "x": 1})
            assert (await events.receive())["type"] == "something.new"


async def test_server_disconnect_fails_waiters_promptly() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            active = session.request_response()
            queued = session.request_response()
            create = await peer.expect("response.create")
            await peer.created(create, "resp_1")
            await active.wait_created()
            async with session.subscribe() as events:
                peer.close()
                with pytest.raises(ConnectionLost):
                    await active.wait_done()
                with pytest.raises(ConnectionLost):
                    await queued.wait_done()
                with pytest.raises(ConnectionLost):
                    async for _ in events:
                        pass
            with pytest.raises(ConnectionLost):
                session.request_response()
            with pytest.raises(ConnectionLost):
                await session.send({"type": "session.update", "session": {}})
            assert session.closed


async def test_leaving_the_block_fails_waiters_with_session_closed() -> None:
    outcomes: list[BaseException] = []

    async def waiter(ticket_wait: object) -> None:
        try:
            await ticket_wait()  # type: ignore[operator]
        except SessionClosed as exc:
            outcomes.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            async with connected() as (session, peer, transport):
                sent = session.request_response()
                queued = session.request_response()
                await peer.expect("response.create")
                nursery.start_soon(waiter, sent.wait_done)
                nursery.start_soon(waiter, queued.wait_created)
                await trio.testing.wait_all_tasks_blocked()
        assert len(outcomes) == 2
        assert transport.closed
        with pytest.raises(SessionClosed):
            session.request_response()


async def test_exception_in_body_propagates_bare() -> None:
    with trio.fail_after(5), pytest.raises(KeyError):
        async with connected() as (session, _, transport):
            session.request_response()
            raise KeyError("boom")
    assert transport.closed


async def test_outside_cancellation_ends_the_session() -> None:
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            async with connected() as (session, _, transport):
                ticket = session.request_response()
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert transport.closed
        assert ticket.state is TicketState.FAILED


async def test_connect_requires_session_created(autojump_clock: trio.testing.MockClock) -> None:
    transport, _peer = memory_pair()
    with trio.fail_after(100), pytest.raises(ConnectionLost, match=r"session\.created"):
        async with open_session(transport, config=SessionConfig(connect_timeout=5)):
            pass  # pragma: no cover


async def test_connection_lost_before_session_created() -> None:
    transport, peer = memory_pair()
    peer.close()
    with trio.fail_after(5), pytest.raises(ConnectionLost):
        async with open_session(transport):
            pass  # pragma: no cover


async def test_send_routes_response_create_through_the_queue() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            blocker = session.request_response()
            create = await peer.expect("response.create")
            await peer.created(create, "resp_1")
            event_id = await session.send({"type": "response.create", "response": {}})
            item_id = await session.send({"type": "conversation.item.create", "item": {}})
            assert (await peer.expect("conversation.item.create"))["event_id"] == item_id
            await peer.done(create, "resp_1")
            assert (await peer.expect("response.create"))["event_id"] == event_id
            await blocker.wait_done()


async def test_cancel_queued_sent_and_active_tickets() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            active = session.request_response()
            queued = session.request_response()
            create = await peer.expect("response.create")
            await queued.cancel()
            result = await queued.wait_done()
            assert (result.status, result.response) == ("cancelled", None)
            await peer.created(create, "resp_1")
            await active.wait_created()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(active.cancel)
                cancel = await peer.expect("response.cancel")
                assert cancel["response_id"] == "resp_1"
                await peer.done(create, "resp_1", status="cancelled")
            assert active.state is TicketState.DONE
            assert (await active.wait_done()).status == "cancelled"
            await queued.cancel()  # idempotent on a terminal ticket


async def test_cancel_response_waits_for_the_server_started_response() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            await session.cancel_response()  # nothing active: returns at once
            async with session.subscribe() as events:
                await peer.created({"response": {}}, "resp_vad")
                await events.receive()
                finished = trio.Event()

                async def interrupt() -> None:
                    await session.cancel_response()
                    finished.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(interrupt)
                    cancel = await peer.expect("response.cancel")
                    assert cancel["response_id"] == "resp_vad"
                    await trio.testing.wait_all_tasks_blocked()
                    assert not finished.is_set()
                    await peer.done(None, "resp_vad", status="cancelled")
                assert finished.is_set()


async def test_function_results_of_one_turn_share_one_follow_up() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            ticket = session.request_response()
            create = await peer.expect("response.create")
            await peer.created(create, "resp_1")
            calls = [
                {"type": "function_call", "call_id": c, "name": "f", "arguments": "{}"}
                for c in ("call_a", "call_b")
            ]
            # The common bug: results sent on output_item.done, before response.done.
            await peer.send(
                {"type": "response.output_item.added", "response_id": "resp_1", "item": calls[0]}
            )
            await trio.testing.wait_all_tasks_blocked()
            first = await session.send_function_result("call_a", '{"ok": 1}')
            await peer.expect("conversation.item.create")
            await peer.done(create, "resp_1", output=calls)
            await ticket.wait_done()
            await trio.testing.wait_all_tasks_blocked()
            assert first.state is TicketState.QUEUED  # call_b has no result yet
            second = await session.send_function_result("call_b", '{"ok": 2}')
            assert second is first
            await peer.expect("conversation.item.create")
            follow_up = await peer.expect("response.create")
            assert follow_up["event_id"] == first.event_id
            await peer.complete(follow_up, "resp_2")
            await first.wait_done()
            assert [e["type"] for e in peer.received].count("response.create") == 2


async def test_function_result_for_an_unknown_call_gets_its_own_follow_up() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            ticket = await session.send_function_result("call_x", "42")
            await peer.expect("conversation.item.create")
            assert (await peer.expect("response.create"))["event_id"] == ticket.event_id


async def test_say_queues_a_verbatim_response() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            ticket = await session.say("Your order has shipped.", priority=3)
            create = await peer.expect("response.create")
            assert "Your order has shipped." in create["response"]["instructions"]
            assert ticket.priority == 3


async def test_queue_full_is_raised_synchronously() -> None:
    with trio.fail_after(5):
        async with connected(SessionConfig(max_queue=2)) as (session, peer, _):
            session.request_response()
            await peer.expect("response.create")  # in flight: no longer queued
            session.request_response()
            session.request_response()
            with pytest.raises(QueueFull):
                session.request_response()
            assert session.statistics().queue_depth == 2


async def test_out_of_band_runs_beside_the_in_band_response() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            session.request_response()
            oob = session.request_response({"conversation": "none"})
            first = await peer.expect("response.create")
            second = await peer.expect("response.create")
            assert {first["event_id"], second["event_id"]} >= {oob.event_id}


async def test_refusal_before_session_created_is_reported() -> None:
    transport, peer = memory_pair()
    await peer.send(
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "code": "invalid_api_key", "message": "no"},
        }
    )
    peer.close()
    with trio.fail_after(5), pytest.raises(ConnectionLost, match="invalid_api_key"):
        async with open_session(transport):
            pass  # pragma: no cover
