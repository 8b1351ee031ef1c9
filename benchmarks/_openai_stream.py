"""The ``openai`` package's ``AsyncRealtimeConnection`` (asyncio) reading one streamed response
from the benchmark server; run by ``throughput.py`` in a process of its own. Prints one JSON
line: the events between ``response.created`` and ``response.done`` and the seconds between.

    python benchmarks/_openai_stream.py PORT QUERY
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.parse

from openai import AsyncOpenAI


async def stream(port: int, query: str) -> dict[str, float]:
    client = AsyncOpenAI(api_key="sk-benchmark", websocket_base_url=f"ws://127.0.0.1:{port}/v1")
    extra = dict(urllib.parse.parse_qsl(query))
    events = 0
    started = finished = 0.0
    async with client.realtime.connect(model="gpt-realtime", extra_query=extra) as connection:
        await connection.response.create(response={"metadata": {"i": "0"}})
        async for event in connection:
            if event.type == "response.created":
                started = time.perf_counter()
            elif event.type == "response.done":
                finished = time.perf_counter()
                break
            elif started:
                events += 1
    return {"events": events, "seconds": finished - started}


def main() -> None:
    result = asyncio.run(asyncio.wait_for(stream(int(sys.argv[1]), sys.argv[2]), 300))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
