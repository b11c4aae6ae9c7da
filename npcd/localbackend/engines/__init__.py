"""Speech engines of the embedded offline backend, each behind a small protocol.

The backend depends only on the protocols and value types defined here, so a test can slot in
a fake and a better engine can replace a default one without touching the server. The default
engines live in submodules and import their heavy libraries lazily, so importing this package
costs nothing:

* `vad.SileroVad` (`VoiceActivity`) and `vad.VadSegmenter`: Silero v6 through onnxruntime,
  then the Realtime ``server_vad`` turn logic.
* `asr.WhisperTranscriber` (`Transcriber`): faster-whisper with Whisper tiny.en, int8.
* `tts.EspeakSynthesizer` (`Synthesizer`): libespeak-ng through ctypes (GPL-3.0; loaded only
  when constructed).
* `intents.MiniLmEmbedder` and `intents.IntentMatcher` (`IntentModel`): all-MiniLM-L6-v2 int8.

Every engine is synchronous and CPU-bound: the server calls it from a worker thread
(``asyncio.to_thread``). All audio is PCM16 mono 24 kHz (`npcd.audio.REALTIME_FORMAT`), and all
times are milliseconds on that audio's timeline.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "IntentModel",
    "Match",
    "PhonemeEvent",
    "SpeechChunk",
    "SpeechProbability",
    "Synthesizer",
    "Transcriber",
    "VoiceActivity",
    "WordEvent",
]


@dataclass(frozen=True, slots=True)
class SpeechProbability:
    """The VAD's verdict on one window of input, ``[start_ms, end_ms)`` since the first audio."""

    start_ms: int
    end_ms: int
    probability: float


@dataclass(frozen=True, slots=True)
class WordEvent:
    """A word starts at ``audio_ms``; ``text[start:end]`` is the word in the synthesised text."""

    audio_ms: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class PhonemeEvent:
    """A phoneme (IPA; empty for a pause) starts at ``audio_ms``: what drives lip-sync visemes."""

    audio_ms: int
    phoneme: str


@dataclass(frozen=True, slots=True)
class SpeechChunk:
    """A piece of synthesised speech and the events that start inside it.

    ``start_ms`` is where ``pcm`` begins on the response's timeline; event times use the same
    timeline, so ``start_ms <= audio_ms`` for every event, and events only run past the chunk's
    end in the final chunk (clamped to the total duration there).
    """

    pcm: bytes
    start_ms: float
    words: tuple[WordEvent, ...] = ()
    phonemes: tuple[PhonemeEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class Match:
    """The scripted line whose example phrases are closest in meaning to what the player said."""

    intent: int
    score: float
    phrase: str


@runtime_checkable
class VoiceActivity(Protocol):
    """Speech probabilities for one input stream; keep one instance per session (it has state)."""

    def process(self, pcm16: bytes) -> list[SpeechProbability]:
        """Feed PCM16 24 kHz of any length; return the windows it completed, in order."""
        ...

    def reset(self) -> None:
        """Forget buffered audio and model state; the clock keeps counting fed audio."""
        ...


@runtime_checkable
class Transcriber(Protocol):
    """Speech to text for one finished utterance."""

    def transcribe(self, pcm16: bytes, prompt: str = "") -> str:
        """Text of PCM16 24 kHz speech; ``prompt`` biases spelling towards names it contains."""
        ...


@runtime_checkable
class Synthesizer(Protocol):
    """Text to speech, streamed so playback can start before the whole text is rendered."""

    @property
    def voices(self) -> tuple[str, ...]:
        """The Realtime voice names this engine accepts."""
        ...

    def synthesize(
        self,
        text: str,
        voice: str,
        speed: float = 1.0,
        cancel: threading.Event | None = None,
    ) -> Iterator[SpeechChunk]:
        """PCM16 24 kHz chunks; stops early, without error, once ``cancel`` is set."""
        ...


@runtime_checkable
class IntentModel(Protocol):
    """Chooses which scripted line answers the player; ``None`` means use a fallback line."""

    def match(self, text: str) -> Match | None: ...
