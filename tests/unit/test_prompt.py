"""Persona + game context -> instructions and greeting."""

from __future__ import annotations

from npcd.personas import load_directory
from npcd.personas.model import Persona
from npcd.personas.prompt import render_greeting, render_instructions
from npcd.personas.template import render, variables_in
from tests.conftest import SAMPLES


def blacksmith() -> Persona:
    return load_directory(SAMPLES).personas["blacksmith"].persona


def test_template_syntax_is_only_identifiers_in_braces() -> None:
    text = "Hi {player_name}! {{literal}} {not a var} {x.__class__} {0} {}"
    assert list(variables_in(text)) == ["player_name"]
    assert (
        render(text, {"player_name": "Ada"}) == "Hi Ada! {literal} {not a var} {x.__class__} {0} {}"
    )


def test_instructions_use_context_over_defaults() -> None:
    text = render_instructions(blacksmith(), {"player_name": "Ada", "location": "the forge"})
    text = " ".join(text.split())
    assert "talking to Ada at the forge in the afternoon" in text
    assert "{" not in text.replace("{{", ""), "no unfilled variables"


def test_instructions_fall_back_to_defaults() -> None:
    text = " ".join(render_instructions(blacksmith(), {}).split())
    assert "talking to traveller at the market square" in text


def test_every_persona_section_reaches_the_model() -> None:
    persona = blacksmith()
    text = render_instructions(persona, {})
    for needle in (
        "forged blades for the king's army",  # backstory
        "gruff, honest",  # personality
        'Calls everyone "friend"',  # speaking style
        "iron sword 40 gold",  # knowledge
        "Find an apprentice",  # goals
        "Captain Hale: Old comrade",  # relationships
    ):
        assert needle in text


def test_undeclared_context_becomes_game_state() -> None:
    text = render_instructions(
        blacksmith(), {"weather": "heavy  rain", "location": "x", "empty": ""}
    )
    assert text.endswith("# Current game state\n- weather: heavy rain")


def test_greeting_is_rendered() -> None:
    assert render_greeting(blacksmith(), {"player_name": "Ada"}).startswith("Well met, Ada.")


def test_instructions_say_who_the_npc_is_even_when_the_base_does_not() -> None:
    innkeeper = load_directory(SAMPLES).personas["innkeeper"].persona
    text = render_instructions(innkeeper, {})
    assert text.startswith("You are Oswin Barrow: Jovial, nosy innkeeper")
    assert text.count("You are Oswin Barrow") == 1
    assert not render_instructions(blacksmith(), {}).startswith("You are Brom Ironhand:"), (
        "a persona whose own instructions name it gets no extra line"
    )
