"""Queue wait under load: many concurrent requesters with mixed priorities on one session.

Each requester task has a priority (0, 1 or 2; mostly 0), and repeatedly thinks for a random
time, requests a response and waits for it to end. Responses last ``DURATION`` on the server,
and requests arrive faster than that, so a queue builds and priorities matter. Reports the
queue wait (request to ``response.create`` sent, from ``ResponseTicket.timings``) per
priority, and checks the order: whenever a request is sent, no request still waiting had been
queued earlier with a higher priority, or earlier with the same priority (priority, then FIFO).
The server checks that responses never overlap.

    python benchmarks/queue_wait.py [--quick] [--json PATH]
"""

from __future__ import annotations

import random
import sys
import time
from typing import Any

import trio

import _common as common
from trio_realtime import ResponseTicket, SessionConfig, open_session

DURATION = 0.002
PRIORITIES = (0, 0, 0, 0, 0, 0, 1, 1, 1, 2)


def order_violations(records: list[tuple[int, int, float, float]]) -> int:
    """Requests sent while an earlier, at-least-as-urgent request was still waiting.

    ``records`` holds (submission index, priority, queued_at, sent_at).
    """
    violations = 0
    by_sent = sorted(records, key=lambda r: r[3])
    for index, priority, _queued, sent in by_sent:
        for other_index, other_priority, other_queued, other_sent in records:
            if other_queued < sent < other_sent and (
                other_priority > priority or (other_priority == priority and other_index < index)
            ):
                violations += 1
                break
    return violations


async def bench(port: int, *, requesters: int, per_requester: int, think: float, seed: int) -> Any:
    rng = random.Random(seed)
    tag = "queue"
    records: list[tuple[int, int, float, float]] = []
    waits: dict[int, list[float]] = {}
    submitted = 0
    failures = 0
    config = SessionConfig(max_queue=requesters * 2)

    async with open_session(common.url(port, tag=tag, duration=DURATION), config=config) as session:

        async def requester(priority: int, rng: random.Random) -> None:
            nonlocal submitted, failures
            for _ in range(per_requester):
                await trio.sleep(rng.expovariate(1 / think))
                index = submitted
                submitted += 1
                ticket: ResponseTicket = session.request_response(
                    {"metadata": {"i": str(index)}}, priority=priority
                )
                try:
                    await ticket.wait_done()
                except Exception:
                    failures += 1
                    continue
                t = ticket.timings
                assert t.sent_at is not None
                records.append((index, priority, t.queued_at, t.sent_at))
                waits.setdefault(priority, []).append((t.sent_at - t.queued_at) * 1000)

        started = trio.current_time()
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for i in range(requesters):
                    prio = PRIORITIES[i % len(PRIORITIES)]
                    nursery.start_soon(requester, prio, random.Random(rng.random()))
        elapsed = trio.current_time() - started
        stats = session.statistics()
    server = await common.server_report(port, tag=tag)
    return {
        "requests": submitted,
        "completed": len(records),
        "failed": failures,
        "elapsed_s": elapsed,
        "order_violations": order_violations(records),
        "order_ok": order_violations(records) == 0,
        "server_max_active": server["max_active"],
        "server_rejections": server["rejections"],
        "session_completed": stats.completed,
        "unit": "milliseconds",
        "wait_by_priority": {str(p): common.summarize(w) for p, w in sorted(waits.items())},
        "wait_all": common.summarize([w for ws in waits.values() for w in ws]),
    }


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    requesters, per_requester, think = (10, 5, 0.004) if args.quick else (50, 40, 0.06)
    started = time.monotonic()
    with common.bench_server() as port:
        results = trio.run(
            lambda: bench(
                port,
                requesters=requesters,
                per_requester=per_requester,
                think=think,
                seed=args.seed,
            )
        )
    rows = [
        [f"priority {p}", s["n"], s["p50"], s["p99"], s["max"]]
        for p, s in reversed(results["wait_by_priority"].items())
    ]
    a = results["wait_all"]
    rows.append(["all", a["n"], a["p50"], a["p99"], a["max"]])
    table = common.print_table(
        f"Queue wait (ms) under load: {requesters} requesters x {per_requester} requests, "
        f"think time ~{think * 1000:.0f} ms, responses {DURATION * 1000:.0f} ms; "
        f"{results['requests'] / results['elapsed_s']:.0f} requests/s",
        ["requests", "n", "wait p50", "wait p99", "wait max"],
        rows,
    )
    print(
        f"order priority-then-FIFO: {'ok' if results['order_ok'] else 'VIOLATED'} "
        f"({results['order_violations']} violations); completed {results['completed']}"
        f"/{results['requests']}; server max active {results['server_max_active']}, "
        f"rejections {results['server_rejections']}"
    )
    common.write_json(
        args.json,
        {
            "benchmark": "queue_wait",
            "quick": args.quick,
            "params": {
                "requesters": requesters,
                "per_requester": per_requester,
                "think_s": think,
                "duration_s": DURATION,
                "priorities": sorted(set(PRIORITIES)),
            },
            "results": results,
            "table": table,
            "seconds": time.monotonic() - started,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
