"""Daily spend in one SQLite file (``spend.sqlite3`` in the data folder), so a restart does not
reset a day budget.

Like memory (`npcd.memory.keeper`), every SQLite call runs on one worker thread of its own, so
the event loop never blocks and writes happen in the order they were asked for. The store fails
soft: a file that cannot be used (corrupt, read-only, from a newer npcd) turns persistence off
with one clear log line, and budgets go on counting in memory from zero. A write lost to a
lock held too long by another process is only a warning. Never the daemon's failure.

Layout (schema v1, in ``PRAGMA user_version``): ``spend(day, character, player, usd)``, one row
per UTC day, NPC and player id (``''`` for none). Rows older than `RETENTION_DAYS` are deleted
at open, which also bounds how long player ids stay on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from npcd.cost.ledger import utc_today

__all__ = ["RETENTION_DAYS", "SCHEMA_VERSION", "SPEND_DB_NAME", "SpendStore"]

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

#: The database file's name inside the data folder (next to memory's).
SPEND_DB_NAME: Final = "spend.sqlite3"
SCHEMA_VERSION: Final = 1
#: Days of spend kept besides today; older rows are deleted at open.
RETENTION_DAYS: Final = 7
#: How long a write waits for another process's write lock before that write is given up.
BUSY_TIMEOUT_S: Final = 2.0

_SCHEMA: Final = """CREATE TABLE spend (
    day TEXT NOT NULL,
    character TEXT NOT NULL,
    player TEXT NOT NULL,
    usd REAL NOT NULL,
    PRIMARY KEY (day, character, player)
) WITHOUT ROWID"""
_TRANSIENT: Final = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL")
_FIX: Final = (
    "move the file aside (day budgets then start from zero) or set NPCD_DATA_DIR/--data-dir"
)


class _Unusable(Exception):
    """The file is not one this store can use; the message says why."""


class SpendStore:
    """Async, fail-soft access to the spend file; ``available`` is False when it is off."""

    def __init__(self, path: Path) -> None:
        """Use `open`."""
        self.path = path
        self.available = False
        self._conn: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="npcd-spend")

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        today: Callable[[], str] = utc_today,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> SpendStore:
        """Open (creating if needed) the file at ``path`` and drop rows older than
        `RETENTION_DAYS`; when that fails the store is there, but off."""
        store = cls(Path(path))
        try:
            store._conn = await store._call(_connect, store.path, today(), busy_timeout_s)
        except (_Unusable, sqlite3.Error, OSError, ValueError) as exc:
            _LOGGER.error(
                "spend database %s cannot be used (%s); day budgets are not kept across "
                "restarts: %s",
                store.path,
                exc,
                _FIX,
            )
        else:
            store.available = True
        return store

    async def add(self, day: str, character: str, player: str | None, usd: float) -> None:
        """Add ``usd`` to the day's spend of ``character`` by ``player`` (None: no player id)."""
        if not (math.isfinite(usd) and usd > 0):
            return
        await self._soft(_add, None, day, character, player or "", usd)

    async def purge(self, today: str) -> None:
        """Delete rows older than `RETENTION_DAYS` (at open, and when the day rolls over)."""
        await self._soft(_purge, None, today)

    async def forget_player(self, player: str) -> None:
        """Privacy: no row names ``player`` any more; what they spent stays in the NPCs' day
        totals (as spend by nobody in particular), so an NPC's day budget is not reset."""
        await self._soft(_forget_player, None, player)

    async def day_total(self, day: str) -> float:
        """All NPCs' spend on ``day``, by every npcd sharing the file (`--workers`)."""
        return await self._soft(_day_total, 0.0, day)

    async def today(self, day: str) -> list[tuple[str, str | None, float]]:
        """The spend of ``day``: ``(character, player or None, usd)`` rows, to seed a `Ledger`."""
        return await self._soft(_rows, [], day)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        self.available = False
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                await self._call(conn.close)
        self._thread.shutdown(wait=False)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _soft(self, fn: Callable[..., T], fallback: T, *args: Any) -> T:
        conn = self._conn
        if conn is None:
            return fallback
        try:
            return await self._call(fn, conn, *args)
        except sqlite3.Error as exc:
            name = str(getattr(exc, "sqlite_errorname", "") or "")
            if name.startswith(_TRANSIENT):
                _LOGGER.warning("spend database %s: one update lost (%s)", self.path, exc)
                return fallback
            _LOGGER.error(
                "spend database %s failed (%s); day budgets are no longer kept across restarts: %s",
                self.path,
                exc,
                _FIX,
            )
            self._conn = None
            self.available = False
            self._thread.submit(conn.close)
            return fallback


def forget_player_in_file(path: Path, player: str) -> None:
    """`SpendStore.forget_player` for the shell (`npcd memory forget`), with the daemon running
    or not; a missing file has nothing to forget."""
    if not path.exists():
        return
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        _forget_player(conn, player)
    finally:
        conn.close()


# -- on the worker thread ----------------------------------------------------------------------


def _connect(path: Path, today: str, busy_timeout_s: float) -> sqlite3.Connection:
    _prepare_file(path)
    conn = sqlite3.connect(
        path.absolute().as_uri() + "?mode=rw",
        uri=True,
        timeout=busy_timeout_s,
        isolation_level=None,  # autocommit; writes are explicit BEGIN IMMEDIATE
        check_same_thread=False,  # opened and used on the same single worker thread
    )
    try:
        _setup(conn, today)
    except BaseException:
        conn.close()
        raise
    return conn


def _setup(conn: sqlite3.Connection, today: str) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise _Unusable(f"written by a newer npcd (schema v{version}; this one knows v1)")
    if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise _Unusable("an SQLite database of another program")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise _Unusable(f"cannot use write-ahead logging (journal mode stays {mode!r})")
    conn.execute("PRAGMA synchronous = NORMAL")
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise _Unusable(f"the file is corrupt (quick_check: {'; '.join(problems[:3])})")
    # Always a write, so a read-only file fails here at start-up rather than mid-game.
    with _write(conn):
        # Read again under the write lock: another npcd may have created the table meanwhile.
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            conn.execute(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        _delete_old(conn, today)


def _delete_old(conn: sqlite3.Connection, today: str) -> None:
    oldest = (date.fromisoformat(today) - timedelta(days=RETENTION_DAYS)).isoformat()
    conn.execute("DELETE FROM spend WHERE day < ?", (oldest,))


def _purge(conn: sqlite3.Connection, today: str) -> None:
    with _write(conn):
        _delete_old(conn, today)


def _add(conn: sqlite3.Connection, day: str, character: str, player: str, usd: float) -> None:
    with _write(conn):
        conn.execute(
            "INSERT INTO spend (day, character, player, usd) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (day, character, player) DO UPDATE SET usd = usd + excluded.usd",
            (day, character, player, usd),
        )


def _forget_player(conn: sqlite3.Connection, player: str) -> None:
    if not player:
        return
    with _write(conn):
        conn.execute(
            "INSERT INTO spend (day, character, player, usd) "
            "SELECT day, character, '', usd FROM spend WHERE player = ? AND true "
            "ON CONFLICT (day, character, player) DO UPDATE SET usd = usd + excluded.usd",
            (player,),
        )
        conn.execute("DELETE FROM spend WHERE player = ?", (player,))


def _day_total(conn: sqlite3.Connection, day: str) -> float:
    row = conn.execute("SELECT coalesce(sum(usd), 0) FROM spend WHERE day = ?", (day,)).fetchone()
    return float(row[0])


def _rows(conn: sqlite3.Connection, day: str) -> list[tuple[str, str | None, float]]:
    cursor = conn.execute(
        "SELECT character, player, usd FROM spend WHERE day = ? ORDER BY character, player",
        (day,),
    )
    return [(str(c), str(p) or None, float(u)) for c, p, u in cursor]


@contextlib.contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction; the write lock is taken up front so the busy timeout applies."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _prepare_file(path: Path) -> None:
    """Refuse a symlink or a non-file; create the folder (0o700) and the file (0o600), since
    the rows name player ids."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            raise _Unusable("is a symbolic link, which npcd does not follow")
        if not stat.S_ISREG(info.st_mode):
            raise _Unusable("is not a regular file")
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        os.close(os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600))
    except FileExistsError:
        _prepare_file(path)  # created meanwhile (another npcd): check it again
