"""Collisions: the server starts responses on its own at random (as voice activity detection
does) while the application requests responses at random times.

Contenders, on the same server process and the same random schedules, in interleaved rounds:

- ``naive``: sends every ``response.create`` at once (what the ``openai`` package's realtime
  connection does: it has no guard);
- ``seed``: the hand-written fix (busy flag, FIFO list, 100 ms delay); it does not retry;
- ``trio-realtime``: ``request_response`` for each request.

Counts the ``conversation_already_has_active_response`` rejections the application sees and
the requests it loses (never completed), and what the server saw (its rejections, the most
responses active at once).

    python benchmarks/collisions.py [--quick] [--json PATH]
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import _common as common
from trio_realtime import ResponseRejected, SessionConfig, open_session


class Params:
    def __init__(self, quick: bool) -> None:
        self.rounds = 1 if quick else 3
        self.requests = 12 if quick else 60
        self.interval = 0.02 if quick else 0.1  # mean time between requests
        self.duration = 0.01 if quick else 0.03  # every response lasts this long
        self.vad = 0.04 if quick else 0.25  # mean time between server-started responses
        self.drain = 3.0 if quick else 10.0  # after the last request, time to finish


def schedule(params: Params, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.expovariate(1 / params.interval) for _ in range(params.requests)]


def server_url(port: int, tag: str, params: Params, seed: int) -> str:
    return common.resource_of(
        port, tag=tag, mode="collide", duration=params.duration, vad=params.vad, seed=seed
    )


class RawCounter:
    """Reads events: completions of our requests (by metadata) and rejections."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.completed: set[str] = set()
        self.rejections = 0
        self.changed = trio.Event()

    async def reader(self) -> None:
        while True:
            event = json.loads(await self.ws.get_message())
            if event["type"] == "response.done":
                metadata = event["response"].get("metadata") or {}
                if "i" in metadata:
                    self.completed.add(metadata["i"])
            elif event["type"] == "error" and event["error"].get("code") == common.CONFLICT:
                self.rejections += 1
            self.changed.set()
            self.changed = trio.Event()


async def run_naive(port: int, tag: str, params: Params, seed: int) -> dict[str, int]:
    async with common.open_raw_ws(port, server_url(port, tag, params, seed)) as ws:
        json.loads(await ws.get_message())
        counter = RawCounter(ws)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(counter.reader)
            for i, pause in enumerate(schedule(params, seed)):
                await trio.sleep(pause)
                event = {
                    "type": "response.create",
                    "event_id": f"evt_{i}",
                    "response": {"metadata": {"i": str(i)}},
                }
                await ws.send_message(json.dumps(event))
            with trio.move_on_after(params.drain):
                while len(counter.completed) + counter.rejections < params.requests:
                    await counter.changed.wait()
            nursery.cancel_scope.cancel()
    return {"rejections_seen": counter.rejections, "completed": len(counter.completed)}


async def run_seed(port: int, tag: str, params: Params, seed: int) -> dict[str, int]:
    async with common.open_raw_ws(port, server_url(port, tag, params, seed)) as ws:
        json.loads(await ws.get_message())
        async with trio.open_nursery() as nursery:
            client = common.SeedClient(ws, nursery)
            nursery.start_soon(client.reader)
            for i, pause in enumerate(schedule(params, seed)):
                await trio.sleep(pause)
                await client.request({"metadata": {"i": str(i)}})
            with trio.move_on_after(params.drain):
                while len(client.completed) + client.rejections < params.requests:
                    await client.changed.wait()
            nursery.cancel_scope.cancel()
    return {"rejections_seen": client.rejections, "completed": len(client.completed)}


async def run_trio_realtime(port: int, tag: str, params: Params, seed: int) -> dict[str, int]:
    url = f"ws://127.0.0.1:{port}{server_url(port, tag, params, seed)}"
    rejected = completed = 0
    async with open_session(url, config=SessionConfig()) as session:
        tickets = []
        for i, pause in enumerate(schedule(params, seed)):
            await trio.sleep(pause)
            tickets.append(session.request_response({"metadata": {"i": str(i)}}))
        with trio.move_on_after(params.drain):
            for ticket in tickets:
                try:
                    result = await ticket.wait_done()
                except ResponseRejected:
                    rejected += 1
                else:
                    completed += result.status == "completed"
        absorbed = session.statistics().conflicts_absorbed
    return {"rejections_seen": rejected, "completed": completed, "conflicts_absorbed": absorbed}


CONTENDERS: dict[str, Callable[[int, str, Params, int], Awaitable[dict[str, int]]]] = {
    "naive": run_naive,
    "seed": run_seed,
    "trio-realtime": run_trio_realtime,
}


async def bench(port: int, params: Params, seed: int) -> dict[str, Any]:
    names = list(CONTENDERS)
    totals: dict[str, dict[str, int]] = {
        name: {
            "requests": 0,
            "completed": 0,
            "lost": 0,
            "rejections_seen": 0,
            "conflicts_absorbed": 0,
            "server_rejections": 0,
            "server_started": 0,
            "server_max_active": 0,
        }
        for name in names
    }
    for r in range(params.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        round_seed = seed * 1000 + r
        for name in order:
            tag = f"{name}-{r}"
            with trio.fail_after(params.requests * params.interval * 10 + params.drain + 30):
                outcome = await CONTENDERS[name](port, tag, params, round_seed)
            server = await common.server_report(port, tag=tag)
            t = totals[name]
            t["requests"] += params.requests
            t["completed"] += outcome["completed"]
            t["lost"] += params.requests - outcome["completed"]
            t["rejections_seen"] += outcome["rejections_seen"]
            t["conflicts_absorbed"] += outcome.get("conflicts_absorbed", 0)
            t["server_rejections"] += server["rejections"]
            t["server_started"] += server["server_started"]
            t["server_max_active"] = max(t["server_max_active"], server["max_active"])
        print(
            f"round {r + 1}/{params.rounds}: "
            + ", ".join(f"{k} lost {v['lost']}" for k, v in totals.items()),
            flush=True,
        )
    return {"contenders": totals}


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    params = Params(args.quick)
    started = time.monotonic()
    with common.bench_server() as port:
        results = trio.run(lambda: bench(port, params, args.seed))
    rows = [
        [
            name,
            t["requests"],
            t["rejections_seen"],
            t["lost"],
            t["conflicts_absorbed"],
            t["server_rejections"],
            t["server_started"],
            t["server_max_active"],
        ]
        for name, t in results["contenders"].items()
    ]
    table = common.print_table(
        f"Collisions: {params.rounds} rounds x {params.requests} requests (~1 per "
        f"{params.interval * 1000:.0f} ms), server-started responses ~1 per "
        f"{params.vad * 1000:.0f} ms, every response {params.duration * 1000:.0f} ms",
        [
            "client",
            "requests",
            "rejections seen by app",
            "requests lost",
            "conflicts absorbed",
            "server rejections",
            "server-started",
            "max active",
        ],
        rows,
    )
    common.write_json(
        args.json,
        {
            "benchmark": "collisions",
            "quick": args.quick,
            "params": vars(params),
            "results": results,
            "table": table,
            "seconds": time.monotonic() - started,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
