"""The body of a ``response.create``, checked where it comes in (the session's request path).

The gate takes bodies as they are: what an application may ask for is decided here, once, before
anything is queued.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_METADATA", "response_body"]

#: Most metadata pairs the API accepts on a response (one is the library's, rule 1).
MAX_METADATA = 16


def response_body(body: object, priority: object) -> dict[str, Any]:
    """A copy of ``body`` (None: empty) fit to be a ``response.create``'s ``response``.

    Raises ``TypeError`` for a body that is not a mapping, a ``metadata`` that is not one, or a
    priority that is not an int; ``ValueError`` when ``metadata`` leaves no room for the
    library's correlation key.
    """
    if body is not None and not isinstance(body, Mapping):
        raise TypeError(
            f"response must be a mapping (the body of response.create) or None, "
            f"not {type(body).__name__}"
        )
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    checked = dict(body or {})
    metadata = checked.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError("response['metadata'] must be a mapping")
    if metadata is not None and len(metadata) >= MAX_METADATA:
        raise ValueError(f"response['metadata'] may hold at most {MAX_METADATA - 1} pairs")
    return checked
