"""The one seam to pydantic (the optional ``tools`` extra): a tool's parameters schema, derived
from its type hints, and the validation of the arguments the model sends.

pydantic is imported only here, and only when a tool is registered without an explicit schema:
the core install (trio, trio-websocket, attrs) never needs it. Whether pydantic is installed or
not, mypy checks this module (the import is typed as ``Any`` when it is missing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import attrs

__all__ = ["ArgumentsInvalid", "DerivedSchema", "derive_schema", "to_jsonable"]

MISSING_PYDANTIC = (
    "deriving a tool's parameters schema from its type hints needs pydantic: install the "
    "'tools' extra (pip install 'trio-realtime[tools]'), or pass parameters=<a JSON schema>"
)


class ArgumentsInvalid(Exception):
    """The arguments do not fit the tool's parameters; ``details`` says where, for the model."""

    def __init__(self, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.details = details


@attrs.frozen
class DerivedSchema:
    #: The JSON schema of the function's parameters (an object schema).
    parameters: dict[str, Any]
    #: Validates the arguments (a dict) and returns the call's awaitable, not yet started.
    #: Raises :class:`ArgumentsInvalid`.
    bind: Callable[[Mapping[str, Any]], Awaitable[object]]


def derive_schema(function: Callable[..., Awaitable[object]]) -> DerivedSchema:
    """Build the parameters schema and the validator of ``function`` with pydantic.

    Raises ``ImportError`` (naming the extra) when pydantic is missing, and ``TypeError`` when
    the hints cannot be turned into a schema (e.g. a name that cannot be resolved).
    """
    try:
        import pydantic  # type: ignore[import-not-found, unused-ignore]
        from pydantic_core import ArgsKwargs  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise ImportError(MISSING_PYDANTIC) from exc
    try:
        # A TypeAdapter of a function validates its arguments (as validate_call does) and
        # gives their JSON schema.
        adapter = pydantic.TypeAdapter(cast(Any, function))
        parameters: dict[str, Any] = adapter.json_schema()
    except (pydantic.PydanticUserError, NameError, TypeError) as exc:
        raise TypeError(f"cannot derive a parameters schema from {function!r}: {exc}") from exc

    def bind(arguments: Mapping[str, Any]) -> Awaitable[object]:
        try:
            # Validating a call runs the (async) function: that only makes its coroutine.
            call = adapter.validate_python(ArgsKwargs((), dict(arguments)))
        except pydantic.ValidationError as exc:
            details = [
                {"loc": list(error["loc"]), "msg": error["msg"]}
                for error in exc.errors(include_url=False, include_input=False)
            ]
            raise ArgumentsInvalid(f"{len(details)} invalid argument(s)", details) from None
        return cast("Awaitable[object]", call)

    return DerivedSchema(parameters, bind)


def to_jsonable(value: object) -> object:
    """``json.dumps``' fallback: pydantic models, dataclasses, dates, ... via pydantic_core when
    it is installed; otherwise (or for what it cannot encode) ``TypeError``."""
    try:
        from pydantic_core import to_jsonable_python  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise TypeError(f"{type(value).__name__} is not JSON serializable") from None
    try:
        result: object = to_jsonable_python(value)
    except ValueError as exc:  # PydanticSerializationError
        raise TypeError(str(exc)) from None
    return result
