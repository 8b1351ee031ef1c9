"""Choosing a transport, and the JSON parser: what does not depend on a live connection."""

from __future__ import annotations

import importlib.util
import json

import pytest
import trio

from trio_realtime import SessionConfig, open_session
from trio_realtime import _codec as events
from trio_realtime._codec import parse_frame
from trio_realtime._events import MalformedFrame

FRAMES = [
    '{"type": "response.output_text.delta", "response_id": "resp_1", "delta": "h\\u00e9"}',
    '{"type": "x", "n": 1.5e3, "big": 12345678901234, "neg": -7, "t": true, "z": null}',
    '{"type": "x", "nested": {"a": [1, {"b": "c"}]}, "dup": 1, "dup": 2}',
    '  {"type": "x"}  ',
    '{"type": "x", "audio": "' + "QUJD" * 2000 + '"}',
]
BAD_FRAMES = [
    "not json",
    '{"type": "x", "n": NaN}',
    '{"type": "x", "n": Infinity}',
    '{"type": "x"',
    "[1, 2]",
    '"text"',
    '{"type": 3}',
    '{"no": "type"}',
    '{"type": "x"} trailing',
]


@pytest.fixture(params=["stdlib", "orjson"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "orjson":
        orjson = pytest.importorskip("orjson")
        monkeypatch.setattr(events, "_loads", orjson.loads)
    else:
        monkeypatch.setattr(events, "_loads", events.json_codec(orjson_if_installed=False)[0])
    return str(request.param)


@pytest.mark.parametrize("frame", FRAMES)
def test_both_parsers_give_the_same_events(parser: str, frame: str) -> None:
    assert parse_frame(frame) == json.loads(frame)


@pytest.mark.parametrize("frame", BAD_FRAMES)
def test_both_parsers_refuse_what_is_not_a_json_object_event(parser: str, frame: str) -> None:
    with pytest.raises(MalformedFrame):
        parse_frame(frame)


def test_binary_frames_are_refused_whatever_the_parser() -> None:
    with pytest.raises(MalformedFrame, match="binary"):
        parse_frame(b'{"type": "x"}')


def test_the_parser_in_use_is_orjson_when_installed() -> None:
    if importlib.util.find_spec("orjson") is None:
        pytest.skip("orjson is not installed")
    import orjson

    assert events.json_codec()[0] is orjson.loads


async def test_a_transport_not_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "websockets" else real_find_spec(name)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    config = SessionConfig(transport="websockets")
    with trio.fail_after(5), pytest.raises(ImportError, match=r"trio-realtime\[fast\]"):
        async with open_session("ws://127.0.0.1:9/v1/realtime", config=config):
            pass  # pragma: no cover


def test_an_unknown_transport_is_refused_at_configuration() -> None:
    with pytest.raises(ValueError, match="transport"):
        SessionConfig(transport="aiohttp")  # type: ignore[arg-type]
