"""Loopback tests of the fake Realtime server, driven by a bare WebSocket client."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from trio_realtime.testing import (
    Behavior,
    FakeConnection,
    FakeRealtimeServer,
    FunctionCall,
    Script,
    open_fake_server,
)
from trio_realtime.testing._raw_client import RawClient, open_raw_client

pytest_plugins = ["pytester"]

Dialect = Literal["ga", "beta"]
GA_TEXT = "response.output_text"
BETA_TEXT = "response.text"


@asynccontextmanager
async def connect(server: FakeRealtimeServer) -> AsyncIterator[tuple[RawClient, FakeConnection]]:
    """A client past the greeting, and the server side of its connection."""
    async with open_raw_client(server.port) as client:
        connection = await server.wait_connection()
        await client.expect("session.created")
        if server.dialect == "beta":
            await client.expect("conversation.created")
        yield client, connection


async def drain(client: RawClient) -> None:
    """Read until the connection closes (raises ``ConnectionClosed``)."""
    while True:
        await client.recv()


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def text_sequence(dialect: Dialect, deltas: int, *, in_band: bool = True) -> list[str]:
    text = GA_TEXT if dialect == "ga" else BETA_TEXT
    added = ["conversation.item.added"] if dialect == "ga" else ["conversation.item.created"]
    done = ["conversation.item.done"] if dialect == "ga" else []
    return [
        "response.created",
        "rate_limits.updated",
        "response.output_item.added",
        *(added if in_band else []),
        "response.content_part.added",
        *[f"{text}.delta"] * deltas,
        f"{text}.done",
        "response.content_part.done",
        "response.output_item.done",
        *(done if in_band else []),
        "response.done",
    ]


# -- connecting ------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_greeting(dialect: Dialect) -> None:
    with trio.fail_after(5):
        async with open_fake_server(dialect=dialect) as server:
            assert server.url == f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime"
            async with open_raw_client(
                server.port, extra_headers=[(b"authorization", b"Bearer k")]
            ) as client:
                created = await client.expect("session.created")
                assert created["event_id"].startswith("event_")
                if dialect == "ga":
                    assert created["session"]["type"] == "realtime"
                    assert created["session"]["output_modalities"] == ["text"]
                else:
                    assert created["session"]["modalities"] == ["text"]
                    conversation = await client.expect("conversation.created")
                    assert conversation["conversation"]["id"].startswith("conv_")
                connection = await server.wait_connection()
                assert (b"authorization", b"Bearer k") in connection.request_headers
                assert connection.request_path == "/v1/realtime?model=gpt-realtime"
                assert server.statistics().open_connections == 1
            await connection.wait_closed()
            assert server.statistics().open_connections == 0
            assert server.statistics().connections == 1


async def test_server_exit_drops_connected_clients_promptly() -> None:
    with trio.fail_after(5):
        async with open_raw_client_and_server() as client:
            pass
        with pytest.raises(ConnectionClosed):
            await drain(client)


@asynccontextmanager
async def open_raw_client_and_server() -> AsyncIterator[RawClient]:
    async with open_fake_server() as server, open_raw_client(server.port) as client:
        await client.expect("session.created")
        # Leave the server's block first, with the client still connected.
        yield client


# -- responses -------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_text_response(dialect: Dialect) -> None:
    with trio.fail_after(5):
        async with open_fake_server(dialect=dialect) as server, connect(server) as (client, _):
            metadata = {"client_event_id": "evt_1", "purpose": "test"}
            await client.send(
                {"type": "response.create", "event_id": "evt_1", "response": {"metadata": metadata}}
            )
            events = await client.recv_until("response.done")
            assert types_of(events) == text_sequence(dialect, deltas=4)
            created, done = events[0], events[-1]
            for event in (created, done):
                assert event["response"]["metadata"] == metadata
                assert event["response"]["conversation_id"].startswith("conv_")
            assert created["response"]["status"] == "in_progress"
            assert done["response"]["id"] == created["response"]["id"]
            assert done["response"]["status"] == "completed"
            assert done["response"]["status_details"] is None
            text = "".join(e["delta"] for e in events if e["type"].endswith("text.delta"))
            assert text == "Hello from the fake server."
            (item,) = done["response"]["output"]
            content_type = "output_text" if dialect == "ga" else "text"
            assert item["content"] == [{"type": content_type, "text": text}]
            assert item["status"] == "completed"
            assert all(
                e["response_id"] == created["response"]["id"]
                for e in events[2:-1]
                if "response_id" in e
            )
            ids = [e["event_id"] for e in client.received]
            assert len(set(ids)) == len(ids)


async def test_say_exactly_instructions() -> None:
    with trio.fail_after(5):
        async with open_fake_server() as server, connect(server) as (client, _):
            body = {"instructions": "Say exactly: one two three"}
            await client.send({"type": "response.create", "response": body})
            done = (await client.recv_until("response.done"))[-1]
            assert done["response"]["output"][0]["content"][0]["text"] == "one two three"


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_audio_response(dialect: Dialect) -> None:
    audio = bytes(range(256)) * 40  # 10240 bytes: three deltas of at most 4800
    script = Script(text=None, audio=audio, transcript="a spoken reply")
    with trio.fail_after(5):
        async with (
            open_fake_server(
                dialect=dialect, behavior=Behavior(script=lambda body: script)
            ) as server,
            connect(server) as (client, _),
        ):
            await client.send({"type": "response.create"})
            events = await client.recv_until("response.done")
            prefix = "response.output_audio" if dialect == "ga" else "response.audio"
            types = types_of(events)
            assert types.count(f"{prefix}.delta") == 3
            assert types.count(f"{prefix}_transcript.delta") == 2
            tail = [
                f"{prefix}.done",
                f"{prefix}_transcript.done",
                "response.content_part.done",
                "response.output_item.done",
                *(["conversation.item.done"] if dialect == "ga" else []),
                "response.done",
            ]
            assert types[-len(tail) :] == tail
            received = b"".join(
                base64.b64decode(e["delta"]) for e in events if e["type"] == f"{prefix}.delta"
            )
            assert received == audio
            part = next(e for e in events if e["type"] == "response.content_part.added")["part"]
            assert part["type"] == "audio"
            done = events[-1]["response"]
            assert done["output"][0]["content"] == [
                {
                    "type": "output_audio" if dialect == "ga" else "audio",
                    "transcript": "a spoken reply",
                }
            ]
            modalities_key = "output_modalities" if dialect == "ga" else "modalities"
            assert done[modalities_key] == ["audio"]


async def test_default_script_follows_requested_modalities() -> None:
    with trio.fail_after(5):
        async with open_fake_server() as server, connect(server) as (client, _):
            await client.send(
                {"type": "response.create", "response": {"output_modalities": ["audio"]}}
            )
            events = await client.recv_until("response.done")
            assert "response.output_audio.delta" in types_of(events)
            assert events[-1]["response"]["output"][0]["content"][0]["transcript"] == (
                "Hello from the fake server."
            )


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_function_calls(dialect: Dialect) -> None:
    calls = (
        FunctionCall("get_weather", '{"city": "Paris"}', call_id="call_given"),
        FunctionCall("get_time", "{}"),
    )
    behavior = Behavior(script=lambda body: Script(text=None, function_calls=calls))
    with trio.fail_after(5):
        async with (
            open_fake_server(dialect=dialect, behavior=behavior) as server,
            connect(server) as (client, _),
        ):
            await client.send({"type": "response.create"})
            events = await client.recv_until("response.done")
            dones = [e for e in events if e["type"] == "response.function_call_arguments.done"]
            assert [d["arguments"] for d in dones] == ['{"city": "Paris"}', "{}"]
            assert dones[0]["call_id"] == "call_given"
            assert dones[1]["call_id"].startswith("call_")
            if dialect == "ga":
                assert [d["name"] for d in dones] == ["get_weather", "get_time"]
            deltas = "".join(
                e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
            )
            assert deltas == '{"city": "Paris"}{}'
            output = events[-1]["response"]["output"]
            assert [(i["type"], i["name"], i["call_id"], i["status"]) for i in output] == [
                ("function_call", "get_weather", "call_given", "completed"),
                ("function_call", "get_time", dones[1]["call_id"], "completed"),
            ]
            assert [
                e["output_index"] for e in events if e["type"] == "response.output_item.added"
            ] == [0, 1]

            # The tool result goes back as an item; it does not start a response by itself.
            await client.send(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "function_call_output",
                        "call_id": "call_given",
                        "output": "sunny",
                    },
                }
            )
            item_event = await client.expect(
                "conversation.item.added" if dialect == "ga" else "conversation.item.created"
            )
            assert item_event["item"]["type"] == "function_call_output"
            assert item_event["item"]["id"].startswith("item_")
            assert item_event["previous_item_id"] == output[-1]["id"]
            if dialect == "ga":
                await client.expect("conversation.item.done")


# -- the one-active rule ---------------------------------------------------------------------


@pytest.mark.parametrize(("legacy", "null_id"), [(False, False), (True, False), (False, True)])
async def test_second_in_band_response_is_rejected(legacy: bool, null_id: bool) -> None:
    behavior = Behavior(
        auto_finish=False, legacy_conflict_error=legacy, null_error_event_id=null_id
    )
    with trio.fail_after(5):
        async with open_fake_server(behavior=behavior) as server, connect(server) as (client, _):
            await client.send({"type": "response.create", "event_id": "evt_a"})
            created = await client.expect("response.created")
            await client.expect("rate_limits.updated")
            await client.send({"type": "response.create", "event_id": "evt_b"})
            error = await client.expect("error")
            active_id = created["response"]["id"]
            assert error["event_id"].startswith("event_")
            if legacy:
                expected = {
                    "type": "invalid_request_error",
                    "code": None,
                    "message": "Conversation already has an active response",
                    "param": None,
                    "event_id": "evt_b",
                }
            else:
                expected = {
                    "type": "invalid_request_error",
                    "code": "conversation_already_has_active_response",
                    "message": (
                        "Conversation already has an active response in progress: "
                        f"{active_id}. Wait until the response is finished before "
                        "creating a new one."
                    ),
                    "param": None,
                    "event_id": None if null_id else "evt_b",
                }
            assert error == {"type": "error", "event_id": error["event_id"], "error": expected}
            assert list(error) == ["type", "event_id", "error"]
            assert list(error["error"]) == ["type", "code", "message", "param", "event_id"]
            await server.finish_response()
            await client.recv_until("response.done")
            stats = server.statistics()
            assert stats.rejections_sent == 1
            assert stats.max_in_band_active == 1
            assert stats.responses_done_by_status == {"completed": 1}


async def test_out_of_band_responses_run_in_parallel() -> None:
    with trio.fail_after(5):
        async with (
            open_fake_server(behavior=Behavior(auto_finish=False)) as server,
            connect(server) as (client, _),
        ):
            await client.send({"type": "response.create", "response": {"metadata": {"n": "in"}}})
            oob = {"conversation": "none", "output_modalities": ["text"]}
            for n in ("a", "b"):
                await client.send(
                    {"type": "response.create", "response": {**oob, "metadata": {"n": n}}}
                )
            created = [(await client.recv_until("response.created"))[-1] for _ in range(3)]
            by_name = {c["response"]["metadata"]["n"]: c["response"] for c in created}
            assert by_name["in"]["conversation_id"] is not None
            assert by_name["a"]["conversation_id"] is None
            assert by_name["b"]["conversation_id"] is None
            assert sorted(server.active_response_ids()) == sorted(r["id"] for r in by_name.values())
            for name in ("a", "b", "in"):
                await server.finish_response(by_name[name]["id"])
            dones = [e for e in client.received if e["type"] == "response.done"]
            while len(dones) < 3:
                event = await client.recv()
                if event["type"] == "response.done":
                    dones.append(event)
            oob_events = [e for e in client.received if e.get("response_id") == by_name["a"]["id"]]
            assert "conversation.item.added" not in types_of(oob_events)
            stats = server.statistics()
            assert stats.max_out_of_band_active == 2
            assert stats.max_in_band_active == 1
            assert stats.rejections_sent == 0
            assert server.active_response_ids() == []


async def test_statistics_after_many_requests() -> None:
    with trio.fail_after(5):
        async with open_fake_server() as server, connect(server) as (client, _):
            for n in range(5):
                await client.send({"type": "response.create", "event_id": f"evt_{n}"})
            done = errors = 0
            while done + errors < 5:
                event = await client.recv()
                done += event["type"] == "response.done"
                errors += event["type"] == "error"
            stats = server.statistics()
            assert stats.max_in_band_active == 1
            assert stats.rejections_sent == errors
            assert stats.responses_created == done
            assert stats.responses_done_by_status == {"completed": done}


# -- cancelling ------------------------------------------------------------------------------


async def test_cancel_active_response(autojump_clock: trio.testing.MockClock) -> None:
    behavior = Behavior(auto_finish=False, cancel_delay=0.5)
    with trio.fail_after(5):
        async with open_fake_server(behavior=behavior) as server, connect(server) as (client, _):
            await client.send({"type": "response.create", "response": {"metadata": {"k": "v"}}})
            created = await client.expect("response.created")
            await client.send({"type": "response.cancel", "event_id": "evt_c"})
            # Cancel is asynchronous: a create sent right after it is still rejected.
            await client.send({"type": "response.create", "event_id": "evt_d"})
            done = (await client.recv_until("response.done"))[-1]
            assert done["response"]["id"] == created["response"]["id"]
            assert done["response"]["status"] == "cancelled"
            assert done["response"]["status_details"] == {
                "type": "cancelled",
                "reason": "client_cancelled",
            }
            assert done["response"]["metadata"] == {"k": "v"}
            assert done["response"]["output"] == []
            assert [e["error"]["event_id"] for e in client.received if e["type"] == "error"] == [
                "evt_d"
            ]
            stats = server.statistics()
            assert stats.cancels_received == 1
            assert stats.responses_done_by_status == {"cancelled": 1}


async def test_cancel_midstream_closes_open_parts(autojump_clock: trio.testing.MockClock) -> None:
    behavior = Behavior(delta_delay=0.1, script=lambda body: Script(text="x" * 80, chunk_size=8))
    with trio.fail_after(5):
        async with open_fake_server(behavior=behavior) as server, connect(server) as (client, _):
            await client.send({"type": "response.create"})
            await client.recv_until("response.output_text.delta")
            await client.send({"type": "response.cancel"})
            events = await client.recv_until("response.done")
            assert types_of(events)[-5:] == [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "conversation.item.done",
                "response.done",
            ]
            streamed = "".join(
                e["delta"] for e in client.received if e["type"] == "response.output_text.delta"
            )
            assert 0 < len(streamed) < 80
            done = events[-1]["response"]
            assert done["status"] == "cancelled"
            (item,) = done["output"]
            assert item["status"] == "incomplete"
            assert item["content"][0]["text"] == streamed
            assert server.active_response_ids() == []


async def test_cancel_by_id_of_out_of_band_response() -> None:
    with trio.fail_after(5):
        async with (
            open_fake_server(behavior=Behavior(auto_finish=False)) as server,
            connect(server) as (client, _),
        ):
            await client.send({"type": "response.create", "response": {"conversation": "none"}})
            created = await client.expect("response.created")
            # Without an id, a cancel only looks at the in-band response.
            await client.send({"type": "response.cancel"})
            error = (await client.recv_until("error"))[-1]
            assert error["error"]["code"] == "response_cancel_not_active"
            await client.send({"type": "response.cancel", "response_id": created["response"]["id"]})
            done = (await client.recv_until("response.done"))[-1]
            assert done["response"]["status"] == "cancelled"
            assert done["response"]["conversation_id"] is None


async def test_cancel_with_nothing_active() -> None:
    with trio.fail_after(5):
        async with open_fake_server() as server, connect(server) as (client, connection):
            await client.send({"type": "response.cancel", "event_id": "evt_x"})
            error = await client.expect("error")
            assert error["error"] == {
                "type": "invalid_request_error",
                "code": "response_cancel_not_active",
                "message": "Cancellation failed: no active response found",
                "param": None,
                "event_id": "evt_x",
            }
            await client.send({"type": "response.cancel", "response_id": "resp_unknown"})
            assert (await client.expect("error"))["error"]["code"] == "response_cancel_not_active"
            assert connection.is_open


async def test_cancel_before_created_is_ignored(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(30):
        async with (
            open_fake_server(behavior=Behavior(created_delay=1.0)) as server,
            connect(server) as (client, _),
        ):
            await client.send({"type": "response.create", "event_id": "evt_1"})
            await client.send({"type": "response.cancel", "event_id": "evt_2"})
            error = await client.expect("error")
            assert error["error"]["code"] == "response_cancel_not_active"
            assert error["error"]["event_id"] == "evt_2"
            started = trio.current_time()
            events = await client.recv_until("response.done")
            assert events[0]["type"] == "response.created"
            assert events[-1]["response"]["status"] == "completed"
            assert trio.current_time() - started == pytest.approx(1.0, abs=0.01)


async def test_ignore_cancel() -> None:
    with trio.fail_after(5):
        behavior = Behavior(auto_finish=False, ignore_cancel=True)
        async with open_fake_server(behavior=behavior) as server, connect(server) as (client, _):
            await client.send({"type": "response.create"})
            await client.expect("response.created")
            await client.send({"type": "response.cancel"})
            await server.wait_for_client_event("response.cancel")
            server.behavior.ignore_cancel = False
            await server.finish_response()
            events = await client.recv_until("response.done")
            assert "error" not in types_of(events)
            assert events[-1]["response"]["status"] == "completed"
            assert server.statistics().cancels_received == 1


# -- server-started responses ----------------------------------------------------------------


async def test_start_response_on_idle_conversation() -> None:
    with trio.fail_after(5):
        async with open_fake_server() as server, connect(server) as (client, _):
            response_id = await server.start_response(Script(text="hi"))
            events = await client.recv_until("response.done")
            assert types_of(events)[:5] == [
                "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed",
                "conversation.item.added",
                "conversation.item.done",
            ]
            created = events[5]
            assert created["type"] == "response.created"
            assert created["response"]["id"] == response_id
            assert created["response"]["metadata"] is None
            assert created["response"]["conversation_id"] is not None
            assert server.statistics().server_started == 1


async def test_start_response_waits_for_the_active_one() -> None:
    with trio.fail_after(5):
        async with (
            open_fake_server(behavior=Behavior(auto_finish=False)) as server,
            connect(server) as (client, _),
        ):
            await client.send({"type": "response.create", "response": {"metadata": {"mine": "1"}}})
            mine = (await client.expect("response.created"))["response"]["id"]
            server_ids: list[str] = []

            async def start() -> None:
                server_ids.append(await server.start_response(vad_events=False))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(start)
                await trio.testing.wait_all_tasks_blocked()
                assert server_ids == []
                await server.finish_response(mine)
            events = await client.recv_until("response.created")
            assert events[-1]["response"]["id"] == server_ids[0]
            done_mine = next(e for e in events if e["type"] == "response.done")
            assert done_mine["response"]["status"] == "completed"
            await server.finish_response()
            await client.recv_until("response.done")
            assert server.statistics().max_in_band_active == 1


async def test_start_response_with_interrupt() -> None:
    with trio.fail_after(5):
        async with (
            open_fake_server(behavior=Behavior(auto_finish=False)) as server,
            connect(server) as (client, _),
        ):
            await client.send({"type": "response.create"})
            mine = (await client.expect("response.created"))["response"]["id"]
            server.behavior.auto_finish = True
            new_id = await server.start_response(interrupt=True)
            events = await client.recv_until("response.created")
            assert types_of(events)[1:3] == ["input_audio_buffer.speech_started", "response.done"]
            cancelled = events[2]["response"]
            assert cancelled["id"] == mine
            assert cancelled["status"] == "cancelled"
            assert cancelled["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
            assert events[-1]["response"]["id"] == new_id
            final = (await client.recv_until("response.done"))[-1]
            assert final["response"]["id"] == new_id
            assert final["response"]["status"] == "completed"


async def test_client_request_collides_with_server_started_response() -> None:
    with trio.fail_after(5):
        async with (
            open_fake_server(behavior=Behavior(auto_finish=False)) as server,
            connect(server) as (client, _),
        ):
            server_id = await server.start_response(vad_events=False)
            await client.send({"type": "response.create", "event_id": "evt_late"})
            error = (await client.recv_until("error"))[-1]
            assert server_id in error["error"]["message"]
            assert error["error"]["event_id"] == "evt_late"


# -- held and withheld events ----------------------------------------------------------------


@pytest.mark.parametrize("status", ["completed", "failed", "incomplete"])
async def test_auto_finish_false_then_finish_response(status: str) -> None:
    with trio.fail_after(5):
        async with (
            open_fake_server(behavior=Behavior(auto_finish=False)) as server,
            connect(server) as (client, connection),
        ):
            await client.send({"type": "response.create"})
            created = await client.expect("response.created")
            await client.expect("rate_limits.updated")
            await trio.testing.wait_all_tasks_blocked()
            assert connection.sent_types()[-1] == "rate_limits.updated"
            assert server.active_response_ids() == [created["response"]["id"]]
            await server.finish_response(status=status)
            events = await client.recv_until("response.done")
            assert types_of(events)[0] == "response.output_item.added"
            done = events[-1]["response"]
            assert done["status"] == status
            if status == "failed":
                assert done["status_details"]["error"]["type"] == "server_error"
            elif status == "incomplete":
                assert done["status_details"] == {
                    "type": "incomplete",
                    "reason": "max_output_tokens",
                }
            assert server.active_response_ids() == []
            with pytest.raises(LookupError):
                await server.finish_response()


async def test_withhold_done() -> None:
    with trio.fail_after(5):
        async with (
            open_fake_server(behavior=Behavior(withhold_done=True)) as server,
            connect(server) as (client, connection),
        ):
            await client.send({"type": "response.create"})
            events = await client.recv_until("conversation.item.done")
            await trio.testing.wait_all_tasks_blocked()
            assert "response.done" not in connection.sent_types()
            response_id = events[0]["response"]["id"]
            assert server.active_response_ids() == [response_id]
            await client.send({"type": "response.create", "event_id": "evt_2"})
            assert (await client.expect("error"))["error"][
                "code"
            ] == "conversation_already_has_active_response"
            await server.finish_response(response_id)
            done = await client.expect("response.done")
            assert done["response"]["status"] == "completed"
            assert len(done["response"]["output"]) == 1


async def test_withhold_created() -> None:
    behavior = Behavior(auto_finish=False, withhold_created=True)
    with trio.fail_after(5):
        async with (
            open_fake_server(behavior=behavior) as server,
            connect(server) as (client, connection),
        ):
            await client.send({"type": "response.create"})
            await server.wait_for_client_event("response.create")
            await trio.testing.wait_all_tasks_blocked()
            assert connection.sent_types() == ["session.created"]
            (hidden,) = server.active_response_ids()
            server.behavior.withhold_created = False
            await client.send({"type": "response.create", "event_id": "evt_2"})
            error = await client.expect("error")
            assert hidden in error["error"]["message"]
            await server.finish_response(hidden)
            assert server.statistics().responses_done_by_status == {"completed": 1}
            await client.send({"type": "response.create"})
            await server.wait_for_client_event("response.create", count=3)
            await server.finish_response()
            events = await client.recv_until("response.done")
            assert events[0]["type"] == "response.created"


# -- injection and connection control --------------------------------------------------------


async def test_send_raw_and_send_event() -> None:
    with trio.fail_after(5):
        async with open_fake_server() as server, connect(server) as (client, connection):
            await connection.send_raw("{not json")
            assert await client.ws.get_message() == "{not json"
            await connection.send_raw(b"\x00\x01")
            assert await client.ws.get_message() == b"\x00\x01"
            await connection.send_event({"type": "response.done", "custom": True})
            assert await client.recv() == {"type": "response.done", "custom": True}
            big = "x" * (2 * 2**20)
            await connection.send_event({"type": "made.up", "payload": big})
            assert (await client.recv())["payload"] == big


async def test_server_closes_connection() -> None:
    with trio.fail_after(5):
        async with open_fake_server() as server, connect(server) as (client, connection):
            await connection.send_event({"type": "before.close"})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connection.close, 4000, "bye")
                assert (await client.recv())["type"] == "before.close"
                with pytest.raises(ConnectionClosed) as info:
                    await client.recv()
            assert info.value.reason is not None
            assert info.value.reason.code == 4000
            assert info.value.reason.reason == "bye"
            assert not connection.is_open
            assert server.statistics().open_connections == 0


async def test_server_aborts_connection() -> None:
    with trio.fail_after(5):
        async with (
            open_fake_server(behavior=Behavior(auto_finish=False)) as server,
            connect(server) as (client, connection),
        ):
            await client.send({"type": "response.create"})
            await client.expect("response.created")
            await connection.abort()
            with pytest.raises(ConnectionClosed) as info:
                await drain(client)
            assert info.value.reason is not None
            assert info.value.reason.code == 1006
            assert server.active_response_ids() == []


async def test_stop_reading() -> None:
    with trio.fail_after(5):
        async with open_fake_server() as server, connect(server) as (client, connection):
            connection.stop_reading()
            await client.send({"type": "input_audio_buffer.clear"})
            await trio.testing.wait_all_tasks_blocked()
            assert connection.received == []
            connection.resume_reading()
            await client.expect("input_audio_buffer.cleared")
            assert types_of(connection.received) == ["input_audio_buffer.clear"]


async def test_client_disconnect_ends_response_tasks() -> None:
    with trio.fail_after(5):
        async with open_fake_server(behavior=Behavior(auto_finish=False)) as server:
            async with connect(server) as (client, connection):
                await client.send({"type": "response.create"})
                await client.expect("response.created")
            await connection.wait_closed()
            assert server.active_response_ids() == []
            with pytest.raises(LookupError):
                await server.start_response()


# -- other client events ---------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_client_events(dialect: Dialect) -> None:
    with trio.fail_after(5):
        async with (
            open_fake_server(dialect=dialect) as server,
            connect(server) as (client, connection),
        ):
            # GA requires session.type in an update, as the service does.
            session = {
                "instructions": "Be brief.",
                **({"type": "realtime"} if dialect == "ga" else {}),
            }
            await client.send({"type": "session.update", "session": session})
            updated = await client.expect("session.updated")
            assert updated["session"]["instructions"] == "Be brief."

            await client.send({"type": "input_audio_buffer.commit", "event_id": "evt_empty"})
            error = await client.expect("error")
            assert error["error"]["code"] == "input_audio_buffer_commit_empty"
            assert error["error"]["event_id"] == "evt_empty"

            audio = base64.b64encode(bytes(4800)).decode()
            await client.send({"type": "input_audio_buffer.append", "audio": audio})
            await client.send({"type": "input_audio_buffer.commit"})
            committed = await client.expect("input_audio_buffer.committed")
            item_event = await client.recv()
            assert item_event["item"]["id"] == committed["item_id"]
            if dialect == "ga":
                await client.expect("conversation.item.done")

            await client.send({"type": "input_audio_buffer.clear"})
            await client.expect("input_audio_buffer.cleared")

            message = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hello"}],
            }
            await client.send({"type": "conversation.item.create", "item": message})
            added = await client.recv()
            assert added["item"]["content"] == message["content"]
            assert added["previous_item_id"] == committed["item_id"]
            if dialect == "ga":
                await client.expect("conversation.item.done")
            await client.send({"type": "conversation.item.delete", "item_id": added["item"]["id"]})
            assert (await client.expect("conversation.item.deleted"))["item_id"] == added["item"][
                "id"
            ]

            await client.send({"type": "no.such.event", "event_id": "evt_bad"})
            error = await client.expect("error")
            assert error["error"]["code"] == "invalid_event"
            assert error["error"]["event_id"] == "evt_bad"

            await client.ws.send_message("{broken")
            error = await client.expect("error")
            assert error["error"]["code"] == "invalid_json"
            assert connection.is_open
            await server.wait_for_client_event("no.such.event")
            assert types_of(server.received)[0] == "session.update"
            assert (await connection.wait_for_client_event("input_audio_buffer.commit", count=2))[
                "type"
            ] == "input_audio_buffer.commit"


async def test_large_client_frame_is_accepted() -> None:
    with trio.fail_after(5):
        async with open_fake_server() as server, connect(server) as (client, _):
            audio = base64.b64encode(bytes(3 * 2**20)).decode()
            await client.send({"type": "input_audio_buffer.append", "audio": audio})
            await client.send({"type": "input_audio_buffer.commit"})
            await client.expect("input_audio_buffer.committed")


async def test_two_connections_are_two_conversations() -> None:
    with trio.fail_after(5):
        async with open_fake_server(behavior=Behavior(auto_finish=False)) as server:
            async with connect(server) as (first, c1), connect(server) as (second, c2):
                await first.send({"type": "response.create"})
                await second.send({"type": "response.create"})
                r1 = await first.expect("response.created")
                r2 = await second.expect("response.created")
                assert r1["response"]["conversation_id"] != r2["response"]["conversation_id"]
                assert server.connections == [c1, c2]
                await server.finish_response(r1["response"]["id"])
                await server.finish_response(connection=c2)
                await first.recv_until("response.done")
                await second.recv_until("response.done")
            assert server.statistics().max_in_band_active == 1
            assert server.statistics().connections == 2


# -- the pytest plugin -----------------------------------------------------------------------


async def test_plugin_fixture(realtime_server: FakeRealtimeServer) -> None:
    with trio.fail_after(5):
        assert realtime_server.dialect == "ga"
        async with connect(realtime_server) as (client, _):
            await client.send({"type": "response.create"})
            await client.recv_until("response.done")


async def test_plugin_fixture_beta(realtime_server_beta: FakeRealtimeServer) -> None:
    with trio.fail_after(5):
        assert realtime_server_beta.dialect == "beta"
        async with connect(realtime_server_beta) as (client, _):
            await client.send({"type": "response.create"})
            events = await client.recv_until("response.done")
            assert "response.text.delta" in types_of(events)


def test_script_and_behavior_are_values() -> None:
    assert Script() == Script()
    assert json.dumps(Script().text) == '"Hello from the fake server."'
    with pytest.raises(ValueError, match="chunk_size"):
        Script(chunk_size=0)


def test_plugin_with_trio_marker_and_without_trio_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(
        """
        import pytest
        import trio

        @pytest.mark.trio
        async def test_uses_fixture(realtime_server):
            with trio.fail_after(5):
                stream = await trio.open_tcp_stream("127.0.0.1", realtime_server.port)
                await stream.aclose()
            assert realtime_server.url.startswith("ws://127.0.0.1:")

        def test_sync_is_untouched():
            assert True
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
