"""Encode and decode Realtime events, GA or beta: the only place JSON text becomes types.

Four functions serve both ends of the protocol (npcd is the client, its embedded local server
the server):

* `encode_client(event, dialect) -> str` / `decode_server(text, dialect) -> ServerEvent`: npcd.
* `decode_client(text, dialect) -> ClientEvent` / `encode_server(event, dialect) -> str`: the
  local server.

Decoding raises `EventError` and nothing else. `decode_client` is strict like the real service
(unknown keys, wrong types and unknown event types are errors with the service's codes and
`param` paths), so npcd's tests fail on shape bugs the real service would reject.
`decode_server` is lenient about keys it does not know and returns `UnknownServerEvent` for
event types it does not model. Encoding raises `EncodeError` for what a dialect cannot express.

Item announcements per dialect: GA `conversation.item.added` and beta
`conversation.item.created` both decode to `ConversationItemAdded`; `ConversationItemDone` has
no beta form (`server_event_supported` tells the local server to skip it), nor has
`InputAudioBufferTimeoutTriggered`. GA's own `conversation.item.created` decodes to
`ConversationItemCreated`; encoding that class for beta gives `conversation.item.created`,
which decodes back as `ConversationItemAdded` (same fields): the one lossy round trip.

Hot path: `input_audio_buffer.append` (encode) and `response.output_audio.delta` (both ways)
run ~50 times a second per conversation, so they skip the generic shape walk.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import orjson

from npcd.realtime.dialects import (
    CONTENT_PART,
    CONVERSATION,
    ERROR_DETAIL,
    ITEM,
    LANGUAGES,
    LOGPROBS,
    RATE_LIMITS,
    RESPONSE,
    RESPONSE_OVERRIDES,
    SESSION_OBJECT,
    SESSION_UPDATE,
    TRANSCRIPT_USAGE,
    TRANSCRIPTION_ERROR,
)
from npcd.realtime.events import (
    ClientEvent,
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
    Dialect,
    EncodeError,
    ErrorEvent,
    EventError,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCleared,
    InputAudioBufferCommit,
    InputAudioBufferCommitted,
    InputAudioBufferSpeechStarted,
    InputAudioBufferSpeechStopped,
    InputAudioBufferTimeoutTriggered,
    RateLimitsUpdated,
    ResponseCancel,
    ResponseContentPartAdded,
    ResponseContentPartDone,
    ResponseCreate,
    ResponseCreated,
    ResponseDone,
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
    ServerEvent,
    SessionCreated,
    SessionUpdate,
    SessionUpdated,
    UnknownServerEvent,
)
from npcd.realtime.wire import BETA_ONLY, GA_ONLY, INT, STR, Ctx, Field, Shape, const, invalid_value

__all__ = [
    "CLIENT_EVENT_TYPES",
    "SERVER_EVENT_TYPES",
    "decode_client",
    "decode_server",
    "encode_client",
    "encode_server",
    "server_event_supported",
]


class EventSpec(NamedTuple):
    """One event class and its wire `type` per dialect (None: the dialect has no such event)."""

    cls: type
    ga: str | None
    beta: str | None
    shape: Shape


def _event(
    cls: type, ga: str | None, beta: str | None, *fields: Field, server: bool = True
) -> EventSpec:
    consts = []
    if ga is not None:
        consts.append(const("type", ga, GA_ONLY))
    if beta is not None:
        consts.append(const("type", beta, BETA_ONLY))
    # Server events must carry event_id (SDK-required); a client's is optional and echoed back
    # in error.event_id.
    event_id = Field("event_id", STR, required=server)
    return EventSpec(cls, ga, beta, Shape(cls, [*consts, event_id, *fields]))


def _both(cls: type, name: str, *fields: Field, server: bool = True) -> EventSpec:
    return _event(cls, name, name, *fields, server=server)


def _req(name: str, codec: Any) -> Field:
    return Field(name, codec, required=True)


_ITEM_ID = _req("item_id", STR)
_LOCATION = (  # where a delta belongs: §4 "loc"
    _req("response_id", STR),
    _ITEM_ID,
    _req("output_index", INT),
    _req("content_index", INT),
)

CLIENT_EVENTS = (
    _both(SessionUpdate, "session.update", _req("session", SESSION_UPDATE), server=False),
    _both(InputAudioBufferAppend, "input_audio_buffer.append", _req("audio", STR), server=False),
    _both(InputAudioBufferCommit, "input_audio_buffer.commit", server=False),
    _both(InputAudioBufferClear, "input_audio_buffer.clear", server=False),
    _both(
        ConversationItemCreate,
        "conversation.item.create",
        Field("previous_item_id", STR),
        _req("item", ITEM),
        server=False,
    ),
    _both(ConversationItemRetrieve, "conversation.item.retrieve", _ITEM_ID, server=False),
    _both(
        ConversationItemTruncate,
        "conversation.item.truncate",
        _ITEM_ID,
        _req("content_index", INT),
        _req("audio_end_ms", INT),
        server=False,
    ),
    _both(ConversationItemDelete, "conversation.item.delete", _ITEM_ID, server=False),
    _both(ResponseCreate, "response.create", Field("response", RESPONSE_OVERRIDES), server=False),
    _both(ResponseCancel, "response.cancel", Field("response_id", STR), server=False),
)

_ITEM_EVENT_FIELDS = (Field("previous_item_id", STR), _req("item", ITEM))
_OUTPUT_ITEM_FIELDS = (_req("response_id", STR), _req("output_index", INT), _req("item", ITEM))
_TRANSCRIPTION_PREFIX = "conversation.item.input_audio_transcription"

SERVER_EVENTS = (
    _both(SessionCreated, "session.created", _req("session", SESSION_OBJECT)),
    _both(SessionUpdated, "session.updated", _req("session", SESSION_OBJECT)),
    _both(ConversationCreated, "conversation.created", _req("conversation", CONVERSATION)),
    # Order matters: beta `conversation.item.created` decodes to the first class listing it.
    _event(
        ConversationItemAdded,
        "conversation.item.added",
        "conversation.item.created",
        *_ITEM_EVENT_FIELDS,
    ),
    _event(ConversationItemDone, "conversation.item.done", None, *_ITEM_EVENT_FIELDS),
    _both(ConversationItemCreated, "conversation.item.created", *_ITEM_EVENT_FIELDS),
    _both(ConversationItemRetrieved, "conversation.item.retrieved", _req("item", ITEM)),
    _both(
        ConversationItemTruncated,
        "conversation.item.truncated",
        _ITEM_ID,
        _req("content_index", INT),
        _req("audio_end_ms", INT),
    ),
    _both(ConversationItemDeleted, "conversation.item.deleted", _ITEM_ID),
    _both(
        InputAudioBufferSpeechStarted,
        "input_audio_buffer.speech_started",
        _req("audio_start_ms", INT),
        _ITEM_ID,
    ),
    _both(
        InputAudioBufferSpeechStopped,
        "input_audio_buffer.speech_stopped",
        _req("audio_end_ms", INT),
        _ITEM_ID,
    ),
    _both(
        InputAudioBufferCommitted,
        "input_audio_buffer.committed",
        Field("previous_item_id", STR),
        _ITEM_ID,
    ),
    _both(InputAudioBufferCleared, "input_audio_buffer.cleared"),
    _event(
        InputAudioBufferTimeoutTriggered,
        "input_audio_buffer.timeout_triggered",
        None,
        _req("audio_start_ms", INT),
        _req("audio_end_ms", INT),
        _ITEM_ID,
    ),
    _both(
        ConversationItemInputAudioTranscriptionDelta,
        f"{_TRANSCRIPTION_PREFIX}.delta",
        _ITEM_ID,
        Field("content_index", INT),
        Field("delta", STR),
        Field("logprobs", LOGPROBS),
    ),
    _both(
        ConversationItemInputAudioTranscriptionCompleted,
        f"{_TRANSCRIPTION_PREFIX}.completed",
        _ITEM_ID,
        _req("content_index", INT),
        _req("transcript", STR),
        _req("usage", TRANSCRIPT_USAGE),
        Field("logprobs", LOGPROBS),
        Field("languages", LANGUAGES, dialects=GA_ONLY),
    ),
    _both(
        ConversationItemInputAudioTranscriptionFailed,
        f"{_TRANSCRIPTION_PREFIX}.failed",
        _ITEM_ID,
        _req("content_index", INT),
        _req("error", TRANSCRIPTION_ERROR),
    ),
    _both(ResponseCreated, "response.created", _req("response", RESPONSE)),
    _both(ResponseDone, "response.done", _req("response", RESPONSE)),
    _both(ResponseOutputItemAdded, "response.output_item.added", *_OUTPUT_ITEM_FIELDS),
    _both(ResponseOutputItemDone, "response.output_item.done", *_OUTPUT_ITEM_FIELDS),
    _both(
        ResponseContentPartAdded,
        "response.content_part.added",
        *_LOCATION,
        _req("part", CONTENT_PART),
    ),
    _both(
        ResponseContentPartDone,
        "response.content_part.done",
        *_LOCATION,
        _req("part", CONTENT_PART),
    ),
    _event(
        ResponseOutputTextDelta,
        "response.output_text.delta",
        "response.text.delta",
        *_LOCATION,
        _req("delta", STR),
    ),
    _event(
        ResponseOutputTextDone,
        "response.output_text.done",
        "response.text.done",
        *_LOCATION,
        _req("text", STR),
    ),
    _event(
        ResponseOutputAudioDelta,
        "response.output_audio.delta",
        "response.audio.delta",
        *_LOCATION,
        _req("delta", STR),
    ),
    _event(
        ResponseOutputAudioDone, "response.output_audio.done", "response.audio.done", *_LOCATION
    ),
    _event(
        ResponseOutputAudioTranscriptDelta,
        "response.output_audio_transcript.delta",
        "response.audio_transcript.delta",
        *_LOCATION,
        _req("delta", STR),
    ),
    _event(
        ResponseOutputAudioTranscriptDone,
        "response.output_audio_transcript.done",
        "response.audio_transcript.done",
        *_LOCATION,
        _req("transcript", STR),
    ),
    _both(
        ResponseFunctionCallArgumentsDelta,
        "response.function_call_arguments.delta",
        _req("response_id", STR),
        _ITEM_ID,
        _req("output_index", INT),
        _req("call_id", STR),
        _req("delta", STR),
    ),
    _both(
        ResponseFunctionCallArgumentsDone,
        "response.function_call_arguments.done",
        _req("response_id", STR),
        _ITEM_ID,
        _req("output_index", INT),
        _req("call_id", STR),
        Field("name", STR, required=True, dialects=GA_ONLY),
        _req("arguments", STR),
    ),
    _both(RateLimitsUpdated, "rate_limits.updated", _req("rate_limits", RATE_LIMITS)),
    _both(ErrorEvent, "error", _req("error", ERROR_DETAIL)),
)


def _wire_name(spec: EventSpec, dialect: Dialect) -> str | None:
    return spec.ga if dialect is Dialect.GA else spec.beta


def _by_name(specs: tuple[EventSpec, ...], dialect: Dialect) -> dict[str, Shape]:
    table: dict[str, Shape] = {}
    for spec in specs:
        name = _wire_name(spec, dialect)
        if name is not None:
            table.setdefault(name, spec.shape)
    return table


def _by_class(specs: tuple[EventSpec, ...], dialect: Dialect) -> dict[type, Shape]:
    return {spec.cls: spec.shape for spec in specs if _wire_name(spec, dialect) is not None}


_CLIENT_DECODE = {d: _by_name(CLIENT_EVENTS, d) for d in Dialect}
_CLIENT_ENCODE = {d: _by_class(CLIENT_EVENTS, d) for d in Dialect}
_SERVER_DECODE = {d: _by_name(SERVER_EVENTS, d) for d in Dialect}
_SERVER_ENCODE = {d: _by_class(SERVER_EVENTS, d) for d in Dialect}
_STRICT = {d: Ctx(d, strict=True) for d in Dialect}
_LENIENT = {d: Ctx(d, strict=False) for d in Dialect}

#: Wire event types each side understands, per dialect (for docs, tests and error messages).
CLIENT_EVENT_TYPES = {d: tuple(_CLIENT_DECODE[d]) for d in Dialect}
SERVER_EVENT_TYPES = {d: tuple(_SERVER_DECODE[d]) for d in Dialect}

# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def encode_client(event: ClientEvent, dialect: Dialect = Dialect.GA) -> str:
    """Serialise a client event as one JSON text frame.

    Raises EncodeError if the dialect cannot express it (see `npcd.realtime.dialects`).
    """
    if type(event) is InputAudioBufferAppend and event.event_id is None:
        return encode_append(event.audio).decode()
    shape = _CLIENT_ENCODE[dialect].get(type(event))
    if shape is None:
        raise EncodeError(f"{type(event).__name__} is not a client event")
    return _dumps(shape.encode_into({}, event, dialect))


def decode_client(text: str | bytes, dialect: Dialect = Dialect.GA) -> ClientEvent:
    """Parse one client frame, strictly, as the real service would.

    Raises EventError with the service's code and `param` path; its `event_id` is the
    offending event's own id when it had one, for the server's `error.event_id`.
    """
    obj = _load(text)
    raw_id = obj.get("event_id")
    event_id = raw_id if type(raw_id) is str else None
    try:
        name = _event_type(obj)
        shape = _CLIENT_DECODE[dialect].get(name)
        if shape is None:
            invalid_value("type", name, _CLIENT_DECODE[dialect])
        event: ClientEvent = shape.decode_obj(obj, "", _STRICT[dialect])
    except EventError as exc:
        exc.event_id = event_id
        raise
    return event


def encode_server(event: ServerEvent, dialect: Dialect = Dialect.GA) -> str:
    """Serialise a server event as one JSON text frame (the local server's send path).

    Raises EncodeError for events the dialect lacks; check `server_event_supported` to skip
    them (beta has no `conversation.item.done` / `input_audio_buffer.timeout_triggered`).
    """
    if type(event) is ResponseOutputAudioDelta:
        return _encode_audio_delta(event, dialect)
    if type(event) is UnknownServerEvent:
        return _dumps({"type": event.type, **{k: v for k, v in event.raw.items() if k != "type"}})
    shape = _SERVER_ENCODE[dialect].get(type(event))
    if shape is None:
        raise EncodeError(f"{type(event).__name__} has no {dialect.name} wire form")
    return _dumps(shape.encode_into({}, event, dialect))


def server_event_supported(event: ServerEvent, dialect: Dialect) -> bool:
    """Whether `encode_server(event, dialect)` has a wire form for this event class."""
    return type(event) is UnknownServerEvent or type(event) in _SERVER_ENCODE[dialect]


def decode_server(text: str | bytes, dialect: Dialect = Dialect.GA) -> ServerEvent:
    """Parse one server frame. Unknown event types become `UnknownServerEvent`, never errors.

    Raises EventError for frames that are not JSON objects with a string `type`, or a known
    event whose fields have the wrong shape; unknown keys are ignored.
    """
    obj = _load(text)
    name = _event_type(obj)
    if name == _AUDIO_DELTA[dialect]:
        fast = _decode_audio_delta(obj)
        if fast is not None:
            return fast
    shape = _SERVER_DECODE[dialect].get(name)
    if shape is None:
        return UnknownServerEvent(name, obj)
    event: ServerEvent = shape.decode_obj(obj, "", _LENIENT[dialect])
    return event


# --------------------------------------------------------------------------------------------
# Helpers and hot paths
# --------------------------------------------------------------------------------------------


def _load(text: str | bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise EventError("invalid_event", "The event is not valid JSON.") from None
    if type(obj) is not dict:
        raise EventError("invalid_event", "The event must be a JSON object.")
    return obj


def _event_type(obj: dict[str, Any]) -> str:
    name = obj.get("type")
    if name is None:
        raise EventError("invalid_event", "The 'type' field is missing.")
    if type(name) is not str:
        raise EventError("invalid_type", "Invalid type for 'type': expected a string.", "type")
    return name


def _dumps(obj: dict[str, Any]) -> str:
    try:
        return orjson.dumps(obj).decode()
    except orjson.JSONEncodeError as exc:
        raise EncodeError(f"not JSON-serialisable: {exc}") from None


_APPEND_PREFIX = b'{"type":"input_audio_buffer.append","audio":'


def encode_append(audio: str) -> bytes:
    """``input_audio_buffer.append`` as UTF-8 JSON, the same in both dialects: the hot path's
    event, built as bytes so that nothing decodes it to str only for the WebSocket to encode it
    back (send it as a text frame)."""
    # One orjson call on the string (it escapes anything odd) and no dict: ~0.5 us for 20 ms.
    if type(audio) is not str:
        raise EncodeError("InputAudioBufferAppend.audio must be a base64 str")
    return _APPEND_PREFIX + orjson.dumps(audio) + b"}"


_AUDIO_DELTA = {
    Dialect.GA: "response.output_audio.delta",
    Dialect.BETA: "response.audio.delta",
}


def _encode_audio_delta(event: ResponseOutputAudioDelta, dialect: Dialect) -> str:
    return _dumps(
        {
            "type": _AUDIO_DELTA[dialect],
            "event_id": event.event_id,
            "response_id": event.response_id,
            "item_id": event.item_id,
            "output_index": event.output_index,
            "content_index": event.content_index,
            "delta": event.delta,
        }
    )


# The frozen dataclass __init__ (keyword parsing plus object.__setattr__ per field) costs
# ~1.3 us, half of the whole decode; the slot descriptors do the same stores in ~0.5 us.
# The field tuple is checked at import so a new field cannot be silently left unset.
_DELTA_FIELDS = ("event_id", "response_id", "item_id", "output_index", "content_index", "delta")
if tuple(f.name for f in dataclasses.fields(ResponseOutputAudioDelta)) != _DELTA_FIELDS:
    raise TypeError("ResponseOutputAudioDelta changed: update the decode fast path")
_new_event = object.__new__
_set_event_id, _set_response_id, _set_item_id, _set_output_index, _set_content_index, _set_delta = (
    getattr(ResponseOutputAudioDelta, name).__set__ for name in _DELTA_FIELDS
)


def _decode_audio_delta(obj: dict[str, Any]) -> ResponseOutputAudioDelta | None:
    """Typed lookups without the shape walk; None sends odd frames to the generic decoder."""
    get = obj.get
    event_id = get("event_id")
    response_id = get("response_id")
    item_id = get("item_id")
    output_index = get("output_index")
    content_index = get("content_index")
    delta = get("delta")
    if (
        type(event_id) is str
        and type(response_id) is str
        and type(item_id) is str
        and type(output_index) is int
        and type(content_index) is int
        and type(delta) is str
    ):
        event: ResponseOutputAudioDelta = _new_event(ResponseOutputAudioDelta)
        _set_event_id(event, event_id)
        _set_response_id(event, response_id)
        _set_item_id(event, item_id)
        _set_output_index(event, output_index)
        _set_content_index(event, content_index)
        _set_delta(event, delta)
        return event
    return None
