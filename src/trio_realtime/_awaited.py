"""Client events whose answer the application waits for (``session.update``, truncates, deletes).

The server answers each client event as it reads it: an acknowledgement (``session.updated``,
``conversation.item.truncated``, ...) or an ``error`` naming the event (or naming none: the
gate attributes those, rule 2, and hands the session what it attributed to the application's
events). :class:`Awaiting` matches answers to the events still waiting, oldest first: an
acknowledgement by its type (and the item it names, where it names one), a rejection by the
event's id. The session's end fails whatever still waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import trio

from ._errors import RealtimeError
from ._events import ServerError

__all__ = ["Awaited", "Awaiting"]


@attrs.define(eq=False)
class Awaited:
    """One client event awaiting its answer."""

    #: The acknowledgements that answer it.
    answers: frozenset[str]
    #: The item an acknowledgement must name (``item_id``), if any.
    item_id: str | None = None
    #: Its ``event_id``, once handed to the writer (answers match only events sent).
    event_id: str | None = None
    answered: trio.Event = attrs.Factory(trio.Event)
    #: The acknowledgement, when it was accepted.
    answer: Mapping[str, Any] | None = None
    #: The server's error, when it was rejected.
    error: ServerError | None = None
    #: Why no answer can come: the session ended first.
    ended: RealtimeError | None = None

    def _settle(self, **what: Any) -> None:
        if not self.answered.is_set():
            for name, value in what.items():
                setattr(self, name, value)
            self.answered.set()


class Awaiting:
    """The client events awaiting their answers, oldest first."""

    def __init__(self) -> None:
        self._waiting: list[Awaited] = []

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def expect(self, answers: frozenset[str], item_id: str | None = None) -> Awaited:
        awaited = Awaited(answers, item_id)
        self._waiting.append(awaited)
        return awaited

    def forget(self, awaited: Awaited) -> None:
        if awaited in self._waiting:
            self._waiting.remove(awaited)

    def acknowledged(self, event: Mapping[str, Any]) -> None:
        """A server acknowledgement: it answers the oldest sent event it can answer."""
        kind = event["type"]
        item_id = event.get("item_id")
        if item_id is None:
            item = event.get("item")
            item_id = item.get("id") if isinstance(item, Mapping) else None
        for awaited in self._waiting:
            if (
                awaited.event_id is not None
                and kind in awaited.answers
                and awaited.item_id in (None, item_id)
                and not awaited.answered.is_set()
            ):
                awaited._settle(answer=event)
                return

    def rejected(self, event_id: str, error: ServerError) -> bool:
        """An error the server (or the gate's attribution) pinned on ``event_id``; True when
        someone waited for it."""
        for awaited in self._waiting:
            if awaited.event_id == event_id:
                awaited._settle(error=error)
                return True
        return False

    def end(self, error: RealtimeError) -> None:
        """The session ended: nothing more will be answered."""
        for awaited in self._waiting:
            awaited._settle(ended=error)
