"""The daemon's cost governor: prices each response, keeps the ledger and its file, and says
when an NPC's budget is spent. One per daemon; the servicer and conversations share it.

Writes to the spend file are fire-and-forget on its own thread (a response's `ResponseDone`
never waits for them) and awaited at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from npcd.cost.ledger import Exceeded, Ledger
from npcd.cost.prices import PriceTable, cost_usd
from npcd.cost.store import SPEND_DB_NAME, SpendStore
from npcd.personas.model import Budget
from npcd.realtime.values import Usage

_LOGGER = logging.getLogger(__name__)

#: How often the daily budget's total is read back from the shared spend file.
SHARED_REFRESH_S = 5.0


class CostGovernor:
    def __init__(self, prices: PriceTable, ledger: Ledger, store: SpendStore | None) -> None:
        self.prices = prices
        self.ledger = ledger
        self._store = store
        self._writes: set[asyncio.Task[None]] = set()
        self._unpriced: set[str] = set()
        self._day = ledger.day
        self._charged = asyncio.Event()
        self._shared: asyncio.Task[None] | None = None
        if ledger.daemon_day_usd is not None and store is not None and store.available:
            self._shared = asyncio.get_running_loop().create_task(self._follow_shared(store))

    @classmethod
    async def open(
        cls, prices: PriceTable, *, daemon_day_usd: float | None, data_dir: Path | None
    ) -> CostGovernor:
        """With ``data_dir``, today's spend so far is read back from the spend file."""
        ledger = Ledger(daemon_day_usd=daemon_day_usd)
        store = None
        if data_dir is not None:
            store = await SpendStore.open(data_dir / SPEND_DB_NAME)
            ledger.load(ledger.day, await store.today(ledger.day))
        return cls(prices, ledger, store)

    def price(self, model: str, usage: Usage | None) -> tuple[float, bool]:
        """(USD, priced) for one response of ``model``; (0, False) for a model not in the
        table (logged once per model, so an operator can add it with --prices)."""
        prices = self.prices.for_model(model)
        if prices is None:
            if model not in self._unpriced:
                self._unpriced.add(model)
                _LOGGER.warning(
                    "no price for model %r: its cost is not counted and budgets do not apply "
                    "to it (add it with --prices FILE)",
                    model,
                )
            return 0.0, False
        return (cost_usd(usage, prices) if usage is not None else 0.0), True

    def charge(
        self,
        character: str,
        player: str | None,
        conversation: str,
        usd: float,
        *,
        per_player: bool = True,
    ) -> None:
        """Count ``usd`` against every scope. The spend file names the player only where a
        per-player budget needs it (``per_player``): it is not a log of who played."""
        self.ledger.charge(character, player, conversation, usd)
        self._charged.set()
        self._charged = asyncio.Event()
        store = self._store
        if store is None or not store.available or usd <= 0:
            return
        day = self.ledger.day
        if day != self._day:
            self._day = day
            self._write(store.purge(day))
        self._write(store.add(day, character, player if per_player else None, usd))

    async def charged(self) -> None:
        """Return at the next charge (for whoever watches spend: tests, dashboards)."""
        await self._charged.wait()

    def _write(self, write: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def exceeded(
        self, character: str, player: str | None, conversation: str, budget: Budget
    ) -> Exceeded | None:
        return self.ledger.exceeded(character, player, conversation, budget)

    async def forget_player(self, player: str) -> None:
        self.ledger.forget_player(player)
        if self._store is not None:
            await self._store.forget_player(player)

    def end_conversation(self, conversation: str) -> None:
        self.ledger.end_conversation(conversation)

    async def _follow_shared(self, store: SpendStore) -> None:
        """Keep the daily budget's total in step with the other processes writing the same
        file (`--workers`), every `SHARED_REFRESH_S`."""
        while True:
            await asyncio.sleep(SHARED_REFRESH_S)
            self.ledger.at_least_today(await store.day_total(self.ledger.day))

    async def close(self) -> None:
        if self._shared is not None:
            self._shared.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._shared
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._store is not None:
            await self._store.close()
