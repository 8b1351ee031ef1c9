"""Checks of events against the ``openai`` package's typed models, shared by the tests."""

from __future__ import annotations

from typing import Any

import pydantic


def undeclared_fields(value: Any, path: str = "") -> list[str]:
    """Paths of fields a model accepted without declaring them."""
    found: list[str] = []
    if isinstance(value, pydantic.BaseModel):
        found.extend(f"{path}{key}" for key in (value.model_extra or {}))
        for name in type(value).model_fields:
            found.extend(undeclared_fields(getattr(value, name), f"{path}{name}."))
    elif isinstance(value, list):
        for item in value:
            found.extend(undeclared_fields(item, path))
    return found
