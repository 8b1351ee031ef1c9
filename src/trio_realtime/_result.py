"""ResponseResult: how a response ended, as the application reads it.

Besides the raw ``response`` object of ``response.done``, a result reads the two things an
application looks for in its ``output`` items, in either protocol dialect:

- its text: ``output_text`` (GA) / ``text`` (beta) content parts, or for audio the transcript of
  ``output_audio`` (GA) / ``audio`` (beta) parts;
- its function calls (``function_call`` items), as typed :class:`FunctionCallItem` values.

Malformed or missing parts are skipped, never raised: a result is read after the fact, and the
server is the authority on what it said.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["FunctionCallItem", "ResponseResult", "function_calls_of", "output_items_of"]

#: Content part types that carry text under ``text``, and those that carry a ``transcript``.
_TEXT_PARTS = frozenset({"output_text", "text"})
_AUDIO_PARTS = frozenset({"output_audio", "audio"})


@attrs.frozen
class FunctionCallItem:
    """One ``function_call`` item of a response: the model asks the application to run a tool.

    Answer it with ``session.send_function_result(call.call_id, output)``.
    """

    call_id: str
    name: str
    #: The arguments as the model wrote them: a JSON string (not checked here).
    arguments: str = attrs.field(repr=False)

    def parse_arguments(self) -> dict[str, Any]:
        """The arguments decoded: a dict. An empty string (a call without arguments) is ``{}``.

        Raises ``ValueError`` when they are not valid JSON or not a JSON object (the model can
        write either).
        """
        if not self.arguments.strip():
            return {}
        try:
            value = json.loads(self.arguments)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            raise ValueError(f"arguments of {self.name!r} are not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ValueError(
                f"arguments of {self.name!r} are not a JSON object: {type(value).__name__}"
            )
        return value


def output_items_of(response: Mapping[str, Any] | None) -> tuple[Mapping[str, Any], ...]:
    """The ``output`` items of a ``response`` object (those that are JSON objects)."""
    output = response.get("output") if response is not None else None
    if not isinstance(output, list):
        return ()
    return tuple(item for item in output if isinstance(item, Mapping))


def function_calls_of(response: Mapping[str, Any] | None) -> tuple[FunctionCallItem, ...]:
    """The function calls in a ``response`` object's output, in order.

    Items without a string ``call_id`` or ``name`` are skipped; missing ``arguments`` read as
    ``""``.
    """
    calls = []
    for item in output_items_of(response):
        if item.get("type") != "function_call":
            continue
        call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
        if isinstance(call_id, str) and isinstance(name, str):
            calls.append(
                FunctionCallItem(call_id, name, arguments if isinstance(arguments, str) else "")
            )
    return tuple(calls)


def _message_text(item: Mapping[str, Any]) -> str:
    content = item.get("content")
    if not isinstance(content, list):
        return ""
    pieces = []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        value = (
            part.get("text")
            if kind in _TEXT_PARTS
            else part.get("transcript")
            if kind in _AUDIO_PARTS
            else None
        )
        if isinstance(value, str):
            pieces.append(value)
    return "".join(pieces)


@attrs.frozen
class ResponseResult:
    """How a response ended."""

    #: ``completed``, ``cancelled``, ``failed`` or ``incomplete``.
    status: str
    #: The ``response`` object of ``response.done``; None when cancelled before it was sent.
    response: Mapping[str, Any] | None = attrs.field(repr=False)

    @property
    def response_id(self) -> str | None:
        rid = self.response.get("id") if self.response is not None else None
        return rid if isinstance(rid, str) else None

    @property
    def output(self) -> tuple[Mapping[str, Any], ...]:
        """The response's output items (messages, function calls, ...); ``()`` when none."""
        return output_items_of(self.response)

    @property
    def text(self) -> str:
        """What the assistant said: the text of its messages, or for audio their transcript.

        The parts of one message are joined as they are; several messages are separated by a
        newline. ``""`` when the response said nothing (a tool-only or cancelled response, or
        audio without a transcript).
        """
        texts = [_message_text(item) for item in self.output if item.get("type") == "message"]
        return "\n".join(text for text in texts if text)

    @property
    def function_calls(self) -> tuple[FunctionCallItem, ...]:
        """The function calls the response made, in order; ``()`` when none."""
        return function_calls_of(self.response)
