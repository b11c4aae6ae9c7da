"""What an NPC says when there is no language model: scripted lines chosen by meaning.

Which persona a session speaks for is read from the protocol itself, in this order:

1. the model name: ``npcd-local:<persona id>`` (npcd's pool uses it for the local backend);
2. the session instructions: the persona whose display name appears earliest in them (npcd's
   instructions open with "You are <name>"; so do most hand-written ones);
3. otherwise a generic voice that acknowledges what it heard, so a client that only sends
   standard events (the official SDK, say) still gets a sensible spoken answer.

Then, per turn: a player line is matched by meaning (`IntentModel`) to a dialogue line's
``when`` phrases; a game event (a system note "Game event: NAME") to its ``on_trigger`` names;
nothing matching gives the persona's fallback lines in turn.

Memory: every persona also understands "do you remember me?" and its paraphrases. With npcd's
memory note in the conversation (`npcd.memory.recall`) the NPC quotes the player's last line
from it (not counting such questions); without one it says they have not met. That is how a
scripted NPC shows, audibly, what it was given.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from npcd.localbackend.engines import IntentModel
from npcd.memory.recall import player_lines
from npcd.personas.model import Persona
from npcd.personas.template import DEFAULT_PLAYER_NAME, render

MODEL_PREFIX = "npcd-local:"
GAME_EVENT = re.compile(r"^Game event: ([A-Za-z_][A-Za-z0-9_-]*)")


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    #: (action name, arguments) to request as a function call before speaking.
    action: tuple[str, dict[str, Any]] | None = None


IntentFactory = Callable[[list[tuple[int, list[str]]]], IntentModel]

#: Player lines that ask the NPC what it remembers (matched by meaning, like dialogue lines).
RECALL_PHRASES = [
    "do you remember me",
    "have we met before",
    "do you know who I am",
    "what did I tell you last time",
    "remember what I said before",
    "we spoke before, remember",
]


def find_persona(
    personas: Mapping[str, Persona], model: str | None, instructions: str | None
) -> Persona | None:
    """The persona a session speaks for (see the module docstring for the rules)."""
    if model and model.startswith(MODEL_PREFIX):
        return personas.get(model.removeprefix(MODEL_PREFIX))
    if instructions:
        best: tuple[int, Persona] | None = None
        for persona in personas.values():
            at = instructions.find(persona.name)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, persona)
        if best is not None:
            return best[1]
    return None


class Brain:
    """Chooses lines for one persona (or the generic voice when ``persona`` is None)."""

    def __init__(self, persona: Persona | None, intents: IntentFactory | None = None) -> None:
        self.persona = persona
        self._lines = persona.dialogue.lines if persona else ()
        self._says: dict[int, Iterator[str]] = {}
        fallback = persona.dialogue.fallback if persona else ["Hm. Say that again?"]
        self._fallback = itertools.cycle(fallback)
        examples = [(i, list(line.when)) for i, line in enumerate(self._lines) if line.when]
        self._intents = intents(examples) if intents and examples else None
        self._recall = intents([(0, RECALL_PHRASES)]) if intents and persona else None

    def reply_to(self, said: str, tools: set[str], memory: str | None = None) -> Reply:
        """The answer to something the player said (``memory``: npcd's memory note, if any)."""
        if self.persona is None:
            return Reply(f"I heard you say: {said.strip()}" if said.strip() else "Hm?")
        recall = self._recall
        asked = recall.match(said) if recall is not None and said.strip() else None
        scripted = self._intents.match(said) if self._intents and said.strip() else None
        if (
            recall is not None
            and asked is not None
            and (scripted is None or asked.score > scripted.score)
        ):
            # The last thing the player said that was not itself "do you remember me?".
            lines = player_lines(memory) if memory else []
            line = next((t for t in reversed(lines) if t and recall.match(t) is None), None)
            if line:
                return Reply(f'Of course I remember you. Last time you said: "{line}"')
            return Reply("I don't believe we've met.")
        match = scripted
        if match is None:
            return Reply(self._fill(next(self._fallback)))
        return self._line(match.intent, tools)

    def reply_to_event(self, name: str, tools: set[str]) -> Reply:
        """The reaction to a game trigger."""
        for index, line in enumerate(self._lines):
            if name in line.on_trigger:
                return self._line(index, tools)
        return Reply(self._fill(next(self._fallback)))

    def greeting(self) -> Reply:
        greeting = self.persona.greeting if self.persona else ""
        return Reply(self._fill(greeting or "Hello there."))

    def after_action(self, ok: bool) -> Reply:
        return Reply("There you are." if ok else "Hm. That didn't work out.")

    def _line(self, index: int, tools: set[str]) -> Reply:
        line = self._lines[index]
        says = self._says.setdefault(index, itertools.cycle(line.say))
        action = None
        if line.action is not None and line.action.name in tools:
            action = (line.action.name, dict(line.action.arguments))
        return Reply(self._fill(next(says)), action)

    def _fill(self, text: str) -> str:
        persona = self.persona
        if persona is None:
            return text
        values = {"name": persona.name, "player_name": DEFAULT_PLAYER_NAME}
        values.update({k: v.default for k, v in persona.variables.items()})
        return render(text, values)


def game_event(text: str) -> str | None:
    """The trigger name in an npcd game-event note, if ``text`` is one."""
    match = GAME_EVENT.match(text)
    return match.group(1) if match else None
