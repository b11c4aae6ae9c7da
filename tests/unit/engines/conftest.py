"""Session-scoped engines: each model loads once for the whole engines suite."""

from __future__ import annotations

import pytest

from npcd.localbackend.engines.asr import WhisperTranscriber
from npcd.localbackend.engines.intents import MiniLmEmbedder
from npcd.localbackend.engines.tts import EspeakSynthesizer
from tests.unit.engines.speech import Clip, load_clips


@pytest.fixture(scope="session")
def clips() -> list[Clip]:
    return load_clips()


@pytest.fixture(scope="session")
def transcriber() -> WhisperTranscriber:
    engine = WhisperTranscriber()
    engine.load()
    return engine


@pytest.fixture(scope="session")
def synthesizer() -> EspeakSynthesizer:
    return EspeakSynthesizer()


@pytest.fixture(scope="session")
def embedder() -> MiniLmEmbedder:
    engine = MiniLmEmbedder()
    engine.load()
    return engine
