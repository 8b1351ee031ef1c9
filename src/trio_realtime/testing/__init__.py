"""A fake OpenAI Realtime server for tests, and its pytest fixtures.

``open_fake_server()`` serves the Realtime protocol (GA or beta) on 127.0.0.1 and plays the
service's rules: the paths and keys it accepts, the session it merges and validates, the
conversation's items, one active response at a time, expiry and the idle timeout. Those rules
are written down, in prose and code, in ``trio_realtime/testing/_model.py``. ``Behavior``
holds the knobs for the service's quirks and faults; ``FakeConnection`` lets a test act as the
server (inject events, close, drop, start and finish responses).

``open_fake_server_process()`` runs the same server in a process of its own (``python -m
trio_realtime.testing``), so that client and server run at their own pace, as against the
service; its ``ServerReport`` (statistics, and the items each connection received) comes back
when it stops.
"""

from ._process import ConnectionReport as ConnectionReport
from ._process import FakeServerProcess as FakeServerProcess
from ._process import FakeServerProcessError as FakeServerProcessError
from ._process import ServerReport as ServerReport
from ._process import open_fake_server_process as open_fake_server_process
from ._script import Behavior as Behavior
from ._script import FunctionCall as FunctionCall
from ._script import Script as Script
from ._script import default_script as default_script
from ._server import FakeConnection as FakeConnection
from ._server import FakeRealtimeServer as FakeRealtimeServer
from ._server import ServerStatistics as ServerStatistics
from ._server import open_fake_server as open_fake_server

__all__ = [
    "Behavior",
    "ConnectionReport",
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
