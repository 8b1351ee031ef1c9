"""The ``openai`` package's own Realtime client (asyncio, in a worker thread) against the fake
server: what an application built on the SDK would see, parsed into the SDK's typed events."""

from __future__ import annotations

import asyncio
from typing import Any

import trio
from openai import AsyncOpenAI

from trio_realtime.testing import open_fake_server


async def next_of(connection: Any, type: str) -> Any:
    async for event in connection:
        if event.type == type:
            return event
    raise AssertionError(f"the connection ended before {type}")  # pragma: no cover


async def sdk_conversation(port: int) -> dict[str, Any]:
    """One conversation through the SDK: partial session.update, an audio response, truncate
    and retrieve its item. Returns what the typed events said."""
    client = AsyncOpenAI(api_key="sk-test", websocket_base_url=f"ws://127.0.0.1:{port}/v1")
    async with client.realtime.connect(model="gpt-realtime") as connection:
        created = await next_of(connection, "session.created")
        await connection.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["audio"],
                "audio": {"output": {"voice": "cedar"}},
            }
        )
        updated = await next_of(connection, "session.updated")
        await connection.response.create()
        done = await next_of(connection, "response.done")
        item_id = done.response.output[0].id
        await connection.conversation.item.truncate(
            item_id=item_id, content_index=0, audio_end_ms=50
        )
        truncated = await next_of(connection, "conversation.item.truncated")
        await connection.conversation.item.retrieve(item_id=item_id)
        retrieved = await next_of(connection, "conversation.item.retrieved")
    return {
        "created_input": created.session.audio.input,
        "updated_input": updated.session.audio.input,
        "voice": updated.session.audio.output.voice,
        "response_voice": done.response.audio.output.voice,
        "status": done.response.status,
        "truncated": (truncated.item_id, truncated.audio_end_ms),
        "item_id": item_id,
        "retrieved": retrieved.item,
    }


async def test_openai_sdk_client() -> None:
    with trio.fail_after(30):
        async with open_fake_server() as server:
            result = await trio.to_thread.run_sync(
                lambda: asyncio.run(asyncio.wait_for(sdk_conversation(server.port), 20))
            )
            connection = server.connections[0]
            await connection.wait_closed()
    # The partial update kept the input side (it used to come back null).
    assert result["updated_input"] is not None
    assert result["updated_input"] == result["created_input"]
    assert result["voice"] == "cedar"
    assert result["response_voice"] == "cedar"
    assert result["status"] == "completed"
    assert result["truncated"] == (result["item_id"], 50)
    assert result["retrieved"].id == result["item_id"]
    assert result["retrieved"].content[0].transcript == ""
    assert (b"authorization", b"Bearer sk-test") in connection.request_headers
