"""The one-active-response rules, as a plain state machine: no sockets, no clock, no Trio.

The Realtime API lets one response at a time write to the default conversation. The gate
decides, for every request and every server lifecycle event, who holds that right (the *slot*)
and what the client must send next. It is fed inputs and the current time; it answers with
client events to send (:meth:`Gate.take_outgoing`) and with state changes of requests, reported
to each request's :class:`Watcher`. The session's dispatcher task is a thin loop around it.

The rules:

1. Correlation. Every request's ``response.create`` carries a unique ``event_id`` and the same
   id in ``response.metadata[METADATA_KEY]`` (the same on every attempt: an attempt's answer
   always comes before the next attempt is sent). ``response.created`` / ``response.done`` are
   matched by that metadata, errors by ``error.event_id``. The server answers creates in order,
   so an error without ``event_id`` that only a create can cause belongs to the oldest create
   not yet answered, even one whose request already timed out.
2. The slot is a capacity-one semaphore whose holder is on record: an in-band request in flight
   (sent, not yet created) or an in-band active response, ours or not. A request is sent only
   when the slot is free. An in-band ``response.created`` that matches no request (voice
   activity detection, another connection) takes the slot until its ``response.done``; if it
   took it from our request in flight, the slot goes back to that request afterwards (its
   answer is still to come). A new in-band ``response.created`` while another response holds
   the slot means that one ended (its done was lost): the new one holds it.
3. Conflict. ``conversation_already_has_active_response`` puts the request back at the head of
   the queue, never failing it; the slot passes to the response in the way (named in the
   message), and is released at once if that response already finished. Any other error for a
   request fails it with :class:`ResponseRejected`.
4. Cancel. A queued request is dropped and never sent; a sent one is cancelled by id as soon
   as its ``response.created`` arrives (the server ignores a cancel before that); an active one
   gets ``response.cancel`` with its id.
5. Deadlines. No ``response.created`` within ``created_timeout``: the request fails with
   :class:`ResponseTimeout` and a late ``response.created`` is cancelled by id. No event of
   the slot's response within ``response_timeout``: it is cancelled by id; no
   ``response.done`` within ``cancel_grace`` after any cancel: the slot is force-released.
6. Out-of-band requests (``"conversation": "none"``) skip the slot unless configured otherwise.
7. Anything unexpected (unknown ids, duplicates, done without created) is tolerated.
8. :meth:`Gate.close` fails every request still waiting.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import math
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import attrs

from ._errors import QueueFull, RealtimeError, ResponseRejected, ResponseTimeout
from ._events import (
    METADATA_KEY,
    is_in_band,
    parse_error,
    request_key_of,
    response_id_of,
    response_object,
    status_of,
)
from ._result import ResponseResult

__all__ = [
    "CancelTarget",
    "Gate",
    "GateStatistics",
    "Request",
    "ResponseResult",
    "TicketState",
    "Watcher",
]

logger = logging.getLogger("trio_realtime.gate")

Event = dict[str, Any]

#: How many finished response ids and abandoned request ids are remembered.
_MEMORY = 256
#: Most metadata pairs the API accepts on a response.
_MAX_METADATA = 16


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


class Watcher(Protocol):
    """Told synchronously of every state change of a request (the session's tickets)."""

    def request_changed(self, request: Request) -> None: ...

    def request_event(self, event: dict[str, Any]) -> None:
        """A server event of the request's response (called by the dispatcher, not the gate)."""
        ...


@attrs.define(eq=False, repr=False)
class Request:
    """One requested response, from submission to its terminal state."""

    body: Mapping[str, Any]
    priority: int
    seq: int
    takes_slot: bool
    queued_at: float
    #: ``event_id`` of its ``response.create``, also in ``metadata``; the same on every attempt
    #: (an attempt's outcome always arrives before the next attempt is sent).
    event_id: str
    watcher: Watcher | None = None
    state: TicketState = TicketState.QUEUED
    response_id: str | None = None
    result: ResponseResult | None = None
    error: RealtimeError | None = None
    attempts: int = 0
    cancel_requested: bool = False
    held: bool = False
    sent_at: float | None = None
    created_at: float | None = None
    finished_at: float | None = None
    #: While SENT: when a missing ``response.created`` becomes a timeout.
    deadline: float = math.inf

    @property
    def in_band(self) -> bool:
        """Whether its response writes to the default conversation."""
        return bool(self.body.get("conversation", "auto") != "none")

    def __repr__(self) -> str:
        return (
            f"<Request #{self.seq} {self.state.value} priority={self.priority}"
            f" response_id={self.response_id!r}>"
        )


@attrs.define(eq=False)
class _Active:
    """A response the server is running, ours (``request``) or not."""

    response_id: str | None  #: None: a blocker known only from a conflict message
    request: Request | None
    in_band: bool
    #: Activity deadline, or after a cancel, the end of the grace period.
    deadline: float
    cancel_sent: bool = False
    finished: bool = False
    #: False for a response known so far only from a conflict message.
    created_seen: bool = True
    #: Our in-band request that was in flight when this response took the slot from it: its
    #: outcome is still to come, so the slot goes back to it when this response ends.
    displaced: Request | None = None


#: What :meth:`Gate.cancel_active` returns for :meth:`Gate.is_finished` to watch.
CancelTarget = Request | _Active


@attrs.frozen
class GateStatistics:
    """A snapshot of the gate. Counts are of our own requests unless noted."""

    #: Requests waiting for the slot (or for their turn's function results).
    queue_depth: int
    #: Requests whose ``response.create`` is sent and not yet created.
    in_flight: int
    #: The in-band response holding the slot, ours or server-started, if known.
    active_response_id: str | None
    slot_busy: bool
    #: ``response.create`` events sent (a retried request counts once per attempt).
    sent: int
    completed: int
    cancelled: int
    failed: int
    incomplete: int
    #: Requests the server rejected (other than the absorbed conflict).
    rejected: int
    timed_out: int
    #: ``conversation_already_has_active_response`` rejections absorbed and retried.
    conflicts_absorbed: int
    #: In-band responses the server started by itself.
    server_started: int
    #: Slots force-released after a cancel got no ``response.done``.
    forced_releases: int


def _new_id_factory() -> Callable[[], str]:
    prefix = f"trq_{secrets.token_hex(4)}_"
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


class _Memory:
    """A bounded set: remembers the last ``size`` keys."""

    def __init__(self, size: int = _MEMORY) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


class Gate:
    """The rules of the slot. See the module docstring."""

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
        self._seq = itertools.count()
        self._queue: list[tuple[tuple[int, ...], Request]] = []
        self._free_lane: deque[Request] = deque()  # sent at once, no slot needed
        self._held: set[Request] = set()
        self._waiting = 0  # queued + free lane + held
        self._sent: dict[str, Request] = {}  # by event_id
        #: Creates sent and not yet answered (created, done or error), oldest first; unlike
        #: ``_sent`` this keeps those whose request timed out.
        self._unanswered: OrderedDict[str, Request] = OrderedDict()
        self._active: dict[str, _Active] = {}  # by response_id
        self._holder: Request | _Active | None = None
        self._cancel_ids = _Memory()
        self._abandoned = _Memory()  # event_ids of requests that timed out before created
        self._finished = _Memory()  # response ids whose response.done was seen
        self._outgoing: list[Event] = []
        self._closed: RealtimeError | None = None
        self._counts = dict.fromkeys(attrs.fields_dict(GateStatistics), 0)
        for name in ("queue_depth", "in_flight", "active_response_id", "slot_busy"):
            del self._counts[name]

    # ------------------------------------------------------------------ introspection

    @property
    def slot_holder(self) -> Request | str | None:
        """The slot's holder: a request in flight, an active response's id, ``"?"``, or None."""
        holder = self._holder
        if isinstance(holder, _Active):
            return holder.response_id or "?"
        return holder

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def active_response_ids(self) -> list[str]:
        return list(self._active)

    def pending(self) -> Iterator[Request]:
        """Every request not yet terminal."""
        yield from (r for _, r in self._queue if r.state is TicketState.QUEUED)
        yield from self._free_lane
        yield from self._held
        yield from self._sent.values()
        yield from (a.request for a in self._active.values() if a.request is not None)

    def statistics(self) -> GateStatistics:
        holder = self._holder
        active_id: str | None = None
        if holder is not None:
            active_id = holder.response_id
        return GateStatistics(
            queue_depth=self._waiting,
            in_flight=len(self._sent),
            active_response_id=active_id,
            slot_busy=holder is not None,
            **self._counts,
        )

    def next_deadline(self) -> float:
        """The earliest time at which :meth:`on_tick` has work to do."""
        deadline = math.inf
        for request in self._sent.values():
            deadline = min(deadline, request.deadline)
        for active in self._active.values():
            deadline = min(deadline, active.deadline)
        if isinstance(self._holder, _Active) and self._holder.response_id is None:
            deadline = min(deadline, self._holder.deadline)
        return deadline

    def take_outgoing(self) -> list[Event]:
        """Client events to send, in order; each is returned once."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    # ------------------------------------------------------------------ requests

    def submit(
        self,
        body: Mapping[str, Any] | None,
        *,
        priority: int = 0,
        now: float,
        watcher: Watcher | None = None,
        held: bool = False,
    ) -> Request:
        """Queue a request. ``held`` ones wait for :meth:`release_held` before they queue.

        Raises the close error once closed, :class:`QueueFull` when ``max_queue`` wait.
        """
        if self._closed is not None:
            raise self._closed
        if self._waiting >= self._max_queue:
            raise QueueFull(f"{self._waiting} requests already wait (max_queue)")
        body = dict(body or {})
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError("response['metadata'] must be a mapping")
        if metadata is not None and len(metadata) >= _MAX_METADATA:
            raise ValueError(f"response['metadata'] may hold at most {_MAX_METADATA - 1} pairs")
        request = Request(
            body=body,
            priority=priority,
            seq=next(self._seq),
            event_id=self._new_id(),
            takes_slot=self._oob_takes_slot or body.get("conversation", "auto") != "none",
            queued_at=now,
            watcher=watcher,
            held=held,
        )
        self._waiting += 1
        if held:
            self._held.add(request)
        else:
            self._enqueue(request)
        return request

    def release_held(self, request: Request) -> None:
        """Let a held request (a function-call follow-up) join the queue."""
        if request in self._held:
            self._held.discard(request)
            request.held = False
            self._enqueue(request)

    def cancel(self, request: Request, *, now: float) -> None:
        """Cancel a request at whatever stage it is (rule 4). Idempotent."""
        state = request.state
        if state is TicketState.QUEUED:
            self._waiting -= 1
            self._held.discard(request)
            if request in self._free_lane:
                self._free_lane.remove(request)
            # Queue entries are dropped lazily; compact when they pile up.
            if len(self._queue) > 2 * self._waiting + 64:
                self._queue = [e for e in self._queue if e[1].state is TicketState.QUEUED]
                heapq.heapify(self._queue)
            self._finish(request, TicketState.DONE, now, result=ResponseResult("cancelled", None))
            self._counts["cancelled"] += 1
        elif state is TicketState.SENT:
            request.cancel_requested = True
        elif state is TicketState.ACTIVE:
            request.cancel_requested = True
            active = self._active.get(request.response_id or "")
            if active is not None:
                self._send_cancel(active, now)

    def cancel_active(self, *, now: float) -> CancelTarget | None:
        """Interrupt the in-band response holding the slot, whoever started it.

        Returns what to wait for (see :meth:`is_finished`), or None when nothing is active.
        """
        holder = self._holder
        if isinstance(holder, Request):
            # Not created yet: the server would ignore a cancel by id. Cancel it on creation,
            # and interrupt whatever else may be running (a server-started response racing it).
            holder.cancel_requested = True
            self._outgoing.append(self._cancel_event(None))
        elif isinstance(holder, _Active):
            self._send_cancel(holder, now)
        return holder

    @staticmethod
    def is_finished(target: CancelTarget) -> bool:
        if isinstance(target, Request):
            return target.state.terminal
        return target.finished

    def pump(self, *, now: float) -> None:
        """Send what may go now: free-lane requests, and the queue head if the slot is free."""
        while self._free_lane:
            self._send(self._free_lane.popleft(), now)
        while self._holder is None and self._queue:
            _, request = heapq.heappop(self._queue)
            if request.state is TicketState.QUEUED:
                self._holder = request
                self._send(request, now)

    # ------------------------------------------------------------------ server events

    def on_created(self, event: Mapping[str, Any], *, now: float) -> Request | None:
        """``response.created``: match it, and record who holds the slot."""
        response = response_object(event)
        rid = response.get("id")
        if not isinstance(rid, str):
            logger.warning("response.created without a response id; ignored")
            return None
        known = self._active.get(rid)
        if known is not None:
            if not known.created_seen:  # the blocker a conflict named: now it shows itself
                known.created_seen = True
                key = request_key_of(response)
                if key is not None and key in self._abandoned:
                    self._send_cancel(known, now)  # a timed-out request's, after all
                else:
                    self._counts["server_started"] += 1
            return known.request  # else a duplicate
        if rid in self._finished:
            logger.debug("response.created for finished %s (duplicate or late); ignored", rid)
            return None
        key = request_key_of(response)
        if key is not None:
            self._answered(key)
        request = self._sent.pop(key, None) if key is not None else None
        if request is not None:
            return self._request_created(request, rid, now)
        in_band = is_in_band(response)
        active = _Active(rid, None, in_band, now + self._response_timeout)
        self._active[rid] = active
        if key is not None and key in self._abandoned:
            logger.info("late response.created for a timed-out request: cancelling %s", rid)
            self._send_cancel(active, now)
        elif in_band:
            self._counts["server_started"] += 1
        if in_band:
            self._take_slot(active)
        return None

    def _request_created(self, request: Request, rid: str, now: float) -> Request:
        request.state = TicketState.ACTIVE
        request.response_id = rid
        request.created_at = now
        active = _Active(rid, request, request.takes_slot, now + self._response_timeout)
        self._active[rid] = active
        if self._holder is request:
            self._holder = active
        elif request.takes_slot and (request.in_band or self._holder is None):
            # (An out-of-band response that waits for the slot only by configuration does
            # not prove the in-band one holding it has ended: it gets the slot back when that
            # one ends, having been displaced by it.)
            self._take_slot(active)
        if request.cancel_requested:
            self._send_cancel(active, now)
        self._notify(request)
        return request

    def _take_slot(self, active: _Active) -> None:
        """An in-band response was created: it holds the slot now.

        If our request was in flight, its rejection or creation is still to come: it gets the
        slot back when this response ends. If another response held the slot, a consistent
        server runs one in-band response at a time, so that one has ended (its done lost).
        """
        holder = self._holder
        if isinstance(holder, Request):
            active.displaced = holder
        elif holder is not None:
            if holder.response_id is not None:
                logger.info(
                    "response %s started while %s held the slot: taken as ended",
                    active.response_id,
                    holder.response_id,
                )
            active.displaced = holder.displaced
        if active.displaced is active.request:
            active.displaced = None
        self._holder = active

    def request_of(self, event: Mapping[str, Any]) -> Request | None:
        """The request a lifecycle event belongs to, before the event is applied."""
        rid = response_id_of(event)
        active = self._active.get(rid) if rid is not None else None
        if active is not None:
            return active.request
        key = request_key_of(response_object(event))
        return self._sent.get(key) if key is not None else None

    def on_response_event(self, response_id: str, *, now: float) -> Request | None:
        """Any other event of a response: it is alive. Returns the request it belongs to."""
        active = self._active.get(response_id)
        if active is None:
            return None
        if not active.cancel_sent:
            active.deadline = now + self._response_timeout
        return active.request

    def on_done(self, event: Mapping[str, Any], *, now: float) -> Request | None:
        """``response.done`` (or the ``response.cancelled`` alias): the response ended."""
        response = response_object(event)
        rid = response_id_of(event)
        active = self._active.pop(rid, None) if rid is not None else None
        request: Request | None = None
        if active is not None:
            active.finished = True
            request = active.request
        else:
            key = request_key_of(response)
            if key is not None:
                self._answered(key)
            request = self._sent.pop(key, None) if key is not None else None
            if request is not None:  # done without a created we saw
                request.response_id = rid
        holder = self._holder
        if (
            (active is not None and holder is active)
            or (request is not None and holder is request)
            or (
                isinstance(holder, _Active)
                and holder.response_id is None
                and (active.in_band if active is not None else is_in_band(response))
            )
        ):
            if isinstance(holder, _Active):
                holder.finished = True
                self._holder = self._successor(holder)
            else:
                self._holder = None
        if rid is not None:
            self._finished.add(rid)
        if request is not None and not request.state.terminal:
            status = status_of(response, str(event.get("type")))
            if status not in ("completed", "cancelled", "failed", "incomplete"):
                status = "failed"
            self._counts[status] += 1
            self._finish(request, TicketState.DONE, now, result=ResponseResult(status, response))
        return request

    def on_error(self, event: Mapping[str, Any], *, now: float) -> Request | None:
        """``error``: a rejected request is retried (conflict) or failed; others are ignored."""
        error = parse_error(event)
        eid = error.client_event_id
        if eid is None:
            # The server answers creates in order: an error without an event_id that only a
            # create can cause belongs to the oldest create not yet answered, even one whose
            # request already timed out.
            if error.is_conflict:
                eid = self._oldest_unanswered(in_band=True, now=now)
            elif (error.param or "").startswith("response"):
                eid = self._oldest_unanswered(in_band=False, now=now)
        if eid is not None:
            self._answered(eid)
        request = self._sent.get(eid) if eid is not None else None
        if request is None:
            if eid is not None and eid in self._cancel_ids:
                logger.debug("cancel answered %s: harmless", error.code)
            elif error.is_conflict:
                logger.warning("conflict error matching no request: %s", error.message)
            return None
        del self._sent[request.event_id]
        if error.is_conflict:
            self._counts["conflicts_absorbed"] += 1
            self._conflict(request, error.blocking_response_id, now)
        else:
            self._counts["rejected"] += 1
            self._release(request)
            self._finish(
                request,
                TicketState.FAILED,
                now,
                error=ResponseRejected(error.code, error.message),
            )
        return request

    def _oldest_unanswered(self, *, in_band: bool, now: float) -> str | None:
        # A create still unanswered ``created_timeout`` after its request timed out is
        # presumed lost (a server that never answered it): it is forgotten.
        expired = [
            event_id
            for event_id, request in self._unanswered.items()
            if request.state is TicketState.FAILED
            and (request.finished_at or now) + self._created_timeout <= now
        ]
        for event_id in expired:
            del self._unanswered[event_id]
        for event_id, request in self._unanswered.items():
            if request.takes_slot or not in_band:
                return event_id
        return None

    def _answered(self, event_id: str) -> None:
        """The server answered this create, so (answering in order) every older one too."""
        if event_id not in self._unanswered:
            return
        while self._unanswered.popitem(last=False)[0] != event_id:
            pass

    def _conflict(self, request: Request, blocker: str | None, now: float) -> None:
        if self._holder is request:
            # The slot passes to the response in the way, unless its done already came. One
            # that was force-released is still running, as the server just said.
            if blocker is not None and blocker in self._finished:
                self._holder = None  # it finished already: retry at once
            elif blocker is not None and blocker in self._active:
                self._holder = self._active[blocker]
            else:
                active = _Active(blocker, None, True, now + self._response_timeout)
                active.created_seen = False
                if blocker is not None:
                    self._active[blocker] = active
                self._holder = active
        if request.cancel_requested:
            self._counts["cancelled"] += 1
            self._finish(request, TicketState.DONE, now, result=ResponseResult("cancelled", None))
            return
        logger.debug("conflict absorbed; request #%d waits for %s", request.seq, blocker)
        request.state = TicketState.QUEUED
        request.deadline = math.inf
        self._waiting += 1
        heapq.heappush(self._queue, ((0, request.seq), request))
        self._notify(request)

    def _successor(self, active: _Active) -> Request | _Active | None:
        """Who holds the slot after ``active`` ends: the request it displaced, if that is
        still in flight or has started; else nobody."""
        displaced = active.displaced
        if displaced is None:
            return None
        if displaced.state is TicketState.SENT:
            return displaced
        if displaced.state is TicketState.ACTIVE and displaced.response_id is not None:
            return self._active.get(displaced.response_id)
        return None

    # ------------------------------------------------------------------ time

    def on_tick(self, *, now: float) -> None:
        """Apply every deadline that has passed (rule 5)."""
        for request in [r for r in self._sent.values() if r.deadline <= now]:
            del self._sent[request.event_id]
            self._abandoned.add(request.event_id)
            self._release(request)
            self._counts["timed_out"] += 1
            logger.warning("no response.created for request #%d: timed out", request.seq)
            self._finish(
                request,
                TicketState.FAILED,
                now,
                error=ResponseTimeout("no response.created within created_timeout"),
            )
        expired = [a for a in self._active.values() if a.deadline <= now]
        holder = self._holder
        if isinstance(holder, _Active) and holder.response_id is None and holder.deadline <= now:
            expired.append(holder)
        for active in expired:
            if not active.cancel_sent:
                logger.warning("response %s is silent: cancelling it", active.response_id)
                self._send_cancel(active, now)
            else:
                self._force_release(active, now)

    def _force_release(self, active: _Active, now: float) -> None:
        logger.warning(
            "no response.done for %s after cancel: slot force-released", active.response_id
        )
        self._counts["forced_releases"] += 1
        if active.response_id is not None:
            # Not remembered as finished: a conflict naming it means it still runs.
            self._active.pop(active.response_id, None)
        active.finished = True
        if self._holder is active:
            self._holder = self._successor(active)
        request = active.request
        if request is not None and not request.state.terminal:
            self._counts["timed_out"] += 1
            self._finish(
                request,
                TicketState.FAILED,
                now,
                error=ResponseTimeout("response did not finish after it was cancelled"),
            )

    # ------------------------------------------------------------------ closing

    def close(self, error: RealtimeError, *, now: float) -> None:
        """Fail every request not yet terminal with ``error``; later submits raise it."""
        if self._closed is not None:
            return
        self._closed = error
        pending = list(self.pending())
        self._queue.clear()
        self._free_lane.clear()
        self._held.clear()
        self._sent.clear()
        self._active.clear()
        self._holder = None
        self._waiting = 0
        for request in pending:
            if not request.state.terminal:
                self._finish(request, TicketState.FAILED, now, error=error)

    # ------------------------------------------------------------------ internals

    def _enqueue(self, request: Request) -> None:
        if request.takes_slot:
            heapq.heappush(self._queue, ((1, -request.priority, request.seq), request))
        else:
            self._free_lane.append(request)

    def _send(self, request: Request, now: float) -> None:
        self._waiting -= 1
        event_id = request.event_id
        body = dict(request.body)
        body["metadata"] = {**(body.get("metadata") or {}), METADATA_KEY: event_id}
        self._outgoing.append({"type": "response.create", "event_id": event_id, "response": body})
        self._sent[event_id] = request
        self._unanswered[event_id] = request
        if len(self._unanswered) > _MEMORY:  # creates the server never answered
            self._unanswered.popitem(last=False)
        request.state = TicketState.SENT
        request.attempts += 1
        request.sent_at = now
        request.deadline = now + self._created_timeout
        self._counts["sent"] += 1
        self._notify(request)

    def _cancel_event(self, response_id: str | None) -> Event:
        event_id = self._new_id()
        self._cancel_ids.add(event_id)
        event: Event = {"type": "response.cancel", "event_id": event_id}
        if response_id is not None:
            event["response_id"] = response_id
        return event

    def _send_cancel(self, active: _Active, now: float) -> None:
        if active.cancel_sent:
            return
        active.cancel_sent = True
        active.deadline = now + self._cancel_grace
        self._outgoing.append(self._cancel_event(active.response_id))

    def _release(self, request: Request) -> None:
        if self._holder is request:
            self._holder = None

    def _finish(
        self,
        request: Request,
        state: TicketState,
        now: float,
        *,
        result: ResponseResult | None = None,
        error: RealtimeError | None = None,
    ) -> None:
        request.state = state
        request.result = result
        request.error = error
        request.finished_at = now
        request.deadline = math.inf
        self._notify(request)

    @staticmethod
    def _notify(request: Request) -> None:
        if request.watcher is not None:
            request.watcher.request_changed(request)
