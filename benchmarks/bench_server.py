"""A minimal Realtime server for the benchmarks, timed on the server side.

Run ``python benchmarks/bench_server.py``: it listens on 127.0.0.1 (a free port), prints
``PORT <n>`` and serves until its standard input closes (the parent ended) or ``--max-seconds``
pass. Every benchmark runs it in a process of its own, so the clients measured get a core of
their own and all of them meet the same server.

It speaks just enough of the protocol: ``session.created`` on connect; ``response.create`` gets
``response.created`` and ``response.done`` echoing the request's ``metadata``; a
``response.create`` while an in-band response is active gets the
``conversation_already_has_active_response`` error (echoing the client ``event_id``).

The URL query chooses the behaviour of one connection:

- ``tag=NAME``: the key its statistics are kept under (``/control`` reports them);
- ``duration=S``: each response lasts S seconds between created and done (default 0: both
  are written at once, by the task reading the requests);
- ``mode=echo`` (default): just that;
- ``mode=collide&vad=S&seed=N``: the server also starts responses by itself (no metadata), on
  average every ``vad`` seconds when the conversation is free, like voice activity detection;
  random times from ``seed``;
- ``mode=stream&count=N&size=B``: each response streams ``count`` deltas between created and
  done, ``response.output_audio.delta`` of ``size`` base64 characters (``size=0``: small
  ``response.output_audio_transcript.delta`` events). The deltas are framed in advance and
  written to the socket in large chunks, so the server is never what is measured.

Handoffs: per connection, the time from the moment ``response.done`` was written to the
socket to the moment the next ``response.create`` was read (``time.perf_counter_ns``).

``/control`` is a WebSocket taking ``{"op": "report", "tag": T}`` (or ``"prefix": P`` for
every tag starting with P) and answering the statistics as one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import sys
import time
import urllib.parse
from functools import partial
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

STREAM_RESPONSE_ID = "resp_stream"
CONFLICT_MESSAGE = (
    "Conversation already has an active response in progress: {rid}. "
    "Wait until the response is finished before creating a new one."
)


class ConnStats:
    __slots__ = (
        "active",
        "created",
        "done",
        "handoffs_ns",
        "max_active",
        "pending_done_ns",
        "rejections",
        "server_started",
    )

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self.created = 0
        self.done = 0
        self.rejections = 0
        self.server_started = 0
        self.handoffs_ns: list[int] = []
        self.pending_done_ns: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": 1,
            "max_active": self.max_active,
            "created": self.created,
            "done": self.done,
            "rejections": self.rejections,
            "server_started": self.server_started,
            "handoffs_ns": self.handoffs_ns,
        }


def _merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "connections": 0,
        "max_active": 0,
        "created": 0,
        "done": 0,
        "rejections": 0,
        "server_started": 0,
        "handoffs_ns": [],
    }
    for report in reports:
        for key in ("connections", "created", "done", "rejections", "server_started"):
            merged[key] += report[key]
        merged["max_active"] = max(merged["max_active"], report["max_active"])
        merged["handoffs_ns"].extend(report["handoffs_ns"])
    return merged


def _text_frame(payload: bytes) -> bytes:
    """An unmasked server-to-client WebSocket text frame."""
    n = len(payload)
    if n < 126:
        header = bytes([0x81, n])
    elif n < 65536:
        header = bytes([0x81, 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x81, 127]) + n.to_bytes(8, "big")
    return header + payload


class Server:
    def __init__(self) -> None:
        self.stats: dict[str, list[ConnStats]] = {}
        self._ids = 0
        self._bursts: dict[tuple[int, int], list[bytes]] = {}

    def new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_{self._ids}"

    async def handle(self, request: WebSocketRequest) -> None:
        try:
            ws = await request.accept()
        except ConnectionClosed:
            return
        parts = urllib.parse.urlsplit(request.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        try:
            if parts.path.startswith("/control"):
                await self._control(ws)
            else:
                await Connection(self, ws, query).run()
        except* ConnectionClosed:
            pass  # the client left: the normal end of a connection
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await ws.aclose()

    async def _control(self, ws: WebSocketConnection) -> None:
        while True:
            request = json.loads(await ws.get_message())
            if "prefix" in request:
                prefix = request["prefix"]
                found = [s for tag, ss in self.stats.items() if tag.startswith(prefix) for s in ss]
            else:
                found = self.stats.get(request.get("tag", ""), [])
            await ws.send_message(json.dumps(_merge([s.as_dict() for s in found])))

    def burst(self, count: int, size: int) -> list[bytes]:
        """The stream of deltas, framed, in chunks of about 1 MiB (cached by shape)."""
        key = (count, size)
        if key not in self._bursts:
            if size > 0:
                raw = base64.b64encode(random.Random(1).randbytes(size * 3 // 4)).decode()
                event = {
                    "type": "response.output_audio.delta",
                    "response_id": STREAM_RESPONSE_ID,
                    "item_id": "item_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": raw,
                }
            else:
                event = {
                    "type": "response.output_audio_transcript.delta",
                    "response_id": STREAM_RESPONSE_ID,
                    "item_id": "item_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": "Hello ",
                }
            chunks: list[bytes] = []
            chunk = bytearray()
            for i in range(count):
                frame = _text_frame(json.dumps({**event, "event_id": f"evt_s{i}"}).encode())
                chunk += frame
                if len(chunk) >= 2**20:
                    chunks.append(bytes(chunk))
                    chunk = bytearray()
            if chunk:
                chunks.append(bytes(chunk))
            self._bursts[key] = chunks
        # The frames are cached, so every streamed response has the id STREAM_RESPONSE_ID.
        return self._bursts[key]


class Connection:
    def __init__(self, server: Server, ws: WebSocketConnection, query: dict[str, str]) -> None:
        self.server = server
        self.ws = ws
        self.mode = query.get("mode", "echo")
        self.stats = ConnStats()
        server.stats.setdefault(query.get("tag", ""), []).append(self.stats)
        self.duration = float(query.get("duration", "0"))
        self.vad = float(query.get("vad", "0.3"))
        self.rng = random.Random(int(query.get("seed", "0")))
        self.count = int(query.get("count", "1000"))
        self.size = int(query.get("size", "8000"))
        self.conversation_id = server.new_id("conv")
        self.in_band: str | None = None
        self.nursery: trio.Nursery | None = None

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self.server.new_id("evt"))
        await self.ws.send_message(json.dumps(event))

    def _response(self, rid: str, status: str, metadata: Any) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "realtime.response",
            "status": status,
            "status_details": None,
            "metadata": metadata,
            "conversation_id": self.conversation_id,
            "output": [],
        }

    async def run(self) -> None:
        await self.send(
            {
                "type": "session.created",
                "session": {
                    "id": self.server.new_id("sess"),
                    "object": "realtime.session",
                    "type": "realtime",
                    "model": "gpt-realtime",
                    "output_modalities": ["text"],
                },
            }
        )
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            if self.mode == "collide":
                nursery.start_soon(self._voice_activity)
            try:
                await self._reader()
            finally:
                nursery.cancel_scope.cancel()

    async def _reader(self) -> None:
        stats = self.stats
        while True:
            message = await self.ws.get_message()
            received = time.perf_counter_ns()
            event = json.loads(message)
            if event.get("type") != "response.create":
                continue
            if stats.pending_done_ns is not None and self.in_band is None:
                stats.handoffs_ns.append(received - stats.pending_done_ns)
            stats.pending_done_ns = None
            body = event.get("response") or {}
            if self.in_band is not None:
                stats.rejections += 1
                await self.send(
                    {
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "code": "conversation_already_has_active_response",
                            "message": CONFLICT_MESSAGE.format(rid=self.in_band),
                            "param": None,
                            "event_id": event.get("event_id"),
                        },
                    }
                )
                continue
            rid = self._take_slot()
            if self.duration <= 0:
                await self._respond(rid, body.get("metadata"), 0.0)
            else:
                assert self.nursery is not None
                self.nursery.start_soon(self._respond, rid, body.get("metadata"), self.duration)

    def _take_slot(self) -> str:
        rid = STREAM_RESPONSE_ID if self.mode == "stream" else self.server.new_id("resp")
        self.in_band = rid
        self.stats.active += 1
        self.stats.max_active = max(self.stats.max_active, self.stats.active)
        return rid

    async def _respond(self, rid: str, metadata: Any, duration: float) -> None:
        stats = self.stats
        stats.created += 1
        await self.send(
            {"type": "response.created", "response": self._response(rid, "in_progress", metadata)}
        )
        if self.mode == "stream":
            ws = self.ws
            async with ws._stream_lock:
                for chunk in self.server.burst(self.count, self.size):
                    await ws._stream.send_all(chunk)
        elif duration > 0:
            await trio.sleep(duration)
        stats.active -= 1
        self.in_band = None
        stats.done += 1
        await self.send(
            {"type": "response.done", "response": self._response(rid, "completed", metadata)}
        )
        stats.pending_done_ns = time.perf_counter_ns()

    async def _voice_activity(self) -> None:
        while True:
            await trio.sleep(self.rng.expovariate(1 / self.vad))
            if self.in_band is None:
                self.stats.server_started += 1
                rid = self._take_slot()
                self.stats.pending_done_ns = None
                assert self.nursery is not None
                self.nursery.start_soon(self._respond, rid, None, self.duration)


async def _wait_stdin_closed() -> None:
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        while await stream.receive_some(4096):
            pass


async def serve(port: int, max_seconds: float) -> None:
    server = Server()
    with trio.move_on_after(max_seconds):
        async with trio.open_nursery() as nursery:
            ws_server = await nursery.start(
                partial(
                    serve_websocket,
                    server.handle,
                    "127.0.0.1",
                    port,
                    None,
                    max_message_size=16 * 2**20,
                )
            )
            print(f"PORT {ws_server.port}", flush=True)
            await _wait_stdin_closed()
            nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trio.run(serve, args.port, args.max_seconds)


if __name__ == "__main__":
    main()
