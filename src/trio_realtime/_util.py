"""Small helpers shared by the Trio shells."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["LOG_CAP", "LastN", "cap", "unwrap_lone_exception"]

K = TypeVar("K")
V = TypeVar("V")


@contextmanager
def unwrap_lone_exception() -> Iterator[None]:
    """Raise a nursery's lone exception bare instead of inside an ``ExceptionGroup``.

    Our background tasks end quietly, so a group leaving one of our nurseries holds the
    exception of the block's own body (the application's, or our typed error): callers should
    be able to ``except`` it directly. Its cause is kept; the group is dropped from the context.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            exc = group.exceptions[0]
            raise exc from exc.__cause__
        raise


class LastN(OrderedDict[K, V]):
    """A dict that remembers only the last ``size`` keys set: the oldest goes first.

    What the library remembers of the past (finished responses, abandoned requests, events
    awaiting answers, function-call turns) is bounded this one way.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


#: The longest text a log line quotes from the outside (a server's error message, ...).
LOG_CAP = 500


def cap(text: str, limit: int = LOG_CAP) -> str:
    """``text`` cut to ``limit`` characters for a log line, saying how much was left out.

    What a server sends can be any size (one test produced a 1.1 MB error message): a log
    line quotes at most ``limit`` characters of it.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"
