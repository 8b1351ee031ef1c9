"""Credentials never reach a log line (issue 18, item 6): an API key in the URL's query, or in
a header the library does not know by name, is redacted in every record the library and its
WebSocket libraries log, on every connect and rollover, on both transports."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from trio_realtime import Endpoint, SessionConfig, SessionRefused, open_session
from trio_realtime._endpoints import redact_url
from trio_realtime.testing import open_fake_server

pytestmark = pytest.mark.usefixtures("transport")

SECRETS = ("sk-query-SECRET", "apim-SECRET", "bearer-SECRET", "cookie-SECRET", "proto-SECRET")


async def test_no_credential_in_any_log_line(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = SessionConfig(rollover_after=30)
    with trio.fail_after(300), caplog.at_level(logging.DEBUG):
        async with open_fake_server() as server:
            endpoint = Endpoint(
                f"{server.url}&api-key={SECRETS[0]}",
                [
                    ("Ocp-Apim-Subscription-Key", SECRETS[1]),
                    ("Authorization", f"Bearer {SECRETS[2]}"),
                    ("Cookie", f"session={SECRETS[3]}"),
                    # A browser's way to send a key; not on HARMLESS_HEADERS, so a secret.
                    ("Sec-WebSocket-Protocol", f"realtime, openai-insecure-api-key.{SECRETS[4]}"),
                ],
            )
            async with open_session(endpoint, config=config) as session:
                await session.request_response().wait_done()
                await trio.sleep(40)  # a rollover: a second connect
                assert session.statistics().rollovers == 1
    # (The fake server's own records are the test kit's, not the client's.)
    client = [r for r in caplog.records if not r.name.startswith("trio_realtime.testing")]
    assert client, "the test must see the client's DEBUG records"
    for record in client:
        line = record.getMessage()
        assert not any(secret in line for secret in SECRETS), (record.name, line)


def test_redact_url_keeps_only_harmless_parameters_in_a_log_line() -> None:
    assert redact_url("GET /v1/realtime?model=gpt&api-key=abc&subscription-key=def HTTP/1.1") == (
        "GET /v1/realtime?model=gpt&api-key=<redacted>&subscription-key=<redacted> HTTP/1.1"
    )
    assert redact_url("/openai/realtime?api-version=2025&deployment=d") == (
        "/openai/realtime?api-version=2025&deployment=d"
    )
    # Every query of a line, not only the first.
    assert redact_url("from /a?api-key=x to /b?model=m&sig=y") == (
        "from /a?api-key=<redacted> to /b?model=m&sig=<redacted>"
    )


async def test_the_fake_server_logs_no_credential_from_the_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The fake server logs the request path of each handshake, accepted or refused, at DEBUG:
    # with its query redacted, as the library's own lines are.
    secret = "sk-query-SECRET"
    with trio.fail_after(30), caplog.at_level(logging.DEBUG, logger="trio_realtime.testing"):
        async with open_fake_server() as server:
            endpoint = Endpoint(f"{server.url}&api-key={secret}")
            async with open_session(endpoint) as session:
                await session.request_response().wait_done()
            wrong_path = server.url.replace("/v1/realtime", "/nowhere")
            refused = Endpoint(f"{wrong_path}&subscription-key={secret}")
            with pytest.raises(SessionRefused):
                async with open_session(refused):
                    pass
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("trio_realtime.testing")]
    assert any("accepted a connection" in line for line in lines), lines
    assert any("refusing the handshake" in line for line in lines), lines
    assert not [line for line in lines if secret in line]
