"""A persona plus game context -> the `SessionConfig` that sets a Realtime session up.

The one place where persona fields meet protocol fields, so a persona writer's setting and the
wire field it lands in are easy to trace. Dialect differences are not handled here: the codec
drops what a dialect lacks (GA has no `temperature`).
"""

from __future__ import annotations

from collections.abc import Mapping

from npcd.personas.model import Persona, TurnDetection
from npcd.personas.prompt import render_instructions
from npcd.realtime.values import (
    AudioFormat,
    FunctionTool,
    InputTranscription,
    Modality,
    SemanticVad,
    ServerVad,
    SessionConfig,
)
from npcd.realtime.values import TurnDetection as WireTurnDetection


def session_config(
    persona: Persona,
    context: Mapping[str, str] | None = None,
    *,
    actions: bool = True,
    push_to_talk: bool = False,
    transcription: bool = True,
    output_modalities: tuple[Modality, ...] | None = None,
) -> SessionConfig:
    """The full session configuration for ``persona``.

    ``actions`` offers the persona's actions as function tools (only to clients that can answer
    them); ``push_to_talk`` turns server VAD off whatever the persona says, because the game
    decides when a turn ends; ``transcription`` asks for the player's words as text.
    """
    modalities: tuple[Modality, ...] = output_modalities or tuple(persona.model.output_modalities)
    return SessionConfig(
        instructions=render_instructions(persona, context or {}),
        voice=persona.voice,
        output_modalities=modalities,
        input_audio_format=AudioFormat.PCM16,
        output_audio_format=AudioFormat.PCM16,
        input_transcription=(
            InputTranscription(
                model=persona.transcription.model,
                language=persona.transcription.language,
                prompt=persona.transcription.prompt or None,
            )
            if transcription
            else None
        ),
        turn_detection=None if push_to_talk else turn_detection(persona.turn_detection),
        tools=tuple(
            FunctionTool(name=a.name, description=a.description, parameters=a.parameters)
            for a in persona.actions
        )
        if actions
        else (),
        tool_choice="auto",
        temperature=persona.model.temperature,
        max_output_tokens=persona.model.max_output_tokens or "inf",
        speed=persona.model.speed,
    )


def turn_detection(settings: TurnDetection) -> WireTurnDetection | None:
    """Persona turn detection -> wire turn detection (None = push-to-talk)."""
    if settings.type == "none":
        return None
    if settings.type == "semantic_vad":
        return SemanticVad(
            eagerness=settings.eagerness,
            create_response=True,
            interrupt_response=settings.interrupt_response,
        )
    return ServerVad(
        threshold=settings.threshold,
        prefix_padding_ms=settings.prefix_padding_ms,
        silence_duration_ms=settings.silence_duration_ms,
        create_response=True,
        interrupt_response=settings.interrupt_response,
    )
