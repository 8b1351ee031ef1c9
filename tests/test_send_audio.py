"""session.send_audio(): input audio base64-encoded straight into its frames, in order with
every other send, split where one event could not carry it. Over each transport."""

from __future__ import annotations

import base64
import json

import pytest
import trio

import trio_realtime._session as session_module
from trio_realtime import SessionClosed, open_session
from trio_realtime.testing import open_fake_server

pytestmark = pytest.mark.usefixtures("transport")


async def test_audio_goes_out_as_appends_in_order_with_other_sends() -> None:
    pcm = bytes(range(256)) * 20  # 5,120 bytes of PCM16
    with trio.fail_after(10):
        async with open_fake_server() as server, open_session(server.url) as session:
            await session.send({"type": "input_audio_buffer.clear"})
            await session.send_audio(pcm)
            await session.send_audio(memoryview(b"\x01\x02"))
            await session.send({"type": "input_audio_buffer.commit"})
            conn = await server.wait_connection()
            await conn.wait_for_client_event("input_audio_buffer.commit")
            sent = [e for e in server.received if e["type"].startswith("input_audio_buffer.")]
            assert [e["type"] for e in sent] == [
                "input_audio_buffer.clear",
                "input_audio_buffer.append",
                "input_audio_buffer.append",
                "input_audio_buffer.commit",
            ]
            assert base64.b64decode(sent[1]["audio"]) == pcm
            assert base64.b64decode(sent[2]["audio"]) == b"\x01\x02"
            assert sent[1]["event_id"] != sent[2]["event_id"]
            assert "error" not in conn.sent_types()


async def test_audio_too_long_for_one_event_is_split_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(session_module, "_APPEND_BYTES", 6)
    pcm = bytes(range(20))
    with trio.fail_after(10):
        async with open_fake_server() as server, open_session(server.url) as session:
            await session.send_audio(pcm)
            await session.send({"type": "input_audio_buffer.commit"})
            conn = await server.wait_connection()
            await conn.wait_for_client_event("input_audio_buffer.commit")
    appends = [e for e in server.received if e["type"] == "input_audio_buffer.append"]
    assert [len(base64.b64decode(e["audio"])) for e in appends] == [6, 6, 6, 2]
    assert b"".join(base64.b64decode(e["audio"]) for e in appends) == pcm


async def test_bad_audio_and_a_closed_session() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            async with open_session(server.url) as session:
                with pytest.raises(TypeError, match="audio must be bytes"):
                    await session.send_audio("not bytes")  # type: ignore[arg-type]
                await session.send_audio(b"")  # nothing to send
            with pytest.raises(SessionClosed):
                await session.send_audio(b"\x00\x00")
    assert not [e for e in server.received if e["type"] == "input_audio_buffer.append"]


class _Recorder:
    """A transport that records what the session writes (a given Transport: no reconnect)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._greeted = False

    async def send(self, message: str) -> None:
        self.sent.append(message)
        await trio.lowlevel.checkpoint()

    async def receive(self) -> str:
        if not self._greeted:
            self._greeted = True
            return '{"type": "session.created", "session": {}}'
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_leaving_the_block_flushes_what_was_accepted() -> None:
    """What send() and send_audio() accepted goes out before the connection closes, even when
    the block is left before the writer ran (it gave up at once after this edition's
    connection rework, found while testing send_audio)."""
    transport = _Recorder()
    with trio.fail_after(10):
        async with open_session(transport) as session:
            await session.send({"type": "input_audio_buffer.clear"})
            await session.send_audio(b"\x00\xff" * 10)
    assert [json.loads(m)["type"] for m in transport.sent] == [
        "input_audio_buffer.clear",
        "input_audio_buffer.append",
    ]
    assert base64.b64decode(json.loads(transport.sent[1])["audio"]) == b"\x00\xff" * 10
