"""A fake OpenAI Realtime server for tests, and its pytest fixtures."""

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
    "FakeConnection",
    "FakeRealtimeServer",
    "FunctionCall",
    "Script",
    "ServerStatistics",
    "default_script",
    "open_fake_server",
]
