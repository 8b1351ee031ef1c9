"""``trio-realtime bench``: the source checkout's benchmarks, quick, as one table.

The benchmark scripts live in the checkout's ``benchmarks/`` folder, not in the installed
package. Each runs in a process of its own (``python benchmarks/NAME.py --quick --json
PATH``), against a benchmark server in yet another; progress goes to stderr, the table of key
figures to stdout. ``--plot FILE.png`` draws the latency distributions side by side, with
matplotlib (the ``plot`` extra), and the density benchmark's live calls per core and CPU per
call-second against the number of calls (beside it, in ``FILE-density.png``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from ._cli_common import EXIT_FAILED, UsageError

__all__ = ["BENCHMARKS", "find_benchmarks", "run_bench"]

#: The benchmarks ``bench`` runs, in order (soak.py is a long run of its own: not here).
BENCHMARKS = ("handoff", "queue_wait", "collisions", "throughput", "scale", "density")
_PLOT_HINT = "pip install 'trio-realtime[plot]'"


# ---------------------------------------------------------------- finding and running


def _is_benchmarks(folder: Path) -> bool:
    return (folder / "_common.py").is_file() and (folder / "handoff.py").is_file()


def find_benchmarks(
    explicit: str | None = None,
    *,
    package_dir: Path | None = None,
    cwd: Path | None = None,
) -> Path:
    """The ``benchmarks/`` folder: ``explicit``, else beside the package's source tree (an
    editable install), else in the current directory. Raises :class:`UsageError` saying
    where to find them when there is none (an install from a wheel has no benchmarks)."""
    if explicit is not None:
        folder = Path(explicit)
        if not _is_benchmarks(folder):
            raise UsageError(f"--benchmarks: no trio-realtime benchmarks in {folder}")
        return folder
    package_dir = package_dir or Path(__file__).resolve().parent
    cwd = cwd or Path.cwd()
    for folder in (package_dir.parent.parent / "benchmarks", cwd / "benchmarks", cwd):
        if _is_benchmarks(folder):
            return folder
    raise UsageError(
        "the benchmarks are not available: they live in the benchmarks/ folder of a source "
        "checkout of trio-realtime, not in the installed package; run this from a checkout "
        "or pass --benchmarks DIR"
    )


def _run_one(
    script: Path, json_path: Path, *, quick: bool, progress: TextIO, timeout: float
) -> tuple[int, str]:
    """Run one benchmark script; relay its round-by-round lines as progress. Returns its exit
    status and its output."""
    command = [sys.executable, str(script), "--json", str(json_path)]
    if quick:
        command.append("--quick")
    output: list[str] = []
    with subprocess.Popen(
        command,
        cwd=script.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as process:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        for line in process.stdout:
            output.append(line)
            if line.startswith(("round ", "skipped ")):  # (a contender whose extra is missing)
                progress.write(f"      {line.rstrip()}\n")
                progress.flush()
            if time.monotonic() > deadline:
                process.kill()
                output.append(f"(killed after {timeout:.0f} s)\n")
                break
        status = process.wait()
    return status, "".join(output)


# ---------------------------------------------------------------- the summary table


def _ms(us: float) -> str:
    return f"{us / 1000:,.1f} ms" if us >= 10_000 else f"{us:,.0f} us"


def _ours(contenders: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """trio-realtime's contenders (one per transport, say), each with how it is told apart."""
    return [
        (name.removeprefix("trio-realtime").replace("subscriber", "").strip(" ()"), value)
        for name, value in contenders.items()
        if name.startswith("trio-realtime")
    ]


def _variant(measure: str, variant: str) -> str:
    return f"{measure} [{variant}]" if variant else measure


def _handoff(results: Mapping[str, Any]) -> list[list[str]]:
    c = results["contenders"]
    floor, seed = c["floor"], c["seed"]
    return [
        [
            "handoff",
            _variant("response.done -> next response.create, p50 / p99", variant),
            f"{_ms(trc['p50'])} / {_ms(trc['p99'])}",
            f"floor {_ms(floor['p50'])} / {_ms(floor['p99'])} "
            f"({trc['p50'] / floor['p50']:.2f}x / {trc['p99'] / floor['p99']:.2f}x); "
            f"seed {_ms(seed['p50'])} ({seed['p50'] / trc['p50']:.0f}x slower)",
        ]
        for variant, trc in _ours(c)
    ]


def _queue_wait(results: Mapping[str, Any]) -> list[list[str]]:
    waits = results["wait_by_priority"]
    priorities = sorted(waits, key=int, reverse=True)
    return [
        [
            "queue_wait",
            f"queue wait p50, priorities {' / '.join(priorities)}",
            " / ".join(f"{waits[p]['p50']:.1f}" for p in priorities) + " ms",
            f"order violations {results['order_violations']}, completed "
            f"{results['completed']}/{results['requests']}, max active "
            f"{results['server_max_active']}, rejections {results['server_rejections']}",
        ]
    ]


def _collisions(results: Mapping[str, Any]) -> list[list[str]]:
    c = results["contenders"]
    trc = c["trio-realtime"]
    others = "; ".join(
        f"{name} {v['rejections_seen']} / {v['lost']}"
        for name, v in c.items()
        if name != "trio-realtime"
    )
    return [
        [
            "collisions",
            "rejections seen by the app / requests lost",
            f"{trc['rejections_seen']} / {trc['lost']} of {trc['requests']}",
            others,
        ]
    ]


def _throughput(results: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for workload, data in results.items():
        c = data["contenders"]
        raw = c["trio-websocket raw (64 KiB)"]["median_rate"]
        openai = c.get("openai AsyncRealtimeConnection")
        for variant, trc in _ours(c):
            rate = trc["median_rate"]
            versus = f"raw trio-websocket {rate / raw:.2f}x"
            if openai:
                versus += f"; openai {rate / openai['median_rate']:.2f}x"
            rows.append(
                [
                    "throughput",
                    _variant(f"events/s, {workload}", variant),
                    f"{rate:,.0f}",
                    versus,
                ]
            )
    return rows


def _scale(results: Mapping[str, Any]) -> list[list[str]]:
    bare = results["bare trio-websocket"]
    return [
        [
            "scale",
            _variant(f"{trc['sessions']} sessions: done, CPU / response, KiB / session", variant),
            f"{trc['completed']}/{trc['requests']}, {trc['cpu_us_per_response']:.0f} us, "
            f"{trc['memory_per_connection_kib']:.0f}",
            f"bare trio-websocket {bare['cpu_us_per_response']:.0f} us, "
            f"{bare['memory_per_connection_kib']:.0f} KiB",
        ]
        for variant, trc in _ours(results)
    ]


def _density(results: Mapping[str, Any]) -> list[list[str]]:
    bare = results["bare trio-websocket"]
    others = [
        f"{label} {results[name]['calls_per_core']:,.0f}"
        for name, label in (
            ("bare asyncio websockets + orjson", "bare asyncio websockets + orjson"),
            ("openai AsyncRealtimeConnection", "openai"),
        )
        if name in results
    ]
    return [
        [
            "density",
            _variant("live calls per core (by CPU alone), p99 lateness, KiB/call", variant),
            f"{trc['calls_per_core']:,.0f} ({trc['calls_per_core_by_cpu']:,.0f}), "
            f"{trc['p99_ms']:.0f} ms, {trc['memory_per_call_kib']:.0f}",
            "; ".join(
                [
                    f"bare trio-websocket {bare['calls_per_core']:,.0f} "
                    f"({trc['calls_per_core'] / bare['calls_per_core']:.2f}x)",
                    *others,
                ]
            ),
        ]
        for variant, trc in _ours(results)
    ]


_SUMMARIES: dict[str, Callable[[Mapping[str, Any]], list[list[str]]]] = {
    "handoff": _handoff,
    "queue_wait": _queue_wait,
    "collisions": _collisions,
    "throughput": _throughput,
    "scale": _scale,
    "density": _density,
}


def summary_rows(name: str, data: Mapping[str, Any]) -> list[list[str]]:
    """The table rows of one benchmark's JSON (a row saying so if it cannot be read)."""
    try:
        rows = _SUMMARIES[name](data["results"])
        if not rows:
            raise KeyError("no trio-realtime contender")
        return rows
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        return [[name, "(results not understood)", "-", f"{type(exc).__name__}: {exc}"]]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- the plot


def _load_matplotlib() -> Any:
    """matplotlib's ``Figure`` class, or :class:`UsageError` naming the extra to install."""
    try:
        module: Any = importlib.import_module("matplotlib.figure")
    except ImportError:
        raise UsageError(f"--plot needs matplotlib, the 'plot' extra: {_PLOT_HINT}") from None
    return module.Figure


#: (panel title, unit, {contender: summary}) from each benchmark's JSON.
def latency_panels(
    results: Mapping[str, Mapping[str, Any]],
) -> list[tuple[str, str, dict[str, Mapping[str, Any]]]]:
    panels: list[tuple[str, str, dict[str, Mapping[str, Any]]]] = []
    if "handoff" in results:
        contenders = results["handoff"]["results"]["contenders"]
        panels.append(("handoff: done -> next create", "us", dict(contenders)))
    if "queue_wait" in results:
        r = results["queue_wait"]["results"]
        waits = {f"priority {p}": s for p, s in sorted(r["wait_by_priority"].items(), reverse=True)}
        waits["all"] = r["wait_all"]
        panels.append(("queue wait under load", "ms", waits))
    if "scale" in results:
        r = results["scale"]["results"]
        panels.append(("handoff, many sessions", "us", {k: v["handoff_us"] for k, v in r.items()}))
    return panels


def draw_plot(path: Path, results: Mapping[str, Mapping[str, Any]], figure_class: Any) -> bool:
    """Draw the latency percentiles of each benchmark side by side; False if none ran."""
    panels = latency_panels(results)
    if not panels:
        return False
    widths = [max(3.0, 1.25 * len(contenders)) for _, _, contenders in panels]
    figure = figure_class(figsize=(sum(widths) + 1, 4.8), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False, width_ratios=widths)[0]
    levels = [
        ("mean", "mean", "_", "#55a868"),
        ("p50", "p50 (median)", "o", "#4c72b0"),
        ("p99", "p99", "^", "#dd8452"),
        ("p99_9", "p99.9", "s", "#c44e52"),
        ("max", "max", "x", "#606060"),
    ]
    for ax, (title, unit, contenders) in zip(axes, panels, strict=True):
        names = list(contenders)
        for x, name in enumerate(names):
            summary = contenders[name]
            ax.vlines(x, float(summary["p50"]), float(summary["max"]), color="#b0b0b0", zorder=1)
        for key, label, marker, colour in levels:
            ax.scatter(
                range(len(names)),
                [float(contenders[name][key]) for name in names],
                marker=marker,
                s=110 if key == "mean" else 45,
                color=colour,
                label=label,
                zorder=2,
            )
        ax.set_xticks(
            range(len(names)),
            [
                f"{name.replace(' (', chr(10) + '(')}\nn={int(contenders[name]['n'])}"
                for name in names
            ],
            fontsize=8,
        )
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_yscale("log")
        ax.set_ylabel("microseconds" if unit == "us" else "milliseconds")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle("trio-realtime benchmarks: latency distributions (lower is better)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return True


def density_plot_path(path: Path) -> Path:
    """Where the density figure goes when the latency figure takes ``path``."""
    return path.with_name(f"{path.stem}-density{path.suffix}")


def draw_density_plot(path: Path, results: Mapping[str, Any], figure_class: Any) -> bool:
    """Live calls per core per contender, and CPU per call-second against the number of
    calls, from the density benchmark's JSON; False if it did not run."""
    if "density" not in results:
        return False
    contenders: Mapping[str, Any] = results["density"]["results"]
    names = list(contenders)
    figure = figure_class(figsize=(13, 5.2), layout="constrained")
    bars, lines = figure.subplots(1, 2, width_ratios=[1, 1.2])
    y = range(len(names))
    bars.barh(
        y,
        [float(contenders[n]["calls_per_core"]) for n in names],
        color=["#4c72b0" if n.startswith("trio-realtime") else "#b0b0b0" for n in names],
        label="on time (p99 < 100 ms), < 90% of a core",
    )
    bars.scatter(
        [float(contenders[n]["calls_per_core_by_cpu"]) for n in names],
        y,
        marker="|",
        s=200,
        color="#c44e52",
        zorder=3,
        label="by CPU alone",
    )
    bars.set_yticks(y, names, fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("live calls per core")
    bars.set_title("calls per core (more is better)", fontsize=10)
    bars.legend(fontsize=8)
    bars.grid(axis="x", alpha=0.3)
    for name in names:
        by_n: dict[int, list[float]] = {}
        late: set[int] = set()
        for cell in contenders[name]["grid"]:
            by_n.setdefault(int(cell["calls"]), []).append(float(cell["cpu_ms_per_call_second"]))
            if not cell.get("passed", True):
                late.add(int(cell["calls"]))
        xs = sorted(by_n)
        ys = [sorted(by_n[x])[len(by_n[x]) // 2] for x in xs]
        (line,) = lines.plot(
            xs, ys, marker="o", label=name, linewidth=2 if name.startswith("trio") else 1
        )
        failed = [(x, y) for x, y in zip(xs, ys, strict=True) if x in late]
        if failed:  # hollow: a cell that failed (late, over 90% of a core, or replies lost)
            lines.scatter(
                *zip(*failed, strict=True),
                s=70,
                facecolors="white",
                edgecolors=line.get_color(),
                zorder=3,
            )
    lines.set_xlabel("calls in one client process (N)")
    lines.set_ylabel("CPU ms per call-second")
    lines.set_title(
        "client CPU per call-second against N (less is better; hollow: failed in a run)",
        fontsize=10,
    )
    lines.legend(fontsize=7)
    lines.grid(alpha=0.3)
    figure.suptitle("trio-realtime density: live audio calls (25 appends/s out, ~26 events/s in)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return True


# ---------------------------------------------------------------- the command


def run_bench(
    args: argparse.Namespace, *, out: TextIO | None = None, progress: TextIO | None = None
) -> int:
    """``trio-realtime bench``: the exit status (1 if a benchmark failed)."""
    out = out or sys.stdout
    progress = progress or sys.stderr
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        raise UsageError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    names = [name for name in BENCHMARKS if name in args.names] or list(BENCHMARKS)
    figure_class = _load_matplotlib() if args.plot else None
    folder = find_benchmarks(args.benchmarks)
    quick = not args.full
    results: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    progress.write(
        f"running {len(names)} benchmark{'s' if len(names) > 1 else ''} from {folder} "
        f"({'quick' if quick else 'full'} mode)\n"
    )
    with tempfile.TemporaryDirectory(prefix="trio-realtime-bench-") as tmp:
        for index, name in enumerate(names, 1):
            step = f"[{index}/{len(names)}] {name}"
            progress.write(f"{step}: running...\n")
            progress.flush()
            json_path = Path(tmp) / f"{name}.json"
            started = time.monotonic()
            status, output = _run_one(
                folder / f"{name}.py",
                json_path,
                quick=quick,
                progress=progress,
                timeout=300 if quick else 3600,
            )
            seconds = time.monotonic() - started
            if status != 0 or not json_path.is_file():
                tail = "\n".join(output.strip().splitlines()[-8:])
                progress.write(f"{step}: FAILED (exit status {status}) after {seconds:.1f} s\n")
                progress.write("".join(f"      {line}\n" for line in tail.splitlines()))
                failed.append(name)
                continue
            results[name] = json.loads(json_path.read_text())
            progress.write(f"{step}: done in {seconds:.1f} s\n")
            progress.flush()
    rows = [row for name, data in results.items() for row in summary_rows(name, data)]
    if rows:
        out.write(
            f"\ntrio-realtime benchmarks ({'quick' if quick else 'full'} runs; the machine's "
            "noise matters more than small differences: compare the ratios)\n\n"
        )
        out.write(format_table(["benchmark", "measure", "trio-realtime", "compared with"], rows))
        out.write("\n")
        out.flush()
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        progress.write(f"wrote {path}\n")
    if figure_class is not None:
        plot = Path(args.plot)
        drew = draw_plot(plot, results, figure_class)
        if drew:
            progress.write(f"wrote {plot}\n")
        density = density_plot_path(plot) if drew else plot
        if draw_density_plot(density, results, figure_class):
            progress.write(f"wrote {density}\n")
        elif not drew:
            progress.write(
                "no latency or density benchmark ran (handoff, queue_wait, scale, density): "
                "no plot\n"
            )
    if failed:
        progress.write(f"failed: {', '.join(failed)}\n")
        return EXIT_FAILED
    return 0
