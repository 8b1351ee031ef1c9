"""The fake server checks ``response.create`` bodies as the service does, in agreement with the
``openai`` package's typed models of the client event."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from openai.types.beta.realtime import ResponseCreateEvent as BetaResponseCreate
from openai.types.realtime import ResponseCreateEvent as GAResponseCreate

from model_checks import undeclared_fields
from trio_realtime.testing import Behavior, open_fake_server
from trio_realtime.testing._ids import IdFactory
from trio_realtime.testing._model import ConnectionModel, Refuse, StartResponse
from trio_realtime.testing._raw_client import open_raw_client

Dialect = Literal["ga", "beta"]
MODELS: dict[str, type[pydantic.BaseModel]] = {"ga": GAResponseCreate, "beta": BetaResponseCreate}


def receive(dialect: Dialect, body: Any) -> Refuse | StartResponse:
    state = ConnectionModel.new(dialect, ids=IdFactory(), model="gpt-realtime", expires_at=0)
    (action,) = state.receive({"type": "response.create", "response": body}, Behavior())
    assert isinstance(action, Refuse | StartResponse)
    return action


def accepted_by_the_models(dialect: Dialect, body: Any) -> bool:
    """The typed model validates the event and declares every field of it."""
    try:
        event = MODELS[dialect].model_validate({"type": "response.create", "response": body})
    except pydantic.ValidationError:
        return False
    return not undeclared_fields(event)


REFUSED: list[tuple[Dialect, dict[str, Any], str, str]] = [
    # (dialect, body, code, param)
    ("ga", {"instructions": 5}, "invalid_type", "response.instructions"),
    ("beta", {"instructions": 5}, "invalid_type", "response.instructions"),
    ("ga", {"bogus_field": 1}, "unknown_parameter", "response.bogus_field"),
    ("beta", {"bogus_field": 1}, "unknown_parameter", "response.bogus_field"),
    ("ga", {"modalities": ["text"]}, "unknown_parameter", "response.modalities"),
    ("beta", {"output_modalities": ["text"]}, "unknown_parameter", "response.output_modalities"),
    ("ga", {"output_modalities": ["video"]}, "invalid_value", "response.output_modalities[0]"),
    ("ga", {"output_modalities": "audio"}, "invalid_type", "response.output_modalities"),
    ("ga", {"max_output_tokens": "lots"}, "invalid_value", "response.max_output_tokens"),
    ("ga", {"max_output_tokens": 0}, "integer_below_min_value", "response.max_output_tokens"),
    (
        "beta",
        {"max_response_output_tokens": 1.5},
        "invalid_type",
        "response.max_response_output_tokens",
    ),
    ("ga", {"tool_choice": "sometimes"}, "invalid_value", "response.tool_choice"),
    ("ga", {"tools": {"type": "function"}}, "invalid_type", "response.tools"),
    ("ga", {"tools": ["lookup"]}, "invalid_type", "response.tools[0]"),
    ("ga", {"input": [5]}, "invalid_type", "response.input[0]"),
    ("ga", {"metadata": ["k", "v"]}, "invalid_type", "response.metadata"),
    ("ga", {"metadata": {"k": 1}}, "invalid_type", "response.metadata.k"),
    ("beta", {"metadata": {"k": True}}, "invalid_type", "response.metadata.k"),
    (
        "ga",
        {"audio": {"output": {"voice": "nobody"}}},
        "invalid_value",
        "response.audio.output.voice",
    ),
    (
        "ga",
        {"audio": {"output": {"format": {"type": "audio/mp3"}}}},
        "invalid_value",
        "response.audio.output.format.type",
    ),
    (
        "ga",
        {"audio": {"output": {"speed": 1.0}}},
        "unknown_parameter",
        "response.audio.output.speed",
    ),
    ("ga", {"audio": {"input": {}}}, "unknown_parameter", "response.audio.input"),
    ("ga", {"parallel_tool_calls": "maybe"}, "invalid_type", "response.parallel_tool_calls"),
    ("beta", {"output_audio_format": "mp3"}, "invalid_value", "response.output_audio_format"),
    ("beta", {"temperature": 2.0}, "decimal_above_max_value", "response.temperature"),
    ("beta", {"voice": 3}, "invalid_type", "response.voice"),
    ("ga", {"conversation": "somewhere"}, "invalid_value", "response.conversation"),
]


#: Where the typed models are looser than the service: no ranges, any string as conversation
#: or voice (for voices to come).
MODELS_ALLOW = {
    "response.conversation",
    "response.max_output_tokens",
    "response.temperature",
    "response.audio.output.voice",
}


@pytest.mark.parametrize(("dialect", "body", "code", "param"), REFUSED)
def test_bad_bodies_are_refused_with_the_service_codes(
    dialect: Dialect, body: dict[str, Any], code: str, param: str
) -> None:
    action = receive(dialect, body)
    assert isinstance(action, Refuse)
    assert (action.rejection.code, action.rejection.param) == (code, param)
    if code in ("invalid_type", "unknown_parameter"):
        assert f"'{param}'" in action.rejection.message
    if param not in MODELS_ALLOW:
        assert not accepted_by_the_models(dialect, body)


def test_metadata_limits() -> None:
    many = {f"k{i}": "v" for i in range(17)}
    action = receive("ga", {"metadata": many})
    assert isinstance(action, Refuse)
    assert action.rejection.code == "object_above_max_properties"
    assert "at most 16 properties, but got an object with 17" in action.rejection.message
    action = receive("ga", {"metadata": {"k": "v" * 513}})
    assert isinstance(action, Refuse)
    assert (action.rejection.code, action.rejection.param) == (
        "string_above_max_length",
        "response.metadata.k",
    )
    action = receive("beta", {"metadata": {"k" * 65: "v"}})
    assert isinstance(action, Refuse)
    assert action.rejection.code == "string_above_max_length"
    full = {f"k{i}": "v" * 512 for i in range(16)} | {"k" * 64: "v"}
    del full["k0"]
    assert isinstance(receive("ga", {"metadata": full}), StartResponse)


GA_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "instructions": st.text(max_size=8),
    "conversation": st.sampled_from(["auto", "none"]),
    "output_modalities": st.sampled_from([["text"], ["audio"]]),
    "max_output_tokens": st.one_of(st.just("inf"), st.integers(1, 4096)),
    "metadata": st.dictionaries(st.text(max_size=64), st.text(max_size=20), max_size=16),
    "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "name": "f"}]),
    "tools": st.just([{"type": "function", "name": "f", "parameters": {"type": "object"}}]),
    "input": st.just(
        [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]
    ),
    "parallel_tool_calls": st.booleans(),
    "audio": st.fixed_dictionaries(
        {},
        optional={
            "output": st.fixed_dictionaries(
                {},
                optional={
                    "voice": st.sampled_from(["alloy", "marin", {"id": "voice_1"}]),
                    "format": st.sampled_from(
                        [{"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcmu"}]
                    ),
                },
            )
        },
    ),
}
BETA_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "instructions": st.text(max_size=8),
    "conversation": st.sampled_from(["auto", "none"]),
    "modalities": st.sampled_from([["text"], ["audio", "text"]]),
    "max_response_output_tokens": st.one_of(st.just("inf"), st.integers(1, 4096)),
    "metadata": st.dictionaries(st.text(max_size=64), st.text(max_size=20), max_size=16),
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
    "tools": st.just([{"type": "function", "name": "f", "parameters": {"type": "object"}}]),
    "output_audio_format": st.sampled_from(["pcm16", "g711_ulaw", "g711_alaw"]),
    "temperature": st.floats(0.6, 1.2),
    "voice": st.sampled_from(["alloy", "verse"]),
}


@given(st.fixed_dictionaries({}, optional=GA_FIELDS))
def test_every_valid_ga_body_starts_a_response_and_fits_the_models(body: dict[str, Any]) -> None:
    assert accepted_by_the_models("ga", body)
    assert isinstance(receive("ga", body), StartResponse)


@given(st.fixed_dictionaries({}, optional=BETA_FIELDS))
def test_every_valid_beta_body_starts_a_response_and_fits_the_models(
    body: dict[str, Any],
) -> None:
    assert accepted_by_the_models("beta", body)
    assert isinstance(receive("beta", body), StartResponse)


def test_null_fields_are_left_to_the_session() -> None:
    assert isinstance(receive("ga", {"instructions": None, "metadata": None}), StartResponse)
    assert isinstance(receive("ga", None), StartResponse)


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_the_refusal_names_the_create_and_starts_nothing(dialect: Dialect) -> None:
    with trio.fail_after(10):
        async with open_fake_server(dialect=dialect) as server:
            async with open_raw_client(server.port) as client:
                await client.recv_until("session.created")
                await client.send(
                    {"type": "response.create", "event_id": "evt_bad", "response": {"bogus": 1}}
                )
                *_, error = await client.recv_until("error")
                assert error["error"]["code"] == "unknown_parameter"
                assert error["error"]["param"] == "response.bogus"
                assert error["error"]["event_id"] == "evt_bad"
                # The connection stays open and serves a good create next.
                await client.send({"type": "response.create", "event_id": "evt_good"})
                events = await client.recv_until("response.done")
                assert events[0]["type"] == "response.created"
            assert server.statistics().responses_created == 1
