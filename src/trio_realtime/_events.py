"""Server events: classifying events, and the lifecycle views the gate reads.

Pure functions, no I/O. Both dialects are understood: beta (``response.text.*``,
``response.audio.*``) and GA (``response.output_text.*``, ``response.output_audio.*``); the
lifecycle events the gate cares about have the same names in both.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

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
    "Acknowledgement",
    "Created",
    "Done",
    "EventKind",
    "MalformedFrame",
    "OutputAlive",
    "ServerError",
    "ServerEvent",
    "classify",
    "kind_of",
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


# ---------------------------------------------------------------------- what the gate reads


@attrs.frozen
class Created:
    """A ``response.created``."""

    response_id: str
    #: The request ``event_id`` the library put in ``response.metadata``, if any.
    request_key: str | None
    #: Whether it writes to the default conversation (see :func:`is_in_band`).
    in_band: bool


@attrs.frozen
class Done:
    """A ``response.done`` (or its alias ``response.cancelled``)."""

    response_id: str
    request_key: str | None
    #: From the response object; an alias, which carries none, counts as in-band.
    in_band: bool
    #: The final status: ``completed``, ``cancelled``, ``failed``, ``incomplete`` (or another
    #: a server invents).
    status: str
    #: The ``response`` object (empty for the alias).
    response: Mapping[str, Any]


@attrs.frozen
class Acknowledgement:
    """A server event that answers a client event (``session.updated``, ...)."""

    type: str
    #: The ``item.id`` it carries (``conversation.item.created`` / ``.added``), if any.
    item_id: str | None


class OutputAlive(NamedTuple):
    """Any other event that names its response (deltas, items, parts): the response lives.

    (A ``NamedTuple`` rather than an attrs class: one is made for every delta, the hot path,
    and a tuple is the cheapest frozen record to make.)
    """

    response_id: str
    #: An output delta (text, audio, transcript, arguments): "time to first output".
    output: bool
    #: For a ``response.output_item.added`` of a ``function_call`` item: its ``call_id``.
    call_id: str | None = None


#: What the gate consumes: every event is read into one of these once, at the door.
ServerEvent = Created | Done | ServerError | Acknowledgement | OutputAlive

_KINDS: Mapping[type, EventKind] = {
    Created: EventKind.CREATED,
    Done: EventKind.DONE,
    ServerError: EventKind.ERROR,
    Acknowledgement: EventKind.ACK,
    OutputAlive: EventKind.RESPONSE,
}


def kind_of(view: ServerEvent | None) -> EventKind:
    """The :class:`EventKind` of what :func:`classify` read."""
    return EventKind.OTHER if view is None else _KINDS[type(view)]


def classify(event: Mapping[str, Any]) -> ServerEvent | None:
    """Read a parsed event into the record the gate consumes, once; None for an event only
    subscribers care about.

    Raises :class:`MalformedFrame` for an event the session would act on that lacks what it
    needs: a lifecycle event without a response id (or, for ``error``, without an ``error``
    object), or an event of a response (``response.*``) without a string ``response_id``.
    """
    event_type: str = event["type"]
    kind = _LIFECYCLE.get(event_type)
    if kind is EventKind.ERROR:
        if not isinstance(event.get("error"), Mapping):
            raise MalformedFrame("error event without an 'error' object")
        return parse_error(event)
    if kind is EventKind.ACK:
        item = event.get("item")
        item_id = item.get("id") if isinstance(item, Mapping) else None
        return Acknowledgement(event_type, item_id if isinstance(item_id, str) else None)
    if kind is not None:
        rid = response_id_of(event)
        if rid is None:
            raise MalformedFrame(f"{event_type} without a response id")
        response = response_object(event)
        if kind is EventKind.CREATED:
            created_id = response.get("id")
            if not isinstance(created_id, str):
                return None  # names its response only outside the object: nothing to hold
            return Created(created_id, request_key_of(response), is_in_band(response))
        status = status_of(response, event_type)
        return Done(rid, request_key_of(response), is_in_band(response), status, response)
    rid = event.get("response_id")
    if isinstance(rid, str):
        call_id = None
        if event_type == "response.output_item.added":
            item = event.get("item")
            if isinstance(item, Mapping) and item.get("type") == "function_call":
                call = item.get("call_id")
                call_id = call if isinstance(call, str) else None
        return OutputAlive(rid, event_type in OUTPUT_DELTAS, call_id)
    if event_type.startswith("response.") and not event_type.startswith(_NO_RESPONSE_ID):
        raise MalformedFrame(f"{event_type} without a string response_id")
    return None
