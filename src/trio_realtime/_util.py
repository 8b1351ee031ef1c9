"""Small helpers shared by the Trio shells."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["LastN", "unwrap_lone_exception"]

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
