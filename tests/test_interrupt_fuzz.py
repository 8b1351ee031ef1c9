"""Issue 15's proof: an application that barges in at random moments.

Against the fake server streaming audio at a multiple of real time, with out-of-band replies
and voice-activity replies (some cancelling the in-band reply themselves) mixed in, the
application calls ``session.interrupt(played_ms=...)`` at random moments with random positions
(None, 0, within, past what arrived), then asks for its next reply. Seeded: every run plays
the same rounds (the timing of the wire still varies). Checked after each interruption:

- every response the client knew to be running when it called ``interrupt()`` (its
  ``response.created`` arrived, its ``response.done`` had not) was cancelled by id, is on the
  result, and ended before ``interrupt()`` returned; no ``response.cancel`` without an id;
- at most one truncate, the one on the result, never at 0, never past the audio the client had
  received for that item when it called, never past ``played_ms``;
- the server answered nothing with an error (so no truncate past the generated audio), and
  the result holds no error;
- the next reply is accepted on the first try and completes.

And over the run: at most one in-band response active at once (the server's statistics, and
counted again from what it sent).

``benchmarks/interrupt.py`` runs the same driver (:func:`barge_in`) to time ``interrupt()``.
"""

from __future__ import annotations

import base64
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio

from trio_realtime import Interruption, RealtimeSession, SessionConfig, open_session
from trio_realtime.testing import Behavior, FakeConnection, FakeRealtimeServer, open_fake_server

pytestmark = pytest.mark.usefixtures("transport")

SEED = 15
ROUNDS = 100  #: per transport: 200 interruptions in all
#: 20 ms chunks at 40 times real time: a second of reply streams in 25 ms.
PACE = Behavior(audio_pace=40.0, audio_chunk_ms=20)
#: Big enough that the driver's snapshot never drops anything.
BUFFER = 1 << 20
AUDIO_DELTAS = ("response.output_audio.delta", "response.audio.delta")
SCENARIOS = ("in_band", "in_band_oob", "oob", "vad", "vad_barge", "vad_barge_now", "text", "queued")


def _speak(rng: random.Random) -> dict[str, Any]:
    """An audio reply of 0.3 to 2.4 s (10 ms a character)."""
    return {
        "output_modalities": ["audio"],
        "instructions": "Say exactly: " + "la " * rng.randint(10, 80),
    }


NEXT = {"output_modalities": ["audio"], "instructions": "Say exactly: next one"}


def _played(rng: random.Random) -> float | None:
    roll = rng.random()
    if roll < 0.2:
        return None
    if roll < 0.35:
        return 0
    if roll < 0.5:
        return rng.choice([9100, 100_000, 1e9])  # past anything that arrived
    if roll < 0.6:
        return rng.uniform(0, 5)
    return rng.uniform(0, 1500)


@attrs.define
class Check:
    """What one interruption looked like."""

    scenario: str
    played_ms: float | None
    result: Interruption
    known: set[str]  #: responses the client knew to be running when it called
    received_ms: dict[str, int]  #: audio received per item when it called
    sent: list[dict[str, Any]]  #: client events the server received from the call on
    latency: float  #: seconds from the call to its return


class Driver:
    """The application: one session, one server connection, everything it saw."""

    def __init__(
        self,
        server: FakeRealtimeServer,
        conn: FakeConnection,
        session: RealtimeSession,
        everything: Any,
        audio: Any,
    ) -> None:
        self.server = server
        self.conn = conn
        self.session = session
        self.everything = everything
        self.audio = audio
        self.seen: list[dict[str, Any]] = []
        self.running: set[str] = set()
        self.created: set[str] = set()
        self.audio_bytes: dict[str, int] = {}

    def _take(self, event: dict[str, Any]) -> None:
        self.seen.append(event)
        kind = event["type"]
        if kind == "response.created":
            self.running.add(event["response"]["id"])
            self.created.add(event["response"]["id"])
        elif kind == "response.done":
            self.running.discard(event["response"]["id"])
        elif kind in AUDIO_DELTAS:
            size = len(base64.b64decode(event["delta"]))
            self.audio_bytes[event["item_id"]] = self.audio_bytes.get(event["item_id"], 0) + size

    async def drain(self) -> None:
        """Take every event the reader handed out so far (no schedule point: the buffer is
        larger than the stream's yield interval)."""
        while self.everything.buffered:
            self._take(await self.everything.receive())

    async def until(self, predicate: Callable[[dict[str, Any]], bool], start: int) -> None:
        """Wait for a server event (from ``seen[start]`` on)."""
        while not any(predicate(e) for e in self.seen[start:]):
            self._take(await self.everything.receive())
        await self.drain()

    async def created_(self, response_id: Callable[[], str | None]) -> None:
        """Wait until the response's ``response.created`` was handed out."""
        while response_id() not in self.created:
            self._take(await self.everything.receive())
        await self.drain()

    async def chunks(self, n: int) -> None:
        """Let ``n`` audio deltas arrive, or every running response end."""
        await self.drain()
        while n > 0 and self.running:
            event = await self.everything.receive()
            self._take(event)
            n -= event["type"] in AUDIO_DELTAS
        while self.audio.buffered:  # played
            await self.audio.receive()

    async def interrupt(self, scenario: str, played_ms: float | None) -> Check:
        await self.drain()
        known = set(self.running)
        received_ms = {item: size // 48 for item, size in self.audio_bytes.items()}
        start = trio.current_time()
        result = await self.session.interrupt(played_ms=played_ms)
        latency = trio.current_time() - start
        return Check(scenario, played_ms, result, known, received_ms, [], latency)


async def _created(driver: Driver, rid: str) -> None:
    await driver.created_(lambda: rid)


async def one_round(driver: Driver, rng: random.Random, nursery: trio.Nursery) -> Check:
    session, conn = driver.session, driver.conn
    scenario = rng.choice(SCENARIOS)
    played_ms = _played(rng)
    wait = rng.randint(0, 12)
    voice: list[str] = []
    spoke = trio.Event()

    async def speak_up(interrupt: bool) -> None:
        voice.append(await conn.start_response(interrupt=interrupt))
        spoke.set()

    while driver.audio.buffered:  # the last reply's audio, played out
        await driver.audio.receive()
    tickets = []
    if scenario in ("in_band", "in_band_oob", "vad_barge", "vad_barge_now", "queued"):
        tickets.append(session.request_response(_speak(rng)))
    if scenario in ("in_band_oob", "oob"):
        tickets.append(session.request_response({**_speak(rng), "conversation": "none"}))
    if scenario == "text":
        session.request_response({"output_modalities": ["text"], "instructions": "Say: hi"})
    if scenario == "queued":
        wait = 0  # interrupt before the request even went out
    elif scenario != "text":
        for ticket in tickets:  # created: the user may talk over it now
            await driver.created_(lambda t=ticket: t.response_id)
        await driver.chunks(rng.randint(0, 4))
    if scenario == "vad":
        # The user speaks into a quiet conversation: the server answers by itself.
        async with trio.open_nursery() as inner:
            inner.start_soon(speak_up, False)
        await _created(driver, voice[0])
    elif scenario == "vad_barge":
        # The user speaks over the reply: the server cancels it and answers.
        async with trio.open_nursery() as inner:
            inner.start_soon(speak_up, True)
        await _created(driver, voice[0])
    elif scenario == "vad_barge_now":
        # The application interrupts on speech_started, as the README shows.
        start = len(driver.seen)
        nursery.start_soon(speak_up, True)
        await driver.until(lambda e: e["type"] == "input_audio_buffer.speech_started", start)
        wait = 0
    await driver.chunks(wait)
    check = await driver.interrupt(scenario, played_ms)
    if scenario == "vad_barge_now":
        await spoke.wait()
        await _created(driver, voice[0])
    # The application's next reply: accepted first time.
    ticket = session.request_response(NEXT)
    done = await ticket.wait_done()
    assert done.status == "completed", (scenario, done.status)
    assert ticket.timings.attempts == 1, scenario
    await driver.drain()
    return check


async def barge_in(
    rounds: int,
    seed: int,
    *,
    behavior: Behavior = PACE,
    verify: bool = True,
    transport: str | None = None,
) -> tuple[list[Check], FakeRealtimeServer, FakeConnection]:
    """``rounds`` interruptions at random moments; each checked after the next reply.
    ``transport`` overrides the configured one (the benchmark's; tests use the fixture)."""
    rng = random.Random(seed)
    config = SessionConfig(event_buffer=BUFFER)
    if transport is not None:
        config = attrs.evolve(config, transport=transport)
    checks: list[Check] = []
    async with (
        open_fake_server(behavior=behavior) as server,
        open_session(server.url, config=config) as session,
        session.subscribe() as everything,
        session.output_audio() as audio,
        trio.open_nursery() as nursery,
    ):
        conn = await server.wait_connection()
        await session.update_session({"type": "realtime", "output_modalities": ["audio"]})
        driver = Driver(server, conn, session, everything, audio)
        for _ in range(rounds):
            mark = len(server.received)
            check = await one_round(driver, rng, nursery)
            check.sent = server.received[mark:]
            if verify:
                verify_round(check, conn)
            checks.append(check)
        nursery.cancel_scope.cancel()
    return checks, server, conn


def verify_round(check: Check, conn: FakeConnection) -> None:
    where = (check.scenario, check.played_ms)
    result = check.result
    cancels = [e for e in check.sent if e["type"] == "response.cancel"]
    named = {c.get("response_id") for c in cancels}
    assert None not in named, where  # never a cancel that misses an out-of-band response
    assert check.known <= named, where
    assert check.known <= set(result.cancelled), where
    assert set(result.cancelled) <= named, where
    assert not check.known & set(conn.active_response_ids()), where
    assert result.errors == (), where
    truncates = [e for e in check.sent if e["type"] == "conversation.item.truncate"]
    if result.truncated is None:
        assert truncates == [], where
    else:
        [truncate] = truncates
        item_id, content_index, end = result.truncated
        assert (truncate["item_id"], truncate["content_index"], truncate["audio_end_ms"]) == (
            item_id,
            content_index,
            end,
        ), where
        assert 0 < end <= check.received_ms.get(item_id, 0), where
        if check.played_ms is not None:
            assert end <= check.played_ms, where
    deletes = [e["item_id"] for e in check.sent if e["type"] == "conversation.item.delete"]
    assert deletes == list(result.deleted), where


def unavoidable_errors(conn: FakeConnection) -> Counter[str]:
    """Every error the server sent, each checked to be a cancel that raced the response's own
    end (PROTOCOL §11: harmless, and it never surfaces); counted by how that response ended.

    Any client meets these two races at random moments: the response finished on the server
    while the application was calling ``interrupt()`` (its ``response.done`` crossing the
    cancel on the wire), or voice activity already cancelled it (``interrupt_response``) and
    the application interrupted on ``speech_started``, before that ``response.done`` arrived.
    Anything else (a conflict, a refused truncate or delete, a cancel of a response that was
    still running) fails here.
    """
    cancels = {e.get("event_id"): e for e in conn.received if e["type"] == "response.cancel"}
    ends = {e["response"]["id"]: e["response"] for e in conn.sent if e["type"] == "response.done"}
    causes: Counter[str] = Counter()
    for event in conn.sent:
        if event["type"] != "error":
            continue
        error = event["error"]
        assert error["code"] == "response_cancel_not_active", error
        cancel = cancels[error["event_id"]]
        end = ends[cancel["response_id"]]
        reason = (end.get("status_details") or {}).get("reason")
        assert end["status"] == "completed" or reason == "turn_detected", (error, end)
        causes["voice activity" if reason == "turn_detected" else "ended on its own"] += 1
    return causes


def in_band_overlap(conn: FakeConnection) -> int:
    """The most in-band responses active at once, counted from what the server sent."""
    active: set[str] = set()
    most = 0
    for event in conn.sent:
        response = event.get("response") or {}
        if event["type"] == "response.created" and response.get("conversation_id"):
            active.add(response["id"])
            most = max(most, len(active))
        elif event["type"] == "response.done":
            active.discard(response.get("id"))
    return most


async def test_two_hundred_random_interruptions() -> None:
    with trio.fail_after(120):
        checks, server, conn = await barge_in(ROUNDS, SEED)
    assert len(checks) == ROUNDS
    causes = unavoidable_errors(conn)
    assert conn.sent_types().count("error") == sum(causes.values())
    assert server.statistics().max_in_band_active <= 1
    assert in_band_overlap(conn) == 1
    # The run exercised what it claims to.
    assert sum(bool(c.known) for c in checks) > ROUNDS // 2
    assert any(c.result.truncated for c in checks)
    assert any(c.result.deleted for c in checks)
    assert any(len(c.known) > 1 for c in checks)
