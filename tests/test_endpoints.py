"""Endpoint URLs and headers for OpenAI and Azure OpenAI; secrets stay out of reprs."""

from __future__ import annotations

import pytest

from trio_realtime import Endpoint

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
