"""The client's record of the conversation, and its replay on a new connection.

No sockets, no Trio and no clock here: the session feeds every client event it sends
(:meth:`ConversationRecord.client_event`) and every server event it receives
(:meth:`ConversationRecord.server_event`), in order; :meth:`ConversationRecord.replay` gives the
events that rebuild the conversation on a fresh connection, whose server knows nothing. (Longer
than the house's ~600 lines: one record, whose rules read best in one place, top-down, beside
the code that applies them.) Each rule, in prose:

1. **The configuration** is what the application set with ``session.update``, merged as the
   service merges it: objects field by field, lists replaced whole, an explicit null kept (it
   clears the field, and must clear it again on the new server, whose default may differ);
   ``turn_detection`` starts afresh when its ``type`` changes. The server's own defaults (from
   ``session.created`` / ``session.updated``) are never recorded. An update is merged when
   sent; one the server rejects (an ``error`` naming its ``event_id``) is taken out again,
   since the service applies an update whole or not at all.
2. **The items** are kept in conversation order, keyed by their ``id``. A client item goes
   where its ``conversation.item.create`` puts it (after ``previous_item_id``; ``"root"``:
   first; otherwise last) as soon as it is sent, so an item sent just before a lost connection
   is not lost. Items the server makes (committed user audio, a response's output) enter when
   the server reports them (GA ``conversation.item.added`` / ``.done``, beta
   ``conversation.item.created``), after their ``previous_item_id`` when the record knows it,
   else last (some servers send null for every item). Later reports of a known item update its
   fields, but never move it and never erase a transcript the record already holds.
3. **Acknowledgements.** A client item sent without an ``id`` gets one from the server. The
   server handles client events in order, so the first reported item that (a) is not known to
   be the server's own (named by ``input_audio_buffer.committed`` or
   ``response.output_item.added``) and (b) agrees with an unacknowledged create — no field the
   client set (``type``, ``role``, ``call_id``, ``name``, ``arguments``, ``output``, each content
   part's ``type`` and ``text``) contradicted — is that create's acknowledgement, the oldest such
   create first. A response's items are reported with empty content and cannot agree. (A
   server that replaces the ids clients choose is matched the same way.) An ``error`` naming a
   create's ``event_id`` removes the item. Until the server names it, such an item has an id
   the record chose (``item_trc1``, ``item_trc2``, ...), used only in a replay.
4. **Transcripts** fill in as they arrive: user audio from
   ``conversation.item.input_audio_transcription.completed``; assistant audio from
   ``response.output_audio_transcript.done`` (beta ``response.audio_transcript.done``) and the
   content of ``response.output_item.done`` / ``response.done``. Text from
   ``response.output_text.done`` (beta ``response.text.done``). Audio bytes are never kept.
5. **Deletions and truncations** apply when sent and again when the server confirms them
   (``conversation.item.deleted`` / ``.truncated``): a deleted item is gone (a report of it
   already on its way does not bring it back), a truncated one is marked.
6. **Memory is bounded**: beyond ``max_items`` the oldest item in conversation order is
   forgotten (counted in :meth:`ConversationRecord.statistics`). So is depth: an event nested
   deeper than ``MAX_DEPTH`` levels is not recorded (logged), and copies are made without
   recursion, so a hostile item cannot end the session with a ``RecursionError``.
7. **Order between the writer and the reader does not matter**: a create noted after its
   acknowledgement (the reader ran first) claims the reported item that agrees with it (rule
   3's test) instead of adding a second copy.

What carries over in :meth:`ConversationRecord.replay`:

- one ``session.update`` with the configuration, if the application set any (GA with
  ``"type": "realtime"`` unless it set a type, beta without ``type``);
- one ``conversation.item.create`` per item, in conversation order, each appended at the end.
  Messages carry over **as text**: ``input_text`` for user and system messages, the
  assistant's ``output_text`` (GA) / ``text`` (beta); a user's audio as its input transcription,
  an assistant's audio as its transcript; images (GA only) as they were. Function calls carry
  ``call_id``, ``name`` and ``arguments``, their outputs ``call_id`` and ``output``.
- Items keep their ``id``. The API lets the client choose an item's id, the new conversation
  is empty so no id can collide, and the ids were valid on the old server: the application's
  ids (for ``previous_item_id``, truncate, delete) stay valid across the reconnect, and the new
  server's acknowledgements land on the items the record already holds instead of doubling
  them. An item the old server never acknowledged (sent just before the connection was lost)
  goes with the id the record chose for it, so that its acknowledgement is recognized too.
- The session may feed the replay's events to :meth:`ConversationRecord.client_event` like
  any other (a create of an item the record holds is a re-send: the item stays where it is),
  or not; either way the new server's acknowledgements land on the items already recorded.

What cannot carry over (each left out with a warning in :attr:`Replay.warnings`):

- audio itself: the record keeps none (the server's reports leave it out, and a create
  cannot hold assistant audio anyway), so user audio without a transcription is left out;
- a **truncated** assistant audio item: the service cuts the audio where the user stopped
  hearing it and removes the transcript, so that no unheard text stays in the context; the
  transcript has no timing, so the heard part is unknown, and the whole item is left out
  rather than letting the model believe the user heard everything;
- a function call still in progress or incomplete with no output (its arguments may be cut
  off); a call that completed keeps its place even without an output, since the application
  may still answer it on the new connection and the server requires the call to be there;
- a function output whose call is not replayed before it (the server would reject it);
- items of other types (MCP and others), and messages with nothing to say as text;
- the server's own state: its defaults, audio buffers, responses in progress.

``max_items`` keeps the newest items: the oldest go first (counted in :attr:`Replay.dropped`,
with one warning), and an output whose call went goes with it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ._codec import nests_deeper_than
from ._util import LastN

__all__ = [
    "DEFAULT_MAX_ITEMS",
    "LOCAL_ID_PREFIX",
    "ConversationRecord",
    "ConversationStatistics",
    "Replay",
]

logger = logging.getLogger(__name__)

Dialect = Literal["ga", "beta"]

#: How many items a record keeps by default.
DEFAULT_MAX_ITEMS = 1000
#: The ids the record gives client items the server never named (``item_trc1``, ...).
LOCAL_ID_PREFIX = "item_trc"
#: Events nested deeper than this are not recorded (a Realtime item nests a few levels).
MAX_DEPTH = 64
#: How many ids of server-made items, and unacknowledged updates, are remembered.
_MEMORY = 256

_ITEM_REPORTS = frozenset(
    {"conversation.item.added", "conversation.item.done", "conversation.item.created"}
)
#: Transcripts of user audio (input transcription) and of assistant audio (GA, beta).
_TRANSCRIPTS = frozenset(
    {
        "conversation.item.input_audio_transcription.completed",
        "response.output_audio_transcript.done",
        "response.audio_transcript.done",
    }
)
_TEXT_DONE = frozenset({"response.output_text.done", "response.text.done"})
#: The server events whose contents the record copies and merges.
_DEEP_KINDS = _ITEM_REPORTS | {"response.output_item.done", "response.done"}
#: Fields of an item that must not contradict between a create and its acknowledgement.
_AGREEING = ("type", "role", "call_id", "name", "arguments", "output")
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
_AUDIO_PARTS = frozenset({"input_audio", "output_audio", "audio"})


@attrs.frozen
class Replay:
    """What to send on a new connection, in order, and what could not be carried."""

    events: tuple[dict[str, Any], ...]
    #: Items left out because of ``max_items`` (the oldest).
    dropped: int
    #: One line per item that could not be carried over (and one for ``max_items``, last).
    warnings: tuple[str, ...]

    @property
    def item_warnings(self) -> tuple[str, ...]:
        """The lines about single items (``warnings`` without the one for ``max_items``)."""
        return self.warnings[:-1] if self.dropped else self.warnings


@attrs.frozen
class ConversationStatistics:
    """How much the record holds."""

    #: Items in the conversation, as the record knows it.
    items: int
    #: Of those, client items whose acknowledgement has not arrived.
    unacknowledged: int
    #: Items forgotten because the record was full (oldest first).
    forgotten: int
    #: ``session.update`` events sent and not yet acknowledged.
    pending_updates: int


@attrs.define(eq=False)
class _Entry:
    """One item: its fields as last known (no audio bytes), and what the record adds."""

    item: dict[str, Any]
    #: The ``event_id`` of the create awaiting acknowledgement, if any.
    event_id: str | None = None
    #: For a client item sent without an id, until the server names it: the id the record
    #: gives it in a replay.
    local_id: str | None = None
    #: The server has reported this item.
    acknowledged: bool = False
    truncated: bool = False
    #: Transcripts and texts by content index, from the ``*.done`` events.
    transcripts: dict[int, str] = attrs.Factory(dict)
    texts: dict[int, str] = attrs.Factory(dict)

    @property
    def id(self) -> str | None:
        item_id = self.item.get("id")
        return item_id if isinstance(item_id, str) else None

    @property
    def keys(self) -> tuple[str, ...]:
        """The ids this item is known by (its own, and the record's while it has none)."""
        return tuple(key for key in (self.id, self.local_id) if key is not None)

    def describe(self) -> str:
        kind = self.item.get("type")
        role = self.item.get("role")
        what = f"{role} {kind}" if isinstance(role, str) else str(kind)
        return f"item {self.id or self.local_id} ({what})"


class ConversationRecord:
    """The conversation as the client knows it, fed every event in order; see the module's
    rules. ``max_items`` bounds the memory: the oldest item is forgotten beyond it."""

    def __init__(self, *, max_items: int = DEFAULT_MAX_ITEMS) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        self.max_items = max_items
        self._items: list[_Entry] = []
        self._by_id: dict[str, _Entry] = {}
        self._unacked: list[_Entry] = []
        self._server_made: LastN[str, None] = LastN(_MEMORY)
        self._deleted: LastN[str, None] = LastN(_MEMORY)
        #: Items the server reported that no create has claimed yet and that are not known to
        #: be the server's own: a create fed after its acknowledgement claims one (rule 3).
        self._unclaimed: LastN[str, None] = LastN(_MEMORY)
        self._forgotten = 0
        self._local_ids = itertools.count(1)
        self._base: dict[str, Any] = {}
        #: ``session.update`` bodies sent and not yet acknowledged, oldest first.
        self._updates: list[tuple[str | None, dict[str, Any]]] = []

    # -- what goes in ---------------------------------------------------------------------

    def client_event(self, event: Mapping[str, Any]) -> bool:
        """A client event the session sends (any type; the irrelevant ones are ignored).
        Whether the record took it: a replay then carries it (or its effect)."""
        kind = event.get("type")
        event_id = event.get("event_id")
        event_id = event_id if isinstance(event_id, str) else None
        if kind in ("session.update", "conversation.item.create") and _too_deep(event):
            return False
        if kind == "session.update":
            body = event.get("session")
            if isinstance(body, Mapping):
                self._updates.append((event_id, _copy(dict(body))))
                if len(self._updates) > _MEMORY:
                    self._base = _merge_config(self._base, self._updates.pop(0)[1])
                return True
        elif kind == "conversation.item.create":
            item = event.get("item")
            if isinstance(item, Mapping):
                self._created(item, event.get("previous_item_id"), event_id)
                return True
        elif kind == "conversation.item.delete":
            self._remove(event.get("item_id"))
            return True
        elif kind == "conversation.item.truncate":
            self._truncate(event.get("item_id"))
            return True
        return False

    def server_event(self, event: Mapping[str, Any]) -> None:
        """A server event the session received (any type; the irrelevant ones are ignored)."""
        kind = event.get("type")
        if kind in _DEEP_KINDS and _too_deep(event):
            return
        if kind in _ITEM_REPORTS:
            item = event.get("item")
            if isinstance(item, Mapping) and isinstance(item.get("id"), str):
                self._reported(item, event)
        elif kind == "session.updated":
            if self._updates:
                self._base = _merge_config(self._base, self._updates.pop(0)[1])
        elif kind == "error":
            self._rejected(event.get("error"))
        elif kind == "input_audio_buffer.committed":
            if isinstance(item_id := event.get("item_id"), str):
                self._server_made[item_id] = None
                self._unclaimed.pop(item_id, None)
        elif kind == "response.output_item.added":
            item = event.get("item")
            if isinstance(item, Mapping) and isinstance(item.get("id"), str):
                self._server_made[item["id"]] = None
                self._unclaimed.pop(item["id"], None)
        elif kind == "response.output_item.done":
            item = event.get("item")
            if isinstance(item, Mapping):
                self._update_known(item)
        elif kind == "response.done":
            response = event.get("response")
            output = response.get("output") if isinstance(response, Mapping) else None
            for item in output if isinstance(output, list) else ():
                if isinstance(item, Mapping):
                    self._update_known(item)
        elif kind in _TRANSCRIPTS:
            self._note_text(event, "transcript")
        elif kind in _TEXT_DONE:
            self._note_text(event, "text")
        elif kind == "conversation.item.deleted":
            self._remove(event.get("item_id"))
        elif kind == "conversation.item.truncated":
            self._truncate(event.get("item_id"))

    # -- what comes out -------------------------------------------------------------------

    def configuration(self) -> dict[str, Any]:
        """The session configuration the application set, merged (a copy)."""
        merged = self._base
        for _, body in self._updates:
            merged = _merge_config(merged, body)
        copied: dict[str, Any] = _copy(merged)
        return copied

    def items(self) -> list[dict[str, Any]]:
        """The recorded items in conversation order (copies, without audio bytes)."""
        return [_copy(entry.item) for entry in self._items]

    def statistics(self) -> ConversationStatistics:
        return ConversationStatistics(
            items=len(self._items),
            unacknowledged=len(self._unacked),
            forgotten=self._forgotten,
            pending_updates=len(self._updates),
        )

    def replay(self, *, dialect: Dialect, max_items: int) -> Replay:
        """The events that rebuild this conversation on a new connection (see the module's
        rules). Changes nothing in the record."""
        if dialect not in ("ga", "beta"):
            raise ValueError(f"dialect must be 'ga' or 'beta', not {dialect!r}")
        if max_items < 0:
            raise ValueError(f"max_items must not be negative, not {max_items}")
        events: list[dict[str, Any]] = []
        session = self.configuration()
        if dialect == "ga":
            if session:
                session.setdefault("type", "realtime")
        else:
            session.pop("type", None)
        if session:
            events.append({"type": "session.update", "session": session})

        warnings: list[str] = []
        if self._forgotten:
            warnings.append(
                f"{self._forgotten} older items were forgotten by the record "
                f"(it keeps {self.max_items})"
            )
        answered = {
            e.item.get("call_id")
            for e in self._items
            if e.item.get("type") == "function_call_output"
        }
        carried: list[dict[str, Any]] = []
        for entry in self._items:
            item, problem = _convert(entry, dialect, answered)
            if item is None:
                warnings.append(f"{entry.describe()}: {problem}; left out")
            else:
                carried.append(item)
        carried = _without_orphans(carried, warnings)

        dropped = max(len(carried) - max_items, 0)
        kept = _without_orphans(carried[dropped:], None)
        dropped = len(carried) - len(kept)
        if dropped:
            warnings.append(f"the {dropped} oldest items were left out (max_items={max_items})")
        events.extend({"type": "conversation.item.create", "item": item} for item in kept)
        return Replay(events=tuple(events), dropped=dropped, warnings=tuple(warnings))

    # -- items ----------------------------------------------------------------------------

    def _created(self, item: Mapping[str, Any], after: Any, event_id: str | None) -> None:
        claimed = self._claim(item)
        if claimed is not None:
            # Its acknowledgement came first (the reader ran before the writer noted it).
            logger.debug("%s was acknowledged before it was noted", claimed.describe())
            return
        known = self._entry(item.get("id"))
        if known is not None:
            # A re-send (the replay on a new connection): it stays where it is.
            known.event_id = event_id
            if known not in self._unacked:
                self._unacked.append(known)
            return
        entry = _Entry(_without_audio(item), event_id=event_id)
        if entry.id is not None:
            self._deleted.pop(entry.id, None)  # a client may reuse its own id
        else:
            entry.local_id = f"{LOCAL_ID_PREFIX}{next(self._local_ids)}"
        if after == "root":
            position = 0
        elif isinstance(after, str) and after in self._by_id:
            position = self._items.index(self._by_id[after]) + 1
        else:
            position = len(self._items)
        self._unacked.append(entry)
        self._insert(entry, position)

    def _reported(self, item: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        """The server reports an item of the conversation (added, done or created)."""
        item_id: str = item["id"]
        entry = self._by_id.get(item_id)
        if entry is None and item_id in self._deleted:
            logger.debug("report of deleted item %s ignored", item_id)
            return
        if entry is None:
            entry = self._acknowledgement_of(item)
            if entry is not None:
                logger.debug("%s acknowledged as %s", entry.describe(), item_id)
                for key in entry.keys:
                    del self._by_id[key]
                entry.local_id = None
                entry.item["id"] = item_id
                self._by_id[item_id] = entry
                after = event.get("previous_item_id")
                if isinstance(after, str) and after in self._by_id and after != item_id:
                    self._items.remove(entry)
                    self._items.insert(self._items.index(self._by_id[after]) + 1, entry)
            else:
                entry = _Entry(_without_audio(item))
                after = event.get("previous_item_id")
                if isinstance(after, str) and after in self._by_id:
                    position = self._items.index(self._by_id[after]) + 1
                else:
                    position = len(self._items)
                if not self._insert(entry, position):
                    return
                if item_id not in self._server_made:
                    self._unclaimed[item_id] = None
        if entry in self._unacked:
            self._unacked.remove(entry)
            entry.event_id = None
        entry.acknowledged = True
        entry.local_id = None  # named by the server now (perhaps by the record's own id)
        entry.item = _merge_item(entry.item, item)

    def _claim(self, item: Mapping[str, Any]) -> _Entry | None:
        """The reported item that is this create's, reported before the create was noted:
        the one with its id, or else the oldest unclaimed one that agrees with it."""
        item_id = item.get("id")
        if isinstance(item_id, str):
            candidates = [item_id] if item_id in self._unclaimed else []
        else:
            candidates = list(self._unclaimed)
        for key in candidates:
            entry = self._by_id.get(key)
            if entry is None:
                del self._unclaimed[key]
            elif _agrees(item, entry.item):
                del self._unclaimed[key]
                return entry
        return None

    def _acknowledgement_of(self, item: Mapping[str, Any]) -> _Entry | None:
        """The unacknowledged create this reported item answers, if any (rule 3)."""
        if item["id"] in self._server_made:
            return None
        return next((e for e in self._unacked if _agrees(e.item, item)), None)

    def _update_known(self, item: Mapping[str, Any]) -> None:
        """A response's item in its final form: update it if it is in the conversation (an
        out-of-band response's items are not)."""
        entry = self._entry(item.get("id"))
        if entry is not None:
            entry.item = _merge_item(entry.item, item)

    def _note_text(self, event: Mapping[str, Any], field: str) -> None:
        """A transcript or text is final: note it by content index, and in the part."""
        entry = self._entry(event.get("item_id"))
        index, text = event.get("content_index", 0), event.get(field)
        if entry is None or not isinstance(index, int) or not isinstance(text, str):
            return
        (entry.transcripts if field == "transcript" else entry.texts)[index] = text
        content = entry.item.get("content")
        if isinstance(content, list) and 0 <= index < len(content):
            part = content[index]
            if isinstance(part, dict):
                part[field] = text

    def _rejected(self, error: Any) -> None:
        """An ``error``: if it names an update or a create the record holds, undo it."""
        event_id = error.get("event_id") if isinstance(error, Mapping) else None
        if not isinstance(event_id, str):
            return
        for index, (update_id, _) in enumerate(self._updates):
            if update_id == event_id:
                logger.debug("session.update %s rejected; taken out", event_id)
                del self._updates[index]
                return
        for entry in self._unacked:
            if entry.event_id == event_id:
                self._unacked.remove(entry)
                entry.event_id = None
                if not entry.acknowledged:
                    logger.debug("%s rejected; taken out", entry.describe())
                    self._discard(entry)
                return

    def _entry(self, item_id: Any) -> _Entry | None:
        return self._by_id.get(item_id) if isinstance(item_id, str) else None

    def _remove(self, item_id: Any) -> None:
        entry = self._entry(item_id)
        if entry is not None:
            self._discard(entry)
        if isinstance(item_id, str):
            self._deleted[item_id] = None

    def _truncate(self, item_id: Any) -> None:
        entry = self._entry(item_id)
        if entry is not None:
            entry.truncated = True

    def _insert(self, entry: _Entry, position: int) -> bool:
        """Put ``entry`` at ``position``, forgetting the oldest beyond ``max_items``; whether
        ``entry`` is still there (it is forgotten at once if it went first into a full record)."""
        self._items.insert(position, entry)
        for key in entry.keys:
            self._by_id[key] = entry
        kept = True
        while len(self._items) > self.max_items:
            oldest = self._items[0]
            logger.debug("record full: forgetting %s", oldest.describe())
            self._discard(oldest)
            self._forgotten += 1
            kept = kept and oldest is not entry
        return kept

    def _discard(self, entry: _Entry) -> None:
        self._items.remove(entry)
        for key in entry.keys:
            if self._by_id.get(key) is entry:
                del self._by_id[key]
        if entry in self._unacked:
            self._unacked.remove(entry)


# -- helpers ----------------------------------------------------------------------------------


def _merge_config(current: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` merged into ``current`` as the service merges a ``session.update``."""
    merged = dict(current)
    for key, value in update.items():
        old = merged.get(key)
        restart = (
            key == "turn_detection"
            and isinstance(value, Mapping)
            and "type" in value
            # The service's default turn detection is server VAD.
            and (
                value["type"]
                != (old.get("type", "server_vad") if isinstance(old, Mapping) else None)
            )
        )
        if isinstance(value, Mapping) and isinstance(old, Mapping) and not restart:
            merged[key] = _merge_config(old, value)
        else:
            merged[key] = _copy(dict(value) if isinstance(value, Mapping) else value)
    return merged


def _too_deep(event: Mapping[str, Any]) -> bool:
    """Whether ``event`` nests deeper than :data:`MAX_DEPTH` (no item of the service does;
    a hostile one could): it is then not recorded, so that nothing here recurses without
    bound (copies, merges, comparisons, the replay's encoding)."""
    if not nests_deeper_than(event if type(event) is dict else dict(event), MAX_DEPTH):
        return False
    logger.warning("%s nested deeper than %d levels: not recorded", event.get("type"), MAX_DEPTH)
    return True


def _copy(value: Any) -> Any:
    """A deep copy of JSON-like data (mappings become dicts, lists stay lists), without
    recursion."""
    if not isinstance(value, Mapping | list):
        return value
    root: Any = {} if isinstance(value, Mapping) else []
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        source, target = stack.pop()
        pairs = source.items() if isinstance(source, Mapping) else enumerate(source)
        for key, child in pairs:
            if isinstance(child, Mapping | list):
                copied: Any = {} if isinstance(child, Mapping) else []
                stack.append((child, copied))
            else:
                copied = child
            if isinstance(target, dict):
                target[key] = copied
            else:
                target.append(copied)
    return root


def _without_audio(item: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``item`` without audio bytes (never replayed, and large)."""
    result: dict[str, Any] = _copy(dict(item))
    content = result.get("content")
    if isinstance(content, list):
        result["content"] = [
            {k: v for k, v in part.items() if k != "audio"} if isinstance(part, dict) else part
            for part in content
        ]
    return result


def _merge_item(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A server report ``new`` of an item over what the record held: its fields win, but an
    empty content (a response's item as it opens) keeps the old one, and a part without a
    transcript or text keeps the old part's."""
    merged = {**old, **_without_audio(new)}
    old_content, new_content = old.get("content"), merged.get("content")
    if isinstance(old_content, list) and isinstance(new_content, list):
        if not new_content:
            merged["content"] = old_content
        else:
            for index, part in enumerate(new_content):
                before = old_content[index] if index < len(old_content) else None
                if not isinstance(part, dict) or not isinstance(before, Mapping):
                    continue
                for field in ("transcript", "text"):
                    if part.get(field) in (None, "") and isinstance(before.get(field), str):
                        part[field] = before[field]
    return merged


def _agrees(sent: Mapping[str, Any], reported: Mapping[str, Any]) -> bool:
    """Whether ``reported`` can be the acknowledgement of the item ``sent``: nothing the client
    set is contradicted (the server may add fields, or leave some out)."""
    for key in _AGREEING:
        if key in sent and key in reported and sent[key] != reported[key]:
            return False
    if reported.get("type") != sent.get("type"):
        return False
    sent_parts, reported_parts = sent.get("content"), reported.get("content")
    if isinstance(sent_parts, list) and isinstance(reported_parts, list):
        if len(sent_parts) != len(reported_parts):
            return False
        for mine, theirs in zip(sent_parts, reported_parts, strict=True):
            if not isinstance(mine, Mapping) or not isinstance(theirs, Mapping):
                continue
            for key in ("type", "text"):
                if key in mine and key in theirs and mine[key] != theirs[key]:
                    return False
    return True


def _text_of(entry: _Entry, index: int, part: Mapping[str, Any], field: str) -> str | None:
    known = entry.transcripts if field == "transcript" else entry.texts
    value = part.get(field)
    if not isinstance(value, str) or not value:
        value = known.get(index)
    return value if isinstance(value, str) and value else None


def _convert(
    entry: _Entry, dialect: Dialect, answered: set[Any]
) -> tuple[dict[str, Any] | None, str]:
    """The item to create on a new connection, or None and why it cannot be carried."""
    item = entry.item
    kind = item.get("type")
    carried: dict[str, Any] = {"id": entry.keys[0]} if entry.keys else {}
    if kind == "function_call":
        call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
        if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(arguments, str)):
            return None, "a function call without call_id, name or arguments"
        if item.get("status") in ("in_progress", "incomplete") and call_id not in answered:
            return None, f"a function call left {item['status']}, with no output"
        carried.update(type=kind, call_id=call_id, name=name, arguments=arguments)
        return carried, ""
    if kind == "function_call_output":
        call_id, output = item.get("call_id"), item.get("output")
        if not (isinstance(call_id, str) and isinstance(output, str)):
            return None, "a function output without call_id or output"
        carried.update(type=kind, call_id=call_id, output=output)
        return carried, ""
    if kind != "message":
        return None, f"items of type {kind!r} cannot be carried over"
    role = item.get("role")
    content = item.get("content")
    if not content:
        # A response's item whose final form never came (the connection was lost): what the
        # ``*.done`` events said.
        last = max([*entry.transcripts, *entry.texts], default=-1)
        content = [{"type": "audio" if i in entry.transcripts else "text"} for i in range(last + 1)]
    parts: list[dict[str, Any]] = []
    missing = ""
    for index, part in enumerate(content if isinstance(content, list) else ()):
        if not isinstance(part, Mapping):
            continue
        part_type = part.get("type")
        if role == "assistant" and entry.truncated and part_type in _AUDIO_PARTS:
            return None, "assistant audio truncated where the user stopped hearing it"
        if part_type == "input_image" and role == "user" and dialect == "ga":
            parts.append({k: v for k, v in part.items() if k in ("type", "image_url", "detail")})
            continue
        if part_type in _TEXT_PARTS:
            text = _text_of(entry, index, part, "text")
        elif part_type in _AUDIO_PARTS:
            text = _text_of(entry, index, part, "transcript")
            if text is None:
                missing = "audio without a transcription" if role == "user" else "no transcript"
                continue
        else:
            missing = f"content of type {part_type!r} cannot be carried over"
            continue
        if text is None:
            continue
        if role == "assistant":
            parts.append({"type": "output_text" if dialect == "ga" else "text", "text": text})
        else:
            parts.append({"type": "input_text", "text": text})
    if role not in ("user", "assistant", "system"):
        return None, f"a message of role {role!r}"
    if not parts:
        return None, missing or "a message with no text"
    if missing:
        logger.debug("%s: %s; carried without it", entry.describe(), missing)
    carried.update(type="message", role=role, content=parts)
    return carried, ""


def _without_orphans(
    items: list[dict[str, Any]], warnings: list[str] | None
) -> list[dict[str, Any]]:
    """``items`` without the function outputs whose call does not come before them (the
    server would reject them); each noted in ``warnings`` if given."""
    calls: set[Any] = set()
    result: list[dict[str, Any]] = []
    for item in items:
        if item["type"] == "function_call":
            calls.add(item["call_id"])
        elif item["type"] == "function_call_output" and item["call_id"] not in calls:
            if warnings is not None:
                warnings.append(
                    f"item {item.get('id', '(no id)')} (function_call_output): its call "
                    f"{item['call_id']} is not carried over; left out"
                )
            continue
        result.append(item)
    return result
