"""``trio-realtime demo --call``: a phone call, played by the embedded fake server.

The caller's leg keeps talking (its voice activity starts responses), a browser's data channel
starts one of its own, and the application, attached over the sideband, greets the caller,
answers a tool call, loses its sideband to a proxy restart, re-attaches without replaying the
conversation, and hangs up. The timeline shows who started each response; the summary counts
what matters: conflicts that reached the application, requests lost, items doubled.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any, TextIO

import attrs
import trio

from ._cli_common import EXIT_FAILED
from ._config import Reconnect, SessionConfig
from ._endpoints import Endpoint
from ._errors import CallEnded, RealtimeError
from ._events import METADATA_KEY
from ._gate import TicketState
from ._result import ResponseResult
from ._session import RealtimeSession, open_session
from ._statistics import SessionStatistics
from ._stream import EventStream
from ._ticket import ResponseTicket
from ._tools import ToolRegistry

__all__ = ["run_call_demo"]

_ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order": {"type": "string"}},
    "required": ["order"],
}
_CONFLICT = "conversation_already_has_active_response"
_TEXT_DELTAS = frozenset({"response.output_text.delta", "response.output_audio_transcript.delta"})
#: What the caller says, one utterance each time their voice starts a response.
_CALLER = (
    "Hello? Is this the shop?",
    "I am calling about my order, A-17.",
    "Where is it?",
    "Hello, are you still there?",
)


@attrs.define(eq=False)
class _Call:
    """The demo's state: the clock, what started each response, what the sideband saw."""

    out: TextIO
    started: float = attrs.Factory(trio.current_time)
    #: response id -> who started it (the app's are found by their metadata).
    starters: dict[str, str] = attrs.Factory(dict)
    texts: dict[str, str] = attrs.Factory(dict)
    #: Every response.done the sideband saw, by response id; who started each, in order.
    done: dict[str, Mapping[str, Any]] = attrs.Factory(dict)
    created: set[str] = attrs.Factory(set)
    ended: list[str] = attrs.Factory(list)
    #: Conflict errors the sideband saw (the library absorbs and retries them).
    conflicts_seen: int = 0
    tickets: list[ResponseTicket] = attrs.Factory(list)
    #: What the caller's leg is doing, for the scripted model: an utterance's index, or -1
    #: for the data channel.
    utterance: int = -1
    doubled: int = 0
    _changed: trio.Event = attrs.Factory(trio.Event)

    def line(self, who: str, what: str) -> None:
        ms = (trio.current_time() - self.started) * 1000
        self.out.write(f"{ms:8.1f} ms  {who:<9} {what}\n")

    def who(self, response: Mapping[str, Any]) -> str:
        rid = str(response.get("id"))
        metadata = response.get("metadata")
        if isinstance(metadata, Mapping) and METADATA_KEY in metadata:
            return self.starters.setdefault(rid, "app")
        return self.starters.get(rid, "caller")

    async def wait_created(self, response_id: str) -> None:
        while response_id not in self.created:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_done(self, response_id: str) -> ResponseResult:
        while response_id not in self.done:
            await self._changed.wait()
        response = self.done[response_id]
        return ResponseResult(str(response.get("status")), response)

    async def watch(self, events: EventStream) -> None:
        with contextlib.suppress(RealtimeError):  # the stream ends with the session's error
            await self._watch(events)

    async def _watch(self, events: EventStream) -> None:
        async for event in events:
            kind = event["type"]
            if kind == "response.created":
                response = event["response"]
                self.line("sideband", f"response.created {response['id']} ({self.who(response)})")
                self.created.add(str(response["id"]))
                self._notify()
            elif kind in _TEXT_DELTAS:
                rid = event["response_id"]
                self.texts[rid] = self.texts.get(rid, "") + event["delta"]
            elif kind == "response.done":
                self._response_done(event["response"])
            elif kind == "error" and event["error"].get("code") == _CONFLICT:
                self.conflicts_seen += 1
                self.line("sideband", "error: conversation_already_has_active_response (absorbed)")

    def _response_done(self, response: Mapping[str, Any]) -> None:
        rid = str(response["id"])
        who = self.who(response)
        self.done[rid] = response
        self.ended.append(who)
        self._notify()
        said = self.texts.get(rid, "")
        calls = [
            f"{item['name']}({item['arguments']})"
            for item in response.get("output") or []
            if item.get("type") == "function_call"
        ]
        what = f'"{said}"' if said else ("calls " + ", ".join(calls) if calls else "")
        self.line("sideband", f"response.done {rid} ({who}, {response['status']}) {what}")


def _script(demo: _Call) -> Any:
    from .testing import FunctionCall, Script, default_script

    def script(body: Mapping[str, Any]) -> Script:
        if "instructions" in body:  # the application's say()
            return default_script(body)
        if "metadata" in body:  # the tool's follow-up
            return Script(text="Your order A-17 shipped this morning; it arrives tomorrow.")
        if demo.utterance == -1:
            return Script(text="(the browser asked for this one)")
        if demo.utterance == 2:  # the caller asks where the order is: look it up
            call = FunctionCall("order_status", '{"order": "A-17"}')
            return Script(text=None, function_calls=(call,))
        return Script(text="Mm-hm, I am listening.")

    return script


async def _post(port: int, path: str, body: Mapping[str, Any]) -> int:
    """A REST call-control request, as ``AsyncOpenAI().realtime.calls.*`` sends it; its
    status. With h11 (trio-websocket's own), so the demo needs no extra."""
    import h11

    payload = json.dumps(body).encode()
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target=path,
        headers=[
            ("Host", f"127.0.0.1:{port}"),
            ("Authorization", "Bearer sk-demo"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
        ],
    )
    data = connection.send(request) or b""
    data += connection.send(h11.Data(data=payload)) or b""
    data += connection.send(h11.EndOfMessage()) or b""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(data)
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some())
            elif isinstance(event, h11.Response):
                return int(event.status_code)
            elif isinstance(event, h11.ConnectionClosed):
                raise RealtimeError(f"{path}: the server closed the connection")


def _tools(demo: _Call) -> ToolRegistry:
    tools = ToolRegistry(timeout=5)

    async def order_status(order: str) -> dict[str, str]:
        demo.line("app", f"tool order_status({order!r}) runs")
        await trio.sleep(0.01)  # stands for the shop's database
        return {"order": order, "status": "shipped", "arrives": "tomorrow"}

    tools.add(order_status, description="Where an order is.", parameters=_ORDER_SCHEMA)
    return tools


async def _caller_speaks(demo: _Call, call: Any, n: int) -> str:
    demo.utterance = n
    rid: str = await call.connection.start_response()
    demo.starters[rid] = "caller"
    demo.line("caller", f'"{_CALLER[n]}" -> voice activity starts {rid}')
    return rid


def _data_channel(demo: _Call, call: Any) -> str | None:
    """The browser's data channel sends a ``response.create``; the response it started, or
    None when the service refused it (to the data channel: the sideband never sees it)."""
    demo.utterance = -1
    before = call.connection.response_ids()
    call.connection.send_client_event({"type": "response.create"})
    after = call.connection.response_ids()
    if after == before:
        demo.line("datachan", "response.create: refused, a response is active (its own error)")
        return None
    demo.starters[after[-1]] = "datachan"
    demo.line("datachan", f"response.create starts {after[-1]}")
    return str(after[-1])


async def _play(demo: _Call, server: Any, call: Any, session: RealtimeSession) -> None:
    confirmed = await session.update_session({"type": "realtime"})
    audio = confirmed["audio"]
    demo.line(
        "app",
        f"session.updated: {audio['input']['format']['type']} in, "
        f"{audio['output']['format']['type']} out (the call's G.711, kept)",
    )
    # The caller talks first; the greeting queues behind the caller's response, and the
    # browser's data channel asks for responses too: one while the caller's runs (refused, to
    # it alone), one the moment it ends, racing the greeting.
    server.behavior.auto_finish = False
    caller = await _caller_speaks(demo, call, 0)
    greeting = await session.say("Thanks for calling the shop. How can I help?")
    demo.tickets.append(greeting)
    demo.line("app", "greets the caller: queued behind the caller's response")
    _data_channel(demo, call)
    await call.connection.finish_response(caller)
    channel = _data_channel(demo, call)
    server.behavior.auto_finish = True
    if channel is not None:
        await call.connection.finish_response(channel)
    for rid in call.connection.active_response_ids():
        await call.connection.finish_response(rid)
    await greeting.wait_done()
    # The caller keeps talking, and asks about an order: a tool call, its follow-up queued
    # like any request.
    await _caller_speaks(demo, call, 1)
    asked = await _caller_speaks(demo, call, 2)
    assert session.tools is not None
    follow_up = await session.tools.wait_follow_up(await demo.wait_done(asked))
    demo.tickets.append(follow_up)
    await follow_up.wait_done()
    # The caller talks again, the app queues a question, and a proxy restart closes the
    # sideband (1000) mid-response: the app re-attaches; nothing is replayed.
    server.behavior.auto_finish = False
    caller = await _caller_speaks(demo, call, 3)
    await demo.wait_created(caller)  # (the session has seen it: its gate too)
    question = session.request_response({"instructions": "Say exactly: Anything else?"})
    demo.tickets.append(question)
    demo.line("app", "asks a question: queued behind the caller's response")
    await call.sidebands[-1].close()
    demo.line("proxy", "restarts: the sideband is closed cleanly (1000); the call goes on")
    await call.wait_sidebands(1)
    demo.line("app", "re-attached to the call (reconnect), replaying nothing")
    server.behavior.auto_finish = True
    await call.connection.finish_response(caller)
    await question.wait_done()
    goodbye = await session.say("Goodbye!")
    demo.tickets.append(goodbye)
    await goodbye.wait_done()
    status = await _post(server.port, f"/v1/realtime/calls/{call.call_id}/hangup", {})
    demo.line("app", f"POST .../calls/{call.call_id}/hangup -> {status}")
    await session.wait_closed()
    try:
        session.request_response()
    except CallEnded as exc:
        demo.line("app", f"the session has ended: CallEnded ({exc.code}), the re-attach said so")
    items = call.connection.item_ids()
    demo.doubled = len(items) - len(set(items))


async def run_call_demo(out: TextIO) -> int:
    """Play a whole call against the embedded fake server; the exit status."""
    from .testing import Behavior, open_fake_server

    demo = _Call(out)
    behavior = Behavior(delta_delay=0.002, script=_script(demo))
    async with open_fake_server(behavior=behavior) as server:
        base = server.url.split("?")[0]
        out.write(f"fake Realtime server (ga) on {base}, playing a phone call\n\n")
        demo.started = trio.current_time()
        call = server.incoming_call({"From": '"Caller" <sip:+15555550100@example.com>'})
        webhook = call.webhook
        demo.line("service", f"webhook {webhook['type']}: {webhook['data']['call_id']}")
        body = {"type": "realtime", "instructions": "You answer the phone for a shop."}
        status = await _post(server.port, f"/v1/realtime/calls/{call.call_id}/accept", body)
        demo.line("app", f"POST .../calls/{call.call_id}/accept -> {status} (no audio format)")
        config = SessionConfig(reconnect=Reconnect(attempts=3, initial_delay=0.01, max_delay=0.1))
        async with (
            open_session(
                Endpoint(server.sideband_url(call)), config=config, tools=_tools(demo)
            ) as session,
            session.subscribe() as events,
            trio.open_nursery() as nursery,
        ):
            demo.line("app", "attached the sideband (waiting for no session.created)")
            nursery.start_soon(demo.watch, events)
            await _play(demo, server, call, session)
            stats = session.statistics()
            nursery.cancel_scope.cancel()
    return _report(demo, stats, server.statistics())


def _report(demo: _Call, stats: SessionStatistics, server: Any) -> int:
    by = {who: demo.ended.count(who) for who in ("caller", "datachan", "app")}
    surfaced = sum(1 for t in demo.tickets if t.error is not None)
    lost = sum(1 for t in demo.tickets if t.state is not TicketState.DONE)
    demo.out.write(
        f"\nresponses: {by['caller']} started by the caller's voice, {by['datachan']} by the "
        f"data channel, {by['app']} by the app\n"
        f"conflicts surfaced to the app {surfaced} (seen on the sideband and absorbed "
        f"{stats.conflicts_absorbed}; refused to the data channel, never seen: "
        f"{server.rejections_sent - stats.conflicts_absorbed})\n"
        f"requests {len(demo.tickets)}, completed {stats.completed}, lost {lost}\n"
        f"re-attaches {stats.reconnects}, items replayed {stats.replayed_items}, "
        f"duplicate items {demo.doubled}\n"
    )
    ok = not surfaced and not lost and not demo.doubled and stats.replayed_items == 0
    return 0 if ok else EXIT_FAILED
