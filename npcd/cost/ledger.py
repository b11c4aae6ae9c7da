"""Running spend per conversation, per NPC and player per UTC day, and for the whole daemon.

Sans-I/O: the caller charges each response's cost (`npcd.cost.prices.cost_usd`), asks whether a
persona's `Budget` is used up, and persists what it charged (`npcd.cost.store`) so that a restart
does not reset the day. Only today's totals are kept: when the UTC day rolls over, the day
scopes start again from zero, so memory does not grow with the days the daemon runs. A
conversation's session total is not a day scope and goes on across midnight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from npcd.personas.model import Budget

__all__ = ["Exceeded", "Ledger", "Scope", "utc_today"]

Scope = Literal["session", "player_day", "day", "daemon_day"]

#: Float sums drift (ten charges of $0.10 add up to $0.99999...); a budget counts as used up
#: within a nano-dollar of its limit.
_TOLERANCE_USD: Final = 1e-9


def utc_today() -> str:
    """Today's UTC date as ``YYYY-MM-DD``, the day budgets reset by."""
    return datetime.now(UTC).date().isoformat()


@dataclass(frozen=True, slots=True)
class Exceeded:
    """A budget that is used up: which one, its limit, and what was spent against it."""

    scope: Scope
    character: str
    limit_usd: float
    spent_usd: float

    @property
    def message(self) -> str:
        """For the game developer: which budget, how much, when it resets (no player data)."""
        amounts = f"${self.spent_usd:.4f} of ${self.limit_usd:.4f}"
        npc = f"npc {self.character!r}"
        resets = "it resets at 00:00 UTC"
        if self.scope == "session":
            return (
                f"{npc} has used its budget for this conversation: {amounts} (budget.session_usd)"
            )
        if self.scope == "player_day":
            return (
                f"{npc} has used its budget for this player today: {amounts} "
                f"(budget.player_day_usd); {resets}"
            )
        if self.scope == "day":
            return f"{npc} has used its budget for today: {amounts} (budget.day_usd); {resets}"
        return f"npcd has used its budget for today, all NPCs together: {amounts}; {resets}"


class Ledger:
    """What was spent, in USD, by scope; see the module docstring for what is kept how long."""

    def __init__(
        self, *, daemon_day_usd: float | None = None, today: Callable[[], str] = utc_today
    ) -> None:
        if daemon_day_usd is not None and not daemon_day_usd > 0:
            raise ValueError("daemon_day_usd must be > 0 (or None for no daemon limit)")
        self.daemon_day_usd = daemon_day_usd
        self._today = today
        self._day = today()
        self._sessions: dict[str, float] = {}
        self._characters: dict[str, float] = {}
        self._players: dict[tuple[str, str], float] = {}
        self._daemon = 0.0

    @property
    def day(self) -> str:
        """The UTC day the day totals are for (``YYYY-MM-DD``)."""
        self._roll()
        return self._day

    def charge(self, character: str, player: str | None, conversation: str, usd: float) -> None:
        """Add one response's cost to every scope it counts against."""
        if not math.isfinite(usd) or usd < 0:
            raise ValueError(f"a charge must be a finite number >= 0, not {usd!r}")
        self._roll()
        self._sessions[conversation] = self._sessions.get(conversation, 0.0) + usd
        self._add_day(character, player, usd)

    def exceeded(
        self, character: str, player: str | None, conversation: str, budget: Budget
    ) -> Exceeded | None:
        """The first of ``budget``'s limits (then the daemon's) that is used up, else None."""
        self._roll()
        checks: list[tuple[Scope, float | None, float]] = [
            ("session", budget.session_usd, self._sessions.get(conversation, 0.0)),
            (
                "player_day",
                budget.player_day_usd if player is not None else None,
                self._players.get((character, player or ""), 0.0),
            ),
            ("day", budget.day_usd, self._characters.get(character, 0.0)),
            ("daemon_day", self.daemon_day_usd, self._daemon),
        ]
        for scope, limit, spent in checks:
            if limit is not None and spent + _TOLERANCE_USD >= limit:
                return Exceeded(scope, character, limit, spent)
        return None

    def end_conversation(self, conversation: str) -> None:
        """Forget a finished conversation's session total (its day spend stays)."""
        self._sessions.pop(conversation, None)

    def at_least_today(self, usd: float) -> None:
        """The daemon's spend today is at least ``usd`` (what every process sharing the spend
        file has written: the workers behind one proxy share one daily budget)."""
        self._roll()
        self._daemon = max(self._daemon, usd)

    def forget_player(self, player: str) -> None:
        """Privacy: drop the per-player totals of ``player``; the NPCs' and the daemon's totals
        keep the spend, but that player's own day budget starts again."""
        for key in [k for k in self._players if k[1] == player]:
            del self._players[key]

    def spent_today(self, character: str, player: str | None = None) -> float:
        """Today's spend on ``character``: by everyone, or by ``player`` alone."""
        self._roll()
        if player is None:
            return self._characters.get(character, 0.0)
        return self._players.get((character, player), 0.0)

    def spent_session(self, conversation: str) -> float:
        """What ``conversation`` has cost so far."""
        return self._sessions.get(conversation, 0.0)

    def daemon_today(self) -> float:
        """Today's spend on every NPC together."""
        self._roll()
        return self._daemon

    def load(self, day: str, rows: Iterable[tuple[str, str | None, float]]) -> None:
        """Add ``day``'s persisted spend ``(character, player or None, usd)`` to the day totals,
        once at start-up; rows of a day that is not today are ignored."""
        self._roll()
        if day != self._day:
            return
        for character, player, usd in rows:
            if math.isfinite(usd) and usd > 0:
                self._add_day(character, player, usd)

    def _add_day(self, character: str, player: str | None, usd: float) -> None:
        self._characters[character] = self._characters.get(character, 0.0) + usd
        if player is not None:
            key = (character, player)
            self._players[key] = self._players.get(key, 0.0) + usd
        self._daemon += usd

    def _roll(self) -> None:
        today = self._today()
        if today != self._day:
            self._day = today
            self._characters.clear()
            self._players.clear()
            self._daemon = 0.0
