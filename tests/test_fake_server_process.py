"""The fake server in a process of its own: the command line and open_fake_server_process()."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import trio

from trio_realtime import open_session
from trio_realtime.testing import (
    Behavior,
    FakeServerProcessError,
    ServerReport,
    open_fake_server_process,
)
from trio_realtime.testing._raw_client import open_raw_client

USER_ITEM = {
    "type": "message",
    "role": "user",
    "content": [{"type": "input_text", "text": "hello"}],
}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers: ask for its state.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_session_against_the_server_in_its_own_process() -> None:
    with trio.fail_after(30):
        async with open_fake_server_process() as server:
            assert server.url.startswith(f"ws://127.0.0.1:{server.port}/v1/realtime?model=")
            assert server.report is None
            async with open_session(server.url) as session:
                await session.send({"type": "conversation.item.create", "item": USER_ITEM})
                ticket = await session.say("out of process")
                result = await ticket.wait_done()
                assert result.status == "completed"
        report = server.report
        assert report is not None
        assert server.returncode == 0
        stats = report.statistics
        assert stats.connections == 1
        assert stats.open_connections == 0
        assert stats.responses_created == 1
        assert dict(stats.responses_done_by_status) == {"completed": 1}
        [connection] = report.connections
        assert connection.request_path.startswith("/v1/realtime")
        assert connection.received_types["response.create"] == 1
        assert connection.received_items == (USER_ITEM,)
        assert connection.duplicated_items() == []
        assert len(connection.item_ids) == 2  # the user's item and the assistant's answer


async def test_the_report_shows_items_a_connection_received_twice() -> None:
    other = {**USER_ITEM, "content": [{"type": "input_text", "text": "other"}]}
    with trio.fail_after(30):
        async with open_fake_server_process() as server:
            async with open_raw_client(server.port) as client:
                await client.expect("session.created")
                for item in (USER_ITEM, other, USER_ITEM, USER_ITEM):
                    await client.send({"type": "conversation.item.create", "item": item})
                    await client.recv_until("conversation.item.done")
            report = await server.stop()
        assert server.report is report
        [connection] = report.connections
        assert connection.received_items == (USER_ITEM, other, USER_ITEM, USER_ITEM)
        assert connection.duplicated_items() == [USER_ITEM]


@pytest.mark.parametrize(
    "behavior",
    [
        {"script": {"text": "scripted"}, "accepted_api_keys": ["sk-good"]},
        Behavior(accepted_api_keys={"sk-good"}, legacy_conflict_error=True),
    ],
    ids=["mapping", "Behavior"],
)
async def test_behavior_knobs_reach_the_child(behavior: object) -> None:
    with trio.fail_after(30):
        async with open_fake_server_process(behavior=behavior, dialect="beta") as server:  # type: ignore[arg-type]
            async with open_raw_client(
                server.port, extra_headers=[(b"authorization", b"Bearer sk-bad")]
            ) as client:
                error = await client.expect("error")
                assert error["error"]["code"] == "invalid_api_key"
            async with open_raw_client(
                server.port, extra_headers=[(b"authorization", b"Bearer sk-good")]
            ) as client:
                await client.expect("session.created")
                await client.expect("conversation.created")  # beta
                await client.send({"type": "response.create"})
                events = await client.recv_until("response.done")
                text = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
                scripted = isinstance(behavior, dict)
                assert text == ("scripted" if scripted else "Hello from the fake server.")


def test_a_script_factory_cannot_cross_the_process_boundary() -> None:
    from trio_realtime.testing._process import behavior_to_json

    with pytest.raises(TypeError, match="cannot go to another process"):
        behavior_to_json(Behavior(script=lambda body: None))  # type: ignore[arg-type,return-value]


async def test_a_child_that_cannot_start_says_why() -> None:
    with trio.fail_after(30):
        with pytest.raises(FakeServerProcessError, match=r"unknown Behavior knob.*no_such_knob"):
            async with open_fake_server_process(behavior={"no_such_knob": 1}):
                pytest.fail("the block must not run")


async def test_the_child_ends_whatever_ends_the_block() -> None:
    with trio.fail_after(30):
        # An exception in the block.
        with pytest.raises(KeyError):
            async with open_fake_server_process() as server:
                pid = server.pid
                raise KeyError("boom")
        assert server.returncode is not None
        assert not _alive(pid)
        # Cancellation from outside, while a client is connected.
        with trio.CancelScope() as scope:
            async with open_fake_server_process() as server:
                pid = server.pid
                async with open_raw_client(server.port) as client:
                    await client.expect("session.created")
                    scope.cancel()
                    await trio.sleep_forever()
        assert scope.cancelled_caught
        assert server.returncode is not None
        assert not _alive(pid)


async def test_a_killed_server_drops_its_clients_and_gives_no_report() -> None:
    with trio.fail_after(30):
        async with open_fake_server_process() as server:
            async with open_raw_client(server.port) as client:
                await client.expect("session.created")
                await server.kill()
                with pytest.raises(Exception):  # noqa: B017, PT011 - the socket just vanishes
                    while True:
                        await client.recv()
            with pytest.raises(FakeServerProcessError):
                await server.stop()
        assert server.report is None
        assert server.returncode == -signal.SIGKILL


async def test_sigterm_ends_the_command_line_server_with_its_report() -> None:
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trio_realtime.testing", "--dialect", "beta"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            output = b""
            while b"\n" not in output:
                output += await process.stdout.receive_some()
            url = output.decode().splitlines()[0]
            assert url.startswith("ws://127.0.0.1:")
            port = int(url.split(":")[2].split("/")[0])
            async with open_raw_client(port) as client:
                await client.expect("session.created")
            process.send_signal(signal.SIGTERM)
            while chunk := await process.stdout.receive_some():
                output += chunk
            assert await process.wait() == 0
        finally:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        lines = output.decode().splitlines()
        assert len(lines) == 2
        report = ServerReport.from_json(lines[1])
        assert report.statistics.connections == 1
        assert json.loads(lines[1])["connections"][0]["received_types"] == {}
