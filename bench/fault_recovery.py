"""Fault detection and recovery times, as a game sees them.

Run: python bench/fault_recovery.py [--runs N]. A real npcd with the four sample NPCs talks to
the local backend through the fault-injecting proxy of the test suite
(`tests/fakes/fault_proxy.py`); a gRPC client plays the game. Per run it measures:

- silent: the backend stops answering (blackhole) while a conversation is idle -> the game's
  `SessionStatus RECONNECTING` (the slot's watchdog: quiet for 2.5 s, then a ping with 2 s);
- refuse: a `Converse` while the backend is known to be down -> its UNAVAILABLE status;
- recover: the backend comes back -> every NPC session ready again (the pool's prober
  retries every 2 s at most);
- expiry: a 1001 "maximum duration" close right after the first audio of a response -> that
  response's `ResponseDone` (INCOMPLETE).

Medians and p99 over the runs (the direct path, for comparison, is none at all: without npcd
the game would have to notice and recover on its own). Results also go to
bench/results/fault_recovery.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npcd.bench.stats import describe  # noqa: E402
from npcd.config import Settings, parse_listen  # noqa: E402
from npcd.localbackend.defaults import default_engines  # noqa: E402
from npcd.localbackend.server import BackendOptions, LocalBackend  # noqa: E402
from npcd.personas import load_directory  # noqa: E402
from npcd.server.app import RunningServer, serving, wait_for_npcs  # noqa: E402
from npcd.v1 import npcd_pb2 as pb  # noqa: E402
from npcd.v1 import npcd_pb2_grpc as pb_grpc  # noqa: E402
from tests.fakes.fault_proxy import FaultProxy  # noqa: E402

CHARACTERS = ROOT / "characters"
KEY = "sk-local-bench-0123456789"
LIMIT_S = 60.0


@asynccontextmanager
async def rig() -> AsyncIterator[tuple[RunningServer, FaultProxy]]:
    catalog = load_directory(CHARACTERS)
    engines = default_engines()
    if engines.warm is not None:
        await asyncio.to_thread(engines.warm, [p.persona for p in catalog.personas.values()])
    backend = LocalBackend(
        engines,
        {pid: loaded.persona for pid, loaded in catalog.personas.items()},
        BackendOptions(api_keys=(KEY,)),
    )
    await backend.start()
    proxy = FaultProxy(backend.base_url, wait_timeout=LIMIT_S)
    await proxy.start()
    os.environ["NPCD_API_KEY"] = KEY
    settings = Settings(
        listen=parse_listen("127.0.0.1:0"),
        characters=CHARACTERS,
        backend=proxy.ws_url,
        reload_interval_s=0,
    )
    try:
        async with serving(settings, catalog, with_backend=True) as daemon:
            await wait_for_npcs(daemon)
            yield daemon, proxy
    finally:
        await proxy.close()
        await backend.close()


class Game:
    def __init__(self, channel: grpc.aio.Channel, start: pb.Start) -> None:
        self.outbox: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
        self.outbox.put_nowait(pb.ConverseRequest(start=start))
        self.call = pb_grpc.NpcServiceStub(channel).Converse(self._requests())

    async def _requests(self) -> AsyncIterator[pb.ConverseRequest]:
        while (message := await self.outbox.get()) is not None:
            yield message

    async def until(self, kind: str) -> pb.ConverseResponse:
        async with asyncio.timeout(LIMIT_S):
            while True:
                message = await self.call.read()
                if message is grpc.aio.EOF:
                    raise RuntimeError(f"stream ended before {kind}")
                if message.WhichOneof("kind") == kind:
                    return message

    def end(self) -> None:
        self.outbox.put_nowait(None)


async def one_run(daemon: RunningServer, proxy: FaultProxy) -> dict[str, float]:
    assert daemon.pool is not None
    slots = list(daemon.pool.slots.values())
    out: dict[str, float] = {}
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, pb.Start(character_id="herbalist"))
        await game.until("ready")
        proxy.blackhole(True)
        began = time.monotonic()
        await game.until("session_status")
        out["silent_s"] = time.monotonic() - began
        await proxy.go_down()
        proxy.blackhole(False)
        async with asyncio.timeout(LIMIT_S):
            await slots[0].wait_ready()
        began = time.monotonic()
        refused = Game(channel, pb.Start(character_id="blacksmith"))
        try:
            await refused.until("ready")
        except grpc.aio.AioRpcError:
            out["refuse_ms"] = (time.monotonic() - began) * 1000
        refused.end()  # lets grpc's request-reading task finish
        await proxy.come_up()
        began = time.monotonic()
        async with asyncio.timeout(LIMIT_S):
            for slot in slots:
                await slot.wait_connected()
        out["recover_s"] = time.monotonic() - began
        await game.until("session_status")  # RESUMED
        proxy.close_after("response.output_audio.delta", 1001, "maximum duration of 60 minutes.")
        seen = len(proxy.server_frames)
        game.outbox.put_nowait(pb.ConverseRequest(text=pb.TextMessage(text="any rumours?")))
        await proxy.wait_server_event("response.output_audio.delta", after=seen)
        began = time.monotonic()
        await game.until("response_done")
        out["expiry_ms"] = (time.monotonic() - began) * 1000
        await game.until("session_status")  # ROTATED
        game.end()
    return out


async def main(runs: int) -> dict[str, dict[str, float]]:
    results: dict[str, list[float]] = {}
    async with rig() as (daemon, proxy):
        for _ in range(runs):
            for key, value in (await one_run(daemon, proxy)).items():
                results.setdefault(key, []).append(value)
    summary = {key: describe(values) for key, values in results.items()}
    print(f"fault detection and recovery, {runs} runs (p50 / p99 / max):")
    for key, stats in summary.items():
        print(f"  {key:10} {stats['p50']:8.2f} {stats['p99']:8.2f} {stats['max']:8.2f}")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    summary = asyncio.run(main(args.runs))
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "fault_recovery.json").write_text(json.dumps(summary, indent=2))
