"""Conversations that outlive a connection: reconnect after a loss, rollover before the cap.

Over real loopback WebSockets against the fake server, whose sessions expire and whose
connections drop as the service's do.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from trio_realtime import (
    ConnectionLost,
    Endpoint,
    Reconnect,
    SessionConfig,
    SessionRefused,
    TicketState,
    open_session,
)
from trio_realtime.testing import Behavior, FakeConnection, FakeRealtimeServer, open_fake_server

pytestmark = pytest.mark.usefixtures("transport")

FAST_RETRY = Reconnect(attempts=3, initial_delay=0.05, max_delay=0.2)
INSTRUCTIONS = {"type": "realtime", "instructions": "You are a pirate."}


def user_message(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        },
    }


USER_MESSAGE = user_message("Where is the treasure?")


def client_types(connection: FakeConnection) -> list[str]:
    return [event["type"] for event in connection.received]


def replayed_items(connection: FakeConnection) -> list[dict[str, Any]]:
    return [e["item"] for e in connection.received if e["type"] == "conversation.item.create"]


async def test_a_conversation_carries_on_across_session_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SessionConfig(reconnect=FAST_RETRY, created_timeout=1000)
    with trio.fail_after(300):
        async with open_fake_server(behavior=Behavior(session_duration=60)) as server:
            async with (
                open_session(server.url, config=config) as session,
                session.subscribe() as events,
            ):
                await session.update_session(INSTRUCTIONS)
                await session.send(USER_MESSAGE)
                first = await session.request_response().wait_done()
                assert first.text
                # Kept in flight when the session expires: it must fail, never be resent.
                server.behavior.withhold_created = True
                in_flight = session.request_response()
                await server.connections[0].wait_for_client_event("response.create", count=2)
                queued = session.request_response()  # waits behind it
                await server.connections[0].wait_closed()  # expired: error, then close 1001
                with pytest.raises(ConnectionLost):
                    await in_flight.wait_done()
                server.behavior.withhold_created = False
                assert (await queued.wait_done()).status == "completed"
                stats = session.statistics()
                # The subscription stayed open across the switch: it saw both connections.
                seen = [await events.receive() for _ in range(events.buffered)]
                assert [e["type"] for e in seen].count("session.created") == 1  # the new one's
                assert "session_expired" in [
                    e.get("error", {}).get("code") for e in seen if e["type"] == "error"
                ]
            old, new = server.connections
            assert "session_expired" in [
                e["error"]["code"] for e in old.sent if e["type"] == "error"
            ]
            # The new connection got the configuration, then the conversation in order,
            # before the queued request; the request in flight was not resent.
            types = client_types(new)
            assert types[0] == "session.update"
            assert new.received[0]["session"]["instructions"] == "You are a pirate."
            items = replayed_items(new)
            assert [(i["role"], i["content"][0]["type"]) for i in items] == [
                ("user", "input_text"),
                ("assistant", "output_text"),
            ]
            assert items[0]["content"][0]["text"] == "Where is the treasure?"
            assert items[1]["content"][0]["text"] == first.text
            assert types.index("response.create") > types.index("conversation.item.create")
            creates = [e for e in new.received if e["type"] == "response.create"]
            assert [c["event_id"] for c in creates] == [queued.event_id]
            assert (stats.connections, stats.reconnects, stats.rollovers) == (2, 1, 0)
            assert stats.replayed_items == 2
            assert server.statistics().max_in_band_active == 1


async def test_rollover_waits_for_a_quiet_moment_and_fails_no_ticket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SessionConfig(rollover_after=30, response_timeout=1000)
    with trio.fail_after(300):
        async with open_fake_server(behavior=Behavior(auto_finish=False)) as server:
            async with open_session(server.url, config=config) as session:
                await session.update_session(INSTRUCTIONS)
                await session.send(USER_MESSAGE)
                active = session.request_response()
                await active.wait_created()
                waiting = session.request_response()
                await trio.sleep(40)  # past rollover_after, with a response still running
                assert len(server.connections) == 1  # never mid-response
                assert waiting.state is TicketState.QUEUED  # the queue is paused for it
                await server.finish_response()
                assert (await active.wait_done()).status == "completed"
                server.behavior.auto_finish = True
                assert (await waiting.wait_done()).status == "completed"
                stats = session.statistics()
            _, new = server.connections
            assert [e["event_id"] for e in new.received if e["type"] == "response.create"] == [
                waiting.event_id
            ]
            assert client_types(new)[0] == "session.update"
            assert new.received[0]["session"]["instructions"] == "You are a pirate."
            items = replayed_items(new)
            assert [i["role"] for i in items] == ["user", "assistant"]
            assert items[1]["content"][0]["text"] == (active.result and active.result.text)
            assert client_types(new).index("response.create") > client_types(new).index(
                "conversation.item.create"
            )
            assert (stats.connections, stats.rollovers, stats.reconnects, stats.failed) == (
                2,
                1,
                0,
                0,
            )
            assert server.statistics().max_in_band_active == 1


async def test_a_refusal_on_reconnect_ends_the_session_with_its_code() -> None:
    key = "sk-test-revoked"
    with trio.fail_after(30):
        async with open_fake_server() as server:
            endpoint = Endpoint.openai(key, url=server.url.split("?")[0])
            config = SessionConfig(reconnect=FAST_RETRY)
            async with open_session(endpoint, config=config) as session:
                server.behavior.invalid_api_keys = frozenset({key})
                await server.connections[0].abort()  # dropped: the session reconnects ...
                await session.wait_closed()  # ... and is refused
                with pytest.raises(SessionRefused) as info:
                    session.request_response()
                assert info.value.code == "invalid_api_key"
            assert len(server.connections) == 2


async def test_attempts_exhausted_end_the_session_with_connection_lost() -> None:
    with trio.fail_after(30):
        async with open_fake_server() as server:
            config = SessionConfig(reconnect=FAST_RETRY)
            async with open_session(server.url, config=config) as session:
                await session.request_response().wait_done()
                server.behavior.drop_after = 0  # every new connection drops at once
                await server.connections[0].abort()
                await session.wait_closed()
                with pytest.raises(ConnectionLost):
                    session.request_response()
            assert len(server.connections) == 1 + FAST_RETRY.attempts


async def test_without_reconnect_a_loss_still_ends_the_session() -> None:
    with trio.fail_after(30):
        async with open_fake_server() as server, open_session(server.url) as session:
            await server.connections[0].abort()
            await session.wait_closed()
            assert session.statistics().reconnects == 0
            assert len(server.connections) == 1


async def test_reconnect_needs_somewhere_to_connect_to(
    realtime_server: FakeRealtimeServer,
) -> None:
    from memory import memory_pair

    transport, _ = memory_pair()
    with pytest.raises(ValueError, match="reconnect"):
        async with open_session(transport, config=SessionConfig(reconnect=Reconnect())):
            pass  # pragma: no cover


async def test_an_item_sent_as_the_connection_drops_reaches_the_new_one_once() -> None:
    second = user_message("And the map?")
    with trio.fail_after(30):
        async with open_fake_server() as server:
            config = SessionConfig(reconnect=FAST_RETRY)
            async with open_session(server.url, config=config) as session:
                await session.send(USER_MESSAGE)
                await server.connections[0].wait_for_client_event("conversation.item.create")
                await server.connections[0].abort()
                await session.send(second)  # lost with the old connection, or sent after it
                assert (await session.request_response().wait_done()).status == "completed"
            new = server.connections[-1]
            texts = [item["content"][0]["text"] for item in replayed_items(new)]
            assert texts.count("And the map?") == 1
            assert texts.count("Where is the treasure?") == 1
            assert session.statistics().reconnects == 1


async def test_a_trimmed_replay_is_logged_once_under_the_configurations_name(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = SessionConfig(rollover_after=30, replay_items=1)
    with trio.fail_after(300), caplog.at_level(logging.WARNING, logger="trio_realtime"):
        async with open_fake_server() as server:
            async with open_session(server.url, config=config) as session:
                await session.send(user_message("first"))
                await session.send(user_message("second"))
                await server.connections[0].wait_for_client_event(
                    "conversation.item.create", count=2
                )
                await trio.sleep(40)  # past rollover_after
                assert session.statistics().rollovers == 1
            assert [i["content"][0]["text"] for i in replayed_items(server.connections[1])] == [
                "second"
            ]
    trimmed = [r.getMessage() for r in caplog.records if "oldest" in r.getMessage()]
    assert len(trimmed) == 1, trimmed
    assert "replay_items=1" in trimmed[0]
    assert "max_items" not in trimmed[0]


async def test_an_idle_session_rolls_over(autojump_clock: trio.testing.MockClock) -> None:
    config = SessionConfig(rollover_after=30)
    with trio.fail_after(300):
        async with open_fake_server() as server:
            async with open_session(server.url, config=config) as session:
                await trio.sleep(40)
                assert session.statistics().rollovers == 1
            assert len(server.connections) == 2
