"""The memory store on real SQLite files: what it keeps, recalls, moves, forgets and refuses."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npcd.memory.paths import DB_NAME, default_data_dir
from npcd.memory.recall import last_player_line, memory_note
from npcd.memory.store import (
    MAX_TURN_CHARS,
    Entry,
    MemoryKey,
    MemoryStore,
    MemoryStoreError,
    Recall,
    Turn,
)

REPO = Path(__file__).resolve().parents[2]
SMITH = MemoryKey("blacksmith", "ada", "")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / DB_NAME


@pytest.fixture
def store(db: Path) -> Iterator[MemoryStore]:
    s = MemoryStore.open(db)
    yield s
    s.close()


def talk(
    store: MemoryStore, key: MemoryKey, lines: list[tuple[str, str]], start: float = 1000.0
) -> int:
    """One conversation of ``(role, text)`` entries, one append (committed) each."""
    conv = store.begin(key, start)
    for i, (role, text) in enumerate(lines):
        store.append(conv, key, [Entry(role, text)], start + i + 1)  # type: ignore[arg-type]
    return conv


def history(store: MemoryStore, key: MemoryKey, conversations: int, start: float = 0) -> None:
    for c in range(conversations):
        talk(
            store,
            key,
            [
                ("player", f"Hello, this is visit {c}. Do you sell swords?"),
                ("npc", f"Visit {c}! Iron sword, forty gold. Steel costs more."),
                ("action", f"give_item(item=sword_{c})"),
                ("result", "ok"),
                ("event", f"The player left through door {c}."),
            ],
            start=start + c * 100,
        )


def texts(turns: list[Turn] | tuple[Turn, ...]) -> list[tuple[str, str]]:
    return [(t.role, t.text) for t in turns]


def same_recall(a: Recall, b: Recall) -> bool:
    """Equal but for conversation row ids (another slot or file numbers them anew)."""
    same_turns = [(t.role, t.text, t.at) for t in a.turns] == [
        (t.role, t.text, t.at) for t in b.turns
    ]
    return same_turns and a.summary == b.summary and a.conversations == b.conversations


# -- basics ------------------------------------------------------------------------------------


def test_round_trip_survives_reopening(db: Path) -> None:
    store = MemoryStore.open(db)
    conv = store.begin(SMITH, 10.0)
    ids = store.append(
        conv, SMITH, [Entry("player", "What do you sell?"), Entry("npc", "Swords.")], 11.0
    )
    assert len(ids) == 2 and ids[0] < ids[1]
    store.revise(ids[1], "Swo—")  # cut short: only what the player heard is kept
    long_id = store.append(conv, SMITH, [Entry("event", "x" * 5000)], 12.0)[0]
    store.close()
    store.close()  # idempotent

    again = MemoryStore.open(db)
    turns = again.turns(SMITH)
    assert texts(turns[:2]) == [("player", "What do you sell?"), ("npc", "Swo—")]
    assert [t.at for t in turns] == [11.0, 11.0, 12.0]
    assert {t.conversation for t in turns} == {conv}
    assert len(turns[2].text) == MAX_TURN_CHARS and turns[2].text.endswith("…")
    assert long_id > ids[1]
    assert texts(again.turns(SMITH, limit=1)) == [("event", turns[2].text)]
    again.close()


def test_creates_a_private_folder_and_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / DB_NAME
    MemoryStore.open(path).close()
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert (path.stat().st_mode & 0o777) == 0o600
    with contextlib.closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == MemoryStore.SCHEMA_VERSION


def test_refuses_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.sqlite3"
    MemoryStore.open(real).close()
    link = tmp_path / DB_NAME
    link.symlink_to(real)
    with pytest.raises(MemoryStoreError, match="symbolic link") as caught:
        MemoryStore.open(link)
    assert caught.value.kind == "symlink" and str(link) in str(caught.value)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NPCD_DATA_DIR", str(tmp_path / "explicit"))
    assert default_data_dir() == tmp_path / "explicit"
    monkeypatch.delenv("NPCD_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "npcd"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "npcd"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("", "ada", ""), "character"),
        (("smith", "", ""), "player"),
        (("smith", "a" * 129, ""), "player"),
        (("smith", "ada", "s" * 65), "slot"),
        (("smith", "ada\n", ""), "player"),
    ],
)
def test_keys_are_checked(args: tuple[str, str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        MemoryKey(*args)


def test_append_to_a_deleted_conversation_writes_nothing(store: MemoryStore) -> None:
    conv = talk(store, SMITH, [("player", "hi")])
    row = store.append(conv, SMITH, [Entry("npc", "Hello.")], 3.0)[0]
    assert store.forget_player("ada") == 1
    assert store.append(conv, SMITH, [Entry("player", "still here?")], 4.0) == []
    store.revise(row, "gone")  # no error, nothing comes back
    assert store.turns(SMITH) == [] and store.slots() == []
    with pytest.raises(ValueError, match="not one of"):
        store.append(store.begin(SMITH, 5.0), MemoryKey("guard", "ada", ""), [], 5.0)


def test_one_thread_at_a_time(store: MemoryStore) -> None:
    with store._lock, pytest.raises(RuntimeError, match="two threads"):
        store.recall(SMITH, 100, 4)


# -- recall ------------------------------------------------------------------------------------


def test_recall_of_a_short_history_is_all_of_it(store: MemoryStore) -> None:
    talk(store, SMITH, [("player", "Do you sell swords?"), ("npc", "Iron sword, forty gold.")])
    recall = store.recall(SMITH, 2000, 8)
    assert recall.summary == ""
    assert texts(recall.turns) == [
        ("player", "Do you sell swords?"),
        ("npc", "Iron sword, forty gold."),
    ]
    assert recall.conversations == 1
    assert store.recall(MemoryKey("guard", "ada", ""), 2000, 8) == Recall("", (), 0)
    assert store.recall(SMITH, 0, 8) == Recall("", (), 1)


def test_recall_summarizes_the_older_turns(store: MemoryStore) -> None:
    history(store, SMITH, 6)
    recall = store.recall(SMITH, 600, 3)
    assert recall.conversations == 6
    assert texts(recall.turns) == [
        ("action", "give_item(item=sword_5)"),
        ("result", "ok"),
        ("event", "The player left through door 5."),
    ]
    summary = recall.summary
    assert len(summary) + sum(len(t.text) for t in recall.turns) <= 600
    # The newest older turns, reduced to first sentences, back in time order.
    assert summary.endswith('they said "Hello, this is visit 5."; you said "Visit 5!"')
    assert "you did give_item(item=sword_4) → ok" in summary
    assert summary.index("visit 3") < summary.index("visit 4") < summary.index("visit 5")
    assert " | " in summary  # conversations are told apart
    assert "sword_0" not in summary  # the oldest did not fit


def test_summary_is_deterministic(tmp_path: Path) -> None:
    recalls = []
    for name in ("a", "b"):
        s = MemoryStore.open(tmp_path / name / DB_NAME)
        history(s, SMITH, 12)
        recalls += [s.recall(SMITH, 700, 4), s.recall(SMITH, 700, 4)]
        s.close()
    first = recalls[0]
    assert first.summary
    assert all(
        (r.summary, texts(r.turns), r.conversations)
        == (first.summary, texts(first.turns), first.conversations)
        for r in recalls
    )


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemoryStore]:
    """Keys with short, long, repetitive and one-huge-line histories."""
    s = MemoryStore.open(tmp_path_factory.mktemp("recall") / DB_NAME)
    history(s, MemoryKey("smith", "p1", ""), 15)
    talk(s, MemoryKey("smith", "p2", ""), [("player", "x" * 3000), ("npc", "y" * 4500)])
    roles = ("player", "npc", "action", "result", "event")
    for c in range(8):
        lines = [(roles[i % 5], "word " * (i * 7 % 40)) for i in range(c, c + 9)]
        talk(s, MemoryKey("smith", "p3", ""), lines, start=c * 100)
    yield s
    s.close()


@settings(max_examples=150, deadline=None)
@given(
    player=st.sampled_from(["p1", "p2", "p3"]),
    budget=st.integers(0, 6000),
    recent=st.integers(0, 30),
)
def test_recall_never_exceeds_its_budget_and_keeps_the_newest(
    big_store: MemoryStore, player: str, budget: int, recent: int
) -> None:
    key = MemoryKey("smith", player, "")
    everything = texts(big_store.turns(key))
    recall = big_store.recall(key, budget, recent)
    kept = texts(recall.turns)
    assert len(recall.summary) + sum(len(text) for _, text in kept) <= budget
    assert len(kept) <= recent
    assert kept == everything[len(everything) - len(kept) :]  # the most recent, in order
    if len(everything) <= recent and sum(len(t) for _, t in everything) <= budget:
        assert kept == everything and recall.summary == ""
    elif recent and everything and len(everything[-1][1]) <= budget - budget // 3:
        assert kept  # the newest turn fits the turns' share, so it is there
    assert "\n" not in recall.summary


def test_keys_are_isolated(store: MemoryStore) -> None:
    history(store, SMITH, 2)
    for other in (
        MemoryKey("blacksmith", "ada", "slot2"),
        MemoryKey("blacksmith", "bob", ""),
        MemoryKey("guard", "ada", ""),
    ):
        assert store.recall(other, 5000, 50) == Recall("", (), 0)
        assert store.turns(other) == []
    assert [s.player for s in store.slots()] == ["ada"]
    assert store.slots(player="bob") == [] and store.slots(character="guard") == []
    assert store.export("bob")["conversations"] == []


# -- the note ----------------------------------------------------------------------------------


def test_memory_note_shape() -> None:
    turns = (
        Turn("player", "Do you\nsell swords?", 1.0, 1),
        Turn("npc", "Forty gold.", 2.0, 1),
        Turn("action", "give_item(sword)", 3.0, 1),
        Turn("result", "ok", 3.0, 1),
        Turn("event", "Player: fake line", 4.0, 1),
    )
    note = memory_note(Recall("they said hi", turns, 2), "Ada")
    assert note.splitlines() == [
        "What you remember of earlier conversations with Ada (npcd memory; 2 earlier "
        "conversations):",
        "Summary: they said hi",
        "Most recent:",
        "Player: Do you sell swords?",
        "You: Forty gold.",
        "You did: give_item(sword)",
        "Result: ok",
        "Event: Player: fake line",
    ]
    assert last_player_line(note) == "Do you sell swords?"
    assert memory_note(Recall("", (), 3), "Ada") == ""
    one = memory_note(Recall("", turns[1:2], 1), "")
    assert one.splitlines()[0].endswith("with the player (npcd memory; 1 earlier conversation):")
    assert "Summary" not in one and last_player_line(one) is None


# -- save slots, export, import ------------------------------------------------------------------


def test_copy_slot(store: MemoryStore) -> None:
    history(store, SMITH, 3)
    history(store, MemoryKey("guard", "ada", ""), 1)
    target = MemoryKey("blacksmith", "ada", "save2")
    store.begin(target, 1.0)  # an empty conversation is not memory: the target counts as empty
    assert store.copy_slot("ada", "", "save2") == 4
    assert texts(store.turns(target)) == texts(store.turns(SMITH))
    assert same_recall(store.recall(target, 900, 4), store.recall(SMITH, 900, 4))
    with pytest.raises(ValueError, match="already has memory"):
        store.copy_slot("ada", "", "save2")
    with pytest.raises(ValueError, match="same slot"):
        store.copy_slot("ada", "", "")
    assert store.copy_slot("ada", "", "save3", character="guard") == 1
    assert {(s.character, s.slot) for s in store.slots("ada")} == {
        ("blacksmith", ""),
        ("guard", ""),
        ("blacksmith", "save2"),
        ("guard", "save2"),
        ("guard", "save3"),
    }
    assert store.copy_slot("ada", "nothing-here", "save4") == 0


def test_delete_slot(store: MemoryStore) -> None:
    history(store, SMITH, 2)
    history(store, MemoryKey("guard", "ada", ""), 1)
    history(store, MemoryKey("blacksmith", "ada", "s2"), 1)
    assert store.delete_slot("ada", "", character="guard") == 1
    assert store.delete_slot("ada", "") == 2
    assert store.delete_slot("ada", "") == 0
    assert [(s.character, s.slot) for s in store.slots()] == [("blacksmith", "s2")]


def _raw_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))


def test_forget_player_leaves_no_trace_on_disk(db: Path, store: MemoryStore) -> None:
    secret = "my secret password is swordfish-4471"
    talk(store, MemoryKey("blacksmith", "eve", ""), [("player", secret), ("npc", "Noted.")])
    history(store, SMITH, 2)
    talk(store, MemoryKey("guard", "eve", "s2"), [("player", "x")])
    assert secret.encode() in _raw_bytes(db)
    assert store.forget_player("eve") == 2
    assert store.slots("eve") == []
    assert len(store.slots("ada")) == 1
    assert secret.encode() not in _raw_bytes(db)  # zeroed in place, and the WAL truncated
    assert b"swordfish" not in _raw_bytes(db)


def test_export_import_reproduces_recall(tmp_path: Path, store: MemoryStore) -> None:
    history(store, SMITH, 5)
    history(store, MemoryKey("guard", "ada", "s2"), 2, start=10_000)
    history(store, MemoryKey("guard", "bob", ""), 1)
    document = store.export("ada")
    assert document["format"] == "npcd-memory" and document["version"] == 1
    assert len(document["conversations"]) == 7
    assert all(c["key"]["player"] == "ada" for c in document["conversations"])
    assert len(store.export("ada", slot="s2")["conversations"]) == 2

    fresh = MemoryStore.open(tmp_path / "fresh" / DB_NAME)
    assert fresh.import_(document) == 7
    for key in (SMITH, MemoryKey("guard", "ada", "s2")):
        assert same_recall(fresh.recall(key, 700, 4), store.recall(key, 700, 4))
        assert texts(fresh.turns(key)) == texts(store.turns(key))
        assert [t.at for t in fresh.turns(key)] == [t.at for t in store.turns(key)]
    assert fresh.import_(document) == 0  # already there: importing twice adds nothing
    assert fresh.export("ada") == document
    assert fresh.import_(store.export("ada", slot="s2"), replace=True) == 2
    assert fresh.slots("ada")[0].conversations == 5
    fresh.close()


def _valid_document() -> dict[str, Any]:
    return {
        "format": "npcd-memory",
        "version": 1,
        "conversations": [
            {
                "key": {"character": "smith", "player": "ada", "slot": ""},
                "started_at": 1.0,
                "turns": [{"role": "player", "text": "hi", "at": 1.5}],
            }
        ],
    }


def _set(path: list[str | int], value: object) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        target: Any = doc
        for part in path[:-1]:
            target = target[part]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_set(["format"], "other"), "format: must be"),
        (_set(["version"], 2), "version: 2 .* newer npcd"),
        (_set(["version"], True), "version: must be an integer"),
        (_set(["extra"], 1), "extra: unknown"),
        (_set(["conversations"], {}), "conversations: must be an array"),
        (_set(["conversations", 0, "key"], KeyError), r"conversations\[0\]\.key: required"),
        (_set(["conversations", 0, "key", "player"], ""), r"conversations\[0\]\.key\.player"),
        (_set(["conversations", 0, "key", "slot"], 3), r"conversations\[0\]\.key\.slot"),
        (_set(["conversations", 0, "started_at"], "now"), r"conversations\[0\]\.started_at"),
        (_set(["conversations", 0, "started_at"], float("nan")), r"\[0\]\.started_at: must be"),
        (_set(["conversations", 0, "turns", 0, "role"], "god"), r"turns\[0\]\.role: must be one"),
        (_set(["conversations", 0, "turns", 0, "text"], "x" * 4001), r"turns\[0\]\.text: longer"),
        (_set(["conversations", 0, "turns", 0, "text"], "\ud800"), r"turns\[0\]\.text: not valid"),
        (_set(["conversations", 0, "turns", 0, "at"], None), r"turns\[0\]\.at: must be"),
        (_set(["conversations", 0, "turns", 0, "who"], 1), r"turns\[0\]\.who: unknown"),
        (_set(["conversations", 0, "turns"], [{}] * 100_001), r"more than 100000 turns"),
    ],
)
def test_import_rejects_bad_documents(
    store: MemoryStore, change: Callable[[dict[str, Any]], None], says: str
) -> None:
    document = _valid_document()
    change(document)
    with pytest.raises(ValueError, match=says):
        store.import_(document)
    assert store.slots() == []  # nothing half-imported
    assert store.import_(copy.deepcopy(_valid_document())) == 1


# -- migrations and bad files --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["zero bytes", "sqlite v0"])
def test_an_empty_file_is_migrated(db: Path, how: str) -> None:
    db.parent.mkdir()
    if how == "zero bytes":
        db.touch()
    else:
        with contextlib.closing(sqlite3.connect(db)) as raw:
            raw.execute("PRAGMA user_version = 0")
            raw.execute("VACUUM")  # writes the header: a valid, empty database
    store = MemoryStore.open(db)
    talk(store, SMITH, [("player", "hi")])
    store.close()
    with contextlib.closing(sqlite3.connect(db)) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == MemoryStore.SCHEMA_VERSION
        assert raw.execute("PRAGMA application_id").fetchone()[0] == 0x6E706364


def test_a_newer_schema_is_refused_and_left_alone(db: Path) -> None:
    MemoryStore.open(db).close()
    with contextlib.closing(sqlite3.connect(db)) as raw:
        raw.execute(f"PRAGMA user_version = {MemoryStore.SCHEMA_VERSION + 1}")
    before = db.read_bytes()
    with pytest.raises(MemoryStoreError, match="newer npcd") as caught:
        MemoryStore.open(db)
    assert caught.value.kind == "newer-schema" and str(db) in caught.value.message
    assert "upgrade npcd" in caught.value.message
    assert db.read_bytes() == before


def test_another_programs_database_is_refused(db: Path) -> None:
    db.parent.mkdir()
    with contextlib.closing(sqlite3.connect(db)) as raw:
        raw.execute("CREATE TABLE accounts (name TEXT)")
    with pytest.raises(MemoryStoreError, match="another program") as caught:
        MemoryStore.open(db)
    assert caught.value.kind == "not-npcd"


def test_garbage_is_not_a_database(db: Path) -> None:
    db.parent.mkdir()
    db.write_bytes(os.urandom(3000) + b"garbage" * 1000)
    with pytest.raises(MemoryStoreError) as caught:
        MemoryStore.open(db)
    assert caught.value.kind == "not-a-database"
    assert str(db) in str(caught.value) and "move it aside" in str(caught.value)


def _smash_page(db: Path, table: str) -> None:
    with contextlib.closing(sqlite3.connect(db)) as raw:
        page_size = raw.execute("PRAGMA page_size").fetchone()[0]
        root = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,))
        page = root.fetchone()[0]
    assert not Path(f"{db}-wal").exists()  # all in the main file (closed cleanly)
    with open(db, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(b"\xa5" * page_size)


def test_a_corrupt_table_is_found_on_open(db: Path) -> None:
    store = MemoryStore.open(db)
    history(store, SMITH, 3)
    store.close()
    _smash_page(db, "conversation")
    with pytest.raises(MemoryStoreError) as caught:
        MemoryStore.open(db)
    assert caught.value.kind == "corrupt" and str(db) in str(caught.value)
    assert ".recover" in str(caught.value)


def test_a_corrupt_turn_page_is_found_when_read(db: Path) -> None:
    store = MemoryStore.open(db)
    history(store, SMITH, 3)
    store.close()
    _smash_page(db, "turn")
    store = MemoryStore.open(db)  # only the small tables are checked on open (bench/memory.py)
    with pytest.raises(MemoryStoreError) as caught:
        store.turns(SMITH)
    assert caught.value.kind == "corrupt" and str(db) in str(caught.value)
    store.close()


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], None]]:
    """Make a file or folder read-only for this process, root included.

    chmod does not stop root (CAP_DAC_OVERRIDE), so as root the immutable flag (chattr +i,
    needing CAP_LINUX_IMMUTABLE and a file system that has it) is used instead; the test is
    reported as a failure where neither works (never skipped). Either way it is checked by
    really trying to write.
    """
    undo: list[Callable[[], object]] = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            mode = path.stat().st_mode
            path.chmod(0o555 if path.is_dir() else 0o444)
            undo.append(lambda: path.chmod(mode))
        else:
            chattr = shutil.which("chattr")
            if chattr is None:
                pytest.fail("root, and no chattr to make a file immutable")
            done = subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False)
            if done.returncode:
                pytest.fail(f"root, and chattr +i does not work here: {done.stderr!r}")
            undo.append(lambda: subprocess.run([chattr, "-i", str(path)], check=True))
        probe = path / "probe" if path.is_dir() else path
        try:
            with open(probe, "ab"):
                pass
        except PermissionError:
            return
        pytest.fail(f"cannot make {path} read-only here")

    yield make
    for step in reversed(undo):
        step()


def test_a_read_only_file_is_refused_on_open(db: Path, read_only: Callable[[Path], None]) -> None:
    MemoryStore.open(db).close()
    read_only(db)
    with pytest.raises(MemoryStoreError) as caught:
        MemoryStore.open(db)
    assert caught.value.kind == "read-only", caught.value
    assert str(db) in str(caught.value) and "write access" in str(caught.value)


def test_a_read_only_folder_is_refused_on_open(db: Path, read_only: Callable[[Path], None]) -> None:
    MemoryStore.open(db).close()  # closed cleanly: no -wal or -shm file left to reuse
    read_only(db.parent)
    with pytest.raises(MemoryStoreError) as caught:
        MemoryStore.open(db)
    assert caught.value.kind in ("cannot-open", "read-only"), caught.value
    assert str(db) in str(caught.value) and "folder" in str(caught.value)
    with pytest.raises(MemoryStoreError, match="cannot be created") as created:
        MemoryStore.open(db.parent / "other.sqlite3")
    assert "NPCD_DATA_DIR" in str(created.value)


def test_a_locked_database_fails_within_the_busy_timeout(db: Path) -> None:
    store = MemoryStore.open(db, busy_timeout_s=0.2)
    conv = talk(store, SMITH, [("player", "hi")])
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(MemoryStoreError) as caught:
            MemoryStore.open(db, busy_timeout_s=0.2)
        assert caught.value.kind == "locked" and str(db) in str(caught.value)
        assert "another process" in str(caught.value)
        with pytest.raises(MemoryStoreError, match="locked"):
            store.append(conv, SMITH, [Entry("npc", "hello")], 3.0)
        assert time.monotonic() - started < 2 * 0.2 + 1.0  # two busy timeouts, no hang
        assert store.recall(SMITH, 100, 4).turns  # WAL: reading goes on meanwhile
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.append(conv, SMITH, [Entry("npc", "hello")], 3.0)  # and writing after
    store.close()


def test_a_database_locked_before_wal_fails_at_once(db: Path) -> None:
    MemoryStore.open(db).close()
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("PRAGMA journal_mode = DELETE")
    other.execute("BEGIN EXCLUSIVE")  # no reader gets in at all
    try:
        started = time.monotonic()
        with pytest.raises(MemoryStoreError) as caught:
            MemoryStore.open(db, busy_timeout_s=0.2)
        assert time.monotonic() - started < 0.2 + 1.0
        assert caught.value.kind == "locked"
    finally:
        other.execute("ROLLBACK")
        other.close()


# -- durability ----------------------------------------------------------------------------------

_WRITER = """
import sys
from pathlib import Path
from npcd.memory.store import Entry, MemoryKey, MemoryStore
store = MemoryStore.open(Path(sys.argv[1]))
key = MemoryKey("blacksmith", "ada", "")
conversation = store.begin(key, 1.0)
print(conversation, flush=True)
for line in sys.stdin:
    n = int(line)
    entries = [Entry("player", f"question {n}"), Entry("npc", f"answer {n}")]
    ids = store.append(conversation, key, entries, 2.0 + n)
    print(" ".join(map(str, ids)), flush=True)
"""


def test_every_appended_turn_survives_kill_9(db: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert writer.stdin is not None and writer.stdout is not None
    try:
        conversation = int(writer.stdout.readline())
        rows: list[int] = []
        for n in range(25):
            writer.stdin.write(f"{n}\n")
            writer.stdin.flush()
            rows += map(int, writer.stdout.readline().split())  # append has returned
        writer.send_signal(signal.SIGKILL)  # at once: nothing gets to close or checkpoint
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.stdin.close()
        writer.stdout.close()
    assert Path(f"{db}-wal").stat().st_size > 0  # the turns are only in the WAL
    store = MemoryStore.open(db)
    turns = store.turns(SMITH)
    assert len(rows) == 50 and len(turns) == 50
    pairs = (("player", "question"), ("npc", "answer"))
    assert texts(turns) == [(role, f"{word} {n}") for n in range(25) for role, word in pairs]
    assert {t.conversation for t in turns} == {conversation}
    store.close()


def test_a_written_summary_replaces_the_gist_of_what_it_covers_and_is_forgotten_too(
    store: MemoryStore,
) -> None:
    key = MemoryKey("blacksmith", "ada", "1")
    conversation = store.begin(key, 1.0)
    for n in range(12):
        store.append(conversation, key, [Entry("player", f"secret number {n}.")], 2.0 + n)
    assert store.summary_work(key, recent_turns=4, min_turns=9) is None, "8 old turns: too few"
    work = store.summary_work(key, recent_turns=4, min_turns=8)
    assert work is not None and [t.text for t in work.turns][-1] == "secret number 7."
    store.save_summary(key, work, "Ada keeps telling numbers.", 20.0)
    recall = store.recall(key, budget_chars=120, recent_turns=4)
    assert recall.summary.startswith("Ada keeps telling numbers.")
    assert "secret number 3" not in recall.summary, "the turns it covers are not repeated"
    assert store.summary_work(key, recent_turns=4, min_turns=1) is None, "nothing new since"
    store.append(conversation, key, [Entry("player", "secret number 12.")], 30.0)
    again = store.summary_work(key, recent_turns=4, min_turns=1)
    assert again is not None and again.previous == "Ada keeps telling numbers."
    assert [t.text for t in again.turns] == ["secret number 8."]
    store.forget_player("ada")
    assert store.recall(key, budget_chars=120, recent_turns=4).summary == ""
    assert store.summary_work(key, recent_turns=0, min_turns=0) is None


def test_a_version_1_file_is_migrated_with_its_memory_kept(db: Path) -> None:
    key = MemoryKey("blacksmith", "ada", "")
    first = MemoryStore.open(db)
    first.append(first.begin(key, 1.0), key, [Entry("player", "hello from v1")], 2.0)
    first.close()
    with contextlib.closing(sqlite3.connect(db)) as raw:  # as an npcd of schema v1 left it
        raw.execute("DROP TABLE summary")
        raw.execute("PRAGMA user_version = 1")
        raw.commit()
    again = MemoryStore.open(db)
    try:
        assert [t.text for t in again.turns(key)] == ["hello from v1"]
        work = again.summary_work(key, recent_turns=0, min_turns=1)
        assert work is not None
        again.save_summary(key, work, "Ada said hello.", 3.0)  # the v2 table is there
    finally:
        again.close()
    with contextlib.closing(sqlite3.connect(db)) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == MemoryStore.SCHEMA_VERSION == 2
