"""A fake OpenAI Realtime server for tests, and its pytest fixtures.

``open_fake_server()`` serves the Realtime protocol (GA or beta) on 127.0.0.1 and plays the
service's rules: the paths and keys it accepts, the session it merges and validates, the
conversation's items, one active response at a time, expiry and the idle timeout. Those rules
are written down, in prose and code, in ``trio_realtime/testing/_model.py``. ``Behavior``
holds the knobs for the service's quirks and faults; ``FakeConnection`` lets a test act as the
server (inject events, close, drop, start and finish responses).

Calls (GA): ``server.incoming_call()`` rings a call (``FakeCall``, with the
``realtime.call.incoming`` webhook); the REST call control (``POST /v1/realtime/calls/{id}/
accept|reject|refer|hangup``) is served on the same port as the WebSocket, and sidebands attach
with ``?call_id=``; the rules are in ``_calls.py``. A call plays each response's audio to the
caller itself: its sidebands get ``output_audio_buffer.started`` / ``stopped`` / ``cleared``
(``_model.py`` rule 7; a plain WebSocket session refuses ``output_audio_buffer.clear``).

``Behavior`` knobs (each documented on its field; mutable, read when they matter):

- timing: ``auto_finish``, ``created_delay``, ``delta_delay``, ``cancel_delay``,
  ``audio_pace`` (audio at real-time pace, or a multiple of it), ``audio_chunk_ms`` (the
  length of each audio delta, in the response's format: PCM16 48 bytes a ms, G.711 8);
- what is sent: ``withhold_created``, ``withhold_done``, ``omit_response_created``,
  ``send_rate_limits``, ``null_error_event_id``, ``legacy_conflict_error``,
  ``interrupted_status``, ``audio_items``, ``overlap_audio_items``, ``script``;
- cancels: ``ignore_cancel``;
- keys and connections: ``accepted_api_keys``, ``invalid_api_keys``, ``session_duration``,
  ``drop_after``, ``close_sidebands_after`` and ``call_playback_pace`` (calls).

``open_fake_server_process()`` runs the same server in a process of its own (``python -m
trio_realtime.testing``), so that client and server run at their own pace, as against the
service; its ``ServerReport`` (statistics, and the items each connection received) comes back
when it stops.
"""

from ._calls import FakeCall as FakeCall
from ._connection import FakeConnection as FakeConnection
from ._process import ConnectionReport as ConnectionReport
from ._process import FakeServerProcess as FakeServerProcess
from ._process import FakeServerProcessError as FakeServerProcessError
from ._process import ServerReport as ServerReport
from ._process import open_fake_server_process as open_fake_server_process
from ._script import Behavior as Behavior
from ._script import FunctionCall as FunctionCall
from ._script import Script as Script
from ._script import default_script as default_script
from ._server import FakeRealtimeServer as FakeRealtimeServer
from ._server import ServerStatistics as ServerStatistics
from ._server import open_fake_server as open_fake_server

__all__ = [
    "Behavior",
    "ConnectionReport",
    "FakeCall",
    "FakeConnection",
    "FakeRealtimeServer",
    "FakeServerProcess",
    "FakeServerProcessError",
    "FunctionCall",
    "Script",
    "ServerReport",
    "ServerStatistics",
    "default_script",
    "open_fake_server",
    "open_fake_server_process",
]
