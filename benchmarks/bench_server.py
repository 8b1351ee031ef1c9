"""A minimal Realtime server for the benchmarks, timed on the server side.

Run ``python benchmarks/bench_server.py``: it listens on 127.0.0.1 (a free port), prints
``PORT <n> CALL <m>`` and serves until its standard input closes (the parent ended) or
``--max-seconds`` pass. Every benchmark runs it in a process of its own, so the clients
measured get a core of their own and all of them meet the same server.

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
- ``mode=call&reply=K&tick=T``: a live call (``density.py``). Each response streams, in real
  time, one ``response.output_audio.delta`` (40 ms of 24 kHz PCM16) every ``tick`` seconds
  (default 0.04) and one ``response.output_audio_transcript.delta`` every other tick, ``reply``
  ticks long (default 50: two seconds), then ``response.done``. Each delta's ``event_id`` is
  ``evt_d<ns>``: ``time.monotonic_ns()`` when it was written, so the client can tell how late
  it saw it. An ``input_audio_buffer.append`` whose ``event_id`` is ``a<ns>`` (the moment the
  client meant to send it, same clock) counts towards the append lateness the server reports
  (``w<ns>``: a warm-up append, counted but not timed). Port ``m`` serves this mode (and
  only this one, whatever the query says) on a hand-written WebSocket framing, a fraction
  of trio-websocket's work per message: the server carries every call at once, and must
  stay far from its own limit while the client is measured.

Handoffs: per connection, the time from the moment ``response.done`` was written to the
socket to the moment the next ``response.create`` was read (``time.perf_counter_ns``).

``/control`` is a WebSocket taking ``{"op": "report", "tag": T}`` (or ``"prefix": P`` for
every tag starting with P) and answering the statistics as one JSON object. Call-mode
lateness comes summarized (``append_lateness_ms``, ``server_lag_ms``: n, p50, p99, max), not
sample by sample.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import re
import resource
import sys
import time
import urllib.parse
from functools import partial
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

STREAM_RESPONSE_ID = "resp_stream"
#: 40 ms of 24 kHz mono PCM16, base64: one call-mode audio delta.
CALL_AUDIO = base64.b64encode(random.Random(2).randbytes(1920)).decode()
_APPEND_ID = re.compile(rb'"event_id":\s*"([aw])(\d+)"')
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONFLICT_MESSAGE = (
    "Conversation already has an active response in progress: {rid}. "
    "Wait until the response is finished before creating a new one."
)


class ConnStats:
    __slots__ = (
        "active",
        "append_lateness_ns",
        "appends",
        "created",
        "done",
        "handoffs_ns",
        "max_active",
        "pending_done_ns",
        "rejections",
        "server_lag_ns",
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
        self.appends = 0
        self.append_lateness_ns: list[int] = []
        self.server_lag_ns: list[int] = []

    def as_dict(self) -> dict[str, Any]:
        return {
            "appends": self.appends,
            "append_lateness_ns": self.append_lateness_ns,
            "server_lag_ns": self.server_lag_ns,
            "connections": 1,
            "max_active": self.max_active,
            "created": self.created,
            "done": self.done,
            "rejections": self.rejections,
            "server_started": self.server_started,
            "handoffs_ns": self.handoffs_ns,
        }


def _lateness_ms(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[max(0, min(n - 1, round(q / 100 * n + 0.5) - 1))] / 1e6 if n else 0.0

    return {"n": n, "p50": rank(50), "p99": rank(99), "max": ordered[-1] / 1e6 if n else 0.0}


def _merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    lateness = [x for report in reports for x in report.pop("append_lateness_ns")]
    lags = [x for report in reports for x in report.pop("server_lag_ns")]
    merged: dict[str, Any] = {
        "appends": sum(report.pop("appends") for report in reports),
        "append_lateness_ms": _lateness_ms(lateness),
        "server_lag_ms": _lateness_ms(lags),
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
            report = _merge([s.as_dict() for s in found])
            report["server_cpu_seconds"] = time.process_time()
            await ws.send_message(json.dumps(report))

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
        self.reply = int(query.get("reply", "50"))
        self.tick = float(query.get("tick", "0.04"))
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
            if self.mode == "call" and "input_audio_buffer.append" in message[:64]:
                self._note_append(message)
                continue
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
            if self.mode == "call":
                assert self.nursery is not None
                self.nursery.start_soon(self._respond, rid, body.get("metadata"), 0.0)
            elif self.duration <= 0:
                await self._respond(rid, body.get("metadata"), 0.0)
            else:
                assert self.nursery is not None
                self.nursery.start_soon(self._respond, rid, body.get("metadata"), self.duration)

    def _note_append(self, message: str | bytes) -> None:
        now = time.monotonic_ns()
        self.stats.appends += 1
        data = message.encode() if isinstance(message, str) else message
        found = _APPEND_ID.search(data)
        if found is not None and found[1] == b"a":
            self.stats.append_lateness_ns.append(now - int(found[2]))

    async def _speak(self, rid: str) -> None:
        """Stream a call's reply in real time: an audio delta every tick, a transcript delta
        every other tick, each stamped with the moment it is written."""
        ws = self.ws
        audio = (
            f'","response_id":"{rid}","item_id":"item_{rid}","output_index":0,'
            f'"content_index":0,"delta":"{CALL_AUDIO}"}}'
        ).encode()
        words = (
            f'","response_id":"{rid}","item_id":"item_{rid}","output_index":0,'
            '"content_index":0,"delta":"word "}'
        ).encode()
        audio_head = b'{"type":"response.output_audio.delta","event_id":"evt_d'
        words_head = b'{"type":"response.output_audio_transcript.delta","event_id":"evt_d'
        start = trio.current_time()
        lags = self.stats.server_lag_ns
        for k in range(self.reply):
            due = start + k * self.tick
            await trio.sleep_until(due)
            lags.append(int((trio.current_time() - due) * 1e9))
            stamp = str(time.monotonic_ns()).encode()
            frames = _text_frame(audio_head + stamp + audio)
            if k % 2 == 1:
                frames += _text_frame(words_head + stamp + words)
            async with ws._stream_lock:
                await ws._stream.send_all(frames)

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
        if self.mode == "call":
            try:
                await self._speak(rid)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the client hung up mid-reply
        elif self.mode == "stream":
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


# ---------------------------------------------------------------- the lean call server


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


class CallConnection:
    """``mode=call`` on a bare socket: the WebSocket framing written out by hand (about a
    tenth of a full WebSocket stack's work per message), so that the server, which carries
    every call at once, stays far from its own limit while the client is measured.

    Speaks the same protocol as ``Connection`` in call mode, and keeps the same statistics.
    """

    def __init__(self, server: Server, stream: trio.SocketStream, query: dict[str, str]) -> None:
        self.server = server
        self.stream = stream
        self.stats = ConnStats()
        server.stats.setdefault(query.get("tag", ""), []).append(self.stats)
        self.reply = int(query.get("reply", "50"))
        self.tick = float(query.get("tick", "0.04"))
        self.conversation_id = server.new_id("conv")
        self.in_band: str | None = None
        self.lock = trio.StrictFIFOLock()

    async def send_frames(self, frames: bytes) -> None:
        async with self.lock:
            await self.stream.send_all(frames)

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self.server.new_id("evt"))
        await self.send_frames(_text_frame(json.dumps(event).encode()))

    async def run(self, buffered: bytes) -> None:
        await self.send(
            {
                "type": "session.created",
                "session": {
                    "id": self.server.new_id("sess"),
                    "object": "realtime.session",
                    "type": "realtime",
                    "model": "gpt-realtime",
                    "output_modalities": ["audio"],
                },
            }
        )
        async with trio.open_nursery() as nursery:
            try:
                await self._read(nursery, bytearray(buffered))
            finally:
                nursery.cancel_scope.cancel()

    async def _read(self, nursery: trio.Nursery, buf: bytearray) -> None:
        fragments: list[bytes] = []
        while True:
            while len(buf) >= 2:
                n = buf[1] & 0x7F
                pos = 2
                if n == 126:
                    if len(buf) < 4:
                        break
                    n, pos = int.from_bytes(buf[2:4], "big"), 4
                elif n == 127:
                    if len(buf) < 10:
                        break
                    n, pos = int.from_bytes(buf[2:10], "big"), 10
                masked = buf[1] & 0x80
                if len(buf) < pos + (4 if masked else 0) + n:
                    break
                mask = bytes(buf[pos : pos + 4]) if masked else b""
                pos += 4 if masked else 0
                payload = bytes(buf[pos : pos + n])
                opcode, fin = buf[0] & 0x0F, buf[0] & 0x80
                del buf[: pos + n]
                if masked:
                    payload = _unmask(payload, mask)
                if opcode == 0x8:  # close: answer it, and the connection is over
                    await self.send_frames(bytes([0x88, len(payload[:2])]) + payload[:2])
                    return
                if opcode == 0x9:
                    await self.send_frames(bytes([0x8A, len(payload)]) + payload)
                    continue
                if opcode in (0x0, 0x1, 0x2):
                    fragments.append(payload)
                    if fin:
                        message = b"".join(fragments)
                        fragments.clear()
                        await self._message(nursery, message)
            data = await self.stream.receive_some(65536)
            if not data:
                return
            buf += data

    async def _message(self, nursery: trio.Nursery, message: bytes) -> None:
        if b"input_audio_buffer.append" in message[:64]:
            now = time.monotonic_ns()
            self.stats.appends += 1
            found = _APPEND_ID.search(message)
            if found is not None and found[1] == b"a":
                self.stats.append_lateness_ns.append(now - int(found[2]))
            return
        event = json.loads(message)
        if event.get("type") != "response.create":
            return
        stats = self.stats
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
            return
        rid = self.in_band = self.server.new_id("resp")
        stats.active += 1
        stats.max_active = max(stats.max_active, stats.active)
        metadata = (event.get("response") or {}).get("metadata")
        nursery.start_soon(self._respond, rid, metadata)

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

    async def _respond(self, rid: str, metadata: Any) -> None:
        stats = self.stats
        stats.created += 1
        await self.send(
            {"type": "response.created", "response": self._response(rid, "in_progress", metadata)}
        )
        tail = f'","response_id":"{rid}","item_id":"item_{rid}","output_index":0,"content_index":0'
        audio = f'{tail},"delta":"{CALL_AUDIO}"}}'.encode()
        words = f'{tail},"delta":"word "}}'.encode()
        audio_head = b'{"type":"response.output_audio.delta","event_id":"evt_d'
        words_head = b'{"type":"response.output_audio_transcript.delta","event_id":"evt_d'
        start = trio.current_time()
        for k in range(self.reply):
            due = start + k * self.tick
            await trio.sleep_until(due)
            stats.server_lag_ns.append(int((trio.current_time() - due) * 1e9))
            stamp = str(time.monotonic_ns()).encode()
            frames = _text_frame(audio_head + stamp + audio)
            if k % 2 == 1:
                frames += _text_frame(words_head + stamp + words)
            await self.send_frames(frames)
        stats.active -= 1
        self.in_band = None
        stats.done += 1
        await self.send(
            {"type": "response.done", "response": self._response(rid, "completed", metadata)}
        )


async def _handshake(stream: trio.SocketStream) -> tuple[str, bytes]:
    """Read the HTTP upgrade request, accept it; the request's path and what followed it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise trio.BrokenResourceError("closed during the handshake")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = {
        name.strip().lower(): value.strip()
        for name, value in (line.split(":", 1) for line in lines[1:] if ":" in line)
    }
    digest = hashlib.sha1((headers["sec-websocket-key"] + _WS_GUID).encode()).digest()
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + base64.b64encode(digest) + b"\r\n\r\n"
    )
    return path, rest


async def _serve_call(server: Server, stream: trio.SocketStream) -> None:
    try:
        async with stream:
            path, rest = await _handshake(stream)
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))
            await CallConnection(server, stream, query).run(rest)
    except* (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client left


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
            [listener] = await nursery.start(
                partial(trio.serve_tcp, partial(_serve_call, server), 0, host="127.0.0.1")
            )
            call_port = listener.socket.getsockname()[1]
            print(f"PORT {ws_server.port} CALL {call_port}", flush=True)
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
