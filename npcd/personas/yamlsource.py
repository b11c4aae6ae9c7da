"""Hostile-input-safe YAML reading that remembers where every value came from.

Persona files come from outside (modders, writers, downloaded packs), so reading one must be cheap
and harmless whatever it holds, and every later complaint must point at a file and line. PyYAML's
``safe_load`` alone is not enough: it silently keeps the last of two duplicate keys, and aliases
let a few hundred bytes expand into millions of nodes when walked (billion laughs). This module
builds on ``yaml.SafeLoader``'s composer and refuses both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: Largest persona file read, in bytes; the richest sample is under 8 KiB.
MAX_FILE_BYTES = 64 * 1024
#: Deepest nesting of mappings and lists accepted.
MAX_DEPTH = 24

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a value was written: file and 1-based line and column."""

    file: Path
    line: int
    column: int


class YamlSourceError(Exception):
    """The file cannot be read as a persona document at all (syntax, encoding, size, aliases)."""

    def __init__(self, file: Path, message: str, line: int | None = None, column: int = 1):
        super().__init__(message)
        self.file = file
        self.message = message
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """Plain data (dicts, lists, scalars) plus the origin of every key and list item in it."""

    data: Any
    origins: dict[FieldPath, Origin]

    def origin(self, path: FieldPath) -> Origin | None:
        """The origin of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            found = self.origins.get(path[:end])
            if found is not None:
                return found
        return None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases: they are the only way a tiny file becomes a huge tree."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None,
                None,
                "aliases (*name) are not allowed in persona files; "
                "use `extends:` to share text between characters",
                event.start_mark,
            )
        node: yaml.Node | None = super().compose_node(parent, index)
        return node


def read_yaml(file: Path, *, max_bytes: int = MAX_FILE_BYTES) -> YamlDocument:
    """Read one YAML document from ``file`` with its origins, or raise `YamlSourceError`."""
    try:
        with file.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise YamlSourceError(file, f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise YamlSourceError(file, f"file is larger than {max_bytes // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlSourceError(file, "file is not valid UTF-8 text", line) from None
    return parse_yaml(text, file)


def parse_yaml(text: str, file: Path) -> YamlDocument:
    """Parse YAML ``text`` (named ``file`` in errors) into a `YamlDocument`."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument({}, {(): Origin(file, 1, 1)})
        origins: dict[FieldPath, Origin] = {}
        _check_and_record(node, (), file, origins, depth=0)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, 1)
        raise YamlSourceError(file, f"YAML syntax: {problem}", line, column) from None
    except yaml.YAMLError as exc:
        raise YamlSourceError(file, f"YAML syntax: {exc}") from None
    finally:
        loader.dispose()
    return YamlDocument(data, origins)


def _check_and_record(
    node: yaml.Node,
    path: FieldPath,
    file: Path,
    origins: dict[FieldPath, Origin],
    depth: int,
) -> None:
    """Walk the node tree: record origins, refuse duplicate keys and excessive depth."""
    origins[path] = Origin(file, node.start_mark.line + 1, node.start_mark.column + 1)
    if depth > MAX_DEPTH:
        raise yaml.MarkedYAMLError(
            problem=f"nesting deeper than {MAX_DEPTH} levels", problem_mark=node.start_mark
        )
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.MarkedYAMLError(
                    problem="keys must be plain names, not lists or mappings",
                    problem_mark=key_node.start_mark,
                )
            key = str(key_node.value)
            if key == "<<":
                raise yaml.MarkedYAMLError(
                    problem="merge keys (<<) are not allowed; use `extends:`",
                    problem_mark=key_node.start_mark,
                )
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {key!r} (first written on line {first})",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = key_node
            child = (*path, key)
            _check_and_record(value_node, child, file, origins, depth + 1)
            # A key's own position is the more useful place to point at than its value's.
            origins[child] = Origin(
                file, key_node.start_mark.line + 1, key_node.start_mark.column + 1
            )
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_and_record(item, (*path, index), file, origins, depth + 1)
