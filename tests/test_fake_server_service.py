"""Loopback tests of what the fake server refuses and answers as the service does, and of the
knobs for the service's newer behaviour: one test (at least) per ``Behavior`` knob."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected

from trio_realtime.testing import (
    Behavior,
    FakeConnection,
    FakeRealtimeServer,
    Script,
    open_fake_server,
)
from trio_realtime.testing._raw_client import RawClient, open_raw_client

Dialect = Literal["ga", "beta"]
OPENAI = "/v1/realtime?model=gpt-realtime"
AZURE_GA = "/openai/v1/realtime?model=my-deployment"
AZURE_PREVIEW = "/openai/realtime?api-version=2025-04-01-preview&deployment=my-deployment"


@asynccontextmanager
async def connect(
    server: FakeRealtimeServer,
    resource: str = OPENAI,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[tuple[RawClient, FakeConnection]]:
    """A client past the greeting, and the server side of its connection."""
    async with open_raw_client(server.port, resource, extra_headers=headers) as client:
        connection = await server.wait_connection()
        await client.expect("session.created")
        if server.dialect == "beta":
            await client.expect("conversation.created")
        yield client, connection


async def refused_handshake(
    server: FakeRealtimeServer, resource: str, headers: list[tuple[bytes, bytes]] | None = None
) -> ConnectionRejected:
    rejected: list[ConnectionRejected] = []
    try:
        async with open_raw_client(server.port, resource, extra_headers=headers):
            pytest.fail("the handshake was accepted")  # pragma: no cover
    except* ConnectionRejected as group:
        rejected.extend(e for e in group.exceptions if isinstance(e, ConnectionRejected))
    (refusal,) = rejected
    return refusal


async def closed_after(client: RawClient) -> tuple[list[dict[str, Any]], ConnectionClosed]:
    """Every event until the connection closes, and how it closed."""
    events: list[dict[str, Any]] = []
    try:
        while True:
            events.append(await client.recv())
    except ConnectionClosed as exc:
        return events, exc


def ga_update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"type": "realtime", **session}}


# -- refusals at connect -----------------------------------------------------------------------


@pytest.mark.parametrize("resource", ["/", "/v1/chat?model=x", "/v1/realtime/extra", "/realtime"])
async def test_wrong_path_is_refused_at_the_handshake(resource: str) -> None:
    with trio.fail_after(5):
        async with open_fake_server() as server:
            refusal = await refused_handshake(server, resource)
            assert refusal.status_code == 404
            assert refusal.body is not None
            assert json.loads(refusal.body)["error"]["type"] == "invalid_request_error"
            stats = server.statistics()
            assert (stats.connections_refused, stats.connections) == (1, 0)
            assert server.connections == []


@pytest.mark.parametrize("resource", [OPENAI, AZURE_GA, AZURE_PREVIEW])
async def test_every_client_path_is_served(resource: str) -> None:
    with trio.fail_after(5):
        async with open_fake_server() as server, connect(server, resource) as (_, connection):
            assert connection.request_path == resource
            assert server.url.endswith(OPENAI)


async def test_invalid_key_gets_an_error_then_a_close() -> None:
    behavior = Behavior(invalid_api_keys={"sk-revoked-key-WXYZ"})
    headers = [(b"authorization", b"Bearer sk-revoked-key-WXYZ")]
    with trio.fail_after(5):
        async with (
            open_fake_server(behavior=behavior) as server,
            open_raw_client(server.port, OPENAI, extra_headers=headers) as client,
        ):
            await client.send({"type": "response.create"})
            events, closed = await closed_after(client)
            (error,) = events
            assert error["type"] == "error"
            assert error["error"]["code"] == "invalid_api_key"
            assert error["error"]["event_id"] is None
            assert "WXYZ" in error["error"]["message"]
            assert "revoked" not in error["error"]["message"]
            assert closed.reason is not None
            assert closed.reason.code == 3000
            assert closed.reason.reason == "invalid_request_error.invalid_api_key"
            assert server.statistics().responses_created == 0


@pytest.mark.parametrize(
    ("headers", "outcome"),
    [
        ([(b"authorization", b"Bearer sk-good")], "session.created"),
        ([(b"api-key", b"sk-good")], "session.created"),
        ([(b"authorization", b"Bearer sk-other")], "invalid_api_key"),
        ([], None),  # no key: the service's "missing" error, code null
    ],
)
async def test_accepted_api_keys(headers: list[tuple[bytes, bytes]], outcome: str | None) -> None:
    behavior = Behavior(accepted_api_keys={"sk-good"})
    with trio.fail_after(5):
        async with (
            open_fake_server(behavior=behavior) as server,
            open_raw_client(server.port, OPENAI, extra_headers=headers) as client,
        ):
            first = await client.recv()
            if outcome == "session.created":
                assert first["type"] == "session.created"
                return
            assert first["type"] == "error"
            assert first["error"]["code"] == outcome
            _, closed = await closed_after(client)
            assert closed.reason is not None
            assert closed.reason.code == 3000


@pytest.mark.parametrize("resource", [AZURE_GA, AZURE_PREVIEW])
async def test_azure_refuses_a_bad_key_at_the_handshake(resource: str) -> None:
    behavior = Behavior(accepted_api_keys={"right"})
    with trio.fail_after(5):
        async with open_fake_server(behavior=behavior) as server:
            refusal = await refused_handshake(server, resource, [(b"api-key", b"wrong")])
            assert refusal.status_code == 401
            assert refusal.body is not None
            assert json.loads(refusal.body)["error"]["code"] == "401"
            async with connect(server, resource, [(b"api-key", b"right")]):
                pass


# -- expiry and drops --------------------------------------------------------------------------


async def test_session_expires(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):
        async with open_fake_server(behavior=Behavior(session_duration=90)) as server:
            before = int(time.time())
            async with connect(server) as (client, connection):
                after = int(time.time())
                expires_at = connection.sent[0]["session"]["expires_at"]
                assert before + 90 <= expires_at <= after + 90
                # The session works until it expires.
                await client.send({"type": "response.create"})
                await client.recv_until("response.done")
                events, closed = await closed_after(client)
            (error,) = events
            message = "Your session hit the maximum duration of 1.5 minutes."
            assert error["error"] == {
                "type": "invalid_request_error",
                "code": "session_expired",
                "message": message,
                "param": None,
                "event_id": None,
            }
            assert closed.reason is not None
            assert (closed.reason.code, closed.reason.reason) == (1001, message)
            assert not connection.is_open


async def test_drop_after(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):
        async with (
            open_fake_server(behavior=Behavior(drop_after=300, auto_finish=False)) as server,
            connect(server) as (client, connection),
        ):
            await client.send({"type": "response.create"})
            await client.expect("response.created")
            events, closed = await closed_after(client)
            assert "response.done" not in [e["type"] for e in events]
            assert closed.reason is not None
            assert closed.reason.code == 1006
            await connection.wait_closed()
            assert server.active_response_ids() == []


# -- conversation items: retrieve and truncate -------------------------------------------------


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_retrieve_and_truncate(dialect: Dialect) -> None:
    script = Script(text=None, audio=bytes(48 * 1000), transcript="one second")
    behavior = Behavior(script=lambda body: script)
    with trio.fail_after(5):
        async with (
            open_fake_server(dialect=dialect, behavior=behavior) as server,
            connect(server) as (client, connection),
        ):
            await client.send({"type": "response.create"})
            done = (await client.recv_until("response.done"))[-1]
            item_id = done["response"]["output"][0]["id"]
            assert connection.item_ids() == [item_id]

            await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
            retrieved = await client.expect("conversation.item.retrieved")
            assert retrieved["item"]["id"] == item_id
            assert retrieved["item"]["content"][0]["transcript"] == "one second"

            truncate = {"type": "conversation.item.truncate", "item_id": item_id}
            await client.send(
                {**truncate, "content_index": 0, "audio_end_ms": 1500, "event_id": "e1"}
            )
            error = await client.expect("error")
            assert error["error"]["code"] == "invalid_value"
            assert (
                error["error"]["message"]
                == "Audio content of 1000ms is already shorter than 1500ms"
            )
            assert error["error"]["event_id"] == "e1"

            await client.send({**truncate, "content_index": 0, "audio_end_ms": 400})
            truncated = await client.expect("conversation.item.truncated")
            assert (
                truncated["item_id"],
                truncated["content_index"],
                truncated["audio_end_ms"],
            ) == (
                item_id,
                0,
                400,
            )
            await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
            retrieved = await client.expect("conversation.item.retrieved")
            assert retrieved["item"]["content"][0]["transcript"] == ""

            for kind in ("retrieve", "truncate"):
                await client.send(
                    {
                        "type": f"conversation.item.{kind}",
                        "event_id": f"evt_{kind}",
                        "item_id": "item_gone",
                        "content_index": 0,
                        "audio_end_ms": 0,
                    }
                )
                error = await client.expect("error")
                assert error["error"]["code"] == "item_not_found"
                assert error["error"]["param"] == "item_id"
                assert error["error"]["event_id"] == f"evt_{kind}"


# -- session.update ----------------------------------------------------------------------------


async def test_partial_ga_update_is_merged_and_bad_ones_refused() -> None:
    with trio.fail_after(5):
        async with open_fake_server() as server, connect(server) as (client, connection):
            created = connection.sent[0]["session"]
            await client.send(ga_update(audio={"output": {"voice": "cedar"}}))
            updated = (await client.expect("session.updated"))["session"]
            assert updated["audio"]["output"]["voice"] == "cedar"
            assert updated["audio"]["input"] == created["audio"]["input"]
            assert updated["audio"]["output"]["format"] == created["audio"]["output"]["format"]

            await client.send(
                {"type": "session.update", "event_id": "evt_u", "session": {"instructions": "x"}}
            )
            await client.send(ga_update(audio={"output": {"volume": 11}}))
            await client.send(ga_update(audio={"output": {"voice": "hal"}}))
            errors = [(await client.expect("error"))["error"] for _ in range(3)]
            assert [(e["code"], e["param"]) for e in errors] == [
                ("missing_required_parameter", "session.type"),
                ("unknown_parameter", "session.audio.output.volume"),
                ("invalid_value", "session.audio.output.voice"),
            ]
            assert errors[0]["event_id"] == "evt_u"
            assert connection.session["audio"]["output"]["voice"] == "cedar"
            assert connection.session["instructions"] == ""


async def test_voice_cannot_change_after_audio() -> None:
    with trio.fail_after(5):
        async with open_fake_server() as server, connect(server) as (client, _):
            await client.send(
                {"type": "response.create", "response": {"output_modalities": ["audio"]}}
            )
            await client.recv_until("response.done")
            await client.send(ga_update(audio={"output": {"voice": "cedar"}}))
            error = await client.expect("error")
            assert error["error"]["code"] == "cannot_update_voice"


# -- responses honour the session's voice and format -------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "update", "voice", "wire_format", "silence", "bytes_per_ms"),
    [
        (
            "ga",
            {
                "type": "realtime",
                "output_modalities": ["audio"],
                "audio": {"output": {"voice": "cedar", "format": {"type": "audio/pcmu"}}},
            },
            "cedar",
            {"type": "audio/pcmu"},
            0xFF,
            8,
        ),
        (
            "ga",
            {"type": "realtime", "output_modalities": ["audio"]},
            "alloy",
            {"type": "audio/pcm", "rate": 24000},
            0x00,
            48,
        ),
        (
            "beta",
            {"modalities": ["audio", "text"], "voice": "sage", "output_audio_format": "g711_alaw"},
            "sage",
            "g711_alaw",
            0xD5,
            8,
        ),
    ],
)
async def test_responses_honour_voice_and_format(
    dialect: Dialect,
    update: dict[str, Any],
    voice: str,
    wire_format: Any,
    silence: int,
    bytes_per_ms: int,
) -> None:
    with trio.fail_after(5):
        async with (
            open_fake_server(dialect=dialect) as server,
            connect(server) as (client, _),
        ):
            await client.send({"type": "session.update", "session": update})
            await client.expect("session.updated")
            await client.send(
                {"type": "response.create", "response": {"instructions": "Say exactly: hi"}}
            )
            events = await client.recv_until("response.done")
            for event in (events[0], events[-1]):
                response = event["response"]
                if dialect == "ga":
                    assert response["audio"] == {"output": {"format": wire_format, "voice": voice}}
                else:
                    assert (response["voice"], response["output_audio_format"]) == (
                        voice,
                        wire_format,
                    )
            audio = b"".join(
                base64.b64decode(e["delta"]) for e in events if e["type"].endswith("audio.delta")
            )
            assert audio == bytes([silence]) * (2 * 10 * bytes_per_ms)  # 10 ms a character


# -- knobs for newer models and interruptions --------------------------------------------------


async def test_omit_response_created() -> None:
    with trio.fail_after(5):
        async with (
            open_fake_server(behavior=Behavior(omit_response_created=True)) as server,
            connect(server) as (client, _),
        ):
            await client.send({"type": "response.create"})
            events = await client.recv_until("response.done")
            assert "response.created" not in [e["type"] for e in events]
            assert events[0]["type"] == "rate_limits.updated"
            assert events[-1]["response"]["status"] == "completed"
            assert server.statistics().responses_created == 1


@pytest.mark.parametrize("status", ["cancelled", "incomplete"])
async def test_interrupted_status(status: str) -> None:
    behavior = Behavior(auto_finish=False, interrupted_status=status)
    with trio.fail_after(5):
        async with open_fake_server(behavior=behavior) as server, connect(server) as (client, _):
            await client.send({"type": "response.create"})
            mine = (await client.expect("response.created"))["response"]["id"]
            server.behavior.auto_finish = True
            await server.start_response(interrupt=True)
            done = next(
                e
                for e in await client.recv_until("response.created")
                if e["type"] == "response.done"
            )
            assert done["response"]["id"] == mine
            assert done["response"]["status"] == status
            assert done["response"]["status_details"] == {"type": status, "reason": "turn_detected"}
            assert server.statistics().responses_done_by_status[status] == 1


@pytest.mark.parametrize("overlap", [False, True])
async def test_several_audio_items_in_one_response(overlap: bool) -> None:
    script = Script(
        text=None, audio=bytes(48 * 300), transcript="three parts here", audio_chunk_size=2400
    )
    behavior = Behavior(script=lambda body: script, audio_items=3, overlap_audio_items=overlap)
    with trio.fail_after(5):
        async with (
            open_fake_server(behavior=behavior) as server,
            connect(server) as (client, connection),
        ):
            await client.send({"type": "response.create"})
            events = await client.recv_until("response.done")
            output = events[-1]["response"]["output"]
            assert len(output) == 3
            assert connection.item_ids() == [item["id"] for item in output]
            order = [
                (e["type"], e["output_index"])
                for e in events
                if e["type"] in ("response.output_audio.delta", "response.output_audio.done")
            ]
            first_done = order.index(("response.output_audio.done", 0))
            second_delta = order.index(("response.output_audio.delta", 1))
            assert (second_delta < first_done) is overlap


async def test_idle_timeout_starts_a_response(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):
        async with open_fake_server() as server, connect(server) as (client, _):
            await client.send(
                ga_update(audio={"input": {"turn_detection": {"idle_timeout_ms": 6000}}})
            )
            await client.expect("session.updated")
            events = await client.recv_until("response.done")
            assert [e["type"] for e in events[:5]] == [
                "input_audio_buffer.timeout_triggered",
                "input_audio_buffer.committed",
                "conversation.item.added",
                "conversation.item.done",
                "response.created",
            ]
            triggered = events[0]
            assert triggered["item_id"] == events[1]["item_id"]
            assert triggered["audio_end_ms"] - triggered["audio_start_ms"] == 6000
            assert events[4]["response"]["metadata"] is None
            assert server.statistics().server_started == 1
            # Off again: no more responses start by themselves.
            await client.send(ga_update(audio={"input": {"turn_detection": None}}))
            await client.expect("session.updated")
            await trio.sleep(60)
            assert server.statistics().server_started == 1


async def test_no_idle_timeout_without_the_setting(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):
        async with open_fake_server() as server, connect(server) as (_, connection):
            await trio.sleep(120)
            assert connection.sent_types() == ["session.created"]


async def test_idle_timeout_is_ga_only() -> None:
    with trio.fail_after(5):
        async with open_fake_server(dialect="beta") as server, connect(server):
            with pytest.raises(ValueError, match="beta"):
                await server.start_response(idle_timeout=True)


async def test_client_item_after_a_previous_item() -> None:
    message = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
    with trio.fail_after(5):
        async with open_fake_server() as server, connect(server) as (client, connection):
            for n in ("a", "b"):
                await client.send(
                    {"type": "conversation.item.create", "item": {**message, "id": n}}
                )
                await client.recv_until("conversation.item.done")
            event = {"type": "conversation.item.create", "item": {**message, "id": "c"}}
            await client.send({**event, "previous_item_id": "root"})
            added = await client.expect("conversation.item.added")
            assert added["previous_item_id"] is None
            await client.expect("conversation.item.done")
            await client.send({**event, "item": {**message, "id": "d"}, "previous_item_id": "a"})
            assert (await client.expect("conversation.item.added"))["previous_item_id"] == "a"
            await client.expect("conversation.item.done")
            assert connection.item_ids() == ["c", "a", "d", "b"]
            await client.send({**event, "item": {**message, "id": "e"}, "previous_item_id": "zz"})
            assert (await client.expect("error"))["error"]["code"] == "item_not_found"
