"""open_session(): one Realtime connection run by three tasks in a nursery.

- the **reader** receives frames, parses and classifies them, gives every event to the
  subscribers, applies the ones the gate cares about to the :class:`Gate` at once (so the
  gate always knows what any task has seen), and routes a response's events to its ticket;
- the **dispatcher** is the only task that takes the slot and sends ``response.create``
  (:meth:`Gate.pump`), and the only one that acts on deadlines (:meth:`Gate.tick`). It sleeps
  in one long-lived cancel scope whose deadline is the gate's next deadline, and is woken only
  when the gate has a request it could send;
- the **writer** is the only task that sends on the WebSocket, in the order events were
  handed to it.

After feeding the gate, any task hands the gate's effects on at once (:meth:`_settle`): events
to the writer's channel, state changes to tickets, ended responses to whoever waits for them.

The first connection is opened by :func:`open_session`. When ``reconnect`` or
``rollover_after`` asks for it, the reader moves the session to a new one in one step,
:meth:`RealtimeSession._switch_connection`: the gate fails what went out on the old connection
and pauses the queue, the writer waits, a new connection is opened (held open by a task of its
own) and the configuration and conversation are replayed into it, then the writer and the
queue resume. Nothing outlives the ``async with`` block.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._config import Reconnect, SessionConfig
from ._conversation import ConversationRecord
from ._endpoints import Endpoint
from ._errors import (
    ConnectionLost,
    RealtimeError,
    ResponseRejected,
    SessionClosed,
    SessionRefused,
    fresh,
)
from ._events import (
    FATAL_ERRORS,
    Acknowledgement,
    MalformedFrame,
    OutputAlive,
    ServerError,
    classify,
    dump_event,
    parse_error,
    parse_frame,
)
from ._gate import CancelTarget, Effects, Gate, Request
from ._request_body import response_body
from ._statistics import LatencyRecorder, SessionStatistics
from ._stream import EventStream
from ._ticket import ResponseTicket
from ._transport import Transport, open_websocket_transport
from ._util import unwrap_lone_exception

if TYPE_CHECKING:
    from ._tools import ToolRegistry, ToolRunner

__all__ = ["RealtimeSession", "SessionStatistics", "open_session"]

logger = logging.getLogger(__name__)

Event = dict[str, Any]


class RealtimeSession:
    """A live Realtime session. Made by :func:`open_session`."""

    def __init__(
        self,
        transport: Transport,
        config: SessionConfig,
        *,
        connect: Callable[[], AbstractAsyncContextManager[Transport]] | None = None,
    ) -> None:
        self.config = config
        #: The ``session`` object of the server's ``session.created`` (the latest connection's).
        self.server_session: Mapping[str, Any] = {}
        # The connection: the first is given; a new one (reconnect, rollover) is opened with
        # ``connect`` by the reader and held open by a task of its own (``_connection``).
        self._transport = transport
        self._connect = connect
        self._connection: tuple[trio.Event, trio.Event] | None = None  # (release, closed)
        self._nursery: trio.Nursery | None = None
        self._live = trio.Event()  # set while a connection is open: the writer may send
        self._live.set()
        self._read_scope: trio.CancelScope | None = None
        self._writing = False
        #: What a new connection replays; kept when the session may need one.
        self._record: ConversationRecord | None = None
        if config.reconnect is not None or config.rollover_after is not None:
            self._record = ConversationRecord()
        self._rollover_at = math.inf
        self._rollover_due = False
        self._fatal: SessionRefused | None = None  # a fatal error the server reported
        self._connections = 0
        self._connected_at = -math.inf  # when the latest new connection opened
        self._tries = 0  # tries of the latest switch
        self._reconnects = 0
        self._rollovers = 0
        self._replayed_items = 0
        self._gate: Gate[ResponseTicket] = Gate(
            max_queue=config.max_queue,
            created_timeout=config.created_timeout,
            response_timeout=config.response_timeout,
            cancel_grace=config.cancel_grace,
            out_of_band_takes_slot=config.out_of_band_takes_slot,
        )
        # What the writer sends: the text, and for an application's event (send()), the event
        # itself (it holds a send credit, and the conversation record takes it once written).
        self._outbox_send, self._outbox_receive = trio.open_memory_channel[_Outgoing](math.inf)
        self._send_credits = trio.Semaphore(config.send_buffer)
        # The dispatcher: parked until a request could be sent, in a scope whose deadline is
        # the gate's next deadline.
        self._dispatch_wanted = False
        self._dispatcher_lot = trio.lowlevel.ParkingLot()
        self._sleep_scope: trio.CancelScope | None = None
        self._subscribers: list[EventStream] = []
        self._end_waiters: list[tuple[CancelTarget, trio.Event]] = []
        self._error: RealtimeError | None = None  # why the session ended
        self._writer_done = trio.Event()
        self._reader_done = trio.Event()
        self._malformed = 0
        self._client_ids = 0
        self._latencies = LatencyRecorder()
        self._all_ended = trio.Event()  # set when the session has ended
        #: ``session.update`` events awaiting their ``session.updated``, oldest first.
        self._updates: list[_Update] = []
        #: The tool runner answering function calls, when the session was opened with tools.
        self.tools: ToolRunner | None = None

    # ------------------------------------------------------------------ public API

    def request_response(
        self, response: Mapping[str, Any] | None = None, *, priority: int = 0
    ) -> ResponseTicket:
        """Queue a ``response.create``; it is sent as soon as the slot is free.

        ``response`` is the body of ``response.create`` (``instructions``, ``tools``,
        ``metadata``, ``conversation``, ...), sent untouched apart from the ``metadata`` key the
        library adds. Higher ``priority`` goes first; equal priorities keep FIFO order; a
        request already sent is never overtaken. Never blocks. Raises ``TypeError`` for a
        body that is not a mapping or a priority that is not an int, ``QueueFull`` when
        ``max_queue`` requests wait, and ``SessionClosed`` / ``ConnectionLost`` once the
        session has ended.
        """
        return self._submit(response, priority=priority, held=False)

    async def send(self, event: Mapping[str, Any]) -> str:
        """Send any client event; returns its ``event_id`` (one is added when missing).

        A ``response.create`` goes through the queue like :meth:`request_response` (its
        ``event_id`` is the library's). Waits while ``send_buffer`` events wait for the writer;
        returns once the event is handed to the writer, in order with every other send.
        Cancelling the wait is safe: the event is then not sent. Raises ``TypeError`` /
        ``ValueError`` for an event that is not a mapping with a string ``type``, and
        ``SessionClosed`` or ``ConnectionLost`` once the session has ended.
        """
        if not isinstance(event, Mapping):
            raise TypeError(f"event must be a mapping, not {type(event).__name__}")
        if not isinstance(event.get("type"), str):
            raise ValueError("event must have a string 'type' (e.g. 'session.update')")
        if event["type"] == "response.create":
            ticket = self.request_response(event.get("response"))
            await trio.lowlevel.checkpoint()
            return ticket.event_id
        self._check_open()
        event = dict(event)
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            self._client_ids += 1
            event_id = event["event_id"] = f"evt_trc_{self._client_ids}"
        text = dump_event(event)
        await self._send_credits.acquire()
        try:
            self._outbox_send.send_nowait((text, event))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._send_credits.release()
            self._check_open()
            raise SessionClosed("session is closing") from None
        self._gate.client_event_sent(event, now=trio.current_time())
        return event_id

    async def cancel_response(self) -> None:
        """Interrupt whatever holds the slot (the active in-band response, whoever started
        it, or our request in flight), and wait for its end.

        The gate knows every event the reader received, so a response whose
        ``response.created`` a subscriber has seen is the one cancelled. Returns at once when
        nothing is active. Cancelling the wait is safe (the cancel is still sent). Raises
        ``SessionClosed`` / ``ConnectionLost`` once the session has ended.
        """
        self._check_open()
        target = self._gate.cancel_active(now=trio.current_time())
        self._settle()
        if target is None or self._gate.is_finished(target):
            await trio.lowlevel.checkpoint()
            return
        asked = trio.current_time()
        ended = trio.Event()
        waiter = (target, ended)
        self._end_waiters.append(waiter)
        try:
            await ended.wait()
        finally:
            if waiter in self._end_waiters:
                self._end_waiters.remove(waiter)
        if self._error is None:
            self._latencies.add("cancel_latency", trio.current_time() - asked)

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
        ``response.done`` of the response that made the calls (or once the library gave that
        response up, rule 7) once every call it made has a result. A call the session never
        saw gets a follow-up of its own. ``response`` is the follow-up's body (used by the
        first result of a turn).
        """
        if not isinstance(call_id, str) or not call_id:
            raise TypeError(f"call_id must be a non-empty str, not {call_id!r}")
        if not isinstance(output, str):
            raise TypeError(f"output must be a str (JSON text), not {type(output).__name__}")
        await self.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": call_id, "output": output},
            }
        )
        self._check_open()
        body = response_body(response, priority)
        follow_up = self._gate.function_result(
            call_id, body, priority=priority, now=trio.current_time(), owner=self._ticket
        )
        self._settle()
        return follow_up.owner

    async def say(
        self, text: str, *, priority: int = 0, response: Mapping[str, Any] | None = None
    ) -> ResponseTicket:
        """Have the assistant speak ``text`` (word for word), queued like any request.

        ``response`` adds fields to the ``response.create`` body (voice, modalities, ...).
        Returns the ticket; await ``ticket.wait_done()`` for the end.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        body = {"instructions": f"Say exactly: {text}", **(response or {})}
        ticket = self.request_response(body, priority=priority)
        await trio.lowlevel.checkpoint()
        return ticket

    async def update_session(self, session: Mapping[str, Any]) -> Mapping[str, Any]:
        """Send ``session.update`` with ``session`` and wait for the server's answer; return the
        ``session`` object of its ``session.updated`` (the whole configuration, merged).

        GA servers require ``session["type"]`` (``"realtime"``). Raises
        ``ResponseRejected`` (``.code``, ``.message``) when the server answers with an error
        naming this event, ``SessionClosed`` / ``ConnectionLost`` when the session ends first.
        Cancelling the wait is safe (the update may still apply). Bound the wait with
        ``trio.fail_after`` if the server might not answer.
        """
        if not isinstance(session, Mapping):
            raise TypeError(f"session must be a mapping, not {type(session).__name__}")
        update = _Update()
        self._updates.append(update)
        try:
            update.event_id = await self.send({"type": "session.update", "session": session})
            await update.answered.wait()
        finally:
            if update in self._updates:
                self._updates.remove(update)
        if update.error is not None:
            raise fresh(update.error)
        return update.session

    async def wait_closed(self) -> None:
        """Wait until the session has ended: its block left, or the connection lost (then
        ``closed`` is True and calls raise ``ConnectionLost``). Never raises."""
        await self._all_ended.wait()

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[EventStream]:
        """Every server event from now on, as dicts: ``async for event in events``.

        Each subscriber has its own buffer of ``event_buffer`` events; one that falls further
        behind is cut off with ``EventBufferOverflow`` (the session goes on). Iteration ends
        when the session closes, or raises ``ConnectionLost`` when the connection broke.
        Raises ``SessionClosed`` / ``ConnectionLost`` if the session has already ended.
        """
        self._check_open()
        stream = EventStream(self.config.event_buffer)
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
            latency=self._latencies.summary(),
            connections=self._connections,
            reconnects=self._reconnects,
            rollovers=self._rollovers,
            replayed_items=self._replayed_items,
        )

    @property
    def closed(self) -> bool:
        return self._error is not None

    # ------------------------------------------------------------------ the gate's shell

    def _check_open(self) -> None:
        if self._error is not None:
            raise fresh(self._error)

    def _submit(
        self, response: Mapping[str, Any] | None, *, priority: int, held: bool
    ) -> ResponseTicket:
        self._check_open()
        body = response_body(response, priority)
        request = self._gate.submit(
            body, priority=priority, now=trio.current_time(), owner=self._ticket, held=held
        )
        self._settle()
        return request.owner

    def _ticket(self, request: Request[ResponseTicket]) -> ResponseTicket:
        """The application's handle on a request the gate accepted."""
        return ResponseTicket(
            request, cancel=self._cancel_request, event_buffer=self.config.event_buffer
        )

    def _cancel_request(self, request: Request[ResponseTicket]) -> None:
        if self._error is None:
            self._gate.cancel(request, now=trio.current_time())
            self._settle()

    def _settle(self) -> None:
        """Hand on what the gate decided; wake the dispatcher if it has something to do.

        The dispatcher is woken first, so that it runs before the tasks the effects wake (a
        task waiting for a ticket's end would otherwise delay the next ``response.create``).
        """
        gate = self._gate
        self._wake_dispatcher()
        effects = gate.take_effects()
        if effects is not None:
            self._apply(effects)
        scope = self._sleep_scope
        if scope is not None:
            deadline = min(gate.next_deadline(), self._rollover_at)
            if deadline < scope.deadline:
                scope.deadline = deadline
        if self._rollover_due:
            self._switch_when_quiet()

    def _wake_dispatcher(self) -> None:
        if not self._dispatch_wanted and self._gate.sendable:
            self._dispatch_wanted = True
            self._dispatcher_lot.unpark()

    def _apply(self, effects: Effects[ResponseTicket]) -> None:
        for event in effects.send:
            try:
                self._outbox_send.send_nowait((dump_event(event), None))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break  # the session is ending: nothing more goes out
        for request, state in effects.changed:
            ticket = request.owner
            ticket.request_changed()
            if state.terminal:
                self._ended(ticket)
        if self._end_waiters and (effects.ended or effects.changed):
            for target, ended in self._end_waiters:
                if self._gate.is_finished(target):
                    ended.set()

    def _ended(self, ticket: ResponseTicket) -> None:
        """A ticket ended: its latencies are recorded, and the application is told."""
        self._latencies.record(ticket.timings)
        callback = self.config.on_response
        if callback is not None:
            try:
                callback(ticket)
            except Exception:
                logger.exception("on_response raised; ignored")

    def _end(self, error: RealtimeError) -> None:
        """The session is over: fail every waiting request and end every stream."""
        if self._error is not None:
            return
        self._error = error
        self._gate.close(error, now=trio.current_time())
        effects = self._gate.take_effects()
        if effects is not None:
            self._apply(effects)
        lost = error if isinstance(error, ConnectionLost) else None
        for stream in self._subscribers:
            stream.finish(lost)
        self._subscribers.clear()
        for _, ended in self._end_waiters:
            ended.set()
        for update in self._updates:
            update.fail(error)
        self._live.set()  # a writer waiting for a new connection gives up
        self._all_ended.set()

    # ------------------------------------------------------------------ tasks

    @asynccontextmanager
    async def _running(
        self, deadline: float, tools: ToolRegistry | ToolRunner | None = None
    ) -> AsyncIterator[RealtimeSession]:
        """Run the three tasks (and the tool runner) until the block ends; connected by
        ``deadline``."""
        with unwrap_lone_exception():
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._writer)
                await nursery.start(self._dispatcher)
                try:
                    with trio.fail_at(deadline):
                        await nursery.start(self._reader)
                except trio.TooSlowError:
                    raise ConnectionLost("no session.created within connect_timeout") from None
                if tools is not None:
                    await self._start_tools(nursery, tools)
                try:
                    yield self
                finally:
                    self._end(SessionClosed("session closed"))
                    self._outbox_send.close()
                    with (
                        trio.CancelScope(shield=True),
                        trio.move_on_after(self.config.close_timeout),
                    ):
                        await self._writer_done.wait()
                    # The reader stops reading and closes the connection gracefully, before
                    # the tasks are cancelled.
                    if self._read_scope is not None:
                        self._read_scope.cancel()
                    with (
                        trio.CancelScope(shield=True),
                        trio.move_on_after(2 * self.config.close_timeout),
                    ):
                        await self._reader_done.wait()
                    await self._close_connection()
                    nursery.cancel_scope.cancel()

    async def _start_tools(self, nursery: trio.Nursery, tools: ToolRegistry | ToolRunner) -> None:
        from ._tools import ToolRunner  # (the tools module builds on this one)

        runner = tools if isinstance(tools, ToolRunner) else ToolRunner(tools)
        self.tools = runner
        await nursery.start(runner.run, self)
        body: dict[str, Any] = {"tools": runner.registry.definitions(), "tool_choice": "auto"}
        if self.server_session.get("type") == "realtime":  # GA requires the session's type
            body["type"] = "realtime"
        await self.send({"type": "session.update", "session": body})

    async def _reader(self, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            await self._wait_session_created()
            self._connections = 1
            self._arm_rollover()
            task_status.started()
            while True:
                lost = await self._read()
                if not await self._switch_connection(lost):
                    return
        finally:
            await self._close_connection()
            self._reader_done.set()

    async def _read(self) -> ConnectionLost | None:
        """Apply the connection's events until it is lost (returned), or until a planned switch
        is due (None: :meth:`_switch_when_quiet` interrupted the read)."""
        with trio.CancelScope() as self._read_scope:
            while True:
                try:
                    data = await self._transport.receive()
                except ConnectionLost as exc:
                    return exc
                self._take(data)
        return None

    def _take(self, data: str | bytes) -> None:
        """One message of the connection: to the subscribers, the gate, the tickets."""
        try:
            event = parse_frame(data)
            view = classify(event)
        except MalformedFrame as exc:
            self._skip_malformed(exc)
            return
        if self._subscribers:
            self._publish(event)
        if self._record is not None:
            self._record.server_event(event)
        if view is None:
            return
        request = self._gate.receive(view, now=trio.current_time())
        if request is not None:
            request.owner.request_event(event)
        elif isinstance(view, ServerError):
            self._note_error(view, event)
        elif self._updates and isinstance(view, Acknowledgement):
            self._answer_update(event)
        if not isinstance(view, OutputAlive):  # deltas change nothing the shell hands on
            self._settle()

    def _note_error(self, error: ServerError, event: Event) -> None:
        """An error no request took: an update's answer, or a fatal refusal to remember."""
        if error.code in FATAL_ERRORS:
            self._fatal = SessionRefused(error.code, error.message)
        if self._updates:
            self._answer_update(event)

    # ------------------------------------------------------------------ connections

    async def _wait_session_created(self) -> None:
        """Read the connection's first events up to ``session.created``.

        Raises ``SessionRefused`` when the server said why it refused the session (an
        ``error`` before it closed), else the ``ConnectionLost`` of the connection.
        """
        refusal: SessionRefused | None = None  # what the server said before it closed
        while True:
            try:
                data = await self._transport.receive()
            except ConnectionLost as exc:
                if refusal is not None:
                    raise refusal from exc
                raise
            try:
                event = parse_frame(data)
            except MalformedFrame as exc:
                self._skip_malformed(exc)
                continue
            if event["type"] == "session.created":
                session = event.get("session")
                self.server_session = session if isinstance(session, Mapping) else {}
                if self._subscribers:  # (a new connection's: subscribers learn of it)
                    self._publish(event)
                return
            if event["type"] == "error":
                error = parse_error(event)
                refusal = SessionRefused(error.code, error.message)
            logger.warning("%s before session.created; skipped", event["type"])

    async def _open_connection(self) -> None:
        """Open a connection with ``connect`` and wait for its ``session.created``."""
        assert self._nursery is not None
        release = trio.Event()
        closed = trio.Event()
        self._connection = (release, closed)
        try:
            self._transport = await self._nursery.start(self._hold_connection, release, closed)
            await self._wait_session_created()
        except BaseException:
            await self._close_connection()
            raise
        self._connections += 1

    async def _hold_connection(
        self,
        release: trio.Event,
        closed: trio.Event,
        *,
        task_status: trio.TaskStatus[Transport],
    ) -> None:
        """Open one connection, and hold it open until ``release`` is set (or the session's
        nursery is cancelled); then close it. Its own task, so that the transport's nursery
        belongs to no other task's stack."""
        assert self._connect is not None
        try:
            async with self._connect() as transport:
                task_status.started(transport)
                await release.wait()
        finally:
            closed.set()

    async def _close_connection(self) -> None:
        """Close the connection (gracefully, within ``close_timeout``): one ``connect`` opened
        is released to its holder task; the first one (its opener closes it again, which does
        nothing more) is closed here."""
        connection, self._connection = self._connection, None
        if connection is None:
            await self._transport.aclose()
            return
        release, closed = connection
        release.set()
        with trio.CancelScope(shield=True), trio.move_on_after(2 * self.config.close_timeout):
            await closed.wait()

    async def _switch_connection(self, lost: ConnectionLost | None) -> bool:
        """Move the session to a new connection: after an unexpected loss (``lost``) when
        ``config.reconnect`` allows it, or at a planned rollover (``lost`` None, the gate
        paused and quiet). Returns False when the session has ended instead.

        The gate fails what went out on the lost connection and pauses the queue; the writer
        waits; the old connection is closed; a new one is opened (with backoff, up to
        ``reconnect.attempts`` tries) and the configuration and conversation are replayed
        into it (by this step itself, while the writer waits, so they come first); then the
        writer and the queue resume.
        """
        planned = lost is None
        if self._error is not None:  # the session is over: no new connection
            return False
        if lost is not None:
            logger.info("%s", lost)
            if not self._recoverable(lost):
                self._end(self._fatal or lost)
                return False
            logger.warning("connection lost (%s): opening a new one", lost)
            self._gate.connection_lost(fresh(lost), now=trio.current_time())
        if self._live.is_set():
            self._live = trio.Event()
        self._settle()
        await self._close_connection()
        policy = self.config.reconnect or Reconnect(attempts=1)
        # A connection that dies within max_delay of opening counts as a failed try: the
        # backoff goes on from where it was, and the tries are not counted afresh.
        now = trio.current_time()
        first = 0
        if not planned and now - self._connected_at < policy.max_delay:
            first = self._tries
        error: ConnectionLost | None = lost
        for attempt in range(first, policy.attempts):
            self._tries = attempt + 1
            if attempt or not planned:
                await trio.sleep(policy.delay(attempt, random.random()))
            try:
                with trio.fail_after(self.config.connect_timeout):
                    await self._open_connection()
                    await self._replay()
            except SessionRefused as exc:
                self._end(exc)
                return False
            except (ConnectionLost, trio.TooSlowError) as exc:
                logger.warning("new connection, try %d: %s", attempt + 1, exc)
                error = exc if isinstance(exc, ConnectionLost) else ConnectionLost(str(exc))
                await self._close_connection()
                continue
            break
        else:
            self._end(error or ConnectionLost("could not open a new connection"))
            return False
        self._connected_at = trio.current_time()
        if planned:
            self._rollovers += 1
        else:
            self._reconnects += 1
        self._rollover_due = False
        self._arm_rollover()
        self._live.set()
        self._gate.resume()
        self._settle()
        return True

    def _recoverable(self, lost: ConnectionLost) -> bool:
        return (
            self.config.reconnect is not None
            and self._connect is not None
            and self._fatal is None
            and not isinstance(lost, SessionRefused)
            and (lost.code is None or lost.code in _RECOVERABLE_CLOSES)
        )

    async def _replay(self) -> None:
        """Send the configuration and the conversation so far into the new connection."""
        if self._record is None:
            return
        ga = self.server_session.get("type") == "realtime"
        replay = self._record.replay(
            dialect="ga" if ga else "beta", max_items=self.config.replay_items
        )
        for warning in replay.warnings:
            logger.warning("not replayed: %s", warning)
        if replay.dropped:
            logger.warning(
                "%d oldest conversation items not replayed (replay_items)", replay.dropped
            )
        for event in replay.events:
            await self._transport.send(dump_event(event))
            if event.get("type") == "conversation.item.create":
                self._replayed_items += 1

    def _arm_rollover(self) -> None:
        if self.config.rollover_after is not None:
            self._rollover_at = trio.current_time() + self.config.rollover_after

    def _rollover(self) -> None:
        """The connection is old enough: pause the queue and switch at the first quiet
        moment (no response running, none in flight, nothing being sent)."""
        self._rollover_at = math.inf
        self._rollover_due = True
        self._gate.pause()
        self._switch_when_quiet()

    def _switch_when_quiet(self) -> None:
        if (
            self._rollover_due
            and self._gate.quiet
            and not self._writing
            and self._outbox_receive.statistics().current_buffer_used == 0
            and self._read_scope is not None
        ):
            self._read_scope.cancel()  # the reader then switches

    def _answer_update(self, event: Event) -> None:
        """A ``session.updated`` answers the oldest update sent; an error names its own."""
        if event["type"] == "session.updated":
            update = next((u for u in self._updates if u.event_id is not None), None)
            if update is not None:
                session = event.get("session")
                update.succeed(session if isinstance(session, Mapping) else {})
        elif event["type"] == "error":
            error = parse_error(event)
            for update in self._updates:
                if update.event_id is not None and update.event_id == error.client_event_id:
                    update.fail(ResponseRejected(error.code, error.message))

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

    async def _dispatcher(self, *, task_status: trio.TaskStatus[None]) -> None:
        gate = self._gate
        task_status.started()
        while True:
            deadline = min(gate.next_deadline(), self._rollover_at)
            with trio.CancelScope(deadline=deadline) as scope:
                self._sleep_scope = scope
                while True:
                    while not self._dispatch_wanted:
                        await self._dispatcher_lot.park()
                    self._dispatch_wanted = False
                    gate.pump(now=trio.current_time())
                    self._settle()
            self._sleep_scope = None
            now = trio.current_time()
            if now >= self._rollover_at:
                self._rollover()
            gate.tick(now=now)
            gate.pump(now=now)
            self._settle()

    async def _writer(self, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with self._outbox_receive:
                task_status.started()
                async for text, event in self._outbox_receive:
                    try:
                        if not await self._write(text, event):
                            return
                    finally:
                        if event is not None:
                            self._send_credits.release()
                        if self._rollover_due:
                            self._switch_when_quiet()
        finally:
            self._writer_done.set()

    async def _write(self, text: str, event: Event | None) -> bool:
        """Send one message; False when the session has ended.

        When the connection is lost and the session reconnects, an application's event goes
        out on the new connection, after the replay (the old server never read it, or it is
        gone with its conversation); the gate's own events (creates, cancels) belonged to the
        lost connection and are dropped: the gate has failed their requests.
        """
        while True:
            if not self._live.is_set():  # a new connection is being opened
                await self._live.wait()
            self._writing = True
            transport = self._transport
            try:
                await transport.send(text)
            except ConnectionLost as exc:
                logger.info("send failed: %s", exc)
                if self.config.reconnect is None or self._error is not None:
                    self._end(exc)
                    await transport.aclose()  # wakes the reader
                    return False
                if transport is self._transport and self._live.is_set():
                    self._live = trio.Event()  # (not if the reader has switched already)
                await transport.aclose()  # wakes the reader, which reconnects
                if event is None:
                    return True
                continue
            finally:
                self._writing = False
            if event is not None and self._record is not None:
                # Recorded once written: what waits here during a switch is sent after the
                # replay, not replayed too.
                self._record.client_event(event)
            return True


@attrs.define(eq=False)
class _Update:
    """A ``session.update`` awaiting its answer."""

    event_id: str | None = None
    answered: trio.Event = attrs.Factory(trio.Event)
    session: Mapping[str, Any] = attrs.Factory(dict)
    error: RealtimeError | None = None

    def succeed(self, session: Mapping[str, Any]) -> None:
        if not self.answered.is_set():
            self.session = session
            self.answered.set()

    def fail(self, error: RealtimeError) -> None:
        if not self.answered.is_set():
            self.error = error
            self.answered.set()


_Outgoing = tuple[str, Event | None]

#: Closes after which a new connection may heal the session: going away (also the session
#: cap, after ``session_expired``), abnormal, server error, restart, try again later.
_RECOVERABLE_CLOSES = frozenset({1001, 1006, 1011, 1012, 1013})


@asynccontextmanager
async def open_session(
    target: Endpoint | str | Transport,
    *,
    config: SessionConfig | None = None,
    tools: ToolRegistry | ToolRunner | None = None,
) -> AsyncIterator[RealtimeSession]:
    """Connect to a Realtime server and run a session until the block ends.

    ``target`` is an :class:`Endpoint`, a ``ws://`` / ``wss://`` URL (no credentials), or an
    already open :class:`Transport` (which the session then closes). Waits for the server's
    ``session.created`` (``connect_timeout``); raises ``ConnectionLost`` if that fails, or
    ``SessionRefused`` (a ``ConnectionLost`` with the server's ``code``) if the server refused
    the session first.

    Leaving the block fails every request still waiting with ``SessionClosed``, gives the
    writer up to ``close_timeout`` to flush what ``send()`` accepted, and closes the
    connection. If the server breaks the connection, the block is not interrupted: pending and
    later calls raise ``ConnectionLost``. Leaving the block raises nothing but the block's
    own exception, bare.

    With ``tools`` (a :class:`ToolRegistry`, or a :class:`ToolRunner` around one), the
    session sends the tools' definitions in a ``session.update`` and answers every function
    call with them in a task of its own (``session.tools`` is the runner).
    """
    config = config or SessionConfig()
    if not isinstance(target, Endpoint | str | Transport):
        raise TypeError(
            f"target must be an Endpoint, a ws:// or wss:// URL or a Transport, "
            f"not {type(target).__name__}"
        )
    deadline = trio.current_time() + config.connect_timeout
    if isinstance(target, str):
        target = Endpoint(target)
    if isinstance(target, Endpoint):
        endpoint = target

        def connect() -> AbstractAsyncContextManager[Transport]:
            opened_by = trio.current_time() + config.connect_timeout
            return open_websocket_transport(endpoint, config, deadline=opened_by)

        async with open_websocket_transport(endpoint, config, deadline=deadline) as transport:
            session = RealtimeSession(transport, config, connect=connect)
            async with session._running(deadline, tools):
                yield session
    elif config.reconnect is not None or config.rollover_after is not None:
        raise ValueError("reconnect and rollover_after need an Endpoint or a URL to connect to")
    else:
        try:
            async with RealtimeSession(target, config)._running(deadline, tools) as session:
                yield session
        finally:
            await target.aclose()
