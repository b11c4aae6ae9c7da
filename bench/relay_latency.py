"""npcd's added latency per audio frame, against a direct WebSocket to the same backend.

Run: python bench/relay_latency.py [--levels 1,50,100,200] [--seconds 5]. Three processes: an
echo backend (bench/echo_backend.py), the npcd daemon (`npcd serve --backend ws://...`), and
the load generator (this script, re-invoked with --generate). Each conversation sends 20 ms
PCM16 24 kHz frames at real-time pace (50 per second) with a sequence number in the first
bytes; the backend echoes each as an audio delta, and npcd passes the bytes through unchanged,
so the generator times each frame's full round trip. The same traffic is sent straight to the
backend in the same run, as the line npcd is judged against. Reports p50/p99/max per path, the
npcd/direct ratios, frames that fell behind (p99 over 20 ms), and the daemon's CPU% and RSS.
Results also go to bench/results/relay_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
FRAME = 960  # 20 ms of PCM16 mono 24 kHz
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))] if ordered else 0.0


# -- the load generator (its own process) ------------------------------------------------


async def stream_frames(send, receive, seconds: float, rtts: list[float]) -> None:  # type: ignore[no-untyped-def]
    sent: dict[int, float] = {}

    async def reader() -> None:
        while True:
            data = await receive()
            if data is None:
                return
            seq = struct.unpack_from("<I", data)[0]
            start = sent.pop(seq, None)
            if start is not None:
                rtts.append((time.perf_counter() - start) * 1000)

    task = asyncio.create_task(reader())
    begin = time.perf_counter() + 0.02 * (id(rtts) % 50) / 50  # spread stream phases
    count = int(seconds * 50)
    for seq in range(count):
        await asyncio.sleep(max(0.0, begin + seq * 0.02 - time.perf_counter()))
        sent[seq] = time.perf_counter()
        await send(struct.pack("<I", seq) + bytes(FRAME - 4))
    await asyncio.sleep(0.5)
    task.cancel()


async def generate_direct(url: str, streams: int, seconds: float) -> list[float]:
    from websockets.asyncio.client import connect

    from npcd import audio

    rtts: list[float] = []

    async def one() -> None:
        async with connect(url, compression=None, max_size=None) as ws:
            await ws.recv()

            async def send(data: bytes) -> None:
                frame = (
                    b'{"type":"input_audio_buffer.append","audio":'
                    + orjson.dumps(audio.b64encode(data))
                    + b"}"
                )
                await ws.send(frame, text=True)

            async def receive() -> bytes | None:
                while True:
                    event = orjson.loads(await ws.recv())
                    if event["type"] == "response.output_audio.delta":
                        return audio.b64decode(event["delta"])

            await stream_frames(send, receive, seconds, rtts)

    await asyncio.gather(*(one() for _ in range(streams)))
    return rtts


async def generate_npcd(target: str, streams: int, seconds: float) -> list[float]:
    import grpc

    from npcd.v1 import npcd_pb2 as pb
    from npcd.v1 import npcd_pb2_grpc as pb_grpc

    rtts: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.NpcServiceStub(channel)

        async def one(n: int) -> None:
            outbox: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
            outbox.put_nowait(pb.ConverseRequest(start=pb.Start(character_id=f"npc_{n:03d}")))

            async def requests():  # type: ignore[no-untyped-def]
                while (request := await outbox.get()) is not None:
                    yield request

            call = stub.Converse(requests())
            first = await call.read()
            assert first.WhichOneof("kind") == "ready", first

            async def send(data: bytes) -> None:
                outbox.put_nowait(pb.ConverseRequest(audio=pb.AudioChunk(data=data)))

            async def receive() -> bytes | None:
                while True:
                    message = await call.read()
                    if message is grpc.aio.EOF:
                        return None
                    if message.WhichOneof("kind") == "audio":
                        return bytes(message.audio.data)

            await stream_frames(send, receive, seconds, rtts)
            outbox.put_nowait(None)

        await asyncio.gather(*(one(n) for n in range(streams)))
    return rtts


# -- the orchestrator ----------------------------------------------------------------------


def proc_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds so far, RSS bytes) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def run_generator(mode: str, target: str, streams: int, seconds: float) -> list[float]:
    out = subprocess.run(
        [
            PY,
            __file__,
            "--generate",
            mode,
            "--target",
            target,
            "--streams",
            str(streams),
            "--seconds",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds * 10 + 120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def summary(rtts: list[float]) -> dict[str, float]:
    return {
        "p50": statistics.median(rtts),
        "p99": pct(rtts, 0.99),
        "max": max(rtts),
        "frames": len(rtts),
        "late": sum(1 for r in rtts if r > 20) / max(1, len(rtts)),
    }


def orchestrate(levels: list[int], seconds: float) -> dict[str, object]:
    personas = tempfile.mkdtemp(prefix="npcd-bench-")
    for n in range(max(levels)):
        Path(personas, f"npc_{n:03d}.yaml").write_text(
            f"id: npc_{n:03d}\nname: Bench NPC {n}\nvoice: alloy\nbackstory: A bench NPC.\n"
            "turn_detection: {type: none}\n"
        )
    port = free_port()
    backend = subprocess.Popen(
        [PY, str(ROOT / "bench/echo_backend.py"), str(port)], stdout=subprocess.PIPE, text=True
    )
    assert backend.stdout is not None and backend.stdout.readline().strip() == "ready"
    daemon = subprocess.Popen(
        # NPCD_BENCH_DAEMON swaps the daemon command, e.g. for a profiling wrapper script.
        [
            PY,
            *(os.environ.get("NPCD_BENCH_DAEMON", "-m npcd").split()),
            "serve",
            "--characters",
            personas,
            "--listen",
            "127.0.0.1:0",
            "--backend",
            f"ws://127.0.0.1:{port}/v1",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert daemon.stderr is not None
    target = ""
    started = time.perf_counter()
    while True:
        line = daemon.stderr.readline()
        if not line:
            raise RuntimeError("npcd exited")
        found = re.search(r"npcd \S+ listening on (\S+): ", line)
        target = found.group(1) if found else target
        if "NPC sessions ready" in line:
            ready_s = time.perf_counter() - started
            break
    results: dict[str, object] = {"personas": max(levels), "startup_s": ready_s, "levels": {}}
    try:
        for streams in levels:
            direct = run_generator(
                "direct", f"ws://127.0.0.1:{port}/v1/realtime?model=echo", streams, seconds
            )
            cpu0, _ = proc_usage(daemon.pid)
            wall0 = time.perf_counter()
            through = run_generator("npcd", target, streams, seconds)
            cpu1, rss = proc_usage(daemon.pid)
            cpu_pct = (cpu1 - cpu0) / (time.perf_counter() - wall0) * 100
            row = {
                "direct": summary(direct),
                "npcd": summary(through),
                "npcd_cpu_percent": cpu_pct,
                "npcd_rss_mib": rss / 2**20,
            }
            results["levels"][str(streams)] = row  # type: ignore[index]
            d, n = row["direct"], row["npcd"]
            print(
                f"{streams:4d} streams  direct p50 {d['p50']:6.2f} p99 {d['p99']:7.2f} "
                f"max {d['max']:7.1f} | npcd p50 {n['p50']:6.2f} p99 {n['p99']:7.2f} "
                f"max {n['max']:7.1f} | added p50 {n['p50'] - d['p50']:+6.2f} "
                f"p99 {n['p99'] - d['p99']:+7.2f} ms | late {n['late']:.1%} | "
                f"npcd CPU {cpu_pct:5.1f}% RSS {rss / 2**20:6.1f} MiB",
                flush=True,
            )
    finally:
        daemon.terminate()
        backend.terminate()
        daemon.wait(30)
        backend.wait(30)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,50,100,200")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--generate", choices=["direct", "npcd"])
    parser.add_argument("--target", default="")
    parser.add_argument("--streams", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.generate:
        mode = generate_direct if args.generate == "direct" else generate_npcd
        print(json.dumps(asyncio.run(mode(args.target, args.streams, args.seconds))))
    else:
        levels = [int(x) for x in args.levels.split(",")]
        print(
            f"round trip per 20 ms frame (ms), {args.seconds:.0f} s per level, "
            "generator, daemon and backend in separate processes"
        )
        table = orchestrate(levels, args.seconds)
        out = ROOT / "bench/results/relay_latency.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(table, indent=2))
        print(
            f"{table['personas']} personas ready in {table['startup_s']:.2f} s "
            f"(to the ready log line, backend: echo)"
        )
