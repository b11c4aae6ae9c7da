"""The server side of one local Realtime session: the service's behaviour, offline.

It reproduces what npcd's tests need the real service to do (realtime-protocol.md §8.1): strict
client events with the service's error codes, `session.update` merging, no ack for `append`,
``input_audio_buffer_commit_empty`` under 100 ms, one active response at a time, the voice
fixed after the first audio, server VAD with ``create_response`` and ``interrupt_response``,
truncation checked against the audio actually produced, and the full event sequence of a
response. Hearing, thinking and speaking are the engines' business (`npcd.localbackend.engines`
and `brain`); heavy engine calls run in worker threads, so a session never blocks the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from npcd import audio
from npcd.localbackend import usage
from npcd.localbackend.brain import Brain, Reply, find_persona, game_event
from npcd.localbackend.engines import SpeechChunk, Synthesizer, Transcriber, VoiceActivity
from npcd.localbackend.engines.vad import SpeechStarted, VadSegmenter
from npcd.localbackend.turns import SemanticTiming, looks_complete, semantic_timing
from npcd.memory.recall import MEMORY_NOTE_PREFIX
from npcd.personas.model import Persona
from npcd.realtime import events as ev
from npcd.realtime.codec import decode_client, encode_server, server_event_supported
from npcd.realtime.extensions import phonemes_event
from npcd.realtime.values import (
    AssistantMessage,
    AudioFormat,
    Conversation,
    Dialect,
    ErrorDetail,
    EventError,
    FunctionCall,
    FunctionCallOutput,
    InputAudio,
    InputText,
    InputTranscription,
    Item,
    OutputAudio,
    OutputText,
    RateLimit,
    Response,
    ResponseOverrides,
    SemanticVad,
    ServerVad,
    SessionConfig,
    StatusDetails,
    SystemMessage,
    TranscriptDurationUsage,
    UserMessage,
)

_LOGGER = logging.getLogger(__name__)

DEFAULT_INSTRUCTIONS = "You are a helpful, friendly character. Answer briefly."
#: Largest audio delta sent at once (200 ms of PCM16 24 kHz).
MAX_DELTA_BYTES = 9600
MIN_COMMIT_BYTES = 4800  # 100 ms
#: New speech (PCM16 24 kHz bytes) that earns another partial transcription pass: 500 ms.
#: A Whisper pass costs 0.2-0.3 s of both cores whatever the length (30 s window), so a
#: shorter step would keep the machine busy and delay the pass that matters, at the pause.
PARTIAL_STEP_BYTES = 24000
#: Silence after a pause's start that the speculative final pass reads.
PAUSE_TAIL_MS = 100
#: Silence added after it, as a turn's own trailing silence would be.
PAUSE_PAD_MS = 500


@dataclass(frozen=True, slots=True)
class Engines:
    """What a session hears, thinks and speaks with. Shared by all sessions of a server."""

    vad: Callable[[], VoiceActivity]
    transcriber: Transcriber
    synthesizer: Synthesizer
    brain: Callable[[Persona | None], Brain]
    #: Loads models and prepares each persona's matcher ahead of the first turn (blocking).
    warm: Callable[[Iterable[Persona]], None] | None = None


@dataclass(slots=True)
class _ItemState:
    item: Item
    #: The item's audio in bytes of PCM16 24 kHz: the assistant's as produced (then truncated),
    #: or the player's as committed.
    audio_bytes: int = 0
    transcript: str = ""
    #: A user audio item's transcription, once done.
    heard: asyncio.Future[str] | None = None
    answered: bool = False


@dataclass(slots=True)
class _Response:
    id: str
    task: asyncio.Task[None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None
    output: list[Item] = field(default_factory=list)


@dataclass(slots=True)
class _Pass:
    """One Whisper pass over the utterance so far: a partial one, or the speculative final
    one started at a pause (``pause_ms``), whose text is the turn's if the player stays quiet."""

    item_id: str
    #: Where the speech it heard ends: the pass is the turn's only if the turn ends there.
    speech_end_ms: int
    pause_ms: int | None
    task: asyncio.Task[str]


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


#: Model ids the beta SDK accepts in a session object (its `model` is a closed list there).
BETA_MODELS = frozenset(
    {
        "gpt-realtime",
        "gpt-realtime-2025-08-28",
        "gpt-4o-realtime-preview",
        "gpt-4o-realtime-preview-2024-10-01",
        "gpt-4o-realtime-preview-2024-12-17",
        "gpt-4o-realtime-preview-2025-06-03",
        "gpt-4o-mini-realtime-preview",
        "gpt-4o-mini-realtime-preview-2024-12-17",
    }
)


def default_session(dialect: Dialect, model: str, expires_at: int) -> SessionConfig:
    """What `session.created` reports before any `session.update`.

    In beta, a model id outside the beta list (``npcd-local:<persona>``) is reported as
    ``gpt-4o-realtime-preview``: beta clients validate the field against a closed list.
    """
    if dialect is Dialect.BETA and model not in BETA_MODELS:
        model = "gpt-4o-realtime-preview"
    return SessionConfig(
        id=_new_id("sess"),
        object="realtime.session",
        model=model,
        expires_at=expires_at,
        instructions=DEFAULT_INSTRUCTIONS,
        voice="alloy",
        output_modalities=("audio",) if dialect is Dialect.GA else ("text", "audio"),
        input_audio_format=AudioFormat.PCM16,
        output_audio_format=AudioFormat.PCM16,
        input_transcription=None,
        turn_detection=ServerVad(
            threshold=0.5,
            prefix_padding_ms=300,
            silence_duration_ms=500,
            create_response=True,
            interrupt_response=True,
        ),
        tools=(),
        tool_choice="auto",
        temperature=0.8 if dialect is Dialect.BETA else ev.UNSET,
        max_output_tokens="inf",
        speed=1.0,
    )


class BackendSession:
    """One connected client. `handle` each received frame; events go out through ``send``."""

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        *,
        dialect: Dialect,
        model: str,
        engines: Engines,
        personas: dict[str, Persona],
        expires_at: int,
        phoneme_events: bool = False,
    ) -> None:
        self._send_text = send
        #: The client asked for `npcd.realtime.extensions.PHONEMES_EVENT`s (lip-sync timing).
        self.phoneme_events = phoneme_events
        self.dialect = dialect
        self.engines = engines
        self.personas = personas
        self.config = default_session(dialect, model, expires_at)
        self.items: dict[str, _ItemState] = {}
        self.order: list[str] = []
        self.response: _Response | None = None
        self.voice_locked = False
        self._buffer = bytearray()
        self._fed_ms = 0.0
        #: Where the buffer and the VAD's clock begin, on the clock of all audio fed: so a pass
        #: at a pause reads the buffer up to the pause, however late it starts.
        self._buffer_origin_ms = 0.0
        self._vad_origin_ms = 0.0
        self._vad: VoiceActivity | None = None
        self._segmenter: VadSegmenter | None = None
        #: semantic_vad: the silences that end a turn; None under server_vad.
        self._semantic: SemanticTiming | None = None
        self._speech_item: str | None = None
        #: The transcription pass in flight (at most one per session) and the latest
        #: speculative one, kept for the turn end.
        self._pass: _Pass | None = None
        self._guess: _Pass | None = None
        #: Buffer size at the latest partial pass, and the words already sent as deltas.
        self._partial_at = 0
        self._partial_words: list[str] = []
        self._previous_words: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._event_ids = itertools.count(1)
        self._brains: dict[str, Brain] = {}
        #: What the previous response read, for its cached prefix (`npcd.localbackend.usage`).
        self._last_prompt: tuple[usage.Piece, ...] = ()
        self._persona = find_persona(personas, model, None)
        #: The model named the persona (``npcd-local:<id>``): instructions never override it.
        self._pinned = self._persona is not None
        self._configure_vad()

    def describe(self) -> dict[str, Any]:
        """The session as text: its model, persona and conversation items in order."""
        items = []
        for item_id in self.order:
            state = self.items.get(item_id)
            if state is not None:
                items.append({"id": item_id, **_item_text(state)})
        persona = self._persona.id if self._persona is not None else None
        return {"model": self.config.model, "persona": persona, "items": items}

    # -- plumbing -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._emit(ev.SessionCreated(event_id=self._eid(), session=self.config))
        await self._emit(
            ev.ConversationCreated(
                event_id=self._eid(),
                conversation=Conversation(id=_new_id("conv")),
            )
        )

    async def close(self) -> None:
        if self.response is not None:
            self.response.cancel.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _eid(self) -> str:
        return f"event_{next(self._event_ids)}"

    async def _emit(self, event: ev.ServerEvent) -> None:
        if server_event_supported(event, self.dialect):
            await self._send_text(encode_server(event, self.dialect))

    async def _error(
        self, code: str, message: str, param: str | None = None, event_id: str | None = None
    ) -> None:
        await self._emit(
            ev.ErrorEvent(
                event_id=self._eid(),
                error=ErrorDetail(
                    type="invalid_request_error",
                    code=code,
                    message=message,
                    param=param,
                    event_id=event_id,
                ),
            )
        )

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- client events --------------------------------------------------------------------------

    async def handle(self, text: str | bytes) -> None:
        """Handle one client frame; a bad one gets an `error` event and the session goes on."""
        try:
            event = decode_client(text, self.dialect)
        except EventError as exc:
            await self._error(exc.code, exc.message, exc.param, exc.event_id)
            return
        handler = getattr(self, f"_on_{type(event).__name__}")
        await handler(event)

    async def _on_SessionUpdate(self, event: ev.SessionUpdate) -> None:
        update = event.session
        for read_only in ("id", "object", "expires_at", "model"):
            if getattr(update, read_only) is not ev.UNSET:
                await self._error(
                    "unknown_parameter",
                    f"Unknown parameter: 'session.{read_only}'.",
                    f"session.{read_only}",
                    event.event_id,
                )
                return
        if self.voice_locked and update.voice is not ev.UNSET and update.voice != self.config.voice:
            await self._error(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                "session.voice",
                event.event_id,
            )
            return
        self.config = self.config.updated_with(update)
        if update.instructions is not ev.UNSET and not self._pinned:
            instructions = self.config.instructions
            text = instructions if isinstance(instructions, str) else ""
            found = find_persona(self.personas, None, text)
            self._persona = found or self._persona
        self._configure_vad()
        await self._emit(ev.SessionUpdated(event_id=self._eid(), session=self.config))

    async def _on_InputAudioBufferAppend(self, event: ev.InputAudioBufferAppend) -> None:
        try:
            pcm = audio.b64decode(event.audio)
        except audio.AudioError:
            await self._error(
                "invalid_value",
                "Invalid 'audio'. Expected base64-encoded audio bytes.",
                "audio",
                event.event_id,
            )
            return
        if len(pcm) % 2:
            pcm = pcm[:-1]
        self._buffer += pcm
        self._fed_ms += len(pcm) / 48
        if self._segmenter is None:
            return
        if self._vad is None:  # created on first audio: idle NPC sessions cost nothing
            self._vad = self.engines.vad()
            self._vad_origin_ms = self._fed_ms - len(pcm) / 48
        for change in self._segmenter.feed(self._vad.process(pcm)):
            if isinstance(change, SpeechStarted):
                await self._speech_started(change.audio_start_ms)
            else:
                await self._speech_stopped(change.audio_end_ms)
        self._schedule_pass()
        await self._maybe_end_turn()

    async def _on_InputAudioBufferCommit(self, event: ev.InputAudioBufferCommit) -> None:
        if len(self._buffer) < MIN_COMMIT_BYTES:
            have = len(self._buffer) / 48
            await self._error(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {have:.2f}ms of audio.",
                None,
                event.event_id,
            )
            return
        await self._commit(_new_id("item"))

    async def _on_InputAudioBufferClear(self, event: ev.InputAudioBufferClear) -> None:
        self._buffer.clear()
        self._buffer_origin_ms = self._fed_ms
        if self._segmenter is not None:
            self._segmenter.reset()
        self._speech_item = None
        self._guess = None
        await self._emit(ev.InputAudioBufferCleared(event_id=self._eid()))

    async def _on_ConversationItemCreate(self, event: ev.ConversationItemCreate) -> None:
        item = event.item
        previous = event.previous_item_id
        if previous not in (None, "root") and previous not in self.items:
            await self._error(
                "invalid_value",
                f"Item with id '{previous}' not found.",
                "previous_item_id",
                event.event_id,
            )
            return
        if isinstance(item, AssistantMessage) and any(
            isinstance(c, OutputAudio) for c in item.content
        ):
            await self._error(
                "invalid_value",
                "Assistant messages can only contain text content.",
                "item.content",
                event.event_id,
            )
            return
        item_id = getattr(item, "id", None) or _new_id("item")
        typed: Any = item
        item = replace(typed, id=item_id, status="completed")
        await self._add_item(item, previous)

    async def _on_ConversationItemRetrieve(self, event: ev.ConversationItemRetrieve) -> None:
        state = self.items.get(event.item_id)
        if state is None:
            await self._not_found(event.item_id, event.event_id)
            return
        await self._emit(ev.ConversationItemRetrieved(event_id=self._eid(), item=state.item))

    async def _on_ConversationItemDelete(self, event: ev.ConversationItemDelete) -> None:
        if event.item_id not in self.items:
            await self._not_found(event.item_id, event.event_id)
            return
        del self.items[event.item_id]
        self.order.remove(event.item_id)
        await self._emit(ev.ConversationItemDeleted(event_id=self._eid(), item_id=event.item_id))

    async def _on_ConversationItemTruncate(self, event: ev.ConversationItemTruncate) -> None:
        state = self.items.get(event.item_id)
        if state is None:
            await self._not_found(event.item_id, event.event_id)
            return
        if not isinstance(state.item, AssistantMessage) or not state.audio_bytes:
            await self._error(
                "unsupported_content_type",
                "Only model output audio messages can be truncated",
                None,
                event.event_id,
            )
            return
        audio_ms = state.audio_bytes // 48
        if event.audio_end_ms > audio_ms:
            await self._error(
                "invalid_value",
                f"Audio content of {audio_ms}ms is already shorter than {event.audio_end_ms}ms",
                "audio_end_ms",
                event.event_id,
            )
            return
        words = state.transcript.split()
        kept = " ".join(words[: round(len(words) * event.audio_end_ms / max(1, audio_ms))])
        state.transcript = kept
        state.audio_bytes = event.audio_end_ms * 48
        state.item = replace(state.item, content=(OutputAudio(transcript=kept),))
        await self._emit(
            ev.ConversationItemTruncated(
                event_id=self._eid(),
                item_id=event.item_id,
                content_index=event.content_index,
                audio_end_ms=event.audio_end_ms,
            )
        )

    async def _on_ResponseCreate(self, event: ev.ResponseCreate) -> None:
        if self.response is not None:
            await self._error(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress: "
                f"{self.response.id}. Wait until the response is finished before creating a "
                "new one.",
                None,
                event.event_id,
            )
            return
        self._start_response(event.response)

    async def _on_ResponseCancel(self, event: ev.ResponseCancel) -> None:
        response = self.response
        if response is None or (event.response_id and event.response_id != response.id):
            await self._error(
                "response_cancel_not_active",
                "Cancellation failed: no active response found",
                None,
                event.event_id,
            )
            return
        self._cancel(response, "client_cancelled")

    async def _not_found(self, item_id: str, event_id: str | None) -> None:
        await self._error(
            "invalid_value", f"Item with id '{item_id}' not found.", "item_id", event_id
        )

    # -- hearing --------------------------------------------------------------------------------

    def _configure_vad(self) -> None:
        detection = self.config.turn_detection
        self._semantic = None
        if isinstance(detection, SemanticVad):
            # The segmenter's own silence is the long wait, for words that sound unfinished;
            # `_maybe_end_turn` ends the turn sooner when they sound finished.
            self._semantic = semantic_timing(detection.eagerness)
            self._segmenter = VadSegmenter(0.5, 300, self._semantic.incomplete_ms)
        elif isinstance(detection, ServerVad):
            self._segmenter = VadSegmenter(
                detection.threshold if detection.threshold is not None else 0.5,
                detection.prefix_padding_ms if detection.prefix_padding_ms is not None else 300,
                detection.silence_duration_ms if detection.silence_duration_ms is not None else 500,
            )
        else:
            self._segmenter = None

    def _schedule_pass(self) -> None:
        """Start a transcription pass if none is running: at a pause, the speculative final one
        (so the transcript is ready, or nearly, when the silence ends the turn), else, every
        `PARTIAL_STEP_BYTES` of speech, a partial one for transcript deltas."""
        segmenter, item_id = self._segmenter, self._speech_item
        if self._pass is not None or segmenter is None or item_id is None:
            return
        pause = segmenter.pause_ms
        if pause is not None:
            if (self._guess is None or self._guess.pause_ms != pause) and len(
                self._buffer
            ) >= self._pause_bytes(pause):
                self._guess = self._start_pass(item_id, pause)
        elif (
            isinstance(self.config.input_transcription, InputTranscription)
            and len(self._buffer) - self._partial_at >= PARTIAL_STEP_BYTES
        ):
            self._partial_at = len(self._buffer)
            self._start_pass(item_id, None)

    def _pause_bytes(self, pause_ms: int) -> int:
        """The buffer up to ``pause_ms`` on the VAD's clock, plus `PAUSE_TAIL_MS` of the
        silence (Whisper ends a sentence better with a little of it)."""
        at = pause_ms + self._vad_origin_ms - self._buffer_origin_ms + PAUSE_TAIL_MS
        return max(0, int(at * 48) // 2 * 2)

    def _up_to_pause(self, pcm: bytes, pause_ms: int) -> bytes:
        """What a pass at a pause reads: the speech up to it, then silence. The pause is found
        to a VAD window (32 ms), so the cut falls a little differently each time, and Whisper
        reads a clip that ends close to its last word unsteadily ("far sale" for "for sale");
        with the silence a quiet player would have given it, it reads it as before."""
        return pcm[: self._pause_bytes(pause_ms)] + bytes(PAUSE_PAD_MS * 48)

    def _start_pass(self, item_id: str, pause_ms: int | None) -> _Pass:
        # At a pause: the same audio whenever the pass starts (a partial pass may have been
        # running), so the transcript does not depend on how busy the machine is.
        pcm = bytes(
            self._buffer if pause_ms is None else self._up_to_pause(bytes(self._buffer), pause_ms)
        )
        task = asyncio.ensure_future(
            asyncio.to_thread(
                self.engines.transcriber.transcribe, pcm, self._transcription_prompt()
            )
        )
        task.add_done_callback(_retrieve)  # its error, if no one awaits it, is not news
        speech_end = self._segmenter.speech_end_ms if self._segmenter is not None else 0
        this = _Pass(item_id, speech_end, pause_ms, task)
        self._pass = this
        self._spawn(self._after_pass(this), f"pass-{item_id}")
        return this

    async def _after_pass(self, done: _Pass) -> None:
        try:
            text = await asyncio.shield(done.task)
        except asyncio.CancelledError:
            raise
        except Exception:  # reported by `_transcribe` if this pass is the turn's
            text = None
        finally:
            if self._pass is done:
                self._pass = None
        if text is not None and done.pause_ms is None and done.item_id == self._speech_item:
            await self._partial(done.item_id, text)
        self._schedule_pass()
        await self._maybe_end_turn()

    async def _partial(self, item_id: str, text: str) -> None:
        """Send the words two passes in a row agree on as a transcript delta.

        Deltas only append, and Whisper revises its last words as more audio comes, so only the
        prefix shared with the previous pass is sent (the "local agreement" of streaming ASR).
        """
        words = text.split()
        stable: list[str] = []
        for new, old in zip(words, self._previous_words, strict=False):
            if _norm(new) != _norm(old):
                break
            stable.append(new)
        self._previous_words = words
        sent = self._partial_words
        if len(stable) <= len(sent) or [_norm(w) for w in stable[: len(sent)]] != [
            _norm(w) for w in sent
        ]:
            return
        delta = " ".join(stable[len(sent) :])
        self._partial_words = stable
        await self._emit(
            ev.ConversationItemInputAudioTranscriptionDelta(
                event_id=self._eid(),
                item_id=item_id,
                content_index=0,
                delta=delta if not sent else " " + delta,
            )
        )

    async def _maybe_end_turn(self) -> None:
        """semantic_vad: end the turn after the short silence if the words sound finished."""
        segmenter, guess, timing = self._segmenter, self._guess, self._semantic
        if segmenter is None or guess is None or timing is None or not guess.task.done():
            return
        pause = segmenter.pause_ms
        if pause is None or guess.pause_ms != pause or guess.item_id != self._speech_item:
            return
        if segmenter.position_ms - pause < timing.complete_ms:
            return
        if guess.task.cancelled() or guess.task.exception() is not None:
            return
        if looks_complete(guess.task.result()):
            await self._speech_stopped(segmenter.stop().audio_end_ms)

    async def _speech_started(self, audio_start_ms: int) -> None:
        self._speech_item = _new_id("item")
        await self._emit(
            ev.InputAudioBufferSpeechStarted(
                event_id=self._eid(), audio_start_ms=audio_start_ms, item_id=self._speech_item
            )
        )
        detection = self.config.turn_detection
        interrupt = getattr(detection, "interrupt_response", None)
        if self.response is not None and interrupt is not False:
            self._cancel(self.response, "turn_detected")
        self._guess = None
        self._partial_at = 0
        self._partial_words = []
        self._previous_words = []

    async def _speech_stopped(self, audio_end_ms: int) -> None:
        item_id = self._speech_item or _new_id("item")
        self._speech_item = None
        await self._emit(
            ev.InputAudioBufferSpeechStopped(
                event_id=self._eid(), audio_end_ms=audio_end_ms, item_id=item_id
            )
        )
        guess, self._guess = self._guess, None
        ready = None
        if guess is not None and (guess.item_id, guess.speech_end_ms) == (item_id, audio_end_ms):
            ready = guess.task
        await self._commit(item_id, ready, speech_end_ms=audio_end_ms)
        detection = self.config.turn_detection
        if getattr(detection, "create_response", None) is not False and self.response is None:
            self._start_response(None)

    async def _commit(
        self,
        item_id: str,
        ready: asyncio.Task[str] | None = None,
        *,
        speech_end_ms: int | None = None,
    ) -> None:
        """Commit the buffer as a user item; ``ready`` is its transcription, if already begun
        (at the pause before this turn end: what follows it is silence). A turn the VAD ended
        at ``speech_end_ms`` is transcribed from the audio the pause's pass reads, whether or
        not that pass got to start, so its words never depend on timing."""
        pcm = bytes(self._buffer)
        heard_pcm = pcm if speech_end_ms is None else self._up_to_pause(pcm, speech_end_ms)
        self._buffer.clear()
        self._buffer_origin_ms = self._fed_ms
        previous = self.order[-1] if self.order else None
        await self._emit(
            ev.InputAudioBufferCommitted(
                event_id=self._eid(), item_id=item_id, previous_item_id=previous
            )
        )
        item = UserMessage(id=item_id, status="completed", content=(InputAudio(transcript=None),))
        state = await self._add_item(item, previous)
        state.audio_bytes = len(pcm)
        state.heard = asyncio.get_running_loop().create_future()
        self._spawn(
            self._transcribe(item_id, heard_pcm or pcm, state.heard, ready),
            f"transcribe-{item_id}",
        )

    def _transcription_prompt(self) -> str:
        transcription = self.config.input_transcription
        if isinstance(transcription, InputTranscription) and transcription.prompt:
            return transcription.prompt
        return ""

    async def _transcribe(
        self,
        item_id: str,
        pcm: bytes,
        heard: asyncio.Future[str],
        ready: asyncio.Task[str] | None = None,
    ) -> None:
        transcription = self.config.input_transcription
        if not isinstance(transcription, InputTranscription):
            transcription = None
        started = time.perf_counter()
        try:
            if ready is not None:
                text = await asyncio.shield(ready)
            else:
                text = await asyncio.to_thread(
                    self.engines.transcriber.transcribe, pcm, self._transcription_prompt()
                )
        except Exception as exc:  # an engine failure must not kill the session
            _LOGGER.warning("transcription failed: %s", type(exc).__name__)
            text = ""
            if transcription:
                await self._emit(
                    ev.ConversationItemInputAudioTranscriptionFailed(
                        event_id=self._eid(),
                        item_id=item_id,
                        content_index=0,
                        error=ErrorDetail(type="server_error", message="transcription failed"),
                    )
                )
        else:
            if transcription and item_id in self.items:
                await self._emit(
                    ev.ConversationItemInputAudioTranscriptionCompleted(
                        event_id=self._eid(),
                        item_id=item_id,
                        content_index=0,
                        transcript=text,
                        usage=TranscriptDurationUsage(seconds=round(len(pcm) / 48000, 3)),
                    )
                )
        _LOGGER.debug(
            "transcribed %d ms in %.0f ms", len(pcm) // 48, (time.perf_counter() - started) * 1000
        )
        state = self.items.get(item_id)
        if state is not None:
            state.transcript = text
        if not heard.done():
            heard.set_result(text)

    # -- speaking -------------------------------------------------------------------------------

    def _start_response(self, overrides: ResponseOverrides | None) -> None:
        response = _Response(_new_id("resp"))
        self.response = response
        response.task = self._spawn(self._respond(response, overrides), response.id)

    def _cancel(self, response: _Response, reason: str) -> None:
        if response.reason is None:
            response.reason = reason
            response.cancel.set()

    async def _respond(self, response: _Response, overrides: ResponseOverrides | None) -> None:
        session_modalities = self.config.output_modalities
        modalities = (overrides.output_modalities if overrides else None) or (
            session_modalities if isinstance(session_modalities, tuple) else ("audio",)
        )
        prompt, previous = self._prompt(overrides), self._last_prompt
        self._last_prompt = prompt
        await self._emit(
            ev.ResponseCreated(
                event_id=self._eid(),
                response=Response(id=response.id, status="in_progress", output=()),
            )
        )
        await self._emit(
            ev.RateLimitsUpdated(
                event_id=self._eid(),
                rate_limits=(
                    RateLimit(name="requests", limit=10_000, remaining=9_999, reset_seconds=0.006),
                    RateLimit(
                        name="tokens", limit=2_000_000, remaining=1_999_000, reset_seconds=0.03
                    ),
                ),
            )
        )
        try:
            reply = await self._decide(overrides)
            audio_out = "audio" in modalities
            if reply.text and not response.cancel.is_set():
                await self._say(response, reply.text, audio_out, len(response.output))
            if reply.action and not response.cancel.is_set():
                await self._call(response, *reply.action)
        except Exception:
            _LOGGER.exception("local backend response failed")
            response.reason = response.reason or "error"
        status = (
            "completed"
            if response.reason is None
            else ("failed" if response.reason == "error" else "cancelled")
        )
        reason = (
            response.reason if response.reason in ("turn_detected", "client_cancelled") else None
        )
        output = []
        for item in response.output:
            state = self.items.get(getattr(item, "id", None) or "")
            produced = (state.audio_bytes, state.transcript) if state else (0, None)
            output.append(usage.output_piece(item, *produced))
        if self.response is response:
            self.response = None
        await self._emit(
            ev.ResponseDone(
                event_id=self._eid(),
                response=Response(
                    id=response.id,
                    status=status,  # type: ignore[arg-type]
                    status_details=StatusDetails(type=status, reason=reason)  # type: ignore[arg-type]
                    if status != "completed"
                    else None,
                    output=tuple(response.output),
                    usage=usage.estimate(prompt, output, previous),
                ),
            )
        )

    def _prompt(self, overrides: ResponseOverrides | None) -> tuple[usage.Piece, ...]:
        """What a response reads: instructions and tools, then the conversation (or the
        response's own ``input``)."""
        instructions = overrides.instructions if overrides else None
        if instructions is None:
            configured = self.config.instructions
            instructions = configured if isinstance(configured, str) else ""
        tools = overrides.tools if overrides else None
        if tools is None:
            configured_tools = self.config.tools
            tools = configured_tools if isinstance(configured_tools, tuple) else ()
        if overrides is not None and overrides.input is not None:
            items = [usage.input_piece(f"input-{n}", i) for n, i in enumerate(overrides.input)]
        else:
            items = []
            for item_id in self.order:
                state = self.items[item_id]
                items.append(
                    usage.input_piece(item_id, state.item, state.audio_bytes, state.transcript)
                )
        return usage.prompt(instructions, tools, items)

    async def _decide(self, overrides: ResponseOverrides | None) -> Reply:
        brain = self._brain()
        configured = self.config.tools
        tools = {t.name for t in configured} if isinstance(configured, tuple) else set()
        last = self.items[self.order[-1]] if self.order else None
        if last is not None and isinstance(last.item, FunctionCallOutput):
            return brain.after_action('"ok": false' not in last.item.output.replace(" ", ""))
        if last is not None and isinstance(last.item, SystemMessage):
            name = game_event(" ".join(c.text or "" for c in last.item.content))
            if name:
                return brain.reply_to_event(name, tools)
        if last is not None and isinstance(last.item, UserMessage) and not last.answered:
            last.answered = True
            text = " ".join(
                c.text or "" for c in last.item.content if isinstance(c, InputText)
            ).strip()
            if not text and last.heard is not None:
                text = await last.heard
            return brain.reply_to(text, tools, self._memory_note())
        return brain.greeting()

    def _memory_note(self) -> str | None:
        """npcd's memory note (a system message), if the conversation holds one."""
        for item_id in self.order:
            item = self.items[item_id].item
            if isinstance(item, SystemMessage):
                text = " ".join(c.text or "" for c in item.content)
                if text.startswith(MEMORY_NOTE_PREFIX):
                    return text
        return None

    def _brain(self) -> Brain:
        persona = self._persona
        if persona is not None:  # the shared dict holds the latest version after a reload
            persona = self.personas.get(persona.id, persona)
            self._persona = persona
        key = str(id(persona))
        brain = self._brains.get(key)
        if brain is None:
            brain = self._brains[key] = self.engines.brain(persona)
        return brain

    async def _say(self, response: _Response, text: str, with_audio: bool, index: int) -> None:
        item_id = _new_id("item")
        voice = self.config.voice if isinstance(self.config.voice, str) else "alloy"
        empty = AssistantMessage(id=item_id, status="in_progress", content=())
        await self._emit(
            ev.ResponseOutputItemAdded(
                event_id=self._eid(), response_id=response.id, output_index=index, item=empty
            )
        )
        state = await self._add_item(empty, self.order[-1] if self.order else None, done=False)
        loc: dict[str, Any] = {
            "response_id": response.id,
            "item_id": item_id,
            "output_index": index,
            "content_index": 0,
        }
        part: OutputAudio | OutputText = (
            OutputAudio(transcript="") if with_audio else OutputText(text="")
        )
        await self._emit(ev.ResponseContentPartAdded(event_id=self._eid(), part=part, **loc))
        if with_audio:
            await self._speak(response, text, voice, state, loc)
            await self._emit(ev.ResponseOutputAudioDone(event_id=self._eid(), **loc))
            await self._emit(
                ev.ResponseOutputAudioTranscriptDone(
                    event_id=self._eid(), transcript=state.transcript, **loc
                )
            )
            final: OutputAudio | OutputText = OutputAudio(transcript=state.transcript)
        else:
            state.transcript = text
            await self._emit(ev.ResponseOutputTextDelta(event_id=self._eid(), delta=text, **loc))
            await self._emit(ev.ResponseOutputTextDone(event_id=self._eid(), text=text, **loc))
            final = OutputText(text=text)
        await self._emit(ev.ResponseContentPartDone(event_id=self._eid(), part=final, **loc))
        status = "completed" if not response.cancel.is_set() else "incomplete"
        done = AssistantMessage(id=item_id, status=status, content=(final,))  # type: ignore[arg-type]
        state.item = done
        response.output.append(done)
        await self._emit(
            ev.ResponseOutputItemDone(
                event_id=self._eid(), response_id=response.id, output_index=index, item=done
            )
        )
        await self._emit(ev.ConversationItemDone(event_id=self._eid(), item=done))

    async def _speak(
        self, response: _Response, text: str, voice: str, state: _ItemState, loc: dict[str, Any]
    ) -> None:
        """Stream TTS from a worker thread as audio and transcript deltas."""
        speed = self.config.speed if isinstance(self.config.speed, float) else 1.0
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[object] = asyncio.Queue()
        done = object()

        def produce() -> None:
            try:
                for chunk in self.engines.synthesizer.synthesize(
                    text, voice, speed, cancel=response.cancel
                ):
                    loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            finally:
                loop.call_soon_threadsafe(chunks.put_nowait, done)

        worker = loop.run_in_executor(None, produce)
        self.voice_locked = True
        # The transcript is the text itself, released up to the last word the next audio
        # reaches (word events only say where words start and end), just before that audio,
        # as OpenAI's text runs a little ahead of its audio: a client can place each sentence
        # at the audio received when its first words came.
        sent_upto = 0
        try:
            while (chunk := await chunks.get()) is not done:
                if response.cancel.is_set():
                    continue
                speech: SpeechChunk = chunk  # type: ignore[assignment]
                reached = max((w.end for w in speech.words), default=sent_upto)
                if reached > sent_upto:
                    await self._transcript(state, text[sent_upto:reached], loc)
                    sent_upto = reached
                if self.phoneme_events and speech.phonemes:
                    await self._emit(
                        phonemes_event(
                            self._eid(),
                            phonemes=[(p.audio_ms, p.phoneme) for p in speech.phonemes],
                            **loc,
                        )
                    )
                for offset in range(0, len(speech.pcm), MAX_DELTA_BYTES):
                    piece = speech.pcm[offset : offset + MAX_DELTA_BYTES]
                    state.audio_bytes += len(piece)
                    await self._emit(
                        ev.ResponseOutputAudioDelta(
                            event_id=self._eid(), delta=audio.b64encode(piece), **loc
                        )
                    )
        finally:
            await worker
        if not response.cancel.is_set() and sent_upto < len(text):
            await self._transcript(state, text[sent_upto:], loc)

    async def _transcript(self, state: _ItemState, delta: str, loc: dict[str, Any]) -> None:
        state.transcript += delta
        await self._emit(
            ev.ResponseOutputAudioTranscriptDelta(event_id=self._eid(), delta=delta, **loc)
        )

    async def _call(self, response: _Response, name: str, arguments: dict[str, object]) -> None:
        index = len(response.output)
        call_id = _new_id("call")
        item_id = _new_id("item")
        args = orjson.dumps(arguments).decode()
        pending = FunctionCall(
            id=item_id, status="in_progress", name=name, arguments="", call_id=call_id
        )
        await self._emit(
            ev.ResponseOutputItemAdded(
                event_id=self._eid(), response_id=response.id, output_index=index, item=pending
            )
        )
        await self._add_item(pending, self.order[-1] if self.order else None, done=False)
        common: dict[str, Any] = {
            "response_id": response.id,
            "item_id": item_id,
            "output_index": index,
            "call_id": call_id,
        }
        await self._emit(
            ev.ResponseFunctionCallArgumentsDelta(event_id=self._eid(), delta=args, **common)
        )
        await self._emit(
            ev.ResponseFunctionCallArgumentsDone(
                event_id=self._eid(),
                name=name,
                arguments=args,
                **common,
            )
        )
        done = replace(pending, status="completed", arguments=args)
        self.items[item_id].item = done
        response.output.append(done)
        await self._emit(
            ev.ResponseOutputItemDone(
                event_id=self._eid(), response_id=response.id, output_index=index, item=done
            )
        )
        await self._emit(ev.ConversationItemDone(event_id=self._eid(), item=done))

    async def _add_item(self, item: Item, previous: str | None, *, done: bool = True) -> _ItemState:
        item_id = getattr(item, "id", None) or _new_id("item")
        state = _ItemState(item)
        self.items[item_id] = state
        if previous == "root":
            self.order.insert(0, item_id)
        elif previous in self.order:
            self.order.insert(self.order.index(previous) + 1, item_id)
        else:
            self.order.append(item_id)
        await self._emit(
            ev.ConversationItemAdded(event_id=self._eid(), item=item, previous_item_id=previous)
        )
        if done:
            await self._emit(
                ev.ConversationItemDone(event_id=self._eid(), item=item, previous_item_id=previous)
            )
        return state


__all__ = ["BackendSession", "Engines"]


def _retrieve(task: asyncio.Task[str]) -> None:
    if not task.cancelled():
        task.exception()


def _norm(word: str) -> str:
    """A word without case or punctuation: Whisper moves commas as it hears more."""
    return "".join(c for c in word.lower() if c.isalnum() or c == "'")


def _item_text(state: _ItemState) -> dict[str, str]:
    item = state.item
    if isinstance(item, FunctionCallOutput):
        return {"type": "function_call_output", "text": item.output}
    if isinstance(item, AssistantMessage):
        # Spoken here: its transcript; replayed by a client as text: its content.
        given = " ".join(getattr(c, "text", None) or "" for c in item.content)
        return {"type": "message", "role": "assistant", "text": state.transcript or given}
    role = "system" if isinstance(item, SystemMessage) else "user"
    texts = [
        getattr(c, "text", None) or getattr(c, "transcript", None) or ""
        for c in getattr(item, "content", ())
    ]
    return {
        "type": getattr(item, "type", "message"),
        "role": role,
        "text": " ".join(t for t in texts if t),
    }
