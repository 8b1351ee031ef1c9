"""The README's promises: its Quick start holds two commands, and its pytest example passes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
