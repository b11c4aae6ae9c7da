"""Persona files -> validated `Persona` objects, or a list of problems each naming file and line.

A writer fixing a broken pack wants every problem at once, not one per run, so loading collects
issues across all files instead of stopping at the first. Files starting with ``_`` are bases,
used only through ``extends:``; they are never characters themselves.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from npcd.personas.model import Persona, format_path
from npcd.personas.yamlsource import (
    FieldPath,
    Origin,
    YamlDocument,
    YamlSourceError,
    read_yaml,
)

#: How many persona files one directory may hold (each becomes a backend session).
MAX_PERSONAS = 1000
#: Longest `extends` chain, so a mistake cannot send the loader far.
MAX_EXTENDS_DEPTH = 8
PERSONA_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class PersonaIssue:
    """One problem in one persona file."""

    file: Path
    line: int | None
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else f"{self.file}"
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"


class PersonaError(Exception):
    """One or more persona files are invalid; `issues` lists every problem found."""

    def __init__(self, issues: Sequence[PersonaIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


@dataclass(frozen=True, slots=True)
class LoadedPersona:
    """A persona and the file (plus bases) it was read from, for reloads and messages."""

    persona: Persona
    source: Path
    bases: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class Catalog:
    """The result of loading a directory: the good personas and the problems of the bad ones."""

    personas: dict[str, LoadedPersona]
    issues: list[PersonaIssue]


def load_persona(file: Path, *, root: Path | None = None) -> LoadedPersona:
    """Load one persona file (following `extends:` within ``root``), or raise `PersonaError`."""
    root = (root or file.parent).resolve()
    document, bases = _resolve_extends(file, root, chain=())
    data = document.data
    issues: list[PersonaIssue] = []
    if not isinstance(data, dict):
        raise PersonaError([_issue(document, (), "a persona file must be a mapping of keys")])
    try:
        persona = Persona.model_validate(data, context={"defer_consistency": True})
    except ValidationError as exc:
        raise PersonaError([_validation_issue(document, error) for error in exc.errors()]) from None
    for path, message in persona.consistency_problems():
        issues.append(_issue(document, path, message))
    if persona.id != file.stem:
        issues.append(
            _issue(
                document,
                ("id",),
                f"id {persona.id!r} must match the file name ({file.stem!r}), "
                f"so the file for a character is always characters/<id>.yaml",
            )
        )
    if issues:
        raise PersonaError(issues)
    return LoadedPersona(persona, file, bases)


def load_directory(root: Path) -> Catalog:
    """Load every persona in ``root`` (not recursive), collecting all problems."""
    if not root.is_dir():
        return Catalog({}, [PersonaIssue(root, None, 1, "", "characters directory not found")])
    files = sorted(p for p in root.iterdir() if _is_persona_file(p))
    return load_files(files, root=root)


def load_files(files: Iterable[Path], *, root: Path | None = None) -> Catalog:
    """Load the given persona files; duplicate ids across them are problems too."""
    personas: dict[str, LoadedPersona] = {}
    issues: list[PersonaIssue] = []
    file_list = list(files)
    if len(file_list) > MAX_PERSONAS:
        over = PersonaIssue(
            file_list[MAX_PERSONAS],
            None,
            1,
            "",
            f"more than {MAX_PERSONAS} persona files; the rest were not loaded",
        )
        issues.append(over)
        file_list = file_list[:MAX_PERSONAS]
    for file in file_list:
        try:
            loaded = load_persona(file, root=root or file.parent)
        except PersonaError as exc:
            issues.extend(exc.issues)
            continue
        other = personas.get(loaded.persona.id)
        if other is not None:
            issues.append(
                PersonaIssue(
                    file,
                    None,
                    1,
                    "id",
                    f"duplicate id {loaded.persona.id!r}: also defined in {other.source}",
                )
            )
            continue
        personas[loaded.persona.id] = loaded
    return Catalog(dict(sorted(personas.items())), issues)


def _is_persona_file(path: Path) -> bool:
    return (
        path.suffix in PERSONA_SUFFIXES and not path.name.startswith(("_", ".")) and path.is_file()
    )


# -- extends ---------------------------------------------------------------------------------


def _resolve_extends(
    file: Path, root: Path, chain: tuple[Path, ...]
) -> tuple[YamlDocument, tuple[Path, ...]]:
    """Read ``file`` and merge it over its base chain; returns the document and the bases used."""
    real = file.resolve()
    if not real.is_relative_to(root):
        raise PersonaError(
            [PersonaIssue(file, None, 1, "", f"file is outside the characters directory {root}")]
        )
    try:
        document = read_yaml(file)
    except YamlSourceError as exc:
        raise PersonaError(
            [PersonaIssue(exc.file, exc.line, exc.column, "", exc.message)]
        ) from None
    data = document.data
    if not isinstance(data, dict) or "extends" not in data:
        return document, ()
    target = data["extends"]
    if not isinstance(target, str) or not target.strip():
        raise PersonaError([_issue(document, ("extends",), "must be a file path, e.g. _base.yaml")])
    base_file = file.parent / target
    if not base_file.resolve().is_relative_to(root):
        raise PersonaError(
            [_issue(document, ("extends",), f"{target!r} is outside the characters directory")]
        )
    if not base_file.is_file():
        hint = _close_file(file.parent, target)
        raise PersonaError([_issue(document, ("extends",), f"no such file {target!r}{hint}")])
    here = (*chain, real)
    if base_file.resolve() in here:
        cycle = " -> ".join(p.name for p in (*here, base_file))
        raise PersonaError([_issue(document, ("extends",), f"extends cycle: {cycle}")])
    if len(here) >= MAX_EXTENDS_DEPTH:
        raise PersonaError(
            [_issue(document, ("extends",), f"extends chain longer than {MAX_EXTENDS_DEPTH}")]
        )
    base, base_chain = _resolve_extends(base_file, root, here)
    if not isinstance(base.data, dict):
        raise PersonaError([_issue(base, (), "a base persona file must be a mapping of keys")])
    merged = _merge_documents(base, document)
    return merged, (base_file, *base_chain)


def _merge_documents(base: YamlDocument, child: YamlDocument) -> YamlDocument:
    """Child over base: mappings merge key by key (unless the child changes the mapping's `type`),
    `actions` merge by name, and everything else the child writes replaces the base's value."""
    origins: dict[FieldPath, Origin] = {}
    data = _merge(base, child, (), base.data, child.data, origins)
    return YamlDocument(data, origins)


def _merge(
    base_doc: YamlDocument,
    child_doc: YamlDocument,
    path: FieldPath,
    base: Any,
    child: Any,
    origins: dict[FieldPath, Origin],
) -> Any:
    # A mapping that changes its `type` (turn_detection: server_vad -> semantic_vad) is a
    # different thing, and the base's type-specific keys would not fit it: replace, don't merge.
    retyped = (
        isinstance(base, dict)
        and isinstance(child, dict)
        and base.get("type", None) != (child.get("type", base.get("type")))
    )
    if isinstance(base, dict) and isinstance(child, dict) and not retyped:
        _copy_origin(child_doc, path, path, origins, subtree=False)
        result: dict[str, Any] = {}
        for key, value in base.items():
            if key not in child and key != "extends":
                result[key] = value
                _copy_origin(base_doc, (*path, key), (*path, key), origins)
        for key, value in child.items():
            if key in base and key != "extends":
                result[key] = _merge(base_doc, child_doc, (*path, key), base[key], value, origins)
            else:
                result[key] = value
                _copy_origin(child_doc, (*path, key), (*path, key), origins)
        return result
    if path == ("actions",) and isinstance(base, list) and isinstance(child, list):
        _copy_origin(child_doc, path, path, origins, subtree=False)
        child_names = {a.get("name") for a in child if isinstance(a, dict)}
        merged: list[Any] = []
        for index, action in enumerate(base):
            if not (isinstance(action, dict) and action.get("name") in child_names):
                _copy_origin(base_doc, (*path, index), (*path, len(merged)), origins)
                merged.append(action)
        for index, action in enumerate(child):
            _copy_origin(child_doc, (*path, index), (*path, len(merged)), origins)
            merged.append(action)
        return merged
    _copy_origin(child_doc, path, path, origins)
    return child


def _copy_origin(
    doc: YamlDocument,
    source: FieldPath,
    target: FieldPath,
    origins: dict[FieldPath, Origin],
    *,
    subtree: bool = True,
) -> None:
    """Copy the origins of ``source`` (and below, if ``subtree``) to ``target`` in ``origins``."""
    size = len(source)
    for path, origin in doc.origins.items():
        if path == source or (subtree and path[:size] == source):
            origins[target + path[size:]] = origin


def _close_file(folder: Path, target: str) -> str:
    names = [p.name for p in folder.iterdir() if p.suffix in PERSONA_SUFFIXES]
    close = difflib.get_close_matches(Path(target).name, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- turning validation errors into writer-friendly issues ---------------------------------------


def _issue(document: YamlDocument, path: FieldPath, message: str) -> PersonaIssue:
    origin = document.origin(path)
    file = origin.file if origin else Path("?")
    return PersonaIssue(
        file,
        origin.line if origin else None,
        origin.column if origin else 1,
        format_path(path) if path else "",
        message,
    )


def _validation_issue(document: YamlDocument, error: Any) -> PersonaIssue:
    path: FieldPath = tuple(error["loc"])
    if path and path[-1] == "[key]":  # pydantic's marker for a bad mapping key
        path = path[:-1]
    return _issue(document, path, _describe(error, path))


_KNOWN_KEYS: set[str] = set()


def _known_keys() -> set[str]:
    """Every key the persona format knows, for did-you-mean hints on unknown keys."""
    if not _KNOWN_KEYS:
        stack: list[type[Any]] = [Persona]
        while stack:
            model = stack.pop()
            for name, field in model.model_fields.items():
                _KNOWN_KEYS.add(name)
                for candidate in _model_types(field.annotation):
                    if candidate.__name__ not in {m.__name__ for m in stack}:
                        stack.append(candidate)
    return _KNOWN_KEYS


def _model_types(annotation: Any) -> list[type[Any]]:
    found: list[type[Any]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in getattr(annotation, "__args__", ()):
        found.extend(_model_types(arg))
    return found


_TYPE_WORDS = {
    bool: "a yes/no value (YAML reads yes, no, on, off, true, false that way)",
    int: "a number",
    float: "a number",
    type(None): "nothing (the value is empty)",
    list: "a list",
    dict: "a mapping",
    str: "text",
}


def _what(value: Any) -> str:
    for kind, words in _TYPE_WORDS.items():
        if type(value) is kind:
            return words
    return f"a {type(value).__name__} value (YAML read it as a date or other type)"


def _describe(error: Any, path: FieldPath) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        close = difflib.get_close_matches(key, sorted(_known_keys()), n=1, cutoff=0.7)
        return f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "string_type":
        quote = "; put the value in quotes" if isinstance(value, bool | int | float) else ""
        return f"expected text but found {_what(value)}{quote}"
    if kind in ("int_type", "float_type", "bool_type"):
        wanted = {
            "int_type": "a whole number",
            "float_type": "a number",
            "bool_type": "true or false",
        }
        return f"expected {wanted[kind]} but found {_what(value)}"
    if kind in ("list_type", "dict_type", "model_type", "model_attributes_type"):
        wanted_kind = "a list" if kind == "list_type" else "a mapping of keys"
        return f"expected {wanted_kind} but found {_what(value)}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        hint = ""
        if isinstance(value, str):
            options = [o.strip(" '") for o in str(expected).replace(" or ", ", ").split(",")]
            close = difflib.get_close_matches(value, options, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{value!r} is not allowed{hint}; choose one of {expected}"
    if kind == "string_pattern_mismatch":
        return _pattern_message(path, value)
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return str(error["msg"])


def _pattern_message(path: FieldPath, value: Any) -> str:
    field = path[-1] if path else ""
    if path and path[0] == "variables":
        return f"variable name {value!r} must be lowercase letters, digits and _ (like player_name)"
    if field == "id":
        return f"{value!r} must be lowercase letters, digits, - and _ (at most 64), like brom_smith"
    if path and path[0] == "emotions":
        if "examples" in path:
            return "an example must not be blank"
        return (
            f"{value!r} must be lowercase letters, digits and _, starting with a letter "
            "(at most 32), like suspicious"
        )
    if field == "name" or (path and path[0] in ("actions", "dialogue")):
        return f"{value!r} must be letters, digits, _ and - (at most 64), like sell_item"
    return f"{value!r} has the wrong form"
