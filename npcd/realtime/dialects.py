"""Wire shapes of the value types in each dialect: the beta <-> GA field map, as data.

This is where a field the service renames gets renamed once, for both ends. Rules:

* GA is canonical; beta differences are expressed as `renamed(...)` fields or dialect-limited
  fields. Session (§2): beta is flat, GA nests audio settings under `audio.input` /
  `audio.output` and requires `type: "realtime"`; `modalities` -> `output_modalities`,
  `max_response_output_tokens` -> `max_output_tokens`; formats are `"pcm16"` / `"g711_ulaw"` /
  `"g711_alaw"` in beta and `{type: "audio/pcm", rate: 24000}` / `{type: "audio/pcmu"}` /
  `{type: "audio/pcma"}` in GA.
* Fields a dialect lacks are omitted when encoding: `temperature` in GA (removed by GA);
  `idle_timeout_ms`, noise-reduction `strength`, usage `image_tokens` /
  `cached_tokens_details`, transcription `languages` in beta.
* Values a dialect cannot express raise `EncodeError`: custom voices, a function
  `tool_choice` and `input_image` content in beta.
* Item content types: GA `output_text` / `output_audio`, beta `text` / `audio`; the `part` of
  `response.content_part.*` is `text` / `audio` in both.
* Not modelled: MCP tools and items, tracing, truncation, prompt templates, `include`,
  reasoning, `parallel_tool_calls`, transcription `delay` / `keywords` / `languages`,
  transcription-only sessions, `item_reference` inputs, beta `client_secret`. Strict (client)
  decoding rejects them as `unsupported_parameter`; lenient (server) decoding ignores such keys
  and keeps such items as `UnknownItem`, but an MCP tool or tool choice inside a session is an
  EventError there too (npcd never configures one).
* npcd requires a few keys the SDK marks optional, because they select the shape and the real
  service always sends them: every `type` (items, content parts, tools, formats, turn
  detection), message `role`, tool `name`. Beta items missing `type` decode to `UnknownItem`.
"""

from __future__ import annotations

from typing import Any

from npcd.realtime.values import (
    UNSET,
    AssistantMessage,
    AudioFormat,
    CachedTokenDetails,
    Conversation,
    CustomVoice,
    Dialect,
    EncodeError,
    ErrorDetail,
    FunctionCall,
    FunctionCallOutput,
    FunctionTool,
    FunctionToolChoice,
    InputAudio,
    InputImage,
    InputText,
    InputTokenDetails,
    InputTranscription,
    LogProb,
    NoiseReduction,
    OutputAudio,
    OutputText,
    OutputTokenDetails,
    RateLimit,
    Response,
    ResponseError,
    ResponseOverrides,
    SemanticVad,
    ServerVad,
    SessionConfig,
    StatusDetails,
    SystemMessage,
    TranscriptDurationUsage,
    TranscriptTokenDetails,
    TranscriptTokenUsage,
    UnknownItem,
    Usage,
    UserMessage,
)
from npcd.realtime.wire import (
    BETA_ONLY,
    BOOL,
    FLOAT,
    GA_ONLY,
    INT,
    STR,
    STRING_MAP,
    Codec,
    Ctx,
    Field,
    Shape,
    check_keys,
    const,
    get_int,
    get_literal,
    get_obj,
    get_str,
    invalid_type,
    invalid_value,
    join,
    literal,
    missing,
    renamed,
    tagged,
    tuple_of,
    unsupported,
)

GA = Dialect.GA
BETA = Dialect.BETA

# --------------------------------------------------------------------------------------------
# Scalars with dialect-specific spelling
# --------------------------------------------------------------------------------------------

BETA_AUDIO_FORMAT = {
    AudioFormat.PCM16: "pcm16",
    AudioFormat.PCMU: "g711_ulaw",
    AudioFormat.PCMA: "g711_alaw",
}
_FORMAT_FROM_BETA = {name: fmt for fmt, name in BETA_AUDIO_FORMAT.items()}
_FORMAT_FROM_GA = {fmt.value: fmt for fmt in AudioFormat}
PCM_RATE_HZ = 24000  # the only PCM rate GA accepts


def _enc_format(fmt: AudioFormat, dialect: Dialect) -> Any:
    if dialect is BETA:
        return BETA_AUDIO_FORMAT[fmt]
    if fmt is AudioFormat.PCM16:
        return {"type": fmt.value, "rate": PCM_RATE_HZ}
    return {"type": fmt.value}


_GA_FORMAT_KEYS = {
    AudioFormat.PCM16: frozenset({"type", "rate"}),
    AudioFormat.PCMU: frozenset({"type"}),
    AudioFormat.PCMA: frozenset({"type"}),
}


def _dec_format(value: Any, path: str, ctx: Ctx) -> AudioFormat:
    if ctx.dialect is BETA:
        return _FORMAT_FROM_BETA[get_literal(value, path, tuple(_FORMAT_FROM_BETA))]
    obj = get_obj(value, path)
    tag = obj.get("type")
    if tag is None:
        missing(join(path, "type"))
    fmt = _FORMAT_FROM_GA[get_literal(tag, join(path, "type"), tuple(_FORMAT_FROM_GA))]
    check_keys(obj, path, _GA_FORMAT_KEYS[fmt], ctx)
    rate = obj.get("rate")
    if rate is not None and fmt is AudioFormat.PCM16:
        if get_int(rate, join(path, "rate")) != PCM_RATE_HZ:
            invalid_value(join(path, "rate"), str(rate), (str(PCM_RATE_HZ),))
    return fmt


AUDIO_FORMAT = Codec(_enc_format, _dec_format)


def _enc_voice(voice: str | CustomVoice, dialect: Dialect) -> Any:
    if isinstance(voice, CustomVoice):
        if dialect is BETA:
            raise EncodeError("custom voices are GA-only")
        return {"id": voice.id}
    return voice


_CUSTOM_VOICE = Shape(CustomVoice, [Field("id", STR, required=True)])


def _dec_voice(value: Any, path: str, ctx: Ctx) -> str | CustomVoice:
    if type(value) is str:
        return value
    if ctx.dialect is BETA:
        invalid_type(path, "a string", value)
    if type(value) is not dict:
        invalid_type(path, "a string or an object", value)
    custom: CustomVoice = _CUSTOM_VOICE.decode_obj(value, path, ctx)
    return custom


VOICE = Codec(_enc_voice, _dec_voice)


def _dec_max_tokens(value: Any, path: str, ctx: Ctx) -> int | str:
    if type(value) is str:
        return get_literal(value, path, ("inf",))
    if type(value) is not int:
        invalid_type(path, "an integer or 'inf'", value)
    return value


MAX_TOKENS = Codec(lambda v, d: v, _dec_max_tokens)
MODALITIES = tuple_of(literal("text", "audio"))
JSON_OBJECT = Codec(lambda v, d: v, lambda v, p, c: get_obj(v, p))

# --------------------------------------------------------------------------------------------
# Session configuration (§2)
# --------------------------------------------------------------------------------------------

TRANSCRIPTION = Shape(
    InputTranscription,
    [Field("model", STR), Field("language", STR), Field("prompt", STR)],
    unmodelled={GA: ("delay", "keywords", "languages")},
).codec()

NOISE_REDUCTION = Shape(
    NoiseReduction,
    [Field("type", literal("near_field", "far_field")), Field("strength", FLOAT, dialects=GA_ONLY)],
).codec()

# Beta declares one merged turn-detection model, so its strict decode tolerates sibling keys.
_BETA_VAD_KEYS = (
    "threshold", "prefix_padding_ms", "silence_duration_ms", "eagerness", "create_response",
    "interrupt_response",
)  # fmt: skip
_VAD_COMMON = (Field("create_response", BOOL), Field("interrupt_response", BOOL))
_SERVER_VAD = Shape(
    ServerVad,
    [
        const("type", "server_vad"),
        Field("threshold", FLOAT),
        Field("prefix_padding_ms", INT),
        Field("silence_duration_ms", INT),
        Field("idle_timeout_ms", INT, dialects=GA_ONLY),
        *_VAD_COMMON,
    ],
    extra_keys={BETA: _BETA_VAD_KEYS},
)
_SEMANTIC_VAD = Shape(
    SemanticVad,
    [
        const("type", "semantic_vad"),
        Field("eagerness", literal("low", "medium", "high", "auto")),
        *_VAD_COMMON,
    ],
    extra_keys={BETA: _BETA_VAD_KEYS},
)
_VADS = {"server_vad": _SERVER_VAD, "semantic_vad": _SEMANTIC_VAD}
TURN_DETECTION = tagged({GA: _VADS, BETA: _VADS})

_FUNCTION_TOOL = Shape(
    FunctionTool,
    [
        const("type", "function"),
        Field("name", STR, required=True),
        Field("description", STR),
        Field("parameters", JSON_OBJECT),
    ],
)
TOOLS = tuple_of(
    tagged(
        {GA: {"function": _FUNCTION_TOOL}, BETA: {"function": _FUNCTION_TOOL}}, unmodelled=("mcp",)
    )
)

_TOOL_CHOICE_MODES = ("auto", "none", "required")
_FUNCTION_CHOICE = Shape(
    FunctionToolChoice, [const("type", "function"), Field("name", STR, required=True)]
)
_GA_TOOL_CHOICE_OBJECT = tagged({GA: {"function": _FUNCTION_CHOICE}}, unmodelled=("mcp",))


def _enc_tool_choice(choice: str | FunctionToolChoice, dialect: Dialect) -> Any:
    if isinstance(choice, FunctionToolChoice):
        if dialect is BETA:
            raise EncodeError("a function tool_choice is GA-only (beta takes a mode string)")
        return _FUNCTION_CHOICE.encode_into({}, choice, dialect)
    return choice


def _dec_tool_choice(value: Any, path: str, ctx: Ctx) -> str | FunctionToolChoice:
    if type(value) is dict and ctx.dialect is GA:
        choice: FunctionToolChoice = _GA_TOOL_CHOICE_OBJECT.dec(value, path, ctx)
        return choice
    return get_literal(value, path, _TOOL_CHOICE_MODES)


TOOL_CHOICE = Codec(_enc_tool_choice, _dec_tool_choice)

# The §2 field map. Read-only fields exist only on the server side (session.created/updated).
_SESSION_FIELDS = (
    const("type", "realtime", GA_ONLY),
    Field("model", STR),
    Field("instructions", STR),
    *renamed("output_modalities", MODALITIES, ga="output_modalities", beta="modalities"),
    *renamed(
        "input_audio_format", AUDIO_FORMAT, ga="audio.input.format", beta="input_audio_format"
    ),
    *renamed(
        "input_transcription",
        TRANSCRIPTION,
        ga="audio.input.transcription",
        beta="input_audio_transcription",
    ),
    *renamed(
        "noise_reduction",
        NOISE_REDUCTION,
        ga="audio.input.noise_reduction",
        beta="input_audio_noise_reduction",
    ),
    *renamed(
        "turn_detection", TURN_DETECTION, ga="audio.input.turn_detection", beta="turn_detection"
    ),
    *renamed(
        "output_audio_format", AUDIO_FORMAT, ga="audio.output.format", beta="output_audio_format"
    ),
    *renamed("voice", VOICE, ga="audio.output.voice", beta="voice"),
    *renamed("speed", FLOAT, ga="audio.output.speed", beta="speed"),
    Field("tools", TOOLS),
    Field("tool_choice", TOOL_CHOICE),
    *renamed(
        "max_output_tokens", MAX_TOKENS, ga="max_output_tokens", beta="max_response_output_tokens"
    ),
    Field("temperature", FLOAT, dialects=BETA_ONLY),  # GA removed it: omitted when encoding GA
)
READ_ONLY_SESSION_FIELDS = ("id", "object", "expires_at")
_SESSION_UNMODELLED = {
    GA: ("include", "parallel_tool_calls", "prompt", "reasoning", "tracing", "truncation"),
    BETA: ("tracing", "client_secret"),
}
_SESSION_UPDATE = Shape(
    SessionConfig, _SESSION_FIELDS, tristate=True, unmodelled=_SESSION_UNMODELLED
)
_SESSION_OBJECT = Shape(
    SessionConfig,
    (
        *_SESSION_FIELDS[:1],
        Field("object", STR),
        Field("id", STR),
        *_SESSION_FIELDS[1:],
        Field("expires_at", INT),
    ),
    tristate=True,
    unmodelled=_SESSION_UNMODELLED,
)


def _enc_session_update(session: SessionConfig, dialect: Dialect) -> dict[str, Any]:
    for name in READ_ONLY_SESSION_FIELDS:
        if getattr(session, name) is not UNSET:
            raise EncodeError(f"session.{name} is read-only and cannot be sent in session.update")
    return _SESSION_UPDATE.encode_into({}, session, dialect)


SESSION_UPDATE = Codec(_enc_session_update, _SESSION_UPDATE.codec().dec)
SESSION_OBJECT = _SESSION_OBJECT.codec()

# --------------------------------------------------------------------------------------------
# Conversation items (§3.1)
# --------------------------------------------------------------------------------------------

# The SDK (and the OpenAPI spec it is generated from) declares one merged model per role for
# content parts, and beta one merged model for all items; a strict decode tolerates those
# sibling keys (as the service does) but only reads the ones that belong to the part type.
_GA_USER_PART_KEYS = ("text", "audio", "transcript", "image_url", "detail")
_GA_ASSISTANT_PART_KEYS = ("text", "audio", "transcript")
_BETA_PART_KEYS = ("id", "text", "audio", "transcript")
_BETA_ITEM_KEYS = (
    "id", "object", "type", "status", "role", "content", "name", "call_id", "arguments", "output",
)  # fmt: skip


def _part(
    cls: type,
    fields: tuple[Field, ...],
    *,
    ga: str | None,
    beta: str | None,
    ga_keys: tuple[str, ...],
) -> Shape:
    consts = [const("type", ga, GA_ONLY)] if ga else []
    consts += [const("type", beta, BETA_ONLY)] if beta else []
    return Shape(cls, [*consts, *fields], extra_keys={GA: ga_keys, BETA: _BETA_PART_KEYS})


_TEXT = (Field("text", STR),)
_AUDIO = (Field("audio", STR), Field("transcript", STR))
_IMAGE = (Field("image_url", STR), Field("detail", literal("auto", "low", "high")))
_SYSTEM_TEXT = _part(InputText, _TEXT, ga="input_text", beta="input_text", ga_keys=())
_USER_PARTS = {
    "input_text": _part(
        InputText, _TEXT, ga="input_text", beta="input_text", ga_keys=_GA_USER_PART_KEYS
    ),
    "input_audio": _part(
        InputAudio, _AUDIO, ga="input_audio", beta="input_audio", ga_keys=_GA_USER_PART_KEYS
    ),
    "input_image": _part(
        InputImage, _IMAGE, ga="input_image", beta=None, ga_keys=_GA_USER_PART_KEYS
    ),
}
_ITEM_OUTPUT_TEXT = _part(
    OutputText, _TEXT, ga="output_text", beta="text", ga_keys=_GA_ASSISTANT_PART_KEYS
)
_ITEM_OUTPUT_AUDIO = _part(
    OutputAudio, _AUDIO, ga="output_audio", beta="audio", ga_keys=_GA_ASSISTANT_PART_KEYS
)
_SYSTEM_CONTENT = tuple_of(
    tagged({GA: {"input_text": _SYSTEM_TEXT}, BETA: {"input_text": _SYSTEM_TEXT}})
)
_USER_CONTENT = tuple_of(
    tagged(
        {
            GA: _USER_PARTS,
            BETA: {k: v for k, v in _USER_PARTS.items() if k != "input_image"},
        }
    )
)
_ASSISTANT_CONTENT = tuple_of(
    tagged(
        {
            GA: {"output_text": _ITEM_OUTPUT_TEXT, "output_audio": _ITEM_OUTPUT_AUDIO},
            BETA: {"text": _ITEM_OUTPUT_TEXT, "audio": _ITEM_OUTPUT_AUDIO},
        }
    )
)

_ITEM_STATUS = literal("completed", "incomplete", "in_progress")
_ITEM_META = (Field("id", STR), Field("status", _ITEM_STATUS))
# `object` is always "realtime.item": tolerated, not modelled, not emitted.
_ITEM_EXTRA = {GA: ("object",), BETA: _BETA_ITEM_KEYS}


def _message(cls: type, role: str, content: Codec) -> Shape:
    return Shape(
        cls,
        [
            const("type", "message"),
            const("role", role),
            Field("content", content, required=True),
            *_ITEM_META,
        ],
        extra_keys=_ITEM_EXTRA,
    )


_MESSAGES = {
    "system": _message(SystemMessage, "system", _SYSTEM_CONTENT),
    "user": _message(UserMessage, "user", _USER_CONTENT),
    "assistant": _message(AssistantMessage, "assistant", _ASSISTANT_CONTENT),
}
_OTHER_ITEMS = {
    "function_call": Shape(
        FunctionCall,
        [
            const("type", "function_call"),
            Field("name", STR, required=True),
            Field("arguments", STR, required=True),
            Field("call_id", STR),
            *_ITEM_META,
        ],
        extra_keys=_ITEM_EXTRA,
    ),
    "function_call_output": Shape(
        FunctionCallOutput,
        [
            const("type", "function_call_output"),
            Field("call_id", STR, required=True),
            Field("output", STR, required=True),
            *_ITEM_META,
        ],
        extra_keys=_ITEM_EXTRA,
    ),
}
_ITEM_BY_CLASS = {shape.cls: shape for shape in (*_MESSAGES.values(), *_OTHER_ITEMS.values())}
_UNMODELLED_ITEM_TYPES = frozenset(
    {
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "item_reference",
    }
)


def _enc_item(item: Any, dialect: Dialect) -> dict[str, Any]:
    if isinstance(item, UnknownItem):
        return dict(item.raw)
    return _ITEM_BY_CLASS[type(item)].encode_into({}, item, dialect)


def _dec_item(value: Any, path: str, ctx: Ctx) -> Any:
    obj = get_obj(value, path)
    tag = obj.get("type")
    type_path = join(path, "type")
    if tag is None:
        if ctx.strict:
            missing(type_path)
        return UnknownItem(None, obj)  # the beta SDK item is all-optional; keep, don't fail
    if get_str(tag, type_path) == "message":
        role = obj.get("role")
        if role is None:
            missing(join(path, "role"))
        shape = _MESSAGES[get_literal(role, join(path, "role"), tuple(_MESSAGES))]
    else:
        found = _OTHER_ITEMS.get(tag)
        if found is None:
            if not ctx.strict:
                return UnknownItem(tag, obj)
            if tag in _UNMODELLED_ITEM_TYPES:
                unsupported(type_path)
            invalid_value(type_path, tag, ("message", *_OTHER_ITEMS))
        shape = found
    return shape.decode_obj(obj, path, ctx)


ITEM = Codec(_enc_item, _dec_item)

# `response.content_part.*` parts keep the beta names `text` / `audio` in GA too.
_PART_TEXT = Shape(OutputText, [const("type", "text"), Field("text", STR)])
_PART_AUDIO = Shape(
    OutputAudio, [const("type", "audio"), Field("audio", STR), Field("transcript", STR)]
)
_PARTS = {"text": _PART_TEXT, "audio": _PART_AUDIO}
CONTENT_PART = tagged({GA: _PARTS, BETA: _PARTS})

# --------------------------------------------------------------------------------------------
# Responses (§4.3) and per-response overrides (§3)
# --------------------------------------------------------------------------------------------

_RESPONSE_ERROR = Shape(
    ResponseError, [Field("type", STR), Field("code", STR), Field("message", STR)]
)
_STATUS_DETAILS = Shape(
    StatusDetails,
    [
        Field("type", literal("completed", "cancelled", "incomplete", "failed")),
        Field(
            "reason",
            literal("turn_detected", "client_cancelled", "max_output_tokens", "content_filter"),
        ),
        Field("error", _RESPONSE_ERROR.codec()),
    ],
)
_CACHED_TOKEN_DETAILS = Shape(
    CachedTokenDetails,
    [Field("text_tokens", INT), Field("audio_tokens", INT), Field("image_tokens", INT)],
)
_INPUT_TOKEN_DETAILS = Shape(
    InputTokenDetails,
    [
        Field("text_tokens", INT),
        Field("audio_tokens", INT),
        Field("cached_tokens", INT),
        Field("image_tokens", INT, dialects=GA_ONLY),
        Field("cached_tokens_details", _CACHED_TOKEN_DETAILS.codec(), dialects=GA_ONLY),
    ],
)
_OUTPUT_TOKEN_DETAILS = Shape(
    OutputTokenDetails, [Field("text_tokens", INT), Field("audio_tokens", INT)]
)
_USAGE = Shape(
    Usage,
    [
        Field("total_tokens", INT),
        Field("input_tokens", INT),
        Field("output_tokens", INT),
        Field("input_token_details", _INPUT_TOKEN_DETAILS.codec()),
        Field("output_token_details", _OUTPUT_TOKEN_DETAILS.codec()),
    ],
)
RESPONSE = Shape(
    Response,
    [
        Field("id", STR),
        Field("status", literal("completed", "cancelled", "failed", "incomplete", "in_progress")),
        Field("status_details", _STATUS_DETAILS.codec()),
        Field("output", tuple_of(ITEM)),
        Field("usage", _USAGE.codec()),
        Field("conversation_id", STR),
        Field("metadata", STRING_MAP),
        *renamed("output_modalities", MODALITIES, ga="output_modalities", beta="modalities"),
        *renamed("voice", STR, ga="audio.output.voice", beta="voice"),
        *renamed(
            "output_audio_format",
            AUDIO_FORMAT,
            ga="audio.output.format",
            beta="output_audio_format",
        ),
        Field("max_output_tokens", MAX_TOKENS),
        Field("temperature", FLOAT, dialects=BETA_ONLY),
    ],
    extra_keys=("object",),
).codec()

RESPONSE_OVERRIDES = Shape(
    ResponseOverrides,
    [
        *renamed("output_modalities", MODALITIES, ga="output_modalities", beta="modalities"),
        Field("instructions", STR),
        *renamed("voice", VOICE, ga="audio.output.voice", beta="voice"),
        *renamed(
            "output_audio_format",
            AUDIO_FORMAT,
            ga="audio.output.format",
            beta="output_audio_format",
        ),
        Field("tools", TOOLS),
        Field("tool_choice", TOOL_CHOICE),
        *renamed(
            "max_output_tokens",
            MAX_TOKENS,
            ga="max_output_tokens",
            beta="max_response_output_tokens",
        ),
        Field("temperature", FLOAT, dialects=BETA_ONLY),  # GA removed it: omitted in GA
        Field("conversation", STR),
        Field("metadata", STRING_MAP),
        Field("input", tuple_of(ITEM)),
    ],
    unmodelled={GA: ("prompt", "reasoning", "parallel_tool_calls")},
).codec()

# --------------------------------------------------------------------------------------------
# Transcription, errors, rate limits, conversation
# --------------------------------------------------------------------------------------------

LOGPROBS = tuple_of(
    Shape(
        LogProb,
        [
            Field("token", STR, required=True),
            Field("bytes", tuple_of(INT), required=True),
            Field("logprob", FLOAT, required=True),
        ],
    ).codec()
)
_TRANSCRIPT_TOKEN_DETAILS = Shape(
    TranscriptTokenDetails, [Field("text_tokens", INT), Field("audio_tokens", INT)]
)
_TRANSCRIPT_USAGES = {
    "tokens": Shape(
        TranscriptTokenUsage,
        [
            const("type", "tokens"),
            Field("input_tokens", INT, required=True),
            Field("output_tokens", INT, required=True),
            Field("total_tokens", INT, required=True),
            Field("input_token_details", _TRANSCRIPT_TOKEN_DETAILS.codec()),
        ],
    ),
    "duration": Shape(
        TranscriptDurationUsage,
        [const("type", "duration"), Field("seconds", FLOAT, required=True)],
    ),
}
TRANSCRIPT_USAGE = tagged({GA: _TRANSCRIPT_USAGES, BETA: _TRANSCRIPT_USAGES})
# GA `languages: [{code}]`, modelled as a tuple of language codes.
_LANGUAGE = Shape(lambda code: code, [Field("code", STR, required=True)])
LANGUAGES = tuple_of(
    Codec(lambda v, d: {"code": v}, lambda v, p, c: _LANGUAGE.decode_obj(get_obj(v, p), p, c))
)

ERROR_DETAIL = Shape(
    ErrorDetail,
    [
        Field("type", STR, required=True),
        Field("code", STR),
        Field("message", STR, required=True),
        Field("param", STR),
        Field("event_id", STR),
    ],
).codec()
# `input_audio_transcription.failed` uses the same object, all-optional and without event_id.
TRANSCRIPTION_ERROR = Shape(
    ErrorDetail,
    [Field("type", STR), Field("code", STR), Field("message", STR), Field("param", STR)],
).codec()
RATE_LIMITS = tuple_of(
    Shape(
        RateLimit,
        [
            Field("name", literal("requests", "tokens")),
            Field("limit", INT),
            Field("remaining", INT),
            Field("reset_seconds", FLOAT),
        ],
    ).codec()
)
CONVERSATION = Shape(Conversation, [Field("id", STR)], extra_keys=("object",)).codec()
