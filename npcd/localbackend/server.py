"""The embedded local Realtime server: the OpenAI Realtime protocol on loopback, offline.

Like the real service it serves REST and WebSocket on one base URL (``http://HOST:PORT/v1``):

- ``POST /v1/realtime/client_secrets`` (GA) and ``POST /v1/realtime/sessions`` (beta) mint an
  ephemeral client secret with the API key; a secret can open connections until it expires;
- ``GET /v1/realtime?model=...`` upgrades to a WebSocket session, authenticated with
  ``Authorization: Bearer <key or secret>`` (or the browser subprotocol form); the
  ``OpenAI-Beta: realtime=v1`` header selects the beta dialect, or, in OpenAI-faithful mode,
  is refused the way OpenAI does since 2026-05 (``beta_api_shape_disabled``, close 4000).

websockets' server only parses GET requests, so connections are sniffed: one that starts with
``POST`` is answered here and never reaches the WebSocket protocol. Sessions end at a maximum
duration the way the service ends them (GA: close 1001 with its reason text; beta: a
``session_expired`` error first).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from npcd.localbackend.session import BackendSession, Engines
from npcd.personas.model import Persona
from npcd.realtime import events as ev
from npcd.realtime.codec import encode_server
from npcd.realtime.extensions import PHONEMES_QUERY
from npcd.realtime.values import Dialect, ErrorDetail

_LOGGER = logging.getLogger(__name__)

MAX_REST_BODY = 64 * 1024
MAX_FRAME_BYTES = 16 * 1024 * 1024 + 1024
SECRET_TTL_DEFAULT = 600


@dataclass
class BackendOptions:
    #: Keys accepted as `Authorization: Bearer`; empty accepts any (it listens on loopback only).
    api_keys: tuple[str, ...] = ()
    #: Refuse the beta header as OpenAI does since 2026-05-12.
    refuse_beta: bool = False
    #: Seconds a session may last (OpenAI: 60 minutes).
    max_session_s: float = 3600.0
    model: str = "gpt-realtime"


@dataclass
class _Secrets:
    """Minted client secrets and their expiry (unix seconds)."""

    issued: dict[str, int] = field(default_factory=dict)

    def mint(self, ttl: int) -> tuple[str, int]:
        now = int(time.time())
        self.issued = {k: v for k, v in self.issued.items() if v > now}
        value = "ek_" + secrets.token_urlsafe(24)
        expires = now + ttl
        self.issued[value] = expires
        return value, expires

    def valid(self, value: str) -> bool:
        expires = self.issued.get(value)
        return expires is not None and expires > time.time()


class LocalBackend:
    """The server: `start` on a port, `close` to stop. Sessions share the engines."""

    def __init__(
        self, engines: Engines, personas: Mapping[str, Persona], options: BackendOptions
    ) -> None:
        self.engines = engines
        self.personas = dict(personas)
        self.options = options
        self.secrets = _Secrets()
        self.sessions = 0
        #: The sessions connected now (what `POST /v1/npcd/sessions` reports).
        self.live: set[BackendSession] = set()
        self._server: Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the local backend is not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        backend = self

        class Connection(_SniffingConnection):
            owner = backend

        self._server = await serve(
            self._session,
            host,
            port,
            create_connection=Connection,
            process_request=self._authorize,
            compression=None,
            max_size=MAX_FRAME_BYTES,
            ping_interval=20,
            ping_timeout=20,
            select_subprotocol=_select_subprotocol,
        )

    def update_personas(self, personas: Mapping[str, Persona]) -> None:
        """Hot reload: sessions see the new personas from their next response on."""
        self.personas.clear()
        self.personas.update(personas)

    def drop_connections(self) -> int:
        """Cut every session's TCP connection without a close frame (1006 at the client), as a
        network failure would: for fault drills and tests. Returns how many were cut."""
        if self._server is None:
            return 0
        connections = list(self._server.connections)
        for connection in connections:
            connection.transport.abort()
        return len(connections)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()

    # -- authentication -------------------------------------------------------------------------

    def _key_ok(self, key: str) -> bool:
        if self.secrets.valid(key):
            return True
        if not self.options.api_keys:
            return True  # run without keys: loopback only, any or no key (as the log says)
        return any(hmac.compare_digest(key, allowed) for allowed in self.options.api_keys)

    def _authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if not path.endswith("/realtime"):
            return connection.respond(HTTPStatus.NOT_FOUND, "Not found. Try /v1/realtime\n")
        if not self._key_ok(_credential(request.headers)):
            return _json_response(
                connection,
                HTTPStatus.UNAUTHORIZED,
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                        "message": "Incorrect API key provided.",
                    }
                },
            )
        return None

    # -- REST -----------------------------------------------------------------------------------

    def rest(self, method: str, path: str, headers: Headers, body: bytes) -> tuple[int, Any]:
        """Answer one REST request: (status, JSON body)."""
        route = urlsplit(path).path.rstrip("/")
        if method != "POST" or not route.endswith(
            ("/realtime/client_secrets", "/realtime/sessions", "/npcd/sessions")
        ):
            return 404, _rest_error("not_found", f"Unknown endpoint {method} {route}")
        key = _credential(headers)
        if not key or self.secrets.valid(key) or not self._key_ok(key):
            return 401, _rest_error("invalid_api_key", "Incorrect API key provided.")
        if route.endswith("/npcd/sessions") and not self.options.api_keys:
            # Without configured keys any key passes: players' talk is not for any process.
            return 404, _rest_error("not_found", "Inspection needs the backend to have keys")
        if route.endswith("/npcd/sessions"):
            # The local backend's own inspection endpoint: what each connected session holds
            # (its conversation as text), so tests and developers can see what npcd gave it.
            return 200, {"sessions": [session.describe() for session in self.live]}
        try:
            request = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            return 400, _rest_error("invalid_json", "The body is not valid JSON.")
        if not isinstance(request, dict):
            return 400, _rest_error("invalid_json", "The body must be a JSON object.")
        if route.endswith("/client_secrets"):
            after = request.get("expires_after") or {}
            ttl = after.get("seconds", SECRET_TTL_DEFAULT) if isinstance(after, dict) else None
            if not isinstance(ttl, int) or not 10 <= ttl <= 7200:
                return 400, _rest_error("invalid_value", "expires_after.seconds must be 10..7200")
            value, expires = self.secrets.mint(ttl)
            session = request.get("session")
            if not isinstance(session, dict):
                session = {}
            return 200, {
                "value": value,
                "expires_at": expires,
                "session": {
                    "type": "realtime",
                    "object": "realtime.session",
                    "id": f"sess_{secrets.token_hex(10)}",
                    "model": session.get("model", self.options.model),
                },
            }
        value, expires = self.secrets.mint(60)
        return 200, {
            "id": f"sess_{secrets.token_hex(10)}",
            "object": "realtime.session",
            "model": request.get("model", self.options.model),
            "client_secret": {"value": value, "expires_at": expires},
        }

    # -- sessions -------------------------------------------------------------------------------

    async def _session(self, ws: ServerConnection) -> None:
        request = ws.request
        if request is None:  # websockets runs the handler only after a handshake
            return
        beta = request.headers.get("OpenAI-Beta", "").strip().lower() == "realtime=v1"
        dialect = Dialect.BETA if beta else Dialect.GA
        if beta and self.options.refuse_beta:
            error = ev.ErrorEvent(
                event_id="event_0",
                error=ErrorDetail(
                    type="invalid_request_error",
                    code="beta_api_shape_disabled",
                    message="The Realtime Beta API is no longer supported. Please use "
                    "/v1/realtime for the GA API.",
                ),
            )
            await ws.send(encode_server(error, Dialect.GA))
            await ws.close(4000, "beta_api_shape_disabled")
            return
        query = parse_qs(urlsplit(request.path).query)
        model = query.get("model", [self.options.model])[0]
        self.sessions += 1
        session = BackendSession(
            ws.send,
            dialect=dialect,
            model=model,
            engines=self.engines,
            personas=self.personas,
            expires_at=int(time.time() + self.options.max_session_s),
            phoneme_events=query.get(PHONEMES_QUERY, [""])[0] == "1",
        )
        expiry = asyncio.get_running_loop().call_later(
            self.options.max_session_s, lambda: asyncio.ensure_future(self._expire(ws, dialect))
        )
        self.live.add(session)
        try:
            await session.start()
            async for frame in ws:
                await session.handle(frame)
        except ConnectionClosed:
            pass
        finally:
            self.live.discard(session)
            expiry.cancel()
            await session.close()

    async def _expire(self, ws: ServerConnection, dialect: Dialect) -> None:
        minutes = max(1, round(self.options.max_session_s / 60))
        reason = f"Your session hit the maximum duration of {minutes} minutes."
        with contextlib.suppress(ConnectionClosed):
            if dialect is Dialect.BETA:
                error = ev.ErrorEvent(
                    event_id="event_expired",
                    error=ErrorDetail(
                        type="invalid_request_error", code="session_expired", message=reason
                    ),
                )
                await ws.send(encode_server(error, dialect))
            await ws.close(1001, reason)


class _SniffingConnection(ServerConnection):
    """A WebSocket connection that answers plain HTTP POSTs itself (the REST endpoints).

    The first bytes decide: ``POST`` is REST, anything else goes to websockets untouched.
    """

    owner: LocalBackend

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mode: str | None = None
        self._head = b""
        self._decided = asyncio.Event()
        self._more = asyncio.Event()
        self._lost = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        if self._mode == "ws":
            super().data_received(data)
            return
        self._head += data
        self._more.set()
        if self._mode == "rest":
            return
        if len(self._head) < 4 and b"POST".startswith(self._head):
            return  # not enough bytes to tell yet
        self._decided.set()
        if self._head.startswith(b"POST"):
            self._mode = "rest"
            return
        self._mode = "ws"
        head, self._head = self._head, b""
        super().data_received(head)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost.set()
        self._decided.set()
        self._more.set()
        super().connection_lost(exc)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        await self._decided.wait()
        if self._mode == "rest":
            await self._answer_rest()
            return
        await super().handshake(*args, **kwargs)

    async def _answer_rest(self) -> None:
        async with asyncio.timeout(10):
            while b"\r\n\r\n" not in self._head and not self._lost.is_set():
                self._more.clear()
                await self._more.wait()
            head, _, body = self._head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = ([*lines[0].split(" "), "", ""])[:2]
            headers = Headers()
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip()] = value.strip()
            try:
                length = int(headers.get("Content-Length", "0") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_REST_BODY:
                status, payload = 413, _rest_error("too_large", "Request body too large.")
            else:
                while len(body) < length and not self._lost.is_set():
                    self._more.clear()
                    await self._more.wait()
                    body = self._head.partition(b"\r\n\r\n")[2]
                status, payload = self.owner.rest(method, path, headers, body[:length])
            data = orjson.dumps(payload)
            self.transport.write(
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            # close() flushes the response first; wait for that, because websockets aborts the
            # transport (dropping unsent bytes) as soon as the handshake returns unopened.
            self.transport.close()
            await self._lost.wait()


def _credential(headers: Headers) -> str:
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    for proto in headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith("openai-insecure-api-key."):
            return proto.removeprefix("openai-insecure-api-key.")
    return headers.get("api-key", "").strip()


def _select_subprotocol(connection: ServerConnection, offered: Any) -> Any:
    return "realtime" if "realtime" in offered else None


def _json_response(connection: ServerConnection, status: HTTPStatus, body: Any) -> Response:
    response = connection.respond(status, "")
    response.body = orjson.dumps(body)
    # websockets' Headers is a multi-dict: replace, don't append a second value.
    del response.headers["Content-Type"]
    del response.headers["Content-Length"]
    response.headers["Content-Type"] = "application/json"
    response.headers["Content-Length"] = str(len(response.body))
    return response


def _rest_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"type": "invalid_request_error", "code": code, "message": message}}
