"""The three audio formats of the Realtime API, as the two dialects name them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen
class AudioFormat:
    """One audio format: its names in both dialects and the size of a millisecond of it.

    PCM16 is 24 kHz mono, 16-bit little-endian (48 bytes a millisecond); G.711 is 8 kHz,
    one byte a sample (8 bytes a millisecond). ``silence`` is the byte value of silence.
    """

    beta_name: str
    ga_type: str
    bytes_per_ms: int
    silence: int

    def ga(self) -> dict[str, Any]:
        """The GA format object (``{"type": "audio/pcm", "rate": 24000}``...)."""
        if self.ga_type == "audio/pcm":
            return {"type": self.ga_type, "rate": 24000}
        return {"type": self.ga_type}

    def duration_ms(self, size: int) -> int:
        """Whole milliseconds in ``size`` bytes of this format."""
        return size // self.bytes_per_ms

    def silence_of(self, ms: int) -> bytes:
        return bytes([self.silence]) * (ms * self.bytes_per_ms)


PCM16 = AudioFormat(beta_name="pcm16", ga_type="audio/pcm", bytes_per_ms=48, silence=0x00)
G711_ULAW = AudioFormat(beta_name="g711_ulaw", ga_type="audio/pcmu", bytes_per_ms=8, silence=0xFF)
G711_ALAW = AudioFormat(beta_name="g711_alaw", ga_type="audio/pcma", bytes_per_ms=8, silence=0xD5)
FORMATS = (PCM16, G711_ULAW, G711_ALAW)


def from_ga(value: Any) -> AudioFormat | None:
    """The format a GA format object names (None if it names none)."""
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
