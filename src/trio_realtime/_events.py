"""Server events: classifying events, and the lifecycle views the gate reads.

Pure functions, no I/O. Both dialects are understood: beta (``response.text.*``,
``response.audio.*``) and GA (``response.output_text.*``, ``response.output_audio.*``); the
lifecycle events the gate cares about have the same names in both.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "ANSWERS",
    "CANCEL_NOT_ACTIVE",
    "CONFLICT",
    "FATAL_ERRORS",
    "METADATA_KEY",
    "OUTPUT_DELTAS",
    "SESSION_ERRORS",
    "UNANSWERED",
    "EventKind",
    "MalformedFrame",
    "ServerError",
    "classify",
    "parse_error",
    "response_id_of",
]

Event = dict[str, Any]

RESPONSE_CREATED = "response.created"
RESPONSE_DONE = "response.done"
#: Not in the API specification (cancellation arrives as ``response.done`` with status
#: ``cancelled``), but named in one official guide and sent by some servers: an alias of done.
RESPONSE_CANCELLED = "response.cancelled"
ERROR = "error"

CONFLICT = "conversation_already_has_active_response"
CONFLICT_MESSAGE_PREFIX = "Conversation already has an active response"
CANCEL_NOT_ACTIVE = "response_cancel_not_active"
#: Errors about the session itself, answers to no client event: the cap, and refusals no new
#: connection can heal (the last four).
SESSION_EXPIRED = "session_expired"
FATAL_ERRORS = frozenset(
    {"invalid_api_key", "insufficient_quota", "account_deactivated", "billing_hard_limit_reached"}
)
SESSION_ERRORS = FATAL_ERRORS | {SESSION_EXPIRED}

#: The ``response.metadata`` key under which each request carries its ``event_id``.
METADATA_KEY = "trio_realtime_request"

#: ``response.*`` events that carry no ``response_id`` in the API.
_NO_RESPONSE_ID = ("response.mcp_call.",)

_RESPONSE_ID = re.compile(r"\bresp_[A-Za-z0-9_-]+")


class MalformedFrame(ValueError):
    """A frame that is not a JSON object with a string ``type``."""


class EventKind(enum.Enum):
    """What the session does with a server event."""

    CREATED = "created"  #: ``response.created``
    DONE = "done"  #: ``response.done`` or ``response.cancelled``
    ERROR = "error"  #: ``error``
    RESPONSE = "response"  #: any other event that names its response (deltas, items, parts)
    ACK = "ack"  #: the acknowledgement of a client event (``session.updated``, ...)
    OTHER = "other"  #: everything else: subscribers only


#: The server event(s) that answer a client event, by the client event's type (spec). A
#: client event whose type is not here and is not in :data:`UNANSWERED` is answered only by
#: an error, if at all.
ANSWERS: Mapping[str, tuple[str, ...]] = {
    "session.update": ("session.updated",),
    "transcription_session.update": ("transcription_session.updated",),
    "conversation.item.create": ("conversation.item.created", "conversation.item.added"),
    "conversation.item.delete": ("conversation.item.deleted",),
    "conversation.item.truncate": ("conversation.item.truncated",),
    "conversation.item.retrieve": ("conversation.item.retrieved",),
    "input_audio_buffer.commit": ("input_audio_buffer.committed",),
    "input_audio_buffer.clear": ("input_audio_buffer.cleared",),
    "output_audio_buffer.clear": ("output_audio_buffer.cleared",),
}
#: The output deltas of a response, both dialects: the first one is "time to first output"
#: (first token, first audio).
OUTPUT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.text.delta",
        "response.audio.delta",
        "response.audio_transcript.delta",
        "response.function_call_arguments.delta",
    }
)
#: Client events the protocol never acknowledges (spec: "unacknowledged").
UNANSWERED = frozenset({"input_audio_buffer.append"})

_LIFECYCLE = {
    RESPONSE_CREATED: EventKind.CREATED,
    RESPONSE_DONE: EventKind.DONE,
    RESPONSE_CANCELLED: EventKind.DONE,
    ERROR: EventKind.ERROR,
    **{answer: EventKind.ACK for answers in ANSWERS.values() for answer in answers},
}


def classify(event: Mapping[str, Any]) -> EventKind:
    """Classify a parsed event (see :class:`EventKind`).

    Raises :class:`MalformedFrame` for an event the session would act on that lacks what it
    needs: a lifecycle event without a response id (or, for ``error``, without an ``error``
    object), or an event of a response (``response.*``) without a string ``response_id``.
    """
    event_type: str = event["type"]
    kind = _LIFECYCLE.get(event_type)
    if kind is EventKind.ERROR:
        if not isinstance(event.get("error"), Mapping):
            raise MalformedFrame("error event without an 'error' object")
        return kind
    if kind is EventKind.ACK:
        return kind
    if kind is not None:
        if response_id_of(event) is None:
            raise MalformedFrame(f"{event_type} without a response id")
        return kind
    if isinstance(event.get("response_id"), str):
        return EventKind.RESPONSE
    if event_type.startswith("response.") and not event_type.startswith(_NO_RESPONSE_ID):
        raise MalformedFrame(f"{event_type} without a string response_id")
    return EventKind.OTHER


def response_object(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``response`` object of a lifecycle event; an empty mapping when absent or invalid."""
    response = event.get("response")
    return response if isinstance(response, Mapping) else {}


def response_id_of(event: Mapping[str, Any]) -> str | None:
    """The id of the response an event belongs to, wherever the event carries it."""
    rid = event.get("response_id")
    if isinstance(rid, str):
        return rid
    rid = response_object(event).get("id")
    return rid if isinstance(rid, str) else None


def request_key_of(response: Mapping[str, Any]) -> str | None:
    """The request ``event_id`` the library put in ``response.metadata``, if any."""
    metadata = response.get("metadata")
    if isinstance(metadata, Mapping):
        key = metadata.get(METADATA_KEY)
        if isinstance(key, str):
            return key
    return None


def is_in_band(response: Mapping[str, Any]) -> bool:
    """Whether a response writes to the default conversation (and so needs the slot).

    Out-of-band responses carry ``conversation_id: null``. A response object without the key
    (older servers) is taken as in-band: wrongly claiming the slot costs a short wait, wrongly
    ignoring it costs a rejection.
    """
    return "conversation_id" not in response or response["conversation_id"] is not None


def status_of(response: Mapping[str, Any], event_type: str) -> str:
    """The final status of a response from its ``response.done`` (or ``response.cancelled``)."""
    status = response.get("status")
    if isinstance(status, str) and status != "in_progress":
        return status
    return "cancelled" if event_type == RESPONSE_CANCELLED else "completed"


@attrs.frozen
class ServerError:
    """The parts of an ``error`` event the gate needs."""

    code: str | None
    message: str
    #: The client ``event_id`` of the event that caused it, if the server echoed it.
    client_event_id: str | None
    param: str | None = None

    @property
    def is_conflict(self) -> bool:
        """The one-active-response rejection, by code or (older servers) by message prefix."""
        if self.code is not None:
            return self.code == CONFLICT
        return self.message.startswith(CONFLICT_MESSAGE_PREFIX)

    @property
    def blocking_response_id(self) -> str | None:
        """For a conflict: the id of the response in the way (only the message names it)."""
        match = _RESPONSE_ID.search(self.message)
        return match.group(0) if match else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_error(event: Mapping[str, Any]) -> ServerError:
    """Read an ``error`` event; tolerant of missing or mistyped fields."""
    error = event.get("error")
    if not isinstance(error, Mapping):
        error = {}
    message = error.get("message")
    return ServerError(
        code=_str_or_none(error.get("code")),
        message=message if isinstance(message, str) else "",
        client_event_id=_str_or_none(error.get("event_id")),
        param=_str_or_none(error.get("param")),
    )
