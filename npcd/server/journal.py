"""What one conversation writes to memory, in the order it happened.

Each entry is written as it happens (a player's spoken line as soon as the utterance ends, with
its words filled in when the transcript comes, so order holds whatever arrives first), one
committed transaction each, chained so they land in order. The conversation waits for an NPC
line's write before its `ResponseDone` leaves: a turn the game saw finish is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from npcd.memory.keeper import MemoryKeeper
from npcd.memory.store import Entry, MemoryKey, Role

__all__ = ["Journal"]

_LOGGER = logging.getLogger(__name__)


class Journal:
    """One conversation's memory writes; each returns a task for the turn's row id."""

    def __init__(
        self, keeper: MemoryKeeper, key: MemoryKey, clock: Callable[[], float] = time.time
    ) -> None:
        self.key = key
        self._keeper = keeper
        self._clock = clock
        self._conversation = asyncio.ensure_future(keeper.begin(key, clock()))
        self._last: asyncio.Future[object] = self._conversation  # type: ignore[assignment]

    def write(self, role: Role, text: str) -> asyncio.Task[int | None]:
        """Remember ``text``; the task gives its row id (None with memory off)."""
        task = asyncio.ensure_future(self._append(self._last, Entry(role, text)))
        self._last = task  # type: ignore[assignment]
        return task

    def revise(self, row: asyncio.Future[int | None], text: str) -> asyncio.Task[None]:
        """Replace what ``row`` holds (a transcript that came late, a line cut short)."""
        task = asyncio.ensure_future(self._revise(self._last, row, text))
        self._last = task  # type: ignore[assignment]
        return task

    @property
    def tail(self) -> asyncio.Future[object]:
        """The latest write: done when everything asked for so far is."""
        return self._last

    async def settle(self) -> None:
        """Wait for every write asked for so far."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self._last)

    async def _append(self, before: asyncio.Future[object], entry: Entry) -> int | None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(before)
        conversation = await self._conversation
        if conversation is None:
            return None
        rows = await self._keeper.append(conversation, self.key, [entry], self._clock())
        return rows[0] if rows else None

    async def _revise(
        self, before: asyncio.Future[object], row: asyncio.Future[int | None], text: str
    ) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(before)
        row_id = await row
        if row_id is not None:
            await self._keeper.revise(row_id, text)
