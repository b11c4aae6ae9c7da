"""Helpers for the speech-engine tests: fixture clips, word error rate, pitch."""

from __future__ import annotations

import re
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

from npcd.audio import pcm16_to_float32

# Word error rate lives in npcd: the voice benchmark reports it too.
from npcd.bench.wer import wer as wer
from npcd.bench.wer import word_errors as word_errors

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "speech"
CLIP_IDS = (
    "sense_and_sensibility_01_austen_64kb-0870",
    "sense_and_sensibility_01_austen_64kb-0880",
    "sense_and_sensibility_01_austen_64kb-0890",
)

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Clip:
    name: str
    samples16k: Samples
    text: str

    @property
    def pcm24k(self) -> bytes:
        return to_pcm16(soxr.resample(self.samples16k, 16000, 24000))


def load_clips() -> list[Clip]:
    refs = {}
    for line in (FIXTURES / "transcription.txt").read_text(encoding="utf-8").splitlines():
        found = re.fullmatch(r"<s> (.*) </s> \((.*)\)", line.strip())
        if found:
            refs[found.group(2)] = found.group(1)
    clips = []
    for name in CLIP_IDS:
        with wave.open(str(FIXTURES / f"{name}.wav"), "rb") as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
            raw = wav.readframes(wav.getnframes())
        clips.append(Clip(name, pcm16_to_float32(raw), refs[name]))
    return clips


def to_pcm16(samples: Samples) -> bytes:
    return (np.clip(samples, -1.0, 32767 / 32768) * 32768).round().astype("<i2").tobytes()


def from_pcm16(pcm: bytes) -> Samples:
    return pcm16_to_float32(pcm)


def speech_edges_ms(samples16k: Samples) -> tuple[int, int]:
    """True speech edges of a clean clip, by energy.

    10 ms frames above -40 dBFS, ignoring lone frames (at least two in a row). The clips'
    background sits at -45 to -50 dBFS; -40 keeps the quiet final consonants ("disposed")
    that a higher threshold would cut off.
    """
    frames = samples16k[: samples16k.size // 160 * 160].reshape(-1, 160)
    level = 10 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-12)
    loud = level > -40
    runs = np.flatnonzero(loud[:-1] & loud[1:])
    return int(runs[0]) * 10, (int(runs[-1]) + 2) * 10


# Pitch ------------------------------------------------------------------------------------------


def median_f0(samples: Samples, rate: int = 24000) -> float:
    """Median fundamental frequency (Hz) of the voiced 40 ms frames, by autocorrelation."""
    frame, hop = int(0.04 * rate), int(0.01 * rate)
    low, high = rate // 400, rate // 60
    found = []
    for start in range(0, samples.size - frame, hop):
        piece = samples[start : start + frame].astype(np.float64)
        if (piece**2).mean() < 1e-4:
            continue
        piece -= piece.mean()
        corr = np.correlate(piece, piece, "full")[frame - 1 :]
        lag = low + int(np.argmax(corr[low:high]))
        if corr[lag] > 0.3 * corr[0]:
            found.append(rate / lag)
    return float(np.median(found)) if found else 0.0
