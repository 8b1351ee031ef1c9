"""Where to connect: OpenAI and Azure OpenAI Realtime URLs and their auth headers.

An :class:`Endpoint` is a URL plus headers. Its repr shows header names but never the values
of credential headers, so it can be logged safely.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterable, Mapping

import attrs

__all__ = ["Endpoint"]

_SECRET_HEADERS = frozenset({"authorization", "api-key", "openai-api-key", "x-api-key"})
_OPENAI_URL = "wss://api.openai.com/v1/realtime"
_DEFAULT_MODEL = "gpt-realtime"


def _to_headers(
    value: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(k), str(v)) for k, v in items)


def _redact(headers: tuple[tuple[str, str], ...]) -> str:
    shown = ", ".join(
        f"{name!r}: {'<redacted>' if name.lower() in _SECRET_HEADERS else value!r}"
        for name, value in headers
    )
    return "{" + shown + "}"


@attrs.frozen
class Endpoint:
    """A Realtime WebSocket URL and the headers to send with the handshake."""

    url: str
    headers: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_to_headers, repr=_redact
    )

    @property
    def has_credentials(self) -> bool:
        return any(name.lower() in _SECRET_HEADERS for name, _ in self.headers)

    @classmethod
    def openai(
        cls,
        api_key: str,
        *,
        model: str = _DEFAULT_MODEL,
        beta: bool = False,
        url: str = _OPENAI_URL,
    ) -> Endpoint:
        """OpenAI: ``wss://api.openai.com/v1/realtime?model=...`` with a bearer key.

        ``beta=True`` adds ``OpenAI-Beta: realtime=v1`` (the beta protocol's event names).
        """
        headers = [("Authorization", f"Bearer {api_key}")]
        if beta:
            headers.append(("OpenAI-Beta", "realtime=v1"))
        return cls(_with_query(url, model=model), headers)

    @classmethod
    def azure(
        cls,
        endpoint: str,
        *,
        deployment: str,
        api_key: str | None = None,
        token: str | None = None,
        api_version: str | None = None,
    ) -> Endpoint:
        """Azure OpenAI. ``endpoint`` is ``https://<resource>.openai.azure.com`` or the bare
        resource name.

        Without ``api_version``: the GA URL ``/openai/v1/realtime?model=<deployment>``. With it
        (e.g. ``"2025-04-01-preview"``): the preview URL
        ``/openai/realtime?api-version=...&deployment=...``. Authenticate with ``api_key``
        (header ``api-key``) or an Entra ID ``token`` (``Authorization: Bearer``; scope
        ``https://cognitiveservices.azure.com/.default``).
        """
        if (api_key is None) == (token is None):
            raise ValueError("give exactly one of api_key or token")
        if "://" not in endpoint and "." not in endpoint:
            endpoint = f"https://{endpoint}.openai.azure.com"
        parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        scheme = "ws" if parts.scheme in ("http", "ws") else "wss"
        base = f"{scheme}://{parts.netloc}"
        if api_version is None:
            url = _with_query(f"{base}/openai/v1/realtime", model=deployment)
        else:
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

        Raises ``LookupError`` naming the variables that are missing (never their values).
        """
        env = os.environ if environ is None else environ
        if env.get("AZURE_OPENAI_ENDPOINT"):
            missing = [
                name
                for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_DEPLOYMENT")
                if not env.get(name)
            ]
            if missing:
                raise LookupError(f"AZURE_OPENAI_ENDPOINT is set but {', '.join(missing)} is not")
            return cls.azure(
                env["AZURE_OPENAI_ENDPOINT"],
                deployment=env["AZURE_OPENAI_DEPLOYMENT"],
                api_key=env["AZURE_OPENAI_API_KEY"],
                api_version=env.get("AZURE_OPENAI_API_VERSION") or None,
            )
        if env.get("OPENAI_API_KEY"):
            return cls.openai(
                env["OPENAI_API_KEY"], model=env.get("OPENAI_REALTIME_MODEL") or _DEFAULT_MODEL
            )
        raise LookupError(
            "set OPENAI_API_KEY, or AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY and "
            "AZURE_OPENAI_DEPLOYMENT"
        )


def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    query += [(k, v) for k, v in params.items() if k not in dict(query)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
