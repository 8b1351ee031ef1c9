"""What every benchmark shares: arguments, the benchmark server process, raw WebSocket
clients, percentiles, tables and JSON."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import trio
from trio_websocket import WebSocketConnection

from trio_realtime.testing._raw_client import open_raw_client

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "bench_server.py"
#: What trio-realtime uses by default (SessionConfig.receive_buffer_size).
RECEIVE_BUFFER = 64 * 1024
#: trio-websocket's own default.
DEFAULT_RECEIVE_BUFFER = 4 * 1024
MAX_MESSAGE_SIZE = 32 * 2**20
#: The seed's fixed wait before each queued response.
SEED_DELAY = 0.1
CONFLICT = "conversation_already_has_active_response"


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a small, fast run (the test suite's)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results here")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[rank])


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, p50, p99, p99.9, max and mean of ``values`` (in their own unit)."""
    ordered = sorted(values)
    n = len(ordered)
    return {
        "n": n,
        "p50": percentile(ordered, 50),
        "p99": percentile(ordered, 99),
        "p99_9": percentile(ordered, 99.9),
        "max": float(ordered[-1]) if n else float("nan"),
        "mean": sum(ordered) / n if n else float("nan"),
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# ---------------------------------------------------------------- output


def fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Print ``rows`` as a Markdown table under ``title``; return the table's text."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in cells:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    text = "\n".join(lines)
    print(f"\n{title}\n\n{text}\n", flush=True)
    return text


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("trio", "trio-websocket", "wsproto", "trio-realtime", "openai", "websockets"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def write_json(path: Path | None, results: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine_info(), **results}, indent=2) + "\n")
    print(f"wrote {path}")


# ---------------------------------------------------------------- the server process


@contextmanager
def bench_server() -> Iterator[int]:
    """Run ``bench_server.py`` in a process of its own; yield its port. It ends when we do."""
    with bench_server_ports() as (port, _call_port):
        yield port


@contextmanager
def bench_server_ports() -> Iterator[tuple[int, int]]:
    """``bench_server()``, yielding its port and the port of its lean call server (the live
    calls of ``density.py``: ``mode=call`` on a hand-written WebSocket)."""
    raise_fd_limit()
    process = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the benchmark server did not start: {line!r}")
        words = line.split()
        yield int(words[1]), int(words[3])
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def url(port: int, **query: Any) -> str:
    q = urllib.parse.urlencode({"model": "gpt-realtime", **query})
    return f"ws://127.0.0.1:{port}/v1/realtime?{q}"


@asynccontextmanager
async def open_raw_ws(
    port: int, resource_path: str, *, receive_buffer_size: int = RECEIVE_BUFFER
) -> AsyncIterator[WebSocketConnection]:
    """A bare trio-websocket client (the fake server's test client, which opens and closes the
    TCP stream itself: trio-websocket 0.12.2 leaves it open when the server closes first)."""
    async with open_raw_client(
        port, resource_path, receive_buffer_size=receive_buffer_size
    ) as client:
        yield client.ws


def resource_of(port: int, **query: Any) -> str:
    return url(port, **query).split(f"127.0.0.1:{port}", 1)[1]


async def server_report(port: int, *, tag: str | None = None, prefix: str | None = None) -> Any:
    """The server's statistics for the connections with ``tag`` (or tags starting ``prefix``)."""
    async with open_raw_ws(port, "/control") as ws:
        request = {"op": "report", "tag": tag} if prefix is None else {"prefix": prefix}
        await ws.send_message(json.dumps(request))
        return json.loads(await ws.get_message())


def rss_bytes() -> int:
    """Resident set size of this process now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------- the seed's algorithm


class SeedClient:
    """The seed's algorithm: a busy flag, a FIFO list, a fixed delay before each queued send.

    Kind to the seed: it also marks the conversation busy on any ``response.created`` (so it
    notices server-started responses), and its delayed send runs in a task of its own instead
    of stalling the reader.
    """

    def __init__(self, ws: Any, nursery: trio.Nursery, delay: float = SEED_DELAY) -> None:
        self.ws = ws
        self.nursery = nursery
        self.delay = delay
        self.busy = False
        self.queue: list[dict[str, Any]] = []
        self.completed: set[str] = set()
        self.rejections = 0
        self.changed = trio.Event()
        self._ids = 0

    async def request(self, body: dict[str, Any]) -> None:
        if self.busy:
            self.queue.append(body)
            await trio.lowlevel.checkpoint()
            return
        self.busy = True
        await self._send(body)

    async def _send(self, body: dict[str, Any]) -> None:
        self._ids += 1
        event = {"type": "response.create", "event_id": f"evt_seed_{self._ids}", "response": body}
        await self.ws.send_message(json.dumps(event))

    async def _send_next_later(self) -> None:
        await trio.sleep(self.delay)
        if self.queue:
            self.busy = True
            await self._send(self.queue.pop(0))

    async def reader(self) -> None:
        while True:
            event = json.loads(await self.ws.get_message())
            kind = event["type"]
            if kind == "response.created":
                self.busy = True
            elif kind in ("response.done", "response.cancelled"):
                self.busy = False
                metadata = event["response"].get("metadata") or {}
                if "i" in metadata:
                    self.completed.add(metadata["i"])
                if self.queue:
                    self.nursery.start_soon(self._send_next_later)
            elif kind == "error" and event["error"].get("code") == CONFLICT:
                self.rejections += 1
            self.changed.set()
            self.changed = trio.Event()


@contextlib.contextmanager
def json_parser(*, fast: bool) -> Iterator[None]:
    """Run the library with ``orjson`` (``fast``, as the ``[fast]`` extra does) or with the
    standard library's JSON (the core install), whatever is installed here."""
    from trio_realtime import _codec

    saved = _codec._loads, _codec._dumps
    _codec._loads, _codec._dumps = _codec.json_codec(orjson_if_installed=fast)
    try:
        yield
    finally:
        _codec._loads, _codec._dumps = saved


#: The extra that brings each optional package a contender needs.
EXTRA_OF = {
    "websockets": "fast",
    "orjson": "fast",
    "openai": "bench",
    "opentelemetry.sdk": "otel",
}
#: What the contenders on the fast transport need.
FAST = ("websockets", "orjson")
T = TypeVar("T")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # (its parent package is missing, or blocked)
        return False


def available(contenders: Mapping[str, T], needs: Mapping[str, Sequence[str]]) -> dict[str, T]:
    """The contenders whose packages are installed, in order. Each other one is skipped with
    one line saying which extra brings it (``trio-realtime bench`` relays these lines)."""
    kept: dict[str, T] = {}
    for name, contender in contenders.items():
        missing = [m for m in needs.get(name, ()) if not _installed(m)]
        if not missing:
            kept[name] = contender
            continue
        wanted = {EXTRA_OF[m] for m in missing}
        if "bench" in wanted:  # (the bench extra brings the fast one)
            wanted.discard("fast")
        extras = ",".join(sorted(wanted))
        print(
            f"skipped {name}: needs {' and '.join(missing)} "
            f"(pip install 'trio-realtime[{extras}]')",
            flush=True,
        )
    return kept
