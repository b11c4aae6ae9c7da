"""The load generator: N game clients streaming real-time audio, in a process of its own.

Each stream sends a 20 ms frame every 20 ms on an absolute schedule (a random phase per stream,
so streams do not fire in lockstep) and times every frame's trip through `npcd.bench.frames`.
Paths: ``direct`` speaks the Realtime protocol straight to the backend over a WebSocket; ``grpc``
speaks npcd's Converse contract to npcd, its workers behind nginx, the bare relay or the Pipecat
peer, with the ``x-npc-id`` metadata a game sends, and counts which process served each stream.
Prints one JSON summary line. Run: python -m npcd.bench.load PATH TARGET STREAMS SECONDS [FRAME_MS]
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from npcd import audio
from npcd.bench import run_loop
from npcd.bench.frames import BYTES_PER_MS, FRAME_MS, Timing, make_frame, read_timing
from npcd.bench.stats import describe

Send = Callable[[bytes], Awaitable[None]]
#: How long a stream waits for its last frames after it stopped sending.
DRAIN_S = 3.0
#: gRPC streams per HTTP/2 connection: under nginx's default http2_max_concurrent_streams
#: (128), past which further streams would wait for a free one instead of starting.
STREAMS_PER_CONNECTION = 100
#: The routing metadata (`npcd.server.service`), kept literal: the generator stays light.
NPC_HEADER = "x-npc-id"
WORKER_HEADER = "x-npcd-worker"


class _Stream:
    def __init__(self, frames: int, frame_ms: int) -> None:
        self.frames = frames
        self.period = frame_ms / 1000
        self.size = frame_ms * BYTES_PER_MS
        self.timings: list[Timing] = []
        self.slips: list[float] = []
        self.all_back = asyncio.Event()

    def received(self, frame: bytes) -> None:
        self.timings.append(read_timing(frame))
        if len(self.timings) >= self.frames:
            self.all_back.set()

    async def pace(self, send: Send, gate: _StartGate) -> None:
        loop = asyncio.get_running_loop()
        start = await gate.arrive() + random.random() * self.period
        for sequence in range(self.frames):
            due = start + sequence * self.period
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # a late sender must still let the others run
            self.slips.append((loop.time() - due) * 1000)
            await send(make_frame(sequence, self.size))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_S):
                await self.all_back.wait()


class _StartGate:
    """Every stream connects first; then all start sending together (each at its own phase),
    so that no stream's first frames queue behind other streams' handshakes."""

    def __init__(self, streams: int) -> None:
        self._waiting = streams
        self._opened = asyncio.Event()
        self.start = 0.0

    async def arrive(self) -> float:
        self._waiting -= 1
        if self._waiting == 0:
            self.start = asyncio.get_running_loop().time() + 0.2
            self._opened.set()
        await self._opened.wait()
        return self.start


async def _direct(url: str, stream: _Stream, gate: _StartGate) -> None:
    from websockets.asyncio.client import connect

    head = b'{"type":"input_audio_buffer.append","audio":"'
    async with connect(url, compression=None, max_size=None) as ws:
        await ws.recv()  # session.created

        async def send(frame: bytes) -> None:
            await ws.send(head + audio.b64encode(frame).encode() + b'"}', text=True)

        async def receive() -> None:
            async for message in ws:
                event = orjson.loads(message)
                if event["type"] == "response.output_audio.delta":
                    stream.received(audio.b64decode(event["delta"]))

        reader = asyncio.create_task(receive())
        try:
            await stream.pace(send, gate)
        finally:
            reader.cancel()


async def _grpc(
    channel: Any, character: str, stream: _Stream, gate: _StartGate, served: Counter[str]
) -> None:
    import grpc

    from npcd.v1 import npcd_pb2 as pb
    from npcd.v1 import npcd_pb2_grpc as pb_grpc

    # As a game does (README, Scale-out): a proxy in front of workers routes by it.
    call = pb_grpc.NpcServiceStub(channel).Converse(metadata=((NPC_HEADER, character),))
    await call.write(pb.ConverseRequest(start=pb.Start(character_id=character)))
    first = await call.read()
    if first is grpc.aio.EOF or not first.HasField("ready"):
        raise RuntimeError(f"no Ready for {character}: {first}")
    worker = dict(await call.initial_metadata()).get(WORKER_HEADER)
    served[str(worker) if worker is not None else "-"] += 1

    async def send(frame: bytes) -> None:
        await call.write(pb.ConverseRequest(audio=pb.AudioChunk(data=frame)))

    async def receive() -> None:
        while (message := await call.read()) is not grpc.aio.EOF:
            if message.HasField("audio"):  # npcd may join queued chunks into one message
                data = message.audio.data
                for offset in range(0, len(data), stream.size):
                    stream.received(data[offset : offset + stream.size])

    reader = asyncio.create_task(receive())
    try:
        await stream.pace(send, gate)
        await call.write(pb.ConverseRequest(end=pb.End()))
        await call.done_writing()
    finally:
        reader.cancel()
        call.cancel()


async def generate(
    path: str, target: str, streams: int, seconds: float, frame_ms: int = FRAME_MS
) -> dict[str, Any]:
    frames = max(1, round(seconds * 1000 / frame_ms))
    runs = [_Stream(frames, frame_ms) for _ in range(streams)]
    per_second = round(1000 / frame_ms)
    gate = _StartGate(streams)
    served: Counter[str] = Counter()
    if path == "direct":
        await asyncio.gather(*(_direct(target, run, gate) for run in runs))
    else:
        import grpc

        async with contextlib.AsyncExitStack() as stack:
            # Own connections (not a subchannel shared between channels to one target).
            options = [("grpc.use_local_subchannel_pool", 1)]
            channels = [
                await stack.enter_async_context(grpc.aio.insecure_channel(target, options))
                for _ in range(-(-streams // STREAMS_PER_CONNECTION))
            ]
            await asyncio.gather(
                *(
                    _grpc(channels[n % len(channels)], f"npc_{n:03d}", run, gate, served)
                    for n, run in enumerate(runs)
                )
            )
    timings = [t for run in runs for t in run.timings]
    window = (
        gate.start + frame_ms / 1000,
        gate.start + frames * frame_ms / 1000,
    )  # the steady state: every stream sending
    sent = frames * streams
    first_s = [t.rtt_ms for run in runs for t in run.timings[:per_second]]
    last_s = [t.rtt_ms for run in runs for t in run.timings[-per_second:]]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "streams": streams,
        "sent": sent,
        "received": len(timings),
        "rtt": describe([t.rtt_ms for t in timings]),
        "up": describe([t.up_ms for t in timings]),
        "down": describe([t.down_ms for t in timings]),
        "first_second_p50": describe(first_s)["p50"],
        "last_second_p50": describe(last_s)["p50"],
        "send_slip_p99": describe([s for run in runs for s in run.slips])["p99"],
        "window": window,
        # Frames that came back during the steady state, per second: the CPU they cost is
        # the relay's cost per frame, whether or not it kept up with the load offered.
        "delivered_per_s": sum(1 for t in timings if window[0] <= t.received_ns / 1e9 <= window[1])
        / (window[1] - window[0]),
        "generator_rss_mib": usage.ru_maxrss / 1024,
        # Streams per serving process (its x-npcd-worker metadata): how a proxy spread them.
        "served_by": dict(sorted(served.items())),
    }


if __name__ == "__main__":
    path, target, count, seconds = sys.argv[1:5]
    frame_ms = int(sys.argv[5]) if len(sys.argv) > 5 else FRAME_MS
    result = run_loop(generate(path, target, int(count), float(seconds), frame_ms))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
