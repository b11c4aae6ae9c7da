"""Cost of the local backend's speech engines (npcd.localbackend.engines) on this machine.

Run with ``python bench/speech_engines.py``. Measures, as medians over repeats:

* load: import plus model load of each engine, each in a fresh interpreter (``--load NAME``);
* VAD: CPU per 32 ms window, for the ONNX call alone and for the whole path from 20 ms chunks
  of 24 kHz PCM16 (resampling, buffering, probabilities);
* ASR: latency after the end of an utterance (one ``transcribe`` call) on the three LibriVox
  fixtures, with 1 and 2 CPU threads, and its real-time factor;
* TTS: time to first chunk and total time for a short line and a long paragraph, and the
  real-time factor;
* intents: milliseconds per match, and the one-off build cost of a persona's matcher.

Prints a table and writes the same to bench/results/speech_engines.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "speech_engines.json"
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LOAD_REPEATS = 3
ASR_REPEATS = 5
TTS_REPEATS = 20
INTENT_REPEATS = 200
PARAGRAPH = (
    "Greetings, traveller! The old mill beyond the northern hills has been abandoned for many "
    "years. Nobody goes there after dark, not since the miller vanished, and the wolves have "
    "grown bold on the north road since the first snows. If you mean to go, take a torch, a "
    "sharp blade and a friend you trust. And come back before the gate closes at dusk, or "
    "Sergeant Tamsin will leave you outside with the wolves."
)
LINE = "Forty gold, and she's yours, friend. Mind the edge."


def median_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


# Loading (one fresh interpreter per measurement) --------------------------------------------------


def _load_here(name: str) -> dict[str, float]:
    start = time.perf_counter()
    if name == "vad":
        from npcd.localbackend.engines.vad import SileroVad

        imported = time.perf_counter()
        SileroVad().load()
    elif name.startswith("asr"):
        from npcd.localbackend.engines.asr import WhisperTranscriber

        imported = time.perf_counter()
        WhisperTranscriber(cpu_threads=int(name[-1])).load()
    elif name == "tts":
        from npcd.localbackend.engines.tts import EspeakSynthesizer

        imported = time.perf_counter()
        engine = EspeakSynthesizer()
        loaded = time.perf_counter()
        list(engine.synthesize("Hello.", "ash"))  # the first call reads the voice and dictionary
        first = time.perf_counter()
        return {
            "import_ms": (imported - start) * 1000,
            "load_ms": (loaded - imported) * 1000,
            "first_call_ms": (first - loaded) * 1000,
        }
    elif name == "intents":
        from npcd.localbackend.engines.intents import MiniLmEmbedder

        imported = time.perf_counter()
        MiniLmEmbedder().load()
    else:
        raise SystemExit(f"unknown engine {name}")
    loaded = time.perf_counter()
    return {"import_ms": (imported - start) * 1000, "load_ms": (loaded - imported) * 1000}


def bench_loading() -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for name in ("vad", "asr1", "asr2", "tts", "intents"):
        runs = []
        for _ in range(LOAD_REPEATS):
            out = subprocess.run(  # noqa: S603 - our own script, fixed arguments
                [sys.executable, __file__, "--load", name],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            )
            runs.append(json.loads(out.stdout))
        results[name] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    return results


# VAD ---------------------------------------------------------------------------------------------


def bench_vad(pcm24k: bytes) -> dict[str, float]:
    from npcd.localbackend.engines import vad

    engine = vad.SileroVad()
    engine.load()
    session = engine._session
    window = np.random.default_rng(0).uniform(-0.1, 0.1, (1, vad.CONTEXT + vad.WINDOW))
    window = window.astype(np.float32)
    h = np.zeros(vad._STATE_SHAPE, np.float32)
    c = np.zeros(vad._STATE_SHAPE, np.float32)

    def one_window() -> None:
        session.run(None, {"input": window, "h": h, "c": c})

    for _ in range(200):
        one_window()
    model_us = median_ms(one_window, 3000) * 1000

    chunks = [pcm24k[i : i + 960] for i in range(0, len(pcm24k), 960)]
    paths = []
    for _ in range(5):
        stream = vad.SileroVad()
        start = time.perf_counter()
        windows = sum(len(stream.process(chunk)) for chunk in chunks)
        paths.append((time.perf_counter() - start) / windows * 1e6)
    return {
        "model_us_per_window": model_us,
        "full_path_us_per_window": statistics.median(paths),
        "full_path_cpu_share_of_one_core": statistics.median(paths) / 32_000,
    }


# ASR ---------------------------------------------------------------------------------------------


def bench_asr(clips: list[Any]) -> dict[str, Any]:
    from npcd.localbackend.engines.asr import WhisperTranscriber
    from tests.unit.engines.speech import word_errors

    results: dict[str, Any] = {}
    for threads in (1, 2):
        engine = WhisperTranscriber(cpu_threads=threads)
        engine.load()
        engine.transcribe(clips[0].pcm24k)  # warm-up
        per_clip = {}
        for clip in clips:
            pcm = clip.pcm24k
            latency = median_ms(lambda pcm=pcm, engine=engine: engine.transcribe(pcm), ASR_REPEATS)
            text = engine.transcribe(pcm)
            errors, words = word_errors(clip.text, text)
            seconds = clip.samples16k.size / 16000
            per_clip[clip.name[-4:]] = {
                "audio_s": round(seconds, 2),
                "latency_ms": latency,
                "rtf": latency / 1000 / seconds,
                "wer": errors / words,
                "text": text,
            }
        results[f"{threads}_threads"] = per_clip
    return results


# TTS ---------------------------------------------------------------------------------------------


def bench_tts() -> dict[str, Any]:
    from npcd.localbackend.engines.tts import EspeakSynthesizer

    engine = EspeakSynthesizer()
    list(engine.synthesize(LINE, "ash"))
    results: dict[str, Any] = {}
    for label, text in (("line", LINE), ("paragraph", PARAGRAPH)):
        firsts, totals, audio_ms, chunks = [], [], 0.0, 0
        for _ in range(TTS_REPEATS):
            start = time.perf_counter()
            first = None
            produced = []
            for chunk in engine.synthesize(text, "ash"):
                if first is None:
                    first = time.perf_counter() - start
                produced.append(chunk)
            totals.append(time.perf_counter() - start)
            firsts.append(first or 0.0)
            audio_ms = sum(len(c.pcm) for c in produced) / 48
            chunks = len(produced)
        total = statistics.median(totals)
        results[label] = {
            "words": len(text.split()),
            "chunks": chunks,
            "audio_s": audio_ms / 1000,
            "first_chunk_ms": statistics.median(firsts) * 1000,
            "total_ms": total * 1000,
            "rtf": total / (audio_ms / 1000),
        }
    return results


# Intents -----------------------------------------------------------------------------------------


def bench_intents() -> dict[str, float]:
    import yaml

    from npcd.localbackend.engines.intents import IntentMatcher, MiniLmEmbedder

    embedder = MiniLmEmbedder()
    embedder.load()
    data = yaml.safe_load((REPO / "characters" / "blacksmith.yaml").read_text("utf-8"))
    lines = data["dialogue"]["lines"]
    intents = [(i, line["when"]) for i, line in enumerate(lines) if line.get("when")]
    embedder.embed(["warm up"])
    build = median_ms(lambda: IntentMatcher(embedder, intents), 5)
    matcher = embedder.matcher(intents)
    utterances = ["could you mend my broken blade", "what is the capital of france"]
    per_match = median_ms(lambda: [matcher.match(u) for u in utterances], INTENT_REPEATS) / 2
    return {
        "examples": sum(len(p) for _, p in intents),
        "build_matcher_ms": build,
        "match_ms": per_match,
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--load":
        print(json.dumps(_load_here(sys.argv[2])))
        return
    from tests.unit.engines.speech import load_clips

    clips = load_clips()
    lead = np.zeros(16000, np.float32)
    vad_audio = np.concatenate([lead, *(np.concatenate([c.samples16k, lead]) for c in clips)])
    import soxr

    from tests.unit.engines.speech import to_pcm16

    pcm24k = to_pcm16(soxr.resample(vad_audio, 16000, 24000))
    results = {
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "load": bench_loading(),
        "vad": bench_vad(pcm24k),
        "asr": bench_asr(clips),
        "tts": bench_tts(),
        "intents": bench_intents(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_table(results)
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


def print_table(r: dict[str, Any]) -> None:
    print("load (import + model, fresh interpreter, median of 3)")
    for name, row in r["load"].items():
        extra = f", first call {row['first_call_ms']:.1f} ms" if "first_call_ms" in row else ""
        times = f"import {row['import_ms']:7.1f} ms  load {row['load_ms']:7.1f} ms"
        print(f"  {name:8s} {times}{extra}")
    v = r["vad"]
    print(
        f"VAD      model {v['model_us_per_window']:.1f} us/window; full path from 20 ms "
        f"chunks {v['full_path_us_per_window']:.1f} us/window "
        f"({v['full_path_cpu_share_of_one_core']:.2%} of a core)"
    )
    for threads, clips in r["asr"].items():
        for clip, row in clips.items():
            print(
                f"ASR {threads:9s} {clip} {row['audio_s']:4.1f} s: {row['latency_ms']:6.1f} ms "
                f"after end of utterance, RTF {row['rtf']:.3f}, WER {row['wer']:.3f}"
            )
    for label, row in r["tts"].items():
        print(
            f"TTS {label:9s} {row['words']} words, {row['audio_s']:.1f} s audio in "
            f"{row['chunks']} chunks: first chunk {row['first_chunk_ms']:.2f} ms, total "
            f"{row['total_ms']:.2f} ms, RTF {row['rtf']:.5f}"
        )
    i = r["intents"]
    print(
        f"intents  {i['match_ms']:.2f} ms per match; matcher build {i['build_matcher_ms']:.1f} "
        f"ms for {i['examples']} examples"
    )


if __name__ == "__main__":
    main()
