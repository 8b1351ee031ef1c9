"""AudioOut: output audio decoded once, handed out in arrival order, muted by an interruption."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import trio

from trio_realtime._audio import G711_ULAW, PCM16
from trio_realtime._audio_out import AudioChunk, AudioOut
from trio_realtime._events import METADATA_KEY


def _created(rid: str, **response: Any) -> dict[str, Any]:
    return {"type": "response.created", "response": {"id": rid, "conversation_id": "c", **response}}


def _delta(rid: str, item: str, data: bytes, *, beta: bool = False) -> dict[str, Any]:
    kind = "response.audio.delta" if beta else "response.output_audio.delta"
    return {
        "type": kind,
        "response_id": rid,
        "item_id": item,
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(data).decode(),
    }


async def _drain(stream: Any) -> list[AudioChunk]:
    chunks = []
    while stream.buffered:
        chunks.append(await stream.receive())
    return chunks


async def test_chunks_are_decoded_with_their_offsets_in_arrival_order() -> None:
    out = AudioOut(buffer=16)
    with out.stream() as stream:
        out.take(_created("resp_1"), now=0.0)
        out.take(_delta("resp_1", "a", b"\x01" * 480), now=0.0)
        out.take(_delta("resp_1", "a", b"\x02" * 960, beta=True), now=0.1)
        out.take(_delta("resp_1", "b", b"\x03" * 48), now=0.2)
        chunks = await _drain(stream)
    assert [(c.item_id, c.offset_ms, c.pcm[:1], c.duration_ms) for c in chunks] == [
        ("a", 0, b"\x01", 10),
        ("a", 10, b"\x02", 20),
        ("b", 0, b"\x03", 1),
    ]
    assert all(c.audio_format is PCM16 and c.response_id == "resp_1" for c in chunks)


async def test_the_session_format_sets_durations() -> None:
    out = AudioOut(buffer=4)
    out.take(
        {
            "type": "session.updated",
            "session": {"audio": {"output": {"format": {"type": "audio/pcmu"}}}},
        },
        now=0.0,
    )
    with out.stream() as stream:
        out.take(_created("resp_1"), now=0.0)
        out.take(_delta("resp_1", "a", b"\xff" * 800), now=0.0)
        (chunk,) = await _drain(stream)
    assert chunk.audio_format is G711_ULAW
    assert chunk.duration_ms == 100


async def test_a_muted_response_hands_out_nothing_more_but_is_still_counted() -> None:
    out = AudioOut(buffer=16)
    with out.stream() as stream:
        out.take(_created("resp_1"), now=0.0)
        out.take(_delta("resp_1", "a", b"\x00" * 480), now=0.0)
        out.mute(["resp_1"])
        out.take(_delta("resp_1", "a", b"\x00" * 480), now=0.1)
        assert len(await _drain(stream)) == 1
    assert out.ledger.received_ms("resp_1") == 20


async def test_a_muted_request_mutes_its_response_when_it_starts() -> None:
    out = AudioOut(buffer=16)
    out.mute([], ["trq_1"])
    with out.stream() as stream:
        out.take(_created("resp_1", metadata={METADATA_KEY: "trq_1"}), now=0.0)
        out.take(_delta("resp_1", "a", b"\x00" * 480), now=0.0)
        out.take(_created("resp_2", metadata={METADATA_KEY: "trq_2"}), now=0.0)
        out.take(_delta("resp_2", "b", b"\x00" * 480), now=0.0)
        assert [c.response_id for c in await _drain(stream)] == ["resp_2"]
    assert out.muted("resp_1")
    assert not out.muted("resp_2")


async def test_a_bad_delta_is_skipped() -> None:
    out = AudioOut(buffer=4)
    with out.stream() as stream:
        out.take({**_delta("resp_1", "a", b""), "delta": "not base64!"}, now=0.0)
        out.take({**_delta("resp_1", "a", b""), "item_id": None}, now=0.0)
        assert await _drain(stream) == []


async def test_finish_ends_every_stream() -> None:
    out = AudioOut(buffer=4)
    with out.stream() as stream:
        out.finish()
        with pytest.raises(trio.EndOfChannel):
            await stream.receive()
