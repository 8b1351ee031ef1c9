"""Density: how many live calls one core carries.

Each call streams audio both ways in real time, like a phone call to a voice agent:

- out: one ``input_audio_buffer.append`` (40 ms of 24 kHz PCM16, base64) every 40 ms, 25 a
  second, whatever happens;
- a spoken turn of two seconds every three: when it ends, the client asks for a reply
  (``response.create``);
- in: the server's reply, in real time (``bench_server.py``'s ``mode=call``): an audio delta
  every 40 ms and a transcript delta every 80 ms for two seconds, between ``response.created``
  and ``response.done``: about 26 events a second on average.

A call is *on time* while its events are: the lateness of an append is the time between the
moment the client meant to send it and the moment the server read it; the lateness of a delta,
between the moment the server wrote it and the moment the application saw it (both on the
machine's monotonic clock). N calls *pass* when the p99 of both stays under 100 ms and the
client used under 90% of one core, and every reply asked for came back.

Contenders (each in a client process of its own, so its CPU time and memory are its own; the
server in another; the grid of N ascending, contenders interleaved, the order rotating at each
step; a contender that fails at some N is not run at larger ones):

- ``trio-realtime``: ``open_session`` on the default transport (trio-websocket, the standard
  library's JSON); the application sends appends with ``session.send``, asks for replies with
  ``request_response`` and reads the deltas from ``session.subscribe()``;
- ``trio-realtime (websockets)``: the same on ``transport="websockets"`` with orjson (the
  ``[fast]`` extra);
- ``trio-realtime + OpenTelemetry``: the fast one again, with ``trio_realtime.otel``
  recording a span per response and per session and the latency histograms (the ``[otel]``
  extra), exported nowhere: what instrumenting costs;
- ``bare trio-websocket``: a hand-written loop on trio-websocket (no gating at all);
- ``bare websockets.trio``: the same on ``websockets``' Trio implementation;
- ``bare asyncio websockets``: the same on asyncio ``websockets``, standard JSON, and
  ``bare asyncio websockets + orjson``: with orjson, frames kept as bytes;
- ``openai AsyncRealtimeConnection``: the ``openai`` package's realtime connection (asyncio,
  typed events).

Reported per contender: live calls per core (the largest N that passed, scaled to 90% of a
core by its CPU use, capped by the next N that failed), p50/p99 lateness, CPU per
call-second, memory per call (resident set growth after every call connected / N).

    python benchmarks/density.py [--quick] [--json PATH] [--grid 25,50,...] [--runs K]
                                 [--window S] [--only NAME,NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

import _common as common

TICK_NS = 40_000_000
#: 40 ms of 24 kHz mono PCM16, base64 (2,560 characters).
AUDIO = base64.b64encode(random.Random(3).randbytes(1920)).decode()
LATENESS_LIMIT_MS = 100.0
CPU_LIMIT = 0.9
CONNECT_CONCURRENCY = 25
#: Seconds a call waits, once its last turn is sent, for the replies still due.
GRACE = 15.0
CONFLICT = common.CONFLICT

REALTIME = "trio-realtime"
REALTIME_FAST = "trio-realtime (websockets)"
REALTIME_OTEL = "trio-realtime + OpenTelemetry"
BARE_TWS = "bare trio-websocket"
BARE_WST = "bare websockets.trio"
BARE_AIO = "bare asyncio websockets"
BARE_AIO_ORJSON = "bare asyncio websockets + orjson"
OPENAI = "openai AsyncRealtimeConnection"
CONTENDERS = (
    REALTIME,
    REALTIME_FAST,
    REALTIME_OTEL,
    BARE_TWS,
    BARE_WST,
    BARE_AIO,
    BARE_AIO_ORJSON,
    OPENAI,
)
ASYNCIO = (BARE_AIO, BARE_AIO_ORJSON, OPENAI)
#: What each contender needs beyond the core install.
NEEDS: dict[str, tuple[str, ...]] = {
    REALTIME_FAST: common.FAST,
    REALTIME_OTEL: (*common.FAST, "opentelemetry.sdk"),
    BARE_WST: ("websockets",),
    BARE_AIO: ("websockets",),
    BARE_AIO_ORJSON: common.FAST,
    OPENAI: ("openai", "websockets"),
}


# ---------------------------------------------------------------- the shape of a call


class Plan:
    """When a call does what: ticks of 40 ms from its origin (``time.monotonic_ns``)."""

    def __init__(self, args: argparse.Namespace, n: int, index: int, start_ns: int) -> None:
        self.cycle = args.cycle_ticks
        self.speech = args.speech_ticks
        # Calls start spread over one cycle, so their turns do not all fall together.
        self.origin_ns = start_ns + index * self.cycle * TICK_NS // n
        self.measure_from_ns = start_ns + self.cycle * TICK_NS  # every call in its stride
        self.end_ns = self.measure_from_ns + int(args.window * 1e9)

    def ticks(self) -> range:
        return range((self.end_ns - self.origin_ns) // TICK_NS)

    def due_ns(self, k: int) -> int:
        return self.origin_ns + k * TICK_NS

    def append_id(self, due_ns: int) -> str:
        return f"{'a' if due_ns >= self.measure_from_ns else 'w'}{due_ns}"

    def turn_ends(self, k: int) -> bool:
        return k % self.cycle == self.speech - 1


class Record:
    """What one client process saw: inbound lateness, turns asked for, replies done."""

    def __init__(self) -> None:
        self.lateness_ns: list[int] = []
        self.measure_from_ns = 0
        self.deltas = 0
        self.appends = 0
        self.turns = 0
        self.done = 0
        self.errors: list[str] = []

    def delta(self, event_id: Any) -> None:
        if isinstance(event_id, str) and event_id.startswith("evt_d"):
            now = time.monotonic_ns()
            self.deltas += 1
            sent = int(event_id[5:])
            if sent >= self.measure_from_ns:
                self.lateness_ns.append(now - sent)


def append_event(event_id: str) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "event_id": event_id, "audio": AUDIO}


# ---------------------------------------------------------------- Trio contenders


async def _trio_pace(
    plan: Plan, record: Record, send_append: Callable[[str], Awaitable[None]], turn: Any
) -> None:
    offset_ns = int(trio.current_time() * 1e9) - time.monotonic_ns()
    for k in plan.ticks():
        due = plan.due_ns(k)
        await trio.sleep_until((due + offset_ns) / 1e9)
        await send_append(plan.append_id(due))
        record.appends += 1
        if plan.turn_ends(k):
            await turn()


async def _bare_trio_call(
    send: Callable[[str], Awaitable[None]],
    receive: Callable[[], Awaitable[str | bytes]],
    plan: Plan,
    record: Record,
    ready: Callable[[], Awaitable[None]],
) -> None:
    json.loads(await receive())  # session.created
    await ready()
    replies_due = 0

    async def reader() -> None:
        nonlocal replies_due
        while True:
            event = json.loads(await receive())
            kind = event["type"]
            if kind == "response.done" or kind == "error":
                if kind == "error":
                    record.errors.append(event["error"].get("code") or "error")
                else:
                    record.done += 1
                if kind == "response.done" or event["error"].get("code") == CONFLICT:
                    replies_due -= 1  # (a refused request gets no reply)
                if replies_due == 0 and finished.is_set():
                    all_done.set()
            else:
                record.delta(event.get("event_id"))

    async def send_append(event_id: str) -> None:
        await send(json.dumps(append_event(event_id)))

    async def turn() -> None:
        nonlocal replies_due
        record.turns += 1
        replies_due += 1
        await send(json.dumps({"type": "response.create", "response": {}}))

    finished = trio.Event()
    all_done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await _trio_pace(plan, record, send_append, turn)
        finished.set()
        if replies_due:
            with trio.move_on_after(GRACE):
                await all_done.wait()
            if replies_due:
                record.errors.append(f"{replies_due} replies missing")
        nursery.cancel_scope.cancel()


async def run_bare_tws(url: str, plan: Plan, record: Record, ready: Any) -> None:
    port = int(url.split(":")[2].split("/")[0])
    async with common.open_raw_ws(port, url.split(f":{port}", 1)[1]) as ws:
        await _bare_trio_call(ws.send_message, ws.get_message, plan, record, ready)


async def run_bare_wst(url: str, plan: Plan, record: Record, ready: Any) -> None:
    from websockets.trio.client import connect

    async with connect(url, compression=None, proxy=None, ping_interval=None) as ws:
        await _bare_trio_call(ws.send, ws.recv, plan, record, ready)


def _realtime_runner(*, fast: bool, telemetry: Any = None) -> Any:
    async def run(url: str, plan: Plan, record: Record, ready: Any) -> None:
        from trio_realtime import SessionConfig, TicketState, open_session

        config = SessionConfig(
            transport="websockets" if fast else "trio-websocket", connect_timeout=60
        )
        opener = open_session if telemetry is None else telemetry.open_session
        tickets: list[Any] = []
        async with opener(url, config=config) as session:
            await ready()
            async with session.subscribe() as events, trio.open_nursery() as nursery:

                async def reader() -> None:
                    async for event in events:
                        record.delta(event.get("event_id"))

                async def send_append(event_id: str) -> None:
                    await session.send(append_event(event_id))

                async def turn() -> None:
                    record.turns += 1
                    tickets.append(session.request_response({}))
                    await trio.lowlevel.checkpoint()

                nursery.start_soon(reader)
                await _trio_pace(plan, record, send_append, turn)
                with trio.move_on_after(GRACE):
                    for ticket in tickets:
                        result = await ticket.wait_done()
                        record.done += result.status == "completed"
                nursery.cancel_scope.cancel()
        record.errors.extend(
            type(t.error).__name__ for t in tickets if t.state is not TicketState.DONE
        )

    return run


def _otel_telemetry() -> Any:
    """trio_realtime.otel with the SDK, spans batched to an exporter that drops them and
    metrics kept in memory: what recording costs, without any network."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from trio_realtime.otel import Telemetry

    class Dropping(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Dropping()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    record = telemetry._record

    def timed(*args: Any) -> None:  # the CPU time one response's recording takes, in place
        started = time.thread_time_ns()
        record(*args)
        OTEL_RECORD_NS.append(time.thread_time_ns() - started)

    telemetry._record = timed  # type: ignore[method-assign]
    return telemetry


#: The time each response's telemetry took (the OpenTelemetry contender).
OTEL_RECORD_NS: list[int] = []


def trio_runner(kind: str) -> Any:
    if kind == REALTIME:
        return _realtime_runner(fast=False)
    if kind == REALTIME_FAST:
        return _realtime_runner(fast=True)
    if kind == REALTIME_OTEL:
        return _realtime_runner(fast=True, telemetry=_otel_telemetry())
    if kind == BARE_TWS:
        return run_bare_tws
    if kind == BARE_WST:
        return run_bare_wst
    raise ValueError(kind)


async def trio_child(kind: str, urls: list[str], args: argparse.Namespace) -> dict[str, Any]:
    runner = trio_runner(kind)
    record = Record()
    n = len(urls)
    limiter = trio.Semaphore(CONNECT_CONCURRENCY)
    connected = 0
    all_connected = trio.Event()
    go = trio.Event()
    plans: list[Plan] = []

    async def call(i: int) -> None:
        held = True
        await limiter.acquire()

        async def ready() -> None:
            nonlocal connected, held
            limiter.release()
            held = False
            connected += 1
            if connected == n:
                all_connected.set()
            await go.wait()

        try:
            await runner(urls[i], _Late(plans, i), record, ready)
        except Exception as exc:
            record.errors.append(repr(exc)[:200])
            all_connected.set()
        finally:
            if held:
                limiter.release()

    gc.collect()
    rss_start = common.rss_bytes()
    with common.json_parser(fast=kind != REALTIME), trio.fail_after(args.window + 120):
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(call, i)
            await all_connected.wait()
            gc.collect()
            rss_connected = common.rss_bytes()
            start_ns = time.monotonic_ns() + 100_000_000
            plans.extend(Plan(args, n, i, start_ns) for i in range(n))
            record.measure_from_ns = plans[0].measure_from_ns
            go.set()
            offset_ns = int(trio.current_time() * 1e9) - time.monotonic_ns()
            await trio.sleep_until((plans[0].measure_from_ns + offset_ns) / 1e9)
            cpu = time.process_time()
            await trio.sleep_until((plans[0].end_ns + offset_ns) / 1e9)
            cpu = time.process_time() - cpu
    return _child_result(record, n, connected, rss_start, rss_connected, cpu, args.window)


class _Late:
    """A call's plan, which exists only once every call connected."""

    def __init__(self, plans: list[Plan], index: int) -> None:
        self._plans = plans
        self._index = index

    def __getattr__(self, name: str) -> Any:
        return getattr(self._plans[self._index], name)


def _child_result(
    record: Record, n: int, connected: int, rss0: int, rss1: int, cpu: float, window: float
) -> dict[str, Any]:
    lateness = sorted(ns / 1e6 for ns in record.lateness_ns)
    return {
        "calls": n,
        "connected": connected,
        "appends": record.appends,
        "turns": record.turns,
        "done": record.done,
        "deltas": record.deltas,
        "errors": record.errors[:5],
        "error_count": len(record.errors),
        "delta_lateness_ms": {
            "n": len(lateness),
            "p50": common.percentile(lateness, 50),
            "p99": common.percentile(lateness, 99),
            "max": lateness[-1] if lateness else float("nan"),
        },
        "cpu_seconds": cpu,
        "cpu_fraction": cpu / window,
        "memory_per_call_kib": (rss1 - rss0) / n / 1024,
        "rss_connected_kib": rss1 / 1024,
        "otel_us_per_response": (
            statistics.median(OTEL_RECORD_NS) / 1000 if OTEL_RECORD_NS else None
        ),
    }


# ---------------------------------------------------------------- asyncio contenders


async def _aio_pace(plan: Plan, record: Record, send_append: Any, turn: Any) -> None:
    for k in plan.ticks():
        due = plan.due_ns(k)
        delay = (due - time.monotonic_ns()) / 1e9
        await asyncio.sleep(max(delay, 0))
        await send_append(plan.append_id(due))
        record.appends += 1
        if plan.turn_ends(k):
            await turn()


async def run_bare_aio(url: str, plan: Any, record: Record, ready: Any, *, fast: bool) -> None:
    from websockets.asyncio.client import connect

    if fast:
        import orjson

        loads: Any = orjson.loads

        async def send(event: dict[str, Any]) -> None:
            await ws.send(orjson.dumps(event), text=True)

        async def receive() -> Any:
            return await ws.recv(decode=False)
    else:
        loads = json.loads

        async def send(event: dict[str, Any]) -> None:
            await ws.send(json.dumps(event))

        async def receive() -> Any:
            return await ws.recv()

    async with connect(url, compression=None, proxy=None, ping_interval=None) as ws:
        loads(await receive())
        await ready()
        replies_due = 0
        finished = asyncio.Event()
        all_done = asyncio.Event()

        async def reader() -> None:
            nonlocal replies_due
            while True:
                event = loads(await receive())
                kind = event["type"]
                if kind == "response.done" or kind == "error":
                    if kind == "error":
                        record.errors.append(event["error"].get("code") or "error")
                    else:
                        record.done += 1
                    if kind == "response.done" or event["error"].get("code") == CONFLICT:
                        replies_due -= 1  # (a refused request gets no reply)
                    if replies_due == 0 and finished.is_set():
                        all_done.set()
                else:
                    record.delta(event.get("event_id"))

        async def send_append(event_id: str) -> None:
            await send(append_event(event_id))

        async def turn() -> None:
            nonlocal replies_due
            record.turns += 1
            replies_due += 1
            await send({"type": "response.create", "response": {}})

        task = asyncio.create_task(reader())
        try:
            await _aio_pace(plan, record, send_append, turn)
            finished.set()
            if replies_due:
                try:
                    await asyncio.wait_for(all_done.wait(), GRACE)
                except TimeoutError:
                    record.errors.append(f"{replies_due} replies missing")
        finally:
            task.cancel()
            with _suppress():
                await task


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, *rest: object) -> bool:
        return kind is not None and issubclass(kind, (asyncio.CancelledError, Exception))


async def run_openai(url: str, plan: Any, record: Record, ready: Any) -> None:
    from openai import AsyncOpenAI

    base, query = url.split("/realtime?", 1)
    extra = dict(p.split("=", 1) for p in query.split("&") if not p.startswith("model="))
    client = AsyncOpenAI(api_key="sk-benchmark", websocket_base_url=base)
    async with client.realtime.connect(model="gpt-realtime", extra_query=extra) as connection:
        await connection.recv()  # session.created
        await ready()
        replies_due = 0
        finished = asyncio.Event()
        all_done = asyncio.Event()

        async def reader() -> None:
            nonlocal replies_due
            async for event in connection:
                if event.type in ("response.done", "error"):
                    if event.type == "error":
                        record.errors.append(str(event.error.code))
                    else:
                        record.done += 1
                    if event.type == "response.done" or event.error.code == CONFLICT:
                        replies_due -= 1  # (a refused request gets no reply)
                    if replies_due == 0 and finished.is_set():
                        all_done.set()
                else:
                    record.delta(event.event_id)

        async def send_append(event_id: str) -> None:
            await connection.input_audio_buffer.append(audio=AUDIO, event_id=event_id)

        async def turn() -> None:
            nonlocal replies_due
            record.turns += 1
            replies_due += 1
            await connection.response.create()

        task = asyncio.create_task(reader())
        try:
            await _aio_pace(plan, record, send_append, turn)
            finished.set()
            if replies_due:
                try:
                    await asyncio.wait_for(all_done.wait(), GRACE)
                except TimeoutError:
                    record.errors.append(f"{replies_due} replies missing")
        finally:
            task.cancel()
            with _suppress():
                await task


async def asyncio_child(kind: str, urls: list[str], args: argparse.Namespace) -> dict[str, Any]:
    if kind == OPENAI:
        runner: Any = run_openai
    else:

        async def runner(url: str, plan: Any, record: Record, ready: Any) -> None:
            await run_bare_aio(url, plan, record, ready, fast=kind == BARE_AIO_ORJSON)

    record = Record()
    n = len(urls)
    limiter = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connected = 0
    all_connected = asyncio.Event()
    go = asyncio.Event()
    plans: list[Plan] = []

    async def call(i: int) -> None:
        held = True
        await limiter.acquire()

        async def ready() -> None:
            nonlocal connected, held
            limiter.release()
            held = False
            connected += 1
            if connected == n:
                all_connected.set()
            await go.wait()

        try:
            await runner(urls[i], _Late(plans, i), record, ready)
        except Exception as exc:
            record.errors.append(repr(exc)[:200])
            all_connected.set()
        finally:
            if held:
                limiter.release()

    gc.collect()
    rss_start = common.rss_bytes()
    tasks = [asyncio.create_task(call(i)) for i in range(n)]
    await all_connected.wait()
    gc.collect()
    rss_connected = common.rss_bytes()
    start_ns = time.monotonic_ns() + 100_000_000
    plans.extend(Plan(args, n, i, start_ns) for i in range(n))
    record.measure_from_ns = plans[0].measure_from_ns
    go.set()
    await asyncio.sleep((plans[0].measure_from_ns - time.monotonic_ns()) / 1e9)
    cpu = time.process_time()
    await asyncio.sleep((plans[0].end_ns - time.monotonic_ns()) / 1e9)
    cpu = time.process_time() - cpu
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return _child_result(record, n, connected, rss_start, rss_connected, cpu, args.window)


# ---------------------------------------------------------------- the parent


def call_urls(port: int, tag: str, n: int, args: argparse.Namespace) -> list[str]:
    return [common.url(port, tag=tag, mode="call", reply=args.reply_ticks) for _ in range(n)]


def run_cell(
    kind: str, port: int, call_port: int, n: int, tag: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One contender with ``n`` calls, in a client process of its own; the calls on the lean
    call server (``call_port``), the report from the server's control endpoint (``port``)."""
    command = [sys.executable, __file__, "--child", kind, "--port", str(call_port)]
    command += ["--calls", str(n)]
    command += ["--tag", tag, "--window", str(args.window)]
    command += ["--cycle-ticks", str(args.cycle_ticks), "--speech-ticks", str(args.speech_ticks)]
    command += ["--reply-ticks", str(args.reply_ticks)]
    server_cpu = trio.run(lambda: common.server_report(port, tag=""))["server_cpu_seconds"]
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=args.window + 240, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} client failed with {n} calls:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    server = trio.run(lambda: common.server_report(port, tag=tag))
    result["server"] = {
        k: server[k]
        for k in (
            "connections",
            "appends",
            "created",
            "done",
            "rejections",
            "max_active",
            "append_lateness_ms",
            "server_lag_ms",
        )
    }
    # (over the whole cell: connecting, warming up, measuring and the last replies)
    result["server"]["cpu_seconds"] = server["server_cpu_seconds"] - server_cpu
    inbound, outbound = result["delta_lateness_ms"], server["append_lateness_ms"]
    result["p50_ms"] = max(inbound["p50"], outbound["p50"])
    result["p99_ms"] = max(inbound["p99"], outbound["p99"])
    result["correct"] = (
        result["connected"] == n
        and result["error_count"] == 0
        and result["turns"] > 0
        and result["done"] == result["turns"] == server["created"] == server["done"]
        and server["appends"] == result["appends"]
        and server["rejections"] == 0
        and server["max_active"] <= 1
        and inbound["n"] > 0
        and server["append_lateness_ms"]["n"] > 0
    )
    result["on_time"] = result["p99_ms"] < LATENESS_LIMIT_MS
    result["within_cpu"] = result["cpu_fraction"] < CPU_LIMIT
    result["passed"] = result["correct"] and result["on_time"] and result["within_cpu"]
    result["cpu_ms_per_call_second"] = result["cpu_seconds"] * 1000 / (n * args.window)
    return result


def capacity(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Calls per core from one contender's cells of one run (ascending N)."""
    passed = [c for c in cells if c["passed"]]
    failed = [c for c in cells if not c["passed"]]
    # What the CPU alone allows, from every cell whose calls were on time: on a shared
    # machine, lateness also counts the moments another process held the core.
    by_cpu = [c["calls"] * CPU_LIMIT / max(c["cpu_fraction"], 1e-9) for c in passed]
    if not passed:
        return {"max_passing": 0, "calls_per_core": 0.0, "by_cpu": float("nan"), "cell": None}
    best = passed[-1]
    estimate = best["calls"] * CPU_LIMIT / max(best["cpu_fraction"], 1e-9)
    estimate = max(best["calls"], estimate)
    if failed:
        estimate = min(estimate, failed[0]["calls"])
    return {
        "max_passing": best["calls"],
        "calls_per_core": estimate,
        "by_cpu": statistics.median(by_cpu),
        "cell": best,
    }


def memory_per_call(cells: list[dict[str, Any]]) -> float | None:
    """KiB per call: the growth of the resident set between the two largest N that connected
    every call (each cell is a fresh process, so what every process loads anyway cancels
    out); with only one such cell, its growth over its own start / N."""
    full = sorted((c for c in cells if c["connected"] == c["calls"]), key=lambda c: c["calls"])
    if len(full) >= 2:
        a, b = full[-2], full[-1]
        if b["calls"] > a["calls"]:
            return float(b["rss_connected_kib"] - a["rss_connected_kib"]) / (
                b["calls"] - a["calls"]
            )
    return float(full[-1]["memory_per_call_kib"]) if full else None


def bench(port: int, call_port: int, args: argparse.Namespace, kinds: list[str]) -> dict[str, Any]:
    runs: list[dict[str, list[dict[str, Any]]]] = []
    for r in range(args.runs):
        cells: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        alive = list(kinds)
        for step, n in enumerate(args.grid):
            shift = (step + r) % len(kinds)
            order = [k for k in kinds[shift:] + kinds[:shift] if k in alive]
            for kind in order:
                tag = f"density-{r}-{CONTENDERS.index(kind)}-{n}"
                cell = run_cell(kind, port, call_port, n, tag, args)
                cells[kind].append(cell)
                inbound = cell["delta_lateness_ms"]
                outbound = cell["server"]["append_lateness_ms"]
                print(
                    f"round {r + 1}/{args.runs} N={n} {kind}: "
                    f"{'pass' if cell['passed'] else 'FAIL'}, lateness p99 in "
                    f"{inbound['p99']:.1f} ms / out {outbound['p99']:.1f} ms, CPU "
                    f"{cell['cpu_fraction']:.0%}, {cell['memory_per_call_kib']:.0f} KiB/call, "
                    f"replies {cell['done']}/{cell['turns']}"
                    + ("" if cell["correct"] else f" (INCORRECT: {cell['errors']})"),
                    flush=True,
                )
                if not cell["passed"]:
                    alive.remove(kind)
        runs.append(cells)
    results: dict[str, Any] = {}
    for kind in kinds:
        per_run = [capacity(cells[kind]) for cells in runs]
        all_cells = [c for cells in runs for c in cells[kind]]
        best_cells = [p["cell"] for p in per_run if p["cell"] is not None]
        memory = [m for cells in runs if (m := memory_per_call(cells[kind])) is not None]
        results[kind] = {
            "calls_per_core": statistics.median(p["calls_per_core"] for p in per_run),
            "calls_per_core_runs": [p["calls_per_core"] for p in per_run],
            "max_passing": statistics.median(p["max_passing"] for p in per_run),
            "calls_per_core_by_cpu": _median(
                p["by_cpu"] for p in per_run if p["by_cpu"] == p["by_cpu"]
            ),
            "p50_ms": _median(c["p50_ms"] for c in best_cells),
            "p99_ms": _median(c["p99_ms"] for c in best_cells),
            "cpu_ms_per_call_second": _median(c["cpu_ms_per_call_second"] for c in best_cells),
            "memory_per_call_kib": _median(memory),
            "all_correct": all(c["correct"] for c in all_cells),
            "otel_us_per_response": _median(
                c["otel_us_per_response"] for c in all_cells if c["otel_us_per_response"]
            ),
            "grid": [
                {
                    "calls": c["calls"],
                    "run": r,
                    "passed": c["passed"],
                    "correct": c["correct"],
                    "p50_ms": c["p50_ms"],
                    "p99_ms": c["p99_ms"],
                    "cpu_fraction": c["cpu_fraction"],
                    "cpu_ms_per_call_second": c["cpu_ms_per_call_second"],
                    "memory_per_call_kib": c["memory_per_call_kib"],
                    "appends": c["appends"],
                    "turns": c["turns"],
                    "done": c["done"],
                    "server": c["server"],
                    "errors": c["errors"],
                }
                for r, cells in enumerate(runs)
                for c in cells[kind]
            ],
        }
    return results


def _median(values: Any) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    for kind, r in results.items():
        wrong = [c for c in r["grid"] if not c["correct"]]
        for c in wrong:
            print(
                f"{kind}, N={c['calls']}: replies {c['done']}/{c['turns']}, errors {c['errors']}"
                " (a loop without a gate sends its next response.create while a late reply"
                " still holds the conversation)"
            )
    base = results.get(BARE_TWS, {}).get("calls_per_core")
    base_cpu = results.get(BARE_TWS, {}).get("calls_per_core_by_cpu")
    rows = []
    for kind, r in results.items():
        rows.append(
            [
                kind,
                r["calls_per_core"],
                f"{common.ratio(r['calls_per_core'], base):.2f}x" if base else "-",
                r["calls_per_core_by_cpu"],
                f"{common.ratio(r['calls_per_core_by_cpu'], base_cpu):.2f}x" if base_cpu else "-",
                r["p50_ms"],
                r["p99_ms"],
                r["cpu_ms_per_call_second"],
                r["memory_per_call_kib"],
            ]
        )
    return common.print_table(
        f"Density: live calls per core (p99 lateness < {LATENESS_LIMIT_MS:.0f} ms, client < "
        f"{CPU_LIMIT:.0%} of a core), grid N = {','.join(map(str, args.grid))}, "
        f"{args.window:g} s measured per cell, {args.runs} run(s), medians",
        [
            "client",
            "calls/core",
            "vs bare tws",
            "calls/core by CPU",
            "(CPU) vs bare tws",
            "p50 ms",
            "p99 ms",
            "CPU ms/call-s",
            "KiB/call",
        ],
        rows,
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny grid (the test suite's)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results here")
    parser.add_argument("--grid", help="the numbers of calls, comma-separated")
    parser.add_argument("--runs", type=int, help="repetitions of the grid")
    parser.add_argument("--window", type=float, help="seconds measured per cell")
    parser.add_argument("--only", help="contenders to run, comma-separated")
    parser.add_argument("--cycle-ticks", type=int, default=75, help="40 ms ticks per turn")
    parser.add_argument("--speech-ticks", type=int, default=50, help="ticks of speech per turn")
    parser.add_argument("--reply-ticks", type=int, default=50, help="ticks of each reply")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        # One-second turns and short replies, so that a quick cell sees whole turns.
        args.cycle_ticks, args.speech_ticks, args.reply_ticks = 25, 12, 8
    args.grid = [
        int(x)
        for x in (args.grid or ("2" if args.quick else "25,50,75,100,150,200,300,400")).split(",")
    ]
    args.runs = args.runs or 1
    args.window = args.window or (1.5 if args.quick else 6.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        common.raise_fd_limit()
        urls = call_urls(args.port, args.tag, args.calls, args)
        if args.child in ASYNCIO:
            result = asyncio.run(asyncio_child(args.child, urls, args))
        else:
            result = trio.run(trio_child, args.child, urls, args)
        print(json.dumps(result), flush=True)
        return 0
    started = time.monotonic()
    wanted = args.only.split(",") if args.only else list(CONTENDERS)
    kinds = list(common.available({k: k for k in CONTENDERS if k in wanted}, NEEDS))
    with common.bench_server_ports() as (port, call_port):
        results = bench(port, call_port, args, kinds)
    table = report(results, args)
    goals: dict[str, bool] = {}
    tws = results.get(BARE_TWS, {}).get("calls_per_core")
    if tws:
        if REALTIME_FAST in results:
            goals["websockets_calls_per_core_1_2x_bare_trio_websocket"] = (
                results[REALTIME_FAST]["calls_per_core"] >= 1.2 * tws
            )
        if REALTIME in results:
            goals["default_calls_per_core_1_0x_bare_trio_websocket"] = (
                results[REALTIME]["calls_per_core"] >= tws
            )
    if REALTIME_FAST in results:
        goals["websockets_memory_per_call_under_100_kib"] = (
            results[REALTIME_FAST]["memory_per_call_kib"] <= 100
        )
        if REALTIME_OTEL in results:
            # Recording costs so little that the noise of the grid hides it: what it costs
            # per response, measured in place, over what a call costs per response.
            fast, otel = results[REALTIME_FAST], results[REALTIME_OTEL]
            cycle_s = args.cycle_ticks * TICK_NS / 1e9
            per_response_us = fast["cpu_ms_per_call_second"] * 1000 * cycle_s
            otel["otel_share_of_call_cpu"] = common.ratio(
                otel["otel_us_per_response"], per_response_us
            )
            otel["calls_per_core_by_cpu_vs_without"] = common.ratio(
                otel["calls_per_core_by_cpu"], fast["calls_per_core_by_cpu"]
            )
            goals["otel_at_most_2_percent_fewer_calls_per_core"] = (
                otel["otel_share_of_call_cpu"] <= 0.02
            )
            print(
                f"OpenTelemetry: {otel['otel_us_per_response']:.0f} us per response, "
                f"{otel['otel_share_of_call_cpu']:.2%} of a call's CPU; calls per core by CPU "
                f"{otel['calls_per_core_by_cpu_vs_without']:.2f}x without it (noise: +-10%)",
                flush=True,
            )
    if not args.quick:
        print("goals:", ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in goals.items()))
    common.write_json(
        args.json,
        {
            "benchmark": "density",
            "quick": args.quick,
            "params": {
                "grid": args.grid,
                "runs": args.runs,
                "window_seconds": args.window,
                "cycle_ticks": args.cycle_ticks,
                "speech_ticks": args.speech_ticks,
                "reply_ticks": args.reply_ticks,
                "tick_ms": TICK_NS / 1e6,
                "lateness_limit_ms": LATENESS_LIMIT_MS,
                "cpu_limit": CPU_LIMIT,
            },
            "results": results,
            "goals": goals,
            "table": table,
            "seconds": time.monotonic() - started,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
