"""trio_realtime.otel: a span per response and per session, the latencies as metrics, and no
cost at all for an application that does not use it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from trio_realtime import ResponseRejected, SessionConfig, TicketState, open_session
from trio_realtime.otel import Telemetry
from trio_realtime.testing import Behavior, open_fake_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class Recorded:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[self.metrics])
        self.telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def metric_points(self) -> dict[str, list[Any]]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        points: dict[str, list[Any]] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "trio_realtime"
                for metric in scope.metrics:
                    points.setdefault(metric.name, []).extend(metric.data.data_points)
        return points


async def test_a_span_per_response_under_the_session_span() -> None:
    recorded = Recorded()
    before_ns = time.time_ns()
    with trio.fail_after(10):
        async with open_fake_server() as server:
            assert server.url.endswith("?model=gpt-realtime")
            async with recorded.telemetry.open_session(server.url) as session:
                tickets = [session.request_response() for _ in range(3)]
                for ticket in tickets:
                    assert (await ticket.wait_done()).status == "completed"
    after_ns = time.time_ns()
    spans = recorded.finished()
    [session_span] = [s for s in spans if s.name.startswith("realtime.session")]
    responses = [s for s in spans if s.name.startswith("chat")]
    assert len(responses) == 3
    assert session_span.name == "realtime.session gpt-realtime"
    attributes = session_span.attributes or {}
    assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-realtime"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == server.port
    assert attributes["trio_realtime.session.connections"] == 1
    assert attributes["trio_realtime.session.reconnects"] == 0
    assert attributes["trio_realtime.session.rollovers"] == 0
    assert attributes["trio_realtime.session.completed"] == 3
    assert attributes["trio_realtime.session.conflicts_absorbed"] == 0
    by_id = {span.attributes["gen_ai.response.id"]: span for span in responses}  # type: ignore[index]
    assert set(by_id) == {t.response_id for t in tickets}
    for ticket in tickets:
        span = by_id[ticket.response_id]
        assert span.name == "chat gpt-realtime"
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == session_span.context.span_id
        assert span.context.trace_id == session_span.context.trace_id
        a = span.attributes or {}
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.system"] == "openai"
        assert a["gen_ai.request.model"] == "gpt-realtime"
        assert a["gen_ai.response.finish_reasons"] == ("completed",)
        assert a["trio_realtime.response.status"] == "completed"
        assert a["trio_realtime.request.event_id"] == ticket.event_id
        assert a["trio_realtime.response.attempts"] == 1
        assert a["trio_realtime.response.conflicts_absorbed"] == 0
        timings = ticket.timings
        for name in ("queue_wait", "time_to_created", "time_to_first_output", "time_to_done"):
            assert a[f"trio_realtime.response.{name}"] == getattr(timings, name), name
        assert a["gen_ai.response.time_to_first_chunk"] == timings.time_to_first_output
        assert "error.type" not in a
        assert span.status.status_code is StatusCode.UNSET
        # Trio's clock became wall-clock time: the span lies within the test's run, its events
        # in order inside it, and its length is the ticket's own.
        assert span.start_time is not None
        assert span.end_time is not None
        assert before_ns <= span.start_time <= span.end_time <= after_ns
        assert [e.name for e in span.events] == [
            "response.create",
            "response.created",
            "first_output",
        ]
        stamps = [span.start_time, *(e.timestamp for e in span.events), span.end_time]
        assert stamps == sorted(stamps)
        assert timings.finished_at is not None
        assert span.end_time - span.start_time == pytest.approx(
            (timings.finished_at - timings.queued_at) * 1e9, abs=2
        )
    assert session_span.start_time is not None
    assert session_span.end_time is not None
    assert all(
        session_span.start_time <= s.start_time <= s.end_time <= session_span.end_time  # type: ignore[operator]
        for s in responses
    )
    points = recorded.metric_points()
    for name in (
        "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk",
        "trio_realtime.response.queue_wait",
    ):
        [point] = points[name]
        assert point.count == 3, name
        assert point.attributes["gen_ai.request.model"] == "gpt-realtime", name
        assert point.attributes["gen_ai.operation.name"] == "chat", name
    duration = points["gen_ai.client.operation.duration"][0]
    assert duration.sum == pytest.approx(sum(t.timings.time_to_done for t in tickets))  # type: ignore[misc]
    assert duration.attributes["trio_realtime.response.status"] == "completed"
    # The fake server reports usage, as the service does: tokens by type.
    tokens = {p.attributes["gen_ai.token.type"]: p for p in points["gen_ai.client.token.usage"]}
    assert set(tokens) == {"input", "output"}
    for ticket in tickets:
        usage = ticket.result.response["usage"]  # type: ignore[union-attr,index]
        span_attributes = by_id[ticket.response_id].attributes or {}
        assert span_attributes["gen_ai.usage.input_tokens"] == usage["input_tokens"]
        assert span_attributes["gen_ai.usage.output_tokens"] == usage["output_tokens"]
    assert tokens["output"].count == 3
    assert tokens["output"].sum == sum(
        t.result.response["usage"]["output_tokens"]  # type: ignore[union-attr,index]
        for t in tickets
    )
    assert "gen_ai.system" not in duration.attributes  # (spans carry it: see above)


async def test_an_absorbed_conflict_shows_as_a_second_attempt() -> None:
    """The slot was taken by a response whose ``response.created`` never reached us: our
    ``response.create`` was refused, absorbed, and sent again after that response's end."""
    recorded = Recorded()
    behavior = Behavior(auto_finish=False, omit_response_created=True)
    with trio.fail_after(10):
        async with open_fake_server(behavior=behavior) as server:
            async with recorded.telemetry.open_session(server.url) as session:
                vad = await server.start_response(vad_events=False)
                ticket = session.request_response()
                await server.wait_for_client_event("response.create")
                connection = await server.wait_connection()
                await connection.wait_for_server_event("error")
                await trio.testing.wait_all_tasks_blocked()
                assert session.statistics().conflicts_absorbed == 1
                behavior.auto_finish = True
                behavior.omit_response_created = False
                await server.finish_response(vad)
                assert (await ticket.wait_done()).status == "completed"
    [span] = [s for s in recorded.finished() if s.name.startswith("chat")]
    a = span.attributes or {}
    assert a["trio_realtime.response.attempts"] == 2
    assert a["trio_realtime.response.conflicts_absorbed"] == 1
    assert a["gen_ai.response.id"] == ticket.response_id
    [session_span] = [s for s in recorded.finished() if s.name.startswith("realtime.session")]
    assert session_span.name == "realtime.session gpt-realtime"
    assert (session_span.attributes or {})["trio_realtime.session.conflicts_absorbed"] == 1


async def test_a_failed_request_is_an_error_span_and_the_callback_still_runs() -> None:
    recorded = Recorded()
    seen: list[TicketState] = []

    with trio.fail_after(10):
        # The server runs the response but sends none of its events, and refuses the request.
        async with open_fake_server(behavior=Behavior(withhold_created=True)) as server:
            config = SessionConfig(on_response=lambda t: seen.append(t.state))
            async with recorded.telemetry.open_session(server.url, config=config) as session:
                ticket = session.request_response()
                create = await server.wait_for_client_event("response.create")
                connection = await server.wait_connection()
                await connection.send_event(
                    {
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "code": "invalid_value",
                            "message": "Invalid modalities",
                            "param": "response.modalities",
                            "event_id": create["event_id"],
                        },
                    }
                )
                with pytest.raises(ResponseRejected):
                    await ticket.wait_done()
    assert seen == [TicketState.FAILED]  # the application's own callback, after ours
    [span] = [s for s in recorded.finished() if s.name.startswith("chat")]
    a = span.attributes or {}
    assert a["error.type"] == "ResponseRejected"
    assert a["trio_realtime.response.status"] == "error"
    assert "gen_ai.response.id" not in a
    assert span.status.status_code is StatusCode.ERROR
    # The failed request is counted in the duration histogram, with its error.
    [counted] = recorded.metric_points()["gen_ai.client.operation.duration"]
    assert counted.count == 1
    assert counted.attributes["error.type"] == "ResponseRejected"
    assert counted.attributes["trio_realtime.response.status"] == "error"


async def test_on_response_alone_parents_nothing_and_records_anyway() -> None:
    recorded = Recorded()
    with trio.fail_after(10):
        async with open_fake_server() as server:
            config = SessionConfig(on_response=recorded.telemetry.on_response)
            async with open_session(server.url, config=config) as session:
                with recorded.telemetry.trace_session(session, model="m1"):
                    await session.request_response().wait_done()
    spans = recorded.finished()
    [session_span] = [s for s in spans if s.name == "realtime.session m1"]
    assert (session_span.attributes or {})["trio_realtime.session.completed"] == 1
    [response] = [s for s in spans if s.name.startswith("chat")]
    # The session's tasks started before the session span: the response has no parent.
    assert response.parent is None
    assert recorded.metric_points()["gen_ai.client.operation.duration"][0].count == 1


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_trio_realtime_alone_never_imports_opentelemetry() -> None:
    code = (
        "import sys, trio, trio_realtime, trio_realtime.testing\n"
        "from trio_realtime import open_session\n"
        "from trio_realtime.testing import open_fake_server\n"
        "async def main():\n"
        "    async with open_fake_server() as server:\n"
        "        async with open_session(server.url) as session:\n"
        "            await session.request_response().wait_done()\n"
        "trio.run(main)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    process = _run(code)
    assert process.returncode == 0, process.stderr
    assert process.stdout == "[]\n"


def test_without_the_extra_the_import_error_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "no_otel"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nsys.modules.update(dict.fromkeys(['opentelemetry'], None))\n"
    )
    process = _run("import trio_realtime.otel", {"PYTHONPATH": str(blocker)})
    assert process.returncode == 1
    assert (
        "ImportError: trio_realtime.otel needs OpenTelemetry, the 'otel' extra: "
        "pip install 'trio-realtime[otel]'"
    ) in process.stderr
    assert _run("import trio_realtime", {"PYTHONPATH": str(blocker)}).returncode == 0


def test_the_console_example() -> None:
    completed = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / "otel_console.py")],
        capture_output=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    lines = completed.stdout.splitlines()
    assert lines[-1] == (
        "spans: 3 responses under 1 session; gen_ai.client.operation.duration: 3 responses recorded"
    )
    assert sum('"name": "chat gpt-realtime"' in line for line in lines) == 3
    assert sum('"name": "realtime.session gpt-realtime"' in line for line in lines) == 1


README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


async def test_the_readme_example_runs() -> None:
    readme = README
    [block] = [b for b in readme.split("```python\n")[1:] if b.startswith("# otel_app.py")]
    namespace: dict[str, Any] = {}
    exec(compile(block.split("```")[0], "README.md:otel_app.py", "exec"), namespace)
    with trio.fail_after(10):
        async with open_fake_server() as server:
            assert await namespace["main"](server.url) == "completed"
