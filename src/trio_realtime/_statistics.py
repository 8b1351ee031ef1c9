"""What a session reports of itself: frozen snapshots, as trio's ``statistics()`` are."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import attrs

__all__ = [
    "STATUS_COUNTS",
    "GateStatistics",
    "Latencies",
    "LatencyRecorder",
    "LatencySummary",
    "SessionStatistics",
    "TicketTimings",
]

#: How many of the latest samples each latency summary is computed over.
SAMPLES = 1024


@attrs.frozen
class GateStatistics:
    """A snapshot of the gate. Counts are of our own requests unless noted."""

    #: Requests waiting for the slot (or for their turn's function results).
    queue_depth: int
    #: Requests whose ``response.create`` is sent and not yet created.
    in_flight: int
    #: The in-band response holding the slot, ours or server-started, if known.
    active_response_id: str | None
    slot_busy: bool
    #: ``response.create`` events sent (a retried request counts once per attempt).
    sent: int
    #: Requests that ended ``DONE`` with status ``completed``.
    completed: int
    #: Requests that ended ``DONE`` with status ``cancelled`` (before sending included).
    cancelled: int
    #: Requests that ended ``DONE`` with status ``incomplete``.
    incomplete: int
    #: Requests that ended ``DONE`` with status ``failed`` (the server's own failure).
    failed_by_server: int
    #: Requests that ended ``FAILED``: rejected, timed out, or the session ended first.
    failed: int
    #: Of those, requests the server rejected (other than the absorbed conflict).
    rejected: int
    #: Of those, requests that timed out (no ``response.created``, or no ``response.done``
    #: after a cancel).
    timed_out: int
    #: ``conversation_already_has_active_response`` rejections absorbed and retried.
    conflicts_absorbed: int
    #: In-band responses the server started by itself.
    server_started: int
    #: Slots force-released after a cancel got no ``response.done``.
    forced_releases: int

    @classmethod
    def counts(cls) -> tuple[str, ...]:
        """The fields that are running counts (the rest describe the present)."""
        present = ("queue_depth", "in_flight", "active_response_id", "slot_busy")
        return tuple(name for name in attrs.fields_dict(cls) if name not in present)


#: The count a ``DONE`` request adds to, by its response's final status.
STATUS_COUNTS = {
    "completed": "completed",
    "cancelled": "cancelled",
    "incomplete": "incomplete",
    "failed": "failed_by_server",
}


@attrs.frozen
class TicketTimings:
    """When a request moved, in ``trio.current_time()`` seconds; None where it has not yet."""

    queued_at: float
    #: When its (last) ``response.create`` was handed to the writer.
    sent_at: float | None
    created_at: float | None
    #: When its response's first output delta (text, audio, transcript) arrived.
    first_output_at: float | None
    finished_at: float | None
    #: How many times its ``response.create`` was sent (conflicts make it more than one).
    attempts: int
    #: When its cancellation was asked for, if it was.
    cancel_requested_at: float | None = None

    @property
    def queue_wait(self) -> float | None:
        """Time from the request to its (last) ``response.create``: the library's part."""
        return _between(self.queued_at, self.sent_at)

    @property
    def time_to_created(self) -> float | None:
        """Time from its (last) ``response.create`` to ``response.created``."""
        return _between(self.sent_at, self.created_at)

    @property
    def time_to_first_output(self) -> float | None:
        """Time from its (last) ``response.create`` to the first output delta (first token,
        first audio)."""
        return _between(self.sent_at, self.first_output_at)

    @property
    def time_to_done(self) -> float | None:
        """Time from its (last) ``response.create`` to its end (``response.done``)."""
        return _between(self.sent_at, self.finished_at) if self.created_at is not None else None

    @property
    def cancel_latency(self) -> float | None:
        """Time from asking to cancel it, once sent, to its end."""
        if self.sent_at is None or self.created_at is None:
            return None
        return _between(self.cancel_requested_at, self.finished_at)


def _between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


@attrs.frozen
class LatencySummary:
    """A latency, in seconds, over the latest samples (at most 1,024): None when none."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, samples: Iterable[float]) -> LatencySummary:
        ordered = sorted(samples)
        if not ordered:
            return cls(0, None, None, None, None)

        def rank(q: float) -> float:  # nearest rank
            return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]

        return cls(len(ordered), rank(50), rank(90), rank(99), ordered[-1])


@attrs.frozen
class Latencies:
    """The session's latency summaries; see :class:`~trio_realtime.TicketTimings`."""

    #: Request to its (last) ``response.create``: the time spent waiting for the slot.
    queue_wait: LatencySummary
    #: ``response.create`` to ``response.created``.
    time_to_created: LatencySummary
    #: ``response.create`` to the first output delta: time to first token / first audio.
    time_to_first_output: LatencySummary
    #: ``response.create`` to ``response.done``.
    time_to_done: LatencySummary
    #: Asking to cancel a response (``ticket.cancel()`` once sent, or ``cancel_response()``)
    #: to its end.
    cancel_latency: LatencySummary


class LatencyRecorder:
    """Keeps the latest samples of each latency."""

    def __init__(self, size: int = SAMPLES) -> None:
        self._size = size
        self._samples: dict[str, deque[float]] = {}  # made on the first sample (memory)

    def add(self, name: str, value: float | None) -> None:
        if value is not None:
            samples = self._samples.get(name)
            if samples is None:
                samples = self._samples[name] = deque(maxlen=self._size)
            samples.append(value)

    def record(self, timings: TicketTimings) -> None:
        """A ticket's latencies, those it has."""
        for name in ("queue_wait", "time_to_created", "time_to_first_output", "time_to_done"):
            self.add(name, getattr(timings, name))
        if timings.cancel_requested_at is not None:
            self.add("cancel_latency", timings.cancel_latency)

    def summary(self) -> Latencies:
        return Latencies(
            **{
                name: LatencySummary.of(self._samples.get(name, ()))
                for name in attrs.fields_dict(Latencies)
            }
        )


@attrs.frozen
class SessionStatistics(GateStatistics):
    """A snapshot of a session: the gate's figures, plus the reader's and the latencies."""

    #: Frames skipped as malformed.
    malformed_frames: int
    subscribers: int
    latency: Latencies
    #: Connections opened (the first one included).
    connections: int
    #: New connections after an unexpected loss (``SessionConfig.reconnect``).
    reconnects: int
    #: Planned moves to a new connection (``SessionConfig.rollover_after``).
    rollovers: int
    #: Conversation items replayed into new connections.
    replayed_items: int
