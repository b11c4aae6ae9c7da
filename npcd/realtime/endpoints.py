"""Where and how to connect to each Realtime provider: URLs, headers, client-secret minting.

Pure functions over a `Backend` description, so every provider's quirks are tested without a
socket: OpenAI (API key, or an ephemeral client secret minted over REST first), Azure OpenAI
(`api-key` header; GA `/openai/v1/realtime?model=<deployment>` or the preview
`/openai/realtime?api-version=...&deployment=...`), and any compatible server by base URL
(npcd's own local backend among them). Only `websocket_headers` and `mint_request` see a secret,
and they return it inside header tuples for the transport alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson

from npcd.config import Secret
from npcd.realtime.extensions import PHONEMES_QUERY
from npcd.realtime.values import Dialect

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-realtime"
DEFAULT_BETA_MODEL = "gpt-4o-realtime-preview"
AZURE_PREVIEW_API_VERSION = "2025-04-01-preview"
#: Seconds a minted client secret may be used to open a connection (GA allows 10..7200).
CLIENT_SECRET_TTL = 600
USER_AGENT = "npcd"


class Provider(enum.Enum):
    OPENAI = "openai"
    AZURE = "azure"
    #: Any server speaking the protocol at a base URL (npcd's local backend, proxies, vLLM...).
    COMPATIBLE = "compatible"


@dataclass(frozen=True, slots=True)
class Backend:
    """One Realtime backend as npcd connects to it."""

    provider: Provider
    #: http(s):// or ws(s):// base including the API version path, e.g. https://api.openai.com/v1;
    #: for Azure: https://<resource>.openai.azure.com (npcd adds /openai/...).
    base_url: str
    model: str = DEFAULT_MODEL
    dialect: Dialect = Dialect.GA
    api_key: Secret | None = None
    #: Mint a short-lived client secret over REST and connect with it instead of the key.
    use_client_secret: bool = False
    organization: str | None = None
    project: str | None = None
    azure_api_version: str = AZURE_PREVIEW_API_VERSION
    #: Ask for the local backend's phoneme timing (`npcd.realtime.extensions`); npcd sets it
    #: only for the embedded backend, never for a provider that does not know it.
    phoneme_events: bool = False

    def __post_init__(self) -> None:
        scheme = urlsplit(self.base_url).scheme
        if scheme not in ("http", "https", "ws", "wss"):
            raise ValueError(f"backend URL must start with http(s):// or ws(s)://, not {scheme!r}")
        if self.use_client_secret and self.provider is Provider.AZURE:
            raise ValueError("client secrets are minted by OpenAI's REST API; Azure uses its key")

    @property
    def describe(self) -> str:
        """Safe one-line description for logs: provider, host, model, dialect; no credentials."""
        parts = urlsplit(self.base_url)
        host = f"{parts.hostname}:{parts.port}" if parts.port else f"{parts.hostname}"
        return f"{self.provider.value} {host} {self.model} ({self.dialect.value})"


def websocket_url(backend: Backend) -> str:
    """The WebSocket URL to open."""
    scheme, netloc, path, _, _ = urlsplit(backend.base_url)
    ws_scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    path = path.rstrip("/")
    if backend.provider is Provider.AZURE:
        if backend.dialect is Dialect.GA:
            query = {"model": backend.model}
            path = "/openai/v1/realtime"
        else:
            query = {"api-version": backend.azure_api_version, "deployment": backend.model}
            path = "/openai/realtime"
    else:
        query = {"model": backend.model}
        if backend.phoneme_events:
            query[PHONEMES_QUERY] = "1"
        path = f"{path}/realtime"
    return urlunsplit((ws_scheme, netloc, path, urlencode(query), ""))


def websocket_headers(backend: Backend, credential: Secret | None) -> list[tuple[str, str]]:
    """Handshake headers: auth for the provider, the beta opt-in, optional org/project."""
    headers: list[tuple[str, str]] = [("User-Agent", USER_AGENT)]
    if credential is not None:
        if backend.provider is Provider.AZURE:
            headers.append(("api-key", credential.reveal()))
        else:
            headers.append(("Authorization", f"Bearer {credential.reveal()}"))
    if backend.dialect is Dialect.BETA:
        headers.append(("OpenAI-Beta", "realtime=v1"))
    if backend.organization:
        headers.append(("OpenAI-Organization", backend.organization))
    if backend.project:
        headers.append(("OpenAI-Project", backend.project))
    return headers


@dataclass(frozen=True, slots=True)
class MintRequest:
    """A REST call that mints an ephemeral client secret (POST, JSON body)."""

    url: str
    headers: list[tuple[str, str]]
    body: bytes

    def __repr__(self) -> str:
        return f"MintRequest(url={self.url!r}, headers=[redacted], body={len(self.body)} bytes)"


def mint_request(backend: Backend) -> MintRequest:
    """The request for a client secret: beta `POST /realtime/sessions`, GA `/client_secrets`."""
    if backend.api_key is None:
        raise ValueError("minting a client secret needs an API key")
    scheme, netloc, path, _, _ = urlsplit(backend.base_url)
    http_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    body: dict[str, Any]
    if backend.dialect is Dialect.GA:
        endpoint = "/realtime/client_secrets"
        body = {
            "expires_after": {"anchor": "created_at", "seconds": CLIENT_SECRET_TTL},
            "session": {"type": "realtime", "model": backend.model},
        }
    else:
        endpoint = "/realtime/sessions"
        body = {"model": backend.model}
    url = urlunsplit((http_scheme, netloc, path.rstrip("/") + endpoint, "", ""))
    headers = [
        ("Authorization", f"Bearer {backend.api_key.reveal()}"),
        ("Content-Type", "application/json"),
        ("User-Agent", USER_AGENT),
    ]
    if backend.dialect is Dialect.BETA:
        headers.append(("OpenAI-Beta", "realtime=v1"))
    return MintRequest(url, headers, orjson.dumps(body))


@dataclass(frozen=True, slots=True)
class ClientSecret:
    value: Secret
    #: Unix seconds after which the secret can no longer open a connection.
    expires_at: int


class MintError(Exception):
    """The client-secret endpoint answered with something unusable (message is safe to log)."""


def parse_mint_response(body: bytes, dialect: Dialect) -> ClientSecret:
    """Read the secret: GA has top-level `value`/`expires_at`, beta `client_secret.{...}`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MintError("client secret response is not JSON") from None
    holder = data if dialect is Dialect.GA else (data or {}).get("client_secret")
    if not isinstance(holder, dict):
        raise MintError("client secret response has no client secret")
    value, expires_at = holder.get("value"), holder.get("expires_at")
    if not isinstance(value, str) or not value or not isinstance(expires_at, int):
        raise MintError("client secret response lacks `value` or `expires_at`")
    return ClientSecret(Secret(value), expires_at)
