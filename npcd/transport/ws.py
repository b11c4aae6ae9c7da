"""The WebSocket link to a Realtime backend: open, send text, receive text, close.

A thin driver: it moves JSON text frames and turns every way a connection can fail into one of
two exceptions carrying a verdict from `npcd.realtime.policy`, so callers decide with tables,
not with websockets' exception zoo. Settings that matter, and why:

- ``compression=None``: audio does not compress; permessage-deflate costs 20-48 us a message.
- ``max_size`` 64 MiB: items with audio (``conversation.item.retrieved``) pass the library's
  1 MiB default, and a long reply would otherwise end the session with close 1009.
- ``ping_interval`` 20 s / ``ping_timeout`` 10 s: an idle session whose backend went silent is
  noticed within 30 s. A session in a conversation is watched much closer by its slot, which
  pings a quiet backend after a few seconds (`responsive`) and cuts it off (`abort`).
- ``close_timeout`` 2 s: several NPC sessions closing in turn add up on shutdown.
- outgoing frames are sent as text even when given bytes (orjson's output), without a copy.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from collections.abc import Iterable

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from npcd.config import Secret
from npcd.realtime.endpoints import (
    Backend,
    ClientSecret,
    MintError,
    mint_request,
    parse_mint_response,
    websocket_headers,
    websocket_url,
)
from npcd.realtime.policy import (
    CloseClass,
    CloseVerdict,
    ConnectVerdict,
    classify_close,
    classify_connect_error,
    classify_handshake,
)

_LOGGER = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024 * 1024
OPEN_TIMEOUT = 10.0
MINT_TIMEOUT = 10.0
MAX_MINT_RESPONSE = 1024 * 1024


class ConnectFailed(Exception):
    """Could not open the link. `verdict.retryable` says whether trying again can help."""

    def __init__(self, verdict: ConnectVerdict, detail: str = ""):
        super().__init__(f"{verdict.reason}{f' ({detail})' if detail else ''}")
        self.verdict = verdict


class LinkClosed(Exception):
    """The open link ended. `verdict.kind` says what to do: rotate, reconnect, or give up."""

    def __init__(self, verdict: CloseVerdict, code: int | None, reason: str):
        super().__init__(f"{verdict.reason} (close code {code})")
        self.verdict = verdict
        self.code = code
        self.reason = reason


class RealtimeLink:
    """One open WebSocket to a backend. Not thread-safe; one reader task, any writer task."""

    def __init__(self, connection: ClientConnection, backend: Backend):
        self._ws = connection
        self.backend = backend

    @classmethod
    async def open(
        cls,
        backend: Backend,
        *,
        credential: Secret | None = None,
        open_timeout: float = OPEN_TIMEOUT,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 10.0,
    ) -> RealtimeLink:
        """Connect (minting a client secret first if the backend asks for one)."""
        if credential is None:
            if backend.use_client_secret:
                credential = (await mint_client_secret(backend)).value
            else:
                credential = backend.api_key
        try:
            connection = await connect(
                websocket_url(backend),
                additional_headers=websocket_headers(backend, credential),
                user_agent_header=None,
                compression=None,
                open_timeout=open_timeout,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                close_timeout=2.0,
                max_size=MAX_FRAME_BYTES,
                max_queue=64,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ConnectFailed(classify_handshake(status), f"HTTP {status}") from None
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            # Only the exception's type: handshake errors can carry request headers.
            raise ConnectFailed(classify_connect_error(exc), type(exc).__name__) from None
        return cls(connection, backend)

    async def send(self, frame: str | bytes) -> None:
        """Send one event (JSON text). Raises `LinkClosed` if the link is gone."""
        try:
            await self._ws.send(frame, text=True)
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    async def send_many(self, frames: Iterable[str | bytes]) -> None:
        for frame in frames:
            await self.send(frame)

    async def recv(self) -> bytes:
        """The next event's JSON, as the UTF-8 bytes that arrived: not decoded to str, because
        the parser takes bytes (and checks the UTF-8). Raises `LinkClosed` when the link ends,
        however it ends."""
        try:
            message = await self._ws.recv(decode=False)
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        return message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)

    async def responsive(self, within_s: float) -> bool:
        """Whether the backend answers a ping within ``within_s`` seconds. A closed link counts
        as answering: its reader already sees the close."""
        try:
            async with asyncio.timeout(within_s):
                pong = await self._ws.ping()
                await pong
        except TimeoutError:
            return False
        except ConnectionClosed:
            return True
        return True

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake (the backend is not
        answering, so waiting for its close frame would only add its timeout). The reader's
        `recv` then raises `LinkClosed`."""
        transport = self._ws.transport
        if transport is not None:
            transport.abort()

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    def _closed(self, exc: ConnectionClosed) -> LinkClosed:
        frame = exc.rcvd
        code = frame.code if frame is not None else None
        reason = frame.reason if frame is not None else ""
        verdict = classify_close(code, reason)
        if verdict.kind is not CloseClass.NORMAL:
            _LOGGER.info("realtime link to %s closed: %s", self.backend.describe, verdict.reason)
        return LinkClosed(verdict, code, reason)


async def mint_client_secret(
    backend: Backend, *, http_timeout: float = MINT_TIMEOUT
) -> ClientSecret:
    """Mint an ephemeral client secret over REST (in a worker thread: urllib blocks)."""
    request = mint_request(backend)

    def post() -> tuple[int, bytes]:
        req = urllib.request.Request(  # noqa: S310 - URL scheme checked by Backend
            request.url, data=request.body, headers=dict(request.headers), method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=http_timeout) as response:  # noqa: S310
                return response.status, response.read(MAX_MINT_RESPONSE)
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    try:
        status, body = await asyncio.to_thread(post)
    except (OSError, TimeoutError) as exc:
        raise ConnectFailed(classify_connect_error(exc), type(exc).__name__) from None
    if status != 200:
        raise ConnectFailed(classify_handshake(status), f"client secret endpoint: HTTP {status}")
    try:
        return parse_mint_response(body, backend.dialect)
    except MintError as exc:
        raise ConnectFailed(classify_handshake(502), str(exc)) from None
