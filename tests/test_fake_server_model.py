"""The fake server's rules (``testing/_model.py``), table by table, without sockets."""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_realtime.testing import Behavior, Script, default_script
from trio_realtime.testing._audio import G711_ALAW, G711_ULAW, PCM16, from_beta, from_ga
from trio_realtime.testing._ids import IdFactory
from trio_realtime.testing._model import (
    AUTH_CLOSE_CODE,
    CancelResponse,
    ClearOutputAudio,
    ConnectionModel,
    Conversation,
    HandshakeRefusal,
    Refuse,
    Rejection,
    ResponseSlots,
    Send,
    SessionRefusal,
    StartResponse,
    api_key_of,
    check_connect,
    expiry_error,
    expiry_message,
)
from trio_realtime.testing._protocol import ResponseStream


def new_model(dialect: Any = "ga") -> ConnectionModel:
    return ConnectionModel.new(dialect, ids=IdFactory(), model="gpt-realtime", expires_at=0)


# -- 1. connecting -----------------------------------------------------------------------------

BEARER = [(b"authorization", b"Bearer sk-good-key-1234")]
BAD_BEARER = [(b"Authorization", b"Bearer sk-revoked-9876")]
AZURE_KEY = [(b"api-key", b"azure-key")]


@pytest.mark.parametrize(
    ("path", "headers", "accepted", "invalid", "outcome"),
    [
        # Paths: the three the client library builds, query strings and all.
        ("/v1/realtime?model=gpt-realtime", [], None, (), None),
        ("/openai/v1/realtime?model=dep", [], None, (), None),
        ("/openai/realtime?api-version=2025-04-01-preview&deployment=d", [], None, (), None),
        ("/v1/realtime", BEARER, None, (), None),
        ("/v1/realtimex", [], None, (), 404),
        ("/", [], None, (), 404),
        ("/control", BEARER, None, (), 404),
        # Keys: none required by default; an invalid key is refused, whoever checks.
        ("/v1/realtime", BEARER, {"sk-good-key-1234"}, (), None),
        ("/v1/realtime", BAD_BEARER, None, {"sk-revoked-9876"}, "invalid_api_key"),
        ("/v1/realtime", BAD_BEARER, {"sk-good-key-1234"}, (), "invalid_api_key"),
        ("/v1/realtime", [], {"sk-good-key-1234"}, (), "missing"),
        ("/v1/realtime", [], None, {"sk-revoked-9876"}, None),
        # Azure refuses at the handshake.
        ("/openai/v1/realtime?model=d", AZURE_KEY, {"other"}, (), 401),
        ("/openai/realtime?api-version=x", AZURE_KEY, None, {"azure-key"}, 401),
        ("/openai/v1/realtime?model=d", AZURE_KEY, {"azure-key"}, (), None),
    ],
)
def test_check_connect(
    path: str,
    headers: list[tuple[bytes, bytes]],
    accepted: set[str] | None,
    invalid: tuple[str, ...] | set[str],
    outcome: Any,
) -> None:
    decision = check_connect(path, headers, accepted_api_keys=accepted, invalid_api_keys=invalid)
    if outcome is None:
        assert decision is None
    elif isinstance(outcome, int):
        assert isinstance(decision, HandshakeRefusal)
        assert decision.status == outcome
        assert "error" in json.loads(decision.body)
    else:
        assert isinstance(decision, SessionRefusal)
        assert decision.close_code == AUTH_CLOSE_CODE
        if outcome == "missing":
            assert decision.error.code is None
            assert decision.error.message == "Missing bearer or basic authentication in header"
        else:
            assert decision.error.code == "invalid_api_key"
            assert decision.close_reason == "invalid_request_error.invalid_api_key"
            # The service shows only the last four characters of a key.
            assert "revoked" not in decision.error.message
            assert "9876" in decision.error.message


def test_not_found_body_names_the_path() -> None:
    decision = check_connect("/v2/realtime?x=1", [], accepted_api_keys=None, invalid_api_keys=())
    assert isinstance(decision, HandshakeRefusal)
    assert json.loads(decision.body)["error"]["message"] == "Invalid URL (GET /v2/realtime)"


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ([], None),
        ([(b"authorization", b"Bearer abc")], "abc"),
        ([(b"AUTHORIZATION", b"bearer  abc ")], "abc"),
        ([(b"api-key", b"xyz")], "xyz"),
        ([(b"authorization", b"Basic abc")], None),
    ],
)
def test_api_key_of(headers: list[tuple[bytes, bytes]], key: str | None) -> None:
    assert api_key_of(headers) == key


def test_behavior_keeps_key_sets_as_frozensets() -> None:
    behavior = Behavior(accepted_api_keys=["a", "b"], invalid_api_keys=["c"])  # type: ignore[arg-type]
    assert behavior.accepted_api_keys == frozenset({"a", "b"})
    behavior.invalid_api_keys = {"d"}  # type: ignore[assignment]
    assert behavior.invalid_api_keys == frozenset({"d"})
    with pytest.raises(ValueError, match="interrupted_status"):
        Behavior(interrupted_status="finished")
    with pytest.raises(ValueError, match="audio_items"):
        Behavior(audio_items=0)


# -- 2. the session ----------------------------------------------------------------------------

GA_OK: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # (what, update, expected values at paths "a.b.c")
    (
        "a partial update keeps its siblings",
        {"type": "realtime", "audio": {"output": {"voice": "cedar"}}},
        {
            "audio.output.voice": "cedar",
            "audio.output.format": {"type": "audio/pcm", "rate": 24000},
            "audio.input.format": {"type": "audio/pcm", "rate": 24000},
            "audio.input.turn_detection.type": "server_vad",
        },
    ),
    (
        "output format replaced whole",
        {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}}}},
        {"audio.output.format": {"type": "audio/pcmu"}, "audio.output.voice": "alloy"},
    ),
    (
        "same turn detection type merges",
        {"type": "realtime", "audio": {"input": {"turn_detection": {"idle_timeout_ms": 6000}}}},
        {
            "audio.input.turn_detection.idle_timeout_ms": 6000,
            "audio.input.turn_detection.threshold": 0.5,
        },
    ),
    (
        "a new turn detection type starts from its defaults",
        {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}},
        {
            "audio.input.turn_detection": {
                "type": "semantic_vad",
                "eagerness": "auto",
                "create_response": True,
                "interrupt_response": True,
            }
        },
    ),
    (
        "null turns turn detection off",
        {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        {"audio.input.turn_detection": None, "audio.input.format.type": "audio/pcm"},
    ),
    (
        "noise reduction set, then fields kept",
        {"type": "realtime", "audio": {"input": {"noise_reduction": {"type": "near_field"}}}},
        {"audio.input.noise_reduction": {"type": "near_field"}},
    ),
    (
        "top-level fields",
        {
            "type": "realtime",
            "instructions": "Be brief.",
            "output_modalities": ["audio"],
            "max_output_tokens": 200,
            "tools": [{"type": "function", "name": "f"}],
        },
        {"instructions": "Be brief.", "output_modalities": ["audio"], "max_output_tokens": 200},
    ),
    (
        "the model is never changed",
        {"type": "realtime", "model": "gpt-realtime-2"},
        {"model": "gpt-realtime", "id": "sess_000000000000000000001", "object": "realtime.session"},
    ),
]


def at(value: Any, path: str) -> Any:
    for key in path.split("."):
        value = value[key]
    return value


@pytest.mark.parametrize(("what", "update", "expected"), GA_OK, ids=[c[0] for c in GA_OK])
def test_ga_session_update_merges(
    what: str, update: dict[str, Any], expected: dict[str, Any]
) -> None:
    state = new_model("ga")
    assert state.update_session(update) is None
    for path, value in expected.items():
        assert at(state.session.value, path) == value, path


GA_REFUSED: list[tuple[Any, str, str | None]] = [
    # (update, code, param)
    ({"instructions": "x"}, "missing_required_parameter", "session.type"),
    (None, "missing_required_parameter", "session"),
    ("text", "invalid_type", "session"),
    ({"type": "transcription"}, "invalid_value", "session.type"),
    ({"type": "realtime", "voice": "cedar"}, "unknown_parameter", "session.voice"),
    (
        {"type": "realtime", "audio": {"output": {"pitch": 2}}},
        "unknown_parameter",
        "session.audio.output.pitch",
    ),
    (
        {"type": "realtime", "audio": {"output": {"voice": "darth"}}},
        "invalid_value",
        "session.audio.output.voice",
    ),
    (
        {"type": "realtime", "audio": {"output": {"format": {"type": "audio/mp3"}}}},
        "invalid_value",
        "session.audio.output.format.type",
    ),
    (
        {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}},
        "invalid_value",
        "session.audio.output.format.rate",
    ),
    (
        {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu", "rate": 8000}}}},
        "unknown_parameter",
        "session.audio.output.format.rate",
    ),
    (
        {"type": "realtime", "audio": {"output": {"speed": 3}}},
        "decimal_above_max_value",
        "session.audio.output.speed",
    ),
    (
        {"type": "realtime", "audio": {"output": {"speed": 0.1}}},
        "decimal_below_min_value",
        "session.audio.output.speed",
    ),
    ({"type": "realtime", "instructions": 5}, "invalid_type", "session.instructions"),
    (
        {"type": "realtime", "output_modalities": ["video"]},
        "invalid_value",
        "session.output_modalities[0]",
    ),
    (
        {"type": "realtime", "max_output_tokens": 5000},
        "integer_above_max_value",
        "session.max_output_tokens",
    ),
    (
        {"type": "realtime", "max_output_tokens": "lots"},
        "invalid_value",
        "session.max_output_tokens",
    ),
    ({"type": "realtime", "audio": "loud"}, "invalid_type", "session.audio"),
    (
        {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "push_to_talk"}}}},
        "invalid_value",
        "session.audio.input.turn_detection.type",
    ),
    (
        {"type": "realtime", "audio": {"input": {"turn_detection": {"eagerness": "low"}}}},
        "unknown_parameter",
        "session.audio.input.turn_detection.eagerness",
    ),
    (
        {"type": "realtime", "audio": {"input": {"turn_detection": {"idle_timeout_ms": 10}}}},
        "integer_below_min_value",
        "session.audio.input.turn_detection.idle_timeout_ms",
    ),
]


@pytest.mark.parametrize(("update", "code", "param"), GA_REFUSED)
def test_ga_session_update_refused(update: Any, code: str, param: str | None) -> None:
    state = new_model("ga")
    before = json.dumps(state.session.value)
    rejection = state.update_session(update)
    assert isinstance(rejection, Rejection)
    assert (rejection.code, rejection.param) == (code, param)
    assert rejection.error_type == "invalid_request_error"
    assert rejection.message
    # Nothing changed, not even the part of the update that was valid.
    assert json.dumps(state.session.value) == before


def test_refused_update_changes_nothing_even_after_valid_fields() -> None:
    state = new_model("ga")
    update = {"type": "realtime", "instructions": "new", "audio": {"output": {"voice": "nope"}}}
    assert state.update_session(update) is not None
    assert state.session.value["instructions"] == ""


def test_error_messages_have_the_service_shapes() -> None:
    state = new_model("ga")
    unknown = state.update_session({"type": "realtime", "foo": 1})
    assert unknown == Rejection(
        "unknown_parameter", "Unknown parameter: 'session.foo'.", "session.foo"
    )
    invalid = state.update_session({"type": "realtime", "audio": {"output": {"voice": "x"}}})
    assert invalid is not None
    assert invalid.message.startswith("Invalid value: 'x'. Supported values are: 'alloy', 'ash'")
    wrong = state.update_session({"type": "realtime", "instructions": 1})
    assert wrong is not None
    assert wrong.message == (
        "Invalid type for 'session.instructions': expected a string, but got an integer instead."
    )
    missing = state.update_session({})
    assert missing is not None
    assert missing.message == "Missing required parameter: 'session.type'."


BETA_CASES: list[tuple[dict[str, Any], str | None, dict[str, Any]]] = [
    (
        {"voice": "cedar", "output_audio_format": "g711_ulaw"},
        None,
        {"voice": "cedar", "output_audio_format": "g711_ulaw", "input_audio_format": "pcm16"},
    ),
    ({"instructions": "hi"}, None, {"instructions": "hi"}),  # no type needed in beta
    (
        {"turn_detection": {"silence_duration_ms": 500}},
        None,
        {"turn_detection.silence_duration_ms": 500, "turn_detection.type": "server_vad"},
    ),
    ({"type": "realtime"}, "unknown_parameter", {}),
    ({"output_audio_format": "mp3"}, "invalid_value", {}),
    ({"temperature": 2.0}, "decimal_above_max_value", {}),
    ({"turn_detection": {"idle_timeout_ms": 6000}}, "unknown_parameter", {}),
    ({"audio": {}}, "unknown_parameter", {}),
]


@pytest.mark.parametrize(("update", "code", "expected"), BETA_CASES)
def test_beta_session_update(
    update: dict[str, Any], code: str | None, expected: dict[str, Any]
) -> None:
    state = new_model("beta")
    rejection = state.update_session(update)
    assert (rejection.code if rejection else None) == code
    for path, value in expected.items():
        assert at(state.session.value, path) == value


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_voice_is_fixed_once_assistant_audio_exists(dialect: Any) -> None:
    state = new_model(dialect)
    ga = dialect == "ga"
    to_cedar = (
        {"type": "realtime", "audio": {"output": {"voice": "cedar"}}} if ga else {"voice": "cedar"}
    )
    to_ash = {"type": "realtime", "audio": {"output": {"voice": "ash"}}} if ga else {"voice": "ash"}
    assert state.update_session(to_cedar) is None
    state.conversation.add({"id": "item_a", "type": "message", "role": "assistant", "content": []})
    state.conversation.audio_ms["item_a"] = 100
    rejection = state.update_session(to_ash)
    assert rejection is not None
    assert rejection.code == "cannot_update_voice"
    assert state.session.voice == "cedar"
    # Other fields still change, and naming the same voice again is fine.
    assert state.update_session(to_cedar) is None


@pytest.mark.parametrize(
    ("dialect", "update", "body", "voice", "audio_format"),
    [
        ("ga", None, {}, "alloy", PCM16),
        (
            "ga",
            {
                "type": "realtime",
                "audio": {"output": {"voice": "cedar", "format": {"type": "audio/pcma"}}},
            },
            {},
            "cedar",
            G711_ALAW,
        ),
        (
            "ga",
            None,
            {"audio": {"output": {"voice": "marin", "format": {"type": "audio/pcmu"}}}},
            "marin",
            G711_ULAW,
        ),
        ("ga", None, {"audio": {"output": {"voice": {"id": "voice_1"}}}}, {"id": "voice_1"}, PCM16),
        ("beta", {"voice": "sage", "output_audio_format": "g711_ulaw"}, {}, "sage", G711_ULAW),
        ("beta", None, {"voice": "echo", "output_audio_format": "g711_alaw"}, "echo", G711_ALAW),
    ],
)
def test_response_audio_follows_session_then_request(
    dialect: Any, update: Any, body: dict[str, Any], voice: Any, audio_format: Any
) -> None:
    state = new_model(dialect)
    if update is not None:
        assert state.update_session(update) is None
    assert state.session.response_audio(body) == (voice, audio_format)


def test_idle_timeout_is_read_from_turn_detection() -> None:
    state = new_model("ga")
    assert state.session.idle_timeout_ms is None
    td = {"type": "realtime", "audio": {"input": {"turn_detection": {"idle_timeout_ms": 5000}}}}
    assert state.update_session(td) is None
    assert state.session.idle_timeout_ms == 5000
    off = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
    assert state.update_session(off) is None
    assert state.session.idle_timeout_ms is None


# -- 3. the conversation -----------------------------------------------------------------------


def conversation_with_audio() -> Conversation:
    conversation = Conversation()
    conversation.add(
        {
            "id": "item_user",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
        }
    )
    conversation.add(
        {
            "id": "item_audio",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_audio", "transcript": "hello there"}],
        }
    )
    conversation.audio_ms["item_audio"] = 1200
    conversation.add(
        {
            "id": "item_text",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "hello"}],
        }
    )
    return conversation


def test_items_keep_their_order_through_deletions() -> None:
    conversation = conversation_with_audio()
    assert conversation.last_id == "item_text"
    assert conversation.delete("item_audio") is None
    assert list(conversation.items) == ["item_user", "item_text"]
    assert not conversation.assistant_audio_present
    rejection = conversation.delete("item_audio")
    assert rejection is not None
    assert (rejection.code, rejection.param) == ("item_not_found", "item_id")
    assert conversation.add({"id": "item_new"}) == "item_text"


def test_retrieve_returns_a_copy() -> None:
    conversation = conversation_with_audio()
    item = conversation.retrieve("item_user")
    assert isinstance(item, dict)
    assert item["content"] == [{"type": "input_text", "text": "hi"}]
    item["content"].clear()
    again = conversation.retrieve("item_user")
    assert isinstance(again, dict)
    assert again["content"]
    missing = conversation.retrieve("item_nope")
    assert isinstance(missing, Rejection)
    assert missing.code == "item_not_found"
    assert missing.message == "Item with item_id not found: item_nope"


@pytest.mark.parametrize(
    ("item_id", "content_index", "audio_end_ms", "code", "param"),
    [
        ("item_audio", 0, 500, None, None),
        ("item_audio", 0, 0, None, None),
        ("item_audio", 0, 1200, None, None),
        ("item_nope", 0, 500, "item_not_found", "item_id"),
        ("item_user", 0, 500, "invalid_value", "item_id"),
        ("item_text", 0, 500, "invalid_value", "item_id"),
        ("item_audio", 1, 500, "invalid_value", "content_index"),
        ("item_audio", "0", 500, "invalid_type", "content_index"),
        ("item_audio", 0, 1201, "invalid_value", "audio_end_ms"),
        ("item_audio", 0, -1, "invalid_value", "audio_end_ms"),
        ("item_audio", 0, 1.5, "invalid_type", "audio_end_ms"),
    ],
)
def test_truncate(
    item_id: str, content_index: Any, audio_end_ms: Any, code: str | None, param: str | None
) -> None:
    conversation = conversation_with_audio()
    rejection = conversation.truncate(item_id, content_index, audio_end_ms)
    if code is None:
        assert rejection is None
        assert conversation.audio_ms["item_audio"] == audio_end_ms
        assert conversation.items["item_audio"]["content"][0]["transcript"] == ""
    else:
        assert rejection is not None
        assert (rejection.code, rejection.param) == (code, param)
        assert conversation.audio_ms["item_audio"] == 1200
        assert conversation.items["item_audio"]["content"][0]["transcript"] == "hello there"


def test_truncate_past_the_end_says_how_long_the_audio_is() -> None:
    rejection = conversation_with_audio().truncate("item_audio", 0, 5000)
    assert rejection is not None
    assert rejection.message == "Audio content of 1200ms is already shorter than 5000ms"


def kinds(actions: list[Any]) -> list[str]:
    """What each action is: the type of a sent event, the code of a refusal, or the class."""
    named = []
    for action in actions:
        if isinstance(action, Send):
            named.append(action.event["type"])
        elif isinstance(action, Refuse):
            named.append(f"refuse:{action.rejection.code}")
        else:
            named.append(type(action).__name__)
    return named


def test_audio_buffer() -> None:
    state = new_model()
    behavior = Behavior()
    commit = {"type": "input_audio_buffer.commit"}
    assert kinds(state.receive(commit, behavior)) == ["refuse:input_audio_buffer_commit_empty"]
    audio = base64.b64encode(bytes(4800)).decode()
    assert state.receive({"type": "input_audio_buffer.append", "audio": audio}, behavior) == []
    assert kinds(state.receive(commit, behavior)) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert kinds(state.receive(commit, behavior))[0].startswith("refuse:")
    state.receive({"type": "input_audio_buffer.append", "audio": audio}, behavior)
    cleared = state.receive({"type": "input_audio_buffer.clear"}, behavior)
    assert kinds(cleared) == ["input_audio_buffer.cleared"]
    assert kinds(state.receive(commit, behavior))[0].startswith("refuse:")


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_receive_items(dialect: Any) -> None:
    state = new_model(dialect)
    behavior = Behavior()
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
    (added, *_) = state.receive({"type": "conversation.item.create", "item": item}, behavior)
    assert isinstance(added, Send)
    item_id = added.event["item"]["id"]
    assert item_id.startswith("item_")
    retrieved = state.receive({"type": "conversation.item.retrieve", "item_id": item_id}, behavior)
    assert kinds(retrieved) == ["conversation.item.retrieved"]
    deleted = state.receive({"type": "conversation.item.delete", "item_id": item_id}, behavior)
    assert deleted == [Send({"type": "conversation.item.deleted", "item_id": item_id})]
    again = state.receive({"type": "conversation.item.delete", "item_id": item_id}, behavior)
    assert kinds(again) == ["refuse:item_not_found"]
    assert kinds(state.receive({"type": "no.such.event"}, behavior)) == ["refuse:invalid_event"]
    # output_audio_buffer.clear is WebRTC/SIP only: refused on a WebSocket session, a clear of
    # the played audio on a call's session (rule 7).
    clear = {"type": "output_audio_buffer.clear"}
    assert kinds(state.receive(clear, behavior)) == ["refuse:invalid_value"]
    state.plays_output_audio = True
    assert state.receive(clear, behavior) == [ClearOutputAudio()]


# -- 4. responses ------------------------------------------------------------------------------


def test_one_in_band_response_at_a_time() -> None:
    slots = ResponseSlots()
    assert slots.request(in_band=True) is None
    slots.begin("resp_1", in_band=True)
    rejection = slots.request(in_band=True)
    assert rejection is not None
    assert rejection.code == "conversation_already_has_active_response"
    assert "resp_1" in rejection.message
    legacy = slots.request(in_band=True, legacy_error=True)
    assert legacy == Rejection(None, "Conversation already has an active response")
    # Out-of-band responses do not take the conversation.
    assert slots.request(in_band=False) is None
    slots.begin("resp_2", in_band=False)
    slots.begin("resp_3", in_band=False)
    assert slots.active == 3
    slots.finish("resp_1")
    assert slots.request(in_band=True) is None
    with pytest.raises(AssertionError):
        slots.begin("resp_4", in_band=True)
        slots.begin("resp_5", in_band=True)


@pytest.mark.parametrize(
    ("created", "cancelling", "asked", "target"),
    [
        ({"resp_in"}, set(), None, "resp_in"),
        ({"resp_in"}, set(), "", "resp_in"),
        (set(), set(), None, None),  # not created yet: nothing to cancel
        ({"resp_in"}, {"resp_in"}, None, None),  # already being cancelled
        ({"resp_in", "resp_oob"}, set(), "resp_oob", "resp_oob"),
        ({"resp_in", "resp_oob"}, set(), "resp_unknown", None),
        ({"resp_oob"}, set(), None, None),  # without an id, only the in-band one
        ({"resp_in"}, set(), 42, None),
    ],
)
def test_cancel_target(created: set[str], cancelling: set[str], asked: Any, target: Any) -> None:
    slots = ResponseSlots()
    slots.begin("resp_in", in_band=True)
    slots.begin("resp_oob", in_band=False)
    for rid in created:
        slots.mark_created(rid)
    for rid in cancelling:
        slots.mark_cancelling(rid)
    found = slots.cancel_target(asked)
    if target is None:
        assert isinstance(found, Rejection)
        assert found.code == "response_cancel_not_active"
        assert found.message == "Cancellation failed: no active response found"
    else:
        assert found == target


def test_finished_response_cannot_be_cancelled() -> None:
    slots = ResponseSlots()
    slots.begin("resp_1", in_band=True)
    slots.mark_created("resp_1")
    slots.finish("resp_1")
    assert isinstance(slots.cancel_target("resp_1"), Rejection)
    assert slots.active == 0


# -- 5. expiry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "minutes"), [(3600, "60"), (1800, "30"), (900, "15"), (30, "0.5")]
)
def test_expiry_message(seconds: float, minutes: str) -> None:
    assert expiry_message(seconds) == f"Your session hit the maximum duration of {minutes} minutes."
    error = expiry_error(seconds).event(None)
    assert error["error"]["code"] == "session_expired"
    assert error["error"]["event_id"] is None


# -- audio formats and the response stream -----------------------------------------------------


@pytest.mark.parametrize(
    ("audio_format", "ga", "beta", "silence"),
    [
        (PCM16, {"type": "audio/pcm", "rate": 24000}, "pcm16", 0x00),
        (G711_ULAW, {"type": "audio/pcmu"}, "g711_ulaw", 0xFF),
        (G711_ALAW, {"type": "audio/pcma"}, "g711_alaw", 0xD5),
    ],
)
def test_audio_formats(audio_format: Any, ga: dict[str, Any], beta: str, silence: int) -> None:
    assert audio_format.ga() == ga
    assert from_ga(ga) is audio_format
    assert from_beta(beta) is audio_format
    assert audio_format.silence_of(10) == bytes([silence]) * (10 * audio_format.bytes_per_ms)
    assert audio_format.duration_ms(audio_format.bytes_per_ms * 250) == 250


def test_the_fake_servers_formats_are_the_librarys() -> None:
    """One definition of the three formats: the fake server's are the library's (names in both
    dialects, bytes a millisecond) with the byte of silence added, and what the fake server
    names, the library reads back as the same format."""
    from trio_realtime import _audio as library
    from trio_realtime.testing import _audio as fake

    for ours, theirs in zip(fake.FORMATS, library.FORMATS, strict=True):
        assert isinstance(ours, library.AudioFormat)
        assert attrs.asdict(ours, filter=lambda a, v: a.name != "silence") == attrs.asdict(theirs)
        assert library.format_of_session({"audio": {"output": {"format": ours.ga()}}}) is theirs
        assert library.format_of_response({"output_audio_format": ours.beta_name}) is theirs


def test_default_script_speaks_in_the_session_format() -> None:
    body = {"instructions": "Say exactly: four"}
    pcm = default_script(body, ("audio",))
    ulaw = default_script(body, ("audio",), audio_format=G711_ULAW)
    assert pcm.audio == bytes(4 * 10 * 48)
    assert ulaw.audio == b"\xff" * (4 * 10 * 8)
    assert ulaw.transcript == "four"
    assert default_script(body, ("text",), audio_format=G711_ULAW).audio is None


def stream(script: Script, **kw: Any) -> ResponseStream:
    return ResponseStream(
        dialect="ga", response_id="resp_1", script=script, ids=IdFactory(), in_band=True, **kw
    )


def test_several_audio_items_in_one_response() -> None:
    script = Script(text=None, audio=bytes(9600), transcript="one two three four")
    response = stream(script, audio_items=2)
    types = [event["type"] for event, _ in response.events()]
    assert types.count("response.output_item.added") == 2
    assert types.count("response.output_audio.done") == 2
    first_done = types.index("response.output_item.done")
    second_added = [i for i, t in enumerate(types) if t == "response.output_item.added"][1]
    assert first_done < second_added  # without overlap, one after the other
    assert [item["status"] for item in response.output] == ["completed", "completed"]
    transcripts = [item["content"][0]["transcript"] for item in response.output]
    assert "".join(transcripts) == "one two three four"
    assert sorted(response.audio_ms.values()) == [100, 100]
    assert [item["id"] for item in response.new_items] == [item["id"] for item in response.output]


def test_overlapping_audio_items() -> None:
    script = Script(text=None, audio=bytes(19200), transcript="a" * 32, audio_chunk_size=2400)
    response = stream(script, audio_items=2, overlap_audio_items=True)
    events = [event for event, _ in response.events()]
    first, second = (item["id"] for item in response.output)
    position = {
        (e["type"], e.get("item_id") or e.get("item", {}).get("id")): i
        for i, e in reversed(list(enumerate(events)))
    }
    # The second item's first audio delta comes before the first item's audio done.
    assert (
        position[("response.output_audio.delta", second)]
        < position[("response.output_audio.done", first)]
    )
    assert (
        position[("response.output_item.done", first)]
        < position[("response.output_item.done", second)]
    )
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.done"] == [0, 1]


def test_interrupting_overlapping_items_closes_both() -> None:
    script = Script(text=None, audio=bytes(19200), transcript="a" * 32, audio_chunk_size=2400)
    response = stream(script, audio_items=2, overlap_audio_items=True)
    events = response.events()
    seen: list[str] = []
    for event, _ in events:
        seen.append(event["type"])
        if seen.count("response.output_item.added") == 2 and event["type"].endswith("audio.delta"):
            break
    closing = [event["type"] for event in response.interrupt()]
    assert closing.count("response.output_item.done") == 2
    assert [item["status"] for item in response.output] == ["incomplete", "incomplete"]
    assert response.interrupt() == []


@pytest.mark.parametrize(
    ("previous", "order", "reported", "code"),
    [
        (None, ["item_user", "item_audio", "item_text", "item_new"], "item_text", None),
        ("root", ["item_new", "item_user", "item_audio", "item_text"], None, None),
        ("item_user", ["item_user", "item_new", "item_audio", "item_text"], "item_user", None),
        ("item_text", ["item_user", "item_audio", "item_text", "item_new"], "item_text", None),
        ("item_gone", ["item_user", "item_audio", "item_text"], None, "item_not_found"),
    ],
)
def test_client_items_go_after_their_previous_item(
    previous: str | None, order: list[str], reported: str | None, code: str | None
) -> None:
    state = new_model()
    state.conversation = conversation_with_audio()
    item = {"id": "item_new", "type": "message", "role": "user", "content": []}
    event = {"type": "conversation.item.create", "item": item, "previous_item_id": previous}
    actions = state.receive(event, Behavior())
    assert list(state.conversation.items) == order
    if code is not None:
        (refusal,) = actions
        assert isinstance(refusal, Refuse)
        assert (refusal.rejection.code, refusal.rejection.param) == (code, "previous_item_id")
        return
    added = actions[0]
    assert isinstance(added, Send)
    assert added.event["previous_item_id"] == reported


def test_client_item_ids_are_unique() -> None:
    state = new_model()
    state.conversation = conversation_with_audio()
    create = {"type": "conversation.item.create", "item": {"type": "message", "id": "item_user"}}
    (refusal,) = state.receive(create, Behavior())
    assert isinstance(refusal, Refuse)
    assert (refusal.rejection.code, refusal.rejection.param) == ("invalid_value", "item.id")
    missing = state.receive({"type": "conversation.item.create", "item": {}}, Behavior())
    assert kinds(missing) == ["refuse:missing_required_parameter"]


def test_receive_responses() -> None:
    state = new_model()
    behavior = Behavior()
    (start,) = state.receive(
        {"type": "response.create", "response": {"metadata": {"k": "v"}}}, behavior
    )
    assert isinstance(start, StartResponse)
    assert (start.in_band, start.metadata) == (True, {"k": "v"})
    (conflict,) = state.receive({"type": "response.create"}, behavior)
    assert isinstance(conflict, Refuse)
    assert conflict.conflict
    assert start.response_id in conflict.rejection.message
    behavior.legacy_conflict_error = True
    (legacy,) = state.receive({"type": "response.create"}, behavior)
    assert isinstance(legacy, Refuse)
    assert legacy.rejection.code is None
    behavior.legacy_conflict_error = False
    oob = state.receive({"type": "response.create", "response": {"conversation": "none"}}, behavior)
    assert kinds(oob) == ["StartResponse"]
    bad = state.receive({"type": "response.create", "response": "x"}, behavior)
    assert kinds(bad) == ["refuse:invalid_type"]
    # A cancel finds the response only once it was created.
    cancel = {"type": "response.cancel"}
    assert kinds(state.receive(cancel, behavior)) == ["refuse:response_cancel_not_active"]
    state.slots.mark_created(start.response_id)
    behavior.ignore_cancel = True
    assert state.receive(cancel, behavior) == []
    behavior.ignore_cancel = False
    assert state.receive(cancel, behavior) == [
        CancelResponse(start.response_id, "client_cancelled")
    ]
    # Cancel is asynchronous: the response keeps the conversation until it is done.
    assert kinds(state.receive(cancel, behavior)) == ["refuse:response_cancel_not_active"]
    assert kinds(state.receive({"type": "response.create"}, behavior)) == [
        "refuse:conversation_already_has_active_response"
    ]
    state.slots.finish(start.response_id)
    assert kinds(state.receive({"type": "response.create"}, behavior)) == ["StartResponse"]


def test_server_started_responses_and_interruptions() -> None:
    state = new_model()
    assert state.interrupt() is None
    response_id = state.start_server_response()
    assert state.slots.in_band == response_id
    assert state.interrupt() == CancelResponse(response_id, "turn_detected")
    assert state.interrupt() is None  # already being cancelled
    events = state.commit_user_audio("item_vad")
    assert [e["type"] for e in events] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert state.conversation.last_id == "item_vad"


# -- properties --------------------------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.booleans()),
        st.tuples(st.just("created"), st.integers(0, 5)),
        st.tuples(st.just("cancel"), st.one_of(st.none(), st.integers(0, 5))),
        st.tuples(st.just("finish"), st.integers(0, 5)),
        st.tuples(st.just("interrupt"), st.none()),
    ),
    max_size=40,
)


@given(OPS)
def test_the_one_active_rule_holds_whatever_the_clients_do(ops: list[tuple[str, Any]]) -> None:
    state = new_model()
    behavior = Behavior()
    started: list[str] = []  # every response ever started, in order
    done: set[str] = set()
    for op, arg in ops:
        active = [rid for rid in started if rid not in done]
        if op == "create":
            body = {} if arg else {"conversation": "none"}
            was_free = state.slots.in_band is None
            (action,) = state.receive({"type": "response.create", "response": body}, behavior)
            if isinstance(action, StartResponse):
                assert not action.in_band or was_free
                started.append(action.response_id)
            else:
                assert isinstance(action, Refuse)
                assert action.conflict
                assert arg
                assert not was_free
        elif op == "created" and active:
            state.slots.mark_created(active[arg % len(active)])
        elif op == "cancel":
            target = None if arg is None or not started else started[arg % len(started)]
            before = set(state.slots.cancelling)
            actions = state.receive({"type": "response.cancel", "response_id": target}, behavior)
            for action in actions:
                if isinstance(action, CancelResponse):
                    assert action.response_id in state.slots.created
                    assert action.response_id not in before
                    assert action.response_id not in done
        elif op == "finish" and active:
            finished = active[arg % len(active)]
            state.slots.finish(finished)
            done.add(finished)
        elif op == "interrupt":
            cancel = state.interrupt()
            assert cancel is None or cancel.response_id == state.slots.in_band
        in_band_active = [rid for rid in started if rid not in done and rid == state.slots.in_band]
        assert len(in_band_active) <= 1
        assert state.slots.active == len([rid for rid in started if rid not in done])


LEAVES: dict[str, st.SearchStrategy[Any]] = {
    "instructions": st.text(max_size=5),
    "audio.output.voice": st.sampled_from(["alloy", "cedar", "marin"]),
    "audio.output.speed": st.floats(0.25, 1.5),
    "audio.output.format": st.sampled_from([{"type": "audio/pcmu"}, {"type": "audio/pcma"}]),
    "audio.input.noise_reduction": st.sampled_from([None, {"type": "far_field"}]),
    "audio.input.transcription": st.sampled_from([None, {"model": "whisper-1"}]),
    "audio.input.turn_detection.threshold": st.floats(0, 1),
    "audio.input.turn_detection.create_response": st.booleans(),
    "max_output_tokens": st.one_of(st.just("inf"), st.integers(1, 4096)),
}


def nest(path: str, value: Any) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    return {head: nest(rest, value) if rest else value}


def merge_into(target: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict) and key != "format":
            merge_into(target[key], value)
        else:
            target[key] = value


@given(st.fixed_dictionaries({}, optional=LEAVES))
def test_a_valid_partial_update_changes_exactly_what_it_names(changes: dict[str, Any]) -> None:
    state = new_model("ga")
    update: dict[str, Any] = {"type": "realtime"}
    for path, value in changes.items():
        merge_into(update, nest(path, value))
    expected = json.loads(json.dumps(state.session.value))
    merge_into(expected, update)
    assert state.update_session(update) is None
    assert state.session.value == expected
