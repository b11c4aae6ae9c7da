"""``npcd memory ...``: look at, move and delete what NPCs remember, from a terminal.

Safe next to a running daemon (SQLite's WAL lets both use the file; a write waits up to two
seconds for the other's). Exit codes: 0 done; 1 nothing found, or refused (a non-empty target,
an unconfirmed forget); 2 bad input, or the database cannot be used (the message says why).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from npcd.cost.store import SPEND_DB_NAME, forget_player_in_file
from npcd.memory.paths import DB_NAME, default_data_dir
from npcd.memory.store import (
    MAX_IMPORT_BYTES,
    MemoryKey,
    MemoryStore,
    MemoryStoreError,
    Role,
    SlotInfo,
    check_character,
    check_player,
    check_slot,
)

__all__ = ["add_commands", "run"]

_LABELS: dict[Role, str] = {
    "player": "Player",
    "npc": "NPC",
    "action": "Action",
    "result": "Result",
    "event": "Event",
}


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``memory`` and its actions on the ``npcd`` command's subparsers."""
    memory = subparsers.add_parser(
        "memory",
        help="list, show, export, import, copy or delete what NPCs remember of players",
        description="What NPCs remember of each player, per save slot (the empty slot name is "
        "the default slot, shown as (default)). Safe while the daemon runs.",
    )
    actions = memory.add_subparsers(dest="memory_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            metavar="DIR",
            help=f"folder holding {DB_NAME} (env NPCD_DATA_DIR; default $XDG_DATA_HOME/npcd "
            "or ~/.local/share/npcd)",
        )
        return parser

    listing = action("list", "the save slots with memory, per player and NPC")
    listing.add_argument("--player", help="only this player id")
    listing.add_argument("--character", help="only this NPC")

    show = action("show", "what NPCs remember of a player, turn by turn")
    show.add_argument("--player", required=True, help="player id")
    show.add_argument("--slot", help='only this save slot ("" = the default one; default: all)')
    show.add_argument("--character", help="only this NPC")

    export = action("export", "a player's memory as JSON (for backups, or another machine)")
    export.add_argument("--player", required=True, help="player id")
    export.add_argument("--slot", help='only this save slot ("" = the default one; default: all)')
    export.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write here (mode 0600), not stdout"
    )

    load = action("import", "add the memory in an exported JSON file")
    load.add_argument("file", metavar="FILE", help="a file from `npcd memory export` (- = stdin)")
    load.add_argument(
        "--replace",
        action="store_true",
        help="first delete what the file's slots already remember, instead of adding to it",
    )

    forget = action("forget", "privacy: delete everything of a player, every slot and NPC")
    forget.add_argument("--player", required=True, help="player id")
    forget.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    copy = action("copy", "save-as: copy a save slot's memory to an empty slot")
    copy.add_argument("--player", required=True, help="player id")
    copy.add_argument("--from", dest="source", required=True, metavar="SLOT", help="from slot")
    copy.add_argument("--to", dest="target", required=True, metavar="SLOT", help="to slot")
    copy.add_argument("--character", help="only this NPC's memory")

    delete = action("delete", "delete a save slot's memory (a deleted save game)")
    delete.add_argument("--player", required=True, help="player id")
    delete.add_argument("--slot", required=True, help='save slot ("" = the default one)')
    delete.add_argument("--character", help="only this NPC's memory")


def run(args: argparse.Namespace) -> int:
    """Do the ``memory`` action ``args`` asks for; the exit code."""
    path = (args.data_dir or default_data_dir()) / DB_NAME
    handler = _ACTIONS[args.memory_command]
    try:
        _check_arguments(args)
        return handler(args, path)
    except MemoryStoreError as exc:
        return _fail(exc.message, 2)
    except ValueError as exc:
        return _fail(str(exc), 2)


def _check_arguments(args: argparse.Namespace) -> None:
    for name, check in (("player", check_player), ("character", check_character)):
        value = getattr(args, name, None)
        if value is not None:
            check(value, f"--{name}")
    for name, flag in (("slot", "--slot"), ("source", "--from"), ("target", "--to")):
        value = getattr(args, name, None)
        if value is not None:
            check_slot(value, flag)


def _fail(message: str, code: int) -> int:
    print(f"npcd: {message}", file=sys.stderr)
    return code


@contextlib.contextmanager
def _store(path: Path) -> Iterator[MemoryStore]:
    store = MemoryStore.open(path)
    try:
        yield store
    finally:
        store.close()


def _exists(path: Path) -> bool:
    return os.path.lexists(path)  # a symlink "exists": open() then says why it is refused


def _slot_name(slot: str) -> str:
    return slot if slot else "(default)"


def _when(at: float, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(at).astimezone().strftime(fmt)


def _printable(text: str) -> str:
    """One line, no control characters: remembered text is the players', not the terminal's."""
    return "".join(ch if ch.isprintable() else " " for ch in " ".join(text.split()))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


# -- actions ---------------------------------------------------------------------------------


def _list(args: argparse.Namespace, path: Path) -> int:
    if not _exists(path):
        print(f"no memory stored yet ({path} does not exist)")
        return 0
    with _store(path) as store:
        slots = store.slots(args.player, args.character)
    if not slots:
        print(f"no memory stored{_filters(args)} in {path}")
        return 0
    rows = [["PLAYER", "SLOT", "CHARACTER", "CONVERSATIONS", "TURNS", "LAST"]]
    for s in slots:
        rows.append(
            [s.player, _slot_name(s.slot), s.character, str(s.conversations), str(s.turns)]
            + [_when(s.last_at)]
        )
    _table(rows)
    return 0


def _filters(args: argparse.Namespace) -> str:
    parts = []
    if getattr(args, "player", None) is not None:
        parts.append(f"of player {args.player!r}")
    if getattr(args, "slot", None) is not None:
        parts.append(f"in slot {_slot_name(args.slot)!r}")
    if getattr(args, "character", None) is not None:
        parts.append(f"for NPC {args.character!r}")
    return (" " + " ".join(parts)) if parts else ""


def _matching(store: MemoryStore, args: argparse.Namespace) -> list[SlotInfo]:
    slots = store.slots(args.player, args.character)
    return [s for s in slots if args.slot is None or s.slot == args.slot]


def _show(args: argparse.Namespace, path: Path) -> int:
    if not _exists(path):
        return _fail(f"no memory stored yet ({path} does not exist)", 1)
    with _store(path) as store:
        slots = _matching(store, args)
        if not slots:
            return _fail(f"no memory{_filters(args)} in {path}", 1)
        for i, s in enumerate(slots):
            if i:
                print()
            print(
                f"{s.character} remembers {s.player} in slot {_slot_name(s.slot)}: "
                f"{_plural(s.conversations, 'conversation')}, {_plural(s.turns, 'turn')}"
            )
            conversation = None
            for turn in store.turns(MemoryKey(s.character, s.player, s.slot)):
                if turn.conversation != conversation:
                    conversation = turn.conversation
                    print(f"  -- {_when(turn.at)}")
                label = _LABELS[turn.role]
                print(f"  {_when(turn.at, '%H:%M:%S')}  {label}: {_printable(turn.text)}")
    return 0


def _export(args: argparse.Namespace, path: Path) -> int:
    if not _exists(path):
        return _fail(f"no memory stored yet ({path} does not exist)", 1)
    with _store(path) as store:
        document = store.export(args.player, args.slot)
    if not document["conversations"]:
        return _fail(f"no memory{_filters(args)} in {path}", 1)
    text = json.dumps(document, ensure_ascii=False, indent=1) + "\n"
    output: Path | None = args.output
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    _write_private(output, text.encode("utf-8"))
    count = len(document["conversations"])
    print(f"exported {_plural(count, 'conversation')} of player {args.player!r} to {output}")
    return 0


def _write_private(target: Path, data: bytes) -> None:
    """Write ``target`` whole or not at all, readable by this user only (players' words)."""
    folder = target.parent if str(target.parent) else Path(".")
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _read_document(name: str) -> Any:
    """The JSON in file ``name`` (``-``: stdin), at most `MAX_IMPORT_BYTES`; ValueError if not."""
    limit = MAX_IMPORT_BYTES
    try:
        if name == "-":
            raw = sys.stdin.buffer.read(limit + 1)
        else:
            with open(name, "rb") as source:
                raw = source.read(limit + 1)
    except OSError as exc:
        raise ValueError(f"{name}: cannot read it ({exc.strerror or exc})") from exc
    if len(raw) > limit:
        raise ValueError(
            f"{name}: larger than {limit // (1024 * 1024)} MiB; export and import one slot at a "
            "time (--slot)"
        )
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name}: not a JSON document ({exc})") from exc
    except RecursionError:
        raise ValueError(f"{name}: nested too deeply to be an npcd memory export") from None


def _import(args: argparse.Namespace, path: Path) -> int:
    document = _read_document(args.file)
    if not isinstance(document, dict):
        raise ValueError(f"{args.file}: not an npcd memory export (the JSON is not an object)")
    with _store(path) as store:
        try:
            count = store.import_(document, replace=args.replace)
        except ValueError as exc:
            raise ValueError(f"{args.file}: {exc}") from None
    offered = sum(1 for c in document["conversations"] if isinstance(c, dict) and c.get("turns"))
    skipped = f" ({offered - count} already remembered, skipped)" if offered > count else ""
    print(f"imported {_plural(count, 'conversation')} from {args.file} into {path}{skipped}")
    return 0


def _forget(args: argparse.Namespace, path: Path) -> int:
    if not _exists(path):
        print(f"nothing stored of player {args.player!r} ({path} does not exist)")
        return _forget_spend(args, path)
    with _store(path) as store:
        slots = store.slots(args.player)
        if not slots:
            store.forget_player(args.player)  # conversations without a turn still name them
            print(f"nothing stored of player {args.player!r} in {path}")
            return _forget_spend(args, path)
        conversations = sum(s.conversations for s in slots)
        if not args.yes and sys.stdin.isatty():
            slot_count = len({s.slot for s in slots})
            question = (
                f"Forget everything of player {args.player!r}: "
                f"{_plural(conversations, 'conversation')} in {_plural(slot_count, 'slot')}, "
                "for every NPC? This cannot be undone. [y/N] "
            )
            try:
                answer = input(question)
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                return _fail("not forgotten", 1)
        count = store.forget_player(args.player)
    print(f"forgot player {args.player!r}: {_plural(count, 'conversation')} deleted")
    return _forget_spend(args, path)


def _forget_spend(args: argparse.Namespace, path: Path) -> int:
    """The spend file names players too (budgets per player): they go from there as well."""
    spend = path.parent / SPEND_DB_NAME
    try:
        forget_player_in_file(spend, args.player)
    except sqlite3.Error as exc:
        return _fail(f"{spend}: cannot forget the player's spend ({exc})", 2)
    return 0


def _copy(args: argparse.Namespace, path: Path) -> int:
    if not _exists(path):
        return _fail(f"no memory stored yet ({path} does not exist)", 1)
    with _store(path) as store:
        try:
            count = store.copy_slot(args.player, args.source, args.target, args.character)
        except ValueError as exc:  # the arguments were checked: this is a refusal
            return _fail(f"not copied: {exc}", 1)
    if not count:
        where = f"slot {_slot_name(args.source)!r}"
        npc = f" for NPC {args.character!r}" if args.character else ""
        return _fail(f"player {args.player!r} has no memory in {where}{npc}; nothing copied", 1)
    print(
        f"copied {_plural(count, 'conversation')} of player {args.player!r} from slot "
        f"{_slot_name(args.source)} to {_slot_name(args.target)}"
    )
    return 0


def _delete(args: argparse.Namespace, path: Path) -> int:
    if not _exists(path):
        return _fail(f"no memory stored yet ({path} does not exist)", 1)
    with _store(path) as store:
        count = store.delete_slot(args.player, args.slot, args.character)
    if not count:
        return _fail(f"no memory{_filters(args)} in {path}; nothing deleted", 1)
    print(f"deleted {_plural(count, 'conversation')}{_filters(args)}")
    return 0


_ACTIONS: dict[str, Callable[[argparse.Namespace, Path], int]] = {
    "list": _list,
    "show": _show,
    "export": _export,
    "import": _import,
    "forget": _forget,
    "copy": _copy,
    "delete": _delete,
}
