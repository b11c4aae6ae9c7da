"""Memory that survives: real `npcd serve` processes restarted (and killed) between
conversations, in front of a local backend this test runs, which reports what each NPC session
was given. A player's memory is per save slot; another slot or player starts clean; a broken
database turns memory off, not the daemon."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
import websockets.asyncio.client  # noqa: F401 - the backend's own dependency, imported early

from npcd.localbackend.defaults import default_engines
from npcd.localbackend.server import BackendOptions, LocalBackend
from npcd.memory.recall import MEMORY_NOTE_PREFIX
from npcd.personas import load_directory
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc
from tests.conftest import SAMPLES
from tests.integration.test_converse import Game, start_daemon, warm_engines

__all__ = ["warm_engines"]

NPCD = [sys.executable, "-m", "npcd"]
KEY = "sk-local-memory-test-0123456789"
START_TIMEOUT = 30.0


@pytest.fixture
async def backend() -> AsyncIterator[LocalBackend]:
    catalog = load_directory(SAMPLES)
    local = LocalBackend(
        default_engines(),
        {pid: loaded.persona for pid, loaded in catalog.personas.items()},
        BackendOptions(api_keys=(KEY,)),
    )
    await local.start()
    try:
        yield local
    finally:
        await local.close()


class Daemon:
    """One `npcd serve` process; its log lines are kept (and the pipe kept drained)."""

    def __init__(self, process: asyncio.subprocess.Process, target: str) -> None:
        self.process = process
        self.target = target
        self.log: list[str] = []
        self.ready = asyncio.Event()
        self._drain = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := (await self.process.stderr.readline()).decode():
            self.log.append(line)
            if "NPC sessions ready" in line:
                self.ready.set()


@asynccontextmanager
async def serve(backend: LocalBackend, data_dir: Path, *extra: str) -> AsyncIterator[Daemon]:
    process = await asyncio.create_subprocess_exec(
        *NPCD,
        "serve",
        "--characters",
        str(SAMPLES),
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "ws" + backend.base_url.removeprefix("http"),
        "--data-dir",
        str(data_dir),
        *extra,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NPCD_API_KEY": KEY},
    )
    assert process.stderr is not None
    early: list[str] = []
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, f"npcd exited before listening: {''.join(early)}"
                early.append(line)
                found = re.search(r"npcd \S+ listening on (\S+): ", line)
                if found:
                    break
        daemon = Daemon(process, found.group(1))
        daemon.log[:0] = early
        await asyncio.wait_for(daemon.ready.wait(), START_TIMEOUT)
        yield daemon
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def say(daemon: Daemon, player: str, slot: str, line: str) -> pb.ResponseDone:
    """One conversation: ``player`` in save ``slot`` says ``line`` to the blacksmith."""
    async with grpc.aio.insecure_channel(daemon.target) as channel:
        start = pb.Start(
            character_id="blacksmith",
            player=pb.Player(id=player, name=player.title()),
            save_slot=slot,
            capabilities=pb.Capabilities(transcripts=True),
        )
        game = Game(channel, start)
        await game.until("ready")
        game.send(text=pb.TextMessage(text=line))
        done: pb.ResponseDone = await game.until("response_done")
        game.end()
        async with asyncio.timeout(START_TIMEOUT):  # the NPC is free once its stream has ended
            while await game.call.read() is not grpc.aio.EOF:
                pass
        return done


def given(backend: LocalBackend, persona: str = "blacksmith") -> str:
    """The memory note the backend's session for ``persona`` holds ("" if none)."""
    sessions = [s.describe() for s in backend.live]
    [session] = [s for s in sessions if s["persona"] == persona]
    notes = [i["text"] for i in session["items"] if i["text"].startswith(MEMORY_NOTE_PREFIX)]
    return notes[-1] if notes else ""


async def test_the_npc_remembers_a_player_per_save_slot_across_a_restart(
    backend: LocalBackend, tmp_path: Path
) -> None:
    async with serve(backend, tmp_path) as first:
        done = await say(first, "ada", "1", "I need a new sword for the wolf hunt.")
        assert done.status == pb.RESPONSE_STATUS_COMPLETED
        first.process.send_signal(signal.SIGTERM)
        assert await first.process.wait() == 0
    async with serve(backend, tmp_path) as second:
        again = await say(second, "ada", "1", "Do you remember me?")
        note = given(backend)
        assert "I need a new sword for the wolf hunt." in note
        assert done.transcript.split(".")[0] in note, "and what the NPC answered"
        assert "wolf hunt" in again.transcript, "the scripted NPC quotes what it was given"
        other_slot = await say(second, "ada", "2", "Do you remember me?")
        assert "met" in other_slot.transcript and given(backend) == ""
        other_player = await say(second, "bo", "1", "Do you remember me?")
        assert "met" in other_player.transcript and given(backend) == ""
        back = await say(second, "ada", "1", "Have we met before?")
        assert "wolf hunt" in back.transcript, "slot 1's memory is back after the others"


async def test_a_kill_mid_response_keeps_every_finished_turn(
    backend: LocalBackend, tmp_path: Path
) -> None:
    async with serve(backend, tmp_path) as first:
        async with grpc.aio.insecure_channel(first.target) as channel:
            start = pb.Start(character_id="blacksmith", player=pb.Player(id="ada"), save_slot="1")
            game = Game(channel, start)
            await game.until("ready")
            game.send(text=pb.TextMessage(text="What do you have for sale?"))
            finished = await game.until("response_done")  # on disk before this came
            game.send(text=pb.TextMessage(text="Tell me about the mines."))
            await game.until("audio")  # the NPC is speaking: kill -9 now
            first.process.send_signal(signal.SIGKILL)
            await first.process.wait()
    exporter = await asyncio.create_subprocess_exec(
        *NPCD,
        "memory",
        "export",
        "--player",
        "ada",
        "--data-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(exporter.communicate(), START_TIMEOUT)
    assert exporter.returncode == 0
    document: dict[str, Any] = json.loads(out)
    texts = [t["text"] for c in document["conversations"] for t in c["turns"]]
    assert texts[:2] == ["What do you have for sale?", finished.transcript], "whole, in order"
    async with serve(backend, tmp_path) as second:
        await say(second, "ada", "1", "Do you remember me?")
        assert finished.transcript.split(".")[0] in given(backend)


async def test_without_memory_one_player_still_never_hears_another(
    backend: LocalBackend, tmp_path: Path
) -> None:
    async with serve(backend, tmp_path, "--no-memory") as daemon:
        await say(daemon, "ada", "1", "My vault code is 1234.")
        await say(daemon, "bo", "1", "Hello there.")
        [session] = [d for s in backend.live if (d := s.describe())["persona"] == "blacksmith"]
        said = " ".join(i["text"] for i in session["items"])
        assert "Hello there." in said and "1234" not in said
    assert not (tmp_path / "memory.sqlite3").exists(), "no database opened"


@pytest.mark.parametrize("damage", ["corrupt", "not a folder"])
async def test_a_broken_database_turns_memory_off_and_conversations_go_on(
    backend: LocalBackend, tmp_path: Path, damage: str
) -> None:
    data_dir = tmp_path / "data"
    if damage == "corrupt":
        data_dir.mkdir()
        (data_dir / "memory.sqlite3").write_bytes(b"this is not a database " * 400)
    else:
        data_dir.write_text("a file where the data folder should be")
    async with serve(backend, data_dir) as daemon:
        done = await say(daemon, "ada", "1", "What do you have for sale?")
        assert done.status == pb.RESPONSE_STATUS_COMPLETED and done.transcript
        log = "".join(daemon.log)
        assert "memory is off" in log and str(data_dir) in log
        async with grpc.aio.insecure_channel(daemon.target) as channel:
            stub = pb_grpc.NpcServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListMemories(pb.ListMemoriesRequest())
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "without memory" in (refused.value.details() or "")


async def test_save_slot_operations_over_grpc(backend: LocalBackend, tmp_path: Path) -> None:
    async with serve(backend, tmp_path) as daemon:
        await say(daemon, "ada", "1", "I need a new sword for the wolf hunt.")
        async with grpc.aio.insecure_channel(daemon.target) as channel:
            stub = pb_grpc.NpcServiceStub(channel)
            listed = await stub.ListMemories(pb.ListMemoriesRequest(player_id="ada"))
            assert [(s.character_id, s.save_slot, s.conversations) for s in listed.slots] == [
                ("blacksmith", "1", 1)
            ]
            copied = await stub.CopySaveSlot(
                pb.CopySaveSlotRequest(player_id="ada", from_slot="1", to_slot="2")
            )
            assert copied.conversations == 1
            exported = await stub.ExportMemory(pb.ExportMemoryRequest(player_id="ada"))
            document = orjson.loads(exported.json)
            assert {c["key"]["slot"] for c in document["conversations"]} == {"1", "2"}
            deleted = await stub.DeleteSaveSlot(
                pb.DeleteSaveSlotRequest(player_id="ada", save_slot="1")
            )
            assert deleted.conversations == 1
            remembered = await say(daemon, "ada", "2", "Do you remember me?")
            assert "wolf hunt" in remembered.transcript, "save-as carried the memory"
            forgotten = await stub.ForgetPlayer(pb.ForgetPlayerRequest(player_id="ada"))
            assert forgotten.conversations >= 1
            assert not (await stub.ListMemories(pb.ListMemoriesRequest(player_id="ada"))).slots
            imported = await stub.ImportMemory(pb.ImportMemoryRequest(json=exported.json))
            assert imported.conversations == 2
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.ImportMemory(pb.ImportMemoryRequest(json='{"format": "other"}'))
            assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("player", "slot", "field"),
    [("ada\nbo", "1", "start.player.id"), ("ada", "s" * 65, "start.save_slot")],
)
async def test_a_bad_player_id_or_save_slot_is_refused_with_its_field(
    player: str, slot: str, field: str
) -> None:
    context, running = await start_daemon()
    try:
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
            start = pb.Start(character_id="blacksmith", player=pb.Player(id=player), save_slot=slot)
            game = Game(channel, start)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await game.until("ready")
            game.end()
    finally:
        await context.__aexit__(None, None, None)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "")


async def test_forgetting_from_the_shell_reaches_the_running_npc(
    backend: LocalBackend, tmp_path: Path
) -> None:
    async with serve(backend, tmp_path) as daemon:
        await say(daemon, "ada", "1", "My vault code is 1234.")
        forget = await asyncio.create_subprocess_exec(
            *NPCD, "memory", "forget", "--player", "ada", "--yes", "--data-dir", str(tmp_path)
        )
        assert await asyncio.wait_for(forget.wait(), START_TIMEOUT) == 0
        again = await say(daemon, "ada", "1", "Do you remember me?")
        assert "met" in again.transcript
        [session] = [d for s in backend.live if (d := s.describe())["persona"] == "blacksmith"]
        assert "1234" not in " ".join(i["text"] for i in session["items"])
