"""The session's output audio: what it received, what it hands out, what an interruption mutes.

The reader gives :class:`AudioOut` every event that concerns output audio
(:data:`AUDIO_EVENTS`, both dialects); it keeps the :class:`~._audio.AudioLedger` (where an
interruption cuts), decodes audio deltas once for the application's
:meth:`RealtimeSession.output_audio` streams as :class:`AudioChunk`, and drops the audio of
responses an interruption stopped (:meth:`AudioOut.mute`), from that moment on.

No I/O: a plain object the reader feeds, synchronous and never blocking.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs

from ._audio import AUDIO_DELTAS, AUDIO_DONES, AudioFormat, AudioLedger, b64_size
from ._errors import RealtimeError
from ._events import METADATA_KEY, ServerError
from ._stream import BoundedStream
from ._util import LastN

__all__ = ["AUDIO_EVENTS", "AudioChunk", "AudioOut", "Interruption"]

logger = logging.getLogger(__name__)

#: The server events output audio is made of (the reader hands these, and only these, on).
AUDIO_EVENTS = frozenset(
    {
        "session.created",
        "session.updated",
        "response.created",
        "response.output_item.added",
        *AUDIO_DELTAS,
        *AUDIO_DONES,
        *(f"output_audio_buffer.{what}" for what in ("started", "stopped", "cleared")),
    }
)

#: How many muted responses and requests are remembered.
_MEMORY = 256


@attrs.frozen
class AudioChunk:
    """One piece of a response's output audio, decoded.

    ``offset_ms`` is where it starts in its item's audio; ``pcm`` is the audio in the
    response's output format (``audio_format``: PCM16 24 kHz mono little-endian, or G.711
    μ-law / A-law 8 kHz), ready for the sound device.
    """

    response_id: str
    item_id: str
    content_index: int
    offset_ms: int
    pcm: bytes = attrs.field(repr=lambda pcm: f"<{len(pcm)} bytes>")
    audio_format: AudioFormat = attrs.field(repr=False, kw_only=True)

    @property
    def duration_ms(self) -> int:
        """How long it plays."""
        return self.audio_format.duration_ms(len(self.pcm))


@attrs.frozen
class Interruption:
    """What :meth:`RealtimeSession.interrupt` did."""

    #: The ids of the responses it cancelled (each ended before it returned).
    cancelled: tuple[str, ...] = ()
    #: The ``conversation.item.truncate`` it sent: ``(item_id, content_index, audio_end_ms)``.
    truncated: tuple[str, int, int] | None = None
    #: The items it deleted (``conversation.item.delete``): audio nobody heard.
    deleted: tuple[str, ...] = ()
    #: The server's errors answering the truncate or the deletes (logged, never raised).
    errors: tuple[ServerError, ...] = ()


class AudioOut:
    """Output audio, as the reader sees it. ``buffer`` is each stream's size (chunks)."""

    def __init__(self, buffer: int) -> None:
        self.ledger = AudioLedger()
        self._buffer = buffer
        self._streams: list[BoundedStream[AudioChunk]] = []
        self._muted: LastN[str, None] = LastN(_MEMORY)  # response ids
        self._muted_requests: LastN[str, None] = LastN(_MEMORY)  # request event ids
        #: On a call: the responses the service is playing to the caller (WebRTC/SIP only).
        self.playing: LastN[str, None] = LastN(_MEMORY)

    # ------------------------------------------------------------------ the reader

    def take(self, event: Mapping[str, Any], *, now: float) -> None:
        """One server event of :data:`AUDIO_EVENTS`."""
        kind = event["type"]
        if kind in AUDIO_DELTAS:
            self._delta(event, now)
        elif kind in AUDIO_DONES:
            ids = _item_of(event)
            if ids is not None:
                self.ledger.audio_done(*ids)
        elif kind == "response.output_item.added":
            rid, item = event.get("response_id"), event.get("item")
            if isinstance(rid, str) and isinstance(item, Mapping):
                self.ledger.item_added(rid, item)
        elif kind == "response.created":
            response = event.get("response")
            if isinstance(response, Mapping) and isinstance(response.get("id"), str):
                self.ledger.response_started(response["id"], response)
                if self._muted_requests:
                    metadata = response.get("metadata")
                    key = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
                    if key is not None and key in self._muted_requests:
                        self._muted[response["id"]] = None
        elif kind.startswith("output_audio_buffer."):
            rid = event.get("response_id")
            if isinstance(rid, str):
                if kind == "output_audio_buffer.started":
                    self.playing[rid] = None
                else:
                    self.playing.pop(rid, None)
        else:  # session.created / session.updated
            session = event.get("session")
            if isinstance(session, Mapping):
                self.ledger.session_configured(session)

    def _delta(self, event: Mapping[str, Any], now: float) -> None:
        ids, delta = _item_of(event), event.get("delta")
        if ids is None or not isinstance(delta, str):
            return
        rid, item_id, content_index = ids
        if not self._streams:
            self.ledger.delta(rid, item_id, content_index, b64_size(delta), now=now)
            return
        try:
            pcm = base64.b64decode(delta, validate=True)
        except (binascii.Error, ValueError):
            logger.warning("an audio delta of %s is not base64: skipped", rid)
            return
        audio_format, offset = self.ledger.delta(rid, item_id, content_index, len(pcm), now=now)
        if rid in self._muted:
            return
        chunk = AudioChunk(rid, item_id, content_index, offset, pcm, audio_format=audio_format)
        alive = True
        for stream in self._streams:
            alive = stream.push(chunk) and alive
        if not alive:
            self._streams = [s for s in self._streams if s.push_allowed]

    # ------------------------------------------------------------------ interruptions

    def mute(self, response_ids: Iterable[str], request_keys: Iterable[str] = ()) -> None:
        """Hand out no more audio of these responses, nor of these requests' responses once
        they start."""
        for rid in response_ids:
            self._muted[rid] = None
        for key in request_keys:
            self._muted_requests[key] = None

    def muted(self, response_id: str) -> bool:
        return response_id in self._muted

    # ------------------------------------------------------------------ the application

    @contextmanager
    def stream(self) -> Iterator[BoundedStream[AudioChunk]]:
        stream: BoundedStream[AudioChunk] = BoundedStream(self._buffer)
        self._streams.append(stream)
        try:
            yield stream
        finally:
            stream.close()
            if stream in self._streams:
                self._streams.remove(stream)

    def finish(self, error: RealtimeError | None = None) -> None:
        """The session ended: every stream ends (raising ``error`` after its buffered chunks)."""
        for stream in self._streams:
            stream.finish(error)
        self._streams.clear()


def _item_of(event: Mapping[str, Any]) -> tuple[str, str, int] | None:
    rid, item_id = event.get("response_id"), event.get("item_id")
    index = event.get("content_index", 0)
    if isinstance(rid, str) and isinstance(item_id, str) and isinstance(index, int):
        return rid, item_id, index
    return None
