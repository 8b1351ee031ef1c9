"""Builders of server events and a small driver for testing the gate without sockets."""

from __future__ import annotations

from typing import Any

from trio_realtime._events import METADATA_KEY
from trio_realtime._gate import Gate, Request
from trio_realtime._request_body import response_body

Event = dict[str, Any]


def created(rid: str, key: str | None = None, *, conversation_id: str | None = "conv_1") -> Event:
    response: Event = {"id": rid, "object": "realtime.response", "status": "in_progress"}
    response["metadata"] = {METADATA_KEY: key} if key is not None else None
    response["conversation_id"] = conversation_id
    return {"type": "response.created", "event_id": f"ev_c_{rid}", "response": response}


def done(
    rid: str,
    key: str | None = None,
    *,
    status: str = "completed",
    conversation_id: str | None = "conv_1",
    output: list[Event] | None = None,
) -> Event:
    response: Event = {
        "id": rid,
        "object": "realtime.response",
        "status": status,
        "metadata": {METADATA_KEY: key} if key is not None else None,
        "conversation_id": conversation_id,
        "output": output or [],
    }
    return {"type": "response.done", "event_id": f"ev_d_{rid}", "response": response}


def delta(rid: str) -> Event:
    return {"type": "response.output_text.delta", "response_id": rid, "delta": "x"}


def error(code: str | None, message: str, event_id: str | None) -> Event:
    return {
        "type": "error",
        "event_id": "ev_err",
        "error": {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": None,
            "event_id": event_id,
        },
    }


def conflict(
    event_id: str | None, blocking: str | None = "resp_X", *, legacy: bool = False
) -> Event:
    if legacy:
        return error(None, "Conversation already has an active response", event_id)
    message = (
        f"Conversation already has an active response in progress: {blocking}. "
        "Wait until the response is finished before creating a new one."
    )
    return error("conversation_already_has_active_response", message, event_id)


class Driver:
    """A gate plus a clock; collects what the gate sends."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("created_timeout", 10.0)
        options.setdefault("response_timeout", 30.0)
        options.setdefault("cancel_grace", 5.0)
        self.gate: Gate[None] = Gate(**options)
        self.now = 0.0
        self.sent: list[Event] = []
        self.ended: list[str] = []

    def submit(self, body: Event | None = None, priority: int = 0, **kw: Any) -> Request[None]:
        kw.setdefault("owner", lambda request: None)
        checked = response_body(body, priority)  # where the session's request path checks it
        request = self.gate.submit(checked, priority=priority, now=self.now, **kw)
        self.pump()
        return request

    def collect(self) -> list[Event]:
        effects = self.gate.take_effects()
        if effects is None:
            return []
        self.sent.extend(effects.send)
        self.ended.extend(rid for rid, _ in effects.ended)
        return effects.send

    def pump(self) -> list[Event]:
        """What the session does after an input: the deadlines, then the queue."""
        new = self.collect()
        self.gate.tick(now=self.now)
        self.gate.pump(now=self.now)
        return new + self.collect()

    def feed(self, event: Event) -> list[Event]:
        self.gate.receive_event(event, now=self.now)
        return self.pump()

    def advance(self, seconds: float) -> list[Event]:
        self.now += seconds
        return self.pump()

    def creates(self) -> list[Event]:
        return [e for e in self.sent if e["type"] == "response.create"]

    def cancels(self) -> list[Event]:
        return [e for e in self.sent if e["type"] == "response.cancel"]
