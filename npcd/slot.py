"""One NPC's Realtime session, kept alive: connect, configure, pump, reconnect, rotate.

A slot owns one `RealtimeLink` and the `RealtimeSession` state of its current connection. It
survives the backend's habits: sessions end at a maximum duration, and connections drop. After a
drop it reconnects with backoff; before the duration limit it rotates to a fresh session between
turns. Either way it replays the conversation so far (as text: audio cannot be replayed) into
the new session, so the NPC does not forget what was said a minute ago, and it tells its
listener (the conversation relay) what happened with a `SlotStatus`.

Events from the backend go to exactly one listener at a time, the conversation that leased the
slot; with no listener they only update the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from npcd.personas import LoadedPersona
from npcd.realtime import events as ev
from npcd.realtime.configure import session_config
from npcd.realtime.endpoints import Backend
from npcd.realtime.policy import Backoff, CloseClass, QuickFailureTracker
from npcd.realtime.protocol import RealtimeSession, ResponsePhase
from npcd.realtime.values import EventError, InputText, Item, SessionConfig, SystemMessage
from npcd.transport.ws import ConnectFailed, LinkClosed, RealtimeLink

_LOGGER = logging.getLogger(__name__)

#: Rotate this long before the server's own deadline (its `expires_at`), between turns.
ROTATE_MARGIN_S = 300.0
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

    def on_status(self, status: SlotStatus) -> None:
        """The backend session changed (dropped, resumed, rotated, failed)."""


@dataclass(frozen=True, slots=True)
class SlotOptions:
    backend: Backend
    #: Rotate after this many seconds even if the server announces no `expires_at`.
    max_session_s: float = 50 * 60
    rotate_margin_s: float = ROTATE_MARGIN_S
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0
    open_timeout_s: float = 10.0
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
    ) -> None:
        self.persona = persona
        self.options = options
        self.state = SlotState.CONNECTING
        self.session = RealtimeSession(options.backend.dialect)
        self.listener: SlotListener = SlotListener()
        self.context: dict[str, str] = {}
        self.push_to_talk = persona.persona.turn_detection.type == "none"
        self.actions_enabled = True
        self.connects = 0
        self.last_error = ""
        self._clock = clock
        self._gate = connect_gate or asyncio.Semaphore(1)
        self._link: RealtimeLink | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._rotate_at = float("inf")
        self._release_timer: asyncio.TimerHandle | None = None
        self._rotating = False
        self._pending_status: StatusKind | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        #: Conversation carried across a suspension (replayed when the slot resumes).
        self._history: list[Item] = []
        #: Set while the slot holds no backend session (tests and the pool wait on it).
        self.suspended = asyncio.Event()
        #: Monotonic time of the last conversation's end (the pool suspends the idlest first).
        self.last_used = clock()
        backend = options.backend
        if options.persona_model:
            backend = dataclasses.replace(backend, model=f"npcd-local:{persona.persona.id}")
        self.backend = backend
        self._backoff = Backoff(initial_s=options.backoff_initial_s, max_s=options.backoff_max_s)
        self._quick = QuickFailureTracker()

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

    def start(self) -> None:
        """Connect in the background (again, after `suspend`); `wait_ready` to know when."""
        if not self.open and not self._closing:
            self.state = SlotState.CONNECTING
            self.suspended.clear()
            history, self._history = self._history, []
            self._task = asyncio.create_task(self._run(history), name=f"npcd-slot-{self.id}")

    async def suspend(self) -> None:
        """Close the backend session while nobody talks to the NPC, keeping what was said.

        `start` reconnects and replays the conversation, so the NPC still remembers it.
        """
        if not self.open:
            self.state = SlotState.SUSPENDED
            self.suspended.set()
            return
        self._history = self.session.history(self.options.replay_items)
        task, self._task = self._task, None
        link, self._link = self._link, None
        if link is not None:
            with contextlib.suppress(Exception):
                await link.close(1000, "npcd: NPC idle")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.state = SlotState.SUSPENDED
        self._ready.clear()
        self.suspended.set()

    async def wait_ready(self) -> bool:
        """Wait until connected or failed (callers bound it with `asyncio.timeout`)."""
        await self._ready.wait()
        return self.ready

    async def close(self) -> None:
        self._closing = True
        self.state = SlotState.CLOSED
        if self._link is not None:
            with contextlib.suppress(Exception):
                await self._link.close(1000, "npcd shutting down")
        for task in [self._task, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

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
        if self.session.ready:
            self.session.configure(self.config())
            await self.flush()

    async def flush(self) -> None:
        """Send whatever the protocol state has queued, in order."""
        frames = self.session.data_to_send()
        if not frames:
            return
        link = self._link
        if link is None:
            return  # not connected: the state is rebuilt from history on reconnect
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
            task = asyncio.get_running_loop().create_task(self.flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self.schedule_release()

    def maybe_rotate(self) -> bool:
        """Between turns, replace a session near its deadline (make before break)."""
        if (
            self.state is not SlotState.READY
            or self._rotating
            or self._clock() < self._rotate_at
            or self.session.response_phase is not ResponsePhase.IDLE
        ):
            return False
        self._rotating = True
        task = asyncio.get_running_loop().create_task(self._rotate(), name=f"npcd-rotate-{self.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    # -- the reader task ------------------------------------------------------------------------

    async def _run(self, history: list[Item]) -> None:
        status: StatusKind | None = None
        while not self._closing:
            link = self._link
            if link is None:
                try:
                    link = await self._open(history)
                except ConnectFailed as exc:
                    self.last_error = str(exc)
                    if not exc.verdict.retryable or self._quick.should_give_up:
                        self._fail(str(exc))
                        return
                    delay = self._backoff.next_delay()
                    _warn_unreachable(str(exc), self._clock())
                    await asyncio.sleep(delay)
                    continue
                self._pending_status = status
            try:
                await self._pump(link)
            except LinkClosed as closed:
                if self._link is not link and self._link is not None:
                    continue  # rotated: the old link was closed on purpose, pump the new one
                lived = self._quick.closed(self._clock()) or 0.0
                self._backoff.reset_if_stable(lived)
                history = self.session.history(self.options.replay_items)
                self._link = None
                if self._closing:
                    return
                if closed.verdict.kind is CloseClass.FATAL:
                    self._fail(closed.verdict.reason)
                    return
                planned = closed.verdict.kind in (CloseClass.EXPIRED, CloseClass.NORMAL)
                status = StatusKind.ROTATED if planned else StatusKind.RESUMED
                self.state = SlotState.RECONNECTING
                self._ready.clear()
                if not planned:
                    self.listener.on_status(
                        SlotStatus(StatusKind.RECONNECTING, closed.verdict.reason)
                    )
                    await asyncio.sleep(self._backoff.next_delay())

    async def _open(self, history: list[Item]) -> RealtimeLink:
        """Connect a fresh session, configure it and give it the conversation so far."""
        async with self._gate:  # the pool bounds how many slots connect at once
            link = await RealtimeLink.open(self.backend, open_timeout=self.options.open_timeout_s)
        self._quick.opened(self._clock())
        session = RealtimeSession(self.options.backend.dialect)
        session.configure(self.config())
        for item in history:
            session.add_item(item)
        if history:
            session.add_item(SystemMessage(content=(InputText(text=CONTINUE_NOTE),)))
        self._link, self.session = link, session
        self.connects += 1
        await self.flush()
        return link

    async def _pump(self, link: RealtimeLink) -> None:
        while True:
            frame = await link.recv()
            session = self.session
            try:
                event = session.receive(frame, self._clock())
            except EventError as exc:
                _LOGGER.warning("npc %s: ignored a malformed backend event (%s)", self.id, exc.code)
                continue
            if isinstance(event, ev.SessionCreated) and session.session_resets == 0:
                self._on_connected(session)
            if session.queued_responses:
                self.schedule_release()
            if session.has_outgoing:
                await self.flush()
            self.listener.on_event(event)

    async def _rotate(self) -> None:
        old_link, old_session = self._link, self.session
        try:
            history = old_session.history(self.options.replay_items)
            link = await RealtimeLink.open(self.backend, open_timeout=self.options.open_timeout_s)
            session = RealtimeSession(self.options.backend.dialect)
            session.configure(self.config())
            for item in history:
                session.add_item(item)
            async with asyncio.timeout(self.options.open_timeout_s):
                while not session.ready:
                    session.receive(await link.recv(), self._clock())
            async with self._send_lock:
                for frame in session.data_to_send():
                    await link.send(frame)
            if self.session is not old_session or old_session.response_phase is not (
                ResponsePhase.IDLE
            ):
                await link.close(1000, "npcd: rotation no longer needed")
                return
            self._link, self.session = link, session
            self.connects += 1
            self._on_connected(session)
            self.listener.on_status(SlotStatus(StatusKind.ROTATED, "session rotated"))
            if old_link is not None:
                await old_link.close(1000, "npcd rotated this session")
        except (ConnectFailed, LinkClosed, TimeoutError, EventError) as exc:
            _LOGGER.info("npc %s: rotation failed, will retry: %s", self.id, type(exc).__name__)
            self._rotate_at = self._clock() + 30.0
        finally:
            self._rotating = False

    def _on_connected(self, session: RealtimeSession) -> None:
        now = self._clock()
        deadline = now + self.options.max_session_s
        if session.expires_at:
            left = session.expires_at - time.time()
            deadline = min(deadline, now + max(0.0, left - self.options.rotate_margin_s))
        self._rotate_at = deadline
        self.state = SlotState.READY
        self._ready.set()
        status, self._pending_status = self._pending_status, None
        if status is not None:
            self.listener.on_status(SlotStatus(status, f"session {status.value}"))

    def _fail(self, reason: str) -> None:
        self.state = SlotState.FAILED
        self.last_error = reason
        self._ready.set()
        _LOGGER.error("npc %s: backend unavailable: %s", self.id, reason)
        self.listener.on_status(SlotStatus(StatusKind.FAILED, reason, context_kept=False))
