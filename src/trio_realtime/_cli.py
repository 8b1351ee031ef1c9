"""The ``trio-realtime`` command line (``python -m trio_realtime``).

``demo`` plays a scripted conversation in which tool results, scripted assistant messages,
an interruption and responses the server starts by itself all ask for the one response slot
at once, and shows them served one at a time with each request's wait. By default it runs
against the embedded fake server (no API key); with ``--url`` or the usual environment
variables it runs against the real service.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import attrs
import trio

from ._endpoints import Endpoint
from ._errors import RealtimeError
from ._session import RealtimeSession, open_session
from ._ticket import ResponseTicket

__all__ = ["main"]

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


@attrs.define
class _Row:
    label: str
    ticket: ResponseTicket
    text: str = ""


class _Demo:
    def __init__(self, session: RealtimeSession, out: TextIO) -> None:
        self.session = session
        self.out = out
        self.rows: list[_Row] = []
        self.started = trio.current_time()

    def log(self, message: str) -> None:
        elapsed = (trio.current_time() - self.started) * 1000
        self.out.write(f"{elapsed:8.1f} ms  {message}\n")
        self.out.flush()

    async def track(self, label: str, ticket: ResponseTicket) -> Mapping[str, Any] | None:
        """Collect a ticket's text; return its final response (None if it failed)."""
        row = _Row(label, ticket)
        self.rows.append(row)
        events = ticket.events()
        self.log(f"queued     {label} (priority {ticket.priority})")
        try:
            async for event in events:
                if event["type"] == "response.created":
                    self.log(f"started    {label}")
                elif event["type"] in _TEXT_DELTAS:
                    row.text += str(event.get("delta", ""))
            result = await ticket.wait_done()
        except RealtimeError as exc:
            self.log(f"FAILED     {label}: {exc}")
            return None
        self.log(f"{result.status:<10} {label}")
        return result.response

    async def tool_turn(self, instructions: str) -> None:
        ticket = self.session.request_response({"instructions": instructions, "tools": _TOOLS})
        response = await self.track("user question (model calls tools)", ticket)
        calls = [
            item
            for item in (response or {}).get("output", [])
            if isinstance(item, Mapping) and item.get("type") == "function_call"
        ]
        if not calls:
            return
        follow_up: ResponseTicket | None = None
        for call in calls:
            self.log(f"tool       {call['name']}({call.get('arguments', '')}) -> result sent")
            result = _TOOL_RESULTS.get(call["name"], {"error": "unknown tool"})
            follow_up = await self.session.send_function_result(call["call_id"], json.dumps(result))
        assert follow_up is not None
        await self.track(f"answer from {len(calls)} tool results (one response)", follow_up)

    async def say(self, label: str, text: str, priority: int = 0) -> None:
        await self.track(label, await self.session.say(text, priority=priority))

    def report(self, server_stats: Any = None) -> int:
        out = self.out
        stats = self.session.statistics()
        out.write(
            "\n  # request                                        prio   wait ms  tries  status\n"
        )
        for n, row in enumerate(self.rows, 1):
            ticket, timings = row.ticket, row.ticket.timings
            wait = (
                f"{timings.queue_wait * 1000:8.1f}"
                if timings.queue_wait is not None
                else "       -"
            )
            status = ticket.result.status if ticket.result else ticket.state.value
            out.write(
                f"{n:>3} {row.label[:46]:<46} {ticket.priority:>4} {wait}  {timings.attempts:>5}"
                f"  {status}\n"
            )
            if row.text:
                out.write(f"      \u2514 {row.text[:70]!r}\n")
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
        failed = [row for row in self.rows if row.ticket.error is not None]
        return 1 if failed or surfaced else 0


async def _play(demo: _Demo, *, fake_server: Any = None) -> None:
    """The scenario: everything asks for the slot at once."""

    async def voice_activity() -> None:
        # The user speaks while the assistant is busy: the server starts responses itself.
        for _ in range(2):
            await fake_server.start_response()
            demo.log("server     voice activity started a response by itself")
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(demo.tool_turn, "What is the weather and time in Oslo? Use the tools.")
        nursery.start_soon(demo.say, "scripted: hold message", "One moment while I check.", 1)
        nursery.start_soon(demo.say, "scripted: reminder", "Your table is booked for eight.")
        if fake_server is not None:
            nursery.start_soon(voice_activity)
        await trio.sleep(0.005)
        nursery.start_soon(demo.say, "interruption", "Sorry to interrupt: your taxi is here.", 5)


async def _demo_fake(out: TextIO, dialect: str) -> int:
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
    async with open_fake_server(
        dialect="beta" if dialect == "beta" else "ga", behavior=behavior
    ) as server:
        out.write(f"fake Realtime server ({dialect}) on {server.url}\n\n")
        async with open_session(server.url) as session:
            demo = _Demo(session, out)
            await _play(demo, fake_server=server)
            return demo.report(server.statistics())


async def _demo_live(out: TextIO, endpoint: Endpoint, beta: bool) -> int:
    out.write(f"live service: {endpoint.url.split('?')[0]}\n\n")
    async with open_session(endpoint) as session:
        modalities = {"modalities": ["text"]} if beta else {"output_modalities": ["text"]}
        session_body: dict[str, Any] = {**modalities, "tools": _TOOLS}
        if not beta:
            session_body["type"] = "realtime"
        await session.send({"type": "session.update", "session": session_body})
        demo = _Demo(session, out)
        await _play(demo)
        return demo.report()


def _live_endpoint(args: argparse.Namespace) -> Endpoint | None:
    if args.fake:
        return None
    if args.url:
        headers: dict[str, str] = {}
        if "azure" in args.url and os.environ.get("AZURE_OPENAI_API_KEY"):
            headers["api-key"] = os.environ["AZURE_OPENAI_API_KEY"]
        elif os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
        if args.beta:
            headers["OpenAI-Beta"] = "realtime=v1"
        return Endpoint(args.url, headers)
    try:
        return Endpoint.from_env()
    except LookupError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trio-realtime", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="serve colliding requests one at a time")
    demo.add_argument("--fake", action="store_true", help="use the embedded fake server")
    demo.add_argument("--url", help="a Realtime wss:// URL (key from the environment)")
    demo.add_argument("--beta", action="store_true", help="speak the beta protocol")
    demo.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    endpoint = _live_endpoint(args)
    try:
        if endpoint is None:
            return trio.run(_demo_fake, sys.stdout, "beta" if args.beta else "ga")
        return trio.run(_demo_live, sys.stdout, endpoint, args.beta)
    except RealtimeError as exc:
        sys.stderr.write(f"trio-realtime: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
