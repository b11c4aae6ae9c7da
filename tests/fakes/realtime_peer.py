"""A scriptable Realtime server double: REST and WebSocket on one loopback port.

OpenAI serves the client-secret REST endpoints and the WebSocket on the same base URL, and
websockets' server only speaks GET, so a small front reads each request's head: POSTs are
answered here (recorded, with a scripted status), upgrades are piped byte for byte to an inner
websockets server whose handler the test provides. The front also lets a test cut every live
connection without a close frame (`drop_all`), which is what a network drop looks like.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

Handler = Callable[[ServerConnection], Awaitable[None]]


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class RealtimePeer:
    handler: Handler
    #: HTTP status for WebSocket upgrades (101 = accept); set to 403, 503... to refuse.
    upgrade_status: int = 101
    mint_status: int = 200
    mint_value: str = "ek_test_0123456789abcdef"
    seen: list[SeenRequest] = field(default_factory=list)
    _inner: Server | None = None
    _front: asyncio.Server | None = None
    _pipes: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self._front is not None
        return int(self._front.sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def upgrades(self) -> list[SeenRequest]:
        return [r for r in self.seen if r.method == "GET"]

    def mints(self) -> list[SeenRequest]:
        return [r for r in self.seen if r.method == "POST"]

    async def __aenter__(self) -> RealtimePeer:
        self._inner = await serve(
            self._handle_ws,
            "127.0.0.1",
            0,
            process_request=self._process,
            compression=None,
            max_size=None,
        )
        self._front = await asyncio.start_server(self._handle_front, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop_all()
        assert self._front is not None and self._inner is not None
        self._front.close()
        self._inner.close()
        await self._inner.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def drop_all(self) -> None:
        """Abort every piped connection: the client sees a drop with no close frame (1006)."""
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

    async def _handle_ws(self, ws: ServerConnection) -> None:
        await self.handler(ws)

    def _process(self, ws: ServerConnection, request: Request) -> Response | None:
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        self.seen.append(SeenRequest("GET", request.path, headers))
        if self.upgrade_status != 101:
            return ws.respond(self.upgrade_status, "refused by test\n")
        return None

    async def _handle_front(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        method = head.split(b" ", 1)[0].decode()
        if method == "POST":
            await self._answer_post(head, reader, writer)
            return
        assert self._inner is not None
        port = next(iter(self._inner.sockets)).getsockname()[1]
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        up_writer.write(head)
        self._pipes |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(ConnectionError, RuntimeError):
            dst.close()

    async def _answer_post(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.seen.append(SeenRequest("POST", path, headers, body))
        expires = int(time.time()) + 600
        payload: dict[str, Any]
        if path.endswith("/realtime/client_secrets"):
            payload = {
                "value": self.mint_value,
                "expires_at": expires,
                "session": {"type": "realtime", "object": "realtime.session"},
            }
        elif path.endswith("/realtime/sessions"):
            payload = {
                "id": "sess_1",
                "object": "realtime.session",
                "client_secret": {"value": self.mint_value, "expires_at": expires},
            }
        else:
            payload = {"error": {"message": "not found"}}
        status = self.mint_status if "error" not in payload else 404
        data = orjson.dumps(payload) if status == 200 else b'{"error": {"message": "no"}}'
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        writer.close()


async def echo_then_hold(ws: ServerConnection) -> None:
    """Send a session.created, then echo every frame back until the client goes."""
    await ws.send('{"type":"session.created","event_id":"event_1","session":{}}')
    async for message in ws:
        await ws.send(message)
