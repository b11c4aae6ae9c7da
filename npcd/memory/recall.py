"""A `Recall` as the note an NPC reads before a conversation, and back (sans-I/O).

The note is plain text added to the NPC's instructions. Every remembered text is put on one
line (its whitespace, newlines included, collapsed), so a player who once said
"...\\nPlayer: ..." cannot forge lines of the note; the local backend's scripted brain reads
the last ``Player:`` line back with `last_player_line`.
"""

from __future__ import annotations

from typing import Final

from npcd.memory.store import Recall, Role

__all__ = ["LABELS", "MEMORY_NOTE_PREFIX", "last_player_line", "memory_note", "player_lines"]

#: How every note starts (the local backend finds the note by it).
MEMORY_NOTE_PREFIX: Final = "What you remember of earlier conversations with "

#: The prefix of each remembered turn's line, by role.
LABELS: Final[dict[Role, str]] = {
    "player": "Player: ",
    "npc": "You: ",
    "action": "You did: ",
    "result": "Result: ",
    "event": "Event: ",
}
_PLAYER = LABELS["player"]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def memory_note(recall: Recall, player_name: str) -> str:
    """The note for ``recall`` ("" when there is nothing to remember).

    Its size is the recall's text plus the header and a label per line (about 120 characters
    and 10 per turn), which the recall budget does not count.
    """
    turns = [turn for turn in recall.turns if turn.text.strip()]  # a line never transcribed
    if not recall.summary and not turns:
        return ""
    n = recall.conversations
    name = _one_line(player_name) or "the player"
    plural = "" if n == 1 else "s"
    lines = [f"{MEMORY_NOTE_PREFIX}{name} (npcd memory; {n} earlier conversation{plural}):"]
    if recall.summary:
        lines.append(f"Summary: {_one_line(recall.summary)}")
    if turns:
        lines.append("Most recent:")
        lines.extend(f"{LABELS[turn.role]}{_one_line(turn.text)}" for turn in turns)
    return "\n".join(lines)


def player_lines(note: str) -> list[str]:
    """The texts of the ``Player:`` lines of a `memory_note`, oldest first."""
    return [line[len(_PLAYER) :] for line in note.splitlines() if line.startswith(_PLAYER)]


def last_player_line(note: str) -> str | None:
    """The text of the last ``Player:`` line of a `memory_note`, if it has one."""
    lines = player_lines(note)
    return lines[-1] if lines else None
