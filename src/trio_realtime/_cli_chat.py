"""``trio-realtime chat``: a text conversation in the terminal.

Each line read from stdin becomes a user message (``conversation.item.create``) and a
requested response, whose text deltas are written to stdout as they arrive. End of input or
``/quit`` ends the conversation. Against the embedded fake server the assistant echoes what it
was told; against a real endpoint it is the model.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping
from typing import Any, TextIO

import trio

from ._cli_common import EXIT_FAILED, Target
from ._errors import ConnectionLost, RealtimeError, SessionClosed
from ._result import ResponseResult
from ._session import RealtimeSession, open_session
from ._ticket import ResponseTicket

__all__ = ["run_chat"]

QUIT = "/quit"
_TEXT_DELTAS = frozenset({"response.output_text.delta", "response.text.delta"})
_TRANSCRIPT_DELTAS = frozenset(
    {"response.output_audio_transcript.delta", "response.audio_transcript.delta"}
)
#: Errors that end a session for good (PROTOCOL.md section 8).
_FATAL = frozenset(
    {"invalid_api_key", "insufficient_quota", "account_deactivated", "billing_hard_limit_reached"}
)
#: Errors the library handles by itself.
_HANDLED = frozenset({"conversation_already_has_active_response", "response_cancel_not_active"})


async def _read_line(stdin: TextIO) -> str | None:
    """The next line without its newline, or None at end of input."""
    line = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
    return line.rstrip("\r\n") if line else None


def _user_message(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        },
    }


async def watch_errors(
    events: AsyncIterable[Mapping[str, Any]],
    err: TextIO,
    fatal: list[str],
    cancel_scope: trio.CancelScope,
) -> None:
    """Show the server's errors on stderr; a fatal one ends the conversation."""
    async for event in events:
        if event.get("type") != "error":
            continue
        error = event.get("error")
        error = error if isinstance(error, Mapping) else {}
        code = error.get("code")
        if code in _HANDLED:
            continue
        err.write(f"trio-realtime: server error ({code}): {error.get('message', '')}\n")
        err.flush()
        if code in _FATAL:
            fatal.append(str(code))
            cancel_scope.cancel()
            return


async def _stream_reply(ticket: ResponseTicket, out: TextIO) -> ResponseResult:
    """Write the response's text as it arrives (its audio transcript if it has no text)."""
    transcript = ""
    wrote = False
    async for event in ticket.events():
        kind = event.get("type")
        if kind in _TEXT_DELTAS:
            out.write(str(event.get("delta", "")))
            out.flush()
            wrote = True
        elif kind in _TRANSCRIPT_DELTAS:
            transcript += str(event.get("delta", ""))
    result = await ticket.wait_done()
    if not wrote and transcript:
        out.write(transcript)
    out.write("\n")
    out.flush()
    return result


async def converse(
    session: RealtimeSession,
    stdin: TextIO,
    out: TextIO,
    err: TextIO,
    *,
    response: Mapping[str, Any],
    on_user_line: Any = None,
) -> int:
    """Read, send, stream, until end of input or ``/quit``; the exit status."""
    prompt = stdin.isatty()
    status = 0
    fatal: list[str] = []
    async with session.subscribe() as events, trio.open_nursery() as nursery:
        nursery.start_soon(watch_errors, events, err, fatal, nursery.cancel_scope)
        while True:
            if prompt:
                err.write("you> ")
                err.flush()
            line = await _read_line(stdin)
            if line is None and prompt:
                err.write("\n")  # Ctrl-D left the cursor after the prompt
                err.flush()
            if line is None or line.strip() == QUIT:
                break
            if not line.strip():
                continue
            if on_user_line is not None:
                on_user_line(line)
            await session.send(_user_message(line))
            ticket = session.request_response(dict(response))
            try:
                result = await _stream_reply(ticket, out)
            except (ConnectionLost, SessionClosed):
                raise
            except RealtimeError as exc:  # rejected or timed out: the conversation goes on
                out.write("\n")
                err.write(f"trio-realtime: the response failed: {exc}\n")
                status = EXIT_FAILED
                continue
            if result.status != "completed":
                err.write(f"trio-realtime: the response ended {result.status}\n")
                if result.status == "failed":
                    status = EXIT_FAILED
        nursery.cancel_scope.cancel()
    if fatal:
        err.write(f"trio-realtime: the server ended the conversation ({fatal[0]})\n")
        return EXIT_FAILED
    return status


async def run_chat(
    target: Target, stdin: TextIO, out: TextIO, err: TextIO, instructions: str | None
) -> int:
    """Chat with the fake server or ``target``'s endpoint; the exit status."""
    modalities = ["text"]
    body: dict[str, Any] = (
        {"modalities": modalities} if target.beta else {"output_modalities": modalities}
    )
    if instructions:
        body["instructions"] = instructions
    if target.endpoint is not None:
        async with open_session(target.endpoint) as session:
            if stdin.isatty():
                where = target.endpoint.url.split("?")[0]
                err.write(f"connected to {where}; {QUIT} or Ctrl-D ends\n")
            return await converse(session, stdin, out, err, response=body)
    return await _chat_fake(target, stdin, out, err, body)


async def _chat_fake(
    target: Target, stdin: TextIO, out: TextIO, err: TextIO, body: dict[str, Any]
) -> int:
    from .testing import Behavior, Script, open_fake_server

    said: list[str] = []

    def echo(_body: Mapping[str, Any]) -> Script:
        return Script(text=f"(fake server) You said: {said[-1]}" if said else "Hello.")

    behavior = Behavior(delta_delay=0.005, script=echo)
    async with open_fake_server(dialect=target.dialect, behavior=behavior) as server:
        if stdin.isatty():
            err.write(
                f"fake Realtime server ({target.dialect}), which echoes you; "
                f"{QUIT} or Ctrl-D ends\n"
            )
        async with open_session(server.url) as session:
            return await converse(session, stdin, out, err, response=body, on_user_line=said.append)
