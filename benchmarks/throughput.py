"""Event throughput: server events per second delivered to the application, for audio-delta
sized events (8,000 base64 characters, 6,000 bytes of PCM16) and for small ones (transcript
deltas of about 150 bytes).

The server (its own process) streams ``count`` deltas between ``response.created`` and
``response.done``, framed in advance, so its sending is not what is measured. Each client
counts the events from its ``response.created`` to its ``response.done``. Contenders, on the
same server, in interleaved rounds:

- ``trio-websocket`` raw: ``get_message()`` only, 64 KiB receive buffer (the reference);
- ``trio-websocket`` + ``json.loads``, 64 KiB and 4 KiB (trio-websocket's default) buffers;
- ``trio-realtime``: a ``session.subscribe()`` subscriber (events parsed and routed), over
  each transport: ``trio-websocket`` with the standard library's JSON parser (the core
  install), and ``websockets`` with ``orjson`` (the ``[fast]`` extra);
- ``websockets`` (its own Trio implementation): a raw ``recv()`` loop (the fast transport's
  reference), and with ``json.loads``;
- ``openai``: the ``openai`` package's ``AsyncRealtimeConnection`` (asyncio, typed events),
  in a process of its own (``_openai_stream.py``).

    python benchmarks/throughput.py [--quick] [--json PATH]
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import _common as common
from trio_realtime import SessionConfig, open_session

CREATE = json.dumps({"type": "response.create", "response": {"metadata": {"i": "0"}}})
Result = tuple[int, float]  # events, seconds


def _query(tag: str, count: int, size: int) -> dict[str, Any]:
    return {"tag": tag, "mode": "stream", "count": count, "size": size}


async def _raw(port: int, query: dict[str, Any], *, buffer: int, parse: bool) -> Result:
    path = common.resource_of(port, **query)
    async with common.open_raw_ws(port, path, receive_buffer_size=buffer) as ws:
        await ws.get_message()  # session.created
        await ws.send_message(CREATE)
        await ws.get_message()  # response.created
        started = time.perf_counter()
        events = 0
        if parse:
            while json.loads(await ws.get_message())["type"] != "response.done":
                events += 1
        else:
            while b"response.done" not in (await ws.get_message())[:40].encode():
                events += 1
        return events, time.perf_counter() - started


async def run_raw(port: int, query: dict[str, Any]) -> Result:
    return await _raw(port, query, buffer=common.RECEIVE_BUFFER, parse=False)


async def run_raw_json(port: int, query: dict[str, Any]) -> Result:
    return await _raw(port, query, buffer=common.RECEIVE_BUFFER, parse=True)


async def run_raw_json_4k(port: int, query: dict[str, Any]) -> Result:
    return await _raw(port, query, buffer=common.DEFAULT_RECEIVE_BUFFER, parse=True)


async def _trio_realtime(port: int, query: dict[str, Any], *, transport: str, fast: bool) -> Result:
    config = SessionConfig(transport=transport)  # type: ignore[arg-type]
    with common.json_parser(fast=fast):
        async with open_session(common.url(port, **query), config=config) as session:
            async with session.subscribe() as stream:
                session.request_response({"metadata": {"i": "0"}})
                events = 0
                started = 0.0
                async for event in stream:
                    kind = event["type"]
                    if kind == "response.created":
                        started = time.perf_counter()
                    elif kind == "response.done":
                        return events, time.perf_counter() - started
                    elif started:
                        events += 1
    raise RuntimeError("the stream ended before response.done")


async def run_trio_realtime(port: int, query: dict[str, Any]) -> Result:
    return await _trio_realtime(port, query, transport="trio-websocket", fast=False)


async def run_trio_realtime_fast(port: int, query: dict[str, Any]) -> Result:
    return await _trio_realtime(port, query, transport="websockets", fast=True)


async def _websockets(port: int, query: dict[str, Any], *, parse: bool) -> Result:
    from websockets.trio.client import connect

    async with connect(
        common.url(port, **query),
        compression=None,
        proxy=None,
        ping_interval=None,
        max_size=common.MAX_MESSAGE_SIZE,
    ) as ws:
        await ws.recv()
        await ws.send(CREATE)
        await ws.recv()
        started = time.perf_counter()
        events = 0
        if parse:
            while json.loads(await ws.recv())["type"] != "response.done":
                events += 1
        else:
            while "response.done" not in (await ws.recv())[:40]:
                events += 1
        return events, time.perf_counter() - started


async def run_websockets(port: int, query: dict[str, Any]) -> Result:
    return await _websockets(port, query, parse=False)


async def run_websockets_json(port: int, query: dict[str, Any]) -> Result:
    return await _websockets(port, query, parse=True)


async def run_openai(port: int, query: dict[str, Any]) -> Result:
    q = urllib.parse.urlencode(query)
    script = str(common.HERE / "_openai_stream.py")
    process = await trio.run_process(
        [sys.executable, script, str(port), q], capture_stdout=True, check=True
    )
    result = json.loads(process.stdout)
    return result["events"], result["seconds"]


CONTENDERS: dict[str, Callable[[int, dict[str, Any]], Awaitable[Result]]] = {
    "trio-websocket raw (64 KiB)": run_raw,
    "trio-websocket + json (64 KiB)": run_raw_json,
    "trio-websocket + json (4 KiB)": run_raw_json_4k,
    "trio-realtime subscriber (trio-websocket)": run_trio_realtime,
    "websockets raw": run_websockets,
    "websockets + json": run_websockets_json,
    "trio-realtime subscriber (websockets + orjson)": run_trio_realtime_fast,
    "openai AsyncRealtimeConnection": run_openai,
}
REFERENCE = "trio-websocket raw (64 KiB)"
REFERENCE_JSON = "trio-websocket + json (64 KiB)"
REFERENCE_FAST = "websockets raw"
DEFAULT = "trio-realtime subscriber (trio-websocket)"
FAST = "trio-realtime subscriber (websockets + orjson)"
OPENAI = "openai AsyncRealtimeConnection"
#: What each contender needs beyond the core install (openai's connection runs on websockets).
NEEDS = {
    "websockets raw": ("websockets",),
    "websockets + json": ("websockets",),
    FAST: common.FAST,
    OPENAI: ("openai", "websockets"),
}


async def bench(port: int, workloads: dict[str, tuple[int, int]], rounds: int) -> dict[str, Any]:
    contenders = common.available(CONTENDERS, NEEDS)
    names = list(contenders)
    results: dict[str, Any] = {}
    for w, (workload, (count, size)) in enumerate(workloads.items()):
        rates: dict[str, list[float]] = {name: [] for name in names}
        round_ratios: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            this_round: dict[str, float] = {}
            for name in order:
                query = _query(f"w{w}-c{names.index(name)}-r{r}", count, size)
                with trio.fail_after(300):
                    events, seconds = await contenders[name](port, query)
                if events != count:
                    raise RuntimeError(f"{name}: {events} events of {count}")
                this_round[name] = events / seconds
                rates[name].append(events / seconds)
            for name in names:
                round_ratios[name].append(common.ratio(this_round[name], this_round[REFERENCE]))
            print(
                f"{workload} round {r + 1}/{rounds}: "
                + ", ".join(f"{k} {v:,.0f}/s" for k, v in this_round.items()),
                flush=True,
            )
        ref = common.percentile(sorted(rates[REFERENCE]), 50)
        ref_json = common.percentile(sorted(rates[REFERENCE_JSON]), 50)
        ref_fast = (
            common.percentile(sorted(rates[REFERENCE_FAST]), 50)
            if REFERENCE_FAST in rates
            else None
        )
        results[workload] = {
            "count": count,
            "size": size,
            "unit": "events per second",
            "contenders": {
                name: {
                    "median_rate": common.percentile(sorted(values), 50),
                    "rates": values,
                    "vs_raw": common.ratio(common.percentile(sorted(values), 50), ref),
                    "vs_raw_json": common.ratio(common.percentile(sorted(values), 50), ref_json),
                    "vs_websockets_raw": (
                        common.ratio(common.percentile(sorted(values), 50), ref_fast)
                        if ref_fast is not None
                        else None
                    ),
                    "median_round_vs_raw": common.percentile(sorted(round_ratios[name]), 50),
                }
                for name, values in rates.items()
            },
        }
    return results


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    if args.quick:
        workloads, rounds = {"audio 8 KB": (200, 8000), "small": (1000, 0)}, 1
    else:
        workloads, rounds = {"audio 8 KB": (3000, 8000), "small": (30000, 0)}, 5
    started = time.monotonic()
    with common.bench_server() as port:
        results = trio.run(lambda: bench(port, workloads, rounds))
    tables = {}
    for workload, data in results.items():
        rows = [
            [
                name,
                c["median_rate"],
                f"{c['vs_raw']:.2f}x",
                f"{c['vs_raw_json']:.2f}x",
                "-" if c["vs_websockets_raw"] is None else f"{c['vs_websockets_raw']:.2f}x",
                f"{c['median_round_vs_raw']:.2f}x",
            ]
            for name, c in data["contenders"].items()
        ]
        tables[workload] = common.print_table(
            f"Event throughput, {workload} events ({data['count']:,} per stream, "
            f"median of {rounds} interleaved rounds)",
            [
                "client",
                "events/s",
                "vs trio-websocket raw",
                "vs trio-websocket+json",
                "vs websockets raw",
                "round median vs trio-websocket raw",
            ],
            rows,
        )
    goals = {}
    for workload, data in results.items():
        c = data["contenders"]
        fast_goal = 1.0 if workload.startswith("audio") else 1.2
        goals[f"{workload}: default transport >= 0.8x trio-websocket raw"] = (
            c[DEFAULT]["vs_raw"] >= 0.8
        )
        if FAST in c:  # (skipped without the [fast] extra)
            goals[f"{workload}: fast transport >= {fast_goal}x trio-websocket raw"] = (
                c[FAST]["vs_raw"] >= fast_goal
            )
            goals[f"{workload}: fast transport >= 0.8x websockets raw"] = (
                c[FAST]["vs_websockets_raw"] >= 0.8
            )
        if OPENAI in c:  # (skipped without the [bench] extra)
            goals[f"{workload}: trio-realtime faster than openai"] = (
                c[DEFAULT]["median_rate"] > c[OPENAI]["median_rate"]
            )
    print("goals:", ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in goals.items()))
    common.write_json(
        args.json,
        {
            "benchmark": "throughput",
            "quick": args.quick,
            "params": {"workloads": workloads, "rounds": rounds},
            "results": results,
            "goals": goals,
            "tables": tables,
            "seconds": time.monotonic() - started,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
