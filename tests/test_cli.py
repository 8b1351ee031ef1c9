"""The demo command against the embedded fake server."""

from __future__ import annotations

import re
import socket

import pytest

from trio_realtime._cli import main


def test_demo_serializes_colliding_requests(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["demo"]) == 0  # no credentials in the environment: the fake server
    out = capsys.readouterr().out
    assert "fake Realtime server" in out
    assert "rejections surfaced to the app 0" in out
    assert "most in-band responses active at once 1" in out
    summary = re.search(r"requests (\d+), completed (\d+)", out)
    assert summary is not None
    assert summary.group(1) == summary.group(2) == "5"
    assert "server-started responses 2" in out
    assert "answer from 2 tool results (one response)" in out


def test_demo_beta_dialect(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--fake", "--beta"]) == 0
    assert "fake Realtime server (beta)" in capsys.readouterr().out


def test_demo_reports_a_connection_failure(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["demo", "--url", f"ws://127.0.0.1:{port}/v1/realtime"]) == 2
    assert "could not connect" in capsys.readouterr().err
