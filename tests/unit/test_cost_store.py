"""The spend store on real SQLite files: totals survive a reopen, bad files turn it off softly."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from npcd.cost.ledger import Ledger
from npcd.cost.store import RETENTION_DAYS, SCHEMA_VERSION, SPEND_DB_NAME, SpendStore

DAY = "2026-12-08"


def permissions(path: Path) -> int:
    return path.stat().st_mode & 0o777


def contents(path: Path) -> bytes:
    """The file's bytes (nothing for a symlink, which is not followed)."""
    return b"" if path.is_symlink() else path.read_bytes()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / SPEND_DB_NAME


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SpendStore]:
    s = await SpendStore.open(db, today=lambda: DAY)
    yield s
    await s.close()


async def test_totals_add_up_and_survive_a_reopen(db: Path, store: SpendStore) -> None:
    assert store.available
    await store.add(DAY, "blacksmith", "ada", 0.25)
    await store.add(DAY, "blacksmith", "ada", 0.5)
    await store.add(DAY, "blacksmith", None, 0.125)
    await store.add(DAY, "herbalist", "ada", 1.0)
    await store.add("2026-12-07", "blacksmith", "ada", 9.0)
    await store.add(DAY, "herbalist", "bob", 0.0)  # nothing spent: no row
    await store.close()

    again = await SpendStore.open(db, today=lambda: DAY)
    try:
        rows = await again.today(DAY)
    finally:
        await again.close()
    assert rows == [
        ("blacksmith", None, 0.125),
        ("blacksmith", "ada", 0.75),
        ("herbalist", "ada", 1.0),
    ]
    ledger = Ledger(today=lambda: DAY)
    ledger.load(DAY, rows)
    assert ledger.spent_today("blacksmith") == pytest.approx(0.875)
    assert permissions(db) == 0o600, "the rows name player ids"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_rows_older_than_the_retention_are_deleted_at_open(db: Path) -> None:
    first = await SpendStore.open(db, today=lambda: "2026-12-01")
    for day in ("2026-11-23", "2026-11-24", "2026-12-01"):
        await first.add(day, "blacksmith", "ada", 1.0)
    await first.close()
    assert RETENTION_DAYS == 7
    second = await SpendStore.open(db, today=lambda: "2026-12-01")
    try:
        assert await second.today("2026-11-23") == []
        assert await second.today("2026-11-24") == [("blacksmith", "ada", 1.0)]
        assert await second.today("2026-12-01") == [("blacksmith", "ada", 1.0)]
    finally:
        await second.close()


def _write_garbage(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not an SQLite database, just some bytes. " * 200)


def _newer(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")


def _foreign(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER)")


def _symlink(db: Path) -> None:
    db.parent.mkdir(parents=True)
    (db.parent / "elsewhere").write_bytes(b"")
    db.symlink_to(db.parent / "elsewhere")


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (_write_garbage, "file is not a database"),
        (_newer, "written by a newer npcd (schema v99"),
        (_foreign, "an SQLite database of another program"),
        (_symlink, "is a symbolic link"),
    ],
)
async def test_an_unusable_file_turns_persistence_off_with_one_error(
    db: Path, caplog: pytest.LogCaptureFixture, spoil: Callable[[Path], None], reason: str
) -> None:
    spoil(db)
    before = contents(db)
    with caplog.at_level(logging.ERROR, logger="npcd.cost.store"):
        store = await SpendStore.open(db, today=lambda: DAY)
        await store.add(DAY, "blacksmith", "ada", 1.0)
        assert await store.today(DAY) == []
        await store.close()
    assert not store.available
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert str(db) in errors[0].getMessage() and reason in errors[0].getMessage()
    assert "not kept across restarts" in errors[0].getMessage()
    if before:
        assert contents(db) == before, "an unusable file is left untouched"


async def test_a_lock_held_elsewhere_loses_one_update_not_the_store(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await SpendStore.open(db, today=lambda: DAY, busy_timeout_s=0)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with caplog.at_level(logging.WARNING, logger="npcd.cost.store"):
            await store.add(DAY, "blacksmith", "ada", 1.0)
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "one update lost" in caplog.records[0].getMessage()
        other.execute("ROLLBACK")
        assert store.available
        await store.add(DAY, "blacksmith", "ada", 2.0)
        assert await store.today(DAY) == [("blacksmith", "ada", 2.0)]
    finally:
        other.close()
        await store.close()


async def test_a_file_that_breaks_later_turns_persistence_off(
    db: Path, store: SpendStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.add(DAY, "blacksmith", "ada", 1.0)
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE spend")
    with caplog.at_level(logging.ERROR, logger="npcd.cost.store"):
        await store.add(DAY, "blacksmith", "ada", 1.0)
        await store.add(DAY, "blacksmith", "ada", 1.0)
    assert not store.available
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert await store.today(DAY) == []


async def test_two_processes_sharing_the_file_share_one_daily_total(db: Path) -> None:
    """`--workers`: each npcd writes its own spend; the daily budget counts everyone's."""
    mine = await SpendStore.open(db, today=lambda: DAY)
    theirs = await SpendStore.open(db, today=lambda: DAY)
    try:
        ledger = Ledger(daemon_day_usd=1.0, today=lambda: DAY)
        ledger.charge("blacksmith", None, "c1", 0.25)
        await mine.add(DAY, "blacksmith", None, 0.25)
        await theirs.add(DAY, "herbalist", "ada", 0.5)
        ledger.at_least_today(await mine.day_total(DAY))
        assert ledger.daemon_today() == pytest.approx(0.75)
        ledger.charge("blacksmith", None, "c1", 0.25)  # counted once, not again at refresh
        await mine.add(DAY, "blacksmith", None, 0.25)
        ledger.at_least_today(await mine.day_total(DAY))
        assert ledger.daemon_today() == pytest.approx(1.0)
    finally:
        await mine.close()
        await theirs.close()
