"""Value types of the dialect-neutral Realtime model: session config, items, responses, errors.

Shared by npcd and its embedded local server; the events that carry them are in
`npcd.realtime.events`. Names follow the GA protocol (GA is canonical); `npcd.realtime.dialects`
maps them to the wire shapes of GA and of the older beta (`OpenAI-Beta: realtime=v1`).
Everything is a frozen, slotted dataclass so values can be shared between tasks without copying.
Audio stays base64 `str`: decoding it is the caller's job (pybase64), which keeps the codec
cheap on the hot path.

Optional fields mirror the official SDK models: `None` means "absent on the wire" (or `null`).
`SessionConfig` alone is tri-state because `session.update` is a partial update: `UNSET` = do
not touch, `None` = send `null` (which clears, e.g. `turn_detection=None` is push-to-talk).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Final, Literal, TypeAlias

# Recursive JSON value, for tool parameter schemas and raw unknown payloads.
JsonValue: TypeAlias = "str | int | float | bool | None | list[JsonValue] | dict[str, JsonValue]"


class Dialect(enum.Enum):
    """Wire dialect. GA is the only one the real OpenAI endpoint still accepts (since 2026-05)."""

    GA = "ga"
    BETA = "beta"


class UnsetType(enum.Enum):
    """Sentinel type for "field not present" in a partial `session.update`."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = UnsetType.UNSET
Unset: TypeAlias = Literal[UnsetType.UNSET]


class EventError(ValueError):
    """A frame that is not a valid event.

    Raised by every `decode_*` function and by nothing else in the codec. The fields mirror the
    service's `error` payload so the local server can answer with exactly what OpenAI would send
    (`to_error_detail()`), and so npcd's tests catch shape bugs the real service would reject.
    Codes: `invalid_event` (not JSON / not an object / no `type`), `invalid_value` (unknown event
    type or enum value), `invalid_type`, `unknown_parameter`, `missing_required_parameter`,
    `unsupported_parameter` (a real protocol field this model does not represent). `param` is the
    dotted path inside the event, e.g. `session.audio.input.format.type` or `session.tools[2].x`.
    The message never quotes payload values other than enum-like strings, so it is safe to log.
    """

    def __init__(
        self, code: str, message: str, param: str | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(code, message, param, event_id)  # all args: survives pickling
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"EventError(code={self.code!r}, message={self.message!r}, param={self.param!r})"

    def to_error_detail(self) -> ErrorDetail:
        """The `error` object a Realtime server sends back for this bad client event."""
        return ErrorDetail(
            type="invalid_request_error",
            code=self.code,
            message=self.message,
            param=self.param,
            event_id=self.event_id,
        )


class EncodeError(ValueError):
    """An event or value the target dialect (or side) cannot express; a programming error.

    Examples: `conversation.item.done` or `input_audio_buffer.timeout_triggered` in beta, a
    function `tool_choice` or custom voice in beta, GA `function_call_arguments.done` without
    `name`, or read-only session fields (`id`, `expires_at`, `object`) in `session.update`.
    Fields a dialect simply lacks are omitted instead (see `npcd.realtime.dialects`).
    """


# --------------------------------------------------------------------------------------------
# Shared value types
# --------------------------------------------------------------------------------------------


class AudioFormat(enum.Enum):
    """Session audio format. Values are the GA `format.type`; beta names live in `dialects`."""

    PCM16 = "audio/pcm"  # signed 16-bit little-endian mono, 24 kHz (the only GA rate)
    PCMU = "audio/pcmu"  # G.711 mu-law, 8 kHz
    PCMA = "audio/pcma"  # G.711 A-law, 8 kHz


Modality: TypeAlias = Literal["text", "audio"]
ToolChoiceMode: TypeAlias = Literal["auto", "none", "required"]
ItemStatus: TypeAlias = Literal["completed", "incomplete", "in_progress"]
ResponseStatus: TypeAlias = Literal["completed", "cancelled", "failed", "incomplete", "in_progress"]
MaxTokens: TypeAlias = int | Literal["inf"]


@dataclass(frozen=True, slots=True)
class CustomVoice:
    """A GA custom voice (`{"id": "voice_..."}`); beta cannot express it."""

    id: str


Voice: TypeAlias = str | CustomVoice


@dataclass(frozen=True, slots=True)
class InputTranscription:
    """Asynchronous transcription of user audio; off unless configured (it is `null` by default)."""

    model: str | None = None
    language: str | None = None
    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class NoiseReduction:
    """Input noise reduction; `strength` is GA-only and omitted in beta."""

    type: Literal["near_field", "far_field"] | None = None
    strength: float | None = None


@dataclass(frozen=True, slots=True)
class ServerVad:
    """Energy-based turn detection. `idle_timeout_ms` is GA-only (omitted in beta)."""

    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    idle_timeout_ms: int | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


@dataclass(frozen=True, slots=True)
class SemanticVad:
    """Model-based turn detection; `eagerness` bounds how long it waits (low 8 s .. high 2 s)."""

    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


TurnDetection: TypeAlias = ServerVad | SemanticVad


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A function the model may call; `parameters` is a JSON Schema object."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class FunctionToolChoice:
    """Force one named function (GA only; beta `tool_choice` is a bare mode string)."""

    name: str


ToolChoice: TypeAlias = ToolChoiceMode | FunctionToolChoice


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """Session configuration, as sent in `session.update` and received in `session.*`.

    Tri-state: `UNSET` = not present (a partial update leaves it alone), `None` = JSON `null`
    (clears it: `turn_detection=None` selects push-to-talk), anything else = set. `temperature`
    is beta-only: GA removed it and the GA encoder omits it. `id`, `object` and `expires_at` are
    read-only server fields (`expires_at` is unix seconds); encoding them in `session.update`
    raises `EncodeError`. The session kind is always "realtime": npcd does not model
    transcription-only sessions.
    """

    instructions: str | None | Unset = UNSET
    voice: Voice | None | Unset = UNSET
    output_modalities: tuple[Modality, ...] | None | Unset = UNSET
    input_audio_format: AudioFormat | None | Unset = UNSET
    output_audio_format: AudioFormat | None | Unset = UNSET
    input_transcription: InputTranscription | None | Unset = UNSET
    turn_detection: TurnDetection | None | Unset = UNSET
    noise_reduction: NoiseReduction | None | Unset = UNSET
    tools: tuple[FunctionTool, ...] | None | Unset = UNSET
    tool_choice: ToolChoice | None | Unset = UNSET
    temperature: float | None | Unset = UNSET
    max_output_tokens: MaxTokens | None | Unset = UNSET
    speed: float | None | Unset = UNSET
    model: str | None | Unset = UNSET
    id: str | None | Unset = UNSET
    object: str | None | Unset = UNSET
    expires_at: int | None | Unset = UNSET

    def updated_with(self, update: SessionConfig) -> SessionConfig:
        """Apply a partial update the way the service does: set fields replace, UNSET keeps.

        Nested values (turn detection, transcription, ...) are replaced whole, not merged.
        """
        changes = {
            f.name: value for f in fields(update) if (value := getattr(update, f.name)) is not UNSET
        }
        return replace(self, **changes)


# --------------------------------------------------------------------------------------------
# Conversation items
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputText:
    """User or system text (`input_text` in both dialects)."""

    text: str | None = None


@dataclass(frozen=True, slots=True)
class InputAudio:
    """User audio: base64 in the session input format; `transcript` filled by transcription."""

    audio: str | None = None
    transcript: str | None = None


@dataclass(frozen=True, slots=True)
class InputImage:
    """GA-only user image (`data:` URL); beta cannot express it."""

    image_url: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


@dataclass(frozen=True, slots=True)
class OutputText:
    """Assistant text: `output_text` in GA items; `text` in beta items and content-part events."""

    text: str | None = None


@dataclass(frozen=True, slots=True)
class OutputAudio:
    """Assistant audio: `output_audio` in GA items; `audio` in beta items and content-part events.

    Items in `conversation.item.done` / `response.done` carry the transcript but no audio bytes.
    """

    audio: str | None = None
    transcript: str | None = None


UserContent: TypeAlias = InputText | InputAudio | InputImage
AssistantContent: TypeAlias = OutputText | OutputAudio


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemMessage:
    content: tuple[InputText, ...]
    id: str | None = None
    status: ItemStatus | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UserMessage:
    content: tuple[UserContent, ...]
    id: str | None = None
    status: ItemStatus | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AssistantMessage:
    """An assistant turn. Clients may create text ones (history replay), never audio ones."""

    content: tuple[AssistantContent, ...]
    id: str | None = None
    status: ItemStatus | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionCall:
    """A tool call by the model; `arguments` is a JSON string (possibly partial while streaming)."""

    name: str
    arguments: str
    call_id: str | None = None
    id: str | None = None
    status: ItemStatus | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionCallOutput:
    """The game's answer to a `FunctionCall`; send `response.create` afterwards or the NPC waits."""

    call_id: str
    output: str
    id: str | None = None
    status: ItemStatus | None = None


@dataclass(frozen=True, slots=True)
class UnknownItem:
    """An item type this model does not represent (e.g. GA `mcp_call`); kept verbatim.

    Only produced by `decode_server`, so one MCP item cannot make a whole `response.done` fail.
    """

    type: str | None
    raw: Mapping[str, Any]


Item: TypeAlias = (
    SystemMessage | UserMessage | AssistantMessage | FunctionCall | FunctionCallOutput | UnknownItem
)


# --------------------------------------------------------------------------------------------
# Responses, usage, errors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseError:
    """`status_details.error` of a failed response (no `param` / `event_id` on the wire)."""

    type: str | None = None
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class StatusDetails:
    type: Literal["completed", "cancelled", "incomplete", "failed"] | None = None
    reason: (
        Literal["turn_detected", "client_cancelled", "max_output_tokens", "content_filter"] | None
    ) = None
    error: ResponseError | None = None


@dataclass(frozen=True, slots=True)
class CachedTokenDetails:
    """GA-only breakdown of cached input tokens."""

    text_tokens: int | None = None
    audio_tokens: int | None = None
    image_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class InputTokenDetails:
    """`image_tokens` and `cached_tokens_details` are GA-only (omitted in beta)."""

    text_tokens: int | None = None
    audio_tokens: int | None = None
    cached_tokens: int | None = None
    image_tokens: int | None = None
    cached_tokens_details: CachedTokenDetails | None = None


@dataclass(frozen=True, slots=True)
class OutputTokenDetails:
    text_tokens: int | None = None
    audio_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    total_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_token_details: InputTokenDetails | None = None
    output_token_details: OutputTokenDetails | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """The response object of `response.created` / `response.done`.

    `output` items in `response.done` carry no audio bytes. `temperature` is beta-only; the
    `voice` / `output_audio_format` pair is nested under `audio.output` in GA.
    """

    id: str | None = None
    status: ResponseStatus | None = None
    status_details: StatusDetails | None = None
    output: tuple[Item, ...] | None = None
    usage: Usage | None = None
    conversation_id: str | None = None
    metadata: Mapping[str, str] | None = None
    output_modalities: tuple[Modality, ...] | None = None
    voice: str | None = None
    output_audio_format: AudioFormat | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOverrides:
    """Per-response settings for `response.create`; `None` = use the session's value.

    `conversation="none"` makes an out-of-band response that writes nothing to the conversation;
    `input=()` means "no context" (unlike `None`, which means the whole conversation).
    `temperature` is beta-only (omitted in GA).
    """

    instructions: str | None = None
    output_modalities: tuple[Modality, ...] | None = None
    voice: Voice | None = None
    output_audio_format: AudioFormat | None = None
    tools: tuple[FunctionTool, ...] | None = None
    tool_choice: ToolChoice | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: float | None = None
    conversation: str | None = None
    metadata: Mapping[str, str] | None = None
    input: tuple[Item, ...] | None = None


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """The `error` object of an `error` event; `event_id` names the client event that caused it.

    The same shape (without `event_id`) is used by `input_audio_transcription.failed`.
    """

    type: str | None = None
    code: str | None = None
    message: str | None = None
    param: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    name: Literal["requests", "tokens"] | None = None
    limit: int | None = None
    remaining: int | None = None
    reset_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class LogProb:
    token: str
    bytes: tuple[int, ...]
    logprob: float


@dataclass(frozen=True, slots=True)
class TranscriptTokenDetails:
    text_tokens: int | None = None
    audio_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class TranscriptTokenUsage:
    """Transcription usage billed by tokens (`usage.type == "tokens"`)."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_token_details: TranscriptTokenDetails | None = None


@dataclass(frozen=True, slots=True)
class TranscriptDurationUsage:
    """Transcription usage billed by audio duration (`usage.type == "duration"`)."""

    seconds: float


TranscriptUsage: TypeAlias = TranscriptTokenUsage | TranscriptDurationUsage


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str | None = None
