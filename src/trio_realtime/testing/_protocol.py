"""The server side of the Realtime protocol as plain data: event builders and the state machine
that turns a Script into the stream of events of one response.

No sockets and no clock here. Events are dicts without ``event_id``; the connection adds it
when it sends them.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import attrs

from ._ids import IdFactory
from ._script import Script

Dialect = Literal["ga", "beta"]
Event = dict[str, Any]

#: The client event types the fake server understands.
CLIENT_EVENT_TYPES = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)


@attrs.frozen
class EventNames:
    """The names that differ between the dialects."""

    text_delta: str
    text_done: str
    audio_delta: str
    audio_done: str
    transcript_delta: str
    transcript_done: str
    text_content: str
    audio_content: str


EVENT_NAMES: Mapping[Dialect, EventNames] = {
    "ga": EventNames(
        text_delta="response.output_text.delta",
        text_done="response.output_text.done",
        audio_delta="response.output_audio.delta",
        audio_done="response.output_audio.done",
        transcript_delta="response.output_audio_transcript.delta",
        transcript_done="response.output_audio_transcript.done",
        text_content="output_text",
        audio_content="output_audio",
    ),
    "beta": EventNames(
        text_delta="response.text.delta",
        text_done="response.text.done",
        audio_delta="response.audio.delta",
        audio_done="response.audio.done",
        transcript_delta="response.audio_transcript.delta",
        transcript_done="response.audio_transcript.done",
        text_content="text",
        audio_content="audio",
    ),
}

CONFLICT_CODE = "conversation_already_has_active_response"
LEGACY_CONFLICT_MESSAGE = "Conversation already has an active response"
CANCEL_NOT_ACTIVE_CODE = "response_cancel_not_active"
CANCEL_NOT_ACTIVE_MESSAGE = "Cancellation failed: no active response found"
COMMIT_EMPTY_CODE = "input_audio_buffer_commit_empty"


# -- session -------------------------------------------------------------------------------


def session_object(
    dialect: Dialect, *, session_id: str, model: str, expires_at: int
) -> dict[str, Any]:
    """The default session of a new connection (text output, server VAD reported)."""
    if dialect == "ga":
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": model,
            "output_modalities": ["text"],
            "instructions": "",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "expires_at": expires_at,
            "include": None,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 200,
                        "idle_timeout_ms": None,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "voice": "alloy",
                    "speed": 1.0,
                },
            },
        }
    return {
        "id": session_id,
        "object": "realtime.session",
        "model": model,
        "expires_at": expires_at,
        "modalities": ["text"],
        "instructions": "",
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": None,
        "input_audio_noise_reduction": None,
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 200,
            "create_response": True,
            "interrupt_response": True,
        },
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "speed": 1.0,
        "tracing": None,
    }


_READ_ONLY_SESSION_KEYS = frozenset({"type", "object", "id", "expires_at", "model"})


def update_session(session: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Shallow-merge the writable keys of a ``session.update`` body into the session."""
    merged = dict(session)
    merged.update({k: v for k, v in update.items() if k not in _READ_ONLY_SESSION_KEYS})
    return merged


def session_modalities(dialect: Dialect, session: Mapping[str, Any]) -> tuple[str, ...]:
    value = session.get("output_modalities" if dialect == "ga" else "modalities")
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return ("text",)


# -- errors --------------------------------------------------------------------------------


def error_event(
    *,
    code: str | None,
    message: str,
    client_event_id: str | None,
    error_type: str = "invalid_request_error",
    param: str | None = None,
) -> Event:
    return {
        "type": "error",
        "error": {
            "type": error_type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        },
    }


def conflict_error(*, active_response_id: str, client_event_id: str | None, legacy: bool) -> Event:
    """The rejection of an in-band ``response.create`` while another one is active."""
    if legacy:
        return error_event(
            code=None, message=LEGACY_CONFLICT_MESSAGE, client_event_id=client_event_id
        )
    return error_event(
        code=CONFLICT_CODE,
        message=(
            "Conversation already has an active response in progress: "
            f"{active_response_id}. Wait until the response is finished before creating a new one."
        ),
        client_event_id=client_event_id,
    )


# -- conversation items --------------------------------------------------------------------


def client_item(item: Mapping[str, Any], item_id: str) -> dict[str, Any]:
    """A client-created item as the server reports it back (id, object, status filled in)."""
    result: dict[str, Any] = {"id": item_id, "object": "realtime.item"}
    result.update(item)
    result["id"] = item.get("id") or item_id
    result.setdefault("status", "completed")
    return result


def user_audio_item(item_id: str) -> dict[str, Any]:
    """The user message made from a committed input audio buffer."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": None}],
    }


def item_added_events(
    dialect: Dialect, item: Mapping[str, Any], previous_item_id: str | None, *, done: bool
) -> list[Event]:
    """A new conversation item: GA ``conversation.item.added`` (plus ``.done`` if ``done``),
    beta ``conversation.item.created``."""
    if dialect == "beta":
        return [
            {
                "type": "conversation.item.created",
                "previous_item_id": previous_item_id,
                "item": dict(item),
            }
        ]
    events: list[Event] = [
        {
            "type": "conversation.item.added",
            "previous_item_id": previous_item_id,
            "item": dict(item),
        }
    ]
    if done:
        events.append(item_done_event(item, previous_item_id))
    return events


def item_done_event(item: Mapping[str, Any], previous_item_id: str | None) -> Event:
    """GA only: ``conversation.item.done``."""
    return {
        "type": "conversation.item.done",
        "previous_item_id": previous_item_id,
        "item": dict(item),
    }


# -- responses -----------------------------------------------------------------------------


def status_details(
    status: str, *, reason: str | None = None, override: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The ``status_details`` the real server sends with a final status."""
    if override is not None:
        return dict(override)
    if status == "cancelled":
        return {"type": "cancelled", "reason": reason or "client_cancelled"}
    if status == "incomplete":
        return {"type": "incomplete", "reason": reason or "max_output_tokens"}
    if status == "failed":
        return {
            "type": "failed",
            "error": {
                "type": "server_error",
                "code": "server_error",
                "message": "The server had an error while processing your request.",
            },
        }
    return None


def response_object(
    dialect: Dialect,
    *,
    response_id: str,
    status: str,
    conversation_id: str | None,
    metadata: Mapping[str, Any] | None,
    modalities: list[str],
    output: list[dict[str, Any]] | None = None,
    details: Mapping[str, Any] | None = None,
    usage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": None if details is None else dict(details),
        "output": [] if output is None else output,
        "conversation_id": conversation_id,
        "max_output_tokens": "inf",
        "usage": None if usage is None else dict(usage),
        "metadata": None if metadata is None else dict(metadata),
    }
    if dialect == "ga":
        result["output_modalities"] = modalities
        result["audio"] = {
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}
        }
    else:
        result["modalities"] = modalities
        result["voice"] = "alloy"
        result["output_audio_format"] = "pcm16"
        result["temperature"] = 0.8
    return result


def usage_object(*, input_tokens: int, text_tokens: int, audio_tokens: int) -> dict[str, Any]:
    output_tokens = text_tokens + audio_tokens
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
    }


def rate_limits_event() -> Event:
    return {
        "type": "rate_limits.updated",
        "rate_limits": [
            {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
            {"name": "tokens", "limit": 40000, "remaining": 39000, "reset_seconds": 1.5},
        ],
    }


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@attrs.define(eq=False)
class ResponseStream:
    """The output events of one response, produced one at a time by ``events()``.

    The state (output items, what is open, what was streamed so far) always matches the events
    already produced, so ``interrupt()`` can close exactly what is open when a response is
    cancelled midway, as the real server does (``*.done`` events, items ``incomplete``).
    """

    dialect: Dialect
    response_id: str
    script: Script
    ids: IdFactory
    in_band: bool
    #: The id of the last item of the conversation (in-band only); updated as items are added.
    previous_item_id: str | None = None
    output: list[dict[str, Any]] = attrs.field(factory=list, init=False)
    new_item_ids: list[str] = attrs.field(factory=list, init=False)
    _item: dict[str, Any] | None = attrs.field(default=None, init=False)
    _item_previous: str | None = attrs.field(default=None, init=False)
    _part: dict[str, Any] | None = attrs.field(default=None, init=False)
    _text: str = attrs.field(default="", init=False)
    _audio_bytes: int = attrs.field(default=0, init=False)

    @property
    def names(self) -> EventNames:
        return EVENT_NAMES[self.dialect]

    @property
    def modalities(self) -> list[str]:
        return ["audio"] if self.script.audio is not None else ["text"]

    def usage(self) -> dict[str, Any]:
        text_tokens = sum(len(item.get("arguments", "")) for item in self.output) // 4
        text_tokens += len(self._streamed_text()) // 4
        return usage_object(
            input_tokens=10, text_tokens=text_tokens, audio_tokens=self._audio_bytes // 1200
        )

    def _streamed_text(self) -> str:
        total = ""
        for item in self.output:
            for content in item.get("content", ()):
                total += content.get("text") or content.get("transcript") or ""
        return total

    # -- producing events -------------------------------------------------------------

    def events(self) -> Iterator[tuple[Event, bool]]:
        """Yield ``(event, is_delta)`` pairs; the caller sends each before asking for the next."""
        script = self.script
        if script.audio is not None:
            yield from self._message_events(audio=script.audio)
        elif script.text is not None:
            yield from self._message_events(audio=None)
        for call in script.function_calls:
            yield from self._function_call_events(call.name, call.arguments, call.call_id)

    def _ref(self) -> dict[str, Any]:
        assert self._item is not None
        return {
            "response_id": self.response_id,
            "item_id": self._item["id"],
            "output_index": len(self.output) - 1,
        }

    def _open_item(self, item: dict[str, Any]) -> Iterator[tuple[Event, bool]]:
        self.output.append(item)
        self._item = item
        self._item_previous = self.previous_item_id
        if self.in_band:
            self.new_item_ids.append(item["id"])
            self.previous_item_id = item["id"]
        yield (
            {
                "type": "response.output_item.added",
                "response_id": self.response_id,
                "output_index": len(self.output) - 1,
                "item": {**item, "status": "in_progress"},
            },
            False,
        )
        if self.in_band:
            for event in item_added_events(
                self.dialect, {**item, "status": "in_progress"}, self._item_previous, done=False
            ):
                yield event, False

    def _message_events(self, *, audio: bytes | None) -> Iterator[tuple[Event, bool]]:
        names = self.names
        item = {
            "id": self.ids.new("item"),
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        yield from self._open_item(item)
        part_type = "audio" if audio is not None else "text"
        self._part = (
            {"type": part_type, "transcript": ""}
            if audio is not None
            else {"type": "text", "text": ""}
        )
        self._text = ""
        yield (
            {
                "type": "response.content_part.added",
                **self._ref(),
                "content_index": 0,
                "part": dict(self._part),
            },
            False,
        )
        script = self.script
        if audio is None:
            for chunk in _chunks(script.text or "", script.chunk_size):
                self._text += chunk
                yield (
                    {"type": names.text_delta, **self._ref(), "content_index": 0, "delta": chunk},
                    True,
                )
        else:
            transcript = script.transcript if script.transcript is not None else script.text or ""
            audio_chunks = [
                audio[i : i + script.audio_chunk_size]
                for i in range(0, len(audio), script.audio_chunk_size)
            ]
            text_chunks = _chunks(transcript, script.chunk_size)
            for index in range(max(len(audio_chunks), len(text_chunks))):
                if index < len(text_chunks):
                    self._text += text_chunks[index]
                    yield (
                        {
                            "type": names.transcript_delta,
                            **self._ref(),
                            "content_index": 0,
                            "delta": text_chunks[index],
                        },
                        True,
                    )
                if index < len(audio_chunks):
                    self._audio_bytes += len(audio_chunks[index])
                    yield (
                        {
                            "type": names.audio_delta,
                            **self._ref(),
                            "content_index": 0,
                            "delta": base64.b64encode(audio_chunks[index]).decode("ascii"),
                        },
                        True,
                    )
        for event in self._close_message("completed"):
            yield event, False

    def _close_message(self, item_status: str) -> list[Event]:
        names = self.names
        assert self._item is not None
        assert self._part is not None
        ref = {**self._ref(), "content_index": 0}
        events: list[Event]
        if self._part["type"] == "text":
            events = [{"type": names.text_done, **ref, "text": self._text}]
            part = {"type": "text", "text": self._text}
            content = {"type": names.text_content, "text": self._text}
        else:
            events = [
                {"type": names.audio_done, **ref},
                {"type": names.transcript_done, **ref, "transcript": self._text},
            ]
            part = {"type": "audio", "transcript": self._text}
            content = {"type": names.audio_content, "transcript": self._text}
        events.append({"type": "response.content_part.done", **ref, "part": part})
        self._part = None
        self._item["content"] = [content]
        events.extend(self._close_item(item_status))
        return events

    def _function_call_events(
        self, name: str, arguments: str, call_id: str | None
    ) -> Iterator[tuple[Event, bool]]:
        item = {
            "id": self.ids.new("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": name,
            "call_id": call_id or self.ids.new("call"),
            "arguments": "",
        }
        yield from self._open_item(item)
        for chunk in _chunks(arguments, self.script.chunk_size):
            item["arguments"] += chunk
            yield (
                {
                    "type": "response.function_call_arguments.delta",
                    **self._ref(),
                    "call_id": item["call_id"],
                    "delta": chunk,
                },
                True,
            )
        for event in self._close_call("completed"):
            yield event, False

    def _close_call(self, item_status: str) -> list[Event]:
        assert self._item is not None
        item = self._item
        done: Event = {
            "type": "response.function_call_arguments.done",
            **self._ref(),
            "call_id": item["call_id"],
            "arguments": item["arguments"],
        }
        if self.dialect == "ga":
            done["name"] = item["name"]
        return [done, *self._close_item(item_status)]

    def _close_item(self, item_status: str) -> list[Event]:
        assert self._item is not None
        item = self._item
        item["status"] = item_status
        events: list[Event] = [
            {
                "type": "response.output_item.done",
                "response_id": self.response_id,
                "output_index": len(self.output) - 1,
                "item": dict(item),
            }
        ]
        if self.in_band and self.dialect == "ga":
            events.append(item_done_event(item, self._item_previous))
        self._item = None
        return events

    def interrupt(self) -> list[Event]:
        """The events that close whatever is open, when the response stops early."""
        if self._item is None:
            return []
        if self._item["type"] == "function_call":
            return self._close_call("incomplete")
        if self._part is not None:
            return self._close_message("incomplete")
        return self._close_item("incomplete")
