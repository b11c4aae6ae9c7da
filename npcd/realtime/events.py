"""Typed Realtime events: one dialect-neutral class per event, named after the GA event type.

This is the single import point for the event model (value types are re-exported from
`npcd.realtime.values`); `npcd.realtime.codec` turns these into JSON text and back for either
dialect. Client and server events live here together because the embedded local server plays
the other end of the same protocol with the same classes.

Conventions: all events are frozen, slotted, keyword-only dataclasses. Server events require
`event_id` (the SDK requires it on the wire); client events may omit it (the server echoes it in
`error.event_id`, which is how npcd correlates failures). Field names are the GA wire names.

Item announcements: GA sends `conversation.item.added` (item entered the conversation, model
items still empty and `in_progress`) and later `conversation.item.done` (final item, no audio
bytes); beta sent only `conversation.item.created`, at the moment GA sends `added`. So:
`ConversationItemAdded` is the canonical "item appeared" event in both dialects (beta wire name
`conversation.item.created`); `ConversationItemDone` exists only in GA (encoding it for beta
raises `EncodeError`; check `codec.server_event_supported` first). `ConversationItemCreated` is
kept because the GA union still declares `conversation.item.created`; treat it like `Added`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from npcd.realtime.values import (
    UNSET,
    AssistantContent,
    AssistantMessage,
    AudioFormat,
    CachedTokenDetails,
    Conversation,
    CustomVoice,
    Dialect,
    EncodeError,
    ErrorDetail,
    EventError,
    FunctionCall,
    FunctionCallOutput,
    FunctionTool,
    FunctionToolChoice,
    InputAudio,
    InputImage,
    InputText,
    InputTokenDetails,
    InputTranscription,
    Item,
    ItemStatus,
    JsonValue,
    LogProb,
    MaxTokens,
    Modality,
    NoiseReduction,
    OutputAudio,
    OutputText,
    OutputTokenDetails,
    RateLimit,
    Response,
    ResponseError,
    ResponseOverrides,
    ResponseStatus,
    SemanticVad,
    ServerVad,
    SessionConfig,
    StatusDetails,
    SystemMessage,
    ToolChoice,
    ToolChoiceMode,
    TranscriptDurationUsage,
    TranscriptTokenDetails,
    TranscriptTokenUsage,
    TranscriptUsage,
    TurnDetection,
    UnknownItem,
    Unset,
    UnsetType,
    Usage,
    UserContent,
    UserMessage,
    Voice,
)

# --------------------------------------------------------------------------------------------
# Client events (client -> server)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionUpdate:
    """Partial session update; GA rejects the whole update if one field is unknown."""

    session: SessionConfig
    event_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferAppend:
    """Base64 audio in the session input format (at most 15 MiB); the server never acks it."""

    audio: str
    event_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferCommit:
    """Needs >= 100 ms buffered; never starts a response by itself."""

    event_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferClear:
    event_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemCreate:
    """`previous_item_id="root"` inserts at the start; an unknown id is an error."""

    item: Item
    previous_item_id: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemRetrieve:
    item_id: str
    event_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemTruncate:
    """Cut assistant audio at `audio_end_ms` (ms actually played, clamped to audio received)."""

    item_id: str
    content_index: int
    audio_end_ms: int
    event_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemDelete:
    item_id: str
    event_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseCreate:
    """Start a response; only one may write to the default conversation at a time."""

    response: ResponseOverrides | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseCancel:
    """Cancel `response_id`, or the active default-conversation response when omitted."""

    response_id: str | None = None
    event_id: str | None = None


ClientEvent: TypeAlias = (
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemRetrieve
    | ConversationItemTruncate
    | ConversationItemDelete
    | ResponseCreate
    | ResponseCancel
)

# --------------------------------------------------------------------------------------------
# Server events (server -> client)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCreated:
    """Always the first event. A second one on the same stream means a new, empty session."""

    event_id: str
    session: SessionConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionUpdated:
    """Carries the full effective configuration after a `session.update`."""

    event_id: str
    session: SessionConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationCreated:
    event_id: str
    conversation: Conversation


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemAdded:
    """An item entered the conversation (beta wire name: `conversation.item.created`)."""

    event_id: str
    item: Item
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemDone:
    """GA only: the item is final (no audio bytes). Beta has no equivalent event."""

    event_id: str
    item: Item
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemCreated:
    """GA's legacy name for `ConversationItemAdded`, still in the GA union; handle it the same."""

    event_id: str
    item: Item
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemRetrieved:
    """The full item, including post-processed audio."""

    event_id: str
    item: Item


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemTruncated:
    event_id: str
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemDeleted:
    event_id: str
    item_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferSpeechStarted:
    """Barge-in signal: stop local playback now. `audio_start_ms` counts from session start."""

    event_id: str
    audio_start_ms: int
    item_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferSpeechStopped:
    event_id: str
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferCommitted:
    """Correlate late transcripts by this `item_id`, not by arrival order."""

    event_id: str
    item_id: str
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferCleared:
    event_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferTimeoutTriggered:
    """GA only: `idle_timeout_ms` of silence elapsed; the server commits and responds."""

    event_id: str
    item_id: str
    audio_start_ms: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemInputAudioTranscriptionDelta:
    event_id: str
    item_id: str
    content_index: int | None = None
    delta: str | None = None
    logprobs: tuple[LogProb, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemInputAudioTranscriptionCompleted:
    """May arrive after the NPC already answered; `languages` is GA-only."""

    event_id: str
    item_id: str
    content_index: int
    transcript: str
    usage: TranscriptUsage
    logprobs: tuple[LogProb, ...] | None = None
    languages: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemInputAudioTranscriptionFailed:
    event_id: str
    item_id: str
    content_index: int
    error: ErrorDetail


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseCreated:
    event_id: str
    response: Response


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseDone:
    """Always sent, whatever the outcome (completed, cancelled, failed, incomplete)."""

    event_id: str
    response: Response


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputItemAdded:
    event_id: str
    response_id: str
    output_index: int
    item: Item


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputItemDone:
    event_id: str
    response_id: str
    output_index: int
    item: Item


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseContentPartAdded:
    """`part` is `text`/`audio` on the wire in both dialects (not `output_*`)."""

    event_id: str
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    part: AssistantContent


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseContentPartDone:
    event_id: str
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    part: AssistantContent


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputTextDelta:
    """Beta wire name: `response.text.delta`."""

    event_id: str
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputTextDone:
    """Beta wire name: `response.text.done`."""

    event_id: str
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputAudioDelta:
    """Base64 audio chunk (beta: `response.audio.delta`); arrives faster than real time."""

    event_id: str
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputAudioDone:
    """Beta: `response.audio.done`. Deltas may still be queued for playback: drain, then stop."""

    event_id: str
    response_id: str
    item_id: str
    output_index: int
    content_index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputAudioTranscriptDelta:
    """Beta wire name: `response.audio_transcript.delta`."""

    event_id: str
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputAudioTranscriptDone:
    """Beta wire name: `response.audio_transcript.done`."""

    event_id: str
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    transcript: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseFunctionCallArgumentsDelta:
    event_id: str
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseFunctionCallArgumentsDone:
    """`name` is required in GA and absent in beta (the beta encoder omits it)."""

    event_id: str
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    arguments: str
    name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitsUpdated:
    """Partial insight only; do not rely on its position in the stream."""

    event_id: str
    rate_limits: tuple[RateLimit, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorEvent:
    """The `error` event; most errors leave the session open (classify with `policy`)."""

    event_id: str
    error: ErrorDetail


@dataclass(frozen=True, slots=True)
class UnknownServerEvent:
    """Any server event type this model does not represent; kept verbatim, never fatal."""

    type: str
    raw: Mapping[str, Any]


ServerEvent: TypeAlias = (
    SessionCreated
    | SessionUpdated
    | ConversationCreated
    | ConversationItemAdded
    | ConversationItemDone
    | ConversationItemCreated
    | ConversationItemRetrieved
    | ConversationItemTruncated
    | ConversationItemDeleted
    | InputAudioBufferSpeechStarted
    | InputAudioBufferSpeechStopped
    | InputAudioBufferCommitted
    | InputAudioBufferCleared
    | InputAudioBufferTimeoutTriggered
    | ConversationItemInputAudioTranscriptionDelta
    | ConversationItemInputAudioTranscriptionCompleted
    | ConversationItemInputAudioTranscriptionFailed
    | ResponseCreated
    | ResponseDone
    | ResponseOutputItemAdded
    | ResponseOutputItemDone
    | ResponseContentPartAdded
    | ResponseContentPartDone
    | ResponseOutputTextDelta
    | ResponseOutputTextDone
    | ResponseOutputAudioDelta
    | ResponseOutputAudioDone
    | ResponseOutputAudioTranscriptDelta
    | ResponseOutputAudioTranscriptDone
    | ResponseFunctionCallArgumentsDelta
    | ResponseFunctionCallArgumentsDone
    | RateLimitsUpdated
    | ErrorEvent
    | UnknownServerEvent
)

__all__ = [
    "UNSET",
    "AssistantContent",
    "AssistantMessage",
    "AudioFormat",
    "CachedTokenDetails",
    "ClientEvent",
    "Conversation",
    "ConversationCreated",
    "ConversationItemAdded",
    "ConversationItemCreate",
    "ConversationItemCreated",
    "ConversationItemDelete",
    "ConversationItemDeleted",
    "ConversationItemDone",
    "ConversationItemInputAudioTranscriptionCompleted",
    "ConversationItemInputAudioTranscriptionDelta",
    "ConversationItemInputAudioTranscriptionFailed",
    "ConversationItemRetrieve",
    "ConversationItemRetrieved",
    "ConversationItemTruncate",
    "ConversationItemTruncated",
    "CustomVoice",
    "Dialect",
    "EncodeError",
    "ErrorDetail",
    "ErrorEvent",
    "EventError",
    "FunctionCall",
    "FunctionCallOutput",
    "FunctionTool",
    "FunctionToolChoice",
    "InputAudio",
    "InputAudioBufferAppend",
    "InputAudioBufferClear",
    "InputAudioBufferCleared",
    "InputAudioBufferCommit",
    "InputAudioBufferCommitted",
    "InputAudioBufferSpeechStarted",
    "InputAudioBufferSpeechStopped",
    "InputAudioBufferTimeoutTriggered",
    "InputImage",
    "InputText",
    "InputTokenDetails",
    "InputTranscription",
    "Item",
    "ItemStatus",
    "JsonValue",
    "LogProb",
    "MaxTokens",
    "Modality",
    "NoiseReduction",
    "OutputAudio",
    "OutputText",
    "OutputTokenDetails",
    "RateLimit",
    "RateLimitsUpdated",
    "Response",
    "ResponseCancel",
    "ResponseContentPartAdded",
    "ResponseContentPartDone",
    "ResponseCreate",
    "ResponseCreated",
    "ResponseDone",
    "ResponseError",
    "ResponseFunctionCallArgumentsDelta",
    "ResponseFunctionCallArgumentsDone",
    "ResponseOutputAudioDelta",
    "ResponseOutputAudioDone",
    "ResponseOutputAudioTranscriptDelta",
    "ResponseOutputAudioTranscriptDone",
    "ResponseOutputItemAdded",
    "ResponseOutputItemDone",
    "ResponseOutputTextDelta",
    "ResponseOutputTextDone",
    "ResponseOverrides",
    "ResponseStatus",
    "SemanticVad",
    "ServerEvent",
    "ServerVad",
    "SessionConfig",
    "SessionCreated",
    "SessionUpdate",
    "SessionUpdated",
    "StatusDetails",
    "SystemMessage",
    "ToolChoice",
    "ToolChoiceMode",
    "TranscriptDurationUsage",
    "TranscriptTokenDetails",
    "TranscriptTokenUsage",
    "TranscriptUsage",
    "TurnDetection",
    "UnknownItem",
    "UnknownServerEvent",
    "Unset",
    "UnsetType",
    "Usage",
    "UserContent",
    "UserMessage",
    "Voice",
]
