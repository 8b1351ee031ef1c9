"""What the command line's modules share: exit statuses, the usage error, where to connect.

Its own module so that ``_cli`` (the parser and ``main``) and its subcommands (``_cli_demo``,
``_cli_chat``, ``_cli_bench``) import it and not each other.
"""

from __future__ import annotations

from typing import Literal

import attrs

from ._endpoints import Endpoint

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_USAGE", "Target", "UsageError"]

#: Exit statuses: the run failed (connection lost, a request failed), or it could not start
#: (a bad command line, environment or endpoint).
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command line, environment or endpoint: reported in one line, exit status 2."""


@attrs.frozen
class Target:
    """Where demo and chat connect: None for the embedded fake server."""

    endpoint: Endpoint | None
    #: The variable the credential came from (for a hint when the server refuses it).
    key_variable: str | None = None
    beta: bool = False

    @property
    def fake(self) -> bool:
        return self.endpoint is None

    @property
    def dialect(self) -> Literal["ga", "beta"]:
        return "beta" if self.beta else "ga"
