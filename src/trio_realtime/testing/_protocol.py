"""The server side of the Realtime protocol as plain data: event builders and the state machine
that turns a Script into the stream of events of one response.

No sockets and no clock here. Events are dicts without ``event_id``; the connection adds it
when it sends them. (Longer than the house's ~600 lines: the builder of every server event, in
both dialects, kept in one place so that each event's shape is written once.)
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from typing import Any, Literal, TypeVar

import attrs

from ._audio import PCM16, AudioFormat
from ._ids import IdFactory
from ._script import Script

Dialect = Literal["ga", "beta"]
Event = dict[str, Any]
_T = TypeVar("_T", str, bytes)

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


#: The GA session's default turn detection (server voice activity detection).
SERVER_VAD_GA: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 200,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}


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
                    "turn_detection": dict(SERVER_VAD_GA),
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
    voice: Any = "alloy",
    audio_format: AudioFormat = PCM16,
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
        # The response object names a custom voice ({"id": ...}) by its id.
        voice_name = voice.get("id") if isinstance(voice, Mapping) else voice
        result["audio"] = {"output": {"format": audio_format.ga(), "voice": voice_name}}
    else:
        result["modalities"] = modalities
        result["voice"] = voice
        result["output_audio_format"] = audio_format.beta_name
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
class _OpenItem:
    """An output item whose ``response.output_item.done`` is still to come."""

    item: dict[str, Any]
    output_index: int
    previous_item_id: str | None
    part: dict[str, Any] | None = None
    text: str = ""


@attrs.define(eq=False)
class ResponseStream:
    """The output events of one response, produced one at a time by ``events()``.

    The state (output items, what is open, what was streamed so far) always matches the events
    already produced, so ``interrupt()`` can close exactly what is open when a response is
    cancelled midway, as the real server does (``*.done`` events, items ``incomplete``).

    An audio message is split into ``audio_items`` items, as newer models do; with
    ``overlap_audio_items`` each next item opens and streams its first deltas before the
    previous one is closed. ``new_items`` collects in-band items as they open (the connection
    moves them into the conversation); ``audio_ms`` the audio length of each audio item, from
    its first audio delta on (the audio generated so far while it streams).

    A message holds its content part from ``response.content_part.added`` on (its events show
    the item as it was when they were made), so an item still streaming can be truncated.
    """

    dialect: Dialect
    response_id: str
    script: Script
    ids: IdFactory
    in_band: bool
    #: The id of the last item of the conversation (in-band only); updated as items are added.
    previous_item_id: str | None = None
    audio_format: AudioFormat = PCM16
    audio_items: int = 1
    overlap_audio_items: bool = False
    #: Bytes of audio per audio delta; None: the Script's ``audio_chunk_size``.
    audio_chunk_bytes: int | None = None
    output: list[dict[str, Any]] = attrs.field(factory=list, init=False)
    new_items: list[dict[str, Any]] = attrs.field(factory=list, init=False)
    audio_ms: dict[str, int] = attrs.field(factory=dict, init=False)
    _open: list[_OpenItem] = attrs.field(factory=list, init=False)
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
            input_tokens=10,
            text_tokens=text_tokens,
            audio_tokens=self.audio_format.duration_ms(self._audio_bytes) // 25,
        )

    def _streamed_text(self) -> str:
        total = ""
        for item in self.output:
            for content in item.get("content", ()):
                total += content.get("text") or content.get("transcript") or ""
        for state in self._open:
            total += state.text
        return total

    # -- producing events -------------------------------------------------------------

    def events(self) -> Iterator[tuple[Event, bool]]:
        """Yield ``(event, is_delta)`` pairs; the caller sends each before asking for the next."""
        script = self.script
        if script.audio is not None:
            yield from self._audio_messages(script.audio)
        elif script.text is not None:
            yield from self._text_message(script.text)
        for call in script.function_calls:
            yield from self._function_call_events(call.name, call.arguments, call.call_id)

    @staticmethod
    def _ref(state: _OpenItem) -> dict[str, Any]:
        return {"item_id": state.item["id"], "output_index": state.output_index}

    def _open_item(self, item: dict[str, Any]) -> tuple[_OpenItem, list[Event]]:
        state = _OpenItem(item, len(self.output), self.previous_item_id)
        self.output.append(item)
        self._open.append(state)
        if self.in_band:
            self.new_items.append(item)
            self.previous_item_id = item["id"]
        events: list[Event] = [
            {
                "type": "response.output_item.added",
                "response_id": self.response_id,
                "output_index": state.output_index,
                "item": {**item, "status": "in_progress"},
            }
        ]
        if self.in_band:
            events += item_added_events(
                self.dialect, {**item, "status": "in_progress"}, state.previous_item_id, done=False
            )
        return state, events

    def _open_message(self, part: dict[str, Any]) -> tuple[_OpenItem, list[Event]]:
        item: dict[str, Any] = {
            "id": self.ids.new("item"),
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        state, events = self._open_item(item)
        state.part = part
        # The part is in the item from now on (a new list: the events above keep the old one).
        if part["type"] == "text":
            item["content"] = [{"type": self.names.text_content, "text": ""}]
        else:
            item["content"] = [{"type": self.names.audio_content, "transcript": ""}]
        events.append(
            {
                "type": "response.content_part.added",
                "response_id": self.response_id,
                **self._ref(state),
                "content_index": 0,
                "part": dict(part),
            }
        )
        return state, events

    def _delta(self, state: _OpenItem, type: str, delta: str) -> Event:
        return {
            "type": type,
            "response_id": self.response_id,
            **self._ref(state),
            "content_index": 0,
            "delta": delta,
        }

    def _text_message(self, text: str) -> Iterator[tuple[Event, bool]]:
        state, events = self._open_message({"type": "text", "text": ""})
        for event in events:
            yield event, False
        for chunk in _chunks(text, self.script.chunk_size):
            state.text += chunk
            yield self._delta(state, self.names.text_delta, chunk), True
        for event in self._close_message(state, "completed"):
            yield event, False

    def _audio_messages(self, audio: bytes) -> Iterator[tuple[Event, bool]]:
        script = self.script
        transcript = script.transcript if script.transcript is not None else script.text or ""
        count = max(1, self.audio_items)
        previous: _OpenItem | None = None
        for index in range(count):
            audio_piece = _share(audio, index, count)
            text_piece = _share(transcript, index, count)
            state, events = self._open_message({"type": "audio", "transcript": ""})
            for event in events:
                yield event, False
            deltas = self._audio_deltas(state, audio_piece, text_piece)
            if previous is not None:
                # Newer models: this item's first deltas come before the previous item's done.
                for event, is_delta in deltas:
                    yield event, is_delta
                    if event["type"] == self.names.audio_delta:
                        break
                for event in self._close_message(previous, "completed"):
                    yield event, False
                previous = None
            yield from deltas
            if self.overlap_audio_items and index < count - 1:
                previous = state
            else:
                for event in self._close_message(state, "completed"):
                    yield event, False

    def _audio_deltas(
        self, state: _OpenItem, audio: bytes, transcript: str
    ) -> Iterator[tuple[Event, bool]]:
        script = self.script
        names = self.names
        size = self.audio_chunk_bytes or script.audio_chunk_size
        audio_chunks = [audio[i : i + size] for i in range(0, len(audio), size)]
        text_chunks = _chunks(transcript, script.chunk_size)
        item_id = state.item["id"]
        item_bytes = 0
        for index in range(max(len(audio_chunks), len(text_chunks))):
            if index < len(text_chunks):
                state.text += text_chunks[index]
                yield self._delta(state, names.transcript_delta, text_chunks[index]), True
            if index < len(audio_chunks):
                chunk = audio_chunks[index]
                self._audio_bytes += len(chunk)
                item_bytes += len(chunk)
                self.audio_ms[item_id] = self.audio_format.duration_ms(item_bytes)
                encoded = base64.b64encode(chunk).decode("ascii")
                yield self._delta(state, names.audio_delta, encoded), True

    def _close_message(self, state: _OpenItem, item_status: str) -> list[Event]:
        names = self.names
        assert state.part is not None
        ref = {"response_id": self.response_id, **self._ref(state), "content_index": 0}
        events: list[Event]
        if state.part["type"] == "text":
            events = [{"type": names.text_done, **ref, "text": state.text}]
            part = {"type": "text", "text": state.text}
            content = {"type": names.text_content, "text": state.text}
        else:
            events = [
                {"type": names.audio_done, **ref},
                {"type": names.transcript_done, **ref, "transcript": state.text},
            ]
            part = {"type": "audio", "transcript": state.text}
            content = {"type": names.audio_content, "transcript": state.text}
        events.append({"type": "response.content_part.done", **ref, "part": part})
        state.part = None
        state.item["content"] = [content]
        events.extend(self._close_item(state, item_status))
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
        state, events = self._open_item(item)
        for event in events:
            yield event, False
        for chunk in _chunks(arguments, self.script.chunk_size):
            item["arguments"] += chunk
            yield (
                {
                    "type": "response.function_call_arguments.delta",
                    "response_id": self.response_id,
                    **self._ref(state),
                    "call_id": item["call_id"],
                    "delta": chunk,
                },
                True,
            )
        for event in self._close_call(state, "completed"):
            yield event, False

    def _close_call(self, state: _OpenItem, item_status: str) -> list[Event]:
        item = state.item
        done: Event = {
            "type": "response.function_call_arguments.done",
            "response_id": self.response_id,
            **self._ref(state),
            "call_id": item["call_id"],
            "arguments": item["arguments"],
        }
        if self.dialect == "ga":
            done["name"] = item["name"]
        return [done, *self._close_item(state, item_status)]

    def _close_item(self, state: _OpenItem, item_status: str) -> list[Event]:
        item = state.item
        item["status"] = item_status
        self._open.remove(state)
        events: list[Event] = [
            {
                "type": "response.output_item.done",
                "response_id": self.response_id,
                "output_index": state.output_index,
                "item": dict(item),
            }
        ]
        if self.in_band and self.dialect == "ga":
            events.append(item_done_event(item, state.previous_item_id))
        return events

    def interrupt(self) -> list[Event]:
        """The events that close whatever is open, when the response stops early."""
        events: list[Event] = []
        for state in list(self._open):
            if state.item["type"] == "function_call":
                events += self._close_call(state, "incomplete")
            elif state.part is not None:
                events += self._close_message(state, "incomplete")
            else:
                events += self._close_item(state, "incomplete")
        return events


def _share(whole: _T, index: int, count: int) -> _T:
    """The ``index``-th of ``count`` consecutive pieces of ``whole`` (the last takes the rest)."""
    size = len(whole) // count
    end = len(whole) if index == count - 1 else (index + 1) * size
    return whole[index * size : end]
