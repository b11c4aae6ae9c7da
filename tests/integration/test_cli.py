"""The `npcd` command as a user runs it: real processes, real exit codes, real signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc
from tests.conftest import SAMPLES, PersonaWriter

NPCD = [sys.executable, "-m", "npcd"]
START_TIMEOUT = 20.0


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NPCD, *args], capture_output=True, text=True, timeout=60, check=False)


def test_validate_samples_ok() -> None:
    result = run("validate", str(SAMPLES), str(SAMPLES / "_world.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == (
        "ok: 4 characters (blacksmith, gate_guard, herbalist, innkeeper)"
    )


def test_validate_lists_every_problem_with_file_line_and_field(
    write_persona: PersonaWriter,
) -> None:
    write_persona("good.yaml", "id: good\nname: Good\nvoice: ash\nbackstory: fine\n")
    typo = write_persona("typo.yaml", "id: typo\nname: T\nvoice: ash\nbackstory: b\ncolour: red\n")
    broken = write_persona("broken.yaml", "id: broken\nname: B\nvoice: robot\ngreeting: yes\n")
    result = run("validate", str(typo.parent))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"{typo}:5:1: colour: unknown key 'colour'" in lines
    assert any(line.startswith(f"{broken}:3:1: voice: 'robot' is not allowed") for line in lines)
    assert any(line.startswith(f"{broken}:4:1: greeting: expected text") for line in lines)
    # Cross-field rules (instructions or backstory) are checked once the fields themselves are.
    assert lines[-1] == "3 problems in 2 files"


def test_validate_missing_path() -> None:
    result = run("validate", "/nonexistent/npcd")
    assert result.returncode == 1
    assert "/nonexistent/npcd: no such file or folder" in result.stdout


def test_characters_table() -> None:
    result = run("characters", "--characters", str(SAMPLES))
    assert result.returncode == 0
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "VOICE", "ACTIONS"]
    assert rows[0].split()[0] == "blacksmith" and rows[0].endswith("sell_item, repair_item")


def test_schema_command_prints_the_published_schema() -> None:
    result = run("schema")
    assert result.returncode == 0
    assert result.stdout.strip() == (SAMPLES / "persona.schema.json").read_text().strip()


@asynccontextmanager
async def daemon(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, str]]:
    """Start `npcd serve`, wait for its listening line, yield (process, target, that line)."""
    process = await asyncio.create_subprocess_exec(
        *NPCD,
        "serve",
        "--characters",
        str(SAMPLES),
        *args,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, "npcd exited before listening"
                found = re.search(r"npcd \S+ listening on (\S+): ", line)
                if found:
                    yield process, found.group(1).removeprefix("unix://"), line
                    return
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("loop", ["auto", "asyncio"])  # asyncio: as on Windows, without uvloop
async def test_serve_answers_and_stops_cleanly_on_sigterm(loop: str) -> None:
    async with daemon("--listen", "127.0.0.1:0", "--loop", loop) as (process, target, line):
        assert line.rstrip().endswith("uvloop loop" if loop == "auto" else "asyncio loop")
        async with grpc.aio.insecure_channel(target) as channel:
            reply = await pb_grpc.NpcServiceStub(channel).ListCharacters(pb.ListCharactersRequest())
        assert len(reply.characters) == 4
        assert process.stderr is not None
        ready_line = (await asyncio.wait_for(process.stderr.readline(), START_TIMEOUT)).decode()
        assert re.search(r"4 of 4 NPC sessions ready in \d+\.\d\d s", ready_line)
        process.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(process.stderr.read(), START_TIMEOUT)).decode()
        assert await process.wait() == 0
        assert "shutting down" in rest and rest.rstrip().endswith("stopped")


async def test_serve_on_a_unix_socket_and_sigint(tmp_path: Path) -> None:
    sock = Path("/tmp") / f"npcd-cli-{tmp_path.name[-12:]}.sock"
    async with daemon("--listen", f"unix://{sock}") as (process, target, _):
        assert target == str(sock)
        async with grpc.aio.insecure_channel(f"unix:{target}") as channel:
            reply = await pb_grpc.NpcServiceStub(channel).GetCharacter(
                pb.GetCharacterRequest(character_id="innkeeper")
            )
        assert reply.display_name == "Oswin Barrow"
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), START_TIMEOUT) == 0
    assert not sock.exists()


def test_serve_refuses_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--characters", str(SAMPLES), "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in result.stderr


def test_serve_refuses_invalid_characters(write_persona: PersonaWriter) -> None:
    bad = write_persona("bad.yaml", "id: bad\nname: Bad\nvoice: ash\nbackstory: b\nfoo: 1\n")
    result = run("serve", "--characters", str(bad.parent), "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert "invalid persona files" in result.stderr
    assert f"{bad}:5:1: foo: unknown key 'foo'" in result.stderr


def test_serve_refuses_a_missing_folder() -> None:
    result = run("serve", "--characters", "/nonexistent/chars", "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert "characters directory not found" in result.stderr


def test_serve_refuses_public_address_without_flag() -> None:
    result = run("serve", "--characters", str(SAMPLES), "--listen", "0.0.0.0:0")
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr


def test_env_configures_serve() -> None:
    env_result = subprocess.run(
        [*NPCD, "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"NPCD_LISTEN": "0.0.0.0:0", "NPCD_CHARACTERS": str(SAMPLES), "PATH": "/usr/bin"},
    )
    assert env_result.returncode == 2
    assert "refusing to listen on 0.0.0.0:0" in env_result.stderr


async def test_backend_command_serves_the_official_sdk(unused_tcp_port: int) -> None:
    from openai import AsyncOpenAI

    process = await asyncio.create_subprocess_exec(
        *NPCD,
        "backend",
        "--listen",
        f"127.0.0.1:{unused_tcp_port}",
        "--characters",
        str(SAMPLES),
        "--api-key-env",
        "NPCD_TEST_BACKEND_KEY",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NPCD_TEST_BACKEND_KEY": "sk-backend-test-0123"},
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            line = ""
            while "local Realtime backend on" not in line:
                line = (await process.stderr.readline()).decode()
                assert line, "npcd backend exited early"
        assert "API key required" in line
        client = AsyncOpenAI(
            api_key="sk-backend-test-0123", base_url=f"http://127.0.0.1:{unused_tcp_port}/v1"
        )
        async with client.realtime.connect(model="npcd-local:gate_guard") as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "let me through"}],
                }
            )
            await conn.response.create()
            async for event in conn:
                if event.type == "response.output_audio_transcript.done":
                    assert "Writ from the Captain" in event.transcript
                if event.type == "response.done":
                    break
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), START_TIMEOUT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
