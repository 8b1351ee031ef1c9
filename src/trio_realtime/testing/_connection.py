"""One connection of the fake server: the Trio shell around the service's rules (``_model.py``).

A ``FakeConnection`` is one accepted WebSocket (one conversation) with its own nursery: one
reader task that hands client events to the model and sends what it answers, one writer task
that owns ``send_message``, one task per response, and timers (session expiry, drops, idle
timeout). Every send goes through an unbounded channel to the writer, synchronously, so a
response task can be cancelled at any ``await`` without ever leaving half an event behind.
A call's session is a connection without a WebSocket whose events go to the call's sidebands.

It is longer than most modules because ``FakeConnection`` is public and documented control by
control (the tests' side of the server); its rules are elsewhere, its tasks stay thin.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
)

from .._endpoints import redact_url
from . import _model as rules
from . import _protocol as proto
from ._audio import AudioFormat
from ._calls import FakeCall
from ._ids import IdFactory
from ._model import ConnectionModel, Rejection, SessionState
from ._protocol import Dialect, Event, ResponseStream
from ._script import Behavior, Script, default_script

logger = logging.getLogger(__name__)

#: Seconds a server-initiated close waits for the client's closing handshake.
_CLOSE_TIMEOUT = 2.0
#: Response statuses ``finish_response`` accepts.
_FINAL_STATUSES = frozenset({"completed", "cancelled", "failed", "incomplete"})
#: ``expires_at`` of a session without ``Behavior.session_duration`` (OpenAI's 60 minutes).
_DEFAULT_SESSION_SECONDS = 3600


@attrs.frozen
class _Close:
    code: int
    reason: str


@attrs.frozen
class _Abort:
    pass


_Outgoing = str | bytes | _Close | _Abort


@attrs.define(eq=False)
class _Response:
    """The Trio side of one response: its task's controls. Its rules are in the model."""

    id: str
    in_band: bool
    script: Script
    metadata: Mapping[str, Any] | None
    server_started: bool
    #: withhold_created: run on the server, send nothing.
    silent: bool
    modalities: list[str]
    voice: Any
    audio_format: AudioFormat
    cancel_reason: str | None = None
    finish_status: str | None = None
    cancel_scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    finish_requested: trio.Event = attrs.Factory(trio.Event)
    done: trio.Event = attrs.Factory(trio.Event)


@attrs.define(eq=False)
class _Playback:
    """A response's audio playing to a call's caller (the service plays it, not the client)."""

    response: _Response
    #: ``trio.current_time()`` of its first audio delta.
    started_at: float
    #: Milliseconds of audio generated so far (what the caller hears in full unless cleared).
    audio_ms: float = 0.0
    cancel_scope: trio.CancelScope = attrs.Factory(trio.CancelScope)


@attrs.define(eq=False)
class _Stats:
    connections: int = 0
    connections_refused: int = 0
    responses_created: int = 0
    done_by_status: Counter[str] = attrs.Factory(Counter)
    server_started: int = 0
    rejections_sent: int = 0
    cancels_received: int = 0
    max_in_band_active: int = 0
    max_out_of_band_active: int = 0


@attrs.define(eq=False)
class _Notifier:
    """Wakes every waiter whenever something was recorded."""

    _event: trio.Event = attrs.Factory(trio.Event)

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        if predicate():
            await trio.lowlevel.checkpoint()
            return
        while not predicate():
            await self._event.wait()


@attrs.define(eq=False)
class _Shared:
    """What a server shares with its connections (instead of its private members)."""

    dialect: Dialect
    model: str
    behavior: Callable[[], Behavior]
    received: list[dict[str, Any]]
    ids: IdFactory = attrs.Factory(IdFactory)
    stats: _Stats = attrs.Factory(_Stats)
    notifier: _Notifier = attrs.Factory(_Notifier)


@attrs.define(eq=False)
class FakeConnection:
    """One accepted WebSocket: one conversation. Created by the server, never by users.

    ``received`` holds the client events (parsed JSON objects) in order; ``sent`` the server
    events in the order they were queued for the wire (injected ones included).
    ``request_path`` and ``request_headers`` are those of the opening handshake.

    A call's session is a connection without a WebSocket of its own (``FakeCall.connection``):
    its events go to every open sideband of the call (output audio deltas excepted: the
    service plays the audio to the caller), the client events of every sideband and of the
    caller's leg (``send_client_event``) come to it, and an error goes only to whoever caused
    it. It plays each response's audio to the caller itself and tells the sidebands
    ``output_audio_buffer.started`` / ``stopped`` / ``cleared`` (``_model.py`` rule 7). A
    sideband (``call`` set) forwards its client events to the call's session and answers for
    it (``session``, ``item_ids()``, ``start_response()``...).
    """

    _shared: _Shared
    #: None for a call's session, which has no WebSocket of its own.
    _ws: WebSocketConnection | None
    #: The TCP stream under the WebSocket: closed at once to drop the connection.
    _stream: trio.abc.AsyncResource | None
    request_path: str
    request_headers: list[tuple[bytes, bytes]]
    _refusal: rules.SessionRefusal | None = None
    #: The call this connection is a sideband of (None: a connection of its own).
    call: FakeCall | None = None
    received: list[dict[str, Any]] = attrs.field(factory=list, init=False)
    sent: list[dict[str, Any]] = attrs.field(factory=list, init=False)
    conversation_id: str = attrs.field(default="", init=False)
    _model: ConnectionModel | None = attrs.field(default=None, init=False)
    _responses: dict[str, _Response] = attrs.field(factory=dict, init=False)
    _send_channel: trio.MemorySendChannel[_Outgoing] | None = attrs.field(default=None, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _reading: trio.Event = attrs.field(factory=trio.Event, init=False)
    _closed: trio.Event = attrs.field(factory=trio.Event, init=False)
    #: Replaced on everything that restarts the idle timeout.
    _activity: trio.Event = attrs.field(factory=trio.Event, init=False)
    #: Set when the reader has stopped: no new response may start from then on.
    _ending: bool = attrs.field(default=False, init=False)
    #: A call's session: set when the call ends.
    _call_ended: trio.Event = attrs.field(factory=trio.Event, init=False)
    #: While a client event is handled: the connection it came from (None: the caller's leg).
    _source: FakeConnection | None = attrs.field(default=None, init=False)
    #: A call's session: the responses whose audio plays to the caller, in start order.
    _playing: dict[str, _Playback] = attrs.field(factory=dict, init=False)
    #: A call's session: the responses whose audio was cut off (they never play again).
    _cleared: set[str] = attrs.field(factory=set, init=False)

    @property
    def _sideband_of(self) -> FakeConnection | None:
        """The call's session this connection is a sideband of (None: not a sideband)."""
        if self.call is None or self._ws is None:
            return None
        host: FakeConnection | None = self.call.connection
        return host

    @property
    def _plays_output_audio(self) -> bool:
        """A call's session: the service plays the audio to the caller (``_model.py`` rule 7)."""
        return self._ws is None and self.call is not None

    def _conversation(self) -> FakeConnection:
        """The connection that holds this connection's conversation."""
        return self._sideband_of or self

    @property
    def dialect(self) -> Dialect:
        return self._shared.dialect

    @property
    def is_open(self) -> bool:
        return not self._closed.is_set()

    @property
    def session(self) -> dict[str, Any]:
        """The session configuration as the server holds it (what ``session.updated`` says)."""
        if self._sideband_of is not None:
            return self._sideband_of.session
        return {} if self._model is None else self._model.session.value

    @property
    def _behavior(self) -> Behavior:
        return self._shared.behavior()

    @property
    def _state(self) -> ConnectionModel:
        assert self._model is not None, "the connection has not started"
        return self._model

    # -- public: observing ------------------------------------------------------------

    def active_response_ids(self) -> list[str]:
        """Ids of this conversation's responses that were created and are not done."""
        if self._sideband_of is not None:
            return self._sideband_of.active_response_ids()
        if self._model is None:
            return []
        return [rid for rid in self._responses if rid in self._model.slots.created]

    def response_ids(self) -> list[str]:
        """Ids of every response of this conversation, done or not, in start order."""
        return list(self._conversation()._responses)

    def item_ids(self) -> list[str]:
        """Ids of the conversation's items, in order (deleted ones left out)."""
        model = self._conversation()._model
        return [] if model is None else list(model.conversation.items)

    def sent_types(self) -> list[str]:
        return [str(event.get("type")) for event in self.sent]

    async def wait_for_client_event(self, type: str, *, count: int = 1) -> dict[str, Any]:
        """Wait until ``count`` client events of ``type`` arrived on this connection; return
        the ``count``-th. Cancel-safe. Raises ``trio.BrokenResourceError`` if the connection
        ends first."""
        await self._shared.notifier.wait_until(
            lambda: _count(self.received, type) >= count or self._closed.is_set()
        )
        return _nth(self.received, type, count)

    async def wait_for_server_event(self, type: str, *, count: int = 1) -> dict[str, Any]:
        """Wait until ``count`` server events of ``type`` were queued on this connection; return
        the ``count``-th. Cancel-safe. Raises ``trio.BrokenResourceError`` if the connection
        ends first."""
        await self._shared.notifier.wait_until(
            lambda: _count(self.sent, type) >= count or self._closed.is_set()
        )
        return _nth(self.sent, type, count)

    async def wait_closed(self) -> None:
        """Wait until the connection has ended, whoever ended it."""
        await self._closed.wait()

    # -- public: acting ---------------------------------------------------------------

    async def send_event(self, event: Mapping[str, Any]) -> None:
        """Queue any event, exactly as given (no ``event_id`` added)."""
        self._push_event(dict(event))
        await trio.lowlevel.checkpoint()

    async def send_raw(self, data: str | bytes) -> None:
        """Queue a raw text (str) or binary (bytes) frame: malformed JSON, huge frames..."""
        self._push(data)
        await trio.lowlevel.checkpoint()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the WebSocket after the events queued so far were sent, and wait until the
        connection has ended (at most a couple of seconds for the client's handshake)."""
        self._push(_Close(code, reason))
        await self._closed.wait()

    async def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake (queued events are
        sent first; the client sees 1006). Waits until the connection has ended."""
        self._push(_Abort())
        await self._closed.wait()

    def stop_reading(self) -> None:
        """Stop reading client frames (they pile up in the socket buffers)."""
        self._reading = trio.Event()

    def resume_reading(self) -> None:
        """Read client frames again, starting with those that piled up."""
        self._reading.set()

    async def start_response(
        self,
        script: Script | None = None,
        *,
        interrupt: bool = False,
        vad_events: bool = True,
        idle_timeout: bool = False,
    ) -> str:
        """Start an in-band response as voice activity detection does (no metadata).

        With ``vad_events``, first send ``input_audio_buffer.speech_started``; if an in-band
        response is active, cancel it when ``interrupt`` (what ``turn_detection.
        interrupt_response: true`` does: ``response.done`` with ``Behavior.interrupted_status``,
        reason ``turn_detected``; out-of-band responses run on); then wait until the
        conversation is free, send ``speech_stopped``, ``committed`` and the user item, and
        start the response. With ``idle_timeout`` instead: wait until the conversation is
        free, send ``input_audio_buffer.timeout_triggered``, ``committed`` and the user item,
        and start the response (what the service does after ``idle_timeout_ms`` of silence;
        GA only). Returns the new response id once it holds the conversation (not waiting for
        ``response.created`` to be sent). Raises ``trio.BrokenResourceError`` if the
        connection ends first.
        """
        if self._sideband_of is not None:
            return await self._sideband_of.start_response(
                script, interrupt=interrupt, vad_events=vad_events, idle_timeout=idle_timeout
            )
        if idle_timeout and self.dialect != "ga":
            raise ValueError("the beta protocol has no idle timeout")
        if self._model is None or self._ending:
            raise trio.BrokenResourceError("the connection has ended")
        slots = self._model.slots
        item_id = self._shared.ids.new("item")
        speech = vad_events and not idle_timeout
        if speech:
            self._emit(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": 1000,
                    "item_id": item_id,
                }
            )
        if interrupt and (cancel := self._model.interrupt()) is not None:
            self._cancel(cancel)
        if interrupt and self._plays_output_audio:
            self._clear_playback()
        while slots.in_band is not None:
            await self._responses[slots.in_band].done.wait()
        if self._ending:
            raise trio.BrokenResourceError("the connection has ended")
        if idle_timeout:
            self._emit(
                {
                    "type": "input_audio_buffer.timeout_triggered",
                    "audio_start_ms": 2000,
                    "audio_end_ms": 2000 + (self._model.session.idle_timeout_ms or 0),
                    "item_id": item_id,
                }
            )
        elif speech:
            self._emit(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": 2000,
                    "item_id": item_id,
                }
            )
        if speech or idle_timeout:
            for event in self._model.commit_user_audio(item_id):
                self._emit(event)
        response = self._begin_response(
            self._model.start_server_response(),
            {},
            script=script,
            metadata=None,
            in_band=True,
            server_started=True,
            silent=False,
        )
        self._shared.stats.server_started += 1
        await trio.lowlevel.checkpoint()
        return response.id

    async def finish_response(
        self, response_id: str | None = None, *, status: str = "completed"
    ) -> None:
        """Let a held response (``auto_finish=False`` or ``withhold_done``) stream its output
        and send ``response.done`` with ``status``; wait until it is done.

        Default: the active in-band response. Raises ``LookupError`` if there is none.
        """
        if self._sideband_of is not None:
            return await self._sideband_of.finish_response(response_id, status=status)
        if status not in _FINAL_STATUSES:
            raise ValueError(f"not a final response status: {status!r}")
        if response_id is None:
            in_band = None if self._model is None else self._model.slots.in_band
            if in_band is None:
                raise LookupError("no in-band response is active")
            response_id = in_band
        try:
            response = self._responses[response_id]
        except KeyError:
            raise LookupError(f"unknown response {response_id!r}") from None
        if response.finish_status is None:
            response.finish_status = status
        response.finish_requested.set()
        await response.done.wait()

    # -- sending -------------------------------------------------------------------------

    def _push(self, data: _Outgoing) -> None:
        if self._send_channel is None:
            return
        try:
            self._send_channel.send_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            logger.debug("connection ended, dropping %r", type(data).__name__)

    def _push_event(self, event: dict[str, Any]) -> None:
        if self._closed.is_set():
            return
        data = json.dumps(event)
        self.sent.append(json.loads(data))
        self._shared.notifier.notify()
        self._push(data)
        # A call's session: every open sideband gets it, but the audio (the service plays
        # it to the caller).
        audio = event.get("type") == proto.EVENT_NAMES["ga"].audio_delta
        if self._ws is None and self.call is not None and not audio:
            for sideband in self.call.sidebands:
                sideband._push_event(event)

    def _emit(self, event: Event) -> None:
        """Queue a server event with a fresh ``event_id``."""
        self._push_event(
            {"type": event["type"], "event_id": self._shared.ids.new("event"), **event}
        )

    def _reject(self, rejection: Rejection, cause: Mapping[str, Any] | None) -> None:
        """Answer the client event ``cause`` with an error (on a call: to its sender only)."""
        client_event_id = None
        if cause is not None and not self._behavior.null_error_event_id:
            client_event_id = _event_id(cause)
        event = rejection.event(client_event_id)
        if self._ws is None:
            source = self._source
            if source is not None:
                source._emit(event)
            else:  # the caller's leg: recorded, sent to no sideband
                self.sent.append({"type": event["type"], "event_id": "", **event})
            return
        self._emit(event)

    def _poke(self) -> None:
        """Something happened: the idle timeout starts again."""
        self._activity.set()
        self._activity = trio.Event()

    # -- tasks ---------------------------------------------------------------------------

    async def _run_call_session(self) -> None:
        """A call's session: no WebSocket; it lives until the call ends."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._greet()
                nursery.start_soon(self._watch_idle)
                await self._call_ended.wait()
                self._ending = True
                nursery.cancel_scope.cancel()
        finally:
            self._ending = True
            self._closed.set()
            self._shared.notifier.notify()

    def send_client_event(self, event: Mapping[str, Any]) -> None:
        """A call's second controller (the caller's leg: a browser's data channel) sends a
        client event: the session handles it as from a sideband; its errors go to no
        sideband. Only on a call's session (``FakeCall.connection``)."""
        if self._ws is not None or self.call is None:
            raise RuntimeError("only a call's session takes client events from the caller's leg")
        self._handle_event(dict(event), source=None)

    async def _run(self) -> None:
        send_channel, receive_channel = trio.open_memory_channel[_Outgoing](math.inf)
        self._send_channel = send_channel
        self._reading.set()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer, receive_channel)
                self._greet()
                behavior = self._behavior
                if self._sideband_of is not None:
                    if behavior.drop_after is not None:
                        nursery.start_soon(self._drop, behavior.drop_after)
                    if behavior.close_sidebands_after is not None:
                        nursery.start_soon(self._close_later, behavior.close_sidebands_after)
                elif self._refusal is None:
                    if behavior.session_duration is not None:
                        nursery.start_soon(self._expire, behavior.session_duration)
                    if behavior.drop_after is not None:
                        nursery.start_soon(self._drop, behavior.drop_after)
                    nursery.start_soon(self._watch_idle)
                try:
                    await self._reader()
                finally:
                    self._ending = True
                nursery.cancel_scope.cancel()
        finally:
            self._ending = True
            self._closed.set()
            send_channel.close()
            self._shared.notifier.notify()
            logger.debug("connection %s ended", self.conversation_id)

    async def _writer(self, receive_channel: trio.MemoryReceiveChannel[_Outgoing]) -> None:
        with receive_channel:
            async for data in receive_channel:
                assert self._ws is not None
                assert self._stream is not None
                try:
                    if isinstance(data, _Close):
                        with trio.move_on_after(_CLOSE_TIMEOUT):
                            await self._ws.aclose(data.code, data.reason or None)
                        break
                    if isinstance(data, _Abort):
                        await self._stream.aclose()
                        break
                    await self._ws.send_message(data)
                except ConnectionClosed:
                    break
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    async def _reader(self) -> None:
        while True:
            await self._reading.wait()
            assert self._ws is not None
            try:
                message = await self._ws.get_message()
            except ConnectionClosed:
                return
            # stop_reading() may have been called while waiting for this message.
            await self._reading.wait()
            self._handle_message(message)

    async def _expire(self, duration: float) -> None:
        await trio.sleep(duration)
        logger.debug("session %s expired", self.conversation_id)
        self._emit(rules.expiry_error(duration).event(None))
        self._push(_Close(rules.EXPIRY_CLOSE_CODE, rules.expiry_message(duration)))

    async def _close_later(self, delay: float) -> None:
        await trio.sleep(delay)
        logger.debug("closing sideband %s cleanly", redact_url(self.request_path))
        self._push(_Close(1000, ""))

    async def _drop(self, delay: float) -> None:
        await trio.sleep(delay)
        logger.debug("dropping connection %s", self.conversation_id)
        self._push(_Abort())

    async def _watch_idle(self) -> None:
        """Start a response after ``idle_timeout_ms`` of an idle conversation."""
        while True:
            activity = self._activity
            timeout = self._state.session.idle_timeout_ms
            if timeout is None or self._state.slots.in_band is not None:
                await activity.wait()
                continue
            with trio.move_on_after(timeout / 1000):
                await activity.wait()
                continue
            try:
                await self.start_response(idle_timeout=True)
            except trio.BrokenResourceError:
                return

    # -- client events -------------------------------------------------------------------

    def _greet(self) -> None:
        ids = self._shared.ids
        self.conversation_id = ids.new("conv")
        duration = self._behavior.session_duration
        seconds = _DEFAULT_SESSION_SECONDS if duration is None else math.ceil(duration)
        self._model = ConnectionModel.new(
            self.dialect,
            ids=ids,
            model=self._shared.model,
            expires_at=int(time.time()) + seconds,
        )
        if self.call is not None and self.call.session is not None:
            # A call's session starts from its accept; a sideband attaches to it and is told
            # nothing (third parties see no session.created there).
            self._model.session = SessionState("ga", json.loads(json.dumps(self.call.session)))
            self._model.plays_output_audio = self._plays_output_audio
            return
        if self._refusal is not None:
            logger.debug("refusing the session: %s", self._refusal.error.code)
            self._emit(self._refusal.error.event(None))
            self._push(_Close(self._refusal.close_code, self._refusal.close_reason))
            return
        self._emit({"type": "session.created", "session": self.session})
        if self.dialect == "beta":
            self._emit(
                {
                    "type": "conversation.created",
                    "conversation": {"id": self.conversation_id, "object": "realtime.conversation"},
                }
            )

    def _handle_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except (ValueError, UnicodeDecodeError) as exc:
            logger.debug("invalid JSON from the client: %s", exc)
            self._reject(rules.invalid_json(f"The server failed to parse the event: {exc}"), None)
            return
        if not isinstance(event, dict):
            self._reject(rules.invalid_json("The event must be a JSON object."), None)
            return
        self.received.append(event)
        self._shared.received.append(event)
        self._shared.notifier.notify()
        if self._refusal is not None:
            return  # the session is being closed: nothing more is served
        host = self._sideband_of
        if host is not None:
            host._handle_event(event, source=self)
            return
        self._handle_event(event, source=self)

    def _handle_event(self, event: dict[str, Any], *, source: FakeConnection | None) -> None:
        """One client event for this conversation, from ``source`` (on a call: a sideband, or
        None for the caller's leg)."""
        if source is not self:
            if self._ending:
                return
            self.received.append(event)
            if source is None:
                self._shared.received.append(event)
            self._shared.notifier.notify()
        kind = event.get("type")
        if kind == "response.cancel":
            self._shared.stats.cancels_received += 1
        self._source = source
        try:
            for action in self._state.receive(event, self._behavior):
                self._act(action, event)
        finally:
            self._source = None
        if kind == "session.update":
            self._poke()  # the idle timeout starts again, with the new setting

    def _act(self, action: rules.Action, cause: Mapping[str, Any]) -> None:
        """Do what the model said a client event (``cause``) calls for."""
        if isinstance(action, rules.Send):
            self._emit(action.event)
        elif isinstance(action, rules.Refuse):
            if action.conflict:
                self._shared.stats.rejections_sent += 1
            self._reject(action.rejection, cause)
        elif isinstance(action, rules.StartResponse):
            self._begin_response(
                action.response_id,
                action.body,
                script=None,
                metadata=action.metadata,
                in_band=action.in_band,
                server_started=False,
                silent=self._behavior.withhold_created,
            )
        elif isinstance(action, rules.ClearOutputAudio):
            self._clear_playback()
        else:
            self._cancel(action)

    # -- a call's output audio buffer (``_model.py`` rule 7) ------------------------------

    def _play(self, response: _Response, delta: Event) -> None:
        """A call plays an audio delta to the caller: the first one of a response starts its
        playback (``output_audio_buffer.started``)."""
        if not self._plays_output_audio or response.silent or response.id in self._cleared:
            return
        playback = self._playing.get(response.id)
        if playback is None:
            playback = _Playback(response, trio.current_time())
            self._playing[response.id] = playback
            self._emit({"type": "output_audio_buffer.started", "response_id": response.id})
            assert self._nursery is not None
            self._nursery.start_soon(self._play_out, playback, name=f"playback {response.id}")
        playback.audio_ms += _audio_seconds(delta, response.audio_format) * 1000

    async def _play_out(self, playback: _Playback) -> None:
        """Playback ends once the response is done and its audio has played; cancelled by a
        clear."""
        with playback.cancel_scope:
            await playback.response.done.wait()
            while (pace := self._behavior.call_playback_pace) is not None:
                end = playback.started_at + playback.audio_ms / 1000 / pace
                if trio.current_time() >= end:
                    break
                await trio.sleep_until(end)
            self._playing.pop(playback.response.id, None)
            self._emit({"type": "output_audio_buffer.stopped", "response_id": playback.response.id})

    def _clear_playback(self) -> None:
        """Cut off every response still playing: ``output_audio_buffer.cleared`` each."""
        playing, self._playing = self._playing, {}
        for response_id, playback in playing.items():
            playback.cancel_scope.cancel()
            self._cleared.add(response_id)
            self._emit({"type": "output_audio_buffer.cleared", "response_id": response_id})

    # -- responses -----------------------------------------------------------------------

    def _cancel(self, cancel: rules.CancelResponse) -> None:
        response = self._responses[cancel.response_id]
        response.cancel_reason = cancel.reason
        response.cancel_scope.cancel()

    def _script_for(self, body: Mapping[str, Any], audio_format: AudioFormat) -> Script:
        factory = self._behavior.script
        if factory is not None:
            return factory(body)
        return default_script(
            body, self._state.session.output_modalities, audio_format=audio_format
        )

    def _begin_response(
        self,
        response_id: str,
        body: Mapping[str, Any],
        *,
        script: Script | None,
        metadata: Mapping[str, Any] | None,
        in_band: bool,
        server_started: bool,
        silent: bool,
    ) -> _Response:
        """Start the task of a response that holds its slot in the model already."""
        stats = self._shared.stats
        voice, audio_format = self._state.session.response_audio(body)
        if script is None:
            script = self._script_for(body, audio_format)
        response = _Response(
            id=response_id,
            in_band=in_band,
            script=script,
            metadata=metadata,
            server_started=server_started,
            silent=silent,
            modalities=["audio"] if script.audio is not None else ["text"],
            voice=voice,
            audio_format=audio_format,
        )
        slots = self._state.slots
        self._responses[response.id] = response
        if in_band:
            stats.max_in_band_active = max(stats.max_in_band_active, 1)
        else:
            stats.max_out_of_band_active = max(stats.max_out_of_band_active, len(slots.out_of_band))
        self._poke()
        assert self._nursery is not None
        self._nursery.start_soon(self._run_response, response, name=f"response {response.id}")
        return response

    def _emit_for(self, response: _Response, event: Event) -> None:
        if not response.silent:
            self._emit(event)

    def _response_object(self, response: _Response, status: str, **kw: Any) -> dict[str, Any]:
        return proto.response_object(
            self.dialect,
            response_id=response.id,
            status=status,
            conversation_id=self.conversation_id if response.in_band else None,
            metadata=response.metadata,
            modalities=response.modalities,
            voice=response.voice,
            audio_format=response.audio_format,
            **kw,
        )

    async def _run_response(self, response: _Response) -> None:
        state = self._state
        behavior = self._behavior
        stream = ResponseStream(
            dialect=self.dialect,
            response_id=response.id,
            script=response.script,
            ids=self._shared.ids,
            in_band=response.in_band,
            previous_item_id=state.conversation.last_id,
            audio_format=response.audio_format,
            audio_items=behavior.audio_items,
            overlap_audio_items=behavior.overlap_audio_items,
            audio_chunk_bytes=(
                None
                if behavior.audio_chunk_ms is None
                else behavior.audio_chunk_ms * response.audio_format.bytes_per_ms
            ),
        )
        audio_delta = stream.names.audio_delta
        stats = self._shared.stats
        try:
            with response.cancel_scope:
                delay = behavior.created_delay
                if not response.server_started and delay > 0:
                    # Not created yet: response.cancel finds nothing active meanwhile.
                    await trio.sleep(delay)
                state.slots.mark_created(response.id)
                stats.responses_created += 1
                if not self._behavior.omit_response_created:
                    self._emit_for(
                        response,
                        {
                            "type": "response.created",
                            "response": self._response_object(response, "in_progress"),
                        },
                    )
                if self._behavior.send_rate_limits:
                    self._emit_for(response, proto.rate_limits_event())
                if not self._behavior.auto_finish:
                    await response.finish_requested.wait()
                for event, is_delta in stream.events():
                    if event["type"] == audio_delta:
                        self._play(response, event)
                    self._emit_for(response, event)
                    state.conversation.take_from(stream)
                    if is_delta and self._behavior.delta_delay > 0:
                        await trio.sleep(self._behavior.delta_delay)
                    pace = self._behavior.audio_pace
                    if pace is not None and event["type"] == audio_delta:
                        await trio.sleep(_audio_seconds(event, response.audio_format) / pace)
                if self._behavior.withhold_done and not response.finish_requested.is_set():
                    await response.finish_requested.wait()
            if response.cancel_reason is not None:
                # Cancelling takes the server a moment; the response holds the conversation
                # until its response.done.
                if self._behavior.cancel_delay > 0:
                    await trio.sleep(self._behavior.cancel_delay)
                status = "cancelled"
                if response.cancel_reason == "turn_detected":
                    status = self._behavior.interrupted_status
                details = proto.status_details(status, reason=response.cancel_reason)
            else:
                status = response.finish_status or response.script.status
                details = proto.status_details(status, override=response.script.status_details)
            for event in stream.interrupt():
                self._emit_for(response, event)
            state.conversation.take_from(stream)
            state.slots.finish(response.id)
            stats.done_by_status[status] += 1
            self._emit_for(
                response,
                {
                    "type": "response.done",
                    "response": self._response_object(
                        response,
                        status,
                        output=stream.output,
                        details=details,
                        usage=stream.usage(),
                    ),
                },
            )
        finally:
            state.slots.finish(response.id)
            response.done.set()
            self._poke()
            self._shared.notifier.notify()


def _audio_seconds(delta: Event, audio_format: AudioFormat) -> float:
    """How long the audio of an audio delta plays."""
    size = len(base64.b64decode(delta["delta"]))
    return size / audio_format.bytes_per_ms / 1000


def _event_id(event: Mapping[str, Any]) -> str | None:
    value = event.get("event_id")
    return value if isinstance(value, str) else None


def _count(events: list[dict[str, Any]], type: str) -> int:
    return sum(1 for event in events if event.get("type") == type)


def _nth(events: list[dict[str, Any]], type: str, count: int) -> dict[str, Any]:
    matching = [event for event in events if event.get("type") == type]
    if len(matching) < count:
        raise trio.BrokenResourceError(f"the connection ended before {count} {type!r} events")
    return matching[count - 1]
