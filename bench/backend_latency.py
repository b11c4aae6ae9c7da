"""Local backend latency: end of player speech -> first NPC audio byte, and real-time factor.

Run: python bench/backend_latency.py [--runs N]. Streams a LibriVox clip to the embedded backend
in real time (20 ms chunks, paced), so "end of speech" is the wall-clock moment the last speech
sample was sent; the turn-taking wait (server VAD silence_duration_ms) is part of what is
measured, as a player would feel it. Also times text turns (response.create -> first audio
delta) and the response's real-time factor (generation time / audio duration). Medians and p99
over the runs; results also go to bench/results/backend_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import wave
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npcd import audio  # noqa: E402
from npcd.localbackend.defaults import default_engines  # noqa: E402
from npcd.localbackend.server import BackendOptions, LocalBackend  # noqa: E402
from npcd.personas import load_directory  # noqa: E402

CLIP = ROOT / "tests/fixtures/speech/sense_and_sensibility_01_austen_64kb-0880.wav"
SILENCE_MS = 500


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def clip_pcm24k() -> bytes:
    with wave.open(str(CLIP)) as clip:
        raw = clip.readframes(clip.getnframes())
    converter = audio.InputConverter(audio.AudioFormat(audio.Encoding.PCM16, 16000))
    return converter.convert(raw) + converter.flush()


def _connect(url: str) -> connect:
    """A raw client connection to the backend, as a game-side library would open it."""
    return connect(
        url,
        additional_headers={"Authorization": "Bearer sk-bench"},
        compression=None,
        max_size=None,
    )


async def audio_turn(url: str, speech: bytes) -> dict[str, float]:
    async with _connect(url) as ws:
        await ws.recv()
        await ws.send(
            orjson.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "realtime",
                        "audio": {
                            "input": {
                                "turn_detection": {
                                    "type": "server_vad",
                                    "silence_duration_ms": SILENCE_MS,
                                }
                            }
                        },
                    },
                }
            ).decode()
        )
        chunks = [bytes(960)] * 25 + [speech[i : i + 960] for i in range(0, len(speech), 960)]
        tail = [bytes(960)] * 100
        end_of_speech = 0.0
        first_audio = 0.0
        done = asyncio.Event()
        stopped_at = 0.0
        created = 0.0
        finished = 0.0
        audio_bytes = 0

        async def reader() -> None:
            nonlocal first_audio, stopped_at, created, finished, audio_bytes
            async for frame in ws:
                event = orjson.loads(frame)
                kind = event["type"]
                now = time.perf_counter()
                if kind == "input_audio_buffer.speech_stopped":
                    stopped_at = now
                elif kind == "response.created":
                    created = now
                elif kind == "response.output_audio.delta":
                    first_audio = first_audio or now
                    audio_bytes += len(event["delta"]) * 3 // 4
                elif kind == "response.done":
                    finished = now
                    done.set()
                    return

        task = asyncio.create_task(reader())
        start = time.perf_counter()
        for index, chunk in enumerate(chunks + tail):
            target = start + index * 0.020
            await asyncio.sleep(max(0.0, target - time.perf_counter()))
            await ws.send(
                orjson.dumps(
                    {"type": "input_audio_buffer.append", "audio": audio.b64encode(chunk)}
                ).decode()
            )
            if index == len(chunks) - 1:
                end_of_speech = time.perf_counter()
            if done.is_set():
                break
        await asyncio.wait_for(done.wait(), 30)
        await task
    return {
        "speech_end_to_first_audio_ms": (first_audio - end_of_speech) * 1000,
        "vad_stop_to_first_audio_ms": (first_audio - stopped_at) * 1000,
        "rtf": (finished - created) / max(1e-9, audio_bytes / 48000),
    }


async def text_turn(url: str) -> dict[str, float]:
    async with _connect(url) as ws:
        await ws.recv()
        await ws.send(
            orjson.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "what do you sell?"}],
                    },
                }
            ).decode()
        )
        sent = time.perf_counter()
        await ws.send('{"type": "response.create"}')
        first = 0.0
        async for frame in ws:
            event = orjson.loads(frame)
            if event["type"] == "response.output_audio.delta" and not first:
                first = time.perf_counter()
            if event["type"] == "response.done":
                break
    return {"text_to_first_audio_ms": (first - sent) * 1000}


async def main(runs: int) -> dict[str, dict[str, float]]:
    personas = {k: v.persona for k, v in load_directory(ROOT / "characters").personas.items()}
    engines = default_engines()
    if engines.warm is not None:
        engines.warm(personas.values())
    backend = LocalBackend(engines, personas, BackendOptions())
    await backend.start()
    url = backend.base_url.replace("http", "ws") + "/realtime?model=npcd-local:blacksmith"
    speech = clip_pcm24k()
    samples: dict[str, list[float]] = {}
    try:
        for _ in range(runs):
            for result in (await audio_turn(url, speech), await text_turn(url)):
                for key, value in result.items():
                    samples.setdefault(key, []).append(value)
    finally:
        await backend.close()
    return {
        key: {"p50": statistics.median(v), "p99": pct(v, 0.99), "max": max(v), "runs": len(v)}
        for key, v in samples.items()
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    table = asyncio.run(main(args.runs))
    print(f"local backend, {args.runs} runs, server VAD silence_duration_ms={SILENCE_MS}")
    print(f"{'measure':34} {'p50':>9} {'p99':>9} {'max':>9}")
    for key, row in table.items():
        unit = "" if key == "rtf" else " ms"
        print(f"{key:34} {row['p50']:9.3f} {row['p99']:9.3f} {row['max']:9.3f}{unit}")
    out = ROOT / "bench/results/backend_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(table, indent=2))
