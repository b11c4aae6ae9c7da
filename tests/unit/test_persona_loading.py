"""Persona loading: strict and friendly. Every problem names its file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from npcd.personas import PersonaError, PersonaIssue, load_directory, load_persona
from npcd.personas.model import BUILTIN_EMOTION_NAMES, Budget
from tests.conftest import SAMPLES, PersonaWriter

MINIMAL = """
id: {id}
name: Test NPC
voice: alloy
backstory: A test.
"""


def only_issue(path: Path) -> PersonaIssue:
    with pytest.raises(PersonaError) as caught:
        load_persona(path)
    assert len(caught.value.issues) == 1, caught.value.issues
    return caught.value.issues[0]


def all_issues(path: Path) -> list[PersonaIssue]:
    with pytest.raises(PersonaError) as caught:
        load_persona(path)
    return caught.value.issues


def test_samples_load_and_differ() -> None:
    catalog = load_directory(SAMPLES)
    assert catalog.issues == []
    personas = [loaded.persona for loaded in catalog.personas.values()]
    assert len(personas) >= 4
    assert len({p.voice for p in personas}) == len(personas), "each sample has its own voice"
    actions = [tuple(p.action_names) for p in personas]
    assert all(actions) and len(set(actions)) == len(actions), "each sample has its own actions"
    assert "_world" not in catalog.personas, "base files are not characters"


def test_minimal_persona_gets_documented_defaults(write_persona: PersonaWriter) -> None:
    persona = load_persona(write_persona("mini.yaml", MINIMAL.format(id="mini"))).persona
    assert persona.model.output_modalities == ["audio"]
    assert persona.turn_detection.type == "server_vad"
    assert persona.turn_detection.interrupt_response is True
    assert persona.dialogue.fallback, "an NPC always has something to say"


def test_unknown_key_is_named_with_its_line_and_a_suggestion(write_persona: PersonaWriter) -> None:
    path = write_persona("typo.yaml", MINIMAL.format(id="typo") + "voise: ash\n")
    issue = only_issue(path)
    assert (issue.file, issue.line, issue.field) == (path, 5, "voise")
    assert "unknown key 'voise'" in issue.message and "did you mean 'voice'" in issue.message
    assert str(issue).startswith(f"{path}:5:1: voise: ")


def test_nested_unknown_key_has_full_field_path(write_persona: PersonaWriter) -> None:
    text = MINIMAL.format(id="nested") + "turn_detection:\n  type: server_vad\n  treshold: 0.4\n"
    issue = only_issue(write_persona("nested.yaml", text))
    assert (issue.line, issue.field) == (7, "turn_detection.treshold")
    assert "did you mean 'threshold'" in issue.message


@pytest.mark.parametrize(
    ("value", "found"),
    [("no", "yes/no value"), ("1.10", "a number"), ("2024-01-01", "date"), ("", "nothing")],
)
def test_yaml_implicit_typing_traps_are_caught(
    write_persona: PersonaWriter, value: str, found: str
) -> None:
    path = write_persona("traps.yaml", MINIMAL.format(id="traps") + f"greeting: {value}\n")
    issue = only_issue(path)
    assert (issue.line, issue.field) == (5, "greeting")
    assert "expected text" in issue.message and found in issue.message


def test_missing_required_fields_are_each_reported(write_persona: PersonaWriter) -> None:
    path = write_persona("bare.yaml", "id: bare\nbackstory: Nobody.\n")
    issues = all_issues(path)
    assert {i.field for i in issues} == {"name", "voice"}
    assert all(i.message == "required field is missing" and i.line == 1 for i in issues)


def test_unknown_voice_suggests_the_closest(write_persona: PersonaWriter) -> None:
    path = write_persona("v.yaml", MINIMAL.format(id="v").replace("alloy", "shimmr"))
    issue = only_issue(path)
    assert (issue.line, issue.field) == (3, "voice")
    assert "'shimmr' is not allowed (did you mean 'shimmer'?)" in issue.message


def test_unknown_template_variable(write_persona: PersonaWriter) -> None:
    text = MINIMAL.format(id="tv") + (
        "variables:\n  location: {default: the forge}\n"
        "greeting: Welcome to {locaton}, {player_name}. {{not a variable}}\n"
    )
    issue = only_issue(write_persona("tv.yaml", text))
    assert (issue.line, issue.field) == (7, "greeting")
    assert "unknown variable {locaton} (did you mean {location}?)" in issue.message


def test_variable_in_a_list_item_points_at_the_item(write_persona: PersonaWriter) -> None:
    text = MINIMAL.format(id="li") + "knowledge:\n  - plain fact\n  - about {weather}\n"
    issue = only_issue(write_persona("li.yaml", text))
    assert (issue.line, issue.field) == (7, "knowledge[1]")


def test_id_must_match_file_name(write_persona: PersonaWriter) -> None:
    issue = only_issue(write_persona("brom.yaml", MINIMAL.format(id="bram")))
    assert (issue.line, issue.field) == (1, "id")
    assert "must match the file name ('brom')" in issue.message


def test_bad_id_form(write_persona: PersonaWriter) -> None:
    issue = only_issue(write_persona("Bad Id.yaml", MINIMAL.format(id="Bad Id")))
    assert issue.field == "id" and "lowercase letters" in issue.message


def test_duplicate_ids_across_files(write_persona: PersonaWriter) -> None:
    write_persona("twin.yaml", MINIMAL.format(id="twin"))
    second = write_persona("twin.yml", MINIMAL.format(id="twin"))
    catalog = load_directory(second.parent)
    assert list(catalog.personas) == ["twin"]
    [issue] = catalog.issues
    assert issue.file == second and issue.field == "id"
    assert "duplicate id 'twin'" in issue.message and "twin.yaml" in issue.message


def test_duplicate_yaml_keys_are_refused(write_persona: PersonaWriter) -> None:
    path = write_persona("dup.yaml", MINIMAL.format(id="dup") + "voice: ash\n")
    issue = only_issue(path)
    assert issue.line == 5
    assert "duplicate key 'voice' (first written on line 3)" in issue.message


def test_aliases_are_refused_before_they_expand(write_persona: PersonaWriter) -> None:
    bomb = "\n".join(
        [MINIMAL.format(id="bomb"), 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol"]']
        + [
            f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ]
    )
    issue = only_issue(write_persona("bomb.yaml", bomb))
    assert issue.line == 7 and "aliases" in issue.message


def test_python_tags_are_refused(write_persona: PersonaWriter, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    text = MINIMAL.format(id="tag") + (
        f"greeting: !!python/object/apply:os.system ['touch {sentinel}']\n"
    )
    issue = only_issue(write_persona("tag.yaml", text))
    assert issue.line == 5 and "YAML syntax" in issue.message
    assert not sentinel.exists()


def test_syntax_error_has_line_and_column(write_persona: PersonaWriter) -> None:
    path = write_persona("syntax.yaml", MINIMAL.format(id="syntax") + "knowledge: [a, b\n")
    issue = only_issue(path)
    assert issue.line == 6 and issue.message.startswith("YAML syntax:")


def test_oversized_file_is_refused(write_persona: PersonaWriter) -> None:
    path = write_persona("big.yaml", MINIMAL.format(id="big") + "# " + "x" * 70_000 + "\n")
    assert "larger than 64 KiB" in only_issue(path).message


def test_non_utf8_file_is_refused(write_persona: PersonaWriter) -> None:
    path = write_persona("latin.yaml", MINIMAL.format(id="latin"))
    path.write_bytes(path.read_bytes() + b"greeting: caf\xe9\n")
    issue = only_issue(path)
    assert issue.line == 5 and "not valid UTF-8" in issue.message


def test_action_schema_must_be_an_object_schema(write_persona: PersonaWriter) -> None:
    text = MINIMAL.format(id="act") + (
        "actions:\n"
        "  - name: open_gate\n"
        "    description: Opens it.\n"
        "    parameters: {type: object, properties: {}, required: [reason]}\n"
    )
    issue = only_issue(write_persona("act.yaml", text))
    assert (issue.line, issue.field) == (8, "actions[0].parameters")
    assert "`required` names arguments not in `properties`: reason" in issue.message


def test_duplicate_action_names_and_dangling_dialogue_action(write_persona: PersonaWriter) -> None:
    text = MINIMAL.format(id="acts") + (
        "actions:\n"
        "  - {name: wave, description: Waves.}\n"
        "  - {name: wave, description: Waves again.}\n"
        "dialogue:\n"
        "  lines:\n"
        "    - when: hello\n"
        "      say: Hi.\n"
        "      action: {name: dance}\n"
    )
    issues = all_issues(write_persona("acts.yaml", text))
    found = {(i.field, i.line) for i in issues}
    assert ("actions[1].name", 7) in found
    assert ("dialogue.lines[0].action.name", 12) in found


# -- emotions --------------------------------------------------------------------------------


def test_emotions_default_to_every_builtin(write_persona: PersonaWriter) -> None:
    persona = load_persona(write_persona("calm.yaml", MINIMAL.format(id="calm"))).persona
    assert [(e.name, e.examples) for e in persona.emotions] == [
        (name, []) for name in BUILTIN_EMOTION_NAMES
    ]


def test_emotions_take_builtin_names_and_custom_ones_with_examples(
    write_persona: PersonaWriter,
) -> None:
    text = MINIMAL.format(id="moods") + (
        "emotions:\n"
        "  - neutral\n"
        "  - {name: angry, examples: [By my father's hammer!]}\n"
        "  - name: suspicious\n"
        "    examples:\n"
        "      - Who sent you?\n"
        "      - I've got my eye on you.\n"
        "  - {name: smug_2, examples: Told you so.}\n"
    )
    persona = load_persona(write_persona("moods.yaml", text)).persona
    assert [(e.name, e.examples) for e in persona.emotions] == [
        ("neutral", []),
        ("angry", ["By my father's hammer!"]),
        ("suspicious", ["Who sent you?", "I've got my eye on you."]),
        ("smug_2", ["Told you so."]),
    ]


def _emotions(names: list[str]) -> str:
    return "emotions:\n" + "".join(f"  - {{name: {n}, examples: [Hm.]}}\n" for n in names)


@pytest.mark.parametrize(
    ("emotions", "line", "field", "message"),
    [
        (
            "emotions: [neutral, angy]\n",
            5,
            "emotions[1]",
            "'angy' is not a built-in emotion (did you mean 'angry'?)",
        ),
        (
            "emotions:\n  - neutral\n  - {name: suspicious}\n",
            7,
            "emotions[1]",
            "custom emotion 'suspicious' needs `examples`",
        ),
        (
            "emotions:\n  - {name: joy, examples: []}\n",
            6,
            "emotions[0]",
            "custom emotion 'joy' needs `examples`",
        ),
        (
            "emotions:\n  - angry\n  - sad\n  - {name: angry, examples: [Grr.]}\n",
            8,
            "emotions[2]",
            "emotion 'angry' is declared twice",
        ),
        (
            "emotions:\n  - {name: Sly-Grin, examples: [Heh.]}\n",
            6,
            "emotions[0].name",
            "'Sly-Grin' must be lowercase letters, digits and _, starting with a letter",
        ),
        (_emotions(["a" * 33]), 6, "emotions[0].name", "(at most 32)"),
        (_emotions([f"mood{i}" for i in range(17)]), 5, "emotions", "at most 16 items"),
        (
            "emotions:\n  - name: sly\n    examples: [" + ", ".join(["Heh."] * 51) + "]\n",
            7,
            "emotions[0].examples",
            "at most 50 items",
        ),
        (
            f"emotions:\n  - name: sly\n    examples:\n      - Heh.\n      - {'h' * 201}\n",
            9,
            "emotions[0].examples[1]",
            "at most 200 characters",
        ),
        (
            "emotions:\n  - name: sly\n    examples: ['  ']\n",
            7,
            "emotions[0].examples[0]",
            "an example must not be blank",
        ),
        (
            "emotions:\n  - {name: sly, exampels: [Heh.]}\n",
            6,
            "emotions[0].exampels",
            "did you mean 'examples'",
        ),
        ("emotions: []\n", 5, "emotions", "at least 1 item"),
        ("emotions: [7]\n", 5, "emotions[0]", "expected a built-in emotion name or a mapping"),
    ],
)
def test_bad_emotions_name_their_line_and_field(
    write_persona: PersonaWriter, emotions: str, line: int, field: str, message: str
) -> None:
    issue = only_issue(write_persona("bad.yaml", MINIMAL.format(id="bad") + emotions))
    assert (issue.line, issue.field) == (line, field), issue
    assert message in issue.message


# -- budget ----------------------------------------------------------------------------------


def test_budget_defaults_to_no_limit_and_a_base_sets_it_world_wide(
    write_persona: PersonaWriter,
) -> None:
    mini = load_persona(write_persona("free.yaml", MINIMAL.format(id="free"))).persona
    assert mini.budget == Budget(session_usd=None, day_usd=None, player_day_usd=None)
    assert mini.budget.on_exceeded == "refuse"
    write_persona("_base.yaml", "budget:\n  day_usd: 5\n  player_day_usd: 0.5\n")
    text = MINIMAL.format(id="paid") + (
        "extends: _base.yaml\nbudget: {session_usd: 0.25, day_usd: 2.5, on_exceeded: local}\n"
    )
    budget = load_persona(write_persona("paid.yaml", text)).persona.budget
    assert budget == Budget(session_usd=0.25, day_usd=2.5, player_day_usd=0.5, on_exceeded="local")


@pytest.mark.parametrize(
    ("budget", "line", "field", "message"),
    [
        ("budget:\n  day_usd: 0\n", 6, "budget.day_usd", "greater than 0"),
        ("budget:\n  session_usd: -1.5\n", 6, "budget.session_usd", "greater than 0"),
        (
            "budget:\n  player_day_usd: '2'\n",
            6,
            "budget.player_day_usd",
            "expected a number but found text",
        ),
        ("budget:\n  on_exceeded: locl\n", 6, "budget.on_exceeded", "(did you mean 'local'?)"),
        ("budget:\n  day_ud: 1.0\n", 6, "budget.day_ud", "did you mean 'day_usd'"),
        ("budget: 5\n", 5, "budget", "expected a mapping of keys"),
    ],
)
def test_bad_budgets_name_their_line_and_field(
    write_persona: PersonaWriter, budget: str, line: int, field: str, message: str
) -> None:
    issue = only_issue(write_persona("bad.yaml", MINIMAL.format(id="bad") + budget))
    assert (issue.line, issue.field) == (line, field), issue
    assert message in issue.message, issue.message


# -- extends ---------------------------------------------------------------------------------


def test_extends_merges_mappings_and_actions_by_name(write_persona: PersonaWriter) -> None:
    write_persona(
        "_base.yaml",
        """
        voice: sage
        backstory: Base story.
        variables:
          location: {default: the square}
        actions:
          - {name: wave, description: Base wave.}
          - {name: bow, description: Bows.}
        turn_detection: {type: server_vad, threshold: 0.7}
        """,
    )
    path = write_persona(
        "child.yaml",
        """
        id: child
        extends: _base.yaml
        name: Child
        variables:
          weather: {default: rain}
        actions:
          - {name: wave, description: Child wave.}
        turn_detection: {type: semantic_vad, eagerness: low}
        """,
    )
    loaded = load_persona(path)
    persona = loaded.persona
    assert persona.voice == "sage" and persona.backstory == "Base story."
    assert set(persona.variables) == {"location", "weather"}
    assert [(a.name, a.description) for a in persona.actions] == [
        ("bow", "Bows."),
        ("wave", "Child wave."),
    ]
    # A different turn-detection type replaces the base's mapping instead of merging into it.
    assert persona.turn_detection.type == "semantic_vad"
    assert persona.turn_detection.threshold is None
    assert loaded.bases == (path.parent / "_base.yaml",)


def test_error_inherited_from_base_points_into_the_base(write_persona: PersonaWriter) -> None:
    base = write_persona(
        "_base.yaml", "voice: alloy\nbackstory: ok\nknowledge:\n  - about {nope}\n"
    )
    path = write_persona("kid.yaml", "id: kid\nextends: _base.yaml\nname: Kid\n")
    issue = only_issue(path)
    assert (issue.file, issue.line, issue.field) == (base, 4, "knowledge[0]")


def test_extends_missing_file_suggests_the_closest(write_persona: PersonaWriter) -> None:
    write_persona("_world.yaml", "voice: alloy\n")
    path = write_persona("a.yaml", MINIMAL.format(id="a") + "extends: _wrld.yaml\n")
    issue = only_issue(path)
    assert (issue.line, issue.field) == (5, "extends")
    assert "no such file '_wrld.yaml' (did you mean '_world.yaml'?)" in issue.message


def test_extends_cycle_is_named(write_persona: PersonaWriter) -> None:
    write_persona("_a.yaml", "extends: _b.yaml\n")
    write_persona("_b.yaml", "extends: _a.yaml\n")
    path = write_persona("c.yaml", MINIMAL.format(id="c") + "extends: _a.yaml\n")
    issue = only_issue(path)
    assert issue.field == "extends"
    assert "extends cycle: c.yaml -> _a.yaml -> _b.yaml -> _a.yaml" in issue.message


def test_extends_cannot_leave_the_characters_folder(
    write_persona: PersonaWriter, tmp_path: Path
) -> None:
    (tmp_path / "secret.yaml").write_text("voice: alloy\n")
    path = write_persona("esc.yaml", MINIMAL.format(id="esc") + "extends: ../secret.yaml\n")
    issue = only_issue(path)
    assert issue.field == "extends" and "outside the characters directory" in issue.message


def test_directory_collects_every_problem(samples_copy: Path) -> None:
    (samples_copy / "blacksmith.yaml").write_text(
        (samples_copy / "blacksmith.yaml").read_text().replace("voice: ash", "voice: 7")
    )
    (samples_copy / "broken.yaml").write_text("id: broken\nname: [\n")
    catalog = load_directory(samples_copy)
    assert sorted(catalog.personas) == ["gate_guard", "herbalist", "innkeeper"]
    assert {i.file.name for i in catalog.issues} == {"blacksmith.yaml", "broken.yaml"}
