"""Where to connect: OpenAI and Azure OpenAI Realtime URLs and their auth headers.

An :class:`Endpoint` is a URL plus headers. Its repr shows header names but never the value
of a header or query parameter that may be a credential (any not known to be harmless), so it
can be logged safely; :func:`redact_url` does the same for a URL on its own.
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping

import attrs

__all__ = ["ENVIRONMENT_VARIABLES", "HARMLESS_HEADERS", "HARMLESS_PARAMS", "Endpoint", "redact_url"]

#: Every variable :meth:`Endpoint.from_env` reads, with what it is for.
ENVIRONMENT_VARIABLES: tuple[tuple[str, str], ...] = (
    ("OPENAI_API_KEY", "OpenAI API key"),
    ("OPENAI_REALTIME_MODEL", "OpenAI model (default gpt-realtime)"),
    ("AZURE_OPENAI_ENDPOINT", "Azure resource, https://<resource>.openai.azure.com"),
    ("AZURE_OPENAI_API_KEY", "Azure API key"),
    ("AZURE_OPENAI_DEPLOYMENT", "Azure deployment name"),
    ("AZURE_OPENAI_API_VERSION", "Azure preview API version (default: the GA URL)"),
)

#: Headers whose values are known to be harmless: shown in reprs, and no credential. Every
#: other header's value is taken for a secret (an allow-list, not a deny-list: a gateway's
#: ``Ocp-Apim-Subscription-Key``, a ``Cookie``, a key in ``Sec-WebSocket-Protocol`` are
#: credentials the library need not know by name).
HARMLESS_HEADERS = frozenset(
    {
        "openai-beta",
        "openai-organization",
        "openai-project",
        "user-agent",
        "x-ms-useragent",
        "accept",
        "accept-language",
        "accept-encoding",
        "cache-control",
        "pragma",
        "origin",
        "content-type",
        # Tracing and correlation ids.
        "traceparent",
        "tracestate",
        "x-trace",
        "x-trace-id",
        "x-request-id",
        "x-correlation-id",
        "x-client-request-id",
        "x-ms-client-request-id",
    }
)
#: Query parameters known to be harmless (what the OpenAI and Azure URLs use); every other
#: parameter's value is taken for a secret (Azure accepts ``api-key`` in the URL, gateways
#: ``subscription-key``, signed URLs ``sig``...).
HARMLESS_PARAMS = frozenset({"model", "deployment", "api-version", "call_id", "intent"})
_REDACTED = "<redacted>"
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")
_QUERY = re.compile(r"\?([^#\s]*)")
_OPENAI_URL = "wss://api.openai.com/v1/realtime"
_DEFAULT_MODEL = "gpt-realtime"
#: Characters a host name may hold (besides letters and digits, any script).
_HOST_CHARS = frozenset("-._~%")
#: Characters an HTTP header name may hold (RFC 9110 token), besides ASCII letters and digits.
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~")


def _has_space_or_control(text: str) -> bool:
    return any(ch.isspace() or not ch.isprintable() for ch in text)


def _check_text(value: object, name: str) -> str:
    """A non-empty, single-line string; errors name ``name``, never quote the value."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} is empty")
    if _has_space_or_control(value):
        raise ValueError(
            f"{name} contains whitespace or control characters (a newline copied along with it?)"
        )
    return value


def _check_url(url: object) -> None:
    """Raise ``ValueError`` (``TypeError`` for a non-str) unless ``url`` is a usable
    ``ws://`` / ``wss://`` URL. The message names the problem, never the URL (it may hold a
    key in its query)."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    if not url.strip():
        raise ValueError("url is empty")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed '['
        raise ValueError(f"url is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        raise ValueError(
            f"url must start with ws:// or wss://, not {scheme}:// (the Realtime API is a "
            "WebSocket; for Azure, Endpoint.azure() takes the https:// resource URL)"
        )
    if scheme not in ("ws", "wss") or not url.lower().startswith(f"{scheme}://"):
        shown = f"{scheme}:" if scheme and len(scheme) < 10 else "no scheme"
        raise ValueError(f"url must start with ws:// or wss:// (got {shown})")
    if _has_space_or_control(url):
        raise ValueError("url contains whitespace or control characters")
    if "@" in parts.netloc:
        raise ValueError("url must not hold user:password@; send credentials as headers")
    host = parts.hostname
    if not host:
        raise ValueError("url has no host (expected ws[s]://host[:port]/path)")
    if not (":" in host or all(ch.isalnum() or ch in _HOST_CHARS for ch in host)):
        raise ValueError("url has an invalid host name")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError("url has an invalid IPv6 address") from None
    try:
        port = parts.port
    except ValueError:  # not a number, or over 65535
        raise ValueError("url port must be a number from 1 to 65535") from None
    if port == 0 or parts.netloc.endswith(":"):
        raise ValueError("url port must be a number from 1 to 65535")


def _check_headers(headers: tuple[tuple[str, str], ...]) -> None:
    for name, value in headers:
        if not name or not all(
            (ch.isascii() and ch.isalnum()) or ch in _TOKEN_CHARS for ch in name
        ):
            raise ValueError(f"invalid header name {name[:40]!r}")
        if any(ch in value for ch in "\r\n\0"):
            raise ValueError(f"header {name} contains a line break or NUL")


def _to_headers(
    value: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    headers = []
    for item in items:
        if isinstance(item, str | bytes) or len(item) != 2:
            raise TypeError("headers must be a mapping or (name, value) pairs")
        name, header_value = item
        if not isinstance(name, str) or not isinstance(header_value, str):
            raise TypeError(f"header names and values must be str (header {str(name)[:40]!r})")
        headers.append((name, header_value))
    return tuple(headers)


def is_secret_header(name: str) -> bool:
    """Whether a header's value is taken for a credential: every header not known to be
    harmless (:data:`HARMLESS_HEADERS`)."""
    return name.lower() not in HARMLESS_HEADERS


def _is_secret_param(name: str) -> bool:
    return urllib.parse.unquote_plus(name).lower() not in HARMLESS_PARAMS


def _query_names(query: str) -> list[str]:
    return [segment.partition("=")[0] for segment in query.split("&") if segment]


def redact_url(url: str) -> str:
    """``url`` (or a request target, ``/path?query``, or a request line) with the value of
    every query parameter not known to be harmless (:data:`HARMLESS_PARAMS`) replaced by
    ``<redacted>``, and any ``user:password@`` too; the rest is kept as written. Every query
    in ``text`` is redacted (a log line may hold more than one). What logs and error messages
    show of a URL."""
    url = _USERINFO.sub(rf"\1{_REDACTED}@", url, count=1)
    return _QUERY.sub(_redact_query, url)


def _redact_query(match: re.Match[str]) -> str:
    shown = []
    for segment in match.group(1).split("&"):
        name, equals, _ = segment.partition("=")
        if not equals:  # a bare value: it may be a key
            shown.append(segment if not segment or not _is_secret_param(name) else _REDACTED)
        else:
            shown.append(f"{name}={_REDACTED}" if _is_secret_param(name) else segment)
    return "?" + "&".join(shown)


def _redact(headers: tuple[tuple[str, str], ...]) -> str:
    shown = ", ".join(
        f"{name!r}: {repr(_REDACTED) if is_secret_header(name) else repr(value)}"
        for name, value in headers
    )
    return "{" + shown + "}"


def _redact_url(url: str) -> str:
    return repr(redact_url(url))


@attrs.frozen
class Endpoint:
    """A Realtime WebSocket URL and the headers to send with the handshake.

    Checked when made: ``url`` must be a ``ws://`` or ``wss://`` URL with a host and, if
    given, a port from 1 to 65535; headers must be str pairs without line breaks. Raises
    ``ValueError`` (``TypeError`` for a wrong type) naming what is wrong, never a credential.
    """

    url: str = attrs.field(repr=_redact_url)
    headers: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_to_headers, repr=_redact
    )

    def __attrs_post_init__(self) -> None:
        _check_url(self.url)
        _check_headers(self.headers)

    @property
    def call_id(self) -> str | None:
        """The call this endpoint attaches to (its URL's ``call_id`` parameter): a sideband,
        which joins a call's session instead of opening one. None for a session of its own."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.url).query)
        values = query.get("call_id")
        return values[0] if values else None

    @property
    def has_credentials(self) -> bool:
        """Whether a header or a query parameter may carry a credential: any that is not
        known to be harmless (:data:`HARMLESS_HEADERS`, :data:`HARMLESS_PARAMS`)."""
        query = urllib.parse.urlsplit(self.url).query
        return any(is_secret_header(name) for name, _ in self.headers) or any(
            _is_secret_param(name) for name in _query_names(query)
        )

    @classmethod
    def openai(
        cls,
        api_key: str,
        *,
        model: str = _DEFAULT_MODEL,
        beta: bool = False,
        url: str = _OPENAI_URL,
        call_id: str | None = None,
    ) -> Endpoint:
        """OpenAI: ``wss://api.openai.com/v1/realtime?model=...`` with a bearer key.

        ``beta=True`` adds ``OpenAI-Beta: realtime=v1`` (the beta protocol's event names).
        With ``call_id`` (a SIP or WebRTC call's ``rtc_...`` id): the call's sideband,
        ``wss://api.openai.com/v1/realtime?call_id=...``, with no model (the call has its
        session already; GA only). Raises ``ValueError`` for an empty ``api_key``, ``model``
        or ``call_id`` (or one holding whitespace), or ``beta`` with ``call_id``.
        """
        _check_text(api_key, "api_key")
        _check_text(model, "model")
        headers = [("Authorization", f"Bearer {api_key}")]
        if call_id is not None:
            _check_text(call_id, "call_id")
            if beta:
                raise ValueError("calls exist in the GA protocol only: beta=True with call_id")
            return cls(_with_query(url, call_id=call_id), headers)
        if beta:
            headers.append(("OpenAI-Beta", "realtime=v1"))
        return cls(_with_query(url, model=model), headers)

    @classmethod
    def azure(
        cls,
        endpoint: str,
        *,
        deployment: str | None = None,
        api_key: str | None = None,
        token: str | None = None,
        api_version: str | None = None,
        call_id: str | None = None,
    ) -> Endpoint:
        """Azure OpenAI. ``endpoint`` is ``https://<resource>.openai.azure.com`` or the bare
        resource name.

        Without ``api_version``: the GA URL ``/openai/v1/realtime?model=<deployment>``. With it
        (e.g. ``"2025-04-01-preview"``): the preview URL
        ``/openai/realtime?api-version=...&deployment=...``. Authenticate with ``api_key``
        (header ``api-key``) or an Entra ID ``token`` (``Authorization: Bearer``; scope
        ``https://cognitiveservices.azure.com/.default``). ``deployment`` is required, except
        with ``call_id``: then the URL is the call's sideband on the GA path,
        ``/openai/v1/realtime?call_id=...`` (no deployment: the call has its session already;
        no ``api_version``). Raises ``ValueError`` naming the argument that is empty, malformed
        or missing.
        """
        if (api_key is None) == (token is None):
            raise ValueError("give exactly one of api_key or token")
        if call_id is not None:
            _check_text(call_id, "call_id")
            if api_version is not None:
                raise ValueError("a call's sideband is on the GA URL: give no api_version")
        elif deployment is None:
            raise ValueError("deployment is required (unless call_id is given)")
        if api_key is not None:
            _check_text(api_key, "api_key")
        if token is not None:
            _check_text(token, "token")
        _check_text(endpoint, "endpoint")
        if deployment is not None:
            _check_text(deployment, "deployment")
        if api_version is not None:
            _check_text(api_version, "api_version")
        if "://" not in endpoint and "." not in endpoint:
            endpoint = f"https://{endpoint}.openai.azure.com"
        try:
            parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        except ValueError as exc:
            raise ValueError(f"endpoint is malformed: {exc}") from None
        if parts.scheme.lower() not in ("http", "https", "ws", "wss"):
            raise ValueError("endpoint must be an https:// URL or a resource name")
        if not parts.hostname:
            raise ValueError("endpoint has no host")
        try:
            parts.port  # noqa: B018 (raises for a port that is not a number, or over 65535)
        except ValueError:
            raise ValueError("endpoint port must be a number from 1 to 65535") from None
        scheme = "ws" if parts.scheme.lower() in ("http", "ws") else "wss"
        base = f"{scheme}://{parts.netloc}"
        if call_id is not None:
            url = _with_query(f"{base}/openai/v1/realtime", call_id=call_id)
        elif api_version is None:
            assert deployment is not None
            url = _with_query(f"{base}/openai/v1/realtime", model=deployment)
        else:
            assert deployment is not None
            url = _with_query(
                f"{base}/openai/realtime", **{"api-version": api_version, "deployment": deployment}
            )
        header = (
            ("api-key", api_key) if api_key is not None else ("Authorization", f"Bearer {token}")
        )
        return cls(url, [header])

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Endpoint:
        """From ``AZURE_OPENAI_ENDPOINT`` / ``AZURE_OPENAI_API_KEY`` /
        ``AZURE_OPENAI_DEPLOYMENT`` (and optional ``AZURE_OPENAI_API_VERSION``), else
        ``OPENAI_API_KEY`` (and optional ``OPENAI_REALTIME_MODEL``).

        Raises ``LookupError`` naming the variables that are missing, and ``ValueError``
        naming the one that is malformed (never their values).
        """
        env = os.environ if environ is None else environ
        if env.get("AZURE_OPENAI_ENDPOINT"):
            missing = [
                name
                for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_DEPLOYMENT")
                if not env.get(name)
            ]
            if missing:
                verb = "is" if len(missing) == 1 else "are"
                raise LookupError(
                    f"AZURE_OPENAI_ENDPOINT is set but {' and '.join(missing)} {verb} not"
                )
            for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_DEPLOYMENT"):
                _check_text(env[name], name)
            api_version = env.get("AZURE_OPENAI_API_VERSION") or None
            if api_version is not None:
                _check_text(api_version, "AZURE_OPENAI_API_VERSION")
            try:
                return cls.azure(
                    env["AZURE_OPENAI_ENDPOINT"],
                    deployment=env["AZURE_OPENAI_DEPLOYMENT"],
                    api_key=env["AZURE_OPENAI_API_KEY"],
                    api_version=api_version,
                )
            except ValueError as exc:
                raise ValueError(f"AZURE_OPENAI_ENDPOINT: {exc}") from None
        if env.get("OPENAI_API_KEY"):
            _check_text(env["OPENAI_API_KEY"], "OPENAI_API_KEY")
            model = env.get("OPENAI_REALTIME_MODEL") or _DEFAULT_MODEL
            _check_text(model, "OPENAI_REALTIME_MODEL")
            return cls.openai(env["OPENAI_API_KEY"], model=model)
        raise LookupError(
            "set OPENAI_API_KEY, or AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY and "
            "AZURE_OPENAI_DEPLOYMENT"
        )


def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    query += [(k, v) for k, v in params.items() if k not in dict(query)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
