"""Persona + game context -> the instructions text a Realtime session is configured with.

The writer's fields become labelled sections in a fixed order, so a model reads a persona the
same way every time and a writer can predict what it sees. Context the persona does not declare
as a variable is still passed on, as "current game state" lines: the game can tell an NPC that it
is raining without anyone editing the persona.
"""

from __future__ import annotations

from collections.abc import Mapping

from npcd.personas.model import Persona
from npcd.personas.template import DEFAULT_PLAYER_NAME, render

#: Longest context value passed to the model; games sometimes send whole descriptions.
MAX_CONTEXT_VALUE = 500


def variable_values(persona: Persona, context: Mapping[str, str]) -> dict[str, str]:
    """Every variable's value: game context over persona defaults over built-ins."""
    values = {"name": persona.name, "player_name": DEFAULT_PLAYER_NAME}
    values.update({name: var.default for name, var in persona.variables.items()})
    values.update({k: v for k, v in context.items() if v != "" or k not in values})
    if not values["player_name"]:
        values["player_name"] = DEFAULT_PLAYER_NAME
    return values


def render_instructions(persona: Persona, context: Mapping[str, str] | None = None) -> str:
    """The full instructions for ``persona`` in the given game context."""
    context = context or {}
    values = variable_values(persona, context)

    def fill(text: str) -> str:
        return render(text, values).strip()

    sections: list[str] = []
    instructions = fill(persona.instructions) if persona.instructions.strip() else ""
    if persona.name not in instructions:
        # Shared base instructions (extends:) rarely say who this NPC is; the model must know.
        who = f"You are {persona.name}"
        who += f": {persona.description.rstrip('.')}." if persona.description else "."
        sections.append(who + ("" if instructions else " Stay in character."))
    if instructions:
        sections.append(instructions)
    if persona.backstory.strip():
        sections.append("# Who you are\n" + fill(persona.backstory))
    if persona.personality:
        sections.append("# Personality\n" + ", ".join(fill(t) for t in persona.personality))
    if persona.speaking_style.strip():
        sections.append("# How you speak\n" + fill(persona.speaking_style))
    if persona.knowledge:
        sections.append("# What you know\n" + "\n".join(f"- {fill(k)}" for k in persona.knowledge))
    if persona.goals:
        sections.append("# What you want\n" + "\n".join(f"- {fill(g)}" for g in persona.goals))
    if persona.relationships:
        lines = [f"- {r.name}: {fill(r.relation)}" for r in persona.relationships]
        sections.append("# People you know\n" + "\n".join(lines))
    state = _game_state(persona, context)
    if state:
        sections.append("# Current game state\n" + "\n".join(state))
    return "\n\n".join(sections)


def render_greeting(persona: Persona, context: Mapping[str, str] | None = None) -> str:
    """The persona's greeting with variables filled in ('' when it has none)."""
    return render(persona.greeting, variable_values(persona, context or {})).strip()


def _game_state(persona: Persona, context: Mapping[str, str]) -> list[str]:
    """Context keys the persona's texts do not already use, as ``- key: value`` lines."""
    used = {"name", "player_name", *persona.variables}
    lines = []
    for key in sorted(context):
        if key in used or not context[key].strip():
            continue
        value = " ".join(context[key].split())[:MAX_CONTEXT_VALUE]
        lines.append(f"- {key.replace('_', ' ')}: {value}")
    return lines
