"""The fake server in a process of its own: the command line, and the context manager that
runs it.

Races hide when the client and the server share one event loop: the server then always runs
between two of the client's steps in the same order. Out of process, the two run at their own
pace, as against the service. Two halves:

- **The child**: ``python -m trio_realtime.testing [--port N] [--dialect ga|beta] [--model M]
  [--behavior JSON]`` serves the fake Realtime API on 127.0.0.1, writes its URL as the first
  line of stdout, serves until its stdin closes or it gets SIGTERM (or SIGINT), then writes
  one line of JSON to stdout (``ServerReport.to_json``: the statistics and, per connection,
  the conversation items it received) and exits with status 0.
- **The parent**: ``open_fake_server_process()`` starts that child, yields a
  ``FakeServerProcess`` with the ``url``, and always ends the child when the block ends (stdin
  closed, then killed if it has not exited within a few seconds); ``process.report`` then
  holds the child's ``ServerReport``.

``--behavior`` takes a JSON object of ``Behavior`` knobs by name (``{"created_delay": 0.05,
"audio_items": 2}``). Sets (``accepted_api_keys``...) are JSON arrays. ``script`` is one
``Script`` for every response, as an object of its fields: ``audio`` as base64, and
``function_calls`` as a list of ``{"name", "arguments", "call_id"}`` objects. The child's
knobs are fixed for its life: a test cannot change them, or act as the server
(``FakeConnection``), from the parent.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import attrs
import trio

from .._util import unwrap_lone_exception
from ._script import Behavior, FunctionCall, Script
from ._server import FakeRealtimeServer, ServerStatistics, open_fake_server

#: Seconds the child has to start listening before the parent gives up on it.
_START_SECONDS = 30.0
#: Seconds the child has to exit after its stdin closed, before it is killed.
_EXIT_SECONDS = 5.0
#: The most of the child's stderr kept to explain a failed start.
_STDERR_KEEP = 64 * 1024


# -- the report ---------------------------------------------------------------------------


@attrs.frozen
class ConnectionReport:
    """What one connection of the child received.

    ``received_types`` counts its client events by type; ``received_items`` is the ``item`` of
    every ``conversation.item.create`` it received, in order (as sent, ids included when the
    client gave them); ``item_ids`` are the conversation's items when the server stopped.
    """

    request_path: str
    conversation_id: str
    received_types: Mapping[str, int]
    received_items: tuple[Mapping[str, Any], ...]
    item_ids: tuple[str, ...]

    def duplicated_items(self) -> list[Mapping[str, Any]]:
        """The received items that arrived more than once (equal as JSON), once each, in
        order of their second arrival. An application that really sent the same item twice
        shows here too."""
        seen: Counter[str] = Counter()
        duplicated = []
        for item in self.received_items:
            key = json.dumps(item, sort_keys=True)
            seen[key] += 1
            if seen[key] == 2:
                duplicated.append(item)
        return duplicated


@attrs.frozen
class ServerReport:
    """What a fake server did, over its whole life: its statistics, and each accepted
    connection's report in accept order."""

    statistics: ServerStatistics
    connections: tuple[ConnectionReport, ...]

    @classmethod
    def of(cls, server: FakeRealtimeServer) -> ServerReport:
        """The report of ``server`` as it stands."""
        connections = []
        for connection in server.connections:
            received = connection.received
            connections.append(
                ConnectionReport(
                    request_path=connection.request_path,
                    conversation_id=connection.conversation_id,
                    received_types=dict(Counter(str(e.get("type")) for e in received)),
                    received_items=tuple(
                        e["item"]
                        for e in received
                        if e.get("type") == "conversation.item.create"
                        and isinstance(e.get("item"), Mapping)
                    ),
                    item_ids=tuple(connection.item_ids()),
                )
            )
        return cls(statistics=server.statistics(), connections=tuple(connections))

    def to_json(self) -> str:
        """One line of JSON: ``{"statistics": {...}, "connections": [{...}, ...]}``, with the
        fields of ``ServerStatistics`` and ``ConnectionReport`` by name."""
        return json.dumps(
            {
                "statistics": attrs.asdict(self.statistics, value_serializer=_plain),
                "connections": [attrs.asdict(c, value_serializer=_plain) for c in self.connections],
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ServerReport:
        data = json.loads(text)
        statistics = data["statistics"]
        statistics["responses_done_by_status"] = dict(statistics["responses_done_by_status"])
        return cls(
            statistics=ServerStatistics(**statistics),
            connections=tuple(
                ConnectionReport(
                    request_path=c["request_path"],
                    conversation_id=c["conversation_id"],
                    received_types=c["received_types"],
                    received_items=tuple(c["received_items"]),
                    item_ids=tuple(c["item_ids"]),
                )
                for c in data["connections"]
            ),
        )


def _plain(instance: Any, attribute: Any, value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


# -- behaviour as JSON ----------------------------------------------------------------------


def behavior_from_json(data: Mapping[str, Any]) -> Behavior:
    """The ``Behavior`` a JSON object of knobs describes; ``ValueError`` / ``TypeError`` for
    an unknown knob or a bad value."""
    names = {field.name for field in attrs.fields(Behavior)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown Behavior knob(s): {', '.join(unknown)}")
    knobs = dict(data)
    if knobs.get("script") is not None:
        script = _script_from_json(knobs["script"])
        knobs["script"] = lambda body: script
    return Behavior(**knobs)


def behavior_to_json(behavior: Behavior | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object of ``behavior``'s knobs (a mapping is taken as such a object already).
    A ``script`` factory cannot cross a process boundary: ``TypeError``."""
    if isinstance(behavior, Mapping):
        return dict(behavior)
    knobs: dict[str, Any] = {}
    defaults = Behavior()
    for field in attrs.fields(Behavior):
        value = getattr(behavior, field.name)
        if value == getattr(defaults, field.name):
            continue
        if field.name == "script":
            raise TypeError(
                "Behavior.script is a function and cannot go to another process; "
                "pass {'script': {...Script fields...}} in a behavior mapping instead"
            )
        knobs[field.name] = sorted(value) if isinstance(value, frozenset) else value
    return knobs


def _script_from_json(data: Any) -> Script:
    if not isinstance(data, Mapping):
        raise TypeError("'script' must be a JSON object of Script fields")
    fields = dict(data)
    if isinstance(fields.get("audio"), str):
        fields["audio"] = base64.b64decode(fields["audio"])
    fields["function_calls"] = tuple(
        FunctionCall(**call) for call in fields.get("function_calls", ())
    )
    return Script(**fields)


# -- the child --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trio_realtime.testing``: serve until stdin closes or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_realtime.testing",
        description=(
            "Serve the fake Realtime API on 127.0.0.1. Writes the URL as the first line of "
            "stdout, serves until stdin closes or SIGTERM, then writes the statistics as one "
            "line of JSON."
        ),
    )
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    parser.add_argument("--dialect", choices=("ga", "beta"), default="ga")
    parser.add_argument("--model", default="gpt-realtime")
    parser.add_argument("--behavior", default=None, help="a JSON object of Behavior knobs, by name")
    args = parser.parse_args(argv)
    try:
        knobs = {} if args.behavior is None else json.loads(args.behavior)
        if not isinstance(knobs, dict):
            raise TypeError("--behavior must be a JSON object")
        behavior = behavior_from_json(knobs)
    except (ValueError, TypeError) as exc:
        parser.error(f"--behavior: {exc}")
    report = trio.run(_serve, args.dialect, behavior, args.model, args.port)
    sys.stdout.write(report.to_json() + "\n")
    sys.stdout.flush()
    return 0


async def _serve(
    dialect: Literal["ga", "beta"], behavior: Behavior, model: str, port: int
) -> ServerReport:
    async with open_fake_server(
        dialect=dialect, behavior=behavior, model=model, port=port
    ) as server:
        sys.stdout.write(server.url + "\n")
        sys.stdout.flush()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_stdin_closes, nursery.cancel_scope)
            nursery.start_soon(_until_signalled, nursery.cancel_scope)
    # Every connection has ended now: the report is final.
    return ServerReport.of(server)


async def _until_stdin_closes(done: trio.CancelScope) -> None:
    if sys.platform == "win32":  # pragma: no cover - no FdStream there
        while await trio.to_thread.run_sync(sys.stdin.buffer.read1, 4096, abandon_on_cancel=True):
            pass
    else:
        async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
            while await stdin.receive_some():
                pass
    done.cancel()


async def _until_signalled(done: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            done.cancel()
            return


# -- the parent -------------------------------------------------------------------------------


class FakeServerProcessError(RuntimeError):
    """The child process failed to start, or ended without its report."""


@attrs.define(eq=False)
class FakeServerProcess:
    """A fake server running in a child process; made by ``open_fake_server_process()``.

    ``url`` is its OpenAI GA URL (the Azure paths are served on the same port too);
    ``report`` is None while it runs and its ``ServerReport`` once it stopped through
    ``stop()`` or the end of the block (None after ``kill()``). ``returncode`` likewise.
    """

    url: str
    port: int
    _process: trio.Process
    _stdout: _LineReader
    report: ServerReport | None = None

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def stop(self) -> ServerReport:
        """Stop the server (its stdin is closed: it drops every connection) and wait for its
        report; the child is killed if it takes longer than a few seconds to exit. Calling it
        again returns the same report. Raises ``FakeServerProcessError`` if the child ended
        without a report (killed, or it crashed)."""
        if self.report is not None:
            return self.report
        process = self._process
        text = b""
        if process.stdin is not None:
            await process.stdin.aclose()
        # Read while it exits: a long report must not fill the pipe and stall the child.
        with trio.move_on_after(_EXIT_SECONDS):
            text = await self._stdout.rest()
        await _end(process)
        if self._process.returncode != 0 or not text.strip():
            raise FakeServerProcessError(
                f"the fake server process ended with status {self._process.returncode} "
                "and no report"
            )
        self.report = ServerReport.from_json(text)
        return self.report

    async def kill(self) -> None:
        """Kill the child at once (SIGKILL): every connection vanishes without a closing
        handshake, as when a server crashes. No report is made. Waits until it has exited."""
        self._process.kill()
        with trio.CancelScope(shield=True):
            await self._process.wait()


@asynccontextmanager
async def open_fake_server_process(
    *,
    dialect: Literal["ga", "beta"] = "ga",
    behavior: Behavior | Mapping[str, Any] | None = None,
    model: str = "gpt-realtime",
    port: int = 0,
) -> AsyncIterator[FakeServerProcess]:
    """Run the fake server in a process of its own (``python -m trio_realtime.testing``, with
    this interpreter) for the duration of the block; yield it once it listens.

    ``behavior`` is a ``Behavior`` (without a ``script`` factory) or a JSON-able mapping of
    knobs as ``--behavior`` takes them. Waits at most 30 seconds for the child to listen,
    then raises ``FakeServerProcessError`` with the child's stderr. Whatever ends the block
    (normal exit, an exception, cancellation), the child is ended: its stdin is closed, and
    it is killed if it has not exited within 5 seconds. After a normal exit ``report`` holds
    the child's report; leaving the block by an exception or cancellation does not wait to
    read it.
    """
    command = [
        sys.executable,
        "-m",
        "trio_realtime.testing",
        "--port",
        str(port),
        "--dialect",
        dialect,
        "--model",
        model,
    ]
    if behavior is not None:
        command += ["--behavior", json.dumps(behavior_to_json(behavior))]
    process = await trio.lowlevel.open_process(command, stdin=_PIPE, stdout=_PIPE, stderr=_PIPE)
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = bytearray()
    stderr_read = trio.Event()
    try:
        with unwrap_lone_exception():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, process.stderr, stderr, stderr_read)
                stdout = _LineReader(process.stdout)
                url = ""
                with trio.move_on_after(_START_SECONDS):
                    url = (await stdout.line()).decode().strip()
                if not url.startswith("ws://"):
                    await _end(process)
                    with trio.move_on_after(_EXIT_SECONDS):
                        await stderr_read.wait()
                    raise FakeServerProcessError(
                        "the fake server process did not start "
                        f"(status {process.returncode}): " + stderr.decode(errors="replace").strip()
                    )
                port = int(url.split(":")[2].split("/")[0])
                server = FakeServerProcess(url=url, port=port, process=process, stdout=stdout)
                yield server
                if process.returncode is None:
                    await server.stop()
                nursery.cancel_scope.cancel()
    finally:
        await _end(process)


_PIPE = -1  # subprocess.PIPE, without importing subprocess


async def _end(process: trio.Process) -> None:
    """Close the child's stdin, give it a few seconds to exit, then kill it. Shielded:
    always completes, promptly."""
    with trio.CancelScope(shield=True):
        if process.stdin is not None:
            await process.stdin.aclose()
        with trio.move_on_after(_EXIT_SECONDS):
            await process.wait()
            return
        process.kill()
        await process.wait()


async def _drain(stream: trio.abc.ReceiveStream, kept: bytearray, done: trio.Event) -> None:
    """Read ``stream`` to its end, keeping its last bytes in ``kept``."""
    while data := await stream.receive_some():
        kept += data
        del kept[: max(0, len(kept) - _STDERR_KEEP)]
    done.set()


@attrs.define(eq=False)
class _LineReader:
    stream: trio.abc.ReceiveStream
    buffer: bytearray = attrs.Factory(bytearray)

    async def line(self) -> bytes:
        """The next line (with its newline), or what is left at the end of the stream."""
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some()
            if not data:
                break
            self.buffer += data
        end = self.buffer.find(b"\n") + 1 or len(self.buffer)
        line = bytes(self.buffer[:end])
        del self.buffer[:end]
        return line

    async def rest(self) -> bytes:
        """Everything up to the end of the stream."""
        while data := await self.stream.receive_some():
            self.buffer += data
        rest = bytes(self.buffer)
        self.buffer.clear()
        return rest
