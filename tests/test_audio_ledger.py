"""The audio ledger: formats, sizes, and where an interruption cuts a response (PROTOCOL §11).

Pure tests: no Trio, no sockets.
"""

from __future__ import annotations

import base64

import pytest

from trio_realtime._audio import (
    G711_ALAW,
    G711_ULAW,
    PCM16,
    AudioLedger,
    Truncation,
    b64_size,
    format_of_response,
    format_of_session,
)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 47, 48, 4800, 4801])
def test_b64_size_matches_decoding(size: int) -> None:
    text = base64.b64encode(bytes(size)).decode()
    assert b64_size(text) == size


@pytest.mark.parametrize(
    ("session", "expected"),
    [
        ({"audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}}}}, PCM16),
        ({"audio": {"output": {"format": {"type": "audio/pcmu"}}}}, G711_ULAW),
        ({"audio": {"output": {"format": {"type": "audio/pcma"}}}}, G711_ALAW),
        ({"output_audio_format": "g711_ulaw"}, G711_ULAW),
        ({"output_audio_format": "pcm16"}, PCM16),
        ({"audio": {"input": {}}}, None),
        ({}, None),
    ],
)
def test_formats_of_both_dialects(session: dict[str, object], expected: object) -> None:
    assert format_of_session(session) is expected
    assert format_of_response(session) is expected


def _ledger_with(
    *items: tuple[str, int], response: str = "resp_1", done: bool = True
) -> AudioLedger:
    """A ledger that received ``ms`` of PCM16 audio for each ``(item_id, ms)`` in order."""
    ledger = AudioLedger()
    ledger.response_started(response, {"conversation_id": "conv_1"})
    for item_id, ms in items:
        ledger.item_added(response, {"type": "message", "id": item_id})
        if ms:
            ledger.delta(response, item_id, 0, ms * 48, now=1.0)
        if done:
            ledger.audio_done(response, item_id, 0)
    return ledger


@pytest.mark.parametrize(
    ("items", "done", "played", "expected"),
    [
        # One item, cut in the middle.
        ([("a", 1000)], True, 400, Truncation(("a", 0, 400))),
        # Position past the audio received: clamped to what was received.
        ([("a", 1000)], False, 9100, Truncation(("a", 0, 1000))),
        # All heard, all arrived: nothing to send.
        ([("a", 1000)], True, 1000, Truncation()),
        ([("a", 1000)], True, 5000, Truncation()),
        # Nothing heard: deleted, never truncated at 0.
        ([("a", 1000)], True, 0, Truncation(delete=("a",))),
        # No audio received yet for an added item: deleted.
        ([("a", 0)], False, 250, Truncation(delete=("a",))),
        # Several items: positions count across them, later items are deleted.
        ([("a", 500), ("b", 700), ("c", 300)], True, 800, Truncation(("b", 0, 300), ("c",))),
        ([("a", 500), ("b", 700), ("c", 300)], True, 499, Truncation(("a", 0, 499), ("b", "c"))),
        # Exactly at an item boundary: the next item had nothing heard.
        ([("a", 500), ("b", 700)], True, 500, Truncation(delete=("b",))),
        # Still streaming, all received heard: the last item is cut at what arrived.
        ([("a", 500), ("b", 700)], False, 5000, Truncation(("b", 0, 700))),
    ],
)
def test_cut(items: list[tuple[str, int]], done: bool, played: float, expected: Truncation) -> None:
    ledger = _ledger_with(*items, done=done)
    assert ledger.plan(played, now=2.0) == ("resp_1", expected)


def test_the_position_is_per_format() -> None:
    ledger = AudioLedger()
    ledger.session_configured({"audio": {"output": {"format": {"type": "audio/pcmu"}}}})
    ledger.response_started("resp_1", {"conversation_id": "conv_1"})
    fmt, offset = ledger.delta("resp_1", "a", 0, 8 * 300, now=0.0)
    assert (fmt, offset) == (G711_ULAW, 0)
    assert ledger.delta("resp_1", "a", 0, 8 * 300, now=0.1) == (G711_ULAW, 300)
    assert ledger.plan(450, now=1.0) == ("resp_1", Truncation(("a", 0, 450)))


def test_a_response_may_override_the_format() -> None:
    ledger = AudioLedger()
    ledger.response_started(
        "resp_1",
        {"conversation_id": "c", "audio": {"output": {"format": {"type": "audio/pcma"}}}},
    )
    assert ledger.delta("resp_1", "a", 0, 80, now=0.0)[0] is G711_ALAW
    assert ledger.received_ms("resp_1") == 10


def test_without_a_position_the_time_since_the_first_delta_is_used() -> None:
    ledger = AudioLedger()
    ledger.response_started("resp_1", {"conversation_id": "c"})
    ledger.delta("resp_1", "a", 0, 48 * 2000, now=10.0)
    assert ledger.plan(None, now=10.75) == ("resp_1", Truncation(("a", 0, 750)))


def test_a_response_is_cut_once() -> None:
    ledger = _ledger_with(("a", 1000))
    assert ledger.plan(100, now=0.0)[1]
    assert ledger.plan(100, now=0.0) == (None, Truncation())


def test_out_of_band_audio_is_never_the_current_response() -> None:
    ledger = _ledger_with(("a", 1000))
    ledger.response_started("resp_oob", {"conversation_id": None})
    ledger.delta("resp_oob", "x", 0, 48 * 100, now=1.0)
    assert ledger.current == "resp_1"
    assert ledger.plan(100, now=2.0) == ("resp_1", Truncation(("a", 0, 100)))


def test_a_text_only_response_has_nothing_to_cut() -> None:
    ledger = AudioLedger()
    ledger.response_started("resp_1", {"conversation_id": "c", "output_modalities": ["text"]})
    ledger.item_added("resp_1", {"type": "message", "id": "a"})
    assert ledger.plan(100, now=0.0) == (None, Truncation())


def test_nothing_played_yet() -> None:
    assert AudioLedger().plan(100, now=0.0) == (None, Truncation())
