"""The three audio formats of the Realtime API, as the fake server makes and names them.

They are the library's own (``trio_realtime._audio``: the names in both dialects and the size
of a millisecond), with what a server needs besides to make audio: the byte of silence, and the
GA format object it puts in a session.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .. import _audio as library


@attrs.frozen
class AudioFormat(library.AudioFormat):
    """One of the library's formats, with its byte of silence.

    PCM16 is 24 kHz mono, 16-bit little-endian (48 bytes a millisecond); G.711 is 8 kHz,
    one byte a sample (8 bytes a millisecond). ``silence`` is the byte value of silence.
    """

    silence: int

    @classmethod
    def of(cls, audio_format: library.AudioFormat, *, silence: int) -> AudioFormat:
        """The library's ``audio_format``, with the byte of ``silence``."""
        return cls(**attrs.asdict(audio_format), silence=silence)

    def ga(self) -> dict[str, Any]:
        """The GA format object (``{"type": "audio/pcm", "rate": 24000}``...)."""
        if self.ga_type == "audio/pcm":
            return {"type": self.ga_type, "rate": 24000}
        return {"type": self.ga_type}

    def silence_of(self, ms: int) -> bytes:
        return bytes([self.silence]) * (ms * self.bytes_per_ms)


PCM16 = AudioFormat.of(library.PCM16, silence=0x00)
G711_ULAW = AudioFormat.of(library.G711_ULAW, silence=0xFF)
G711_ALAW = AudioFormat.of(library.G711_ALAW, silence=0xD5)
FORMATS = (PCM16, G711_ULAW, G711_ALAW)


def from_ga(value: Any) -> AudioFormat | None:
    """The format a GA format object names (None if it names none: a beta name is not one)."""
    if isinstance(value, Mapping):
        for audio_format in FORMATS:
            if value.get("type") == audio_format.ga_type:
                return audio_format
    return None


def from_beta(value: Any) -> AudioFormat | None:
    """The format a beta format name names (None if it names none)."""
    for audio_format in FORMATS:
        if value == audio_format.beta_name:
            return audio_format
    return None
