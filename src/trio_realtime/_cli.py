"""The ``trio-realtime`` command line (``python -m trio_realtime``).

Three commands: ``demo`` (colliding requests served one at a time, explained), ``chat`` (a
text conversation in the terminal) and ``bench`` (the quick benchmarks as a table). ``demo``
and ``chat`` run against the embedded fake server unless ``--url`` or the environment names a
real endpoint; ``demo --call`` (a phone call, :mod:`._cli_call`) always on the fake server.

Everything the user should read goes to stdout (results) or stderr (progress, errors). A
mistake in the command line, the environment or the endpoint ends in one line on stderr and a
non-zero exit status, never a traceback; API keys never appear in either.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import sys
import textwrap
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TextIO, cast

import trio
import trio_websocket

from ._cli_bench import BENCHMARKS, run_bench
from ._cli_call import run_call_demo
from ._cli_chat import run_chat
from ._cli_common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Target, UsageError
from ._cli_demo import run_demo
from ._endpoints import (
    ENVIRONMENT_VARIABLES,
    Endpoint,
    _check_text,
    is_secret_header,
    redact_url,
)
from ._errors import ConnectionLost, RealtimeError
from ._transport import is_loopback

__all__ = ["Target", "UsageError", "main"]

logger = logging.getLogger(__name__)

#: Variables that name a real endpoint; when none is set, demo and chat use the fake server.
_ENDPOINT_VARIABLES = (
    "OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_DEPLOYMENT",
)

_ENVIRONMENT_HELP = "environment variables (not read with --fake):\n" + (
    "\n".join(f"  {name:<26}{meaning}" for name, meaning in ENVIRONMENT_VARIABLES)
    + "\n\nWith none of them set, the embedded fake server is used (no API key needed).\n"
    "OpenAI needs OPENAI_API_KEY; Azure needs AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY\n"
    "and AZURE_OPENAI_DEPLOYMENT (Azure wins when both are set). With --url, the key is\n"
    "AZURE_OPENAI_API_KEY for an *.azure.com host, else OPENAI_API_KEY."
)


# ---------------------------------------------------------------- endpoints


def resolve_target(args: argparse.Namespace, environ: Mapping[str, str]) -> Target:
    """The endpoint that ``--fake``, ``--url`` and the environment name.

    Raises :class:`UsageError` with a one-line explanation (never a credential).
    """
    beta = bool(args.beta)
    if args.fake and args.url is not None:
        raise UsageError("--fake and --url exclude each other")
    if args.fake:
        return Target(None, beta=beta)
    if args.url is not None:
        return _url_target(args.url, environ, beta)
    if not any(environ.get(name) for name in _ENDPOINT_VARIABLES):
        return Target(None, beta=beta)
    try:
        endpoint = Endpoint.from_env(environ)
    except (LookupError, ValueError) as exc:
        raise UsageError(f"{exc} (or use --fake for the embedded fake server)") from None
    variable = "AZURE_OPENAI_API_KEY" if environ.get("AZURE_OPENAI_ENDPOINT") else "OPENAI_API_KEY"
    if beta:
        endpoint = Endpoint(endpoint.url, (*endpoint.headers, ("OpenAI-Beta", "realtime=v1")))
    return Target(endpoint, variable, beta)


def _url_target(url: str, environ: Mapping[str, str], beta: bool) -> Target:
    try:
        endpoint = Endpoint(url)
    except ValueError as exc:
        raise UsageError(f"--url: {exc}") from None
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    variable = "AZURE_OPENAI_API_KEY" if host.lower().endswith(".azure.com") else "OPENAI_API_KEY"
    key = environ.get(variable) or None
    headers: list[tuple[str, str]] = []
    if key is not None:
        try:
            _check_text(key, variable)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        headers.append(
            ("api-key", key)
            if variable == "AZURE_OPENAI_API_KEY"
            else ("Authorization", f"Bearer {key}")
        )
    elif not is_loopback(host):
        raise UsageError(f"no API key for {host}: set {variable}")
    if key is not None and parts.scheme.lower() == "ws" and not is_loopback(host):
        raise UsageError(f"refusing to send {variable} over plain ws:// to {host}: use wss://")
    if beta:
        headers.append(("OpenAI-Beta", "realtime=v1"))
    return Target(Endpoint(endpoint.url, headers), variable if key else None, beta)


def describe_failure(exc: BaseException, target: Target | None = None) -> str:
    """One line for a failed run, with a hint when the server refused the credential or is
    not a WebSocket endpoint at all."""
    status = _handshake_status(exc)
    if isinstance(exc, trio_websocket.ConnectionRejected):
        # A rejection that carries a body escapes the transport untranslated (trio-websocket
        # raises it from its reader task): say it as the transport would.
        exc = ConnectionLost(f"handshake rejected: HTTP {exc.status_code}")
    message = str(exc) or type(exc).__name__
    cause = exc.__cause__
    while cause is not None and not isinstance(cause, BaseExceptionGroup):
        cause = cause.__cause__
    if cause is not None and ": ExceptionGroup" in message:
        # "all attempts to connect failed": say why the attempts failed.
        reasons = sorted({_reason(leaf) for leaf in _leaves(cause)})
        message = f"{message.split(': ExceptionGroup', 1)[0]}: {'; '.join(reasons)}"
    if status is not None and 200 <= status < 400:
        # A web page or a redirect, where a WebSocket handshake (101) was expected.
        where = "the server"
        if target is not None and target.endpoint is not None:
            parts = urllib.parse.urlsplit(target.endpoint.url)
            where = f"{parts.netloc}{parts.path}"
        return _redact(
            f"{where} is not a WebSocket endpoint: it answered the handshake with HTTP "
            f"{status}, not 101 (check the URL)",
            target,
        )
    refused = status in (401, 403) or (
        "invalid_api_key" in message or getattr(exc, "code", None) == "invalid_api_key"
    )
    if isinstance(exc, ConnectionLost) and refused:
        variable = target.key_variable if target is not None else None
        if variable is None:
            hint = "the server wants an API key: set OPENAI_API_KEY or AZURE_OPENAI_API_KEY"
        else:
            hint = f"the server refused the API key in {variable}"
        message = f"{message.rstrip(' .:;,')} ({hint})"
    return _redact(message, target)


_HTTP_STATUS = re.compile(r"\bHTTP (\d{3})\b")


def _handshake_status(exc: BaseException) -> int | None:
    """The HTTP status a refused handshake was answered with, if the error says."""
    for name in ("status_code", "status", "http_status"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    match = _HTTP_STATUS.search(str(exc))
    return int(match.group(1)) if match else None


def _redact(message: str, target: Target | None) -> str:
    """Never show a credential, even one a server quoted back: the value of every header and
    query parameter not known to be harmless."""
    if target is None or target.endpoint is None:
        return message
    secrets = []
    for name, value in target.endpoint.headers:
        if is_secret_header(name):
            secrets += [value, value.removeprefix("Bearer ").strip()]
    query = urllib.parse.urlsplit(target.endpoint.url).query
    for segment in query.split("&"):
        name, _, value = segment.partition("=")
        if redact_url(f"?{segment}") != f"?{segment}":
            secrets += [value, urllib.parse.unquote_plus(value)]
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        message = message.replace(secret, "<redacted>")
    return message


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------- logging


@contextmanager
def verbose_logging(verbosity: int, stream: TextIO) -> Iterator[None]:
    """``-v``: the library's own DEBUG lines (the ``trio_realtime`` loggers); ``-vv``: every
    library's, trio-websocket's frame-by-frame lines included. Restored afterwards."""
    root = logging.getLogger()
    ours = logging.getLogger("trio_realtime")
    saved = (root.level, ours.level)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    ours.setLevel(logging.DEBUG if verbosity >= 1 else logging.NOTSET)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        ours.setLevel(saved[1])


# ---------------------------------------------------------------- running


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


class OutputClosed(Exception):
    """Whoever read stdout went away (``trio-realtime demo | head -1``): not a failure."""


class _Guarded:
    """stdout, whose ``BrokenPipeError`` becomes :class:`OutputClosed` (so that it is told
    apart from a connection's)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError as exc:
            raise OutputClosed from exc

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError as exc:
            raise OutputClosed from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guarded(stream: TextIO) -> TextIO:
    return cast(TextIO, _Guarded(stream))


def _drop_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's last flush has nowhere to
    fail (Python's advice for SIGPIPE)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # not a real file (tests capture it)


def run_async(
    function: Callable[..., Awaitable[int]], *args: Any, target: Target | None = None
) -> int:
    """``trio.run`` with the command line's error reporting: a failure is one line."""
    try:
        return trio.run(function, *args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseException as exc:
        leaves = _leaves(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            return EXIT_INTERRUPTED
        if any(isinstance(leaf, OutputClosed) for leaf in leaves):
            _drop_stdout()
            return 0
        known = [
            leaf
            for leaf in leaves
            if isinstance(
                leaf, RealtimeError | ValueError | OSError | trio_websocket.ConnectionRejected
            )
        ]
        if not known or len(known) != len(leaves):
            raise
        logger.debug("the run failed", exc_info=exc)  # the traceback, with -v
        sys.stderr.write(f"trio-realtime: {describe_failure(known[0], target)}\n")
        return EXIT_USAGE if isinstance(known[0], ValueError) else EXIT_FAILED


# ---------------------------------------------------------------- the parser


def _add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--fake", action="store_true", help="use the embedded fake server, whatever the environment"
    )
    where.add_argument(
        "--url",
        metavar="WS_URL",
        help="a ws:// or wss:// Realtime URL, e.g. "
        "wss://api.openai.com/v1/realtime?model=gpt-realtime (its key comes from the environment)",
    )
    parser.add_argument("--beta", action="store_true", help="speak the beta protocol")


def _add_verbose(parser: argparse.ArgumentParser, dest: str = "verbose") -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        dest=dest,
        action="count",
        default=0,
        help="-v: the library's log lines on stderr; -vv: every library's (trio-websocket's too)",
    )


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: the command, the problem, its usage."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split()).removeprefix("usage: ")
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (usage: {usage})\n")


def _fill(text: str) -> str:
    return textwrap.fill(text, width=88)


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="trio-realtime",
        description=_fill(
            "A Trio client for the OpenAI / Azure OpenAI Realtime API: one active "
            "response at a time, nothing lost."
        ),
        epilog=_ENVIRONMENT_HELP,
        formatter_class=formatter,
    )
    # -v before the command counts too ("trio-realtime -v demo").
    _add_verbose(parser, dest="verbose_first")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="serve colliding requests one at a time, and explain the order",
        description=_fill(
            "Tool results, scripted messages, an interruption and responses the "
            "server starts by itself all ask for the one response slot at once; the demo shows "
            "them served one at a time, each request's wait, and why they ran in that order."
        ),
        epilog=_ENVIRONMENT_HELP,
        formatter_class=formatter,
    )
    _add_endpoint_options(demo)
    demo.add_argument(
        "--call",
        action="store_true",
        help="play a phone call on the embedded fake server instead: the caller keeps talking, "
        "the app greets, answers a tool call, loses and re-attaches its sideband, hangs up",
    )
    _add_verbose(demo)
    demo.set_defaults(command_parser=demo)

    chat = commands.add_parser(
        "chat",
        help="a text conversation in the terminal",
        description=_fill(
            "Read a line from stdin, send it as a user message, stream the "
            "assistant's text to stdout. Ends on end of input (Ctrl-D) or /quit. The fake server "
            "answers by echoing what you said."
        ),
        epilog=_ENVIRONMENT_HELP,
        formatter_class=formatter,
    )
    _add_endpoint_options(chat)
    chat.add_argument(
        "--instructions", metavar="TEXT", help="instructions for every response (real endpoints)"
    )
    _add_verbose(chat)
    chat.set_defaults(command_parser=chat)

    bench = commands.add_parser(
        "bench",
        help="run the quick benchmarks and print a table",
        description=_fill(
            "Run the benchmarks of a source checkout (benchmarks/*.py, --quick "
            "mode unless --full), each against a local benchmark server, and print their key "
            "figures as one table. Progress goes to stderr."
        ),
        epilog="The benchmarks are not part of the installed package: run this from a source "
        "checkout (or pass --benchmarks DIR).\n--plot needs the 'plot' extra: "
        "pip install 'trio-realtime[plot]'.\nContenders whose extra is missing are skipped "
        "(websockets and orjson: 'fast'; openai: 'bench').\n\nEnvironment: none of OPENAI_API_KEY, "
        "AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY,\nAZURE_OPENAI_DEPLOYMENT is read: "
        "everything runs on 127.0.0.1.",
        formatter_class=formatter,
    )
    bench.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})",
    )
    bench.add_argument("--full", action="store_true", help="the full runs (minutes), not --quick")
    bench.add_argument("--plot", metavar="FILE.png", help="draw the latency distributions here")
    bench.add_argument("--json", metavar="PATH", help="write every benchmark's results here")
    bench.add_argument(
        "--benchmarks", metavar="DIR", help="the benchmarks folder (default: found by itself)"
    )
    _add_verbose(bench)
    bench.set_defaults(command_parser=bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # said by the command they were given to, with its usage
            args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # --help, or a usage error argparse has already reported
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    with verbose_logging(args.verbose + args.verbose_first, sys.stderr):
        try:
            if args.command == "bench":
                return run_bench(args)
            if args.command == "demo" and args.call:
                if args.url is not None or args.beta:
                    raise UsageError(
                        "demo --call plays a call on the embedded fake server (GA): "
                        "give no --url or --beta"
                    )
                return run_async(run_call_demo, guarded(sys.stdout), target=Target(None))
            target = resolve_target(args, os.environ)
            if args.command == "demo":
                return run_async(run_demo, target, guarded(sys.stdout), target=target)
            return run_async(
                run_chat,
                target,
                sys.stdin,
                guarded(sys.stdout),
                sys.stderr,
                args.instructions,
                target=target,
            )
        except UsageError as exc:
            sys.stderr.write(f"trio-realtime: {exc}\n")
            return EXIT_USAGE
