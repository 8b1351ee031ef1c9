"""A connection that goes silent is noticed (issue 18, item 1): both sockets stay open but
nothing comes back (a NAT or load balancer dropped the flow, the network died). The session
pings (``ping_interval``) and a ping unanswered for ``ping_timeout`` is an abnormal loss:
it reconnects when configured, else it ends with ``ConnectionLost``. Both transports, against
a server scripted with ``websockets``' sans-I/O server protocol, on the autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trio_realtime import ConnectionLost, Reconnect, SessionConfig, open_session

pytest.importorskip("websockets")

from sansio_server import accept, serving

pytestmark = pytest.mark.usefixtures("transport")


@asynccontextmanager
async def server(silent: set[int]) -> AsyncIterator[tuple[str, list[int]]]:
    """A server whose connections numbered in ``silent`` (0-based) go silent after
    ``session.created``: the socket stays open, nothing is read or written. The others read
    and answer pings until the client leaves. Yields the URL and the connections' numbers."""
    accepted: list[int] = []

    async def handle(stream: trio.SocketStream) -> None:
        number = len(accepted)
        accepted.append(number)
        protocol = await accept(stream)
        if protocol is None:
            return
        await stream.send_all(b"".join(protocol.data_to_send()))
        if number in silent:
            await trio.sleep_forever()
        while True:  # read, and answer pings (websockets queues the pongs)
            data = await stream.receive_some(65536)
            if not data:
                return
            protocol.receive_data(data)
            protocol.events_received()
            out = b"".join(protocol.data_to_send())
            if out:
                await stream.send_all(out)

    async with serving(handle) as url:
        yield url, accepted


async def test_a_silent_connection_ends_the_session_with_connection_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SessionConfig(close_timeout=1)
    with trio.fail_after(300):
        async with server(silent={0}) as (url, _):
            async with open_session(url, config=config) as session:
                await session.wait_closed()
                with pytest.raises(ConnectionLost, match="no answer to a ping") as info:
                    session.request_response()
                assert info.value.code is None  # abnormal: no close frame


async def test_a_silent_connection_is_replaced_when_reconnect_is_configured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SessionConfig(
        close_timeout=1, reconnect=Reconnect(attempts=3, initial_delay=0.05, max_delay=0.2)
    )
    with trio.fail_after(600):
        async with server(silent={0}) as (url, accepted):
            async with open_session(url, config=config) as session:
                # Noticed within ping_interval + ping_timeout; the new connection answers
                # its pings: it stays.
                await trio.sleep(180)
                stats = session.statistics()
                assert not session.closed
            assert (stats.connections, stats.reconnects) == (2, 1)
            assert accepted == [0, 1]


async def test_a_connection_that_answers_is_kept_and_pings_can_be_turned_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for config, silent in ((SessionConfig(), set()), (SessionConfig(ping_interval=None), {0})):
        with trio.fail_after(600):
            async with server(silent=silent) as (url, accepted):
                async with open_session(url, config=config) as session:
                    await trio.sleep(300)
                    assert not session.closed
                assert accepted == [0]
