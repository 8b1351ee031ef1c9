"""The fake server plays calls (issue "Phone and WebRTC calls", item 5): the incoming-call
webhook, REST call control on the WebSocket's port (driven by the ``openai`` package's own
client), and sidebands attached by ``call_id``."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
import trio
import trio_websocket
from openai import AsyncOpenAI
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

from model_checks import undeclared_fields
from trio_realtime.testing import Behavior, FakeRealtimeServer, open_fake_server
from trio_realtime.testing._raw_client import open_raw_client


def rest_client(server: FakeRealtimeServer, key: str = "sk-test") -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=server.rest_base_url, max_retries=0)


async def refused_sideband(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of a refused WebSocket handshake."""
    refusals: list[trio_websocket.ConnectionRejected] = []
    try:
        async with open_raw_client(port, path):
            pytest.fail("the handshake must be refused")
    except* trio_websocket.ConnectionRejected as group:
        refusals.extend(
            e for e in group.exceptions if isinstance(e, trio_websocket.ConnectionRejected)
        )
    [refusal] = refusals
    assert refusal.body is not None
    return refusal.status_code, json.loads(refusal.body)


async def test_the_incoming_call_webhook_fits_the_openai_model() -> None:
    async with open_fake_server() as server:
        call = server.incoming_call({"From": "<sip:+15550001111@example.com>"})
        event = RealtimeCallIncomingWebhookEvent.model_validate(call.webhook)
        assert undeclared_fields(event) == []
        assert event.data.call_id == call.call_id
        assert call.call_id.startswith("rtc_")
        assert [(h.name, h.value) for h in event.data.sip_headers] == [
            ("From", "<sip:+15550001111@example.com>")
        ]
        assert call.state == "ringing"


async def test_the_openai_client_accepts_and_hangs_up_a_call() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            call = server.incoming_call()
            client = rest_client(server)
            await client.realtime.calls.accept(
                call.call_id, type="realtime", instructions="Be brief.", model="gpt-realtime"
            )
            assert call.state == "active"
            assert call.session is not None
            assert call.session["instructions"] == "Be brief."
            # SIP audio stays G.711 unless the accept names another format.
            assert call.session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
            await client.realtime.calls.hangup(call.call_id)
            assert (call.state, call.ended_by) == ("ended", "hung_up")
            # An ended call is gone.
            with pytest.raises(openai.NotFoundError) as info:
                await client.realtime.calls.hangup(call.call_id)
            assert info.value.code == "call_id_not_found"
            assert [(verb, status) for verb, _, status in call.requests] == [
                ("accept", 200),
                ("hangup", 200),
                ("hangup", 404),
            ]
            await client.close()


async def test_reject_and_refer() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            client = rest_client(server)
            rejected = server.incoming_call()
            await client.realtime.calls.reject(rejected.call_id, status_code=486)
            assert (rejected.ended_by, rejected.reject_status_code) == ("rejected", 486)
            default = server.incoming_call()
            await client.realtime.calls.reject(default.call_id)
            assert default.reject_status_code == 603
            referred = server.incoming_call()
            # A call that still rings cannot be referred.
            with pytest.raises(openai.BadRequestError):
                await client.realtime.calls.refer(referred.call_id, target_uri="tel:+15550002222")
            await client.realtime.calls.accept(referred.call_id, type="realtime")
            # Nor accepted twice.
            with pytest.raises(openai.BadRequestError):
                await client.realtime.calls.accept(referred.call_id, type="realtime")
            with pytest.raises(openai.BadRequestError) as info:
                await client.realtime.calls.refer(referred.call_id, target_uri="nowhere")
            assert info.value.code == "invalid_value"
            await client.realtime.calls.refer(referred.call_id, target_uri="tel:+15550002222")
            assert (referred.ended_by, referred.refer_target_uri) == (
                "referred",
                "tel:+15550002222",
            )
            await client.close()


async def test_an_accept_is_checked_as_a_session_update() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            call = server.incoming_call()
            client = rest_client(server)
            with pytest.raises(openai.BadRequestError) as info:
                await client.realtime.calls.accept(
                    call.call_id, type="realtime", extra_body={"bogus": 1}
                )
            assert (info.value.code, info.value.param) == ("unknown_parameter", "session.bogus")
            with pytest.raises(openai.BadRequestError) as info:
                await client.realtime.calls.accept(
                    call.call_id,
                    type="realtime",
                    output_modalities=["video"],  # type: ignore[list-item]
                )
            assert info.value.code == "invalid_value"
            assert call.state == "ringing"
            await client.realtime.calls.accept(
                call.call_id,
                type="realtime",
                audio={"output": {"format": {"type": "audio/pcma"}, "voice": "marin"}},
            )
            assert call.session is not None
            assert call.session["audio"]["output"] == {
                **call.session["audio"]["output"],
                "format": {"type": "audio/pcma"},
                "voice": "marin",
            }
            await client.close()


async def test_unknown_calls_paths_and_keys_are_refused() -> None:
    with trio.fail_after(10):
        async with open_fake_server(behavior=Behavior(accepted_api_keys={"sk-good"})) as server:
            good, bad = rest_client(server, "sk-good"), rest_client(server, "sk-bad")
            with pytest.raises(openai.NotFoundError) as info:
                await good.realtime.calls.accept("rtc_nope", type="realtime")
            assert info.value.code == "call_id_not_found"
            call = server.incoming_call()
            with pytest.raises(openai.AuthenticationError) as auth:
                await bad.realtime.calls.accept(call.call_id, type="realtime")
            assert auth.value.code == "invalid_api_key"
            assert call.state == "ringing"
            with pytest.raises(openai.NotFoundError):
                await good.post("/realtime/calls/x/frobnicate", cast_to=object, body={})
            for client in (good, bad):
                await client.close()


async def test_a_sideband_attaches_to_an_active_call_only() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            call = server.incoming_call()
            path = f"/v1/realtime?call_id={call.call_id}"
            # Unknown, still ringing: 404 call_id_not_found at the handshake.
            for refused_path in ("/v1/realtime?call_id=rtc_nope", path):
                status, body = await refused_sideband(server.port, refused_path)
                assert status == 404
                assert body["error"]["code"] == "call_id_not_found"
                assert body["error"]["message"] == "No session found for the provided call_id"
            client = rest_client(server)
            await client.realtime.calls.accept(call.call_id, type="realtime", instructions="Hi.")
            for sideband_path in (path, f"/openai/v1/realtime?call_id={call.call_id}"):
                async with open_raw_client(server.port, sideband_path) as sideband:
                    # No session.created on a sideband: it configures and waits for the answer.
                    await sideband.send({"type": "session.update", "session": {"type": "realtime"}})
                    updated = await sideband.recv()
                    assert updated["type"] == "session.updated"
                    assert updated["session"]["instructions"] == "Hi."
                    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
            assert [c.request_path for c in call.sidebands] == [
                path,
                f"/openai/v1/realtime?call_id={call.call_id}",
            ]
            await client.realtime.calls.hangup(call.call_id)
            status, body = await refused_sideband(server.port, path)
            assert (status, body["error"]["code"]) == (404, "call_id_not_found")
            await client.close()


async def test_calls_are_ga_only() -> None:
    async with open_fake_server(dialect="beta") as server:
        with pytest.raises(ValueError, match="GA"):
            server.incoming_call()


async def close_code(client: Any) -> int:
    """Read until the server closes; the close code."""
    try:
        while True:
            await client.recv()
    except trio_websocket.ConnectionClosed as exc:
        return -1 if exc.reason is None else int(exc.reason.code)


async def accepted_call(server: FakeRealtimeServer, **session: Any) -> Any:
    call = server.incoming_call()
    client = rest_client(server)
    await client.realtime.calls.accept(call.call_id, type="realtime", **session)
    await client.close()
    assert call.connection is not None
    return call


async def test_sidebands_share_the_calls_conversation_and_errors_go_to_their_sender() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            call = await accepted_call(server)
            url = f"ws://127.0.0.1:{server.port}/v1/realtime?call_id={call.call_id}"
            assert server.sideband_url(call) == server.sideband_url(call.call_id) == url
            path = f"/v1/realtime?call_id={call.call_id}"
            async with (
                open_raw_client(server.port, path) as a,
                open_raw_client(server.port, path) as b,
            ):
                await call.wait_sidebands(2)
                user = {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}],
                }
                await a.send({"type": "conversation.item.create", "item": user})
                added_a = (await a.recv_until("conversation.item.done"))[-1]
                added_b = (await b.recv_until("conversation.item.done"))[-1]
                assert added_a["item"]["id"] == added_b["item"]["id"]
                assert call.sidebands[1].item_ids() == [added_a["item"]["id"]]
                server.behavior.auto_finish = False
                await a.send({"type": "response.create", "event_id": "evt_a"})
                created = (await b.recv_until("response.created"))[-1]
                await b.send({"type": "response.create", "event_id": "evt_b"})
                error = (await b.recv_until("error"))[-1]
                assert error["error"]["code"] == "conversation_already_has_active_response"
                assert error["error"]["event_id"] == "evt_b"
                await call.connection.finish_response()
                done_a = (await a.recv_until("response.done"))[-1]
                assert done_a["response"]["id"] == created["response"]["id"]
                # Sideband a never saw b's error.
                assert [e for e in a.received if e["type"] == "error"] == []
            assert call.state == "active"


async def test_the_callers_leg_starts_responses_and_its_audio_stays_on_the_call() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            call = await accepted_call(server, output_modalities=["audio"])
            path = f"/v1/realtime?call_id={call.call_id}"
            async with open_raw_client(server.port, path) as sideband:
                await call.wait_sidebands(1)
                # The caller's voice activity.
                response_id = await call.connection.start_response()
                events = await sideband.recv_until("response.done")
                types = [e["type"] for e in events]
                assert types[0] == "input_audio_buffer.speech_started"
                assert "response.output_audio_transcript.delta" in types
                assert "response.output_audio.delta" not in types
                assert events[-1]["response"]["id"] == response_id
                assert "response.output_audio.delta" in call.connection.sent_types()
                # A second controller (the browser's data channel): its response reaches the
                # sideband, its errors do not.
                server.behavior.auto_finish = False
                call.connection.send_client_event({"type": "response.create"})
                await sideband.recv_until("response.created")
                call.connection.send_client_event({"type": "response.create", "event_id": "dc"})
                await sideband.send({"type": "response.cancel"})
                await sideband.recv_until("response.done")
                assert [e for e in sideband.received if e["type"] == "error"] == []
                assert server.statistics().rejections_sent == 1


async def test_a_sideband_closed_cleanly_leaves_the_call_and_a_new_one_finds_the_conversation() -> (
    None
):
    with trio.fail_after(10):
        async with open_fake_server() as server:
            call = await accepted_call(server)
            path = f"/v1/realtime?call_id={call.call_id}"
            async with open_raw_client(server.port, path) as first:
                await call.wait_sidebands(1)
                await first.send({"type": "response.create"})
                await first.recv_until("response.done")
                items = call.connection.item_ids()
                assert len(items) == 1
                # The knob: a sideband is closed cleanly at once (a proxy restart).
                server.behavior.close_sidebands_after = 0
                async with open_raw_client(server.port, path) as second:
                    assert await close_code(second) == 1000
                server.behavior.close_sidebands_after = None
                # The call, and the first sideband, are untouched.
                await first.send({"type": "session.update", "session": {"type": "realtime"}})
                await first.recv_until("session.updated")
                # Closed from the server's side: the same.
                await call.sidebands[0].close()
                assert await close_code(first) == 1000
            assert call.state == "active"
            async with open_raw_client(server.port, path) as third:
                await call.wait_sidebands(1)
                await third.send({"type": "conversation.item.retrieve", "item_id": items[-1]})
                retrieved = (await third.recv_until("conversation.item.retrieved"))[-1]
                assert retrieved["item"]["id"] == items[-1]
            assert call.connection.item_ids() == items
            assert len(call.sidebands) == 3


async def test_hang_up_ends_the_call_and_closes_its_sidebands() -> None:
    with trio.fail_after(10):
        async with open_fake_server() as server:
            call = await accepted_call(server)
            path = f"/v1/realtime?call_id={call.call_id}"
            async with open_raw_client(server.port, path) as sideband:
                await call.wait_sidebands(1)
                client = rest_client(server)
                await client.realtime.calls.hangup(call.call_id)
                await client.close()
                assert await close_code(sideband) == 1000
            await call.connection.wait_closed()
            assert not call.connection.is_open
            assert call.state == "ended"
