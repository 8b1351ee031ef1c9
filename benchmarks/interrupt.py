"""Interrupt-to-return latency: how long ``await session.interrupt(played_ms)`` takes.

Runs the barge-in fuzz of ``tests/test_interrupt_fuzz.py`` (its driver, :func:`barge_in`, with
every check on): an application interrupting at random moments, with random positions, against
the fake server streaming audio at 40 times real time, with out-of-band replies and voice
activity (some cancelling the in-band reply itself) mixed in; after each interruption its next
reply must be accepted first time. Times each call from the call to its return: the cancels go
out, every cancelled response's ``response.done`` comes back, the truncate and deletes are
answered. Reported per transport, for all calls and for the calls that cancelled something
(the others return at once, or wait only for a truncate's answer).

The fake server runs in this process, on the same Trio loop as the client (it needs the voice
activity hooks): the figures include the server's own work.

    python benchmarks/interrupt.py [--quick] [--json PATH] [--seed N]
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import trio

import _common as common

TRANSPORTS = ("trio-websocket", "websockets")
FUZZ = Path(__file__).resolve().parent.parent / "tests" / "test_interrupt_fuzz.py"


def _load_fuzz() -> Any:
    spec = importlib.util.spec_from_file_location("test_interrupt_fuzz", FUZZ)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def bench(fuzz: Any, transport: str, *, rounds: int, seed: int) -> dict[str, Any]:
    with trio.fail_after(max(60, rounds)):
        checks, server, conn = await fuzz.barge_in(rounds, seed, transport=transport)
    causes = fuzz.unavoidable_errors(conn)
    all_ms = [c.latency * 1000 for c in checks]
    cancelling = [c.latency * 1000 for c in checks if c.result.cancelled]
    return {
        "interruptions": len(checks),
        "cancelled_responses": sum(len(c.result.cancelled) for c in checks),
        "truncates": sum(c.result.truncated is not None for c in checks),
        "deletes": sum(len(c.result.deleted) for c in checks),
        "server_errors": conn.sent_types().count("error"),
        "server_errors_by_cause": dict(causes),
        "server_max_in_band_active": server.statistics().max_in_band_active,
        "in_band_overlap": fuzz.in_band_overlap(conn),
        "unit": "milliseconds",
        "latency": common.summarize(all_ms),
        "latency_cancelling": common.summarize(cancelling),
    }


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    rounds = 20 if args.quick else 500
    fuzz = _load_fuzz()
    started = time.monotonic()
    results = {
        name: trio.run(lambda name=name: bench(fuzz, name, rounds=rounds, seed=args.seed))
        for name in TRANSPORTS
    }
    rows = []
    for name, r in results.items():
        for label, key in (("all", "latency"), ("cancelling", "latency_cancelling")):
            s = r[key]
            rows.append([name, label, s["n"], s["p50"], s["p99"], s["max"]])
    table = common.print_table(
        f"interrupt() call to return (ms): {rounds} random interruptions per transport, "
        f"audio at {fuzz.PACE.audio_pace:.0f}x real time in {fuzz.PACE.audio_chunk_ms} ms chunks",
        ["transport", "calls", "n", "p50", "p99", "max"],
        rows,
    )
    for name, r in results.items():
        print(
            f"{name}: {r['cancelled_responses']} responses cancelled, {r['truncates']} "
            f"truncates, {r['deletes']} deletes; server errors {r['server_errors']} "
            f"(cancels that raced the response's end: {r['server_errors_by_cause']}); "
            f"max in-band active {r['server_max_in_band_active']}"
        )
    common.write_json(
        args.json,
        {
            "benchmark": "interrupt",
            "quick": args.quick,
            "params": {
                "rounds": rounds,
                "seed": args.seed,
                "audio_pace": fuzz.PACE.audio_pace,
                "audio_chunk_ms": fuzz.PACE.audio_chunk_ms,
            },
            "results": results,
            "table": table,
            "seconds": time.monotonic() - started,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
