"""The engines the local backend uses unless told otherwise (all from PyPI, models inside).

Silero VAD (onnxruntime), Whisper tiny.en (faster-whisper), eSpeak NG (libespeak-ng, GPL-3.0,
loaded only here) and all-MiniLM-L6-v2 int8 for matching player lines to dialogue. They come
with the ``local`` extra; without it `default_engines` says how to install them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from npcd.errors import StartupError
from npcd.localbackend.brain import Brain
from npcd.localbackend.session import Engines
from npcd.personas.model import Persona


@functools.cache
def default_engines() -> Engines:
    """The offline speech stack, one per process (the engines are thread-safe and their models
    are large); models load on `Engines.warm` or on first use."""
    try:
        from npcd.localbackend.engines.asr import WhisperTranscriber
        from npcd.localbackend.engines.intents import shared_embedder
        from npcd.localbackend.engines.tts import EspeakSynthesizer
        from npcd.localbackend.engines.vad import SileroVad
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise StartupError(
            f"the local backend needs its speech engines ({exc.name} is missing): "
            "pip install 'npcd[local]'"
        ) from None
    transcriber = WhisperTranscriber()
    synthesizer = EspeakSynthesizer()
    embedder = shared_embedder()

    def brain(persona: Persona | None) -> Brain:
        return Brain(persona, embedder.matcher)

    def warm(personas: Iterable[Persona]) -> None:
        transcriber.load()
        embedder.load()
        SileroVad().load()
        for persona in personas:
            Brain(persona, embedder.matcher)  # builds and caches the persona's matcher

    return Engines(
        vad=SileroVad, transcriber=transcriber, synthesizer=synthesizer, brain=brain, warm=warm
    )
