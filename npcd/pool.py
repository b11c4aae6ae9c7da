"""The session pool: one long-lived backend session per NPC, leased to one conversation at a time.

Sessions are opened for every persona at start-up (pre-warmed, so the first word costs no
connect), at most `PoolOptions.connect_concurrency` at once so 500 personas do not stampede the
backend. An NPC has one voice and one memory, so a slot serves one conversation at a time: a
second player gets `NpcBusy` (FAILED_PRECONDITION) at once, or waits for the first to end if it
asked to (``BusyPolicy.WAIT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from npcd.errors import NpcBusy, Overloaded, UnknownCharacter
from npcd.personas import Catalog, LoadedPersona
from npcd.reachability import Reachability
from npcd.slot import NpcSlot, SlotListener, SlotOptions, SlotState

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PoolOptions:
    slot: SlotOptions
    #: Connections opened at once at start-up and on reload.
    connect_concurrency: int = 32
    #: Conversations waiting for a busy NPC, across all NPCs.
    max_waiting: int = 100
    #: Backend sessions open at once (0: one per persona). NPCs beyond it are suspended and
    #: resume when a player talks to them, suspending the idlest NPC not in a conversation.
    max_open: int = 0
    #: Suspend an NPC nobody has talked to for this many seconds (0: never).
    idle_close_s: float = 0.0
    #: Connect every NPC at start-up (False: each connects when first talked to, as a worker
    #: behind a proxy does, since which NPCs the proxy sends it is not known in advance).
    prewarm: bool = True


class SessionPool:
    """Owns every `NpcSlot`; the servicer leases them."""

    def __init__(self, catalog: Catalog, options: PoolOptions) -> None:
        self.options = options
        self.slots: dict[str, NpcSlot] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._connects = asyncio.Semaphore(options.connect_concurrency)
        self.reachability = Reachability()
        #: Conversations in progress (a drain waits for none, and none waiting for an NPC).
        self.active = 0
        self._changed = asyncio.Event()
        for persona_id, loaded in catalog.personas.items():
            self._add(persona_id, loaded)

    def _add(self, persona_id: str, loaded: LoadedPersona) -> NpcSlot:
        slot = NpcSlot(
            loaded,
            self.options.slot,
            connect_gate=self._connects,
            reachability=self.reachability,
        )
        self.slots[persona_id] = slot
        self._locks[persona_id] = asyncio.Lock()
        return slot

    async def start(self) -> None:
        """Start connecting every slot, up to `PoolOptions.max_open` (returns at once)."""
        for slot in self.slots.values():
            if self.options.prewarm and self._room():
                slot.start()
            else:
                await slot.suspend()
        if self.options.idle_close_s > 0:
            self._sweeper = asyncio.create_task(self._sweep(), name="npcd-pool-sweeper")

    async def wait_ready(self) -> int:
        """Wait until every open slot is connected or has failed; returns how many are ready."""
        opened = [slot for slot in self.slots.values() if slot.open]
        await asyncio.gather(*(slot.wait_ready() for slot in opened))
        return sum(1 for slot in opened if slot.ready)

    def _room(self) -> bool:
        limit = self.options.max_open
        return limit <= 0 or sum(1 for slot in self.slots.values() if slot.open) < limit

    async def _make_room(self) -> None:
        """Suspend the NPC idle longest, so another can open (`Overloaded` if all are busy)."""
        if self._room():
            return
        idle = [
            slot
            for persona_id, slot in self.slots.items()
            if slot.open and not self._locks[persona_id].locked()
        ]
        if not idle:
            raise Overloaded(
                f"all {self.options.max_open} NPC sessions are in conversations; try again soon"
            )
        await min(idle, key=lambda slot: slot.last_used).suspend()

    async def _sweep(self) -> None:
        limit = self.options.idle_close_s
        while True:
            await asyncio.sleep(min(30.0, limit / 4))
            now = time.monotonic()
            for persona_id, slot in list(self.slots.items()):
                lock = self._locks.get(persona_id)
                if slot.open and lock is not None and not lock.locked():
                    if now - slot.last_used >= limit:
                        _LOGGER.info("npc %s idle for %.0f s: session closed", persona_id, limit)
                        await slot.suspend()

    def _note(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def waiting(self) -> int:
        """Conversations waiting for a busy NPC."""
        return self._waiting

    async def changed(self) -> None:
        """Until a conversation starts waiting, gets its NPC, or ends."""
        await self._changed.wait()

    async def wait_idle(self) -> None:
        """Until no conversation is in progress or waiting for a busy NPC (one handed the NPC
        as another ends counts as waiting until it has it)."""
        while self.active or self._waiting:
            await self._changed.wait()

    def busy(self, persona_id: str) -> bool:
        lock = self._locks.get(persona_id)
        return lock is not None and lock.locked()

    @contextlib.asynccontextmanager
    async def lease(self, persona_id: str, *, wait: bool = False) -> AsyncIterator[NpcSlot]:
        """The slot of ``persona_id`` for one conversation (set `NpcSlot.listener` on it)."""
        slot = self.slots.get(persona_id)
        if slot is None:
            known = ", ".join(sorted(self.slots)) or "none loaded"
            raise UnknownCharacter(f"no character {persona_id!r} (known: {known})")
        lock = self._locks[persona_id]
        if lock.locked() and not wait:
            raise NpcBusy(
                f"npc {persona_id!r} is in another conversation; try again when it ends "
                "(or start with busy_policy WAIT)"
            )
        if lock.locked() and self._waiting >= self.options.max_waiting:
            raise Overloaded("too many conversations are waiting for busy NPCs")
        self._waiting += 1
        self._note()
        try:
            await lock.acquire()
        finally:
            self._waiting -= 1
            self._note()
        self.active += 1
        try:
            if not slot.open:
                await self._make_room()
                slot.start()
            yield slot
        finally:
            slot.listener = SlotListener()
            slot.last_used = time.monotonic()
            lock.release()
            self.active -= 1
            self._note()

    async def reload(self, catalog: Catalog) -> None:
        """Apply a new catalogue: changed personas reconfigure, new ones connect, gone ones close.

        A conversation in progress keeps its session; a changed persona takes effect from the
        NPC's next response.
        """
        for persona_id, loaded in catalog.personas.items():
            slot = self.slots.get(persona_id)
            if slot is None:
                added = self._add(persona_id, loaded)
                if self.options.prewarm and self._room():
                    added.start()
                else:
                    await added.suspend()
            elif slot.persona.persona != loaded.persona:
                slot.persona = loaded
                await slot.reconfigure()
        for persona_id in [p for p in self.slots if p not in catalog.personas]:
            slot = self.slots.pop(persona_id)
            self._locks.pop(persona_id, None)
            await slot.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await asyncio.gather(*(slot.close() for slot in self.slots.values()))

    def states(self) -> dict[str, SlotState]:
        return {persona_id: slot.state for persona_id, slot in self.slots.items()}
