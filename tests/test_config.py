"""SessionConfig checks every argument when it is made, and names the one that is wrong."""

from __future__ import annotations

import math
import ssl
from fractions import Fraction
from typing import Any

import attrs
import pytest
import trio

from memory import SESSION_CREATED, memory_pair
from trio_realtime import Reconnect, SessionConfig, open_session

COUNTS = [
    "max_queue",
    "event_buffer",
    "send_buffer",
    "max_message_size",
    "receive_buffer_size",
    "replay_items",
]
SECONDS = [
    "created_timeout",
    "response_timeout",
    "cancel_grace",
    "connect_timeout",
    "close_timeout",
    "ping_timeout",
]
FLAGS = ["out_of_band_takes_slot", "allow_insecure"]


def test_every_number_and_flag_is_covered() -> None:
    typed = {f.name for f in attrs.fields(SessionConfig) if f.type in ("int", "float", "bool")}
    assert typed == {*COUNTS, *SECONDS, *FLAGS}


def test_defaults_are_valid() -> None:
    SessionConfig()


@pytest.mark.parametrize("name", COUNTS)
@pytest.mark.parametrize("value", [1.5, 10.0, "10", True, None, [1]])
def test_counts_must_be_ints(name: str, value: Any) -> None:
    with pytest.raises(TypeError, match=rf"^{name} must be an int, got {type(value).__name__}"):
        SessionConfig(**{name: value})


@pytest.mark.parametrize("name", COUNTS)
@pytest.mark.parametrize("value", [0, -1])
def test_counts_must_be_positive(name: str, value: int) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be >= 1, got {value}"):
        SessionConfig(**{name: value})


@pytest.mark.parametrize("name", COUNTS)
def test_counts_accept_ints(name: str) -> None:
    assert getattr(SessionConfig(**{name: 3}), name) == 3


@pytest.mark.parametrize("name", SECONDS)
@pytest.mark.parametrize("value", ["10", True, False, None, b"1"])
def test_seconds_must_be_numbers(name: str, value: Any) -> None:
    with pytest.raises(TypeError, match=rf"^{name} must be a number of seconds"):
        SessionConfig(**{name: value})


@pytest.mark.parametrize("name", SECONDS)
@pytest.mark.parametrize("value", [0, 0.0, -1.0, math.nan, -math.inf])
def test_seconds_must_be_positive(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be > 0 seconds"):
        SessionConfig(**{name: value})


@pytest.mark.parametrize("name", SECONDS)
@pytest.mark.parametrize("value", [2, 0.25, math.inf, Fraction(1, 4)])
def test_seconds_accept_real_numbers(name: str, value: float) -> None:
    assert getattr(SessionConfig(**{name: value}), name) == value


@pytest.mark.parametrize("name", FLAGS)
@pytest.mark.parametrize("value", [1, 0, "yes", "False", None])
def test_flags_must_be_bools(name: str, value: Any) -> None:
    with pytest.raises(
        TypeError, match=rf"^{name} must be True or False, got {type(value).__name__}"
    ):
        SessionConfig(**{name: value})


@pytest.mark.parametrize("name", FLAGS)
def test_flags_accept_bools(name: str) -> None:
    assert getattr(SessionConfig(**{name: True}), name) is True


def test_ssl_context_type() -> None:
    context = ssl.create_default_context()
    assert SessionConfig(ssl_context=context).ssl_context is context
    with pytest.raises(TypeError, match=r"^ssl_context must be an ssl\.SSLContext"):
        SessionConfig(ssl_context=True)  # type: ignore[arg-type]


def test_evolve_checks_too() -> None:
    with pytest.raises(TypeError, match="max_queue"):
        attrs.evolve(SessionConfig(), max_queue="5")


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        SessionConfig(5)  # type: ignore[misc]


def test_rollover_after_is_seconds_or_none() -> None:
    assert SessionConfig(rollover_after=None).rollover_after is None
    assert SessionConfig(rollover_after=1500).rollover_after == 1500
    with pytest.raises(ValueError, match="rollover_after"):
        SessionConfig(rollover_after=0)
    with pytest.raises(TypeError, match="rollover_after"):
        SessionConfig(rollover_after="soon")  # type: ignore[arg-type]


def test_reconnect_backoff_grows_with_jitter_to_its_ceiling() -> None:
    from trio_realtime import Reconnect

    policy = Reconnect(attempts=4, initial_delay=1.0, max_delay=5.0)
    assert [policy.delay(n, 0.999999) for n in range(4)] == pytest.approx([1, 2, 4, 5], rel=1e-5)
    assert [policy.delay(n, 0.0) for n in range(4)] == [0.5, 1.0, 2.0, 2.5]
    with pytest.raises(TypeError, match="reconnect"):
        SessionConfig(reconnect=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attempts"):
        Reconnect(attempts=0)


# ---------------------------------------------------------------- every field, said plainly


def _one_line_naming(exc: BaseException, name: str) -> str:
    message = str(exc)
    assert message.startswith(f"{name} must be"), message
    assert "\n" not in message, message
    assert "Attribute(" not in message, message
    return message


def test_an_unknown_transport_is_refused_in_one_line_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"^transport") as caught:
        SessionConfig(transport="bogus")  # type: ignore[arg-type]
    message = _one_line_naming(caught.value, "transport")
    assert "'trio-websocket'" in message
    assert "'websockets'" in message
    assert "'bogus'" in message
    with pytest.raises(TypeError) as caught_type:
        SessionConfig(transport=None)  # type: ignore[arg-type]
    _one_line_naming(caught_type.value, "transport")


@pytest.mark.parametrize("value", [5, True, "yes", {"attempts": 3}])
def test_reconnect_must_be_a_reconnect_said_in_one_line(value: Any) -> None:
    with pytest.raises(TypeError) as caught:
        SessionConfig(reconnect=value)
    message = _one_line_naming(caught.value, "reconnect")
    assert "Reconnect(" in message
    assert type(value).__name__ in message


def test_reconnect_accepts_a_policy_or_none() -> None:
    from trio_realtime import Reconnect

    policy = Reconnect(attempts=2)
    assert SessionConfig(reconnect=policy).reconnect is policy
    assert SessionConfig(reconnect=None).reconnect is None


@pytest.mark.parametrize("value", ["x", 5, object()])
def test_on_response_must_be_callable(value: Any) -> None:
    with pytest.raises(TypeError) as caught:
        SessionConfig(on_response=value)
    _one_line_naming(caught.value, "on_response")


def test_on_response_accepts_a_callable_or_none() -> None:
    assert SessionConfig(on_response=print).on_response is print
    assert SessionConfig(on_response=None).on_response is None


class _Nothing:
    """A value no field takes."""

    def __repr__(self) -> str:
        return "<nothing>"


@pytest.mark.parametrize("field", [f.name for f in attrs.fields(SessionConfig)])
def test_every_field_refuses_a_wrong_type_in_one_line_naming_it(field: str) -> None:
    """Fields added later are held to this too: a wrong type is a TypeError that starts with
    the field's name, on one line, without attrs' internals."""
    with pytest.raises(TypeError) as caught:
        SessionConfig(**{field: _Nothing()})
    _one_line_naming(caught.value, field)


@pytest.mark.parametrize("field", [f.name for f in attrs.fields(Reconnect)])
def test_every_reconnect_field_refuses_a_wrong_type_in_one_line(field: str) -> None:
    with pytest.raises(TypeError) as caught:
        Reconnect(**{field: _Nothing()})
    _one_line_naming(caught.value, field)


@pytest.mark.parametrize("config", [{"max_queue": 5}, "fast", 5])
async def test_open_session_refuses_a_config_that_is_not_a_session_config(config: Any) -> None:
    with trio.fail_after(5), pytest.raises(TypeError) as caught:
        async with open_session("ws://127.0.0.1:9/v1/realtime", config=config):
            pass  # pragma: no cover (never connects)
    message = _one_line_naming(caught.value, "config")
    assert "SessionConfig" in message
    assert type(config).__name__ in message


async def test_open_session_refuses_tools_that_are_not_a_registry_or_runner() -> None:
    transport, peer = memory_pair()
    await peer.send(SESSION_CREATED)
    with trio.fail_after(5), pytest.raises(TypeError) as caught:
        async with open_session(transport, tools=[print]):  # type: ignore[arg-type]
            pass  # pragma: no cover (refused before it runs)
    message = _one_line_naming(caught.value, "tools")
    assert "ToolRegistry" in message
