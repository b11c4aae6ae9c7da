"""An NPC slot: rate limits honoured on the wire, and an unreachable backend reported sanely."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from websockets.asyncio.server import ServerConnection

from npcd.config import Secret
from npcd.personas import load_directory
from npcd.realtime import events as ev
from npcd.realtime.endpoints import Backend, Provider
from npcd.slot import NpcSlot, SlotListener, SlotOptions, SlotStatus, StatusKind
from tests.conftest import SAMPLES
from tests.fakes.realtime_peer import Handler, RealtimePeer

RESET_S = 0.4


class Events(SlotListener):
    def __init__(self) -> None:
        self.rate_limits = asyncio.Event()

    def on_event(self, event: ev.ServerEvent) -> None:
        if isinstance(event, ev.RateLimitsUpdated):
            self.rate_limits.set()


@contextlib.asynccontextmanager
async def blacksmith_slot(handler: Handler) -> AsyncIterator[tuple[NpcSlot, Events]]:
    """The blacksmith's slot, started against a peer running ``handler``; closed after."""
    persona = load_directory(SAMPLES).personas["blacksmith"]
    async with RealtimePeer(handler) as peer:
        backend = Backend(Provider.COMPATIBLE, peer.base_url, api_key=Secret("sk-test-0123456789"))
        slot = NpcSlot(persona, SlotOptions(backend))
        listener = slot.listener = Events()
        slot.start()
        try:
            yield slot, listener
        finally:
            await slot.close()


async def test_response_waits_for_the_rate_limit_reset() -> None:
    created_at: list[float] = []
    got_create = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"type":"session.created","event_id":"e1","session":{"type":"realtime"}}')
        await ws.send(
            orjson.dumps(
                {
                    "type": "rate_limits.updated",
                    "event_id": "e2",
                    "rate_limits": [
                        {"name": "requests", "limit": 100, "remaining": 0, "reset_seconds": RESET_S}
                    ],
                }
            ).decode()
        )
        async for frame in ws:
            if orjson.loads(frame)["type"] == "response.create":
                created_at.append(time.monotonic())
                got_create.set()

    async with blacksmith_slot(handler) as (slot, listener):
        async with asyncio.timeout(10):
            await slot.wait_ready()
            await listener.rate_limits.wait()
        asked = time.monotonic()
        assert slot.session.request_response(now=asked) is False
        slot.schedule_release()
        async with asyncio.timeout(10):
            await got_create.wait()
    assert created_at[0] - asked >= RESET_S - 0.1, "not sent before the limits reset"


def test_unreachable_backend_is_reported_once_per_reason_not_per_npc(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from npcd import slot as slot_module

    slot_module._warned.clear()
    with caplog.at_level(logging.WARNING, logger="npcd.slot"):
        for npc in range(500):  # every NPC fails at start-up
            slot_module._warn_unreachable("DNS failed (gaierror)", now=1000.0 + npc * 0.001)
        slot_module._warn_unreachable("DNS failed (gaierror)", now=1031.0)
        slot_module._warn_unreachable("connection refused", now=1031.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "cannot reach the Realtime backend: DNS failed (gaierror)",
        "cannot reach the Realtime backend: DNS failed (gaierror) "
        "(499 more failed attempts since the last warning)",
        "cannot reach the Realtime backend: connection refused",
    ]


async def test_a_malformed_backend_frame_is_skipped_and_the_session_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Frames arrive as undecoded bytes: one that is not UTF-8 JSON is logged and skipped."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"type":"session.created","event_id":"e1","session":{"type":"realtime"}}')
        await ws.send(b"\xff\xfe not json")  # a binary frame, not even UTF-8
        await ws.send(
            '{"type":"rate_limits.updated","event_id":"e2","rate_limits":'
            '[{"name":"requests","limit":100,"remaining":99,"reset_seconds":1}]}'
        )
        await ws.wait_closed()

    with caplog.at_level(logging.WARNING, logger="npcd.slot"):
        async with blacksmith_slot(handler) as (slot, listener):
            async with asyncio.timeout(10):
                await listener.rate_limits.wait()
            assert slot.ready and slot.connects == 1, "the same session, not a reconnect"
    assert any("malformed backend event" in r.getMessage() for r in caplog.records)


class Statuses(SlotListener):
    def __init__(self) -> None:
        self.rotated = asyncio.Event()
        self.details: list[str] = []

    def on_status(self, status: SlotStatus) -> None:
        self.details.append(status.detail)
        if status.kind is StatusKind.ROTATED:
            self.rotated.set()


async def test_a_move_asked_for_while_connecting_happens_once_the_session_is_up() -> None:
    """A budget's move to the offline backend must not be lost because the NPC's session was
    (re)connecting when it was asked for."""
    release = asyncio.Event()
    reached_a = asyncio.Event()
    reached_b = asyncio.Event()

    async def slow_a(ws: ServerConnection) -> None:
        reached_a.set()
        await release.wait()  # the slot is still connecting when the move is asked for
        await ws.send('{"type":"session.created","event_id":"e1","session":{"type":"realtime"}}')
        async for _ in ws:
            pass

    async def quick_b(ws: ServerConnection) -> None:
        reached_b.set()
        await ws.send('{"type":"session.created","event_id":"e1","session":{"type":"realtime"}}')
        async for _ in ws:
            pass

    persona = load_directory(SAMPLES).personas["blacksmith"]
    key = Secret("sk-test-0123456789")
    async with RealtimePeer(slow_a) as peer_a, RealtimePeer(quick_b) as peer_b:
        a = Backend(Provider.COMPATIBLE, peer_a.base_url, api_key=key)
        b = Backend(Provider.COMPATIBLE, peer_b.base_url, api_key=key)
        slot = NpcSlot(persona, SlotOptions(a))
        listener = slot.listener = Statuses()
        slot.start()
        try:
            async with asyncio.timeout(10):
                await reached_a.wait()
            await slot.move_to(b, "moved to b")
            assert slot.backend == b and slot.moving and not reached_b.is_set()
            release.set()
            async with asyncio.timeout(10):
                await listener.rotated.wait()
            assert reached_b.is_set() and slot.connected_to == b and not slot.moving
            assert listener.details == ["moved to b"]
        finally:
            await slot.close()
