"""The wire's JSON: values the wire cannot carry are refused at the call, naming their key path,
whichever codec runs; both codecs write the same JSON for what they accept; frames a parser
cannot take are malformed frames."""

from __future__ import annotations

import collections
import copy
import datetime
import decimal
import enum
import json
import math
import types
from collections.abc import Callable
from typing import Any

import pytest
import trio

from memory import connected
from trio_realtime import _codec
from trio_realtime._codec import MAX_DEPTH, MAX_FRAME_DEPTH, parse_frame, to_wire
from trio_realtime._events import MalformedFrame

CODECS = ("stdlib", "orjson")


def _codec_pair(name: str) -> tuple[Callable[[str], Any], Callable[[Any], str]]:
    if name == "orjson":
        pytest.importorskip("orjson")
        return _codec.json_codec(orjson_if_installed=True)
    return _codec.json_codec(orjson_if_installed=False)


@pytest.fixture(params=CODECS)
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with the library's codec set to the standard library's, then orjson's."""
    name: str = request.param
    loads, dumps = _codec_pair(name)
    monkeypatch.setattr(_codec, "_loads", loads)
    monkeypatch.setattr(_codec, "_dumps", dumps)
    return name


class Colour(enum.Enum):
    RED = 1


class Voice(str, enum.Enum):  # noqa: UP042 (str() of it is not its value)
    ALLOY = "alloy"


class Level(enum.IntEnum):
    HIGH = 3


class Seconds(float):
    pass


Pair = collections.namedtuple("Pair", "a b")


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def cycle() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


#: (value inside response['metadata']['at'], the error, words of its message)
REFUSED: list[tuple[Any, type[Exception], str]] = [
    (datetime.date(2026, 1, 2), TypeError, "date"),
    (datetime.datetime(2026, 1, 2, 3, 4), TypeError, "isoformat"),
    (float("nan"), ValueError, "nan"),
    (float("inf"), ValueError, "inf"),
    (-math.inf, ValueError, "inf"),
    (b"\x00\x01", TypeError, "base64"),
    ({1, 2}, TypeError, "set"),
    (decimal.Decimal("1.5"), TypeError, "Decimal"),
    (Colour.RED, TypeError, "Colour"),
    (object(), TypeError, "object"),
    (2**64, ValueError, "64-bit"),
    (-(2**63) - 1, ValueError, "64-bit"),
    ("caf\udce9", ValueError, "surrogate"),
    (nested(MAX_DEPTH), ValueError, "deeper"),
    (cycle(), ValueError, "cycle"),
]


@pytest.mark.parametrize(("value", "error", "words"), REFUSED)
def test_a_value_json_cannot_carry_is_refused_naming_its_key_path(
    value: Any, error: type[Exception], words: str
) -> None:
    body = {"instructions": "hi", "metadata": {"at": value}}
    with pytest.raises(error) as caught:
        to_wire(body, "response")
    message = str(caught.value)
    assert message.startswith("response['metadata']['at']"), message
    assert words.lower() in message.lower(), message
    assert "\n" not in message


def test_a_key_that_is_not_a_str_is_refused_naming_the_mapping() -> None:
    with pytest.raises(TypeError, match=r"^event\['session'\]\['tools'\]\[1\] has the key 7"):
        to_wire({"session": {"tools": [{"a": 1}, {7: "x"}]}}, "event")


def test_the_path_names_list_positions() -> None:
    with pytest.raises(ValueError, match=r"^response\['input'\]\[2\]\['n'\] is nan"):
        to_wire({"input": [1, 2, {"n": math.nan}]}, "response")


#: Values both codecs accept, with the plain JSON value each is written as.
ACCEPTED: list[tuple[Any, Any]] = [
    ({"a": 1, "b": [True, False, None], "c": "é ✓ \u2028 \x00"}, None),
    ({"n": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1]}, None),
    ({"f": [0.1, -0.0, 1e16, 1e300, 5e-324, 1.5, 12345.678]}, None),
    ({"t": (1, (2, 3))}, {"t": [1, [2, 3]]}),
    (
        {"voice": Voice.ALLOY, "level": Level.HIGH, "s": Seconds(1.5)},
        {"voice": "alloy", "level": 3, "s": 1.5},
    ),
    ({"pair": Pair(1, "x")}, {"pair": [1, "x"]}),
    ({"proxy": types.MappingProxyType({"k": "v"})}, {"proxy": {"k": "v"}}),
    ({"deep": nested(MAX_DEPTH - 1)}, None),
]


@pytest.mark.parametrize(("value", "plain"), ACCEPTED)
def test_both_codecs_write_the_same_json_for_what_they_accept(value: Any, plain: Any) -> None:
    pytest.importorskip("orjson")
    wire = to_wire(value, "response")
    assert wire == (value if plain is None else plain)
    texts = {name: _codec_pair(name)[1]({"type": "x", "response": wire}) for name in CODECS}
    assert texts["stdlib"] == texts["orjson"]
    assert json.loads(texts["stdlib"]) == {"type": "x", "response": wire}


def test_small_floats_are_the_same_number_in_both_codecs() -> None:
    pytest.importorskip("orjson")
    values = [1e-05, 1.5e-07, 9.9e-05, 1e-10, 1e-300]
    texts = [_codec_pair(name)[1](values) for name in CODECS]
    assert [json.loads(text) for text in texts] == [values, values]


def test_the_copy_is_made_of_plain_json_types_only() -> None:
    wire = to_wire({"voice": Voice.ALLOY, "t": (Level.HIGH,)}, "response")
    assert type(wire["voice"]) is str
    assert type(wire["t"]) is list
    assert type(wire["t"][0]) is int


# ---------------------------------------------------------------- at the session's calls


async def test_request_response_refuses_a_date_at_the_call_with_nothing_queued(codec: str) -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            with pytest.raises(TypeError, match=r"response\['metadata'\]\['at'\]"):
                session.request_response({"metadata": {"at": datetime.date.today()}})
            assert session.statistics().queue_depth == 0
            assert session.statistics().in_flight == 0
            ticket = session.request_response({"metadata": {"at": "2026-01-02"}})
            create = await peer.expect("response.create")
            assert create["response"]["metadata"]["at"] == "2026-01-02"
            await peer.complete(create, "resp_1")
            assert (await ticket.wait_done()).status == "completed"
            assert not session.closed


@pytest.mark.parametrize("bad", [math.nan, math.inf])
async def test_say_refuses_what_json_cannot_carry(codec: str, bad: float) -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            with pytest.raises(ValueError, match=r"response\['temperature'\]"):
                await session.say("hello", response={"temperature": bad})
            assert session.statistics().queue_depth == 0
            assert peer.unread() == []
            assert not session.closed


async def test_send_refuses_what_json_cannot_carry_before_anything_is_queued(codec: str) -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            bad = {"type": "conversation.item.create", "item": {"content": [{"at": {1, 2}}]}}
            with pytest.raises(TypeError, match=r"event\['item'\]\['content'\]\[0\]\['at'\]"):
                await session.send(bad)
            with pytest.raises(TypeError, match=r"event\['response'\]\['x'\]|response\['x'\]"):
                await session.send({"type": "response.create", "response": {"x": b"raw"}})
            # Nothing went out, and the session carries on.
            await session.send({"type": "input_audio_buffer.clear"})
            assert (await peer.receive())["type"] == "input_audio_buffer.clear"
            assert not session.closed


async def test_update_session_refuses_what_json_cannot_carry(codec: str) -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            with pytest.raises(ValueError, match=r"session\['temperature'\] is nan"):
                await session.update_session({"type": "realtime", "temperature": math.nan})
            assert peer.unread() == []
            assert not session.closed


async def test_send_function_result_refuses_a_bad_follow_up_body(codec: str) -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            when = datetime.datetime.now()
            with pytest.raises(TypeError, match=r"response\['metadata'\]\['when'\]"):
                await session.send_function_result(
                    "call_1", "{}", response={"metadata": {"when": when}}
                )
            # Neither the output nor a follow-up went out.
            assert peer.unread() == []
            assert session.statistics().queue_depth == 0
            assert not session.closed


# ---------------------------------------------------------------- frames nobody can parse


def deep_frame(levels: int = 1000) -> str:
    """A frame nested ``levels`` deep (about 2 KB for 1,000 levels: more than the standard
    library's parser takes within its recursion limit)."""
    return '{"type": "x", "v": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


def test_a_2kb_frame_1000_deep_is_a_malformed_frame_on_both_parsers(codec: str) -> None:
    frame = deep_frame(1000)
    assert 1900 < len(frame) < 2100
    with pytest.raises(MalformedFrame, match="nested"):
        parse_frame(frame)


@pytest.mark.parametrize("levels", [MAX_FRAME_DEPTH + 1, 1025, 100_000])
def test_a_frame_nested_past_the_limit_is_malformed_whichever_parser_runs(
    codec: str, levels: int
) -> None:
    with pytest.raises(MalformedFrame):
        parse_frame(deep_frame(levels))


def test_a_frame_at_the_limit_is_an_event_on_both_parsers(codec: str) -> None:
    event = parse_frame(deep_frame(MAX_FRAME_DEPTH))
    assert event["type"] == "x"
    copy.deepcopy(event)  # what downstream may do with it does not recurse too deep


async def test_a_deeply_nested_frame_is_skipped_and_counted(
    codec: str, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            ticket = session.request_response()
            create = await peer.expect("response.create")
            await peer.send_raw(deep_frame(1000))
            await peer.send_raw(deep_frame(100_000))
            await peer.complete(create, "resp_1")
            assert (await ticket.wait_done()).status == "completed"
            assert session.statistics().malformed_frames == 2
            assert "malformed" in caplog.text
            assert not session.closed
