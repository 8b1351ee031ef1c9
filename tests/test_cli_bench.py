"""trio-realtime bench: the quick benchmarks as one table, progress on stderr, a plot."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trio_realtime._cli import UsageError, main
from trio_realtime._cli_bench import (
    density_plot_path,
    draw_density_plot,
    draw_plot,
    find_benchmarks,
    summary_rows,
)

CHECKOUT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_two_quick_benchmarks_as_a_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "all.json"
    assert main(["bench", "queue_wait", "collisions", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    table = [line for line in captured.out.splitlines() if line.startswith("|")]
    assert [cell.strip() for cell in table[0].split("|")[1:-1]] == [
        "benchmark",
        "measure",
        "trio-realtime",
        "compared with",
    ]
    rows = {line.split("|")[1].strip(): line for line in table[2:]}
    assert set(rows) == {"queue_wait", "collisions"}
    assert "order violations 0" in rows["queue_wait"]
    assert "| 0 / 0 of " in rows["collisions"]  # no rejection seen, nothing lost
    # Progress went to stderr, in order, and the results were kept.
    assert captured.err.index("[1/2] queue_wait: running") < captured.err.index(
        "[1/2] queue_wait: done in"
    )
    assert "[2/2] collisions: done in" in captured.err
    assert "round 1/" in captured.err  # the collisions rounds, relayed as they ran
    data = json.loads(out.read_text())
    assert set(data) == {"queue_wait", "collisions"}
    assert data["queue_wait"]["quick"] is True


def test_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "latency.png"
    assert main(["bench", "queue_wait", "--plot", str(plot)]) == 0
    assert plot.read_bytes().startswith(PNG_MAGIC)
    assert f"wrote {plot}" in capsys.readouterr().err


def test_plot_from_saved_results(tmp_path: Path) -> None:
    figure = pytest.importorskip("matplotlib.figure").Figure
    summary = {"n": 3, "p50": 1.0, "p99": 2.0, "p99_9": 2.5, "max": 3.0, "mean": 1.5}
    results = {
        "handoff": {"results": {"contenders": {"floor": summary, "trio-realtime": summary}}},
        "scale": {"results": {"trio-realtime": {"handoff_us": summary}}},
    }
    assert draw_plot(tmp_path / "a.png", results, figure)
    assert (tmp_path / "a.png").read_bytes().startswith(PNG_MAGIC)
    assert not draw_plot(tmp_path / "b.png", {"collisions": {}}, figure)
    assert not (tmp_path / "b.png").exists()


def test_plot_without_the_extra_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["bench", "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "trio-realtime: --plot needs matplotlib, the 'plot' extra: "
        "pip install 'trio-realtime[plot]'\n"
    )  # said at once, before any benchmark ran


def test_unknown_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark 'nope'; choose from handoff, queue_wait" in capsys.readouterr().err


def test_benchmarks_are_found_beside_the_source_tree_or_in_the_current_directory(
    tmp_path: Path,
) -> None:
    package = CHECKOUT / "src" / "trio_realtime"
    assert find_benchmarks(package_dir=package, cwd=tmp_path) == CHECKOUT / "benchmarks"
    installed = tmp_path / "site-packages" / "trio_realtime"  # a wheel install: none beside it
    installed.mkdir(parents=True)
    assert find_benchmarks(package_dir=installed, cwd=CHECKOUT) == CHECKOUT / "benchmarks"
    assert find_benchmarks(package_dir=installed, cwd=CHECKOUT / "benchmarks") == (
        CHECKOUT / "benchmarks"
    )
    with pytest.raises(UsageError, match="not available: they live in the benchmarks/ folder"):
        find_benchmarks(package_dir=installed, cwd=tmp_path)


def test_missing_benchmarks_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["bench", "--benchmarks", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"trio-realtime: --benchmarks: no trio-realtime benchmarks in {tmp_path}\n"
    )


def test_a_failing_benchmark_is_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "_common.py").write_text("")
    (tmp_path / "handoff.py").write_text(
        "import sys\nprint('round 1/1: about to fail', flush=True)\n"
        "sys.exit('the benchmark server did not start')\n"
    )
    assert main(["bench", "handoff", "--benchmarks", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "round 1/1: about to fail" in captured.err
    assert "[1/1] handoff: FAILED (exit status 1)" in captured.err
    assert "the benchmark server did not start" in captured.err
    assert captured.err.endswith("failed: handoff\n")


def test_results_it_cannot_read_become_a_row_saying_so() -> None:
    [row] = summary_rows("handoff", {"results": {"contenders": {}}})
    assert row[:3] == ["handoff", "(results not understood)", "-"]


def _latency(p50: float) -> dict[str, float]:
    return {"n": 10, "p50": p50, "p99": 2 * p50, "p99_9": 3 * p50, "max": 3 * p50, "mean": p50}


def test_one_row_per_trio_realtime_contender() -> None:
    handoff = {
        "results": {
            "contenders": {
                "floor": _latency(100),
                "seed": _latency(100_000),
                "trio-realtime": _latency(150),
                "trio-realtime (websockets)": _latency(120),
            }
        }
    }
    rows = summary_rows("handoff", handoff)
    assert [row[1] for row in rows] == [
        "response.done -> next response.create, p50 / p99",
        "response.done -> next response.create, p50 / p99 [websockets]",
    ]
    assert rows[0][2] == "150 us / 300 us"
    assert rows[1][3] == "floor 100 us / 200 us (1.20x / 1.20x); seed 100.0 ms (833x slower)"
    rate = {"median_rate": 1000.0}
    throughput = {
        "results": {
            "small": {
                "contenders": {
                    "trio-websocket raw (64 KiB)": {"median_rate": 2000.0},
                    "trio-realtime subscriber (trio-websocket)": rate,
                    "openai AsyncRealtimeConnection": {"median_rate": 500.0},
                }
            }
        }
    }
    assert summary_rows("throughput", throughput) == [
        [
            "throughput",
            "events/s, small [trio-websocket]",
            "1,000",
            "raw trio-websocket 0.50x; openai 2.00x",
        ]
    ]
    del handoff["results"]["contenders"]["trio-realtime"]
    del handoff["results"]["contenders"]["trio-realtime (websockets)"]
    assert summary_rows("handoff", handoff)[0][1] == "(results not understood)"


def test_a_core_install_skips_each_contender_whose_extra_is_missing(tmp_path: Path) -> None:
    """As after ``pip install trio-realtime`` (no extras): handoff and scale run without their
    websockets contenders, throughput without websockets and openai; one line says each
    skip and the extra that brings it; no traceback, no empty row, status 0."""
    blocker = tmp_path / "core_install"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nsys.modules.update(dict.fromkeys(['websockets', 'orjson', 'openai'], None))\n"
    )
    environ = {**os.environ, "PYTHONPATH": str(blocker)}  # the benchmarks' processes too
    BENCHED = ("handoff", "scale", "throughput")
    out = tmp_path / "core.json"
    process = subprocess.run(
        [sys.executable, "-m", "trio_realtime", "bench", *BENCHED, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
        cwd=CHECKOUT,
        check=False,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    assert "Error" not in process.stderr
    skips = [line.strip() for line in process.stderr.splitlines() if "skipped" in line]
    for contender, extra in [
        ("websockets floor", "fast"),
        ("trio-realtime (websockets)", "fast"),
        ("websockets raw", "fast"),
        ("trio-realtime subscriber (websockets + orjson)", "fast"),
        ("openai AsyncRealtimeConnection", "bench"),
    ]:
        lines = [s for s in skips if s.startswith(f"skipped {contender}:")]
        assert lines, (contender, skips)  # (handoff and scale both skip their fast one)
        for line in lines:
            assert f"pip install 'trio-realtime[{extra}]'" in line, line
    table = [line for line in process.stdout.splitlines() if line.startswith("| ")]
    assert table
    assert not [row for row in table if "websockets]" in row]  # no row for a skipped one
    assert not [row for row in table if re.search(r"(?<![\d,])0/\d", row)]  # nor "0/60"
    benchmarks = {row.split("|")[1].strip() for row in table[1:]}
    assert {"handoff", "scale", "throughput"} <= benchmarks
    data = json.loads(out.read_text())
    assert "trio-realtime (websockets)" not in data["handoff"]["results"]["contenders"]


def _density_result(calls_per_core: float, by_cpu: float) -> dict[str, object]:
    return {
        "calls_per_core": calls_per_core,
        "calls_per_core_by_cpu": by_cpu,
        "p50_ms": 3.0,
        "p99_ms": 12.0,
        "cpu_ms_per_call_second": 4.0,
        "memory_per_call_kib": 45.0,
        "grid": [
            {"calls": 25, "run": 0, "cpu_ms_per_call_second": 4.5},
            {"calls": 50, "run": 0, "cpu_ms_per_call_second": 4.0},
        ],
    }


DENSITY = {
    "results": {
        "trio-realtime": _density_result(100, 160),
        "trio-realtime (websockets)": _density_result(150, 210),
        "bare trio-websocket": _density_result(125, 180),
        "openai AsyncRealtimeConnection": _density_result(60, 70),
    }
}


def test_density_rows_and_plot(tmp_path: Path) -> None:
    rows = summary_rows("density", DENSITY)
    assert [row[1] for row in rows] == [
        "live calls per core (by CPU alone), p99 lateness, KiB/call",
        "live calls per core (by CPU alone), p99 lateness, KiB/call [websockets]",
    ]
    assert rows[0][2] == "100 (160), 12 ms, 45"
    assert rows[1][3] == "bare trio-websocket 125 (1.20x); openai 60"
    figure = pytest.importorskip("matplotlib.figure").Figure
    assert draw_density_plot(tmp_path / "d.png", {"density": DENSITY}, figure)
    assert (tmp_path / "d.png").read_bytes().startswith(PNG_MAGIC)
    assert not draw_density_plot(tmp_path / "none.png", {"handoff": {}}, figure)
    assert density_plot_path(tmp_path / "x.png") == tmp_path / "x-density.png"


def test_density_on_a_core_install_skips_what_it_cannot_run(tmp_path: Path) -> None:
    """Without the extras, density runs the library on its default transport and the bare
    trio-websocket loop; each other contender is one line naming the extra that brings it.
    Its figure (``--plot``, when matplotlib is here) takes the path itself: no latency
    benchmark ran."""
    plotting = importlib.util.find_spec("matplotlib") is not None
    blocker = tmp_path / "core_install"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nsys.modules.update(dict.fromkeys("
        "['websockets', 'orjson', 'openai', 'opentelemetry'], None))\n"
    )
    out = tmp_path / "core.json"
    process = subprocess.run(
        [sys.executable, "-m", "trio_realtime", "bench", "density", "--json", str(out)]
        + (["--plot", str(tmp_path / "density.png")] if plotting else []),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(blocker)},
        cwd=CHECKOUT,
        check=False,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    skips = [line.strip() for line in process.stderr.splitlines() if "skipped" in line]
    assert sorted(skips) == sorted(
        [
            "skipped trio-realtime (websockets): needs websockets and orjson "
            "(pip install 'trio-realtime[fast]')",
            "skipped trio-realtime + OpenTelemetry: needs websockets and orjson and "
            "opentelemetry.sdk (pip install 'trio-realtime[fast,otel]')",
            "skipped bare websockets.trio: needs websockets (pip install 'trio-realtime[fast]')",
            "skipped bare asyncio websockets: needs websockets (pip install 'trio-realtime[fast]')",
            "skipped bare asyncio websockets + orjson: needs websockets and orjson "
            "(pip install 'trio-realtime[fast]')",
            "skipped openai AsyncRealtimeConnection: needs openai and websockets "
            "(pip install 'trio-realtime[bench]')",
        ]
    )
    [row] = [line for line in process.stdout.splitlines() if line.startswith("| density")]
    assert "bare trio-websocket" in row
    data = json.loads(out.read_text())
    assert set(data["density"]["results"]) == {"trio-realtime", "bare trio-websocket"}
    assert "round 1/1 N=2 trio-realtime:" in process.stderr  # relayed as it ran
    if plotting:
        assert (tmp_path / "density.png").read_bytes().startswith(PNG_MAGIC)
        assert f"wrote {tmp_path / 'density.png'}" in process.stderr
