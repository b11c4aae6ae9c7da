"""Audio-derived visemes (`npcd.lipsync.acoustic`): accuracy against eSpeak's exact track on
held-out sentences, the silence gate, chunking and gain invariance, the frame grid, and a
sanity check on real human speech (the LibriVox fixtures)."""

from __future__ import annotations

import numpy as np
import pytest

from npcd.bench.lipsync import (
    EVAL_SENTENCES,
    EVAL_VOICES,
    Render,
    acoustic_frames,
    exact_frames,
    loud_and_quiet,
    pooled,
    render,
    score,
    with_room_tone,
)
from npcd.lipsync.acoustic import AcousticVisemes, default_model
from npcd.lipsync.timeline import Frame
from npcd.lipsync.visemes import SIL
from tests.unit.engines.speech import load_clips, to_pcm16

#: Four of the benchmark's ten (voice, speed) pairs: every sentence in each.
VOICES = EVAL_VOICES[::3]


@pytest.fixture(scope="module")
def spoken() -> list[Render]:
    return [render(s, voice, speed) for voice, speed in VOICES for s in EVAL_SENTENCES]


def dominant(frames: list[Frame]) -> np.ndarray:
    shapes: np.ndarray = np.asarray([f.weights for f in frames]).argmax(axis=1)
    return shapes


def scaled(pcm: bytes, gain: float) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768 * gain
    return to_pcm16(samples.astype(np.float32))


def test_held_out_sentences_match_the_exact_track(spoken: list[Render]) -> None:
    # Measured (24 held-out sentences x these 4 voices, two runs: eSpeak varies a little per
    # call): frame accuracy 0.892, grouped 0.912, onsets matched 0.958 with a mean error of
    # 6.6 ms, 13.0 changes of shape per second against the exact track's 11.7.
    assert len(EVAL_SENTENCES) >= 20
    scores = pooled(
        [score(exact_frames(r.phonemes, r.duration_ms), acoustic_frames(r.pcm)) for r in spoken]
    )
    assert scores.accuracy >= 0.86
    assert scores.grouped >= 0.88
    assert scores.matched >= 0.93
    assert scores.onset_error_ms <= 10.0
    # Not bought with flicker: about as many changes of shape as the exact track.
    assert scores.changes_per_s <= 1.3 * scores.exact_changes_per_s


def test_silence_is_sil() -> None:
    frames = acoustic_frames(bytes(2 * 24000 * 2), chunk_ms=20)
    assert len(frames) > 100
    assert all(f.viseme == SIL and f.weights[SIL] > 0.99 for f in frames)


def test_the_mouth_shuts_after_speech(spoken: list[Render]) -> None:
    speech = spoken[0].pcm
    frames = acoustic_frames(speech + bytes(48 * 1000), chunk_ms=20)
    end_ms = spoken[0].duration_ms
    after = [f for f in frames if f.start_ms >= end_ms + 100]
    assert len(after) >= 50
    assert all(f.viseme == SIL for f in after)
    during = [f for f in frames if f.start_ms < end_ms]
    assert np.mean(dominant(during) != SIL) > 0.6


def test_chunking_does_not_change_the_frames(spoken: list[Render]) -> None:
    pcm = b"".join(r.pcm for r in spoken[:4])
    whole = acoustic_frames(pcm)
    for chunk_bytes in (20 * 48, 200 * 48, 333, 4801):
        analyser = AcousticVisemes()
        frames: list[Frame] = []
        for i in range(0, len(pcm), chunk_bytes):
            frames += analyser.feed(pcm[i : i + chunk_bytes])
        frames += analyser.finish()
        assert [f.start_ms for f in frames] == [f.start_ms for f in whole], chunk_bytes
        np.testing.assert_allclose(
            [f.weights for f in frames], [f.weights for f in whole], rtol=0, atol=1e-5
        )


def test_gain_does_not_change_the_visemes(spoken: list[Render]) -> None:
    # Measured: 98-100% of frames keep their dominant viseme at -20 and -30 dB.
    for r in spoken[::12]:
        loud = dominant(acoustic_frames(r.pcm))
        for gain in (0.1, 0.03):
            quiet = dominant(acoustic_frames(scaled(r.pcm, gain)))
            assert len(quiet) == len(loud)
            assert np.mean(quiet == loud) >= 0.95, (r.text, gain)


def test_human_speech_opens_when_loud_and_shuts_in_pauses() -> None:
    # Speech no synthesiser made: the three LibriVox clips at 24 kHz, with half a second of
    # each one's own room tone (about -50 dBFS) between them. The first 300 ms are left out:
    # until then the gate does not know the noise floor and takes what it hears as speech.
    # Measured: open on 99.5% of 417 loud frames, shut on all 113 pause frames, 13 shapes.
    clips = [np.frombuffer(c.pcm24k, dtype="<i2").astype(np.float32) / 32768 for c in load_clips()]
    pcm = with_room_tone(clips)
    frames = acoustic_frames(pcm, chunk_ms=40)
    times = np.asarray([f.start_ms for f in frames])
    loud, quiet = loud_and_quiet(pcm, times.tolist())
    quiet &= times >= 300
    shapes = dominant(frames)
    assert loud.sum() > 300 and quiet.sum() > 100
    assert np.mean(shapes[loud] != SIL) >= 0.95
    assert np.mean(shapes[quiet] == SIL) >= 0.95
    # Not one shape throughout: the mouth moves through most of them.
    assert len(set(shapes[loud].tolist())) >= 10


@pytest.mark.parametrize("fps", [24, 30, 60, 90])
def test_frames_cover_the_audio_on_the_grid(spoken: list[Render], fps: int) -> None:
    pcm = spoken[5].pcm[: len(spoken[5].pcm) - 46]  # an end off the 1 ms grid
    audio_ms = len(pcm) / 48
    analyser = AcousticVisemes(fps)
    frames: list[Frame] = []
    for i in range(0, len(pcm), 960):
        frames += analyser.feed(pcm[i : i + 960])
        # Frames come out as the audio does, a few frames behind it at most.
        assert analyser.next_ms >= (i + 960) / 48 - 60 - 1000 / fps
    frames += analyser.finish()
    times = [f.start_ms for f in frames]
    assert times[0] == 0
    gaps = np.diff(times)
    assert gaps.min() > 0 and gaps.max() <= 1000 / fps + 1
    assert round(audio_ms) <= times[-1] <= audio_ms + 1000 / fps + 1
    assert frames[-1].viseme == SIL and frames[-1].weights[SIL] == 1.0
    weights = np.asarray([f.weights for f in frames])
    assert weights.min() >= 0 and weights.max() <= 1
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    assert analyser.feed(b"\0\0" * 480) == [] and analyser.finish() == []


def test_no_audio_still_shuts_the_mouth() -> None:
    analyser = AcousticVisemes()
    assert analyser.feed(b"") == [] and analyser.feed(b"\x01") == []
    frames = analyser.finish()
    assert [(f.start_ms, f.viseme) for f in frames] == [(0, SIL)]


def test_the_model_loads_once() -> None:
    assert default_model() is default_model()
