"""Function-call turns: the results of one response's calls share one follow-up request.

The model's function calls arrive as ``function_call`` items of a response. The application
answers each with a ``function_call_output`` item, and then exactly one ``response.create`` must
follow, after that response's ``response.done`` (the most reported bug of this API is sending
one per result, or sending before the done). This module keeps, without I/O, which calls belong
to which response and when a turn is complete: its response is done and every call it made
has a result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import attrs

from ._util import LastN

__all__ = ["Turns", "function_call_ids"]

T = TypeVar("T")

#: How many calls (and turns) are remembered.
_MEMORY = 1024


def function_call_ids(response: Mapping[str, Any]) -> list[str]:
    """The ``call_id`` of every function call in a ``response.done`` response's output."""
    output = response.get("output")
    if not isinstance(output, list):
        return []
    return [
        item["call_id"]
        for item in output
        if isinstance(item, Mapping)
        and item.get("type") == "function_call"
        and isinstance(item.get("call_id"), str)
    ]


@attrs.define(eq=False)
class Turn(Generic[T]):
    response_id: str
    calls: set[str] = attrs.Factory(set)
    results: set[str] = attrs.Factory(set)
    done: bool = False
    #: The follow-up, while it has not been released to the queue.
    follow_up: T | None = None

    @property
    def complete(self) -> bool:
        return self.done and self.calls <= self.results


class Turns(Generic[T]):
    """Which response made which call, and which follow-ups may go. ``T`` is the follow-up."""

    def __init__(self) -> None:
        self._by_call: LastN[str, Turn[T]] = LastN(_MEMORY)
        self._by_response: LastN[str, Turn[T]] = LastN(_MEMORY)

    def _turn(self, response_id: str) -> Turn[T]:
        turn = self._by_response.get(response_id)
        if turn is None:
            turn = self._by_response[response_id] = Turn(response_id)
        return turn

    def note_item(self, response_id: str, item: object) -> None:
        """A ``response.output_item.added`` item: noted if it is a function call."""
        if isinstance(item, Mapping) and item.get("type") == "function_call":
            call_id = item.get("call_id")
            if isinstance(call_id, str):
                self.note_call(response_id, call_id)

    def note_call(self, response_id: str, call_id: str) -> None:
        """A ``function_call`` item of a response that is still running."""
        turn = self._turn(response_id)
        turn.calls.add(call_id)
        self._by_call[call_id] = turn

    def on_done(self, response_id: str, response: Mapping[str, Any]) -> T | None:
        """The response ended; returns its follow-up if that may now be released.

        Remembered even if it made no call yet: a call item may still arrive after the
        library gave a silent response up (rule 7), and its turn must not wait for an end
        that already happened.
        """
        for call_id in function_call_ids(response):
            self.note_call(response_id, call_id)
        turn = self._turn(response_id)
        turn.done = True
        return self._ready(turn)

    def all_ended(self) -> list[T]:
        """Every response ended (its connection is gone): the follow-ups that may go now."""
        ready = []
        for turn in self._by_response.values():
            turn.done = True
            follow_up = self._ready(turn)
            if follow_up is not None:
                ready.append(follow_up)
        return ready

    def turn_of(self, call_id: str) -> Turn[T] | None:
        """The turn a call belongs to, if the call was seen."""
        return self._by_call.get(call_id)

    def add_result(self, turn: Turn[T], call_id: str) -> T | None:
        """A result was sent for ``call_id``; returns the follow-up if it may now be released."""
        turn.results.add(call_id)
        return self._ready(turn)

    def _ready(self, turn: Turn[T]) -> T | None:
        if turn.complete and turn.follow_up is not None:
            follow_up, turn.follow_up = turn.follow_up, None
            return follow_up
        return None
