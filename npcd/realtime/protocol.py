"""The sans-I/O Realtime session: what npcd has asked for and what the server has confirmed.

Modelled on python-websockets' `Protocol`: the caller feeds every received frame to `receive`,
calls the action methods (`append_audio`, `request_response`, `interrupt`...), and after either
must send what `data_to_send()` returns, in order. No sockets, no clocks, no asyncio: every race
of the protocol is a unit test that feeds strings.

What it guards against, each a failure seen in the wild (realtime-protocol.md §8):

- A second ``response.create`` while one is in flight
  (``conversation_already_has_active_response``): responses go idle -> creating -> active ->
  idle, and a request made meanwhile is queued and sent when the current one is done.
- A cancel sent before ``response.created`` is a no-op on the server, after which the orphaned
  response blocks the next one: such a cancel is deferred until the response has an id.
- Truncation past the audio actually received ("Audio content of X ms is already shorter than
  Y ms"): the cut is ``min(played, received)``; nothing heard deletes the item instead, so the
  model never believes it said what nobody heard.
- A second ``session.created`` means a fresh, empty session: `session_resets` counts it.
- A connection that dies (or goes silent) loses whatever was in flight. Items npcd creates get
  a client id and stay *unconfirmed* until the server echoes them, and a response asked for
  stays *unstarted* until ``response.created``: `history` and `unstarted_responses` hand both
  to the next session, so a player's line sent into a dying link is not lost.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from npcd.realtime import events as ev
from npcd.realtime.codec import decode_server, encode_append, encode_client
from npcd.realtime.policy import ErrorClass, ErrorVerdict, RateLimits, classify_error
from npcd.realtime.values import (
    AssistantMessage,
    Dialect,
    FunctionCall,
    FunctionCallOutput,
    InputAudio,
    InputText,
    Item,
    OutputAudio,
    OutputText,
    ResponseOverrides,
    SessionConfig,
    SystemMessage,
    UserMessage,
)

#: PCM16 mono 24 kHz: bytes per millisecond of output audio.
BYTES_PER_MS = 48
#: Items kept for the next session while the server has not echoed them (it echoes each one
#: within a round trip; more than this means it does not echo client ids at all).
MAX_UNCONFIRMED = 64


class ResponsePhase(enum.Enum):
    IDLE = "idle"
    #: ``response.create`` sent, ``response.created`` not yet received.
    CREATING = "creating"
    ACTIVE = "active"


class Role(enum.Enum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    FUNCTION_CALL = "function_call"
    FUNCTION_OUTPUT = "function_call_output"
    OTHER = "other"


@dataclass(slots=True)
class TrackedItem:
    """One conversation item as npcd knows it (text only: audio is never kept)."""

    id: str
    role: Role
    text: str = ""
    #: Assistant output audio received, in bytes of PCM16 24 kHz.
    audio_bytes: int = 0
    #: Where the server cut this item's audio (after `conversation.item.truncated`).
    truncated_ms: int | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""

    @property
    def audio_ms(self) -> int:
        return self.audio_bytes // BYTES_PER_MS

    @property
    def heard_text(self) -> str:
        """The text the player heard: cut in proportion to the audio if the item was truncated."""
        if self.truncated_ms is None or not self.audio_bytes or not self.text:
            return self.text
        share = min(1.0, self.truncated_ms / max(1, self.audio_ms))
        words = self.text.split()
        return " ".join(words[: round(len(words) * share)])


@dataclass(slots=True)
class TrackedResponse:
    """A response from request (or server-side creation) to ``response.done``."""

    #: Whatever the caller passed to `request_response` (e.g. what caused it); None if the
    #: server started it itself (server VAD).
    tag: object = None
    overrides: ResponseOverrides | None = None
    id: str | None = None
    item_ids: list[str] = field(default_factory=list)
    cancel_requested: bool = False
    played_ms: int | None = None
    status: str | None = None
    reason: str | None = None
    done_event: ev.ResponseDone | None = None

    #: Its assistant message items in the order they came: newer models may say a preamble,
    #: then the answer, in one response; the game hears their audio back to back.
    message_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PendingCall:
    """A function call the model made and nobody has answered yet."""

    call_id: str
    name: str
    arguments: str
    item_id: str
    response_id: str | None


@dataclass(frozen=True, slots=True)
class Interruption:
    """What `interrupt` did: the cut point in ms, or that the item was deleted."""

    response_id: str | None
    item_id: str | None
    truncated_at_ms: int | None
    deleted: bool


@dataclass(frozen=True, slots=True)
class ServerError:
    """A server ``error`` event with its verdict and, if it was ours, the client event it hit."""

    event: ev.ErrorEvent
    verdict: ErrorVerdict
    caused_by: str | None


class RealtimeSession:
    """The client side of one Realtime session, without I/O."""

    def __init__(self, dialect: Dialect = Dialect.GA, *, server_vad: bool = True) -> None:
        self.dialect = dialect
        self.server_vad = server_vad
        #: The session config as the server last confirmed it (session.created / .updated).
        self.session: SessionConfig | None = None
        self.expires_at: int | None = None
        #: How many times a fresh session replaced this one (a second ``session.created``).
        self.session_resets = 0
        self.items: dict[str, TrackedItem] = {}
        self.order: list[str] = []
        self.pending_calls: dict[str, PendingCall] = {}
        self.rate_limits = RateLimits()
        self.unknown_events: dict[str, int] = {}
        self.errors: list[ServerError] = []
        self.response: TrackedResponse | None = None
        self._phase = ResponsePhase.IDLE
        self._queued: list[tuple[ResponseOverrides | None, object]] = []
        #: JSON text frames; bytes (UTF-8) for audio appends, str for the rest.
        self._outgoing: list[str | bytes] = []
        self._sent_kinds: dict[str, str] = {}
        #: Items npcd created that the server has not echoed yet, by their (client) id.
        self._unconfirmed: dict[str, Item] = {}
        #: event_id of each ``conversation.item.create`` -> the item id it carries.
        self._sent_items: dict[str, str] = {}
        #: Items meant for this session only (e.g. the "after a pause" note): never replayed.
        self._session_only: set[str] = set()
        #: Items `history` always starts with (by id), as they were given.
        self.pinned: dict[str, Item] = {}
        #: The server said (beta: an error ``session_expired``) that the session hit its time
        #: limit: the close that follows is a planned end, not a failure.
        self.expired = False
        #: The server's VAD heard the player start and not yet stop.
        self.speech_active = False
        #: Base64 audio appended since the last commit or clear (push-to-talk input in flight).
        self.pending_input = 0
        self._ids: Callable[[], int] = itertools.count(1).__next__
        self._now = 0.0

    # -- state ----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """The server has said ``session.created``."""
        return self.session is not None

    @property
    def response_phase(self) -> ResponsePhase:
        return self._phase

    @property
    def queued_responses(self) -> int:
        return len(self._queued)

    def items_in_order(self) -> Iterator[TrackedItem]:
        return (self.items[item_id] for item_id in self.order if item_id in self.items)

    # -- actions --------------------------------------------------------------------------------

    @property
    def has_outgoing(self) -> bool:
        """Whether `data_to_send` has anything (cheaper than asking it, on the hot path)."""
        return bool(self._outgoing)

    def data_to_send(self) -> list[str | bytes]:
        """Frames to send now, in order; each call returns only what is new."""
        out, self._outgoing = self._outgoing, []
        return out

    def configure(self, config: SessionConfig) -> None:
        self.server_vad = (
            self.server_vad if config.turn_detection is ev.UNSET else bool(config.turn_detection)
        )
        self._send(ev.SessionUpdate(session=config), "session.update")

    def append_audio(self, audio_b64: str) -> None:
        """Append base64 PCM16 24 kHz (no ack comes back; see `npcd.audio.split_for_append`)."""
        self._outgoing.append(encode_append(audio_b64))
        self.pending_input += len(audio_b64)

    def commit_audio(self) -> None:
        self.pending_input = 0
        self._send(ev.InputAudioBufferCommit(), "input_audio_buffer.commit")

    def clear_audio(self) -> None:
        self.pending_input = 0
        self._send(ev.InputAudioBufferClear(), "input_audio_buffer.clear")

    @property
    def input_in_progress(self) -> bool:
        """The player is mid-utterance: speech the server's VAD is hearing, or push-to-talk
        audio not yet committed. Replacing the session now would lose it."""
        return self.speech_active or (not self.server_vad and self.pending_input > 0)

    def withdraw_unstarted(self, tag: object) -> bool:
        """Take back the latest response asked for with ``tag`` that has not started (its
        cause must be redone first); False if there is none."""
        for index in range(len(self._queued) - 1, -1, -1):
            if self._queued[index][1] == tag:
                del self._queued[index]
                return True
        response = self.response
        if (
            self._phase is ResponsePhase.CREATING
            and response is not None
            and response.tag == tag
            and not response.cancel_requested
        ):
            response.cancel_requested = True  # a session that is gone: nothing to send
            return True
        return False

    def clear_queued(self) -> None:
        """Forget responses waiting to be sent (the conversation that asked for them ended)."""
        self._queued.clear()

    def add_item(
        self,
        item: Item,
        previous_item_id: str | None = None,
        *,
        track: bool = True,
        pin: bool = False,
    ) -> None:
        """Create ``item``. It gets a client id and, with ``track``, is kept until the server
        echoes it, so that `history` can give it to the next session if this one dies first.
        A ``pin``ned item (the NPC's memory note) always opens `history`, however long."""
        if getattr(item, "id", "") is None:
            item = dataclasses.replace(item, id=f"npcd_{uuid.uuid4().hex[:24]}")  # type: ignore[arg-type]
        event_id = self._send(
            ev.ConversationItemCreate(item=item, previous_item_id=previous_item_id),
            "conversation.item.create",
        )
        item_id = getattr(item, "id", None)
        if not item_id:
            return
        if not track:
            self._session_only.add(item_id)
            return
        if pin:
            self.pinned[item_id] = dataclasses.replace(item, id=None)  # type: ignore[arg-type]
        self._unconfirmed[item_id] = item
        self._sent_items[event_id] = item_id
        if len(self._unconfirmed) > MAX_UNCONFIRMED:  # a server that never echoes npcd's ids
            del self._unconfirmed[next(iter(self._unconfirmed))]
        if len(self._sent_items) > 256:
            for old in list(self._sent_items)[:128]:
                del self._sent_items[old]

    def forget_conversation(self) -> int:
        """Delete every item of the conversation so far, on the server and here (a new player,
        or another save slot, starts from what it remembers, not from the last talk). Items
        still unacknowledged are deleted too: the server handles the create first. Returns how
        many were deleted. Call it with no response in progress."""
        ids = list(dict.fromkeys([*self.order, *self._unconfirmed, *self._session_only]))
        self.clear_audio()  # the last player's uncommitted speech is theirs too
        for item_id in ids:
            self._send(ev.ConversationItemDelete(item_id=item_id), "conversation.item.delete")
        self.items.clear()
        self.order.clear()
        self._unconfirmed.clear()
        self._session_only.clear()
        self.pinned.clear()
        return len(ids)

    @property
    def unconfirmed_items(self) -> int:
        """Items sent (or queued) that the server has not acknowledged yet."""
        return len(self._unconfirmed)

    def add_user_text(self, text: str) -> None:
        self.add_item(UserMessage(content=(InputText(text=text),)))

    def add_system_note(self, text: str) -> None:
        self.add_item(SystemMessage(content=(InputText(text=text),)))

    def answer_call(self, call_id: str, output: str) -> PendingCall:
        """Give the model a function call's result; raises KeyError for an unknown call id."""
        call = self.pending_calls.pop(call_id)
        self.add_item(FunctionCallOutput(call_id=call_id, output=output))
        return call

    def calls_outstanding(self, response_id: str | None) -> int:
        return sum(1 for call in self.pending_calls.values() if call.response_id == response_id)

    def request_response(
        self,
        overrides: ResponseOverrides | None = None,
        tag: object = None,
        *,
        now: float | None = None,
    ) -> bool:
        """Ask for a response now, or queue it: behind the one in flight, or until the server's
        rate limits (``rate_limits.updated``) reset. True if sent now.

        ``now`` (monotonic seconds, the clock given to `receive`) dates the rate-limit check.
        """
        moment = self._now if now is None else now
        if self._phase is not ResponsePhase.IDLE or self.hold_until(moment) is not None:
            self._queued.append((overrides, tag))
            return False
        self._start_response(overrides, tag)
        return True

    def unstarted_responses(self) -> list[tuple[ResponseOverrides | None, object]]:
        """Responses asked for that never started (the one being created, then those queued),
        as ``(overrides, tag)``: what a replacement session must ask for again."""
        out: list[tuple[ResponseOverrides | None, object]] = []
        response = self.response
        if (
            self._phase is ResponsePhase.CREATING
            and response is not None
            and not response.cancel_requested
        ):
            out.append((response.overrides, response.tag))
        out.extend(self._queued)
        return out

    def hold_until(self, now: float) -> float | None:
        """When the server's rate limits allow the next response; None if they allow it now."""
        return self.rate_limits.hold_off_until_any(now)

    def release_queued(self, now: float) -> bool:
        """Start the next queued response if nothing is in flight and the limits allow it."""
        if self._phase is not ResponsePhase.IDLE or not self._queued:
            return False
        if self.hold_until(now) is not None:
            return False
        overrides, tag = self._queued.pop(0)
        self._start_response(overrides, tag)
        return True

    def cancel_response(self) -> bool:
        """Stop the response in flight (deferred until it has an id). False if there is none."""
        self._queued.clear()
        response = self.response
        if response is None or self._phase is ResponsePhase.IDLE or response.cancel_requested:
            return False
        response.cancel_requested = True
        if response.id is not None:
            self._send(ev.ResponseCancel(response_id=response.id), "response.cancel")
        return True

    def report_playback(self, response_id: str, played_ms: int) -> None:
        """The game's playback cursor for a response (only the latest matters)."""
        if self.response is not None and self.response.id == response_id:
            self.response.played_ms = max(played_ms, self.response.played_ms or 0)

    def interrupt(
        self, played_ms: int | None = None, *, server_cancels: bool = False
    ) -> Interruption | None:
        """Barge-in: stop the current response and cut its item where the player stopped hearing.

        ``played_ms`` overrides the last reported playback; without either, everything received
        counts as heard. ``server_cancels`` (server VAD with ``interrupt_response``) skips the
        cancel the server does itself. None if nothing was being said.
        """
        response = self.response
        if response is None or (response.id is None and self._phase is ResponsePhase.IDLE):
            return None
        if not server_cancels:
            self.cancel_response()
        self._queued.clear()
        messages = [
            item
            for item in (self.items.get(i) for i in response.message_ids)
            if item is not None and item.role is Role.ASSISTANT
        ]
        received = sum(item.audio_ms for item in messages)
        if not received:
            return Interruption(response.id, None, None, deleted=False)
        heard = played_ms if played_ms is not None else response.played_ms
        cut = received if heard is None else max(0, min(heard, received))
        if cut >= received and self._phase is ResponsePhase.IDLE:
            return Interruption(response.id, messages[-1].id, None, deleted=False)  # all heard
        # The cursor is on the response's audio, its messages back to back: those before it
        # were heard in full, the one it falls in is cut there, and those after it (spoken or
        # not yet: a transcript can come before its audio) were never heard. The cut is kept
        # here at once too, so a new session given the history before the server confirms it
        # does not hear the unheard words.
        cut_item: str | None = None
        last_spoken = max(i for i, item in enumerate(messages) if item.audio_bytes)
        start = 0
        for index, item in enumerate(messages):
            end = start + item.audio_ms
            if cut <= start and (item.audio_bytes or index > last_spoken or cut == 0):
                self._send(ev.ConversationItemDelete(item_id=item.id), "conversation.item.delete")
                self._forget_item(item.id)
            elif item.audio_bytes and (cut < end or index == last_spoken):
                self._send(
                    ev.ConversationItemTruncate(
                        item_id=item.id, content_index=0, audio_end_ms=cut - start
                    ),
                    "conversation.item.truncate",
                )
                item.truncated_ms = cut - start
                cut_item = item.id
            start = end
        return Interruption(response.id, cut_item, cut, deleted=cut <= 0)

    def _forget_item(self, item_id: str) -> None:
        self._unconfirmed.pop(item_id, None)
        self.items.pop(item_id, None)
        if item_id in self.order:
            self.order.remove(item_id)

    def history(self, max_items: int = 40) -> list[Item]:
        """Text items that recreate this conversation in a new session (rollover, reconnect).

        Assistant audio cannot be replayed, so assistant turns become text, cut to what the
        player heard; function calls and their outputs are kept so the model knows what it did.
        Items sent but never acknowledged come last, as they were sent.
        """
        out: list[Item] = []
        for item in self.items_in_order():
            if item.id in self._session_only or item.id in self.pinned:
                continue
            if item.role is Role.USER and item.text:
                out.append(UserMessage(content=(InputText(text=item.text),)))
            elif item.role is Role.ASSISTANT and item.heard_text:
                out.append(AssistantMessage(content=(OutputText(text=item.heard_text),)))
            elif item.role is Role.SYSTEM and item.text:
                out.append(SystemMessage(content=(InputText(text=item.text),)))
            elif item.role is Role.FUNCTION_CALL and item.call_id and item.name:
                out.append(
                    FunctionCall(name=item.name, arguments=item.arguments, call_id=item.call_id)
                )
            elif item.role is Role.FUNCTION_OUTPUT and item.call_id:
                out.append(FunctionCallOutput(call_id=item.call_id, output=item.text))
        out.extend(v for k, v in self._unconfirmed.items() if k not in self.pinned)
        pinned = list(self.pinned.values())[:max_items]
        return [*pinned, *out[len(out) - (max_items - len(pinned)) :]] if max_items else []

    # -- incoming -------------------------------------------------------------------------------

    def receive(self, text: str | bytes, now: float = 0.0) -> ev.ServerEvent:
        """Parse one server frame and update the state. Raises `EventError` on a bad frame.

        ``now`` (monotonic seconds) dates rate-limit windows.
        """
        self._now = now
        event = decode_server(text, self.dialect)
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)
        return event

    def _on_session_created(self, event: ev.SessionCreated) -> None:
        if self.session is not None:
            # A new, empty session: everything the old one held is gone.
            self.session_resets += 1
            self.items.clear()
            self.order.clear()
            self.pending_calls.clear()
            self.response = None
            self._phase = ResponsePhase.IDLE
        self.session = event.session
        expires = event.session.expires_at
        self.expires_at = expires if isinstance(expires, int) else None

    def _on_session_updated(self, event: ev.SessionUpdated) -> None:
        self.session = event.session

    def _on_item_added(self, event: ev.ConversationItemAdded | ev.ConversationItemCreated) -> None:
        item = event.item
        item_id = getattr(item, "id", None)
        if item_id:
            self._unconfirmed.pop(item_id, None)
        if not item_id or item_id in self.items:
            return
        self.items[item_id] = _track(item_id, item)
        previous = event.previous_item_id
        if previous and previous in self.order:
            self.order.insert(self.order.index(previous) + 1, item_id)
        elif previous == "root":
            self.order.insert(0, item_id)
        else:
            self.order.append(item_id)

    def _on_item_done(self, event: ev.ConversationItemDone) -> None:
        item_id = getattr(event.item, "id", None)
        tracked = self.items.get(item_id or "")
        if tracked is None:
            self._on_item_added(event)  # type: ignore[arg-type]  # same fields
            return
        final = _track(tracked.id, event.item)
        if final.text and tracked.truncated_ms is None:
            tracked.text = final.text
        if final.arguments:
            tracked.arguments = final.arguments

    def _on_item_deleted(self, event: ev.ConversationItemDeleted) -> None:
        self._forget_item(event.item_id)

    def _on_item_truncated(self, event: ev.ConversationItemTruncated) -> None:
        tracked = self.items.get(event.item_id)
        if tracked is not None:
            tracked.truncated_ms = event.audio_end_ms

    def _on_transcript_completed(
        self, event: ev.ConversationItemInputAudioTranscriptionCompleted
    ) -> None:
        tracked = self.items.get(event.item_id)
        if tracked is not None:
            tracked.text = event.transcript

    def _on_response_created(self, event: ev.ResponseCreated) -> None:
        if self._phase is ResponsePhase.CREATING and self.response is not None:
            response = self.response
        else:  # the server started it (server VAD create_response)
            response = self.response = TrackedResponse()
        response.id = event.response.id
        self._phase = ResponsePhase.ACTIVE
        if response.cancel_requested and response.id is not None:
            self._send(ev.ResponseCancel(response_id=response.id), "response.cancel")

    def _on_output_item_added(self, event: ev.ResponseOutputItemAdded) -> None:
        item_id = getattr(event.item, "id", None)
        if self.response is not None and item_id and item_id not in self.response.item_ids:
            self.response.item_ids.append(item_id)
            if isinstance(event.item, AssistantMessage):
                self.response.message_ids.append(item_id)
        if item_id and item_id not in self.items:
            self.items[item_id] = _track(item_id, event.item)
            self.order.append(item_id)

    def _on_audio_delta(self, event: ev.ResponseOutputAudioDelta) -> None:
        tracked = self.items.get(event.item_id)
        if tracked is not None:
            tracked.audio_bytes += _b64_size(event.delta)

    def _on_text_delta(
        self, event: ev.ResponseOutputAudioTranscriptDelta | ev.ResponseOutputTextDelta
    ) -> None:
        tracked = self.items.get(event.item_id)
        if tracked is not None:
            tracked.text += event.delta

    def _on_call_done(self, event: ev.ResponseFunctionCallArgumentsDone) -> None:
        tracked = self.items.get(event.item_id)
        name = event.name or (tracked.name if tracked else None) or ""
        if tracked is not None:
            tracked.arguments = event.arguments
            tracked.call_id = event.call_id
        self.pending_calls[event.call_id] = PendingCall(
            event.call_id, name, event.arguments, event.item_id, event.response_id
        )

    def _on_response_done(self, event: ev.ResponseDone) -> None:
        response = self.response
        if response is None or (response.id and response.id != event.response.id):
            response = self.response = TrackedResponse(id=event.response.id)
        response.status = event.response.status
        details = event.response.status_details
        response.reason = details.reason if details is not None else None
        response.done_event = event
        for item in event.response.output or ():
            item_id = getattr(item, "id", None)
            if (
                isinstance(item, FunctionCall)
                and item.call_id
                and item.call_id not in (self.pending_calls)
                and response.status == "completed"
                and not self._answered(item.call_id)
            ):
                self.pending_calls[item.call_id] = PendingCall(
                    item.call_id, item.name, item.arguments, item_id or "", response.id
                )
        if response.status != "completed":
            # Calls of a cancelled or failed response will never be answered by the game.
            for call_id in [
                c for c, p in self.pending_calls.items() if p.response_id == response.id
            ]:
                del self.pending_calls[call_id]
        self._phase = ResponsePhase.IDLE
        self.release_queued(self._now)

    def _on_rate_limits(self, event: ev.RateLimitsUpdated) -> None:
        self.rate_limits.update(
            [
                {
                    "name": r.name,
                    "limit": r.limit,
                    "remaining": r.remaining,
                    "reset_seconds": r.reset_seconds,
                }
                for r in event.rate_limits
            ],
            now=self._now,
        )

    def _on_error(self, event: ev.ErrorEvent) -> None:
        detail = event.error
        verdict = classify_error(
            detail.code, detail.type, server_vad=self.server_vad, message=detail.message
        )
        caused_by = self._sent_kinds.get(detail.event_id or "")
        self.errors.append(ServerError(event, verdict, caused_by))
        del self.errors[:-50]
        if verdict.kind is ErrorClass.EXPIRED:
            self.expired = True
        if caused_by == "conversation.item.create":
            # Refused: resending it to the next session would be refused again.
            self._unconfirmed.pop(self._sent_items.pop(detail.event_id or "", ""), None)
        if caused_by == "response.create" and self._phase is ResponsePhase.CREATING:
            # Our create was refused. If another response is running (the server VAD's own),
            # ours waits for it; otherwise it is dropped rather than retried blindly.
            refused = self.response
            self._phase = ResponsePhase.IDLE
            self.response = None
            if detail.code == "conversation_already_has_active_response":
                self._phase = ResponsePhase.ACTIVE
                self.response = TrackedResponse()
                if refused is not None:
                    self._queued.insert(0, (refused.overrides, refused.tag))
                else:
                    self._queued.insert(0, (None, None))

    def _on_speech_started(self, event: ev.InputAudioBufferSpeechStarted) -> None:
        self.speech_active = True

    def _on_speech_stopped(self, event: ev.InputAudioBufferSpeechStopped) -> None:
        self.speech_active = False

    def _on_input_committed(
        self, event: ev.InputAudioBufferCommitted | ev.InputAudioBufferCleared
    ) -> None:
        self.pending_input = 0

    def _on_unknown(self, event: ev.UnknownServerEvent) -> None:
        self.unknown_events[event.type] = self.unknown_events.get(event.type, 0) + 1

    # -- helpers --------------------------------------------------------------------------------

    def _start_response(self, overrides: ResponseOverrides | None, tag: object) -> None:
        self.response = TrackedResponse(tag=tag, overrides=overrides)
        self._phase = ResponsePhase.CREATING
        self._send(ev.ResponseCreate(response=overrides), "response.create")

    def _send(self, event: ev.ClientEvent, kind: str) -> str:
        event_id = f"npcd_{self._ids()}"
        event = dataclasses.replace(event, event_id=event_id)
        self._sent_kinds[event_id] = kind
        if len(self._sent_kinds) > 256:
            for old in list(self._sent_kinds)[:128]:
                del self._sent_kinds[old]
        self._outgoing.append(encode_client(event, self.dialect))
        return event_id

    def _answered(self, call_id: str) -> bool:
        return any(
            i.role is Role.FUNCTION_OUTPUT and i.call_id == call_id for i in self.items.values()
        )


def _track(item_id: str, item: Item) -> TrackedItem:
    if isinstance(item, UserMessage):
        text = " ".join(
            (c.text or "") if isinstance(c, InputText) else (c.transcript or "")
            for c in item.content
            if isinstance(c, InputText | InputAudio)
        ).strip()
        return TrackedItem(item_id, Role.USER, text)
    if isinstance(item, AssistantMessage):
        text = "".join(
            (c.text or "") if isinstance(c, OutputText) else (c.transcript or "")
            for c in item.content
            if isinstance(c, OutputText | OutputAudio)
        )
        return TrackedItem(item_id, Role.ASSISTANT, text)
    if isinstance(item, SystemMessage):
        return TrackedItem(item_id, Role.SYSTEM, " ".join(c.text or "" for c in item.content))
    if isinstance(item, FunctionCall):
        return TrackedItem(
            item_id,
            Role.FUNCTION_CALL,
            call_id=item.call_id,
            name=item.name,
            arguments=item.arguments,
        )
    if isinstance(item, FunctionCallOutput):
        return TrackedItem(item_id, Role.FUNCTION_OUTPUT, item.output, call_id=item.call_id)
    return TrackedItem(item_id, Role.OTHER)


def _b64_size(data: str) -> int:
    """Decoded size of standard base64 without decoding it."""
    if not data:
        return 0
    padding = 2 if data.endswith("==") else 1 if data.endswith("=") else 0
    return len(data) * 3 // 4 - padding


_HANDLERS: dict[type, Callable[[RealtimeSession, object], None]] = {
    ev.SessionCreated: RealtimeSession._on_session_created,  # type: ignore[dict-item]
    ev.SessionUpdated: RealtimeSession._on_session_updated,  # type: ignore[dict-item]
    ev.ConversationItemAdded: RealtimeSession._on_item_added,  # type: ignore[dict-item]
    ev.ConversationItemCreated: RealtimeSession._on_item_added,  # type: ignore[dict-item]
    ev.ConversationItemDone: RealtimeSession._on_item_done,  # type: ignore[dict-item]
    ev.ConversationItemDeleted: RealtimeSession._on_item_deleted,  # type: ignore[dict-item]
    ev.ConversationItemTruncated: RealtimeSession._on_item_truncated,  # type: ignore[dict-item]
    ev.ConversationItemInputAudioTranscriptionCompleted: RealtimeSession._on_transcript_completed,  # type: ignore[dict-item]
    ev.ResponseCreated: RealtimeSession._on_response_created,  # type: ignore[dict-item]
    ev.ResponseOutputItemAdded: RealtimeSession._on_output_item_added,  # type: ignore[dict-item]
    ev.ResponseOutputAudioDelta: RealtimeSession._on_audio_delta,  # type: ignore[dict-item]
    ev.ResponseOutputAudioTranscriptDelta: RealtimeSession._on_text_delta,  # type: ignore[dict-item]
    ev.ResponseOutputTextDelta: RealtimeSession._on_text_delta,  # type: ignore[dict-item]
    ev.ResponseFunctionCallArgumentsDone: RealtimeSession._on_call_done,  # type: ignore[dict-item]
    ev.ResponseDone: RealtimeSession._on_response_done,  # type: ignore[dict-item]
    ev.RateLimitsUpdated: RealtimeSession._on_rate_limits,  # type: ignore[dict-item]
    ev.ErrorEvent: RealtimeSession._on_error,  # type: ignore[dict-item]
    ev.UnknownServerEvent: RealtimeSession._on_unknown,  # type: ignore[dict-item]
    ev.InputAudioBufferSpeechStarted: RealtimeSession._on_speech_started,  # type: ignore[dict-item]
    ev.InputAudioBufferSpeechStopped: RealtimeSession._on_speech_stopped,  # type: ignore[dict-item]
    ev.InputAudioBufferCommitted: RealtimeSession._on_input_committed,  # type: ignore[dict-item]
    ev.InputAudioBufferCleared: RealtimeSession._on_input_committed,  # type: ignore[dict-item]
}
