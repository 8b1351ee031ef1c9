"""Small helpers shared by the Trio shells."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["unwrap_lone_exception"]


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
