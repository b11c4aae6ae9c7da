"""One NPC's Realtime session, kept alive: connect, configure, pump, reconnect, rotate.

A slot owns one `RealtimeLink` and the `RealtimeSession` state of its current connection. It
survives the backend's habits: sessions end at a maximum duration, connections drop, and
backends stop answering without closing anything. After a drop it reconnects, forever, with a
short capped backoff paced for the whole pool by `Reachability`; before the duration limit it
rotates to a fresh session between turns. Either way it gives the new session the conversation
so far (as text: audio cannot be replayed), including player input the old one never
acknowledged and responses it never started, so the NPC neither forgets nor ignores what was
said, and it tells its listener (the conversation relay) what happened with a `SlotStatus`.

Every step has a deadline: the WebSocket handshake, then ``session.created``; and while a
conversation uses the slot, a backend silent for `SlotOptions.quiet_s` is pinged and cut off if
the ping goes unanswered for `SlotOptions.pong_timeout_s`.

Events from the backend go to exactly one listener at a time, the conversation that leased the
slot; with no listener they only update the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from npcd.memory.store import MemoryKey
from npcd.personas import LoadedPersona
from npcd.reachability import Reachability
from npcd.realtime import events as ev
from npcd.realtime.configure import session_config
from npcd.realtime.endpoints import Backend
from npcd.realtime.policy import (
    NO_SESSION_STARTED,
    Backoff,
    CloseClass,
    classify_closed_before_session,
)
from npcd.realtime.protocol import RealtimeSession, ResponsePhase
from npcd.realtime.values import EventError, InputText, SessionConfig, SystemMessage, Usage
from npcd.transport.ws import ConnectFailed, LinkClosed, RealtimeLink

_LOGGER = logging.getLogger(__name__)

#: Rotate this long before the server's own deadline (its `expires_at`), between turns.
ROTATE_MARGIN_S = 300.0
#: After a failed move to another backend (`NpcSlot.move_to`), wait this long to try again.
MOVE_RETRY_S = 5.0
MAX_LATE_CHARGES = 8
CONTINUE_NOTE = (
    "The conversation above continues after a short technical pause. Stay in character and "
    "carry on naturally; do not mention the pause."
)


#: Seconds between two warnings for the same connection problem (all NPCs together).
WARN_EVERY_S = 30.0
_warned: dict[str, tuple[float, int]] = {}


def _warn_unreachable(reason: str, now: float) -> None:
    """Say that the backend cannot be reached, once per reason every `WARN_EVERY_S`, with how
    many attempts (by all NPCs) failed meanwhile: 500 NPCs must not mean 500 log lines."""
    last, count = _warned.get(reason, (float("-inf"), 0))
    if now - last < WARN_EVERY_S:
        _warned[reason] = (last, count + 1)
        return
    _warned[reason] = (now, 0)
    more = f" ({count} more failed attempts since the last warning)" if count else ""
    _LOGGER.warning("cannot reach the Realtime backend: %s%s", reason, more)


class SlotState(enum.Enum):
    #: No backend session (not started yet, or closed while idle); the history is kept.
    SUSPENDED = "suspended"
    CONNECTING = "connecting"
    READY = "ready"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    CLOSED = "closed"


class StatusKind(enum.Enum):
    RECONNECTING = "reconnecting"
    RESUMED = "resumed"
    ROTATED = "rotated"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SlotStatus:
    kind: StatusKind
    detail: str
    context_kept: bool = True


class SlotListener:
    """What a slot tells the conversation using it. Callbacks run in the slot's reader task and
    must not block; the default implementation ignores everything."""

    def on_event(self, event: ev.ServerEvent) -> None:
        """A server event, after the slot's protocol state has taken it in."""

    def on_link_lost(self, reason: str, *, planned: bool) -> None:
        """The backend session ended, ``planned`` (its time limit) or not; a response in
        progress was cut and will not continue. A `SlotStatus` follows."""

    def on_status(self, status: SlotStatus) -> None:
        """The backend session changed (dropped, resumed, rotated, failed)."""


@dataclass(frozen=True, slots=True)
class SlotOptions:
    backend: Backend
    #: Rotate after this many seconds even if the server announces no `expires_at`.
    max_session_s: float = 50 * 60
    rotate_margin_s: float = ROTATE_MARGIN_S
    backoff_initial_s: float = 0.25
    #: Longest wait between two connect attempts (of the pool's prober): how long a player
    #: waits at most, once the backend is back, for the NPC to be ready again.
    backoff_max_s: float = 2.0
    #: How often a slot waiting for the pool's prober checks that one is still probing.
    patience_s: float = 10.0
    #: The WebSocket handshake, and then ``session.created``, must each come within this.
    open_timeout_s: float = 5.0
    #: With a conversation on the slot, a backend silent this long is pinged...
    quiet_s: float = 2.5
    #: ...and one that does not answer the ping within this is taken for dead and replaced.
    pong_timeout_s: float = 2.0
    #: How many text items of history a new session is given.
    replay_items: int = 40
    #: Ask for model ``npcd-local:<persona id>``: how the local backend knows who speaks.
    persona_model: bool = False


class NpcSlot:
    """The long-lived backend session of one NPC."""

    def __init__(
        self,
        persona: LoadedPersona,
        options: SlotOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
        connect_gate: asyncio.Semaphore | None = None,
        reachability: Reachability | None = None,
    ) -> None:
        self.persona = persona
        self.options = options
        self.state = SlotState.CONNECTING
        #: The session state: the live one, or while reconnecting the last one, which keeps
        #: taking the conversation's input until its successor is given everything it holds.
        self.session = RealtimeSession(options.backend.dialect)
        self._listener = SlotListener()
        self.context: dict[str, str] = {}
        self.push_to_talk = persona.persona.turn_detection.type == "none"
        self.actions_enabled = True
        #: Whose memory the session's conversation holds (`Conversation` keeps it): None for
        #: nobody's, the anonymous players' talk of this daemon run.
        self.memory_key: MemoryKey | None = None
        self.connects = 0
        #: Sessions lost unexpectedly, and sessions replaced at their time limit (metrics).
        self.reconnects = 0
        self.rotations = 0
        self.last_error = ""
        #: The latest connect attempt failed (reset by the next success): a conversation can
        #: be refused at once instead of waiting for a backend that is known to be down.
        self.unreachable = False
        self._clock = clock
        self._gate = connect_gate or asyncio.Semaphore(1)
        self._reach = reachability or Reachability()
        self._link: RealtimeLink | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._attended = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._rotate_at = float("inf")
        self._release_timer: asyncio.TimerHandle | None = None
        self._rotating = False
        self._pending_status: StatusKind | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._last_rx = clock()
        self._stall_reason: str | None = None
        #: Set while the slot holds no backend session (tests and the pool wait on it).
        self.suspended = asyncio.Event()
        #: Monotonic time of the last conversation's end (the pool suspends the idlest first).
        self.last_used = clock()
        backend = options.backend
        if options.persona_model:
            backend = dataclasses.replace(backend, model=f"npcd-local:{persona.persona.id}")
        self.backend = backend
        #: Where the NPC's sessions go while no budget is spent; `backend` is the offline
        #: fallback meanwhile (`move_to`).
        self.primary_backend = backend
        #: The backend of the live session (`backend` is where the next one goes).
        self.connected_to = backend
        self._rotation_detail = ""
        self._rotation: asyncio.Task[None] | None = None
        self._move_retry_at = -math.inf
        #: Responses cut when their conversation ended, still billed: who pays, by response id.
        self._late_charges: dict[str, Callable[[Usage | None], None]] = {}
        self._backoff = Backoff(initial_s=options.backoff_initial_s, max_s=options.backoff_max_s)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.persona.persona.id

    @property
    def ready(self) -> bool:
        return self.state is SlotState.READY

    @property
    def open(self) -> bool:
        """Whether the slot holds (or is getting) a backend session."""
        return self._task is not None and not self._task.done()

    @property
    def listener(self) -> SlotListener:
        return self._listener

    @listener.setter
    def listener(self, listener: SlotListener) -> None:
        """Attach the conversation using the slot; while one is, the backend is watched."""
        self._listener = listener
        if type(listener) is SlotListener:
            self._attended.clear()
        else:
            self._last_rx = self._clock()
            self._attended.set()

    def start(self) -> None:
        """Connect in the background (again, after `suspend`); `wait_ready` to know when."""
        if not self.open and not self._closing:
            self.unreachable = False  # a new attempt: nothing known about it yet
            self._set_state(SlotState.CONNECTING)
            self.suspended.clear()
            self._task = asyncio.create_task(self._run(), name=f"npcd-slot-{self.id}")

    async def suspend(self) -> None:
        """Close the backend session while nobody talks to the NPC, keeping what was said.

        `start` reconnects and replays the conversation, so the NPC still remembers it.
        """
        self._reach.leave(self)
        if not self.open:
            self._set_state(SlotState.SUSPENDED)
            self.suspended.set()
            return
        task, self._task = self._task, None
        link, self._link = self._link, None
        if link is not None:
            with contextlib.suppress(Exception):
                await link.close(1000, "npcd: NPC idle")
        for pending in [task, *self._tasks]:  # a rotation in flight too
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
        self._set_state(SlotState.SUSPENDED)
        self.suspended.set()

    async def wait_ready(self) -> bool:
        """Wait until connected, failed, or a connect attempt has failed; True if connected.
        Callers bound it with `asyncio.timeout`."""
        while not (
            self.ready
            or self.unreachable
            or self.state in (SlotState.FAILED, SlotState.CLOSED, SlotState.SUSPENDED)
        ):
            await self._changed.wait()
        return self.ready

    async def wait_connected(self) -> bool:
        """Wait until connected (through failed attempts) or failed for good; True if
        connected. Callers bound it with `asyncio.timeout`."""
        while not (
            self.ready or self.state in (SlotState.FAILED, SlotState.CLOSED, SlotState.SUSPENDED)
        ):
            await self._changed.wait()
        return self.ready

    async def close(self) -> None:
        self._closing = True
        self._reach.leave(self)
        self._set_state(SlotState.CLOSED)
        if self._link is not None:
            with contextlib.suppress(Exception):
                await self._link.close(1000, "npcd shutting down")
        for task in [self._task, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _set_state(self, state: SlotState) -> None:
        self.state = state
        self._notify()

    def _notify(self) -> None:
        """Wake everyone waiting in `wait_ready` / `wait_connected` to look again."""
        self._changed.set()
        self._changed = asyncio.Event()

    # -- used by the conversation ---------------------------------------------------------------

    def config(self) -> SessionConfig:
        return session_config(
            self.persona.persona,
            self.context,
            actions=self.actions_enabled,
            push_to_talk=self.push_to_talk,
        )

    async def reconfigure(self, context: Mapping[str, str] | None = None) -> None:
        """Re-send the session config (context changed, persona reloaded, turn mode changed)."""
        if context is not None:
            self.context = dict(context)
        if self.session.ready or self._link is not None:  # live, or being started
            self.session.configure(self.config())
            await self.flush()

    async def flush(self) -> None:
        """Send whatever the protocol state has queued, in order."""
        frames = self.session.data_to_send()
        if not frames:
            return
        link = self._link
        if link is None:
            return  # not connected: the next session is built from the state, not the frames
        async with self._send_lock:
            for frame in frames:
                try:
                    await link.send(frame)
                except LinkClosed:
                    return  # the reader task sees the close and reconnects

    def schedule_release(self) -> None:
        """If a response waits only for the server's rate limits, send it when they reset."""
        session = self.session
        if self._release_timer is not None or not session.queued_responses:
            return
        if session.response_phase is not ResponsePhase.IDLE:
            return  # it goes out when the response in flight is done
        until = session.hold_until(self._clock())
        if until is None:
            return
        loop = asyncio.get_running_loop()
        self._release_timer = loop.call_later(max(0.0, until - self._clock()), self._release)

    def _release(self) -> None:
        self._release_timer = None
        if self.session.release_queued(self._clock()):
            self._spawn(self.flush(), f"npcd-release-{self.id}")
        else:
            self.schedule_release()

    def maybe_rotate(self) -> bool:
        """Between turns, replace a session near its deadline, or one on another backend than
        the NPC should be on (make before break)."""
        if (
            self.state is not SlotState.READY
            or self._rotating
            or not (self._clock() >= self._rotate_at or self._move_due())
            or self.session.response_phase is not ResponsePhase.IDLE
            or self.session.input_in_progress
        ):
            return False
        self._rotating = True
        self._rotation = self._spawn(self._rotate(), f"npcd-rotate-{self.id}")
        return True

    def _move_due(self) -> bool:
        return self.moving and self._clock() >= self._move_retry_at

    def charge_late(self, response_id: str, charge: Callable[[Usage | None], None]) -> None:
        """Call ``charge`` with the usage of ``response_id`` when its `response.done` comes,
        whoever holds the slot by then (a few at most: a lost session forgets them)."""
        if len(self._late_charges) >= MAX_LATE_CHARGES:
            self._late_charges.pop(next(iter(self._late_charges)))
        self._late_charges[response_id] = charge

    def rotate_soon(self) -> None:
        """Replace the session at the next pause, as if it were near its time limit."""
        self._rotate_at = -math.inf
        self.maybe_rotate()

    async def move_to(self, backend: Backend, detail: str) -> None:
        """Carry on with ``backend`` (another server: the offline one when a budget is spent,
        the configured one when it is not), history and all, as a rotation: now if the NPC
        is between turns (waits for it), else at its first pause. Not connected: the next
        connect goes there."""
        if backend != self.backend:
            self.backend = backend
            self._rotation_detail = detail
            self._move_retry_at = -math.inf
        if self.connected_to == backend:
            return
        if self.maybe_rotate() and self._rotation is not None:
            await asyncio.shield(self._rotation)

    @property
    def moving(self) -> bool:
        """The NPC's session is on another backend than the one it should be on (a move is
        due at its next pause)."""
        return self.connected_to != self.backend

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the reader task ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._keep_connected()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not leave the NPC silently without a session
            _LOGGER.exception("npc %s: the session task failed", self.id)
            self._reach.leave(self)
            self._fail("internal error in npcd's session task; see npcd's log")

    async def _keep_connected(self) -> None:
        status: StatusKind | None = None
        link: RealtimeLink | None = None
        opened = self._clock()
        while not self._closing:
            if link is None:
                try:
                    link = await self._open(status)
                except ConnectFailed as exc:
                    self.last_error = str(exc)
                    if not exc.verdict.retryable:
                        self._reach.leave(self)
                        self._fail(str(exc))
                        return
                    self.unreachable = True
                    self._notify()
                    self._reach.failed(self, str(exc))
                    _warn_unreachable(str(exc), self._clock())
                    await self._reach.wait_turn(
                        self, self._backoff.next_delay(), self.options.patience_s
                    )
                    continue
                self._reach.succeeded(self)
                opened = self._clock()
            watchdog = asyncio.create_task(self._watch(link), name=f"npcd-watch-{self.id}")
            try:
                await self._pump(link)
            except LinkClosed as closed:
                if self._link is not link and self._link is not None:
                    link = self._link  # rotated: the old link was closed on purpose
                    self._stall_reason = None
                    continue
                link = self._link = None
                if self._closing:
                    return
                self._backoff.reset_if_stable(self._clock() - opened)
                stalled, self._stall_reason = self._stall_reason, None
                reason = stalled or closed.verdict.reason
                if closed.verdict.kind is CloseClass.FATAL and stalled is None:
                    self.listener.on_link_lost(reason, planned=False)
                    self._fail(reason)
                    return
                planned = stalled is None and (
                    self.session.expired
                    or closed.verdict.kind in (CloseClass.EXPIRED, CloseClass.NORMAL)
                )
                self._set_state(SlotState.RECONNECTING)
                if planned:
                    self.rotations += 1
                    status = StatusKind.ROTATED
                    self.listener.on_link_lost(reason, planned=True)
                else:
                    self.reconnects += 1
                    status = StatusKind.RESUMED
                    self.listener.on_status(SlotStatus(StatusKind.RECONNECTING, reason))
                    self.listener.on_link_lost(reason, planned=False)
                    await asyncio.sleep(self._backoff.next_delay())
            finally:
                watchdog.cancel()

    async def _open(self, status: StatusKind | None) -> RealtimeLink:
        """Connect a fresh session, give it everything the last one held, and wait (with a
        deadline) for the server to start it. Every failure is a `ConnectFailed`."""
        timeout = self.options.open_timeout_s
        target = self.backend
        if self._reach.probing(self):  # one probe of a down backend never queues behind others
            link = await RealtimeLink.open(target, open_timeout=timeout)
        else:
            async with self._gate:  # the pool bounds how many slots connect at once
                link = await RealtimeLink.open(target, open_timeout=timeout)
        session = self._successor(self.config(), note=True)
        self._link, self.session, self.connected_to = link, session, target
        self._pending_status = status
        await self.flush()
        try:
            async with asyncio.timeout(timeout):
                while not session.ready:
                    frame = await link.recv()
                    try:
                        event = session.receive(frame, self._clock())
                    except EventError:
                        continue
                    self.listener.on_event(event)
        except TimeoutError:
            link.abort()
            self._link = None
            raise ConnectFailed(NO_SESSION_STARTED) from None
        except LinkClosed as closed:
            self._link = None
            raise ConnectFailed(classify_closed_before_session(closed.verdict)) from None
        self.connects += 1
        self._on_connected(session)
        await self.flush()  # what the listener gave the new session (held audio, a commit)
        return link

    def _successor(self, config: SessionConfig, *, note: bool) -> RealtimeSession:
        """A new session state, configured and given what the current one holds: the
        conversation (with input never acknowledged), calls the game has yet to answer, and
        responses asked for that never started."""
        old = self.session
        new = RealtimeSession(self.options.backend.dialect)
        new.configure(config)
        history = old.history(self.options.replay_items)
        pinned = {id(item) for item in old.pinned.values()}
        for item in history:
            new.add_item(item, pin=id(item) in pinned)
        if history and note:
            new.add_item(SystemMessage(content=(InputText(text=CONTINUE_NOTE),)), track=False)
        new.pending_calls.update(old.pending_calls)
        for overrides, tag in old.unstarted_responses():
            new.request_response(overrides, tag, now=self._clock())
        return new

    async def _pump(self, link: RealtimeLink) -> None:
        while True:
            frame = await link.recv()
            if self._link is not link:
                continue  # rotated away: late frames of the old session are not the new one's
            self._last_rx = self._clock()
            session = self.session
            try:
                event = session.receive(frame, self._last_rx)
            except EventError as exc:
                _LOGGER.warning("npc %s: ignored a malformed backend event (%s)", self.id, exc.code)
                continue
            if session.queued_responses:
                self.schedule_release()
            if session.has_outgoing:
                await self.flush()
            if self._late_charges and isinstance(event, ev.ResponseDone):
                late = self._late_charges.pop(event.response.id or "", None)
                if late is not None:
                    late(event.response.usage)
            self.listener.on_event(event)
            if self.moving:
                self.maybe_rotate()  # a move to another backend is due: at the first pause

    async def _watch(self, link: RealtimeLink) -> None:
        """While a conversation uses the slot, ping a backend that has gone quiet; cut off one
        that does not answer, so the reader reconnects within seconds instead of waiting for
        TCP or the library's keepalive to notice."""
        quiet_s = self.options.quiet_s
        while True:
            await self._attended.wait()
            quiet = self._clock() - self._last_rx
            if quiet < quiet_s:
                await asyncio.sleep(quiet_s - quiet)
                continue
            if await link.responsive(self.options.pong_timeout_s):
                self._last_rx = self._clock()  # alive, only quiet (the player is silent)
                continue
            self._stall_reason = (
                f"the backend stopped answering (silent for {quiet_s:g} s, no reply to a ping "
                f"within {self.options.pong_timeout_s:g} s)"
            )
            _LOGGER.warning("npc %s: %s; reconnecting", self.id, self._stall_reason)
            link.abort()
            return

    async def _rotate(self) -> None:
        old_link, old_session = self._link, self.session
        link: RealtimeLink | None = None
        swapped = False
        try:
            history = old_session.history(self.options.replay_items)
            config = self.config()
            target, old_target = self.backend, self.connected_to
            link = await RealtimeLink.open(target, open_timeout=self.options.open_timeout_s)
            session = self._successor(config, note=False)
            async with asyncio.timeout(self.options.open_timeout_s):
                while not session.ready:
                    session.receive(await link.recv(), self._clock())
            async with self._send_lock:
                for frame in session.data_to_send():
                    await link.send(frame)
            if (
                self.session is not old_session
                or self._link is not old_link
                or self.state is not SlotState.READY
                or old_session.response_phase is not ResponsePhase.IDLE
                or old_session.unstarted_responses()
                or old_session.input_in_progress
                or old_session.history(self.options.replay_items) != history
                or self.config() != config
                or self.backend != target
            ):
                # The conversation moved on meanwhile; try again at the next pause.
                self._rotate_at = self._clock()
                return
            self._link, self.session, self.connected_to = link, session, target
            swapped = True
            self.connects += 1
            self.rotations += 1
            self._on_connected(session)
            detail = self._rotation_detail if target != old_target else "session rotated"
            self._rotation_detail = ""
            self.listener.on_status(SlotStatus(StatusKind.ROTATED, detail))
            if old_link is not None:
                await old_link.close(1000, "npcd rotated this session")
        except (ConnectFailed, LinkClosed, TimeoutError, EventError) as exc:
            _LOGGER.info("npc %s: rotation failed, will retry: %s", self.id, type(exc).__name__)
            self._rotate_at = self._clock() + 30.0
            self._move_retry_at = self._clock() + MOVE_RETRY_S
        finally:
            self._rotating = False
            if link is not None and not swapped:
                with contextlib.suppress(Exception):
                    await link.close(1000, "npcd: rotation not needed")

    def _on_connected(self, session: RealtimeSession) -> None:
        now = self._clock()
        self._last_rx = now
        deadline = now + self.options.max_session_s
        if session.expires_at:
            left = session.expires_at - time.time()
            deadline = min(deadline, now + max(0.0, left - self.options.rotate_margin_s))
        self._rotate_at = deadline
        self.unreachable = False
        self.last_error = ""
        self._set_state(SlotState.READY)
        status, self._pending_status = self._pending_status, None
        if status is not None:
            self.listener.on_status(SlotStatus(status, f"session {status.value}"))
        if self._move_due():
            self.maybe_rotate()  # moved while this session was connecting: on to the new one

    def _fail(self, reason: str) -> None:
        self.last_error = reason
        self._set_state(SlotState.FAILED)
        _LOGGER.error("npc %s: backend unavailable: %s", self.id, reason)
        self.listener.on_status(SlotStatus(StatusKind.FAILED, reason, context_kept=False))
