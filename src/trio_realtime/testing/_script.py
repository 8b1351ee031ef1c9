"""What the scripted model says, and the knobs that change how the fake server behaves."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

DEFAULT_TEXT = "Hello from the fake server."
_SAY_EXACTLY = re.compile(r"\s*say exactly:\s*(?P<text>.+?)\s*$", re.IGNORECASE | re.DOTALL)
#: Bytes of PCM16 (24 kHz mono) the default script produces per character of transcript.
_AUDIO_BYTES_PER_CHAR = 480


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


@attrs.define
class Behavior:
    """Mutable knobs, read at the moment they matter: tests may change them at any time.

    - ``auto_finish``: False keeps responses active after ``response.created`` (no output, no
      ``response.done``) until ``FakeRealtimeServer.finish_response()``.
    - ``created_delay``: seconds between receiving ``response.create`` and ``response.created``.
      The response holds the conversation from the moment it is received, but it cannot be
      cancelled before ``response.created`` (a cancel then finds nothing active).
    - ``delta_delay``: seconds after each streamed delta.
    - ``withhold_created``: responses the client requests run on the server (they hold the
      conversation and finish as usual) but none of their events is sent.
    - ``withhold_done``: output is streamed, then the response stays active without
      ``response.done`` until ``finish_response()`` (or a cancel).
    - ``cancel_delay``: seconds between a cancel (client ``response.cancel`` or an interrupting
      ``start_response``) and the ``response.done`` it causes; the response keeps the
      conversation meanwhile, as on the real server.
    - ``ignore_cancel``: ``response.cancel`` is counted and otherwise ignored.
    - ``null_error_event_id``: errors carry ``error.event_id = null``.
    - ``legacy_conflict_error``: the one-active rejection has the old shape (code null, bare
      message).
    - ``send_rate_limits``: send ``rate_limits.updated`` after each ``response.created``.
    - ``script``: given the ``response`` body of ``response.create`` (``{}`` if absent), returns
      the Script; None uses ``default_script``.
    """

    auto_finish: bool = True
    created_delay: float = 0.0
    delta_delay: float = 0.0
    withhold_created: bool = False
    withhold_done: bool = False
    cancel_delay: float = 0.0
    ignore_cancel: bool = False
    null_error_event_id: bool = False
    legacy_conflict_error: bool = False
    send_rate_limits: bool = True
    script: ScriptFactory | None = None


def default_script(
    body: Mapping[str, Any], session_modalities: tuple[str, ...] = ("text",)
) -> Script:
    """The Script used when ``Behavior.script`` is None.

    The text is ``DEFAULT_TEXT``, or X when the body's ``instructions`` read "Say exactly: X".
    The output is audio (silence, with the text as transcript) when the requested modalities
    (``output_modalities`` / ``modalities``, else the session's) include ``audio``.
    """
    text = DEFAULT_TEXT
    instructions = body.get("instructions")
    if isinstance(instructions, str) and (match := _SAY_EXACTLY.match(instructions)):
        text = match["text"]
    modalities = body.get("output_modalities") or body.get("modalities") or session_modalities
    if isinstance(modalities, list | tuple) and "audio" in modalities:
        return Script(text=None, audio=bytes(_AUDIO_BYTES_PER_CHAR * len(text)), transcript=text)
    return Script(text=text)
