"""The ledger: each budget scope trips at its limit and not before, per NPC, per UTC day."""

from __future__ import annotations

import re

import pytest

from npcd.cost.ledger import Exceeded, Ledger, utc_today
from npcd.personas.model import Budget


class Clock:
    """An injectable UTC day."""

    def __init__(self, day: str = "2026-12-01") -> None:
        self.day = day

    def __call__(self) -> str:
        return self.day


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_session_trips_at_its_limit_and_not_before(clock: Clock) -> None:
    ledger = Ledger(today=clock)
    budget = Budget(session_usd=1.0)
    for _ in range(9):
        ledger.charge("blacksmith", "ada", "c1", 0.1)
    assert ledger.exceeded("blacksmith", "ada", "c1", budget) is None
    ledger.charge("blacksmith", "ada", "c1", 0.1)  # ten charges of 0.1 sum to 0.99999...
    found = ledger.exceeded("blacksmith", "ada", "c1", budget)
    assert found is not None and (found.scope, found.limit_usd) == ("session", 1.0)
    assert found.spent_usd == pytest.approx(1.0)
    assert ledger.exceeded("blacksmith", "ada", "c2", budget) is None, "a new conversation"


def test_player_day_counts_every_conversation_of_that_player(clock: Clock) -> None:
    ledger = Ledger(today=clock)
    budget = Budget(player_day_usd=0.05)
    ledger.charge("blacksmith", "ada", "c1", 0.03)
    ledger.end_conversation("c1")
    ledger.charge("blacksmith", "ada", "c2", 0.0199)
    assert ledger.exceeded("blacksmith", "ada", "c2", budget) is None
    ledger.charge("blacksmith", "ada", "c2", 0.0001)
    found = ledger.exceeded("blacksmith", "ada", "c3", budget)
    assert found is not None and found.scope == "player_day"
    assert ledger.exceeded("blacksmith", "bob", "c4", budget) is None, "another player"
    assert ledger.exceeded("blacksmith", None, "c5", budget) is None, "no player id"
    assert ledger.exceeded("herbalist", "ada", "c6", budget) is None, "another NPC"


def test_day_counts_every_player_and_no_player(clock: Clock) -> None:
    ledger = Ledger(today=clock)
    budget = Budget(day_usd=0.10)
    ledger.charge("blacksmith", "ada", "c1", 0.04)
    ledger.charge("blacksmith", None, "c2", 0.05)
    assert ledger.exceeded("blacksmith", "bob", "c3", budget) is None
    ledger.charge("blacksmith", "bob", "c3", 0.01)
    found = ledger.exceeded("blacksmith", "carol", "c4", budget)
    assert found is not None and found.scope == "day"
    assert ledger.exceeded("herbalist", "carol", "c4", budget) is None, "another NPC"
    assert ledger.spent_today("blacksmith") == pytest.approx(0.10)
    assert ledger.spent_today("blacksmith", "ada") == pytest.approx(0.04)


def test_daemon_day_counts_every_npc(clock: Clock) -> None:
    ledger = Ledger(daemon_day_usd=1.0, today=clock)
    ledger.charge("blacksmith", "ada", "c1", 0.6)
    assert ledger.exceeded("herbalist", "ada", "c2", Budget()) is None
    ledger.charge("innkeeper", None, "c3", 0.4)
    found = ledger.exceeded("herbalist", "bob", "c4", Budget())
    assert found is not None and (found.scope, found.limit_usd) == ("daemon_day", 1.0)
    assert ledger.daemon_today() == pytest.approx(1.0)


def test_the_first_used_up_scope_is_reported(clock: Clock) -> None:
    ledger = Ledger(daemon_day_usd=0.5, today=clock)
    budget = Budget(session_usd=0.5, player_day_usd=0.5, day_usd=0.5)
    ledger.charge("blacksmith", "ada", "c1", 0.5)
    scopes = []
    for conversation, player in (("c1", "ada"), ("c2", "ada"), ("c2", "bob")):
        found = ledger.exceeded("blacksmith", player, conversation, budget)
        scopes.append(found.scope if found else None)
    found = ledger.exceeded("herbalist", "bob", "c3", budget)
    scopes.append(found.scope if found else None)
    assert scopes == ["session", "player_day", "day", "daemon_day"]


def test_no_budget_never_trips(clock: Clock) -> None:
    ledger = Ledger(today=clock)
    ledger.charge("blacksmith", "ada", "c1", 1000.0)
    assert ledger.exceeded("blacksmith", "ada", "c1", Budget()) is None


def test_day_rollover_resets_day_scopes_but_not_the_session(clock: Clock) -> None:
    ledger = Ledger(daemon_day_usd=1.0, today=clock)
    budget = Budget(session_usd=1.0, player_day_usd=0.5, day_usd=0.5)
    ledger.charge("blacksmith", "ada", "c1", 0.8)
    assert ledger.exceeded("blacksmith", "ada", "c1", budget) is not None
    clock.day = "2026-12-02"
    assert ledger.exceeded("blacksmith", "ada", "c1", budget) is None
    assert (ledger.spent_today("blacksmith"), ledger.daemon_today()) == (0.0, 0.0)
    assert ledger.spent_today("blacksmith", "ada") == 0.0
    assert ledger.spent_session("c1") == pytest.approx(0.8)
    ledger.charge("blacksmith", "ada", "c1", 0.2)
    found = ledger.exceeded("blacksmith", "ada", "c1", budget)
    assert found is not None and found.scope == "session"
    assert ledger.spent_today("blacksmith") == pytest.approx(0.2)
    ledger.end_conversation("c1")
    assert ledger.spent_session("c1") == 0.0


def test_load_seeds_today_and_ignores_other_days(clock: Clock) -> None:
    ledger = Ledger(daemon_day_usd=2.0, today=clock)
    ledger.load("2026-11-30", [("blacksmith", "ada", 5.0)])
    ledger.load("2026-12-01", [("blacksmith", "ada", 0.3), ("blacksmith", None, 0.2)])
    ledger.load("2026-12-01", [("herbalist", "bob", 0.1)])
    assert ledger.spent_today("blacksmith") == pytest.approx(0.5)
    assert ledger.spent_today("blacksmith", "ada") == pytest.approx(0.3)
    assert ledger.daemon_today() == pytest.approx(0.6)
    found = ledger.exceeded("blacksmith", "ada", "new", Budget(player_day_usd=0.3))
    assert found is not None and found.scope == "player_day"
    assert ledger.spent_session("new") == 0.0, "persisted spend is no conversation's"


@pytest.mark.parametrize("usd", [-0.01, float("nan"), float("inf")])
def test_bad_charges_are_refused(clock: Clock, usd: float) -> None:
    ledger = Ledger(today=clock)
    with pytest.raises(ValueError, match="finite number >= 0"):
        ledger.charge("blacksmith", None, "c1", usd)
    assert ledger.daemon_today() == 0.0


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (
            "day",
            "npc 'blacksmith' has used its budget for today: $0.0123 of $0.0100 "
            "(budget.day_usd); it resets at 00:00 UTC",
        ),
        (
            "session",
            "npc 'blacksmith' has used its budget for this conversation: $0.0123 of $0.0100 "
            "(budget.session_usd)",
        ),
        (
            "player_day",
            "npc 'blacksmith' has used its budget for this player today: $0.0123 of $0.0100 "
            "(budget.player_day_usd); it resets at 00:00 UTC",
        ),
        (
            "daemon_day",
            "npcd has used its budget for today, all NPCs together: $0.0123 of $0.0100; "
            "it resets at 00:00 UTC",
        ),
    ],
)
def test_messages(scope: str, expected: str) -> None:
    found = Exceeded(scope, "blacksmith", 0.01, 0.0123)  # type: ignore[arg-type]
    assert found.message == expected


def test_utc_today_is_an_iso_date() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", utc_today())
