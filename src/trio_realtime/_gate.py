"""The one-active-response rules, as a plain state machine: no sockets, no clock, no Trio.

The Realtime API lets one response at a time write to the default conversation. The gate
decides, for every request and every server event, who holds that right (the *slot*) and what
the client must send. It is told everything that happens, through one method per kind of input:

- :meth:`Gate.submit`, :meth:`Gate.function_result`, :meth:`Gate.cancel`,
  :meth:`Gate.cancel_active` and :meth:`Gate.client_event_sent`: the application;
- :meth:`Gate.receive`: every server event the gate cares about, read once at the door into
  a small record (:func:`~trio_realtime._events.classify`), in arrival order
  (:meth:`Gate.receive_event` reads and applies a raw event);
- :meth:`Gate.tick`: the clock, whenever :meth:`Gate.next_deadline` has passed;
- :meth:`Gate.pump`: the one place where the slot is taken for a queued request and its
  ``response.create`` is emitted (the session's dispatcher task calls it, and only it);
- :meth:`Gate.close`: the end.

It never calls out. What it decided waits in :class:`Effects` (client events to send, in wire
order; requests that moved; responses that ended) until the shell takes it with
:meth:`Gate.take_effects`. The rules are below, numbered once: code comments and tests use
the same numbers. The states and their tables (:data:`SLOT_MOVES`, :data:`RESPONSE_MOVES`,
:data:`TICKET_MOVES`) are in :mod:`trio_realtime._gate_states`: every move is looked up there,
and a miss is a bug that raises. (This module is longer than the house's ~600 lines on
purpose: it is one state machine, its rules and the code applying them read top-down in one
place; splitting the entry points from the rules they share would scatter each rule.)

The rules
---------

1. **Correlation.** Every request's ``response.create`` carries a unique ``event_id`` and the
   same id in ``response.metadata[METADATA_KEY]`` (the same on every attempt: an attempt's
   answer always comes before the next attempt is sent). ``response.created`` and
   ``response.done`` are matched by that metadata, errors by ``error.event_id``.
2. **Errors without ``error.event_id``.** The server reads client events in order and answers
   each as it reads it (an error, or an acknowledgement such as ``session.updated``), so the
   answer to one event answers every event sent before it too. An error without an
   ``event_id`` is the answer of:

   - the oldest unanswered in-band ``response.create``, if it is the conflict (rule 4), even
     one whose request already timed out: only a create can cause it;
   - nobody's, if it is ``response_cancel_not_active`` (a cancel's: harmless), or an error
     about the session itself (``session_expired``, ``invalid_api_key``, ...);
   - the oldest unanswered ``response.create``, if its ``param`` starts with ``response``;
   - otherwise the oldest client event still awaiting an answer, if the application sent it
     (the error is logged); or the oldest ``response.create``, only when it is the *only*
     event still awaiting an answer (its ``response.created`` may come after later events'
     answers, so while anything sent after it is unanswered the error may be theirs: it is
     logged, not attributed).

   A client event awaits an answer from when it is sent until its answer arrives (an error
   naming it, or the acknowledgement :data:`~trio_realtime._events.ANSWERS` lists; for a
   ``response.create``, its ``response.created``, ``response.done`` or error), until an event
   sent after it is answered, or until ``created_timeout`` has passed (for a create: after
   its request timed out), after which no answer is expected any more.
   ``input_audio_buffer.append`` is never answered (the protocol does not acknowledge it), so
   it never awaits one; nor does a ``response.cancel``, answered only by its response's end or
   ``response_cancel_not_active``. The bookkeeping is :class:`~trio_realtime._answers.Unanswered`.
3. **The slot** is a capacity-one semaphore whose holder is on record (see :class:`Slot`). A
   queued in-band request is sent only when it is free, and reserves it. An in-band
   ``response.created`` that matches no request (voice activity detection, another
   connection) holds it until its ``response.done``; if it overtook our request in flight,
   the slot goes back to that request afterwards (its answer is still to come). A new
   in-band ``response.created`` while another response holds the slot means that one ended
   (its done was lost): the new one holds it, and the old one ends if the server started it
   (ours is kept until its done or its deadline: its request is still to be answered).
4. **Conflict.** ``conversation_already_has_active_response`` puts the request back at the
   head of the queue, never failing it. A conflict proves that something runs: the slot
   passes to the response in the way. That is the one the message names (released at once if
   its done already came), or, when the message names none, the in-band response known to
   run. When none is known to run, the request is retried at once only if an in-band
   response is known to have ended (its ``response.done`` came) since the request last went
   into the queue: the server may name a response as active a moment after its done. Else
   the blocker has not shown itself yet (its ``response.created`` may come after the
   conflict): the slot is held for an unnamed response until the next in-band
   ``response.created`` -> ``response.done`` (any in-band done), or its deadline (rule 7).
   Any other error for a request fails it with :class:`ResponseRejected`.
5. **Order.** Queued requests go by priority, then FIFO; a request sent back by a conflict
   goes first. Priorities order only what is still queued: a request is marked ``SENT`` in
   the step that emits its ``response.create``, and the shell writes the emitted events in
   order, so no create overtakes one already ``SENT``.
6. **Cancel.** A queued request is dropped and never sent; a sent one is cancelled by id as
   soon as its ``response.created`` arrives (the server cannot cancel it before: it answers
   ``response_cancel_not_active`` and starts it anyway); an active one gets
   ``response.cancel`` with its id. ``cancel_active`` interrupts whatever holds the slot;
   ``interrupt`` stops every response the user may hear: each running response, in-band or
   out-of-band, ours or the server's, is cancelled by id (one known only from a conflict, by
   the in-band cancel without id), and every request in flight once it is created. Queued
   requests stay queued.
7. **Deadlines.** No ``response.created`` within ``created_timeout``: the request fails with
   :class:`ResponseTimeout`, and its late ``response.created`` is cancelled by id whenever it
   comes, whatever happened before (a cancel sent before a response's ``response.created``,
   answered ``response_cancel_not_active``, cancelled nothing: once it is created, it is
   cancelled by id again). No event of a running response within ``response_timeout``: it is
   cancelled by id; no ``response.done`` within ``cancel_grace`` after any cancel: the slot is
   force-released and the response counts as ended. Deadlines are kept in a heap: the cost of
   an event does not grow with the responses held.
8. **Out-of-band** requests (``"conversation": "none"``) skip the slot unless configured
   otherwise.
9. **Tolerance.** Unknown ids, duplicates, a ``response.done`` without its
   ``response.created`` (it finishes the request its metadata names) are tolerated. So is a
   flood of responses that never end: a server-started in-band response superseded by a newer
   one ends then (rule 3), and at most 256 server-started out-of-band ones are remembered (the
   oldest is forgotten, never cancelled), so what the gate holds, the work each event costs
   and the cancels a server can provoke stay bounded.
10. **A new connection.** :meth:`Gate.connection_lost` fails every request whose
    ``response.create`` went out on the lost connection (``SENT`` or ``ACTIVE``: nobody knows
    whether the server ran it, so it is never resent), forgets every response and unanswered
    event of that connection, frees the slot and pauses the queue; queued and held requests
    stay, in their order, and go out on the new connection once :meth:`Gate.resume` is
    called. :meth:`Gate.pause` stops the queue for a planned switch, which waits until the
    gate is :attr:`Gate.quiet` (nothing in flight, no response running).
11. **The end.** :meth:`Gate.close` fails every request still waiting; later submits raise.
12. **Function-call turns.** The results of one response's function calls share one
    follow-up request (:meth:`Gate.function_result`): held until that response ended (its
    ``response.done``, or given up under rule 7, 9 or 10) and every call it made (its
    ``function_call`` items) has a result, then queued. One ``response.create`` per turn,
    never before its response ended.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic

from ._answers import Unanswered
from ._errors import QueueFull, RealtimeError, ResponseRejected, ResponseTimeout
from ._events import (
    CANCEL_NOT_ACTIVE,
    METADATA_KEY,
    Created,
    Done,
    OutputAlive,
    ServerError,
    ServerEvent,
    classify,
)
from ._gate_states import (
    RESPONSE_MOVES,
    SLOT_MOVES,
    TICKET_MOVES,
    CancelTarget,
    Effects,
    OwnerT,
    Request,
    Response,
    ResponseState,
    ResponseTrigger,
    Slot,
    SlotState,
    SlotTrigger,
    TicketState,
    TicketTrigger,
    queue_key,
)
from ._result import ResponseResult
from ._statistics import STATUS_COUNTS, GateStatistics
from ._turns import Turns
from ._util import LastN, cap

__all__ = [
    "RESPONSE_MOVES",
    "SLOT_MOVES",
    "TICKET_MOVES",
    "CancelTarget",
    "Effects",
    "Gate",
    "GateStatistics",
    "Request",
    "Response",
    "ResponseState",
    "Slot",
    "SlotState",
    "TicketState",
    "queue_key",
]

logger = logging.getLogger(__name__)

Event = dict[str, Any]

#: How many finished response ids, abandoned requests and unanswered events are remembered.
_MEMORY = 256

_FREE, _RESERVED, _HELD, _UNNAMED = SlotState
_T = SlotTrigger
_NAMED, _NAMED_CANCELLED, _RUNNING, _CANCELLING, _ENDED = ResponseState
_R = ResponseTrigger
_TT = TicketTrigger
_FREE_SLOT = Slot(_FREE)


def _new_id_factory() -> Callable[[], str]:
    prefix = f"trq_{secrets.token_hex(4)}_"
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


# ---------------------------------------------------------------------- the gate


class Gate(Generic[OwnerT]):
    """The rules of the slot. See the module docstring. ``OwnerT`` is the type of the shell's
    handle on each request (see :attr:`Request.owner`)."""

    def __init__(
        self,
        *,
        max_queue: int = 1024,
        created_timeout: float = 10.0,
        response_timeout: float = 30.0,
        cancel_grace: float = 5.0,
        out_of_band_takes_slot: bool = False,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self._max_queue = max_queue
        self._created_timeout = created_timeout
        self._response_timeout = response_timeout
        self._cancel_grace = cancel_grace
        self._oob_takes_slot = out_of_band_takes_slot
        self._new_id = new_id or _new_id_factory()
        self._seq = itertools.count(1)  # requests are numbered #1, #2, ... in logs
        self._slot = _FREE_SLOT
        # Requests by stage: QUEUED ones are in exactly one of the first three.
        self._queue: list[tuple[tuple[int, ...], Request[OwnerT]]] = []  # a heap (rule 5)
        self._free_lane: deque[Request[OwnerT]] = deque()  # sent at once, no slot needed
        self._held: set[Request[OwnerT]] = set()  # follow-ups waiting for their turn (rule 12)
        self._sent: dict[str, Request[OwnerT]] = {}  # by event_id
        #: Running, by response id; the one a conflict reported without naming it (rule 4)
        #: under None until its first event shows its id.
        self._responses: dict[str | None, Response] = {}
        #: Server-started out-of-band responses running, oldest first (rule 9: bounded).
        self._strays: OrderedDict[str, None] = OrderedDict()
        #: Deadlines of requests in flight and responses running (rule 7), lazily: an entry
        #: whose key is not its item's ``scheduled`` any more, or whose item left, is skipped.
        self._deadlines: list[tuple[float, int, Request[OwnerT] | Response]] = []
        self._deadline_seq = itertools.count()
        #: In-band responses seen to end (rule 4).
        self._ends = 0
        self._unanswered = Unanswered(timeout=created_timeout)  # rule 2
        self._abandoned: LastN[str, None] = LastN(_MEMORY)  # requests given up before created
        self._finished: LastN[str, None] = LastN(_MEMORY)  # responses whose done was seen
        self._cancel_ids: LastN[str, None] = LastN(_MEMORY)
        self._turns: Turns[Request[OwnerT]] = Turns()  # rule 12
        self._effects: Effects[OwnerT] = Effects()
        self._paused = False
        self._closed: RealtimeError | None = None
        self._counts = dict.fromkeys(GateStatistics.counts(), 0)

    # ------------------------------------------------------------------ introspection

    @property
    def slot(self) -> Slot:
        return self._slot

    @property
    def slot_holder(self) -> Request[OwnerT] | str | None:
        """The slot's holder: a request in flight, a response id, ``"?"``, or None."""
        return self._slot.holder

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def sendable(self) -> bool:
        """Whether :meth:`pump` would send something now."""
        if self._paused:
            return False
        return bool(self._free_lane) or (
            self._slot.state is _FREE and self._queue_head() is not None
        )

    @property
    def quiet(self) -> bool:
        """Nothing in flight and no response running: a connection can be switched."""
        return self._slot.state is _FREE and not self._sent and not self._responses

    def active_response_ids(self) -> list[str]:
        return [rid for rid in self._responses if rid is not None]

    def pending(self) -> Iterator[Request[OwnerT]]:
        """Every request not yet terminal."""
        yield from (r for _, r in self._queue)
        yield from self._free_lane
        yield from self._held
        yield from self._sent.values()
        yield from (r.request for r in self._responses.values() if r.request is not None)

    def statistics(self) -> GateStatistics:
        return GateStatistics(
            queue_depth=self._waiting,
            in_flight=len(self._sent),
            active_response_id=self._slot.response.response_id if self._slot.response else None,
            slot_busy=self._slot.state is not _FREE,
            **self._counts,
        )

    @property
    def _waiting(self) -> int:
        """Requests QUEUED: waiting for the slot, to go out, or for their turn."""
        return len(self._queue) + len(self._free_lane) + len(self._held)

    def is_held(self, request: Request[OwnerT]) -> bool:
        """Whether a request waits for its turn's function results (rule 12)."""
        return request in self._held

    def next_deadline(self) -> float:
        """The earliest time at which :meth:`tick` may have work to do (never later than the
        real next deadline; a response's activity moves its deadline without a new entry)."""
        heap = self._deadlines
        while heap and not self._scheduled(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def take_effects(self) -> Effects[OwnerT] | None:
        """What was decided since the last call, or None if nothing was."""
        effects = self._effects
        if not effects:
            return None
        self._effects = Effects()
        return effects

    # ------------------------------------------------------------------ the application

    def submit(
        self,
        body: Mapping[str, Any],
        *,
        priority: int = 0,
        now: float,
        owner: Callable[[Request[OwnerT]], OwnerT],
        held: bool = False,
    ) -> Request[OwnerT]:
        """Queue a request with ``body``, checked where it came in
        (:func:`~trio_realtime._request_body.response_body`). ``held`` ones wait for
        :meth:`release_held` before they queue. ``owner`` makes the shell's handle on it
        (:attr:`Request.owner`).

        Raises the close error once closed, :class:`QueueFull` when ``max_queue`` wait.
        """
        if self._closed is not None:
            raise self._closed
        if self._waiting >= self._max_queue:
            raise QueueFull(f"{self._waiting} requests already wait (max_queue)")
        request = Request[OwnerT](
            body=body,
            priority=priority,
            seq=next(self._seq),
            event_id=self._new_id(),
            takes_slot=self._oob_takes_slot or body.get("conversation", "auto") != "none",
            queued_at=now,
        )
        request.owner = owner(request)
        if held:
            self._held.add(request)
        else:
            self._enqueue(request)
        return request

    def release_held(self, request: Request[OwnerT]) -> None:
        """Let a held request (a function-call follow-up) join the queue."""
        if request in self._held:
            self._held.discard(request)
            self._enqueue(request)

    def function_result(
        self,
        call_id: str,
        body: Mapping[str, Any],
        *,
        priority: int = 0,
        now: float,
        owner: Callable[[Request[OwnerT]], OwnerT],
    ) -> Request[OwnerT]:
        """The application sent a function call's result: the follow-up request it belongs
        to (rule 12). The results of one turn share one follow-up, queued once the response
        that made the calls ended and every call has a result; a call never seen gets a
        follow-up of its own, queued at once. ``body`` is the follow-up's (the first result
        of a turn gives it). Raises as :meth:`submit`."""
        turn = self._turns.turn_of(call_id)
        if turn is None:
            return self.submit(body, priority=priority, now=now, owner=owner)
        if turn.follow_up is None:
            turn.follow_up = self.submit(body, priority=priority, now=now, owner=owner, held=True)
        follow_up = turn.follow_up
        ready = self._turns.add_result(turn, call_id)
        if ready is not None:
            self.release_held(ready)
        return follow_up

    def cancel(self, request: Request[OwnerT], *, now: float) -> None:
        """Cancel a request at whatever stage it is (rule 6). Idempotent."""
        state = request.state
        if state is TicketState.QUEUED:
            if request in self._held:
                self._held.discard(request)
            elif request in self._free_lane:
                self._free_lane.remove(request)
            else:
                self._queue = [e for e in self._queue if e[1] is not request]
                heapq.heapify(self._queue)
            self._done(request, "cancelled", None, now)
        elif state is TicketState.SENT:
            request.cancel_requested = True
        elif state is TicketState.ACTIVE:
            request.cancel_requested = True
            response = self._responses.get(request.response_id or "")
            if response is not None:
                self._send_cancel(response, now)

    def interrupt(self, *, now: float) -> list[CancelTarget]:
        """Stop every response the user may hear (rule 6): returns what to wait for (see
        :meth:`is_finished`), the running responses first, then the requests in flight."""
        targets: list[CancelTarget] = []
        for response in list(self._responses.values()):
            if response.state is not ResponseState.ENDED:
                self._send_cancel(response, now)
                targets.append(response)
        for request in self._sent.values():
            request.cancel_requested = True
            targets.append(request)
        return targets

    def cancel_active(self, *, now: float) -> CancelTarget | None:
        """Interrupt whatever holds the slot, whoever started it (rule 6).

        Returns what to wait for (see :meth:`is_finished`), or None when the slot is free.
        """
        slot = self._slot
        if slot.request is not None:
            # Not created yet: a cancel by id is impossible. Cancel it once created, and
            # interrupt whatever else may be running (a server-started response racing it).
            slot.request.cancel_requested = True
            self._emit(self._cancel_event(None))
            return slot.request
        if slot.response is not None:
            self._send_cancel(slot.response, now)
            return slot.response
        return None

    @staticmethod
    def is_finished(target: CancelTarget) -> bool:
        if isinstance(target, Request):
            return target.state.terminal
        return target.state is ResponseState.ENDED

    def client_event_sent(self, event: Mapping[str, Any], *, now: float) -> None:
        """The application sent this client event (not a ``response.create``), in wire order."""
        self._unanswered.event_sent(event, now=now)

    # ------------------------------------------------------------------ the dispatcher

    def pump(self, *, now: float) -> None:
        """Send what may go now: free-lane requests, and the queue head if the slot is free.

        The only place a queued request takes the slot and its ``response.create`` is emitted.
        """
        if self._paused:
            return
        while self._free_lane:
            self._send(self._free_lane.popleft(), now)
        if self._slot.state is _FREE:
            request = self._queue_head()
            if request is not None:
                heapq.heappop(self._queue)
                self._move_slot(_T.SEND, "sending", request=request)
                self._send(request, now)

    # ------------------------------------------------------------------ the server

    def receive_event(self, event: Mapping[str, Any], *, now: float) -> Request[OwnerT] | None:
        """Read a server event (:func:`~trio_realtime._events.classify`) and apply it (see
        :meth:`receive`); None for an event the gate does not care about."""
        view = classify(event)
        return None if view is None else self.receive(view, now=now)

    def receive(self, event: ServerEvent, *, now: float) -> Request[OwnerT] | None:
        """Apply one server event, read once at the door; return the request it belongs to.

        Lifecycle events (created, done, error), acknowledgements of client events, and any
        event naming its response (which proves the response alive) are understood.
        """
        if isinstance(event, OutputAlive):  # the hot path: deltas
            return self._on_output(event, now)
        if isinstance(event, Created):
            return self._on_created(event, now)
        if isinstance(event, Done):
            return self._on_done(event, now)
        if isinstance(event, ServerError):
            return self._on_error(event, now)
        if self._unanswered:
            self._unanswered.acknowledged(event.type, event.item_id)
        return None

    def _on_output(self, event: OutputAlive, now: float) -> Request[OwnerT] | None:
        if event.call_id is not None:
            self._turns.note_call(event.response_id, event.call_id)
        response = self._responses.get(event.response_id)
        if response is None:
            return None
        if response.state is _RUNNING:
            response.deadline = now + self._response_timeout  # later: no new heap entry
        request = response.request
        if request is not None and event.output and request.first_output_at is None:
            request.first_output_at = now
        return request

    def _on_created(self, event: Created, now: float) -> Request[OwnerT] | None:
        rid, key = event.response_id, event.request_key
        known = self._responses.get(rid)
        if known is not None and known.state not in (_NAMED, _NAMED_CANCELLED):
            return known.request  # a duplicate
        if known is None and rid in self._finished:
            logger.debug("response.created for finished %s (duplicate or late); ignored", rid)
            return None
        if key is not None:
            self._unanswered.answered(key)
        request = self._sent.pop(key, None) if key is not None else None
        if request is not None:
            return self._request_created(request, rid, known, now)
        if known is not None:  # the blocker a conflict named: now it shows itself
            cancelled_unseen = self._response_move(known, _R.CREATED)
            self._count_or_cancel_unmatched(known, key, cancelled_unseen, now)
            return None
        running = Response(rid, None, event.in_band, now + self._response_timeout)
        self._responses[rid] = running
        self._schedule(running)
        if not event.in_band:
            self._remember_stray(rid)
        self._count_or_cancel_unmatched(running, key, False, now)
        if event.in_band:
            self._take_slot(running, "a response started")
        return None

    def _count_or_cancel_unmatched(
        self, response: Response, key: str | None, cancelled_unseen: bool, now: float
    ) -> None:
        """A created that matches no request in flight: a request we gave up on (rule 7:
        cancel it by id, whatever happened before), one cancelled before it showed itself
        (rule 7 again), or one the server started by itself."""
        if key is not None and key in self._abandoned:
            del self._abandoned[key]  # one response per request: a server cannot make more
            logger.warning("late response.created for an abandoned request: cancelling it")
            self._send_cancel(response, now)
            return
        if response.in_band:
            self._counts["server_started"] += 1
        if cancelled_unseen:
            logger.debug("%s, cancelled before it showed itself: cancelled by id", response)
            self._send_cancel(response, now)

    def _remember_stray(self, rid: str) -> None:
        """A server-started out-of-band response: at most :data:`_MEMORY` are held (rule 9)."""
        strays = self._strays
        strays[rid] = None
        if len(strays) > _MEMORY:
            oldest, _ = strays.popitem(last=False)
            if self._responses.pop(oldest, None) is not None:
                logger.debug("forgetting server-started %s (too many held)", oldest)

    def _request_created(
        self, request: Request[OwnerT], rid: str, known: Response | None, now: float
    ) -> Request[OwnerT]:
        request.response_id = rid
        request.created_at = now
        self._move(request, _TT.CREATED)
        cancelled_unseen = False
        if known is not None:  # a conflict named it before it showed itself
            running = known
            running.request = request
            running.in_band = request.takes_slot
            cancelled_unseen = self._response_move(running, _R.CREATED)
        else:
            running = Response(rid, request, request.takes_slot, now + self._response_timeout)
            self._responses[rid] = running
            self._schedule(running)
        if self._slot.request is request:
            self._move_slot(_T.CREATED, "our response started", response=running)
        elif self._slot.response is running:
            pass
        elif request.takes_slot and (request.in_band or self._slot.state is _FREE):
            # (An out-of-band response that waits for the slot only by configuration does
            # not prove the in-band one holding it has ended.)
            self._take_slot(running, "our overtaken response started")
        if request.cancel_requested or cancelled_unseen:
            self._send_cancel(running, now)
        return request

    def _take_slot(self, response: Response, why: str) -> None:
        """An in-band response was created: it holds the slot now (rule 3). The one holding
        it has ended (its done was lost); if the server started it, it ends now."""
        slot = self._slot
        displaced = slot.request or slot.displaced
        previous = slot.response
        if previous is not None and previous.response_id is not None:
            logger.warning(
                "response %s started while %s held the slot: taken as ended",
                cap(str(response.response_id)),
                cap(previous.response_id),
            )
        if displaced is response.request:
            displaced = None
        self._move_slot(_T.CREATED, why, response=response, displaced=displaced)
        if previous is not None and previous.request is None:
            # Superseded (rule 3, rule 9): not remembered as finished, so a conflict naming
            # it later means it still runs.
            self._end_response(previous)
            self._responses.pop(previous.response_id, None)
            self._response_ended(previous.response_id, {})

    def _on_done(self, event: Done, now: float) -> Request[OwnerT] | None:
        rid = event.response_id
        running = self._responses.pop(rid, None)
        request = None
        if running is None:
            key = event.request_key
            if key is not None:
                self._unanswered.answered(key)
            request = self._sent.pop(key, None) if key is not None else None
            if request is not None:  # done without a created we saw (rule 9)
                request.response_id = rid
            elif event.in_band:  # the unnamed blocker, if one runs, shows its id (rule 4)
                running = self._responses.pop(None, None)
        if running is not None:
            self._end_response(running)
            request = running.request
            writes_conversation = running.writes_conversation
        else:
            writes_conversation = request.in_band if request is not None else event.in_band
        self._strays.pop(rid, None)
        if writes_conversation and rid not in self._finished:
            self._ends += 1
        slot = self._slot
        if request is not None and slot.request is request:
            self._move_slot(_T.ANSWERED, "the response ended without a created")
        elif running is not None and slot.response is running:
            self._release_slot("the response ended")
        self._finished[rid] = None
        self._response_ended(rid, event.response)
        if request is not None and not request.state.terminal:
            status = event.status if event.status in STATUS_COUNTS else "failed"
            self._done(request, status, event.response, now)
        return request

    def _on_error(self, error: ServerError, now: float) -> Request[OwnerT] | None:
        eid = error.client_event_id
        if eid is None:
            eid = self._unanswered.culprit(
                conflict=error.is_conflict, code=error.code, param=error.param, now=now
            )
        answered = self._unanswered.answered(eid) if eid is not None else None
        request = self._sent.pop(eid, None) if eid is not None else None
        if request is None:
            message = cap(error.message)
            if answered is not None and answered != "response.create":
                assert eid is not None
                self._effects.rejected.append((eid, answered, error))
            elif eid is not None and eid in self._cancel_ids:
                logger.debug("cancel answered %s: harmless", error.code)
            elif error.is_conflict:
                logger.warning("conflict error matching no request: %s", message)
            elif error.code != CANCEL_NOT_ACTIVE:
                logger.warning("server error: %s (%s)", message, cap(str(error.code)))
            return None
        if error.is_conflict:
            self._counts["conflicts_absorbed"] += 1
            self._conflict(request, error.blocking_response_id, now)
        else:
            self._counts["rejected"] += 1
            self._abandoned[request.event_id] = None  # in case the attribution was wrong
            self._answered_in_flight(request, "the request was rejected")
            self._fail(request, ResponseRejected(error.code, error.message), now)
        return request

    def _conflict(self, request: Request[OwnerT], blocker: str | None, now: float) -> None:
        if self._slot.request is request:
            self._pass_slot_to_blocker(request, blocker, now)
        if request.cancel_requested:
            self._done(request, "cancelled", None, now)
            return
        logger.debug("conflict absorbed; request #%d waits for %s", request.seq, blocker)
        self._move(request, _TT.CONFLICT)
        request.ends_seen = self._ends
        heapq.heappush(self._queue, (queue_key(request), request))

    def _pass_slot_to_blocker(
        self, request: Request[OwnerT], blocker: str | None, now: float
    ) -> None:
        """Rule 4: the slot passes from the rejected request to the response in its way."""
        if blocker is not None:
            if blocker in self._finished:
                self._move_slot(_T.CONFLICT_ENDED, f"{blocker} already finished")
                return
            running = self._responses.get(blocker)
            if running is None:  # not yet seen, or force-released: it runs, the server says
                running = self._named(blocker, now)
                self._responses[blocker] = running
                self._schedule(running)
            self._move_slot(_T.CONFLICT_RUNS, f"named {blocker}", response=running)
            return
        live = [r for r in self._responses.values() if r.in_band and r.state is not _ENDED]
        if live:
            self._move_slot(_T.CONFLICT_RUNS, "one response runs", response=live[-1])
        elif self._ends > request.ends_seen:
            self._move_slot(_T.CONFLICT_ENDED, "naming nothing, after an in-band end")
        else:
            unnamed = self._responses[None] = self._named(None, now)
            self._schedule(unnamed)
            self._move_slot(_T.CONFLICT_UNSEEN, "naming nothing", response=unnamed)

    def _named(self, response_id: str | None, now: float) -> Response:
        """A response known only from a conflict (rule 4)."""
        return Response(response_id, None, True, now + self._response_timeout, _NAMED)

    # ------------------------------------------------------------------ the clock

    def tick(self, *, now: float) -> None:
        """Apply every deadline that has passed (rule 7)."""
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._scheduled(entry):
                continue
            item = entry[2]
            item.scheduled = math.inf
            if self._deadline_of(item) > now:  # moved by activity since: a new entry
                self._schedule(item)
            elif isinstance(item, Request):
                self._created_timed_out(item, now)
            elif item.state in (_NAMED, _RUNNING):
                logger.warning("response %s is silent: cancelling it", cap(str(item.response_id)))
                self._send_cancel(item, now)
            else:
                self._force_release(item, now)

    def _created_timed_out(self, request: Request[OwnerT], now: float) -> None:
        del self._sent[request.event_id]
        self._abandoned[request.event_id] = None
        self._unanswered.give_up(request.event_id, now=now)
        self._answered_in_flight(request, "no response.created in time")
        self._counts["timed_out"] += 1
        logger.warning("no response.created for request #%d: timed out", request.seq)
        self._fail(request, ResponseTimeout("no response.created within created_timeout"), now)

    def _force_release(self, response: Response, now: float) -> None:
        rid = response.response_id
        logger.warning("no response.done for %s after cancel: slot force-released", cap(str(rid)))
        self._counts["forced_releases"] += 1
        self._end_response(response)
        # Not remembered as finished: a conflict naming it means it still runs.
        self._responses.pop(rid, None)
        self._strays.pop(rid or "", None)
        self._response_ended(rid, {})
        if self._slot.response is response:
            self._release_slot("force-released")
        request = response.request
        if request is not None and not request.state.terminal:
            self._counts["timed_out"] += 1
            self._fail(
                request, ResponseTimeout("response did not finish after it was cancelled"), now
            )

    # ------------------------------------------------------------------ connections

    def pause(self) -> None:
        """Send nothing more (a connection is about to be switched) until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def connection_lost(self, error: RealtimeError, *, now: float) -> None:
        """The connection is gone; a new one will follow (rule 10). Pauses the queue."""
        self._paused = True
        in_flight = [*self._sent.values()]
        in_flight.extend(r.request for r in self._responses.values() if r.request is not None)
        self._forget_connection("the connection was lost")
        self._fail_all(in_flight, error, now)

    # ------------------------------------------------------------------ the end

    def close(self, error: RealtimeError, *, now: float) -> None:
        """Fail every request not yet terminal with ``error``; later submits raise it."""
        if self._closed is not None:
            return
        self._closed = error
        pending = list(self.pending())
        self._queue.clear()
        self._free_lane.clear()
        self._held.clear()
        self._forget_connection("closed")
        self._fail_all(pending, error, now)

    def _forget_connection(self, why: str) -> None:
        """Every response and unanswered event of the connection ends with it (rules 10, 11)."""
        for response in self._responses.values():
            self._end_response(response)
            self._response_ended(response.response_id, {})
        for follow_up in self._turns.all_ended():  # those it never heard of too (rule 12)
            self.release_held(follow_up)
        self._sent.clear()
        self._responses.clear()
        self._strays.clear()
        self._deadlines.clear()
        self._unanswered.clear()
        self._move_slot(_T.GONE, why)

    def _fail_all(self, requests: list[Request[OwnerT]], error: RealtimeError, now: float) -> None:
        for request in sorted(requests, key=lambda r: r.seq):  # in the order they came
            if not request.state.terminal:
                self._fail(request, error, now)

    # ------------------------------------------------------------------ internals

    def _move_slot(
        self,
        trigger: SlotTrigger,
        why: str,
        *,
        request: Request[OwnerT] | None = None,
        response: Response | None = None,
        displaced: Request[OwnerT] | None = None,
    ) -> None:
        """The one place the slot changes: the next state is looked up in
        :data:`SLOT_MOVES`; a move the table does not hold is a bug and raises."""
        old = self._slot
        state = SLOT_MOVES.get((old.state, trigger))
        if state is None:
            raise RuntimeError(f"gate bug: slot {old.state.value} cannot move on {trigger.value}")
        new = Slot(state, request=request, response=response, displaced=displaced)
        self._slot = new
        if logger.isEnabledFor(logging.DEBUG):
            holder = new.holder
            logger.debug(
                "slot %s -> %s%s: %s, %s",
                old.state.value,
                state.value,
                "" if holder is None else f" ({holder})",
                trigger.value,
                why,
            )

    def _answered_in_flight(self, request: Request[OwnerT], why: str) -> None:
        """Its create was answered without a response (rejected, timed out, or done without
        created): a slot it reserved is free again."""
        if self._slot.request is request:
            self._move_slot(_T.ANSWERED, why)

    def _release_slot(self, why: str) -> None:
        """The holder ended: the slot goes back to the request it displaced, if that one's
        answer is still to come (or to its response, if that started), else it is free."""
        displaced = self._slot.displaced
        if displaced is not None and displaced.state is TicketState.SENT:
            self._move_slot(_T.BACK, why, request=displaced)
            return
        if displaced is not None and displaced.state is TicketState.ACTIVE:
            running = self._responses.get(displaced.response_id or "")
            if running is not None:
                self._move_slot(_T.OVERTAKEN_RUNS, why, response=running)
                return
        self._move_slot(_T.ENDED, why)

    def _response_move(self, response: Response, trigger: ResponseTrigger) -> bool:
        """A response's one way to change state, looked up in :data:`RESPONSE_MOVES`.
        Returns whether it was cancelled before it showed itself (rule 7)."""
        old = response.state
        state = RESPONSE_MOVES.get((old, trigger))
        if state is None:
            raise RuntimeError(f"gate bug: {response} cannot move on {trigger.value}")
        response.state = state
        return old is _NAMED_CANCELLED and trigger is _R.CREATED

    def _end_response(self, response: Response) -> None:
        if response.state is not _ENDED:
            self._response_move(response, _R.END)

    def _response_ended(self, response_id: str | None, response: Mapping[str, Any]) -> None:
        """A response ended (done, force-released, superseded, or lost with its connection):
        the shell is told, and its turn's follow-up may go (rule 12). (Nothing to tell of an
        unnamed one.)"""
        if response_id is None:
            return
        self._effects.ended.append((response_id, response))
        follow_up = self._turns.on_done(response_id, response)
        if follow_up is not None:
            self.release_held(follow_up)

    def _move(self, request: Request[OwnerT], trigger: TicketTrigger) -> None:
        """The one place a request changes state: looked up in :data:`TICKET_MOVES`."""
        state = TICKET_MOVES.get((request.state, trigger))
        if state is None:
            raise RuntimeError(f"gate bug: {request!r} cannot move on {trigger.value}")
        request.state = state
        self._effects.changed.append((request, state))

    def _done(
        self, request: Request[OwnerT], status: str, response: Mapping[str, Any] | None, now: float
    ) -> None:
        self._counts[STATUS_COUNTS[status]] += 1
        request.result = ResponseResult(status, response)
        request.finished_at = now
        self._move(request, _TT.FINISH)

    def _fail(self, request: Request[OwnerT], error: RealtimeError, now: float) -> None:
        self._counts["failed"] += 1
        request.error = error
        request.finished_at = now
        self._move(request, _TT.FAIL)

    def _enqueue(self, request: Request[OwnerT]) -> None:
        request.ends_seen = self._ends
        if request.takes_slot:
            heapq.heappush(self._queue, (queue_key(request), request))
        else:
            self._free_lane.append(request)

    def _queue_head(self) -> Request[OwnerT] | None:
        return self._queue[0][1] if self._queue else None

    def _send(self, request: Request[OwnerT], now: float) -> None:
        event_id = request.event_id
        body = dict(request.body)
        body["metadata"] = {**(body.get("metadata") or {}), METADATA_KEY: event_id}
        self._sent[event_id] = request
        self._unanswered.create_sent(event_id, takes_slot=request.takes_slot)
        request.attempts += 1
        request.sent_at = now
        self._schedule(request)
        self._counts["sent"] += 1
        self._move(request, _TT.SEND)
        self._emit({"type": "response.create", "event_id": event_id, "response": body})

    def _schedule(self, item: Request[OwnerT] | Response) -> None:
        """Make sure the deadline heap has an entry for ``item`` no later than its deadline."""
        deadline = self._deadline_of(item)
        if deadline >= item.scheduled:
            return
        item.scheduled = deadline
        heap = self._deadlines
        heapq.heappush(heap, (deadline, next(self._deadline_seq), item))
        if len(heap) > 2 * (len(self._sent) + len(self._responses)) + 64:
            # Entries of items that left pile up under a flood: compact (amortized O(1)).
            self._deadlines = [e for e in heap if self._scheduled(e)]
            heapq.heapify(self._deadlines)

    def _deadline_of(self, item: Request[OwnerT] | Response) -> float:
        """A request's: no ``response.created`` within ``created_timeout`` of its send. A
        response's: its activity deadline, or after a cancel, the end of the grace period."""
        if isinstance(item, Request):
            assert item.sent_at is not None  # only a request in flight has a deadline
            return item.sent_at + self._created_timeout
        return item.deadline

    def _scheduled(self, entry: tuple[float, int, Request[OwnerT] | Response]) -> bool:
        """Whether a heap entry is its item's live one, and the item still has a deadline."""
        key, _, item = entry
        if key != item.scheduled:
            return False
        if isinstance(item, Request):
            live = self._sent.get(item.event_id) is item
        else:
            live = self._responses.get(item.response_id) is item
        if not live:
            item.scheduled = math.inf
        return live

    def _emit(self, event: Event) -> None:
        self._effects.send.append(event)

    def _cancel_event(self, response_id: str | None) -> Event:
        event_id = self._new_id()
        self._cancel_ids[event_id] = None
        event: Event = {"type": "response.cancel", "event_id": event_id}
        if response_id is not None:
            event["response_id"] = response_id
        return event

    def _send_cancel(self, response: Response, now: float) -> None:
        """Cancel a response by id (rule 6, 7), once per state: once before it shows itself,
        once after."""
        old = response.state
        self._response_move(response, _R.CANCEL)
        if response.state is old:
            return
        response.deadline = now + self._cancel_grace
        self._schedule(response)
        self._emit(self._cancel_event(response.response_id))
