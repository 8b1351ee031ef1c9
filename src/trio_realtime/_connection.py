"""The session's connection: opening, holding, closing and switching WebSocket connections.

One :class:`Connection` per session owns every connection the session opens: the first one
and each new one after a loss (``reconnect``) or for a planned rollover (``rollover_after``)
are opened the same way, by :meth:`Connection.open`, each in a task of its own that holds it
open until it is released, so closing has one way too (:meth:`Connection.close`).

Its phase is one attribute, :attr:`Connection.state`, changed only by :meth:`Connection._move`,
which looks the move up in ``_MOVES`` (a move the table does not hold is a bug and raises):

- ``CONNECTING``: no connection the writer may use; one is being opened (the first, or a new
  one). The writer waits (:meth:`Connection.wait_writable`).
- ``OPEN``: the writer writes; first what the new connection must replay, then its channel.
- ``DRAINING``: a rollover is due; the session pauses its queue and waits for a quiet moment.
- ``SWITCHING``: a quiet moment came; the writer writes what was handed to it before it, then
  the reader closes this connection and opens the next.
- ``ENDED``: the session is over; nothing is opened again and the writer stops.

The session decides *whether* to switch (its gate and its record are its own); this module
does the switching: closing the old connection, the tries with backoff, and waiting for the
new one's ``session.created`` within ``connect_timeout`` (what the transport raises is mapped
to :class:`ConnectionLost` once, in :mod:`._transport`; a missed ``session.created`` here).
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager

import trio

from ._config import Reconnect, SessionConfig
from ._errors import ConnectionLost, RealtimeError, SessionRefused
from ._transport import Transport

__all__ = ["Connection", "ConnectionState", "Trigger"]

logger = logging.getLogger(__name__)

#: Opens one connection, connected by the deadline given (the transport maps its errors).
Connect = Callable[[float], AbstractAsyncContextManager[Transport]]
#: Reads a new connection's first events up to ``session.created``; raises ConnectionLost.
Handshake = Callable[[Transport], Awaitable[None]]


class ConnectionState(enum.Enum):
    #: No connection the writer may use: one is being opened.
    CONNECTING = "connecting"
    #: Open: the writer writes.
    OPEN = "open"
    #: Open, and a rollover is due: waiting for a quiet moment.
    DRAINING = "draining"
    #: Open, quiet: the writer finishes what was handed to it, then the connection is switched.
    SWITCHING = "switching"
    #: The session is over.
    ENDED = "ended"


class Trigger(enum.Enum):
    #: A connection opened and got its ``session.created``.
    OPENED = "opened"
    #: The connection broke (or a try to open one failed).
    LOST = "lost"
    #: ``rollover_after`` has passed.
    DUE = "due"
    #: No response running, none in flight: the session hands the writer its last message.
    QUIET = "quiet"
    #: The writer wrote everything before that message, and it is still quiet.
    DRAINED = "drained"
    #: The writer got there, but a response started meanwhile: wait for quiet again.
    BUSY = "busy"
    #: The session ended.
    END = "end"


S = ConnectionState
T = Trigger
#: Every move: (state, trigger) -> next state. Anything else is a bug.
_MOVES: dict[tuple[ConnectionState, Trigger], ConnectionState] = {
    (S.CONNECTING, T.OPENED): S.OPEN,
    (S.CONNECTING, T.LOST): S.CONNECTING,  # a try failed; the next one is being made
    (S.OPEN, T.LOST): S.CONNECTING,
    (S.OPEN, T.DUE): S.DRAINING,
    (S.DRAINING, T.LOST): S.CONNECTING,
    (S.DRAINING, T.QUIET): S.SWITCHING,
    (S.SWITCHING, T.LOST): S.CONNECTING,
    (S.SWITCHING, T.DRAINED): S.CONNECTING,
    (S.SWITCHING, T.BUSY): S.DRAINING,
    **{(state, T.END): S.ENDED for state in S},
    (S.ENDED, T.LOST): S.ENDED,  # the connection closes after the session ended
    (S.ENDED, T.OPENED): S.ENDED,  # a new connection opened as the session ended
}
#: The states in which the writer may write.
_WRITABLE = frozenset({S.OPEN, S.DRAINING, S.SWITCHING})


class Connection:
    """The session's connection, whichever is current; see the module's rules.

    ``connect`` opens one connection (an async context manager giving a :class:`Transport`,
    which its exit closes); each call is one try.
    """

    def __init__(self, connect: Connect, config: SessionConfig) -> None:
        self._connect = connect
        self._config = config
        self.state = ConnectionState.CONNECTING
        self._transport: Transport | None = None
        self._holder: tuple[trio.Event, trio.Event] | None = None  # (release, closed)
        self._changed = trio.lowlevel.ParkingLot()
        self._replay: list[tuple[str, bool]] = []  # (message, is a conversation item)
        self._read_scope: trio.CancelScope | None = None
        self._open_scope: trio.CancelScope | None = None
        #: When the next rollover is due (``math.inf``: never).
        self.rollover_at = math.inf
        self._opened_at = -math.inf  # when the latest connection opened
        self._tries = 0  # tries of the latest switch
        #: New connections opened after a loss, and for a rollover.
        self.reconnects = 0
        self.rollovers = 0
        #: Conversation items written by replays.
        self.replayed_items = 0

    @property
    def writable(self) -> bool:
        """Whether the writer may write now (a connection is open)."""
        return self.state in _WRITABLE

    @property
    def opened(self) -> int:
        """Connections opened: the first (a session exists only once it opened), then each
        new one after a loss or for a rollover."""
        return 1 + self.reconnects + self.rollovers

    # ------------------------------------------------------------------ the state

    def _move(self, trigger: Trigger) -> ConnectionState:
        """The one place the state changes: looked up in ``_MOVES``."""
        try:
            new = _MOVES[self.state, trigger]
        except KeyError:
            raise AssertionError(
                f"connection: no move for {trigger.name} in {self.state.name}"
            ) from None
        if new is not self.state:
            logger.debug("connection %s -> %s (%s)", self.state.name, new.name, trigger.name)
            self.state = new
            self._changed.unpark_all()
        return new

    @property
    def alive(self) -> bool:
        """Whether the session may still use a connection (it has not ended)."""
        return self.state is not ConnectionState.ENDED

    async def wait_writable(self) -> Transport | None:
        """Wait until the writer may write; the connection to write to, or None once the
        session has ended. Cancelling the wait is safe."""
        while self.state not in _WRITABLE:
            if self.state is ConnectionState.ENDED:
                await trio.lowlevel.checkpoint()
                return None
            await self._changed.park()
        await trio.lowlevel.checkpoint_if_cancelled()
        assert self._transport is not None
        return self._transport

    def take_replay(self) -> list[tuple[str, bool]]:
        """What the current connection must be sent before anything else (once)."""
        replay = self._replay
        if replay:  # (nothing allocated on the hot path, where there is none)
            self._replay = []
        return replay

    def end(self) -> None:
        """The session is over: the writer stops waiting, nothing is opened again."""
        self._move(Trigger.END)

    # ------------------------------------------------------------------ rollover

    def arm_rollover(self) -> None:
        if self._config.rollover_after is not None:
            self.rollover_at = trio.current_time() + self._config.rollover_after

    def rollover_due(self) -> None:
        """``rollover_after`` has passed: wait for a quiet moment (:meth:`quiet`)."""
        self.rollover_at = math.inf
        if self.state is ConnectionState.OPEN:
            self._move(Trigger.DUE)

    def quiet(self) -> bool:
        """The session is quiet while a rollover is due: True when the caller is to hand the
        writer its last message for this connection (it then calls :meth:`drained`)."""
        if self.state is not ConnectionState.DRAINING:
            return False
        self._move(Trigger.QUIET)
        return True

    def drained(self, quiet: bool) -> None:
        """The writer wrote everything handed to it before the switch; if the session is
        still ``quiet``, the reader stops reading and switches, else it waits again."""
        if self.state is not ConnectionState.SWITCHING:
            return  # lost meanwhile: the reader is switching already
        if not quiet:
            self._move(Trigger.BUSY)
            return
        self._move(Trigger.DRAINED)
        if self._read_scope is not None:
            self._read_scope.cancel()

    # ------------------------------------------------------------------ reading and writing

    async def read(self, take: Callable[[str | bytes], None]) -> ConnectionLost | None:
        """Give every message of the current connection to ``take`` until it is lost
        (returned), or until a planned switch is due (None)."""
        assert self._transport is not None
        transport = self._transport
        with trio.CancelScope() as self._read_scope:
            try:
                if self.state in (ConnectionState.CONNECTING, ConnectionState.ENDED):
                    return None  # drained (or stopped) before the read began
                while True:
                    try:
                        data = await transport.receive()
                    except ConnectionLost as exc:
                        return exc
                    take(data)
            finally:
                self._read_scope = None
        return None

    def stop(self) -> None:
        """The session is closing: the reader stops reading, or opening a new connection,
        at once (it then closes the connection)."""
        for scope in (self._read_scope, self._open_scope):
            if scope is not None:
                scope.cancel()

    async def send_failed(self, transport: Transport, exc: ConnectionLost) -> None:
        """The writer's send on ``transport`` failed: close it (the reader then learns of the
        loss and switches, or ends the session)."""
        logger.info("send failed: %s", exc)
        await transport.aclose()

    # ------------------------------------------------------------------ opening and closing

    async def open(
        self,
        nursery: trio.Nursery,
        handshake: Handshake,
        *,
        lost: ConnectionLost | None,
        first: bool = False,
        deadline: float | None = None,
    ) -> RealtimeError | None:
        """Close the current connection (if any) and open a new one: after a loss (``lost``,
        with up to ``reconnect.attempts`` tries and backoff), for a rollover, or the first
        (``first``, one try, connected by ``deadline``). Returns None once it is open
        (``CONNECTING``: the caller hands it what to replay with :meth:`opened`), else the
        error that ends the session. ``SessionRefused`` is never tried again.
        """
        if self.state is ConnectionState.ENDED:
            return lost or ConnectionLost("session ended")
        if lost is not None or self.state is not ConnectionState.CONNECTING:
            self._move(Trigger.LOST)
        with trio.CancelScope() as self._open_scope:
            try:
                return await self._open(nursery, handshake, lost, first, deadline)
            finally:
                self._open_scope = None
        return ConnectionLost("the session ended while a new connection was being opened")

    async def _open(
        self,
        nursery: trio.Nursery,
        handshake: Handshake,
        lost: ConnectionLost | None,
        first: bool,
        deadline: float | None,
    ) -> RealtimeError | None:
        await self.close()
        policy = self._config.reconnect or Reconnect(attempts=1)
        planned = lost is None
        attempts = 1 if first else policy.attempts
        # A connection that dies within max_delay of opening counts as a failed try: the
        # backoff goes on from where it was, and the tries are not counted afresh.
        start = 0
        if not planned and trio.current_time() - self._opened_at < policy.max_delay:
            start = self._tries
        error: RealtimeError | None = lost
        for attempt in range(start, attempts):
            self._tries = attempt + 1
            if attempt or not planned:
                await trio.sleep(policy.delay(attempt, random.random()))
            if not self.alive:  # the session ended during the delay
                return error or ConnectionLost("session ended")
            try:
                await self._open_once(nursery, handshake, deadline)
            except SessionRefused as exc:
                return exc
            except ConnectionLost as exc:
                if first:
                    raise
                logger.warning("new connection, try %d: %s", attempt + 1, exc)
                error = exc
                continue
            if first:  # (the first connection's tries are not the backoff's)
                self._tries = 0
            else:
                self._opened_at = trio.current_time()
                if planned:
                    self.rollovers += 1
                else:
                    self.reconnects += 1
            return None
        return error or ConnectionLost("could not open a new connection")

    def opened_with(self, replay: Sequence[tuple[str, bool]]) -> None:
        """The new connection is the session's: the writer sends ``replay`` first."""
        self._replay = list(replay)
        self.arm_rollover()
        self._move(Trigger.OPENED)

    async def _open_once(
        self, nursery: trio.Nursery, handshake: Handshake, deadline: float | None
    ) -> None:
        """One try: open a connection in a holder task, read up to its ``session.created``;
        all of it by ``deadline`` (default: ``connect_timeout`` from now)."""
        timeout = self._config.connect_timeout
        if deadline is None:
            deadline = trio.current_time() + timeout
        release = trio.Event()
        closed = trio.Event()
        self._holder = (release, closed)
        try:
            try:
                with trio.fail_at(deadline):
                    self._transport = await nursery.start(self._hold, release, closed, deadline)
                    await handshake(self._transport)
            except trio.TooSlowError as exc:
                raise ConnectionLost(
                    f"no session.created within connect_timeout ({timeout:g} s)"
                ) from exc
        except BaseException:
            await self.close()
            raise

    async def _hold(
        self,
        release: trio.Event,
        closed: trio.Event,
        deadline: float,
        *,
        task_status: trio.TaskStatus[Transport],
    ) -> None:
        """Open one connection and hold it open until ``release`` is set (or the session's
        nursery is cancelled); then close it. Its own task, so that the transport's nursery
        belongs to no other task's stack."""
        try:
            async with self._connect(deadline) as transport:
                task_status.started(transport)
                await release.wait()
        finally:
            closed.set()

    async def close(self) -> None:
        """Close the current connection, gracefully within ``close_timeout`` (its holder
        task closes it); does nothing when none is open."""
        holder, self._holder = self._holder, None
        if holder is None:
            await trio.lowlevel.checkpoint()
            return
        release, closed = holder
        release.set()
        with trio.CancelScope(shield=True), trio.move_on_after(2 * self._config.close_timeout):
            await closed.wait()
