"""wss:// verifies certificates by default; a private CA can be trusted explicitly."""

from __future__ import annotations

import json
import logging
import ssl
from contextlib import suppress
from pathlib import Path

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from trio_realtime import ConnectionLost, Endpoint, SessionConfig, open_session

DATA = Path(__file__).parent / "data"
CERT = DATA / "localhost-cert.pem"  # self-signed for localhost / 127.0.0.1


#: Every test here runs over each transport (see conftest.py).
pytestmark = pytest.mark.usefixtures("transport")


async def greet(request: WebSocketRequest) -> None:
    ws = await request.accept()
    await ws.send_message(json.dumps({"type": "session.created", "session": {"id": "sess"}}))
    with suppress(ConnectionClosed):
        await ws.get_message()  # until the client leaves


async def serve_tls(nursery: trio.Nursery) -> int:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(CERT, DATA / "localhost-key.pem")
    server = await nursery.start(serve_websocket, greet, "127.0.0.1", 0, context)
    port: int = server.port
    return port


async def test_untrusted_certificate_is_refused() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await serve_tls(nursery)
            endpoint = Endpoint(f"wss://127.0.0.1:{port}/v1/realtime", {"api-key": "k"})
            with pytest.raises(ConnectionLost, match="CERTIFICATE_VERIFY_FAILED"):
                async with open_session(endpoint):
                    pass  # pragma: no cover
            nursery.cancel_scope.cancel()


async def test_private_ca_can_be_trusted() -> None:
    context = ssl.create_default_context(cafile=str(CERT))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await serve_tls(nursery)
            endpoint = Endpoint(f"wss://127.0.0.1:{port}/v1/realtime", {"api-key": "k"})
            async with open_session(endpoint, config=SessionConfig(ssl_context=context)) as s:
                assert s.server_session["id"] == "sess"
            nursery.cancel_scope.cancel()


async def test_verification_turned_off_is_warned_once_per_session(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    config = SessionConfig(ssl_context=context, rollover_after=30)
    with trio.fail_after(100), caplog.at_level(logging.WARNING, logger="trio_realtime"):
        async with trio.open_nursery() as nursery:
            port = await serve_tls(nursery)
            endpoint = Endpoint(f"wss://127.0.0.1:{port}/v1/realtime", {"api-key": "k"})
            async with open_session(endpoint, config=config) as session:
                await trio.sleep(40)  # a rollover: a second connection, and no second warning
                assert session.statistics().connections == 2
            nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if "verification" in r.getMessage()]
    assert len(warnings) == 1
    assert "TLS certificate verification is off" in warnings[0]
