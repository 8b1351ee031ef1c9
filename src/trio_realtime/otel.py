"""OpenTelemetry for trio-realtime (the ``[otel]`` extra): ``Telemetry``.

    from trio_realtime.otel import Telemetry

    telemetry = Telemetry()  # the global tracer and meter providers
    async with telemetry.open_session(url, config=SessionConfig()) as session:
        ...

A span per response (queue wait, time to created, time to first output, time to done,
status, conflicts absorbed, attempts) and per session (connections, reconnects, rollovers),
and the latency histograms as metrics, following the GenAI semantic conventions. Importing
``trio_realtime`` alone never imports OpenTelemetry; importing this module without it raises
``ImportError`` naming the extra.
"""

from ._otel import INSTRUMENTATION_NAME as INSTRUMENTATION_NAME
from ._otel import Telemetry as Telemetry

__all__ = ["INSTRUMENTATION_NAME", "Telemetry"]
