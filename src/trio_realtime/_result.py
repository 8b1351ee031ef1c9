"""ResponseResult: how a response ended, as the application reads it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["ResponseResult"]


@attrs.frozen
class ResponseResult:
    """How a response ended."""

    #: ``completed``, ``cancelled``, ``failed`` or ``incomplete``.
    status: str
    #: The ``response`` object of ``response.done``; None when cancelled before it was sent.
    response: Mapping[str, Any] | None = attrs.field(repr=False)

    @property
    def response_id(self) -> str | None:
        rid = self.response.get("id") if self.response is not None else None
        return rid if isinstance(rid, str) else None
