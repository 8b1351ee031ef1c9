"""Calls (SIP and WebRTC) as the service handles them: plain data, no sockets.

A call is created by the caller's leg, not by the application; the application controls it
over REST and attaches to its session over a second WebSocket, the sideband. The rules, in
prose (then the table of moves):

1. **A call rings** when the caller's leg arrives (``FakeRealtimeServer.incoming_call()``).
   The service tells the application with the ``realtime.call.incoming`` webhook: the call id
   (``rtc_...``) and the SIP headers of the INVITE.
2. **Call control** is ``POST /v1/realtime/calls/{call_id}/{verb}`` (Azure:
   ``/openai/v1/realtime/calls/...``), answered with an empty 200 on success:
   - ``accept`` (a ringing call): the body is the session configuration, checked as
     ``session.update`` is (``type: "realtime"`` required; ``unknown_parameter``,
     ``invalid_type``... answered with HTTP 400 and the error object); the call is then active,
     with that session (SIP audio is G.711 μ-law unless the body names another format);
   - ``reject`` (a ringing call): optional ``status_code``, the SIP status for the caller
     (default 603); the call ends;
   - ``refer`` (an active call): ``target_uri`` (``tel:...`` or ``sip:...``) is required; the
     call is transferred, and ends here;
   - ``hangup`` (a ringing or active call): the call ends.
   An unknown call, or one that has ended, is HTTP 404 ``call_id_not_found``; a verb the call's
   state does not allow (accepting twice, referring a call that still rings) is HTTP 400
   ``invalid_request_error`` (the fake's own wording). A refused key is HTTP 401.
3. **The sideband** is a WebSocket on ``/v1/realtime?call_id=...`` (Azure:
   ``/openai/v1/realtime?call_id=...``): it attaches to the session of an active call. Any other
   call id (unknown, still ringing, ended) is refused at the handshake with HTTP 404 and
   ``{"error": {"code": "call_id_not_found", "message": "No session found for the provided
   call_id", ...}}``.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import attrs

from . import _model as rules
from ._ids import IdFactory
from ._protocol import Dialect

#: REST call control: ``/v1/realtime/calls/{id}/{verb}`` and the Azure path.
CALL_PREFIXES = ("/v1/realtime/calls/", "/openai/v1/realtime/calls/")
#: The WebSocket paths a sideband may attach on (``?call_id=``).
SIDEBAND_PATHS = ("/v1/realtime", "/openai/v1/realtime")
#: SIP audio: what an accepted call speaks unless its accept names another format.
SIP_AUDIO = {"type": "audio/pcmu"}
#: The SIP status a reject sends when it names none (Decline).
DEFAULT_REJECT_STATUS = 603


class CallState(enum.Enum):
    #: The caller's leg arrived; the application has not answered yet.
    RINGING = "ringing"
    #: Accepted: the call has a session, sidebands may attach.
    ACTIVE = "active"
    #: Rejected, referred or hung up: gone for good.
    ENDED = "ended"


#: (state, verb) -> next state. A verb missing for a state is refused (HTTP 400).
MOVES: Mapping[CallState, Mapping[str, CallState]] = {
    CallState.RINGING: {
        "accept": CallState.ACTIVE,
        "reject": CallState.ENDED,
        "hangup": CallState.ENDED,
    },
    CallState.ACTIVE: {"refer": CallState.ENDED, "hangup": CallState.ENDED},
    CallState.ENDED: {},
}
VERBS = frozenset(verb for moves in MOVES.values() for verb in moves)


@attrs.frozen
class HttpAnswer:
    """An HTTP answer: status and JSON body (empty for an empty body)."""

    status: int
    body: str = ""


def _error(status: int, message: str, code: str | None, param: str | None = None) -> HttpAnswer:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return HttpAnswer(status, json.dumps({"error": error}))


def call_not_found() -> HttpAnswer:
    return _error(404, "No session found for the provided call_id", "call_id_not_found")


@attrs.define(eq=False)
class CallModel:
    """One call's state and what each REST verb did to it."""

    call_id: str
    sip_headers: tuple[tuple[str, str], ...]
    created_at: int
    state: CallState = CallState.RINGING
    #: The session configuration an accept gave (GA shape), once accepted.
    session: rules.SessionState | None = None
    #: How it ended: "rejected", "referred" or "hung_up".
    ended_by: str | None = None
    reject_status_code: int | None = None
    refer_target_uri: str | None = None

    def webhook(self, event_id: str) -> dict[str, Any]:
        """The ``realtime.call.incoming`` webhook event the service sends for this call."""
        return {
            "id": event_id,
            "object": "event",
            "created_at": self.created_at,
            "type": "realtime.call.incoming",
            "data": {
                "call_id": self.call_id,
                "sip_headers": [{"name": n, "value": v} for n, v in self.sip_headers],
            },
        }

    def control(self, verb: str, body: Any, *, ids: IdFactory, model: str) -> HttpAnswer:
        """Apply one REST verb with its (parsed JSON) body."""
        if self.state is CallState.ENDED:
            return call_not_found()
        next_state = MOVES[self.state].get(verb)
        if next_state is None:
            return _error(400, f"Cannot {verb} a call that is {self.state.value}.", None, "call_id")
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            return _error(400, "The body must be a JSON object.", "invalid_type")
        refusal: HttpAnswer | None
        if verb == "accept":
            refusal = self._accept(body, ids=ids, model=model)
        elif verb == "reject":
            refusal = self._reject(body)
        elif verb == "refer":
            refusal = self._refer(body)
        else:
            refusal = self._hangup(body)
        if refusal is not None:
            return refusal
        self.state = next_state
        return HttpAnswer(200)

    def _accept(self, body: Mapping[str, Any], *, ids: IdFactory, model: str) -> HttpAnswer | None:
        value = rules.ConnectionModel.new(
            "ga", ids=ids, model=str(body.get("model") or model), expires_at=self.created_at + 3600
        ).session.value
        value["audio"]["input"]["format"] = dict(SIP_AUDIO)
        value["audio"]["output"]["format"] = dict(SIP_AUDIO)
        session = rules.SessionState("ga", value)
        if "type" not in body:
            return _rejected(rules.missing_parameter("session.type"))
        refusal = session.update(
            {k: v for k, v in body.items() if k != "model"}, assistant_audio_present=False
        )
        if refusal is not None:
            return _rejected(refusal)
        self.session = session
        return None

    def _reject(self, body: Mapping[str, Any]) -> HttpAnswer | None:
        unknown = sorted(set(body) - {"status_code"})
        if unknown:
            return _rejected(rules.unknown_parameter(unknown[0]))
        status = body.get("status_code", DEFAULT_REJECT_STATUS)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 699:
            return _error(
                400, f"Invalid 'status_code': {status!r}.", "invalid_value", "status_code"
            )
        self.reject_status_code = status
        self.ended_by = "rejected"
        return None

    def _refer(self, body: Mapping[str, Any]) -> HttpAnswer | None:
        unknown = sorted(set(body) - {"target_uri"})
        if unknown:
            return _rejected(rules.unknown_parameter(unknown[0]))
        target = body.get("target_uri")
        if target is None:
            return _rejected(rules.missing_parameter("target_uri"))
        if not isinstance(target, str) or not target.startswith(("tel:", "sip:", "sips:")):
            return _error(400, f"Invalid 'target_uri': {target!r}.", "invalid_value", "target_uri")
        self.refer_target_uri = target
        self.ended_by = "referred"
        return None

    def _hangup(self, body: Mapping[str, Any]) -> HttpAnswer | None:
        self.ended_by = "hung_up"
        return None


def _rejected(rejection: rules.Rejection) -> HttpAnswer:
    return _error(400, rejection.message, rejection.code, rejection.param)


def new_call(ids: IdFactory, sip_headers: tuple[tuple[str, str], ...]) -> CallModel:
    return CallModel(ids.new("rtc"), sip_headers, int(time.time()))


def parse_control(path: str) -> tuple[str, str] | None:
    """``(call_id, verb)`` of a call-control path, or None if ``path`` is not one."""
    bare = urlsplit(path).path
    for prefix in CALL_PREFIXES:
        if bare.startswith(prefix):
            call_id, _, verb = bare[len(prefix) :].partition("/")
            if call_id and verb:
                return call_id, verb
    return None


def sideband_call_id(path: str) -> str | None:
    """The ``call_id`` a WebSocket request asks to attach to (None: not a sideband)."""
    parts = urlsplit(path)
    if parts.path.rstrip("/") not in SIDEBAND_PATHS:
        return None
    values = parse_qs(parts.query).get("call_id")
    return values[0] if values else None


def check_dialect(dialect: Dialect) -> None:
    if dialect != "ga":
        raise ValueError("calls exist in the GA protocol only")


class _Waiter(Protocol):
    async def wait_until(self, predicate: Callable[[], bool]) -> None: ...


@attrs.define(eq=False)
class FakeCall:
    """A call the fake server holds; made by ``FakeRealtimeServer.incoming_call()``.

    Once accepted the call has a session (``connection``) that outlives any sideband: a
    sideband closed (``close()`` on it, or ``Behavior.close_sidebands_after``) leaves the call
    and its conversation as they are, and a new sideband attaches to the same conversation.
    Hanging up (or referring) ends the session and closes every sideband (code 1000).

    ``webhook`` is the ``realtime.call.incoming`` event the service would send the application
    (hand it to your webhook handler). ``state`` is ``"ringing"``, ``"active"`` or ``"ended"``;
    ``ended_by`` says how it ended (``"rejected"``, ``"referred"``, ``"hung_up"``), with
    ``reject_status_code`` / ``refer_target_uri``. ``session`` is the configuration the accept
    gave (None before). ``sidebands`` lists the WebSocket connections attached to it, in order.
    """

    _model: CallModel
    _waiter: _Waiter
    webhook: dict[str, Any]
    sidebands: list[Any] = attrs.field(factory=list, init=False)
    #: The call's session once accepted (a ``FakeConnection`` without a WebSocket): its
    #: ``start_response()`` plays the caller's voice activity, ``send_client_event()`` a
    #: second controller (a browser's data channel), ``received`` every controller's events.
    connection: Any = attrs.field(default=None, init=False)
    #: Every REST request for this call, in order: (verb, JSON body, HTTP status answered).
    requests: list[tuple[str, Any, int]] = attrs.field(factory=list, init=False)

    @property
    def call_id(self) -> str:
        return self._model.call_id

    @property
    def state(self) -> str:
        return self._model.state.value

    @property
    def ended_by(self) -> str | None:
        return self._model.ended_by

    @property
    def reject_status_code(self) -> int | None:
        return self._model.reject_status_code

    @property
    def refer_target_uri(self) -> str | None:
        return self._model.refer_target_uri

    @property
    def session(self) -> dict[str, Any] | None:
        session = self._model.session
        return None if session is None else session.value

    async def wait_state(self, state: str) -> None:
        """Wait until the call is in ``state`` (``"active"``, ``"ended"``). Cancel-safe."""
        wanted = CallState(state)
        await self._waiter.wait_until(lambda: self._model.state is wanted)

    async def wait_sidebands(self, count: int = 1) -> None:
        """Wait until at least ``count`` sidebands are attached and open. Cancel-safe."""
        await self._waiter.wait_until(lambda: sum(1 for s in self.sidebands if s.is_open) >= count)
