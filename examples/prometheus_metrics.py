"""Export a session's latencies to Prometheus, against the embedded fake Realtime server.

    pip install prometheus-client
    python examples/prometheus_metrics.py

trio-realtime depends on no metrics library: ``SessionConfig(on_response=...)`` is called with
every ticket as it ends, and ``ticket.timings`` says when it was queued, sent, created, first
produced output and finished. Here each becomes a Prometheus histogram observation; a real
application serves ``REGISTRY`` with ``prometheus_client.start_http_server`` instead of
printing it. ``session.statistics().latency`` holds the same figures as summaries (p50, p90,
p99, max) for a dashboard that polls.
"""

from __future__ import annotations

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from trio_realtime import ResponseTicket, SessionConfig, TicketState, open_session
from trio_realtime.testing import Behavior, open_fake_server

REGISTRY = CollectorRegistry()
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
QUEUE_WAIT = Histogram(
    "realtime_queue_wait_seconds",
    "Request to its response.create",
    buckets=BUCKETS,
    registry=REGISTRY,
)
FIRST_OUTPUT = Histogram(
    "realtime_time_to_first_output_seconds",
    "response.create to the first output delta",
    buckets=BUCKETS,
    registry=REGISTRY,
)
DONE = Histogram(
    "realtime_time_to_done_seconds",
    "response.create to response.done",
    buckets=BUCKETS,
    registry=REGISTRY,
)
ENDED = Counter("realtime_responses", "Responses by how they ended", ["outcome"], registry=REGISTRY)


def export(ticket: ResponseTicket) -> None:
    """Called by the session, synchronously, as each ticket ends: must not block."""
    timings = ticket.timings
    for histogram, value in (
        (QUEUE_WAIT, timings.queue_wait),
        (FIRST_OUTPUT, timings.time_to_first_output),
        (DONE, timings.time_to_done),
    ):
        if value is not None:
            histogram.observe(value)
    if ticket.state is TicketState.DONE and ticket.result is not None:
        ENDED.labels(ticket.result.status).inc()
    else:
        ENDED.labels(type(ticket.error).__name__).inc()


async def main() -> None:
    async with open_fake_server(behavior=Behavior(delta_delay=0.001)) as server:
        config = SessionConfig(on_response=export)
        async with open_session(server.url, config=config) as session:
            tickets = [session.request_response() for _ in range(5)]
            for ticket in tickets:
                await ticket.wait_done()
            latency = session.statistics().latency
            print(
                f"responses: {latency.time_to_done.count}, queue waits: {latency.queue_wait.count}"
            )
    for line in generate_latest(REGISTRY).decode().splitlines():
        if line.startswith(("realtime_responses_total", "realtime_time_to_done_seconds_count")):
            print(line)


if __name__ == "__main__":
    trio.run(main)
