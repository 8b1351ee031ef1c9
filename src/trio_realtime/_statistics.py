"""What a session reports of itself: frozen snapshots, as trio's ``statistics()`` are."""

from __future__ import annotations

import attrs

__all__ = ["STATUS_COUNTS", "GateStatistics", "SessionStatistics"]


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
class SessionStatistics(GateStatistics):
    """A snapshot of a session: the gate's figures, plus the reader's."""

    #: Frames skipped as malformed.
    malformed_frames: int
    subscribers: int
