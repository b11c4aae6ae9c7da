"""Provider endpoint rules and the Secret wrapper, without sockets."""

from __future__ import annotations

import pickle

import orjson
import pytest

from npcd.config import Secret
from npcd.realtime.endpoints import (
    Backend,
    MintError,
    Provider,
    mint_request,
    parse_mint_response,
    websocket_headers,
    websocket_url,
)
from npcd.realtime.values import Dialect

KEY = Secret("sk-npcd-SENTINEL-0123456789abcdef")


@pytest.mark.parametrize(
    ("backend", "url"),
    [
        (
            Backend(Provider.OPENAI, "https://api.openai.com/v1"),
            "wss://api.openai.com/v1/realtime?model=gpt-realtime",
        ),
        (
            Backend(Provider.COMPATIBLE, "ws://127.0.0.1:9000/v1/", model="local-npc"),
            "ws://127.0.0.1:9000/v1/realtime?model=local-npc",
        ),
        (
            Backend(Provider.AZURE, "https://res.openai.azure.com", model="dep"),
            "wss://res.openai.azure.com/openai/v1/realtime?model=dep",
        ),
    ],
)
def test_websocket_urls(backend: Backend, url: str) -> None:
    assert websocket_url(backend) == url


def test_headers_carry_org_and_project_and_no_key_when_none() -> None:
    backend = Backend(
        Provider.OPENAI, "https://api.openai.com/v1", organization="org_1", project="proj_1"
    )
    headers = dict(websocket_headers(backend, None))
    assert headers["OpenAI-Organization"] == "org_1" and headers["OpenAI-Project"] == "proj_1"
    assert "Authorization" not in headers


def test_mint_request_needs_a_key_and_hides_it_in_repr() -> None:
    with pytest.raises(ValueError, match="needs an API key"):
        mint_request(Backend(Provider.OPENAI, "https://api.openai.com/v1"))
    request = mint_request(Backend(Provider.OPENAI, "wss://api.openai.com/v1", api_key=KEY))
    assert request.url == "https://api.openai.com/v1/realtime/client_secrets"
    assert KEY.reveal() not in repr(request)


def test_azure_cannot_mint_client_secrets() -> None:
    with pytest.raises(ValueError, match="Azure"):
        Backend(Provider.AZURE, "https://r.openai.azure.com", api_key=KEY, use_client_secret=True)


@pytest.mark.parametrize(
    ("body", "dialect"),
    [
        (b"not json", Dialect.GA),
        (b'{"value": "ek_1"}', Dialect.GA),
        (b'{"client_secret": {"value": "", "expires_at": 1}}', Dialect.BETA),
        (b"null", Dialect.BETA),
    ],
)
def test_unusable_mint_responses_are_clear_errors(body: bytes, dialect: Dialect) -> None:
    with pytest.raises(MintError):
        parse_mint_response(body, dialect)


def test_mint_response_shapes() -> None:
    ga = parse_mint_response(orjson.dumps({"value": "ek_a", "expires_at": 5}), Dialect.GA)
    beta = parse_mint_response(
        orjson.dumps({"client_secret": {"value": "ek_b", "expires_at": 6}}), Dialect.BETA
    )
    assert (ga.value.reveal(), ga.expires_at) == ("ek_a", 5)
    assert (beta.value.reveal(), beta.expires_at) == ("ek_b", 6)


def test_secret_never_shows_itself() -> None:
    backend = Backend(Provider.OPENAI, "https://api.openai.com/v1", api_key=KEY)
    for text in (repr(KEY), str(KEY), f"{KEY}", repr(backend), backend.describe):
        assert KEY.reveal() not in text
    with pytest.raises(TypeError):
        pickle.dumps(KEY)
    assert KEY == Secret(KEY.reveal()) and KEY != Secret("sk-other-0123456789")
