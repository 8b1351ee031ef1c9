"""open_session(): one Realtime connection run by three tasks in a nursery.

- the **reader** receives frames, parses and classifies them, gives every event to the
  subscribers and hands lifecycle and per-response events to the dispatcher;
- the **dispatcher** feeds those events, the requests and the clock to the :class:`Gate` and
  forwards what it says to send; it holds the slot (the gate's capacity-one semaphore);
- the **writer** is the only task that sends on the WebSocket.

They talk over trio memory channels. Nothing outlives the ``async with`` block.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ._config import SessionConfig
from ._endpoints import Endpoint
from ._errors import ConnectionLost, RealtimeError, SessionClosed
from ._events import (
    EventKind,
    MalformedFrame,
    classify,
    parse_error,
    parse_frame,
    response_id_of,
    response_object,
)
from ._gate import CancelTarget, Gate, GateStatistics, Request, Watcher
from ._stream import EventStream
from ._ticket import ResponseTicket
from ._transport import Transport, open_websocket_transport
from ._turns import Turns
from ._util import unwrap_lone_exception

__all__ = ["RealtimeSession", "SessionStatistics", "open_session"]

logger = logging.getLogger("trio_realtime.session")

Event = dict[str, Any]
#: Responses routed to tickets at once; more means done events never came: the oldest goes.
_MAX_ROUTES = 1024
_WAKE = object()  # put in the dispatcher's inbox when a request or cancel needs attention


@attrs.define(eq=False)
class _CancelActive:
    """A ``cancel_response()`` call, ordered with the server events in the dispatcher's inbox."""

    target: CancelTarget | None = None
    resolved: bool = False


_Inbound = tuple[EventKind, Event] | _CancelActive | object


@attrs.frozen
class SessionStatistics(GateStatistics):
    """A snapshot of a session: the gate's figures, plus the reader's."""

    #: Frames skipped as malformed.
    malformed_frames: int
    subscribers: int


class RealtimeSession:
    """A live Realtime session. Made by :func:`open_session`."""

    def __init__(self, transport: Transport, config: SessionConfig) -> None:
        self.config = config
        #: The ``session`` object of the server's ``session.created``.
        self.server_session: Mapping[str, Any] = {}
        self._transport = transport
        self._gate = Gate(
            max_queue=config.max_queue,
            created_timeout=config.created_timeout,
            response_timeout=config.response_timeout,
            cancel_grace=config.cancel_grace,
            out_of_band_takes_slot=config.out_of_band_takes_slot,
        )
        self._turns: Turns[ResponseTicket] = Turns()  # follow-ups held for their turn
        self._inbox_send, self._inbox_receive = trio.open_memory_channel[_Inbound](
            config.event_buffer
        )
        self._outbox_send, self._outbox_receive = trio.open_memory_channel[tuple[str, bool]](
            math.inf
        )
        self._send_credits = trio.Semaphore(config.send_buffer)
        self._wake_pending = False
        self._subscribers: list[EventStream] = []
        self._changed = trio.Event()  # replaced after each dispatcher step while waited on
        self._state_waiters = 0
        self._routes: dict[str, Watcher] = {}  # response id -> its ticket (reader-owned)
        self._error: RealtimeError | None = None  # why the session ended
        self._writer_done = trio.Event()
        self._malformed = 0
        self._client_ids = 0

    # ------------------------------------------------------------------ public API

    def request_response(
        self, response: Mapping[str, Any] | None = None, *, priority: int = 0
    ) -> ResponseTicket:
        """Queue a ``response.create``; it is sent as soon as the slot is free.

        ``response`` is the body of ``response.create`` (``instructions``, ``tools``,
        ``metadata``, ``conversation``, ...), sent untouched apart from the ``metadata`` key the
        library adds. Higher ``priority`` goes first; equal priorities keep FIFO order.
        Never blocks. Raises ``QueueFull`` when ``max_queue`` requests wait, and
        ``SessionClosed`` / ``ConnectionLost`` once the session has ended.
        """
        return self._submit(response, priority=priority, held=False)

    async def send(self, event: Mapping[str, Any]) -> str:
        """Send any client event; returns its ``event_id`` (one is added when missing).

        A ``response.create`` goes through the queue like :meth:`request_response` (its
        ``event_id`` is the library's). Waits while ``send_buffer`` events wait for the writer;
        returns once the event is handed to the writer, in order with every other send.
        Cancelling the wait is safe: the event is then not sent. Raises ``SessionClosed`` or
        ``ConnectionLost`` once the session has ended.
        """
        if event.get("type") == "response.create":
            ticket = self.request_response(event.get("response"))
            await trio.lowlevel.checkpoint()
            return ticket.event_id
        self._check_open()
        event = dict(event)
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            self._client_ids += 1
            event_id = event["event_id"] = f"evt_trc_{self._client_ids}"
        text = json.dumps(event)
        await self._send_credits.acquire()
        try:
            self._outbox_send.send_nowait((text, True))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._send_credits.release()
            self._check_open()
            raise SessionClosed("session is closing") from None
        return event_id

    async def cancel_response(self) -> None:
        """Interrupt the active in-band response, whoever started it, and wait for its end.

        The request goes through the dispatcher behind the server events already received,
        so a response whose ``response.created`` a subscriber has seen is the one cancelled.
        Returns at once when nothing is active. Cancelling the wait is safe (the cancel is
        still sent). Raises ``SessionClosed`` / ``ConnectionLost`` once the session has ended.
        """
        self._check_open()
        command = _CancelActive()
        try:
            await self._inbox_send.send(command)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._check_open()
            raise SessionClosed("session is closing") from None
        self._state_waiters += 1
        try:
            while self._error is None and not (
                command.resolved
                and (command.target is None or self._gate.is_finished(command.target))
            ):
                await self._changed.wait()
        finally:
            self._state_waiters -= 1
        await trio.lowlevel.checkpoint()

    async def send_function_result(
        self,
        call_id: str,
        output: str,
        *,
        response: Mapping[str, Any] | None = None,
        priority: int = 0,
    ) -> ResponseTicket:
        """Send a ``function_call_output`` for ``call_id`` and return the follow-up's ticket.

        The results of one turn share one follow-up ``response.create``, sent after the
        ``response.done`` of the response that made the calls once every call it made has a
        result. A call the session never saw gets a follow-up of its own. ``response`` is the
        follow-up's body (used by the first result of a turn).
        """
        await self.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": call_id, "output": output},
            }
        )
        turn = self._turns.turn_of(call_id)
        if turn is None:
            return self._submit(response, priority=priority, held=False)
        if turn.follow_up is None:
            turn.follow_up = self._submit(response, priority=priority, held=True)
        ticket = turn.follow_up
        ready = self._turns.add_result(turn, call_id)
        if ready is not None:
            self._gate.release_held(ready._request)
            self._wake()
        return ticket

    async def say(
        self, text: str, *, priority: int = 0, response: Mapping[str, Any] | None = None
    ) -> ResponseTicket:
        """Have the assistant speak ``text`` (word for word), queued like any request.

        ``response`` adds fields to the ``response.create`` body (voice, modalities, ...).
        Returns the ticket; await ``ticket.wait_done()`` for the end.
        """
        body = {"instructions": f"Say exactly: {text}", **(response or {})}
        ticket = self.request_response(body, priority=priority)
        await trio.lowlevel.checkpoint()
        return ticket

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[EventStream]:
        """Every server event from now on, as dicts: ``async for event in events``.

        Each subscriber has its own buffer of ``event_buffer`` events; one that falls further
        behind is cut off with ``EventBufferOverflow`` (the session goes on). Iteration ends
        when the session closes, or raises ``ConnectionLost`` when the connection broke.
        """
        stream = EventStream(self.config.event_buffer)
        if self._error is not None:
            stream.finish(self._error if isinstance(self._error, ConnectionLost) else None)
        else:
            self._subscribers.append(stream)
        try:
            yield stream
        finally:
            stream.close()
            if stream in self._subscribers:
                self._subscribers.remove(stream)

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(
            **attrs.asdict(self._gate.statistics()),
            malformed_frames=self._malformed,
            subscribers=len(self._subscribers),
        )

    @property
    def closed(self) -> bool:
        return self._error is not None

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error

    def _submit(
        self, response: Mapping[str, Any] | None, *, priority: int, held: bool
    ) -> ResponseTicket:
        request = self._gate.submit(response, priority=priority, now=trio.current_time(), held=held)
        ticket = ResponseTicket(self, request)
        self._wake()
        return ticket

    def _cancel_request(self, request: Request) -> None:
        if self._error is None:
            self._gate.cancel(request, now=trio.current_time())
            self._wake()

    def _wake(self) -> None:
        if not self._wake_pending:
            try:
                self._inbox_send.send_nowait(_WAKE)
            except trio.WouldBlock:
                return  # the dispatcher has work queued and pumps after each item
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            self._wake_pending = True

    def _end(self, error: RealtimeError) -> None:
        """The session is over: fail every waiting request and end every stream."""
        if self._error is not None:
            return
        self._error = error
        self._gate.close(error, now=trio.current_time())
        lost = error if isinstance(error, ConnectionLost) else None
        for stream in self._subscribers:
            stream.finish(lost)
        self._subscribers.clear()
        self._changed.set()

    # ------------------------------------------------------------------ tasks

    async def _reader(self, *, task_status: trio.TaskStatus[None]) -> None:
        with self._inbox_send:
            refusal = ""  # what the server said before it closed, e.g. invalid_api_key
            while True:
                event = await self._receive_event()
                if event is None:
                    assert self._error is not None
                    raise ConnectionLost(f"{self._error}{refusal}") from self._error
                if event["type"] == "session.created":
                    session = event.get("session")
                    self.server_session = session if isinstance(session, Mapping) else {}
                    break
                if event["type"] == "error":
                    error = parse_error(event)
                    refusal = f" (server said {error.code}: {error.message})"
                logger.warning("%s before session.created; skipped", event["type"])
            task_status.started()
            while True:
                event = await self._receive_event()
                if event is None:
                    return
                try:
                    kind = classify(event)
                except MalformedFrame as exc:
                    self._skip_malformed(exc)
                    continue
                if self._subscribers:
                    self._publish(event)
                if kind is EventKind.OTHER:
                    continue
                self._route(kind, event)
                if kind is not EventKind.RESPONSE:
                    try:
                        self._inbox_send.send_nowait((kind, event))
                    except trio.WouldBlock:
                        await self._inbox_send.send((kind, event))

    def _skip_malformed(self, exc: MalformedFrame) -> None:
        self._malformed += 1
        logger.warning("skipping a malformed frame: %s", exc)

    def _publish(self, event: Event) -> None:
        """Give an event to every subscriber; drop the ones cut off or gone."""
        alive = True
        for stream in self._subscribers:
            alive = stream.push(event) and alive
        if not alive:
            self._subscribers = [s for s in self._subscribers if s.push_allowed]

    def _route(self, kind: EventKind, event: Event) -> None:
        """Give an event of a response to its ticket's iterators, in arrival order.

        Done here, in the reader, so that streaming events (deltas) need no hop to the
        dispatcher: the route of a response is set from its ``response.created`` (matched by
        metadata to the request in flight) before the dispatcher even sees that event.
        """
        routes = self._routes
        if kind is EventKind.RESPONSE:
            rid = event["response_id"]
            self._gate.on_response_event(rid, now=trio.current_time())
            watcher = routes.get(rid)
            if event["type"] == "response.output_item.added":
                self._note_call(event)
        elif kind is EventKind.CREATED:
            rid = response_id_of(event)
            request = self._gate.request_of(event)
            watcher = request.watcher if request is not None else None
            if rid is not None and watcher is not None:
                routes[rid] = watcher
                if len(routes) > _MAX_ROUTES:  # responses whose done never came
                    del routes[next(iter(routes))]
        elif kind is EventKind.DONE:
            rid = response_id_of(event)
            watcher = routes.pop(rid, None) if rid is not None else None
            if watcher is None:  # a done without a created we saw
                request = self._gate.request_of(event)
                watcher = request.watcher if request is not None else None
        else:
            return
        if watcher is not None:
            watcher.request_event(event)

    async def _receive_event(self) -> Event | None:
        """The next well-formed event; None once the connection is gone."""
        while True:
            try:
                data = await self._transport.receive()
            except ConnectionLost as exc:
                logger.info("%s", exc)
                self._end(exc)
                return None
            try:
                return parse_frame(data)
            except MalformedFrame as exc:
                self._skip_malformed(exc)

    async def _dispatcher(self, *, task_status: trio.TaskStatus[None]) -> None:
        gate = self._gate
        with self._inbox_receive:
            task_status.started()
            while True:
                deadline = gate.next_deadline()
                try:
                    if deadline == math.inf:
                        self._handle(await self._inbox_receive.receive())
                    else:
                        with trio.move_on_at(deadline):
                            self._handle(await self._inbox_receive.receive())
                except trio.EndOfChannel:
                    break
                now = trio.current_time()
                if now >= deadline:
                    gate.on_tick(now=now)
                gate.pump(now=now)
                for event in gate.take_outgoing():
                    try:
                        self._outbox_send.send_nowait((json.dumps(event), False))
                    except (trio.ClosedResourceError, trio.BrokenResourceError):
                        break

    def _handle(self, item: _Inbound) -> None:
        if item is _WAKE:
            self._wake_pending = False
            return
        if isinstance(item, _CancelActive):
            item.target = self._gate.cancel_active(now=trio.current_time())
            item.resolved = True
            self._broadcast()
            return
        assert isinstance(item, tuple)
        kind, event = item
        gate = self._gate
        now = trio.current_time()
        if kind is EventKind.CREATED:
            gate.on_created(event, now=now)
        elif kind is EventKind.DONE:
            gate.on_done(event, now=now)
            response = response_object(event)
            rid = response_id_of(event)
            if rid is not None:
                follow_up = self._turns.on_done(rid, response)
                if follow_up is not None:
                    gate.release_held(follow_up._request)
        elif kind is EventKind.ERROR:
            gate.on_error(event, now=now)
        self._broadcast()

    def _broadcast(self) -> None:
        """Wake the tasks waiting in ``cancel_response()`` to look at the state again."""
        if self._state_waiters:
            self._changed.set()
            self._changed = trio.Event()

    def _note_call(self, event: Event) -> None:
        item = event.get("item")
        if isinstance(item, Mapping) and item.get("type") == "function_call":
            call_id = item.get("call_id")
            if isinstance(call_id, str):
                self._turns.note_call(event["response_id"], call_id)

    async def _writer(self, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with self._outbox_receive:
                task_status.started()
                async for text, credited in self._outbox_receive:
                    try:
                        await self._transport.send(text)
                    except ConnectionLost as exc:
                        logger.info("send failed: %s", exc)
                        self._end(exc)
                        await self._transport.aclose()  # wakes the reader
                        return
                    finally:
                        if credited:
                            self._send_credits.release()
        finally:
            self._writer_done.set()


@asynccontextmanager
async def open_session(
    target: Endpoint | str | Transport, *, config: SessionConfig | None = None
) -> AsyncIterator[RealtimeSession]:
    """Connect to a Realtime server and run a session until the block ends.

    ``target`` is an :class:`Endpoint`, a ``ws://`` / ``wss://`` URL (no credentials), or an
    already open :class:`Transport` (which the session then closes). Waits for the server's
    ``session.created`` (``connect_timeout``); raises ``ConnectionLost`` if that fails.

    Leaving the block fails every request still waiting with ``SessionClosed``, gives the
    writer up to ``close_timeout`` to flush what ``send()`` accepted, and closes the
    connection. If the server breaks the connection, the block is not interrupted: pending and
    later calls raise ``ConnectionLost``.
    """
    config = config or SessionConfig()
    deadline = trio.current_time() + config.connect_timeout
    if isinstance(target, str):
        target = Endpoint(target)
    if isinstance(target, Endpoint):
        async with (
            open_websocket_transport(target, config, deadline=deadline) as transport,
            _run_session(transport, config, deadline) as session,
        ):
            yield session
    else:
        try:
            async with _run_session(target, config, deadline) as session:
                yield session
        finally:
            await target.aclose()


@asynccontextmanager
async def _run_session(
    transport: Transport, config: SessionConfig, deadline: float
) -> AsyncIterator[RealtimeSession]:
    session = RealtimeSession(transport, config)
    with unwrap_lone_exception():
        async with trio.open_nursery() as nursery:
            await nursery.start(session._writer)
            await nursery.start(session._dispatcher)
            try:
                with trio.fail_at(deadline):
                    await nursery.start(session._reader)
            except trio.TooSlowError:
                raise ConnectionLost("no session.created within connect_timeout") from None
            try:
                yield session
            finally:
                session._end(SessionClosed("session closed"))
                session._outbox_send.close()
                with trio.CancelScope(shield=True), trio.move_on_after(config.close_timeout):
                    await session._writer_done.wait()
                nursery.cancel_scope.cancel()
