"""Per-frame cost of npcd's audio path, and the resampler measurements behind its settings.

Run with ``python bench/audio_codec.py`` (or ``make bench``). Every timed case handles one 20 ms
frame, the size games typically send; each is timed call by call, so the p99 shows the spikes a
real-time stream would feel. The mean is printed too: soxr works in blocks, so resampling costs
are bimodal (calls that only buffer, calls that run a block) and the median alone misleads.
Prints a table and writes the same to bench/results/audio_codec.json.
"""

from __future__ import annotations

import base64
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pybase64
import soxr

from npcd.audio import (
    REALTIME_FORMAT,
    RESAMPLER_QUALITY,
    AudioFormat,
    Encoding,
    InputConverter,
    OutputConverter,
    b64decode,
    b64encode,
    validate_chunk,
)

REPS = 20_000
WARMUP = 1_000
RESULTS = Path(__file__).resolve().parent / "results" / "audio_codec.json"
RATES = (16000, 22050, 44100, 48000)
RT = REALTIME_FORMAT.sample_rate


def frame(fmt: AudioFormat, seed: int = 0) -> bytes:
    """20 ms of quiet noise: content does not change the cost, only the size does."""
    count = fmt.bytes_for_ms(20) // fmt.encoding.sample_width
    samples = np.random.default_rng(seed).uniform(-0.3, 0.3, count)
    if fmt.encoding is Encoding.FLOAT32:
        return samples.astype("<f4").tobytes()
    return (samples * 32767).astype("<i2").tobytes()


def time_calls(call: Callable[[], object], reps: int = REPS) -> dict[str, float]:
    for _ in range(WARMUP):
        call()
    clock = time.perf_counter_ns
    samples = np.empty(reps, dtype=np.int64)
    for i in range(reps):
        start = clock()
        call()
        samples[i] = clock() - start
    return {
        "mean_us": float(np.mean(samples)) / 1000,
        "median_us": float(np.median(samples)) / 1000,
        "p99_us": float(np.percentile(samples, 99)) / 1000,
    }


def timed_cases() -> dict[str, dict[str, float]]:
    f32_stereo_48k = AudioFormat(Encoding.FLOAT32, 48000, 2)
    f32_mono_48k = AudioFormat(Encoding.FLOAT32, 48000)
    pcm16_16k = AudioFormat(Encoding.PCM16, 16000)

    def convert_input(fmt: AudioFormat) -> Callable[[], object]:
        converter, data = InputConverter(fmt), frame(fmt)
        return lambda: converter.convert(data)

    out_converter, backend_frame = OutputConverter(f32_mono_48k), frame(REALTIME_FORMAT)
    stereo_frame, pcm16_frame = frame(f32_stereo_48k), frame(pcm16_16k)

    delta_event = json.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "event_CXk8ZyV0jqvGl6yuX1rTn",
            "response_id": "resp_CXk8ZyV0jqvGl6yuX1rTn",
            "item_id": "item_CXk8ZyV0jqvGl6yuX1rTn",
            "output_index": 0,
            "content_index": 0,
            "delta": b64encode(backend_frame),
        }
    )

    def fast_delta() -> bytes:
        return b64decode(orjson.loads(delta_event)["delta"])

    def stdlib_delta() -> bytes:
        return base64.b64decode(json.loads(delta_event)["delta"], validate=True)

    cases: dict[str, Callable[[], object]] = {
        "timer overhead (empty call)": lambda: None,
        "input 48k f32 stereo -> 24k pcm16": convert_input(f32_stereo_48k),
        "input 48k f32 mono -> 24k pcm16": convert_input(f32_mono_48k),
        "input 16k pcm16 mono -> 24k pcm16": convert_input(pcm16_16k),
        "output 24k pcm16 -> 48k f32 mono": lambda: out_converter.convert(backend_frame),
        "validate_chunk 48k f32 stereo": lambda: validate_chunk(f32_stereo_48k, stereo_frame),
        "validate_chunk 16k pcm16 mono": lambda: validate_chunk(pcm16_16k, pcm16_frame),
        "append event: orjson + pybase64": lambda: orjson.dumps(
            {
                "type": "input_audio_buffer.append",
                "audio": pybase64.b64encode_as_string(backend_frame),
            }
        ),
        "append event: json + base64": lambda: json.dumps(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(backend_frame).decode()}
        ),
        "delta event: orjson + pybase64": fast_delta,
        "delta event: json + base64": stdlib_delta,
    }
    return {name: time_calls(call) for name, call in cases.items()}


def hold_back(in_rate: int, out_rate: int, quality: str) -> dict[str, float]:
    """How much audio soxr keeps inside while fed 20 ms chunks: latency added to the stream."""
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
    signal = np.random.default_rng(1).uniform(-0.3, 0.3, in_rate * 2).astype(np.float32)
    step, emitted, held, first_output_ms = in_rate // 50, 0, [], None
    for start in range(0, len(signal), step):
        emitted += len(stream.resample_chunk(signal[start : start + step]))
        held.append(stream.delay() * 1000 / out_rate)
        if emitted and first_output_ms is None:
            first_output_ms = (start + step) * 1000 / in_rate
    steady = held[len(held) // 4 :]
    return {
        "first_output_after_ms": first_output_ms or float("nan"),
        "mean_held_ms": float(np.mean(steady)),
        "max_held_ms": float(np.max(held)),
    }


def tone_gain_db(in_rate: int, out_rate: int, freq: float, quality: str) -> float:
    """Output level of a tone relative to its input; above the new Nyquist this is aliasing."""
    t = np.arange(in_rate) / in_rate
    out = soxr.resample(np.sin(2 * np.pi * freq * t).astype(np.float32), in_rate, out_rate, quality)
    body = out[out_rate // 20 : -out_rate // 20]
    return float(20 * np.log10(max(float(np.sqrt(np.mean(body**2))), 1e-12) * np.sqrt(2)))


Table = dict[str, dict[str, float]]


def resampler_report() -> tuple[Table, Table]:
    """Hold-back per rate pair at the chosen quality, and how each soxr preset trades off."""
    pairs = [(rate, RT) for rate in RATES] + [(RT, rate) for rate in RATES]
    delays = {f"{a}->{b}": hold_back(a, b, RESAMPLER_QUALITY) for a, b in pairs}
    presets = {}
    for quality in ("QQ", "LQ", "MQ", "HQ", "VHQ"):
        held = [hold_back(a, b, quality) for a, b in pairs]
        presets[quality] = {
            "mean_held_ms": float(np.mean([h["mean_held_ms"] for h in held])),
            "max_held_ms": float(np.max([h["max_held_ms"] for h in held])),
            "gain_10k_48to24_db": tone_gain_db(48000, RT, 10000, quality),
            "gain_7k_16to24_db": tone_gain_db(16000, RT, 7000, quality),
            "alias_15k_48to24_db": tone_gain_db(48000, RT, 15000, quality),
        }
    return delays, presets


def main() -> None:
    started = time.perf_counter()
    timings = timed_cases()
    delays, presets = resampler_report()

    print(f"per 20 ms frame, {REPS} calls each")
    print(f"{'case':<40} {'median us':>10} {'p99 us':>10} {'mean us':>10}")
    for name, t in timings.items():
        print(f"{name:<40} {t['median_us']:>10.2f} {t['p99_us']:>10.2f} {t['mean_us']:>10.2f}")

    print(f"\nsoxr {RESAMPLER_QUALITY} hold-back with 20 ms chunks (latency added)")
    print(f"{'pair':<14} {'first output after ms':>22} {'mean held ms':>13} {'max held ms':>12}")
    for pair, d in delays.items():
        print(
            f"{pair:<14} {d['first_output_after_ms']:>22.0f} {d['mean_held_ms']:>13.1f} "
            f"{d['max_held_ms']:>12.1f}"
        )

    print("\nsoxr presets (held ms over all pairs; gains in dB, alias = 15 kHz into 24 kHz)")
    header = f"{'preset':<7} {'mean held':>10} {'max held':>9} {'10k 48>24':>10} {'7k 16>24':>9}"
    print(f"{header} {'alias':>8}")
    for quality, p in presets.items():
        print(
            f"{quality:<7} {p['mean_held_ms']:>10.1f} {p['max_held_ms']:>9.1f} "
            f"{p['gain_10k_48to24_db']:>10.1f} {p['gain_7k_16to24_db']:>9.1f} "
            f"{p['alias_15k_48to24_db']:>8.1f}"
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "reps": REPS,
        "frame_ms": 20,
        "timings_us": timings,
        "resampler": {"quality": RESAMPLER_QUALITY, "hold_back": delays, "presets": presets},
        "environment": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "machine": platform.machine(),
            "numpy": np.__version__,
            "soxr": soxr.__version__,
            "libsoxr": soxr.__libsoxr_version__,
            "orjson": orjson.__version__,
            "pybase64": pybase64.__version__,
        },
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
