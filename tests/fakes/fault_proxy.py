"""A fault-injecting WebSocket proxy between npcd and a Realtime backend, for integration tests.

npcd's recovery paths (a server ending the session, a network drop, a backend that goes silent
or never says `session.created`, a backend that is down and comes back) are hard to provoke in a
real backend on cue. This proxy relays every text frame unchanged between npcd and an upstream
(the embedded `LocalBackend`, or any Realtime-speaking server) and lets a test break the path
in those ways while connections are live, and wait on what went through (`wait_client_event`).

Each hop keeps its own WebSocket: pings and pongs are answered by the proxy, not relayed, and
the proxy sends no pings of its own. Handshakes are accepted before the upstream is dialled, so
an upstream that refuses or is unreachable shows up as a 1014 (bad gateway) close, not as an
HTTP status: test handshake refusals against `RealtimePeer` instead. A close from either side is
passed on with its code and reason; a drop (no close frame) is passed on as a drop.

Frames are recorded as they pass on: `client_frames` (npcd -> upstream) and `server_frames`
(-> npcd, relayed or injected), by their JSON `type`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import (
    ConnectionClosed,
    InvalidMessage,
    InvalidStatus,
    WebSocketException,
)
from websockets.frames import CloseCode

MAX_FRAME_BYTES = 64 * 1024 * 1024
#: Headers npcd's handshake carries that the upstream needs (auth, dialect, billing scope).
FORWARDED_HEADERS = (
    "Authorization",
    "api-key",
    "OpenAI-Beta",
    "OpenAI-Organization",
    "OpenAI-Project",
    "User-Agent",
)

T = TypeVar("T")


class _QuietHandshakes(logging.Filter):
    """Drop websockets' "opening handshake failed" reports for peers that vanished mid-handshake:
    the proxy aborts such connections itself (`go_down`, `close`), so they are not errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "opening handshake failed" or record.exc_info is None:
            return True
        return not isinstance(record.exc_info[1], ConnectionClosed | InvalidMessage | EOFError)


_LOG = logging.getLogger(__name__)
_LOG.addFilter(_QuietHandshakes())


@dataclass(eq=False)
class _Link:
    """One proxied connection: npcd's side (`down`) and the upstream's (`up`)."""

    down: ServerConnection
    #: Upstream frames are swallowed for the life of the link (`withhold_created`).
    withheld: bool
    up: ClientConnection | None = None
    #: The proxy itself is ending this link: relays must not pass closes on.
    ending: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@dataclass
class FaultProxy:
    #: The backend's base URL, e.g. ``ws://127.0.0.1:8765/v1`` (http/https are taken as ws/wss).
    upstream_url: str
    #: Listening port on 127.0.0.1; 0 picks one at `start` (then kept for `come_up`).
    port: int = 0
    #: JSON `type` of each frame passed from npcd to the upstream, in order.
    client_frames: list[str] = field(default_factory=list)
    #: JSON `type` of each frame delivered to npcd (relayed or injected), in order.
    server_frames: list[str] = field(default_factory=list)
    #: npcd-side WebSocket handshakes completed, in total.
    accepted: int = 0
    #: Upstream frames swallowed on withheld links.
    discarded: int = 0
    #: How long the `wait_*` methods wait before raising TimeoutError (saying what was seen);
    #: wrap them in `asyncio.timeout` for a shorter bound.
    wait_timeout: float = 5.0
    _client_events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _server_events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _server: Server | None = field(default=None, repr=False)
    _links: set[_Link] = field(default_factory=set, repr=False)
    #: TCP connections accepted during a blackhole whose handshake is not being served yet.
    _held: list[ServerConnection] = field(default_factory=list, repr=False)
    _flowing: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _withhold: bool = field(default=False, repr=False)
    _close_after: tuple[str, int, str] | None = field(default=None, repr=False)
    _blackhole_after: str | None = field(default=None, repr=False)
    _closers: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self._flowing.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen on 127.0.0.1:`port` (a free port when 0, remembered for `come_up`)."""
        assert self._server is None, "already listening"
        proxy = self

        class _Connection(ServerConnection):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                if proxy.blackholed:
                    # Take the TCP connection but don't start the handshake handler yet: the
                    # request is read and left unanswered until the blackhole lifts.
                    Connection.connection_made(self, transport)
                    proxy._held.append(self)
                    proxy._notify()
                else:
                    super().connection_made(transport)

        self._server = await serve(
            self._serve,
            "127.0.0.1",
            self.port,
            compression=None,
            max_size=MAX_FRAME_BYTES,
            ping_interval=None,
            close_timeout=2,
            logger=_LOG,
            create_connection=_Connection,
        )
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every connection; the proxy can `start` again after."""
        await self.go_down()

    async def go_down(self) -> None:
        """Stop listening and drop every live connection (no close frames): npcd's next connect
        is refused until `come_up`."""
        server, self._server = self._server, None
        if server is not None:
            server.server.close()  # stop accepting now; websockets' close() does it a bit later
        await self.drop_all()
        for held in self._held:
            held.transport.abort()
        self._held.clear()
        if server is not None:
            server.close()
            await server.wait_closed()
        self._notify()

    async def come_up(self) -> None:
        """Listen again on the same port."""
        await self.start()

    @property
    def base_url(self) -> str:
        """What npcd's `Backend(Provider.COMPATIBLE, base_url, ...)` takes."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def connections(self) -> int:
        """Live proxied connections (npcd's handshake done, not yet closed)."""
        return len(self._links)

    @property
    def held(self) -> int:
        """Connections accepted at TCP level during a blackhole, handshake still unanswered."""
        return len(self._held)

    @property
    def blackholed(self) -> bool:
        return not self._flowing.is_set()

    @property
    def withholding(self) -> bool:
        return self._withhold

    # -- faults ------------------------------------------------------------------------------

    async def close_all(self, code: int, reason: str) -> None:
        """End every live session as a server would: a close frame with `code`/`reason` to npcd
        (e.g. 1001 "Your session hit the maximum duration of 60 minutes."), a normal close
        upstream."""
        links = self._claim_links()
        closes = [link.down.close(code, reason) for link in links]
        closes += [link.up.close() for link in links if link.up is not None]
        await asyncio.gather(*closes, return_exceptions=True)
        await self._finish(links)

    def close_after(self, event_type: str, code: int, reason: str) -> None:
        """Once: right after the next server event of `event_type` reaches npcd, end that
        session as `close_all` would (how a fault lands mid-response, on cue)."""
        self._close_after = (event_type, code, reason)

    def blackhole_after(self, event_type: str) -> None:
        """Once: right after the next server event of `event_type` reaches npcd, `blackhole`."""
        self._blackhole_after = event_type

    async def _close_link(self, link: _Link, code: int, reason: str) -> None:
        if link.ending:
            return
        link.ending = True
        closes = [link.down.close(code, reason)]
        if link.up is not None:
            closes.append(link.up.close())
        await asyncio.gather(*closes, return_exceptions=True)
        await self._finish([link])

    async def drop_all(self) -> None:
        """Abort every npcd-side TCP connection with no close frame, as a network drop looks
        (npcd sees 1006); the upstream side is closed normally."""
        links = self._claim_links()
        for link in links:
            link.down.transport.abort()
        await asyncio.gather(
            *(link.up.close() for link in links if link.up is not None), return_exceptions=True
        )
        await self._finish(links)

    async def inject(self, event: dict[str, Any]) -> int:
        """Send `event` to every live npcd-side connection as if the server had sent it, even
        while blackholed or withholding. Returns how many connections it was sent on."""
        frame = orjson.dumps(event).decode()
        sent = 0
        for link in list(self._links):
            if link.ending:
                continue
            with contextlib.suppress(ConnectionClosed):
                await link.down.send(frame)
                self._record(self.server_frames, self._server_events, frame)
                sent += 1
        return sent

    def blackhole(self, on: bool) -> None:
        """While on, live connections forward nothing either way and npcd's socket is not read
        (`pause_reading`), so npcd's pings go unanswered; upstream frames are held, not lost.
        A connection made meanwhile is accepted at TCP level and its handshake request read but
        not answered until the blackhole lifts (or npcd gives up). Off resumes everything still
        alive, including those pending handshakes."""
        if on == self.blackholed:
            return
        if on:
            self._flowing.clear()
            for link in self._links:
                link.down.transport.pause_reading()
        else:
            self._flowing.set()
            for link in self._links:
                link.down.transport.resume_reading()
            held, self._held = self._held, []
            for conn in held:
                if not conn.connection_lost_waiter.done():
                    _start_handler(conn)
        self._notify()

    def withhold_created(self, on: bool) -> None:
        """While on, new connections complete the handshake but nothing the upstream sends on
        them (`session.created` first) ever reaches npcd, for the life of that connection;
        npcd's pings are still answered. Connections made after it is off behave normally."""
        self._withhold = on

    # -- waiting -----------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], T | None], *, what: str = "condition") -> T:
        """Wait until `predicate()` returns something other than None/False; return it."""
        try:
            async with asyncio.timeout(self.wait_timeout):
                while not (result := predicate()):
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"fault proxy: no {what} within {self.wait_timeout}s "
                f"(client sent {self.client_frames}, server sent {self.server_frames}, "
                f"{self.connections} live of {self.accepted} accepted)"
            ) from None
        return result

    async def wait_connections(self, total: int) -> None:
        """Wait until `total` connections have been accepted since the proxy was made."""
        await self.wait_for(lambda: self.accepted >= total, what=f"{total} accepted connections")

    async def wait_live(self, count: int) -> None:
        """Wait until exactly `count` connections are live."""
        await self.wait_for(lambda: self.connections == count, what=f"{count} live connections")

    async def wait_client_event(self, event_type: str, *, after: int = 0) -> dict[str, Any]:
        """The first event of `event_type` npcd sent at index >= `after` of `client_frames`."""
        return await self.wait_for(
            lambda: _find(self._client_events, event_type, after),
            what=f"client {event_type!r} after #{after}",
        )

    async def wait_server_event(self, event_type: str, *, after: int = 0) -> dict[str, Any]:
        """The first event of `event_type` delivered to npcd at index >= `after` of
        `server_frames`."""
        return await self.wait_for(
            lambda: _find(self._server_events, event_type, after),
            what=f"server {event_type!r} after #{after}",
        )

    # -- relaying ----------------------------------------------------------------------------

    async def _serve(self, down: ServerConnection) -> None:
        link = _Link(down, withheld=self._withhold)
        self._links.add(link)
        self.accepted += 1
        if self.blackholed:
            down.transport.pause_reading()
        self._notify()
        try:
            link.up = await self._dial(down)
            if link.up is None or link.ending:
                return
            link.tasks = [
                asyncio.create_task(self._pump_up(link, link.up)),
                asyncio.create_task(self._pump_down(link, link.up)),
            ]
            results = await asyncio.gather(*link.tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    raise result  # a bug in the relay: let websockets log it
        finally:
            self._links.discard(link)
            if link.up is not None:
                await link.up.close()
            self._notify()

    async def _dial(self, down: ServerConnection) -> ClientConnection | None:
        request = down.request
        assert request is not None
        headers = [
            (name, value) for name in FORWARDED_HEADERS if (value := request.headers.get(name))
        ]
        try:
            return await connect(
                self._upstream_for(request.path),
                additional_headers=headers,
                user_agent_header=None,
                compression=None,
                max_size=MAX_FRAME_BYTES,
                ping_interval=None,
                close_timeout=2,
                open_timeout=5,
                logger=_LOG,
            )
        except InvalidStatus as exc:
            reason = f"fault proxy: upstream refused (HTTP {exc.response.status_code})"
        except (OSError, TimeoutError, WebSocketException) as exc:
            reason = f"fault proxy: upstream unreachable ({type(exc).__name__})"
        await down.close(CloseCode.BAD_GATEWAY, reason)
        return None

    def _upstream_for(self, path: str) -> str:
        """npcd's `/v1/<rest>` maps to `<upstream_url>/<rest>`; other paths to the upstream's
        origin."""
        scheme, netloc, base, _, _ = urlsplit(self.upstream_url)
        scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
        if path == "/v1" or path.startswith(("/v1/", "/v1?")):
            path = base.rstrip("/") + path[3:]
        return urlunsplit((scheme, netloc, "", "", "")) + path

    async def _pump_up(self, link: _Link, up: ClientConnection) -> None:
        """npcd -> upstream. npcd's close (or drop) is passed on."""
        while True:
            try:
                message = await link.down.recv()
            except ConnectionClosed as exc:
                if not link.ending:
                    await _pass_close(exc, up)
                return
            if self.blackholed:
                link.down.transport.pause_reading()  # websockets' flow control may resume it
                await self._flowing.wait()
            with contextlib.suppress(ConnectionClosed):
                await up.send(message)
                self._record(self.client_frames, self._client_events, message)

    async def _pump_down(self, link: _Link, up: ClientConnection) -> None:
        """upstream -> npcd. The upstream's close (or drop) is passed on, after a blackhole."""
        while True:
            try:
                message = await up.recv()
            except ConnectionClosed as exc:
                if link.withheld:
                    await link.down.wait_closed()
                elif not link.ending:
                    await self._flowing.wait()
                    await _pass_close(exc, link.down)
                return
            if link.withheld:
                self.discarded += 1
                self._notify()
                continue
            await self._flowing.wait()
            try:
                await link.down.send(message)
            except ConnectionClosed:
                return
            self._record(self.server_frames, self._server_events, message)
            if (
                self._blackhole_after is not None
                and self.server_frames[-1] == self._blackhole_after
            ):
                self._blackhole_after = None
                self.blackhole(True)
            trigger = self._close_after
            if trigger is not None and self.server_frames[-1] == trigger[0]:
                self._close_after = None
                closing = asyncio.create_task(self._close_link(link, trigger[1], trigger[2]))
                self._closers.add(closing)
                closing.add_done_callback(self._closers.discard)

    def _claim_links(self) -> list[_Link]:
        links = [link for link in self._links if not link.ending]
        for link in links:
            link.ending = True
        return links

    async def _finish(self, links: list[_Link]) -> None:
        """Stop the relays of links being ended (they may be parked on a blackhole)."""
        tasks = [task for link in links for task in link.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _record(self, types: list[str], events: list[dict[str, Any]], message: str | bytes) -> None:
        event: dict[str, Any] = {}
        if isinstance(message, bytes):
            kind = "<binary>"
        else:
            try:
                parsed = orjson.loads(message)
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict):
                event = parsed
                kind = str(parsed.get("type", "<untyped>"))
            else:
                kind = "<not-an-object>"
        types.append(kind)
        events.append(event)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def _start_handler(conn: ServerConnection) -> None:
    """Run the handshake handler websockets' `connection_made` would have started: websockets
    16 has `Server.start_connection_handler`; 17 inlined it into `connection_made`."""
    server: Any = conn.server
    start = getattr(server, "start_connection_handler", None)
    if start is not None:
        start(conn)
        return
    task = conn.loop.create_task(server.handler(conn))
    server.handler_tasks.add(task)


def _find(events: list[dict[str, Any]], event_type: str, after: int) -> dict[str, Any] | None:
    for event in events[after:]:
        if event.get("type") == event_type:
            return event
    return None


async def _pass_close(exc: ConnectionClosed, to: Connection) -> None:
    """Mirror how one side ended onto the other: its close code and reason, or a drop."""
    if exc.rcvd is None:
        to.transport.abort()
    elif exc.rcvd.code == CloseCode.NO_STATUS_RCVD:
        await to.close()
    else:
        await to.close(exc.rcvd.code, exc.rcvd.reason)
