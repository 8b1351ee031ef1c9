"""Rule 9: a flood of ``response.created`` without ``response.done`` (issue 18 item 5).

What the gate holds, the work each event costs and the cancels a hostile server can provoke stay
bounded, whatever the number of responses the server claims to run. No timings: the bounds are
counted (responses held, deadline entries kept, cancels sent).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from gate_helpers import Driver, created, done
from memory import connected
from trio_realtime import SessionConfig, TicketState

FLOOD = 5_000
#: At most this many server-started out-of-band responses are remembered.
MEMORY = 256


def flood(d: Driver, count: int, *, in_band: bool, start: int = 0) -> int:
    """Inject ``count`` server-started responses that never end; the most deadline entries
    the gate kept at any point."""
    most = 0
    for i in range(start, start + count):
        d.now += 0.001
        d.feed(created(f"resp_{i}", conversation_id="conv_1" if in_band else None))
        most = max(most, len(d.gate._deadlines))
    return most


@pytest.mark.parametrize("in_band", [True, False])
def test_rule_9_a_flood_of_created_keeps_memory_and_work_bounded(in_band: bool) -> None:
    d = Driver(response_timeout=30.0, cancel_grace=5.0)
    entries = flood(d, FLOOD, in_band=in_band)
    held = len(d.gate.active_response_ids())
    # In-band: each new one proves the one before ended (rule 3). Out-of-band: the oldest
    # are forgotten.
    assert held == (1 if in_band else MEMORY)
    # Deadline entries: each event's work is a heap operation over what is held, not FLOOD.
    assert entries <= 3 * MEMORY
    d.advance(31.0)  # everything held is silent: cancelled
    d.advance(6.0)  # and force-released
    assert len(d.cancels()) == held
    assert d.gate.active_response_ids() == []
    assert d.gate.slot_holder is None


def test_rule_9_a_flood_does_not_delay_or_cancel_our_request() -> None:
    d = Driver(response_timeout=30.0, cancel_grace=5.0)
    flood(d, 100, in_band=False)
    mine = d.submit()
    assert mine.state is TicketState.SENT
    flood(d, FLOOD, in_band=False, start=100)
    d.feed(created("resp_mine", mine.event_id))
    flood(d, FLOOD, in_band=False, start=100 + FLOOD)
    assert "resp_mine" in d.gate.active_response_ids()  # ours is never forgotten
    d.feed(done("resp_mine", mine.event_id))
    assert mine.state is TicketState.DONE
    assert [c.get("response_id") for c in d.cancels()] == []


def test_rule_9_late_created_of_one_request_is_cancelled_once() -> None:
    d = Driver(created_timeout=10.0)
    late = d.submit()
    d.advance(10.1)  # given up: a late created is cancelled (rule 7) ...
    for i in range(50):  # ... but a server cannot make one request cost many cancels
        d.feed(created(f"resp_late_{i}", late.event_id, conversation_id=None))
    assert [c["response_id"] for c in d.cancels()] == ["resp_late_0"]


async def test_rule_9_a_flood_over_a_session_provokes_boundedly_many_cancels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SessionConfig(response_timeout=30, cancel_grace=5)
    with trio.fail_after(300):
        async with connected(config) as (session, peer, _):
            for i in range(2 * MEMORY + 100):
                await peer.send(created(f"resp_{i}", conversation_id=None))
            for i in range(100):
                await peer.send(created(f"resp_in_band_{i}"))
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(40)  # every deadline passed: cancelled, then given up
            cancels = [e for e in peer.unread() if e["type"] == "response.cancel"]
            # The remembered out-of-band ones, and the one in-band response still holding
            # the slot (each newer one ended the one before).
            assert len(cancels) == MEMORY + 1
            ticket = session.request_response()
            create = await peer.expect("response.create")
            await peer.complete(create, "resp_mine")
            assert (await ticket.wait_done()).status == "completed"
