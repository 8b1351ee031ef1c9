"""A tool-calling agent, run against the embedded fake Realtime server (no API key needed).

    pip install 'trio-realtime[tools]'
    python examples/tool_agent.py

Two tools are registered. The user asks a question; the (scripted) model calls both tools in
one turn; the runner runs the two calls concurrently, each under its deadline, and sends both
results; the session then sends one follow-up ``response.create``, whose answer is printed.

Against the real service, replace the fake server with ``open_session(Endpoint.from_env())``:
nothing else changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import trio
from pydantic import Field

from trio_realtime import ToolRegistry, ToolRunner, open_session
from trio_realtime.testing import (
    FakeRealtimeServer,
    FunctionCall,
    Script,
    open_fake_server,
)

QUESTION = "What is the weather in Oslo, and what time is it there?"

registry = ToolRegistry(timeout=5)  # seconds a call may run before it is answered with an error


@registry.tool
async def get_weather(
    city: Annotated[str, Field(description="City name, e.g. Oslo")],
) -> dict[str, Any]:
    """The current weather in a city."""
    await trio.sleep(0.01)  # stands for a call to a weather service
    return {"city": city, "celsius": 21.5, "sky": "clear"}


@registry.tool
async def get_time(
    timezone: Annotated[str, Field(description="IANA time zone, e.g. Europe/Oslo")],
) -> str:
    """The local time in a time zone, as HH:MM."""
    await trio.sleep(0.01)  # stands for a clock service
    return "14:05"


def fake_model(server: FakeRealtimeServer) -> Callable[[Mapping[str, Any]], Script]:
    """Stands in for the model: calls both tools, then answers from what they returned."""

    def script(body: Mapping[str, Any]) -> Script:
        outputs = {
            event["item"]["call_id"]: event["item"]["output"]
            for event in server.received
            if event["type"] == "conversation.item.create"
            and event["item"]["type"] == "function_call_output"
        }
        if not outputs:
            return Script(
                text=None,
                function_calls=(
                    FunctionCall("get_weather", '{"city": "Oslo"}', call_id="call_weather"),
                    FunctionCall("get_time", '{"timezone": "Europe/Oslo"}', call_id="call_time"),
                ),
            )
        weather = json.loads(outputs["call_weather"])
        return Script(
            text=f"It is {weather['celsius']} °C and {weather['sky']} in {weather['city']},"
            f" and the local time is {outputs['call_time']}."
        )

    return script


async def main() -> None:
    async with open_fake_server() as server:
        server.behavior.script = fake_model(server)
        # The nursery outlives the session: the runner returns when the session ends.
        async with trio.open_nursery() as nursery, open_session(server.url) as session:
            await session.send(
                {
                    "type": "session.update",
                    "session": {"type": "realtime", "tools": registry.definitions()},
                }
            )
            runner = ToolRunner(registry)
            await nursery.start(runner.run, session)

            await session.send(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": QUESTION}],
                    },
                }
            )
            print(f"user: {QUESTION}")
            turn = await session.request_response().wait_done()
            for call in turn.function_calls:
                print(f"model calls {call.name}({call.parse_arguments()})")
            follow_up = await runner.wait_follow_up(turn)
            answer = await follow_up.wait_done()
            print(f"assistant: {answer.text}")
            stats = runner.statistics()
            print(f"tool calls: {stats.calls}, failed: {stats.failed}")
        creates = sum(1 for event in server.received if event["type"] == "response.create")
        print(f"response.create sent: {creates} (the question, and one follow-up for both calls)")


if __name__ == "__main__":
    trio.run(main)
