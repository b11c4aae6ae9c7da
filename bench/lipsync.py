"""Lip-sync from audio alone: accuracy against eSpeak's exact visemes, and CPU cost.

Run with ``python bench/lipsync.py`` (about two minutes). Scores, on the 24 held-out sentences
of `npcd.bench.lipsync` (never trained on):

* in the ten voices at a spread of speeds, and in six eSpeak variants training never heard;
* three tracks for audio without phonemes: acoustic (`AcousticVisemes`, streaming, what npcd
  uses), text-derived (the transcript phonemised by another voice, spread over the audio's
  speech regions; offline), and their per-frame blend;
* frame accuracy, grouped accuracy, onsets matched within 150 ms and their mean error, and
  changes of shape per second (against the exact track's);
* on real human speech (the LibriVox fixtures, no labels): how often the mouth is open where
  the audio is loud and shut in pauses.

Then the CPU per second of audio of `AcousticVisemes` (20 ms and 100 ms chunks), of npcd's
`VisemeStream` path (20 ms deltas) and of
`PhonemeTrack` (the local backend's exact track), per response over 240 responses, one thread,
as median and p99, and as a share of one core. Prints a table and writes the same to
bench/results/lipsync.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
import sys
import time
import wave
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import soxr

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "lipsync.json"
FIXTURES = REPO / "tests" / "fixtures" / "speech"
sys.path.insert(0, str(REPO))

from npcd.bench.lipsync import (  # noqa: E402
    EVAL_SENTENCES,
    EVAL_VOICES,
    UNSEEN_EVAL,
    Render,
    acoustic_frames,
    evaluate,
    loud_and_quiet,
    render,
    with_room_tone,
)
from npcd.bench.stats import median, percentile  # noqa: E402
from npcd.lipsync.acoustic import AcousticModel, AcousticVisemes  # noqa: E402
from npcd.lipsync.stream import VisemeStream, acoustic_visemes  # noqa: E402
from npcd.lipsync.timeline import PhonemeTrack  # noqa: E402
from npcd.lipsync.visemes import SIL  # noqa: E402

LOAD_REPEATS = 20
COST_PASSES = 3


def human_speech() -> bytes:
    """The three LibriVox clips at 24 kHz with their own room tone between them."""
    clips = []
    for path in sorted(FIXTURES.glob("*.wav")):
        with wave.open(str(path), "rb") as wav:
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32768
        clips.append(soxr.resample(samples, rate, 24000))
    return with_room_tone(clips)


def human_scores() -> dict[str, float]:
    pcm = human_speech()
    frames = acoustic_frames(pcm, chunk_ms=40)
    times = np.asarray([f.start_ms for f in frames])
    loud, quiet = loud_and_quiet(pcm, times.tolist())
    quiet &= times >= 300  # the gate's grace period: the noise floor is not known yet
    shapes = np.asarray([f.viseme for f in frames])
    return {
        "audio_s": len(pcm) / 48000,
        "open_when_loud": float(np.mean(shapes[loud] != SIL)),
        "shut_in_pauses": float(np.mean(shapes[quiet] == SIL)),
        "loud_frames": int(loud.sum()),
        "pause_frames": int(quiet.sum()),
    }


def acoustic_cost(pcm: bytes, chunk_ms: int) -> float:
    """CPU seconds per second of audio for one response fed in ``chunk_ms`` chunks."""
    step = chunk_ms * 48
    start = time.process_time()
    analyser = AcousticVisemes()
    for i in range(0, len(pcm), step):
        analyser.feed(pcm[i : i + step])
    analyser.finish()
    return (time.process_time() - start) / (len(pcm) / 48000)


def stream_cost(pcm: bytes, chunk_ms: int) -> float:
    """The same through `VisemeStream`, as npcd runs it for an audio-only backend: frames asked
    for after every delta (it batches the analysis to at least 40 ms)."""
    step = chunk_ms * 48
    start = time.process_time()
    stream = VisemeStream(acoustic=acoustic_visemes)
    for i in range(0, len(pcm), step):
        stream.audio("item", pcm[i : i + step])
        stream.frames()
    stream.frames(final=True)
    return (time.process_time() - start) / (len(pcm) / 48000)


def phoneme_cost(spoken: Render, chunk_ms: int) -> float:
    """The same for the exact track: phonemes added as their audio arrives, frames taken."""
    step = chunk_ms * 48
    pending = list(spoken.phonemes)
    start = time.process_time()
    track = PhonemeTrack()
    for i in range(0, len(spoken.pcm), step):
        audio_ms = min(len(spoken.pcm), i + step) / 48
        while pending and pending[0][0] < audio_ms:
            track.add(*pending.pop(0))
        track.frames(audio_ms)
    for at_ms, name in pending:
        track.add(at_ms, name)
    track.finish(spoken.duration_ms)
    return (time.process_time() - start) / (spoken.duration_ms / 1000)


def costs() -> dict[str, Any]:
    renders = [render(s, v, speed) for v, speed in EVAL_VOICES for s in EVAL_SENTENCES]
    acoustic_frames(renders[0].pcm)  # load the model, warm the caches
    runs: dict[str, list[float]] = {
        "acoustic_20ms": [],
        "acoustic_100ms": [],
        "stream_20ms": [],
        "phonemes": [],
    }
    for _ in range(COST_PASSES):
        for spoken in renders:
            runs["acoustic_20ms"].append(acoustic_cost(spoken.pcm, 20))
            runs["acoustic_100ms"].append(acoustic_cost(spoken.pcm, 100))
            runs["stream_20ms"].append(stream_cost(spoken.pcm, 20))
            runs["phonemes"].append(phoneme_cost(spoken, 20))
    loads = []
    for _ in range(LOAD_REPEATS):
        start = time.perf_counter()
        AcousticModel.load()
        loads.append(time.perf_counter() - start)
    out: dict[str, Any] = {
        name: {"p50": median(values), "p99": percentile(values, 0.99), "runs": len(values)}
        for name, values in runs.items()
    }
    out["model_load_ms"] = median(loads) * 1000
    return out


def main() -> None:
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name, voices in (("ten voices", EVAL_VOICES), ("unseen voices", UNSEEN_EVAL)):
        evaluation = evaluate(EVAL_SENTENCES, voices)
        results[name] = {
            "renders": evaluation.renders,
            "audio_s": evaluation.audio_s,
            **{m: asdict(getattr(evaluation, m)) for m in ("acoustic", "text", "blend")},
        }
    results["human speech"] = human_scores()
    results["cpu"] = costs()
    results["wall_s"] = time.perf_counter() - started
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_table(results)
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


def print_table(r: dict[str, Any]) -> None:
    print(f"viseme tracks vs eSpeak's exact track, {len(EVAL_SENTENCES)} held-out sentences")
    print(
        f"  {'':14s} {'method':9s} {'frames':>7s} {'grouped':>8s} {'onsets':>7s} "
        f"{'error':>7s} {'changes/s':>10s}"
    )
    for name in ("ten voices", "unseen voices"):
        block = r[name]
        label = f"{name} ({block['renders']})"
        for method in ("acoustic", "text", "blend"):
            s = block[method]
            print(
                f"  {label:14s} {method:9s} {s['accuracy']:7.1%} {s['grouped']:8.1%} "
                f"{s['matched']:7.1%} {s['onset_error_ms']:5.1f}ms "
                f"{s['changes_per_s']:5.1f} ({s['exact_changes_per_s']:.1f})"
            )
            label = ""
    h = r["human speech"]
    print(
        f"human speech ({h['audio_s']:.1f} s, no labels): mouth open on {h['open_when_loud']:.1%}"
        f" of {h['loud_frames']} loud frames, shut on {h['shut_in_pauses']:.1%} of "
        f"{h['pause_frames']} pause frames"
    )
    c = r["cpu"]
    print("CPU per second of audio, one thread (share of one core), per response")
    for name, label in (
        ("acoustic_20ms", "AcousticVisemes, 20 ms chunks"),
        ("acoustic_100ms", "AcousticVisemes, 100 ms chunks"),
        ("stream_20ms", "npcd's path, 20 ms deltas"),
        ("phonemes", "PhonemeTrack, 20 ms chunks"),
    ):
        v = c[name]
        print(
            f"  {label:32s} p50 {v['p50'] * 1000:6.2f} ms ({v['p50']:.2%})   "
            f"p99 {v['p99'] * 1000:6.2f} ms ({v['p99']:.2%})"
        )
    print(f"  model load {c['model_load_ms']:.1f} ms (once per process)")


if __name__ == "__main__":
    main()
