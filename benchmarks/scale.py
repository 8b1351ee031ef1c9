"""Scale: many concurrent sessions in one process against the server in another.

Each round runs, in a fresh client process each (so memory is measured from a clean start):

- ``bare trio-websocket``: N bare trio-websocket connections (64 KiB receive buffer), each
  sending its R requests one after the other (create, read until done, next): the baseline;
- ``trio-realtime``: N sessions (``open_session``), each queuing its R requests at once, over
  the default transport; ``trio-realtime (websockets)``: the same over the fast one
  (``websockets`` and ``orjson``, the ``[fast]`` extra).

All connections are opened first (memory per connection = growth of the resident set / N),
then every connection runs its requests at the same moment. Reported: connections and
responses completed, the most responses the server ever saw active at once on one
connection (must be 1), its rejections, handoff p50/p99 over all connections (server side),
client CPU time per response, and memory per connection.

    python benchmarks/scale.py [--quick] [--json PATH] [--sessions N]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import trio

import _common as common
from trio_realtime import SessionConfig, open_session

BARE, REALTIME, FAST = "bare trio-websocket", "trio-realtime", "trio-realtime (websockets)"
KINDS = (BARE, REALTIME, FAST)
CONNECT_CONCURRENCY = 50


async def child(kind: str, port: int, sessions: int, requests: int, prefix: str) -> dict[str, Any]:
    gc.collect()
    rss_start = common.rss_bytes()
    opened = 0
    all_open = trio.Event()
    go = trio.Event()
    finish = trio.Event()
    finished = 0
    all_finished = trio.Event()
    completed = 0
    errors: list[str] = []
    limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)

    def note_open() -> None:
        nonlocal opened
        opened += 1
        if opened == sessions:
            all_open.set()

    def note_finished() -> None:
        nonlocal finished
        finished += 1
        if finished == sessions:
            all_finished.set()

    async def bare(i: int) -> None:
        nonlocal completed
        path = common.resource_of(port, tag=f"{prefix}{i}")
        async with limiter:
            cm = common.open_raw_ws(port, path)
            ws = await cm.__aenter__()
        try:
            json.loads(await ws.get_message())
            note_open()
            await go.wait()
            for j in range(requests):
                create = {"type": "response.create", "response": {"metadata": {"i": str(j)}}}
                await ws.send_message(json.dumps(create))
                while json.loads(await ws.get_message())["type"] != "response.done":
                    pass
                completed += 1
            note_finished()
            await finish.wait()
        finally:
            await cm.__aexit__(None, None, None)

    async def realtime(i: int) -> None:
        nonlocal completed
        url = common.url(port, tag=f"{prefix}{i}")
        fast = kind == FAST
        config = SessionConfig(
            connect_timeout=60, transport="websockets" if fast else "trio-websocket"
        )
        async with limiter:
            cm = open_session(url, config=config)
            session = await cm.__aenter__()
        try:
            note_open()
            await go.wait()
            tickets = [
                session.request_response({"metadata": {"i": str(j)}}) for j in range(requests)
            ]
            for ticket in tickets:
                result = await ticket.wait_done()
                completed += result.status == "completed"
            note_finished()
            await finish.wait()
        finally:
            await cm.__aexit__(None, None, None)

    async def guarded(i: int) -> None:
        try:
            await (bare(i) if kind == BARE else realtime(i))
        except Exception as exc:
            errors.append(repr(exc))
            note_finished()
            if len(errors) == 1:
                all_open.set()  # do not wait for a connection that failed

    started = time.monotonic()
    with trio.fail_after(300), common.json_parser(fast=kind == FAST):
        async with trio.open_nursery() as nursery:
            for i in range(sessions):
                nursery.start_soon(guarded, i)
            await all_open.wait()
            open_seconds = time.monotonic() - started
            gc.collect()
            rss_open = common.rss_bytes()
            cpu = time.process_time()
            wall = time.monotonic()
            go.set()
            await all_finished.wait()
            cpu = time.process_time() - cpu
            wall = time.monotonic() - wall
            finish.set()
    return {
        "kind": kind,
        "sessions": sessions,
        "opened": opened,
        "requests": sessions * requests,
        "completed": completed,
        "errors": errors[:5],
        "error_count": len(errors),
        "open_seconds": open_seconds,
        "request_seconds": wall,
        "cpu_seconds": cpu,
        "cpu_us_per_response": cpu / max(completed, 1) * 1e6,
        "memory_per_connection_kib": (rss_open - rss_start) / sessions / 1024,
    }


def run_child(kind: str, port: int, sessions: int, requests: int, prefix: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--port",
            str(port),
            "--sessions",
            str(sessions),
            "--requests",
            str(requests),
            "--prefix",
            prefix,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} client failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--child")
    parser.add_argument("--port", type=int)
    parser.add_argument("--sessions", type=int)
    parser.add_argument("--requests", type=int)
    parser.add_argument("--prefix")
    known, rest = parser.parse_known_args(argv)
    if known.child:
        common.raise_fd_limit()
        result = trio.run(
            child, known.child, known.port, known.sessions, known.requests, known.prefix
        )
        print(json.dumps(result), flush=True)
        return 0
    args = common.parse_args(__doc__.splitlines()[0], rest)
    sessions = known.sessions or (20 if args.quick else 1000)
    requests = known.requests or (3 if args.quick else 5)
    rounds = 1 if args.quick else 2
    limit = common.raise_fd_limit()
    if limit < sessions * 2 + 100:
        raise SystemExit(f"need {sessions * 2 + 100} file descriptors, the limit is {limit}")
    started = time.monotonic()
    kinds = tuple(common.available(dict.fromkeys(KINDS), {FAST: common.FAST}))
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    handoffs: dict[str, list[float]] = {kind: [] for kind in kinds}
    with common.bench_server() as port:
        for r in range(rounds):
            order = kinds if r % 2 == 0 else tuple(reversed(kinds))
            for kind in order:
                prefix = f"scale-{KINDS.index(kind)}-{r}-"
                result = run_child(kind, port, sessions, requests, prefix)
                server = trio.run(lambda prefix=prefix: common.server_report(port, prefix=prefix))
                result["server_connections"] = server["connections"]
                result["server_max_active"] = server["max_active"]
                result["server_rejections"] = server["rejections"]
                runs[kind].append(result)
                handoffs[kind].extend(ns / 1000 for ns in server["handoffs_ns"])
                print(
                    f"round {r + 1}/{rounds} {kind}: {result['completed']}/{result['requests']} "
                    f"responses, {result['cpu_us_per_response']:.0f} us CPU each, "
                    f"{result['memory_per_connection_kib']:.0f} KiB per connection",
                    flush=True,
                )
    results: dict[str, Any] = {}
    for kind in kinds:
        rs = runs[kind]
        h = common.summarize(handoffs[kind])
        results[kind] = {
            "sessions": sessions,
            "requests_per_session": requests,
            "all_completed": all(
                x["completed"] == x["requests"] and x["error_count"] == 0 for x in rs
            ),
            "completed": sum(x["completed"] for x in rs),
            "requests": sum(x["requests"] for x in rs),
            "errors": [e for x in rs for e in x["errors"]],
            "server_max_active": max(x["server_max_active"] for x in rs),
            "server_rejections": sum(x["server_rejections"] for x in rs),
            "handoff_us": h,
            "cpu_us_per_response": statistics.median(x["cpu_us_per_response"] for x in rs),
            "memory_per_connection_kib": statistics.median(
                x["memory_per_connection_kib"] for x in rs
            ),
            "runs": rs,
        }
    base = results[BARE]

    def vs_base(r: dict[str, Any]) -> dict[str, float]:
        return {
            "cpu_per_response": common.ratio(r["cpu_us_per_response"], base["cpu_us_per_response"]),
            "memory_per_connection": common.ratio(
                r["memory_per_connection_kib"], base["memory_per_connection_kib"]
            ),
            "handoff_p50": common.ratio(r["handoff_us"]["p50"], base["handoff_us"]["p50"]),
            "handoff_p99": common.ratio(r["handoff_us"]["p99"], base["handoff_us"]["p99"]),
        }

    ratios = {kind: vs_base(results[kind]) for kind in kinds if kind != BARE}
    rows = [
        [
            kind,
            f"{r['completed']:,}/{r['requests']:,}",
            r["server_max_active"],
            r["server_rejections"],
            r["handoff_us"]["p50"],
            r["handoff_us"]["p99"],
            r["cpu_us_per_response"],
            r["memory_per_connection_kib"],
        ]
        for kind, r in results.items()
    ]
    for kind, r in ratios.items():
        rows.append(
            [
                f"ratio: {kind}",
                "",
                "",
                "",
                f"{r['handoff_p50']:.2f}x",
                f"{r['handoff_p99']:.2f}x",
                f"{r['cpu_per_response']:.2f}x",
                f"{r['memory_per_connection']:.2f}x",
            ]
        )
    table = common.print_table(
        f"Scale: {sessions:,} concurrent connections in one process, {requests} queued "
        f"requests each, server in another process ({rounds} rounds, medians)",
        [
            "client",
            "responses",
            "max active",
            "rejections",
            "handoff p50 us",
            "handoff p99 us",
            "CPU us/response",
            "KiB/connection",
        ],
        rows,
    )
    common.write_json(
        args.json,
        {
            "benchmark": "scale",
            "quick": args.quick,
            "params": {"sessions": sessions, "requests": requests, "rounds": rounds},
            "results": results,
            "ratios": ratios,
            "table": table,
            "seconds": time.monotonic() - started,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
