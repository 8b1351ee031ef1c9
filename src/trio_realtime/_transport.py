"""The seam to the WebSocket libraries: a three-method :class:`Transport`, and opening one.

Everything else in trio-realtime talks to a ``Transport``. Opening one checks the URL and the
credentials, opens the TCP (and TLS) stream itself — so that no socket is left open whichever
side closes first — and maps what connecting can raise to :class:`ConnectionLost` (an HTTP
refusal to :class:`SessionRefused`), once, with :func:`._transport_base.opening_errors`. The
WebSocket itself is spoken by one of two adapters, chosen by ``SessionConfig.transport``:

- ``"trio-websocket"`` (:mod:`._transport_tws`, the default and a core dependency);
- ``"websockets"`` (:mod:`._transport_ws`, ``websockets``' own Trio implementation, faster;
  installed with ``pip install "trio-realtime[fast]"``).

What both share lives in :mod:`._transport_base`. While a connection is open, a task of the
transport's nursery pings it (``ping_interval``, ``ping_timeout``): a connection gone silent
is aborted, which the session sees as an abnormal loss.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ._config import SessionConfig
from ._endpoints import Endpoint
from ._transport_base import (
    Target,
    Transport,
    is_loopback,
    keep_alive,
    open_stream,
    opening_errors,
    target_of,
)
from ._util import unwrap_lone_exception

__all__ = ["Target", "Transport", "is_loopback", "open_websocket_transport"]

logger = logging.getLogger(__name__)


@asynccontextmanager
async def open_websocket_transport(
    endpoint: Endpoint, config: SessionConfig, *, deadline: float
) -> AsyncIterator[Transport]:
    """Open a WebSocket to ``endpoint`` over ``config.transport``; connected by ``deadline``.

    ``wss://`` verifies certificates against the system store (or ``config.ssl_context``).
    Credentials are refused over plain ``ws://`` to a host that is not loopback unless
    ``config.allow_insecure``. Raises ``ValueError`` for a bad URL, ``ImportError`` when the
    chosen transport is not installed, :class:`SessionRefused` when the server refuses the
    handshake (with its HTTP status), :class:`ConnectionLost` when connecting fails otherwise.
    """
    target = target_of(endpoint, config)
    if config.transport == "websockets":
        if importlib.util.find_spec("websockets") is None:
            raise ImportError(
                'SessionConfig(transport="websockets") needs the websockets package: '
                'pip install "trio-realtime[fast]"'
            )
        from ._transport_ws import open_transport
    else:
        from ._transport_tws import open_transport
    with unwrap_lone_exception():
        async with trio.open_nursery() as nursery:
            with opening_errors(target), trio.fail_at(deadline):
                stream = await open_stream(target, config)
                transport = await open_transport(nursery, stream, target, config)
            path = target.resource.split("?")[0]
            logger.debug("connected to %s%s over %s", target.host_header, path, config.transport)
            nursery.start_soon(keep_alive, transport.ping, transport.abort, config)
            try:
                yield transport
            finally:
                await transport.aclose()
                nursery.cancel_scope.cancel()
