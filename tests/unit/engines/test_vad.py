"""Silero VAD on real audio and noise; the server-VAD segmenter on synthetic probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npcd.localbackend.engines import SpeechProbability, VoiceActivity
from npcd.localbackend.engines.vad import (
    SileroVad,
    SpeechStarted,
    SpeechStopped,
    VadEvent,
    VadSegmenter,
)
from tests.unit.engines.speech import Clip, to_pcm16

LEAD_MS = 1000
TAIL_MS = 1500
CHUNK = 960  # 20 ms of PCM16 24 kHz


def frames(*probabilities: float, window: int = 32) -> list[SpeechProbability]:
    return [SpeechProbability(i * window, (i + 1) * window, p) for i, p in enumerate(probabilities)]


# Segmenter (pure) --------------------------------------------------------------------------------


def test_start_reports_onset_and_prefix_padding() -> None:
    events = VadSegmenter(0.5, prefix_padding_ms=300).feed(frames(*[0.1] * 20, 0.9, 0.9))
    assert events == [SpeechStarted(audio_start_ms=340, onset_ms=640, detected_ms=672)]


def test_prefix_padding_is_floored_at_zero() -> None:
    (event,) = VadSegmenter(0.5, prefix_padding_ms=300).feed(frames(0.1, 0.1, 0.8))
    assert event == SpeechStarted(audio_start_ms=0, onset_ms=64, detected_ms=96)


def test_onset_includes_the_rising_flank_above_the_stop_threshold() -> None:
    (event,) = VadSegmenter(0.5).feed(frames(0.1, 0.2, 0.4, 0.45, 0.7))
    assert isinstance(event, SpeechStarted)
    assert event.onset_ms == 64


def test_flank_that_falls_back_is_forgotten() -> None:
    (event,) = VadSegmenter(0.5).feed(frames(0.4, 0.1, 0.1, 0.6))
    assert isinstance(event, SpeechStarted)
    assert event.onset_ms == 96


def test_stop_after_silence_duration_reports_the_end_of_speech() -> None:
    segmenter = VadSegmenter(0.5, silence_duration_ms=500)
    events = segmenter.feed(frames(*[0.9] * 10, 0.3, *[0.05] * 30))
    assert events[1:] == [SpeechStopped(audio_end_ms=320, detected_ms=320 + 512)]
    assert not segmenter.speaking


def test_pause_shorter_than_silence_duration_keeps_the_turn() -> None:
    probabilities = [0.9] * 10 + [0.05] * 12 + [0.9] * 10 + [0.05] * 20
    events = VadSegmenter(0.5, silence_duration_ms=500).feed(frames(*probabilities))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    assert events[1] == SpeechStopped(audio_end_ms=32 * 32, detected_ms=32 * 32 + 512)


def test_hysteresis_keeps_a_wavering_voice_in_one_turn() -> None:
    wavering = [0.6, 0.4, 0.38, 0.55, 0.36, 0.45] * 20
    events = VadSegmenter(0.5, silence_duration_ms=200).feed(frames(0.9, *wavering))
    assert len(events) == 1


def test_weak_windows_after_silence_began_do_not_reset_its_timer() -> None:
    events = VadSegmenter(0.5, silence_duration_ms=500).feed(frames(0.9, 0.1, *[0.4] * 20))
    assert events[1] == SpeechStopped(audio_end_ms=32, detected_ms=32 + 512)


def test_reset_returns_to_silence_without_an_event() -> None:
    segmenter = VadSegmenter(0.5)
    segmenter.feed(frames(0.9))
    assert segmenter.speaking
    segmenter.reset()
    assert not segmenter.speaking
    assert segmenter.feed(frames(0.05)) == []
    assert isinstance(segmenter.push(SpeechProbability(32, 64, 0.9)), SpeechStarted)


def test_low_threshold_can_still_stop() -> None:
    segmenter = VadSegmenter(0.1, silence_duration_ms=64)
    events = segmenter.feed(frames(0.5, 0.0, 0.0, 0.0))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 1.5}, {"threshold": -0.1}, {"prefix_padding_ms": -1}, {"hysteresis": -0.1}],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        VadSegmenter(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    probabilities=st.lists(st.floats(0.0, 1.0), max_size=200),
    threshold=st.floats(0.05, 0.95),
    padding=st.integers(0, 1000),
    silence=st.integers(0, 1500),
)
def test_events_alternate_and_their_times_are_consistent(
    probabilities: list[float], threshold: float, padding: int, silence: int
) -> None:
    events = VadSegmenter(threshold, padding, silence).feed(frames(*probabilities))
    started: SpeechStarted | None = None
    last_detected = -1
    for event in events:
        assert event.detected_ms > last_detected
        last_detected = event.detected_ms
        if isinstance(event, SpeechStarted):
            assert started is None
            assert event.audio_start_ms == max(0, event.onset_ms - padding)
            assert event.onset_ms < event.detected_ms
            started = event
        else:
            assert started is not None
            assert started.onset_ms < event.audio_end_ms <= event.detected_ms - silence
            started = None


# Silero model ------------------------------------------------------------------------------------


def _feed(vad: SileroVad, pcm: bytes, chunk: int = CHUNK) -> list[SpeechProbability]:
    out: list[SpeechProbability] = []
    for start in range(0, len(pcm), chunk):
        out.extend(vad.process(pcm[start : start + chunk]))
    return out


def _padded(clip: Clip, noise_dbfs: float | None, seed: int = 7) -> bytes:
    samples = np.concatenate(
        (
            np.zeros(LEAD_MS * 16, np.float32),
            clip.samples16k,
            np.zeros(TAIL_MS * 16, np.float32),
        )
    )
    if noise_dbfs is not None:
        noise = np.random.default_rng(seed).standard_normal(samples.size).astype(np.float32)
        samples = samples + noise * np.float32(10 ** (noise_dbfs / 20))
    import soxr

    return to_pcm16(soxr.resample(samples, 16000, 24000))


def test_silero_vad_satisfies_the_protocol() -> None:
    assert isinstance(SileroVad(), VoiceActivity)


def test_windows_are_contiguous_32_ms_and_independent_of_chunking(clips: list[Clip]) -> None:
    pcm = _padded(clips[1], None)
    reference = _feed(SileroVad(), pcm)
    assert [(f.start_ms, f.end_ms) for f in reference] == [
        (32 * i, 32 * (i + 1)) for i in range(len(reference))
    ]
    # All the audio minus the resampler's hold-back and the last partial window.
    assert len(pcm) / 48 - 32 - 60 < reference[-1].end_ms <= len(pcm) / 48
    for chunk in (333, 4801, len(pcm)):
        other = _feed(SileroVad(), pcm, chunk)
        assert [f.start_ms for f in other] == [f.start_ms for f in reference]
        probabilities = np.array([f.probability for f in other])
        expected = np.array([f.probability for f in reference])
        np.testing.assert_allclose(probabilities, expected, atol=0.02)


@pytest.mark.parametrize(
    "noise_dbfs", [None, -50.0, -40.0], ids=["clean", "noise-50dBFS", "noise-40dBFS"]
)
@pytest.mark.parametrize("index", [0, 1, 2], ids=["0870", "0880", "0890"])
def test_speech_edges_are_within_100_ms(
    clips: list[Clip], index: int, noise_dbfs: float | None
) -> None:
    from tests.unit.engines.speech import speech_edges_ms

    clip = clips[index]
    true_start, true_end = speech_edges_ms(clip.samples16k)
    segmenter = VadSegmenter(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500)
    events: list[VadEvent] = segmenter.feed(_feed(SileroVad(), _padded(clip, noise_dbfs)))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    started, stopped = events
    assert isinstance(started, SpeechStarted)
    assert isinstance(stopped, SpeechStopped)
    # Measured: onset 0-60 ms late, end 18-62 ms late.
    assert abs(started.onset_ms - (LEAD_MS + true_start)) <= 100
    assert started.audio_start_ms == started.onset_ms - 300
    assert abs(stopped.audio_end_ms - (LEAD_MS + true_end)) <= 100
    assert stopped.detected_ms - stopped.audio_end_ms >= 500


def _noise(kind: str, seconds: float, dbfs: float) -> bytes:
    rng = np.random.default_rng(11)
    samples = rng.standard_normal(int(seconds * 24000))
    if kind == "pink":
        spectrum = np.fft.rfft(samples)
        spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))
        spectrum[0] = 0
        samples = np.fft.irfft(spectrum, samples.size)
    samples *= 10 ** (dbfs / 20) / np.sqrt((samples**2).mean())
    return to_pcm16(samples.astype(np.float32))


@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("dbfs", [-35.0, -20.0])
def test_noise_never_starts_speech(kind: str, dbfs: float) -> None:
    probabilities = _feed(SileroVad(), _noise(kind, 3.0, dbfs))
    assert len(probabilities) >= 90
    assert VadSegmenter(0.5).feed(probabilities) == []
    assert max(f.probability for f in probabilities) < 0.4


def test_reset_clears_state_but_keeps_the_session_clock(clips: list[Clip]) -> None:
    vad = SileroVad()
    _feed(vad, _noise("white", 1.0, -35.0))
    vad.reset()
    after = _feed(vad, _padded(clips[1], None))
    fresh = _feed(SileroVad(), _padded(clips[1], None))
    assert after[0].start_ms == 1000
    first_speech = next(f for f in after if f.probability >= 0.5)
    first_fresh = next(f for f in fresh if f.probability >= 0.5)
    assert first_speech.start_ms == first_fresh.start_ms + 1000


def test_reset_between_the_bytes_of_a_sample_keeps_samples_aligned(clips: list[Clip]) -> None:
    pcm = _padded(clips[1], None)
    vad = SileroVad()
    vad.process(b"\x00\x00\x00")  # one and a half samples of silence
    vad.reset()
    after = _feed(vad, b"\x00" + pcm)  # the missing half, then the clip
    fresh = _feed(SileroVad(), pcm)
    assert after[0].start_ms == 0  # the 2 samples fed before are 0.08 ms
    probabilities = np.array([f.probability for f in after[: len(fresh)]])
    np.testing.assert_allclose(probabilities, [f.probability for f in fresh], atol=0.05)


def test_segmenter_reports_the_pause_and_stops_early_on_demand() -> None:
    segmenter = VadSegmenter(0.5, silence_duration_ms=1000)
    segmenter.feed(frames(*[0.9] * 10, 0.4, 0.1, 0.1))
    assert segmenter.pause_ms == 11 * 32, "from the first window below the lower threshold"
    assert (segmenter.speech_end_ms, segmenter.position_ms) == (320, 13 * 32)
    segmenter.push(SpeechProbability(13 * 32, 14 * 32, 0.8))
    assert segmenter.pause_ms is None, "speech resumed: the pause is over"
    segmenter.feed(frames(*[0.1] * 20)[15:])
    assert segmenter.pause_ms == 15 * 32
    assert segmenter.stop() == SpeechStopped(audio_end_ms=14 * 32, detected_ms=20 * 32)
    assert not segmenter.speaking and segmenter.pause_ms is None
