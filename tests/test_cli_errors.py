"""The command line answers every input plainly: options anywhere, one-line usage errors that
name the command, a closed pipe, a server that is not a WebSocket, a refused key, Ctrl-C and
Ctrl-D; and the demo's numbers and times agree wherever they appear."""

from __future__ import annotations

import functools
import io
import os
import re
import signal
import subprocess
import sys

import pytest
import trio

from test_cli import KEY, NO_EXTRAS
from trio_realtime._cli import main
from trio_realtime.testing import Behavior, open_fake_server


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AZURE_OPENAI_"))}


# ---------------------------------------------------------------- the command line itself


def test_verbose_before_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-v", "demo", "--fake"]) == 0
    err = capsys.readouterr().err
    assert "DEBUG trio_realtime" in err
    assert "DEBUG trio-websocket" not in err


def test_verbose_before_and_after_the_command_add_up(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-v", "demo", "--fake", "-v"]) == 0
    assert "DEBUG trio-websocket" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "command", "words"),
    [
        (["demo", "--frobnicate"], "demo", "unrecognized arguments: --frobnicate"),
        (["chat", "--frobnicate", "x"], "chat", "unrecognized arguments: --frobnicate x"),
        (["demo", "--fake", "--url", "ws://127.0.0.1:1/"], "demo", "not allowed with argument"),
        (["bench", "--json"], "bench", "expected one argument"),
        ([], "", "required: COMMAND"),
        (["frobnicate"], "", "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line_naming_the_command_and_its_usage(
    argv: list[str], command: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    prog = f"trio-realtime {command}".strip()
    assert lines[0].startswith(f"{prog}: "), lines[0]
    assert words in lines[0]
    assert f"(usage: {prog} [-h]" in lines[0]


def test_demo_piped_into_head_ends_quietly() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", NO_EXTRAS, "demo", "--fake"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environment(),
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        first = process.stdout.readline()  # what `head -1` reads, then it exits
        process.stdout.close()
        err = process.stderr.read().decode()
        status = process.wait(timeout=60)
    assert first
    assert err == ""
    assert status == 0


async def _plain_http(stream: trio.SocketStream) -> None:
    async with stream:
        await stream.receive_some(65536)
        body = b"<html>hello</html>"
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )


async def test_a_plain_http_server_is_not_a_websocket_endpoint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, _plain_http, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            url = f"ws://127.0.0.1:{port}/v1/realtime"
            status = await trio.to_thread.run_sync(main, ["chat", "--url", url])
            nursery.cancel_scope.cancel()
    assert status == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "not a WebSocket endpoint" in err
    assert "HTTP 200" in err


async def test_a_refused_key_is_one_plain_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    with trio.fail_after(30):
        async with open_fake_server(behavior=Behavior(invalid_api_keys={KEY})) as server:
            status = await trio.to_thread.run_sync(main, ["chat", "--url", server.url])
    assert status == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err  # no WARNING before it
    assert "WARNING" not in err
    assert err.startswith("trio-realtime: the server refused the session (invalid_api_key)")
    assert "the server refused the API key in OPENAI_API_KEY" in err
    assert not re.search(r"[.:;,] ?[.:;,]", err), err  # no stray punctuation such as ".:"
    assert KEY not in err


# ---------------------------------------------------------------- chat: Ctrl-C and Ctrl-D


def test_chat_with_piped_input_obeys_sigint() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", NO_EXTRAS, "chat", "--fake"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write("hi\n")
        process.stdin.flush()  # the input stays open: the chat waits for the next line
        assert process.stdout.readline() == "(fake server) You said: hi\n"
        process.send_signal(signal.SIGINT)
        try:
            status = process.wait(timeout=10)
        finally:
            process.kill()
        assert process.stderr is not None
        err = process.stderr.read()
    assert status == 130
    assert "Traceback" not in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_after_ctrl_d_the_prompt_line_ends(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal("hi\n"))  # then end of input: Ctrl-D
    assert main(["chat", "--fake"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "(fake server) You said: hi\n"
    assert captured.err.endswith("you> you> \n"), repr(captured.err)


def test_after_quit_no_extra_newline(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal("/quit\n"))  # the Enter key ended the line
    assert main(["chat", "--fake"]) == 0
    assert capsys.readouterr().err.endswith("you> ")


# ---------------------------------------------------------------- the demo agrees with itself


def _timeline(out: str) -> str:
    return out.split("\n  # request", 1)[0]


def test_the_demo_gives_each_event_one_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--fake"]) == 0
    out = capsys.readouterr().out
    timeline = _timeline(out)
    queued = {
        number: when
        for when, number in re.findall(r"^ *([\d.]+) ms  queued +#(\d+) ", timeline, re.M)
    }
    assert len(queued) == 7
    notes = " ".join(out.split("Why this order:", 1)[1].split())
    cited = re.findall(r"#(\d+) at ([\d.]+) ms", notes)
    cited += [
        (number, when)
        for number, when in re.findall(
            r"#(\d+) [^(#]*\(priority \d+\) ran after .*? queued at ([\d.]+) ms", notes
        )
    ]
    assert cited
    for number, when in cited:
        assert queued[number] == when, (number, when, queued)
    for label, start, end in re.findall(r"(VAD-\d) from ([\d.]+) ms to ([\d.]+) ms", notes):
        assert re.search(
            rf"^ *{re.escape(start)} ms  server +voice activity started {label} ", timeline, re.M
        )
        assert re.search(rf"^ *{re.escape(end)} ms  server +{label} ended", timeline, re.M)


def test_verbose_numbers_requests_as_the_table_does(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--fake", "-v"]) == 0
    captured = capsys.readouterr()
    table = dict(
        re.findall(r"^ +(\d+) .{46} +(\d+) ", captured.out.split("\n  # request", 1)[1], re.M)
    )
    assert len(table) == 7
    logged = dict(re.findall(r"<Request #(\d+) \w+ priority=(\d+)", captured.err))
    assert logged
    for number, priority in logged.items():
        assert table[number] == priority, (number, priority, table)
