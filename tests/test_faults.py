"""Faults and bad input over real loopback WebSockets, against the fault-injecting fake server.

Every server fault (withheld events, ignored cancels, disconnects at each point of a response,
server-started responses racing client requests, both shapes of the conflict error) and every
kind of bad frame has a test here. Each asserts what the library promises: the session applies
its deadlines, only a broken connection ends it (with a typed ``RealtimeError``), no ticket is
left waiting, and no unrelated exception reaches the application's nursery.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trio_realtime import (
    ConnectionLost,
    RealtimeSession,
    ResponseTicket,
    ResponseTimeout,
    SessionConfig,
    TicketState,
    open_session,
)
from trio_realtime.testing import (
    Behavior,
    FakeConnection,
    FakeRealtimeServer,
    FunctionCall,
    Script,
    open_fake_server,
)

#: Every test here runs over each transport (see conftest.py).
pytestmark = pytest.mark.usefixtures("transport")

#: Deadlines no test below reaches unless it means to: a failure then comes from the fault.
PATIENT = SessionConfig(created_timeout=1000.0, response_timeout=1000.0, cancel_grace=1000.0)


@asynccontextmanager
async def serve(
    behavior: Behavior | None = None, config: SessionConfig | None = None
) -> AsyncIterator[tuple[FakeRealtimeServer, RealtimeSession, FakeConnection]]:
    async with (
        open_fake_server(behavior=behavior or Behavior()) as server,
        open_session(server.url, config=config or PATIENT) as session,
    ):
        connection = await server.wait_connection()
        yield server, session, connection


def creates(connection: FakeConnection) -> list[dict[str, Any]]:
    return [e for e in connection.received if e.get("type") == "response.create"]


# ---------------------------------------------------------------------- withheld events


async def test_withheld_created_times_out_and_the_next_request_is_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    behavior = Behavior(withhold_created=True)
    config = SessionConfig(created_timeout=5.0, response_timeout=1000.0)
    with trio.fail_after(100):
        async with serve(behavior, config) as (_, session, connection):
            start = trio.current_time()
            first = session.request_response()
            second = session.request_response()
            await connection.wait_for_client_event("response.create")
            behavior.withhold_created = False
            with pytest.raises(ResponseTimeout):
                await first.wait_created()
            assert trio.current_time() - start == pytest.approx(5.0, abs=0.5)
            with pytest.raises(ResponseTimeout):
                await first.wait_done()
            assert (await second.wait_done()).status == "completed"
            stats = session.statistics()
            assert (stats.timed_out, stats.completed, stats.conflicts_absorbed) == (1, 1, 0)


async def test_withheld_done_is_cancelled_by_id_and_the_next_request_is_served(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    behavior = Behavior(withhold_done=True)
    config = SessionConfig(response_timeout=5.0, cancel_grace=2.0, created_timeout=1000.0)
    with trio.fail_after(100), caplog.at_level(logging.WARNING, logger="trio_realtime"):
        async with serve(behavior, config) as (_, session, connection):
            stuck = session.request_response()
            waiting = session.request_response()
            rid = await stuck.wait_created()
            start = trio.current_time()
            cancel = await connection.wait_for_client_event("response.cancel")
            assert cancel["response_id"] == rid
            assert trio.current_time() - start == pytest.approx(5.0, abs=0.5)
            behavior.withhold_done = False
            result = await stuck.wait_done()
            assert (result.status, result.response_id) == ("cancelled", rid)
            assert (await waiting.wait_done()).status == "completed"
            assert session.statistics().forced_releases == 0
    assert "silent" in caplog.text


async def test_withheld_done_and_ignored_cancel_force_release_after_grace(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    behavior = Behavior(withhold_done=True, ignore_cancel=True)
    config = SessionConfig(response_timeout=5.0, cancel_grace=2.0, created_timeout=1000.0)
    with trio.fail_after(100), caplog.at_level(logging.WARNING, logger="trio_realtime"):
        async with serve(behavior, config) as (server, session, _):
            stuck = session.request_response()
            rid = await stuck.wait_created()
            start = trio.current_time()
            with pytest.raises(ResponseTimeout):
                await stuck.wait_done()
            assert trio.current_time() - start == pytest.approx(7.0, abs=0.5)
            assert server.statistics().cancels_received == 1
            stats = session.statistics()
            assert (stats.forced_releases, stats.timed_out, stats.slot_busy) == (1, 1, False)
            # The server ends it at last; its late response.done is tolerated.
            behavior.withhold_done = behavior.ignore_cancel = False
            await server.finish_response(rid, status="cancelled")
            nxt = session.request_response()
            assert (await nxt.wait_done()).status == "completed"
            assert stuck.state is TicketState.FAILED
    assert "force-released" in caplog.text


async def test_ignored_cancel_is_force_released_after_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    behavior = Behavior(auto_finish=False, ignore_cancel=True)
    config = SessionConfig(cancel_grace=2.0, response_timeout=1000.0, created_timeout=1000.0)
    with trio.fail_after(100):
        async with serve(behavior, config) as (server, session, _):
            ticket = session.request_response()
            rid = await ticket.wait_created()
            start = trio.current_time()
            await ticket.cancel()  # returns once force-released
            assert trio.current_time() - start == pytest.approx(2.0, abs=0.5)
            assert ticket.state is TicketState.FAILED
            assert isinstance(ticket.error, ResponseTimeout)
            assert session.statistics().forced_releases == 1
            behavior.auto_finish = True
            behavior.ignore_cancel = False
            await server.finish_response(rid)
            assert (await session.request_response().wait_done()).status == "completed"


async def test_conflict_with_a_force_released_response_waits_instead_of_spinning() -> None:
    """After a force-release the server may still run the response: a request that runs into
    it must wait for it (or for a deadline), not resend ``response.create`` in a tight loop."""
    behavior = Behavior(withhold_done=True, ignore_cancel=True)
    config = SessionConfig(response_timeout=0.05, cancel_grace=0.05, created_timeout=1000.0)
    with trio.fail_after(10):
        async with serve(behavior, config) as (server, session, connection):
            stuck = session.request_response()
            rid = await stuck.wait_created()
            with pytest.raises(ResponseTimeout):
                await stuck.wait_done()
            # Waiting for the stuck response now takes a whole response_timeout per retry at
            # most, so far fewer than 20 creates can go out in 0.3 s.
            config_wait = trio.move_on_after(0.3)
            nxt = session.request_response()
            with config_wait:
                await connection.wait_for_client_event("response.create", count=20)
            assert len(creates(connection)) < 20, "response.create resent in a tight loop"
            behavior.withhold_done = behavior.ignore_cancel = False
            await server.finish_response(rid, status="cancelled")
            assert (await nxt.wait_done()).status == "completed"


# ---------------------------------------------------------------------- disconnects


async def _vanish(connection: FakeConnection, how: str) -> None:
    if how == "abort":
        await connection.abort()
    else:
        await connection.close(1011, "server going away")


@pytest.mark.parametrize("how", ["abort", "close"])
@pytest.mark.parametrize("when", ["before_created", "mid_stream", "after_done"])
async def test_disconnect_fails_every_waiting_ticket_promptly(how: str, when: str) -> None:
    """Deadlines are far away (``PATIENT``): every failure below comes from the disconnect.
    The application's own nursery sees nothing but the typed errors it asked for."""
    calls = (FunctionCall("a", "{}"), FunctionCall("b", "{}"))

    def script(body: Any) -> Script:
        return Script(text=None, function_calls=calls) if body.get("instructions") else Script()

    behavior = Behavior(script=script, auto_finish=when != "mid_stream")
    behavior.withhold_created = when == "before_created"
    with trio.fail_after(10):
        async with trio.open_nursery() as application:
            background_done = trio.Event()
            application.start_soon(background_done.wait)  # an unrelated task of the app
            async with serve(behavior) as (_, session, connection), session.subscribe() as events:
                waiting: list[ResponseTicket] = []
                if when == "before_created":
                    waiting.append(session.request_response())
                    await connection.wait_for_client_event("response.create")
                    waiting.append(session.request_response())  # queued behind it
                elif when == "mid_stream":
                    active = session.request_response()
                    stream = active.events()
                    rid = await active.wait_created()
                    await connection.send_event(
                        {"type": "response.output_text.delta", "response_id": rid, "delta": "x"}
                    )
                    waiting += [active, session.request_response()]
                else:  # a function-call turn is done; its follow-up waits for one more result
                    turn = session.request_response({"instructions": "use tools"})
                    result = await turn.wait_done()
                    assert result.response is not None
                    call_id = result.response["output"][0]["call_id"]
                    waiting.append(await session.send_function_result(call_id, "{}"))
                    assert waiting[0].state is TicketState.QUEUED
                await _vanish(connection, how)
                for ticket in waiting:
                    with pytest.raises(ConnectionLost):
                        await ticket.wait_done()
                    with pytest.raises(ConnectionLost):
                        await ticket.wait_created()
                    assert ticket.state is TicketState.FAILED
                if when == "mid_stream":
                    with pytest.raises(ConnectionLost):
                        async for _ in stream:
                            pass
                with pytest.raises(ConnectionLost):
                    async for _ in events:
                        pass
                with pytest.raises(ConnectionLost):
                    session.request_response()
                with pytest.raises(ConnectionLost):
                    await session.send({"type": "input_audio_buffer.clear"})
                with pytest.raises(ConnectionLost):
                    await session.cancel_response()
                assert session.closed
            background_done.set()


# ---------------------------------------------------------------------- collisions


CONFLICT_SHAPES = {
    "code_and_event_id": Behavior(),
    "legacy_message": Behavior(legacy_conflict_error=True),
    "null_event_id": Behavior(null_error_event_id=True),
    "legacy_and_null": Behavior(legacy_conflict_error=True, null_error_event_id=True),
}


def _behavior(shape: str, **overrides: Any) -> Behavior:
    base = CONFLICT_SHAPES[shape]
    return Behavior(
        legacy_conflict_error=base.legacy_conflict_error,
        null_error_event_id=base.null_error_event_id,
        **overrides,
    )


@pytest.mark.parametrize("shape", list(CONFLICT_SHAPES))
async def test_server_started_response_at_the_moment_the_client_sends(shape: str) -> None:
    """The server takes the conversation just as the client sends: the rejection is absorbed,
    and the request goes out again when the server's response is done."""
    behavior = _behavior(shape, auto_finish=False)
    with trio.fail_after(10):
        async with serve(behavior) as (server, session, _):
            for _ in range(5):
                vad = await server.start_response()
                ticket = session.request_response()  # before response.created is read
                await trio.testing.wait_all_tasks_blocked()
                assert ticket.state is not TicketState.FAILED
                await server.finish_response(vad)
                rid = await ticket.wait_created()
                await server.finish_response(rid)
                assert (await ticket.wait_done()).status == "completed"
            server_stats = server.statistics()
            stats = session.statistics()
            assert server_stats.rejections_sent >= 1
            assert stats.conflicts_absorbed == server_stats.rejections_sent
            assert stats.rejected == stats.failed == 0
            assert server_stats.max_in_band_active == 1
            assert stats.server_started == 5


@pytest.mark.parametrize("shape", list(CONFLICT_SHAPES))
async def test_random_voice_activity_against_requests_with_created_delay(shape: str) -> None:
    """Voice activity (some interrupting) at random moments while requests and cancels fly;
    with ``created_delay`` the client cannot know the conversation is taken."""
    behavior = _behavior(shape, created_delay=0.002, delta_delay=0.0005)
    rng = random.Random(f"collide-{shape}")
    tickets: list[ResponseTicket] = []
    config = SessionConfig(created_timeout=2.0, response_timeout=1000.0, cancel_grace=1000.0)
    with trio.fail_after(30):
        async with serve(behavior, config) as (server, session, _):

            async def requester(n: int) -> None:
                for i in range(6):
                    ticket = session.request_response({"instructions": f"r{n}.{i}"}, priority=n % 2)
                    tickets.append(ticket)
                    if rng.random() < 0.2:
                        ticket.cancel_nowait()
                    await trio.sleep(rng.random() * 0.004)

            async def voice_activity() -> None:
                for _ in range(10):
                    await server.start_response(interrupt=rng.random() < 0.5)
                    await trio.sleep(rng.random() * 0.004)

            async with trio.open_nursery() as nursery:
                for n in range(4):
                    nursery.start_soon(requester, n)
                nursery.start_soon(voice_activity)
            for ticket in tickets:
                result = await ticket.wait_done()  # raises ResponseRejected if one surfaced
                assert result.status in ("completed", "cancelled")
            server_stats = server.statistics()
            stats = session.statistics()
            assert server_stats.max_in_band_active == 1
            assert stats.conflicts_absorbed == server_stats.rejections_sent
            assert stats.rejected == stats.failed == stats.timed_out == 0
            assert stats.completed + stats.cancelled == len(tickets)


async def test_null_event_id_conflict_is_never_pinned_on_the_wrong_request() -> None:
    """A request in flight loses the slot to a server-started response that ends before the
    server reads the request; the next request must not go out until the first one's outcome
    is known, or a conflict without ``event_id`` cannot be matched to the right one."""
    behavior = Behavior(null_error_event_id=True, auto_finish=False, created_delay=0.01)
    with trio.fail_after(10):
        async with serve(behavior) as (server, session, connection):
            connection.stop_reading()
            first = session.request_response({"instructions": "first"})
            second = session.request_response({"instructions": "second"})
            await trio.testing.wait_all_tasks_blocked()
            vad = await server.start_response()
            await server.finish_response(vad)
            await trio.testing.wait_all_tasks_blocked()
            assert session.statistics().in_flight <= 1, "two in-band creates in flight"
            connection.resume_reading()
            with trio.move_on_after(3):
                for ticket in (first, second):
                    rid = await ticket.wait_created()
                    await server.finish_response(rid)
                    assert (await ticket.wait_done()).status == "completed"
            assert first.state is second.state is TicketState.DONE
            made = [
                e["response"]["metadata"]
                for e in connection.sent
                if e["type"] == "response.created" and e["response"]["metadata"]
            ]
            assert [m["trio_realtime_request"] for m in made] == [first.event_id, second.event_id]
            assert session.statistics().server_started == 1


# ---------------------------------------------------------------------- bad input

#: Frames that are not a JSON object with a string ``type``.
UNPARSABLE: dict[str, str | bytes] = {
    "invalid_json": '{"type": "response.output_text.delta", ',
    "binary": b"\x00\x01\x02 binary frame",
    "binary_json": b'{"type": "response.done"}',
    "empty": "",
    "array": "[1, 2, 3]",
    "string": '"response.done"',
    "null": "null",
    "no_type": '{"response_id": "resp_x", "delta": "x"}',
    "type_not_string": '{"type": 7}',
    "type_null": '{"type": null}',
}

#: JSON objects with a type, whose fields have the wrong type or are missing.
BAD_FIELDS: dict[str, dict[str, Any]] = {
    "created_response_not_object": {"type": "response.created", "response": "oops"},
    "done_response_not_object": {"type": "response.done", "response": "oops"},
    "created_without_response_id": {"type": "response.created", "response": {"status": "x"}},
    "done_without_response_id": {"type": "response.done", "response": {"status": "completed"}},
    "done_response_id_not_string": {"type": "response.done", "response": {"id": 7}},
    "delta_response_id_not_string": {
        "type": "response.output_text.delta",
        "response_id": 5,
        "delta": "x",
    },
    "delta_without_response_id": {"type": "response.output_text.delta", "delta": "x"},
    "error_not_object": {"type": "error", "error": "x"},
    "error_missing": {"type": "error"},
}


@asynccontextmanager
async def live_response() -> AsyncIterator[
    tuple[FakeRealtimeServer, RealtimeSession, FakeConnection, ResponseTicket, str]
]:
    """A session with one ticket whose response is created and held open by the server."""
    async with serve(Behavior(auto_finish=False)) as (server, session, connection):
        ticket = session.request_response()
        rid = await ticket.wait_created()
        assert rid is not None
        yield server, session, connection, ticket, rid


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("trio_realtime") and r.levelno >= logging.WARNING
    ]


@pytest.mark.parametrize("frame", list(UNPARSABLE.values()), ids=list(UNPARSABLE))
async def test_unparsable_frame_is_logged_skipped_and_counted(
    frame: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="trio_realtime"):
        async with live_response() as (server, session, connection, ticket, rid):
            events = ticket.events()
            await connection.send_raw(frame)
            await connection.send_event(
                {"type": "response.output_text.delta", "response_id": rid, "delta": "ok"}
            )
            await server.finish_response(rid)
            assert (await ticket.wait_done()).status == "completed"
            seen = [e async for e in events]
            assert any(e.get("delta") == "ok" for e in seen)
            assert seen[-1]["type"] == "response.done"
            assert session.statistics().malformed_frames == 1
            assert (await session.request_response().wait_created()) is not None
    assert any("malformed" in r.getMessage() for r in _warnings(caplog))


@pytest.mark.parametrize("event", list(BAD_FIELDS.values()), ids=list(BAD_FIELDS))
async def test_frame_with_bad_fields_is_logged_skipped_and_counted(
    event: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="trio_realtime"):
        async with live_response() as (server, session, connection, ticket, rid):
            await connection.send_event(event)
            await connection.send_event(
                {"type": "response.output_text.delta", "response_id": rid, "delta": "ok"}
            )
            await trio.testing.wait_all_tasks_blocked()
            assert ticket.state is TicketState.ACTIVE
            assert session.statistics().active_response_id == rid
            await server.finish_response(rid)
            assert (await ticket.wait_done()).status == "completed"
            after = session.request_response()
            await after.wait_created()
            counted = session.statistics().malformed_frames
    problems = []
    if not _warnings(caplog):
        problems.append("no warning logged")
    if counted != 1:
        problems.append(f"malformed_frames is {counted}, not 1")
    assert not problems, f"{event}: {'; '.join(problems)}"


async def test_tolerated_oddities_never_disturb_a_live_response() -> None:
    """Well-formed but surprising events (rule 7): metadata that is not an object, a done for
    a response never seen, a stray cancel_not_active error, a duplicate created."""
    with trio.fail_after(10):
        async with live_response() as (server, session, connection, ticket, rid):
            await connection.send_event(
                {"type": "response.done", "response": {"id": "resp_never", "status": "completed"}}
            )
            await connection.send_event(
                {
                    "type": "error",
                    "error": {
                        "code": "response_cancel_not_active",
                        "message": "x",
                        "event_id": None,
                    },
                }
            )
            created = next(e for e in connection.sent if e["type"] == "response.created")
            await connection.send_event(created)
            await connection.send_event(
                {
                    "type": "response.created",
                    "response": {"id": "resp_odd", "conversation_id": None, "metadata": "x"},
                }
            )
            await connection.send_event(
                {"type": "response.done", "response": {"id": "resp_odd", "status": "completed"}}
            )
            await server.finish_response(rid)
            assert (await ticket.wait_done()).status == "completed"
            assert session.statistics().slot_busy is False
            assert await session.request_response().wait_created() is not None


async def test_unknown_event_types_reach_subscribers_and_change_nothing() -> None:
    with trio.fail_after(10):
        async with live_response() as (server, session, connection, ticket, rid):
            async with session.subscribe() as events:
                await connection.send_event({"type": "something.new", "response_id": rid})
                await connection.send_event({"type": "another.unknown", "payload": [1, 2]})
                await server.finish_response(rid)
                unknown = {"something.new", "another.unknown"}
                seen: list[str] = []
                while len(seen) < 2:
                    event = await events.receive()
                    if event["type"] in unknown:
                        seen.append(event["type"])
                assert seen == ["something.new", "another.unknown"]
            assert (await ticket.wait_done()).status == "completed"
            assert session.statistics().malformed_frames == 0


async def test_very_large_frame_within_the_limit_is_delivered() -> None:
    blob = "a" * (5 * 2**20)
    with trio.fail_after(10):
        async with live_response() as (server, session, connection, ticket, rid):
            async with session.subscribe() as events:
                await connection.send_event({"type": "huge.unknown", "blob": blob})
                await connection.send_raw("{" + " " * (5 * 2**20))  # 5 MB of invalid JSON
                await server.finish_response(rid)
                big = await events.receive()
                while big["type"] != "huge.unknown":
                    big = await events.receive()
                assert len(big["blob"]) == len(blob)
            assert (await ticket.wait_done()).status == "completed"
            assert session.statistics().malformed_frames == 1


async def test_frame_over_max_message_size_ends_the_session_with_connection_lost() -> None:
    config = SessionConfig(
        max_message_size=2**20, created_timeout=1000, response_timeout=1000, cancel_grace=1000
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as application:
            background_done = trio.Event()
            application.start_soon(background_done.wait)
            async with serve(Behavior(auto_finish=False), config) as (_, session, connection):
                ticket = session.request_response()
                queued = session.request_response()
                rid = await ticket.wait_created()
                await connection.send_event(
                    {"type": "response.output_text.delta", "response_id": rid, "delta": "x" * 2**21}
                )
                for waiting in (ticket, queued):
                    with pytest.raises(ConnectionLost):
                        await waiting.wait_done()
                with pytest.raises(ConnectionLost):
                    session.request_response()
            background_done.set()


# ---------------------------------------------------------------------- a server that stops reading


async def test_server_that_stops_reading_deadlines_still_apply_and_closing_is_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Pings off: a server that stops reading also stops answering them, and this test is about
    # the deadlines (test_keepalive.py: the silent connection noticed).
    config = SessionConfig(
        created_timeout=5.0,
        response_timeout=1000.0,
        close_timeout=2.0,
        send_buffer=4,
        ping_interval=None,
    )
    audio = "A" * 2**20  # 1 MiB of base64 per append
    with trio.fail_after(200):
        async with serve(Behavior(), config) as (_, session, connection):
            connection.stop_reading()
            # Fill the socket buffers until send() itself waits for the writer.
            with trio.move_on_after(30) as backed_up:
                for _ in range(200):
                    await session.send({"type": "input_audio_buffer.append", "audio": audio})
            assert backed_up.cancelled_caught, "sends never backed up"
            start = trio.current_time()
            ticket = session.request_response()  # handed to a writer that cannot write
            with pytest.raises(ResponseTimeout):
                await ticket.wait_created()
            assert trio.current_time() - start == pytest.approx(5.0, abs=0.5)
            closing = trio.current_time()
        # Leaving the block: the writer gets close_timeout, the close handshake another.
        assert trio.current_time() - closing <= 2 * config.close_timeout + 0.5
    assert ticket.state is TicketState.FAILED


# ---------------------------------------------------------------------- nothing else escapes


async def test_faults_in_a_row_end_only_in_typed_errors() -> None:
    """Bad frames, a cancel and a disconnect on one session, under an
    application nursery with another task: only the documented errors are ever raised."""

    def script(body: Any) -> Script:
        return Script(text="fine")

    behavior = Behavior(auto_finish=False, script=script)
    with trio.fail_after(10):
        async with trio.open_nursery() as application:
            background_done = trio.Event()
            application.start_soon(background_done.wait)
            async with serve(behavior) as (server, session, connection):
                first = session.request_response()
                rid = await first.wait_created()
                for frame in [*UNPARSABLE.values(), *map(json.dumps, BAD_FIELDS.values())]:
                    await connection.send_raw(frame)
                await server.finish_response(rid)
                assert (await first.wait_done()).status == "completed"
                cancelled = session.request_response()
                await cancelled.wait_created()
                await cancelled.cancel()
                assert cancelled.result is not None
                assert cancelled.result.status == "cancelled"
                last = session.request_response()
                await last.wait_created()
                await connection.abort()
                with pytest.raises(ConnectionLost):
                    await last.wait_done()
            background_done.set()
