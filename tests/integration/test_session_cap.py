"""A cap on open backend sessions, and idle NPCs suspended: they resume, memory intact."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from npcd.server.app import RunningServer
from npcd.slot import SlotState
from npcd.v1 import npcd_pb2 as pb
from tests.conftest import SAMPLES
from tests.integration.test_converse import TIMEOUT, Game, start, start_daemon, warm_engines

__all__ = ["warm_engines"]  # the module-scoped engine warm-up fixture applies here too


async def talk(channel: grpc.aio.Channel, npc: str, text: str) -> pb.ResponseDone:
    game = Game(channel, start(npc))
    await game.until("ready")
    game.send(text=pb.TextMessage(text=text))
    done: pb.ResponseDone = await game.until("response_done")
    game.end()
    await game.call.wait_for_connection()
    return done


def states(running: RunningServer) -> dict[str, SlotState]:
    assert running.pool is not None
    return running.pool.states()


async def test_capped_sessions_resume_with_their_memory() -> None:
    context, running = await start_daemon(SAMPLES, max_sessions=2)
    try:
        opened = [npc for npc, state in states(running).items() if state is SlotState.READY]
        assert len(opened) == 2, "only two NPCs connect at start-up"
        assert list(states(running).values()).count(SlotState.SUSPENDED) == 2
        pool = running.pool
        assert pool is not None
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
            first = await talk(channel, "herbalist", "any rumours?")
            assert first.status == pb.RESPONSE_STATUS_COMPLETED
            assert sum(s.open for s in pool.slots.values()) == 2, "the cap holds"
            for npc in ("blacksmith", "gate_guard", "innkeeper"):
                await talk(channel, npc, "hello")
            herbalist = pool.slots["herbalist"]
            async with asyncio.timeout(TIMEOUT):
                await herbalist.suspended.wait()
            again = await talk(channel, "herbalist", "can I help?")
            assert again.status == pb.RESPONSE_STATUS_COMPLETED
            said = [item.text for item in herbalist.session.items_in_order()]
            assert "any rumours?" in said and first.transcript in said, "memory kept"
    finally:
        await context.__aexit__(None, None, None)


async def test_idle_npcs_are_suspended_and_all_busy_is_a_clear_error() -> None:
    context, running = await start_daemon(SAMPLES, max_sessions=1, idle_close_s=0.2)
    try:
        pool = running.pool
        assert pool is not None
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
            busy = Game(channel, start("blacksmith"))
            await busy.until("ready")
            other = Game(channel, start("innkeeper"))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await other.until("ready")
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "all 1 NPC sessions are in conversations" in (caught.value.details() or "")
            busy.end()
            async with asyncio.timeout(TIMEOUT):
                await pool.slots["blacksmith"].suspended.wait()
            assert not any(slot.open for slot in pool.slots.values()), "idle NPC closed"
            done = await talk(channel, "innkeeper", "an ale please")
            assert done.status == pb.RESPONSE_STATUS_COMPLETED
    finally:
        await context.__aexit__(None, None, None)
