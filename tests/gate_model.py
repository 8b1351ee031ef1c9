"""The model Realtime server the gate's state machine plays against (test_gate_properties.py).

A tiny simulation of the server's side of the one-active-response rule: it reads the
``response.create`` / ``response.cancel`` / ``session.update`` events the client sends, in order,
keeps at most one in-band response active, and answers in one ordered stream: ``response.created``,
deltas, ``response.done`` (any status, or the ``response.cancelled`` alias), the conflict rejection
(new and legacy shapes, with and without ``error.event_id``), other rejections,
``response_cancel_not_active`` and acknowledgements. It also starts responses by itself (voice
activity, out-of-band), makes function calls, withholds events, shows a response's
``response.created`` late (after the conflict it causes, and after a cancel it could not honour
yet), and ignores cancels.

Every choice is drawn through ``draw(strategy, label)``, so the machine decides what happens and
Hypothesis can shrink it. The model records what it knows for the machine's oracles: which
create each error answers, how many responses each request got, and whether it broke the order
of answers (``lossy``: a withheld or late event) or its own rules (``misbehaved``).
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import attrs
from hypothesis import strategies as st

from gate_helpers import conflict, created, done, error

Event = dict[str, Any]
Draw = Callable[[st.SearchStrategy[Any], str], Any]

NOT_ACTIVE = "Cancellation failed: no active response found"


def error_with_param(
    code: str | None, message: str, event_id: str | None, param: str | None
) -> Event:
    event = error(code, message, event_id)
    event["error"]["param"] = param
    return event


@attrs.define
class ServerResponse:
    rid: str
    key: str | None  # the request event_id echoed in metadata; None when the server started it
    in_band: bool
    metadata: dict[str, Any] | None
    cancel_requested: bool = False
    #: Its ``response.created``, not yet sent: the server shows it late.
    pending_created: Event | None = None
    #: The ``call_id`` of each function call it made (rule 12).
    calls: list[str] = attrs.Factory(list)


@attrs.define
class Answer:
    """An error the server sent in answer to a create: which one, and which attempt."""

    event: Event  # kept alive with it: an id() is unique only while its object lives
    create_event_id: str
    attempt: int


class ModelServer:
    """The server's side: one in-band response at a time, answers in one ordered stream."""

    def __init__(self) -> None:
        self.inbox: deque[Event] = deque()  # client events received, not yet processed
        self.outbox: deque[Event] = deque()  # server events not yet delivered
        self.active: dict[str, ServerResponse] = {}
        #: An in-band response just finished that the server may still name in one conflict
        #: (its done is sent, the conversation not yet free): seen in practice.
        self.lingering: str | None = None
        self._ids = itertools.count(1)
        self._connections = itertools.count(1)
        #: What the machine's oracles read, kept across connections.
        self.accepted: Counter[str] = Counter()  # create event_id -> responses started
        self.creates_read: Counter[str] = Counter()  # create event_id -> times read
        self.answers: dict[int, Answer] = {}  # id(error event) -> the create it answers
        self.app_of_error: dict[int, str] = {}  # id(error event) -> the application event
        self.lossy = False  # an answer withheld or shown late
        self.misbehaved = False  # two in-band responses at once

    # ------------------------------------------------------------------ state

    def in_band_active(self) -> ServerResponse | None:
        for response in self.active.values():
            if response.in_band:
                return response
        return None

    def pending(self) -> list[ServerResponse]:
        """Responses whose ``response.created`` is still to be shown."""
        return [r for r in self.active.values() if r.pending_created is not None]

    def new_connection(self) -> None:
        """A new connection: what the old one said or will say is gone."""
        self.inbox.clear()
        self.outbox.clear()
        self.active.clear()
        self.lingering = None
        self._ids = itertools.count(1000 * next(self._connections))  # fresh response ids

    # ------------------------------------------------------------------ responses

    def start(
        self,
        key: str | None,
        in_band: bool,
        metadata: dict[str, Any] | None = None,
        *,
        created_is: str = "shown",
    ) -> ServerResponse:
        """Start a response; its ``response.created`` is ``shown``, ``withheld`` (lost) or
        ``late`` (shown by :meth:`show`, or when the response next says anything)."""
        response = ServerResponse(f"resp_{next(self._ids)}", key, in_band, metadata)
        self.active[response.rid] = response
        if created_is == "withheld":
            return response
        event = created(response.rid, key, conversation_id="conv_1" if in_band else None)
        event["response"]["metadata"] = metadata
        if created_is == "late":
            response.pending_created = event
        else:
            self.outbox.append(event)
        return response

    def show(self, response: ServerResponse) -> None:
        """Send a late ``response.created`` now."""
        if response.pending_created is not None:
            self.outbox.append(response.pending_created)
            response.pending_created = None

    def delta(self, response: ServerResponse) -> None:
        self.show(response)
        self.outbox.append(
            {"type": "response.output_text.delta", "response_id": response.rid, "delta": "x"}
        )

    def call(self, response: ServerResponse) -> None:
        """The response makes a function call (a ``function_call`` item)."""
        self.show(response)
        call_id = f"call_{next(self._ids)}"
        response.calls.append(call_id)
        self.outbox.append(
            {
                "type": "response.output_item.added",
                "response_id": response.rid,
                "item": {"type": "function_call", "call_id": call_id, "name": "f"},
            }
        )

    def finish(
        self, response: ServerResponse, status: str, *, alias: bool = False, withhold: bool = False
    ) -> None:
        self.show(response)
        del self.active[response.rid]
        if response.in_band:
            self.lingering = response.rid
        if withhold:
            self.lossy = True
            return
        if alias:
            self.outbox.append({"type": "response.cancelled", "response_id": response.rid})
            return
        event = done(
            response.rid,
            response.key,
            status=status,
            conversation_id="conv_1" if response.in_band else None,
            output=[
                {"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"}
                for call_id in response.calls
            ],
        )
        event["response"]["metadata"] = response.metadata
        self.outbox.append(event)

    # ------------------------------------------------------------------ reading client events

    def process(self, draw: Draw) -> None:
        """Read the next client event and answer it (or not)."""
        event = self.inbox.popleft()
        if event["type"] == "response.create":
            self._create(event, draw)
        elif event["type"] == "session.update":
            self._app_event(event, draw)
        else:
            self._cancel(event, draw)

    def _app_event(self, event: Event, draw: Draw) -> None:
        how = draw(st.sampled_from(["ack", "ack", "error", "error without id"]), "app")
        if how == "ack":
            self.outbox.append({"type": "session.updated", "event_id": f"ack_{event['event_id']}"})
        else:
            event_id = event["event_id"] if how == "error" else None
            answer = error_with_param("invalid_value", "Invalid session", event_id, None)
            self.app_of_error[id(answer)] = event["event_id"]
            self.outbox.append(answer)

    def _create(self, event: Event, draw: Draw) -> None:
        self.creates_read[event["event_id"]] += 1
        body = event["response"]
        in_band = body.get("conversation", "auto") != "none"
        echo = draw(st.booleans(), "echo event_id")
        event_id = event["event_id"] if echo else None
        blocker = self.in_band_active() if in_band else None
        lingering, self.lingering = self.lingering, None
        if (
            blocker is None
            and in_band
            and lingering is not None
            and draw(st.integers(0, 3), "lingering") == 0
        ):
            self._reject(event, conflict(event_id, lingering))
            return
        if blocker is not None:
            if draw(st.integers(0, 9), "sloppy") == 0:
                self.misbehaved = True  # a second in-band response, as if nothing were active
            else:
                legacy = draw(st.booleans(), "legacy")
                self._reject(event, conflict(event_id, blocker.rid, legacy=legacy))
                if blocker.pending_created is not None and draw(st.booleans(), "show blocker"):
                    self.show(blocker)  # the conflict came before its response.created
                return
        outcome = draw(st.sampled_from(["accept"] * 6 + ["invalid"]), "outcome")
        if outcome == "invalid":
            param = draw(st.sampled_from([None, "response.voice"]), "param")
            self._reject(event, error_with_param("invalid_value", "Invalid voice", event_id, param))
            return
        created_is = draw(st.sampled_from(["shown"] * 18 + ["withheld", "late"]), "created")
        self.lossy |= created_is != "shown"  # its answer comes out of order, or never
        self.accepted[event["event_id"]] += 1
        self.start(event["event_id"], in_band, body.get("metadata"), created_is=created_is)

    def _reject(self, create: Event, error_event: Event) -> None:
        self.answers[id(error_event)] = Answer(
            error_event, create["event_id"], self.creates_read[create["event_id"]]
        )
        self.outbox.append(error_event)

    def _cancel(self, event: Event, draw: Draw) -> None:
        rid = event.get("response_id")
        target = self.active.get(rid) if rid is not None else self.in_band_active()
        if target is None or target.pending_created is not None:
            # Nothing active, or not created yet: it cannot be cancelled (and, if it exists,
            # it starts anyway).
            self.outbox.append(
                error_with_param("response_cancel_not_active", NOT_ACTIVE, event["event_id"], None)
            )
            return
        how = draw(st.sampled_from(["now", "now", "later", "ignore"]), "cancel")
        if how == "now":
            alias = draw(st.integers(0, 4), "alias") == 0
            self.finish(target, "cancelled", alias=alias)
        elif how == "later":
            target.cancel_requested = True

    def answer_well(self, event: Event) -> None:
        """The well-behaved server of the liveness check: accepts what it can, rejects
        conflicts (naming the blocker), honours cancels at once."""
        if event["type"] == "session.update":
            self.outbox.append({"type": "session.updated", "event_id": f"ack_{event['event_id']}"})
        elif event["type"] == "response.create":
            self.creates_read[event["event_id"]] += 1
            body = event["response"]
            in_band = body.get("conversation", "auto") != "none"
            blocker = self.in_band_active() if in_band else None
            if blocker is not None:
                self._reject(event, conflict(event["event_id"], blocker.rid))
            else:
                self.accepted[event["event_id"]] += 1
                self.start(event["event_id"], in_band, body.get("metadata"))
        else:
            rid = event.get("response_id")
            target = self.active.get(rid) if rid is not None else self.in_band_active()
            if target is None:
                self.outbox.append(
                    error_with_param(
                        "response_cancel_not_active", NOT_ACTIVE, event["event_id"], None
                    )
                )
            else:
                self.finish(target, "cancelled")
