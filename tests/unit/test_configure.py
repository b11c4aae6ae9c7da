"""Persona -> session config, and the frames it becomes in both dialects (checked by the SDK)."""

from __future__ import annotations

import orjson
import pytest

from npcd.personas import load_directory
from npcd.realtime import events as ev
from npcd.realtime.codec import encode_client
from npcd.realtime.configure import session_config
from npcd.realtime.values import Dialect, SemanticVad, ServerVad
from tests.conftest import SAMPLES
from tests.unit.sdk_validator import validate

PERSONAS = {pid: loaded.persona for pid, loaded in load_directory(SAMPLES).personas.items()}


def test_blacksmith_config_carries_every_persona_setting() -> None:
    config = session_config(PERSONAS["blacksmith"], {"player_name": "Ada"})
    assert isinstance(config.instructions, str) and "talking to Ada" in config.instructions
    assert config.voice == "ash"
    assert config.output_modalities == ("audio",)
    assert config.turn_detection == ServerVad(
        threshold=0.55,
        prefix_padding_ms=300,
        silence_duration_ms=600,
        create_response=True,
        interrupt_response=True,
    )
    assert config.tools != () and [t.name for t in config.tools] == ["sell_item", "repair_item"]  # type: ignore[union-attr]
    assert config.max_output_tokens == 300 and config.temperature == 0.8
    assert config.input_transcription is not None


def test_semantic_vad_push_to_talk_and_no_actions() -> None:
    guard = PERSONAS["gate_guard"]
    assert session_config(guard).turn_detection == SemanticVad(
        eagerness="high", create_response=True, interrupt_response=True
    )
    config = session_config(guard, push_to_talk=True, actions=False, transcription=False)
    assert config.turn_detection is None and config.tools == ()
    assert config.input_transcription is None
    assert session_config(PERSONAS["innkeeper"]).turn_detection is None, "persona type: none"
    assert session_config(PERSONAS["innkeeper"]).max_output_tokens == "inf"


@pytest.mark.parametrize("dialect", list(Dialect))
@pytest.mark.parametrize("persona_id", sorted(PERSONAS))
def test_every_sample_persona_makes_a_valid_session_update(
    persona_id: str, dialect: Dialect
) -> None:
    frame = encode_client(ev.SessionUpdate(session=session_config(PERSONAS[persona_id])), dialect)
    validate(frame, dialect, "client")
    session = orjson.loads(frame)["session"]
    if dialect is Dialect.GA:
        assert session["type"] == "realtime" and "temperature" not in session
        assert session["audio"]["output"]["voice"] == PERSONAS[persona_id].voice
    else:
        assert session["voice"] == PERSONAS[persona_id].voice
