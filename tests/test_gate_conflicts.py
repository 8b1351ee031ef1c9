"""Rules 4 and 7 as amended by issue 13 ("Every input answered"): the two conflict paths.

- Rule 4: a conflict proves that something runs. An old-shape conflict (code null, naming no
  response) is retried at once only when an in-band response is known to have ended since the
  request last waited; otherwise the slot is held for an unnamed response until the next
  in-band ``response.created`` -> ``response.done``, or the deadline.
- Rule 7: a late ``response.created`` of a request given up on is cancelled by id, whatever
  was sent before (a cancel answered ``response_cancel_not_active`` cancelled nothing).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from gate_helpers import Driver, conflict, created, done, error
from memory import connected
from trio_realtime import ResponseTimeout, SessionConfig, TicketState
from trio_realtime._gate import SlotState

NOT_ACTIVE = "Cancellation failed: no active response found"


# Rule 4: an old-shape conflict before the blocker's response.created ----------------------


@pytest.mark.parametrize("echo", [True, False])
def test_rule_4_blind_conflict_before_the_blockers_created_waits_for_it(echo: bool) -> None:
    d = Driver()
    mine = d.submit()
    # Voice activity started a response just as our create arrived; its created comes later.
    d.feed(conflict(mine.event_id if echo else None, legacy=True))
    assert mine.state is TicketState.QUEUED  # not sent again into the same blocker
    assert len(d.creates()) == 1
    assert d.gate.slot.state is SlotState.HELD_UNNAMED
    d.feed(created("resp_vad"))  # there it is
    assert len(d.creates()) == 1
    assert d.gate.slot_holder == "resp_vad"
    d.feed(done("resp_vad"))
    assert mine.state is TicketState.SENT
    assert mine.attempts == 2


def test_rule_4_blind_conflict_waits_for_the_deadline_when_nothing_shows() -> None:
    d = Driver(response_timeout=30.0, cancel_grace=5.0)
    mine = d.submit()
    d.feed(conflict(None, legacy=True))
    d.advance(29.9)
    assert mine.state is TicketState.QUEUED
    d.advance(0.2)  # silent: cancelled (without an id: it has none)
    [cancel] = d.cancels()
    assert "response_id" not in cancel
    d.advance(5.1)  # no done: force-released, and the request goes out again
    assert mine.state is TicketState.SENT
    assert mine.attempts == 2


def test_rule_4_blind_conflict_after_an_end_while_in_flight_is_retried_at_once() -> None:
    d = Driver()
    mine = d.submit()
    d.feed(created("resp_vad"))  # overtook ours
    d.feed(done("resp_vad"))  # ... and ended: the server may not have freed it yet
    d.feed(conflict(None, legacy=True))
    assert mine.state is TicketState.SENT
    assert mine.attempts == 2


def test_rule_4_out_of_band_end_does_not_count_as_the_blockers() -> None:
    d = Driver()
    mine = d.submit()
    d.feed(created("resp_oob", conversation_id=None))
    d.feed(done("resp_oob", conversation_id=None))
    d.feed(conflict(None, legacy=True))
    assert mine.state is TicketState.QUEUED
    assert len(d.creates()) == 1


async def test_rule_4_blind_conflict_before_the_blockers_created_over_a_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with connected() as (session, peer, _):
            ticket = session.request_response()
            create = await peer.expect("response.create")
            await peer.send(error(None, "Conversation already has an active response", None))
            await peer.send(created("resp_vad"))
            await trio.testing.wait_all_tasks_blocked()
            assert peer.unread() == []  # no second create into the same blocker
            assert ticket.state is TicketState.QUEUED
            await peer.send(done("resp_vad"))
            retry = await peer.expect("response.create")
            assert retry["event_id"] == ticket.event_id
            await peer.complete(create, "resp_1")
            assert (await ticket.wait_done()).status == "completed"
            assert session.statistics().conflicts_absorbed == 1


# Rule 7: a late response.created is cancelled by id, whatever was sent before --------------


def test_rule_7_late_created_is_cancelled_after_a_refused_cancel_of_the_named_blocker() -> None:
    d = Driver(created_timeout=10.0, response_timeout=30.0, cancel_grace=5.0)
    late = d.submit()
    d.advance(10.1)  # no response.created: late fails, its create still on the wire
    assert isinstance(late.error, ResponseTimeout)
    mine = d.submit()
    d.feed(conflict(mine.event_id, "resp_late"))  # names late's response, not yet created
    d.advance(30.1)  # silent: cancelled by id ...
    [refused] = d.cancels()
    assert refused["response_id"] == "resp_late"
    # ... which the server cannot honour yet.
    d.feed(error("response_cancel_not_active", NOT_ACTIVE, refused["event_id"]))
    d.feed(created("resp_late", late.event_id))  # and then it starts it anyway
    assert [c["response_id"] for c in d.cancels()] == ["resp_late", "resp_late"]
    d.feed(done("resp_late", late.event_id, status="cancelled"))
    assert mine.state is TicketState.SENT


def test_rule_7_late_created_of_a_cancelled_blocker_is_cancelled_by_id() -> None:
    d = Driver()
    mine = d.submit()
    d.feed(conflict(mine.event_id, "resp_vad"))  # named before its response.created
    d.gate.cancel_active(now=d.now)  # the application interrupts it ...
    d.pump()
    [refused] = d.cancels()
    d.feed(error("response_cancel_not_active", NOT_ACTIVE, refused["event_id"]))
    d.feed(created("resp_vad"))  # ... it had not started yet: it is cancelled now
    assert [c.get("response_id") for c in d.cancels()] == ["resp_vad", "resp_vad"]


async def test_rule_7_late_created_after_a_refused_cancel_over_a_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SessionConfig(created_timeout=10, response_timeout=30, cancel_grace=5)
    with trio.fail_after(120):
        async with connected(config) as (session, peer, _):
            late = session.request_response()
            late_create = await peer.expect("response.create")
            with pytest.raises(ResponseTimeout):
                await late.wait_done()
            ticket = session.request_response()
            create = await peer.expect("response.create")
            conflict_error = conflict(create["event_id"], "resp_late")
            await peer.send(conflict_error)
            cancel = await peer.expect("response.cancel")  # after response_timeout
            assert cancel["response_id"] == "resp_late"
            await peer.send(error("response_cancel_not_active", NOT_ACTIVE, cancel["event_id"]))
            await peer.created(late_create, "resp_late")
            second = await peer.expect("response.cancel")
            assert second["response_id"] == "resp_late"
            await peer.done(late_create, "resp_late", status="cancelled")
            retry = await peer.expect("response.create")
            assert retry["event_id"] == ticket.event_id
            await peer.complete(create, "resp_1")
            assert (await ticket.wait_done()).status == "completed"
