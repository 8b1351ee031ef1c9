"""The fake server plays a call's output audio buffer (issue "Phone and WebRTC calls", item 2):
on a call the service plays each response's audio to the caller itself and tells the
sidebands ``output_audio_buffer.started`` / ``.stopped`` / ``.cleared``; a client's
``output_audio_buffer.clear`` cuts the playing audio off. On a plain WebSocket session the
client event is refused (WebRTC/SIP only). Every server event is checked against the
``openai`` package's models."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from test_fake_server_calls import accepted_call
from test_fake_server_fidelity import Dialect, validate
from trio_realtime.testing import Behavior, FakeRealtimeServer, open_fake_server
from trio_realtime.testing._raw_client import RawClient, open_raw_client

BUFFER_EVENTS = {
    "output_audio_buffer.started",
    "output_audio_buffer.stopped",
    "output_audio_buffer.cleared",
}


def check_events(events: list[dict[str, Any]]) -> None:
    """Every event validates against the GA server-event models, exactly as sent (the
    fidelity tests' check)."""
    for event in events:
        validate("ga", event)


def buffer_events(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["response_id"]) for e in events if e["type"] in BUFFER_EVENTS]


async def round_trip(client: RawClient) -> None:
    """Everything the server answered before now has arrived."""
    await client.send({"type": "session.update", "session": {"type": "realtime"}})
    await client.recv_until("session.updated")


async def audio_call(server: FakeRealtimeServer) -> Any:
    return await accepted_call(server, output_modalities=["audio"])


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_a_plain_websocket_session_refuses_output_audio_buffer_clear(
    dialect: Dialect,
) -> None:
    with trio.fail_after(10):
        async with (
            open_fake_server(dialect=dialect) as server,
            open_raw_client(server.port) as client,
        ):
            await client.expect("session.created")
            await client.send({"type": "output_audio_buffer.clear", "event_id": "evt_clear"})
            error = (await client.recv_until("error"))[-1]
            assert error["error"]["type"] == "invalid_request_error"
            assert error["error"]["code"] == "invalid_value"
            assert error["error"]["param"] == "type"
            assert error["error"]["event_id"] == "evt_clear"
            assert "WebRTC" in error["error"]["message"]
            for event in client.received:
                validate(dialect, event)


async def test_a_calls_audio_plays_started_then_stopped_after_the_response_is_done() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            call = await audio_call(server)
            path = f"/v1/realtime?call_id={call.call_id}"
            async with open_raw_client(server.port, path) as sideband:
                await call.wait_sidebands(1)
                await sideband.send({"type": "response.create"})
                events = await sideband.recv_until("output_audio_buffer.stopped")
                types = [e["type"] for e in events]
                response_id = events[-1]["response_id"]
                assert buffer_events(events) == [
                    ("output_audio_buffer.started", response_id),
                    ("output_audio_buffer.stopped", response_id),
                ]
                # Started once the audio part is there; stopped once the response is done.
                assert types.index("response.content_part.added") < types.index(
                    "output_audio_buffer.started"
                )
                assert types.index("response.done") < types.index("output_audio_buffer.stopped")
                done = events[types.index("response.done")]
                assert done["response"]["id"] == response_id
                # The caller's voice activity: its response plays the same way.
                started_by_caller = await call.connection.start_response()
                events = await sideband.recv_until("output_audio_buffer.stopped")
                assert buffer_events(events) == [
                    ("output_audio_buffer.started", started_by_caller),
                    ("output_audio_buffer.stopped", started_by_caller),
                ]
                check_events(sideband.received)


async def test_a_text_response_plays_nothing() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            call = await accepted_call(server, output_modalities=["text"])
            path = f"/v1/realtime?call_id={call.call_id}"
            async with open_raw_client(server.port, path) as sideband:
                await call.wait_sidebands(1)
                await sideband.send({"type": "response.create"})
                await sideband.recv_until("response.done")
                await round_trip(sideband)
                assert buffer_events(sideband.received) == []


async def test_clear_after_cancel_cuts_the_audio_off_and_every_sideband_hears_cleared() -> None:
    # The audio is generated slowly and played slower still: nothing ends by itself.
    behavior = Behavior(audio_pace=0.01, call_playback_pace=0.001)
    with trio.fail_after(10):
        async with open_fake_server(behavior=behavior) as server:
            call = await audio_call(server)
            path = f"/v1/realtime?call_id={call.call_id}"
            async with (
                open_raw_client(server.port, path) as sideband,
                open_raw_client(server.port, path) as other,
            ):
                await call.wait_sidebands(2)
                await sideband.send({"type": "response.create"})
                started = (await sideband.recv_until("output_audio_buffer.started"))[-1]
                response_id = started["response_id"]
                await sideband.send({"type": "response.cancel", "response_id": response_id})
                done = (await sideband.recv_until("response.done"))[-1]
                assert done["response"]["status"] == "cancelled"
                await round_trip(sideband)
                # Cancelled, but the audio already generated still plays to the caller.
                assert buffer_events(sideband.received) == [
                    ("output_audio_buffer.started", response_id)
                ]
                await sideband.send({"type": "output_audio_buffer.clear", "event_id": "evt_c"})
                cleared = (await sideband.recv_until("output_audio_buffer.cleared"))[-1]
                assert cleared["response_id"] == response_id
                await other.recv_until("output_audio_buffer.cleared")
                await round_trip(sideband)
                # Cut off: it never stops by itself, and it is not cleared twice.
                assert buffer_events(sideband.received) == [
                    ("output_audio_buffer.started", response_id),
                    ("output_audio_buffer.cleared", response_id),
                ]
                # Nothing plays now: a clear is not answered, nor refused.
                await sideband.send({"type": "output_audio_buffer.clear"})
                await round_trip(sideband)
                assert buffer_events(sideband.received)[-1][0] == "output_audio_buffer.cleared"
                assert len(buffer_events(sideband.received)) == 2
                assert [e for e in sideband.received if e["type"] == "error"] == []
                check_events(sideband.received)
                check_events(other.received)


async def test_the_callers_leg_can_clear_and_its_voice_activity_clears_on_interrupt() -> None:
    behavior = Behavior(audio_pace=0.01, call_playback_pace=0.001)
    with trio.fail_after(10):
        async with open_fake_server(behavior=behavior) as server:
            call = await audio_call(server)
            path = f"/v1/realtime?call_id={call.call_id}"
            async with open_raw_client(server.port, path) as sideband:
                await call.wait_sidebands(1)
                first = await call.connection.start_response()
                await sideband.recv_until("output_audio_buffer.started")
                # The caller speaks over the reply (interrupt_response): the response is
                # cancelled and its audio cut off.
                second = await call.connection.start_response(interrupt=True)
                events = await sideband.recv_until("output_audio_buffer.started")
                assert buffer_events(events) == [
                    ("output_audio_buffer.cleared", first),
                    ("output_audio_buffer.started", second),
                ]
                types = [e["type"] for e in events]
                assert types.index("input_audio_buffer.speech_started") < types.index(
                    "output_audio_buffer.cleared"
                )
                # The browser's data channel cancels and clears.
                call.connection.send_client_event({"type": "response.cancel"})
                call.connection.send_client_event({"type": "output_audio_buffer.clear"})
                cleared = (await sideband.recv_until("output_audio_buffer.cleared"))[-1]
                assert cleared["response_id"] == second
                check_events(sideband.received)
