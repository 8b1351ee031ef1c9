"""The service's interruption rules as the fake server plays them (issue "Interruptions done
right", item 3): truncating what is still streaming, deleting, out-of-band responses beside
the in-band one, voice activity, and audio at real-time pace."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterator
from typing import Any, Literal

import pytest
import trio
import trio.testing
from openai import AsyncOpenAI

from trio_realtime.testing import Behavior, Script, open_fake_server
from trio_realtime.testing._audio import G711_ULAW, PCM16, AudioFormat
from trio_realtime.testing._ids import IdFactory
from trio_realtime.testing._model import ConnectionModel, Refuse, Send
from trio_realtime.testing._protocol import EVENT_NAMES, Event, ResponseStream
from trio_realtime.testing._raw_client import RawClient, open_raw_client

Dialect = Literal["ga", "beta"]
ONLY_AUDIO = "Only model output audio messages can be truncated"
SHORTER = re.compile(r"Audio content of (\d+)ms is already shorter than (\d+)ms")

# -- the rules, without sockets -----------------------------------------------------------------


class Streaming:
    """An in-band response streaming into a conversation, one event at a time."""

    def __init__(self, dialect: Dialect, script: Script, audio_format: AudioFormat = PCM16):
        self.dialect = dialect
        self.state = ConnectionModel.new(
            dialect, ids=IdFactory(), model="gpt-realtime", expires_at=0
        )
        response_id = self.state.start_server_response()
        self.state.slots.mark_created(response_id)
        self.stream = ResponseStream(
            dialect=dialect,
            response_id=response_id,
            script=script,
            ids=self.state.ids,
            in_band=True,
            previous_item_id=self.state.conversation.last_id,
            audio_format=audio_format,
        )
        self._events: Iterator[tuple[Event, bool]] = self.stream.events()

    def until(self, type: str) -> Event:
        """Stream up to and including the next event of ``type``."""
        for event, _ in self._events:
            self.state.conversation.take_from(self.stream)
            if event["type"] == type:
                return event
        raise AssertionError(f"no {type}")

    def finish(self) -> None:
        for _ in self._events:
            self.state.conversation.take_from(self.stream)

    def send(self, event: dict[str, Any]) -> Send | Refuse:
        """The first action the event causes (GA answers an item with two events)."""
        action, *_ = self.state.receive(event, Behavior())
        assert isinstance(action, Send | Refuse)
        return action

    def truncate(self, item_id: str, audio_end_ms: int, content_index: int = 0) -> Send | Refuse:
        return self.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }
        )


def refused(action: Send | Refuse) -> tuple[str | None, str]:
    assert isinstance(action, Refuse), action
    return action.rejection.code, action.rejection.message


#: 300 ms of PCM16 in 100 ms deltas.
AUDIO = Script(text=None, audio=bytes(48 * 300), transcript="abc", audio_chunk_size=4800)


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_a_streaming_audio_item_is_truncatable_up_to_the_audio_generated_so_far(
    dialect: Dialect,
) -> None:
    streaming = Streaming(dialect, AUDIO)
    item_id = streaming.until("response.output_item.added")["item"]["id"]
    # No audio yet: nothing to truncate (the service's answer, seen by livekit).
    assert refused(streaming.truncate(item_id, 0)) == ("invalid_value", ONLY_AUDIO)
    streaming.until(EVENT_NAMES[dialect].audio_delta)
    # 100 ms generated so far: up to 100 is accepted, past it is refused.
    code, message = refused(streaming.truncate(item_id, 101))
    assert code == "invalid_value"
    assert message == "Audio content of 100ms is already shorter than 101ms"
    action = streaming.truncate(item_id, 60)
    assert isinstance(action, Send)
    assert action.event == {
        "type": "conversation.item.truncated",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": 60,
    }
    # The audio is cut there for good, and the transcript with it, even as the response
    # goes on streaming.
    streaming.until(EVENT_NAMES[dialect].audio_delta)
    assert refused(streaming.truncate(item_id, 61))[1] == (
        "Audio content of 60ms is already shorter than 61ms"
    )
    streaming.finish()
    assert streaming.state.conversation.audio_ms[item_id] == 60
    [part] = streaming.state.conversation.items[item_id]["content"]
    assert part["transcript"] == ""
    assert isinstance(streaming.truncate(item_id, 0), Send)


def test_truncate_counts_milliseconds_in_the_responses_format() -> None:
    script = Script(text=None, audio=bytes(8 * 300), transcript="abc", audio_chunk_size=800)
    streaming = Streaming("ga", script, audio_format=G711_ULAW)
    item_id = streaming.until("response.output_item.added")["item"]["id"]
    streaming.until("response.output_audio.delta")
    assert refused(streaming.truncate(item_id, 101))[1] == SHORTER.pattern.replace(
        r"(\d+)", "100", 1
    ).replace(r"(\d+)", "101")
    assert isinstance(streaming.truncate(item_id, 100), Send)


def test_a_streaming_item_cannot_be_truncated_at_a_part_it_does_not_have() -> None:
    streaming = Streaming("ga", AUDIO)
    item_id = streaming.until("response.output_item.added")["item"]["id"]
    streaming.until("response.output_audio.delta")
    code, message = refused(streaming.truncate(item_id, 10, content_index=1))
    assert (code, message) == (
        "invalid_value",
        "Invalid 'content_index': item has no content part 1.",
    )


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_only_assistant_audio_can_be_truncated(dialect: Dialect) -> None:
    streaming = Streaming(dialect, Script(text="some text"))
    text_item = streaming.until("response.output_item.added")["item"]["id"]
    streaming.until(EVENT_NAMES[dialect].text_delta)
    assert refused(streaming.truncate(text_item, 0)) == ("invalid_value", ONLY_AUDIO)
    streaming.finish()
    assert refused(streaming.truncate(text_item, 0)) == ("invalid_value", ONLY_AUDIO)
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    created = streaming.send({"type": "conversation.item.create", "item": {**user, "id": "u1"}})
    assert isinstance(created, Send)
    assert refused(streaming.truncate("u1", 0)) == ("invalid_value", ONLY_AUDIO)
    assert refused(streaming.truncate("item_nope", 0))[0] == "item_not_found"


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_a_streaming_item_can_be_deleted(dialect: Dialect) -> None:
    streaming = Streaming(dialect, AUDIO)
    item_id = streaming.until("response.output_item.added")["item"]["id"]
    streaming.until(EVENT_NAMES[dialect].audio_delta)
    action = streaming.send({"type": "conversation.item.delete", "item_id": item_id})
    assert isinstance(action, Send)
    assert action.event == {"type": "conversation.item.deleted", "item_id": item_id}
    streaming.finish()
    assert item_id not in streaming.state.conversation.items
    assert refused(streaming.truncate(item_id, 0))[0] == "item_not_found"


# -- over the wire ------------------------------------------------------------------------------


def audio_ms(events: list[dict[str, Any]], audio_format: AudioFormat = PCM16) -> int:
    delta = [
        e for e in events if e["type"] in ("response.output_audio.delta", "response.audio.delta")
    ]
    return sum(len(base64.b64decode(e["delta"])) for e in delta) // audio_format.bytes_per_ms


async def setup(client: RawClient, dialect: Dialect, audio_format: str = "pcm16") -> None:
    await client.recv_until("session.created")
    if dialect == "ga":
        formats = {
            "pcm16": {"type": "audio/pcm", "rate": 24000},
            "g711_ulaw": {"type": "audio/pcmu"},
        }
        session = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {
                "output": {"format": formats[audio_format]},
                "input": {"turn_detection": None},
            },
        }
    else:
        session = {
            "modalities": ["audio", "text"],
            "output_audio_format": audio_format,
            "turn_detection": None,
        }
    await client.send({"type": "session.update", "session": session})
    await client.recv_until("session.updated")


LONG = "Say exactly: " + "word " * 200  # 10 ms of audio a character: about ten seconds


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_barge_in_mid_reply_at_real_time_pace(
    dialect: Dialect, autojump_clock: trio.testing.MockClock
) -> None:
    """The client truncates at what it received and cancels, mid-reply: both accepted."""
    names = EVENT_NAMES[dialect]
    behavior = Behavior(audio_pace=1.0, audio_chunk_ms=40)
    with trio.fail_after(120):
        async with open_fake_server(dialect=dialect, behavior=behavior) as server:
            async with open_raw_client(server.port) as client:
                await setup(client, dialect)
                await client.send({"type": "response.create", "response": {"instructions": LONG}})
                events = await client.recv_until(names.audio_delta)
                for _ in range(5):
                    events += await client.recv_until(names.audio_delta)
                item_id = events[-1]["item_id"]
                heard = audio_ms(events)
                assert heard == 6 * 40
                truncate = {
                    "type": "conversation.item.truncate",
                    "item_id": item_id,
                    "content_index": 0,
                }
                await client.send({**truncate, "audio_end_ms": 10**6})
                await client.send({**truncate, "audio_end_ms": heard})
                await client.send({"type": "response.cancel"})
                answers = await client.recv_until("response.done")
                errors = [e for e in answers if e["type"] == "error"]
                [error] = errors
                assert error["error"]["code"] == "invalid_value"
                match = SHORTER.fullmatch(error["error"]["message"])
                assert match is not None
                assert heard <= int(match[1]) < 10 * len(LONG)
                assert match[2] == str(10**6)
                [truncated] = [e for e in answers if e["type"] == "conversation.item.truncated"]
                assert truncated["audio_end_ms"] == heard
                assert answers[-1]["response"]["status"] == "cancelled"
                # The reply stopped mid-way: far less audio than the text was worth.
                assert audio_ms(events + answers) < 10 * len(LONG) // 2


@pytest.mark.parametrize(("audio_format", "bytes_per_ms"), [("pcm16", 48), ("g711_ulaw", 8)])
async def test_audio_chunks_are_as_long_as_asked_in_the_sessions_format(
    audio_format: str, bytes_per_ms: int
) -> None:
    behavior = Behavior(audio_chunk_ms=20)
    with trio.fail_after(10):
        async with open_fake_server(behavior=behavior) as server:
            async with open_raw_client(server.port) as client:
                await setup(client, "ga", audio_format)
                await client.send(
                    {"type": "response.create", "response": {"instructions": "Say exactly: hello"}}
                )
                events = await client.recv_until("response.done")
    sizes = [
        len(base64.b64decode(e["delta"]))
        for e in events
        if e["type"] == "response.output_audio.delta"
    ]
    assert sizes == [20 * bytes_per_ms, 20 * bytes_per_ms, 10 * bytes_per_ms]  # 50 ms


async def test_real_time_pace_takes_as_long_as_the_audio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    behavior = Behavior(audio_pace=2.0, audio_chunk_ms=100)
    with trio.fail_after(60):
        async with open_fake_server(behavior=behavior) as server:
            async with open_raw_client(server.port) as client:
                await setup(client, "ga")
                body = {"instructions": "Say exactly: " + "x" * 100}  # one second of audio
                await client.send({"type": "response.create", "response": body})
                await client.recv_until("response.created")
                start = trio.current_time()
                await client.recv_until("response.done")
                elapsed = trio.current_time() - start
    # Twice real time: half a second (mock clock), each delta followed by its duration / 2.
    assert elapsed == pytest.approx(0.5, abs=0.01)


def test_pace_and_chunk_knobs_are_checked() -> None:
    with pytest.raises(ValueError, match="audio_pace"):
        Behavior(audio_pace=0)
    with pytest.raises(ValueError, match="audio_chunk_ms"):
        Behavior(audio_chunk_ms=0)


async def test_out_of_band_responses_run_beside_the_in_band_one_and_survive_its_interruption() -> (
    None
):
    with trio.fail_after(10):
        async with open_fake_server(behavior=Behavior(auto_finish=False)) as server:
            async with open_raw_client(server.port) as client:
                connection = await server.wait_connection()
                await client.recv_until("session.created")
                await client.send({"type": "response.create"})
                in_band = (await client.recv_until("response.created"))[-1]["response"]["id"]
                out = []
                for _ in range(2):
                    await client.send(
                        {"type": "response.create", "response": {"conversation": "none"}}
                    )
                    out.append((await client.recv_until("response.created"))[-1]["response"]["id"])
                assert sorted(connection.active_response_ids()) == sorted([in_band, *out])
                assert server.statistics().max_out_of_band_active == 2
                # Voice activity with interrupt_response cancels the in-band response only.
                started = trio.Event()

                async def speak() -> None:
                    await server.start_response(Script(text="after"), interrupt=True)
                    started.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(speak)
                    done = (await client.recv_until("response.done"))[-1]["response"]
                    assert (done["id"], done["status"]) == (in_band, "cancelled")
                    assert done["status_details"]["reason"] == "turn_detected"
                    await started.wait()
                assert set(out) <= set(connection.active_response_ids())
                # A cancel without response_id reaches the in-band response only.
                await client.send({"type": "response.cancel"})
                done = (await client.recv_until("response.done"))[-1]["response"]
                assert done["id"] not in out
                assert set(out) == set(connection.active_response_ids())
                # Out-of-band ones are cancelled by id.
                for response_id in out:
                    await client.send({"type": "response.cancel", "response_id": response_id})
                    done = (await client.recv_until("response.done"))[-1]["response"]
                    assert (done["id"], done["status"]) == (response_id, "cancelled")
                assert connection.active_response_ids() == []


async def sdk_barge_in(port: int) -> dict[str, Any]:
    """The ``openai`` package's client interrupts an audio reply mid-stream, as the Agents
    SDK's interrupt() does: truncate at what was received, then cancel."""
    client = AsyncOpenAI(api_key="sk-test", websocket_base_url=f"ws://127.0.0.1:{port}/v1")
    async with client.realtime.connect(model="gpt-realtime") as connection:
        await connection.session.update(
            session={"type": "realtime", "output_modalities": ["audio"]}
        )
        await connection.response.create(response={"instructions": LONG})
        received = 0
        item_id = ""
        async for event in connection:
            if event.type == "response.output_audio.delta":
                item_id = event.item_id
                received += len(base64.b64decode(event.delta))
                if received >= 48 * 200:
                    break
        await connection.conversation.item.truncate(
            item_id=item_id, content_index=0, audio_end_ms=received // 48
        )
        await connection.response.cancel()
        seen: dict[str, Any] = {"received_ms": received // 48}
        async for event in connection:
            if event.type == "error":
                seen["error"] = event.error.message
            if event.type == "conversation.item.truncated":
                seen["truncated"] = event.audio_end_ms
            if event.type == "response.done":
                seen["status"] = event.response.status
                break
    return seen


async def test_the_openai_client_truncates_a_reply_mid_stream() -> None:
    with trio.fail_after(60):
        async with open_fake_server(behavior=Behavior(audio_pace=4.0, audio_chunk_ms=40)) as server:
            seen = await trio.to_thread.run_sync(
                lambda: asyncio.run(asyncio.wait_for(sdk_barge_in(server.port), 50))
            )
    assert "error" not in seen
    assert seen["truncated"] == seen["received_ms"]
    assert seen["status"] == "cancelled"


def test_every_knob_is_documented_on_its_field_and_in_the_module_list() -> None:
    import ast
    import inspect

    import attrs

    import trio_realtime.testing
    from trio_realtime.testing import _script

    names = [field.name for field in attrs.fields(Behavior)]
    module_doc = trio_realtime.testing.__doc__ or ""
    assert [n for n in names if f"``{n}``" not in module_doc] == []
    [cls] = [
        node
        for node in ast.parse(inspect.getsource(_script)).body
        if isinstance(node, ast.ClassDef) and node.name == "Behavior"
    ]
    documented = set()
    for field, following in zip(cls.body, cls.body[1:], strict=False):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            documented.add(field.target.id)
    assert [n for n in names if n not in documented] == []
