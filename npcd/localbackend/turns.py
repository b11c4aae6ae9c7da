"""When a player's turn is over: ``semantic_vad`` rules on the words heard so far; no model.

The service's ``semantic_vad`` ends a turn soon after a pause when the words sound finished and
waits longer when they do not, its patience set by ``eagerness``. Here the words are Whisper's
transcript of the speech up to the pause, and "finished" is a few rules: Whisper ends almost
every segment with a full stop, so punctuation alone says little; a last word that cannot end an
English sentence (a conjunction, article, preposition, auxiliary...) or a trailing ellipsis
or comma marks an unfinished one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["SemanticTiming", "looks_complete", "semantic_timing"]

#: Words after which a sentence goes on: ending a turn there cuts the player off.
_CONTINUES: Final = frozenset(
    """
    a an the and or but nor so because since if unless until while whereas though although
    that which who whom whose where when than as to of in on at by for from with without into
    onto about over under after before between through like my your his her its our their
    this these those some any every each no not very really just is are was were be been am
    do does did have has had will would can could shall should may might must i i'm you we
    they he she it's there's let's um uh er erm hmm
    """.split()
)
_WORD: Final = re.compile(r"[a-z']+")


def looks_complete(text: str) -> bool:
    """Whether a transcript reads as a finished utterance (a statement, question or command)."""
    text = text.strip()
    if not text or text.endswith(("...", "…", ",", ";", ":", "-")):
        return False
    if text[-1] not in ".?!":
        return False
    words = _WORD.findall(text.lower())
    return bool(words) and words[-1] not in _CONTINUES


@dataclass(frozen=True, slots=True)
class SemanticTiming:
    """Silence (ms) that ends a turn: after finished-sounding words, and after any words."""

    complete_ms: int
    incomplete_ms: int


#: The service waits up to 8 / 4 / 2 s (low / medium / high) for an unfinished thought; a game
#: cannot leave an NPC staring that long on a rule's guess, so the waits are shorter, in the
#: same order.
_TIMINGS: Final = {
    "low": SemanticTiming(350, 2000),
    "medium": SemanticTiming(200, 1000),
    "high": SemanticTiming(120, 500),
}


def semantic_timing(eagerness: str | None) -> SemanticTiming:
    """The silences for ``eagerness`` (``auto`` and unset mean ``medium``, as the service)."""
    return _TIMINGS.get(eagerness or "medium", _TIMINGS["medium"])
