"""The ticket's own promises (issue 13 item 12)."""

from __future__ import annotations

import pytest
import trio

from memory import connected


async def test_events_of_a_ticket_whose_response_ended_raise_instead_of_yielding_nothing() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            ticket = session.request_response()
            events = ticket.events()
            create = await peer.expect("response.create")
            await peer.complete(create, "resp_1")
            seen = [event["type"] async for event in events]
            assert seen[0] == "response.created"
            assert seen[-1] == "response.done"
            with pytest.raises(RuntimeError, match="already ended"):
                ticket.events()  # a second iteration would silently yield nothing


async def test_events_of_a_ticket_cancelled_before_sending_end_at_once() -> None:
    with trio.fail_after(5):
        async with connected() as (session, peer, _):
            first = session.request_response()
            queued = session.request_response()
            await queued.cancel()
            assert [event async for event in queued.events()] == []  # it had none
            create = await peer.expect("response.create")
            await peer.complete(create, "resp_1")
            await first.wait_done()
