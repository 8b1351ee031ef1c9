"""A replay carries each item once, whichever task sees a create first (issue 18, item 2).

The writer notes an application's ``conversation.item.create`` and the reader the server's
acknowledgement; the record must not depend on which runs first. Here the acknowledgement is
made to arrive before the writer's send returns: in one loop (the send returns only once every
other task is blocked), and with the fake server in a process of its own and a busy loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from test_reconnect import FAST_RETRY, user_message
from trio_realtime import Endpoint, SessionConfig, Transport, _session, open_session
from trio_realtime.testing import open_fake_server, open_fake_server_process

pytestmark = pytest.mark.usefixtures("transport")


class _LateReturn:
    """A transport whose send returns only when every other task is blocked: the server's
    answer has been read and applied by then."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner

    async def send(self, message: str) -> None:
        await self._inner.send(message)
        await trio.testing.wait_all_tasks_blocked()

    async def receive(self) -> str | bytes:
        return await self._inner.receive()

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_an_acknowledgement_read_before_the_send_returns_is_not_a_second_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = _session.open_websocket_transport

    @asynccontextmanager
    async def late(
        endpoint: Endpoint, config: SessionConfig, *, deadline: float
    ) -> AsyncIterator[Transport]:
        async with opened(endpoint, config, deadline=deadline) as transport:
            yield _LateReturn(transport)

    monkeypatch.setattr(_session, "open_websocket_transport", late)
    with trio.fail_after(30):
        async with open_fake_server() as server:
            config = SessionConfig(reconnect=FAST_RETRY)
            async with open_session(server.url, config=config) as session:
                for text in ("one", "two", "three"):
                    await session.send(user_message(text))
                await server.connections[0].wait_for_client_event(
                    "conversation.item.create", count=3
                )
                await server.connections[0].abort()
                assert (await session.request_response().wait_done()).status == "completed"
            new = server.connections[-1]
            texts = [
                e["item"]["content"][0]["text"]
                for e in new.received
                if e["type"] == "conversation.item.create"
            ]
            assert texts == ["one", "two", "three"]


async def _busy(stop: trio.Event) -> None:
    """Keep the event loop busy: a little work between checkpoints."""
    while not stop.is_set():
        sum(range(3000))
        await trio.lowlevel.checkpoint()


async def test_no_item_is_replayed_twice_with_the_server_out_of_process(transport: str) -> None:
    messages = 60
    config = SessionConfig(rollover_after=0.2)
    with trio.fail_after(60):
        async with open_fake_server_process() as server:
            async with trio.open_nursery() as nursery:
                stop = trio.Event()
                for _ in range(3):
                    nursery.start_soon(_busy, stop)
                async with open_session(server.url, config=config) as session:
                    for n in range(messages):
                        await session.send(user_message(f"message {n}"))
                        if n % 10 == 9:
                            await trio.sleep(0.1)  # let rollovers happen in between
                    await session.request_response().wait_done()
                    rollovers = session.statistics().rollovers
                stop.set()
            report = await server.stop()
    assert rollovers >= 1
    assert len(report.connections) == rollovers + 1
    for connection in report.connections:
        assert connection.duplicated_items() == []
    # The last connection got every message once, in order: replayed, then sent.
    texts = [
        item["content"][0]["text"]
        for item in report.connections[-1].received_items
        if item.get("role") == "user"
    ]
    assert texts == [f"message {n}" for n in range(messages)]
