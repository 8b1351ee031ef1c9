"""The dispatcher's rules, tested on the bare state machine: no sockets, no Trio, no clock."""

from __future__ import annotations

import logging
import re

import pytest

from gate_helpers import Driver, conflict, created, delta, done, error
from trio_realtime import QueueFull, ResponseRejected, ResponseTimeout, TicketState
from trio_realtime._events import METADATA_KEY

# Rule 1: correlation -----------------------------------------------------------------------------


def test_each_create_carries_a_unique_event_id_echoed_in_metadata() -> None:
    d = Driver()
    first = d.submit({"instructions": "a", "metadata": {"topic": "x"}})
    second = d.submit()
    [create] = d.creates()  # the second waits for the slot
    assert create["event_id"] == first.event_id
    assert create["response"]["metadata"] == {"topic": "x", METADATA_KEY: first.event_id}
    assert create["response"]["instructions"] == "a"
    d.feed(created("resp_1", first.event_id))
    d.feed(done("resp_1", first.event_id))
    assert d.creates()[1]["event_id"] == second.event_id != first.event_id


def test_created_is_matched_by_metadata_not_by_order() -> None:
    d = Driver()
    mine = d.submit()
    d.feed(created("resp_vad"))  # a server-started response arrives first
    assert mine.state is TicketState.SENT
    d.feed(created("resp_mine", mine.event_id))
    assert mine.state is TicketState.ACTIVE
    assert mine.response_id == "resp_mine"


def test_error_is_matched_by_its_event_id() -> None:
    d = Driver()
    oob = d.submit({"conversation": "none"})
    inband = d.submit()
    d.feed(error("invalid_value", "bad voice", oob.event_id))
    assert oob.state is TicketState.FAILED
    assert isinstance(oob.error, ResponseRejected)
    assert oob.error.code == "invalid_value"
    assert inband.state is TicketState.SENT


def test_conflict_without_event_id_falls_back_to_the_request_in_flight() -> None:
    d = Driver()
    mine = d.submit()
    d.feed(conflict(None, "resp_X"))
    assert mine.state is TicketState.QUEUED
    assert d.gate.statistics().conflicts_absorbed == 1


# Rule 3: the slot, and server-started responses --------------------------------------------------


def test_server_started_response_holds_the_slot_until_its_done() -> None:
    d = Driver()
    d.feed(created("resp_vad"))
    assert d.gate.slot_holder == "resp_vad"
    request = d.submit()
    assert request.state is TicketState.QUEUED
    assert d.creates() == []
    d.feed(delta("resp_vad"))
    assert d.creates() == []
    d.feed(done("resp_vad"))
    assert request.state is TicketState.SENT
    assert d.gate.statistics().server_started == 1


def test_out_of_band_server_response_does_not_take_the_slot() -> None:
    d = Driver()
    d.feed(created("resp_oob", conversation_id=None))
    assert d.gate.slot_holder is None
    request = d.submit()
    assert request.state is TicketState.SENT


# Rule 4: conflicts -------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("echo_id", [True, False])
def test_conflict_requeues_at_head_and_retries_after_the_blocker(
    legacy: bool, echo_id: bool
) -> None:
    d = Driver()
    mine = d.submit(priority=0)
    later = d.submit(priority=5)  # higher priority, but the rejected one goes first
    d.feed(conflict(mine.event_id if echo_id else None, "resp_X", legacy=legacy))
    if legacy:
        # Naming nothing while nothing is known to run, and nothing ended since it was
        # queued: the blocker has not shown itself yet, so it waits for an in-band done
        # (rule 4 as amended by issue 13; it used to be retried at once into the blocker).
        assert d.gate.slot_holder == "?"
    first_attempts = mine.attempts
    assert mine.state is TicketState.QUEUED
    assert mine.error is None
    assert len(d.creates()) == first_attempts  # nothing sent while the blocker runs
    d.feed(done("resp_X"))
    assert [c["event_id"] for c in d.creates()] == [mine.event_id] * (first_attempts + 1)
    assert mine.state is TicketState.SENT
    assert mine.attempts == first_attempts + 1
    d.feed(created("resp_2", mine.event_id))
    d.feed(done("resp_2", mine.event_id))
    assert mine.state is TicketState.DONE
    assert d.creates()[-1]["event_id"] == later.event_id


def test_conflict_retries_at_once_when_the_blocker_already_finished() -> None:
    d = Driver()
    d.feed(created("resp_X"))
    mine = d.submit()
    d.feed(done("resp_X"))  # mine is sent now, while the server still ...
    assert mine.state is TicketState.SENT
    d.feed(conflict(mine.event_id, "resp_X"))  # ... says resp_X is in the way
    assert mine.state is TicketState.SENT
    assert mine.attempts == 2


def test_conflict_when_a_server_response_races_the_request() -> None:
    d = Driver()
    mine = d.submit()
    d.feed(created("resp_vad"))  # VAD started a response just before ours arrived
    d.feed(conflict(mine.event_id, "resp_vad"))
    assert mine.state is TicketState.QUEUED
    assert len(d.creates()) == 1
    d.feed(done("resp_vad"))
    assert mine.state is TicketState.SENT


def test_conflict_naming_an_unseen_response_waits_for_its_done() -> None:
    d = Driver()
    mine = d.submit()
    d.feed(conflict(mine.event_id, "resp_unseen"))
    d.feed(done("resp_other", conversation_id=None))  # out-of-band: not the blocker
    assert mine.state is TicketState.QUEUED
    d.feed(done("resp_unseen"))
    assert mine.state is TicketState.SENT


def test_legacy_conflict_without_a_response_id_waits_for_any_in_band_done() -> None:
    d = Driver()
    mine = d.submit()
    d.feed(conflict(mine.event_id, legacy=True))  # nothing known to run, nor to have ended
    d.feed(conflict(mine.event_id, legacy=True))  # a stale echo: changes nothing
    assert d.gate.slot_holder == "?"
    d.feed(done("resp_whatever"))
    assert mine.state is TicketState.SENT


def test_other_errors_fail_the_ticket_and_free_the_slot() -> None:
    d = Driver()
    bad = d.submit()
    good = d.submit()
    d.feed(error("invalid_value", "Invalid modalities", bad.event_id))
    assert bad.state is TicketState.FAILED
    assert isinstance(bad.error, ResponseRejected)
    assert bad.error.message == "Invalid modalities"
    assert good.state is TicketState.SENT


def test_errors_of_other_client_events_are_ignored() -> None:
    d = Driver()
    mine = d.submit()
    d.gate.client_event_sent({"type": "session.update", "event_id": "evt_app"}, now=d.now)
    d.feed(error("invalid_value", "bad session.update", "evt_someone_else"))
    d.feed(error("invalid_value", "no event id", None))  # mine's, or the session.update's
    assert mine.state is TicketState.SENT


# Rule 6: cancel ----------------------------------------------------------------------------------


def test_cancel_queued_ticket_is_never_sent() -> None:
    d = Driver()
    d.feed(created("resp_vad"))
    request = d.submit()
    d.gate.cancel(request, now=d.now)
    assert request.state is TicketState.DONE
    assert request.result is not None
    assert (request.result.status, request.result.response) == ("cancelled", None)
    d.feed(done("resp_vad"))
    assert d.creates() == []
    assert d.gate.statistics().queue_depth == 0


def test_cancel_before_created_is_sent_by_id_once_created() -> None:
    d = Driver()
    request = d.submit()
    d.gate.cancel(request, now=d.now)
    assert d.pump() == []  # a cancel now would be ignored by the server
    d.feed(created("resp_1", request.event_id))
    [cancel] = d.cancels()
    assert cancel["response_id"] == "resp_1"
    d.feed(done("resp_1", request.event_id, status="cancelled"))
    assert request.state is TicketState.DONE
    assert request.result is not None
    assert request.result.status == "cancelled"


def test_cancel_active_sends_cancel_with_its_id_once() -> None:
    d = Driver()
    request = d.submit()
    d.feed(created("resp_1", request.event_id))
    d.gate.cancel(request, now=d.now)
    d.gate.cancel(request, now=d.now)
    d.pump()
    assert [c["response_id"] for c in d.cancels()] == ["resp_1"]


def test_cancel_can_lose_the_race() -> None:
    d = Driver()
    request = d.submit()
    d.feed(created("resp_1", request.event_id))
    d.gate.cancel(request, now=d.now)
    d.feed(done("resp_1", request.event_id, status="completed"))
    d.feed(error("response_cancel_not_active", "no active response", d.cancels()[0]["event_id"]))
    assert request.result is not None
    assert request.result.status == "completed"


def test_cancel_of_a_request_rejected_by_conflict_is_not_retried() -> None:
    d = Driver()
    request = d.submit()
    d.gate.cancel(request, now=d.now)
    d.feed(conflict(request.event_id, "resp_X"))
    assert request.state is TicketState.DONE
    d.feed(done("resp_X"))
    assert len(d.creates()) == 1


def test_cancel_active_interrupts_a_server_started_response() -> None:
    d = Driver()
    d.feed(created("resp_vad"))
    target = d.gate.cancel_active(now=d.now)
    d.pump()
    assert [c.get("response_id") for c in d.cancels()] == ["resp_vad"]
    assert target is not None
    assert not d.gate.is_finished(target)
    d.feed(done("resp_vad", status="cancelled"))
    assert d.gate.is_finished(target)


def test_cancel_active_with_nothing_active() -> None:
    d = Driver()
    assert d.gate.cancel_active(now=d.now) is None
    assert d.pump() == []


def test_interrupt_cancels_every_running_response_by_id() -> None:
    # In-band (ours), out-of-band (ours), and the server's out-of-band one: all audible.
    d = Driver()
    mine = d.submit()
    d.feed(created("resp_1", mine.event_id))
    side = d.submit({"conversation": "none"})
    d.feed(created("resp_2", side.event_id, conversation_id=None))
    d.feed(created("resp_3", conversation_id=None))  # the server's out-of-band
    targets = d.gate.interrupt(now=d.now)
    d.pump()
    assert sorted(c["response_id"] for c in d.cancels()) == ["resp_1", "resp_2", "resp_3"]
    assert len(targets) == 3
    assert not any(d.gate.is_finished(t) for t in targets)
    for rid, key in (("resp_1", mine.event_id), ("resp_2", side.event_id), ("resp_3", None)):
        d.feed(done(rid, key, status="cancelled", conversation_id=None))
    assert all(d.gate.is_finished(t) for t in targets)


def test_interrupt_cancels_a_server_started_in_band_response_by_id() -> None:
    d = Driver()
    d.feed(created("resp_vad"))
    [target] = d.gate.interrupt(now=d.now)
    d.pump()
    assert [c.get("response_id") for c in d.cancels()] == ["resp_vad"]
    d.feed(done("resp_vad", status="cancelled"))
    assert d.gate.is_finished(target)


def test_interrupt_cancels_a_request_in_flight_once_created() -> None:
    d = Driver()
    side = d.submit({"conversation": "none"})
    mine = d.submit()
    targets = d.gate.interrupt(now=d.now)
    assert targets == [side, mine]
    assert d.pump() == []  # not created yet: a cancel by id is impossible
    d.feed(created("resp_1", mine.event_id))
    d.feed(created("resp_2", side.event_id, conversation_id=None))
    assert [c.get("response_id") for c in d.cancels()] == ["resp_1", "resp_2"]
    d.feed(done("resp_1", mine.event_id, status="cancelled"))
    d.feed(done("resp_2", side.event_id, status="cancelled", conversation_id=None))
    assert all(d.gate.is_finished(t) for t in targets)


def test_interrupt_leaves_queued_requests_queued_in_order() -> None:
    d = Driver()
    first = d.submit()
    d.feed(created("resp_1", first.event_id))
    second = d.submit()
    third = d.submit()
    targets = d.gate.interrupt(now=d.now)
    [target] = targets
    assert target.response_id == "resp_1"
    assert (second.state, third.state) == (TicketState.QUEUED, TicketState.QUEUED)
    assert not second.cancel_requested
    assert not third.cancel_requested
    d.feed(done("resp_1", first.event_id, status="cancelled"))
    assert [c["event_id"] for c in d.creates()] == [first.event_id, second.event_id]
    d.feed(created("resp_2", second.event_id))
    assert d.cancels()[-1]["response_id"] == "resp_1"  # second is not cancelled
    d.feed(done("resp_2", second.event_id))
    assert [c["event_id"] for c in d.creates()][-1] == third.event_id


def test_interrupt_cancels_a_blocker_known_only_from_a_conflict() -> None:
    d = Driver()
    request = d.submit()
    d.feed(conflict(request.event_id, legacy=True))  # something runs; no id known yet
    [target] = d.gate.interrupt(now=d.now)
    d.pump()
    [cancel] = d.cancels()
    assert "response_id" not in cancel  # the in-band cancel: the only one that reaches it
    assert request.state is TicketState.QUEUED  # queued again: untouched
    d.feed(done("resp_vad", status="cancelled"))  # the blocker shows its id as it ends
    assert d.gate.is_finished(target)


def test_interrupt_with_nothing_running_sends_nothing() -> None:
    d = Driver()
    d.feed(created("resp_1"))
    d.feed(done("resp_1"))
    assert d.gate.interrupt(now=d.now) == []
    assert d.pump() == []


# Rule 7: deadlines -------------------------------------------------------------------------------


def test_no_created_within_created_timeout_fails_and_frees_the_slot() -> None:
    d = Driver(created_timeout=10.0)
    stuck = d.submit()
    following = d.submit()
    d.advance(9.9)
    assert stuck.state is TicketState.SENT
    d.advance(0.2)
    assert stuck.state is TicketState.FAILED
    assert isinstance(stuck.error, ResponseTimeout)
    assert following.state is TicketState.SENT
    # The late created is cancelled by id, and holds the slot until its done.
    d.feed(created("resp_late", stuck.event_id))
    assert d.cancels()[-1]["response_id"] == "resp_late"
    d.feed(done("resp_late", stuck.event_id, status="cancelled"))
    assert stuck.state is TicketState.FAILED


def test_silent_response_is_cancelled_then_force_released() -> None:
    d = Driver(response_timeout=30.0, cancel_grace=5.0)
    stuck = d.submit()
    following = d.submit()
    d.feed(created("resp_1", stuck.event_id))
    d.advance(20)
    d.feed(delta("resp_1"))  # activity pushes the deadline
    d.advance(20)
    assert d.cancels() == []
    d.advance(10.5)
    assert [c["response_id"] for c in d.cancels()] == ["resp_1"]
    assert stuck.state is TicketState.ACTIVE
    d.advance(5.1)
    assert stuck.state is TicketState.FAILED
    assert isinstance(stuck.error, ResponseTimeout)
    assert following.state is TicketState.SENT
    assert d.gate.statistics().forced_releases == 1


def test_silent_server_started_response_is_recovered_too() -> None:
    d = Driver(response_timeout=30.0, cancel_grace=5.0)
    d.feed(created("resp_vad"))
    waiting = d.submit()
    d.advance(30.1)
    d.advance(5.1)
    assert waiting.state is TicketState.SENT


def test_cancel_that_gets_no_done_is_force_released_after_grace() -> None:
    d = Driver(cancel_grace=5.0)
    request = d.submit()
    d.feed(created("resp_1", request.event_id))
    d.gate.cancel(request, now=d.now)
    d.advance(5.1)
    assert request.state is TicketState.FAILED
    assert d.gate.slot_holder is None


def test_next_deadline() -> None:
    d = Driver(created_timeout=10.0, response_timeout=30.0)
    assert d.gate.next_deadline() == float("inf")
    request = d.submit()
    assert d.gate.next_deadline() == 10.0
    d.advance(1)
    d.feed(created("resp_1", request.event_id))
    assert d.gate.next_deadline() == 31.0


# Rule 8: out-of-band -----------------------------------------------------------------------------


def test_out_of_band_requests_skip_the_slot_by_default() -> None:
    d = Driver()
    inband = d.submit()
    oob = d.submit({"conversation": "none"})
    assert inband.state is TicketState.SENT
    assert oob.state is TicketState.SENT
    d.feed(created("resp_oob", oob.event_id, conversation_id=None))
    d.feed(done("resp_oob", oob.event_id, conversation_id=None))
    assert oob.state is TicketState.DONE
    assert d.gate.slot_holder is inband


def test_out_of_band_requests_can_be_made_to_take_the_slot() -> None:
    d = Driver(out_of_band_takes_slot=True)
    d.submit()
    oob = d.submit({"conversation": "none"})
    assert oob.state is TicketState.QUEUED


# Rule 9: tolerance -------------------------------------------------------------------------------


def test_unknown_done_and_duplicates_are_tolerated() -> None:
    d = Driver()
    d.feed(done("resp_never_seen"))
    request = d.submit()
    d.feed(created("resp_1", request.event_id))
    d.feed(created("resp_1", request.event_id))
    d.feed(done("resp_1", request.event_id))
    d.feed(done("resp_1", request.event_id))
    assert request.state is TicketState.DONE
    assert d.gate.statistics().completed == 1
    assert d.gate.slot_holder is None


def test_done_without_created_finishes_the_request() -> None:
    d = Driver()
    request = d.submit()
    d.feed(done("resp_1", request.event_id, status="cancelled"))
    assert request.state is TicketState.DONE
    assert request.response_id == "resp_1"
    assert d.gate.slot_holder is None


def test_response_cancelled_alias_releases_the_slot() -> None:
    d = Driver()
    request = d.submit()
    d.feed(created("resp_1", request.event_id))
    d.feed({"type": "response.cancelled", "response_id": "resp_1"})
    assert request.state is TicketState.DONE
    assert request.result is not None
    assert request.result.status == "cancelled"


# Rules 5 and 11: queue, priorities and closing ---------------------------------------------------


def test_priority_then_fifo() -> None:
    d = Driver()
    d.feed(created("resp_vad"))
    requests = [
        d.submit({"instructions": str(i)}, priority=p) for i, p in enumerate([0, 2, 1, 2, 0])
    ]
    d.feed(done("resp_vad"))
    order = []
    for rid, _ in enumerate(requests):
        create = d.creates()[-1]
        order.append(int(create["response"]["instructions"]))
        d.feed(created(f"resp_{rid}", create["event_id"]))
        d.feed(done(f"resp_{rid}", create["event_id"]))
    assert order == [1, 3, 2, 0, 4]
    assert all(r.state is TicketState.DONE for r in requests)


def test_queue_full() -> None:
    d = Driver(max_queue=2)
    d.feed(created("resp_vad"))
    d.submit()
    d.submit()
    with pytest.raises(QueueFull):
        d.submit()


def test_metadata_room_is_checked() -> None:
    d = Driver()
    with pytest.raises(ValueError, match="metadata"):
        d.submit({"metadata": {f"k{i}": "v" for i in range(16)}})


def test_close_fails_everything_waiting() -> None:
    from trio_realtime import ConnectionLost

    d = Driver()
    active = d.submit()
    d.feed(created("resp_1", active.event_id))
    queued = d.submit()
    d.gate.close(ConnectionLost("gone"), now=d.now)
    assert active.state is queued.state is TicketState.FAILED
    assert isinstance(queued.error, ConnectionLost)
    with pytest.raises(ConnectionLost):
        d.submit()


def test_blocker_named_by_a_conflict_counts_as_server_started_once_it_shows() -> None:
    d = Driver()
    mine = d.submit()
    d.feed(conflict(mine.event_id, "resp_vad"))  # named before its response.created arrives
    assert d.gate.statistics().server_started == 0
    d.feed(created("resp_vad"))
    d.feed(created("resp_vad"))  # a duplicate is not counted again
    assert d.gate.statistics().server_started == 1
    assert d.gate.slot_holder == "resp_vad"
    d.feed(done("resp_vad"))
    assert mine.state is TicketState.SENT


def test_blocker_that_is_a_timed_out_request_is_cancelled_when_it_shows() -> None:
    d = Driver(created_timeout=10.0)
    stuck = d.submit()
    d.advance(10.1)  # stuck times out; its create is still on the wire
    mine = d.submit()
    d.feed(conflict(mine.event_id, "resp_late"))  # the server runs stuck's response after all
    d.feed(created("resp_late", stuck.event_id))
    assert [c["response_id"] for c in d.cancels()] == ["resp_late"]
    assert d.gate.statistics().server_started == 0


def test_out_of_band_response_waiting_by_configuration_does_not_end_the_in_band_one() -> None:
    d = Driver(out_of_band_takes_slot=True)
    oob = d.submit({"conversation": "none"})  # sent: holds the slot by configuration
    d.feed(created("resp_vad"))  # a server-started in-band response
    d.feed(created("resp_oob", oob.event_id, conversation_id=None))
    d.feed(done("resp_oob", oob.event_id, conversation_id=None))
    following = d.submit()
    assert following.state is TicketState.QUEUED  # resp_vad still runs
    d.feed(done("resp_vad"))
    assert following.state is TicketState.SENT


def test_the_slot_moves_through_its_states() -> None:
    from trio_realtime._gate import SlotState

    d = Driver()
    assert d.gate.slot.state is SlotState.FREE
    mine = d.submit()
    assert (d.gate.slot.state, d.gate.slot.request) == (SlotState.RESERVED, mine)
    d.feed(created("resp_vad"))  # a server response overtakes ours
    assert d.gate.slot.state is SlotState.HELD
    assert d.gate.slot.displaced is mine
    d.feed(done("resp_vad"))
    assert (d.gate.slot.state, d.gate.slot.request) == (SlotState.RESERVED, mine)
    d.feed(conflict(mine.event_id, legacy=True))  # nothing known to run: retried at once
    d.feed(conflict(mine.event_id, legacy=True))
    assert d.gate.slot.state is SlotState.HELD_UNNAMED
    d.feed(done("resp_unseen"))
    d.feed(created("resp_1", mine.event_id))
    assert d.gate.slot.state is SlotState.HELD
    d.feed(done("resp_1", mine.event_id))
    assert d.gate.slot.state is SlotState.FREE


# Logs -----------------------------------------------------------------------------------------


def test_slot_log_lines_name_a_holder_only_when_there_is_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_realtime._gate")
    d = Driver()
    mine = d.submit()
    d.feed(created("resp_1", mine.event_id))
    d.feed(done("resp_1", mine.event_id))
    moves = [r.getMessage() for r in caplog.records if r.getMessage().startswith("slot ")]
    assert moves[0].startswith(f"slot free -> reserved (<Request #{mine.seq} queued")
    assert moves[-1].startswith("slot held -> free: ")
    assert not [m for m in moves if re.match(r"slot [a-z ]+ -> [a-z ]+ None", m)]


def test_a_huge_server_error_message_is_logged_capped(caplog: pytest.LogCaptureFixture) -> None:
    d = Driver()
    d.feed(error("server_error", "x" * 1_000_000, None))
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    line = record.getMessage()
    assert len(line) < 1_000
    assert "999500 more characters" in line


def test_huge_response_ids_are_logged_capped(caplog: pytest.LogCaptureFixture) -> None:
    d = Driver(response_timeout=30.0, cancel_grace=5.0)
    huge = "resp_" + "x" * 1_000_000
    d.feed(created(huge))
    d.feed(created(huge + "y"))  # supersedes it: a warning naming both
    d.advance(30.1)  # silent: cancelled, with a warning
    d.advance(5.1)  # no done: force-released, with a warning
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all(len(line) < 2_000 for line in warnings), [len(line) for line in warnings]


# The tables decide ----------------------------------------------------------------------------


def test_every_move_is_looked_up_in_its_table_and_a_miss_raises() -> None:
    from trio_realtime._gate_states import (
        RESPONSE_MOVES,
        SLOT_MOVES,
        TICKET_MOVES,
        Response,
        ResponseState,
        ResponseTrigger,
        SlotState,
        SlotTrigger,
        TicketTrigger,
    )

    # Every slot state can be left when the connection goes; terminal requests never move.
    assert all(SLOT_MOVES[(state, SlotTrigger.GONE)] is SlotState.FREE for state in SlotState)
    assert not [key for key in TICKET_MOVES if key[0].terminal]
    assert not [key for key in RESPONSE_MOVES if key[0] is ResponseState.ENDED]
    d = Driver()
    with pytest.raises(RuntimeError, match="gate bug: slot free cannot move"):
        d.gate._move_slot(SlotTrigger.ENDED, "a free slot has no holder to end")
    mine = d.submit()
    d.feed(created("resp_1", mine.event_id))
    d.feed(done("resp_1", mine.event_id))
    with pytest.raises(RuntimeError, match="gate bug"):
        d.gate._move(mine, TicketTrigger.SEND)  # a finished request is never sent again
    ended = Response("resp_1", None, True, 0.0, ResponseState.ENDED)
    with pytest.raises(RuntimeError, match="gate bug"):
        d.gate._response_move(ended, ResponseTrigger.CANCEL)


# Rule 12: function-call turns -----------------------------------------------------------------


def call_item(rid: str, call_id: str) -> dict[str, object]:
    return {
        "type": "response.output_item.added",
        "response_id": rid,
        "item": {"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"},
    }


def test_rule_12_one_follow_up_per_turn_after_its_done_and_every_result() -> None:
    d = Driver()
    d.feed(created("resp_tools"))
    d.feed(call_item("resp_tools", "call_1"))
    d.feed(call_item("resp_tools", "call_2"))
    first = d.gate.function_result("call_1", {}, now=d.now, owner=lambda r: None)
    second = d.gate.function_result(
        "call_2", {"instructions": "x"}, now=d.now, owner=lambda r: None
    )
    assert first is second  # one follow-up for the turn
    d.pump()
    assert d.creates() == []  # its response still runs
    d.feed(done("resp_tools"))
    assert [c["event_id"] for c in d.creates()] == [first.event_id]
    assert d.creates()[0]["response"].get("instructions") is None  # the first result's body


def test_rule_12_a_turn_waits_for_every_call_and_a_stray_call_gets_its_own() -> None:
    d = Driver()
    d.feed(created("resp_tools"))
    d.feed(call_item("resp_tools", "call_1"))
    d.feed(call_item("resp_tools", "call_2"))
    d.feed(done("resp_tools"))
    follow_up = d.gate.function_result("call_1", {}, now=d.now, owner=lambda r: None)
    d.pump()
    assert follow_up.state is TicketState.QUEUED
    assert d.gate.is_held(follow_up)
    stray = d.gate.function_result("call_unknown", {}, now=d.now, owner=lambda r: None)
    d.pump()
    assert stray.state is TicketState.SENT  # a call never seen: a follow-up of its own
    d.gate.function_result("call_2", {}, now=d.now, owner=lambda r: None)
    assert not d.gate.is_held(follow_up)


def test_rule_12_a_turn_whose_response_is_given_up_releases_its_follow_up() -> None:
    d = Driver(response_timeout=30.0, cancel_grace=5.0)
    d.feed(created("resp_tools"))
    d.feed(call_item("resp_tools", "call_1"))
    follow_up = d.gate.function_result("call_1", {}, now=d.now, owner=lambda r: None)
    d.advance(30.1)  # silent: cancelled
    d.advance(5.1)  # no done: given up (rule 7), so the turn's response has ended
    assert follow_up.state is TicketState.SENT


def test_rule_12_a_call_seen_after_its_response_was_given_up_does_not_wait_forever() -> None:
    d = Driver(response_timeout=30.0, cancel_grace=5.0)
    d.feed(created("resp_tools", conversation_id=None))
    d.advance(30.1)  # silent: cancelled
    d.advance(5.1)  # given up (rule 7): its turn has ended ...
    d.feed(call_item("resp_tools", "call_1"))  # ... though the server still runs it
    follow_up = d.gate.function_result("call_1", {}, now=d.now, owner=lambda r: None)
    d.pump()
    assert follow_up.state is TicketState.SENT  # found by the property machine: it was held forever


def test_rule_12_a_lost_connection_ends_every_turn_even_of_a_response_never_seen() -> None:
    from trio_realtime import ConnectionLost

    d = Driver()
    d.feed(call_item("resp_unseen", "call_1"))  # its response.created was lost
    follow_up = d.gate.function_result("call_1", {}, now=d.now, owner=lambda r: None)
    d.gate.connection_lost(ConnectionLost("gone"), now=d.now)
    d.gate.resume()
    d.pump()
    assert follow_up.state is TicketState.SENT  # found by the property machine: held for ever
