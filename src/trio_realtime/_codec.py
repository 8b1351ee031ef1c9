"""The wire's JSON: what a frame may carry, and the two codecs that read and write it.

Two codecs do the work: ``orjson``'s when it is installed (the ``fast`` extra), else the
standard library's. Whichever runs, the library accepts the same values and the same frames:

- **Writing.** What an application hands over (a ``response.create`` body, a client event, a
  ``session.update``) is checked and copied at the call by :func:`to_wire`, so a value the
  wire cannot carry is the caller's error, raised there and naming its key path, with nothing
  queued. The values JSON carries, and no others: mappings with ``str`` keys, lists and
  tuples, ``str`` (valid Unicode: no lone surrogates), ``int`` (within 64 bits, orjson's
  range), finite ``float``, ``bool`` and ``None``, nested at most :data:`MAX_DEPTH` deep.
  Subclasses of these (a ``StrEnum``, an ``IntEnum``, a named tuple, a ``MappingProxyType``)
  are written as their plain values; anything else (dates, ``bytes``, sets, decimals, plain
  enums, NaN, infinities) is refused, although orjson would encode some of them and the
  standard library others. Both writers then give the same compact text (``ensure_ascii``
  off, no spaces); only a float with a small negative exponent is spelled differently
  (``1e-05`` / ``0.00001``, the same number).
- **Reading.** :func:`parse_frame` turns a text frame into an event dict, or raises
  :class:`MalformedFrame`: for what is not JSON (``NaN``, ``Infinity`` included), not an
  object with a string ``type``, binary, or nested deeper than :data:`MAX_FRAME_DEPTH`
  (whichever parser runs: the standard library's alone would raise ``RecursionError``
  somewhere around 1,000 levels, orjson's refuses past 1,024).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from ._events import MalformedFrame

__all__ = [
    "MAX_DEPTH",
    "MAX_FRAME_DEPTH",
    "dump_event",
    "json_codec",
    "nests_deeper_than",
    "parse_frame",
    "to_wire",
]

Event = dict[str, Any]

#: How deep a value handed to the library may nest (orjson writes at most 254 levels; the
#: envelope of a client event adds two).
MAX_DEPTH = 128
#: How deep a server's frame may nest. Deeper frames are malformed whichever parser runs
#: (the standard library's fails around 1,000 levels, depending on the stack, orjson's past
#: 1,024), and nothing downstream (subscribers, the conversation record) meets one.
MAX_FRAME_DEPTH = 256

_INT_MIN = -(2**63)  # orjson's range: signed and unsigned 64-bit integers
_INT_MAX = 2**64 - 1


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_codec(
    *, orjson_if_installed: bool = True
) -> tuple[Callable[[str], Any], Callable[[Any], str]]:
    """The parser and the writer of event frames: ``orjson``'s when it is installed (the
    ``fast`` extra), else the standard library's. Both parsers refuse what is not JSON
    (``NaN``, ``Infinity``); both writers give compact text and refuse NaN (values reach
    them through :func:`to_wire`, which refuses it first)."""
    if orjson_if_installed:
        try:
            import orjson
        except ImportError:
            pass
        else:
            dumps = orjson.dumps
            return orjson.loads, lambda event: dumps(event).decode()
    encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return json.JSONDecoder(parse_constant=_reject_constant).decode, encoder.encode


_loads, _dumps = json_codec()


def dump_event(event: Mapping[str, Any]) -> str:
    """The text of a client event's frame."""
    return _dumps(event)


def parse_frame(data: str | bytes) -> Event:
    """Parse one WebSocket message into an event dict, or raise :class:`MalformedFrame`."""
    if not isinstance(data, str):
        raise MalformedFrame(f"binary frame of {len(data)} bytes")
    try:
        event = _loads(data)
    except ValueError as exc:
        raise MalformedFrame(f"invalid JSON ({exc})") from None
    except RecursionError:
        raise MalformedFrame(f"JSON nested too deep to parse ({len(data)} characters)") from None
    if not isinstance(event, dict):
        raise MalformedFrame(f"JSON {type(event).__name__}, not an object")
    if not isinstance(event.get("type"), str):
        raise MalformedFrame("event without a string 'type'")
    # Each level of nesting opens a bracket, so a frame with fewer opening brackets than the
    # limit cannot nest deeper (brackets inside strings only over-count): counted at C speed,
    # and only a frame that could be that deep is walked (the events of a live session never).
    if (
        len(data) > 2 * MAX_FRAME_DEPTH
        and data.count("{") + data.count("[") > MAX_FRAME_DEPTH
        and nests_deeper_than(event, MAX_FRAME_DEPTH)
    ):
        raise MalformedFrame(f"JSON nested deeper than {MAX_FRAME_DEPTH} levels")
    return event


def nests_deeper_than(event: Event, limit: int) -> bool:
    """Whether a parsed value (dicts and lists, as the codecs make them) nests more than
    ``limit`` containers deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(event, 1)]
    while stack:
        value, depth = stack.pop()
        for child in value.values() if type(value) is dict else value:
            if type(child) is dict or type(child) is list:
                if depth == limit:
                    return True
                stack.append((child, depth + 1))
    return False


class _Refused(Exception):
    """Raised inside :func:`to_wire`'s walk; the path is put together while it unwinds."""

    def __init__(self, error: type[TypeError | ValueError], problem: str) -> None:
        super().__init__(problem)
        self.error = error
        self.problem = problem
        self.path: list[str] = []


def to_wire(value: object, name: str) -> Any:
    """A copy of ``value`` made only of what JSON carries (dicts with ``str`` keys, lists,
    ``str``, ``int``, finite ``float``, ``bool``, ``None``), written the same by both codecs.

    Raises ``TypeError`` (a type JSON does not have, a key that is not a ``str``) or
    ``ValueError`` (NaN or an infinity, an int beyond 64 bits, a lone surrogate, nesting
    deeper than :data:`MAX_DEPTH`, a cycle), naming the offending value's key path from
    ``name``, e.g. ``response['metadata']['at']``.
    """
    try:
        return _convert(value, MAX_DEPTH)
    except _Refused as refused:
        path = name + "".join(reversed(refused.path))
        raise refused.error(f"{path} {refused.problem}") from None


def _convert(value: object, depth: int) -> Any:
    kind = type(value)
    if kind is str:
        return _check_str(value)  # type: ignore[arg-type]
    if value is None or kind is bool:
        return value
    if kind is int:
        return _check_int(value)  # type: ignore[arg-type]
    if kind is float:
        return _check_float(value)  # type: ignore[arg-type]
    if isinstance(value, Mapping):
        if depth == 0:
            raise _too_deep()
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Refused(
                    TypeError,
                    f"has the key {key!r} ({type(key).__name__}): JSON object keys are str",
                )
            try:
                result[str.__str__(key)] = _convert(item, depth - 1)
            except _Refused as refused:
                refused.path.append(f"[{key!r}]")
                raise
        return result
    if isinstance(value, list | tuple):
        if depth == 0:
            raise _too_deep()
        items: list[Any] = []
        for index, item in enumerate(value):
            try:
                items.append(_convert(item, depth - 1))
            except _Refused as refused:
                refused.path.append(f"[{index}]")
                raise
        return items
    # Subclasses of the scalars (str and int enums, ...): their plain value.
    if isinstance(value, str):
        return _check_str(str.__str__(value))
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _check_int(int.__index__(value))
    if isinstance(value, float):
        return _check_float(float.__float__(value))
    hint = ""
    if isinstance(value, bytes | bytearray | memoryview):
        hint = " (send binary data as base64 text)"
    elif hasattr(value, "isoformat"):
        hint = " (send dates and times as text, e.g. value.isoformat())"
    raise _Refused(TypeError, f"is a {type(value).__name__}, which JSON cannot carry{hint}")


def _check_str(value: str) -> str:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Refused(
                ValueError, "is not valid Unicode text (it holds a lone surrogate)"
            ) from None
    return value


def _check_int(value: int) -> int:
    if not _INT_MIN <= value <= _INT_MAX:
        raise _Refused(ValueError, f"is {value}, beyond the 64-bit integers JSON here carries")
    return value


def _check_float(value: float) -> float:
    if not math.isfinite(value):
        raise _Refused(ValueError, f"is {value!r}, which JSON cannot carry (finite numbers only)")
    return value


def _too_deep() -> _Refused:
    return _Refused(ValueError, f"nests deeper than {MAX_DEPTH} levels (or holds a cycle)")
