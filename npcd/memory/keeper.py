"""The daemon's memory: a `MemoryStore` on a thread of its own, failing soft.

SQLite calls block, so every one runs on a single worker thread (which also keeps the
connection thread-confined and the writes in the order they were asked for). A database that
cannot be opened (corrupt, locked, read-only, from a newer npcd) or that fails later turns
memory off with one clear log line: conversations go on as if nobody had a player id. Never
the daemon's failure, and never a lost conversation.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from npcd.memory.store import (
    Entry,
    MemoryKey,
    MemoryStore,
    MemoryStoreError,
    Recall,
    SlotInfo,
)
from npcd.memory.summarize import MIN_TURNS, write_summary
from npcd.realtime.endpoints import Backend

__all__ = ["MemoryKeeper", "MemoryUnavailable"]

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")
#: Store failures that pass: memory stays on (see `MemoryStoreError.kind`).
_TRANSIENT = frozenset({"locked", "disk-full", "io"})


class MemoryUnavailable(Exception):
    """Memory is off (the reason says why); for the RPCs, which report it to the caller."""


class MemoryKeeper:
    """Async access to one memory database; ``broken`` says why memory is off, if it is."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.broken: str | None = "not opened"
        #: A model backend that writes summaries of older turns (None: extractive only).
        self.summaries: Backend | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._store: MemoryStore | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="npcd-memory")

    @classmethod
    async def open(cls, path: Path) -> MemoryKeeper:
        """Open (or create) the database; on failure the keeper is there but off."""
        keeper = cls(path)
        try:
            keeper._store = await keeper._call(MemoryStore.open, path)
        except (MemoryStoreError, sqlite3.Error, OSError) as exc:
            keeper.broken = str(exc)
            _LOGGER.error("memory is off: %s", exc)
        else:
            keeper.broken = None
            _LOGGER.info("memory in %s", path)
        return keeper

    @property
    def on(self) -> bool:
        return self.broken is None

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        store, self._store = self._store, None
        if store is not None:
            await self._call(store.close)
        self._thread.shutdown(wait=False)

    # -- for conversations: never raise, None when memory is off ------------------------------

    async def begin(self, key: MemoryKey, now: float) -> int | None:
        return await self._soft(lambda s: s.begin(key, now))

    async def append(
        self, conversation: int, key: MemoryKey, entries: Sequence[Entry], now: float
    ) -> list[int] | None:
        return await self._soft(lambda s: s.append(conversation, key, entries, now))

    async def revise(self, turn_id: int, text: str) -> None:
        await self._soft(lambda s: s.revise(turn_id, text))

    async def has_turns(self, key: MemoryKey) -> bool | None:
        return await self._soft(lambda s: s.has_turns(key))

    async def recall(self, key: MemoryKey, budget_chars: int, recent_turns: int) -> Recall | None:
        return await self._soft(lambda s: s.recall(key, budget_chars, recent_turns))

    def summarize_later(
        self, key: MemoryKey, character: str, budget_chars: int, recent_turns: int
    ) -> None:
        """In the background: have the model backend fold the turns that left the recent
        window into the key's summary (when there are enough of them)."""
        backend = self.summaries
        if backend is None or not self.on:
            return
        task = asyncio.ensure_future(
            self._summarize(backend, key, character, budget_chars, recent_turns)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def idle(self) -> None:
        """Wait for the background summaries asked for so far."""
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _summarize(
        self, backend: Backend, key: MemoryKey, character: str, budget: int, recent: int
    ) -> None:
        work = await self._soft(lambda s: s.summary_work(key, recent, MIN_TURNS))
        if work is None:
            return
        text = await write_summary(backend, work, character, max(100, budget // 3))
        if text:
            await self._soft(lambda s: s.save_summary(key, work, text, time.time()))
            _LOGGER.info("memory: %s wrote a summary for %s", backend.describe, key.character)

    # -- for the save-slot RPCs: raise MemoryUnavailable, ValueError for bad requests ---------

    async def slots(self, player: str | None, character: str | None) -> list[SlotInfo]:
        return await self._hard(lambda s: s.slots(player, character))

    async def copy_slot(self, player: str, source: str, target: str, character: str | None) -> int:
        return await self._hard(lambda s: s.copy_slot(player, source, target, character))

    async def delete_slot(self, player: str, slot: str, character: str | None) -> int:
        return await self._hard(lambda s: s.delete_slot(player, slot, character))

    async def forget_player(self, player: str) -> int:
        return await self._hard(lambda s: s.forget_player(player))

    async def export(self, player: str, slot: str | None) -> dict[str, Any]:
        return await self._hard(lambda s: s.export(player, slot))

    async def import_(self, data: Mapping[str, Any], *, replace: bool) -> int:
        return await self._hard(lambda s: s.import_(data, replace=replace))

    # -- plumbing -------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _soft(self, fn: Callable[[MemoryStore], T]) -> T | None:
        store = self._store
        if store is None:
            return None
        try:
            return await self._call(fn, store)
        except MemoryStoreError as exc:
            if exc.kind in _TRANSIENT:
                # Locked by another process for longer than the busy timeout, or a full disk:
                # this write is lost, memory stays on for the next.
                _LOGGER.warning("memory: one write lost (%s)", exc)
                return None
            self._fail(exc)
            return None
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return None

    async def _hard(self, fn: Callable[[MemoryStore], T]) -> T:
        store = self._store
        if store is None:
            raise MemoryUnavailable(f"npcd runs without memory: {self.broken}")
        try:
            return await self._call(fn, store)
        except (MemoryStoreError, sqlite3.Error, OSError) as exc:
            self._fail(exc)
            raise MemoryUnavailable(f"npcd runs without memory: {self.broken}") from None

    def _fail(self, exc: BaseException) -> None:
        if self.broken is None:
            self.broken = f"{self.path}: {exc}"
            _LOGGER.error(
                "memory is off from now on (%s); conversations go on without it", self.broken
            )
        store, self._store = self._store, None
        if store is not None:
            self._thread.submit(store.close)
