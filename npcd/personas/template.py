"""Template variables in persona text: ``{player_name}`` filled from game context.

Deliberately not ``str.format``: format strings reach attributes (``{x.__class__}``) and choke on
any stray brace in prose. Here only ``{identifier}`` is a variable, ``{{`` and ``}}`` are literal
braces, and every other brace is just text, so a writer can put JSON or emoticons in a backstory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

_TOKEN = re.compile(r"\{\{|\}\}|\{([a-z_][a-z0-9_]*)\}")

#: Variables every persona has without declaring them.
BUILTIN_VARIABLES: Mapping[str, str] = {
    "name": "the NPC's display name",
    "player_name": "the player's name (from Start.player.name)",
}
DEFAULT_PLAYER_NAME = "traveller"


def variables_in(text: str) -> Iterator[str]:
    """Names of the variables ``text`` uses, in order of appearance."""
    for match in _TOKEN.finditer(text):
        if match.group(1):
            yield match.group(1)


def render(text: str, values: Mapping[str, str]) -> str:
    """Fill variables from ``values``; a variable with no value is left as written."""

    def substitute(match: re.Match[str]) -> str:
        text = match.group(0)
        if text in ("{{", "}}"):
            return text[0]
        return values.get(match.group(1), text)

    return _TOKEN.sub(substitute, text)
