"""``npcd memory ...`` through argparse: output, files written, exit codes and errors."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from npcd.memory import cli
from npcd.memory.paths import DB_NAME
from npcd.memory.store import Entry, MemoryKey, MemoryStore


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="npcd")
    cli.add_commands(top.add_subparsers(dest="command", required=True))
    return top


class Npcd:
    """Runs ``npcd memory ...`` on one data folder; returns (exit code, stdout, stderr)."""

    def __init__(self, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.data = data
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        args = parser().parse_args(["memory", *argv, "--data-dir", str(self.data)])
        code = cli.run(args)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def npcd(data: Path, capsys: pytest.CaptureFixture[str]) -> Npcd:
    return Npcd(data, capsys)


def remember(data: Path, key: MemoryKey, *lines: str, at: float = 1000.0) -> None:
    store = MemoryStore.open(data / DB_NAME)
    conv = store.begin(key, at)
    for i, line in enumerate(lines):
        store.append(conv, key, [Entry("player" if i % 2 == 0 else "npc", line)], at + i)
    store.close()


@pytest.fixture
def stored(data: Path) -> Path:
    remember(data, MemoryKey("blacksmith", "ada", ""), "Do you sell swords?", "Forty gold.")
    remember(data, MemoryKey("blacksmith", "ada", ""), "Back again.", "Welcome back.", at=2000)
    remember(data, MemoryKey("guard", "ada", "save2"), "Halt?", "Move along.")
    remember(data, MemoryKey("guard", "bob", ""), "Hi", "\x1b[31mred\x1b[0m\nline")
    return data / DB_NAME


def test_list(npcd: Npcd, stored: Path) -> None:
    code, out, _ = npcd("list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["PLAYER", "SLOT", "CHARACTER", "CONVERSATIONS", "TURNS", "LAST"]
    assert lines[1].split()[:5] == ["ada", "(default)", "blacksmith", "2", "4"]
    assert lines[2].split()[:5] == ["ada", "save2", "guard", "1", "2"]
    assert lines[3].split()[:5] == ["bob", "(default)", "guard", "1", "2"]
    code, out, _ = npcd("list", "--player", "bob")
    assert code == 0 and len(out.splitlines()) == 2
    code, out, _ = npcd("list", "--character", "innkeeper")
    assert code == 0 and "no memory stored for NPC 'innkeeper'" in out


def test_list_without_a_database_creates_nothing(npcd: Npcd, data: Path) -> None:
    code, out, _ = npcd("list")
    assert code == 0 and "does not exist" in out
    assert not data.exists()


def test_show(npcd: Npcd, stored: Path) -> None:
    code, out, _ = npcd("show", "--player", "ada")
    assert code == 0
    assert "blacksmith remembers ada in slot (default): 2 conversations, 4 turns" in out
    assert "guard remembers ada in slot save2: 1 conversation, 2 turns" in out
    assert out.index("Player: Do you sell swords?") < out.index("NPC: Welcome back.")
    assert out.count("  -- ") == 3  # one header per conversation
    code, out, _ = npcd("show", "--player", "ada", "--slot", "save2")
    assert code == 0 and "blacksmith" not in out and "NPC: Move along." in out
    code, out, _ = npcd("show", "--player", "bob")
    assert "\x1b" not in out and "NPC:  [31mred [0m line" in out  # no escapes reach a terminal
    code, _, err = npcd("show", "--player", "nobody")
    assert code == 1 and "no memory of player 'nobody'" in err


def test_export_to_stdout_and_to_a_private_file(npcd: Npcd, stored: Path, tmp_path: Path) -> None:
    code, out, _ = npcd("export", "--player", "ada")
    assert code == 0
    document = json.loads(out)
    assert document["format"] == "npcd-memory" and len(document["conversations"]) == 3
    target = tmp_path / "ada.json"
    code, out, _ = npcd("export", "--player", "ada", "--slot", "save2", "-o", str(target))
    assert code == 0 and "exported 1 conversation of player 'ada'" in out
    assert (target.stat().st_mode & 0o777) == 0o600
    assert json.loads(target.read_text())["conversations"][0]["key"]["slot"] == "save2"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ada")] == []
    code, _, err = npcd("export", "--player", "ada", "--slot", "nope")
    assert code == 1 and "in slot 'nope'" in err


def test_import(npcd: Npcd, stored: Path, tmp_path: Path) -> None:
    code, out, _ = npcd("export", "--player", "ada")
    exported = tmp_path / "ada.json"
    exported.write_text(out)
    fresh = Npcd(tmp_path / "fresh", npcd.capsys)
    code, out, _ = fresh("import", str(exported))
    assert code == 0 and "imported 3 conversations" in out
    code, out, _ = fresh("import", str(exported))
    assert code == 0 and "imported 0 conversations" in out and "3 already remembered" in out
    code, out, _ = fresh("import", str(exported), "--replace")
    assert code == 0 and "imported 3 conversations" in out
    assert fresh("show", "--player", "ada")[1] == npcd("show", "--player", "ada")[1]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "not a JSON document"),
        (b"[1, 2]", "not an npcd memory export"),
        (b'{"format": "npcd-memory", "version": 1}', "conversations: required"),
        (
            b'{"format": "npcd-memory", "version": 1, "conversations": [{"key": {"character": '
            b'"smith", "player": "ada", "slot": ""}, "started_at": 1, "turns": [{"role": "x", '
            b'"text": "", "at": 1}]}]}',
            r"conversations[0].turns[0].role: must be one of",
        ),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_import_refuses_bad_files(npcd: Npcd, tmp_path: Path, content: bytes, says: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    code, _, err = npcd("import", str(bad))
    assert code == 2
    assert f"npcd: {bad}: " in err and says in err


def test_import_refuses_big_and_missing_files(
    npcd: Npcd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "MAX_IMPORT_BYTES", 1024 * 1024)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (1024 * 1024 + 1))
    code, _, err = npcd("import", str(big))
    assert code == 2 and "larger than 1 MiB" in err
    code, _, err = npcd("import", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read it" in err


def test_copy(npcd: Npcd, stored: Path) -> None:
    code, out, _ = npcd("copy", "--player", "ada", "--from", "", "--to", "slot9")
    assert (
        code == 0 and "copied 2 conversations of player 'ada' from slot (default) to slot9" in out
    )
    code, _, err = npcd("copy", "--player", "ada", "--from", "", "--to", "slot9")
    assert code == 1 and "already has memory" in err
    code, _, err = npcd("copy", "--player", "ada", "--from", "empty", "--to", "slot10")
    assert code == 1 and "nothing copied" in err
    code, out, _ = npcd(
        "copy", "--player", "ada", "--from", "save2", "--to", "s3", "--character", "guard"
    )
    assert code == 0 and "copied 1 conversation" in out


def test_delete(npcd: Npcd, stored: Path) -> None:
    code, out, _ = npcd("delete", "--player", "ada", "--slot", "save2")
    assert code == 0 and "deleted 1 conversation of player 'ada' in slot 'save2'" in out
    code, _, err = npcd("delete", "--player", "ada", "--slot", "save2")
    assert code == 1 and "nothing deleted" in err
    code, out, _ = npcd("delete", "--player", "ada", "--slot", "", "--character", "guard")
    assert code == 1
    assert npcd("list", "--player", "ada")[1].count("ada") == 1


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "code", "left"), [("n\n", 1, 1), ("", 1, 1), ("yes\n", 0, 0)])
def test_forget_asks_on_a_tty(
    npcd: Npcd,
    stored: Path,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    code: int,
    left: int,
) -> None:
    monkeypatch.setattr("sys.stdin", FakeTty(answer))
    result, out, err = npcd("forget", "--player", "bob")
    assert result == code
    assert "Forget everything of player 'bob': 1 conversation in 1 slot" in out
    store = MemoryStore.open(stored)
    assert len(store.slots("bob")) == left
    store.close()
    if code:
        assert "not forgotten" in err


def test_forget_without_asking(npcd: Npcd, stored: Path) -> None:
    code, out, _ = npcd("forget", "--player", "ada", "--yes")
    assert code == 0 and "forgot player 'ada': 3 conversations deleted" in out
    code, out, _ = npcd("forget", "--player", "ada")  # stdin is no tty under pytest
    assert code == 0 and "nothing stored of player 'ada'" in out
    assert "bob" in npcd("list")[1]


def test_bad_arguments_and_bad_databases(npcd: Npcd, data: Path) -> None:
    code, _, err = npcd("show", "--player", "x" * 200)
    assert code == 2 and "--player: must be 1 to 128 printable characters" in err
    data.mkdir()
    (data / DB_NAME).write_bytes(b"this is not a database, " * 300)
    code, _, err = npcd("list")
    assert code == 2
    assert f"memory database {data / DB_NAME}: not an SQLite database" in err
    assert "move it aside" in err
