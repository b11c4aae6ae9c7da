"""Persona files edited while npcd runs: changes apply, broken edits keep the last good version."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from npcd.config import Settings, parse_listen
from npcd.localbackend.defaults import default_engines
from npcd.server.app import RunningServer, serving, wait_for_npcs
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc
from tests.integration.test_converse import Game, start

TIMEOUT = 20.0


async def changed(running: RunningServer, change: Callable[[], object]) -> None:
    """Make a change on disk and wait until the daemon's watcher has dealt with it."""
    running.reloaded.clear()
    change()
    async with asyncio.timeout(TIMEOUT):
        await running.reloaded.wait()


async def test_hot_reload(samples_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    engines = default_engines()
    assert engines.warm is not None
    engines.warm([])
    settings = Settings(
        listen=parse_listen("127.0.0.1:0"), characters=samples_copy, reload_interval_s=0.1
    )
    async with serving(settings, with_backend=True) as running:
        await wait_for_npcs(running)
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
            stub = pb_grpc.NpcServiceStub(channel)
            talking = Game(channel, start("herbalist"))
            await talking.until("ready")

            async def greeting(npc: str) -> str:
                reply = await stub.GetCharacter(pb.GetCharacterRequest(character_id=npc))
                return str(reply.greeting)

            blacksmith = samples_copy / "blacksmith.yaml"
            text = blacksmith.read_text()
            await changed(running, lambda: blacksmith.write_text(text.replace("Well met,", "Oi,")))
            assert (await greeting("blacksmith")).startswith("Oi, {player_name}")

            herbalist = samples_copy / "herbalist.yaml"
            good = herbalist.read_text()
            broken = good.replace("voice: shimmer", "voice: robot")
            with caplog.at_level(logging.ERROR, logger="npcd.server"):
                await changed(running, lambda: herbalist.write_text(broken))
            assert any(
                "herbalist.yaml:6:1: voice: 'robot' is not allowed" in r.getMessage()
                and "keeping the last good version" in r.getMessage()
                for r in caplog.records
            )
            assert (await greeting("herbalist")).startswith("Oh! Come in"), "last good kept"

            miller = samples_copy / "miller.yaml"
            await changed(
                running,
                lambda: miller.write_text(
                    "id: miller\nname: Old Hobb\nvoice: sage\nbackstory: A miller.\ngreeting: Eh?\n"
                ),
            )
            assert await greeting("miller") == "Eh?"
            await changed(running, (samples_copy / "innkeeper.yaml").unlink)
            listed = await stub.ListCharacters(pb.ListCharactersRequest())
            assert "innkeeper" not in {c.id for c in listed.characters}

            game = Game(channel, start("miller"))
            await game.until("ready")
            game.send(text=pb.TextMessage(text="good morning"))
            assert (await game.until("response_done")).status == pb.RESPONSE_STATUS_COMPLETED
            game.end()
            # The conversation that stayed open through every reload still works.
            talking.send(text=pb.TextMessage(text="any rumours?"))
            assert (await talking.until("response_done")).transcript.startswith("Someone's")
            talking.end()
