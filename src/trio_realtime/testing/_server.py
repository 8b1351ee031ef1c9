"""A fake OpenAI Realtime server on 127.0.0.1, for tests: the real protocol over a real
WebSocket, scripted responses, and knobs (``Behavior``) for the server's quirks and faults.

The service's rules live in ``_model.py`` and ``_calls.py`` (plain data, no I/O); each
connection's Trio shell is ``_connection.py``. Shape: ``open_fake_server()`` owns a nursery
running a TCP listener; each stream goes through the front door (``_http.py``): a WebSocket
handshake becomes a ``FakeConnection``, anything else is REST call control.
"""

from __future__ import annotations

import logging
import types
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Literal

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    wrap_server_stream,
)

from .._endpoints import redact_url
from .._util import unwrap_lone_exception
from . import _calls as calls
from . import _http as http
from . import _model as rules
from ._calls import FakeCall
from ._connection import FakeConnection, _Close, _count, _nth, _Shared
from ._protocol import Dialect
from ._script import Behavior, Script

logger = logging.getLogger(__name__)

_HOST = "127.0.0.1"
#: Largest client frame accepted: the API allows 15 MiB of audio per append event.
_MAX_MESSAGE_SIZE = 16 * 2**20
#: Seconds a client has, once connected, to send its opening handshake.
_HANDSHAKE_TIMEOUT = 60.0


@attrs.frozen
class ServerStatistics:
    """A snapshot of what the server did, over all connections.

    ``responses_created`` counts responses that reached ``response.created`` (sent or
    withheld); ``responses_done_by_status`` counts responses that ended, by final status.
    ``max_in_band_active`` is the most in-band responses ever active at once in one
    conversation (the protocol allows 1); ``max_out_of_band_active`` likewise for
    ``conversation: "none"`` responses. ``connections_refused`` counts handshakes refused
    (wrong path, or a key refused on an Azure path); ``connections`` counts the accepted ones.
    """

    connections: int
    open_connections: int
    responses_created: int
    responses_done_by_status: Mapping[str, int]
    server_started: int
    rejections_sent: int
    cancels_received: int
    max_in_band_active: int
    max_out_of_band_active: int
    connections_refused: int = 0


@attrs.define(eq=False)
class FakeRealtimeServer:
    """A running fake server; made by ``open_fake_server()``.

    ``received`` holds every client event of every connection, in order; ``connections``
    every accepted connection, in accept order.
    """

    dialect: Dialect
    behavior: Behavior
    model: str
    port: int = attrs.field(default=0, init=False)
    received: list[dict[str, Any]] = attrs.field(factory=list, init=False)
    connections: list[FakeConnection] = attrs.field(factory=list, init=False)
    calls: list[FakeCall] = attrs.field(factory=list, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _shared: _Shared = attrs.field(init=False)
    _connections_handed_out: int = attrs.field(default=0, init=False)

    @_shared.default
    def _make_shared(self) -> _Shared:
        return _Shared(
            dialect=self.dialect,
            model=self.model,
            behavior=lambda: self.behavior,
            received=self.received,
        )

    @property
    def url(self) -> str:
        """The OpenAI GA URL of this server (``ws://127.0.0.1:<port>/v1/realtime?model=...``).

        The Azure paths (``/openai/v1/realtime?model=...``, ``/openai/realtime?api-version=
        ...&deployment=...``) are served too; any other path is refused with HTTP 404.
        """
        return f"ws://{_HOST}:{self.port}/v1/realtime?model={self.model}"

    @property
    def rest_base_url(self) -> str:
        """The base URL of the REST API on this server (``http://127.0.0.1:<port>/v1``), for
        ``AsyncOpenAI(base_url=...)``: call control is served on the WebSocket's port."""
        return f"http://{_HOST}:{self.port}/v1"

    def sideband_url(self, call: FakeCall | str) -> str:
        """The URL a sideband attaches to ``call`` (or a call id) with:
        ``ws://127.0.0.1:<port>/v1/realtime?call_id=<id>`` (no model: the call has its
        session)."""
        call_id = call if isinstance(call, str) else call.call_id
        return f"ws://{_HOST}:{self.port}/v1/realtime?call_id={call_id}"

    def statistics(self) -> ServerStatistics:
        stats = self._shared.stats
        return ServerStatistics(
            connections=stats.connections,
            open_connections=sum(1 for c in self.connections if c.is_open),
            responses_created=stats.responses_created,
            responses_done_by_status=types.MappingProxyType(dict(stats.done_by_status)),
            server_started=stats.server_started,
            rejections_sent=stats.rejections_sent,
            cancels_received=stats.cancels_received,
            max_in_band_active=stats.max_in_band_active,
            max_out_of_band_active=stats.max_out_of_band_active,
            connections_refused=stats.connections_refused,
        )

    def active_response_ids(self) -> list[str]:
        """Ids of responses created and not done, over all connections."""
        return [rid for c in self.connections for rid in c.active_response_ids()]

    async def wait_connection(self) -> FakeConnection:
        """Return the first connection on the first call, the next one on each later call,
        waiting for it if needed. Cancel-safe."""
        wanted = self._connections_handed_out
        await self._shared.notifier.wait_until(lambda: len(self.connections) > wanted)
        self._connections_handed_out += 1
        return self.connections[wanted]

    async def wait_for_client_event(self, type: str, *, count: int = 1) -> dict[str, Any]:
        """Wait until ``count`` client events of ``type`` were received in total (all
        connections); return the ``count``-th. Cancel-safe."""
        await self._shared.notifier.wait_until(lambda: _count(self.received, type) >= count)
        return _nth(self.received, type, count)

    async def start_response(
        self,
        script: Script | None = None,
        *,
        connection: FakeConnection | None = None,
        interrupt: bool = False,
        vad_events: bool = True,
        idle_timeout: bool = False,
    ) -> str:
        """``FakeConnection.start_response`` on ``connection`` (default: the most recent open
        one; ``LookupError`` if none)."""
        return await self._connection(connection).start_response(
            script, interrupt=interrupt, vad_events=vad_events, idle_timeout=idle_timeout
        )

    async def finish_response(
        self,
        response_id: str | None = None,
        *,
        status: str = "completed",
        connection: FakeConnection | None = None,
    ) -> None:
        """``FakeConnection.finish_response`` on the connection holding ``response_id`` (or
        ``connection``, default the most recent open one)."""
        if response_id is not None and connection is None:
            for candidate in self.connections:
                if response_id in candidate.response_ids():
                    connection = candidate
                    break
            else:
                raise LookupError(f"unknown response {response_id!r}")
        await self._connection(connection).finish_response(response_id, status=status)

    def incoming_call(
        self, sip_headers: Mapping[str, str] | list[tuple[str, str]] | None = None
    ) -> FakeCall:
        """A caller's leg arrives (a SIP INVITE): a new ringing call. Returns it; its
        ``webhook`` is the ``realtime.call.incoming`` event the service would send. GA only.
        The application then accepts, rejects, refers or hangs up over REST, and attaches
        sidebands by ``call_id`` once it is active (see ``_calls.py`` for the rules)."""
        calls.check_dialect(self.dialect)
        if sip_headers is None:
            sip_headers = [
                ("From", '"Caller" <sip:+15555550100@sip.example.com>;tag=1'),
                ("To", "<sip:+15555550199@sip.api.openai.com>"),
                ("Call-ID", "fake-call@sip.example.com"),
            ]
        pairs = tuple(sip_headers.items() if isinstance(sip_headers, Mapping) else sip_headers)
        ids = self._shared.ids
        model = calls.new_call(ids, pairs)
        call = FakeCall(model, self._shared.notifier, model.webhook(ids.new("evt")))
        self.calls.append(call)
        self._shared.notifier.notify()
        return call

    def _call(self, call_id: str) -> FakeCall | None:
        for call in self.calls:
            if call.call_id == call_id:
                return call
        return None

    async def _handle_rest(self, head: http.Request, stream: trio.SocketStream) -> None:
        """One REST request: call control (``_calls.py``), or 404."""
        route = calls.parse_control(head.target)
        if head.method != "POST" or route is None or route[1] not in calls.VERBS:
            path = head.target.split("?", 1)[0]
            answer = calls.HttpAnswer(404, rules.invalid_url(head.method, path))
        elif rules.check_connect("/v1/realtime", head.headers, **self._keys()) is not None:
            answer = calls.HttpAnswer(401, rules.invalid_key_body(rules.api_key_of(head.headers)))
        else:
            call_id, verb = route
            try:
                body = await http.read_json_body(head, stream)
            except ValueError as exc:
                body, answer = None, calls.HttpAnswer(400, rules.invalid_json_body(str(exc)))
            else:
                call = self._call(call_id)
                if call is None:
                    answer = calls.call_not_found()
                else:
                    answer = call._model.control(verb, body, ids=self._shared.ids, model=self.model)
                    call.requests.append((verb, body, answer.status))
                    if answer.status == 200:
                        self._call_moved(call)
                    self._shared.notifier.notify()
        logger.debug("REST %s %s: HTTP %d", head.method, redact_url(head.target), answer.status)
        await http.answer(head, stream, answer.status, answer.body)

    def _call_moved(self, call: FakeCall) -> None:
        """A call was accepted (its session starts) or ended (its session ends, its sidebands
        are closed: code 1000)."""
        if call.state == "active" and call.connection is None:
            session = FakeConnection(
                self._shared, None, None, request_path="", request_headers=[], call=call
            )
            call.connection = session
            assert self._nursery is not None
            self._nursery.start_soon(session._run_call_session, name=f"call {call.call_id}")
        elif call.state == "ended":
            for sideband in call.sidebands:
                sideband._push(_Close(1000, "call ended"))
            if call.connection is not None:
                call.connection._call_ended.set()

    def _keys(self) -> dict[str, Any]:
        behavior = self.behavior
        return {
            "accepted_api_keys": behavior.accepted_api_keys,
            "invalid_api_keys": behavior.invalid_api_keys,
        }

    def _connection(self, connection: FakeConnection | None) -> FakeConnection:
        if connection is not None:
            return connection
        for candidate in reversed(self.connections):
            if candidate.is_open:
                return candidate
        raise LookupError("no open connection")

    async def _serve_stream(self, stream: trio.SocketStream) -> None:
        """One TCP connection: its WebSocket handshake, then its conversation. The stream
        is ours, so ``abort()`` can drop it; it is closed when the connection ends."""
        try:
            async with trio.open_nursery() as nursery:  # the WebSocket's reader task
                head = request = None
                with trio.move_on_after(_HANDSHAKE_TIMEOUT):
                    head = await http.read_request(stream)
                    if head is not None and head.is_websocket:
                        try:
                            request = await wrap_server_stream(
                                nursery,
                                http.Replayed(stream, head.raw),
                                max_message_size=_MAX_MESSAGE_SIZE,
                            )
                        except ConnectionClosed:
                            logger.debug("the client left during its opening handshake")
                if request is not None:
                    await self._handle_request(request, stream)
                elif head is not None and not head.is_websocket:
                    await self._handle_rest(head, stream)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _handle_request(self, request: WebSocketRequest, stream: trio.SocketStream) -> None:
        decision = rules.check_connect(request.path, request.headers, **self._keys())
        call = None
        if decision is None and (call_id := calls.sideband_call_id(request.path)) is not None:
            call = self._call(call_id)
            if call is None or call.state != "active":
                not_found = calls.call_not_found()
                decision = rules.HandshakeRefusal(not_found.status, not_found.body)
        if isinstance(decision, rules.HandshakeRefusal):
            logger.debug(
                "refusing the handshake for %s: HTTP %d", redact_url(request.path), decision.status
            )
            self._shared.stats.connections_refused += 1
            self._shared.notifier.notify()
            try:
                await request.reject(
                    decision.status,
                    extra_headers=[(b"content-type", b"application/json")],
                    body=decision.body.encode(),
                )
            except ConnectionClosed:
                logger.debug("the client left during the refused handshake")
            return
        try:
            ws = await request.accept()
        except ConnectionClosed:
            logger.debug("the client left during the opening handshake")
            return
        connection = FakeConnection(
            self._shared,
            ws,
            stream,
            request_path=request.path,
            request_headers=list(request.headers),
            refusal=decision,
            call=call,
        )
        self.connections.append(connection)
        if call is not None:
            call.sidebands.append(connection)
        self._shared.stats.connections += 1
        self._shared.notifier.notify()
        logger.debug("accepted a connection on %s", redact_url(request.path))
        await connection._run()


@asynccontextmanager
async def open_fake_server(
    *,
    dialect: Literal["ga", "beta"] = "ga",
    behavior: Behavior | None = None,
    model: str = "gpt-realtime",
    port: int = 0,
) -> AsyncIterator[FakeRealtimeServer]:
    """Serve the fake Realtime API on 127.0.0.1 for the duration of the block, on ``port``
    (default 0: a free port the system picks; ``server.port`` says which).

    Leaving the block drops every connection at once (no closing handshake) and ends every
    task the server started. An exception raised in the block comes out bare, not inside an
    ``ExceptionGroup``.
    """
    server = FakeRealtimeServer(dialect=dialect, behavior=behavior or Behavior(), model=model)
    with unwrap_lone_exception():
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, server._serve_stream, port, host=_HOST)
            )
            server.port = listeners[0].socket.getsockname()[1]
            server._nursery = nursery
            logger.debug("fake Realtime server (%s) listening on %s", dialect, server.url)
            try:
                yield server
            finally:
                nursery.cancel_scope.cancel()
