"""Tool calls: the registry (schemas, validation, outputs) and the runner (over a session)."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import pydantic
import pytest
import trio
import trio.testing

from memory import SESSION_CREATED, Peer, memory_pair
from trio_realtime import (
    ConnectionLost,
    EventBufferOverflow,
    FunctionCallItem,
    RealtimeError,
    RealtimeSession,
    ResponseResult,
    SessionClosed,
    SessionConfig,
    ToolRegistry,
    ToolRunner,
    open_session,
    run_tools,
)
from trio_realtime.testing import (
    Behavior,
    FakeRealtimeServer,
    FunctionCall,
    Script,
    open_fake_server,
)

# ---------------------------------------------------------------------------- module-level types
# (hints are resolved at the tool's module level, as pydantic does for validate_call)


class Forecast(pydantic.BaseModel):
    city: str
    celsius: float


async def get_weather(
    city: Annotated[str, pydantic.Field(description="City name, e.g. Oslo")],
    unit: Literal["c", "f"] = "c",
    days: Annotated[int, pydantic.Field(ge=1, le=7)] = 1,
) -> Forecast:
    """The weather forecast for a city."""
    await trio.lowlevel.checkpoint()
    return Forecast(city=city, celsius=21.5 if unit == "c" else 70.7)


def call(name: str, arguments: str = "{}", call_id: str = "call_1") -> FunctionCallItem:
    return FunctionCallItem(call_id, name, arguments)


def error_of(output: str) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(output)["error"]
    return error


# ---------------------------------------------------------------------------- registering


def test_schema_derived_from_type_hints() -> None:
    registry = ToolRegistry()
    assert registry.tool(get_weather) is get_weather  # the decorator returns the function
    [definition] = registry.definitions()
    assert definition == {
        "type": "function",
        "name": "get_weather",
        "description": "The weather forecast for a city.",
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "city": {"type": "string", "title": "City", "description": "City name, e.g. Oslo"},
                "unit": {"type": "string", "title": "Unit", "enum": ["c", "f"], "default": "c"},
                "days": {
                    "type": "integer",
                    "title": "Days",
                    "minimum": 1,
                    "maximum": 7,
                    "default": 1,
                },
            },
            "required": ["city"],
        },
    }
    assert registry["get_weather"].validated
    assert "get_weather" in registry
    assert len(registry) == 1


def test_explicit_schema_is_taken_as_given_and_copied() -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"q": {"type": "string"}}}
    registry = ToolRegistry()

    @registry.tool(name="search-web", description="Search.", parameters=schema, timeout=2)
    async def search(**arguments: Any) -> str:
        return "found"

    schema["properties"]["q"]["type"] = "number"  # the caller's dict is not the tool's
    first, second = registry.definitions(), registry.definitions()
    assert first == [
        {
            "type": "function",
            "name": "search-web",
            "description": "Search.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    first[0]["parameters"]["properties"].clear()  # and the definitions are fresh each time
    assert second[0]["parameters"]["properties"] == {"q": {"type": "string"}}
    tool = registry["search-web"]
    assert (tool.timeout, tool.validated, tool.function) == (2, False, search)


def test_description_defaults_to_the_docstring_and_may_be_empty() -> None:
    registry = ToolRegistry()

    @registry.tool
    async def undocumented(x: int) -> int:
        return x

    @registry.tool(description="Overrides.")
    async def documented() -> None:
        """Not this."""

    assert [d["description"] for d in registry.definitions()] == ["", "Overrides."]


async def test_without_pydantic_explicit_schemas_still_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in ("pydantic", "pydantic_core"):
        monkeypatch.setitem(sys.modules, module, None)  # importing it now fails
    registry = ToolRegistry()

    @registry.tool(parameters={"type": "object", "properties": {"n": {"type": "integer"}}})
    async def double(n: int) -> dict[str, Any]:
        return {"n": n * 2}

    @registry.tool(parameters={"type": "object"})
    async def opaque() -> object:
        return {1, 2}

    with pytest.raises(ImportError, match=r"trio-realtime\[tools\].*parameters="):
        registry.add(get_weather)
    assert list(registry) == [registry["double"], registry["opaque"]]
    with trio.fail_after(5):
        assert await registry.execute(call("double", '{"n": 2}')) == '{"n": 4}'
        error = error_of(await registry.execute(call("opaque")))
    assert error == {
        "type": "unserializable_result",
        "message": "the result is not JSON: set is not JSON serializable",
    }


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "has space"}, ValueError, "letters, digits"),
        ({"name": "x" * 65}, ValueError, "letters, digits"),
        ({"name": "get_weather"}, ValueError, "already registered"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": -1.0}, ValueError, "timeout"),
        ({"parameters": {"type": "object", "default": object()}}, ValueError, "not a JSON"),
        ({"parameters": ["not", "an", "object"]}, ValueError, "JSON schema object"),
    ],
)
def test_registration_mistakes_are_refused(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    registry = ToolRegistry()
    registry.add(get_weather)

    async def tool(city: str) -> str:
        return city

    with pytest.raises(error, match=match):
        registry.add(tool, **kwargs)
    assert len(registry) == 1


def test_only_async_functions_with_named_parameters() -> None:
    registry = ToolRegistry()

    def blocking(city: str) -> str:
        return city

    async def variadic(*cities: str) -> str:
        return ""

    async def keywords(**options: str) -> str:
        return ""

    async def positional(city: str, /) -> str:
        return city

    with pytest.raises(TypeError, match="async function"):
        registry.add(blocking)  # type: ignore[arg-type]
    for function in (variadic, keywords, positional):
        with pytest.raises(TypeError, match="cannot come from a JSON object"):
            registry.add(function)
    registry.add(keywords, parameters={"type": "object"})  # explicit: any keywords will do
    assert list(registry) == [registry["keywords"]]


def test_hints_that_do_not_resolve_are_refused_at_registration() -> None:
    class Local(pydantic.BaseModel):  # not visible at module level: the hint cannot resolve
        a: int

    async def uses_local(value: Local) -> None:
        return None

    with pytest.raises(TypeError, match="cannot derive a parameters schema"):
        ToolRegistry().add(uses_local)


def test_registry_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        ToolRegistry(timeout=0)
    assert ToolRegistry(timeout=math.inf).timeout == math.inf


# ---------------------------------------------------------------------------- executing


async def test_results_str_as_is_anything_else_as_json() -> None:
    registry = ToolRegistry()

    @registry.tool
    async def text() -> str:
        return '{"already": "json"} or not'

    @registry.tool
    async def mapping(n: int) -> dict[str, Any]:
        return {"n": n, "ok": True}

    @registry.tool
    async def nothing() -> None:
        return None

    registry.add(get_weather)
    with trio.fail_after(5):
        assert await registry.execute(call("text")) == '{"already": "json"} or not'
        # validated and converted by pydantic: "3" is an int for an int parameter
        assert json.loads(await registry.execute(call("mapping", '{"n": "3"}'))) == {
            "n": 3,
            "ok": True,
        }
        assert await registry.execute(call("nothing", "")) == "null"  # "" is no arguments
        weather = await registry.execute(call("get_weather", '{"city": "Oslo"}'))
        assert json.loads(weather) == {"city": "Oslo", "celsius": 21.5}  # a pydantic model


async def test_failures_become_error_outputs_and_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = ToolRegistry()
    registry.add(get_weather)

    @registry.tool
    async def boom(city: str) -> str:
        raise LookupError(f"no such city: {city}")

    @registry.tool(parameters={"type": "object", "properties": {"x": {"type": "integer"}}})
    async def explicit(x: int) -> int:
        return x

    @registry.tool
    async def opaque() -> object:
        return object()

    caplog.set_level(logging.WARNING, logger="trio_realtime")
    with trio.fail_after(5):
        failures = [
            (call("boom", '{"city": "Atlantis"}'), "LookupError", "no such city: Atlantis"),
            (call("nope"), "unknown_tool", "no tool named 'nope'"),
            (call("boom", '{"city": '), "invalid_arguments", "not valid JSON"),
            (call("boom", '["Oslo"]'), "invalid_arguments", "not a JSON object"),
            (call("explicit", '{"y": 1}'), "invalid_arguments", "unexpected keyword"),
            (call("opaque"), "unserializable_result", "not JSON"),
        ]
        for item, kind, message in failures:
            error = error_of(await registry.execute(item))
            assert error["type"] == kind
            assert message in error["message"]
        invalid = error_of(
            await registry.execute(call("get_weather", '{"city": 7, "days": 9, "extra": 1}'))
        )
    assert invalid["type"] == "invalid_arguments"
    assert sorted((d["loc"], d["msg"]) for d in invalid["details"]) == [
        (["city"], "Input should be a valid string"),
        (["days"], "Input should be less than or equal to 7"),
        (["extra"], "Unexpected keyword argument"),
    ]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(failures) + 1
    assert warnings[0].exc_info is not None  # the tool's exception, with its traceback
    assert "no tool named" in warnings[1].getMessage()


async def test_a_call_past_its_deadline_is_cancelled_and_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = ToolRegistry(timeout=10)
    cancelled: list[str] = []

    async def hang(name: str) -> str:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(name)
        raise AssertionError("unreachable")

    @registry.tool(timeout=1.5)
    async def quick() -> str:
        return await hang("quick")

    @registry.tool
    async def default() -> str:
        return await hang("default")

    with trio.fail_after(60):
        start = trio.current_time()
        error = error_of(await registry.execute(call("quick")))
        assert error == {"type": "timeout", "message": "quick did not finish within 1.5 s"}
        assert trio.current_time() - start == pytest.approx(1.5)
        error = error_of(await registry.execute(call("default")))
        assert error["message"] == "default did not finish within 10 s"
    assert cancelled == ["quick", "default"]


async def test_outside_cancellation_is_never_swallowed() -> None:
    registry = ToolRegistry()
    entered = trio.Event()

    @registry.tool
    async def waits() -> str:
        entered.set()
        await trio.sleep_forever()
        return ""

    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(registry.execute, call("waits"))
                await entered.wait()
                scope.cancel()
        assert scope.cancelled_caught


async def test_an_exception_group_from_a_tools_nursery_is_an_error_output() -> None:
    registry = ToolRegistry()

    @registry.tool
    async def fan_out() -> str:
        async def fail() -> None:
            raise ValueError("one branch failed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail)
            nursery.start_soon(trio.sleep_forever)
        return ""

    with trio.fail_after(5):
        error = error_of(await registry.execute(call("fan_out")))
    assert error["type"] == "ExceptionGroup"
    assert "1 sub-exception" in error["message"]


# ---------------------------------------------------------------------------- the runner, loopback


def tool_turns(calls: tuple[FunctionCall, ...]) -> Behavior:
    """The model calls ``calls`` when asked to "use tools", and answers "All done." after."""

    def script(body: Any) -> Script:
        if body.get("instructions") == "use tools":
            return Script(text=None, function_calls=calls)
        return Script(text="All done.")

    return Behavior(script=script)


def received(server: FakeRealtimeServer, type: str) -> list[dict[str, Any]]:
    return [event for event in server.received if event["type"] == type]


def outputs_by_call(server: FakeRealtimeServer) -> dict[str, str]:
    return {
        e["item"]["call_id"]: e["item"]["output"]
        for e in received(server, "conversation.item.create")
        if e["item"]["type"] == "function_call_output"
    }


async def test_calls_of_a_turn_run_concurrently() -> None:
    """Each tool waits for the other to have started: run one after the other, they would
    wait forever (and ``fail_after`` would fail the test)."""
    registry = ToolRegistry()
    started = {"a": trio.Event(), "b": trio.Event()}

    async def meet(me: str, other: str) -> str:
        started[me].set()
        await started[other].wait()
        return me

    @registry.tool
    async def tool_a() -> str:
        return await meet("a", "b")

    @registry.tool
    async def tool_b() -> str:
        return await meet("b", "a")

    calls = (FunctionCall("tool_a", "{}", "call_a"), FunctionCall("tool_b", "{}", "call_b"))
    with trio.fail_after(10):
        async with (
            open_fake_server(behavior=tool_turns(calls)) as server,
            trio.open_nursery() as nursery,
        ):
            async with open_session(server.url) as session:
                runner = ToolRunner(registry)
                await nursery.start(runner.run, session)
                await session.request_response({"instructions": "use tools"}).wait_done()
                await server.wait_for_client_event("response.create", count=2)
        assert outputs_by_call(server) == {"call_a": "a", "call_b": "b"}


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_one_follow_up_per_turn_whatever_the_calls_did(
    dialect: Literal["ga", "beta"], caplog: pytest.LogCaptureFixture
) -> None:
    registry = ToolRegistry()
    registry.add(get_weather)

    @registry.tool
    async def boom() -> str:
        raise RuntimeError("tool broke")

    calls = (
        FunctionCall("get_weather", '{"city": "Oslo", "unit": "f"}', "call_ok"),
        FunctionCall("boom", "{}", "call_boom"),
        FunctionCall("teleport", "{}", "call_unknown"),
        FunctionCall("get_weather", '{"city": ', "call_bad_json"),
    )
    caplog.set_level(logging.WARNING, logger="trio_realtime")
    with trio.fail_after(10):
        async with (
            open_fake_server(dialect=dialect, behavior=tool_turns(calls)) as server,
            trio.open_nursery() as nursery,
        ):
            async with open_session(server.url) as session:
                runner = ToolRunner(registry, follow_up={"instructions": "sum up"})
                await nursery.start(runner.run, session)
                turn = await session.request_response({"instructions": "use tools"}).wait_done()
                assert len(turn.function_calls) == 4
                follow_up = await runner.wait_follow_up(turn)
                assert (await follow_up.wait_done()).text == "All done."
                assert await runner.wait_follow_up(turn) is follow_up
                # Anything queued by the turn would go out before this marker request.
                marker = await session.request_response({"instructions": "marker"}).wait_done()
                assert marker.status == "completed"
                stats = runner.statistics()
        creates = received(server, "response.create")
        assert [c["response"].get("instructions") for c in creates] == [
            "use tools",
            "sum up",
            "marker",
        ]
        outputs = outputs_by_call(server)
        assert json.loads(outputs["call_ok"]) == {"city": "Oslo", "celsius": 70.7}
        assert error_of(outputs["call_boom"]) == {"type": "RuntimeError", "message": "tool broke"}
        assert error_of(outputs["call_unknown"])["type"] == "unknown_tool"
        assert error_of(outputs["call_bad_json"])["type"] == "invalid_arguments"
        # the follow-up went out after every output
        last_output = max(
            server.received.index(e) for e in received(server, "conversation.item.create")
        )
        assert server.received.index(creates[1]) > last_output
        assert (stats.calls, stats.failed, stats.results_sent, stats.in_flight) == (4, 3, 4, 0)
        assert len([r for r in caplog.records if r.name == "trio_realtime._tools"]) == 3


@pytest.mark.parametrize("how", ["closed", "abort"])
async def test_runner_ends_with_the_session_and_cancels_running_calls(how: str) -> None:
    registry = ToolRegistry(timeout=math.inf)
    entered = trio.Event()
    cancelled = trio.Event()

    @registry.tool
    async def forever() -> str:
        entered.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        return ""

    runner = ToolRunner(registry)
    runner_ended = trio.Event()
    waiter_saw: list[BaseException] = []

    async def wait_follow_up(turn: ResponseResult) -> None:
        with pytest.raises(RealtimeError) as raised:
            await runner.wait_follow_up(turn)
        waiter_saw.append(raised.value)

    async def run(session: RealtimeSession, *, task_status: trio.TaskStatus[None]) -> None:
        await runner.run(session, task_status=task_status)
        runner_ended.set()

    calls = (FunctionCall("forever", "{}"),)
    with trio.fail_after(10):
        async with (
            open_fake_server(behavior=tool_turns(calls)) as server,
            trio.open_nursery() as nursery,
        ):
            async with open_session(server.url) as session:
                await nursery.start(run, session)
                turn = await session.request_response({"instructions": "use tools"}).wait_done()
                nursery.start_soon(wait_follow_up, turn)
                await entered.wait()
                assert runner.statistics().in_flight == 1
                if how == "abort":
                    await server.connections[0].abort()
                    await runner_ended.wait()  # while the session's block goes on
                    assert session.closed
            await runner_ended.wait()
        assert cancelled.is_set()
        [error] = waiter_saw
        assert type(error) is (SessionClosed if how == "closed" else ConnectionLost)
        assert runner.statistics().in_flight == 0
        assert runner.statistics().results_sent == 0
        assert received(server, "conversation.item.create") == []


async def test_runner_on_an_ended_session_returns_at_once() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            async with open_session(server.url) as session:
                pass
            async with trio.open_nursery() as nursery:
                await nursery.start(run_tools, session, ToolRegistry())
            runner = ToolRunner(ToolRegistry())
            await runner.run(session)
            assert runner.statistics().calls == 0
            done = ResponseResult("completed", {"id": "resp_1", "output": []})
            with pytest.raises(ValueError, match="no function calls"):
                await runner.wait_follow_up(done)
            calls = {
                "id": "resp_1",
                "output": [{"type": "function_call", "call_id": "c", "name": "f"}],
            }
            with pytest.raises(SessionClosed):
                await runner.wait_follow_up(ResponseResult("completed", calls))
            with pytest.raises(ValueError, match="out-of-band"):
                await runner.wait_follow_up(
                    ResponseResult("completed", {**calls, "conversation_id": None})
                )


# ---------------------------------------------------------------------------- the runner, in memory


@asynccontextmanager
async def memory_session(
    registry: ToolRegistry,
) -> AsyncIterator[tuple[RealtimeSession, Peer, ToolRunner]]:
    transport, peer = memory_pair()
    await peer.send(SESSION_CREATED)
    runner = ToolRunner(registry)
    async with trio.open_nursery() as nursery:
        async with open_session(transport, config=SessionConfig()) as session:
            await nursery.start(runner.run, session)
            yield session, peer, runner


def function_call(call_id: str, name: str = "slow", arguments: str = "{}") -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


async def server_turn(peer: Peer, rid: str, *calls: dict[str, Any], oob: bool = False) -> None:
    """A server-started response (voice activity) that makes ``calls``."""
    conversation = {"conversation_id": None} if oob else {}
    await peer.send({"type": "response.created", "response": {"id": rid, **conversation}})
    for call in calls:
        await peer.send({"type": "response.output_item.added", "response_id": rid, "item": call})
    await peer.done(None, rid, output=list(calls), **conversation)


async def test_timeout_over_a_session_answers_then_follows_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = ToolRegistry(timeout=4)

    @registry.tool
    async def slow() -> str:
        await trio.sleep_forever()
        return ""

    with trio.fail_after(60):
        async with memory_session(registry) as (_, peer, runner):
            start = trio.current_time()
            await server_turn(peer, "resp_1", function_call("call_1"))
            item = await peer.expect("conversation.item.create")
            assert trio.current_time() - start == pytest.approx(4)
            assert item["item"]["call_id"] == "call_1"
            assert error_of(item["item"]["output"])["type"] == "timeout"
            follow_up = await peer.expect("response.create")
            assert "instructions" not in follow_up["response"]
            await peer.complete(follow_up, "resp_2")
            await trio.testing.wait_all_tasks_blocked()
            assert peer.unread() == []
            assert runner.statistics().failed == 1


async def test_each_call_is_answered_once_and_out_of_band_calls_are_left_alone() -> None:
    registry = ToolRegistry()
    runs: list[str] = []

    @registry.tool
    async def slow(tag: str) -> str:
        runs.append(tag)
        return tag

    with trio.fail_after(10):
        async with memory_session(registry) as (_, peer, runner):
            # out of band: not run, no output (its result has no place in the conversation)
            await server_turn(
                peer, "resp_oob", function_call("call_oob", arguments='{"tag": "o"}'), oob=True
            )
            await server_turn(peer, "resp_1", function_call("call_1", arguments='{"tag": "1"}'))
            item = await peer.expect("conversation.item.create")
            follow_up = await peer.expect("response.create")
            # the same done again (a duplicate): the call is not run again
            await peer.done(
                None, "resp_1", output=[function_call("call_1", arguments='{"tag": "1"}')]
            )
            await peer.complete(follow_up, "resp_2")
            await trio.testing.wait_all_tasks_blocked()
            assert peer.unread() == []
    assert item["item"] == {"type": "function_call_output", "call_id": "call_1", "output": "1"}
    assert runs == ["1"]
    assert runner.statistics().calls == 1


# ---------------------------------------------------------------------------- the runner, stubbed


class StubSession:
    """Just the public methods the runner uses: each subscription gives the next
    ``response.done`` (or waits forever when there is none left); the first is then cut off,
    the others end once every call has its result."""

    def __init__(self, *dones: dict[str, Any]) -> None:
        self.dones = list(dones)
        self.calls = len(dones)
        self.results: list[tuple[str, str]] = []
        self.subscriptions = 0
        self.answered = trio.Event()  # set once every call given has its result

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        self.subscriptions += 1
        first = self.subscriptions == 1

        async def events() -> AsyncIterator[dict[str, Any]]:
            if not self.dones:
                await trio.sleep_forever()
            yield self.dones.pop(0)
            if first:
                raise EventBufferOverflow("cut off")
            await self.answered.wait()  # then the session ends

        stream = events()
        try:
            yield stream
        finally:
            await stream.aclose()

    async def send_function_result(self, call_id: str, output: str, **_: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.results.append((call_id, output))
        if len(self.results) == self.calls:
            self.answered.set()


async def test_a_runner_cut_off_subscribes_again(caplog: pytest.LogCaptureFixture) -> None:
    registry = ToolRegistry()

    @registry.tool
    async def slow(tag: str) -> str:
        return tag

    def done(rid: str, call_id: str) -> dict[str, Any]:
        call = function_call(call_id, arguments=json.dumps({"tag": call_id}))
        return {"type": "response.done", "response": {"id": rid, "output": [call]}}

    session = StubSession(done("resp_1", "call_1"), done("resp_2", "call_2"))
    runner = ToolRunner(registry)
    with trio.fail_after(5):
        await runner.run(session)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run, StubSession())  # a session that never ends
            with pytest.raises(RuntimeError, match="already running"):
                await runner.run(session)  # type: ignore[arg-type]
            nursery.cancel_scope.cancel()
    assert session.subscriptions == 2
    # a call started before the cut-off is answered too: the calls outlive a subscription
    assert sorted(session.results) == [("call_1", "call_1"), ("call_2", "call_2")]
    assert any(r.levelno == logging.ERROR and "cut off" in r.getMessage() for r in caplog.records)
