"""Tool calls: a registry of async functions the model may call, and a runner that answers
every function call of a session.

The rules, in the order a call meets them:

1. A :class:`ToolRegistry` holds tools: an async function, its name, a description and the JSON
   schema of its parameters, either given (``parameters=``) or derived from the type hints by
   pydantic (the ``tools`` extra), which then also validates the arguments. ``definitions()``
   is the ``tools`` list of ``session.update`` (GA shape, which beta accepts as well).
2. :class:`ToolRunner` subscribes to the session's events. On each ``response.done`` it starts
   one task per function call of that response, in a nursery of its own, so the calls of a turn
   (and of different turns) run concurrently. Calls of out-of-band responses
   (``conversation_id: null``) are left to the application: their results have no place in the
   default conversation. A call id seen twice is answered once. Calls of a response that was
   cancelled or incomplete are answered too: the conversation holds them, and arguments cut
   short become an ``invalid_arguments`` error.
3. Each call runs under its tool's deadline (a cancel scope). Whatever happens, the call gets an
   output the model can read: the tool's return value (a ``str`` as it is, anything else as
   JSON), or ``{"error": {"type": ..., "message": ...}}`` for an exception, a timeout, an
   unknown tool, or arguments that are not JSON or do not fit the schema. Each failure is
   logged at WARNING. ``trio.Cancelled`` and other ``BaseException`` are never swallowed.
4. Outputs go out with ``session.send_function_result()``, which holds back the turn's one
   follow-up ``response.create`` until the response is done and every call has its result.
5. The runner returns when the session ends, however it ends (closed, or the connection lost:
   the session's own calls report that); tool calls still running are cancelled.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import re
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

import attrs
import trio

from ._errors import ConnectionLost, EventBufferOverflow, RealtimeError, SessionClosed, fresh
from ._result import FunctionCallItem, ResponseResult, function_calls_of
from ._schema import ArgumentsInvalid, derive_schema, to_jsonable
from ._util import LastN

if TYPE_CHECKING:
    from ._ticket import ResponseTicket

__all__ = [
    "Tool",
    "ToolRegistry",
    "ToolRunner",
    "ToolRunnerStatistics",
    "ToolSession",
    "run_tools",
]

logger = logging.getLogger(__name__)


class ToolSession(Protocol):
    """What the runner needs of a session (a :class:`RealtimeSession` is one): its events,
    and a way to answer a function call. The tools module needs nothing else of it."""

    def subscribe(self) -> AbstractAsyncContextManager[AsyncIterable[Mapping[str, Any]]]: ...

    async def send_function_result(
        self,
        call_id: str,
        output: str,
        *,
        response: Mapping[str, Any] | None = None,
        priority: int = 0,
    ) -> ResponseTicket: ...


#: What a tool is: an async function called with keyword arguments.
ToolFunction = Callable[..., Awaitable[object]]
F = TypeVar("F", bound=ToolFunction)

#: Function names the API accepts.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Call ids remembered to answer each call once.
_MEMORY = 1024
#: Events that end a response (``response.cancelled`` is an alias some servers send).
_DONE_TYPES = frozenset({"response.done", "response.cancelled"})


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds (math.inf for none), got {timeout!r}")


@attrs.frozen
class Tool:
    """A registered tool. Made by :meth:`ToolRegistry.add` (or the ``tool`` decorator)."""

    name: str
    description: str
    #: The JSON schema of the arguments (an object schema).
    parameters: Mapping[str, Any] = attrs.field(repr=False)
    function: ToolFunction = attrs.field(repr=False)
    #: Seconds one call may run; None: the registry's default.
    timeout: float | None
    #: Whether the arguments are validated (by pydantic, when the schema was derived).
    validated: bool
    #: Validates the arguments and returns the call's awaitable, not started yet.
    _bind: Callable[[Mapping[str, Any]], Awaitable[object]] = attrs.field(repr=False, alias="bind")

    def definition(self) -> dict[str, Any]:
        """The tool as ``session.update`` (or ``response.create``) takes it in ``tools``."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(dict(self.parameters)),
        }


@attrs.frozen
class _Outcome:
    output: str
    failed: bool


def _error(
    call: FunctionCallItem,
    kind: str,
    message: str,
    *,
    exc_info: BaseException | None = None,
    **extra: Any,
) -> _Outcome:
    """An error output for the model, logged at WARNING."""
    logger.warning(
        "tool call %s (%s) failed: %s: %s",
        call.call_id,
        call.name,
        kind,
        message,
        exc_info=exc_info,
    )
    return _Outcome(json.dumps({"error": {"type": kind, "message": message, **extra}}), True)


class ToolRegistry:
    """The tools the model may call, by name.

    ``timeout`` is how many seconds a call may run unless its tool says otherwise
    (``math.inf``: no deadline). A call that runs longer is cancelled and answered with an error.

    Register with the decorator, bare or with options::

        registry = ToolRegistry()

        @registry.tool
        async def get_weather(city: str) -> dict[str, Any]:
            "The weather in a city now."
            ...

        @registry.tool(name="time_now", timeout=2, parameters={"type": "object", "properties": {}})
        async def current_time() -> str: ...

    The decorated function is returned unchanged.
    """

    def __init__(self, *, timeout: float = 30.0) -> None:
        _check_timeout(timeout)
        self.timeout = timeout
        self._tools: dict[str, Tool] = {}

    # ------------------------------------------------------------------ registering

    @overload
    def tool(self, function: F, /) -> F: ...

    @overload
    def tool(
        self,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]: ...

    def tool(
        self,
        function: ToolFunction | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> ToolFunction | Callable[[F], F]:
        """Decorator: register an async function as a tool (see :meth:`add`)."""

        def register(function: F) -> F:
            self.add(
                function,
                name=name,
                description=description,
                parameters=parameters,
                timeout=timeout,
            )
            return function

        return register if function is None else register(function)

    def add(
        self,
        function: ToolFunction,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Tool:
        """Register ``function`` (an async function) as a tool, and return it.

        - ``name``: default the function's ``__name__``; letters, digits, ``_`` and ``-``,
          at most 64 characters, unique in the registry (else ``ValueError``).
        - ``description``: default the function's docstring.
        - ``parameters``: the JSON schema of the arguments. When omitted, it is derived from
          the type hints by pydantic (``pip install 'trio-realtime[tools]'``; ``ImportError``
          without it), which then also validates and converts the arguments before the call;
          ``typing.Annotated[int, pydantic.Field(description=..., ge=0)]`` documents and
          constrains a parameter. Hints must resolve at the function's module level. With an
          explicit schema, the decoded JSON object is passed as keyword arguments, unchecked.
        - ``timeout``: seconds one call may run; None: the registry's ``timeout``.
        """
        if not inspect.iscoroutinefunction(function):
            raise TypeError(
                f"a tool must be an async function, got {function!r}; "
                "run blocking code inside it with trio.to_thread.run_sync"
            )
        if name is None:
            name = getattr(function, "__name__", None)
            if not isinstance(name, str):
                raise TypeError(f"{function!r} has no __name__: pass name=")
        if not _NAME.match(name):
            raise ValueError(
                f"tool name {name!r}: use 1 to 64 letters, digits, '_' or '-' (an API rule)"
            )
        if name in self._tools:
            raise ValueError(f"a tool named {name!r} is already registered")
        _check_timeout(timeout)
        if description is None:
            description = inspect.getdoc(function) or ""
        bind: Callable[[Mapping[str, Any]], Awaitable[object]]
        if parameters is None:
            _check_signature(name, function)
            derived = derive_schema(function)
            schema, bind, validated = derived.parameters, derived.bind, True
        else:
            try:
                schema = json.loads(json.dumps(parameters))  # a private copy, and JSON for sure
            except (TypeError, ValueError) as exc:
                raise ValueError(f"parameters of {name!r} are not a JSON object: {exc}") from exc
            if not isinstance(schema, dict):
                raise ValueError(f"parameters of {name!r} must be a JSON schema object")

            def bind(arguments: Mapping[str, Any]) -> Awaitable[object]:
                return function(**arguments)

            validated = False
        tool = Tool(name, description, schema, function, timeout, validated, bind=bind)
        self._tools[name] = tool
        return tool

    # ------------------------------------------------------------------ reading

    def definitions(self) -> list[dict[str, Any]]:
        """Every tool as ``session.update``'s ``tools`` takes it (fresh dicts, in order)::

        await session.send({"type": "session.update",
                            "session": {"type": "realtime", "tools": registry.definitions()}})

        (``"type": "realtime"`` is for GA servers; leave it out for beta ones.)
        """
        return [tool.definition() for tool in self._tools.values()]

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"<ToolRegistry {list(self._tools)} timeout={self.timeout}>"

    # ------------------------------------------------------------------ running

    async def execute(self, call: FunctionCallItem) -> str:
        """Run one call and return the output to send for it: the tool's result, or an error.

        Waits for the tool, at most its deadline. Never raises for what the tool or the model
        did wrong (see the module rules); cancelling it cancels the tool.
        """
        return (await self._execute(call)).output

    async def _execute(self, call: FunctionCallItem) -> _Outcome:
        await trio.lowlevel.checkpoint()
        tool = self._tools.get(call.name)
        if tool is None:
            return _error(
                call,
                "unknown_tool",
                f"there is no tool named {call.name!r}; the tools are: {', '.join(self._tools)}",
            )
        try:
            awaitable = tool._bind(call.parse_arguments())
        except ArgumentsInvalid as exc:
            return _error(call, "invalid_arguments", str(exc), details=exc.details)
        except (ValueError, TypeError) as exc:  # not JSON / not an object / not the parameters
            return _error(call, "invalid_arguments", str(exc))
        timeout = self.timeout if tool.timeout is None else tool.timeout
        try:
            with trio.move_on_after(timeout) as scope:
                value = await awaitable
        except Exception as exc:  # outside the scope: also what a nursery in the tool raised
            return _error(call, type(exc).__name__, str(exc) or repr(exc), exc_info=exc)
        if scope.cancelled_caught:
            return _error(call, "timeout", f"{call.name} did not finish within {timeout:g} s")
        if isinstance(value, str):
            return _Outcome(value, False)
        try:
            return _Outcome(json.dumps(value, default=to_jsonable), False)
        except (TypeError, ValueError, RecursionError) as exc:
            return _error(call, "unserializable_result", f"the result is not JSON: {exc}")


def _check_signature(name: str, function: ToolFunction) -> None:
    """Arguments arrive as one JSON object: every parameter must be passable by keyword."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"tool {name!r}: cannot read the signature of {function!r}") from exc
    for parameter in signature.parameters.values():
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            raise TypeError(
                f"tool {name!r}: parameter {parameter} cannot come from a JSON object; "
                "use named parameters, or pass parameters= explicitly"
            )


@attrs.frozen
class ToolRunnerStatistics:
    """A snapshot of a :class:`ToolRunner`."""

    #: Calls started (each call id once).
    calls: int
    #: Calls answered with an error output (exception, timeout, unknown tool, bad arguments).
    failed: int
    #: Outputs handed to ``send_function_result``.
    results_sent: int
    #: Calls running now.
    in_flight: int


@attrs.define(eq=False)
class _Turn:
    """A response whose calls the runner answers, and the follow-up its results share."""

    follow_up: ResponseTicket | None = None
    error: RealtimeError | None = None
    settled: trio.Event = attrs.Factory(trio.Event)

    def settle(self, follow_up: ResponseTicket | None, error: RealtimeError | None) -> None:
        if not self.settled.is_set():
            self.follow_up, self.error = follow_up, error
            self.settled.set()


class ToolRunner:
    """Answers the function calls of a session's responses with a registry's tools.

    ``follow_up`` is the body of the follow-up ``response.create`` after each turn
    (``instructions``, ``tools``, ...; None: the session's defaults).
    """

    def __init__(
        self, registry: ToolRegistry, *, follow_up: Mapping[str, Any] | None = None
    ) -> None:
        self.registry = registry
        self.follow_up = follow_up
        self._seen: LastN[str, None] = LastN(_MEMORY)  # call ids
        self._turns: LastN[str, _Turn] = LastN(_MEMORY)  # by response id
        self._turn_added = trio.Event()  # replaced after each new turn
        self._ended: RealtimeError | None = None
        self._running = False
        self._calls = 0
        self._failed = 0
        self._sent = 0
        self._in_flight = 0

    def statistics(self) -> ToolRunnerStatistics:
        return ToolRunnerStatistics(self._calls, self._failed, self._sent, self._in_flight)

    async def run(
        self,
        session: ToolSession,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Answer every function call until the session ends; start it with
        ``await nursery.start(runner.run, session)``, which returns once it has subscribed.

        Returns when the session ends, whether it was closed or the connection was lost, after
        cancelling the calls still running. Put the nursery outside the session's block (or
        cancel it before the block ends): the runner lives as long as the session. Cancelling
        it cancels the running calls; their results are then not sent. One run at a time
        (``RuntimeError`` otherwise).
        """
        if self._running:
            raise RuntimeError("this ToolRunner is already running")
        self._running = True
        self._ended, self._turn_added = None, trio.Event()  # a runner may serve a new session
        ended: RealtimeError = SessionClosed("the tool runner was cancelled")
        try:
            async with trio.open_nursery() as nursery:
                try:
                    ended = await self._watch(session, nursery, task_status)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._running = False
            self._ended = ended
            self._turn_added.set()
            for turn in self._turns.values():
                turn.settle(None, ended)

    async def wait_follow_up(self, turn: ResponseResult) -> ResponseTicket:
        """Wait until the results of ``turn``'s function calls went out; return the ticket of
        the one ``response.create`` that follows them (``await ticket.wait_done()`` for the
        model's answer).

        ``turn`` is the result of a response that made function calls (``ValueError`` if it
        made none, or was out of band). Cancelling the wait is safe. Raises ``SessionClosed``
        or ``ConnectionLost`` when the session ended before the results went out.
        """
        rid = turn.response_id
        response = turn.response
        if rid is None or response is None or not turn.function_calls:
            raise ValueError("that response made no function calls")
        if "conversation_id" in response and response["conversation_id"] is None:
            raise ValueError("the runner leaves the calls of out-of-band responses alone")
        while (entry := self._turns.get(rid)) is None:
            if self._ended is not None:
                raise fresh(self._ended)
            await self._turn_added.wait()
        await entry.settled.wait()
        if entry.error is not None:
            raise fresh(entry.error)
        assert entry.follow_up is not None
        return entry.follow_up

    async def _watch(
        self,
        session: ToolSession,
        nursery: trio.Nursery,
        task_status: trio.TaskStatus[None],
    ) -> RealtimeError:
        """Read the session's events until it ends; return how it ended."""
        started = False
        while True:
            try:
                async with session.subscribe() as events:
                    if not started:
                        task_status.started()
                        started = True
                    async for event in events:
                        if event.get("type") in _DONE_TYPES:
                            self._on_done(session, event, nursery)
                logger.debug("the session ended; the tool runner stops")
                return SessionClosed("session closed")
            except EventBufferOverflow:
                logger.error(
                    "the tool runner fell behind the session's events and was cut off:"
                    " function calls among the dropped events go unanswered"
                )
            except (SessionClosed, ConnectionLost) as exc:  # also: it ended before subscribe()
                logger.debug("the session ended (%s); the tool runner stops", exc)
                if not started:
                    task_status.started()
                return exc

    def _on_done(
        self, session: ToolSession, event: Mapping[str, Any], nursery: trio.Nursery
    ) -> None:
        response = event.get("response")
        if not isinstance(response, Mapping):
            return
        calls = function_calls_of(response)
        rid = response.get("id")
        if not calls or not isinstance(rid, str):
            return
        if "conversation_id" in response and response["conversation_id"] is None:
            logger.debug(
                "out-of-band response %s: its %d function call(s) are left to the application",
                rid,
                len(calls),
            )
            return
        fresh = [call for call in calls if call.call_id not in self._seen]
        if len(fresh) < len(calls):
            logger.warning("response %s: calls already seen are answered once", rid)
        if not fresh:
            return
        turn = self._turns.get(rid) or _Turn()
        self._turns[rid] = turn
        self._turn_added.set()
        self._turn_added = trio.Event()
        for call in fresh:
            self._seen[call.call_id] = None
            self._calls += 1
            self._in_flight += 1
            nursery.start_soon(self._answer, session, call, turn, name=f"tool call {call.call_id}")

    async def _answer(self, session: ToolSession, call: FunctionCallItem, turn: _Turn) -> None:
        try:
            outcome = await self.registry._execute(call)
            if outcome.failed:
                self._failed += 1
            try:
                ticket = await session.send_function_result(
                    call.call_id, outcome.output, response=self.follow_up
                )
            except (SessionClosed, ConnectionLost) as exc:
                logger.debug("result of call %s not sent: %s", call.call_id, exc)
                turn.settle(None, exc)
                return
            except RealtimeError as exc:  # QueueFull: the output went out, the follow-up did not
                logger.error("result of call %s sent, but not its follow-up: %s", call.call_id, exc)
                self._sent += 1
                turn.settle(None, exc)
                return
            self._sent += 1
            turn.settle(ticket, None)
        finally:
            self._in_flight -= 1


async def run_tools(
    session: ToolSession,
    registry: ToolRegistry,
    *,
    follow_up: Mapping[str, Any] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``ToolRunner(registry, follow_up=follow_up).run(session)``: answer every function call
    of ``session`` with ``registry``'s tools until the session ends. Start it with
    ``await nursery.start(run_tools, session, registry)``."""
    await ToolRunner(registry, follow_up=follow_up).run(session, task_status=task_status)
