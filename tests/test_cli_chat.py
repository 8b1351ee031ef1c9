"""trio-realtime chat: lines in, streamed text out, against the fake server or a URL."""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping
from typing import Any

import pytest
import trio

from trio_realtime._cli import main
from trio_realtime._cli_chat import watch_errors
from trio_realtime.testing import Behavior, Script, open_fake_server


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def chat(monkeypatch: pytest.MonkeyPatch, text: str, *args: str) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    return main(["chat", *args])


def test_echo_until_quit(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert chat(monkeypatch, "hello there\n\n  \nsecond line\n/quit\nnever read\n") == 0
    captured = capsys.readouterr()
    assert captured.out == (
        "(fake server) You said: hello there\n(fake server) You said: second line\n"
    )
    assert captured.err == ""  # no prompt when stdin is not a terminal


def test_ends_at_end_of_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert chat(monkeypatch, "one\ntwo") == 0  # the last line without its newline counts
    assert capsys.readouterr().out == "(fake server) You said: one\n(fake server) You said: two\n"
    assert chat(monkeypatch, "") == 0
    assert capsys.readouterr().out == ""


def test_beta_dialect(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert chat(monkeypatch, "hi\n", "--beta") == 0
    assert capsys.readouterr().out == "(fake server) You said: hi\n"


async def test_against_a_url_sends_user_messages(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("first\nsecond\n"))
    with trio.fail_after(30):
        async with open_fake_server() as server:
            status = await trio.to_thread.run_sync(main, ["chat", "--url", server.url])
            stats = server.statistics()
    assert status == 0
    # The fake server's own script: one streamed answer per line.
    assert capsys.readouterr().out == "Hello from the fake server.\n" * 2
    assert stats.max_in_band_active == 1


class _Events:
    """Server events, as a subscriber would read them (no async generator left unclosed)."""

    def __init__(self, *events: Mapping[str, Any]) -> None:
        self.events = list(events)

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Mapping[str, Any]:
        await trio.lowlevel.checkpoint()
        if not self.events:
            raise StopAsyncIteration
        return self.events.pop(0)


def _error(code: str | None, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": "invalid_request_error", "code": code, "message": message},
    }


async def test_server_errors_are_shown_and_a_fatal_one_ends_the_chat() -> None:
    err = io.StringIO()
    fatal: list[str] = []
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            await watch_errors(
                _Events(
                    {"type": "response.created", "response": {}},
                    _error("conversation_already_has_active_response", "handled by the library"),
                    _error("response_cancel_not_active", "harmless"),
                    _error("invalid_value", "Invalid value: 'x'."),
                    _error("invalid_api_key", "Incorrect API key provided."),
                    _error("unknown_parameter", "never reached"),
                ),
                err,
                fatal,
                scope,
            )
    assert scope.cancel_called
    assert fatal == ["invalid_api_key"]
    assert err.getvalue() == (
        "trio-realtime: server error (invalid_value): Invalid value: 'x'.\n"
        "trio-realtime: server error (invalid_api_key): Incorrect API key provided.\n"
    )


async def test_a_failed_response_is_reported_and_the_chat_goes_on(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    replies = iter([Script(text="Partial answer", status="failed"), Script(text="Fine.")])
    behavior = Behavior(script=lambda body: next(replies))
    monkeypatch.setattr(sys, "stdin", io.StringIO("first\nsecond\n"))
    with trio.fail_after(30):
        async with open_fake_server(behavior=behavior) as server:
            status = await trio.to_thread.run_sync(main, ["chat", "--url", server.url])
    assert status == 1
    captured = capsys.readouterr()
    assert captured.out == "Partial answer\nFine.\n"
    assert captured.err == "trio-realtime: the response ended failed\n"
