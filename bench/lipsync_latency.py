"""Does lip-sync delay the NPC's first audio? Time to the first `NpcAudio`, with and without
visemes, side by side in the same run.

Run: python bench/lipsync_latency.py [--turns 30]. A real npcd in this process, on the local
backend, and a gRPC client: each turn sends a `TextMessage` and times until the first `NpcAudio`
of the answer arrives, and reads npcd's own share (`ResponseDone.latency.npcd_us`: from the
backend's first output to npcd sending it). Three conversations take turns, interleaved so
they see the same machine: no visemes; visemes from the backend's phonemes (the local
backend's case); and, on a second npcd that treats the same backend as any Realtime server,
visemes from the audio analysis (OpenAI's and Azure's case) next to no visemes there. Medians
and p99 per path; results also go to bench/results/lipsync_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lipsync_sample import daemon  # noqa: E402
from npcd.bench.stats import describe  # noqa: E402
from npcd.server.app import RunningServer  # noqa: E402
from npcd.v1 import npcd_pb2 as pb  # noqa: E402
from npcd.v1 import npcd_pb2_grpc as pb_grpc  # noqa: E402

LIMIT_S = 60.0
LINES = ("What do you have for sale?", "Can you fix my sword?", "Tell me about the mines.")


class Client:
    """One conversation with the blacksmith."""

    def __init__(self, channel: grpc.aio.Channel, visemes: bool) -> None:
        self.requests: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
        caps = pb.Capabilities(visemes=visemes, latency_reports=True)
        start = pb.Start(character_id="blacksmith", capabilities=caps)
        self.requests.put_nowait(pb.ConverseRequest(start=start))
        self.call = pb_grpc.NpcServiceStub(channel).Converse(self._feed())

    async def _feed(self) -> AsyncIterator[pb.ConverseRequest]:
        while (request := await self.requests.get()) is not None:
            yield request

    async def until(self, kind: str) -> pb.ConverseResponse:
        async with asyncio.timeout(LIMIT_S):
            while True:
                message = await self.call.read()
                if message is grpc.aio.EOF:
                    raise RuntimeError(f"stream ended before {kind}")
                if message.WhichOneof("kind") == kind:
                    return message

    async def turn(self, line: str) -> tuple[float, float]:
        """(ms to the first NpcAudio, npcd's own share in ms)."""
        began = time.perf_counter()
        self.requests.put_nowait(pb.ConverseRequest(text=pb.TextMessage(text=line)))
        await self.until("audio")
        first = (time.perf_counter() - began) * 1000
        done = (await self.until("response_done")).response_done
        return first, done.latency.npcd_us / 1000

    def end(self) -> None:
        self.requests.put_nowait(None)


async def measure(
    running: RunningServer, paths: dict[str, bool], turns: int, into: dict[str, dict[str, list]]
) -> None:
    async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
        for name, visemes in paths.items():
            client = Client(channel, visemes)
            await client.until("ready")
            for n in range(2):  # warm-up turns, left out
                await client.turn(LINES[n])
            bucket = into.setdefault(name, {"first_audio_ms": [], "npcd_ms": []})
            for n in range(turns):
                first, own = await client.turn(LINES[n % len(LINES)])
                bucket["first_audio_ms"].append(first)
                bucket["npcd_ms"].append(own)
            client.end()


async def run(turns: int, rounds: int = 3) -> dict[str, dict]:
    """Short rounds, repeated, so drift on the machine hits every path alike."""
    collected: dict[str, dict[str, list]] = {}
    for _ in range(rounds):
        for source, paths in (
            ("phonemes", {"local: no visemes": False, "local: visemes (phonemes)": True}),
            ("audio", {"compatible: no visemes": False, "compatible: visemes (audio)": True}),
        ):
            async with daemon(source) as running:
                await measure(running, paths, max(1, turns // rounds), collected)
    return {
        name: {key: describe(values) for key, values in bucket.items()}
        for name, bucket in collected.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=30)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.turns))
    print(
        f"{'path':32} {'first NpcAudio ms (median / p99)':>34} {'npcd own ms (median / p99)':>30}"
    )
    for name, stats in results.items():
        first, own = stats["first_audio_ms"], stats["npcd_ms"]
        print(
            f"{name:32} {first['p50']:>16.2f} / {first['p99']:<15.2f}"
            f" {own['p50']:>14.3f} / {own['p99']:<13.3f}"
        )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "lipsync_latency.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
