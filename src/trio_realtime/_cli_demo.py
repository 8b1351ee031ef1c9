"""``trio-realtime demo``: colliding requests served one at a time, and why in that order.

A tool call and its two results, two scripted assistant messages, an interruption with a
higher priority and (against the fake server) two responses that voice activity detection
starts by itself all ask for the one response slot at once; then the user talks over a spoken
reply, and ``interrupt()`` cancels it, cuts it where the user stopped hearing it and lets the
next reply go out first time. The timeline shows each server event as it arrives, the table
each request's wait, and the closing notes explain the order.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import attrs
import trio

from ._audio_out import Interruption
from ._cli_common import EXIT_FAILED, Target
from ._errors import RealtimeError
from ._session import RealtimeSession, open_session
from ._stream import EventStream
from ._ticket import ResponseTicket

__all__ = ["run_demo"]

_CONFLICT = "conversation_already_has_active_response"
_TEXT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.text.delta",
        "response.output_audio_transcript.delta",
        "response.audio_transcript.delta",
    }
)
_TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    {
        "type": "function",
        "name": "get_time",
        "description": "Current local time for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
]
_TOOL_RESULTS = {
    "get_weather": {"city": "Oslo", "sky": "clear", "celsius": 4},
    "get_time": {"city": "Oslo", "time": "09:41"},
}


@attrs.define(eq=False)
class _Row:
    """One request of the demo, and what the timeline saw of it."""

    number: int
    label: str
    ticket: ResponseTicket
    text: str = ""
    #: (when, what held the slot) for each conflict the server answered it with.
    rejections: list[tuple[float, str]] = attrs.Factory(list)
    started_at: float | None = None
    ended: trio.Event = attrs.Factory(trio.Event)
    #: The requests already sent (at least once) when this one was queued.
    sent_before: frozenset[int] = frozenset()


@attrs.define(eq=False)
class _ServerResponse:
    """A response the server started by itself (voice activity detection)."""

    label: str
    response_id: str
    started_at: float
    ended_at: float | None = None
    status: str | None = None


_INTRO = (
    "Only one response may be active in a Realtime conversation at a time. Here a user question "
    "(the model will call two tools), a hold message (priority 1) and a reminder (priority 0) "
    "are queued at once, and 5 ms later an interruption (priority 5){vad}. trio-realtime sends "
    "each response.create when the slot is free: higher priority first, equal priorities first "
    "come, first served. The timeline shows what the server did, in order:"
)
_VAD = "; meanwhile the user speaks and voice activity detection starts two responses by itself"


def _say(text: str) -> dict[str, Any]:
    """The body ``session.say(text)`` sends, for requests queued without a checkpoint."""
    return {"instructions": f"Say exactly: {text}"}


class _Demo:
    def __init__(self, session: RealtimeSession, out: TextIO) -> None:
        self.session = session
        self.out = out
        #: What the barge-in's interrupt() did.
        self.interruption: Interruption | None = None
        self.rows: list[_Row] = []
        self.by_response: dict[str, _Row] = {}
        self.server: dict[str, _ServerResponse] = {}
        self.started = trio.current_time()

    # ------------------------------------------------------------ the timeline

    def ms(self, when: float, *, width: int = 0) -> str:
        """A time of the demo, as both the timeline and the notes show it."""
        return f"{(when - self.started) * 1000:{width}.1f} ms"

    def log(self, what: str, message: str, *, when: float | None = None) -> None:
        """A timeline line; ``when`` (default: now) is the time the notes cite too."""
        if when is None:
            when = trio.current_time()
        self.out.write(f"{self.ms(when, width=8)}  {what:<9} {message}\n")
        self.out.flush()

    def submit(self, label: str, ticket: ResponseTicket) -> _Row:
        sent = frozenset(r.number for r in self.rows if r.ticket.timings.sent_at is not None)
        row = _Row(len(self.rows) + 1, label, ticket, sent_before=sent)
        self.rows.append(row)
        self.log(
            "queued",
            f"#{row.number} {label} (priority {ticket.priority})",
            when=ticket.timings.queued_at,  # (the notes cite this time)
        )
        return row

    def name(self, row: _Row) -> str:
        return f"#{row.number} {row.label}"

    def _row_of(self, response: Mapping[str, Any]) -> _Row | None:
        """Our request whose event id the response's metadata echoes (server-started
        responses carry no metadata)."""
        metadata = response.get("metadata")
        if not isinstance(metadata, Mapping):
            return None
        values = set(metadata.values())
        return next((row for row in self.rows if row.ticket.event_id in values), None)

    def _blocker(self, message: str) -> str:
        match = re.search(r"\bresp_\w+", message)
        if match is None:
            return "another response"
        known = self.server.get(match.group())
        return known.label if known is not None else match.group()

    async def watch(self, events: EventStream) -> None:
        """Log every server event that matters to the slot, in the order they arrive."""
        async for event in events:
            self.on_event(event)

    def on_event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        now = trio.current_time()
        response = event.get("response")
        response = response if isinstance(response, Mapping) else {}
        response_id = str(response.get("id", ""))
        if kind == "response.created":
            row = self._row_of(response)
            if row is not None:
                row.started_at = now
                self.by_response[response_id] = row
                self.log("started", self.name(row), when=now)
            else:
                label = f"VAD-{len(self.server) + 1}"
                self.server[response_id] = _ServerResponse(label, response_id, now)
                self.log(
                    "server",
                    f"voice activity started {label} by itself; it holds the slot until "
                    "its response.done",
                    when=now,
                )
        elif kind in ("response.done", "response.cancelled"):
            status = str(response.get("status", "cancelled"))
            row = self.by_response.get(response_id) or self._row_of(response)
            if row is not None:
                self.log(status, self.name(row), when=now)
                row.ended.set()
            elif response_id in self.server:
                vad = self.server[response_id]
                vad.ended_at, vad.status = now, status
                self.log("server", f"{vad.label} ended ({status}): the slot is free", when=now)
        elif kind == "error":
            error = event.get("error")
            error = error if isinstance(error, Mapping) else {}
            code, message = error.get("code"), str(error.get("message", ""))
            row = next((r for r in self.rows if r.ticket.event_id == error.get("event_id")), None)
            if row is not None and (code == _CONFLICT or "active response" in message):
                blocker = self._blocker(message)
                row.rejections.append((now, blocker))
                self.log(
                    "rejected",
                    f"{self.name(row)}: {blocker} holds the slot; the library sends it "
                    "again when that response ends",
                    when=now,
                )
            elif code != "response_cancel_not_active":
                self.log("error", f"{code}: {message}", when=now)
        elif kind in _TEXT_DELTAS:
            row = self.by_response.get(str(event.get("response_id", "")))
            if row is not None:
                row.text += str(event.get("delta", ""))

    # ------------------------------------------------------------ the requests

    async def finish(self, row: _Row) -> Mapping[str, Any] | None:
        """Wait for a request's end; its final response, or None if it failed."""
        try:
            result = await row.ticket.wait_done()
        except RealtimeError as exc:
            self.log("FAILED", f"{self.name(row)}: {exc}")
            return None
        # The timeline task logs the response.done; let it catch up before going on.
        with trio.move_on_after(1):
            await row.ended.wait()
        return result.response

    async def tool_turn(self, question: _Row) -> None:
        response = await self.finish(question)
        calls = [
            item
            for item in (response or {}).get("output", [])
            if isinstance(item, Mapping) and item.get("type") == "function_call"
        ]
        follow_up: ResponseTicket | None = None
        for call in calls:
            self.log("tool", f"{call['name']}({call.get('arguments', '')}) -> result sent")
            result = _TOOL_RESULTS.get(call["name"], {"error": "unknown tool"})
            follow_up = await self.session.send_function_result(call["call_id"], json.dumps(result))
        if follow_up is not None:
            row = self.submit(f"answer from {len(calls)} tool results (one response)", follow_up)
            await self.finish(row)

    # ------------------------------------------------------------ the report

    def report(self, server_stats: Any = None) -> int:
        out = self.out
        stats = self.session.statistics()
        out.write(
            "\n  # request                                        prio   wait ms  tries  status\n"
        )
        for row in self.rows:
            ticket, timings = row.ticket, row.ticket.timings
            wait = (
                f"{timings.queue_wait * 1000:8.1f}"
                if timings.queue_wait is not None
                else "       -"
            )
            status = ticket.result.status if ticket.result else ticket.state.value
            out.write(
                f"{row.number:>3} {row.label[:46]:<46} {ticket.priority:>4} {wait}"
                f"  {timings.attempts:>5}  {status}\n"
            )
            if row.text:
                out.write(f"      \u2514 {row.text[:70]!r}\n")
        out.write(
            "    (wait: from queued to its response.create sent; tries: how many times it was "
            "sent)\n"
        )
        surfaced = sum(
            1
            for row in self.rows
            if row.ticket.error is not None and "active response" in str(row.ticket.error)
        )
        out.write(
            f"\nrequests {len(self.rows)}, completed {stats.completed}, "
            f"rejections surfaced to the app {surfaced}, "
            f"conflicts absorbed and retried {stats.conflicts_absorbed}, "
            f"server-started responses {stats.server_started}\n"
        )
        if server_stats is not None:
            out.write(
                "fake server: most in-band responses active at once "
                f"{server_stats.max_in_band_active}, rejections sent "
                f"{server_stats.rejections_sent}\n"
            )
        notes = self.explain()
        if notes:
            out.write("\nWhy this order:\n")
            for note in notes:
                out.write(_wrap(note))
        out.flush()  # (a reader gone by now is noticed here, not at the interpreter's exit)
        failed = [row for row in self.rows if row.ticket.error is not None]
        return EXIT_FAILED if failed or surfaced else 0

    def explain(self) -> list[str]:
        """Plain-language notes on what the timeline showed, from what it recorded."""
        notes: list[str] = []
        ran = sorted((r for r in self.rows if r.started_at is not None), key=_started)
        if self.server:
            spans = "; ".join(
                f"{vad.label} from {self.ms(vad.started_at)} to "
                + (
                    f"{self.ms(vad.ended_at)} ({vad.status})"
                    if vad.ended_at is not None
                    else "the end"
                )
                for vad in self.server.values()
            )
            notes.append(
                "Voice activity detection started responses by itself, and each held the slot "
                f"until its response.done: {spans}. Every request waited for them: only one "
                "response may be active in a conversation."
            )
        for row in self.rows:
            if row.rejections:
                blockers = ", then ".join(blocker for _, blocker in row.rejections)
                notes.append(
                    f"{self.name(row)} was sent {row.ticket.timings.attempts} times: the server "
                    f"turned it away while {blockers} held the slot, and each time the library "
                    "sent it again the moment that response ended. The application saw no "
                    "error."
                )
        for later in ran:
            overtaken_by = [
                earlier
                for earlier in ran
                if earlier.ticket.priority < later.ticket.priority
                and _started(earlier) < _started(later)
                and earlier.number in later.sent_before
            ]
            if not overtaken_by:
                continue
            earlier = overtaken_by[-1]
            passed = [
                r.number
                for r in ran
                if r.ticket.priority < later.ticket.priority
                and r.ticket.timings.queued_at < later.ticket.timings.queued_at
                and _started(r) > _started(later)
            ]
            ahead = (
                f" It still went ahead of {_numbers(passed)}, queued earlier with a lower priority."
                if passed
                else ""
            )
            notes.append(
                f"{self.name(later)} (priority {later.ticket.priority}) ran after "
                f"{self.name(earlier)} (priority {earlier.ticket.priority}): when it was queued "
                f"at {self.ms(later.ticket.timings.queued_at)}, #{earlier.number} had already "
                "been sent. Priority orders only the requests still waiting; a request already "
                "sent keeps its turn, even when the server turns it away and it must be sent "
                f"again.{ahead} To cut into a response that has started, call "
                "session.cancel_response()."
            )
        by_priority: dict[int, list[_Row]] = {}
        for row in ran:
            by_priority.setdefault(row.ticket.priority, []).append(row)
        for priority, group in sorted(by_priority.items(), reverse=True):
            if len(group) < 2:
                continue
            queued = sorted(group, key=lambda r: r.ticket.timings.queued_at)
            order = " before ".join(f"#{r.number}" for r in group)
            fifo = [r.number for r in queued] == [r.number for r in group]
            detail = ", ".join(
                f"#{r.number} at {self.ms(r.ticket.timings.queued_at)}" for r in queued
            )
            notes.append(
                f"Priority {priority}: {order}. Equal priorities are served first come, first "
                f"served, in the order they were queued ({detail})"
                + ("." if fifo else "; a request turned away by the server kept its place.")
            )
        cut = self.interruption
        if cut is not None and len(self.rows) >= 2:
            spoken, following = self.rows[-2], self.rows[-1]
            where = (
                f"truncated its audio item at {cut.truncated[2]} ms, so the model remembers "
                "only what the user heard"
                if cut.truncated is not None
                else "had nothing to truncate"
            )
            notes.append(
                f"The user talked over #{spoken.number}: session.interrupt() cancelled it by id, "
                f"{where}, dropped the audio still arriving for it, and returned once it had "
                f"ended. #{following.number} went out at once and was accepted on try "
                f"{following.ticket.timings.attempts}."
            )
        return notes


def _started(row: _Row) -> float:
    return row.started_at if row.started_at is not None else float("inf")


def _numbers(numbers: list[int]) -> str:
    shown = [f"#{n}" for n in numbers]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _wrap(note: str, width: int = 96, bullet: str = "  - ") -> str:
    indent = " " * len(bullet)
    return textwrap.fill(note, width, initial_indent=bullet, subsequent_indent=indent) + "\n"


async def _play(demo: _Demo, *, fake_server: Any = None) -> None:
    """The scenario: everything asks for the slot at once."""
    session = demo.session
    # Queued together, with no checkpoint in between: the queue decides who goes first.
    question = demo.submit(
        "user question (model calls tools)",
        session.request_response(
            {
                "instructions": "What is the weather and time in Oslo? Use the tools.",
                "tools": _TOOLS,
            }
        ),
    )
    hold = demo.submit(
        "scripted: hold message",
        session.request_response(_say("One moment while I check."), priority=1),
    )
    reminder = demo.submit(
        "scripted: reminder", session.request_response(_say("Your table is booked for eight."))
    )

    async def voice_activity() -> None:
        # The user speaks while the assistant is busy: the server starts responses itself.
        for _ in range(2):
            await fake_server.start_response()
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(demo.tool_turn, question)
        nursery.start_soon(demo.finish, hold)
        nursery.start_soon(demo.finish, reminder)
        if fake_server is not None:
            nursery.start_soon(voice_activity)
        await trio.sleep(0.005)
        interruption = demo.submit(
            "interruption",
            await session.say("Sorry to interrupt: your taxi is here.", priority=5),
        )
        nursery.start_soon(demo.finish, interruption)


#: How much of the spoken reply the user hears before talking over it.
_HEARD_MS = 600
_LONG_REPLY = (
    "Your order A-17 left our warehouse this morning. It travels with the evening van and "
    "should reach you tomorrow between nine and noon; the driver will call ahead."
)


async def _barge_in(demo: _Demo, *, beta: bool) -> None:
    """The user talks over the assistant: interrupt() cancels the reply, cuts it where the
    user stopped hearing it, and the next reply goes out at once."""
    session = demo.session
    demo.out.write("\nThe user talks over a spoken reply:\n")
    speak = {"modalities": ["audio", "text"]} if beta else {"output_modalities": ["audio"]}
    async with session.output_audio() as audio:
        row = demo.submit("spoken reply", session.request_response({**_say(_LONG_REPLY), **speak}))
        played = 0  # what a player would have played: the audio as it arrives
        async for chunk in audio:
            played += chunk.duration_ms
            if played >= _HEARD_MS:
                break
    demo.log("user", f"starts speaking after {played} ms of #{row.number} were played")
    asked = trio.current_time()
    cut = await session.interrupt(played_ms=played)
    took = (trio.current_time() - asked) * 1000
    truncated = (
        f"item {cut.truncated[0]} truncated at {cut.truncated[2]} ms"
        if cut.truncated is not None
        else "nothing truncated"
    )
    demo.log(
        "interrupt",
        f"cancelled {', '.join(cut.cancelled) or 'nothing'}; {truncated}; "
        f"{len(cut.deleted)} unheard item(s) deleted; returned after {took:.1f} ms",
    )
    await demo.finish(row)
    demo.interruption = cut
    following = demo.submit("next reply, right after", await session.say("Sorry, go ahead."))
    await demo.finish(following)


async def _run(session: RealtimeSession, out: TextIO, fake_server: Any = None) -> int:
    out.write(_wrap(_INTRO.format(vad=_VAD if fake_server is not None else ""), bullet="") + "\n")
    async with session.subscribe() as events, trio.open_nursery() as nursery:
        demo = _Demo(session, out)
        nursery.start_soon(demo.watch, events)
        await _play(demo, fake_server=fake_server)
        if fake_server is not None:  # the reply streams at ten times real time
            fake_server.behavior.audio_pace = 10.0
            fake_server.behavior.audio_chunk_ms = 40
        await _barge_in(demo, beta=session.server_session.get("type") != "realtime")
        nursery.cancel_scope.cancel()
    return demo.report(fake_server.statistics() if fake_server is not None else None)


async def _demo_fake(out: TextIO, dialect: Literal["ga", "beta"]) -> int:
    from .testing import Behavior, FunctionCall, Script, default_script, open_fake_server

    def script(body: Mapping[str, Any]) -> Script:
        if body.get("tools"):
            return Script(
                text=None,
                function_calls=(
                    FunctionCall("get_weather", '{"city": "Oslo"}'),
                    FunctionCall("get_time", '{"city": "Oslo"}'),
                ),
            )
        if "weather" in json.dumps(body.get("input") or "") or body.get("instructions") is None:
            return Script(text="It is 4 degrees and clear in Oslo, and it is 09:41.")
        return default_script(body)

    behavior = Behavior(delta_delay=0.002, script=script)
    async with open_fake_server(dialect=dialect, behavior=behavior) as server:
        out.write(f"fake Realtime server ({dialect}) on {server.url}\n\n")
        async with open_session(server.url) as session:
            return await _run(session, out, server)


async def _demo_live(out: TextIO, target: Target) -> int:
    assert target.endpoint is not None
    out.write(f"live service: {target.endpoint.url.split('?')[0]}\n\n")
    async with open_session(target.endpoint) as session:
        modalities = {"modalities": ["text"]} if target.beta else {"output_modalities": ["text"]}
        session_body: dict[str, Any] = {**modalities, "tools": _TOOLS}
        if not target.beta:
            session_body["type"] = "realtime"
        await session.send({"type": "session.update", "session": session_body})
        return await _run(session, out)


async def run_demo(target: Target, out: TextIO) -> int:
    """Play the demo against the fake server or ``target``'s endpoint; the exit status."""
    if target.endpoint is None:
        return await _demo_fake(out, target.dialect)
    return await _demo_live(out, target)
