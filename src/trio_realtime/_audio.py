"""Output audio: its formats, what was received of it, and where an interruption cuts it.

Pure: no I/O, no clock, no Trio. The reader feeds :class:`AudioLedger` the session's output
format and every response's audio deltas; when the user talks over the assistant,
:meth:`AudioLedger.plan` says what to send so the conversation holds only what was heard
(PROTOCOL §11):

- ``played_ms`` counts from the start of the response's audio, across its audio items in the
  order their audio began (newer models split one reply into several items);
- the item where ``played_ms`` falls is truncated there, the offset **clamped to the audio
  received for that item** (a lower bound of what the server generated, so the server always
  accepts it: a position past the generated audio is refused with ``invalid_value``);
- every later item of that response is deleted (nobody heard it); an item with nothing heard is
  deleted, never truncated at 0 (refused: "Only model output audio messages can be
  truncated");
- a response whose audio was all heard and has all arrived needs nothing; nor does one with no
  audio.

Sizes come from the base64 text's length, so the ledger never decodes audio it does not hand
out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ._util import LastN

__all__ = [
    "AUDIO_DELTAS",
    "AUDIO_DONES",
    "FORMATS",
    "G711_ALAW",
    "G711_ULAW",
    "PCM16",
    "AudioFormat",
    "AudioLedger",
    "Truncation",
    "b64_size",
    "format_of_response",
    "format_of_session",
]


@attrs.frozen
class AudioFormat:
    """One output audio format: its names in both dialects and how many bytes a millisecond
    of it takes (PCM16 24 kHz mono: 48; G.711 8 kHz: 8)."""

    beta_name: str
    ga_type: str
    bytes_per_ms: int

    def duration_ms(self, size: int) -> int:
        """Whole milliseconds in ``size`` bytes."""
        return size // self.bytes_per_ms


PCM16 = AudioFormat("pcm16", "audio/pcm", 48)
G711_ULAW = AudioFormat("g711_ulaw", "audio/pcmu", 8)
G711_ALAW = AudioFormat("g711_alaw", "audio/pcma", 8)
FORMATS = (PCM16, G711_ULAW, G711_ALAW)

#: Output audio deltas and their ends, both dialects.
AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})
AUDIO_DONES = frozenset({"response.output_audio.done", "response.audio.done"})


def _named(value: Any) -> AudioFormat | None:
    """The format a GA format object (``{"type": "audio/pcmu"}``) or a beta name names."""
    if isinstance(value, Mapping):
        value = value.get("type")
    for audio_format in FORMATS:
        if value in (audio_format.ga_type, audio_format.beta_name):
            return audio_format
    return None


def _ga_output_format(config: Mapping[str, Any]) -> Any:
    audio = config.get("audio")
    output = audio.get("output") if isinstance(audio, Mapping) else None
    return output.get("format") if isinstance(output, Mapping) else None


def format_of_session(session: Mapping[str, Any]) -> AudioFormat | None:
    """The output format a ``session`` object names (GA ``audio.output.format``, beta
    ``output_audio_format``), or None when it names none."""
    return _named(_ga_output_format(session)) or _named(session.get("output_audio_format"))


def format_of_response(response: Mapping[str, Any]) -> AudioFormat | None:
    """The output format a ``response`` object (or ``response.create`` body) overrides, or
    None."""
    return _named(_ga_output_format(response)) or _named(response.get("output_audio_format"))


def b64_size(text: str) -> int:
    """How many bytes the base64 ``text`` decodes to, without decoding it."""
    n = len(text)
    if n == 0:
        return 0
    padding = (text[-1] == "=") + (n > 1 and text[-2] == "=")
    return n // 4 * 3 - padding


@attrs.frozen
class Truncation:
    """What an interruption sends for the response the user was hearing."""

    #: ``conversation.item.truncate``: ``(item_id, content_index, audio_end_ms)``, or None.
    truncate: tuple[str, int, int] | None = None
    #: ``conversation.item.delete`` for each of these items, nobody heard them.
    delete: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.truncate is not None or bool(self.delete)


@attrs.define(eq=False)
class _Item:
    item_id: str
    content_index: int
    received: int = 0  #: bytes of audio received
    complete: bool = False  #: its audio's ``done`` arrived


@attrs.define(eq=False)
class _Audio:
    """One response's output audio, item by item in the order their audio began."""

    audio_format: AudioFormat
    in_band: bool
    first_at: float = math.inf  #: when its first delta arrived
    items: list[_Item] = attrs.Factory(list)
    cut: bool = False  #: an interruption already dealt with it

    def item(self, item_id: str, content_index: int) -> _Item:
        for item in reversed(self.items):
            if item.item_id == item_id and item.content_index == content_index:
                return item
        item = _Item(item_id, content_index)
        self.items.append(item)
        return item


class AudioLedger:
    """What output audio each response sent, and the latest in-band response the user may be
    hearing (kept after its ``response.done``: playback outlasts generation).

    ``memory`` bounds how many responses are remembered.
    """

    def __init__(self, *, memory: int = 64) -> None:
        self.session_format: AudioFormat = PCM16
        self._audio: LastN[str, _Audio] = LastN(memory)
        #: The ``response`` objects of the latest ``response.created`` events, read only when
        #: the response's audio begins (most responses of a text session never need it).
        self._started: LastN[str, Mapping[str, Any]] = LastN(memory)
        #: The in-band response whose audio came last.
        self.current: str | None = None

    def session_configured(self, session: Mapping[str, Any]) -> None:
        """A ``session.created`` / ``session.updated``: its output format, if it names one."""
        self.session_format = format_of_session(session) or self.session_format

    def response_started(self, response_id: str, response: Mapping[str, Any]) -> None:
        """A ``response.created``: its own output format (if it overrides the session's),
        whether it writes to the conversation and whether it speaks, read when needed."""
        self._started[response_id] = response

    def item_added(self, response_id: str, item: Mapping[str, Any]) -> None:
        """A ``response.output_item.added``: an assistant message of a response that speaks
        will carry audio, perhaps before any of it arrives (so an interruption deletes it)."""
        item_id = item.get("id")
        response = self._started.get(response_id, {})
        modalities = response.get("output_modalities", response.get("modalities"))
        speaks = not isinstance(modalities, list) or "audio" in modalities
        if speaks and item.get("type") == "message" and isinstance(item_id, str):
            self._audio_of(response_id).item(item_id, 0)

    def delta(
        self, response_id: str, item_id: str, content_index: int, size: int, *, now: float
    ) -> tuple[AudioFormat, int]:
        """``size`` bytes of audio arrived; returns the format and the chunk's offset in its
        item (ms)."""
        audio = self._audio_of(response_id)
        audio.first_at = min(audio.first_at, now)
        item = audio.item(item_id, content_index)
        offset = audio.audio_format.duration_ms(item.received)
        item.received += size
        return audio.audio_format, offset

    def _audio_of(self, response_id: str) -> _Audio:
        audio = self._audio.get(response_id)
        if audio is None:
            response = self._started.get(response_id, {})
            audio = _Audio(
                format_of_response(response) or self.session_format,
                response.get("conversation_id", "") is not None,
            )
            self._audio[response_id] = audio
        if audio.in_band:
            self.current = response_id
        return audio

    def audio_done(self, response_id: str, item_id: str, content_index: int) -> None:
        """An item's audio ended (``response.output_audio.done``)."""
        audio = self._audio.get(response_id)
        if audio is not None:
            audio.item(item_id, content_index).complete = True

    def received_ms(self, response_id: str) -> int:
        """Milliseconds of audio received for a response, all items."""
        audio = self._audio.get(response_id)
        if audio is None:
            return 0
        return sum(audio.audio_format.duration_ms(item.received) for item in audio.items)

    def plan(self, played_ms: float | None, *, now: float) -> tuple[str | None, Truncation]:
        """Where to cut the current in-band response, once: its id and the truncation.

        ``played_ms`` is what the user heard of it; None estimates it as the time since its
        first delta. Marks the response as dealt with: a second call plans nothing for it.
        """
        response_id = self.current
        audio = self._audio.get(response_id) if response_id is not None else None
        if audio is None or audio.cut:
            return None, Truncation()
        audio.cut = True
        if played_ms is None:
            played_ms = max(0.0, (now - audio.first_at) * 1000)
        return response_id, _cut(audio, played_ms)


def _cut(audio: _Audio, played_ms: float) -> Truncation:
    remaining = max(0, math.floor(played_ms))
    items = audio.items
    for index, item in enumerate(items):
        length = audio.audio_format.duration_ms(item.received)
        # The last item may still be streaming: what was not received was not heard.
        if remaining < length or (index == len(items) - 1 and not item.complete):
            later = [i.item_id for i in items[index + 1 :] if i.item_id != item.item_id]
            end = min(remaining, length)
            if end <= 0:
                return Truncation(delete=tuple(dict.fromkeys([item.item_id, *later])))
            return Truncation((item.item_id, item.content_index, end), tuple(dict.fromkeys(later)))
        remaining -= length
    return Truncation()
