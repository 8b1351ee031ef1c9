"""Endpoint URLs and headers for OpenAI and Azure OpenAI; secrets stay out of reprs."""

from __future__ import annotations

import re
from typing import Any

import pytest

from trio_realtime import Endpoint, SessionConfig
from trio_realtime._endpoints import redact_url
from trio_realtime._transport import target_of

KEY = "sk-secret-value-123"


def test_openai_ga_and_beta() -> None:
    ga = Endpoint.openai(KEY)
    assert ga.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert dict(ga.headers) == {"Authorization": f"Bearer {KEY}"}
    beta = Endpoint.openai(KEY, model="gpt-4o-realtime-preview", beta=True)
    assert beta.url.endswith("?model=gpt-4o-realtime-preview")
    assert dict(beta.headers)["OpenAI-Beta"] == "realtime=v1"


def test_azure_ga_with_api_key() -> None:
    endpoint = Endpoint.azure("https://myres.openai.azure.com/", deployment="rt", api_key=KEY)
    assert endpoint.url == "wss://myres.openai.azure.com/openai/v1/realtime?model=rt"
    assert dict(endpoint.headers) == {"api-key": KEY}


def test_azure_preview_with_entra_token_and_bare_resource_name() -> None:
    endpoint = Endpoint.azure(
        "myres", deployment="rt", token="tok", api_version="2025-04-01-preview"
    )
    assert endpoint.url == (
        "wss://myres.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=rt"
    )
    assert dict(endpoint.headers) == {"Authorization": "Bearer tok"}


def test_azure_needs_exactly_one_credential() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Endpoint.azure("myres", deployment="rt")
    with pytest.raises(ValueError, match="exactly one"):
        Endpoint.azure("myres", deployment="rt", api_key="k", token="t")


@pytest.mark.parametrize(
    "endpoint",
    [
        Endpoint.openai(KEY),
        Endpoint.azure("myres", deployment="rt", api_key=KEY),
        Endpoint.azure("myres", deployment="rt", token=KEY),
        Endpoint("wss://x/realtime", {"x-api-key": KEY, "X-Trace": "visible"}),
    ],
)
def test_secrets_never_in_repr(endpoint: Endpoint) -> None:
    assert KEY not in repr(endpoint)
    assert KEY not in str(endpoint)
    assert "<redacted>" in repr(endpoint)
    assert endpoint.has_credentials


def test_non_secret_headers_stay_visible() -> None:
    endpoint = Endpoint("wss://x/realtime", {"X-Trace": "visible"})
    assert "visible" in repr(endpoint)
    assert not endpoint.has_credentials


def test_from_env_prefers_azure() -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com",
        "AZURE_OPENAI_API_KEY": KEY,
        "AZURE_OPENAI_DEPLOYMENT": "dep",
        "OPENAI_API_KEY": "other",
    }
    endpoint = Endpoint.from_env(env)
    assert endpoint.url == "wss://res.openai.azure.com/openai/v1/realtime?model=dep"
    assert dict(endpoint.headers) == {"api-key": KEY}


def test_from_env_openai() -> None:
    endpoint = Endpoint.from_env({"OPENAI_API_KEY": KEY, "OPENAI_REALTIME_MODEL": "m"})
    assert endpoint.url.endswith("?model=m")


def test_from_env_names_what_is_missing_but_never_a_value() -> None:
    with pytest.raises(LookupError, match="AZURE_OPENAI_DEPLOYMENT") as info:
        Endpoint.from_env({"AZURE_OPENAI_ENDPOINT": "https://r", "AZURE_OPENAI_API_KEY": KEY})
    assert KEY not in str(info.value)
    with pytest.raises(LookupError, match="OPENAI_API_KEY"):
        Endpoint.from_env({})


# ---------------------------------------------------------------- checked at construction


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "url is empty"),
        ("   ", "url is empty"),
        ("not a url", r"must start with ws:// or wss:// \(got no scheme\)"),
        ("https://api.openai.com/v1/realtime", "not https://"),
        ("ftp://host/x", r"got ftp:"),
        ("ws:/host", "must start with ws:// or wss://"),
        ("ws://", "no host"),
        ("wss:///v1/realtime", "no host"),
        ("ws://[::1", "malformed"),
        ("ws://127.0.0.1:99999/", "port must be a number from 1 to 65535"),
        ("ws://127.0.0.1:0/", "port must be a number from 1 to 65535"),
        ("ws://127.0.0.1:abc/", "port must be a number from 1 to 65535"),
        ("ws://127.0.0.1:/", "port must be a number from 1 to 65535"),
        ("ws://a host/", "whitespace"),
        ("wss://api.openai.com/v1/realtime\n", "whitespace"),
        ("ws://ho<st/", "invalid host name"),
        ("wss://user:pass@host/", "user:password@"),
    ],
)
def test_unusable_urls_are_refused_at_construction(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        Endpoint(url)
    assert str(info.value).startswith("url ")


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:8080/v1/realtime",
        "wss://api.openai.com/v1/realtime?model=gpt-realtime",
        "ws://[::1]:8080/",
        "ws://localhost",
        "WSS://EXAMPLE.com/x",
        "wss://xn--bcher-kva.example/",
    ],
)
def test_usable_urls(url: str) -> None:
    assert Endpoint(url).url == url


def test_url_must_be_a_str() -> None:
    with pytest.raises(TypeError, match="url must be a str"):
        Endpoint(b"ws://x/")  # type: ignore[arg-type]


def test_url_errors_never_quote_the_url() -> None:
    # A key pasted where the URL goes must not be echoed back.
    with pytest.raises(ValueError, match="url") as info:
        Endpoint(KEY)
    assert KEY not in str(info.value)
    with pytest.raises(ValueError, match="port") as info:
        Endpoint(f"wss://h:99999/?api-key={KEY}")
    assert KEY not in str(info.value)


def test_key_in_the_url_query_is_redacted_and_counts_as_a_credential() -> None:
    endpoint = Endpoint(f"wss://res.openai.azure.com/openai/realtime?api-key={KEY}&deployment=d")
    assert KEY not in repr(endpoint)
    assert "api-key=<redacted>" in repr(endpoint)
    assert "deployment=d" in repr(endpoint)
    assert endpoint.has_credentials


@pytest.mark.parametrize(
    ("headers", "error", "problem"),
    [
        ({"Bad Name": "v"}, ValueError, "invalid header name"),
        ({"": "v"}, ValueError, "invalid header name"),
        ({"X-Api-Key": f"{KEY}\r\nX-Evil: 1"}, ValueError, "line break"),
        ({"X-Count": 1}, TypeError, "must be str"),
        ([("a", "b", "c")], TypeError, "pairs"),
    ],
)
def test_bad_headers(headers: Any, error: type[Exception], problem: str) -> None:
    with pytest.raises(error, match=problem) as info:
        Endpoint("wss://x/", headers)
    assert KEY not in str(info.value)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "api_key is empty"),
        ("  ", "api_key is empty"),
        (f"{KEY}\n", "api_key contains whitespace"),
        (f" {KEY}", "api_key contains whitespace"),
    ],
)
def test_openai_key_is_checked(key: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        Endpoint.openai(key)
    assert KEY not in str(info.value)


def test_openai_key_type_and_model() -> None:
    with pytest.raises(TypeError, match="api_key must be a str"):
        Endpoint.openai(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model is empty"):
        Endpoint.openai(KEY, model="")
    with pytest.raises(ValueError, match="url must start"):
        Endpoint.openai(KEY, url="api.openai.com/v1/realtime")


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"endpoint": "", "deployment": "rt", "api_key": KEY}, "endpoint is empty"),
        ({"endpoint": "my res", "deployment": "rt", "api_key": KEY}, "endpoint contains"),
        ({"endpoint": "ftp://r.example", "deployment": "rt", "api_key": KEY}, "https://"),
        ({"endpoint": "https://", "deployment": "rt", "api_key": KEY}, "endpoint has no host"),
        ({"endpoint": "https://r.example:99999", "deployment": "rt", "api_key": KEY}, "port"),
        ({"endpoint": "https://[::1", "deployment": "rt", "api_key": KEY}, "malformed"),
        ({"endpoint": "myres", "deployment": "", "api_key": KEY}, "deployment is empty"),
        ({"endpoint": "myres", "deployment": "rt", "api_key": ""}, "api_key is empty"),
        ({"endpoint": "myres", "deployment": "rt", "token": ""}, "token is empty"),
        (
            {"endpoint": "myres", "deployment": "rt", "api_key": KEY, "api_version": ""},
            "api_version",
        ),
    ],
)
def test_azure_arguments_are_checked(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        Endpoint.azure(**kwargs)
    assert KEY not in str(info.value)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"OPENAI_API_KEY": "  "}, "OPENAI_API_KEY is empty"),
        ({"OPENAI_API_KEY": f"{KEY}\n"}, "OPENAI_API_KEY contains whitespace"),
        (
            {
                "AZURE_OPENAI_ENDPOINT": "https://[res",
                "AZURE_OPENAI_API_KEY": KEY,
                "AZURE_OPENAI_DEPLOYMENT": "d",
            },
            "AZURE_OPENAI_ENDPOINT: endpoint is malformed",
        ),
        (
            {
                "AZURE_OPENAI_ENDPOINT": "res",
                "AZURE_OPENAI_API_KEY": f"{KEY} ",
                "AZURE_OPENAI_DEPLOYMENT": "d",
            },
            "AZURE_OPENAI_API_KEY contains whitespace",
        ),
    ],
)
def test_from_env_names_the_malformed_variable(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        Endpoint.from_env(env)
    assert KEY not in str(info.value)


def test_environment_variables_list_what_from_env_reads() -> None:
    import inspect

    from trio_realtime._endpoints import ENVIRONMENT_VARIABLES

    source = inspect.getsource(Endpoint.from_env)
    read = set(re.findall(r'"((?:OPENAI|AZURE_OPENAI)_[A-Z_]+)"', source))
    assert read == {name for name, _ in ENVIRONMENT_VARIABLES}


# ---------------------------------------------------------------- credentials not known by name

UNKNOWN_SECRET_HEADERS = [
    "Ocp-Apim-Subscription-Key",  # Azure API Management, in front of Azure OpenAI
    "Cookie",
    "Sec-WebSocket-Protocol",  # browsers carry keys there ("openai-insecure-api-key.<key>")
    "X-Custom-Auth",
    "Proxy-Authorization",
]


@pytest.mark.parametrize("name", UNKNOWN_SECRET_HEADERS)
def test_a_header_not_known_to_be_harmless_is_a_secret(name: str) -> None:
    endpoint = Endpoint("wss://gw.example.com/realtime", {name: KEY, "OpenAI-Beta": "realtime=v1"})
    assert KEY not in repr(endpoint)
    assert KEY not in str(endpoint)
    assert f"{name!r}: '<redacted>'" in repr(endpoint)
    assert "realtime=v1" in repr(endpoint)  # harmless headers stay visible
    assert endpoint.has_credentials


@pytest.mark.parametrize("param", ["subscription-key", "sig", "code", "secret", "Api-Key"])
def test_a_query_parameter_not_known_to_be_harmless_is_a_secret(param: str) -> None:
    endpoint = Endpoint(f"wss://gw.example.com/openai/realtime?{param}={KEY}&deployment=rt")
    assert KEY not in repr(endpoint)
    assert f"{param}=<redacted>" in repr(endpoint)
    assert "deployment=rt" in repr(endpoint)
    assert endpoint.has_credentials


@pytest.mark.parametrize(
    "url",
    [
        "wss://h/v1/realtime?model=gpt-realtime",
        "wss://h/openai/realtime?api-version=2025-04-01-preview&deployment=rt",
        "wss://h/v1/realtime?call_id=rtc_123",
    ],
)
def test_harmless_query_parameters_stay_visible_and_are_no_credential(url: str) -> None:
    endpoint = Endpoint(url, {"User-Agent": "app/1", "OpenAI-Beta": "realtime=v1"})
    assert url in repr(endpoint)
    assert "app/1" in repr(endpoint)
    assert not endpoint.has_credentials


@pytest.mark.parametrize("name", UNKNOWN_SECRET_HEADERS)
def test_plain_ws_refuses_any_secret_to_a_host_that_is_not_loopback(name: str) -> None:
    config = SessionConfig()
    with pytest.raises(ValueError, match="refusing to send credentials over plain ws://") as info:
        target_of(Endpoint("ws://gw.example.com/realtime", {name: KEY}), config)
    assert KEY not in str(info.value)
    with pytest.raises(ValueError, match="plain ws://"):
        target_of(Endpoint(f"ws://gw.example.com/realtime?subscription-key={KEY}"), config)
    # Loopback, or allowed explicitly: fine.
    target_of(Endpoint("ws://127.0.0.1:9/realtime", {name: KEY}), config)
    target_of(
        Endpoint("ws://gw.example.com/realtime", {name: KEY}),
        SessionConfig(allow_insecure=True),
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"wss://res.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=rt&api-key={KEY}",
            "wss://res.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=rt&api-key=<redacted>",
        ),
        (
            f"/openai/realtime?subscription-key={KEY}&model=m",
            "/openai/realtime?subscription-key=<redacted>&model=m",
        ),
        (f"wss://h/x?{KEY}", "wss://h/x?<redacted>"),
        (f"wss://user:{KEY}@h/x", "wss://<redacted>@h/x"),
        (f"wss://h/x?sig={KEY}#frag", "wss://h/x?sig=<redacted>#frag"),
        ("wss://h/v1/realtime?model=gpt-realtime", "wss://h/v1/realtime?model=gpt-realtime"),
        ("wss://h/v1/realtime", "wss://h/v1/realtime"),
        ("GET /v1/realtime?token=" + KEY, "GET /v1/realtime?token=<redacted>"),
    ],
)
def test_redact_url_removes_every_query_value_not_known_to_be_harmless(
    url: str, shown: str
) -> None:
    assert redact_url(url) == shown
    assert KEY not in redact_url(url)
