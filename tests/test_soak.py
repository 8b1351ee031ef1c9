"""The quick soak (``benchmarks/soak.py --quick``) keeps every invariant. Never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def test_quick_soak_keeps_every_invariant(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    # A process of its own: the soak runs its own trio.run, outside pytest-trio's loop.
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--quick", "--seed", "7", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(out.read_text())
    assert summary == json.loads(proc.stdout)
    assert summary["conflicts_surfaced"] == 0
    assert summary["lost"] == 0
    assert summary["tasks_left"] == 0
    assert summary["max_in_band_active"] == 1
    assert summary["requests"] > 0
    assert summary["completed"] > 0
    assert summary["invariants_ok"] is True
    outcomes = (
        summary["completed"]
        + summary["cancelled"]
        + summary["incomplete"]
        + summary["done_failed_status"]
        + sum(summary["failed"].values())
    )
    assert outcomes == summary["requests"]  # every ticket reached a terminal state
