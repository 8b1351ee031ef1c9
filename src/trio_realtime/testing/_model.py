"""The Realtime service's rules, as the fake server enforces them: plain data, no I/O.

(Long on purpose: the service's rules for one connection are read in one place, top-down, in
the order of the prose below; calls have their own module, ``_calls.py``.)

No sockets, no Trio and no clock here: the connection (``_server.py``) feeds what happened in
and acts on what comes back; times are passed in as arguments. Each client event goes through
``ConnectionModel.receive()``, which returns actions (``Send``, ``Refuse``, ``StartResponse``,
``CancelResponse``, ``ClearOutputAudio``) for the connection to carry out. Each rule, in prose:

1. **Connecting.** The service listens on ``/v1/realtime`` (OpenAI), ``/openai/v1/realtime``
   (Azure GA) and ``/openai/realtime`` (Azure preview); any other path is refused at the
   WebSocket handshake with HTTP 404. The key comes in ``Authorization: Bearer <key>`` or
   ``api-key: <key>``. A key the test marks invalid (``Behavior.invalid_api_keys``, or outside
   ``Behavior.accepted_api_keys``) is refused: OpenAI accepts the WebSocket, sends an
   ``error`` (code ``invalid_api_key``; a missing key gets code null, "Missing bearer or basic
   authentication in header") and closes with code 3000; Azure answers the handshake with
   HTTP 401. By default every key, and no key at all, is accepted.
2. **The session** starts as ``_protocol.session_object`` describes it. ``session.update`` is
   merged into it deeply: only the fields present change, objects (``audio``,
   ``audio.input``...) are merged, ``turn_detection`` is merged while its ``type`` stays the
   same and starts from that type's defaults when it changes, and a field set to null is
   cleared where the API allows null. An update is checked whole before anything changes:
   an unknown field is ``unknown_parameter`` (``param`` names it), a wrong JSON type is
   ``invalid_type``, a value outside its set is ``invalid_value``, a number out of range is
   ``decimal_below_min_value`` (and kin); GA requires ``session.type`` (``"realtime"``); the
   voice cannot change once the conversation holds assistant audio (``cannot_update_voice``).
   ``model``, ``id``, ``object`` and ``expires_at`` are never changed by an update.
3. **The conversation** is its items, in order. Client items go at the end, or after their
   ``previous_item_id`` (``"root"``: first; an unknown one is ``item_not_found``); committed
   audio and response output items are appended as they open. An item can be deleted,
   retrieved (``conversation.item.retrieved``) and, for assistant audio, truncated
   (``conversation.item.truncated``: the audio is cut at ``audio_end_ms`` and the transcript
   removed, for good). An unknown id is ``item_not_found``; truncating anything but assistant
   audio (a user item, text, a function call, or an audio message before its first audio
   delta) is ``invalid_value`` "Only model output audio messages can be truncated"; past the
   end of the audio it is ``invalid_value`` "Audio content of Xms is already shorter than
   Yms". An item still streaming is truncatable up to the audio generated so far.
4. **Responses.** Only one in-band response may be active at a time: it holds the
   conversation from ``response.create`` until its ``response.done``; a second in-band
   request is rejected with ``conversation_already_has_active_response``. Out-of-band
   responses (``conversation: "none"``) do not take the conversation. A cancel finds only a
   response that was created, is not done and is not already being cancelled; otherwise
   ``response_cancel_not_active``. The body of ``response.create`` is checked before
   anything starts, as the service does, and answered with an error naming the create's
   ``event_id``: an unknown field is ``unknown_parameter``, a wrong JSON type
   ``invalid_type``, a value outside its set ``invalid_value``, too many or too long
   ``metadata`` pairs ``object_above_max_properties`` / ``string_above_max_length``
   (``param`` names the field: ``response.instructions``...). Null fields are left to the
   session.
5. **Expiry.** A session that reaches its maximum duration gets the ``session_expired``
   error ("Your session hit the maximum duration of N minutes."), then a close with code 1001
   and that sentence as the reason.
6. **Idle timeout.** With ``turn_detection.idle_timeout_ms`` set (GA), a conversation left
   idle that long (no in-band response, no ``session.update``; appended audio is silence to
   the fake server) gets ``input_audio_buffer.timeout_triggered``, the silent audio
   committed as a user item, then a response the server starts by itself.
7. **The output audio buffer** (WebRTC/SIP only, as the spec marks these events). On a call
   the service plays each response's audio to the caller itself: the sidebands get no audio
   deltas but ``output_audio_buffer.started`` (``response_id``) when a response's audio
   starts playing (its first audio delta, after its audio content part was added) and
   ``output_audio_buffer.stopped`` when it has played out (never before its
   ``response.done``; the pace is ``Behavior.call_playback_pace``). ``output_audio_buffer.
   clear`` (from a sideband or the caller's leg, normally after a ``response.cancel``: a
   cancelled response's audio already generated still plays) cuts off every response still
   playing, each answered with ``output_audio_buffer.cleared`` to every sideband and never
   ``stopped`` afterwards; with nothing playing it is answered with nothing (the event must
   name a response; not documented). The caller's voice activity with
   ``interrupt_response`` clears the same way after ``speech_started`` (spec: "in VAD mode
   when the user has interrupted"). A session that is not a call (a plain WebSocket, either
   dialect) refuses ``output_audio_buffer.clear`` with ``invalid_request_error``, code
   ``invalid_value``, ``param: "type"`` and the client's ``event_id``: the spec documents
   the event for WebRTC/SIP only, where the service holds the buffer; on a WebSocket the
   client holds the audio and there is no server buffer to clear, so an error tells a client
   that sends it by mistake (silently ignoring it would hide the bug). The wording is the
   fake's own; the real service's answer there is not documented.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from . import _audio
from . import _protocol as proto
from ._audio import AudioFormat
from ._ids import IdFactory
from ._protocol import Dialect, Event
from ._script import Behavior

# -- errors ------------------------------------------------------------------------------------


@attrs.frozen
class Rejection:
    """An error the service answers a client event with (the connection stays open)."""

    code: str | None
    message: str
    param: str | None = None
    error_type: str = "invalid_request_error"

    def event(self, client_event_id: str | None) -> Event:
        return proto.error_event(
            code=self.code,
            message=self.message,
            client_event_id=client_event_id,
            error_type=self.error_type,
            param=self.param,
        )


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid_type(param: str, expected: str, value: Any) -> Rejection:
    return Rejection(
        "invalid_type",
        f"Invalid type for '{param}': expected {expected}, but got {_describe(value)} instead.",
        param,
    )


def _invalid_value(param: str, value: Any, supported: Iterable[str]) -> Rejection:
    listed = ", ".join(f"'{v}'" for v in supported)
    return Rejection(
        "invalid_value", f"Invalid value: '{value}'. Supported values are: {listed}.", param
    )


def missing_parameter(param: str) -> Rejection:
    return Rejection("missing_required_parameter", f"Missing required parameter: '{param}'.", param)


def unknown_parameter(param: str) -> Rejection:
    return Rejection("unknown_parameter", f"Unknown parameter: '{param}'.", param)


def invalid_json(message: str) -> Rejection:
    return Rejection("invalid_json", message)


def item_not_found(item_id: Any) -> Rejection:
    return Rejection("item_not_found", f"Item with item_id not found: {item_id}", "item_id")


# -- 1. connecting -----------------------------------------------------------------------------

#: The paths the service listens on, and whose they are.
REALTIME_PATHS: Mapping[str, str] = {
    "/v1/realtime": "openai",
    "/openai/v1/realtime": "azure",
    "/openai/realtime": "azure",
}
#: Close code of a session refused after the handshake (OpenAI).
AUTH_CLOSE_CODE = 3000
_AZURE_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)


@attrs.frozen
class HandshakeRefusal:
    """Refuse the WebSocket handshake with this HTTP status and JSON body."""

    status: int
    body: str


@attrs.frozen
class SessionRefusal:
    """Accept the WebSocket, send this error, close with this code and reason."""

    error: Rejection
    close_code: int
    close_reason: str


def api_key_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key of a handshake: ``Authorization: Bearer <key>`` or ``api-key: <key>``."""
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1").strip()
        if name == "api-key":
            return value
        if name == "authorization" and value.lower().startswith("bearer "):
            return value[len("bearer ") :].strip()
    return None


def _masked(key: str) -> str:
    """A key as the service shows it in errors: all but its last four characters hidden."""
    return "*" * max(len(key) - 4, 0) + key[-4:]


def invalid_url(method: str, path: str) -> str:
    """The body of a 404 for a path the service does not serve."""
    detail = {"message": f"Invalid URL ({method} {path})", "type": "invalid_request_error"}
    return json.dumps({"error": {**detail, "param": None, "code": None}})


def invalid_key_body(key: str | None) -> str:
    """The body of a REST request refused for its key (HTTP 401)."""
    if key is None:
        message, code = "Missing bearer or basic authentication in header", None
    else:
        message = (
            f"Incorrect API key provided: {_masked(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        code = "invalid_api_key"
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return json.dumps({"error": error})


def invalid_json_body(detail: str) -> str:
    error = {
        "message": f"We could not parse the JSON body of your request: {detail}",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    return json.dumps({"error": error})


def check_connect(
    path: str,
    headers: Iterable[tuple[bytes, bytes]],
    *,
    accepted_api_keys: Iterable[str] | None,
    invalid_api_keys: Iterable[str],
) -> HandshakeRefusal | SessionRefusal | None:
    """What the service does with a WebSocket request for ``path`` (query included)."""
    bare = path.split("?", 1)[0]
    owner = REALTIME_PATHS.get(bare.rstrip("/") or "/")
    if owner is None:
        return HandshakeRefusal(404, invalid_url("GET", bare))
    key = api_key_of(headers)
    accepted = None if accepted_api_keys is None else frozenset(accepted_api_keys)
    refused = key in frozenset(invalid_api_keys) or (accepted is not None and key not in accepted)
    if not refused:
        return None
    if owner == "azure":
        return HandshakeRefusal(
            401, '{"error": {"code": "401", "message": "' + _AZURE_DENIED + '"}}'
        )
    if key is None:
        error = Rejection(None, "Missing bearer or basic authentication in header")
        return SessionRefusal(error, AUTH_CLOSE_CODE, "invalid_request_error")
    error = Rejection(
        "invalid_api_key",
        f"Incorrect API key provided: {_masked(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    )
    return SessionRefusal(error, AUTH_CLOSE_CODE, "invalid_request_error.invalid_api_key")


# -- 2. the session ----------------------------------------------------------------------------

Check = Callable[[Any, str], Rejection | None]


@attrs.frozen
class _Object:
    """A JSON object merged field by field. ``nullable``: null clears it."""

    fields: Mapping[str, _Node]
    nullable: bool = False


@attrs.frozen
class _TurnDetection:
    """Merged while its ``type`` stays; restarted from that type's defaults when it changes."""

    defaults: Mapping[str, Mapping[str, Any]]


_Node = _Object | _TurnDetection | Check


def _any(value: Any, param: str) -> Rejection | None:
    return None


def _string(value: Any, param: str) -> Rejection | None:
    return None if isinstance(value, str) else _invalid_type(param, "a string", value)


def _boolean(value: Any, param: str) -> Rejection | None:
    return None if isinstance(value, bool) else _invalid_type(param, "a boolean", value)


def _array(value: Any, param: str) -> Rejection | None:
    return None if isinstance(value, list) else _invalid_type(param, "an array", value)


def _nullable(check: Check) -> Check:
    def nullable(value: Any, param: str) -> Rejection | None:
        return None if value is None else check(value, param)

    return nullable


def _number(low: float, high: float, *, integer: bool = False) -> Check:
    kind = "integer" if integer else "decimal"

    def number(value: Any, param: str) -> Rejection | None:
        allowed = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, allowed):
            return _invalid_type(param, f"a {kind}" if integer else "a number", value)
        if value < low:
            return Rejection(
                f"{kind}_below_min_value",
                f"Invalid '{param}': {kind} below minimum value. Expected a value >= {low:g}, "
                f"but got {value} instead.",
                param,
            )
        if value > high:
            return Rejection(
                f"{kind}_above_max_value",
                f"Invalid '{param}': {kind} above maximum value. Expected a value <= {high:g}, "
                f"but got {value} instead.",
                param,
            )
        return None

    return number


def _one_of(*values: str) -> Check:
    def one_of(value: Any, param: str) -> Rejection | None:
        if not isinstance(value, str):
            return _invalid_type(param, "a string", value)
        return None if value in values else _invalid_value(param, value, values)

    return one_of


def _max_tokens(value: Any, param: str) -> Rejection | None:
    if value == "inf":
        return None
    if isinstance(value, str):
        return _invalid_value(param, value, ["inf"])
    return _number(1, 4096, integer=True)(value, param)


def _modalities(value: Any, param: str) -> Rejection | None:
    if not isinstance(value, list):
        return _invalid_type(param, "an array", value)
    for index, modality in enumerate(value):
        if modality not in ("text", "audio"):
            return _invalid_value(f"{param}[{index}]", modality, ["text", "audio"])
    return None


VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")


def _voice(value: Any, param: str) -> Rejection | None:
    if isinstance(value, Mapping):
        if set(value) != {"id"} or not isinstance(value["id"], str):
            return _invalid_value(param, value, [*VOICES, "{'id': ...}"])
        return None
    return _one_of(*VOICES)(value, param)


def _ga_format(value: Any, param: str) -> Rejection | None:
    if not isinstance(value, Mapping):
        return _invalid_type(param, "an object", value)
    audio_format = _audio.from_ga(value)
    if audio_format is None:
        kinds = [f.ga_type for f in _audio.FORMATS]
        return _invalid_value(f"{param}.type", value.get("type"), kinds)
    for key in value:
        if key not in ("type", "rate") or (key == "rate" and audio_format is not _audio.PCM16):
            return unknown_parameter(f"{param}.{key}")
    if "rate" in value and value["rate"] != 24000:
        return _invalid_value(f"{param}.rate", value["rate"], ["24000"])
    return None


_TRANSCRIPTION = _Object({"model": _string, "language": _string, "prompt": _string}, nullable=True)
_SERVER_VAD_GA = proto.SERVER_VAD_GA
_SEMANTIC_VAD = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
_VAD_FIELDS: Mapping[str, Check] = {
    "type": _one_of("server_vad", "semantic_vad"),
    "threshold": _number(0.0, 1.0),
    "prefix_padding_ms": _number(0, 10_000, integer=True),
    "silence_duration_ms": _number(0, 10_000, integer=True),
    "idle_timeout_ms": _nullable(_number(5_000, 30_000, integer=True)),
    "create_response": _boolean,
    "interrupt_response": _boolean,
    "eagerness": _one_of("low", "medium", "high", "auto"),
}
GA_SCHEMA = _Object(
    {
        "type": _one_of("realtime"),
        "model": _string,
        "instructions": _string,
        "output_modalities": _modalities,
        "tools": _array,
        "tool_choice": _any,
        "max_output_tokens": _max_tokens,
        "parallel_tool_calls": _boolean,
        "tracing": _any,
        "truncation": _any,
        "prompt": _any,
        "include": _nullable(_array),
        "reasoning": _any,
        "audio": _Object(
            {
                "input": _Object(
                    {
                        "format": _ga_format,
                        "transcription": _TRANSCRIPTION,
                        "noise_reduction": _Object(
                            {
                                "type": _one_of("near_field", "far_field"),
                                "strength": _number(0.0, 1.0),
                            },
                            nullable=True,
                        ),
                        "turn_detection": _TurnDetection(
                            {"server_vad": _SERVER_VAD_GA, "semantic_vad": _SEMANTIC_VAD}
                        ),
                    }
                ),
                "output": _Object(
                    {"format": _ga_format, "voice": _voice, "speed": _number(0.25, 1.5)}
                ),
            }
        ),
    }
)
_BETA_FORMAT = _one_of(*(f.beta_name for f in _audio.FORMATS))
BETA_SCHEMA = _Object(
    {
        "model": _string,
        "modalities": _modalities,
        "instructions": _string,
        "voice": _one_of(*VOICES),
        "input_audio_format": _BETA_FORMAT,
        "output_audio_format": _BETA_FORMAT,
        "input_audio_transcription": _TRANSCRIPTION,
        "input_audio_noise_reduction": _Object(
            {"type": _one_of("near_field", "far_field")}, nullable=True
        ),
        "turn_detection": _TurnDetection(
            {
                "server_vad": {k: v for k, v in _SERVER_VAD_GA.items() if k != "idle_timeout_ms"},
                "semantic_vad": _SEMANTIC_VAD,
            }
        ),
        "tools": _array,
        "tool_choice": _string,
        "temperature": _number(0.6, 1.2),
        "max_response_output_tokens": _max_tokens,
        "speed": _number(0.25, 1.5),
        "tracing": _any,
        "client_secret": _any,
    }
)
#: Fields an update may name but never changes.
_KEPT = ("model",)


# -- the body of response.create (rule 4) ------------------------------------------------------


def _objects(value: Any, param: str) -> Rejection | None:
    """An array of objects (``input`` items, ``tools``)."""
    if not isinstance(value, list):
        return _invalid_type(param, "an array", value)
    for index, element in enumerate(value):
        if not isinstance(element, Mapping):
            return _invalid_type(f"{param}[{index}]", "an object", element)
    return None


def _object(value: Any, param: str) -> Rejection | None:
    return None if isinstance(value, Mapping) else _invalid_type(param, "an object", value)


def _tool_choice(value: Any, param: str) -> Rejection | None:
    if isinstance(value, Mapping):
        return None
    return _one_of("none", "auto", "required")(value, param)


#: At most 16 pairs; keys at most 64 characters, values strings of at most 512.
_METADATA_PAIRS, _METADATA_KEY_LENGTH, _METADATA_VALUE_LENGTH = 16, 64, 512


def _metadata(value: Any, param: str) -> Rejection | None:
    if not isinstance(value, Mapping):
        return _invalid_type(param, "an object", value)
    if len(value) > _METADATA_PAIRS:
        return Rejection(
            "object_above_max_properties",
            f"Invalid '{param}': too many properties. Expected an object with at most "
            f"{_METADATA_PAIRS} properties, but got an object with {len(value)} properties "
            "instead.",
            param,
        )
    for key, item in value.items():
        if len(key) > _METADATA_KEY_LENGTH:
            return Rejection(
                "string_above_max_length",
                f"Invalid property name in '{param}': '{key}' is too long. Expected a string "
                f"with maximum length {_METADATA_KEY_LENGTH}, but got a string with length "
                f"{len(key)} instead.",
                param,
            )
        if not isinstance(item, str):
            return _invalid_type(f"{param}.{key}", "a string", item)
        if len(item) > _METADATA_VALUE_LENGTH:
            return Rejection(
                "string_above_max_length",
                f"Invalid '{param}.{key}': string too long. Expected a string with maximum "
                f"length {_METADATA_VALUE_LENGTH}, but got a string with length {len(item)} "
                "instead.",
                f"{param}.{key}",
            )
    return None


_RESPONSE_COMMON: Mapping[str, _Node] = {
    # The API documents "auto" and "none" only (the typed models allow any string).
    "conversation": _one_of("auto", "none"),
    "input": _objects,
    "instructions": _string,
    "metadata": _metadata,
    "tools": _objects,
}
GA_RESPONSE_SCHEMA = _Object(
    {
        **_RESPONSE_COMMON,
        "audio": _Object({"output": _Object({"format": _ga_format, "voice": _voice})}),
        "max_output_tokens": _max_tokens,
        "output_modalities": _modalities,
        "parallel_tool_calls": _boolean,
        "prompt": _object,
        "reasoning": _object,
        "tool_choice": _tool_choice,
    }
)
BETA_RESPONSE_SCHEMA = _Object(
    {
        **_RESPONSE_COMMON,
        "max_response_output_tokens": _max_tokens,
        "modalities": _modalities,
        "output_audio_format": _BETA_FORMAT,
        "temperature": _number(0.6, 1.2),
        "tool_choice": _string,
        "voice": _one_of(*VOICES),
    }
)


def check_response_body(dialect: Dialect, body: Any) -> Rejection | None:
    """Whether the ``response`` of a ``response.create`` is one the service takes: None, or
    the rejection (``unknown_parameter``, ``invalid_type``, ``invalid_value``... with
    ``param`` naming the field as ``response.<path>``). Absent and null fields are left to
    the session."""
    if not isinstance(body, Mapping):
        return _invalid_type("response", "an object", body)
    schema = GA_RESPONSE_SCHEMA if dialect == "ga" else BETA_RESPONSE_SCHEMA
    given = {key: value for key, value in body.items() if value is not None}
    try:
        _merge(schema, {}, given, "response")
    except _Refused as refused:
        return refused.rejection
    return None


class _Refused(Exception):
    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection


def _merge(node: _Node, current: Any, update: Any, param: str) -> Any:
    """``update`` merged into ``current`` as ``node`` says; raises _Refused."""
    if isinstance(node, _Object):
        if update is None and node.nullable:
            return None
        if not isinstance(update, Mapping):
            raise _Refused(_invalid_type(param, "an object", update))
        merged = dict(current) if isinstance(current, Mapping) else {}
        for key, value in update.items():
            child = node.fields.get(key)
            if child is None:
                raise _Refused(unknown_parameter(f"{param}.{key}"))
            merged[key] = _merge(child, merged.get(key), value, f"{param}.{key}")
        return merged
    if isinstance(node, _TurnDetection):
        if update is None:
            return None
        if not isinstance(update, Mapping):
            raise _Refused(_invalid_type(param, "an object", update))
        kind = update.get("type", current.get("type") if isinstance(current, Mapping) else None)
        if kind is None:
            raise _Refused(missing_parameter(f"{param}.type"))
        if kind not in node.defaults:
            raise _Refused(_invalid_value(f"{param}.type", kind, list(node.defaults)))
        same = isinstance(current, Mapping) and current.get("type") == kind
        merged = dict(current) if same else dict(node.defaults[kind])
        for key, value in update.items():
            check = _VAD_FIELDS.get(key)
            if check is None or key not in node.defaults[kind]:
                raise _Refused(unknown_parameter(f"{param}.{key}"))
            if (rejection := check(value, f"{param}.{key}")) is not None:
                raise _Refused(rejection)
            merged[key] = value
        return merged
    if (rejection := node(update, param)) is not None:
        raise _Refused(rejection)
    return copy.deepcopy(update)


@attrs.define(eq=False)
class SessionState:
    """The session configuration of one connection, and the rules for changing it."""

    dialect: Dialect
    value: dict[str, Any]

    def update(self, body: Any, *, assistant_audio_present: bool) -> Rejection | None:
        """Apply the ``session`` body of a ``session.update``, or change nothing and say why."""
        if not isinstance(body, Mapping):
            if body is None:
                return missing_parameter("session")
            return _invalid_type("session", "an object", body)
        if self.dialect == "ga" and "type" not in body:
            return missing_parameter("session.type")
        schema = GA_SCHEMA if self.dialect == "ga" else BETA_SCHEMA
        try:
            merged = _merge(schema, self.value, body, "session")
        except _Refused as refused:
            return refused.rejection
        for key in _KEPT:
            merged[key] = self.value[key]
        if assistant_audio_present and _voice_of(self.dialect, merged) != self.voice:
            param = "session.audio.output.voice" if self.dialect == "ga" else "session.voice"
            return Rejection(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                param,
            )
        self.value = merged
        return None

    # -- what the rest of the server reads ----------------------------------------------------

    @property
    def output_modalities(self) -> tuple[str, ...]:
        return proto.session_modalities(self.dialect, self.value)

    @property
    def voice(self) -> Any:
        return _voice_of(self.dialect, self.value)

    @property
    def output_format(self) -> AudioFormat:
        if self.dialect == "ga":
            found = _audio.from_ga(self.value["audio"]["output"].get("format"))
        else:
            found = _audio.from_beta(self.value.get("output_audio_format"))
        return found or _audio.PCM16

    @property
    def turn_detection(self) -> Mapping[str, Any] | None:
        if self.dialect == "ga":
            value = self.value["audio"]["input"].get("turn_detection")
        else:
            value = self.value.get("turn_detection")
        return value if isinstance(value, Mapping) else None

    @property
    def idle_timeout_ms(self) -> int | None:
        """``turn_detection.idle_timeout_ms`` (server VAD, GA), or None."""
        detection = self.turn_detection
        value = None if detection is None else detection.get("idle_timeout_ms")
        return value if isinstance(value, int) else None

    def response_audio(self, body: Mapping[str, Any]) -> tuple[Any, AudioFormat]:
        """The voice and output format of a response: the ``response.create`` body's, where
        it names valid ones, else the session's."""
        voice, audio_format = self.voice, self.output_format
        if self.dialect == "ga":
            audio = body.get("audio")
            output = audio.get("output") if isinstance(audio, Mapping) else None
            if isinstance(output, Mapping):
                if _voice(output.get("voice"), "voice") is None:
                    voice = output["voice"]
                audio_format = _audio.from_ga(output.get("format")) or audio_format
        else:
            if isinstance(body.get("voice"), str):
                voice = body["voice"]
            audio_format = _audio.from_beta(body.get("output_audio_format")) or audio_format
        return voice, audio_format


def _voice_of(dialect: Dialect, session: Mapping[str, Any]) -> Any:
    if dialect == "ga":
        return session["audio"]["output"].get("voice")
    return session.get("voice")


# -- 3. the conversation -----------------------------------------------------------------------


@attrs.define(eq=False)
class Conversation:
    """The items of the default conversation, in order, and the audio length of each
    assistant audio item (milliseconds; while it streams, the audio generated so far).
    ``truncated`` holds where each truncated item was cut: it stays cut (audio and transcript)
    even if its response goes on streaming."""

    items: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    audio_ms: dict[str, int] = attrs.field(factory=dict)
    truncated: dict[str, int] = attrs.field(factory=dict)

    @property
    def last_id(self) -> str | None:
        return next(reversed(self.items), None)

    @property
    def assistant_audio_present(self) -> bool:
        return any(ms > 0 for ms in self.audio_ms.values())

    def add(self, item: dict[str, Any], after: str | None = None) -> str | None:
        """Add ``item`` (kept by reference: later changes to it show) at the end, or after
        the item ``after`` (``"root"``: first); return the id of the item before it."""
        if after is None:
            previous = self.last_id
            self.items[item["id"]] = item
            return previous
        ids = list(self.items)
        position = 0 if after == "root" else ids.index(after) + 1
        ids.insert(position, item["id"])
        self.items[item["id"]] = item
        self.items = {item_id: self.items[item_id] for item_id in ids}
        return ids[position - 1] if position else None

    def placement(self, item_id: str, previous_item_id: Any) -> Rejection | None:
        """Whether a new item ``item_id`` can go after ``previous_item_id`` (None: the end)."""
        if item_id in self.items:
            return Rejection(
                "invalid_value", f"Item with id '{item_id}' already exists.", "item.id"
            )
        if previous_item_id is None or previous_item_id == "root":
            return None
        if not isinstance(previous_item_id, str) or previous_item_id not in self.items:
            return Rejection(
                "item_not_found",
                f"Item with previous_item_id not found: {previous_item_id}",
                "previous_item_id",
            )
        return None

    def take_from(self, stream: proto.ResponseStream) -> None:
        """Append the items an in-band response opened since the last call, and note how
        much audio each holds."""
        for item in stream.new_items:
            self.items.setdefault(item["id"], item)
        stream.new_items.clear()
        for item_id, ms in stream.audio_ms.items():
            if item_id in self.items:
                cut = self.truncated.get(item_id)
                self.audio_ms[item_id] = ms if cut is None else min(ms, cut)
                if cut is not None:
                    _cut_transcript(self.items[item_id])

    def delete(self, item_id: Any) -> Rejection | None:
        if not isinstance(item_id, str) or item_id not in self.items:
            return item_not_found(item_id)
        del self.items[item_id]
        self.audio_ms.pop(item_id, None)
        self.truncated.pop(item_id, None)
        return None

    def retrieve(self, item_id: Any) -> dict[str, Any] | Rejection:
        if not isinstance(item_id, str) or item_id not in self.items:
            return item_not_found(item_id)
        return copy.deepcopy(self.items[item_id])

    def truncate(self, item_id: Any, content_index: Any, audio_end_ms: Any) -> Rejection | None:
        """Cut an assistant audio item at ``audio_end_ms`` and remove its transcript."""
        if not isinstance(item_id, str) or item_id not in self.items:
            return item_not_found(item_id)
        item = self.items[item_id]
        content = item.get("content")
        if (
            item.get("type") != "message"
            or item.get("role") != "assistant"
            or item_id not in self.audio_ms
            or not isinstance(content, list)
        ):
            return Rejection(
                "invalid_value", "Only model output audio messages can be truncated", "item_id"
            )
        if isinstance(content_index, bool) or not isinstance(content_index, int):
            return _invalid_type("content_index", "an integer", content_index)
        if not 0 <= content_index < len(content):
            return Rejection(
                "invalid_value",
                f"Invalid 'content_index': item has no content part {content_index}.",
                "content_index",
            )
        if isinstance(audio_end_ms, bool) or not isinstance(audio_end_ms, int):
            return _invalid_type("audio_end_ms", "an integer", audio_end_ms)
        length = self.audio_ms[item_id]
        if audio_end_ms < 0 or audio_end_ms > length:
            return Rejection(
                "invalid_value",
                f"Audio content of {length}ms is already shorter than {audio_end_ms}ms",
                "audio_end_ms",
            )
        self.audio_ms[item_id] = self.truncated[item_id] = audio_end_ms
        _cut_transcript(item)
        return None


def _cut_transcript(item: dict[str, Any]) -> None:
    """A truncated item keeps no transcript (the service removes it)."""
    for part in item.get("content") or ():
        if isinstance(part, dict) and part.get("transcript"):
            part["transcript"] = ""


# -- 4. responses ------------------------------------------------------------------------------


@attrs.define(eq=False)
class ResponseSlots:
    """Which responses are active, and the one-active-response rule.

    A response is *active* from its request until its ``response.done``; it can be
    cancelled once *created* and until it is done or already being cancelled.
    """

    in_band: str | None = None
    out_of_band: set[str] = attrs.field(factory=set)
    created: set[str] = attrs.field(factory=set)
    cancelling: set[str] = attrs.field(factory=set)

    def request(self, *, in_band: bool, legacy_error: bool = False) -> Rejection | None:
        """Whether a new response may start now (None), or the rejection."""
        if in_band and self.in_band is not None:
            if legacy_error:
                return Rejection(None, proto.LEGACY_CONFLICT_MESSAGE)
            return Rejection(
                proto.CONFLICT_CODE,
                "Conversation already has an active response in progress: "
                f"{self.in_band}. Wait until the response is finished before creating a new one.",
            )
        return None

    def begin(self, response_id: str, *, in_band: bool) -> None:
        if in_band:
            assert self.in_band is None, "the conversation already has an active response"
            self.in_band = response_id
        else:
            self.out_of_band.add(response_id)

    def mark_created(self, response_id: str) -> None:
        self.created.add(response_id)

    def cancel_target(self, response_id: Any) -> str | Rejection:
        """The response a ``response.cancel`` cancels (by id, else the in-band one)."""
        target = response_id if response_id else self.in_band
        if (
            isinstance(target, str)
            and target in self.created
            and target not in self.cancelling
            and (target == self.in_band or target in self.out_of_band)
        ):
            return target
        return Rejection(proto.CANCEL_NOT_ACTIVE_CODE, proto.CANCEL_NOT_ACTIVE_MESSAGE)

    def mark_cancelling(self, response_id: str) -> None:
        self.cancelling.add(response_id)

    def finish(self, response_id: str) -> None:
        if self.in_band == response_id:
            self.in_band = None
        self.out_of_band.discard(response_id)
        self.created.discard(response_id)
        self.cancelling.discard(response_id)

    @property
    def active(self) -> int:
        return (self.in_band is not None) + len(self.out_of_band)


# -- 5. expiry ---------------------------------------------------------------------------------

EXPIRY_CLOSE_CODE = 1001


def expiry_message(duration: float) -> str:
    return f"Your session hit the maximum duration of {duration / 60:g} minutes."


def expiry_error(duration: float) -> Rejection:
    """The error sent when a session of ``duration`` seconds expires (close code 1001 and the
    same message follow)."""
    return Rejection("session_expired", expiry_message(duration))


# -- the state of one connection: client events in, actions out ------------------------------


@attrs.frozen
class Send:
    """Send this server event (the connection adds its ``event_id``)."""

    event: Event


@attrs.frozen
class Refuse:
    """Answer the client event with this error; ``conflict``: it is the one-active rejection."""

    rejection: Rejection
    conflict: bool = False


@attrs.frozen
class StartResponse:
    """Start a response the client asked for (it already holds its slot)."""

    response_id: str
    body: Mapping[str, Any]
    in_band: bool
    metadata: Mapping[str, Any] | None


@attrs.frozen
class CancelResponse:
    """Cancel this active response (it ends with ``response.done`` when it has stopped)."""

    response_id: str
    reason: str


@attrs.frozen
class ClearOutputAudio:
    """Cut off the audio a call is playing to the caller (``output_audio_buffer.cleared`` for
    each response whose audio it cuts off; nothing if none plays)."""


Action = Send | Refuse | StartResponse | CancelResponse | ClearOutputAudio

#: The error a session that is not a call (a plain WebSocket) answers
#: ``output_audio_buffer.clear`` with (the fake's own wording: see rule 7).
OUTPUT_AUDIO_BUFFER_CLEAR_REFUSED = Rejection(
    "invalid_value",
    "output_audio_buffer.clear is only supported for WebRTC and SIP sessions: on a WebSocket "
    "session the client plays the audio and stops it itself.",
    "type",
)


@attrs.define(eq=False)
class ConnectionModel:
    """Everything the service knows about one connection: its session, its conversation and
    its responses. ``receive()`` takes each client event and returns what to do."""

    dialect: Dialect
    session: SessionState
    ids: IdFactory
    conversation: Conversation = attrs.field(factory=Conversation)
    slots: ResponseSlots = attrs.field(factory=ResponseSlots)
    audio_buffer_bytes: int = 0
    #: A call's session: the service plays the output audio itself (rule 7).
    plays_output_audio: bool = False

    @classmethod
    def new(
        cls, dialect: Dialect, *, ids: IdFactory, model: str, expires_at: int
    ) -> ConnectionModel:
        value = proto.session_object(
            dialect, session_id=ids.new("sess"), model=model, expires_at=expires_at
        )
        return cls(dialect, SessionState(dialect, value), ids)

    def receive(self, event: Mapping[str, Any], behavior: Behavior) -> list[Action]:
        """What the service does with one client event. ``behavior`` supplies the knobs that
        change the rules (``legacy_conflict_error``, ``ignore_cancel``)."""
        kind = event.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            supported = ", ".join(f"'{name}'" for name in proto.CLIENT_EVENT_TYPES)
            message = f"Invalid value: '{kind}'. Supported values are: {supported}."
            return [Refuse(Rejection("invalid_event", message, "type"))]
        return handler(self, event, behavior)

    # -- the client events, one method each ---------------------------------------------------

    def _session_update(self, event: Mapping[str, Any], behavior: Behavior) -> list[Action]:
        rejection = self.update_session(event.get("session"))
        if rejection is not None:
            return [Refuse(rejection)]
        return [Send({"type": "session.updated", "session": self.session.value})]

    def _audio_append(self, event: Mapping[str, Any], behavior: Behavior) -> list[Action]:
        audio = event.get("audio")
        if isinstance(audio, str):
            self.audio_buffer_bytes += len(audio) * 3 // 4
        return []

    def _audio_commit(self, event: Mapping[str, Any], behavior: Behavior) -> list[Action]:
        if self.audio_buffer_bytes == 0:
            return [
                Refuse(
                    Rejection(
                        proto.COMMIT_EMPTY_CODE,
                        "Error committing input audio buffer: buffer too small. Expected at "
                        "least 100ms of audio, but buffer only has 0.00ms of audio.",
                    )
                )
            ]
        return [Send(e) for e in self.commit_user_audio(self.ids.new("item"))]

    def _audio_clear(self, event: Mapping[str, Any], behavior: Behavior) -> list[Action]:
        self.audio_buffer_bytes = 0
        return [Send({"type": "input_audio_buffer.cleared"})]

    def _item_create(self, event: Mapping[str, Any], behavior: Behavior) -> list[Action]:
        item = event.get("item")
        if not isinstance(item, Mapping) or "type" not in item:
            return [Refuse(missing_parameter("item.type"))]
        new = proto.client_item(item, self.ids.new("item"))
        after = event.get("previous_item_id")
        rejection = self.conversation.placement(new["id"], after)
        if rejection is not None:
            return [Refuse(rejection)]
        return [Send(e) for e in self.add_item(new, after if isinstance(after, str) else None)]

    def _item_delete(self, event: Mapping[str, Any], behavior: Behavior) -> list[Action]:
        item_id = event.get("item_id")
        rejection = self.conversation.delete(item_id)
        if rejection is not None:
            return [Refuse(rejection)]
        return [Send({"type": "conversation.item.deleted", "item_id": item_id})]

    def _item_retrieve(self, event: Mapping[str, Any], behavior: Behavior) -> list[Action]:
        item = self.conversation.retrieve(event.get("item_id"))
        if isinstance(item, Rejection):
            return [Refuse(item)]
        return [Send({"type": "conversation.item.retrieved", "item": item})]

    def _item_truncate(self, event: Mapping[str, Any], behavior: Behavior) -> list[Action]:
        item_id, index, end = (
            event.get("item_id"),
            event.get("content_index"),
            event.get("audio_end_ms"),
        )
        rejection = self.conversation.truncate(item_id, index, end)
        if rejection is not None:
            return [Refuse(rejection)]
        truncated = {"item_id": item_id, "content_index": index, "audio_end_ms": end}
        return [Send({"type": "conversation.item.truncated", **truncated})]

    def _output_audio_clear(self, event: Mapping[str, Any], behavior: Behavior) -> list[Action]:
        if not self.plays_output_audio:
            return [Refuse(OUTPUT_AUDIO_BUFFER_CLEAR_REFUSED)]
        return [ClearOutputAudio()]

    def _response_create(self, event: Mapping[str, Any], behavior: Behavior) -> list[Action]:
        body = event.get("response")
        if body is None:
            body = {}
        rejection = check_response_body(self.dialect, body)
        if rejection is not None:
            return [Refuse(rejection)]
        in_band = body.get("conversation") != "none"
        rejection = self.slots.request(in_band=in_band, legacy_error=behavior.legacy_conflict_error)
        if rejection is not None:
            return [Refuse(rejection, conflict=True)]
        response_id = self.ids.new("resp")
        self.slots.begin(response_id, in_band=in_band)
        metadata = body.get("metadata")
        return [
            StartResponse(
                response_id, body, in_band, metadata if isinstance(metadata, Mapping) else None
            )
        ]

    def _response_cancel(self, event: Mapping[str, Any], behavior: Behavior) -> list[Action]:
        if behavior.ignore_cancel:
            return []
        target = self.slots.cancel_target(event.get("response_id"))
        if isinstance(target, Rejection):
            return [Refuse(target)]
        self.slots.mark_cancelling(target)
        return [CancelResponse(target, "client_cancelled")]

    # -- what the connection also asks ---------------------------------------------------------

    def update_session(self, body: Any) -> Rejection | None:
        return self.session.update(
            body, assistant_audio_present=self.conversation.assistant_audio_present
        )

    def add_item(self, item: dict[str, Any], after: str | None = None) -> list[Event]:
        """Add an item; the events that say so."""
        previous = self.conversation.add(item, after)
        return proto.item_added_events(self.dialect, item, previous, done=True)

    def commit_user_audio(self, item_id: str) -> list[Event]:
        """Commit the input audio buffer (whatever it holds) as a user audio item."""
        self.audio_buffer_bytes = 0
        committed = {
            "type": "input_audio_buffer.committed",
            "previous_item_id": self.conversation.last_id,
            "item_id": item_id,
        }
        return [committed, *self.add_item(proto.user_audio_item(item_id))]

    def start_server_response(self) -> str:
        """Take the conversation for a response the server starts by itself (it must be
        free); return the new response's id."""
        response_id = self.ids.new("resp")
        self.slots.begin(response_id, in_band=True)
        return response_id

    def interrupt(self) -> CancelResponse | None:
        """The user started speaking: the in-band response to cancel, if any."""
        target = self.slots.in_band
        if target is None or target in self.slots.cancelling:
            return None
        self.slots.mark_cancelling(target)
        return CancelResponse(target, "turn_detected")


_Handler = Callable[[ConnectionModel, Mapping[str, Any], Behavior], list[Action]]
_HANDLERS: Mapping[str, _Handler] = {
    "session.update": ConnectionModel._session_update,
    "input_audio_buffer.append": ConnectionModel._audio_append,
    "input_audio_buffer.commit": ConnectionModel._audio_commit,
    "input_audio_buffer.clear": ConnectionModel._audio_clear,
    "conversation.item.create": ConnectionModel._item_create,
    "conversation.item.delete": ConnectionModel._item_delete,
    "conversation.item.retrieve": ConnectionModel._item_retrieve,
    "conversation.item.truncate": ConnectionModel._item_truncate,
    "output_audio_buffer.clear": ConnectionModel._output_audio_clear,
    "response.create": ConnectionModel._response_create,
    "response.cancel": ConnectionModel._response_cancel,
}
