"""Server-side identifiers: ``event_...``, ``resp_...``, ``item_...``, ``call_...``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import attrs

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_WIDTH = 21


def _encode(number: int) -> str:
    digits: list[str] = []
    while number:
        number, rest = divmod(number, len(_ALPHABET))
        digits.append(_ALPHABET[rest])
    return "".join(reversed(digits)).rjust(_WIDTH, "0")


@attrs.define(eq=False)
class IdFactory:
    """Hands out ids shaped like the real server's (``resp_`` plus 21 characters).

    Ids are sequential, so runs are deterministic; they are unique per factory (one per server).
    """

    _counter: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    def new(self, prefix: str) -> str:
        return f"{prefix}_{_encode(next(self._counter))}"
