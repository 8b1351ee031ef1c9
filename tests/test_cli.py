"""The command line: demo, chat, help, logging, and one-line errors for bad input.

``main(argv)`` runs in-process (it calls ``trio.run``, so from a Trio test it runs in a worker
thread while the test's own loop serves the fake server); a few cases run as a subprocess to
check what a user sees: the exit status, one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Sequence

import pytest
import trio
import trio_websocket

from trio_realtime import ConnectionLost, Endpoint, _cli
from trio_realtime._cli import Target, UsageError, describe_failure, main, resolve_target
from trio_realtime.testing import open_fake_server

KEY = "sk-test-secret-4242"
ENV_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_REALTIME_MODEL",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_DEPLOYMENT",
    "AZURE_OPENAI_API_VERSION",
)
#: Blocks the optional extras, as in the Quick start's ``pip install -e .``.
NO_EXTRAS = (
    "import sys; sys.modules.update(dict.fromkeys(['matplotlib', 'matplotlib.figure', "
    "'websockets', 'openai', 'hypothesis', 'pytest', 'pytest_trio'], None)); "
    "from trio_realtime._cli import main; raise SystemExit(main(sys.argv[1:]))"
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def free_port() -> int:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def run_cli(
    args: Sequence[str], *, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ENV_VARIABLES}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", NO_EXTRAS, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )


# ---------------------------------------------------------------- demo


def test_demo_serializes_colliding_requests_and_explains(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo"]) == 0  # no credentials in the environment: the fake server
    out = capsys.readouterr().out
    assert "fake Realtime server (ga)" in out
    assert "rejections surfaced to the app 0" in out
    assert "most in-band responses active at once 1" in out
    summary = re.search(r"requests (\d+), completed (\d+)", out)
    assert summary is not None
    # Seven requests; the spoken reply the user talked over ends cancelled.
    assert (summary.group(1), summary.group(2)) == ("7", "6")
    assert "server-started responses 2" in out
    assert "answer from 2 tool results (one response)" in out
    # The timeline names the voice-activity responses and when each ended.
    assert re.search(r"server +voice activity started VAD-1 by itself", out)
    assert re.search(r"server +VAD-1 ended \(completed\)", out)
    assert re.search(r"server +VAD-2 ended \(completed\)", out)
    notes = " ".join(out.split("Why this order:", 1)[1].split())  # unwrapped
    assert re.search(r"VAD-1 from [\d.]+ ms to [\d.]+ ms \(completed\)", notes)
    assert "Priority 0: #1 before #3 before #5" in notes
    assert "first come, first served" in notes


def test_demo_explains_a_request_already_in_flight(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--fake"]) == 0
    out = capsys.readouterr().out
    started = re.findall(r"started +#(\d)", out)
    notes = " ".join(out.split("Why this order:", 1)[1].split())  # unwrapped
    # Whoever ran first, a higher-priority request that ran later is explained.
    if started.index("4") > started.index("2"):
        assert "#4 interruption (priority 5) ran after #2 scripted: hold message" in notes
        assert "had already been sent" in notes
        assert "session.cancel_response()" in notes


def test_demo_call_plays_a_whole_call_with_no_conflict_reaching_the_app(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--call"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "playing a phone call" in out
    assert re.search(r"service +webhook realtime\.call\.incoming: rtc_", out)
    assert re.search(r"app +POST \.\.\./calls/rtc_\w+/accept -> 200", out)
    assert "audio/pcmu in, audio/pcmu out" in out
    # The caller keeps talking; the data channel starts one; the app greets and answers a tool.
    assert len(re.findall(r"caller +\".*\" -> voice activity starts", out)) == 4
    assert re.search(r"response\.done \w+ \(datachan, completed\)", out)
    assert re.search(r'\(app, completed\) "Thanks for calling the shop', out)
    assert "calls order_status" in out
    assert re.search(r'\(app, completed\) "Your order A-17 shipped', out)
    # The sideband drops, re-attaches, and the call ends with a hang-up the session reports.
    assert "restarts: the sideband is closed cleanly (1000)" in out
    assert "re-attached to the call" in out
    assert re.search(r"hangup -> 200", out)
    assert "CallEnded (call_id_not_found)" in out
    assert "conflicts surfaced to the app 0" in out
    assert "requests 4, completed 4, lost 0" in out
    assert "re-attaches 1, items replayed 0, duplicate items 0" in out
    assert "Traceback" not in captured.err


def test_demo_call_prints_only_its_story(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The sideband's clean closes the demo stages (a proxy restart, the hang-up) are routine on
    # a call: the library logs them at INFO, so stderr stays empty without -v, and -v shows
    # them. A warning of the library still reaches stderr.
    assert main(["demo", "--call"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["demo", "--call", "-v"]) == 0
    staged = re.findall(
        r"^(\w+) trio_realtime\._session: sideband closed .*$", capsys.readouterr().err, re.M
    )
    assert staged == ["INFO", "INFO"]
    with _cli.verbose_logging(0, sys.stderr):
        logging.getLogger("trio_realtime._session").warning(
            "connection lost (%s): opening a new one", "x"
        )
    assert "WARNING trio_realtime._session: connection lost (x)" in capsys.readouterr().err


def test_demo_call_is_the_fake_servers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--call", "--url", "ws://127.0.0.1:1/v1/realtime"]) == 2
    assert "demo --call plays a call on the embedded fake server" in capsys.readouterr().err


@pytest.mark.parametrize("dialect", [[], ["--beta"]])
def test_demo_shows_a_barge_in(dialect: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--fake", *dialect]) == 0
    out = capsys.readouterr().out
    heard = re.search(r"user +starts speaking after (\d+) ms of #6 were played", out)
    assert heard is not None
    cut = re.search(r"interrupt +cancelled (resp_\w+); item \w+ truncated at (\d+) ms", out)
    assert cut is not None
    assert cut.group(2) == heard.group(1)
    assert re.search(r"^ +\d+\.\d ms  cancelled #6 spoken reply", out, re.M)
    assert re.search(r"^  7 next reply, right after +0 +[\d.]+ +1  completed", out, re.M)
    assert "#7 went out at once and was accepted on try 1." in " ".join(out.split())


def test_demo_beta_dialect(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--fake", "--beta"]) == 0
    assert "fake Realtime server (beta)" in capsys.readouterr().out


async def test_demo_against_a_url() -> None:
    with trio.fail_after(30):
        async with open_fake_server() as server:
            status = await trio.to_thread.run_sync(main, ["demo", "--url", server.url])
    assert status == 0


def test_demo_reports_a_connection_failure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--url", f"ws://127.0.0.1:{free_port()}/v1/realtime"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("trio-realtime: could not connect to 127.0.0.1:")
    assert "Connection refused" in err
    assert "ExceptionGroup" not in err
    assert len(err.splitlines()) == 1


def test_ci_command_works() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "trio_realtime", "demo", "--fake"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    assert "rejections surfaced to the app 0" in process.stdout


# ---------------------------------------------------------------- bad input: one line, no traceback


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not a url", "--url: url must start with ws:// or wss://"),
        ("ws://127.0.0.1:99999/", "--url: url port must be a number from 1 to 65535"),
        ("ws://[::1", "--url: url is malformed"),
        ("", "--url: url is empty"),
        ("ws://", "--url: url has no host"),
        ("https://api.openai.com/v1/realtime", "--url: url must start with ws:// or wss://, not"),
    ],
)
@pytest.mark.parametrize("command", ["demo", "chat"])
def test_unusable_url(
    command: str, url: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--url", url]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran: '' does not fall back to the fake server
    assert captured.err.startswith(f"trio-realtime: {problem}")
    assert len(captured.err.splitlines()) == 1


@pytest.mark.parametrize("url", ["not a url", "ws://127.0.0.1:99999/", "ws://[::1", ""])
def test_unusable_url_as_a_user_sees_it(url: str) -> None:
    process = run_cli(["demo", "--url", url])
    assert process.returncode == 2
    assert process.stdout == ""
    assert process.stderr.startswith("trio-realtime: --url: ")
    assert len(process.stderr.splitlines()) == 1
    assert "Traceback" not in process.stderr


def test_no_key_for_a_remote_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--url", "wss://api.openai.com/v1/realtime?model=gpt-realtime"]) == 2
    err = capsys.readouterr().err
    assert err == "trio-realtime: no API key for api.openai.com: set OPENAI_API_KEY\n"


def test_azure_url_wants_the_azure_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--url", "wss://res.openai.azure.com/openai/v1/realtime?model=d"]) == 2
    assert "set AZURE_OPENAI_API_KEY" in capsys.readouterr().err


def test_key_refused_over_plain_ws(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert main(["demo", "--url", "ws://example.com/v1/realtime"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "trio-realtime: refusing to send OPENAI_API_KEY over plain ws:// to example.com: "
        "use wss://\n"
    )


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com"},
            "AZURE_OPENAI_ENDPOINT is set but AZURE_OPENAI_API_KEY and AZURE_OPENAI_DEPLOYMENT "
            "are not",
        ),
        ({"AZURE_OPENAI_API_KEY": KEY}, "set OPENAI_API_KEY, or AZURE_OPENAI_ENDPOINT"),
        ({"OPENAI_API_KEY": "   "}, "OPENAI_API_KEY is empty"),
        ({"OPENAI_API_KEY": f"{KEY}\n"}, "OPENAI_API_KEY contains whitespace"),
        (
            {
                "AZURE_OPENAI_ENDPOINT": "https://[res",
                "AZURE_OPENAI_API_KEY": KEY,
                "AZURE_OPENAI_DEPLOYMENT": "d",
            },
            "AZURE_OPENAI_ENDPOINT: endpoint is malformed",
        ),
    ],
)
def test_bad_environment(
    env: dict[str, str],
    problem: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["chat"]) == 2  # never the fake server when the environment is half set
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"trio-realtime: {problem}")
    assert "--fake" in captured.err
    assert KEY not in captured.err


async def _reject_handshake(request: trio_websocket.WebSocketRequest) -> None:
    await request.reject(401, body=b'{"error": "invalid_api_key"}')


@pytest.mark.parametrize("key", [KEY, None])
async def test_refused_credentials(
    key: str | None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if key is not None:
        monkeypatch.setenv("OPENAI_API_KEY", key)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, _reject_handshake, "127.0.0.1", 0, None
            )
            url = f"ws://127.0.0.1:{server.port}/v1/realtime"
            status = await trio.to_thread.run_sync(main, ["chat", "--url", url])
            nursery.cancel_scope.cancel()
    assert status == 1
    err = capsys.readouterr().err
    assert re.match(r"trio-realtime: handshake (with 127\.0\.0\.1 )?rejected: HTTP 401", err)
    if key is None:
        assert "the server wants an API key" in err
    else:
        assert "the server refused the API key in OPENAI_API_KEY" in err
    assert KEY not in err
    assert len(err.splitlines()) == 1


async def test_keys_never_appear_in_output_or_logs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    with trio.fail_after(30):
        async with open_fake_server() as server:
            status = await trio.to_thread.run_sync(main, ["chat", "-vv", "--url", server.url])
    assert status == 0
    captured = capsys.readouterr()
    assert "trio-websocket" in captured.err  # -vv really logged everything
    assert KEY not in captured.out
    assert KEY not in captured.err


# ---------------------------------------------------------------- help, without the extras


@pytest.mark.parametrize("command", [[], ["demo"], ["chat"], ["bench"]])
def test_help_names_the_environment_variables(command: list[str]) -> None:
    process = run_cli([*command, "--help"])
    assert process.returncode == 0, process.stderr
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY"):
        assert name in process.stdout
    assert "AZURE_OPENAI_DEPLOYMENT" in process.stdout
    if command != ["bench"]:
        for name in ENV_VARIABLES:  # everything Endpoint.from_env() reads
            assert name in process.stdout


def test_demo_and_chat_run_without_the_extras() -> None:
    demo = run_cli(["demo"])
    assert demo.returncode == 0, demo.stderr
    assert "rejections surfaced to the app 0" in demo.stdout
    chat = run_cli(["chat"], stdin="hi\n")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout == "(fake server) You said: hi\n"
    call = run_cli(["demo", "--call"])
    assert call.returncode == 0, call.stderr
    assert "conflicts surfaced to the app 0" in call.stdout


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["demo", "--fake", "--url", "ws://127.0.0.1:1/"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


# ---------------------------------------------------------------- -v and -vv


def test_verbose_shows_the_library_lines_only(capsys: pytest.CaptureFixture[str]) -> None:
    root_level = logging.getLogger().level
    assert main(["demo", "-v"]) == 0
    err = capsys.readouterr().err
    names = set(re.findall(r"^DEBUG (\S+):", err, re.MULTILINE))
    assert names
    assert all(name.startswith("trio_realtime") for name in names), names
    assert "DEBUG trio-websocket" not in err  # its frame-by-frame lines wait for -vv
    assert logging.getLogger().level == root_level  # restored


def test_very_verbose_shows_every_library(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "-vv"]) == 0
    err = capsys.readouterr().err
    assert "DEBUG trio-websocket" in err
    assert "DEBUG trio_realtime" in err


def test_quiet_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    assert capsys.readouterr().err == ""


def test_failure_messages_never_show_the_key() -> None:
    target = Target(Endpoint.openai(KEY), "OPENAI_API_KEY")
    quoted = ConnectionLost(f"the server refused the session (invalid_api_key): bad key {KEY}.")
    message = describe_failure(quoted, target)
    assert KEY not in message
    assert message == (
        "the server refused the session (invalid_api_key): bad key <redacted> "
        "(the server refused the API key in OPENAI_API_KEY)"
    )
    assert describe_failure(ConnectionLost("connection lost"), target) == "connection lost"


def test_verbose_failure_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "-v", "--url", f"ws://127.0.0.1:{free_port()}/"]) == 1
    err = capsys.readouterr().err
    assert "DEBUG trio_realtime._cli: the run failed\n" in err
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1].startswith("trio-realtime: could not connect")


def _args(url: str | None = None, *, fake: bool = False, beta: bool = False) -> argparse.Namespace:
    return argparse.Namespace(url=url, fake=fake, beta=beta)


@pytest.mark.parametrize(
    ("url", "env", "headers", "variable"),
    [
        (
            "wss://api.openai.com/v1/realtime?model=m",
            {"OPENAI_API_KEY": KEY, "AZURE_OPENAI_API_KEY": "other"},
            {"Authorization": f"Bearer {KEY}"},
            "OPENAI_API_KEY",
        ),
        (
            "wss://res.openai.azure.com/openai/v1/realtime?model=d",
            {"OPENAI_API_KEY": "other", "AZURE_OPENAI_API_KEY": KEY},
            {"api-key": KEY},
            "AZURE_OPENAI_API_KEY",
        ),
        ("ws://127.0.0.1:9/v1/realtime", {}, {}, None),  # loopback: no key needed
    ],
)
def test_url_takes_the_key_its_host_needs(
    url: str, env: dict[str, str], headers: dict[str, str], variable: str | None
) -> None:
    target = resolve_target(_args(url), env)
    assert target.endpoint is not None
    assert target.endpoint.url == url
    assert dict(target.endpoint.headers) == headers
    assert target.key_variable == variable
    beta = resolve_target(_args(url, beta=True), env)
    assert beta.endpoint is not None
    assert dict(beta.endpoint.headers) == {**headers, "OpenAI-Beta": "realtime=v1"}


def test_environment_or_fake_server() -> None:
    assert resolve_target(_args(), {}).fake
    assert resolve_target(_args(), {"OPENAI_REALTIME_MODEL": "m"}).fake  # no credential named
    assert resolve_target(_args(fake=True), {"OPENAI_API_KEY": KEY}).fake
    target = resolve_target(_args(beta=True), {"OPENAI_API_KEY": KEY})
    assert target.endpoint is not None
    assert target.key_variable == "OPENAI_API_KEY"
    assert dict(target.endpoint.headers)["OpenAI-Beta"] == "realtime=v1"
    with pytest.raises(UsageError, match="exclude each other"):
        resolve_target(_args("ws://127.0.0.1:9/", fake=True), {})
