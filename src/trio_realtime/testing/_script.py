"""What the scripted model says, and the knobs that change how the fake server behaves."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ._audio import PCM16, AudioFormat

DEFAULT_TEXT = "Hello from the fake server."
_SAY_EXACTLY = re.compile(r"\s*say exactly:\s*(?P<text>.+?)\s*$", re.IGNORECASE | re.DOTALL)
#: A pace of 1.0: real time (typed for the optional knobs that default to it).
_REAL_TIME: float | None = 1.0
#: Milliseconds of audio the default script produces per character of transcript.
_AUDIO_MS_PER_CHAR = 10


@attrs.frozen
class FunctionCall:
    """A function call the scripted model emits.

    ``arguments`` is the JSON string streamed as ``response.function_call_arguments.delta``.
    ``call_id`` is generated (``call_...``) when None.
    """

    name: str
    arguments: str
    call_id: str | None = None


@attrs.frozen
class Script:
    """What one response outputs, in this order: a message (audio if ``audio`` is set, else text
    if ``text`` is set, else none), then ``function_calls``.

    ``audio`` is PCM16 sent as base64 deltas of ``audio_chunk_size`` bytes; ``transcript``
    (default: ``text``) is streamed alongside. ``status`` is the final status when the response
    finishes by itself (``completed``, ``failed`` or ``incomplete``); ``status_details``
    overrides the details the server derives from it.
    """

    text: str | None = DEFAULT_TEXT
    audio: bytes | None = None
    transcript: str | None = None
    function_calls: tuple[FunctionCall, ...] = ()
    status: str = "completed"
    status_details: Mapping[str, Any] | None = None
    chunk_size: int = attrs.field(default=8, validator=attrs.validators.gt(0))
    audio_chunk_size: int = attrs.field(default=4800, validator=attrs.validators.gt(0))


ScriptFactory = Callable[[Mapping[str, Any]], Script]


def _keys(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


@attrs.define
class Behavior:
    """Mutable knobs, read at the moment they matter: tests may change them at any time.

    The defaults make a well-behaved service that accepts any key (or none); each knob
    turns on one quirk or fault of the real one.
    """

    auto_finish: bool = True
    """False keeps responses active after ``response.created`` (no output, no
    ``response.done``) until ``finish_response()``.
    """
    created_delay: float = 0.0
    """Seconds between receiving ``response.create`` and ``response.created``. The response
    holds the conversation from the moment it is received, but it cannot be cancelled
    before ``response.created`` (a cancel then finds nothing active), as on the service.
    """
    delta_delay: float = 0.0
    """Seconds after each streamed delta."""
    withhold_created: bool = False
    """Responses the client requests run on the server (they hold the conversation and
    finish as usual) but none of their events is sent.
    """
    withhold_done: bool = False
    """Output is streamed, then the response stays active without ``response.done`` until
    ``finish_response()`` (or a cancel).
    """
    cancel_delay: float = 0.0
    """Seconds between a cancel (client ``response.cancel`` or an interrupting
    ``start_response``) and the ``response.done`` it causes; the response keeps the
    conversation meanwhile, as on the service.
    """
    ignore_cancel: bool = False
    """``response.cancel`` is counted and otherwise ignored."""
    null_error_event_id: bool = False
    """Errors carry ``error.event_id = null`` instead of the client event's id."""
    legacy_conflict_error: bool = False
    """The one-active rejection has the old shape (code null, bare message)."""
    send_rate_limits: bool = True
    """Send ``rate_limits.updated`` after each ``response.created``."""
    script: ScriptFactory | None = None
    """Given the ``response`` body of ``response.create`` (``{}`` if absent), returns the
    Script; None uses ``default_script`` (which follows the session's modalities and output
    audio format). Audio given in a Script is sent as is: make it the session's format.
    """
    accepted_api_keys: frozenset[str] | None = attrs.field(default=None, converter=_keys)
    """Keys the service knows; None accepts any key and no key at all. A key outside the
    set (or no key) is refused: on the OpenAI path an ``error`` (``invalid_api_key``; code
    null for a missing key) then a close with code 3000; on the Azure paths the handshake
    is refused with HTTP 401. Keys come from ``Authorization: Bearer`` or ``api-key``.
    """
    invalid_api_keys: frozenset[str] = attrs.field(factory=frozenset, converter=frozenset)
    """Keys refused as above, whatever ``accepted_api_keys`` says (e.g. a revoked key)."""
    session_duration: float | None = None
    """Seconds a session lasts; None: forever. At the end: the ``session_expired`` error
    ("Your session hit the maximum duration of N minutes."), then a close with code 1001
    and that sentence. ``session.created.session.expires_at`` says when (the service
    allows 60 minutes on OpenAI, 30 on Azure).
    """
    drop_after: float | None = None
    """Seconds after which each connection is dropped without a closing handshake (the
    client sees 1006, as Azure users report); None: never. ``abort()`` does it at once.
    """
    omit_response_created: bool = False
    """Responses send everything but ``response.created``: the client sees a
    ``response.done`` for a response it never saw created (seen during interruptions).
    """
    interrupted_status: str = attrs.field(
        default="cancelled", validator=attrs.validators.in_(("cancelled", "incomplete"))
    )
    """The status of a response interrupted by the user (``start_response(interrupt=True)``):
    ``"cancelled"`` as documented, or ``"incomplete"`` (seen once), both with reason
    ``turn_detected``.
    """
    audio_items: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    """Audio messages are split into this many assistant items in one response, as newer
    models (``gpt-realtime-2``) do.
    """
    overlap_audio_items: bool = False
    """With ``audio_items`` > 1: each next item opens and streams its first deltas before the
    previous item's ``*.done`` events (seen with newer models).
    """
    close_sidebands_after: float | None = None
    """Seconds after which each sideband of a call is closed cleanly (code 1000, as a proxy
    restart does) while the call goes on; None: never. ``close()`` on a sideband does it at
    once.
    """
    audio_pace: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    """None: audio deltas go out as fast as the connection takes them. A number: audio streams
    at that multiple of real time, as the service generates speech: after each audio delta
    the response waits the delta's duration divided by ``audio_pace`` (1.0: real time). A
    test can then interrupt mid-reply; the audio the server counts as generated (what
    ``conversation.item.truncate`` may keep) is the audio it has sent so far.
    """
    call_playback_pace: float | None = attrs.field(
        default=_REAL_TIME, validator=attrs.validators.optional(attrs.validators.gt(0.0))
    )
    """How fast a call plays a response's audio to the caller (calls only: the service plays
    it, the sidebands get no audio deltas). 1.0: real time; a number: that multiple of real
    time, from the response's first audio delta (``output_audio_buffer.started``); playback
    ends (``output_audio_buffer.stopped``) once the response is done and all its audio has
    played. A tiny pace keeps it playing until a test clears it. None: each response's audio
    has played by the time it is done (``stopped`` right after ``response.done``).
    """
    audio_chunk_ms: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    """Milliseconds of audio in each audio delta, in the response's output format: PCM16 24 kHz
    is 48 bytes a millisecond, G.711 (μ-law, A-law) 8 kHz is 8. The format follows the session
    (``audio.output.format`` / ``output_audio_format``) or the ``response.create`` body; the
    default script speaks 10 ms a character of its text. None: the Script's
    ``audio_chunk_size`` bytes.
    """


def default_script(
    body: Mapping[str, Any],
    session_modalities: tuple[str, ...] = ("text",),
    *,
    audio_format: AudioFormat = PCM16,
) -> Script:
    """The Script used when ``Behavior.script`` is None.

    The text is ``DEFAULT_TEXT``, or X when the body's ``instructions`` read "Say exactly: X".
    The output is audio (silence in ``audio_format``, 10 ms a character, with the text as
    transcript) when the requested modalities (``output_modalities`` / ``modalities``, else
    the session's) include ``audio``.
    """
    text = DEFAULT_TEXT
    instructions = body.get("instructions")
    if isinstance(instructions, str) and (match := _SAY_EXACTLY.match(instructions)):
        text = match["text"]
    modalities = body.get("output_modalities") or body.get("modalities") or session_modalities
    if isinstance(modalities, list | tuple) and "audio" in modalities:
        audio = audio_format.silence_of(_AUDIO_MS_PER_CHAR * len(text))
        return Script(text=None, audio=audio, transcript=text)
    return Script(text=text)
