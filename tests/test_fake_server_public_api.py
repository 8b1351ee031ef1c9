"""The shipped fake server uses public trio-websocket calls only (trio-websocket is in
maintenance mode: its private members may change under us)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from trio_websocket import ConnectionClosed

import trio_realtime.testing
from trio_realtime.testing import Behavior, open_fake_server
from trio_realtime.testing._raw_client import open_raw_client

TESTING_DIR = str(Path(trio_realtime.testing.__file__).parent)
#: Our own raw client drives the server from the tests; it is not the server.
RAW_CLIENT = str(Path(TESTING_DIR) / "_raw_client.py")


def _guard(cls: type, touched: list[str]) -> Any:
    original = cls.__getattribute__

    def __getattribute__(self: Any, name: str) -> Any:
        if name.startswith("_") and not name.startswith("__"):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(TESTING_DIR) and caller != RAW_CLIENT:
                touched.append(f"{cls.__name__}.{name}")
        return original(self, name)

    return __getattribute__


@pytest.fixture
def private_uses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    touched: list[str] = []
    for cls in (trio_websocket.WebSocketConnection, trio_websocket.WebSocketRequest):
        monkeypatch.setattr(cls, "__getattribute__", _guard(cls, touched))
    return touched


async def test_accept_close_abort_and_refuse_use_public_calls_only(
    private_uses: list[str],
) -> None:
    behavior = Behavior(accepted_api_keys={"good"})
    with trio.fail_after(10):
        async with open_fake_server(behavior=behavior) as server:
            headers = [(b"api-key", b"good")]
            # Accepted, then closed with a handshake.
            async with open_raw_client(server.port, extra_headers=headers) as client:
                connection = await server.wait_connection()
                await client.expect("session.created")
                await connection.close(4000, "bye")
                with pytest.raises(ConnectionClosed):
                    while True:
                        await client.recv()
            # Accepted, then dropped.
            async with open_raw_client(server.port, extra_headers=headers) as client:
                connection = await server.wait_connection()
                await client.expect("session.created")
                await connection.abort()
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await client.recv()
                assert info.value.reason.code == 1006
            # Refused at the handshake (a wrong key on an Azure path).
            statuses = []
            try:
                async with open_raw_client(
                    server.port,
                    "/openai/v1/realtime?model=d",
                    extra_headers=[(b"api-key", b"bad")],
                ):
                    pytest.fail("the handshake must be refused")
            except* trio_websocket.ConnectionRejected as group:
                statuses = [exc.status_code for exc in group.exceptions]  # type: ignore[attr-defined]
            assert statuses == [401]
            assert server.statistics().connections_refused == 1
    assert private_uses == []
