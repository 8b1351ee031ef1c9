"""The gate's states, their tables of moves, and the records it keeps: no behaviour.

Read with the rules in :mod:`trio_realtime._gate` (the numbers in comments are theirs). Like
h11's ``_state.py``: each thing that changes has one closed set of states, and every move is
looked up in a table keyed by (state, trigger); the gate raises on a miss.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import attrs

from ._errors import RealtimeError
from ._events import ServerError
from ._result import ResponseResult

__all__ = [
    "RESPONSE_MOVES",
    "SLOT_MOVES",
    "TICKET_MOVES",
    "CancelTarget",
    "Effects",
    "OwnerT",
    "Request",
    "Response",
    "ResponseState",
    "ResponseTrigger",
    "Slot",
    "SlotState",
    "SlotTrigger",
    "TicketState",
    "TicketTrigger",
    "queue_key",
]

Event = dict[str, Any]


class TicketState(enum.Enum):
    """Where a request is. ``DONE`` and ``FAILED`` are terminal."""

    QUEUED = "queued"  #: waiting for the slot (or for its turn's function results)
    SENT = "sent"  #: ``response.create`` sent, no ``response.created`` yet
    ACTIVE = "active"  #: ``response.created`` seen, no ``response.done`` yet
    DONE = "done"  #: finished: see the result's status (cancelled before sending included)
    FAILED = "failed"  #: rejected, timed out, or the session ended first

    @property
    def terminal(self) -> bool:
        return self in (TicketState.DONE, TicketState.FAILED)


_Q, _S, _A, _D, _F = (
    TicketState.QUEUED,
    TicketState.SENT,
    TicketState.ACTIVE,
    TicketState.DONE,
    TicketState.FAILED,
)


class TicketTrigger(enum.Enum):
    """What moves a request."""

    SEND = "its response.create sent"
    CONFLICT = "a conflict sent it back (rule 4)"
    CREATED = "its response.created"
    FINISH = "its response ended, or it was cancelled"
    FAIL = "rejected, timed out, or the connection or session ended"


_TT = TicketTrigger

#: A request's moves: the next state, looked up from (state, trigger). A miss is a bug and
#: raises; ``DONE`` and ``FAILED`` have no moves.
TICKET_MOVES: Mapping[tuple[TicketState, TicketTrigger], TicketState] = {
    (_Q, _TT.SEND): _S,
    (_Q, _TT.FINISH): _D,  # cancelled before it was sent (rule 6)
    (_Q, _TT.FAIL): _F,  # the session ended
    (_S, _TT.CONFLICT): _Q,
    (_S, _TT.CREATED): _A,
    (_S, _TT.FINISH): _D,  # done without created (rule 9), or cancelled at a conflict
    (_S, _TT.FAIL): _F,  # rejected, timed out, or its connection lost
    (_A, _TT.FINISH): _D,
    (_A, _TT.FAIL): _F,  # force-released, or its connection lost
}


class SlotState(enum.Enum):
    """Who holds the one in-band slot."""

    FREE = "free"
    #: Our in-band request is in flight (sent, not yet created): its answer is to come.
    RESERVED = "reserved"
    #: A response runs, ours or the server's (possibly known only from a conflict message).
    HELD = "held"
    #: A conflict said a response runs, without naming it (rule 4): a response like any
    #: other, whose id its first in-band ``response.done`` shows; a new in-band
    #: ``response.created`` supersedes it (rule 3); or its deadline passes (rule 7).
    HELD_UNNAMED = "held by an unnamed response"


class SlotTrigger(enum.Enum):
    """What moves the slot (rule 3, 4, 7, 10, 11)."""

    SEND = "a create sent"
    CREATED = "an in-band response started"
    CONFLICT_RUNS = "conflict: the blocker runs"
    CONFLICT_ENDED = "conflict: the blocker has ended, retry at once"
    CONFLICT_UNSEEN = "conflict: a response not yet seen runs"
    ANSWERED = "the request in flight was answered without a response"
    ENDED = "the holder ended"
    BACK = "the holder ended: back to the overtaken request"
    OVERTAKEN_RUNS = "the holder ended: the overtaken request's response runs"
    GONE = "the connection was lost, or the gate closed"


_FREE, _RESERVED, _HELD, _UNNAMED = SlotState
_T = SlotTrigger

#: The slot's moves: the next state, looked up from (state, trigger). A miss is a bug and
#: raises. ``HELD_UNNAMED`` is entered only from ``RESERVED`` (a conflict of our request in
#: flight), so it never has an overtaken request to go back to.
SLOT_MOVES: Mapping[tuple[SlotState, SlotTrigger], SlotState] = {
    (_FREE, _T.SEND): _RESERVED,
    (_FREE, _T.CREATED): _HELD,
    (_RESERVED, _T.CREATED): _HELD,  # ours, or one overtaking ours
    (_RESERVED, _T.CONFLICT_RUNS): _HELD,
    (_RESERVED, _T.CONFLICT_ENDED): _FREE,
    (_RESERVED, _T.CONFLICT_UNSEEN): _UNNAMED,
    (_RESERVED, _T.ANSWERED): _FREE,  # rejected, timed out, or done without created
    (_HELD, _T.CREATED): _HELD,  # a newer response: the holder ended (rule 3)
    (_HELD, _T.ENDED): _FREE,
    (_HELD, _T.BACK): _RESERVED,
    (_HELD, _T.OVERTAKEN_RUNS): _HELD,
    (_UNNAMED, _T.CREATED): _HELD,
    (_UNNAMED, _T.ENDED): _FREE,
    **{(state, _T.GONE): _FREE for state in SlotState},
}


class ResponseState(enum.Enum):
    """Where a response the server runs is, as far as the gate knows."""

    #: Known only from a conflict (named, or, with no id, naming none): no created yet.
    NAMED = "named"
    #: Known only from a conflict, and a cancel was sent: the server cannot have honoured it
    #: (before a response exists it answers ``response_cancel_not_active``), so its
    #: ``response.created`` brings a cancel by id again (rule 7).
    NAMED_CANCELLED = "named, cancel sent"
    RUNNING = "running"  #: its ``response.created`` came
    #: Running, cancel sent: its ``response.done`` is due within ``cancel_grace``.
    CANCELLING = "cancelling"
    #: Done, force-released, superseded by a newer in-band response, or gone with its
    #: connection.
    ENDED = "ended"


class ResponseTrigger(enum.Enum):
    CREATED = "created"
    CANCEL = "cancel"
    END = "end"


_NAMED, _NAMED_CANCELLED, _RUNNING, _CANCELLING, _ENDED = ResponseState
_R = ResponseTrigger

#: A response's moves, looked up from (state, trigger); a miss is a bug and raises.
RESPONSE_MOVES: Mapping[tuple[ResponseState, ResponseTrigger], ResponseState] = {
    (_NAMED, _R.CREATED): _RUNNING,
    (_NAMED_CANCELLED, _R.CREATED): _RUNNING,  # and cancelled again, by id (rule 7)
    (_NAMED, _R.CANCEL): _NAMED_CANCELLED,
    (_NAMED_CANCELLED, _R.CANCEL): _NAMED_CANCELLED,  # once is enough before it exists
    (_RUNNING, _R.CANCEL): _CANCELLING,
    (_CANCELLING, _R.CANCEL): _CANCELLING,  # idempotent
    **{(state, _R.END): _ENDED for state in (_NAMED, _NAMED_CANCELLED, _RUNNING, _CANCELLING)},
}


#: The shell's handle on a request (the session's ticket).
OwnerT = TypeVar("OwnerT")


@attrs.define(eq=False, repr=False)
class Request(Generic[OwnerT]):
    """One requested response, from submission to its terminal state."""

    body: Mapping[str, Any]
    priority: int
    seq: int
    takes_slot: bool
    queued_at: float
    #: ``event_id`` of its ``response.create``, also in ``metadata``; the same on every attempt.
    event_id: str
    state: TicketState = TicketState.QUEUED
    response_id: str | None = None
    result: ResponseResult | None = None
    error: RealtimeError | None = None
    attempts: int = 0
    cancel_requested: bool = False
    #: How many in-band responses the gate had seen end when it last went into the queue
    #: (rule 4: an old-shape conflict is retried at once only if one ended since).
    ends_seen: int = 0
    sent_at: float | None = None
    created_at: float | None = None
    #: When its first output delta (text, audio, transcript, arguments) arrived.
    first_output_at: float | None = None
    finished_at: float | None = None
    #: The key of its live entry in the gate's deadline heap (inf: none).
    scheduled: float = math.inf
    #: The shell's handle on this request (the session's ticket), made by the ``owner``
    #: function given to :meth:`Gate.submit`. The gate never touches it.
    owner: OwnerT = attrs.field(init=False)

    @property
    def in_band(self) -> bool:
        """Whether its response writes to the default conversation."""
        return bool(self.body.get("conversation", "auto") != "none")

    def __repr__(self) -> str:
        return (
            f"<Request #{self.seq} {self.state.value} priority={self.priority}"
            f" response_id={self.response_id!r}>"
        )


def queue_key(request: Request[Any]) -> tuple[int, ...]:
    """The queue's order (rule 5): a conflict retry first, then priority, then FIFO."""
    if request.attempts:
        return (0, request.seq)
    return (1, -request.priority, request.seq)


@attrs.define(eq=False)
class Response:
    """A response the server runs, ours (``request``) or not."""

    response_id: str | None  #: None: one a conflict reported without naming it
    request: Request[Any] | None
    in_band: bool
    #: Activity deadline, or after a cancel, the end of the grace period.
    deadline: float
    state: ResponseState = ResponseState.RUNNING
    #: The key of its live entry in the gate's deadline heap (inf: none).
    scheduled: float = math.inf

    @property
    def writes_conversation(self) -> bool:
        """Whether it really writes to the default conversation (an out-of-band request of
        ours may hold the slot by configuration: its end proves nothing about the in-band
        one)."""
        return self.request.in_band if self.request is not None else self.in_band


#: What :meth:`Gate.cancel_active` returns for :meth:`Gate.is_finished` to watch.
CancelTarget = Request[Any] | Response


@attrs.frozen
class Slot:
    """The slot's state and just what that state needs."""

    state: SlotState
    #: RESERVED: the request in flight.
    request: Request[Any] | None = None
    #: HELD / HELD_UNNAMED: the response running.
    response: Response | None = None
    #: HELD: our request in flight that this response overtook; the slot goes back to it when
    #: the response ends, if its answer is still to come.
    displaced: Request[Any] | None = None

    @property
    def holder(self) -> Request[Any] | str | None:
        """A request in flight, a response id, ``"?"`` for an unnamed response, or None."""
        if self.request is not None:
            return self.request
        if self.response is not None:
            return self.response.response_id or "?"
        return None


_FREE_SLOT = Slot(_FREE)


@attrs.define
class Effects(Generic[OwnerT]):
    """What the gate decided since the shell last looked."""

    #: Client events to send, in this order.
    send: list[Event] = attrs.Factory(list)
    #: Each move of a request, in order: the request and the state it moved to.
    changed: list[tuple[Request[OwnerT], TicketState]] = attrs.Factory(list)
    #: Responses that ended (``response.done``, or force-released), with their ``response``
    #: object (empty when force-released).
    ended: list[tuple[str, Mapping[str, Any]]] = attrs.Factory(list)
    #: The application's client events the server rejected (rule 2): the event id, its type
    #: and the error. The shell tells whoever waits for that answer, or logs it.
    rejected: list[tuple[str, str, ServerError]] = attrs.Factory(list)

    def __bool__(self) -> bool:
        return bool(self.send or self.changed or self.ended or self.rejected)
