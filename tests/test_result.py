"""ResponseResult's helpers: text, transcripts and function calls, in both dialects."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
import trio

from trio_realtime import FunctionCallItem, ResponseResult, open_session
from trio_realtime.testing import Behavior, FunctionCall, Script, open_fake_server


def message(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "content": list(parts)}


def result(*items: Any) -> ResponseResult:
    return ResponseResult("completed", {"id": "resp_1", "output": list(items)})


@pytest.mark.parametrize(
    ("items", "text"),
    [
        ([message({"type": "output_text", "text": "Hello"})], "Hello"),
        ([message({"type": "text", "text": "Hello"})], "Hello"),
        ([message({"type": "output_audio", "transcript": "Spoken"})], "Spoken"),
        ([message({"type": "audio", "transcript": "Spoken"})], "Spoken"),
        (
            [message({"type": "output_text", "text": "a"}, {"type": "output_text", "text": "b"})],
            "ab",
        ),
        (
            [
                message({"type": "output_audio", "transcript": "One."}),
                message({"type": "output_audio", "transcript": "Two."}),
            ],
            "One.\nTwo.",
        ),
        ([message({"type": "output_audio", "transcript": None})], ""),  # transcripts off
        ([message({"type": "input_text", "text": "not ours"})], ""),
        ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}], ""),
        ([message(), "junk", {"type": "message", "content": "junk"}, message("junk")], ""),
        ([], ""),
    ],
)
def test_text_of_every_part_shape(items: list[Any], text: str) -> None:
    assert result(*items).text == text


@pytest.mark.parametrize("response", [None, {}, {"output": None}, {"output": "junk"}])
def test_nothing_to_read_is_empty_not_an_error(response: dict[str, Any] | None) -> None:
    empty = ResponseResult("cancelled", response)
    assert empty.text == ""
    assert empty.function_calls == ()
    assert empty.output == ()


def test_function_calls_are_typed_and_in_order() -> None:
    calls = result(
        message({"type": "output_text", "text": "Let me check."}),
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"c": 1}'},
        {"type": "function_call", "call_id": "c2", "name": "time"},  # arguments missing
        {"type": "function_call", "call_id": None, "name": "broken", "arguments": "{}"},
    ).function_calls
    assert calls == (
        FunctionCallItem("c1", "weather", '{"c": 1}'),
        FunctionCallItem("c2", "time", ""),
    )
    assert calls[0].parse_arguments() == {"c": 1}
    assert calls[1].parse_arguments() == {}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [("{oops", "not valid JSON"), ("[1, 2]", "not a JSON object"), ("null", "not a JSON object")],
)
def test_parse_arguments_rejects_what_is_not_an_object(arguments: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FunctionCallItem("c", "f", arguments).parse_arguments()


@pytest.mark.parametrize("dialect", ["ga", "beta"])
@pytest.mark.parametrize("audio", [False, True])
async def test_helpers_read_the_fake_servers_real_shapes(
    dialect: Literal["ga", "beta"], audio: bool
) -> None:
    """The shapes above are the ones the server sends: text or transcript, then calls."""
    calls = (FunctionCall("lookup", '{"q": "trio"}', call_id="call_a"), FunctionCall("noop", "{}"))
    script = Script(
        text=None if audio else "Checking.",
        audio=bytes(4800) if audio else None,
        transcript="Checking." if audio else None,
        function_calls=calls,
    )
    with trio.fail_after(10):
        async with (
            open_fake_server(dialect=dialect, behavior=Behavior(script=lambda _: script)) as server,
            open_session(server.url) as session,
        ):
            done = await session.request_response().wait_done()
    assert done.text == "Checking."
    assert [(c.call_id, c.name) for c in done.function_calls[:1]] == [("call_a", "lookup")]
    assert [c.name for c in done.function_calls] == ["lookup", "noop"]
    assert done.function_calls[0].parse_arguments() == {"q": "trio"}
    assert json.loads(done.function_calls[1].arguments) == {}
    assert [item["type"] for item in done.output] == ["message", "function_call", "function_call"]
