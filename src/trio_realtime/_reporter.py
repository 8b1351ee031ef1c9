"""Where ``SessionConfig.on_response`` runs: a reporter task of the session's own.

The session hands each ended ticket to :meth:`Reporter.report`, which never blocks: the ticket
goes into a bounded channel (``BUFFER`` tickets), and :meth:`Reporter.run`, a task of the
session's nursery, calls the callback with each, in order. So the callback runs neither in
the reader (it cannot stall it, and what it raises cannot kill it) nor in the application's
task (a ticket cancelled or failed there is reported here too). What it raises is logged and
ignored; when it falls ``BUFFER`` tickets behind, further tickets are dropped, counted and
logged. When the session ends, the tickets still waiting are reported before the task ends
(within ``close_timeout``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._ticket import ResponseTicket

__all__ = ["Reporter"]

logger = logging.getLogger(__name__)

#: Ended tickets waiting for the callback; more are dropped.
BUFFER = 1024


class Reporter:
    """Feeds ``callback`` (None: nothing to do) from a bounded channel, in a task of its own."""

    def __init__(self, callback: Callable[[ResponseTicket], object] | None) -> None:
        self._callback = callback
        self._send, self._receive = trio.open_memory_channel["ResponseTicket"](BUFFER)
        #: Tickets not reported because the callback was too far behind.
        self.dropped = 0
        self._done = trio.Event()

    def report(self, ticket: ResponseTicket) -> None:
        """Hand on an ended ticket; never blocks."""
        if self._callback is None:
            return
        try:
            self._send.send_nowait(ticket)
        except trio.WouldBlock:
            self.dropped += 1
            logger.warning(
                "on_response is %d tickets behind: ticket %s not reported (%d dropped)",
                BUFFER,
                ticket.event_id,
                self.dropped,
            )
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the session has ended

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Call the callback with each ticket until :meth:`close`, then with what is left."""
        callback = self._callback
        try:
            with self._receive:
                task_status.started()
                async for ticket in self._receive:
                    if callback is None:
                        continue
                    try:
                        callback(ticket)
                    except Exception:
                        logger.exception("on_response raised; ignored")
        finally:
            self._done.set()

    def close(self) -> None:
        """No more tickets: :meth:`run` reports what is left, then ends."""
        self._send.close()

    async def wait_done(self) -> None:
        """Wait until :meth:`run` has reported every ticket and ended."""
        await self._done.wait()
