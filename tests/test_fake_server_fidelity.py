"""Every event the fake server emits must be a valid server event of the ``openai`` package's
typed models, in both dialects, with no field the models do not know (bar a short allow-list).

``collect_events`` drives every scenario the fake server has an event for; the coverage test
fails when the server starts emitting an event type this file does not expect, so new events
cannot slip in unvalidated.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import pydantic
import pytest
import trio
import trio.testing
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeServerEvent as GAServerEvent

from model_checks import undeclared_fields
from trio_realtime.testing import (
    Behavior,
    FakeRealtimeServer,
    FunctionCall,
    Script,
    open_fake_server,
)
from trio_realtime.testing._raw_client import RawClient, open_raw_client

Dialect = Literal["ga", "beta"]

ADAPTERS: dict[str, pydantic.TypeAdapter[Any]] = {
    "ga": pydantic.TypeAdapter(GAServerEvent),
    "beta": pydantic.TypeAdapter(BetaServerEvent),
}

COMMON_TYPES = {
    "session.created",
    "session.updated",
    "error",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "conversation.item.deleted",
    "conversation.item.retrieved",
    "conversation.item.truncated",
    "rate_limits.updated",
    "response.created",
    "response.done",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
}
EXPECTED_TYPES = {
    "ga": COMMON_TYPES
    | {
        "input_audio_buffer.timeout_triggered",
        "conversation.item.added",
        "conversation.item.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
    },
    "beta": COMMON_TYPES
    | {
        "conversation.created",
        "conversation.item.created",
        "response.text.delta",
        "response.text.done",
        "response.audio.delta",
        "response.audio.done",
        "response.audio_transcript.delta",
        "response.audio_transcript.done",
    },
}
EXPECTED_ERROR_CODES = {
    None,  # the legacy conflict error
    "conversation_already_has_active_response",
    "response_cancel_not_active",
    "input_audio_buffer_commit_empty",
    "invalid_event",
    "invalid_json",
    "invalid_type",
    "item_not_found",
    "missing_required_parameter",
    "unknown_parameter",
    "invalid_value",
    "decimal_above_max_value",
    "cannot_update_voice",
    "invalid_api_key",
    "session_expired",
    "string_above_max_length",
    "object_above_max_properties",
}
EXPECTED_STATUSES = {"in_progress", "completed", "cancelled", "failed", "incomplete"}

#: Fields the real server sends that the typed models do not declare: (event type, path).
ALLOWED_EXTRAS = {
    ("session.created", "session.object"),
    ("session.created", "session.id"),
    ("session.created", "session.expires_at"),
    ("session.updated", "session.object"),
    ("session.updated", "session.id"),
    ("session.updated", "session.expires_at"),
}

SCRIPTS: dict[str, Script] = {
    "text": Script(text="Some text, streamed in pieces."),
    "audio": Script(text=None, audio=bytes(12000), transcript="Spoken words."),
    "calls": Script(
        text="Let me look.",
        function_calls=(FunctionCall("lookup", '{"q": "trio"}'), FunctionCall("noop", "{}")),
    ),
    "failed": Script(text="oops", status="failed"),
    "incomplete": Script(text="cut", status="incomplete"),
    "long_audio": Script(text=None, audio=bytes(48000), transcript="x" * 100),
    "long_call": Script(
        text=None, function_calls=(FunctionCall("slow", '{"n": ' + "1" * 100 + "}"),)
    ),
}


def _pick_script(body: Any) -> Script:
    metadata = body.get("metadata") or {}
    return SCRIPTS[metadata.get("script", "text")]


async def _response(client: RawClient, **body: Any) -> list[dict[str, Any]]:
    await client.send({"type": "response.create", "response": body})
    return await client.recv_until("response.done")


async def collect_events(dialect: Dialect) -> list[dict[str, Any]]:
    """Drive every scenario; return every event the client received."""
    behavior = Behavior(script=_pick_script)
    async with (
        open_fake_server(dialect=dialect, behavior=behavior) as server,
        open_raw_client(server.port) as client,
    ):
        await client.recv_until("session.created")
        # Session, items, audio buffer.
        session_type = {"type": "realtime"} if dialect == "ga" else {}
        await client.send(
            {"type": "session.update", "session": {**session_type, "instructions": "Be brief."}}
        )
        await client.send({"type": "session.update"})
        message = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
        }
        await client.send({"type": "conversation.item.create", "item": message})
        await client.send({"type": "conversation.item.create", "item": {}})
        await client.send({"type": "input_audio_buffer.commit"})
        audio = base64.b64encode(bytes(4800)).decode()
        await client.send({"type": "input_audio_buffer.append", "audio": audio})
        await client.send({"type": "input_audio_buffer.commit"})
        await client.send({"type": "input_audio_buffer.append", "audio": audio})
        await client.send({"type": "input_audio_buffer.clear"})
        await client.send({"type": "conversation.item.delete", "item_id": "item_nope"})
        await client.send({"type": "no.such.event"})
        await client.ws.send_message("{not json")
        await client.send({"type": "response.create", "response": "not an object"})
        await client.send({"type": "response.cancel"})
        await client.recv_until("input_audio_buffer.cleared")
        await client.recv_until("error")  # item_not_found
        for _ in range(4):
            await client.recv_until("error")

        # Responses of every kind and final status.
        for name in ("text", "audio", "calls", "failed", "incomplete"):
            await _response(client, metadata={"script": name})
        await _response(client, conversation="none", metadata={"script": "calls"})
        output = {"type": "function_call_output", "call_id": "call_1", "output": "{}"}
        await client.send({"type": "conversation.item.create", "item": output})
        added = "conversation.item.added" if dialect == "ga" else "conversation.item.created"
        item_id = (await client.recv_until(added))[-1]["item"]["id"]
        await client.send({"type": "conversation.item.delete", "item_id": item_id})
        await client.recv_until("conversation.item.deleted")

        # Rejections (new and legacy shape), cancels.
        server.behavior.auto_finish = False
        await client.send({"type": "response.create"})
        await client.send({"type": "response.create", "event_id": "evt_conflict"})
        await client.recv_until("error")
        server.behavior.legacy_conflict_error = True
        server.behavior.null_error_event_id = True
        await client.send({"type": "response.create"})
        await client.recv_until("error")
        await client.send({"type": "response.cancel"})
        await client.recv_until("response.done")
        server.behavior.auto_finish = True

        # Cancels midway through audio and through a function call, and a VAD interruption.
        server.behavior.delta_delay = 0.1
        for name in ("long_audio", "long_call"):
            await client.send(
                {"type": "response.create", "response": {"metadata": {"script": name}}}
            )
            await client.recv_until(
                "response.content_part.added"
                if name == "long_audio"
                else "response.function_call_arguments.delta"
            )
            await client.send({"type": "response.cancel"})
            await client.recv_until("response.done")
        await client.send(
            {"type": "response.create", "response": {"metadata": {"script": "long_audio"}}}
        )
        await client.recv_until("response.created")
        await server.start_response(SCRIPTS["text"], interrupt=True)
        await client.recv_until("response.done")
        await client.recv_until("response.done")
        await _newer_scenarios(dialect, server, client)
        events = list(client.received)

    # Sessions that end: a refused key, an expired session.
    refused = Behavior(invalid_api_keys={"sk-bad-key-0000"})
    headers = [(b"authorization", b"Bearer sk-bad-key-0000")]
    async with (
        open_fake_server(dialect=dialect, behavior=refused) as server,
        open_raw_client(server.port, extra_headers=headers) as client,
    ):
        events.append(await client.expect("error"))
    async with (
        open_fake_server(dialect=dialect, behavior=Behavior(session_duration=60)) as server,
        open_raw_client(server.port) as client,
    ):
        await client.recv_until("session.created")
        events += await client.recv_until("error")
        events += client.received[:1]
    return events


async def _newer_scenarios(dialect: Dialect, server: FakeRealtimeServer, client: RawClient) -> None:
    """Items retrieved and truncated, refused session updates, voice and format, and the knobs
    for newer models: every event they cause is validated too."""
    ga = dialect == "ga"
    session_type = {"type": "realtime"} if ga else {}

    async def update(session: dict[str, Any]) -> dict[str, Any]:
        await client.send({"type": "session.update", "session": {**session_type, **session}})
        return (await client.recv_until("session.updated", "error"))[-1]

    # Refused updates.
    assert (await update({"foo": 1}))["error"]["code"] == "unknown_parameter"
    speed = {"audio": {"output": {"speed": 3}}} if ga else {"speed": 3}
    assert (await update(speed))["error"]["code"] == "decimal_above_max_value"
    voice = {"audio": {"output": {"voice": "hal"}}} if ga else {"voice": "hal"}
    assert (await update(voice))["error"]["code"] == "invalid_value"

    # Items: retrieve, truncate (and the refusals), with a response in another format and voice.
    server.behavior.script = None
    # (The voice can no longer change in the session: earlier responses spoke. A response
    # can still name its own.)
    partial = (
        {"output_modalities": ["audio"], "audio": {"output": {"format": {"type": "audio/pcmu"}}}}
        if ga
        else {"modalities": ["audio", "text"], "output_audio_format": "g711_ulaw"}
    )
    assert (await update(partial))["type"] == "session.updated"
    own_voice = {"audio": {"output": {"voice": "cedar"}}} if ga else {"voice": "sage"}
    done = (await _response(client, **own_voice))[-1]
    audio_item = done["response"]["output"][0]["id"]
    await client.send({"type": "conversation.item.retrieve", "item_id": audio_item})
    await client.recv_until("conversation.item.retrieved")
    truncate = {"type": "conversation.item.truncate", "item_id": audio_item, "content_index": 0}
    await client.send({**truncate, "audio_end_ms": 99_999})
    await client.recv_until("error")
    await client.send({**truncate, "audio_end_ms": 100})
    await client.recv_until("conversation.item.truncated")
    await client.send({**truncate, "item_id": "item_nope", "audio_end_ms": 0})
    await client.recv_until("error")
    # The voice is fixed once there is assistant audio.
    other = {"audio": {"output": {"voice": "ash"}}} if ga else {"voice": "ash"}
    assert (await update(other))["error"]["code"] == "cannot_update_voice"
    server.behavior.script = _pick_script

    # Newer models: several overlapping audio items, no response.created, interrupted
    # responses ending incomplete.
    server.behavior.audio_items = 2
    server.behavior.overlap_audio_items = True
    await _response(client, metadata={"script": "audio"})
    server.behavior.audio_items = 1
    server.behavior.omit_response_created = True
    await _response(client, metadata={"script": "text"})
    server.behavior.omit_response_created = False
    server.behavior.auto_finish = False
    server.behavior.interrupted_status = "incomplete"
    await client.send({"type": "response.create"})
    await client.recv_until("response.created")
    server.behavior.auto_finish = True
    await server.start_response(SCRIPTS["text"], interrupt=True)
    await client.recv_until("response.done")
    await client.recv_until("response.done")
    server.behavior.interrupted_status = "cancelled"

    # Interruptions: truncate and retrieve an item still streaming (at real-time pace), delete
    # one, an out-of-band response beside the in-band one through a voice-activity interruption.
    await _interruptions(dialect, server, client)

    # The idle timeout (GA): the server starts a response by itself.
    if ga:
        idle = {"audio": {"input": {"turn_detection": {"idle_timeout_ms": 5000}}}}
        assert (await update(idle))["type"] == "session.updated"
        await client.recv_until("input_audio_buffer.timeout_triggered")
        await client.recv_until("response.done")
        off = {"audio": {"input": {"turn_detection": None}}}
        assert (await update(off))["type"] == "session.updated"


async def _interruptions(dialect: Dialect, server: FakeRealtimeServer, client: RawClient) -> None:
    behavior = server.behavior
    behavior.audio_pace, behavior.audio_chunk_ms = 1.0, 40
    audio_delta = "response.output_audio.delta" if dialect == "ga" else "response.audio.delta"
    await client.send(
        {"type": "response.create", "response": {"metadata": {"script": "long_audio"}}}
    )
    item_id = (await client.recv_until(audio_delta))[-1]["item_id"]
    await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
    await client.recv_until("conversation.item.retrieved")
    truncate = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0}
    await client.send({**truncate, "audio_end_ms": 40})
    await client.recv_until("conversation.item.truncated")
    await client.send({"type": "conversation.item.delete", "item_id": item_id})
    await client.recv_until("conversation.item.deleted")
    await client.send({"type": "response.create", "response": {"conversation": "none"}})
    await client.recv_until("response.created")
    await server.start_response(SCRIPTS["text"], interrupt=True)
    await client.recv_until("response.done")  # the in-band one, interrupted
    await client.recv_until("response.done")  # the out-of-band one, finished
    await client.recv_until("response.done")  # the voice-activity one
    behavior.audio_pace = behavior.audio_chunk_ms = None
    # Bodies the service refuses.
    await client.send({"type": "response.create", "response": {"metadata": {"k": "v" * 513}}})
    await client.recv_until("error")
    many = {f"k{i}": "v" for i in range(17)}
    await client.send({"type": "response.create", "response": {"metadata": many}})
    await client.recv_until("error")
    await client.send({"type": "response.create", "response": {"bogus": 1}})
    await client.recv_until("error")


def validate(dialect: Dialect, event: dict[str, Any]) -> pydantic.BaseModel:
    model = ADAPTERS[dialect].validate_python(event)
    assert isinstance(model, pydantic.BaseModel)
    assert model.type == event["type"]  # type: ignore[attr-defined]
    assert type(model).__name__ != "BaseModel"
    extras = {(event["type"], path) for path in undeclared_fields(model)}
    assert extras <= ALLOWED_EXTRAS, (
        f"undeclared fields in {event['type']}: {extras - ALLOWED_EXTRAS}"
    )
    # Nothing coerced or dropped: the model gives back exactly what was sent.
    assert model.model_dump(mode="json", exclude_unset=True) == event
    return model


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_every_emitted_event_is_valid(
    dialect: Dialect, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(600):  # mock time: the session of the expiry scenario lasts 60 s
        events = await collect_events(dialect)
    for event in events:
        try:
            validate(dialect, event)
        except pydantic.ValidationError as exc:  # pragma: no cover - failure path
            pytest.fail(f"{event['type']} does not validate: {exc}\n{event}")

    types = {event["type"] for event in events}
    assert types == EXPECTED_TYPES[dialect]
    codes = {event["error"]["code"] for event in events if event["type"] == "error"}
    assert codes == EXPECTED_ERROR_CODES
    statuses = {
        event["response"]["status"]
        for event in events
        if event["type"] in ("response.created", "response.done")
    }
    assert statuses == EXPECTED_STATUSES
    reasons = {
        (event["response"]["status_details"] or {}).get("reason")
        for event in events
        if event["type"] == "response.done"
    }
    assert reasons == {None, "client_cancelled", "turn_detected", "max_output_tokens"}
    incomplete_items = [
        e["item"]["type"]
        for e in events
        if e["type"] == "response.output_item.done" and e["item"]["status"] == "incomplete"
    ]
    # Cancelled midway: a long call, long audio, the VAD interruption, the barge-in.
    assert sorted(incomplete_items) == ["function_call", "message", "message", "message"]


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_validation_rejects_wrong_shapes(dialect: Dialect) -> None:
    good = {
        "type": "response.cancel_not_a_thing",
        "event_id": "event_1",
    }
    with pytest.raises(pydantic.ValidationError):
        validate(dialect, good)
    # There is no response.cancelled event in the API.
    with pytest.raises(pydantic.ValidationError):
        validate(dialect, {"type": "response.cancelled", "event_id": "event_1", "response": {}})
    # A missing required field fails.
    with pytest.raises(pydantic.ValidationError):
        validate(dialect, {"type": "error", "event_id": "event_1", "error": {"type": "x"}})
    # An undeclared field fails the extras check.
    with pytest.raises(AssertionError, match="undeclared"):
        validate(dialect, {"type": "input_audio_buffer.cleared", "event_id": "e", "oops": 1})
    # A wrong literal fails.
    with pytest.raises(pydantic.ValidationError):
        validate(
            dialect,
            {"type": "response.done", "event_id": "e", "response": {"status": "finished"}},
        )
    # The other dialect's names are not accepted.
    other = "response.text.delta" if dialect == "ga" else "response.output_text.delta"
    delta = {
        "type": other,
        "event_id": "e",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "x",
    }
    with pytest.raises(pydantic.ValidationError):
        validate(dialect, delta)
