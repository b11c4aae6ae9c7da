"""npcd.realtime event model and codec: round trips, dialect mapping, strictness, robustness.

The hypothesis strategies at the top generate every event npcd models, restricted to what each
dialect can express; test_sdk_conformance.py reuses them to check the encoder against the SDK.
Run `python -m tests.unit.test_events` for the hot-path micro-benchmark.
"""

from __future__ import annotations

import base64
import functools
import string
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npcd.realtime import codec
from npcd.realtime.codec import (
    CLIENT_EVENT_TYPES,
    SERVER_EVENT_TYPES,
    decode_client,
    decode_server,
    encode_client,
    encode_server,
    server_event_supported,
)
from npcd.realtime.events import (
    UNSET,
    AssistantMessage,
    AudioFormat,
    CachedTokenDetails,
    ClientEvent,
    Conversation,
    ConversationCreated,
    ConversationItemAdded,
    ConversationItemCreate,
    ConversationItemCreated,
    ConversationItemDelete,
    ConversationItemDeleted,
    ConversationItemDone,
    ConversationItemInputAudioTranscriptionCompleted,
    ConversationItemInputAudioTranscriptionDelta,
    ConversationItemInputAudioTranscriptionFailed,
    ConversationItemRetrieve,
    ConversationItemRetrieved,
    ConversationItemTruncate,
    ConversationItemTruncated,
    CustomVoice,
    Dialect,
    EncodeError,
    ErrorDetail,
    ErrorEvent,
    EventError,
    FunctionCall,
    FunctionCallOutput,
    FunctionTool,
    FunctionToolChoice,
    InputAudio,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCleared,
    InputAudioBufferCommit,
    InputAudioBufferCommitted,
    InputAudioBufferSpeechStarted,
    InputAudioBufferSpeechStopped,
    InputAudioBufferTimeoutTriggered,
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
    RateLimitsUpdated,
    Response,
    ResponseCancel,
    ResponseContentPartAdded,
    ResponseContentPartDone,
    ResponseCreate,
    ResponseCreated,
    ResponseDone,
    ResponseError,
    ResponseFunctionCallArgumentsDelta,
    ResponseFunctionCallArgumentsDone,
    ResponseOutputAudioDelta,
    ResponseOutputAudioDone,
    ResponseOutputAudioTranscriptDelta,
    ResponseOutputAudioTranscriptDone,
    ResponseOutputItemAdded,
    ResponseOutputItemDone,
    ResponseOutputTextDelta,
    ResponseOutputTextDone,
    ResponseOverrides,
    SemanticVad,
    ServerEvent,
    ServerVad,
    SessionConfig,
    SessionCreated,
    SessionUpdate,
    SessionUpdated,
    StatusDetails,
    SystemMessage,
    TranscriptDurationUsage,
    TranscriptTokenDetails,
    TranscriptTokenUsage,
    UnknownItem,
    UnknownServerEvent,
    Usage,
    UserMessage,
)

GA, BETA = Dialect.GA, Dialect.BETA
DIALECTS = pytest.mark.parametrize("dialect", [GA, BETA], ids=["ga", "beta"])
PROPERTY = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)

# --------------------------------------------------------------------------------------------
# Strategies: every modelled event, limited to what the dialect can express
# --------------------------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
IDS = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=12)
INTS = st.integers(-(2**31), 2**31)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
B64 = st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode())
# Beta's SDK types session `model` as a closed Literal list, so the SDK checks use known names.
MODELS = st.sampled_from(["gpt-realtime", "gpt-4o-realtime-preview"])
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | INTS | FLOATS | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
JSON_OBJECT = st.dictionaries(TEXT, JSON, max_size=3)
STATUSES = st.sampled_from(["completed", "incomplete", "in_progress"])


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def tri(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Tri-state session field: not sent, explicit null, or a value."""
    return st.just(UNSET) | st.none() | strategy


def ga_only(dialect: Dialect, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy if dialect is GA else st.none()


def tuples(strategy: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[Any]:
    return st.lists(strategy, max_size=max_size).map(tuple)


def voices(dialect: Dialect) -> st.SearchStrategy[Any]:
    custom = st.builds(CustomVoice, IDS)
    return IDS | custom if dialect is GA else IDS


def tool_choices(dialect: Dialect) -> st.SearchStrategy[Any]:
    modes = st.sampled_from(["auto", "none", "required"])
    return modes | st.builds(FunctionToolChoice, IDS) if dialect is GA else modes


def tools() -> st.SearchStrategy[Any]:
    return tuples(
        st.builds(FunctionTool, name=IDS, description=opt(TEXT), parameters=opt(JSON_OBJECT))
    )


def turn_detections(dialect: Dialect) -> st.SearchStrategy[Any]:
    server = st.builds(
        ServerVad,
        threshold=opt(FLOATS),
        prefix_padding_ms=opt(INTS),
        silence_duration_ms=opt(INTS),
        idle_timeout_ms=ga_only(dialect, opt(INTS)),
        create_response=opt(st.booleans()),
        interrupt_response=opt(st.booleans()),
    )
    semantic = st.builds(
        SemanticVad,
        eagerness=opt(st.sampled_from(["low", "medium", "high", "auto"])),
        create_response=opt(st.booleans()),
        interrupt_response=opt(st.booleans()),
    )
    return server | semantic


MODALITIES = tuples(st.sampled_from(["text", "audio"]), max_size=2)
MAX_TOKENS = INTS | st.just("inf")


def session_configs(dialect: Dialect, *, server: bool) -> st.SearchStrategy[SessionConfig]:
    read_only = tri if server else (lambda s: st.just(UNSET))
    return st.builds(
        SessionConfig,
        instructions=tri(TEXT),
        voice=tri(voices(dialect)),
        output_modalities=tri(MODALITIES),
        input_audio_format=tri(st.sampled_from(AudioFormat)),
        output_audio_format=tri(st.sampled_from(AudioFormat)),
        input_transcription=tri(st.builds(InputTranscription, opt(MODELS), opt(IDS), opt(TEXT))),
        turn_detection=tri(turn_detections(dialect)),
        noise_reduction=tri(
            st.builds(
                NoiseReduction,
                opt(st.sampled_from(["near_field", "far_field"])),
                ga_only(dialect, opt(FLOATS)),
            )
        ),
        tools=tri(tools()),
        tool_choice=tri(tool_choices(dialect)),
        temperature=tri(FLOATS) if dialect is BETA else st.just(UNSET),
        max_output_tokens=tri(MAX_TOKENS),
        speed=tri(FLOATS),
        model=tri(MODELS),
        id=read_only(IDS),
        object=read_only(st.just("realtime.session")),
        expires_at=read_only(INTS),
    )


def user_content(dialect: Dialect) -> st.SearchStrategy[Any]:
    parts: st.SearchStrategy[Any] = st.builds(InputText, opt(TEXT)) | st.builds(
        InputAudio, opt(B64), opt(TEXT)
    )
    if dialect is GA:
        parts |= st.builds(InputImage, opt(TEXT), opt(st.sampled_from(["auto", "low", "high"])))
    return parts


def assistant_content(*, audio: bool = True) -> st.SearchStrategy[Any]:
    text = st.builds(OutputText, opt(TEXT))
    return text | st.builds(OutputAudio, opt(B64), opt(TEXT)) if audio else text


def items(
    dialect: Dialect, *, unknown: bool, assistant_audio: bool = True
) -> st.SearchStrategy[Any]:
    """Conversation items; `unknown` adds `UnknownItem`s, which only server decoding keeps."""
    meta = {"id": opt(IDS), "status": opt(STATUSES)}
    strategies = [
        st.builds(SystemMessage, content=tuples(st.builds(InputText, opt(TEXT))), **meta),
        st.builds(UserMessage, content=tuples(user_content(dialect)), **meta),
        st.builds(
            AssistantMessage, content=tuples(assistant_content(audio=assistant_audio)), **meta
        ),
        st.builds(FunctionCall, name=IDS, arguments=TEXT, call_id=opt(IDS), **meta),
        st.builds(FunctionCallOutput, call_id=IDS, output=TEXT, **meta),
    ]
    if unknown:
        unknown_raw = st.fixed_dictionaries(
            {"type": st.sampled_from(["mcp_call", "mcp_list_tools", "future_item"])},
            optional={"id": IDS, "server_label": TEXT},
        )
        strategies.append(unknown_raw.map(lambda raw: UnknownItem(raw["type"], raw)))
    return st.one_of(strategies)


def overrides(dialect: Dialect) -> st.SearchStrategy[ResponseOverrides]:
    return st.builds(
        ResponseOverrides,
        instructions=opt(TEXT),
        output_modalities=opt(MODALITIES),
        voice=opt(voices(dialect)),
        output_audio_format=opt(st.sampled_from(AudioFormat)),
        tools=opt(tools()),
        tool_choice=opt(tool_choices(dialect)),
        max_output_tokens=opt(MAX_TOKENS),
        temperature=opt(FLOATS) if dialect is BETA else st.none(),
        conversation=opt(st.sampled_from(["auto", "none"]) | IDS),
        metadata=opt(st.dictionaries(IDS, TEXT, max_size=3)),
        # beta's response.create `input` item model has no assistant `audio` content type
        input=opt(tuples(items(dialect, unknown=False, assistant_audio=dialect is GA))),
    )


def usages(dialect: Dialect) -> st.SearchStrategy[Usage]:
    n = opt(INTS)
    cached = st.builds(CachedTokenDetails, n, n, n)
    return st.builds(
        Usage,
        n,
        n,
        n,
        opt(
            st.builds(
                InputTokenDetails, n, n, n, ga_only(dialect, n), ga_only(dialect, opt(cached))
            )
        ),
        opt(st.builds(OutputTokenDetails, n, n)),
    )


def responses(dialect: Dialect, *, unknown_items: bool) -> st.SearchStrategy[Response]:
    return st.builds(
        Response,
        id=opt(IDS),
        status=opt(
            st.sampled_from(["completed", "cancelled", "failed", "incomplete", "in_progress"])
        ),
        status_details=opt(
            st.builds(
                StatusDetails,
                opt(st.sampled_from(["completed", "cancelled", "incomplete", "failed"])),
                opt(st.sampled_from(["turn_detected", "client_cancelled", "max_output_tokens"])),
                opt(st.builds(ResponseError, opt(IDS), opt(IDS), opt(TEXT))),
            )
        ),
        output=opt(tuples(items(dialect, unknown=unknown_items))),
        usage=opt(usages(dialect)),
        conversation_id=opt(IDS),
        metadata=opt(st.dictionaries(IDS, TEXT, max_size=3)),
        output_modalities=opt(MODALITIES),
        voice=opt(IDS),
        output_audio_format=opt(st.sampled_from(AudioFormat)),
        max_output_tokens=opt(MAX_TOKENS),
        temperature=opt(FLOATS) if dialect is BETA else st.none(),
    )


@functools.cache
def client_event_strategies(dialect: Dialect) -> dict[type, st.SearchStrategy[Any]]:
    eid = {"event_id": opt(IDS)}
    return {
        SessionUpdate: st.builds(
            SessionUpdate, session=session_configs(dialect, server=False), **eid
        ),
        InputAudioBufferAppend: st.builds(InputAudioBufferAppend, audio=B64, **eid),
        InputAudioBufferCommit: st.builds(InputAudioBufferCommit, **eid),
        InputAudioBufferClear: st.builds(InputAudioBufferClear, **eid),
        ConversationItemCreate: st.builds(
            ConversationItemCreate,
            item=items(dialect, unknown=False),
            previous_item_id=opt(IDS),
            **eid,
        ),
        ConversationItemRetrieve: st.builds(ConversationItemRetrieve, item_id=IDS, **eid),
        ConversationItemTruncate: st.builds(
            ConversationItemTruncate, item_id=IDS, content_index=INTS, audio_end_ms=INTS, **eid
        ),
        ConversationItemDelete: st.builds(ConversationItemDelete, item_id=IDS, **eid),
        ResponseCreate: st.builds(ResponseCreate, response=opt(overrides(dialect)), **eid),
        ResponseCancel: st.builds(ResponseCancel, response_id=opt(IDS), **eid),
    }


@functools.cache
def client_events(dialect: Dialect) -> st.SearchStrategy[ClientEvent]:
    return st.one_of(list(client_event_strategies(dialect).values()))


@functools.cache
def server_events(
    dialect: Dialect, *, unknown_items: bool = True
) -> st.SearchStrategy[ServerEvent]:
    return st.one_of(list(server_event_strategies(dialect, unknown_items=unknown_items).values()))


@functools.cache
def server_event_strategies(
    dialect: Dialect, *, unknown_items: bool = True
) -> dict[type, st.SearchStrategy[Any]]:
    """Every server event class with a wire form in `dialect` (beta: no Done/Timeout/Created).

    `unknown_items=False` leaves out `UnknownItem`s, whose raw payloads the SDK cannot check.
    """
    eid = {"event_id": IDS}
    loc = {"response_id": IDS, "item_id": IDS, "output_index": INTS, "content_index": INTS}
    item = items(dialect, unknown=unknown_items)
    log_probs = opt(tuples(st.builds(LogProb, TEXT, tuples(st.integers(0, 255)), FLOATS)))
    usage = st.builds(
        TranscriptTokenUsage, INTS, INTS, INTS, opt(st.builds(TranscriptTokenDetails, opt(INTS)))
    ) | st.builds(TranscriptDurationUsage, FLOATS)
    part = st.builds(OutputText, opt(TEXT)) | st.builds(OutputAudio, opt(B64), opt(TEXT))
    error = st.builds(ErrorDetail, IDS, opt(IDS), TEXT, opt(TEXT), opt(IDS))
    strategies = [
        pair(SessionCreated, session=session_configs(dialect, server=True), **eid),
        pair(SessionUpdated, session=session_configs(dialect, server=True), **eid),
        pair(ConversationCreated, conversation=st.builds(Conversation, opt(IDS)), **eid),
        pair(ConversationItemAdded, item=item, previous_item_id=opt(IDS), **eid),
        pair(ConversationItemRetrieved, item=item, **eid),
        pair(ConversationItemTruncated, item_id=IDS, content_index=INTS, audio_end_ms=INTS, **eid),
        pair(ConversationItemDeleted, item_id=IDS, **eid),
        pair(InputAudioBufferSpeechStarted, audio_start_ms=INTS, item_id=IDS, **eid),
        pair(InputAudioBufferSpeechStopped, audio_end_ms=INTS, item_id=IDS, **eid),
        pair(InputAudioBufferCommitted, item_id=IDS, previous_item_id=opt(IDS), **eid),
        pair(InputAudioBufferCleared, **eid),
        pair(
            ConversationItemInputAudioTranscriptionDelta,
            item_id=IDS,
            content_index=opt(INTS),
            delta=opt(TEXT),
            logprobs=log_probs,
            **eid,
        ),
        pair(
            ConversationItemInputAudioTranscriptionCompleted,
            item_id=IDS,
            content_index=INTS,
            transcript=TEXT,
            usage=usage,
            logprobs=log_probs,
            languages=ga_only(dialect, opt(tuples(IDS))),
            **eid,
        ),
        pair(
            ConversationItemInputAudioTranscriptionFailed,
            item_id=IDS,
            content_index=INTS,
            error=st.builds(ErrorDetail, opt(IDS), opt(IDS), opt(TEXT), opt(TEXT)),
            **eid,
        ),
        pair(ResponseCreated, response=responses(dialect, unknown_items=unknown_items), **eid),
        pair(ResponseDone, response=responses(dialect, unknown_items=unknown_items), **eid),
        pair(ResponseOutputItemAdded, response_id=IDS, output_index=INTS, item=item, **eid),
        pair(ResponseOutputItemDone, response_id=IDS, output_index=INTS, item=item, **eid),
        pair(ResponseContentPartAdded, part=part, **loc, **eid),
        pair(ResponseContentPartDone, part=part, **loc, **eid),
        pair(ResponseOutputTextDelta, delta=TEXT, **loc, **eid),
        pair(ResponseOutputTextDone, text=TEXT, **loc, **eid),
        pair(ResponseOutputAudioDelta, delta=B64, **loc, **eid),
        pair(ResponseOutputAudioDone, **loc, **eid),
        pair(ResponseOutputAudioTranscriptDelta, delta=TEXT, **loc, **eid),
        pair(ResponseOutputAudioTranscriptDone, transcript=TEXT, **loc, **eid),
        pair(
            ResponseFunctionCallArgumentsDelta,
            response_id=IDS,
            item_id=IDS,
            output_index=INTS,
            call_id=IDS,
            delta=TEXT,
            **eid,
        ),
        pair(
            ResponseFunctionCallArgumentsDone,
            response_id=IDS,
            item_id=IDS,
            output_index=INTS,
            call_id=IDS,
            arguments=TEXT,
            name=IDS if dialect is GA else st.none(),
            **eid,
        ),
        pair(
            RateLimitsUpdated,
            rate_limits=tuples(
                st.builds(
                    RateLimit,
                    opt(st.sampled_from(["requests", "tokens"])),
                    opt(INTS),
                    opt(INTS),
                    opt(FLOATS),
                )
            ),
            **eid,
        ),
        pair(ErrorEvent, error=error, **eid),
    ]
    if dialect is GA:
        strategies += [
            pair(ConversationItemDone, item=item, previous_item_id=opt(IDS), **eid),
            pair(ConversationItemCreated, item=item, previous_item_id=opt(IDS), **eid),
            pair(
                InputAudioBufferTimeoutTriggered,
                item_id=IDS,
                audio_start_ms=INTS,
                audio_end_ms=INTS,
                **eid,
            ),
        ]
    return dict(strategies)


def pair(cls: type, *args: Any, **kwargs: Any) -> tuple[type, st.SearchStrategy[Any]]:
    return cls, st.builds(cls, *args, **kwargs)


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


CLIENT_CASES = [(d, cls) for d in (GA, BETA) for cls in client_event_strategies(d)]
SERVER_CASES = [(d, cls) for d in (GA, BETA) for cls in server_event_strategies(d)]


def _case_id(case: Any) -> str:
    return case.name.lower() if isinstance(case, Dialect) else case.__name__


@pytest.mark.parametrize(("dialect", "cls"), CLIENT_CASES, ids=_case_id)
@PROPERTY
@given(data=st.data())
def test_client_events_round_trip(dialect: Dialect, cls: type, data: st.DataObject) -> None:
    event = data.draw(client_event_strategies(dialect)[cls])
    assert decode_client(encode_client(event, dialect), dialect) == event


@pytest.mark.parametrize(("dialect", "cls"), SERVER_CASES, ids=_case_id)
@PROPERTY
@given(data=st.data())
def test_server_events_round_trip(dialect: Dialect, cls: type, data: st.DataObject) -> None:
    event = data.draw(server_event_strategies(dialect)[cls])
    assert server_event_supported(event, dialect)
    assert decode_server(encode_server(event, dialect), dialect) == event


def test_strategies_cover_every_event_class() -> None:
    client = {spec.cls for spec in codec.CLIENT_EVENTS}
    server = {spec.cls for spec in codec.SERVER_EVENTS}
    beta_missing = {ConversationItemDone, ConversationItemCreated, InputAudioBufferTimeoutTriggered}
    assert set(client_event_strategies(GA)) == set(client_event_strategies(BETA)) == client
    assert set(server_event_strategies(GA)) == server
    assert set(server_event_strategies(BETA)) == server - beta_missing


# --------------------------------------------------------------------------------------------
# Beta <-> GA mapping
# --------------------------------------------------------------------------------------------

E: dict[str, Any] = {"event_id": "event_1"}
LOC: dict[str, Any] = {
    "response_id": "resp_1",
    "item_id": "item_1",
    "output_index": 0,
    "content_index": 0,
}
ITEM = UserMessage(content=(InputText("hi"),))

WIRE_NAMES: list[tuple[Any, str, str | None]] = [
    (
        ResponseOutputTextDelta(delta="a", **LOC, **E),
        "response.output_text.delta",
        "response.text.delta",
    ),
    (
        ResponseOutputTextDone(text="a", **LOC, **E),
        "response.output_text.done",
        "response.text.done",
    ),
    (
        ResponseOutputAudioDelta(delta="AA==", **LOC, **E),
        "response.output_audio.delta",
        "response.audio.delta",
    ),
    (ResponseOutputAudioDone(**LOC, **E), "response.output_audio.done", "response.audio.done"),
    (
        ResponseOutputAudioTranscriptDelta(delta="a", **LOC, **E),
        "response.output_audio_transcript.delta",
        "response.audio_transcript.delta",
    ),
    (
        ResponseOutputAudioTranscriptDone(transcript="a", **LOC, **E),
        "response.output_audio_transcript.done",
        "response.audio_transcript.done",
    ),
    (ConversationItemAdded(item=ITEM, **E), "conversation.item.added", "conversation.item.created"),
    (ConversationItemDone(item=ITEM, **E), "conversation.item.done", None),
    (
        ConversationItemCreated(item=ITEM, **E),
        "conversation.item.created",
        "conversation.item.created",
    ),
    (
        InputAudioBufferTimeoutTriggered(item_id="i", audio_start_ms=0, audio_end_ms=1, **E),
        "input_audio_buffer.timeout_triggered",
        None,
    ),
    (
        ResponseContentPartAdded(part=OutputText("a"), **LOC, **E),
        "response.content_part.added",
        "response.content_part.added",
    ),
    (InputAudioBufferCleared(**E), "input_audio_buffer.cleared", "input_audio_buffer.cleared"),
]


@pytest.mark.parametrize(
    ("event", "ga", "beta"), WIRE_NAMES, ids=lambda x: getattr(x, "__name__", None)
)
def test_server_wire_names(event: ServerEvent, ga: str, beta: str | None) -> None:
    assert orjson.loads(encode_server(event, GA))["type"] == ga
    assert type(decode_server(encode_server(event, GA), GA)) is type(event)
    if beta is None:
        assert not server_event_supported(event, BETA)
        with pytest.raises(EncodeError):
            encode_server(event, BETA)
    else:
        assert orjson.loads(encode_server(event, BETA))["type"] == beta


def test_wire_name_tables() -> None:
    """The complete per-dialect vocabularies (the §6 table, as the codec implements it)."""
    renamed = {
        "response.output_text.delta": "response.text.delta",
        "response.output_text.done": "response.text.done",
        "response.output_audio.delta": "response.audio.delta",
        "response.output_audio.done": "response.audio.done",
        "response.output_audio_transcript.delta": "response.audio_transcript.delta",
        "response.output_audio_transcript.done": "response.audio_transcript.done",
        "conversation.item.added": "conversation.item.created",
    }
    ga_only = {"conversation.item.done", "input_audio_buffer.timeout_triggered"}
    ga_names = set(SERVER_EVENT_TYPES[GA])
    expected_beta = {renamed.get(n, n) for n in ga_names - ga_only}
    assert set(SERVER_EVENT_TYPES[BETA]) == expected_beta
    assert len(ga_names) == 33
    assert CLIENT_EVENT_TYPES[GA] == CLIENT_EVENT_TYPES[BETA]


def test_beta_item_created_is_the_added_event() -> None:
    """Beta `conversation.item.created` = GA `added`; GA's own `created` stays distinct."""
    added = ConversationItemAdded(item=ITEM, previous_item_id="p", **E)
    created = ConversationItemCreated(item=ITEM, previous_item_id="p", **E)
    assert decode_server(encode_server(created, BETA), BETA) == added
    assert decode_server(encode_server(created, GA), GA) == created
    item = {"type": "message", "role": "user", "content": []}
    wire = orjson.dumps({"type": "conversation.item.created", "event_id": "e", "item": item})
    assert type(decode_server(wire, BETA)) is ConversationItemAdded
    assert type(decode_server(wire, GA)) is ConversationItemCreated


RICH_SESSION = SessionConfig(
    instructions="You are Bob the blacksmith.",
    voice="marin",
    output_modalities=("audio",),
    input_audio_format=AudioFormat.PCM16,
    output_audio_format=AudioFormat.PCMU,
    input_transcription=InputTranscription(model="gpt-4o-transcribe", language="en"),
    turn_detection=ServerVad(threshold=0.5, silence_duration_ms=200, idle_timeout_ms=5000),
    noise_reduction=NoiseReduction(type="near_field", strength=0.5),
    tools=(FunctionTool("give_item", "Hand an item over", {"type": "object"}),),
    tool_choice="auto",
    temperature=0.8,
    max_output_tokens="inf",
    speed=1.1,
)


def test_session_field_map_ga() -> None:
    wire = orjson.loads(encode_client(SessionUpdate(session=RICH_SESSION), GA))["session"]
    assert wire == {
        "type": "realtime",
        "instructions": "You are Bob the blacksmith.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                "noise_reduction": {"type": "near_field", "strength": 0.5},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "silence_duration_ms": 200,
                    "idle_timeout_ms": 5000,
                },
            },
            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.1},
        },
        "tools": [
            {
                "type": "function",
                "name": "give_item",
                "description": "Hand an item over",
                "parameters": {"type": "object"},
            }
        ],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        # no temperature: GA removed it
    }


def test_session_field_map_beta() -> None:
    wire = orjson.loads(encode_client(SessionUpdate(session=RICH_SESSION), BETA))["session"]
    assert wire == {
        "instructions": "You are Bob the blacksmith.",
        "modalities": ["audio"],
        "input_audio_format": "pcm16",
        "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
        "input_audio_noise_reduction": {"type": "near_field"},  # no strength in beta
        "turn_detection": {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 200},
        "output_audio_format": "g711_ulaw",
        "voice": "marin",
        "speed": 1.1,
        "tools": [
            {
                "type": "function",
                "name": "give_item",
                "description": "Hand an item over",
                "parameters": {"type": "object"},
            }
        ],
        "tool_choice": "auto",
        "max_response_output_tokens": "inf",
        "temperature": 0.8,
    }


def test_ga_drops_temperature_and_beta_drops_ga_only_fields() -> None:
    ga = decode_client(encode_client(SessionUpdate(session=RICH_SESSION), GA), GA)
    beta = decode_client(encode_client(SessionUpdate(session=RICH_SESSION), BETA), BETA)
    assert isinstance(ga, SessionUpdate) and isinstance(beta, SessionUpdate)
    assert ga.session.temperature is UNSET
    assert beta.session.temperature == 0.8
    assert beta.session.turn_detection == ServerVad(threshold=0.5, silence_duration_ms=200)
    assert beta.session.noise_reduction == NoiseReduction(type="near_field")


def test_item_content_types_per_dialect() -> None:
    item = AssistantMessage(content=(OutputText("hi"), OutputAudio(transcript="hi")))
    create = ConversationItemCreate(item=item)
    ga = orjson.loads(encode_client(create, GA))["item"]["content"]
    beta = orjson.loads(encode_client(create, BETA))["item"]["content"]
    assert [p["type"] for p in ga] == ["output_text", "output_audio"]
    assert [p["type"] for p in beta] == ["text", "audio"]
    part = ResponseContentPartAdded(part=OutputAudio(transcript=""), **LOC, **E)
    for dialect in (GA, BETA):  # content-part events keep text/audio in GA too
        assert orjson.loads(encode_server(part, dialect))["part"] == {
            "type": "audio",
            "transcript": "",
        }


def test_function_call_arguments_done_name() -> None:
    done = ResponseFunctionCallArgumentsDone(
        response_id="r", item_id="i", output_index=0, call_id="c", arguments="{}", name="f", **E
    )
    assert orjson.loads(encode_server(done, GA))["name"] == "f"
    assert "name" not in orjson.loads(encode_server(done, BETA))
    with pytest.raises(EncodeError):
        encode_server(ResponseFunctionCallArgumentsDone(**{**_fields(done), "name": None}), GA)
    wire = orjson.loads(encode_server(done, GA))
    del wire["name"]
    with pytest.raises(EventError) as err:
        decode_server(orjson.dumps(wire), GA)
    assert (err.value.code, err.value.param) == ("missing_required_parameter", "name")


def test_response_overrides_field_map() -> None:
    create = ResponseCreate(
        response=ResponseOverrides(
            output_modalities=("text",),
            voice="cedar",
            output_audio_format=AudioFormat.PCMA,
            max_output_tokens=200,
            temperature=0.7,
            conversation="none",
            input=(),
        )
    )
    assert orjson.loads(encode_client(create, GA))["response"] == {
        "output_modalities": ["text"],
        "audio": {"output": {"voice": "cedar", "format": {"type": "audio/pcma"}}},
        "max_output_tokens": 200,
        "conversation": "none",
        "input": [],
    }
    assert orjson.loads(encode_client(create, BETA))["response"] == {
        "modalities": ["text"],
        "voice": "cedar",
        "output_audio_format": "g711_alaw",
        "max_response_output_tokens": 200,
        "temperature": 0.7,
        "conversation": "none",
        "input": [],
    }


@pytest.mark.parametrize(
    "make",
    [
        lambda: SessionUpdate(session=SessionConfig(voice=CustomVoice("voice_1"))),
        lambda: SessionUpdate(session=SessionConfig(tool_choice=FunctionToolChoice("f"))),
        lambda: ConversationItemCreate(item=UserMessage(content=(InputImage("data:,"),))),
        lambda: ResponseCreate(response=ResponseOverrides(voice=CustomVoice("voice_1"))),
    ],
)
def test_values_beta_cannot_express_raise(make: Any) -> None:
    encode_client(make(), GA)
    with pytest.raises(EncodeError):
        encode_client(make(), BETA)


@pytest.mark.parametrize("field", ["id", "object", "expires_at"])
def test_read_only_session_fields_cannot_be_sent(field: str) -> None:
    value: Any = 1 if field == "expires_at" else "x"
    with pytest.raises(EncodeError):
        encode_client(SessionUpdate(session=SessionConfig(**{field: value})), GA)
    assert (
        orjson.loads(
            encode_server(SessionCreated(session=SessionConfig(**{field: value}), **E), GA)
        )["session"][field]
        == value
    )


# --------------------------------------------------------------------------------------------
# session.update: partial update, tri-state
# --------------------------------------------------------------------------------------------


def test_empty_session_update_sends_only_the_session_kind() -> None:
    assert orjson.loads(encode_client(SessionUpdate(session=SessionConfig()), GA)) == {
        "type": "session.update",
        "session": {"type": "realtime"},
    }
    assert orjson.loads(encode_client(SessionUpdate(session=SessionConfig()), BETA)) == {
        "type": "session.update",
        "session": {},
    }


@DIALECTS
def test_turn_detection_unset_vs_null(dialect: Dialect) -> None:
    unset = orjson.loads(
        encode_client(SessionUpdate(session=SessionConfig(instructions="x")), dialect)
    )
    push_to_talk = orjson.loads(
        encode_client(SessionUpdate(session=SessionConfig(turn_detection=None)), dialect)
    )
    assert "turn_detection" not in str(unset)
    if dialect is GA:
        assert push_to_talk["session"]["audio"] == {"input": {"turn_detection": None}}
    else:
        assert push_to_talk["session"] == {"turn_detection": None}
    back = decode_client(orjson.dumps(push_to_talk), dialect)
    assert isinstance(back, SessionUpdate) and back.session.turn_detection is None
    back = decode_client(orjson.dumps(unset), dialect)
    assert isinstance(back, SessionUpdate) and back.session.turn_detection is UNSET


def test_updated_with_applies_partial_update() -> None:
    base = SessionConfig(instructions="a", voice="marin", turn_detection=SemanticVad())
    merged = base.updated_with(SessionConfig(instructions="b", turn_detection=None))
    assert merged == SessionConfig(instructions="b", voice="marin", turn_detection=None)
    assert base.updated_with(SessionConfig()) == base


def test_null_audio_object_means_nothing_set() -> None:
    event = decode_client('{"type":"session.update","session":{"type":"realtime","audio":null}}')
    assert event == SessionUpdate(session=SessionConfig())


# --------------------------------------------------------------------------------------------
# Strict client decoding: the service's error codes and params
# --------------------------------------------------------------------------------------------


def ga_update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"type": "realtime", **session}}


def beta_update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": session}


def item_create(**item: Any) -> dict[str, Any]:
    return {"type": "conversation.item.create", "item": item}


def audio_in(**fields: Any) -> dict[str, Any]:
    return {"input": fields}


VAD = "turn_detection"
TRUNCATE = {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0}

# (dialect, frame, expected code, expected param)
# fmt: off
STRICT_CASES: list[tuple[Dialect, Any, str, str | None]] = [
    (GA, "not json", "invalid_event", None),
    (GA, "[1]", "invalid_event", None),
    (GA, {"event_id": "e1"}, "invalid_event", None),
    (GA, {"type": 5}, "invalid_type", "type"),
    (GA, {"type": "transcription_session.update", "session": {}}, "invalid_value", "type"),
    (GA, {"type": "response.audio.delta"}, "invalid_value", "type"),
    (GA, ga_update(voice="alloy"), "unknown_parameter", "session.voice"),
    (GA, ga_update(modalities=["text"]), "unknown_parameter", "session.modalities"),
    (GA, ga_update(temperature=0.8), "unknown_parameter", "session.temperature"),
    (GA, ga_update(id="sess_1"), "unknown_parameter", "session.id"),
    (GA, ga_update(tools=[{"type": "function", "name": "f", "meta": 1}]),
     "unknown_parameter", "session.tools[0].meta"),
    (GA, ga_update(audio=audio_in(**{VAD: {"type": "semantic_vad", "threshold": 0.5}})),
     "unknown_parameter", "session.audio.input.turn_detection.threshold"),
    (GA, {"type": "session.update", "session": {"instructions": "x"}},
     "missing_required_parameter", "session.type"),
    (GA, {"type": "session.update"}, "missing_required_parameter", "session"),
    (GA, ga_update(type="transcription"), "invalid_value", "session.type"),
    (GA, ga_update(instructions=3), "invalid_type", "session.instructions"),
    (GA, ga_update(audio={"output": {"speed": "fast"}}),
     "invalid_type", "session.audio.output.speed"),
    (GA, ga_update(audio=audio_in(format={"type": "audio/pcm", "rate": 16000})),
     "invalid_value", "session.audio.input.format.rate"),
    (GA, ga_update(audio=audio_in(format={"rate": 24000})),
     "missing_required_parameter", "session.audio.input.format.type"),
    (GA, ga_update(audio={"output": {"format": "pcm16"}}),
     "invalid_type", "session.audio.output.format"),
    (GA, ga_update(max_output_tokens="lots"), "invalid_value", "session.max_output_tokens"),
    (GA, ga_update(truncation="auto"), "unsupported_parameter", "session.truncation"),
    (GA, ga_update(tools=[{"type": "mcp", "server_label": "x"}]),
     "unsupported_parameter", "session.tools[0].type"),
    (GA, {"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
    (GA, {"type": "input_audio_buffer.append", "audio": None}, "invalid_type", "audio"),
    (GA, {"type": "input_audio_buffer.append", "audio": "", "x": 1}, "unknown_parameter", "x"),
    (GA, {"type": "input_audio_buffer.commit", "event_id": 7}, "invalid_type", "event_id"),
    (GA, {**TRUNCATE, "audio_end_ms": 1.5}, "invalid_type", "audio_end_ms"),
    (GA, {**TRUNCATE, "content_index": True, "audio_end_ms": 1}, "invalid_type", "content_index"),
    (GA, item_create(type="message", role="user", content=[{"type": "text", "text": "x"}]),
     "invalid_value", "item.content[0].type"),
    (GA, item_create(type="message", role="npc", content=[]), "invalid_value", "item.role"),
    (GA, item_create(type="function_call_output", output="x"),
     "missing_required_parameter", "item.call_id"),
    (GA, item_create(type="mcp_approval_response"), "unsupported_parameter", "item.type"),
    (GA, item_create(role="user"), "missing_required_parameter", "item.type"),
    (GA, {"type": "response.create", "response": {"temperature": 0.8}},
     "unknown_parameter", "response.temperature"),
    (GA, {"type": "response.create", "response": {"metadata": {"k": 1}}},
     "invalid_type", "response.metadata.k"),
    (BETA, beta_update(type="realtime"), "unknown_parameter", "session.type"),
    (BETA, beta_update(audio={}), "unknown_parameter", "session.audio"),
    (BETA, beta_update(voice={"id": "voice_1"}), "invalid_type", "session.voice"),
    (BETA, beta_update(input_audio_format="audio/pcm"),
     "invalid_value", "session.input_audio_format"),
    (BETA, beta_update(turn_detection={"type": "server_vad", "idle_timeout_ms": 5}),
     "unknown_parameter", "session.turn_detection.idle_timeout_ms"),
    (BETA, item_create(type="message", role="assistant", content=[{"type": "output_text"}]),
     "invalid_value", "item.content[0].type"),
]
# fmt: on


@pytest.mark.parametrize(("dialect", "frame", "code", "param"), STRICT_CASES)
def test_strict_client_decoding(dialect: Dialect, frame: Any, code: str, param: str | None) -> None:
    text = frame if isinstance(frame, str) else orjson.dumps(frame)
    with pytest.raises(EventError) as err:
        decode_client(text, dialect)
    assert (err.value.code, err.value.param) == (code, param), err.value.message


def test_service_messages_and_event_id_echo() -> None:
    with pytest.raises(EventError) as err:
        decode_client('{"event_id":"evt_1"}')
    assert err.value.message == "The 'type' field is missing."
    assert err.value.event_id == "evt_1"
    with pytest.raises(EventError) as err:
        decode_client(
            '{"type":"session.update","event_id":"evt_2","session":{"type":"realtime","voice":"x"}}'
        )
    assert err.value.message == "Unknown parameter: 'session.voice'."
    assert err.value.to_error_detail() == ErrorDetail(
        type="invalid_request_error",
        code="unknown_parameter",
        message="Unknown parameter: 'session.voice'.",
        param="session.voice",
        event_id="evt_2",
    )
    with pytest.raises(EventError) as err:
        decode_client('{"type":"session.update","session":{}}')
    assert err.value.message == "Missing required parameter: 'session.type'."


def test_error_messages_do_not_echo_long_payloads() -> None:
    secret = "my private transcript " * 10
    with pytest.raises(EventError) as err:
        decode_client(
            orjson.dumps(
                {"type": "session.update", "session": {"type": "realtime", "tool_choice": secret}}
            )
        )
    assert "private" not in err.value.message


# --------------------------------------------------------------------------------------------
# Lenient server decoding
# --------------------------------------------------------------------------------------------


@DIALECTS
def test_unknown_server_events_are_kept(dialect: Dialect) -> None:
    frame = '{"type":"output_audio_buffer.started","event_id":"e","response_id":"r"}'
    event = decode_server(frame, dialect)
    assert event == UnknownServerEvent(
        "output_audio_buffer.started",
        {"type": "output_audio_buffer.started", "event_id": "e", "response_id": "r"},
    )
    assert orjson.loads(encode_server(event, dialect)) == orjson.loads(frame)


def test_wrong_dialect_names_are_unknown_not_errors() -> None:
    beta_delta = orjson.dumps({"type": "response.audio.delta", **LOC, **E, "delta": ""})
    assert isinstance(decode_server(beta_delta, GA), UnknownServerEvent)
    assert isinstance(decode_server(beta_delta, BETA), ResponseOutputAudioDelta)


def test_server_decoding_ignores_new_keys_and_keeps_unknown_items() -> None:
    frame: dict[str, Any] = {
        "type": "response.output_item.added",
        "event_id": "e",
        "response_id": "r",
        "output_index": 1,
        "new_field": {"x": 1},
        "item": {"type": "mcp_call", "id": "item_9", "server_label": "s", "name": "n"},
    }
    event = decode_server(orjson.dumps(frame), GA)
    assert event == ResponseOutputItemAdded(
        event_id="e",
        response_id="r",
        output_index=1,
        item=UnknownItem("mcp_call", frame["item"]),
    )


def test_ga_session_created_with_service_defaults() -> None:
    """A session.created as the real GA service sends it (nulls and unmodelled fields)."""
    frame = {
        "type": "session.created",
        "event_id": "event_C9G5RJeJ2gF77mV7f2B1j",
        "session": {
            "type": "realtime",
            "object": "realtime.session",
            "id": "sess_C9G5QPteg4UIbotdKLoYQ",
            "model": "gpt-realtime-2025-08-28",
            "output_modalities": ["audio"],
            "instructions": "Your knowledge cutoff is 2023-10.",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "expires_at": 1756324625,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 200,
                        "idle_timeout_ms": None,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "voice": "marin",
                    "speed": 1,
                },
            },
            "include": None,
        },
    }
    event = decode_server(orjson.dumps(frame), GA)
    assert isinstance(event, SessionCreated)
    s = event.session
    assert (s.id, s.object, s.expires_at) == (
        "sess_C9G5QPteg4UIbotdKLoYQ",
        "realtime.session",
        1756324625,
    )
    assert s.input_transcription is None and s.noise_reduction is None
    assert s.turn_detection == ServerVad(0.5, 300, 200, None, True, True)
    assert s.voice == "marin" and s.output_audio_format is AudioFormat.PCM16
    assert s.temperature is UNSET


# --------------------------------------------------------------------------------------------
# Garbage in -> EventError only
# --------------------------------------------------------------------------------------------

ALL_NAMES = sorted(
    {n for d in (GA, BETA) for n in (*CLIENT_EVENT_TYPES[d], *SERVER_EVENT_TYPES[d])}
)
KEYS = st.sampled_from(
    [
        "type",
        "event_id",
        "session",
        "item",
        "response",
        "audio",
        "delta",
        "item_id",
        "content",
        "role",
        "part",
        "error",
        "usage",
        "rate_limits",
        "output",
        "turn_detection",
        "format",
        "input",
        "tools",
        "name",
        "arguments",
        "call_id",
        "content_index",
        "output_index",
    ]
)
TYPED_GARBAGE = st.builds(
    lambda name, rest: {"type": name, **rest},
    st.sampled_from(ALL_NAMES),
    st.dictionaries(KEYS, JSON, max_size=6),
)


def _only_event_errors(frame: str | bytes) -> None:
    for dialect in (GA, BETA):
        for decode in (decode_client, decode_server):
            try:
                decode(frame, dialect)
            except EventError:
                pass


@settings(max_examples=500, deadline=None)
@given(st.text() | st.binary())
def test_arbitrary_text_only_raises_event_error(frame: str | bytes) -> None:
    _only_event_errors(frame)


@settings(max_examples=500, deadline=None)
@given(JSON | TYPED_GARBAGE)
def test_arbitrary_json_only_raises_event_error(value: Any) -> None:
    _only_event_errors(orjson.dumps(value))


def _mutate(obj: Any, path: list[int], replacement: Any) -> Any:
    """Replace the node picked by `path` (indices into containers) with `replacement`."""
    if not path or not isinstance(obj, dict | list) or not obj:
        return replacement
    keys = list(obj) if isinstance(obj, dict) else list(range(len(obj)))
    key = keys[path[0] % len(keys)]
    copy = dict(obj) if isinstance(obj, dict) else list(obj)
    copy[key] = _mutate(obj[key], path[1:], replacement)
    return copy


@DIALECTS
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_valid_events_only_raise_event_error(dialect: Dialect, data: st.DataObject) -> None:
    """Valid frames with one node replaced by random JSON: deep paths, not just the top level."""
    if data.draw(st.booleans()):
        obj = orjson.loads(encode_client(data.draw(client_events(dialect)), dialect))
    else:
        obj = orjson.loads(encode_server(data.draw(server_events(dialect)), dialect))
    path = data.draw(st.lists(st.integers(0, 20), min_size=1, max_size=6))
    _only_event_errors(orjson.dumps(_mutate(obj, path, data.draw(JSON))))


# --------------------------------------------------------------------------------------------
# Hot paths agree with the generic codec
# --------------------------------------------------------------------------------------------


@DIALECTS
@settings(max_examples=200, deadline=None)
@given(delta=B64, ids=st.tuples(IDS, IDS, IDS), idx=st.tuples(INTS, INTS))
def test_audio_delta_fast_path_matches_generic(
    dialect: Dialect, delta: str, ids: tuple[str, str, str], idx: tuple[int, int]
) -> None:
    event = ResponseOutputAudioDelta(
        event_id=ids[0],
        response_id=ids[1],
        item_id=ids[2],
        output_index=idx[0],
        content_index=idx[1],
        delta=delta,
    )
    fast = encode_server(event, dialect)
    shape = codec._SERVER_ENCODE[dialect][ResponseOutputAudioDelta]
    assert orjson.loads(fast) == shape.encode_into({}, event, dialect)
    generic = shape.decode_obj(orjson.loads(fast), "", codec._LENIENT[dialect])
    assert decode_server(fast, dialect) == generic == event


@given(audio=B64 | TEXT)
def test_append_fast_path_matches_generic(audio: str) -> None:
    event = InputAudioBufferAppend(audio=audio)
    shape = codec._CLIENT_ENCODE[GA][InputAudioBufferAppend]
    assert orjson.loads(encode_client(event)) == shape.encode_into({}, event, GA)
    assert decode_client(encode_client(event)) == event


def test_odd_audio_delta_falls_back_to_the_checked_path() -> None:
    frame = orjson.dumps(
        {"type": "response.output_audio.delta", **LOC, **E, "delta": "", "output_index": "0"}
    )
    with pytest.raises(EventError) as err:
        decode_server(frame)
    assert (err.value.code, err.value.param) == ("invalid_type", "output_index")


def test_encode_rejects_values_json_cannot_carry() -> None:
    with pytest.raises(EncodeError):
        encode_client(InputAudioBufferAppend(audio=b"raw bytes"))  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode_client(ConversationItemTruncate(item_id="i", content_index=0, audio_end_ms=2**70))


def _fields(event: Any) -> dict[str, Any]:
    return {name: getattr(event, name) for name in type(event).__dataclass_fields__}


# --------------------------------------------------------------------------------------------
# Micro-benchmark: python -m tests.unit.test_events
# --------------------------------------------------------------------------------------------


def _benchmark() -> None:  # pragma: no cover - manual
    import base64
    import os
    import statistics
    import timeit

    chunk = base64.b64encode(os.urandom(960)).decode()  # 20 ms of 24 kHz pcm16
    append = InputAudioBufferAppend(audio=chunk)
    delta = ResponseOutputAudioDelta(
        event_id="event_AbCdEfGhIjKlMnOpQrStU",
        response_id="resp_AbCdEfGhIjKlMnOpQrStU",
        item_id="item_AbCdEfGhIjKlMnOpQrStU",
        output_index=0,
        content_index=0,
        delta=chunk,
    )
    wire, beta_wire = encode_server(delta), encode_server(delta, BETA)
    cases = {
        "encode input_audio_buffer.append": lambda: encode_client(append),
        "decode response.output_audio.delta": lambda: decode_server(wire),
        "encode response.output_audio.delta": lambda: encode_server(delta),
        "decode response.audio.delta (beta)": lambda: decode_server(beta_wire, BETA),
        "decode_client input_audio_buffer.append": lambda: decode_client(encode_client(append)),
    }
    print(f"{'us per event':40s} {'median':>7s} {'min':>7s}")
    for name, fn in cases.items():
        runs = [t / 20000 * 1e6 for t in timeit.repeat(fn, number=20000, repeat=15)]
        print(f"{name:40s} {statistics.median(runs):7.2f} {min(runs):7.2f}")


if __name__ == "__main__":  # pragma: no cover
    _benchmark()
