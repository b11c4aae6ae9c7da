"""Which persona a local session speaks for, and which line it says (no engines needed)."""

from __future__ import annotations

from collections.abc import Iterable

from npcd.localbackend.brain import Brain, find_persona, game_event
from npcd.localbackend.defaults import default_engines
from npcd.localbackend.engines import Match
from npcd.personas import load_directory
from npcd.personas.prompt import render_instructions
from tests.conftest import SAMPLES

PERSONAS = {pid: loaded.persona for pid, loaded in load_directory(SAMPLES).personas.items()}


class ByWord:
    """An intent model that matches on a shared word: enough to test line selection."""

    def __init__(self, intents: Iterable[tuple[int, Iterable[str]]]):
        self.intents = [
            (i, {w for p in phrases for w in p.lower().split()}) for i, phrases in intents
        ]

    def match(self, text: str) -> Match | None:
        words = set(text.lower().split())
        for index, vocabulary in self.intents:
            if words & vocabulary:
                return Match(index, 1.0, "")
        return None


def test_model_name_pins_the_persona() -> None:
    assert find_persona(PERSONAS, "npcd-local:innkeeper", None) is PERSONAS["innkeeper"]
    assert find_persona(PERSONAS, "npcd-local:nobody", "You are Brom Ironhand") is None


def test_instructions_identify_each_sample_persona() -> None:
    for persona in PERSONAS.values():
        found = find_persona(PERSONAS, "gpt-realtime", render_instructions(persona, {}))
        assert found is persona, f"{persona.id} is recognised from its own instructions"


def test_unknown_persona_gets_a_generic_but_sensible_answer() -> None:
    assert find_persona(PERSONAS, "gpt-realtime", "You are Bob the builder.") is None
    reply = Brain(None).reply_to("where is the bakery?", set())
    assert reply.text == "I heard you say: where is the bakery?" and reply.action is None


def test_lines_actions_and_fallbacks() -> None:
    brain = Brain(PERSONAS["blacksmith"], ByWord)
    sell = brain.reply_to("buy the sword", {"sell_item", "repair_item"})
    assert sell.action == ("sell_item", {"item": "iron sword", "price_gold": 40})
    assert brain.reply_to("buy the sword", set()).action is None, "action only if offered"
    first, second = brain.reply_to("xyzzy", set()), brain.reply_to("xyzzy", set())
    assert [first.text, second.text] == list(PERSONAS["blacksmith"].dialogue.fallback)
    assert brain.reply_to_event("player_drew_weapon", set()).text.startswith("Put that away")
    assert (
        brain.greeting().text == "Well met, traveller. Looking for steel, or just warming "
        "your hands at my forge?"
    )


def test_game_event_notes() -> None:
    assert game_event("Game event: player_drew_weapon\nweapon: axe") == "player_drew_weapon"
    assert game_event("The player waved.") is None


NOTE = (
    "What you remember of earlier conversations with Ada (npcd memory; 1 earlier conversation):\n"
    "Most recent:\nPlayer: I need a sword for the wolf hunt.\nYou: Forty gold.\n"
    "Player: Do you remember me?\nYou: Of course."
)


def test_do_you_remember_me_quotes_the_memory_note_or_says_we_have_not_met() -> None:
    brain = default_engines().brain(PERSONAS["blacksmith"])
    remembered = brain.reply_to("Do you remember me?", set(), NOTE)
    assert remembered.text.endswith('"I need a sword for the wolf hunt."'), (
        "the last line that was not itself the question"
    )
    assert brain.reply_to("Have we met before?", set(), None).text == "I don't believe we've met."
    assert brain.reply_to("Have we met before?", set(), "no note here").text == (
        "I don't believe we've met."
    )


def test_scripted_lines_still_win_over_the_memory_question() -> None:
    """ "Who are you?" is the blacksmith's own line, not a question about memory."""
    for persona in PERSONAS.values():
        brain = default_engines().brain(persona)
        for line in persona.dialogue.lines:
            for phrase in line.when:
                reply = brain.reply_to(phrase, set(), NOTE)
                assert "remember you" not in reply.text and "we've met" not in reply.text, (
                    f"{persona.id}: {phrase!r} was taken for a memory question"
                )
