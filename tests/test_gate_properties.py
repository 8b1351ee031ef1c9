"""The gate against a model server: a Hypothesis stateful test of the one-active-response rules.

A :class:`GateMachine` drives a bare :class:`~trio_realtime._gate.Gate` (no sockets, no Trio, a
fake clock) against :class:`~gate_model.ModelServer` (tests/gate_model.py), a tiny simulation of
the Realtime server. The rule numbers are the gate's (``src/trio_realtime/_gate.py``).

Checked after every step (``@invariant`` methods, and in ``_pump`` / ``_feed`` at each event):

1. one slot holder at most; an in-band create goes out only when the slot is free, takes it,
   with no other in-band request in flight and no response the gate was told of still running
   (rules 3, 4);
2. every request's transitions are legal and reported to its watcher; terminal once, for good;
3. first sends follow priority then FIFO, a conflict retry first; out-of-band ones never wait
   (rules 5, 8);
4. the slot is never held by a finished request or response (rule 3);
5. the conflict error never reaches a request (rule 4); an old-shape conflict is never retried
   at once unless an in-band response was seen to end since the request was queued, and is
   retried at once when one was and nothing else is known to run (rule 4 as amended);
6. nothing is lost: ``pending()``, ``queue_depth`` and ``in_flight`` match the requests;
   an error reaches the request it answers (rules 1, 2); a cancelled request is never sent
   again and is cancelled by id once created (rule 6); a late ``response.created`` of a request
   given up on brings a cancel by id, whatever was sent before (rule 7); the server starts at
   most one response per request; the results of one turn share one follow-up (rule 12),
   released by the gate at exactly the input (an event, a result, the clock, a new connection)
   after which the response that made the calls has ended (its done; a forced release, even
   if a conflict shows it still running later; lost with its connection; or superseded, which
   may release it, as the gate ends a superseded response of the server's but keeps ours)
   and every call seen so far has a result, and sent
   only after that; a result for a call seen after its turn's follow-up was released gets a
   follow-up of its own;
7. liveness (``teardown``): once the server answers everything and time passes every
   deadline, every request ends within a bounded number of rounds;
8. interruptions (rule 6), at random moments against in-band, out-of-band and server-started
   responses and requests in flight: every response the model knows to run is cancelled by id
   (unless a cancel by id for it is still within its grace), once; one the gate can know only
   from a blind conflict by the one cancel without id (and no such cancel without a blind
   conflict); every request in flight is returned and cancelled by id once created (6), and
   never sent again; queued requests are not touched and still go out in order (3); no request
   moves at the interrupt itself; an interrupted response that got its done or was forced after
   cancel_grace is finished, and in ``teardown`` every target of an interrupt is. (At most one
   in-band response active: 1, which also checks the next create after an interrupt.)

The oracles predict from what the model knows (what it sent, delivered and was told, and when
the gate sent each cancel), never from the gate's own bookkeeping; what the gate reports of
itself (its slot holder, ``pending()``, statistics, active responses, which follow-ups it
holds, what an interrupt returns) is only checked against that. One input is read from the
gate: which request ``cancel_active`` interrupts (the slot's holder), so that the model knows
whose cancel to expect. Checks switched off, and why:

- after the server breaks its own rules (``misbehaved``: duplicates, unknown ids, two in-band
  responses at once), the knowledge part of 1, the late-created part of 6, the one-response-
  per-request part of 6, the rule-12 checks, the rule-4 predictions of 5 and the interrupt
  checks of 8: a gate cannot know what a lying server runs;
- after an answer was lost or shown out of order (``lossy``: a withheld or late event, or a
  create the gate presumes lost), an error without ``error.event_id`` may be blamed on the
  wrong create (rule 2 relies on the order of answers): once that happened
  (``misattributed``), nothing that follows is checked against the model's attribution, nor
  the knowledge part of 1, nor the late-created part of 6, nor the interrupt checks of 8;
- liveness (7) leaves out a follow-up whose turn's response the gate never heard of (its
  created and done both lost, on a connection still open): nothing can end that turn, as the
  gate holds no deadline for a response it never saw;
- the positive half of the rule-4 prediction (retried at once) only when the model knows an
  end for certain (a ``response.done`` naming an in-band conversation, not the
  ``response.cancelled`` alias, which names none) and knows nothing else to run (no response
  told and not ended, no request of ours active).

Normal run (a few seconds)::

    .venv/bin/pytest tests/test_gate_properties.py -q -W error -p no:trio_realtime

Long run (thousands of examples, 100 steps each)::

    TRIO_REALTIME_LONG=1 .venv/bin/pytest tests/test_gate_properties.py -q -W error \\
        -p no:trio_realtime

The examples are drawn from a random seed and no example database is kept; to replay a failure,
pass the ``--hypothesis-seed`` Hypothesis prints (or use the ``@reproduce_failure`` blob).
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from gate_helpers import Driver, conflict, created, done, error
from gate_model import Draw, ModelServer
from trio_realtime import ConnectionLost, ResponseRejected, TicketState
from trio_realtime._events import CONFLICT, CONFLICT_MESSAGE_PREFIX, METADATA_KEY
from trio_realtime._gate import CancelTarget, Gate, Request

Event = dict[str, Any]

LONG = os.environ.get("TRIO_REALTIME_LONG") == "1"

CREATED_TIMEOUT = 10.0
RESPONSE_TIMEOUT = 30.0
CANCEL_GRACE = 5.0
#: Past every deadline at once (created, response, and a cancel's grace).
PAST_ALL_DEADLINES = CREATED_TIMEOUT + RESPONSE_TIMEOUT + CANCEL_GRACE + 1.0

TERMINAL = (TicketState.DONE, TicketState.FAILED)
#: Every transition a request may make (a notification is one transition).
ALLOWED = {
    (TicketState.QUEUED, TicketState.SENT),
    (TicketState.QUEUED, TicketState.DONE),  # cancelled before sending
    (TicketState.QUEUED, TicketState.FAILED),  # closed
    (TicketState.SENT, TicketState.QUEUED),  # conflict: back to the queue
    (TicketState.SENT, TicketState.ACTIVE),
    (TicketState.SENT, TicketState.DONE),  # done without created; cancelled + conflict
    (TicketState.SENT, TicketState.FAILED),  # rejected, timed out, closed
    (TicketState.ACTIVE, TicketState.DONE),
    (TicketState.ACTIVE, TicketState.FAILED),  # force-released, closed
}


def _queue_key(request: Request, attempts: int) -> tuple[int, ...]:
    """The order the queue promises: a conflict retry first, then priority, then FIFO."""
    if attempts > 0:
        return (0, request.seq)
    return (1, -request.priority, request.seq)


class Recorder:
    """Records every state a request is reported in (the gate's effects)."""

    def __init__(self) -> None:
        self.states: list[TicketState] = []
        self.events: list[Event] = []


class GateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.server = ModelServer()
        self.now = 0.0
        self.requests: list[Request] = []
        self.recorders: dict[int, Recorder] = {}
        self.by_event_id: dict[str, Request] = {}
        self.closed = False
        #: Set by any step in which the machine makes the server break its own rules
        #: (duplicates, unknown ids); the server sets its own flag (see ``misbehaved``).
        self.made_misbehave = False
        #: Errors without error.event_id are matched by the order of answers; a lost or late
        #: event (the server's ``lossy``) or a create the gate presumes lost (still unanswered
        #: created_timeout after its request timed out, by design) breaks it (see ``lossy``).
        self.presumed_lost = False
        #: ... and a request may be blamed for another's error; what follows is not checked.
        self.misattributed = False
        self.sent_creates: Counter[str] = Counter()  # event_id -> creates sent
        self.answered: Counter[str] = Counter()  # event_id -> answers delivered
        self.known_answered: Counter[str] = Counter()  # ... that the gate could attribute
        self.answered_by: set[str] = set()  # response ids that answered a create
        #: id(request) -> its attempts when its cancel was asked for.
        self.cancel_wanted: dict[int, int] = {}
        self.cancelled_ids: set[str] = set()  # response ids the gate sent response.cancel for
        #: Rule 4: response.done / response.cancelled events delivered (any), and those
        #: that certainly ended an in-band response; and both counts when each request last
        #: went into the queue (submitted, released, or sent back by a conflict).
        self.ends_possible = 0
        self.ends_in_band = 0
        self.ends_when_queued: dict[str, tuple[int, int]] = {}
        self.held: set[str] = set()  # follow-ups submitted held and not yet released
        #: Rule 12: function calls the gate was shown (call_id -> response id), the calls given
        #: a result, each turn's follow-up (event_id -> response id), those the gate released
        #: (seen at the input that released them), and the responses of lost connections.
        self.calls: dict[str, str] = {}
        self.results: set[str] = set()
        self.follow_up_turn: dict[str, str] = {}
        self.released: set[str] = set()
        self.lost: set[str] = set()
        #: ... and every response ever forced after a cancel: its turn ended then, even if a
        #: conflict shows it still runs (rule 12: given up under rule 7).
        self.given_up: set[str] = set()
        self.stray_calls = itertools.count(1)
        # What the gate was told, for invariants 1 and 4.
        self.done_delivered: set[str] = set()
        self.in_band_created_delivered: set[str] = set()
        self.superseded: set[str] = set()  # in-band responses a newer in-band created ended
        self.conflict_named: set[str] = set()
        #: Rule 7: responses the gate must have given up (a cancel by id sent cancel_grace
        #: ago without their done), predicted from when the gate sent each cancel.
        self.force_released: set[str] = set()
        self.cancel_sent_at: dict[str, float] = {}
        self.ghosts = itertools.count(1)
        self.history: list[Event] = []  # created and done events delivered, for duplicates
        #: Rule 5: requests in the order they were reported SENT, and creates in wire order.
        self.sent_order: list[str] = []
        self.wire_order: list[str] = []
        #: Client events the application sent (rule 2): event_id -> (sent at, answered).
        self.app_events: dict[str, list[Any]] = {}
        self.app_ids = itertools.count(1)
        #: Interruptions (rule 6): every response whose response.created was delivered, in-band
        #: or out-of-band; whether the gate must hold a response known only from a blind
        #: conflict (certain: cleared by anything that may end it), and whether it may; and
        #: what each interrupt returned, to be awaited.
        self.created_delivered: set[str] = set()
        self.unnamed_certain = False
        self.blind_seen = False
        self.interrupt_targets: list[CancelTarget] = []
        self.gate: Gate

    @property
    def misbehaved(self) -> bool:
        return self.made_misbehave or self.server.misbehaved

    @property
    def lossy(self) -> bool:
        return self.presumed_lost or self.server.lossy

    # ------------------------------------------------------------------ driving the gate

    @initialize(oob_takes_slot=st.booleans())
    def setup(self, oob_takes_slot: bool) -> None:
        self.gate = Gate(
            created_timeout=CREATED_TIMEOUT,
            response_timeout=RESPONSE_TIMEOUT,
            cancel_grace=CANCEL_GRACE,
            out_of_band_takes_slot=oob_takes_slot,
        )

    def _effects(self) -> list[Event]:
        """Take the gate's effects: record each move, check rule 5, return what to send."""
        effects = self.gate.take_effects()
        if effects is None:
            return []
        for request, state in effects.changed:
            self.recorders[id(request)].states.append(state)
            if state is TicketState.SENT:
                self.sent_order.append(request.event_id)
            elif state is TicketState.QUEUED:  # sent back by a conflict
                self._queued(request)
        creates = [e["event_id"] for e in effects.send if e["type"] == "response.create"]
        self.wire_order.extend(creates)
        # Rule 5: no create overtakes one already SENT: the wire order is the SENT order.
        assert self.wire_order == self.sent_order[: len(self.wire_order)]
        return effects.send

    def _collect(self, outgoing: list[Event], *, may_create: bool = False) -> None:
        for event in outgoing:
            assert event["type"] in ("response.create", "response.cancel"), event
            if event["type"] == "response.cancel" and "response_id" not in event:
                self.unnamed_certain = False  # it may have been the unnamed one's cancel
            if event["type"] == "response.cancel" and "response_id" in event:
                self.cancelled_ids.add(event["response_id"])
                self.cancel_sent_at[event["response_id"]] = self.now
            if not may_create:
                assert event["type"] != "response.create", "only pump() may send a create"
            self.server.inbox.append(event)

    def _tick(self) -> None:
        due = {
            rid
            for rid, at in self.cancel_sent_at.items()
            if at + CANCEL_GRACE <= self.now and rid not in self.done_delivered
        }
        self.gate.tick(now=self.now)
        # Rule 7: no response.done within cancel_grace of a cancel: given up.
        self.force_released |= due
        self.given_up |= due
        for rid in due:
            del self.cancel_sent_at[rid]
        self._check_turns()  # a forced release ends a turn
        if not self.misbehaved:  # a duplicate created may make a forgotten one known again
            assert not due & set(self.gate.active_response_ids()), due
        self._collect(self._effects())

    def _pump(self) -> None:
        """What the dispatcher does after every input: apply deadlines, then send what may go."""
        for request in self.requests:
            if (
                request.state is TicketState.FAILED
                and request.finished_at is not None
                and request.finished_at + CREATED_TIMEOUT <= self.now
                and self.sent_creates[request.event_id] > self.answered[request.event_id]
            ):
                self.presumed_lost = True  # the gate presumes this create lost
        for sent_at, answered in self.app_events.values():
            if not answered and sent_at + CREATED_TIMEOUT <= self.now:
                self.presumed_lost = True  # the gate presumes it answered silently
        self._tick()
        holder_before = self.gate.slot_holder
        snapshot = [
            r for r in self.requests if r.state is TicketState.QUEUED and self._waits_in_queue(r)
        ]
        in_flight_before = [r for r in self.requests if r.state is TicketState.SENT]
        self.gate.pump(now=self.now)
        outgoing = self._effects()
        creates = [e for e in outgoing if e["type"] == "response.create"]
        sent = [self.by_event_id[e["event_id"]] for e in creates]
        for event, request in zip(creates, sent, strict=True):
            self.sent_creates[request.event_id] += 1
            assert request.state is TicketState.SENT
            assert event["response"]["metadata"][METADATA_KEY] == request.event_id
            # Rule 12: a follow-up goes out only after the input that released it.
            assert request.event_id not in self.follow_up_turn or (
                request.event_id in self.released
            ), request
        in_band = [r for r in sent if r.takes_slot]
        # Invariant 1: the gate sends an in-band create only when it holds the slot free,
        # takes the slot with it, and so sends at most one per pump.
        assert len(in_band) <= 1, in_band
        for request in in_band:
            assert holder_before is None, (holder_before, request)
            assert self.gate.slot_holder is request
            self._check_knowledge(request, in_flight_before)
            # Invariant 3: priority, then FIFO; a conflict retry first.
            for other in snapshot:
                if other is request or not other.takes_slot:
                    continue
                if other.state is TicketState.QUEUED:
                    mine = _queue_key(request, request.attempts - 1)  # before this send
                    assert _queue_key(other, other.attempts) > mine, (
                        f"{request} sent (attempt {request.attempts}) while {other}"
                        f" (attempts {other.attempts}) waits"
                    )
        # Requests that need no slot never wait for one.
        assert not [
            r
            for r in self.requests
            if r.state is TicketState.QUEUED and self._waits_in_queue(r) and not r.takes_slot
        ]
        self._collect(outgoing, may_create=True)

    def _check_knowledge(self, request: Request, in_flight_before: list[Request]) -> None:
        """Invariant 1 from what the gate was told: nothing it knows of is in the way."""
        # Rule 3: an in-band request in flight holds the slot, even when a server-started
        # response took it meanwhile and has ended (regression: bug A).
        others = [r for r in in_flight_before if r.takes_slot and r is not request]
        assert not others, f"{request} sent while {others} are in flight"
        if self.misbehaved or self.misattributed:
            return
        # Rule 4: a response named by a conflict runs until its done, even one the gate had
        # force-released, and even when the rejected request was being cancelled (bugs B, D).
        told = self.in_band_created_delivered | self.conflict_named
        live = told - self.done_delivered - self.force_released - self.superseded
        assert not live, f"{request} sent while the gate was told {live} are running"

    def _feed(self, event: Event) -> None:
        kind = event["type"]
        gate = self.gate
        blind_conflict: tuple[Request, int, tuple[int, int]] | None = None
        if kind == "session.updated":
            self._app_answered(event["event_id"].removeprefix("ack_"))
            gate.receive_event(event, now=self.now)
        elif kind == "response.created":
            self.history.append(event)
            response = event["response"]
            if response.get("conversation_id") is not None:
                if response["id"] not in self.in_band_created_delivered:
                    # One in-band response at a time: a new one proves the others ended.
                    # (Rule 3: so do those known only from a conflict message.)
                    told = self.in_band_created_delivered | self.conflict_named
                    self.superseded |= told - self.done_delivered
                self.in_band_created_delivered.add(response["id"])
                self.unnamed_certain = False  # an in-band created ends an unnamed blocker
            self.created_delivered.add(response["id"])
            key = (response.get("metadata") or {}).get(METADATA_KEY)
            if key is not None and response["id"] not in self.answered_by:
                self.answered_by.add(response["id"])
                self.answered[key] += 1
                self.known_answered[key] += 1
            owner = self.by_event_id.get(key) if key is not None else None
            abandoned = (
                owner is not None
                and owner.state is TicketState.FAILED
                and response["id"] not in self.done_delivered
            )
            gate.receive_event(event, now=self.now)
            outgoing = self._effects()
            self._collect(outgoing)
            if abandoned and not (self.misbehaved or self.misattributed):
                # Rule 7: a late created of a request given up on is always cancelled by id,
                # whatever was sent before, even a cancel the server could not honour yet
                # (issue 13: the refused cancel used to count as sent).
                cancels = [e.get("response_id") for e in outgoing if e["type"] == "response.cancel"]
                assert response["id"] in cancels, (owner, response["id"], outgoing)
        elif kind in ("response.done", "response.cancelled"):
            self.history.append(event)
            rid = event.get("response_id") or event["response"]["id"]
            for item in event.get("response", {}).get("output") or []:
                if item.get("type") == "function_call":
                    self.calls.setdefault(item["call_id"], rid)
            key = (event.get("response", {}).get("metadata") or {}).get(METADATA_KEY)
            if key is not None and rid not in self.answered_by:  # done without created
                self.answered_by.add(rid)
                self.answered[key] += 1
                self.known_answered[key] += 1
            self.ends_possible += 1
            if (
                kind == "response.done"
                and event["response"].get("conversation_id") is not None
                and rid not in self.done_delivered
            ):
                self.ends_in_band += 1
            if kind == "response.cancelled" or event["response"].get("conversation_id"):
                # An in-band done (the alias counts as one) may show the unnamed one's id.
                self.unnamed_certain = False
            gate.receive_event(event, now=self.now)
            self.done_delivered.add(rid)
        elif kind == "error":
            message = event["error"]["message"]
            answer = self.server.answers.get(id(event))
            target = self.by_event_id[answer.create_event_id] if answer is not None else None
            attempt = answer.attempt if answer is not None else 0
            awaited = (
                target is not None
                and target.state is TicketState.SENT
                and target.attempts == attempt
            )
            echoed = event["error"]["event_id"] is not None
            is_conflict = message.startswith(CONFLICT_MESSAGE_PREFIX)
            param = event["error"]["param"]
            # Rule 2: without event_id, a create's error that is no conflict and names no
            # response.* param is attributed only when that create is the only client event
            # still awaiting an answer (misbehaviour 5).
            alone = target is not None and self._only_unanswered(target)
            app_target = self.server.app_of_error.pop(id(event), None)
            if app_target is not None:
                self._app_answered(app_target)
            blind = is_conflict and "resp_" not in message
            matched = gate.receive_event(event, now=self.now)
            if blind and matched is not None:
                self.blind_seen = True
            if is_conflict and "resp_" in message and matched is not None:
                # A conflict the gate matched names a response that still runs, whatever the
                # gate assumed (not what a response.done said: the server may name a response
                # just finished). One matching no request (its create timed out) is only
                # informative.
                rid = message.split("progress: ")[1].split(".")[0]
                self.conflict_named.add(rid)
                if rid in self.force_released:  # given up, so known afresh, with no cancel
                    self.force_released.discard(rid)
                    self.cancel_sent_at.pop(rid, None)
            if target is not None:
                self.answered[target.event_id] += 1
                if echoed or matched is target:
                    self.known_answered[target.event_id] += 1
            if (
                target is not None
                and not echoed
                and matched is None
                and not is_conflict
                and not (param or "").startswith("response")
            ):
                # A create's answer the gate could not place (rule 2 never guesses): the gate
                # still counts that create as awaiting an answer, so for the errors without
                # event_id that follow, its order of answers is behind the server's, as after
                # a lost event.
                self.presumed_lost = True
            if matched is not None and target is None:
                # An application event's error blamed on a request: only when the order of
                # answers was broken (lost events), or the server misbehaved.
                assert self.lossy or self.misbehaved, (matched, event)
                self.misattributed = True
            if target is not None and not awaited and matched is not None:
                # It answers an attempt the gate gave up on (timed out): no other request may
                # take the blame (regression: bug E). Without error.event_id the gate relies
                # on the server answering creates in order, which a lost event breaks.
                # A server that answers one create twice (misbehaving) breaks that order too,
                # and an echoed event_id is the same on every attempt of a request: an echoed
                # answer of an earlier attempt comes only when an earlier misattribution sent
                # the request again before that attempt was answered.
                assert not echoed or self.misbehaved or self.misattributed, (matched, target)
                assert self.lossy or self.misbehaved, (matched, target, event)
                self.misattributed = True
            explicit = echoed or is_conflict or (param or "").startswith("response") or alone
            if awaited and not echoed and self.lossy and matched is not target:
                # Without event_id the gate relies on the order of answers, which lost events
                # break: it may blame the wrong create, and what follows is not checked.
                self.misattributed = True
            if awaited and not self.misattributed and explicit and (echoed or not self.lossy):
                # The rejection reaches the request it answers: a conflict sends it back to
                # the queue (or ends it, when cancelled), any other error fails it.
                assert matched is target, (matched, target, event)
                if blind and not self.misbehaved:
                    # Checked once the dispatcher has had its turn (a retry goes out there).
                    blind_conflict = (target, attempt, self.ends_when_queued[target.event_id])
                elif is_conflict:
                    assert target.state in (TicketState.QUEUED, TicketState.DONE), target
                    assert target.attempts == attempt
                else:
                    assert target.state is TicketState.FAILED, target
        else:
            item = event.get("item") or {}
            if kind == "response.output_item.added" and item.get("type") == "function_call":
                self.calls.setdefault(item["call_id"], event["response_id"])
            request = gate.receive_event(event, now=self.now)
            if request is not None:
                self.recorders[id(request)].events.append(event)
        self._check_turns()
        self._collect(self._effects())
        self._pump()
        if blind_conflict is not None:
            self._check_blind_conflict(*blind_conflict)

    def _waits_in_queue(self, request: Request) -> bool:
        """Not held: by the application (``held``), nor for its turn (rule 12)."""
        event_id = request.event_id
        return event_id not in self.held and (
            event_id not in self.follow_up_turn or event_id in self.released
        )

    def _check_turns(self) -> None:
        """Rule 12, after every input to the gate: a turn's follow-up is released exactly when
        the response that made the calls has ended and every call it made so far has a result.
        Released: its response got its done, was forced after a cancel, superseded, or lost
        with its connection. Not held: once it got its done, was forced, or was lost (a
        superseded one may be ours, which the gate keeps until its done or deadline)."""
        check = not self.misbehaved  # a duplicate done may end a turn twice, or not at all
        for event_id, turn in self.follow_up_turn.items():
            request = self.by_event_id[event_id]
            if event_id in self.released or request.state.terminal:
                continue
            answered = all(c in self.results for c, rid in self.calls.items() if rid == turn)
            if self.gate.is_held(request):
                ended = self.done_delivered | self.given_up | self.lost
                if check:
                    assert not (answered and turn in ended), ("complete, still held", request)
                continue
            ended = self.done_delivered | self.given_up | self.lost | self.superseded
            if check:
                assert turn in ended, ("released before its response ended", request, turn)
                assert answered, ("released before every call had a result", request, turn)
            self.released.add(event_id)
            self._queued(request)

    def _queued(self, request: Request) -> None:
        self.ends_when_queued[request.event_id] = (self.ends_possible, self.ends_in_band)

    def _check_blind_conflict(
        self, target: Request, attempt: int, ends_then: tuple[int, int]
    ) -> None:
        """Rule 4 as amended: an old-shape conflict (naming nothing) is retried at once only
        after an in-band end since the request was queued, and then only if nothing else is
        known to run; otherwise the request waits (it is cancelled, if that was asked for)."""
        possible_then, in_band_then = ends_then
        retried = target.state is TicketState.SENT
        if retried:
            assert target.attempts == attempt + 1, target
            # Issue 13: it used to be retried into the very blocker whose created was to come.
            assert self.ends_possible > possible_then, ("retried into the blocker", target)
            return
        assert target.attempts == attempt, target
        assert target.state in (TicketState.QUEUED, TicketState.DONE), target
        told = self.in_band_created_delivered | self.conflict_named
        if self.ends_possible == possible_then and not (
            told - self.done_delivered - self.force_released
        ):
            # Rule 4: nothing known runs or ended: the gate holds the blocker unnamed (rule 6:
            # an interrupt reaches it only by the in-band cancel without id).
            self.unnamed_certain = True
        live = told - self.done_delivered - self.force_released - self.superseded
        ours_running = any(r.state is TicketState.ACTIVE for r in self.requests)
        if (
            self.ends_in_band > in_band_then
            and not live
            and not ours_running
            and id(target) not in self.cancel_wanted
        ):
            # Misbehaviour 3: it used to wait 35 s for a blocker that had already ended.
            raise AssertionError(f"{target} not retried after an in-band end")

    def _app_answered(self, event_id: str) -> None:
        """The server answered this application event: the order of answers says every
        client event sent before it was read too."""
        if event_id in self.app_events:
            self.app_events[event_id][1] = True

    def _only_unanswered(self, target: Request) -> bool:
        """Whether ``target``'s create is the only client event still awaiting an answer."""
        if any(not answered for _, answered in self.app_events.values()):
            return False
        # Answers the gate could attribute: an error it could not place leaves its create
        # awaiting an answer in the gate's eyes (rule 2 never guesses).
        known = self.known_answered
        return (
            all(
                self.sent_creates[r.event_id] <= known[r.event_id]
                for r in self.requests
                if r is not target
            )
            and self.sent_creates[target.event_id] == known[target.event_id] + 1
        )

    # ------------------------------------------------------------------ client rules

    @rule(
        priority=st.integers(-2, 2),
        out_of_band=st.sampled_from([False, False, False, True]),
        held=st.sampled_from([False, False, False, True]),
        instructions=st.sampled_from([None, "hi"]),
    )
    def submit(
        self, priority: int, out_of_band: bool, held: bool, instructions: str | None
    ) -> None:
        body: Event = {}
        if out_of_band:
            body["conversation"] = "none"
        if instructions is not None:
            body["instructions"] = instructions
            body["metadata"] = {"topic": "x"}
        recorder = Recorder()
        if self.closed:
            with pytest.raises(ConnectionLost):
                self.gate.submit(body, priority=priority, now=self.now, owner=lambda r: recorder)
            return
        request = self.gate.submit(
            body, priority=priority, now=self.now, owner=lambda r: recorder, held=held
        )
        assert request.state is TicketState.QUEUED
        self.requests.append(request)
        self.recorders[id(request)] = recorder
        self.by_event_id[request.event_id] = request
        if held:
            self.held.add(request.event_id)
        else:
            self._queued(request)
        self._collect(self._effects())
        self._pump()

    @precondition(lambda self: not self.closed)
    @rule()
    def send_app_event(self) -> None:
        """The application sends another client event (rule 2: it awaits its answer)."""
        event = {"type": "session.update", "event_id": f"evt_app_{next(self.app_ids)}"}
        self.app_events[event["event_id"]] = [self.now, False]
        self.gate.client_event_sent(event, now=self.now)
        self.server.inbox.append(event)

    @precondition(lambda self: not self.closed and self.held)
    @rule(data=st.data())
    def release_held(self, data: st.DataObject) -> None:
        """A function-call follow-up joins the queue (releasing a cancelled one is harmless)."""
        request = self.by_event_id[data.draw(st.sampled_from(sorted(self.held)))]
        self._release(request)
        self._collect(self._effects())
        self._pump()

    @precondition(lambda self: not self.closed)
    @rule(data=st.data())
    def send_function_result(self, data: st.DataObject) -> None:
        """The application sends a function call's result (rule 12); now and then one for a
        call the gate never saw."""
        open_calls = sorted(c for c in self.calls if c not in self.results)
        stray = f"call_stray{next(self.stray_calls)}"
        self._function_result(data.draw(st.sampled_from([*open_calls, stray]), label="call"))
        self._collect(self._effects())
        self._pump()

    def _function_result(self, call_id: str) -> None:
        turn = self.calls.get(call_id)
        recorder = Recorder()
        request = self.gate.function_result(call_id, {}, now=self.now, owner=lambda r: recorder)
        self.results.add(call_id)
        if id(request) in self.recorders:
            # One follow-up per turn: a later result joins the turn's, still held.
            assert turn is not None, (call_id, request)
            assert self.follow_up_turn.get(request.event_id) == turn, (call_id, request)
            assert request.event_id not in self.released, (call_id, request)
        else:
            assert request.state is TicketState.QUEUED
            self.requests.append(request)
            self.recorders[id(request)] = recorder
            self.by_event_id[request.event_id] = request
            if turn is None:  # a call never seen: a follow-up of its own, queued at once
                self._queued(request)
            else:
                self.follow_up_turn[request.event_id] = turn
        self._check_turns()

    def _release(self, request: Request) -> None:
        before = request.state
        self.gate.release_held(request)
        self.held.discard(request.event_id)
        assert request.state is before
        if before is TicketState.QUEUED:
            assert not self.gate.is_held(request)
            self._queued(request)

    @precondition(lambda self: not self.closed and self.requests)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """Cancel a request at any stage (terminal ones included: it must be harmless)."""
        pending = [r for r in self.requests if not r.state.terminal]
        pool = pending if pending and data.draw(st.booleans()) else self.requests
        request = data.draw(st.sampled_from(pool))
        before = request.state
        if not before.terminal:
            self.cancel_wanted.setdefault(id(request), request.attempts)
        self.gate.cancel(request, now=self.now)
        if before is TicketState.QUEUED:
            assert request.state is TicketState.DONE
            assert request.result is not None
            assert request.result.status == "cancelled"
        elif before.terminal:
            assert request.state is before
        self._collect(self._effects())
        self._pump()

    @precondition(lambda self: not self.closed)
    @rule()
    def cancel_active(self) -> None:
        holder = self.gate.slot_holder
        if isinstance(holder, Request):
            self.cancel_wanted.setdefault(id(holder), holder.attempts)
        self.gate.cancel_active(now=self.now)
        self._collect(self._effects())
        self._pump()

    @precondition(lambda self: not self.closed)
    @rule()
    def interrupt(self) -> None:
        """Rule 6: the user speaks over the assistant. Every response the model knows to run
        (in-band or out-of-band, ours or the server's) is cancelled by id, unless a cancel by id
        for it is already within its grace; one known only from a blind conflict by the cancel
        without id; every request in flight once created; queued ones are not touched."""
        told = self.created_delivered | self.conflict_named
        running = told - self.done_delivered - self.force_released - self.superseded
        cancelling = set(self.cancel_sent_at)
        unnamed = self.unnamed_certain
        in_flight = [r for r in self.requests if r.state is TicketState.SENT]
        queued = [r for r in self.requests if r.state is TicketState.QUEUED]
        targets = self.gate.interrupt(now=self.now)
        effects = self.gate.take_effects()
        assert effects is None or not effects.changed, effects  # no request moves at once
        outgoing = [] if effects is None else effects.send
        assert all(e["type"] == "response.cancel" for e in outgoing), outgoing
        self._collect(outgoing)
        by_id = [e["response_id"] for e in outgoing if "response_id" in e]
        assert len(by_id) == len(set(by_id)), by_id  # once each
        without_id = len(outgoing) - len(by_id)
        assert without_id <= 1, outgoing
        if not (self.misbehaved or self.misattributed):
            missing = running - cancelling - set(by_id)
            assert not missing, f"interrupt missed {missing} (sent {outgoing})"
            if unnamed:
                assert without_id == 1, ("the unnamed blocker was not cancelled", outgoing)
            if without_id:
                assert self.blind_seen, ("a cancel without id, yet no blind conflict", outgoing)
        # What to await: the responses by id, then the requests in flight (which are cancelled
        # by id once created: cancels_are_honored).
        returned = [t for t in targets if isinstance(t, Request)]
        assert {id(r) for r in returned} == {id(r) for r in in_flight}, (returned, in_flight)
        assert targets[len(targets) - len(returned) :] == returned
        responses = targets[: len(targets) - len(returned)]
        assert {t.response_id for t in responses} >= set(by_id)
        assert len({id(t) for t in targets}) == len(targets)
        for request in in_flight:
            self.cancel_wanted.setdefault(id(request), request.attempts)
        for request in queued:  # untouched: they go out later, in order (invariant 3)
            assert request.state is TicketState.QUEUED
            assert not request.cancel_requested
        self.interrupt_targets.extend(targets)
        self._pump()

    @invariant()
    def interrupted_responses_end(self) -> None:
        """Rule 6 and 7: an interrupted response ends with its done, or is forced after
        cancel_grace (teardown: every target ends)."""
        if self.misbehaved:
            return
        ended = self.done_delivered | self.force_released
        for target in self.interrupt_targets:
            if isinstance(target, Request) or target.response_id is None:
                continue
            if target.response_id in ended:
                assert self.gate.is_finished(target), target

    @precondition(lambda self: not self.closed)
    @rule(seconds=st.one_of(st.floats(0.1, 4.0), st.floats(4.0, PAST_ALL_DEADLINES)))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._pump()

    @precondition(lambda self: not self.closed)
    @rule(dice=st.integers(0, 7))
    def disconnect(self, dice: int) -> None:
        """The connection breaks (rarely: a closed gate has little left to test)."""
        if dice != 7:
            return
        self.gate.close(ConnectionLost("connection lost"), now=self.now)
        self._effects()
        self.closed = True
        assert self.gate.closed
        assert self.gate.slot_holder is None
        assert list(self.gate.pending()) == []
        for request in self.requests:
            assert request.state.terminal

    @precondition(lambda self: not self.closed)
    @rule(dice=st.integers(0, 5))
    def new_connection(self, dice: int) -> None:
        """The connection is lost and a new one opened (rule 10), now and then."""
        if dice != 5:
            return
        before = {id(r): r.state for r in self.requests}
        self.gate.connection_lost(ConnectionLost("connection lost"), now=self.now)
        self._effects()
        for request in self.requests:
            state = before[id(request)]
            if state in (TicketState.SENT, TicketState.ACTIVE):
                # Never resent: nobody knows whether the old server ran it.
                assert request.state is TicketState.FAILED, request
                assert isinstance(request.error, ConnectionLost)
            else:
                assert request.state is state, request  # queued and held ones stay
        assert self.gate.quiet
        assert self.gate.slot_holder is None
        assert self.gate.active_response_ids() == []
        # A new server: what the old one said or will say is gone.
        self.superseded |= self.created_delivered | self.conflict_named
        self.unnamed_certain = self.blind_seen = False
        self.cancel_sent_at.clear()  # the gate forgot them, and what it sent
        self.lost |= set(self.calls.values())  # the turns' responses ended with it
        self._check_turns()
        self.server.new_connection()
        # The gate forgot what awaited answers on the old connection; so does the model.
        for event_id in self.app_events:
            self.app_events[event_id][1] = True
        for request in self.requests:
            self.answered[request.event_id] = self.sent_creates[request.event_id]
            self.known_answered[request.event_id] = self.sent_creates[request.event_id]
        self.gate.resume()
        self._pump()

    # ------------------------------------------------------------------ server rules

    def _draw(self, data: st.DataObject) -> Draw:
        return lambda strategy, label: data.draw(strategy, label=label)

    @precondition(lambda self: not self.closed and self.server.inbox)
    @rule(data=st.data())
    def server_process(self, data: st.DataObject) -> None:
        """The server reads the next client event and answers it (or not)."""
        self.server.process(self._draw(data))

    @precondition(lambda self: not self.closed and self.server.active)
    @rule(data=st.data())
    def server_finish(self, data: st.DataObject) -> None:
        response = data.draw(st.sampled_from(sorted(self.server.active.values(), key=str)))
        if response.cancel_requested:
            status = data.draw(st.sampled_from(["cancelled", "cancelled", "completed"]))
        else:
            status = data.draw(st.sampled_from(["completed", "cancelled", "failed", "incomplete"]))
        alias = status == "cancelled" and data.draw(st.integers(0, 4)) == 0
        withhold = data.draw(st.integers(0, 9)) == 0
        self.server.finish(response, status, alias=alias, withhold=withhold)

    @precondition(lambda self: not self.closed and self.server.active)
    @rule(data=st.data())
    def server_delta(self, data: st.DataObject) -> None:
        response = data.draw(st.sampled_from(sorted(self.server.active.values(), key=str)))
        self.server.delta(response)

    @precondition(lambda self: not self.closed and self.server.active)
    @rule(data=st.data())
    def server_function_call(self, data: st.DataObject) -> None:
        response = data.draw(st.sampled_from(sorted(self.server.active.values(), key=str)))
        self.server.call(response)

    @precondition(lambda self: not self.closed)
    @rule(created_is=st.sampled_from(["shown"] * 4 + ["withheld", "late"]))
    def server_starts_in_band(self, created_is: str) -> None:
        """Voice activity detection (or a sideband connection) starts a response; its
        response.created may be lost, or come late (after the conflict it causes)."""
        if self.server.in_band_active() is None:
            self.server.start(None, True, created_is=created_is)

    @precondition(lambda self: not self.closed)
    @rule()
    def server_starts_out_of_band(self) -> None:
        self.server.start(None, False)

    @precondition(lambda self: not self.closed and self.server.pending())
    @rule(data=st.data())
    def server_shows_created(self, data: st.DataObject) -> None:
        """A late response.created is sent at last."""
        self.server.show(data.draw(st.sampled_from(self.server.pending())))

    @precondition(lambda self: not self.closed and (self.server.inbox or self.server.outbox))
    @rule(data=st.data())
    def server_round(self, data: st.DataObject) -> None:
        """The server reads everything it was sent, and everything it said is delivered."""
        while self.server.inbox:
            self.server.process(self._draw(data))
        while self.server.outbox:
            self._feed(self.server.outbox.popleft())

    @precondition(lambda self: not self.closed and self.server.outbox)
    @rule(count=st.integers(1, 3))
    def deliver(self, count: int) -> None:
        for _ in range(count):
            if self.server.outbox:
                self._feed(self.server.outbox.popleft())

    # ------------------------------------------------------------------ misbehaving server

    @precondition(lambda self: not self.closed)
    @rule(data=st.data())
    def misbehave(self, data: st.DataObject) -> None:
        """The server breaks its own rules; the gate must tolerate it (rule 9)."""
        self.made_misbehave = True
        kinds = ["second in-band", "unknown done", "stray conflict"]
        if self.history:
            kinds.append("duplicate")
        kind = data.draw(st.sampled_from(kinds), label="misbehaviour")
        if kind == "second in-band":
            self.server.misbehaved = True
            self.server.start(None, True)
        elif kind == "duplicate":
            # A created or done delivered again (at once, or much later).
            self._feed(data.draw(st.sampled_from(self.history), label="duplicated"))
        elif kind == "unknown done":
            rid = f"resp_ghost{next(self.ghosts)}"
            if data.draw(st.booleans(), label="alias"):
                self._feed({"type": "response.cancelled", "response_id": rid})
            else:
                in_band = data.draw(st.booleans(), label="in band")
                self._feed(done(rid, conversation_id="conv_1" if in_band else None))
        else:
            # A conflict for no request of ours (another client event, or a stale echo).
            legacy = data.draw(st.booleans(), label="legacy")
            self._feed(conflict("evt_not_ours", f"resp_ghost{next(self.ghosts)}", legacy=legacy))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def slot_has_one_holder(self) -> None:
        """1 (shape) and 4: the slot holder is one request in flight, or one unfinished response."""
        holder = self.gate.slot_holder
        assert holder is None or isinstance(holder, Request | str)
        if isinstance(holder, Request):
            assert holder.state is TicketState.SENT, holder
            assert holder.takes_slot
        elif isinstance(holder, str) and holder != "?":
            # Even after a duplicate or late response.created (regression: bug C).
            assert holder not in self.done_delivered, f"slot held by finished {holder}"
        stats = self.gate.statistics()
        assert stats.slot_busy == (holder is not None)

    @invariant()
    def terminal_once(self) -> None:
        """2: transitions are legal and reported; a terminal state is never left nor re-entered."""
        for request in self.requests:
            states = self.recorders[id(request)].states
            previous = TicketState.QUEUED
            for state in states:
                assert (previous, state) in ALLOWED, (request, states)
                previous = state
            assert request.state is previous, (request, states)
            assert sum(s.terminal for s in states) <= 1, (request, states)
            if self.closed:
                assert request.state.terminal

    @invariant()
    def cancels_are_honored(self) -> None:
        """Rule 6: a cancelled request is never sent again, and once started it is cancelled
        by id; the server starts at most one response per request when it keeps the rules."""
        for request in self.requests:
            attempts = self.cancel_wanted.get(id(request))
            if attempts is None:
                continue
            assert request.attempts == attempts, request
            if request.state is TicketState.ACTIVE:
                assert request.response_id in self.cancelled_ids, request
        if not (self.misbehaved or self.misattributed):
            accepted = self.server.accepted
            assert all(n <= 1 for n in accepted.values()), accepted

    @invariant()
    def conflict_never_surfaces(self) -> None:
        """5: the one-active-response rejection is always absorbed."""
        for request in self.requests:
            err = request.error
            if isinstance(err, ResponseRejected):
                assert err.code != CONFLICT, request
                assert not err.message.startswith(CONFLICT_MESSAGE_PREFIX), request

    @invariant()
    def nothing_lost(self) -> None:
        """6: every request is pending in the gate, or terminal with its outcome."""
        pending = list(self.gate.pending())
        counts = Counter(id(r) for r in pending)
        assert all(n == 1 for n in counts.values()), pending
        expected = {id(r) for r in self.requests if not r.state.terminal}
        assert set(counts) == expected
        for request in self.requests:
            if request.state is TicketState.DONE:
                assert request.result is not None
                assert request.error is None
                assert request.result.status in ("completed", "cancelled", "failed", "incomplete")
            elif request.state is TicketState.FAILED:
                assert request.error is not None
                assert request.result is None
            else:
                assert request.result is None
                assert request.error is None
        stats = self.gate.statistics()
        queued = [r for r in self.requests if r.state is TicketState.QUEUED]
        assert stats.queue_depth == len(queued)
        assert stats.in_flight == len([r for r in self.requests if r.state is TicketState.SENT])

    def _check_all(self) -> None:
        self.slot_has_one_holder()
        self.terminal_once()
        self.cancels_are_honored()
        self.conflict_never_surfaces()
        self.nothing_lost()

    # ------------------------------------------------------------------ liveness

    def _give_every_result(self) -> None:
        for call_id in sorted(c for c in self.calls if c not in self.results):
            self._function_result(call_id)
        self._collect(self._effects())

    def _unknowable_turns(self) -> list[Request]:
        """Follow-ups whose turn's response the gate never heard of: its created and done both
        lost (and never named, cancelled or given up): nothing can end that turn, so they wait
        (a known limit of rule 12: the gate holds no deadline for a response it never saw)."""
        heard = self.created_delivered | self.done_delivered | self.conflict_named | self.lost
        return [
            r
            for r in self.requests
            if r.state is TicketState.QUEUED
            and r.event_id in self.follow_up_turn
            and self.follow_up_turn[r.event_id] not in heard
        ]

    def _undrained(self) -> list[Request]:
        unknowable = self._unknowable_turns()
        return [r for r in self.requests if not r.state.terminal and r not in unknowable]

    def teardown(self) -> None:
        """7: once the server answers everything, the queue drains within a bounded time."""
        if not hasattr(self, "gate"):
            return
        if self.closed:
            assert all(r.state.terminal for r in self.requests)
            assert all(self.gate.is_finished(t) for t in self.interrupt_targets)
            return
        server = self.server
        for event_id in sorted(self.held):
            self._release(self.by_event_id[event_id])
        self._give_every_result()
        self._pump()
        bound = 3 * len(self.requests) + 2 * len(server.inbox) + 10
        statuses = itertools.cycle(["completed", "incomplete", "completed", "failed"])
        for _ in range(bound):
            self._give_every_result()  # calls delivered since
            if not self._undrained() and self.gate.slot_holder is None:
                break
            # Bounded: a gate that retries at once after each conflict would loop forever here.
            for _ in range(20):
                if not (server.inbox or server.outbox):
                    break
                while server.inbox:
                    server.answer_well(server.inbox.popleft())
                while server.outbox:
                    self._feed(server.outbox.popleft())
            for response in list(server.active.values()):
                server.finish(response, next(statuses))
            while server.outbox:
                self._feed(server.outbox.popleft())
            if not server.inbox:
                self.now += PAST_ALL_DEADLINES
                self._pump()
            self._check_all()
        pending = self._undrained()
        assert not pending, f"not drained after {bound} rounds: {pending}"
        assert self.gate.slot_holder is None
        assert self.gate.statistics().queue_depth == len(self._unknowable_turns())
        # Rule 6: every target of an interrupt ends: its done, or forced after cancel_grace.
        for _ in range(3):
            while server.inbox:
                server.answer_well(server.inbox.popleft())
            while server.outbox:
                self._feed(server.outbox.popleft())
            self.now += PAST_ALL_DEADLINES
            self._pump()
        unfinished = [t for t in self.interrupt_targets if not self.gate.is_finished(t)]
        assert not unfinished, unfinished


GateMachine.TestCase.settings = settings(
    max_examples=5000 if LONG else 200,
    stateful_step_count=100 if LONG else 40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow] if LONG else [],
    print_blob=True,
)
TestGate = GateMachine.TestCase


# ---------------------------------------------------------------------- regressions
#
# Minimal reproductions of the gate bugs this state machine found (all fixed).


def test_slot_stays_with_a_request_in_flight() -> None:
    d = Driver()
    first = d.submit()  # in flight: holds the slot
    second = d.submit()
    d.feed(created("resp_vad"))  # voice activity detection won the race: it takes the slot
    d.feed(done("resp_vad"))  # ... and ends before the server reads our create
    assert first.state is TicketState.SENT  # its outcome (created or conflict) is still to come
    assert second.state is TicketState.QUEUED  # bug A: second was sent beside first


def test_cancelled_request_conflict_hands_the_slot_to_the_blocker() -> None:
    d = Driver()
    first = d.submit()
    d.gate.cancel(first, now=d.now)
    d.feed(conflict(first.event_id, "resp_X"))  # the server says resp_X is running
    assert first.state is TicketState.DONE
    second = d.submit()
    assert d.gate.slot_holder == "resp_X"  # bug B: second took it, bound to be rejected
    assert second.state is TicketState.QUEUED


def test_duplicate_created_after_done_is_ignored() -> None:
    d = Driver()
    d.feed(created("resp_1"))
    d.feed(done("resp_1"))
    d.feed(created("resp_1"))  # a duplicate, or a late one
    request = d.submit()
    assert d.gate.slot_holder is request  # bug C: "resp_1" held it for 35 s
    assert d.cancels() == []


def test_no_retry_storm_after_a_force_release() -> None:
    d = Driver(response_timeout=30.0, cancel_grace=5.0)
    d.feed(created("resp_X"))
    request = d.submit()
    d.advance(30.1)  # resp_X silent: cancelled
    d.advance(5.1)  # no done: force-released; request sent
    assert request.attempts == 1
    for _ in range(3):  # the server still runs resp_X and says so
        d.feed(conflict(request.event_id, "resp_X"))
    assert request.state is TicketState.QUEUED  # bug D: re-sent after each conflict at once
    assert request.attempts == 1
    assert d.gate.slot_holder == "resp_X"


@pytest.mark.parametrize("legacy", [False, True])
def test_conflict_of_a_timed_out_create_is_not_blamed_on_the_next_request(
    legacy: bool,
) -> None:
    d = Driver(created_timeout=10.0)
    first = d.submit()
    d.advance(10.1)  # no response.created: first fails, its create still on the wire
    assert first.state is TicketState.FAILED
    second = d.submit()  # sent
    d.feed(created("resp_X"))  # a server-started response runs when first is read, so:
    d.feed(conflict(None, "resp_X", legacy=legacy))  # the answer to FIRST, no error.event_id
    assert second.state is TicketState.SENT  # bug E: QUEUED, blamed for first's rejection
    d.feed(done("resp_X"))
    # second's create is read now and accepted; the gate must not send it again.
    assert [c["event_id"] for c in d.creates()] == [first.event_id, second.event_id]


def test_invalid_value_of_a_timed_out_create_does_not_fail_the_next_request() -> None:
    d = Driver(created_timeout=10.0)
    first = d.submit({"voice": "nope"})
    d.advance(10.1)
    assert first.state is TicketState.FAILED
    second = d.submit()
    invalid = error("invalid_value", "Invalid voice", None)
    invalid["error"]["param"] = "response.voice"
    d.feed(invalid)  # the answer to FIRST
    assert second.state is TicketState.SENT  # bug E: FAILED with first's error


def test_bug_f_force_release_frees_the_slot_while_another_response_runs() -> None:
    d = Driver(response_timeout=30.0, cancel_grace=5.0)
    d.feed(created("resp_1"))  # server-started; its response.done will be lost
    request = d.submit()
    d.advance(20)
    d.feed(created("resp_2"))  # another in-band response: so resp_1 has ended
    d.advance(10.1)  # resp_1 silent: cancelled
    d.advance(5.1)  # no done: force-released
    assert d.gate.active_response_ids() == ["resp_2"]
    assert request.state is TicketState.QUEUED  # fails: SENT, bound to be rejected
    assert d.gate.slot_holder == "resp_2"
