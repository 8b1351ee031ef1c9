"""Soak: N sessions x M requests against the fault-injecting fake server, nothing lost.

Long run (the figures quoted in the README)::

    python benchmarks/soak.py --sessions 50 --requests 2000 --seed 1 --json soak.json

On a 2-core machine (Python 3.11, one process for the server and every client), it printed::

    {
      "seed": 1,
      "sessions": 50,
      "requests_per_session": 2000,
      "requests": 112934,
      "completed": 98821,
      "cancelled": 13840,
      "incomplete": 0,
      "done_failed_status": 0,
      "failed": {
        "connection_lost": 108,
        "timed_out": 165
      },
      "conflicts_absorbed": 8988,
      "conflicts_surfaced": 0,
      "lost": 0,
      "max_in_band_active": 1,
      "tasks_left": 0,
      "rejections_sent_by_server": 8989,
      "server_started_responses": 29902,
      "cancels_received_by_server": 10911,
      "forced_releases": 185,
      "malformed_frames_injected": 16767,
      "malformed_frames_skipped": 16761,
      "sessions_opened": 86,
      "disconnects": 36,
      "connect_failures": 0,
      "fault_windows": {
        "ignore_cancel": 117,
        "withhold_done": 136
      },
      "elapsed_s": 491.2,
      "peak_rss_mb": 292.2,
      "invariants_ok": true
    }

Quick run (part of the test suite, ``tests/test_soak.py``)::

    python benchmarks/soak.py --quick

What runs: one fake Realtime server (``trio_realtime.testing``) on a loopback port, and
``--sessions`` applications at once, each making ``--requests`` requests over real WebSockets
through its own session. Each request is drawn from the seeded RNG: a random priority; a plain
response, or a function-call turn (the script returns 1-3 function calls; the app answers them
with ``send_function_result`` and waits for the one follow-up); and, for some, a cancel at a
random stage (at once while queued, after a short random delay, or once created). Two to three
requests are in the air per session at once, so the queue and priorities are exercised.

Faults, chosen by the seeded RNG and scaled to the requests (so load does not depend on the
machine's speed):

- with some requests, the server starts a response by itself a few milliseconds later
  (``start_response``, as voice activity detection does), half of them interrupting the
  active response, so they collide with the app's requests; with others it sends a bad frame
  (invalid JSON, binary, not an object, no type, wrong field types, missing response ids, an
  unknown event) between or inside responses;
- some connections are dropped (abort or clean close) after a random number of requests. The
  app then finds its waiting tickets failed with ``ConnectionLost`` (counted as
  ``failed: connection_lost``, never lost), opens a new session and carries on;
- server-wide windows (``Behavior`` knobs are per server): ``withhold_done`` (the session
  cancels the silent response after ``response_timeout``) and ``ignore_cancel`` (cancels go
  unanswered; the slot is force-released after ``cancel_grace`` when no ``response.done``
  comes). Windows never overlap, and are spaced so that a response withheld in one is not
  cancelled inside the next: a server that both withholds ``response.done`` and ignores the
  cancel holds its conversation forever.

Figures (a JSON object on stdout, also written to ``--json``):

- ``requests``: tickets made (follow-ups of function-call turns included); ``completed``,
  ``cancelled``, ``incomplete``: tickets that ended ``DONE`` with that status;
  ``failed``: tickets that ended ``FAILED``, by reason (``connection_lost``, ``timed_out``,
  ``rejected:<code>``, ``session_closed``);
- ``conflicts_absorbed``: ``conversation_already_has_active_response`` rejections the
  sessions absorbed and retried; ``conflicts_surfaced``: tickets that failed with that
  rejection (must be 0);
- ``lost``: tickets not in a terminal state once everything closed (must be 0);
- ``max_in_band_active``: the most in-band responses active at once in one conversation, as
  the server saw it (must be 1);
- ``tasks_left``: tasks still running once every session and the server closed (must be 0);
- ``malformed_frames_injected`` counts every bad frame sent (the unknown event aside) and
  ``malformed_frames_skipped`` the sessions' ``malformed_frames``: the session counts only
  frames that do not parse as an object with a string ``type``, not those with mistyped or
  missing fields, and frames sent just before a disconnect may never arrive;
- ``peak_rss_mb`` (``ru_maxrss``) and, with ``--tracemalloc``, ``tracemalloc_peak_mb``.

The exit status is 1 when an invariant fails. The same seed gives the same choices (which
requests, priorities, cancels, function calls, which connections get which faults and when);
the exact counts still vary a little from run to run, because where a cancel, a disconnect or
a server-started response lands depends on timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import resource
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio

from trio_realtime import (
    ConnectionLost,
    RealtimeSession,
    ResponseRejected,
    ResponseTicket,
    ResponseTimeout,
    SessionClosed,
    SessionConfig,
    TicketState,
    open_session,
)
from trio_realtime.testing import (
    Behavior,
    FakeConnection,
    FakeRealtimeServer,
    FunctionCall,
    Script,
    open_fake_server,
)

CONFLICT = "conversation_already_has_active_response"

#: Short deadlines, so that faults recover quickly.
CONFIG = SessionConfig(
    created_timeout=2.0,
    response_timeout=0.25,
    cancel_grace=0.25,
    connect_timeout=10.0,
    close_timeout=0.5,
)

#: Frames a misbehaving server might send; ``{rid}`` is replaced by a live response id.
BAD_FRAMES: tuple[str | bytes, ...] = (
    '{"type": "response.output_text.delta", ',
    b"\x00\x01 binary frame",
    "[1, 2, 3]",
    '"just a string"',
    '{"no": "type"}',
    '{"type": 7}',
    '{"type": "response.created", "response": "oops"}',
    '{"type": "response.done", "response": {"status": "completed"}}',
    '{"type": "response.output_text.delta", "response_id": 5, "delta": "x"}',
    '{"type": "error", "error": "x"}',
    '{"type": "response.output_text.delta", "delta": "no response id"}',
    '{"type": "soak.unknown_event", "payload": {"a": [1, 2, 3]}}',
    '{"type": "response.output_text.delta", "response_id": "{rid}", "delta": "injected"}',
)


@attrs.define
class Options:
    sessions: int = 4
    requests: int = 50
    seed: int = 1
    lanes: int = 3
    cancel_rate: float = 0.15
    function_rate: float = 0.15
    vad_rate: float = 0.3
    interrupt_rate: float = 0.5
    malformed_rate: float = 0.2
    disconnect_rate: float = 0.3
    disconnect_within: int = 300
    window_interval: float = 1.0
    window_length: float = 0.1
    tracemalloc: bool = False
    json_path: str | None = None
    verbose: bool = False


@attrs.define
class Totals:
    requests: int = 0
    #: Tickets not yet counted; a ticket is counted (and dropped) once it is terminal.
    pending: set[ResponseTicket] = attrs.Factory(set)
    outcomes: Counter[str] = attrs.Factory(Counter)
    conflicts_absorbed: int = 0
    malformed_skipped: int = 0
    malformed_injected: int = 0
    forced_releases: int = 0
    server_started_seen: int = 0
    sessions_opened: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    windows: Counter[str] = attrs.Factory(Counter)

    def track(self, ticket: ResponseTicket) -> None:
        if ticket not in self.pending:
            self.requests += 1
            self.pending.add(ticket)

    def settle(self, ticket: ResponseTicket) -> None:
        if ticket in self.pending and ticket.state.terminal:
            self.pending.discard(ticket)
            self.outcomes[_outcome(ticket)] += 1


def _outcome(ticket: ResponseTicket) -> str:
    if ticket.state is TicketState.DONE:
        assert ticket.result is not None
        return ticket.result.status
    return f"failed:{_reason(ticket.error)}"


def _script(body: Mapping[str, Any]) -> Script:
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions.startswith("tools:"):
        count = int(instructions.split(":")[1])
        calls = tuple(FunctionCall(f"tool_{n}", json.dumps({"n": n})) for n in range(count))
        return Script(text=None, function_calls=calls)
    return Script(text="soak ok", chunk_size=4)


def _connection_of(server: FakeRealtimeServer, session: RealtimeSession) -> FakeConnection:
    session_id = session.server_session.get("id")
    for connection in reversed(server.connections):
        if connection.session.get("id") == session_id:
            return connection
    raise LookupError(f"no connection for session {session_id!r}")


@attrs.define(eq=False)
class _Faults:
    """The server side of one connection, acting when the app's requests say so."""

    connection: FakeConnection
    nursery: trio.Nursery
    totals: Totals
    #: Drop the connection when this many requests were made on it (None: never).
    disconnect_at: int | None
    abort: bool
    requests: int = 0

    def on_request(self, plan: _Plan) -> None:
        self.requests += 1
        if plan.vad is not None:
            self.nursery.start_soon(self._voice_activity, plan.vad, plan.vad_interrupt)
        if plan.bad_frame is not None:
            self.nursery.start_soon(self._bad_frame, plan.bad_frame, plan.bad_delay)
        if self.requests == self.disconnect_at:
            self.nursery.start_soon(self._disconnect)

    async def _voice_activity(self, delay: float, interrupt: bool) -> None:
        await trio.sleep(delay)
        with contextlib.suppress(trio.BrokenResourceError):  # the connection ended first
            await self.connection.start_response(interrupt=interrupt)

    async def _bad_frame(self, index: int, delay: float) -> None:
        await trio.sleep(delay)
        frame = BAD_FRAMES[index]
        if isinstance(frame, str) and "{rid}" in frame:
            active = self.connection.active_response_ids()
            if not active:
                return
            frame = frame.replace("{rid}", active[0])
        elif isinstance(frame, bytes) or not frame.startswith('{"type": "soak.'):
            self.totals.malformed_injected += 1  # the well-formed unknown event is not
        await self.connection.send_raw(frame)

    async def _disconnect(self) -> None:
        self.totals.disconnects += 1
        if self.abort:
            await self.connection.abort()
        else:
            await self.connection.close(1011, "soak: server going away")


async def _housekeeping(server: FakeRealtimeServer, totals: Totals, progress: bool) -> None:
    """The fake server records every event it sent and received, for tests; a soak would
    grow without bound, so drop those records now and then (nothing here reads them)."""
    while True:
        await trio.sleep(1.0)
        server.received.clear()
        for connection in server.connections:
            connection.sent.clear()
            connection.received.clear()
        if progress:
            print(f"... {totals.requests} requests", file=sys.stderr, flush=True)


async def _server_windows(
    server: FakeRealtimeServer, rng: random.Random, options: Options, totals: Totals
) -> None:
    """Server-wide fault windows: ``withhold_done`` or ``ignore_cancel``, never together."""
    behavior = server.behavior
    # A response withheld at the end of a window is cancelled response_timeout later and must
    # not meet an ignore_cancel window then: keep windows this far apart at least.
    gap = CONFIG.response_timeout + CONFIG.cancel_grace + 0.2
    while True:
        await trio.sleep(rng.expovariate(1 / options.window_interval))
        knob = rng.choice(["withhold_done", "ignore_cancel"])
        totals.windows[knob] += 1
        setattr(behavior, knob, True)
        try:
            await trio.sleep(options.window_length)
        finally:
            setattr(behavior, knob, False)
        await trio.sleep(gap)


@attrs.frozen
class _Plan:
    """What one request does; drawn from its own seeded RNG, so it is the same every run."""

    priority: int
    tools: int
    cancel: str | None  # None, "queued", "soon" or "created"
    cancel_delay: float
    #: Seconds after the request when the server starts a response by itself (None: no).
    vad: float | None
    vad_interrupt: bool
    #: Index in BAD_FRAMES of a frame the server sends after ``bad_delay`` (None: none).
    bad_frame: int | None
    bad_delay: float

    @classmethod
    def draw(cls, rng: random.Random, options: Options) -> _Plan:
        tools = rng.randint(1, 3) if rng.random() < options.function_rate else 0
        cancel = None
        if rng.random() < options.cancel_rate:
            cancel = rng.choice(["queued", "soon", "created"])
        vad = rng.uniform(0, 0.004) if rng.random() < options.vad_rate else None
        bad = rng.randrange(len(BAD_FRAMES)) if rng.random() < options.malformed_rate else None
        return cls(
            priority=rng.randint(0, 2),
            tools=tools,
            cancel=cancel,
            cancel_delay=rng.uniform(0, 0.003),
            vad=vad,
            vad_interrupt=rng.random() < options.interrupt_rate,
            bad_frame=bad,
            bad_delay=rng.uniform(0, 0.004),
        )


async def _one_request(
    session: RealtimeSession, plan: _Plan, index: int, totals: Totals, faults: _Faults
) -> None:
    """Make one request as the plan says; raises ``ConnectionLost`` when the session is gone."""
    body = {"instructions": f"tools:{plan.tools}" if plan.tools else f"request {index}"}
    ticket = session.request_response(body, priority=plan.priority)
    totals.track(ticket)
    faults.on_request(plan)
    try:
        if plan.cancel == "queued":
            ticket.cancel_nowait()
        elif plan.cancel == "soon":
            await trio.sleep(plan.cancel_delay)
            ticket.cancel_nowait()
        elif plan.cancel == "created":
            await ticket.wait_created()
            ticket.cancel_nowait()
        result = await ticket.wait_done()
        if not plan.tools or result.status != "completed" or result.response is None:
            return
        calls = [o for o in result.response.get("output", []) if o.get("type") == "function_call"]
        follow_up: ResponseTicket | None = None
        for call in calls:
            follow_up = await session.send_function_result(call["call_id"], '{"ok": true}')
        if follow_up is not None:
            totals.track(follow_up)
            await follow_up.wait_done()
            totals.settle(follow_up)
    except (ResponseTimeout, ResponseRejected, SessionClosed):
        pass
    finally:
        totals.settle(ticket)


async def _application(
    server: FakeRealtimeServer, number: int, options: Options, totals: Totals
) -> None:
    """One application: ``options.requests`` requests, reconnecting after a disconnect."""
    issued = 0
    generation = 0
    while issued < options.requests:
        generation += 1
        try:
            async with open_session(server.url, config=CONFIG) as session:
                totals.sessions_opened += 1
                connection = _connection_of(server, session)
                rng = random.Random(f"{options.seed}/{number}/connection {generation}")

                async def lane(faults: _Faults) -> None:
                    nonlocal issued
                    while issued < options.requests and not session.closed:
                        index = issued
                        issued += 1
                        plan = _Plan.draw(
                            random.Random(f"{options.seed}/{number}/{index}"), options
                        )
                        try:
                            await _one_request(session, plan, index, totals, faults)
                        except ConnectionLost:
                            return

                async with trio.open_nursery() as nursery:
                    faults = _Faults(
                        connection,
                        nursery,
                        totals,
                        disconnect_at=rng.randint(1, options.disconnect_within)
                        if rng.random() < options.disconnect_rate
                        else None,
                        abort=rng.random() < 0.5,
                    )
                    async with trio.open_nursery() as lanes:
                        for _ in range(options.lanes):
                            lanes.start_soon(lane, faults)
                    nursery.cancel_scope.cancel()
                stats = session.statistics()
                totals.conflicts_absorbed += stats.conflicts_absorbed
                totals.malformed_skipped += stats.malformed_frames
                totals.forced_releases += stats.forced_releases
                totals.server_started_seen += stats.server_started
        except ConnectionLost:
            totals.connect_failures += 1  # the connection broke while opening


def _tasks_left() -> int:
    """Tasks alive apart from this one and trio's own (the root and its system tasks)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    me = trio.lowlevel.current_task()
    count = 0
    stack = [task for nursery in root.child_nurseries for task in nursery.child_tasks]
    # Direct children of the root are this (main) task and trio's system tasks.
    system = {task for task in stack if task is not me}
    while stack:
        task = stack.pop()
        if task is not me and task not in system:
            count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def _reason(error: BaseException | None) -> str:
    if isinstance(error, ConnectionLost):
        return "connection_lost"
    if isinstance(error, ResponseTimeout):
        return "timed_out"
    if isinstance(error, ResponseRejected):
        return f"rejected:{error.code}"
    if isinstance(error, SessionClosed):
        return "session_closed"
    return type(error).__name__


async def soak(options: Options) -> dict[str, Any]:
    totals = Totals()
    started = time.perf_counter()
    behavior = Behavior(script=_script)
    async with open_fake_server(behavior=behavior) as server:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_housekeeping, server, totals, options.verbose)
            nursery.start_soon(
                _server_windows, server, random.Random(f"{options.seed}/server"), options, totals
            )
            async with trio.open_nursery() as applications:
                for number in range(options.sessions):
                    applications.start_soon(_application, server, number, options, totals)
            nursery.cancel_scope.cancel()
        server_stats = server.statistics()
    tasks_left = _tasks_left()
    elapsed = time.perf_counter() - started

    for ticket in list(totals.pending):
        totals.settle(ticket)
    lost = len(totals.pending)
    done = Counter({k: v for k, v in totals.outcomes.items() if not k.startswith("failed:")})
    failed = Counter(
        {
            k.removeprefix("failed:"): v
            for k, v in totals.outcomes.items()
            if k.startswith("failed:")
        }
    )
    surfaced = failed.get(f"rejected:{CONFLICT}", 0)
    summary: dict[str, Any] = {
        "seed": options.seed,
        "sessions": options.sessions,
        "requests_per_session": options.requests,
        "requests": totals.requests,
        "completed": done["completed"],
        "cancelled": done["cancelled"],
        "incomplete": done["incomplete"],
        "done_failed_status": done["failed"],
        "failed": dict(sorted(failed.items())),
        "conflicts_absorbed": totals.conflicts_absorbed,
        "conflicts_surfaced": surfaced,
        "lost": lost,
        "max_in_band_active": server_stats.max_in_band_active,
        "tasks_left": tasks_left,
        "rejections_sent_by_server": server_stats.rejections_sent,
        "server_started_responses": server_stats.server_started,
        "cancels_received_by_server": server_stats.cancels_received,
        "forced_releases": totals.forced_releases,
        "malformed_frames_injected": totals.malformed_injected,
        "malformed_frames_skipped": totals.malformed_skipped,
        "sessions_opened": totals.sessions_opened,
        "disconnects": totals.disconnects,
        "connect_failures": totals.connect_failures,
        "fault_windows": dict(sorted(totals.windows.items())),
        "elapsed_s": round(elapsed, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if options.tracemalloc:
        summary["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    summary["invariants_ok"] = not violations(summary)
    return summary


def violations(summary: Mapping[str, Any]) -> list[str]:
    """The invariants a run must keep; empty when all hold."""
    problems = []
    if summary["conflicts_surfaced"] != 0:
        problems.append(f"{summary['conflicts_surfaced']} conflicts surfaced")
    if summary["lost"] != 0:
        problems.append(f"{summary['lost']} tickets lost")
    if summary["tasks_left"] != 0:
        problems.append(f"{summary['tasks_left']} tasks left running")
    if summary["max_in_band_active"] > 1:
        problems.append(f"{summary['max_in_band_active']} in-band responses active at once")
    if summary["requests"] == 0 or summary["completed"] == 0:
        problems.append("nothing ran")
    return problems


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Options()
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions")
    parser.add_argument("--requests", type=int, default=500, help="requests per session")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--json", metavar="PATH", help="also write the summary here")
    parser.add_argument(
        "--quick", action="store_true", help="4 sessions x 50 requests, frequent fault windows"
    )
    parser.add_argument(
        "--lanes", type=int, default=defaults.lanes, help="requests in the air per session"
    )
    parser.add_argument("--cancel-rate", type=float, default=defaults.cancel_rate)
    parser.add_argument("--function-rate", type=float, default=defaults.function_rate)
    parser.add_argument(
        "--vad-rate",
        type=float,
        default=defaults.vad_rate,
        help="server-started responses per request",
    )
    parser.add_argument("--interrupt-rate", type=float, default=defaults.interrupt_rate)
    parser.add_argument(
        "--malformed-rate",
        type=float,
        default=defaults.malformed_rate,
        help="bad frames per request",
    )
    parser.add_argument(
        "--disconnect-rate",
        type=float,
        default=defaults.disconnect_rate,
        help="share of connections the server drops",
    )
    parser.add_argument(
        "--disconnect-within",
        type=int,
        default=defaults.disconnect_within,
        help="such a drop comes within this many requests on the connection",
    )
    parser.add_argument(
        "--window-interval",
        type=float,
        default=defaults.window_interval,
        help="mean seconds between server-wide fault windows",
    )
    parser.add_argument("--window-length", type=float, default=defaults.window_length)
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python memory")
    parser.add_argument(
        "--verbose", action="store_true", help="show progress and the library's warnings"
    )
    args = parser.parse_args(argv)
    sessions, requests = (4, 50) if args.quick else (args.sessions, args.requests)
    window_interval = min(args.window_interval, 0.1) if args.quick else args.window_interval
    options = Options(
        sessions=sessions,
        requests=requests,
        seed=args.seed,
        lanes=args.lanes,
        cancel_rate=args.cancel_rate,
        function_rate=args.function_rate,
        vad_rate=args.vad_rate,
        interrupt_rate=args.interrupt_rate,
        malformed_rate=args.malformed_rate,
        disconnect_rate=args.disconnect_rate,
        disconnect_within=args.disconnect_within,
        window_interval=window_interval,
        window_length=args.window_length,
        tracemalloc=args.tracemalloc,
        json_path=args.json,
        verbose=args.verbose,
    )
    return options


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Every injected fault is logged by the library; show those lines only when asked.
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.CRITICAL)
    if args.tracemalloc:
        tracemalloc.start()
    summary = trio.run(soak, args)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json_path:
        with open(args.json_path, "w") as file:
            file.write(text + "\n")
    problems = violations(summary)
    for problem in problems:
        print(f"INVARIANT FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
