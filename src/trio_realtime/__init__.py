"""trio-realtime: a Trio client for the OpenAI / Azure OpenAI Realtime API that serializes
responses — one active response at a time, nothing lost."""

from ._audio import AudioFormat as AudioFormat
from ._audio_out import AudioChunk as AudioChunk
from ._audio_out import Interruption as Interruption
from ._config import Reconnect as Reconnect
from ._config import SessionConfig as SessionConfig
from ._endpoints import Endpoint as Endpoint
from ._errors import CallEnded as CallEnded
from ._errors import ConnectionLost as ConnectionLost
from ._errors import EventBufferOverflow as EventBufferOverflow
from ._errors import QueueFull as QueueFull
from ._errors import RealtimeError as RealtimeError
from ._errors import ResponseRejected as ResponseRejected
from ._errors import ResponseTimeout as ResponseTimeout
from ._errors import SessionClosed as SessionClosed
from ._errors import SessionRefused as SessionRefused
from ._gate import TicketState as TicketState
from ._result import FunctionCallItem as FunctionCallItem
from ._result import ResponseResult as ResponseResult
from ._session import RealtimeSession as RealtimeSession
from ._session import open_session as open_session
from ._statistics import Latencies as Latencies
from ._statistics import LatencySummary as LatencySummary
from ._statistics import SessionStatistics as SessionStatistics
from ._stream import BoundedStream as BoundedStream
from ._stream import EventStream as EventStream
from ._ticket import ResponseTicket as ResponseTicket
from ._ticket import TicketTimings as TicketTimings
from ._tools import Tool as Tool
from ._tools import ToolRegistry as ToolRegistry
from ._tools import ToolRunner as ToolRunner
from ._tools import ToolRunnerStatistics as ToolRunnerStatistics
from ._tools import ToolSession as ToolSession
from ._tools import run_tools as run_tools
from ._transport import Transport as Transport

__version__ = "0.1.0"

__all__ = [
    "AudioChunk",
    "AudioFormat",
    "BoundedStream",
    "CallEnded",
    "ConnectionLost",
    "Endpoint",
    "EventBufferOverflow",
    "EventStream",
    "FunctionCallItem",
    "Interruption",
    "Latencies",
    "LatencySummary",
    "QueueFull",
    "RealtimeError",
    "RealtimeSession",
    "Reconnect",
    "ResponseRejected",
    "ResponseResult",
    "ResponseTicket",
    "ResponseTimeout",
    "SessionClosed",
    "SessionConfig",
    "SessionRefused",
    "SessionStatistics",
    "TicketState",
    "TicketTimings",
    "Tool",
    "ToolRegistry",
    "ToolRunner",
    "ToolRunnerStatistics",
    "ToolSession",
    "Transport",
    "open_session",
    "run_tools",
]
