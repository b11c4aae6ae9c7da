"""The usage a local response reports, sized and shaped as OpenAI's GA Realtime service's.

npcd prices `response.done` usage per model, so an offline session priced "as if" it were
gpt-realtime gives a meaningful estimate only if the counts are of the service's size. Estimates:

- text: 1 token per 4 characters, rounded up per piece (the usual rule for English with
  OpenAI's tokenizers; the few special tokens the service adds per message are left out).
  Input text is the instructions, the tool declarations (as JSON) and every text item: system
  notes, typed player lines, assistant text, function call arguments and outputs;
- audio, at the rates of OpenAI's Realtime cost guide: the player's 1 token per 100 ms, the
  model's 1 per 50 ms, a started token counting whole. The session keeps each assistant reply's
  audio length (as truncated), so earlier spoken replies are input audio, as the service counts
  them; a reply without audio is input text;
- output: the response's audio, its transcript (or text) and its function call arguments;
- cached input: the whole pieces this response's input shares, from its start, with the input
  of the session's previous response: what prompt caching reuses when the conversation only
  grew. The service counts cache blocks, so its figure differs a little.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from npcd.realtime.values import (
    AssistantMessage,
    CachedTokenDetails,
    FunctionCall,
    FunctionCallOutput,
    FunctionTool,
    InputAudio,
    InputText,
    InputTokenDetails,
    Item,
    OutputTokenDetails,
    SystemMessage,
    Usage,
    UserMessage,
)

__all__ = [
    "Piece",
    "audio_tokens",
    "estimate",
    "input_piece",
    "output_piece",
    "prompt",
    "text_tokens",
]

CHARS_PER_TOKEN = 4
PLAYER_MS_PER_TOKEN = 100
MODEL_MS_PER_TOKEN = 50
#: PCM16 mono at 24 kHz, the only audio a local session holds.
BYTES_PER_MS = 48


@dataclass(frozen=True, slots=True)
class Piece:
    """One part of a response's input or output: text and audio, as the model takes it in.

    ``key`` (an item id) keeps apart pieces of equal size but other content, such as two
    recordings of one length, so they never pass for a cached prefix.
    """

    key: str
    text: str = ""
    player_ms: float = 0.0
    model_ms: float = 0.0

    @property
    def text_tokens(self) -> int:
        return text_tokens(self.text)

    @property
    def audio_tokens(self) -> int:
        return audio_tokens(self.player_ms, PLAYER_MS_PER_TOKEN) + audio_tokens(
            self.model_ms, MODEL_MS_PER_TOKEN
        )


def text_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def audio_tokens(ms: float, ms_per_token: int) -> int:
    # Rounded first, so audio measured in bytes (2300.0000001 ms) does not gain a token.
    return math.ceil(round(ms / ms_per_token, 6))


def estimate(
    prompt: Sequence[Piece], output: Sequence[Piece], previous: Sequence[Piece] = ()
) -> Usage:
    """The usage of a response that read ``prompt`` and produced ``output``.

    ``previous`` is the prompt of the session's previous response (empty for the first).
    """
    shared = 0
    for mine, before in zip(prompt, previous, strict=False):
        if mine != before:
            break
        shared += 1
    in_text = sum(p.text_tokens for p in prompt)
    in_audio = sum(p.audio_tokens for p in prompt)
    cached_text = sum(p.text_tokens for p in prompt[:shared])
    cached_audio = sum(p.audio_tokens for p in prompt[:shared])
    out_text = sum(p.text_tokens for p in output)
    out_audio = sum(p.audio_tokens for p in output)
    return Usage(
        total_tokens=in_text + in_audio + out_text + out_audio,
        input_tokens=in_text + in_audio,
        output_tokens=out_text + out_audio,
        input_token_details=InputTokenDetails(
            text_tokens=in_text,
            audio_tokens=in_audio,
            image_tokens=0,
            cached_tokens=cached_text + cached_audio,
            cached_tokens_details=CachedTokenDetails(
                text_tokens=cached_text, audio_tokens=cached_audio, image_tokens=0
            ),
        ),
        output_token_details=OutputTokenDetails(text_tokens=out_text, audio_tokens=out_audio),
    )


def prompt(
    instructions: str, tools: Sequence[FunctionTool], items: Iterable[Piece]
) -> tuple[Piece, ...]:
    """A response's input: its instructions and tool declarations first, then ``items``."""
    declared = [
        {"name": t.name, "description": t.description, "parameters": t.parameters} for t in tools
    ]
    head = instructions + (orjson.dumps(declared).decode() if declared else "")
    return (Piece("instructions", head), *items)


def input_piece(key: str, item: Item, audio_bytes: int = 0, transcript: str = "") -> Piece:
    """``item`` as a response reads it; ``audio_bytes`` is the audio the session holds for it
    (the player's as committed, the assistant's as produced and truncated), ``transcript`` an
    assistant reply's spoken text."""
    if isinstance(item, FunctionCall):
        return Piece(key, item.arguments)
    if isinstance(item, FunctionCallOutput):
        return Piece(key, item.output)
    if isinstance(item, AssistantMessage):
        if audio_bytes:
            return Piece(key, model_ms=audio_bytes / BYTES_PER_MS)
        return Piece(key, transcript or _texts(item))
    if isinstance(item, UserMessage):
        if not audio_bytes:  # created with its audio inline: the size its base64 says
            audio_bytes = sum(
                len(c.audio) * 3 // 4 - c.audio[-2:].count("=")
                for c in item.content
                if isinstance(c, InputAudio) and c.audio
            )
        typed = " ".join(c.text or "" for c in item.content if isinstance(c, InputText))
        return Piece(key, typed.strip(), player_ms=audio_bytes / BYTES_PER_MS)
    if isinstance(item, SystemMessage):
        return Piece(key, _texts(item))
    return Piece(key)


def output_piece(item: Item, audio_bytes: int = 0, transcript: str | None = None) -> Piece:
    """A response's output item as produced: its audio with its transcript, its text, or a
    call's arguments. ``transcript`` None takes the item's own content."""
    key = getattr(item, "id", None) or ""
    if isinstance(item, FunctionCall):
        return Piece(key, item.arguments)
    text = _texts(item) if transcript is None else transcript
    return Piece(key, text, model_ms=audio_bytes / BYTES_PER_MS)


def _texts(item: Item) -> str:
    """The text an item's content carries (its text, or its audio's transcript)."""
    texts = [
        getattr(c, "text", None) or getattr(c, "transcript", None) or ""
        for c in getattr(item, "content", ())
    ]
    return " ".join(t for t in texts if t)
