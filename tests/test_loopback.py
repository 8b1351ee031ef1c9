"""The session over real loopback WebSockets against the fake Realtime server."""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import pytest
import trio
import trio.testing

from trio_realtime import (
    ConnectionLost,
    Endpoint,
    SessionConfig,
    TicketState,
    open_session,
)
from trio_realtime.testing import (
    Behavior,
    FakeRealtimeServer,
    FunctionCall,
    Script,
    open_fake_server,
)

TEXT_DELTA = {"ga": "response.output_text.delta", "beta": "response.text.delta"}


#: Every test here runs over each transport (see conftest.py).
pytestmark = pytest.mark.usefixtures("transport")


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_text_response_in_both_dialects(dialect: Literal["ga", "beta"]) -> None:
    with trio.fail_after(10):
        async with open_fake_server(dialect=dialect) as server, open_session(server.url) as session:
            ticket = session.request_response({"instructions": "Say exactly: hello there"})
            events = ticket.events()
            result = await ticket.wait_done()
            assert result.status == "completed"
            text = "".join([e["delta"] async for e in events if e["type"] == TEXT_DELTA[dialect]])
            assert text == "hello there"
            [create] = [e for e in server.received if e["type"] == "response.create"]
            assert create["response"]["metadata"]["trio_realtime_request"] == ticket.event_id


async def test_requests_from_everywhere_collide_with_server_started_responses() -> None:
    """Many requesters at once plus voice-activity responses: all served, one at a time."""
    behavior = Behavior(delta_delay=0.0005)
    with trio.fail_after(30):
        async with (
            open_fake_server(behavior=behavior) as server,
            open_session(server.url) as session,
        ):
            tickets = []

            async def requester(n: int) -> None:
                for i in range(5):
                    tickets.append(
                        session.request_response({"instructions": f"r{n}.{i}"}, priority=n % 3)
                    )
                    await trio.sleep(0.001 * ((n + i) % 4))

            async def voice_activity() -> None:
                for _ in range(8):
                    await server.start_response()
                    await trio.sleep(0.002)

            async with trio.open_nursery() as nursery:
                for n in range(6):
                    nursery.start_soon(requester, n)
                nursery.start_soon(voice_activity)
            for ticket in tickets:
                assert (await ticket.wait_done()).status == "completed"
            # Every server-started response began before this last request was sent, so its
            # end comes after theirs in the stream: the counts below are final.
            assert (await session.request_response().wait_done()).status == "completed"
            server_stats = server.statistics()
            stats = session.statistics()
            assert server_stats.max_in_band_active == 1
            assert stats.completed == 31
            assert stats.conflicts_absorbed == server_stats.rejections_sent
            assert stats.failed == stats.rejected == stats.timed_out == 0
            assert stats.server_started == server_stats.server_started == 8


async def test_function_call_turn_gets_one_follow_up() -> None:
    calls = (FunctionCall("get_weather", '{"city": "Oslo"}'), FunctionCall("get_time", "{}"))

    def script(body: Any) -> Script:
        if body.get("instructions") == "use tools":
            return Script(text=None, function_calls=calls)
        return Script(text="It is sunny.")

    with trio.fail_after(10):
        async with open_fake_server(behavior=Behavior(script=script)) as server:
            async with open_session(server.url) as session:
                first = session.request_response({"instructions": "use tools"})
                result = await first.wait_done()
                assert result.response is not None
                call_ids = [o["call_id"] for o in result.response["output"]]
                follow_ups = [
                    await session.send_function_result(cid, json.dumps({"ok": True}))
                    for cid in call_ids
                ]
                assert follow_ups[0] is follow_ups[1]
                assert (await follow_ups[0].wait_done()).status == "completed"
            creates = [e for e in server.received if e["type"] == "response.create"]
            outputs = [e for e in server.received if e["type"] == "conversation.item.create"]
            assert len(creates) == 2
            assert len(outputs) == 2
            # Both results went out before the one follow-up.
            assert server.received.index(creates[1]) > server.received.index(outputs[1])


async def test_cancel_active_response_over_the_wire() -> None:
    with trio.fail_after(10):
        async with open_fake_server(behavior=Behavior(auto_finish=False)) as server:
            async with open_session(server.url) as session:
                ticket = session.request_response()
                rid = await ticket.wait_created()
                await ticket.cancel()
                result = await ticket.wait_done()
                assert result.status == "cancelled"
                assert result.response_id == rid
                assert server.statistics().cancels_received == 1


async def test_server_started_response_interrupted_by_cancel_response() -> None:
    with trio.fail_after(10):
        async with open_fake_server(behavior=Behavior(auto_finish=False)) as server:
            async with open_session(server.url) as session, session.subscribe() as events:
                rid = await server.start_response()
                async for event in events:
                    if event["type"] == "response.created":
                        break
                await session.cancel_response()
                assert server.active_response_ids() == []
                assert server.statistics().responses_done_by_status["cancelled"] == 1
                assert session.statistics().active_response_id is None
                assert rid


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_server_ending_the_connection_fails_tickets(how: str) -> None:
    with trio.fail_after(10):
        async with open_fake_server(behavior=Behavior(auto_finish=False)) as server:
            async with open_session(server.url) as session:
                active = session.request_response()
                queued = session.request_response()
                await active.wait_created()
                connection = server.connections[0]
                await (
                    connection.close(1011, "going away") if how == "close" else connection.abort()
                )
                with pytest.raises(ConnectionLost):
                    await active.wait_done()
                with pytest.raises(ConnectionLost):
                    await queued.wait_done()
                assert queued.state is TicketState.FAILED
                with pytest.raises(ConnectionLost):
                    session.request_response()


async def test_nothing_is_replayed_into_a_new_connection() -> None:
    with trio.fail_after(10):
        async with open_fake_server(behavior=Behavior(auto_finish=False)) as server:
            async with open_session(server.url) as session:
                session.request_response()
                waiting = session.request_response()
                await server.wait_for_client_event("response.create")
                await server.connections[0].abort()
                with pytest.raises(ConnectionLost):
                    await waiting.wait_done()
            async with open_session(server.url) as fresh:
                await trio.testing.wait_all_tasks_blocked()
                assert fresh.statistics().sent == 0
            assert server.connections[1].received == []


async def test_fixture_from_the_plugin(realtime_server: FakeRealtimeServer) -> None:
    with trio.fail_after(10):
        async with open_session(realtime_server.url) as session:
            ticket = await session.say("Welcome back.")
            assert (await ticket.wait_done()).status == "completed"


async def test_credentials_are_sent_and_never_logged(
    realtime_server: FakeRealtimeServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-DO-NOT-LEAK-0123456789"
    url = realtime_server.url.split("?")[0]
    endpoint = Endpoint.openai(secret, url=url)
    captured: list[str] = [repr(endpoint), str(endpoint)]
    with caplog.at_level(logging.DEBUG), trio.fail_after(10):
        async with open_session(endpoint, config=SessionConfig()) as session:
            ticket = session.request_response()
            await ticket.wait_done()
            captured += [repr(session.statistics()), repr(ticket), repr(session.config)]
        await realtime_server.connections[0].wait_closed()
    headers = {
        k.decode().lower(): v.decode() for k, v in realtime_server.connections[0].request_headers
    }
    assert headers["authorization"] == f"Bearer {secret}"
    captured += [record.getMessage() for record in caplog.records]
    captured += [repr(record.args) for record in caplog.records]
    assert secret not in "\n".join(captured)
    assert any("trio_realtime" in record.name for record in caplog.records)


async def test_plain_ws_refuses_credentials_to_a_remote_host() -> None:
    endpoint = Endpoint("ws://example.invalid/v1/realtime", {"api-key": "secret-key"})
    with pytest.raises(ValueError, match="refusing") as info:
        async with open_session(endpoint):
            pass  # pragma: no cover
    assert "secret-key" not in str(info.value)
