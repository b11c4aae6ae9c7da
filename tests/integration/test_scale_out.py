"""Scale-out: `npcd serve --workers 2` behind a real nginx (Debian's), every NPC reachable and
always served by the same worker; the NPC id in metadata must match the stream's; a drain
finishes the conversations in progress and refuses new ones."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from npcd.server.app import RunningServer, drain
from npcd.server.service import SERVICE_NAME
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc
from tests.conftest import SAMPLES
from tests.integration.test_converse import TIMEOUT, Game, daemon, start, warm_engines

__all__ = ["daemon", "warm_engines"]

START_TIMEOUT = 120.0
CLONES = 16  # with the 4 samples, 20 NPCs: all on one of 2 workers would be 1 in 2**19


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def many_characters(tmp_path: Path) -> Path:
    folder = tmp_path / "characters"
    folder.mkdir()
    for path in SAMPLES.glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    text = (SAMPLES / "blacksmith.yaml").read_text()
    for n in range(CLONES):
        clone = re.sub(r"(?m)^id: blacksmith\b", f"id: smith_{n}", text)
        (folder / f"smith_{n}.yaml").write_text(clone)
    return folder


class Supervisor:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log: list[str] = []
        self._line = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := (await self.process.stderr.readline()).decode():
            self.log.append(line)
            self._line.set()
            self._line = asyncio.Event()

    def count(self, *texts: str) -> int:
        return sum(all(text in line for text in texts) for line in self.log)

    async def wait_for(self, *texts: str, times: int = 1, within: float = TIMEOUT) -> None:
        """Until ``times`` log lines hold every one of ``texts``."""
        try:
            async with asyncio.timeout(within):
                while self.count(*texts) < times:
                    await self._line.wait()
        except TimeoutError:
            raise AssertionError(
                f"no {texts!r} in npcd's log: {''.join(self.log)[-3000:]}"
            ) from None


def nginx_installed() -> None:
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        raise AssertionError("nginx is not installed: `make` installs it (nginx-light)")


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[tuple[Supervisor, str]]:
    nginx_installed()
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "npcd",
        "serve",
        "--workers",
        "2",
        "--listen",
        f"127.0.0.1:{port}",
        "--characters",
        str(many_characters(tmp_path)),
        "--data-dir",
        str(tmp_path / "data"),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NPCD_LOG_LEVEL": "INFO"},
    )
    supervisor = Supervisor(process)
    try:
        await supervisor.wait_for("workers behind nginx", within=START_TIMEOUT)
        yield supervisor, f"127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
                raise AssertionError("the supervisor did not stop on SIGTERM") from None
    folders = [line for line in supervisor.log if "listening on unix://" in line]
    assert process.returncode == 0, "".join(supervisor.log)[-2000:]
    for line in folders:  # the workers' private folder is gone with them
        found = re.search(r"unix://(\S+)/w\d\.sock", line)
        assert found is not None and not await asyncio.to_thread(os.path.exists, found[1])


async def converse(channel: grpc.aio.Channel, npc: str, line: str = "hello") -> tuple[str, str]:
    """One conversation through the proxy: (the worker that served it, the NPC's answer)."""
    requests: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
    requests.put_nowait(pb.ConverseRequest(start=start(npc)))

    async def feed() -> AsyncIterator[pb.ConverseRequest]:
        while (request := await requests.get()) is not None:
            yield request

    call = pb_grpc.NpcServiceStub(channel).Converse(feed(), metadata=(("x-npc-id", npc),))
    async with asyncio.timeout(TIMEOUT):
        metadata = dict(await call.initial_metadata())
        while (message := await call.read()).WhichOneof("kind") != "ready":
            pass
        requests.put_nowait(pb.ConverseRequest(text=pb.TextMessage(text=line)))
        while (message := await call.read()).WhichOneof("kind") != "response_done":
            assert message is not grpc.aio.EOF
        requests.put_nowait(None)
        while await call.read() is not grpc.aio.EOF:
            pass
    return str(metadata["x-npcd-worker"]), message.response_done.transcript


@pytest.mark.timeout(300)  # two daemons load their speech models
async def test_behind_nginx_every_npc_answers_and_always_from_the_same_worker(
    workers: tuple[Supervisor, str],
) -> None:
    supervisor, target = workers
    npcs = ["blacksmith", "gate_guard", "herbalist", "innkeeper"]
    npcs += [f"smith_{n}" for n in range(CLONES)]
    served: dict[str, set[str]] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        for round_ in range(2):
            answers = await asyncio.gather(*(converse(channel, npc) for npc in npcs))
            for npc, (worker, transcript) in zip(npcs, answers, strict=True):
                assert transcript, f"{npc} answered nothing in round {round_}"
                served.setdefault(npc, set()).add(worker)
    assert all(len(workers_) == 1 for workers_ in served.values()), served
    assert {w for ws in served.values() for w in ws} == {"w0", "w1"}, "both workers get NPCs"


async def test_behind_the_proxy_a_stream_must_name_its_npc(
    workers: tuple[Supervisor, str],
) -> None:
    _, target = workers
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.NpcServiceStub(channel).Converse(
            iter([pb.ConverseRequest(start=start("blacksmith"))])
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-npc-id" in (caught.value.details() or "")


async def test_metadata_naming_another_npc_is_refused(daemon: RunningServer) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        requests = [pb.ConverseRequest(start=start("blacksmith"))]
        call = pb_grpc.NpcServiceStub(channel).Converse(
            iter(requests), metadata=(("x-npc-id", "herbalist"),)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "x-npc-id" in (caught.value.details() or "")


async def test_a_drain_lets_the_conversation_finish_and_refuses_new_ones(
    daemon: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("blacksmith"))
        await game.until("ready")
        # Waits for the blacksmith since before the drain: it must not slip in after it.
        waiter = Game(channel, start("blacksmith", busy_policy=pb.BUSY_POLICY_WAIT))
        waiting = asyncio.create_task(waiter.until("ready"))
        assert daemon.pool is not None
        async with asyncio.timeout(TIMEOUT):
            while daemon.pool.waiting == 0:
                await daemon.pool.changed()
        draining = asyncio.create_task(drain(daemon))
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        )
        async with asyncio.timeout(TIMEOUT):  # as a load balancer watches it
            async for status in watch:
                if status.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
        watch.cancel()
        newcomer = Game(channel, start("herbalist"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await newcomer.until("ready")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "draining" in (caught.value.details() or "")

        game.send(text=pb.TextMessage(text="what do you sell?"))
        done = await game.until("response_done")
        assert done.status == pb.RESPONSE_STATUS_COMPLETED, "the conversation in progress goes on"
        assert not draining.done(), "a drain waits for the conversation to end"
        game.end()
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await waiting
        assert late.value.code() == grpc.StatusCode.UNAVAILABLE
        await asyncio.wait_for(draining, TIMEOUT)
        assert daemon.pool.active == 0


def worker_pid(supervisor: Supervisor, name: str) -> int:
    """The pid of the supervisor's child running worker ``name``."""
    pid = supervisor.process.pid
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            for child in children.read().split():
                with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                    argv = cmdline.read().split(b"\0")
                if (
                    b"--worker-name" in argv
                    and argv[argv.index(b"--worker-name") + 1] == name.encode()
                ):
                    return int(child)
    raise AssertionError(f"no worker {name} under the supervisor")


@pytest.mark.timeout(300)
async def test_a_worker_that_dies_is_restarted_and_its_npcs_answer_again(
    workers: tuple[Supervisor, str],
) -> None:
    supervisor, target = workers
    async with grpc.aio.insecure_channel(target) as channel:
        worker, _ = await converse(channel, "blacksmith")
        started = supervisor.count(f"[{worker}]", " listening on ")
        os.kill(worker_pid(supervisor, worker), signal.SIGKILL)
        await supervisor.wait_for(f"worker {worker} exited")
        await supervisor.wait_for(
            f"[{worker}]", " listening on ", times=started + 1, within=START_TIMEOUT
        )
        again, transcript = await converse(channel, "blacksmith")
    assert again == worker and transcript, "the NPC is back on its own worker"
