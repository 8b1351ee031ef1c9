"""Handoff latency: from the server writing ``response.done`` to it reading the next
``response.create``, for back-to-back queued responses over a loopback WebSocket.

Contenders, on the same server process, in interleaved rounds (the order rotates each round):

- ``floor``: a minimal hand-written trio-websocket loop: send a create, read until done, send
  the next (same 64 KiB receive buffer as trio-realtime); the reference;
- ``websockets floor``: the same loop on ``websockets``' Trio implementation;
- ``seed``: the hand-written fix this project grew from, in Trio: a busy flag, a FIFO list,
  and a 100 ms sleep before each queued response (fewer responses, it is slow by design);
- ``trio-realtime``: every request queued at once with ``request_response``, over the
  default transport (trio-websocket, the standard library's JSON parser), and
  ``trio-realtime (websockets)``: over the fast one (``websockets`` and ``orjson``, the
  ``[fast]`` extra).

Timestamps are taken by the server (``bench_server.py``). The first few handoffs of each
connection are warm-up and dropped.

    python benchmarks/handoff.py [--quick] [--json PATH]
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import _common as common
from trio_realtime import SessionConfig, open_session

WARMUP = 5


async def _floor(
    send: Callable[[str], Awaitable[None]], receive: Callable[[], Awaitable[str | bytes]], n: int
) -> None:
    """The hand-written loop: send a create, read until its done, send the next."""
    json.loads(await receive())  # session.created
    for i in range(n):
        create = {"type": "response.create", "event_id": f"evt_{i}"}
        await send(json.dumps({**create, "response": {"metadata": {"i": str(i)}}}))
        while json.loads(await receive())["type"] != "response.done":
            pass


async def run_floor(port: int, tag: str, n: int) -> None:
    async with common.open_raw_ws(port, common.resource_of(port, tag=tag)) as ws:
        await _floor(ws.send_message, ws.get_message, n)


async def run_websockets_floor(port: int, tag: str, n: int) -> None:
    from websockets.trio.client import connect

    url = common.url(port, tag=tag)
    async with connect(url, compression=None, proxy=None, ping_interval=None) as ws:
        await _floor(ws.send, ws.recv, n)


async def run_seed(port: int, tag: str, n: int) -> None:
    async with common.open_raw_ws(port, common.resource_of(port, tag=tag)) as ws:
        json.loads(await ws.get_message())
        async with trio.open_nursery() as nursery:
            client = common.SeedClient(ws, nursery)
            nursery.start_soon(client.reader)
            # Queue every request before any reply can arrive: back-to-back queued responses.
            client.queue.extend({"metadata": {"i": str(i)}} for i in range(1, n))
            await client.request({"metadata": {"i": "0"}})
            while len(client.completed) < n:
                await client.changed.wait()
            nursery.cancel_scope.cancel()


async def _trio_realtime(port: int, tag: str, n: int, *, transport: str, fast: bool) -> None:
    config = SessionConfig(max_queue=n + 1, transport=transport)  # type: ignore[arg-type]
    with common.json_parser(fast=fast):
        async with open_session(common.url(port, tag=tag), config=config) as session:
            tickets = [session.request_response({"metadata": {"i": str(i)}}) for i in range(n)]
            for ticket in tickets:
                await ticket.wait_done()


async def run_trio_realtime(port: int, tag: str, n: int) -> None:
    await _trio_realtime(port, tag, n, transport="trio-websocket", fast=False)


async def run_trio_realtime_fast(port: int, tag: str, n: int) -> None:
    await _trio_realtime(port, tag, n, transport="websockets", fast=True)


CONTENDERS: dict[str, Callable[[int, str, int], Awaitable[None]]] = {
    "floor": run_floor,
    "websockets floor": run_websockets_floor,
    "seed": run_seed,
    "trio-realtime": run_trio_realtime,
    "trio-realtime (websockets)": run_trio_realtime_fast,
}
#: What each contender needs beyond the core install.
NEEDS = {"websockets floor": ("websockets",), "trio-realtime (websockets)": common.FAST}


async def bench(port: int, *, rounds: int, n: int, seed_n: int) -> dict[str, Any]:
    contenders = common.available(CONTENDERS, NEEDS)
    names = list(contenders)
    handoffs: dict[str, list[float]] = {name: [] for name in names}
    per_round: list[dict[str, float]] = []
    checks: dict[str, dict[str, int]] = {name: {"max_active": 0, "rejections": 0} for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        p50s: dict[str, float] = {}
        for name in order:
            tag = f"{name}-{r}"
            count = seed_n if name == "seed" else n
            with trio.fail_after(60 + count * 0.5):
                await contenders[name](port, tag, count)
            report = await common.server_report(port, tag=tag)
            warmup = 0 if name == "seed" else WARMUP
            micros = [ns / 1000 for ns in report["handoffs_ns"][warmup:]]
            handoffs[name].extend(micros)
            p50s[name] = common.summarize(micros)["p50"]
            checks[name]["max_active"] = max(checks[name]["max_active"], report["max_active"])
            checks[name]["rejections"] += report["rejections"]
        per_round.append(p50s)
        print(
            f"round {r + 1}/{rounds}: " + ", ".join(f"{k} p50 {v:.1f} us" for k, v in p50s.items()),
            flush=True,
        )
    stats = {name: common.summarize(values) for name, values in handoffs.items()}
    floor = stats["floor"]
    results: dict[str, Any] = {"unit": "microseconds", "contenders": {}}
    for name in names:
        s = stats[name]
        round_ratios = sorted(common.ratio(p[name], p["floor"]) for p in per_round)
        results["contenders"][name] = {
            **s,
            "p50_vs_floor": common.ratio(s["p50"], floor["p50"]),
            "p99_vs_floor": common.ratio(s["p99"], floor["p99"]),
            "median_round_p50_vs_floor": common.percentile(round_ratios, 50),
            "server_max_active": checks[name]["max_active"],
            "server_rejections": checks[name]["rejections"],
        }
    return results


def report(results: dict[str, Any], *, rounds: int, n: int, seed_n: int) -> str:
    rows = []
    for name, s in results["contenders"].items():
        rows.append(
            [
                name,
                s["n"],
                s["p50"],
                s["p99"],
                s["p99_9"],
                f"{s['p50_vs_floor']:.2f}x",
                f"{s['p99_vs_floor']:.2f}x",
                f"{s['median_round_p50_vs_floor']:.2f}x",
            ]
        )
    return common.print_table(
        f"Handoff latency (us), response.done written -> next response.create read, "
        f"{rounds} interleaved rounds of {n} responses ({seed_n} for seed)",
        ["client", "handoffs", "p50", "p99", "p99.9", "p50/floor", "p99/floor", "round p50/floor"],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    rounds, n, seed_n = (2, 60, 4) if args.quick else (6, 1000, 20)
    started = time.monotonic()
    with common.bench_server() as port:
        results = trio.run(lambda: bench(port, rounds=rounds, n=n, seed_n=seed_n))
    table = report(results, rounds=rounds, n=n, seed_n=seed_n)
    trc = results["contenders"]["trio-realtime"]
    fast = results["contenders"].get("trio-realtime (websockets)")
    goals = {
        "p50_within_1_2x_floor": trc["p50_vs_floor"] <= 1.2,
        "p99_under_1ms": trc["p99"] < 1000,
    }
    if fast is not None:  # (skipped without the [fast] extra)
        goals["websockets_p50_within_1_0x_floor"] = fast["p50_vs_floor"] <= 1.0
        goals["websockets_p99_under_1ms"] = fast["p99"] < 1000
    print("goals:", ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in goals.items()))
    common.write_json(
        args.json,
        {
            "benchmark": "handoff",
            "quick": args.quick,
            "params": {"rounds": rounds, "n": n, "seed_n": seed_n, "warmup_dropped": WARMUP},
            "results": results,
            "goals": goals,
            "table": table,
            "seconds": time.monotonic() - started,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
