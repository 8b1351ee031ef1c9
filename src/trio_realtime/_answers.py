"""Which client events still await the server's answer: the gate's rule 2, without I/O.

The server handles client events in order, so the answer to one event answers every event
sent before it too. An error that does not name the event it answers (``error.event_id``
null) can then be pinned on a ``response.create`` only when nothing else could have caused it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ._events import ANSWERS, CANCEL_NOT_ACTIVE, SESSION_ERRORS, UNANSWERED
from ._util import LastN

__all__ = ["Unanswered"]

CREATE = "response.create"


@attrs.define
class _Entry:
    type: str
    #: For ``conversation.item.create``: the item's own id, when the client gave one.
    item_id: str | None = None
    #: Whether a create's response would take the slot.
    takes_slot: bool = False
    #: When no answer is expected any more.
    expires: float = math.inf


class Unanswered:
    """Client events sent and not yet answered, oldest first, by ``event_id``.

    A create awaits its answer until its ``response.created``, ``response.done`` or error,
    and until ``timeout`` after the request gave up on it (:meth:`give_up`); any other event
    until its acknowledgement (:data:`~trio_realtime._events.ANSWERS`) or error, for at most
    ``timeout``. ``input_audio_buffer.append`` is never answered, and a ``response.cancel``
    only by its response's end or ``response_cancel_not_active``: neither awaits an answer.
    """

    def __init__(self, *, timeout: float, size: int = 256) -> None:
        self._timeout = timeout
        self._entries: LastN[str, _Entry] = LastN(size)  # beyond: events never answered

    def create_sent(self, event_id: str, *, takes_slot: bool) -> None:
        self._entries[event_id] = _Entry(CREATE, takes_slot=takes_slot)

    def event_sent(self, event: Mapping[str, Any], *, now: float) -> None:
        """The application sent ``event`` (anything but a create)."""
        event_type = event.get("type")
        event_id = event.get("event_id")
        if not isinstance(event_type, str) or not isinstance(event_id, str):
            return
        if event_type in UNANSWERED or event_type == "response.cancel":
            return
        item = event.get("item")
        item_id = item.get("id") if isinstance(item, Mapping) else None
        self._entries[event_id] = _Entry(
            event_type,
            item_id=item_id if isinstance(item_id, str) else None,
            expires=now + self._timeout,
        )

    def give_up(self, event_id: str, *, now: float) -> None:
        """The request of this create timed out: an answer may still come for a while."""
        entry = self._entries.get(event_id)
        if entry is not None:
            entry.expires = now + self._timeout

    def answered(self, event_id: str) -> str | None:
        """The server answered this event, so every older one too. Returns its type."""
        entry = self._entries.get(event_id)
        if entry is None:
            return None
        while self._entries.popitem(last=False)[0] != event_id:
            pass
        return entry.type

    def acknowledged(self, event_type: str, item_id: str | None) -> None:
        """A server event that acknowledges a client event (``session.updated``, ...), with
        the ``item.id`` it carries, if any."""
        for event_id, entry in self._entries.items():
            if event_type in ANSWERS.get(entry.type, ()) and entry.item_id in (None, item_id):
                self.answered(event_id)
                return

    def culprit(
        self, *, conflict: bool, code: str | None, param: str | None, now: float
    ) -> str | None:
        """The event an error without ``event_id`` answers, if it can be known (rule 2).

        A conflict, or an error about a ``response.*`` param, is the oldest unanswered
        create's (in-band, for a conflict). ``response_cancel_not_active`` is a cancel's; an
        error about the session itself (``session_expired``, ``invalid_api_key``, ...) is
        nobody's.
        Otherwise: the oldest event awaiting an answer, if it is one of the application's
        (each is answered when the server reads it, so none older can be the cause); or
        the oldest create, if it is the only event awaiting an answer (a create's
        ``response.created`` may come after later events' answers, so with anything sent
        after it still unanswered, the error may be theirs).
        """
        self._forget_expired(now)
        if (code == CANCEL_NOT_ACTIVE or code in SESSION_ERRORS) and not conflict:
            return None
        if conflict or (param or "").startswith("response"):
            return next(
                (
                    event_id
                    for event_id, entry in self._entries.items()
                    if entry.type == CREATE and (entry.takes_slot or not conflict)
                ),
                None,
            )
        oldest = next(iter(self._entries.items()), None)
        if oldest is None:
            return None
        event_id, entry = oldest
        if entry.type != CREATE or len(self._entries) == 1:
            return event_id
        return None

    def clear(self) -> None:
        self._entries.clear()

    def __bool__(self) -> bool:
        return bool(self._entries)

    def _forget_expired(self, now: float) -> None:
        expired = [eid for eid, entry in self._entries.items() if entry.expires <= now]
        for event_id in expired:
            del self._entries[event_id]
