"""The session's helpers: awaited session updates, waiting for the end, tools wired in, and
clear errors at the call."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trio_realtime import (
    ConnectionLost,
    ResponseRejected,
    SessionClosed,
    ToolRegistry,
    ToolRunner,
    open_session,
)
from trio_realtime.testing import FunctionCall, Script, open_fake_server


async def test_update_session_returns_the_merged_configuration() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server, open_session(server.url) as session:
            voice = {"type": "realtime", "audio": {"output": {"voice": "cedar"}}}
            merged = await session.update_session(voice)
            assert merged["audio"]["output"]["voice"] == "cedar"
            assert merged["audio"]["input"] is not None  # merged, not replaced
            with pytest.raises(ResponseRejected) as info:
                await session.update_session({"type": "realtime", "bogus": 1})
            assert info.value.code == "unknown_parameter"


async def test_a_rejected_update_raises_and_is_not_also_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server, open_session(server.url) as session:
            with pytest.raises(ResponseRejected):
                await session.update_session({"type": "realtime", "bogus": 1})
            # An application's event nobody waits for is still logged when rejected.
            await session.send({"type": "session.update", "session": {"type": "realtime", "x": 1}})
            async with session.subscribe() as events:
                async for event in events:
                    if event["type"] == "error":
                        break
    rejected = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert [r.levelname for r in rejected] == ["WARNING"]
    assert "session.update" in rejected[0].getMessage()


async def test_wait_closed_returns_when_the_connection_goes() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server, open_session(server.url) as session:
            connection = await server.wait_connection()
            await connection.abort()
            await session.wait_closed()
            assert session.closed
            with pytest.raises(ConnectionLost):
                session.request_response()
            with pytest.raises(ConnectionLost):
                async with session.subscribe():
                    pass  # pragma: no cover


async def test_subscribe_after_the_session_ended_raises_session_closed() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            async with open_session(server.url) as session:
                pass
            await session.wait_closed()
            with pytest.raises(SessionClosed):
                async with session.subscribe():
                    pass  # pragma: no cover


async def test_a_session_opened_with_tools_answers_calls_and_follows_up_once() -> None:
    registry = ToolRegistry()

    @registry.tool(parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    async def weather(city: str) -> dict[str, Any]:
        return {"city": city, "celsius": 21}

    def script(body: dict[str, Any]) -> Script:
        if body.get("instructions") == "answer":
            return Script(text="It is 21 degrees.")
        return Script(text=None, function_calls=(FunctionCall("weather", '{"city": "Oslo"}'),))

    with trio.fail_after(10):
        async with open_fake_server() as server:
            server.behavior.script = script
            runner = ToolRunner(registry, follow_up={"instructions": "answer"})
            async with open_session(server.url, tools=runner) as session:
                assert session.tools is runner
                update = await server.wait_for_client_event("session.update")
                assert [t["name"] for t in update["session"]["tools"]] == ["weather"]
                turn = await session.request_response().wait_done()
                [call] = turn.function_calls
                follow_up = await runner.wait_follow_up(turn)
                assert (await follow_up.wait_done()).text == "It is 21 degrees."
            outputs = [
                e["item"]["output"]
                for e in server.received
                if e["type"] == "conversation.item.create"
            ]
            assert len(outputs) == 1
            assert '"celsius": 21' in outputs[0]
            creates = [e for e in server.received if e["type"] == "response.create"]
            assert len(creates) == 2  # the turn, and one follow-up
            assert call.name == "weather"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.request_response("not a dict"), "response must be a mapping"),
        (lambda s: s.request_response(priority="high"), "priority must be an int"),
        (lambda s: s.request_response(priority=None), "priority must be an int"),
        (lambda s: s.request_response(priority=1.5), "priority must be an int"),
        (lambda s: s.request_response(priority=True), "priority must be an int"),
    ],
)
async def test_bad_arguments_are_refused_at_the_call(call: Any, message: str) -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server, open_session(server.url) as session:
            with pytest.raises(TypeError, match=message):
                call(session)
            assert session.statistics().queue_depth == 0
            assert [e for e in server.received if e["type"] == "response.create"] == []


async def test_bad_events_and_texts_are_refused_at_the_call() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server, open_session(server.url) as session:
            with pytest.raises(TypeError, match="event must be a mapping"):
                await session.send("not a dict")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="string 'type'"):
                await session.send({"no": "type"})
            with pytest.raises(TypeError, match="text must be a str"):
                await session.say(None)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="call_id"):
                await session.send_function_result(123, "{}")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="session must be a mapping"):
                await session.update_session("x")  # type: ignore[arg-type]


async def test_open_session_refuses_what_is_not_a_target() -> None:
    with pytest.raises(TypeError, match="target must be"):
        async with open_session(42):  # type: ignore[arg-type]
            pass  # pragma: no cover
