"""Calls (issue "Phone and WebRTC calls"): the sideband attaches to a call's session, holds
every guarantee with three controllers, re-attaches without replaying, and says when the call
has ended. Driven against the fake server's call mode with the ``openai`` package's REST
client, over both transports."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from openai import AsyncOpenAI

from trio_realtime import (
    CallEnded,
    ConnectionLost,
    Endpoint,
    EventStream,
    Interruption,
    RealtimeSession,
    Reconnect,
    SessionConfig,
    SessionRefused,
    TicketState,
    ToolRegistry,
    open_session,
)
from trio_realtime.testing import (
    FakeCall,
    FakeRealtimeServer,
    FunctionCall,
    Script,
    default_script,
    open_fake_server,
)

pytestmark = pytest.mark.usefixtures("transport")

RECONNECT = Reconnect(attempts=3, initial_delay=0.01, max_delay=0.05)


def test_the_sideband_urls() -> None:
    openai_ = Endpoint.openai("sk-x", call_id="rtc_123")
    assert openai_.url == "wss://api.openai.com/v1/realtime?call_id=rtc_123"
    assert openai_.call_id == "rtc_123"
    assert "sk-x" not in repr(openai_)
    azure = Endpoint.azure("https://res.openai.azure.com", api_key="k", call_id="rtc_9")
    assert azure.url == "wss://res.openai.azure.com/openai/v1/realtime?call_id=rtc_9"
    assert azure.call_id == "rtc_9"
    assert ("api-key", "k") in azure.headers
    assert Endpoint.openai("sk-x").call_id is None
    assert Endpoint("ws://127.0.0.1:1/v1/realtime?call_id=rtc_1").call_id == "rtc_1"
    with pytest.raises(ValueError, match="deployment"):
        Endpoint.azure("https://res.openai.azure.com", api_key="k")
    with pytest.raises(ValueError, match="api_version"):
        Endpoint.azure("res", api_key="k", call_id="rtc_1", api_version="2025-04-01-preview")
    with pytest.raises(ValueError, match="GA"):
        Endpoint.openai("sk-x", call_id="rtc_1", beta=True)
    with pytest.raises(ValueError, match="call_id"):
        Endpoint.openai("sk-x", call_id="rtc 1")


def sideband(server: FakeRealtimeServer, call: FakeCall | str, *, azure: bool = False) -> Endpoint:
    call_id = call if isinstance(call, str) else call.call_id
    if azure:
        return Endpoint.azure(f"http://127.0.0.1:{server.port}", api_key="k", call_id=call_id)
    return Endpoint.openai(
        "sk-test", call_id=call_id, url=f"ws://127.0.0.1:{server.port}/v1/realtime"
    )


@asynccontextmanager
async def rest(server: FakeRealtimeServer) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(api_key="sk-test", base_url=server.rest_base_url, max_retries=0)
    try:
        yield client
    finally:
        await client.close()


async def accepted(server: FakeRealtimeServer, **session: Any) -> FakeCall:
    call = server.incoming_call()
    async with rest(server) as client:
        await client.realtime.calls.accept(call.call_id, type="realtime", **session)
    return call


@asynccontextmanager
async def attached(
    config: SessionConfig | None = None,
) -> AsyncIterator[tuple[FakeRealtimeServer, FakeCall, RealtimeSession]]:
    """A call accepted on a fake server, and a session attached over its sideband."""
    async with open_fake_server() as server:
        call = await accepted(server)
        async with open_session(sideband(server, call), config=config) as session:
            await call.wait_sidebands(1)
            yield server, call, session


async def next_of(events: EventStream, type: str) -> dict[str, Any]:
    async for event in events:
        if event["type"] == type:
            return event
    raise AssertionError(f"no {type}")


async def created(events: EventStream, response_id: str) -> None:
    """Until the session has seen ``response_id``'s ``response.created``."""
    async for event in events:
        if event["type"] == "response.created" and event["response"]["id"] == response_id:
            return
    raise AssertionError(f"no response.created for {response_id}")


@pytest.mark.parametrize("azure", [False, True])
async def test_attaching_waits_for_no_session_created_and_update_session_confirms(
    azure: bool,
) -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            call = await accepted(server, instructions="Be brief.")
            config = SessionConfig(connect_timeout=5)
            async with open_session(sideband(server, call, azure=azure), config=config) as session:
                assert session.call_id == call.call_id
                await call.wait_sidebands(1)
                # The call keeps its G.711 audio; the update confirms the whole configuration.
                confirmed = await session.update_session(
                    {"type": "realtime", "instructions": "Be kind."}
                )
                assert confirmed["instructions"] == "Be kind."
                assert confirmed["audio"]["output"]["format"] == {"type": "audio/pcmu"}
                assert call.sidebands[0].request_path.startswith(
                    "/openai/v1/realtime?" if azure else "/v1/realtime?"
                )
                result = await (await session.say("Hello.")).wait_done()
                assert result.text == "Hello."


async def test_a_session_created_that_does_come_is_taken() -> None:
    with trio.fail_after(10):
        async with attached() as (_server, call, session):
            assert session.server_session == {}
            async with session.subscribe() as events:
                await call.sidebands[0].send_event(
                    {
                        "type": "session.created",
                        "event_id": "evt_1",
                        "session": dict(call.connection.session),
                    }
                )
                await next_of(events, "session.created")
            assert session.server_session["type"] == "realtime"
            await (await session.say("Hi.")).wait_done()


async def test_an_unknown_call_is_a_typed_refusal() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            ringing = server.incoming_call()
            for call_id in ("rtc_nope", ringing.call_id):
                with pytest.raises(CallEnded) as info:
                    async with open_session(sideband(server, call_id)):
                        pytest.fail("attached to no call")
                assert isinstance(info.value, SessionRefused)
                assert (info.value.code, info.value.status) == ("call_id_not_found", 404)
                assert info.value.call_id == call_id


async def test_the_callers_responses_hold_the_slot_and_the_greeting_queues_behind() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            call = await accepted(server)
            server.behavior.auto_finish = False
            async with (
                open_session(sideband(server, call)) as session,
                session.subscribe() as events,
            ):
                await call.wait_sidebands(1)
                # The caller speaks first; the application greets while the caller's response runs.
                caller = await call.connection.start_response()
                assert (await next_of(events, "response.created"))["response"]["id"] == caller
                greeting = await session.say("Welcome.")
                await trio.testing.wait_all_tasks_blocked()
                assert greeting.state is TicketState.QUEUED
                assert session.statistics().active_response_id == caller
                # The browser's data channel starts one as soon as the caller's ends: the
                # greeting, sent at the same moment or after, waits for it too.
                await call.connection.finish_response(caller)
                call.connection.send_client_event({"type": "response.create"})
                channel = call.connection.response_ids()[-1]
                assert channel != caller
                await trio.testing.wait_all_tasks_blocked()
                assert greeting.state is not TicketState.DONE
                await call.connection.finish_response(channel)
                await greeting.wait_created()
                await call.connection.finish_response(greeting.response_id)
                result = await greeting.wait_done()
                assert result.status == "completed"
                assert call.connection.response_ids() == [caller, channel, greeting.response_id]
                stats = session.statistics()
                assert (stats.completed, stats.failed, stats.rejected) == (1, 0, 0)


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_a_lost_sideband_re_attaches_without_replay_and_queued_requests_survive(
    how: str,
) -> None:
    """A clean close (1000, a proxy restart) and a drop (1006) alike."""
    with trio.fail_after(10):
        async with open_fake_server() as server:
            call = await accepted(server)
            config = SessionConfig(reconnect=RECONNECT)
            async with open_session(sideband(server, call), config=config) as session:
                await call.wait_sidebands(1)
                await (await session.say("First.")).wait_done()
                await session.send(
                    {
                        "type": "conversation.item.create",
                        "item": {
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_text", "text": "hi"}],
                        },
                    }
                )
                items = list(call.connection.item_ids())
                server.behavior.auto_finish = False
                async with session.subscribe() as events:
                    caller = await call.connection.start_response()
                    await created(events, caller)
                    queued = session.request_response({"instructions": "Say exactly: Second."})
                    await trio.testing.wait_all_tasks_blocked()
                    assert queued.state is TicketState.QUEUED
                    # A proxy restarts: the sideband is closed cleanly (1000); the call goes on.
                    await getattr(call.sidebands[0], how)()
                    await call.wait_sidebands(1)
                await call.connection.finish_response(caller)
                server.behavior.auto_finish = True
                result = await queued.wait_done()
                assert (result.status, result.text) == ("completed", "Second.")
                stats = session.statistics()
                assert (stats.reconnects, stats.replayed_items) == (1, 0)
                assert stats.failed == 0
            # Nothing replayed: the new sideband sent only what was new.
            assert [e["type"] for e in call.sidebands[1].received] == ["response.create"]
            after = call.connection.item_ids()
            assert after[: len(items)] == items
            assert len(after) == len(set(after))
            assert call.state == "active"


async def test_a_hang_up_ends_the_session_with_call_ended() -> None:
    with trio.fail_after(10):
        async with attached(SessionConfig(reconnect=RECONNECT)) as (server, call, session):
            async with rest(server) as client:
                await client.realtime.calls.hangup(call.call_id)
            await session.wait_closed()
            with pytest.raises(CallEnded) as info:
                session.request_response()
            assert info.value.code == "call_id_not_found"
            assert info.value.call_id == call.call_id
            assert session.statistics().reconnects == 0


async def test_without_reconnect_a_close_ends_the_session_with_its_code() -> None:
    with trio.fail_after(10):
        async with attached() as (_server, call, session):
            await call.sidebands[0].close()
            await session.wait_closed()
            with pytest.raises(ConnectionLost) as info:
                session.request_response()
            assert info.value.code == 1000
            assert not isinstance(info.value, CallEnded)


async def test_the_service_saying_the_call_ended_ends_the_session() -> None:
    with trio.fail_after(10):
        async with attached(SessionConfig(reconnect=RECONNECT)) as (_server, call, session):
            await call.sidebands[0].send_event(
                {
                    "type": "error",
                    "event_id": "evt_x",
                    "error": {
                        "type": "invalid_request_error",
                        "code": "call_id_not_found",
                        "message": "No session found for the provided call_id",
                        "param": None,
                        "event_id": None,
                    },
                }
            )
            await call.sidebands[0].close()
            await session.wait_closed()
            with pytest.raises(CallEnded):
                session.request_response()
            # Not re-attached: the service had said so.
            assert len(call.sidebands) == 1


# --------------------------------------------------------------------------- a whole call

registry = ToolRegistry(timeout=5)


@registry.tool
async def order_status(order: str) -> dict[str, Any]:
    """The status of an order."""
    return {"order": order, "status": "shipped"}


def call_script(server: FakeRealtimeServer) -> Any:
    """The model: asked to look an order up, it calls the tool; then it answers from it."""

    def script(body: Mapping[str, Any]) -> Script:
        if body.get("instructions") == "Look the order up.":
            return Script(
                text=None,
                function_calls=(FunctionCall("order_status", '{"order": "A-17"}', "call_a17"),),
            )
        outputs = [
            e["item"]["output"]
            for e in server.calls[0].connection.received
            if e["type"] == "conversation.item.create"
            and e["item"]["type"] == "function_call_output"
        ]
        if outputs and "instructions" not in body:
            return Script(text=f"Your order is {json.loads(outputs[-1])['status']}.")
        return default_script(body)

    return script


async def test_a_whole_call() -> None:
    """accept -> attach -> greet while the caller's voice activity and a second controller
    start responses -> tool call -> forced sideband close -> re-attach without replay ->
    hang-up: 0 conflicts surfaced, 0 requests lost, no duplicate items."""
    with trio.fail_after(20):
        async with open_fake_server() as server:
            server.behavior.script = call_script(server)
            call = server.incoming_call()
            async with rest(server) as client:
                # The webhook names the call; the accept configures it, keeping its G.711 audio.
                call_id = call.webhook["data"]["call_id"]
                await client.realtime.calls.accept(
                    call_id, type="realtime", instructions="You answer the phone for a shop."
                )
                config = SessionConfig(reconnect=RECONNECT)
                async with (
                    open_session(sideband(server, call_id), config=config, tools=registry) as s,
                    s.subscribe() as events,
                ):
                    session: RealtimeSession = s
                    await call.wait_sidebands(1)
                    tickets = []
                    # The caller talks first; the greeting queues behind the caller's response.
                    server.behavior.auto_finish = False
                    caller = await call.connection.start_response()
                    await created(events, caller)
                    tickets.append(await session.say("Thanks for calling."))
                    # The browser's data channel tries too, while the caller's response runs:
                    # its conflict is its own, never the sideband's.
                    call.connection.send_client_event({"type": "response.create"})
                    await call.connection.finish_response(caller)
                    # The caller keeps talking: voice activity races the greeting.
                    talking = await call.connection.start_response()
                    await call.connection.finish_response(talking)
                    server.behavior.auto_finish = True
                    for rid in call.connection.active_response_ids():
                        await call.connection.finish_response(rid)
                    assert (await tickets[0].wait_done()).text == "Thanks for calling."
                    # A tool call, answered by the runner; its follow-up queues like the rest.
                    lookup = session.request_response({"instructions": "Look the order up."})
                    tickets.append(lookup)
                    assert session.tools is not None
                    follow_up = await session.tools.wait_follow_up(await lookup.wait_done())
                    tickets.append(follow_up)
                    answer = await follow_up.wait_done()
                    assert answer.text == "Your order is shipped."
                    # The caller speaks, a request queues behind, and the sideband is closed.
                    server.behavior.auto_finish = False
                    caller = await call.connection.start_response()
                    await created(events, caller)
                    tickets.append(session.request_response({"instructions": "Say exactly: Bye."}))
                    items_before = list(call.connection.item_ids())
                    await call.sidebands[0].close()
                    await call.wait_sidebands(1)
                    server.behavior.auto_finish = True
                    await call.connection.finish_response(caller)
                    bye = await tickets[-1].wait_done()
                    assert bye.text == "Bye."
                    # Hang up: the session ends with the call, and says so.
                    await client.realtime.calls.hangup(call_id)
                    await session.wait_closed()
                    with pytest.raises(CallEnded):
                        session.request_response()
                    stats = session.statistics()
            # 0 requests lost, 0 conflicts surfaced.
            assert [t.state for t in tickets] == [TicketState.DONE] * len(tickets)
            assert [t.result.status for t in tickets if t.result] == ["completed"] * len(tickets)
            assert (stats.failed, stats.rejected, stats.reconnects) == (0, 0, 1)
            assert stats.completed == len(tickets)
            # Re-attached without replay: no duplicate item, none re-created.
            items = call.connection.item_ids()
            assert len(items) == len(set(items))
            assert items[: len(items_before)] == items_before
            assert stats.replayed_items == 0
            second = [e["type"] for e in call.sidebands[1].received]
            assert "conversation.item.create" not in second
            assert "session.update" not in second
            assert call.ended_by == "hung_up"
            # The tools were configured on the sideband (GA: with the session's type).
            updates = [e for e in call.sidebands[0].received if e["type"] == "session.update"]
            assert updates
            assert all(u["session"]["type"] == "realtime" for u in updates)
            assert [t["name"] for t in call.connection.session["tools"]] == ["order_status"]


async def test_interrupt_on_a_call_cancels_by_id_and_clears_the_services_buffer() -> None:
    """The service plays the audio on a call: interrupt() cancels by id and clears its output
    buffer, and cuts nothing by position (it cannot know what the caller heard)."""
    with trio.fail_after(20):
        async with open_fake_server() as server:
            server.behavior.audio_pace = 10.0
            server.behavior.audio_chunk_ms = 20
            call = await accepted(server, output_modalities=["audio"])
            async with (
                open_session(sideband(server, call)) as session,
                session.subscribe() as events,
            ):
                await call.wait_sidebands(1)
                ticket = await session.say("la " * 100)
                await next_of(events, "output_audio_buffer.started")
                result = await session.interrupt(played_ms=500)
                assert result.cancelled == (ticket.response_id,)
                assert result.truncated is None
                assert result.deleted == ()
                assert result.errors == ()
                assert (await ticket.wait_done()).status == "cancelled"
                cleared = await next_of(events, "output_audio_buffer.cleared")
                assert cleared["response_id"] == ticket.response_id
                kinds = [e["type"] for e in call.sidebands[0].received]
                assert "conversation.item.truncate" not in kinds
                assert kinds.index("response.cancel") < kinds.index("output_audio_buffer.clear")
                # Nothing playing any more: a second interrupt sends nothing and returns.
                before = len(call.sidebands[0].received)
                assert await session.interrupt() == Interruption()
                assert len(call.sidebands[0].received) == before
                assert "error" not in call.sidebands[0].sent_types()
