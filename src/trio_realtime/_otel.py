"""OpenTelemetry for sessions: a span per response and per session, and the latency histograms.

Nothing here is imported by ``import trio_realtime``: an application that does not import
``trio_realtime.otel`` pays nothing, and one without the ``[otel]`` extra gets an
``ImportError`` naming it when it does.

The spans are built after the fact from what the library measured anyway: a response's span
from its ticket's timings when the ticket ends (``SessionConfig(on_response=...)``), a
session's from ``session.statistics()`` when it ends. Nothing is added to the path of an
event: a response costs one span and three to five histogram records, once, at its end
(about 0.3 ms of CPU in ``benchmarks/density.py``, nearly all of it the SDK's).

Names follow the OpenTelemetry GenAI semantic conventions where they name something
(``gen_ai.operation.name``, ``gen_ai.provider.name`` and the older ``gen_ai.system``,
``gen_ai.request.model``, ``gen_ai.response.id``, ``gen_ai.response.finish_reasons``,
``gen_ai.usage.*``, ``error.type``; the metrics ``gen_ai.client.operation.duration``,
``gen_ai.client.operation.time_to_first_chunk`` and ``gen_ai.client.token.usage``); what they do
not name is under ``trio_realtime.*``.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

try:
    from opentelemetry import metrics, trace
except ImportError as exc:  # pragma: no cover - exercised in a process without the extra
    raise ImportError(
        "trio_realtime.otel needs OpenTelemetry, the 'otel' extra: "
        "pip install 'trio-realtime[otel]'"
    ) from exc

from ._config import SessionConfig
from ._gate import TicketState
from ._session import RealtimeSession, open_session

if TYPE_CHECKING:
    from ._endpoints import Endpoint
    from ._ticket import ResponseTicket
    from ._tools import ToolRegistry, ToolRunner
    from ._transport import Transport

__all__ = ["INSTRUMENTATION_NAME", "Telemetry"]

logger = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "trio_realtime"
#: The semantic conventions' advice for ``gen_ai.client.operation.duration``.
DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
#: The session statistics a session span carries (``trio_realtime.session.<name>``).
SESSION_COUNTS = (
    "connections",
    "reconnects",
    "rollovers",
    "replayed_items",
    "sent",
    "completed",
    "cancelled",
    "incomplete",
    "failed_by_server",
    "failed",
    "rejected",
    "timed_out",
    "conflicts_absorbed",
    "server_started",
    "forced_releases",
    "malformed_frames",
)


@attrs.define(eq=False)
class _Clock:
    """Trio's clock to wall-clock nanoseconds: one offset per ``trio.run`` (its clock)."""

    clock: object = None
    offset_ns: int = 0

    def to_ns(self, when: float) -> int:
        clock = trio.lowlevel.current_clock()
        if clock is not self.clock:
            self.clock = clock
            self.offset_ns = time.time_ns() - round(trio.current_time() * 1e9)
        return self.offset_ns + round(when * 1e9)


class Telemetry:
    """Spans and metrics for trio-realtime sessions, through OpenTelemetry.

    ``tracer_provider`` / ``meter_provider``: where spans and metrics go (default: the global
    providers, ``opentelemetry.trace.set_tracer_provider`` and friends; without an SDK
    configured, OpenTelemetry's no-op ones). ``provider``: ``gen_ai.provider.name`` and
    ``gen_ai.system`` (``"openai"``; ``"azure.ai.openai"`` for Azure). ``model``:
    ``gen_ai.request.model`` when a session's URL does not say it.

    Use :meth:`open_session` in place of :func:`trio_realtime.open_session` (a session span
    around the session, the response spans its children), or wire the parts yourself:
    ``SessionConfig(on_response=telemetry.on_response)`` and ``with
    telemetry.trace_session(session): ...``. One ``Telemetry`` serves any number of sessions.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        provider: str = "openai",
        model: str | None = None,
    ) -> None:
        from . import __version__

        self.provider = provider
        self.model = model
        self._tracer = trace.get_tracer(
            INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__, meter_provider=meter_provider)
        self._clock = _Clock()
        seconds: dict[str, Any] = {
            "unit": "s",
            "explicit_bucket_boundaries_advisory": DURATION_BUCKETS,
        }
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            description="response.create sent to response.done",
            **seconds,
        )
        self._first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            description="response.create sent to the response's first output delta",
            **seconds,
        )
        self._queue_wait = meter.create_histogram(
            "trio_realtime.response.queue_wait",
            description="A request's wait for the one-active-response slot",
            **seconds,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used by a response",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        # Spans carry both names of the provider; metrics only the current one (each
        # attribute of a measurement costs the SDK time, at every record).
        self._span_base: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,
        }
        self._metric_base: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
        }
        self._by_model: dict[str | None, tuple[dict[str, Any], dict[str, Any], str]] = {}

    def _attributes(self, model: str | None) -> tuple[dict[str, Any], dict[str, Any], str]:
        """The span's and the metrics' base attributes for ``model``, and the span's name
        (made once per model)."""
        model = model or self.model
        known = self._by_model.get(model)
        if known is None:
            extra = {} if model is None else {"gen_ai.request.model": model}
            name = "chat" if model is None else f"chat {model}"
            known = {**self._span_base, **extra}, {**self._metric_base, **extra}, name
            self._by_model[model] = known
        return known

    # ------------------------------------------------------------ responses

    def on_response(self, ticket: ResponseTicket) -> None:
        """A ticket ended: record its span and its latencies. For
        ``SessionConfig(on_response=...)``; called by the session, synchronously, in Trio.

        The span (``chat <model>``, kind CLIENT) runs from the request to its end, its parent
        the current span (the session's span under :meth:`open_session`); events mark
        ``response.create`` sent, ``response.created`` and the first output.
        """
        try:
            self._record(ticket, trace.get_current_span(), None)
        except Exception:
            logger.exception("recording a response's telemetry failed; ignored")

    def _record(self, ticket: ResponseTicket, parent: trace.Span, model: str | None) -> None:
        timings = ticket.timings
        to_ns = self._clock.to_ns
        span_base, metric_base, name = self._attributes(model)
        attributes: dict[str, Any] = {
            **span_base,
            "trio_realtime.request.event_id": ticket.event_id,
            "trio_realtime.request.priority": ticket.priority,
            "trio_realtime.response.attempts": timings.attempts,
            # Only a conflict (the slot taken by a response we did not know of) resends a
            # request: never a reconnect, which never resends what went out.
            "trio_realtime.response.conflicts_absorbed": max(0, timings.attempts - 1),
        }
        result = ticket.result
        error_type: str | None = None
        usage: Any = None
        if ticket.state is TicketState.DONE and result is not None:
            status = result.status
            attributes["gen_ai.response.finish_reasons"] = (
                _finish_reason(result.response, status),
            )
            if status == "failed":
                error_type = _server_error_type(result.response)
            usage = (result.response or {}).get("usage")
            if isinstance(usage, Mapping):
                for key in ("input_tokens", "output_tokens"):
                    if isinstance(usage.get(key), int):
                        attributes[f"gen_ai.usage.{key}"] = usage[key]
        else:
            status = "error"
            error_type = type(ticket.error).__name__ if ticket.error is not None else "failed"
        attributes["trio_realtime.response.status"] = status
        if ticket.response_id is not None:
            attributes["gen_ai.response.id"] = ticket.response_id
        for field in ("queue_wait", "time_to_created", "time_to_first_output", "time_to_done"):
            value = getattr(timings, field)
            if value is not None:
                attributes[f"trio_realtime.response.{field}"] = value
        if timings.time_to_first_output is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = timings.time_to_first_output
        if error_type is not None:
            attributes["error.type"] = error_type
        end = timings.finished_at if timings.finished_at is not None else trio.current_time()
        span = self._tracer.start_span(
            name,
            context=trace.set_span_in_context(parent),
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            start_time=to_ns(timings.queued_at),
        )
        if span.is_recording():
            for event, when in (
                ("response.create", timings.sent_at),
                ("response.created", timings.created_at),
                ("first_output", timings.first_output_at),
                ("cancel_requested", timings.cancel_requested_at),
            ):
                if when is not None:
                    span.add_event(event, timestamp=to_ns(when))
            if error_type is not None:
                span.set_status(trace.StatusCode.ERROR, error_type)
        span.end(end_time=to_ns(end))
        # The metrics: three records a response. The duration counts every response, failed
        # ones too (with error.type), as the conventions ask: its histogram's count is the
        # number of responses by status.
        outcome = {**metric_base, "trio_realtime.response.status": status}
        if error_type is not None:
            outcome["error.type"] = error_type
        start = timings.sent_at if timings.sent_at is not None else timings.queued_at
        self._duration.record(end - start, outcome)
        if timings.time_to_first_output is not None:
            self._first_chunk.record(timings.time_to_first_output, metric_base)
        if timings.queue_wait is not None:
            self._queue_wait.record(timings.queue_wait, metric_base)
        if isinstance(usage, Mapping):
            for key, kind in (("input_tokens", "input"), ("output_tokens", "output")):
                if isinstance(usage.get(key), int):
                    self._tokens.record(usage[key], {**metric_base, "gen_ai.token.type": kind})

    # ------------------------------------------------------------ sessions

    @contextmanager
    def trace_session(
        self, session: RealtimeSession, *, model: str | None = None
    ) -> Iterator[trace.Span]:
        """A span around a block that uses ``session``: ``realtime.session <model>``, its
        attributes the session's figures when the block ends (connections, reconnects,
        rollovers, responses by outcome, conflicts absorbed). Made the current span inside the
        block, so that responses ending in this task are its children (use
        :meth:`open_session` to parent the responses ended by the session's own tasks too).
        """
        with self._session_span(model) as span:
            try:
                yield span
            finally:
                self._end_session(span, session)

    @contextmanager
    def _session_span(
        self, model: str | None, server: dict[str, Any] | None = None
    ) -> Iterator[trace.Span]:
        attributes = self._attributes(model)[0]
        name = attributes.get("gen_ai.request.model")
        with self._tracer.start_as_current_span(
            f"realtime.session {name}" if name else "realtime.session",
            kind=trace.SpanKind.CLIENT,
            attributes={
                **attributes,
                **(server or {}),
                "gen_ai.operation.name": "realtime.session",
            },
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            yield span

    def _end_session(self, span: trace.Span, session: RealtimeSession | None) -> None:
        if session is None:
            return
        try:
            stats = session.statistics()
            span.set_attributes(
                {f"trio_realtime.session.{name}": getattr(stats, name) for name in SESSION_COUNTS}
            )
        except Exception:
            logger.exception("recording a session's telemetry failed; ignored")

    @asynccontextmanager
    async def open_session(
        self,
        target: Endpoint | str | Transport,
        *,
        config: SessionConfig | None = None,
        tools: ToolRegistry | ToolRunner | None = None,
    ) -> AsyncIterator[RealtimeSession]:
        """:func:`trio_realtime.open_session`, traced: a session span from connecting to the
        end of the block, every response a child span of it, the latencies recorded as
        metrics. ``config.on_response``, if set, is still called (after the telemetry).
        Takes and raises what :func:`trio_realtime.open_session` does."""
        config = config or SessionConfig()
        model, server = _model_and_server_of(target)
        on_response = self._on_response_for(model, config.on_response)
        config = attrs.evolve(config, on_response=on_response)
        session: RealtimeSession | None = None
        with self._session_span(model, server) as span:
            try:
                # The session's tasks start here, in this context: the span is their parent.
                async with open_session(target, config=config, tools=tools) as session:
                    yield session
            finally:
                self._end_session(span, session)

    def _on_response_for(
        self, model: str | None, then: Callable[[ResponseTicket], object] | None
    ) -> Callable[[ResponseTicket], None]:
        def on_response(ticket: ResponseTicket) -> None:
            try:
                self._record(ticket, trace.get_current_span(), model)
            except Exception:
                logger.exception("recording a response's telemetry failed; ignored")
            if then is not None:
                then(ticket)

        return on_response


def _model_and_server_of(target: object) -> tuple[str | None, dict[str, Any]]:
    """The model (or Azure deployment) a URL names, and ``server.address`` / ``server.port``
    (nothing else of the URL: it may carry a credential)."""
    url = target if isinstance(target, str) else getattr(target, "url", None)
    if not isinstance(url, str):
        return None, {}
    parts = urllib.parse.urlsplit(url)
    server: dict[str, Any] = {}
    try:
        if parts.hostname:
            server["server.address"] = parts.hostname
            server["server.port"] = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:  # (a malformed port: open_session will say so)
        server = {}
    query = urllib.parse.parse_qs(parts.query)
    for key in ("model", "deployment"):
        if query.get(key):
            return query[key][0], server
    return None, server


def _finish_reason(response: Mapping[str, Any] | None, status: str) -> str:
    details = (response or {}).get("status_details")
    if isinstance(details, Mapping) and isinstance(details.get("reason"), str):
        return str(details["reason"])
    return status


def _server_error_type(response: Mapping[str, Any] | None) -> str:
    details = (response or {}).get("status_details")
    error = details.get("error") if isinstance(details, Mapping) else None
    if isinstance(error, Mapping):
        for key in ("code", "type"):
            if isinstance(error.get(key), str):
                return str(error[key])
    return "failed"
