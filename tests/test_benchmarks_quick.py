"""The benchmarks' quick modes run, write their JSON, and get the correctness right.

Only correctness is asserted (nothing lost, no overlaps, order kept, every session done),
never a timing: the machines that run the tests are shared and noisy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_quick(name: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    process = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    data: dict[str, Any] = json.loads(out.read_text())
    assert data["benchmark"] == name
    assert data["quick"] is True
    assert {"cpus", "cpu_model", "python", "versions"} <= data["machine"].keys()
    return data


def test_handoff(tmp_path: Path) -> None:
    data = run_quick("handoff", tmp_path)
    contenders = data["results"]["contenders"]
    assert set(contenders) == {
        "floor",
        "websockets floor",
        "seed",
        "trio-realtime",
        "trio-realtime (websockets)",
    }
    for name, stats in contenders.items():
        assert stats["n"] > 0, name
        assert {"p50", "p99", "p99_9", "p50_vs_floor", "p99_vs_floor"} <= stats.keys()
        assert stats["server_max_active"] == 1, name
        assert stats["server_rejections"] == 0, name
    assert set(data["goals"]) == {
        "p50_within_1_2x_floor",
        "p99_under_1ms",
        "websockets_p50_within_1_0x_floor",
        "websockets_p99_under_1ms",
    }


def test_queue_wait(tmp_path: Path) -> None:
    results = run_quick("queue_wait", tmp_path)["results"]
    assert results["order_ok"] is True
    assert results["order_violations"] == 0
    assert results["completed"] == results["requests"] > 0
    assert results["failed"] == 0
    assert results["server_max_active"] == 1
    assert results["server_rejections"] == 0
    assert set(results["wait_by_priority"]) == {"0", "1", "2"}


def test_collisions(tmp_path: Path) -> None:
    contenders = run_quick("collisions", tmp_path)["results"]["contenders"]
    assert set(contenders) == {"naive", "seed", "trio-realtime"}
    trc = contenders["trio-realtime"]
    assert trc["rejections_seen"] == 0
    assert trc["lost"] == 0
    assert trc["completed"] == trc["requests"] > 0
    for name, counts in contenders.items():
        assert counts["server_max_active"] == 1, name
        assert counts["completed"] + counts["lost"] == counts["requests"], name


def test_throughput(tmp_path: Path) -> None:
    pytest.importorskip("websockets")
    pytest.importorskip("openai")
    data = run_quick("throughput", tmp_path)
    for workload in data["results"].values():
        contenders = workload["contenders"]
        assert "trio-realtime subscriber (trio-websocket)" in contenders
        assert "trio-realtime subscriber (websockets + orjson)" in contenders
        assert "openai AsyncRealtimeConnection" in contenders
        for name, stats in contenders.items():
            assert stats["median_rate"] > 0, name


def test_scale(tmp_path: Path) -> None:
    data = run_quick("scale", tmp_path)
    for kind, result in data["results"].items():
        assert result["all_completed"] is True, (kind, result["errors"])
        assert result["completed"] == result["requests"] > 0, kind
        assert result["server_max_active"] == 1, kind
        assert result["server_rejections"] == 0, kind
        assert result["memory_per_connection_kib"] > 0, kind


def test_density(tmp_path: Path) -> None:
    pytest.importorskip("websockets")
    pytest.importorskip("orjson")
    pytest.importorskip("openai")
    pytest.importorskip("opentelemetry.sdk")
    data = run_quick("density", tmp_path)
    results = data["results"]
    assert set(results) == {
        "trio-realtime",
        "trio-realtime (websockets)",
        "trio-realtime + OpenTelemetry",
        "bare trio-websocket",
        "bare websockets.trio",
        "bare asyncio websockets",
        "bare asyncio websockets + orjson",
        "openai AsyncRealtimeConnection",
    }
    for name, result in results.items():
        assert result["all_correct"] is True, (name, result["grid"])
        [cell] = result["grid"]  # the quick grid: one N, one run
        assert cell["calls"] == 2, name
        # Every reply asked for came back, once each, one at a time, and never refused.
        assert cell["done"] == cell["turns"] > 0, name
        server = cell["server"]
        assert server["connections"] == 2, name
        assert server["created"] == server["done"] == cell["turns"], name
        assert server["rejections"] == 0, name
        assert server["max_active"] == 1, name
        # Audio went out (25 appends a second each) and was timed; deltas came in.
        assert server["appends"] == cell["appends"] > 0, name
        assert server["append_lateness_ms"]["n"] > 0, name
        assert cell["memory_per_call_kib"] > 0, name
        assert {"calls_per_core", "p50_ms", "p99_ms", "cpu_ms_per_call_second"} <= result.keys()
    assert set(data["goals"]) == {
        "websockets_calls_per_core_1_2x_bare_trio_websocket",
        "default_calls_per_core_1_0x_bare_trio_websocket",
        "websockets_memory_per_call_under_100_kib",
        "otel_at_most_2_percent_fewer_calls_per_core",
    }


def test_interrupt(tmp_path: Path) -> None:
    assert run_quick("interrupt", tmp_path)["results"].keys() == {"trio-websocket", "websockets"}
