"""Reading parsed JSON into typed values, with the Realtime service's error codes and paths.

Internal to the codec. Two strictness levels share one code path: client events are decoded
strictly (unknown keys are rejected, as the real service does, so npcd's tests catch shape bugs
against the local server), server events leniently (unknown keys are ignored, because the
service adds fields and must not break old daemons). Type errors are errors in both modes.

`Shape` describes a dataclass as a list of `Field`s once, and derives both directions from it,
so a renamed field is renamed in one place for both ends of the protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from npcd.realtime.values import UNSET, Dialect, EncodeError, EventError

BOTH: frozenset[Dialect] = frozenset(Dialect)
GA_ONLY: frozenset[Dialect] = frozenset({Dialect.GA})
BETA_ONLY: frozenset[Dialect] = frozenset({Dialect.BETA})


@dataclass(frozen=True, slots=True)
class Ctx:
    """Decoding context: which dialect, and whether unknown keys are errors (client side)."""

    dialect: Dialect
    strict: bool


# --------------------------------------------------------------------------------------------
# Errors, phrased like the service's so the local server can echo them verbatim
# --------------------------------------------------------------------------------------------


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _shown(value: object) -> str:
    # Only short strings are echoed: values reaching here are enum-like, but a client could put
    # anything (even a transcript) in them, and error messages end up in logs.
    if isinstance(value, str) and len(value) <= 64:
        return repr(value)
    return _kind(value)


def invalid_type(path: str, expected: str, value: object) -> NoReturn:
    raise EventError(
        "invalid_type",
        f"Invalid type for '{path}': expected {expected}, but got {_kind(value)} instead.",
        path,
    )


def invalid_value(path: str, value: object, allowed: Iterable[str]) -> NoReturn:
    supported = ", ".join(repr(a) for a in allowed)
    raise EventError(
        "invalid_value",
        f"Invalid value: {_shown(value)}. Supported values are: {supported}.",
        path,
    )


def missing(path: str) -> NoReturn:
    raise EventError("missing_required_parameter", f"Missing required parameter: '{path}'.", path)


def unknown(path: str) -> NoReturn:
    raise EventError("unknown_parameter", f"Unknown parameter: '{path}'.", path)


def unsupported(path: str) -> NoReturn:
    raise EventError(
        "unsupported_parameter",
        f"Parameter '{path}' is part of the Realtime protocol but not supported by npcd.",
        path,
    )


def check_keys(obj: dict[str, Any], path: str, allowed: frozenset[str], ctx: Ctx) -> None:
    """In strict mode, reject the first key (in wire order) that the shape does not declare."""
    if ctx.strict:
        for key in obj:
            if key not in allowed:
                unknown(join(path, key))


# --------------------------------------------------------------------------------------------
# Scalars
# --------------------------------------------------------------------------------------------


def get_obj(value: Any, path: str) -> dict[str, Any]:
    if type(value) is not dict:
        invalid_type(path, "an object", value)
    return value


def get_list(value: Any, path: str) -> list[Any]:
    if type(value) is not list:
        invalid_type(path, "an array", value)
    return value


def get_str(value: Any, path: str) -> str:
    if type(value) is not str:
        invalid_type(path, "a string", value)
    return value


def get_int(value: Any, path: str) -> int:
    # bool is an int subclass in Python but not in JSON; floats are rejected like the service.
    if type(value) is not int:
        invalid_type(path, "an integer", value)
    return value


def get_float(value: Any, path: str) -> float:
    if type(value) is not float and type(value) is not int:
        invalid_type(path, "a number", value)
    return value


def get_bool(value: Any, path: str) -> bool:
    if type(value) is not bool:
        invalid_type(path, "a boolean", value)
    return value


def get_literal(value: Any, path: str, allowed: tuple[str, ...]) -> str:
    if type(value) is not str:
        invalid_type(path, "a string", value)
    if value not in allowed:
        invalid_value(path, value, allowed)
    return value


# --------------------------------------------------------------------------------------------
# Codecs and shapes
# --------------------------------------------------------------------------------------------

Encoder = Callable[[Any, Dialect], Any]
Decoder = Callable[[Any, str, Ctx], Any]


@dataclass(frozen=True, slots=True)
class Codec:
    """How one value travels: `enc(value, dialect) -> JSON`, `dec(json, path, ctx) -> value`."""

    enc: Encoder
    dec: Decoder


def _same(value: Any, dialect: Dialect) -> Any:
    return value


STR = Codec(_same, lambda v, p, c: get_str(v, p))
INT = Codec(_same, lambda v, p, c: get_int(v, p))
FLOAT = Codec(_same, lambda v, p, c: get_float(v, p))
BOOL = Codec(_same, lambda v, p, c: get_bool(v, p))


def literal(*allowed: str) -> Codec:
    return Codec(_same, lambda v, p, c: get_literal(v, p, allowed))


def tuple_of(item: Codec) -> Codec:
    """A JSON array <-> a tuple (tuples keep the frozen dataclasses hashable where possible)."""

    def enc(value: tuple[Any, ...], dialect: Dialect) -> list[Any]:
        return [item.enc(x, dialect) for x in value]

    def dec(value: Any, path: str, ctx: Ctx) -> tuple[Any, ...]:
        return tuple(item.dec(x, f"{path}[{i}]", ctx) for i, x in enumerate(get_list(value, path)))

    return Codec(enc, dec)


def string_map(value: Any, path: str, ctx: Ctx) -> dict[str, str]:
    """`metadata`: string keys to string values."""
    obj = get_obj(value, path)
    for key, item in obj.items():
        get_str(item, join(path, key))
    return obj


STRING_MAP = Codec(lambda v, d: dict(v), string_map)


@dataclass(frozen=True, slots=True)
class Field:
    """One wire field of a `Shape`.

    `name`: the dataclass attribute. `wire`: dotted wire path when it differs (GA nests what beta
    keeps flat: `audio.output.voice` vs `voice`). `required`: must be present and non-null;
    encoding `None` raises `EncodeError`. `dialects`: where the field exists; elsewhere it is
    omitted on encode and an unknown key on strict decode. `const`: a fixed wire value (an event
    or item `type`, GA `session.type`) that has no attribute; checked on decode, always required.
    """

    name: str
    codec: Codec
    required: bool = False
    dialects: frozenset[Dialect] = BOTH
    wire: str | None = None
    const: str | None = None


def const(wire: str, value: str, dialects: frozenset[Dialect] = BOTH) -> Field:
    return Field(wire, STR, required=True, dialects=dialects, wire=wire, const=value)


def renamed(name: str, codec: Codec, *, ga: str, beta: str) -> tuple[Field, Field]:
    """The same attribute under a different wire path per dialect."""
    return (
        Field(name, codec, dialects=GA_ONLY, wire=ga),
        Field(name, codec, dialects=BETA_ONLY, wire=beta),
    )


# Key tree for strict checks: a nested dict for objects the shape itself nests (GA `audio`),
# None for leaves, _UNMODELLED for real protocol keys this model does not represent.
_UNMODELLED: Any = object()


class Shape:
    """A dataclass described as wire fields; gives encode and decode for both dialects.

    `tristate`: attributes default to `UNSET`; absent keys stay UNSET and `null` becomes None
    (partial `session.update`). Otherwise `null` and absent both mean None.
    `extra_keys`: tolerated but not modelled (`object: "realtime.item"`, keys the SDK declares
    on a merged model such as `transcript` on an `input_text` part); per dialect if a mapping.
    `unmodelled`: per dialect, real protocol keys npcd does not represent; a strict decode
    rejects them as `unsupported_parameter` instead of `unknown_parameter`.
    """

    __slots__ = ("cls", "_plan", "_tree", "_tristate")

    def __init__(
        self,
        cls: Callable[..., Any],
        fields: Iterable[Field],
        *,
        tristate: bool = False,
        extra_keys: Iterable[str] | Mapping[Dialect, Iterable[str]] = (),
        unmodelled: Mapping[Dialect, Iterable[str]] | None = None,
    ) -> None:
        self.cls = cls
        self._tristate = tristate
        all_fields = tuple(fields)
        _check_required(cls, all_fields)
        extra = (
            {d: tuple(extra_keys.get(d, ())) for d in Dialect}
            if isinstance(extra_keys, Mapping)
            else dict.fromkeys(Dialect, tuple(extra_keys))
        )
        self._plan: dict[Dialect, tuple[tuple[Field, tuple[str, ...], str], ...]] = {}
        self._tree: dict[Dialect, dict[str, Any]] = {}
        for dialect in Dialect:
            plan = []
            tree: dict[str, Any] = dict.fromkeys(extra[dialect])
            for key in (unmodelled or {}).get(dialect, ()):
                _tree_add(tree, key.split("."), _UNMODELLED)
            for f in all_fields:
                if dialect in f.dialects:
                    rel = f.wire or f.name
                    parts = tuple(rel.split("."))
                    plan.append((f, parts, rel))
                    _tree_add(tree, list(parts), None)
            self._plan[dialect] = tuple(plan)
            self._tree[dialect] = tree

    def encode_into(self, out: dict[str, Any], value: Any, dialect: Dialect) -> dict[str, Any]:
        """Write the set fields of `value` into `out` and return it."""
        for f, parts, _ in self._plan[dialect]:
            if f.const is not None:
                wire_value: Any = f.const
            else:
                v = getattr(value, f.name)
                if v is UNSET:
                    continue
                if v is None:
                    if f.required:
                        raise EncodeError(
                            f"{type(value).__name__}.{f.name} is required in {dialect.name}"
                        )
                    if not self._tristate:
                        continue
                    wire_value = None  # tri-state: an explicit null (clears the setting)
                else:
                    wire_value = f.codec.enc(v, dialect)
            target = out
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = wire_value
        return out

    def decode_obj(self, obj: dict[str, Any], path: str, ctx: Ctx) -> Any:
        """Build the dataclass from a JSON object; raises EventError only."""
        if ctx.strict:
            _check_tree(obj, path, self._tree[ctx.dialect])
        kwargs: dict[str, Any] = {}
        for f, parts, rel in self._plan[ctx.dialect]:
            raw = obj.get(parts[0], _ABSENT) if len(parts) == 1 else _find(obj, parts, path)
            if raw is _ABSENT:
                if f.required:
                    missing(join(path, rel))
            elif f.const is not None:
                get_literal(raw, join(path, rel), (f.const,))
            elif raw is None:
                if f.required:
                    invalid_type(join(path, rel), "a value", None)
                if self._tristate:
                    kwargs[f.name] = None
            else:
                kwargs[f.name] = f.codec.dec(raw, join(path, rel), ctx)
        return self.cls(**kwargs)

    def codec(self) -> Codec:
        """This shape as the codec of a nested object."""
        return Codec(
            lambda v, d: self.encode_into({}, v, d),
            lambda v, p, c: self.decode_obj(get_obj(v, p), p, c),
        )


_ABSENT: Any = object()


def _find(obj: dict[str, Any], parts: tuple[str, ...], path: str) -> Any:
    """The value at a nested wire path (GA `audio.input.format`); a null parent means absent."""
    for depth, part in enumerate(parts[:-1]):
        sub = obj.get(part)
        if sub is None:
            return _ABSENT
        obj = get_obj(sub, join(path, ".".join(parts[: depth + 1])))
    return obj.get(parts[-1], _ABSENT)


def _check_required(cls: Callable[..., Any], fields: tuple[Field, ...]) -> None:
    # A dataclass field without a default must be a required wire field in every dialect that
    # has it, or decoding an event without it would raise TypeError instead of EventError.
    if not dataclasses.is_dataclass(cls):
        return
    required = {f.name for f in fields if f.required and f.const is None}
    for dc_field in dataclasses.fields(cls):
        no_default = (
            dc_field.default is dataclasses.MISSING
            and dc_field.default_factory is dataclasses.MISSING
        )
        if no_default and dc_field.name not in required:
            raise TypeError(f"{cls.__name__}.{dc_field.name} has no default: mark it required")


def _tree_add(tree: dict[str, Any], parts: list[str], leaf: Any) -> None:
    for part in parts[:-1]:
        node = tree.get(part)
        if not isinstance(node, dict):
            node = tree[part] = {}
        tree = node
    tree.setdefault(parts[-1], leaf)


def _check_tree(obj: dict[str, Any], path: str, tree: dict[str, Any]) -> None:
    for key, value in obj.items():
        if key not in tree:
            unknown(join(path, key))
        node = tree[key]
        if node is _UNMODELLED:
            unsupported(join(path, key))
        if node is not None and value is not None:
            sub_path = join(path, key)
            _check_tree(get_obj(value, sub_path), sub_path, node)


def tagged(
    shapes: Mapping[Dialect, Mapping[str, Shape]],
    *,
    key: str = "type",
    unmodelled: Iterable[str] = (),
) -> Codec:
    """A union of shapes told apart by `key` (whose const field each shape declares).

    Encoding picks the shape by the value's class; a class without a shape in the target
    dialect raises EncodeError. Decoding an `unmodelled` tag (a real protocol value npcd does not
    represent, e.g. an MCP tool) raises `unsupported_parameter`, any other unknown tag
    `invalid_value`, on both sides: nothing here is dropped silently.
    """
    by_class = {d: {shape.cls: shape for shape in m.values()} for d, m in shapes.items()}
    unmodelled_tags = frozenset(unmodelled)

    def enc(value: Any, dialect: Dialect) -> dict[str, Any]:
        shape = by_class[dialect].get(type(value))
        if shape is None:
            raise EncodeError(f"{type(value).__name__} cannot be expressed in {dialect.name}")
        return shape.encode_into({}, value, dialect)

    def dec(value: Any, path: str, ctx: Ctx) -> Any:
        obj = get_obj(value, path)
        tag = obj.get(key)
        tag_path = join(path, key)
        if tag is None:
            missing(tag_path)
        by_tag = shapes[ctx.dialect]
        shape = by_tag.get(get_str(tag, tag_path))
        if shape is None:
            if tag in unmodelled_tags:
                unsupported(tag_path)
            invalid_value(tag_path, tag, by_tag)
        return shape.decode_obj(obj, path, ctx)

    return Codec(enc, dec)
