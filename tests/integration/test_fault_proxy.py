"""The fault proxy itself, over real loopback sockets: it relays frames unchanged, and each fault
(server close, drop, injected event, blackhole, withheld session.created, down and up) looks to a
WebSocket client the way the tests that use it assume."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from tests.fakes.fault_proxy import FaultProxy

HEADERS = {"Authorization": "Bearer sk-test", "OpenAI-Beta": "realtime=v1"}
EXPIRED = "Your session hit the maximum duration of 60 minutes."


async def upstream_handler(ws: ServerConnection) -> None:
    """`session.created` (reporting the handshake it saw), then an `echo` of each event; a
    `bye` event makes it close with 4000."""
    request = ws.request
    assert request is not None
    seen = {"path": request.path, **{k: request.headers.get(k) for k in HEADERS}}
    with contextlib.suppress(ConnectionClosed):
        await ws.send(orjson.dumps({"type": "session.created", "seen": seen}).decode())
        async for message in ws:
            event = orjson.loads(message)
            if event["type"] == "bye":
                await ws.close(4000, "bye then")
                return
            await ws.send(orjson.dumps({"type": "echo", "of": event}).decode())


@pytest.fixture
async def upstream() -> AsyncIterator[Server]:
    async with serve(upstream_handler, "127.0.0.1", 0, compression=None) as server:
        yield server


@pytest.fixture
async def proxy(upstream: Server, caplog: pytest.LogCaptureFixture) -> AsyncIterator[FaultProxy]:
    port = next(iter(upstream.sockets)).getsockname()[1]
    caplog.set_level(logging.INFO)
    async with FaultProxy(f"ws://127.0.0.1:{port}/v1") as fault_proxy:
        yield fault_proxy
    records = caplog.get_records("setup") + caplog.get_records("call") + caplog.records
    noisy = [r for r in records if r.levelno >= logging.WARNING]
    assert not noisy, [r.getMessage() for r in noisy]


async def open_client(proxy: FaultProxy, **options: Any) -> ClientConnection:
    return await connect(
        f"{proxy.ws_url}/realtime?model=m",
        additional_headers=HEADERS,
        compression=None,
        ping_interval=None,
        close_timeout=1,
        **options,
    )


async def recv_event(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(2):
        event: dict[str, Any] = orjson.loads(await ws.recv())
        return event


async def closed_by(ws: ClientConnection) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(2):
            await ws.recv()
    return info.value


async def test_relays_both_ways_and_records(proxy: FaultProxy) -> None:
    ws = await open_client(proxy)
    created = await recv_event(ws)
    assert created["type"] == "session.created"
    assert created["seen"] == {"path": "/v1/realtime?model=m", **HEADERS}
    assert proxy.accepted == 1 and proxy.connections == 1

    frame = '{"type":"response.create","event_id":"ev_1"}'
    await ws.send(frame)
    sent = await proxy.wait_client_event("response.create")
    assert sent == orjson.loads(frame)
    assert (await recv_event(ws))["of"] == sent
    await proxy.wait_server_event("echo")
    assert proxy.client_frames == ["response.create"]
    assert proxy.server_frames == ["session.created", "echo"]

    await ws.send('{"type":"response.create","event_id":"ev_2"}')
    second = await proxy.wait_client_event("response.create", after=1)
    assert second["event_id"] == "ev_2"

    await ws.close()
    await proxy.wait_live(0)


async def test_upstream_close_is_passed_on(proxy: FaultProxy) -> None:
    ws = await open_client(proxy)
    await recv_event(ws)
    await ws.send('{"type":"bye"}')
    closed = await closed_by(ws)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4000, "bye then")
    await proxy.wait_live(0)


async def test_close_all_sends_code_and_reason(proxy: FaultProxy) -> None:
    ws = await open_client(proxy)
    await recv_event(ws)
    await proxy.close_all(1001, EXPIRED)
    closed = await closed_by(ws)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1001, EXPIRED)
    await proxy.wait_live(0)


async def test_drop_all_sends_no_close_frame(proxy: FaultProxy) -> None:
    ws = await open_client(proxy)
    await recv_event(ws)
    await proxy.drop_all()
    closed = await closed_by(ws)
    assert isinstance(closed, ConnectionClosedError)
    assert closed.rcvd is None
    await proxy.wait_live(0)


async def test_inject_reaches_the_client(proxy: FaultProxy) -> None:
    ws = await open_client(proxy)
    await recv_event(ws)
    event = {
        "type": "error",
        "error": {"type": "invalid_request_error", "code": "session_expired", "message": "x"},
    }
    assert await proxy.inject(event) == 1
    assert await recv_event(ws) == event
    assert proxy.server_frames == ["session.created", "error"]
    await ws.close()


async def test_blackhole_stalls_pings_and_frames_until_lifted(proxy: FaultProxy) -> None:
    ws = await open_client(proxy)
    await recv_event(ws)
    proxy.blackhole(True)
    pong = await ws.ping()
    await ws.send('{"type":"input_audio_buffer.commit"}')
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await asyncio.shield(pong)
    assert proxy.client_frames == []

    # A connection made now is taken at TCP level; its handshake waits for the blackhole.
    late = asyncio.create_task(open_client(proxy, open_timeout=5))
    await proxy.wait_for(lambda: proxy.held == 1, what="a held handshake")
    assert not late.done() and proxy.accepted == 1

    proxy.blackhole(False)
    async with asyncio.timeout(1):
        await pong
    assert (await recv_event(ws))["of"]["type"] == "input_audio_buffer.commit"
    async with asyncio.timeout(2):
        second = await late
    assert (await recv_event(second))["type"] == "session.created"
    assert proxy.connections == 2
    await ws.close()
    await second.close()


async def test_blackholed_handshake_times_out(proxy: FaultProxy) -> None:
    proxy.blackhole(True)
    with pytest.raises(TimeoutError):
        await open_client(proxy, open_timeout=0.3)
    proxy.blackhole(False)  # the abandoned handshake is discarded quietly
    ws = await open_client(proxy)
    assert (await recv_event(ws))["type"] == "session.created"
    await ws.close()


async def test_withhold_created_keeps_the_line_open_and_silent(proxy: FaultProxy) -> None:
    proxy.withhold_created(True)
    ws = await open_client(proxy)
    await proxy.wait_for(lambda: proxy.discarded == 1, what="session.created swallowed")
    async with asyncio.timeout(1):
        await (await ws.ping())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await ws.recv()
    assert proxy.server_frames == []

    proxy.withhold_created(False)
    fresh = await open_client(proxy)
    assert (await recv_event(fresh))["type"] == "session.created"
    await ws.close()
    await fresh.close()


async def test_go_down_refuses_and_come_up_listens_on_the_same_port(proxy: FaultProxy) -> None:
    ws = await open_client(proxy)
    await recv_event(ws)
    port = proxy.port
    await proxy.go_down()
    closed = await closed_by(ws)
    assert closed.rcvd is None
    with pytest.raises(OSError):
        await open_client(proxy)

    await proxy.come_up()
    assert proxy.port == port
    again = await open_client(proxy)
    assert (await recv_event(again))["type"] == "session.created"
    await proxy.wait_connections(2)
    await again.close()
