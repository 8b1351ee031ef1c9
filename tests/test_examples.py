"""The examples run as users run them: a fresh interpreter, warnings as errors, a time limit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> list[str]:
    completed = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name)],
        capture_output=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    return completed.stdout.splitlines()


def test_tool_agent() -> None:
    assert run_example("tool_agent.py") == [
        "user: What is the weather in Oslo, and what time is it there?",
        "model calls get_weather({'city': 'Oslo'})",
        "model calls get_time({'timezone': 'Europe/Oslo'})",
        "assistant: It is 21.5 °C and clear in Oslo, and the local time is 14:05.",
        "tool calls: 2, failed: 0",
        "response.create sent: 2 (the question, and one follow-up for both calls)",
    ]


def test_prometheus_metrics() -> None:
    assert run_example("prometheus_metrics.py") == [
        "responses: 5, queue waits: 5",
        "realtime_time_to_done_seconds_count 5.0",
        'realtime_responses_total{outcome="completed"} 5.0',
    ]
