"""Trace a session with OpenTelemetry, exported to the console, against the embedded fake server.

    pip install 'trio-realtime[otel]'
    python examples/otel_console.py

``Telemetry.open_session`` is ``open_session`` with a span around the session (its
connections, reconnects, rollovers and responses by outcome when it ends) and a child span
per response (queue wait, time to created, time to first output, time to done, status,
attempts, conflicts absorbed), named and tagged after the OpenTelemetry GenAI semantic
conventions; the latencies become histograms (``gen_ai.client.operation.duration`` and
kin). A real application configures an OTLP exporter instead of the console one, and may
pass nothing: ``Telemetry()`` uses the global providers.
"""

from __future__ import annotations

import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from trio_realtime.otel import Telemetry
from trio_realtime.testing import Behavior, open_fake_server

SPANS = ConsoleSpanExporter()
TRACER_PROVIDER = TracerProvider()
TRACER_PROVIDER.add_span_processor(SimpleSpanProcessor(SPANS))
METRICS = InMemoryMetricReader()  # (a PeriodicExportingMetricReader in production)
METER_PROVIDER = MeterProvider(metric_readers=[METRICS])


async def main() -> None:
    telemetry = Telemetry(tracer_provider=TRACER_PROVIDER, meter_provider=METER_PROVIDER)
    async with open_fake_server(behavior=Behavior(delta_delay=0.001)) as server:
        # (the model named in the URL, here gpt-realtime, names the spans)
        async with telemetry.open_session(server.url) as session:
            tickets = [session.request_response() for _ in range(3)]
            for ticket in tickets:
                await ticket.wait_done()


def report() -> str:
    data = METRICS.get_metrics_data()
    durations = 0
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "gen_ai.client.operation.duration":
                    durations += sum(point.count for point in metric.data.data_points)
    return (
        "spans: 3 responses under 1 session; "
        f"gen_ai.client.operation.duration: {durations} responses recorded"
    )


if __name__ == "__main__":
    trio.run(main)
    TRACER_PROVIDER.shutdown()
    print(report())
