"""Whisper tiny.en on real human speech (the LibriVox fixtures)."""

from __future__ import annotations

import pytest

from npcd.localbackend.engines import Transcriber
from npcd.localbackend.engines.asr import WhisperTranscriber
from tests.unit.engines.speech import Clip, word_errors


@pytest.fixture(scope="module")
def librivox(clips: list[Clip], transcriber: WhisperTranscriber) -> list[tuple[Clip, str]]:
    return [(clip, transcriber.transcribe(clip.pcm24k)) for clip in clips]


def test_whisper_satisfies_the_protocol(transcriber: WhisperTranscriber) -> None:
    assert isinstance(transcriber, Transcriber)


def test_librivox_word_error_rate(librivox: list[tuple[Clip, str]]) -> None:
    # Measured (int8, greedy, 1 or 2 threads): 0870 0/22, 0880 2/8 ("ill disposed" ->
    # "old-sposed"), 0890 0/14: 2/44 = 0.045 overall. Fed at 16 kHz directly, without the
    # 24 kHz round trip, 0890 gave 2/14 ("old-sposed" again), so leave room for one such slip.
    errors = words = 0
    for clip, text in librivox:
        clip_errors, clip_words = word_errors(clip.text, text)
        assert clip_errors / clip_words <= 0.4, (clip.name, text)
        errors += clip_errors
        words += clip_words
    assert errors / words <= 0.2


def test_prompt_keeps_plain_speech_intact(
    clips: list[Clip], transcriber: WhisperTranscriber
) -> None:
    clip = clips[0]
    text = transcriber.transcribe(clip.pcm24k, prompt="Dashwood, Norland, Elinor, Marianne")
    errors, words = word_errors(clip.text, text)
    assert errors / words <= 0.2, text


@pytest.mark.parametrize("pcm", [b"", b"\x00\x00" * 100, b"\x01"])
def test_too_little_audio_gives_no_text(transcriber: WhisperTranscriber, pcm: bytes) -> None:
    assert transcriber.transcribe(pcm) == ""


def test_cpu_threads_must_be_positive() -> None:
    with pytest.raises(ValueError):
        WhisperTranscriber(cpu_threads=0)
