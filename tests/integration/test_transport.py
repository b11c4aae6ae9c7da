"""The WebSocket link against a scripted peer on loopback: providers, secrets, failures."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson
import pytest
from websockets.asyncio.server import ServerConnection

from npcd.config import Secret
from npcd.log import RedactingFilter
from npcd.realtime.endpoints import Backend, Provider
from npcd.realtime.policy import CloseClass
from npcd.realtime.values import Dialect
from npcd.transport.ws import ConnectFailed, LinkClosed, RealtimeLink, mint_client_secret
from tests.fakes.realtime_peer import RealtimePeer, echo_then_hold

KEY = "sk-npcd-SENTINEL-0123456789abcdef"


def backend(peer: RealtimePeer, **kw: object) -> Backend:
    options: dict[str, object] = {"api_key": Secret(KEY), "model": "gpt-realtime"}
    options.update(kw)
    provider = options.pop("provider", Provider.COMPATIBLE)
    base = peer.root_url if provider is Provider.AZURE else peer.base_url
    return Backend(provider, base, **options)  # type: ignore[arg-type]


async def say_frame_kind(ws: ServerConnection) -> None:
    """Answer every frame with whether it came as a text frame."""
    await ws.send('{"type":"session.created","event_id":"event_1","session":{}}')
    async for message in ws:
        await ws.send(orjson.dumps({"type": "kind", "text": isinstance(message, str)}).decode())


async def test_frames_go_as_text_whether_str_or_bytes() -> None:
    async with RealtimePeer(say_frame_kind) as peer:
        link = await RealtimeLink.open(backend(peer))
        await link.recv()
        for frame in (b'{"type":"input_audio_buffer.commit"}', '{"type":"response.create"}'):
            await link.send(frame)
            assert orjson.loads(await link.recv()) == {"type": "kind", "text": True}
        await link.close()


async def test_ga_link_round_trip_with_bearer_key() -> None:
    async with RealtimePeer(echo_then_hold) as peer:
        link = await RealtimeLink.open(backend(peer))
        assert orjson.loads(await link.recv())["type"] == "session.created"
        await link.send(b'{"type":"input_audio_buffer.commit"}')
        assert await link.recv() == b'{"type":"input_audio_buffer.commit"}', "UTF-8, undecoded"
        await link.close()
    [upgrade] = peer.upgrades()
    assert upgrade.path == "/v1/realtime?model=gpt-realtime"
    assert upgrade.headers["authorization"] == f"Bearer {KEY}"
    assert "openai-beta" not in upgrade.headers
    assert "permessage-deflate" not in upgrade.headers.get("sec-websocket-extensions", "")


async def test_beta_dialect_sends_the_beta_header() -> None:
    async with RealtimePeer(echo_then_hold) as peer:
        link = await RealtimeLink.open(
            backend(peer, dialect=Dialect.BETA, model="gpt-4o-realtime-preview")
        )
        await link.close()
    [upgrade] = peer.upgrades()
    assert upgrade.headers["openai-beta"] == "realtime=v1"
    assert upgrade.path == "/v1/realtime?model=gpt-4o-realtime-preview"


@pytest.mark.parametrize(
    ("dialect", "path"),
    [
        (Dialect.GA, "/openai/v1/realtime?model=npc-deploy"),
        (Dialect.BETA, "/openai/realtime?api-version=2025-04-01-preview&deployment=npc-deploy"),
    ],
)
async def test_azure_url_and_api_key_header(dialect: Dialect, path: str) -> None:
    async with RealtimePeer(echo_then_hold) as peer:
        link = await RealtimeLink.open(
            backend(peer, provider=Provider.AZURE, model="npc-deploy", dialect=dialect)
        )
        await link.close()
    [upgrade] = peer.upgrades()
    assert upgrade.path == path
    assert upgrade.headers["api-key"] == KEY
    assert "authorization" not in upgrade.headers


@pytest.mark.parametrize(
    ("dialect", "endpoint"),
    [(Dialect.GA, "/v1/realtime/client_secrets"), (Dialect.BETA, "/v1/realtime/sessions")],
)
async def test_ephemeral_client_secret_flow(dialect: Dialect, endpoint: str) -> None:
    async with RealtimePeer(echo_then_hold) as peer:
        link = await RealtimeLink.open(backend(peer, use_client_secret=True, dialect=dialect))
        await link.close()
    [mint] = peer.mints()
    assert mint.path == endpoint
    assert mint.headers["authorization"] == f"Bearer {KEY}"
    body = orjson.loads(mint.body)
    if dialect is Dialect.GA:
        assert body["session"] == {"type": "realtime", "model": "gpt-realtime"}
        assert body["expires_after"]["anchor"] == "created_at"
    else:
        assert body == {"model": "gpt-realtime"}
    [upgrade] = peer.upgrades()
    assert upgrade.headers["authorization"] == f"Bearer {peer.mint_value}"
    assert KEY not in str(upgrade.headers), "the long-lived key never reaches the WebSocket"


async def test_rejected_mint_is_fatal_and_keeps_the_key_secret() -> None:
    async with RealtimePeer(echo_then_hold, mint_status=401) as peer:
        with pytest.raises(ConnectFailed) as caught:
            await mint_client_secret(backend(peer, use_client_secret=True))
    assert not caught.value.verdict.retryable
    assert "401" in str(caught.value) and KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "retryable"), [(401, False), (403, False), (404, False), (429, True), (503, True)]
)
async def test_refused_handshake_is_classified(status: int, retryable: bool) -> None:
    async with RealtimePeer(echo_then_hold, upgrade_status=status) as peer:
        with pytest.raises(ConnectFailed) as caught:
            await RealtimeLink.open(backend(peer))
    assert caught.value.verdict.retryable is retryable
    assert f"HTTP {status}" in str(caught.value)


async def test_nothing_listening_is_retryable(unused_tcp_port: int) -> None:
    target = Backend(Provider.COMPATIBLE, f"http://127.0.0.1:{unused_tcp_port}/v1")
    with pytest.raises(ConnectFailed) as caught:
        await RealtimeLink.open(target, open_timeout=5)
    assert caught.value.verdict.retryable


async def closes_with(code: int, reason: str) -> LinkClosed:
    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"type":"session.created","event_id":"e","session":{}}')
        await ws.close(code, reason)

    async with RealtimePeer(handler) as peer:
        link = await RealtimeLink.open(backend(peer))
        await link.recv()
        with pytest.raises(LinkClosed) as caught:
            await link.recv()
    return caught.value


async def test_max_duration_close_means_rotate() -> None:
    closed = await closes_with(1001, "Your session hit the maximum duration of 60 minutes.")
    assert closed.verdict.kind is CloseClass.EXPIRED and closed.code == 1001


async def test_beta_shutdown_close_is_fatal_and_says_use_ga() -> None:
    closed = await closes_with(4000, "beta_api_shape_disabled")
    assert closed.verdict.kind is CloseClass.FATAL
    assert "GA" in closed.verdict.reason


async def test_network_drop_means_reconnect() -> None:
    started = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        started.set()
        await ws.wait_closed()

    async with RealtimePeer(handler) as peer:
        link = await RealtimeLink.open(backend(peer))
        await asyncio.wait_for(started.wait(), 5)
        peer.drop_all()
        with pytest.raises(LinkClosed) as caught:
            await asyncio.wait_for(link.recv(), 5)
    assert caught.value.verdict.kind is CloseClass.RECONNECT
    assert caught.value.code is None


async def test_frames_over_one_mebibyte_arrive() -> None:
    big = orjson.dumps({"type": "conversation.item.retrieved", "pad": "x" * (3 * 1024 * 1024)})

    async def handler(ws: ServerConnection) -> None:
        await ws.send(big.decode())
        await ws.wait_closed()

    async with RealtimePeer(handler) as peer:
        link = await RealtimeLink.open(backend(peer))
        assert len(await link.recv()) == len(big)
        await link.close()


async def test_debug_logging_never_shows_the_key() -> None:
    """websockets logs handshake headers at DEBUG; npcd's handler filter must scrub them."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.getLogger("websockets").setLevel(logging.DEBUG)
    try:
        async with RealtimePeer(echo_then_hold, upgrade_status=403) as peer:
            target = backend(peer)
            with pytest.raises(ConnectFailed) as caught:
                await RealtimeLink.open(target)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        logging.getLogger("websockets").setLevel(logging.NOTSET)
    output = buffer.getvalue()
    assert "Authorization: Bearer [redacted]" in output, "the header dump was captured"
    for text in (output, str(caught.value), repr(target), repr(caught.value)):
        assert KEY not in text
