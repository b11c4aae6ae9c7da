"""eSpeak NG synthesis: audio, voices, events, streaming and cancellation."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from npcd.localbackend.engines import SpeechChunk, Synthesizer
from npcd.localbackend.engines import tts as tts_module
from npcd.localbackend.engines.tts import VOICE_MAP, EspeakSynthesizer
from npcd.personas.model import VOICES
from tests.unit.engines.speech import from_pcm16, median_f0

LINE = "The old mill beyond the northern hills has been abandoned for many years."
PARAGRAPH = (
    "Greetings, traveller! The old mill beyond the northern hills has been abandoned for many "
    "years. Nobody goes there after dark. If you mean to go, take a torch, a sharp blade and a "
    "friend you trust. And come back before the gate closes at dusk."
)


def render(engine: EspeakSynthesizer, text: str, voice: str = "ash", **kw: object) -> bytes:
    return b"".join(chunk.pcm for chunk in engine.synthesize(text, voice, **kw))  # type: ignore[arg-type]


def test_espeak_satisfies_the_protocol(synthesizer: EspeakSynthesizer) -> None:
    assert isinstance(synthesizer, Synthesizer)


def test_every_realtime_voice_has_a_distinct_espeak_voice(synthesizer: EspeakSynthesizer) -> None:
    assert set(synthesizer.voices) == set(VOICES)
    assert len(set(VOICE_MAP.values())) == len(VOICE_MAP)


def test_output_is_audible_pcm16_of_plausible_duration(synthesizer: EspeakSynthesizer) -> None:
    chunks = list(synthesizer.synthesize(LINE, "coral"))
    pcm = b"".join(c.pcm for c in chunks)
    assert len(pcm) % 2 == 0
    samples = from_pcm16(pcm)
    seconds = samples.size / 24000
    assert 2.5 < seconds < 8.0  # 13 words at 150-185 words per minute, plus pauses
    assert 10 * np.log10(float((samples**2).mean())) > -35.0
    assert np.abs(samples).max() < 1.0
    # start_ms is the running total of the audio before each chunk.
    position = 0.0
    for chunk in chunks:
        assert chunk.start_ms == pytest.approx(position)
        position += len(chunk.pcm) / 48
    # The last event (the closing pause) lands at the end of the audio: the 22.05 -> 24 kHz
    # conversion keeps time, rather than playing eSpeak's samples 9 % fast.
    assert chunks[-1].phonemes[-1].audio_ms == pytest.approx(seconds * 1000, abs=20)


def test_voices_differ_in_pitch(synthesizer: EspeakSynthesizer) -> None:
    pitch = {v: median_f0(from_pcm16(render(synthesizer, LINE, v))) for v in VOICE_MAP}
    for voice in ("ash", "ballad", "echo", "verse", "cedar"):
        assert 60 < pitch[voice] < 140, (voice, pitch[voice])
    for voice in ("coral", "sage", "shimmer", "marin"):
        assert 160 < pitch[voice] < 300, (voice, pitch[voice])
    assert pitch["cedar"] < pitch["ash"] < pitch["echo"]
    assert pitch["alloy"] - pitch["ash"] > 20  # the neutral voice sits above the gruff one


def _events(chunks: list[SpeechChunk]) -> tuple[list[int], list[int], float]:
    words = [w.audio_ms for c in chunks for w in c.words]
    phonemes = [p.audio_ms for c in chunks for p in c.phonemes]
    return words, phonemes, sum(len(c.pcm) for c in chunks) / 48


def test_events_are_monotonic_and_inside_the_audio(synthesizer: EspeakSynthesizer) -> None:
    chunks = list(synthesizer.synthesize(PARAGRAPH, "sage"))
    words, phonemes, duration = _events(chunks)
    assert len(words) >= 40
    assert len(phonemes) > 3 * len(words)
    for times in (words, phonemes):
        assert times == sorted(times)
        assert 0 <= times[0] and times[-1] <= duration
    for chunk in chunks[:-1]:
        end = chunk.start_ms + len(chunk.pcm) / 48
        assert all(w.audio_ms < end for w in chunk.words)
        assert all(p.audio_ms < end for p in chunk.phonemes)
    assert any(p.phoneme and not p.phoneme.isascii() for c in chunks for p in c.phonemes)


def test_word_events_point_at_the_words_of_the_text(synthesizer: EspeakSynthesizer) -> None:
    text = "Héllo there, traveller!  Forty gold; no less."
    words = [w for c in synthesizer.synthesize(text, "ash") for w in c.words]
    spoken = [text[w.start : w.end] for w in words]
    assert spoken == re.findall(r"\w+", text)


def test_long_text_streams_sentence_by_sentence(
    synthesizer: EspeakSynthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders = 0
    original = tts_module._Espeak.render

    def counting(self: tts_module._Espeak, *args: object) -> tts_module._Render:
        nonlocal renders
        renders += 1
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(tts_module._Espeak, "render", counting)
    stream = synthesizer.synthesize(PARAGRAPH, "verse")
    first = next(stream)
    assert renders == 1 and first.pcm  # the first sentence plays before the rest renders
    rest = list(stream)
    assert renders == 5 and len(rest) == 5  # four more sentences, then the resampler's tail


def test_speed_changes_the_pace(synthesizer: EspeakSynthesizer) -> None:
    slow = len(render(synthesizer, LINE, "echo", speed=0.75))
    normal = len(render(synthesizer, LINE, "echo"))
    fast = len(render(synthesizer, LINE, "echo", speed=1.5))
    assert slow > normal * 1.15 and fast < normal * 0.8


def test_cancel_before_start_yields_nothing(synthesizer: EspeakSynthesizer) -> None:
    cancel = threading.Event()
    cancel.set()
    assert list(synthesizer.synthesize(PARAGRAPH, "ash", cancel=cancel)) == []


def test_cancel_between_chunks_ends_the_stream(synthesizer: EspeakSynthesizer) -> None:
    cancel = threading.Event()
    stream = synthesizer.synthesize(PARAGRAPH, "ash", cancel=cancel)
    next(stream)
    cancel.set()
    assert list(stream) == []


class _CancelAfter(threading.Event):
    """Reads as set from the n-th check on: cancels from inside eSpeak's callback."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0


def test_cancel_aborts_inside_a_sentence(synthesizer: EspeakSynthesizer) -> None:
    long_sentence = " ".join(["and the wolves came down from the hills"] * 6) + "."
    cancel = _CancelAfter(checks=4)
    assert list(synthesizer.synthesize(long_sentence, "ash", cancel=cancel)) == []
    # eSpeak is usable again afterwards.
    assert render(synthesizer, "Still here.", "ash")


def _summary(chunks: list[SpeechChunk]) -> tuple[float, list[tuple[int, int]], float]:
    pcm = b"".join(chunk.pcm for chunk in chunks)
    words = [(w.start, w.end) for chunk in chunks for w in chunk.words]
    return len(pcm) / 48, words, median_f0(from_pcm16(pcm))


def test_concurrent_sessions_sound_like_serial_ones(synthesizer: EspeakSynthesizer) -> None:
    # eSpeak varies its output slightly from call to call (a few ms of timing, noise
    # excitation), so compare what would show a mix-up: duration, words, pitch.
    jobs = [("ash", LINE), ("shimmer", PARAGRAPH), ("cedar", "Hm. Ask me about steel.")] * 3
    serial = {job: _summary(list(synthesizer.synthesize(job[1], job[0]))) for job in jobs}
    results: dict[int, tuple[float, list[tuple[int, int]], float]] = {}

    def run(index: int, voice: str, text: str) -> None:
        results[index] = _summary(list(synthesizer.synthesize(text, voice)))

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for index, job in enumerate(jobs):
        duration, words, pitch = results[index]
        expected_duration, expected_words, expected_pitch = serial[job]
        assert duration == pytest.approx(expected_duration, rel=0.03)
        assert words == expected_words
        assert pitch == pytest.approx(expected_pitch, rel=0.1)


def test_blank_text_gives_no_audio(synthesizer: EspeakSynthesizer) -> None:
    assert list(synthesizer.synthesize("  \n ", "ash")) == []


@pytest.mark.parametrize(("voice", "speed"), [("nova", 1.0), ("ash", 0.0)])
def test_bad_arguments_are_rejected(
    synthesizer: EspeakSynthesizer, voice: str, speed: float
) -> None:
    with pytest.raises(ValueError):
        next(synthesizer.synthesize(LINE, voice, speed))
