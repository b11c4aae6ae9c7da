"""A lip-sync sample a person can look at: one NPC line as WAV, its visemes as JSON and CSV, and
a PNG of the viseme weights over the waveform.

Run: python bench/lipsync_sample.py [--character blacksmith] [--say "What do you sell?"]
[--source phonemes|audio] [--out bench/results/lipsync]. A real npcd (in this process) answers
over gRPC as a game would see it, with capabilities `visemes` and `emotions`:

- ``phonemes`` (default): npcd on the embedded local backend, which sends eSpeak's own
  phoneme timing: the exact track. The PNG adds, for comparison, the track npcd derives from
  the same audio alone (what an OpenAI or Azure backend gets).
- ``audio``: npcd on a local backend it treats like any other server (no phoneme timing), so
  the frames come from the audio analysis, end to end.

matplotlib is a dev dependency only; npcd itself never imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import wave
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npcd.config import Settings, parse_listen  # noqa: E402
from npcd.lipsync.stream import acoustic_visemes  # noqa: E402
from npcd.lipsync.visemes import OVR_VISEMES  # noqa: E402
from npcd.localbackend.defaults import default_engines  # noqa: E402
from npcd.localbackend.server import BackendOptions, LocalBackend  # noqa: E402
from npcd.personas import load_directory  # noqa: E402
from npcd.server.app import RunningServer, serving, wait_for_npcs  # noqa: E402
from npcd.v1 import npcd_pb2 as pb  # noqa: E402
from npcd.v1 import npcd_pb2_grpc as pb_grpc  # noqa: E402

CHARACTERS = ROOT / "characters"
KEY = "sk-local-sample-0123456789"
LIMIT_S = 60.0
N = len(OVR_VISEMES)


@asynccontextmanager
async def daemon(source: str) -> AsyncIterator[RunningServer]:
    catalog = load_directory(CHARACTERS)
    engines = default_engines()
    if engines.warm is not None:
        await asyncio.to_thread(engines.warm, [p.persona for p in catalog.personas.values()])
    listen = parse_listen("127.0.0.1:0")
    if source == "phonemes":
        settings = Settings(listen=listen, characters=CHARACTERS, reload_interval_s=0)
        async with serving(settings, catalog, with_backend=True) as running:
            await wait_for_npcs(running)
            yield running
        return
    backend = LocalBackend(
        engines,
        {pid: loaded.persona for pid, loaded in catalog.personas.items()},
        BackendOptions(api_keys=(KEY,)),
    )
    await backend.start()
    os.environ["NPCD_API_KEY"] = KEY
    settings = Settings(
        listen=listen,
        characters=CHARACTERS,
        backend="ws" + backend.base_url.removeprefix("http"),
        reload_interval_s=0,
    )
    try:
        async with serving(settings, catalog, with_backend=True) as running:
            await wait_for_npcs(running)
            yield running
    finally:
        await backend.close()


async def converse(running: RunningServer, character: str, line: str) -> dict[str, Any]:
    """Say ``line`` to ``character``; everything the game got for the NPC's answer."""
    start = pb.Start(
        character_id=character,
        capabilities=pb.Capabilities(visemes=True, emotions=True, transcripts=True),
    )
    requests: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
    requests.put_nowait(pb.ConverseRequest(start=start))
    requests.put_nowait(pb.ConverseRequest(text=pb.TextMessage(text=line)))

    async def feed() -> AsyncIterator[pb.ConverseRequest]:
        while (request := await requests.get()) is not None:
            yield request

    result: dict[str, Any] = {"audio": bytearray(), "frames": [], "emotions": []}
    async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
        call = pb_grpc.NpcServiceStub(channel).Converse(feed())
        async with asyncio.timeout(LIMIT_S):
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    raise RuntimeError("the stream ended before the answer")
                kind = message.WhichOneof("kind")
                if kind == "ready":
                    result["fps"] = message.ready.viseme_fps
                    result["names"] = list(message.ready.viseme_names)
                elif kind == "audio":
                    result["audio"] += message.audio.data
                elif kind == "viseme":
                    run = message.viseme
                    for i in range(len(run.weights) // N):
                        ms = run.start_ms + i * 1000 / result["fps"]
                        weights = [round(w, 4) for w in run.weights[i * N : (i + 1) * N]]
                        result["frames"].append({"ms": round(ms, 2), "weights": weights})
                elif kind == "emotion":
                    e = message.emotion
                    result["emotions"].append(
                        {"ms": e.start_ms, "emotion": e.emotion, "intensity": round(e.intensity, 3)}
                    )
                elif kind == "response_done":
                    result["transcript"] = message.response_done.transcript
                    result["audio_ms"] = message.response_done.audio_ms
                    break
        requests.put_nowait(None)
    return result


def audio_only_frames(pcm: bytes, fps: int) -> list[dict[str, Any]]:
    """What npcd derives from this audio alone (an OpenAI/Azure backend's case)."""
    source = acoustic_visemes(fps)
    frames = [*source.feed(pcm), *source.finish()]
    return [{"ms": f.start_ms, "weights": list(f.weights)} for f in frames]


def write(out: Path, result: dict[str, Any], source: str, compare: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pcm = bytes(result["audio"])
    with wave.open(str(out / "npc.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(24000)
        wav.writeframes(pcm)
    track = {
        "source": source,
        "fps": result["fps"],
        "names": result["names"],
        "transcript": result["transcript"],
        "audio_ms": result["audio_ms"],
        "frames": result["frames"],
        "emotions": result["emotions"],
    }
    (out / "visemes.json").write_text(json.dumps(track, indent=1, ensure_ascii=False) + "\n")
    with (out / "visemes.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ms", *result["names"]])
        for frame in result["frames"]:
            writer.writerow([frame["ms"], *frame["weights"]])
    plot(out / "visemes.png", pcm, result, source, compare)


def plot(
    path: Path,
    pcm: bytes,
    result: dict[str, Any],
    source: str,
    compare: list[dict[str, Any]],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    seconds = np.arange(samples.size) / 24000
    tracks = [(f"npcd ({source})", result["frames"])]
    if compare:
        tracks.append(("from the audio alone", compare))
    fig, axes = plt.subplots(
        1 + len(tracks),
        1,
        figsize=(14, 3 + 3 * len(tracks)),
        sharex=True,
        gridspec_kw={"height_ratios": [1] + [2] * len(tracks)},
    )
    axes[0].plot(seconds, samples, linewidth=0.4, color="#333")
    axes[0].set_ylabel("NPC audio")
    title = result["transcript"][:110]
    if result["emotions"]:
        title += "  |  " + ", ".join(
            f"{e['emotion']} {e['intensity']:.2f} @{e['ms']} ms" for e in result["emotions"]
        )
    axes[0].set_title(title, fontsize=9)
    for axis, (label, frames) in zip(axes[1:], tracks, strict=True):
        times = np.array([f["ms"] for f in frames]) / 1000
        weights = np.array([f["weights"] for f in frames]).T
        step = 1 / result["fps"]
        axis.imshow(
            weights,
            aspect="auto",
            origin="lower",
            interpolation="nearest",
            cmap="magma",
            extent=(times[0], times[-1] + step, -0.5, N - 0.5),
            vmin=0,
            vmax=1,
        )
        axis.set_yticks(range(N), OVR_VISEMES)
        axis.set_ylabel(label)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--character", default="blacksmith")
    parser.add_argument("--say", default="What do you have for sale?")
    parser.add_argument("--source", choices=("phonemes", "audio"), default="phonemes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lipsync")
    args = parser.parse_args(argv)

    async def run() -> dict[str, Any]:
        async with daemon(args.source) as running:
            return await converse(running, args.character, args.say)

    result = asyncio.run(run())
    compare = (
        audio_only_frames(bytes(result["audio"]), result["fps"])
        if args.source == "phonemes"
        else []
    )
    write(args.out, result, args.source, compare)
    files = ", ".join(str(args.out / n) for n in ("npc.wav", "visemes.json", "visemes.csv"))
    print(
        f"{args.character}: {result['transcript']!r}\n"
        f"{result['audio_ms']} ms of audio, {len(result['frames'])} frames at {result['fps']} fps, "
        f"emotions {result['emotions']}\n"
        f"wrote {files} and visemes.png"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
