"""The published JSON Schema, the model and the sample characters agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from npcd.personas import load_directory
from npcd.personas.model import Persona, base_persona_json_schema, persona_json_schema
from npcd.personas.yamlsource import read_yaml
from tests.conftest import SAMPLES

SCHEMA_FILES = {
    "persona.schema.json": persona_json_schema,
    "persona-base.schema.json": base_persona_json_schema,
}


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_published_schema_is_up_to_date(name: str) -> None:
    published = json.loads((SAMPLES / name).read_text())
    assert published == SCHEMA_FILES[name](), f"regenerate with `npcd schema > characters/{name}`"


def merged_sample_data() -> list[tuple[str, dict[str, Any]]]:
    """Each sample as the loader merges it (base + file), as plain data."""
    out = []
    for persona_id, loaded in load_directory(SAMPLES).personas.items():
        data = loaded.persona.model_dump(mode="json", exclude_defaults=True)
        out.append((persona_id, data))
    return out


@pytest.mark.parametrize(("persona_id", "data"), merged_sample_data())
def test_samples_validate_against_the_schema(persona_id: str, data: dict[str, Any]) -> None:
    jsonschema.validate(data, persona_json_schema())


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("_*.yaml")), ids=lambda p: p.name)
def test_base_files_validate_against_the_base_schema(path: Path) -> None:
    jsonschema.validate(read_yaml(path).data, base_persona_json_schema())


def test_schema_rejects_what_the_loader_rejects() -> None:
    schema = persona_json_schema()
    good = {"id": "x", "name": "X", "voice": "ash", "backstory": "b"}
    jsonschema.validate(good, schema)
    for bad in (
        {**good, "voise": "ash"},
        {**good, "voice": "robot"},
        {k: v for k, v in good.items() if k != "name"},
        {**good, "actions": [{"name": "has space", "description": "d"}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


_SLY = {"name": "sly", "examples": ["Heh."]}


# Every emotions rule but one: JSON Schema cannot say "names are unique", so only the loader
# refuses repeats (tests/unit/test_persona_loading.py).


@pytest.mark.parametrize(
    ("emotions", "valid"),
    [
        (["neutral", "angry"], True),
        ([{"name": "happy"}], True),
        ([{"name": "happy", "examples": ["Ha!"]}], True),
        ([_SLY], True),
        ([{"name": f"mood{i}", "examples": ["Hm."]} for i in range(16)], True),
        (["joy"], False),
        ([{"name": "joy"}], False),
        ([{"name": "joy", "examples": []}], False),
        ([{"name": "Sly", "examples": ["Heh."]}], False),
        ([{"name": "s" * 33, "examples": ["Heh."]}], False),
        ([], False),
        ([{"name": f"mood{i}", "examples": ["Hm."]} for i in range(17)], False),
        ([{"name": "sly", "examples": ["Heh."] * 51}], False),
        ([{"name": "sly", "examples": ["h" * 201]}], False),
        ([{"name": "sly", "examples": ["  "]}], False),
        ([{**_SLY, "intensity": 1}], False),
        ([7], False),
    ],
)
def test_schema_and_loader_agree_on_emotions(emotions: list[Any], valid: bool) -> None:
    data = {"id": "x", "name": "X", "voice": "ash", "backstory": "b", "emotions": emotions}
    try:
        jsonschema.validate(data, persona_json_schema())
        schema_valid = True
    except jsonschema.ValidationError:
        schema_valid = False
    try:
        Persona.model_validate(data)
        loader_valid = True
    except ValidationError:
        loader_valid = False
    assert (schema_valid, loader_valid) == (valid, valid)


@pytest.mark.parametrize(
    ("budget", "valid"),
    [
        ({}, True),
        ({"session_usd": 0.5, "day_usd": 10, "player_day_usd": 2.0, "on_exceeded": "local"}, True),
        ({"day_usd": None, "on_exceeded": "refuse"}, True),
        ({"day_usd": 0}, False),
        ({"session_usd": -1.0}, False),
        ({"player_day_usd": "2"}, False),
        ({"on_exceeded": "ignore"}, False),
        ({"daily_usd": 1.0}, False),
    ],
)
def test_schema_and_loader_agree_on_budgets(budget: dict[str, Any], valid: bool) -> None:
    data = {"id": "x", "name": "X", "voice": "ash", "backstory": "b", "budget": budget}
    try:
        jsonschema.validate(data, persona_json_schema())
        schema_valid = True
    except jsonschema.ValidationError:
        schema_valid = False
    try:
        Persona.model_validate(data)
        loader_valid = True
    except ValidationError:
        loader_valid = False
    assert (schema_valid, loader_valid) == (valid, valid)


def _field_paths(model: type[Any], prefix: str = "") -> set[str]:
    paths = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.add(path)
        annotation = field.annotation
        inner = [annotation, *getattr(annotation, "__args__", ())]
        for candidate in inner:
            if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                paths |= _field_paths(candidate, path + ".")
            for arg in getattr(candidate, "__args__", ()):
                if isinstance(arg, type) and hasattr(arg, "model_fields"):
                    paths |= _field_paths(arg, path + ".")
    return paths


def _written_paths(data: Any, prefix: str = "") -> set[str]:
    paths = set()
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}{key}"
            paths.add(path)
            # variables: {name: {...}} -- the variable names are data, their fields are paths
            if key == "variables" and isinstance(value, dict):
                for var in value.values():
                    paths |= _written_paths(var, path + ".")
            elif key != "parameters" and key != "arguments":
                paths |= _written_paths(value, path + ".")
    elif isinstance(data, list):
        for item in data:
            paths |= _written_paths(item, prefix)
    return paths


def test_samples_show_every_field() -> None:
    written: set[str] = set()
    for path in SAMPLES.glob("*.yaml"):
        written |= _written_paths(read_yaml(path).data)
    missing = _field_paths(Persona) - written
    assert not missing, f"no sample shows: {sorted(missing)}"
