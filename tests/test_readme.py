"""The README's promises: its Quick start holds two commands, and every example in it type-checks
(``mypy --strict``) and runs."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_realtime import open_session
from trio_realtime.testing import Behavior, FunctionCall, Script, open_fake_server

README = Path(__file__).resolve().parent.parent / "README.md"
pytest_plugins = ["pytester"]


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.M | re.S)


def test_quick_start_has_the_two_commands() -> None:
    section = README.read_text().split("## Quick start", 1)[1]
    first = re.search(r"^```\w*\n(.*?)^```", section, re.M | re.S)
    assert first is not None
    commands = [line for line in first.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    assert "demo --fake" in commands[0]
    assert "pytest" in commands[1]


def test_pytest_example_passes(pytester: pytest.Pytester) -> None:
    [example] = [b for b in blocks("python") if b.startswith("# test_my_agent.py")]
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_my_agent=example)
    result = pytester.runpytest_subprocess("-W", "error")
    result.assert_outcomes(passed=1)


def _python_blocks() -> dict[str, str]:
    """Every Python example of the README, by the file name its first line gives it."""
    examples = {}
    for block in blocks("python"):
        first = block.splitlines()[0]
        assert first.startswith("# "), f"unnamed README example: {first!r}"
        assert ".py" in first, f"unnamed README example: {first!r}"
        examples[first[2:].split()[0]] = block
    return examples


def test_every_python_example_passes_mypy_strict(tmp_path: Path) -> None:
    mypy_api = pytest.importorskip("mypy.api")
    examples = _python_blocks()
    for name, block in examples.items():
        (tmp_path / name).write_text(block)
    out, err, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"), str(tmp_path)]
    )
    assert status == 0, out + err
    assert {
        "app.py",
        "tools.py",
        "vad.py",
        "endpoints.py",
        "reconnect.py",
        "barge_in.py",
        "call.py",
        "test_my_agent.py",
        "test_sdk_app.py",
        "test_phone_agent.py",
        "test_out_of_process.py",
    } <= set(examples)


def _module(name: str) -> dict[str, Any]:
    """Import a README example as a module (not as ``__main__``: its ``main()`` is not run)."""
    module = types.ModuleType(f"readme_{name.removesuffix('.py')}")
    sys.modules[module.__name__] = module  # pydantic resolves type hints through it
    exec(compile(_python_blocks()[name], f"README.md:{name}", "exec"), module.__dict__)
    return module.__dict__


async def test_the_application_example_runs() -> None:
    with trio.fail_after(20):
        async with open_fake_server() as server:
            await _module("app.py")["main"](server.url)
            kinds = [e["type"] for e in server.received]
            assert kinds.count("response.create") == 2


async def test_the_tools_example_runs() -> None:
    calls_made = 0

    def script(body: Mapping[str, Any]) -> Script:
        nonlocal calls_made
        if calls_made == 0:  # the first response calls the tool; the follow-up answers
            calls_made += 1
            call = FunctionCall("get_weather", '{"city": "Oslo"}')
            return Script(text=None, function_calls=(call,))
        return Script(text="21.5 degrees.")

    with trio.fail_after(20):
        async with open_fake_server() as server:
            server.behavior.script = script
            await _module("tools.py")["main"](server.url)
            [output] = [e for e in server.received if e["type"] == "conversation.item.create"]
            assert '"celsius": 21.5' in output["item"]["output"]
            assert len([e for e in server.received if e["type"] == "response.create"]) == 2


async def test_the_voice_activity_example_runs() -> None:
    with trio.fail_after(20):
        async with open_fake_server() as server, open_session(server.url) as session:
            await _module("vad.py")["let_the_application_decide"](session)
            detection = server.connections[0].session["audio"]["input"]["turn_detection"]
            assert detection["create_response"] is False


def test_the_endpoints_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-readme")
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    module = _module("endpoints.py")
    assert module["azure"].url.startswith("wss://my-resource.openai.azure.com/openai/v1/realtime")
    assert "api-version=2025-04-01-preview" in module["preview"].url
    assert module["from_env"].url.startswith("wss://api.openai.com/v1/realtime")


async def test_the_barge_in_example_runs() -> None:
    module = _module("barge_in.py")
    player = module["Player"]()
    behavior = Behavior(audio_pace=20.0, audio_chunk_ms=20)
    with trio.fail_after(20):
        async with (
            open_fake_server(behavior=behavior) as server,
            open_session(server.url) as session,
        ):
            conn = await server.wait_connection()
            reply = session.request_response(
                {"output_modalities": ["audio"], "instructions": "Say exactly: " + "la " * 100}
            )

            async def user_speaks_after_200_ms() -> None:
                async with session.subscribe() as events:
                    heard = 0
                    async for event in events:  # 20 ms a delta
                        heard += event["type"] == "response.output_audio.delta"
                        if heard == 10:
                            break
                await conn.start_response()  # speech_started, then the user's turn

            async with trio.open_nursery() as nursery:
                nursery.start_soon(user_speaks_after_200_ms)
                cut = await module["converse"](session, player)
            assert cut.cancelled == (reply.response_id,)
            assert cut.truncated is not None
            assert cut.truncated[2] == player.played_ms > 0
            assert cut.errors == ()
            assert (await reply.wait_done()).status == "cancelled"
            assert "error" not in conn.sent_types()


async def test_the_reconnect_example_runs() -> None:
    with trio.fail_after(20):
        async with open_fake_server() as server:
            session = await _module("reconnect.py")["agent"](server.url)
            assert session.config.reconnect is not None
            assert session.statistics().completed == 1


async def test_the_call_example_runs() -> None:
    """The whole call flow, against the fake server's call mode: the webhook, the accept (which
    keeps G.711), the sideband, a greeting while the caller talks, two tool calls, the hang-up."""
    from openai import AsyncOpenAI

    from trio_realtime.testing import default_script

    spoken = 0

    def script(body: Mapping[str, Any]) -> Script:
        nonlocal spoken
        if "instructions" in body:  # the application's say()
            return default_script(body)
        if "metadata" in body:  # a tool follow-up
            return Script(text="Your order has shipped.")
        spoken += 1  # the caller spoke
        if spoken == 1:
            return Script(
                text=None, function_calls=(FunctionCall("order_status", '{"order": "A-17"}'),)
            )
        return Script(text=None, function_calls=(FunctionCall("end_call", "{}"),))

    with trio.fail_after(20):
        async with open_fake_server() as server:
            server.behavior.script = script
            call = server.incoming_call()
            client = AsyncOpenAI(api_key="sk-test", base_url=server.rest_base_url, max_retries=0)
            handler = _module("call.py")["on_incoming_call"]
            said: list[str] = []

            async def answer() -> None:
                said.extend(
                    await handler(
                        call.webhook,
                        client,
                        api_key="sk-test",
                        url=server.sideband_url(call).split("?")[0],
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer)
                await call.wait_sidebands(1)
                await call.connection.start_response()  # "Where is my order A-17?"
                await call.connection.start_response()  # "Thanks, that's all."
                await call.wait_state("ended")
            await client.close()
            assert said == ["Thanks for calling. How can I help?", "Goodbye!"]
            assert call.ended_by == "hung_up"
            assert call.session is not None
            assert call.session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
            outputs = [
                e["item"]["output"]
                for e in call.connection.received
                if e["type"] == "conversation.item.create"
            ]
            assert outputs == ['{"order": "A-17", "status": "shipped"}', "ok"]


# ---------------------------------------------------------------- the API and the test kit


def _section(title: str) -> str:
    text = README.read_text()
    return text.split(title, 1)[1].split("\n## ", 1)[0]


def test_say_is_described() -> None:
    api = _section("## Use it in a Trio application")
    match = re.search(
        r"^- `await session\.say\(text, \*, priority=0, response=None\)[^\n]*", api, re.M
    )
    assert match is not None, "session.say() is used but not described"
    described = " ".join(api[match.start() :].split("\n- ", 1)[0].split())
    assert "Say exactly" in described  # what it sends
    assert "request_response" in described  # how it is queued


def _controls() -> tuple[str, str]:
    fake = _section("### The fake server")
    table = fake.split("**Controls**", 1)[1]
    rows = "\n".join(line for line in table.splitlines() if line.startswith("| `"))
    server = table.split("The server itself has", 1)[1]
    return rows, server


def _named(text: str) -> dict[str, bool]:
    """Each name in backticks, and whether it is shown with ``await``."""
    named: dict[str, bool] = {}
    for code in re.findall(r"`([^`]+)`", text):
        match = re.match(r"(await )?(?:server\.)?([a-z_]+)", code)
        if match:
            named[match.group(2)] = bool(match.group(1))
    return named


def test_the_controls_say_which_are_coroutines() -> None:
    import inspect

    from trio_realtime.testing import FakeRealtimeServer
    from trio_realtime.testing._server import FakeConnection

    rows, server = _controls()
    first_cells = "\n".join(row.split(" | ", 1)[0] for row in rows.splitlines())
    for cls, text in ((FakeConnection, first_cells), (FakeRealtimeServer, server)):
        named = _named(text)
        for name, awaited in named.items():
            member = inspect.getattr_static(cls, name, None)
            if member is None:
                continue
            coroutine = inspect.iscoroutinefunction(member)
            assert awaited == coroutine, (
                f"{cls.__name__}.{name} is {'a coroutine' if coroutine else 'not a coroutine'}: "
                f"the README must {'' if coroutine else 'not '}show it with await"
            )
    public = {n for n in dir(FakeConnection) if not n.startswith("_")}
    missing = public - set(_named(first_cells))
    assert not missing, f"FakeConnection controls missing from the README's table: {missing}"


def test_every_behavior_knob_is_in_the_table() -> None:
    import attrs

    from trio_realtime.testing import Behavior

    table = _section("### The fake server").split("**`Behavior` knobs**", 1)[1]
    table = table.split("**Controls**", 1)[0]
    listed = set(re.findall(r"^\| `([a-z_]+)` \[", table, re.M))
    missing = {field.name for field in attrs.fields(Behavior)} - listed
    assert not missing, f"Behavior knobs missing from the README's table: {missing}"


def test_the_fake_server_examples_pass(pytester: pytest.Pytester) -> None:
    """The call-mode example (REST through the ``openai`` package, a sideband through
    ``open_session``) and the out-of-process one."""
    pytest.importorskip("openai")
    examples = _python_blocks()
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(
        test_phone_agent=examples["test_phone_agent.py"],
        test_out_of_process=examples["test_out_of_process.py"],
    )
    result = pytester.runpytest_subprocess("-W", "error")
    result.assert_outcomes(passed=2)


def test_the_openai_sdk_example_passes(pytester: pytest.Pytester) -> None:
    pytest.importorskip("openai")
    [example] = [b for b in blocks("python") if b.startswith("# test_sdk_app.py")]
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_sdk_app=example)
    result = pytester.runpytest_subprocess("-W", "error")
    result.assert_outcomes(passed=1)
