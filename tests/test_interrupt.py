"""session.interrupt() and session.output_audio(): barge-in against the fake server streaming
audio at a multiple of real time (PROTOCOL §11). Every test runs over each transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from trio_realtime import Interruption, RealtimeSession, SessionConfig, TicketState, open_session
from trio_realtime.testing import Behavior, FakeConnection, FakeRealtimeServer, open_fake_server

pytestmark = pytest.mark.usefixtures("transport")

#: A long spoken reply: 10 ms of audio a character, so 3 s of audio.
LONG = "Say exactly: " + "la " * 100
SPEAK = {"output_modalities": ["audio"], "instructions": LONG}
#: 20 ms audio chunks at ten times real time: a reply streams over about 300 ms.
PACED = Behavior(audio_pace=10.0, audio_chunk_ms=20)


@asynccontextmanager
async def paced(
    behavior: Behavior,
) -> AsyncIterator[tuple[FakeRealtimeServer, RealtimeSession, FakeConnection]]:
    """A fake server streaming audio as ``behavior`` says, a session on it, its connection."""
    async with open_fake_server(behavior=behavior) as server, open_session(server.url) as session:
        yield server, session, await server.wait_connection()


def _errors(conn: FakeConnection) -> list[str]:
    return [t for t in conn.sent_types() if t == "error"]


async def _chunks(audio: Any, n: int) -> list[Any]:
    """The next ``n`` chunks of output audio."""
    chunks = []
    async for chunk in audio:
        chunks.append(chunk)
        if len(chunks) == n:
            break
    return chunks


async def test_interrupt_cancels_truncates_where_heard_and_the_next_reply_goes_first() -> None:
    with trio.fail_after(20):
        async with (
            open_fake_server(behavior=PACED) as server,
            open_session(server.url) as session,
            session.subscribe() as everything,
        ):
            conn = await server.wait_connection()
            async with session.output_audio() as audio:
                ticket = session.request_response(SPEAK)
                events = ticket.events()
                chunks = await _chunks(audio, 5)  # 100 ms received
                # The server reads nothing more for a while: its audio goes on arriving.
                conn.stop_reading()
                arrived = audio.buffered  # arrived before the call, not yet read
                outcome: list[Interruption] = []
                async with trio.open_nursery() as nursery:

                    async def interrupt() -> None:
                        outcome.append(await session.interrupt(played_ms=70))

                    nursery.start_soon(interrupt)
                    seen = 0
                    async for event in everything:
                        if event["type"] == "response.output_audio.delta":
                            seen += 1
                            if seen == len(chunks) + arrived + 3:
                                break
                    conn.resume_reading()
                late = []
                while audio.buffered:
                    late.append(await audio.receive())
            [result] = outcome
            assert result.cancelled == (ticket.response_id,)
            item_id = chunks[0].item_id
            assert result.truncated == (item_id, 0, 70)
            assert result.deleted == ()
            assert result.errors == ()
            # It returned after the response ended, and the truncate was answered.
            assert ticket.state is TicketState.DONE
            assert (await ticket.wait_done()).status == "cancelled"
            truncated = await conn.wait_for_server_event("conversation.item.truncated")
            assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 70)
            # At least three more audio deltas arrived after the call; none of them came out.
            assert len(late) == arrived
            deltas = [e async for e in events if e["type"] == "response.output_audio.delta"]
            assert len(deltas) == len(chunks) + arrived
            # The next reply is accepted first time.
            nxt = session.request_response({"instructions": "Say exactly: next"})
            assert (await nxt.wait_done()).status == "completed"
            assert nxt.timings.attempts == 1
            assert _errors(conn) == []
            cancel = await conn.wait_for_client_event("response.cancel")
            assert cancel["response_id"] == ticket.response_id


async def test_a_position_past_what_arrived_is_clamped_and_accepted() -> None:
    with trio.fail_after(20):
        async with paced(PACED) as (_server, session, conn):
            async with session.output_audio() as audio:
                session.request_response(SPEAK)
                chunks = await _chunks(audio, 3)
                result = await session.interrupt(played_ms=9100)
            assert result.truncated is not None
            item_id, _, end = result.truncated
            assert item_id == chunks[0].item_id
            assert 60 <= end < 9100  # what had arrived when interrupt() was called
            assert result.errors == ()
            assert _errors(conn) == []


async def test_without_a_position_the_time_since_the_first_audio_is_used() -> None:
    with trio.fail_after(20):
        async with paced(PACED) as (_server, session, conn):
            async with session.output_audio() as audio:
                session.request_response(SPEAK)
                await _chunks(audio, 3)
                result = await session.interrupt()
            assert result.truncated is not None
            assert result.truncated[2] > 0
            assert result.errors == ()
            assert _errors(conn) == []


async def test_a_reply_heard_before_any_audio_is_deleted_never_truncated_at_zero() -> None:
    with trio.fail_after(20):
        async with paced(PACED) as (_server, session, conn):
            async with session.output_audio() as audio:
                ticket = session.request_response(SPEAK)
                chunks = await _chunks(audio, 2)
                result = await session.interrupt(played_ms=0)
            assert result.truncated is None
            assert result.deleted == (chunks[0].item_id,)
            assert result.cancelled == (ticket.response_id,)
            assert result.errors == ()
            await conn.wait_for_server_event("conversation.item.deleted")
            assert chunks[0].item_id not in conn.item_ids()
            assert _errors(conn) == []


async def test_later_audio_items_nobody_heard_are_deleted() -> None:
    behavior = Behavior(audio_pace=10.0, audio_chunk_ms=20, audio_items=3)
    with trio.fail_after(20):
        async with paced(behavior) as (_server, session, conn):
            async with session.output_audio() as audio:
                ticket = session.request_response(SPEAK)
                first = await _chunks(audio, 1)
                # Wait until the second item's audio has begun.
                async for chunk in audio:
                    if chunk.item_id != first[0].item_id:
                        break
                result = await session.interrupt(played_ms=40)
            assert result.truncated == (first[0].item_id, 0, 40)
            assert chunk.item_id in result.deleted
            assert result.errors == ()
            assert ticket.state is TicketState.DONE
            assert _errors(conn) == []


async def test_every_audible_response_is_cancelled_by_id_out_of_band_too() -> None:
    with trio.fail_after(20):
        async with paced(PACED) as (server, session, conn):
            async with session.output_audio() as audio:
                in_band = session.request_response(SPEAK)
                side = session.request_response({**SPEAK, "conversation": "none"})
                seen: set[str] = set()
                async for chunk in audio:
                    seen.add(chunk.response_id)
                    if len(seen) == 2:
                        break
                result = await session.interrupt(played_ms=10)
            assert set(result.cancelled) == {in_band.response_id, side.response_id}
            assert in_band.state is TicketState.DONE
            assert side.state is TicketState.DONE
            cancels = [e for e in server.received if e["type"] == "response.cancel"]
            assert {c.get("response_id") for c in cancels} == set(result.cancelled)
            assert _errors(conn) == []


async def test_a_server_started_response_is_cancelled_by_id() -> None:
    with trio.fail_after(20):
        async with paced(PACED) as (_server, session, conn):
            await session.update_session({"type": "realtime", "output_modalities": ["audio"]})
            async with session.output_audio() as audio:
                rid = await conn.start_response()
                await _chunks(audio, 2)
                queued = session.request_response({"instructions": "Say exactly: after"})
                result = await session.interrupt(played_ms=20)
            assert result.cancelled == (rid,)
            assert rid not in conn.active_response_ids()
            assert (await queued.wait_done()).status == "completed"
            assert queued.timings.attempts == 1
            assert _errors(conn) == []


async def test_a_request_in_flight_is_cancelled_once_created() -> None:
    behavior = Behavior(audio_pace=10.0, audio_chunk_ms=20, created_delay=0.05)
    with trio.fail_after(20):
        async with paced(behavior) as (_server, session, conn):
            ticket = session.request_response(SPEAK)
            await conn.wait_for_client_event("response.create")
            result = await session.interrupt()
            assert ticket.state is TicketState.DONE
            assert (await ticket.wait_done()).status == "cancelled"
            assert result.cancelled == (ticket.response_id,)
            assert _errors(conn) == []


async def test_voice_activity_that_already_cancelled_still_truncates_once() -> None:
    behavior = Behavior(audio_pace=10.0, audio_chunk_ms=20)
    with trio.fail_after(20):
        async with paced(behavior) as (_server, session, conn):
            async with session.output_audio() as audio:
                ticket = session.request_response(SPEAK)
                chunks = await _chunks(audio, 3)
                # The user speaks: the server cancels the reply itself (interrupt_response).
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(conn.start_response, interrupt=True))
                    await ticket.wait_done()
                    result = await session.interrupt(played_ms=30)
                    again = await session.interrupt(played_ms=30)
                    nursery.cancel_scope.cancel()
            assert result.cancelled == ()
            assert result.truncated == (chunks[0].item_id, 0, 30)
            assert again == Interruption()
            assert _errors(conn) == []


async def test_nothing_running_sends_nothing() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server, open_session(server.url) as session:
            await server.wait_connection()
            before = len(server.received)
            assert await session.interrupt() == Interruption()
            assert await session.interrupt(played_ms=100) == Interruption()
            assert len(server.received) == before


async def test_a_refused_truncate_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    config = SessionConfig()
    with trio.fail_after(20):
        async with (
            open_fake_server(behavior=PACED) as server,
            open_session(server.url, config=config) as session,
        ):
            conn = await server.wait_connection()
            async with session.output_audio() as audio:
                ticket = session.request_response(SPEAK)
                chunks = await _chunks(audio, 3)
                # Someone else deletes the item first: the truncate is refused.
                await conn.send_event({"type": "noop"})
                await session.send(
                    {"type": "conversation.item.delete", "item_id": chunks[0].item_id}
                )
                await conn.wait_for_server_event("conversation.item.deleted")
                result = await session.interrupt(played_ms=30)
            assert result.truncated == (chunks[0].item_id, 0, 30)
            assert len(result.errors) == 1
            assert ticket.state is TicketState.DONE
            assert "interrupt: the server refused" in caplog.text


@pytest.mark.parametrize("played_ms", [-1, float("nan"), float("inf")])
async def test_a_bad_position_is_a_value_error(played_ms: float) -> None:
    async with open_fake_server() as server, open_session(server.url) as session:
        with pytest.raises(ValueError, match="played_ms"):
            await session.interrupt(played_ms=played_ms)


async def test_a_position_that_is_not_a_number_is_a_type_error() -> None:
    async with open_fake_server() as server, open_session(server.url) as session:
        with pytest.raises(TypeError, match="played_ms"):
            await session.interrupt(played_ms="70")  # type: ignore[arg-type]
