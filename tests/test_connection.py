"""The connection's state (``_connection.py``): one table decides every move, and the writer
waits on the state alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from memory import MemoryTransport, memory_pair
from trio_realtime import ConnectionLost, SessionConfig
from trio_realtime._connection import _MOVES, Connection, ConnectionState, Trigger

S, T = ConnectionState, Trigger


def test_every_state_can_end_and_the_end_absorbs_what_comes_late() -> None:
    for state in S:
        assert _MOVES[state, T.END] is S.ENDED
    for late in (T.LOST, T.OPENED, T.END):
        assert _MOVES[S.ENDED, late] is S.ENDED
    # A rollover: open -> draining -> switching -> connecting -> open.
    assert [_MOVES[m] for m in ((S.OPEN, T.DUE), (S.DRAINING, T.QUIET))] == [
        S.DRAINING,
        S.SWITCHING,
    ]
    assert _MOVES[S.SWITCHING, T.DRAINED] is S.CONNECTING
    assert _MOVES[S.SWITCHING, T.BUSY] is S.DRAINING
    assert _MOVES[S.CONNECTING, T.OPENED] is S.OPEN


def test_a_move_the_table_does_not_hold_is_a_bug() -> None:
    connection = Connection(_never, SessionConfig())
    with pytest.raises(AssertionError, match="no move for DUE in CONNECTING"):
        connection._move(T.DUE)


@asynccontextmanager
async def _never(deadline: float) -> AsyncIterator[MemoryTransport]:  # pragma: no cover
    raise AssertionError("not opened in this test")
    yield


async def test_the_writer_waits_until_a_connection_is_open_and_stops_at_the_end() -> None:
    transport, _ = memory_pair()

    @asynccontextmanager
    async def connect(deadline: float) -> AsyncIterator[MemoryTransport]:
        yield transport

    async def handshake(opened: object) -> None:
        await trio.lowlevel.checkpoint()

    connection = Connection(connect, SessionConfig())
    got: list[object] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                got.append(await connection.wait_writable())
                got.append(await connection.wait_writable())

            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []  # connecting: it waits
            assert await connection.open(nursery, handshake, lost=None, first=True) is None
            connection.opened_with([("replayed", True)])
            await trio.testing.wait_all_tasks_blocked()
            assert got == [transport, transport]
            assert connection.take_replay() == [("replayed", True)]
            assert connection.take_replay() == []
            connection.end()
            assert await connection.wait_writable() is None
            # A connection that opens as the session ends stays ended.
            connection.opened_with([])
            assert connection.state is S.ENDED
            error = await connection.open(nursery, handshake, lost=ConnectionLost("x"))
            assert isinstance(error, ConnectionLost)
            await connection.close()
            nursery.cancel_scope.cancel()
