"""NPC memory in one SQLite file: what was said, per (character, player id, save slot).

Thread confinement: a `MemoryStore` is synchronous and belongs to ONE thread at a time (the
daemon runs it on a single-thread executor, the CLI on its main thread). The connection is
opened with ``check_same_thread=False`` only so that the thread that opens it may differ from
the one that uses it; two threads calling at once get a `RuntimeError`, never a shared
connection. Other *processes* (``npcd memory`` next to a running daemon) are fine: WAL mode
lets them read while one writes, and writers wait up to the busy timeout for each other.

Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL``. A commit is in the OS's page
cache when `append` returns, so a killed process (kill -9, crash) loses nothing it committed;
only power loss or an OS crash can lose the last few commits (never corrupting the file).
That trades an fsync per turn (milliseconds on laptops' disks) for what the brief asks.

Layout (schema v1): ``memory_key`` (one row per character/player/slot), ``conversation``
(one per `begin`), ``turn`` (one per line, action, result or event). Turns carry their key as
well as their conversation so that recall is one index range ``(key, at, id)`` however many
conversations there are. Nothing here formats prompts; see `npcd.memory.recall`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sqlite3
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, cast

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_TURNS",
    "MAX_TURN_CHARS",
    "ROLES",
    "Entry",
    "MemoryKey",
    "MemoryStore",
    "MemoryStoreError",
    "Recall",
    "Role",
    "SlotInfo",
    "Turn",
    "check_character",
    "check_player",
    "check_slot",
]

_LOGGER = logging.getLogger(__name__)

Role = Literal["player", "npc", "action", "result", "event"]
ROLES: Final[tuple[Role, ...]] = ("player", "npc", "action", "result", "event")

#: A turn's text is cut to this many characters (with an ellipsis) when stored.
MAX_TURN_CHARS: Final = 4000
#: The largest import document the CLI reads (the RPC is bound by gRPC's message limit).
MAX_IMPORT_BYTES: Final = 64 * 1024 * 1024
#: The most turns (and conversations) one import document may hold.
MAX_IMPORT_TURNS: Final = 100_000
EXPORT_FORMAT: Final = "npcd-memory"
EXPORT_VERSION: Final = 1
#: How long a write waits for another process's write lock before giving up.
BUSY_TIMEOUT_S: Final = 2.0
#: ``PRAGMA application_id``: marks the file as npcd's ("npcd" in ASCII).
APPLICATION_ID: Final = 0x6E706364

MAX_CHARACTER_CHARS: Final = 128
MAX_PLAYER_CHARS: Final = 128
MAX_SLOT_CHARS: Final = 64

_ELLIPSIS = "…"


def _check_label(field_name: str, value: object, limit: int, *, empty_ok: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field_name}: must be a string")
    if (not value and not empty_ok) or len(value) > limit or not value.isprintable():
        least = 0 if empty_ok else 1
        raise ValueError(f"{field_name}: must be {least} to {limit} printable characters")
    return value


def check_player(player: object, field_name: str = "player") -> str:
    """``player`` if it is a valid player id (1-128 printable characters), else ValueError."""
    return _check_label(field_name, player, MAX_PLAYER_CHARS, empty_ok=False)


def check_slot(slot: object, field_name: str = "slot") -> str:
    """``slot`` if it is a valid save slot (0-64 printable characters), else ValueError."""
    return _check_label(field_name, slot, MAX_SLOT_CHARS, empty_ok=True)


def check_character(character: object, field_name: str = "character") -> str:
    """``character`` if it is a valid NPC id (1-128 printable characters), else ValueError."""
    return _check_label(field_name, character, MAX_CHARACTER_CHARS, empty_ok=False)


@dataclass(frozen=True, slots=True)
class MemoryKey:
    """Whose memory: one NPC's, of one player, in one save slot (``""`` = the default slot).

    Checked on construction (ValueError): character and player 1-128 printable characters,
    slot 0-64, the limits the gRPC API puts on them.
    """

    character: str
    player: str
    slot: str

    def __post_init__(self) -> None:
        check_character(self.character)
        check_player(self.player)
        check_slot(self.slot)


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing to remember: a line (``player``/``npc``), an ``action``, its ``result``, an
    ``event`` the game reported."""

    role: Role
    text: str


@dataclass(frozen=True, slots=True)
class Turn:
    """A remembered entry: when (Unix seconds) and in which conversation (row id)."""

    role: Role
    text: str
    at: float
    conversation: int


@dataclass(frozen=True, slots=True)
class Recall:
    """What an NPC remembers at the start of a conversation, within a character budget.

    ``turns`` are the most recent ones, in order; ``summary`` condenses the older ones;
    ``conversations`` is how many conversations (with at least one turn) the key has.
    """

    summary: str
    turns: tuple[Turn, ...]
    conversations: int


@dataclass(frozen=True, slots=True)
class SummaryWork:
    """Turns that fell out of the recent window since the last written summary: what a model
    backend is asked to fold into ``previous``."""

    previous: str
    turns: tuple[Turn, ...]
    upto_at: float
    upto_id: int


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """One key's memory at a glance (``npcd memory list``, ListMemories)."""

    character: str
    player: str
    slot: str
    conversations: int
    turns: int
    last_at: float


class MemoryStoreError(Exception):
    """The database cannot be used; the message names the file, the problem and the fix.

    ``kind`` is one of: ``symlink``, ``not-a-file``, ``cannot-open``, ``not-a-database``,
    ``not-npcd``, ``corrupt``, ``locked``, ``read-only``, ``newer-schema``, ``disk-full``,
    ``io``, ``error``.
    """

    def __init__(self, path: Path, kind: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.kind = kind
        self.message = message


def _error(path: Path, kind: str, problem: str, fix: str) -> MemoryStoreError:
    return MemoryStoreError(path, kind, f"memory database {path}: {problem}; {fix}")


_ASIDE = "move it aside (npcd then starts with empty memory) or set NPCD_DATA_DIR/--data-dir"


def _translate(exc: sqlite3.Error, path: Path) -> MemoryStoreError:
    """An SQLite error as what is wrong with which file and what to do about it."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    detail = str(exc)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return _error(
            path,
            "locked",
            f"locked by another process for more than its busy timeout ({detail})",
            "is another program holding it open in a long transaction (an sqlite3 shell, a "
            "backup tool)? Close it and try again",
        )
    if name.startswith("SQLITE_READONLY") or name in ("SQLITE_PERM", "SQLITE_AUTH"):
        return _error(
            path,
            "read-only",
            f"cannot be written ({detail})",
            "npcd needs write access to the file and to its folder (for the -wal and -shm "
            "files next to it): fix the permissions (or the immutable flag, or a read-only "
            "mount), or set NPCD_DATA_DIR/--data-dir to a writable folder",
        )
    if name == "SQLITE_NOTADB":
        return _error(
            path,
            "not-a-database",
            f"not an SQLite database ({detail}; overwritten or not npcd's)",
            _ASIDE,
        )
    if name.startswith("SQLITE_CORRUPT"):
        return _error(
            path,
            "corrupt",
            f"the file is corrupt ({detail})",
            f"{_ASIDE}; `sqlite3 FILE .recover` may salvage what is left, and an "
            "`npcd memory export` made earlier can be imported",
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return _error(
            path,
            "cannot-open",
            f"cannot be opened ({detail})",
            "check that the file and its folder exist and are readable and writable by this "
            "user (SQLite creates -wal and -shm files next to it)",
        )
    if name == "SQLITE_FULL":
        return _error(path, "disk-full", "the disk is full", "free some space")
    if name.startswith("SQLITE_IOERR"):
        return _error(path, "io", f"I/O error ({detail})", "check the disk and the file system")
    return _error(path, "error", f"SQLite error {name or type(exc).__name__}: {detail}", _ASIDE)


# -- schema ------------------------------------------------------------------------------------

#: Migration steps: ``_MIGRATIONS[n]`` takes a file from ``user_version`` n to n + 1, in one
#: transaction. Append steps; never edit a released one.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE memory_key (
            id INTEGER PRIMARY KEY,
            character TEXT NOT NULL,
            player TEXT NOT NULL,
            slot TEXT NOT NULL,
            UNIQUE (player, slot, character)
        )""",
        """CREATE TABLE conversation (
            id INTEGER PRIMARY KEY,
            key INTEGER NOT NULL REFERENCES memory_key (id) ON DELETE CASCADE,
            started_at REAL NOT NULL
        )""",
        "CREATE INDEX conversation_key ON conversation (key, started_at)",
        """CREATE TABLE turn (
            id INTEGER PRIMARY KEY,
            conversation INTEGER NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
            key INTEGER NOT NULL REFERENCES memory_key (id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('player', 'npc', 'action', 'result', 'event')),
            text TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        # Recall, show, export: a key's turns in time order. Cascades use turn_conversation.
        "CREATE INDEX turn_key_time ON turn (key, at, id)",
        "CREATE INDEX turn_conversation ON turn (conversation)",
    ),
    (
        # v2: a summary a model backend wrote of a key's turns up to (upto_at, upto_id).
        """CREATE TABLE summary (
            key INTEGER PRIMARY KEY REFERENCES memory_key (id) ON DELETE CASCADE,
            text TEXT NOT NULL,
            upto_at REAL NOT NULL,
            upto_id INTEGER NOT NULL,
            written_at REAL NOT NULL
        )""",
    ),
)


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the cut marked with an ellipsis."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return text[: limit - 1] + _ELLIPSIS


def _check_number(field_name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{field_name}: must be a finite number (Unix seconds)")
    return float(value)


def _prepare_file(path: Path) -> None:
    """Refuse a symlink or a non-file; create the folder (0o700) and the file (0o600).

    Player conversations are private: nobody else on the machine should read them, and a
    symlink planted at the path must not redirect npcd's writes.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise _error(path, "cannot-open", f"cannot be inspected ({exc})", _ASIDE) from exc
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            raise _error(
                path,
                "symlink",
                "is a symbolic link, which npcd does not follow",
                "point NPCD_DATA_DIR/--data-dir at the folder that holds the real file",
            )
        if not stat.S_ISREG(info.st_mode):
            raise _error(path, "not-a-file", "is not a regular file", _ASIDE)
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        os.close(os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600))
    except FileExistsError:
        return _prepare_file(path)  # created meanwhile (another npcd): check it again
    except OSError as exc:
        raise _error(
            path,
            "read-only" if isinstance(exc, PermissionError) else "cannot-open",
            f"cannot be created ({exc.strerror or exc})",
            "set NPCD_DATA_DIR/--data-dir to a folder this user can write",
        ) from exc


# -- summary -----------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s")
#: The longest one older turn becomes in the summary.
_GIST_CHARS = 160
#: A first clause shorter than this is not worth clipping into a tiny summary.
_MIN_CLIPPED_CLAUSE = 24


def _gist(text: str) -> str:
    """The first sentence of ``text`` on one line, at most ``_GIST_CHARS``."""
    flat = " ".join(text.split())
    end = _SENTENCE_END.search(flat)
    if end is not None:
        flat = flat[: end.start()].rstrip()
    return _clip(flat, _GIST_CHARS)


def _clause(role: str, text: str) -> str:
    gist = _gist(text)
    if role == "player":
        return f'they said "{gist}"'
    if role == "npc":
        return f'you said "{gist}"'
    if role == "action":
        return f"you did {gist}"
    if role == "result":
        return f"result: {gist}"
    return f"event: {gist}"


def _clauses(rows: Iterator[tuple[str, str, int]]) -> Iterator[tuple[str, int]]:
    """Clauses for turns given newest first, newest first; an action absorbs its results."""
    results: list[str] = []  # results (newest first) waiting for the action before them
    results_conversation = 0
    for role, text, conversation in rows:
        if role == "result" and (not results or conversation == results_conversation):
            results.append(_gist(text))
            results_conversation = conversation
            continue
        if results:
            if role == "action" and conversation == results_conversation:
                yield f"you did {_gist(text)} → {', '.join(reversed(results))}", conversation
                results = []
                continue
            for result in results:
                yield f"result: {result}", results_conversation
            results = []
            if role == "result":
                results, results_conversation = [_gist(text)], conversation
                continue
        yield _clause(role, text), conversation
    for result in results:
        yield f"result: {result}", results_conversation


def _summarize(rows: Iterator[tuple[str, str, int]], cap: int) -> str:
    """A deterministic extractive summary of turns given newest first, in ``cap`` characters.

    Newest clauses are kept first (a repeated clause only once, its newest time) until the next
    would not fit; then they are put back in time order, "; " within a conversation and " | "
    between two. Separators are counted at their longest, so the result never exceeds ``cap``.
    """
    picked: list[tuple[str, int]] = []
    seen: set[str] = set()
    used = 0
    for clause, conversation in _clauses(rows):
        folded = clause.casefold()
        if folded in seen:
            continue
        cost = len(clause) + (3 if picked else 0)
        if used + cost > cap:
            if not picked and cap >= _MIN_CLIPPED_CLAUSE:
                picked.append((_clip(clause, cap), conversation))
            break
        seen.add(folded)
        picked.append((clause, conversation))
        used += cost
    picked.reverse()
    parts: list[str] = []
    for i, (clause, conversation) in enumerate(picked):
        if i:
            parts.append("; " if conversation == picked[i - 1][1] else " | ")
        parts.append(clause)
    return "".join(parts)


# -- import validation -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Imported:
    key: MemoryKey
    started_at: float
    turns: tuple[tuple[Role, str, float], ...]


def _fields(where: str, value: object, required: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: must be an object")
    names = set(value)
    prefix = f"{where}." if where else ""
    if missing := sorted(required - names):
        raise ValueError(f"{prefix}{missing[0]}: required")
    if extra := sorted(str(n) for n in names - required):
        raise ValueError(f"{prefix}{extra[0]}: unknown field")
    return cast(Mapping[str, Any], value)


def _list(where: str, value: object) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where}: must be an array")
    return value


def _text(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a string")
    if len(value) > MAX_TURN_CHARS:
        raise ValueError(f"{where}: longer than {MAX_TURN_CHARS} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: not valid Unicode (a lone surrogate)") from None
    return value


def _parse_document(data: object) -> list[_Imported]:
    """The conversations of an export document, or ValueError naming the first bad field."""
    doc = _fields("", data, {"format", "version", "conversations"})
    if doc["format"] != EXPORT_FORMAT:
        raise ValueError(f'format: must be "{EXPORT_FORMAT}"')
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError("version: must be an integer")
    if version != EXPORT_VERSION:
        newer = " (written by a newer npcd: upgrade this one)" if version > EXPORT_VERSION else ""
        raise ValueError(f"version: {version} is not one this npcd reads ({EXPORT_VERSION}){newer}")
    conversations = _list("conversations", doc["conversations"])
    if len(conversations) > MAX_IMPORT_TURNS:
        raise ValueError(f"conversations: more than {MAX_IMPORT_TURNS}")
    parsed: list[_Imported] = []
    total = 0
    for i, raw in enumerate(conversations):
        where = f"conversations[{i}]"
        conv = _fields(where, raw, {"key", "started_at", "turns"})
        key_fields = _fields(f"{where}.key", conv["key"], {"character", "player", "slot"})
        key = MemoryKey(
            check_character(key_fields["character"], f"{where}.key.character"),
            check_player(key_fields["player"], f"{where}.key.player"),
            check_slot(key_fields["slot"], f"{where}.key.slot"),
        )
        started_at = _check_number(f"{where}.started_at", conv["started_at"])
        raw_turns = _list(f"{where}.turns", conv["turns"])
        total += len(raw_turns)
        if total > MAX_IMPORT_TURNS:
            raise ValueError(f"{where}.turns: the document has more than {MAX_IMPORT_TURNS} turns")
        turns: list[tuple[Role, str, float]] = []
        for j, raw_turn in enumerate(raw_turns):
            at = f"{where}.turns[{j}]"
            turn = _fields(at, raw_turn, {"role", "text", "at"})
            role = turn["role"]
            if role not in ROLES:
                raise ValueError(f"{at}.role: must be one of {', '.join(ROLES)} (got {role!r:.40})")
            turns.append(
                (
                    cast(Role, role),
                    _text(f"{at}.text", turn["text"]),
                    _check_number(f"{at}.at", turn["at"]),
                )
            )
        parsed.append(_Imported(key, started_at, tuple(turns)))
    return parsed


# -- the store ---------------------------------------------------------------------------------


class MemoryStore:
    """One memory database, used from one thread at a time (see the module docstring)."""

    SCHEMA_VERSION: ClassVar[int] = len(_MIGRATIONS)

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        """Use `open`; this only wraps an already configured connection."""
        self.path = path
        self._conn: sqlite3.Connection | None = connection
        self._lock = threading.Lock()

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> MemoryStore:
        """Open (creating if needed) and migrate the database at ``path``; MemoryStoreError if
        it cannot be used (the message says why and what to do)."""
        path = Path(path).absolute()
        _prepare_file(path)
        try:
            # mode=rw: the file exists (made above, 0o600); SQLite must not create another.
            conn = sqlite3.connect(
                path.as_uri() + "?mode=rw",
                uri=True,
                timeout=busy_timeout_s,
                isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise _translate(exc, path) from exc
        store = cls(conn, path)
        try:
            store._setup(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise _translate(exc, path) from exc
        except BaseException:
            conn.close()
            raise
        return store

    def _setup(self, conn: sqlite3.Connection) -> None:
        path = self.path
        # The first read of the file: "not a database" and a foreign lock show up here.
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if application_id not in (0, APPLICATION_ID):
            problem = f"an SQLite database of another program (application_id {application_id:#x})"
            raise _error(path, "not-npcd", problem, _ASIDE)
        if version > self.SCHEMA_VERSION:
            raise self._newer_schema(version)
        if version == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise _error(path, "not-npcd", "an SQLite database of another program", _ASIDE)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise _error(
                path,
                "cannot-open",
                f"cannot use write-ahead logging (journal mode stays {mode!r})",
                "keep the file on a local file system (not a network share)",
            )
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Deleted text is overwritten with zeros, so forgetting a player really removes it.
        conn.execute("PRAGMA secure_delete = ON")
        # The small tables only: 3 ms with 10,000 conversations, where the whole file takes
        # 140 ms (bench/memory.py) and grows with it. A damaged turn page shows up when read,
        # as a MemoryStoreError of kind "corrupt".
        problems = [
            str(row[0])
            for table in ("memory_key", "conversation")
            if self._has_table(conn, table)
            for row in conn.execute(f"PRAGMA quick_check({table})")
        ]
        if any(problem != "ok" for problem in problems):
            raise _error(
                path,
                "corrupt",
                f"the file is corrupt (quick_check: {'; '.join(problems[:3])})",
                f"{_ASIDE}; `sqlite3 FILE .recover` may salvage what is left",
            )
        self._migrate(conn)

    def _newer_schema(self, version: int) -> MemoryStoreError:
        return _error(
            self.path,
            "newer-schema",
            f"written by a newer npcd (schema v{version}; this npcd knows up to "
            f"v{self.SCHEMA_VERSION}), left untouched",
            "upgrade npcd, or set NPCD_DATA_DIR/--data-dir to another folder",
        )

    @staticmethod
    def _has_table(conn: sqlite3.Connection, name: str) -> bool:
        return bool(
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).fetchone()
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Run the missing migration steps; with none missing, prove the file is writable."""
        while True:
            with self._write(conn):
                # Read again under the write lock: another npcd may have migrated meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > self.SCHEMA_VERSION:
                    raise self._newer_schema(version)
                if version == self.SCHEMA_VERSION:
                    # A real write (the header), so read-only files fail here, not mid-game.
                    conn.execute(f"PRAGMA user_version = {version:d}")
                    return
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1:d}")
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
                _LOGGER.info("memory database %s: schema v%d", self.path, version + 1)

    # -- plumbing --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _use(self) -> Iterator[sqlite3.Connection]:
        """The connection for one call: one thread at a time, SQLite errors explained."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("MemoryStore used from two threads at once (it is thread-confined)")
        try:
            conn = self._conn
            if conn is None:
                raise RuntimeError("MemoryStore is closed")
            try:
                yield conn
            except sqlite3.ProgrammingError:
                raise
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc
        finally:
            self._lock.release()

    @staticmethod
    @contextlib.contextmanager
    def _write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed on success; the write lock is taken up front so
        the busy timeout applies to it (never a deadlock upgrading a read)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _key_id(conn: sqlite3.Connection, key: MemoryKey) -> int | None:
        row = conn.execute(
            "SELECT id FROM memory_key WHERE player = ? AND slot = ? AND character = ?",
            (key.player, key.slot, key.character),
        ).fetchone()
        return None if row is None else int(row[0])

    @classmethod
    def _ensure_key(cls, conn: sqlite3.Connection, key: MemoryKey) -> int:
        key_id = cls._key_id(conn, key)
        if key_id is not None:
            return key_id
        cursor = conn.execute(
            "INSERT INTO memory_key (character, player, slot) VALUES (?, ?, ?)",
            (key.character, key.player, key.slot),
        )
        return int(cast(int, cursor.lastrowid))

    @staticmethod
    def _where(player: str, slot: str | None, character: str | None) -> tuple[str, list[str]]:
        """A filter on ``memory_key k`` (with its parameters), the arguments checked."""
        clauses, params = ["k.player = ?"], [check_player(player)]
        if slot is not None:
            clauses.append("k.slot = ?")
            params.append(check_slot(slot))
        if character is not None:
            clauses.append("k.character = ?")
            params.append(check_character(character))
        return " AND ".join(clauses), params

    @staticmethod
    def _count_conversations(conn: sqlite3.Connection, where: str, params: Sequence[object]) -> int:
        """Conversations (with at least one turn) of the keys matching ``where``."""
        row = conn.execute(
            "SELECT count(*) FROM conversation c WHERE c.key IN "  # noqa: S608 (fixed clauses)
            f"(SELECT id FROM memory_key k WHERE {where}) "
            "AND EXISTS (SELECT 1 FROM turn t WHERE t.conversation = c.id)",
            params,
        ).fetchone()
        return int(row[0])

    def _scrub(self, conn: sqlite3.Connection) -> None:
        """Checkpoint and truncate the WAL, so older copies of deleted pages leave the disk.

        secure_delete zeroes deleted text in the new page versions; the old versions live on in
        the main file until a checkpoint and in WAL frames until it is truncated.
        """
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            _LOGGER.warning(
                "memory database %s: another process is reading it; deleted memory is zeroed in "
                "the database but older copies stay in its -wal file until the next checkpoint",
                self.path,
            )

    # -- conversations ---------------------------------------------------------------------------

    def begin(self, key: MemoryKey, now: float) -> int:
        """Start a conversation for ``key``; its id is what `append` takes."""
        with self._use() as conn, self._write(conn):
            key_id = self._ensure_key(conn, key)
            cursor = conn.execute(
                "INSERT INTO conversation (key, started_at) VALUES (?, ?)", (key_id, float(now))
            )
            return int(cast(int, cursor.lastrowid))

    def append(
        self, conversation: int, key: MemoryKey, entries: Sequence[Entry], now: float
    ) -> list[int]:
        """Remember ``entries`` (one transaction, committed before this returns); their row ids.

        A conversation deleted meanwhile (``npcd memory forget``, DeleteSaveSlot) stays deleted:
        nothing is written and the result is ``[]``. A conversation of another key is a bug
        (ValueError).
        """
        for entry in entries:
            if entry.role not in ROLES:
                raise ValueError(f"role: must be one of {', '.join(ROLES)} (got {entry.role!r})")
            if not isinstance(entry.text, str):
                raise ValueError("text: must be a string")
        with self._use() as conn, self._write(conn):
            row = conn.execute(
                "SELECT k.character, k.player, k.slot, k.id FROM conversation c "
                "JOIN memory_key k ON k.id = c.key WHERE c.id = ?",
                (conversation,),
            ).fetchone()
            if row is None:
                _LOGGER.info("memory: conversation %d was deleted; not remembering", conversation)
                return []
            if (row[0], row[1], row[2]) != (key.character, key.player, key.slot):
                raise ValueError(f"conversation {conversation} is not one of {key}")
            ids: list[int] = []
            for entry in entries:
                cursor = conn.execute(
                    "INSERT INTO turn (conversation, key, role, text, at) VALUES (?, ?, ?, ?, ?)",
                    (conversation, row[3], entry.role, _clip(entry.text, MAX_TURN_CHARS), now),
                )
                ids.append(int(cast(int, cursor.lastrowid)))
            return ids

    def revise(self, turn_id: int, text: str) -> None:
        """Replace a turn's text (a late transcript; an NPC line the player heard only part of).

        The old text is zeroed on disk (secure_delete). A turn deleted meanwhile stays deleted.
        """
        if not isinstance(text, str):
            raise ValueError("text: must be a string")
        with self._use() as conn, self._write(conn):
            conn.execute(
                "UPDATE turn SET text = ? WHERE id = ?", (_clip(text, MAX_TURN_CHARS), turn_id)
            )

    def recall(self, key: MemoryKey, budget_chars: int, recent_turns: int) -> Recall:
        """What ``key``'s NPC remembers, in at most ``budget_chars`` characters of text.

        Up to ``recent_turns`` of the latest turns, verbatim, newest kept first; when they are
        not the whole history, at most two thirds of the budget goes to them and the rest (at
        least a third) to a summary of everything older. ``len(summary) + sum(len(turn.text))
        <= budget_chars`` always (the note's labels come on top; see `npcd.memory.recall`).
        """
        if budget_chars < 0 or recent_turns < 0:
            raise ValueError("budget_chars and recent_turns must not be negative")
        with self._use() as conn:
            key_id = self._key_id(conn, key)
            if key_id is None:
                return Recall("", (), 0)
            conversations = self._count_conversations(conn, "k.id = ?", [key_id])
            if budget_chars == 0 or conversations == 0:
                return Recall("", (), conversations)
            newest = conn.execute(
                "SELECT role, text, at, conversation, id FROM turn WHERE key = ? "
                "ORDER BY at DESC, id DESC LIMIT ?",
                (key_id, recent_turns + 1),
            ).fetchall()
            if len(newest) <= recent_turns and sum(len(r[1]) for r in newest) <= budget_chars:
                turns = tuple(Turn(r[0], r[1], r[2], r[3]) for r in reversed(newest))
                return Recall("", turns, conversations)
            room = budget_chars - budget_chars // 3
            taken: list[tuple[Any, ...]] = []
            for row in newest[:recent_turns]:
                if len(row[1]) > room:
                    break
                room -= len(row[1])
                taken.append(row)
            used = sum(len(r[1]) for r in taken)
            written = conn.execute(
                "SELECT text, upto_at, upto_id FROM summary WHERE key = ?", (key_id,)
            ).fetchone()
            since = (written[1], written[2]) if written else (-math.inf, -1)
            if taken:
                oldest = taken[-1]
                older = conn.execute(
                    "SELECT role, text, conversation FROM turn WHERE key = ? "
                    "AND (at, id) < (?, ?) AND (at, id) > (?, ?) ORDER BY at DESC, id DESC",
                    (key_id, oldest[2], oldest[4], *since),
                )
            else:
                older = conn.execute(
                    "SELECT role, text, conversation FROM turn WHERE key = ? "
                    "AND (at, id) > (?, ?) ORDER BY at DESC, id DESC",
                    (key_id, *since),
                )
            room = budget_chars - used
            if written:
                # The model's summary of the oldest turns, then the gist of any after it.
                head = _clip(written[0], room)
                rest = _summarize(iter(older), max(0, room - len(head) - 2))
                summary = f"{head}; {rest}" if rest else head
            else:
                summary = _summarize(iter(older), room)
            older.close()
            turns = tuple(Turn(r[0], r[1], r[2], r[3]) for r in reversed(taken))
            return Recall(summary, turns, conversations)

    # -- save slots ------------------------------------------------------------------------------

    def has_turns(self, key: MemoryKey) -> bool:
        """Whether anything of ``key`` is remembered (a cheap check, by index)."""
        with self._use() as conn:
            key_id = self._key_id(conn, key)
            if key_id is None:
                return False
            row = conn.execute("SELECT 1 FROM turn WHERE key = ? LIMIT 1", (key_id,)).fetchone()
            return row is not None

    def summary_work(self, key: MemoryKey, recent_turns: int, min_turns: int) -> SummaryWork | None:
        """The turns older than the latest ``recent_turns`` not yet in a written summary, if
        there are at least ``min_turns`` of them (at most 400, oldest first)."""
        with self._use() as conn:
            key_id = self._key_id(conn, key)
            if key_id is None:
                return None
            boundary = conn.execute(
                "SELECT at, id FROM turn WHERE key = ? ORDER BY at DESC, id DESC LIMIT 1 OFFSET ?",
                (key_id, recent_turns),
            ).fetchone()
            if boundary is None:
                return None
            written = conn.execute(
                "SELECT text, upto_at, upto_id FROM summary WHERE key = ?", (key_id,)
            ).fetchone()
            since = (written[1], written[2]) if written else (-math.inf, -1)
            rows = conn.execute(
                "SELECT role, text, at, conversation, id FROM turn WHERE key = ? "
                "AND (at, id) > (?, ?) AND (at, id) <= (?, ?) AND text != '' "
                "ORDER BY at, id LIMIT 400",
                (key_id, *since, boundary[0], boundary[1]),
            ).fetchall()
        if len(rows) < min_turns:
            return None
        turns = tuple(Turn(r[0], r[1], r[2], r[3]) for r in rows)
        return SummaryWork(written[0] if written else "", turns, rows[-1][2], rows[-1][4])

    def save_summary(self, key: MemoryKey, work: SummaryWork, text: str, now: float) -> None:
        """Keep ``text``, a model's summary of everything up to ``work``'s last turn."""
        with self._use() as conn, self._write(conn):
            key_id = self._key_id(conn, key)
            if key_id is None:
                return  # forgotten meanwhile
            conn.execute(
                "INSERT INTO summary (key, text, upto_at, upto_id, written_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET text = excluded.text, "
                "upto_at = excluded.upto_at, upto_id = excluded.upto_id, "
                "written_at = excluded.written_at",
                (key_id, _clip(text, MAX_TURN_CHARS), work.upto_at, work.upto_id, now),
            )

    def slots(self, player: str | None = None, character: str | None = None) -> list[SlotInfo]:
        """Every key with memory (optionally of one player, one NPC), by player, slot, NPC."""
        clauses: list[str] = []
        params: list[str] = []
        if player is not None:
            clauses.append("k.player = ?")
            params.append(check_player(player))
        if character is not None:
            clauses.append("k.character = ?")
            params.append(check_character(character))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._use() as conn:
            rows = conn.execute(
                "SELECT k.character, k.player, k.slot, "  # noqa: S608 (fixed clauses)
                "(SELECT count(*) FROM conversation c WHERE c.key = k.id AND EXISTS "
                "(SELECT 1 FROM turn t WHERE t.conversation = c.id)), "
                "(SELECT count(*) FROM turn t WHERE t.key = k.id), "
                "(SELECT max(at) FROM turn t WHERE t.key = k.id) "
                f"FROM memory_key k {where} ORDER BY k.player, k.slot, k.character",
                params,
            ).fetchall()
        return [SlotInfo(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows if r[4]]

    def turns(self, key: MemoryKey, limit: int | None = None) -> list[Turn]:
        """``key``'s turns in time order (only the latest ``limit`` when given)."""
        with self._use() as conn:
            key_id = self._key_id(conn, key)
            if key_id is None:
                return []
            if limit is None:
                rows = conn.execute(
                    "SELECT role, text, at, conversation FROM turn WHERE key = ? ORDER BY at, id",
                    (key_id,),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT role, text, at, conversation FROM turn WHERE key = ? "
                    "ORDER BY at DESC, id DESC LIMIT ?",
                    (key_id, max(0, limit)),
                ).fetchall()
                rows.reverse()
        return [Turn(r[0], r[1], r[2], r[3]) for r in rows]

    def export(self, player: str, slot: str | None = None) -> dict[str, Any]:
        """A player's memory (every slot, or one) as a JSON-able document for `import_`."""
        where, params = self._where(player, slot, None)
        conversations: list[dict[str, Any]] = []
        with self._use() as conn:
            rows = conn.execute(
                "SELECT k.character, k.player, k.slot, c.id, c.started_at, t.role, t.text, t.at "  # noqa: S608
                "FROM memory_key k JOIN conversation c ON c.key = k.id "
                "JOIN turn t ON t.conversation = c.id "
                f"WHERE {where} "
                "ORDER BY k.slot, k.character, c.started_at, c.id, t.at, t.id",
                params,
            )
            current = -1
            for character, player_id, slot_id, conv_id, started_at, role, text, at in rows:
                if conv_id != current:
                    current = conv_id
                    conversations.append(
                        {
                            "key": {"character": character, "player": player_id, "slot": slot_id},
                            "started_at": started_at,
                            "turns": [],
                        }
                    )
                conversations[-1]["turns"].append({"role": role, "text": text, "at": at})
        return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "conversations": conversations}

    def import_(self, data: Mapping[str, Any], *, replace: bool = False) -> int:
        """Add an `export` document's conversations; how many were added.

        The whole document is checked first (ValueError naming the field, e.g.
        ``conversations[2].turns[0].role``) and imported in one transaction. A conversation the
        key already has (same start time) is skipped, so importing a file twice adds nothing;
        ``replace`` first deletes all memory of the keys the document has.
        """
        parsed = _parse_document(data)
        imported = 0
        with self._use() as conn, self._write(conn):
            if replace:
                for key in dict.fromkeys(c.key for c in parsed):
                    conn.execute(
                        "DELETE FROM memory_key WHERE player = ? AND slot = ? AND character = ?",
                        (key.player, key.slot, key.character),
                    )
            for conv in parsed:
                if not conv.turns:
                    continue
                key_id = self._ensure_key(conn, conv.key)
                if conn.execute(
                    "SELECT 1 FROM conversation WHERE key = ? AND started_at = ?",
                    (key_id, conv.started_at),
                ).fetchone():
                    continue
                cursor = conn.execute(
                    "INSERT INTO conversation (key, started_at) VALUES (?, ?)",
                    (key_id, conv.started_at),
                )
                conv_id = int(cast(int, cursor.lastrowid))
                conn.executemany(
                    "INSERT INTO turn (conversation, key, role, text, at) VALUES (?, ?, ?, ?, ?)",
                    [(conv_id, key_id, role, text, at) for role, text, at in conv.turns],
                )
                imported += 1
        return imported

    def copy_slot(self, player: str, source: str, target: str, character: str | None = None) -> int:
        """Save-as: copy a slot's memory (every NPC's, or one's) to ``target``; how many
        conversations. ValueError if ``target`` already has memory of those NPCs."""
        source_where, source_params = self._where(player, source, character)
        target_where, target_params = self._where(player, target, character)
        if source == target:
            raise ValueError("from and to are the same slot")
        copied = 0
        with self._use() as conn, self._write(conn):
            existing = self._count_conversations(conn, target_where, target_params)
            if existing:
                raise ValueError(
                    f"slot {target!r} of player {player!r} already has memory ({existing} "
                    "conversation(s)); delete it first"
                )
            keys = conn.execute(
                f"SELECT id, character FROM memory_key k WHERE {source_where} "  # noqa: S608
                "ORDER BY character",
                source_params,
            ).fetchall()
            for source_key, npc in keys:
                target_key = self._ensure_key(conn, MemoryKey(npc, player, target))
                conversations = conn.execute(
                    "SELECT id, started_at FROM conversation c WHERE key = ? AND EXISTS "
                    "(SELECT 1 FROM turn t WHERE t.conversation = c.id) ORDER BY started_at, id",
                    (source_key,),
                ).fetchall()
                for conv_id, started_at in conversations:
                    cursor = conn.execute(
                        "INSERT INTO conversation (key, started_at) VALUES (?, ?)",
                        (target_key, started_at),
                    )
                    conn.execute(
                        "INSERT INTO turn (conversation, key, role, text, at) "
                        "SELECT ?, ?, role, text, at FROM turn WHERE conversation = ? "
                        "ORDER BY at, id",
                        (cursor.lastrowid, target_key, conv_id),
                    )
                    copied += 1
        return copied

    def delete_slot(self, player: str, slot: str, character: str | None = None) -> int:
        """Forget one slot of a player (every NPC, or one); how many conversations."""
        where, params = self._where(player, slot, character)
        return self._delete(where, params)

    def forget_player(self, player: str) -> int:
        """Privacy: delete everything of ``player`` (every slot and NPC); how many conversations.

        The text does not linger on disk: ``secure_delete`` (on for every connection) zeroes
        deleted content in place, cost proportional to what is deleted, and the WAL is then
        checkpointed and truncated so no old page copy remains in it. VACUUM would also do it,
        but rewrites the whole file (seconds for a big one) and needs it to itself. What the
        file system or SSD keeps of freed blocks is beyond any program's reach.
        """
        where, params = self._where(player, None, None)
        return self._delete(where, params)

    def _delete(self, where: str, params: Sequence[str]) -> int:
        with self._use() as conn:
            with self._write(conn):
                count = self._count_conversations(conn, where, params)
                conn.execute(f"DELETE FROM memory_key AS k WHERE {where}", params)  # noqa: S608
            self._scrub(conn)
        return count

    def close(self) -> None:
        """Close the connection (idempotent); the last one out checkpoints the WAL."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA optimize")
                conn.close()
