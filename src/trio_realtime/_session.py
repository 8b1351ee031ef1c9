"""open_session(): a Realtime session run by three tasks in a nursery.

This module is the application-facing API (:class:`RealtimeSession`, each method's contract
beside it) and the three tasks that serve it, which share the session's state: it is longer
than the house's ~600 lines because splitting the methods from that state would only add a
layer between them. What can live elsewhere does: the rules are :mod:`._gate`'s, the
connections :mod:`._connection`'s, output audio and where an interruption cuts it
:mod:`._audio_out`'s and :mod:`._audio`'s, client events awaiting answers :mod:`._awaited`'s,
and ``on_response`` runs in :mod:`._reporter`'s task.

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

The connections themselves belong to a :class:`Connection` (:mod:`._connection`): the first
one and every later one are opened the same way by the reader, and the writer waits on it
until it may write. When ``reconnect`` or ``rollover_after`` asks for a new connection, the
reader moves the session to it in one step, :meth:`RealtimeSession._switch`: the gate fails
what went out on the old connection and pauses the queue, the writer waits, a new connection
is opened and the configuration and conversation to replay are handed to the writer, which
sends them before anything else; then the queue resumes. ``on_response`` runs in a reporter
task of its own. Nothing outlives the ``async with`` block.
"""

from __future__ import annotations

import binascii
import contextlib
import enum
import logging
import math
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import trio

from ._audio import Truncation
from ._audio_out import AUDIO_EVENTS, AudioChunk, AudioOut, Interruption
from ._awaited import Awaited, Awaiting
from ._codec import dump_event, parse_frame, to_wire
from ._config import SessionConfig
from ._connection import Connect, Connection, ConnectionState
from ._conversation import ConversationRecord
from ._endpoints import Endpoint
from ._errors import (
    CallEnded,
    ConnectionLost,
    RealtimeError,
    ResponseRejected,
    SessionClosed,
    SessionRefused,
    fresh,
)
from ._events import (
    ANSWERS,
    FATAL_ERRORS,
    Acknowledgement,
    MalformedFrame,
    OutputAlive,
    ServerError,
    classify,
    parse_error,
)
from ._gate import CancelTarget, Effects, Gate, Request, Response
from ._reporter import Reporter
from ._request_body import response_body
from ._statistics import LatencyRecorder, SessionStatistics
from ._stream import BoundedStream, EventStream
from ._ticket import ResponseTicket
from ._tools import ToolRegistry, ToolRunner
from ._transport import Transport, open_websocket_transport
from ._util import cap, unwrap_lone_exception

__all__ = ["RealtimeSession", "SessionStatistics", "open_session"]

logger = logging.getLogger(__name__)

Event = dict[str, Any]


class RealtimeSession:
    """A live Realtime session. Made by :func:`open_session`."""

    def __init__(
        self,
        connect: Connect,
        config: SessionConfig,
        *,
        can_switch: bool,
        call_id: str | None = None,
    ) -> None:
        self.config = config
        #: The ``session`` object of the server's ``session.created`` (the latest connection's;
        #: on a sideband, which may get none, ``{}`` until one comes).
        self.server_session: Mapping[str, Any] = {}
        #: The call this session is the sideband of (see :func:`open_session`), else None.
        self.call_id = call_id
        #: Every connection of the session: opened by the reader, written by the writer.
        self._conn = Connection(connect, config)
        self._can_switch = can_switch
        self._nursery: trio.Nursery | None = None
        #: What a new connection replays; kept when the session may need one.
        self._record: ConversationRecord | None = None
        # (A sideband re-attaches to a conversation the service keeps: nothing to replay.)
        if call_id is None and (config.reconnect is not None or config.rollover_after is not None):
            self._record = ConversationRecord()
        self._fatal: SessionRefused | None = None  # a fatal error the server reported
        self._expired = False  # the server said session_expired
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
        #: Output audio: what arrived per item, the ``output_audio()`` streams, what is muted.
        self._audio = AudioOut(config.event_buffer)
        self._all_ended = trio.Event()  # set when the session has ended
        #: Runs on_response in a task of its own (see its module).
        self._reporter = Reporter(config.on_response)
        #: ``session.update`` events awaiting their ``session.updated``, oldest first.
        #: Client events whose answer someone waits for (``update_session``, ``interrupt``).
        self._awaiting = Awaiting()
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
        session has ended. A value JSON cannot carry (a date, NaN, bytes, ...) raises
        ``TypeError`` / ``ValueError`` naming its key path, and nothing is queued.
        """
        if response is not None:
            response = to_wire(response, "response")
        return self._submit(response, priority=priority, held=False)

    async def send(self, event: Mapping[str, Any]) -> str:
        """Send any client event; returns its ``event_id`` (one is added when missing).

        A ``response.create`` goes through the queue like :meth:`request_response` (its
        ``event_id`` is the library's). Waits while ``send_buffer`` events wait for the writer;
        returns once the event is handed to the writer, in order with every other send.
        Cancelling the wait is safe: the event is then not sent. Raises ``TypeError`` /
        ``ValueError`` for an event that is not a mapping with a string ``type`` or that holds
        a value JSON cannot carry (naming its key path), and ``SessionClosed`` or
        ``ConnectionLost`` once the session has ended.
        """
        if not isinstance(event, Mapping):
            raise TypeError(f"event must be a mapping, not {type(event).__name__}")
        if not isinstance(event.get("type"), str):
            raise ValueError("event must have a string 'type' (e.g. 'session.update')")
        event = to_wire(event, "event")
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
        await self._hand_to_writer(dump_event(event), event)
        self._gate.client_event_sent(event, now=trio.current_time())
        return event_id

    async def send_audio(self, audio: bytes | bytearray | memoryview) -> None:
        """Append input audio (``input_audio_buffer.append``), in the session's input format
        (PCM16 24 kHz mono unless configured otherwise).

        The audio is base64-encoded straight into the frame, with no JSON encoding of the
        payload; more than one event may carry (15 MiB of base64) goes out as several appends,
        in order. In order with every other send, and waiting like :meth:`send` while
        ``send_buffer`` events wait for the writer. Cancelling is safe: an append not yet
        handed to the writer is not sent (the earlier parts of a long one are). Raises
        ``TypeError`` for anything but bytes, and ``SessionClosed`` / ``ConnectionLost`` once
        the session has ended.
        """
        if not isinstance(audio, bytes | bytearray | memoryview):
            raise TypeError(f"audio must be bytes, not {type(audio).__name__}")
        self._check_open()
        data = memoryview(audio).cast("B")
        if not data:
            await trio.lowlevel.checkpoint()
            return
        for start in range(0, len(data), _APPEND_BYTES):
            self._client_ids += 1
            event_id = f"evt_trc_{self._client_ids}"
            b64 = binascii.b2a_base64(data[start : start + _APPEND_BYTES], newline=False)
            text = f'{{"type":"{_APPEND}","event_id":"{event_id}","audio":"{b64.decode()}"}}'
            await self._hand_to_writer(text, {"type": _APPEND, "event_id": event_id})

    async def _hand_to_writer(self, text: str, event: Event) -> None:
        """An application's event, in order with every other send (a send credit held)."""
        await self._send_credits.acquire()
        try:
            self._outbox_send.send_nowait((text, event))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._send_credits.release()
            self._check_open()
            raise SessionClosed("session is closing") from None

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
        await self._wait_finished(target)
        if self._error is None:
            self._latencies.add("cancel_latency", trio.current_time() - asked)

    async def _wait_finished(self, target: CancelTarget) -> None:
        """Wait until a cancelled response or request has ended (or the session has)."""
        if self._gate.is_finished(target) or self._error is not None:
            return
        ended = trio.Event()
        waiter = (target, ended)
        self._end_waiters.append(waiter)
        try:
            await ended.wait()
        finally:
            if waiter in self._end_waiters:
                self._end_waiters.remove(waiter)

    async def interrupt(self, played_ms: float | None = None) -> Interruption:
        """The user talked over the assistant: stop every response they may hear, cut the
        conversation where they stopped hearing it, and wait until all of that is done.

        - Every running response is cancelled by id: the in-band one holding the slot (ours
          or the server's), every out-of-band one, and a request in flight as soon as its
          ``response.created`` arrives. Queued requests stay queued and go out afterwards.
        - From this call on, those responses' output audio deltas are dropped from their
          tickets' ``events()`` and from :meth:`output_audio` (subscribers still see every
          event).
        - ``played_ms`` is how much of the latest in-band response's audio the user heard,
          counted from its start across its audio items (frames your player actually wrote
          to the sound device); None estimates it as the time since its first audio delta.
          The item where it falls is truncated there (``conversation.item.truncate``),
          clamped to the audio received for it; every later item is deleted
          (``conversation.item.delete``); an item nobody heard is deleted, never truncated
          at 0; a response heard to its end, or with no audio, gets neither. Each response is
          cut once.

        On a call's sideband (``call_id``), where the service plays the audio and knows what
        the caller heard, it sends ``output_audio_buffer.clear`` after the cancels when the
        service is playing something (``output_audio_buffer.started`` without its
        ``stopped``), and awaits ``output_audio_buffer.cleared`` (at most ``cancel_grace``);
        nothing is truncated or deleted by position, and ``played_ms`` is not used.

        Returns once every cancelled response has ended (its ``response.done``, or forced
        after ``cancel_grace``) and the truncate and deletes are answered, so a
        ``request_response`` right after it is not rejected. The server's errors answering the
        truncate or deletes are logged and reported on the result, never raised. With nothing
        running and nothing to cut, returns at once, having sent nothing. Cancelling the wait
        is safe (what was sent still applies). Raises ``TypeError`` / ``ValueError`` for a
        ``played_ms`` that is not a non-negative number, ``SessionClosed`` /
        ``ConnectionLost`` once the session has ended.
        """
        if played_ms is not None:
            if not isinstance(played_ms, int | float) or isinstance(played_ms, bool):
                raise TypeError(
                    f"played_ms must be a number or None, not {type(played_ms).__name__}"
                )
            if not 0 <= played_ms < math.inf:
                raise ValueError(f"played_ms must be a finite number >= 0, not {played_ms!r}")
        self._check_open()
        now = trio.current_time()
        targets = self._gate.interrupt(now=now)
        responses = [t for t in targets if isinstance(t, Response)]
        requests = [t for t in targets if isinstance(t, Request)]
        self._audio.mute(
            (r.response_id for r in responses if r.response_id is not None),
            (r.event_id for r in requests),
        )
        for response in responses:
            if response.request is not None:
                response.request.owner.interrupted()
        for request in requests:
            request.owner.interrupted()
        self._settle()  # the cancels go out first
        answers = []
        cleared = None
        if self.call_id is not None:
            # On a call the service plays the audio and knows what was heard: its output
            # buffer is cleared (when it plays something), nothing is cut by position.
            cut = Truncation()
            if self._audio.playing:
                clear = {"type": "output_audio_buffer.clear"}
                # (playback that ended meanwhile answers ``stopped`` instead)
                cleared = await self._send_awaited(clear, also="output_audio_buffer.stopped")
        else:
            _, cut = self._audio.ledger.plan(played_ms, now=now)
        if cut.truncate is not None:
            item_id, content_index, end = cut.truncate
            answers.append(
                await self._send_awaited(
                    {
                        "type": "conversation.item.truncate",
                        "item_id": item_id,
                        "content_index": content_index,
                        "audio_end_ms": end,
                    }
                )
            )
        for item_id in cut.delete:
            answers.append(
                await self._send_awaited({"type": "conversation.item.delete", "item_id": item_id})
            )
        try:
            for target in targets:
                await self._wait_finished(target)
            for awaited in answers:
                await awaited.answered.wait()
            if cleared is not None:  # (the service may not answer a clear that found nothing)
                with trio.move_on_after(self.config.cancel_grace):
                    await cleared.answered.wait()
        finally:
            for awaited in answers if cleared is None else [*answers, cleared]:
                self._awaiting.forget(awaited)
        errors = tuple(a.error for a in answers if a.error is not None)
        for error in errors:
            logger.warning("interrupt: the server refused %s (%s)", cap(error.message), error.code)
        cancelled = [t.response_id for t in responses] + [t.response_id for t in requests]
        return Interruption(
            cancelled=tuple(rid for rid in cancelled if rid is not None),
            truncated=cut.truncate,
            deleted=cut.delete,
            errors=errors,
        )

    async def _send_awaited(self, event: Mapping[str, Any], *, also: str | None = None) -> Awaited:
        """Send an application's event whose answer someone waits for: the acknowledgements
        :data:`ANSWERS` names for its type (naming its ``item_id``, if it has one), ``also``."""
        answers = frozenset(ANSWERS[event["type"]]) | ({also} if also is not None else set())
        awaited = self._awaiting.expect(answers, event.get("item_id"))
        try:
            awaited.event_id = await self.send(event)
        except BaseException:
            self._awaiting.forget(awaited)
            raise
        return awaited

    @asynccontextmanager
    async def output_audio(self) -> AsyncIterator[BoundedStream[AudioChunk]]:
        """The assistant's audio from now on, decoded: ``async for chunk in audio``.

        Each :class:`AudioChunk` has its response, item and content index, its offset in the
        item (ms), its format and the audio bytes, for in-band and out-of-band responses, in
        arrival order; never a response's audio after :meth:`interrupt` stopped it. Report
        what your player actually played to ``interrupt(played_ms=...)``. The buffer holds
        ``event_buffer`` chunks; a reader that falls further behind is cut off with
        ``EventBufferOverflow``. Iteration ends when the session closes, or raises
        ``ConnectionLost`` when the connection broke.
        """
        self._check_open()
        with self._audio.stream() as stream:
            yield stream

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
        if response is not None:
            response = to_wire(response, "response")
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
        session = to_wire(session, "session")
        update = await self._send_awaited({"type": "session.update", "session": session})
        try:
            await update.answered.wait()
        finally:
            self._awaiting.forget(update)
        if update.ended is not None:
            raise fresh(update.ended)
        if update.error is not None:
            raise ResponseRejected(update.error.code, update.error.message)
        answer = update.answer.get("session") if update.answer is not None else None
        return answer if isinstance(answer, Mapping) else {}

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
            connections=self._conn.opened,
            reconnects=self._conn.reconnects,
            rollovers=self._conn.rollovers,
            replayed_items=self._conn.replayed_items,
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
        for event_id, kind, error in effects.rejected:
            if not self._awaiting.rejected(event_id, error):
                logger.warning(
                    "the server rejected %s %s: %s (%s)",
                    kind,
                    event_id,
                    cap(error.message),
                    cap(str(error.code)),
                )
        if self._end_waiters and (effects.ended or effects.changed):
            for target, ended in self._end_waiters:
                if self._gate.is_finished(target):
                    ended.set()

    def _ended(self, ticket: ResponseTicket) -> None:
        """A ticket ended: its latencies are recorded, and the application is told."""
        self._latencies.record(ticket.timings)
        self._reporter.report(ticket)

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
        self._awaiting.end(error)
        self._audio.finish(lost)
        if not (isinstance(error, SessionClosed) and self._conn.writable):
            # A writer waiting for a new connection gives up. (Leaving the block, an open
            # connection stays writable until the writer has flushed what send() accepted.)
            self._conn.end()
        self._all_ended.set()

    # ------------------------------------------------------------------ tasks

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
        kind = event["type"]
        if kind == "session.created":  # (a sideband's, if the service sends one)
            session = event.get("session")
            self.server_session = session if isinstance(session, Mapping) else {}
        audio = kind in AUDIO_EVENTS
        if view is None and not audio:
            return
        now = trio.current_time()
        if audio:
            self._audio.take(event, now=now)
        if view is None:
            return
        request = self._gate.receive(view, now=now)
        if request is not None:
            request.owner.request_event(event)
        elif isinstance(view, ServerError):
            self._note_error(view)
        elif self._awaiting and isinstance(view, Acknowledgement):
            self._awaiting.acknowledged(event)
        if not isinstance(view, OutputAlive):  # deltas change nothing the shell hands on
            self._settle()

    def _note_error(self, error: ServerError) -> None:
        """An error no request took: a fatal refusal to remember (an application's event's
        rejection comes out of the gate, see :meth:`_apply`)."""
        if error.code in FATAL_ERRORS:
            self._fatal = SessionRefused(error.code, error.message)
        if self.call_id is not None and error.code in _CALL_ENDED_CODES:
            self._fatal = CallEnded(error.code, error.message, call_id=self.call_id)
        if error.code == "session_expired":
            self._expired = True  # the close that follows is a loss to heal, whatever its code

    @asynccontextmanager
    async def _running(
        self, deadline: float, tools: ToolRegistry | ToolRunner | None = None
    ) -> AsyncIterator[RealtimeSession]:
        """Run the three tasks, the reporter (and the tool runner) until the block ends;
        connected by ``deadline``."""
        with unwrap_lone_exception():
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._writer)
                await nursery.start(self._dispatcher)
                await nursery.start(self._reporter.run)
                await nursery.start(self._reader, deadline)
                if tools is not None:
                    await self._start_tools(nursery, tools)
                try:
                    yield self
                finally:
                    self._end(SessionClosed("session closed"))
                    self._outbox_send.close()
                    self._reporter.close()
                    with (
                        trio.CancelScope(shield=True),
                        trio.move_on_after(self.config.close_timeout),
                    ):
                        await self._writer_done.wait()
                    self._conn.end()
                    # The reader stops reading (or opening a new connection) and closes the
                    # connection gracefully, before the tasks are cancelled.
                    self._conn.stop()
                    with (
                        trio.CancelScope(shield=True),
                        trio.move_on_after(self.config.close_timeout),
                    ):
                        await self._reader_done.wait()
                    await self._conn.close()
                    with (  # what ended with the session is reported too
                        trio.CancelScope(shield=True),
                        trio.move_on_after(self.config.close_timeout),
                    ):
                        await self._reporter.wait_done()
                    nursery.cancel_scope.cancel()

    async def _start_tools(self, nursery: trio.Nursery, tools: ToolRegistry | ToolRunner) -> None:
        runner = tools if isinstance(tools, ToolRunner) else ToolRunner(tools)
        self.tools = runner
        await nursery.start(runner.run, self)
        body: dict[str, Any] = {"tools": runner.registry.definitions(), "tool_choice": "auto"}
        # GA requires the session's type (calls are GA only).
        if self.server_session.get("type") == "realtime" or self.call_id is not None:
            body["type"] = "realtime"
        await self.send({"type": "session.update", "session": body})

    async def _reader(self, deadline: float, *, task_status: trio.TaskStatus[None]) -> None:
        """Open the first connection (by ``deadline``), then read every connection until the
        session ends, switching to a new one when one is lost or a rollover is due."""
        conn = self._conn
        assert self._nursery is not None
        try:
            error = await conn.open(
                self._nursery, self._handshake, lost=None, first=True, deadline=deadline
            )
            if error is not None:
                raise self._call_ended(error)
            conn.opened_with(())
            self._settle()  # (the dispatcher's deadline: the rollover's)
            task_status.started()
            while True:
                lost = await conn.read(self._take)
                if not await self._switch(lost):
                    return
        finally:
            await conn.close()
            self._reader_done.set()

    async def _handshake(self, transport: Transport) -> None:
        """Read a new connection's first events up to ``session.created``.

        Raises ``SessionRefused`` when the server said why it refused the session (an
        ``error`` before it closed), else the ``ConnectionLost`` of the connection.

        A sideband (attached to a call) reads nothing: the call's session exists already and
        the service may send no ``session.created``; one that comes is taken by the reader.
        """
        if self.call_id is not None:
            await trio.lowlevel.checkpoint()
            return
        refusal: SessionRefused | None = None  # what the server said before it closed
        while True:
            try:
                data = await transport.receive()
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
            if event["type"] == "error":  # raised as the refusal if the server then closes
                error = parse_error(event)
                refusal = SessionRefused(error.code, error.message)
                continue  # the refusal is raised when the server closes
            logger.warning("%s before session.created; skipped", event["type"])

    # ------------------------------------------------------------------ connections

    async def _switch(self, lost: ConnectionLost | None) -> bool:
        """Move the session to a new connection: after an unexpected loss (``lost``) when
        ``config.reconnect`` allows it, or at a planned rollover (``lost`` None, the gate
        paused and quiet). Returns False when the session has ended instead.

        The gate fails what went out on the lost connection and pauses the queue; the writer
        waits; the connection opens a new one (with backoff, up to ``reconnect.attempts``
        tries); the configuration and conversation to replay are handed to the writer, which
        sends them before anything else; then the queue resumes.
        """
        if self._error is not None:  # the session is over: no new connection
            return False
        if lost is not None:
            logger.info("%s", lost)
            if not self._recoverable(lost):
                self._end(self._fatal or lost)
                return False
            if self.call_id is not None:
                # A clean close is routine on a call (every hang-up closes so, until the
                # re-attach is refused): INFO. Anything else is a drop: WARNING.
                level = logging.INFO if lost.code == 1000 else logging.WARNING
                logger.log(level, "sideband closed (%s): re-attaching to the call", lost)
            else:
                logger.warning("connection lost (%s): opening a new one", lost)
            self._gate.connection_lost(fresh(lost), now=trio.current_time())
        self._gate.pause()
        self._settle()
        assert self._nursery is not None
        self._expired = False
        error = await self._conn.open(self._nursery, self._handshake, lost=lost)
        if error is not None:
            self._end(self._call_ended(error))
            return False
        if self._error is not None:  # the session ended while it was being opened
            return False
        self._conn.opened_with(self._replay())
        self._wake_writer()
        self._gate.resume()
        self._settle()
        return True

    def _recoverable(self, lost: ConnectionLost) -> bool:
        # A sideband's close says nothing about the call (hang-up and a proxy restart both
        # close with 1000): the re-attach answers it, refused with call_id_not_found once the
        # call is over.
        return (
            self.config.reconnect is not None
            and self._can_switch
            and self._fatal is None
            and not isinstance(lost, SessionRefused)
            and (
                self.call_id is not None
                or self._expired
                or lost.code is None
                or lost.code in _RECOVERABLE_CLOSES
            )
        )

    def _call_ended(self, error: RealtimeError) -> RealtimeError:
        """On a sideband, a refusal naming an ended call is :class:`CallEnded`."""
        if (
            self.call_id is None
            or not isinstance(error, SessionRefused)
            or isinstance(error, CallEnded)
            or error.code not in _CALL_ENDED_CODES
        ):
            return error
        ended = CallEnded(error.code, error.message, call_id=self.call_id, status=error.status)
        ended.__cause__ = error.__cause__
        return ended

    def _replay(self) -> list[tuple[str, bool]]:
        """The configuration and the conversation so far, for the new connection."""
        if self._record is None:
            return []
        ga = self.server_session.get("type") == "realtime"
        replay = self._record.replay(
            dialect="ga" if ga else "beta", max_items=self.config.replay_items
        )
        for warning in replay.item_warnings:
            logger.warning("not replayed: %s", warning)
        if replay.dropped:
            logger.warning(
                "not replayed: the %d oldest conversation items (replay_items=%d)",
                replay.dropped,
                self.config.replay_items,
            )
        return [
            (dump_event(event), event.get("type") == "conversation.item.create")
            for event in replay.events
        ]

    @property
    def _rollover_at(self) -> float:
        return self._conn.rollover_at

    @property
    def _rollover_due(self) -> bool:
        return self._conn.state is ConnectionState.DRAINING

    def _rollover(self) -> None:
        """The connection is old enough: pause the queue and switch at the first quiet
        moment (no response running, none in flight, nothing being sent)."""
        self._conn.rollover_due()
        self._gate.pause()
        self._switch_when_quiet()

    def _switch_when_quiet(self) -> None:
        """When quiet, hand the writer the connection's last message: the switch begins when
        the writer reaches it (what was handed to it before still goes on this connection)."""
        if self._gate.quiet and self._conn.quiet():
            self._put_mark(_Mark.SWITCH)

    def _wake_writer(self) -> None:
        """The writer has a replay to write even if nothing else comes."""
        self._put_mark(_Mark.REPLAY)

    def _put_mark(self, mark: _Mark) -> None:
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._outbox_send.send_nowait((mark, None))  # (unless the session is ending)

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
        finally:
            self._writer_done.set()

    async def _write(self, text: str | _Mark, event: Event | None) -> bool:
        """Send one message (after the replay a new connection waits for); False when the
        session has ended.

        An application's event is noted in the conversation record before it is sent, so the
        server's acknowledgement, whichever task sees it first, finds it there. When the
        connection is lost and the session reconnects, an application's event the record
        carries goes out in the replay; any other goes out on the new connection after the
        replay (the old server never read it, or it is gone with its conversation); the
        gate's own events (creates, cancels) belonged to the lost connection and are
        dropped: the gate has failed their requests.
        """
        conn = self._conn
        recorded = False
        while True:
            transport = await conn.wait_writable()
            if transport is None:
                return False
            try:
                for replayed, item in conn.take_replay():
                    await transport.send(replayed)
                    conn.replayed_items += item
                if text is _Mark.SWITCH:
                    conn.drained(self._gate.quiet)
                    return True
                if text is _Mark.REPLAY:
                    return True
                if event is not None and self._record is not None and not recorded:
                    recorded = self._record.client_event(event)
                await transport.send(text)
            except ConnectionLost as exc:
                await conn.send_failed(transport, exc)
                if self.config.reconnect is None or self._error is not None:
                    self._end(exc)
                    return False
                if event is None or recorded:
                    return True  # the gate's, or carried by the replay
                continue
            return True


class _Mark(enum.Enum):
    """What the writer's channel carries besides messages."""

    #: Write the new connection's replay (nothing else may be coming).
    REPLAY = "replay"
    #: The last message of a connection that is switched for a rollover.
    SWITCH = "switch"


_Outgoing = tuple[str | _Mark, Event | None]

#: Closes after which a new connection may heal the session: going away (also the session
#: cap, after ``session_expired``), abnormal, server error, restart, try again later.
_APPEND = "input_audio_buffer.append"
#: Most audio one append carries: its base64 within the API's 15 MiB an event.
_APPEND_BYTES = 15 * 1024 * 1024 // 4 * 3


_RECOVERABLE_CLOSES = frozenset({1001, 1006, 1011, 1012, 1013})
#: The service's error codes that say a sideband's call is over (or never was).
_CALL_ENDED_CODES = frozenset({"call_id_not_found"})


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

    **A call's sideband** (an :class:`Endpoint` whose URL names a ``call_id``:
    ``Endpoint.openai(key, call_id=...)``, ``Endpoint.azure(..., call_id=...)``) attaches to
    the session of a SIP or WebRTC call the application has accepted: it does not wait for a
    ``session.created`` the service may never send (``server_session`` takes one that comes);
    configure with :meth:`RealtimeSession.update_session`, whose answer confirms. Responses the
    caller's leg starts (voice activity, a browser's data channel) hold the slot like any the
    server starts; the application's requests queue behind them. An unknown or ended call
    raises :class:`CallEnded` (``code`` ``call_id_not_found``). With ``reconnect``, *any* close
    of the sideband, a clean 1000 too (a proxy restart looks like a hang-up), re-attaches to
    the call with backoff, replaying nothing (the conversation lives in the service; queued
    requests wait and go out on the new sideband); the re-attach tells a drop from the call's
    end: refused with ``call_id_not_found``, the session ends with :class:`CallEnded`, as it
    does when the service sends that error. Without ``reconnect`` a close ends the session with
    its ``ConnectionLost`` (``code`` the close code).

    With ``tools`` (a :class:`ToolRegistry`, or a :class:`ToolRunner` around one), the
    session sends the tools' definitions in a ``session.update`` and answers every function
    call with them in a task of its own (``session.tools`` is the runner).
    """
    if config is None:
        config = SessionConfig()
    elif not isinstance(config, SessionConfig):
        raise TypeError(f"config must be a SessionConfig or None, got {type(config).__name__}")
    if tools is not None and not isinstance(tools, ToolRegistry | ToolRunner):
        raise TypeError(
            f"tools must be a ToolRegistry, a ToolRunner or None, got {type(tools).__name__}"
        )
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
        _warn_if_unverified(endpoint, config)

        def connect(opened_by: float) -> AbstractAsyncContextManager[Transport]:
            return open_websocket_transport(endpoint, config, deadline=opened_by)

        session = RealtimeSession(connect, config, can_switch=True, call_id=endpoint.call_id)
        async with session._running(deadline, tools):
            yield session
        return
    if config.reconnect is not None or config.rollover_after is not None:
        raise ValueError("reconnect and rollover_after need an Endpoint or a URL to connect to")
    try:
        session = RealtimeSession(_given(target), config, can_switch=False)
        async with session._running(deadline, tools):
            yield session
    finally:
        await target.aclose()


def _warn_if_unverified(endpoint: Endpoint, config: SessionConfig) -> None:
    """One WARNING per session whose ``ssl_context`` turns verification off for ``wss://``."""
    context = config.ssl_context
    if context is None or not endpoint.url.lower().startswith("wss:"):
        return
    if context.verify_mode == ssl.CERT_NONE or not context.check_hostname:
        logger.warning(
            "TLS certificate verification is off (SessionConfig.ssl_context): the server's "
            "identity is not checked, and credentials may go to anyone on the path"
        )


def _given(transport: Transport) -> Connect:
    """``connect`` for a transport opened by the caller: it, once (the session closes it)."""

    @asynccontextmanager
    async def connect(opened_by: float) -> AsyncIterator[Transport]:
        try:
            yield transport
        finally:
            await transport.aclose()

    return connect
