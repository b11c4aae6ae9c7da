"""The official OpenAI SDK models as a wire-format oracle (docs/realtime-protocol.md §7.2).

Test-only: npcd's runtime never imports `openai`. `validate()` runs a frame through the SDK's
event union as a pydantic tagged union and then walks the result for keys no SDK model declares
(the SDK models are `extra="allow"`, so a typo or a wrong-dialect field would otherwise pass).

`sdk_minimal()` and `sdk_strategy()` build SDK-valid events from the SDK models' own JSON
schemas, so "npcd decodes everything the SDK accepts" is checked against the SDK itself, not
against hand-written samples that could share npcd's misunderstandings.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import orjson
from hypothesis import strategies as st
from openai.types.beta.realtime import RealtimeClientEvent as BetaClientEvent
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeClientEvent as GAClientEvent
from openai.types.realtime import RealtimeServerEvent as GAServerEvent
from pydantic import BaseModel, Field, TypeAdapter

from npcd.realtime.events import Dialect

Side = Literal["client", "server"]

# Field(discriminator="type") makes the SDK's plain Union a pydantic tagged union (the SDK's own
# PropertyInfo discriminator is ignored by pydantic): one member is tried, errors stay short and
# an unknown "type" fails with union_tag_invalid.
ADAPTERS: dict[tuple[Dialect, Side], TypeAdapter[Any]] = {
    (Dialect.GA, "server"): TypeAdapter(Annotated[GAServerEvent, Field(discriminator="type")]),
    (Dialect.GA, "client"): TypeAdapter(Annotated[GAClientEvent, Field(discriminator="type")]),
    (Dialect.BETA, "server"): TypeAdapter(Annotated[BetaServerEvent, Field(discriminator="type")]),
    (Dialect.BETA, "client"): TypeAdapter(Annotated[BetaClientEvent, Field(discriminator="type")]),
}

# Keys the real service sends but the SDK models do not declare (checked by
# test_allow_list_is_needed): the GA session object reuses the *request* model, which has no
# id/object/expires_at; the beta Session model declares id but not object/expires_at.
ALLOWED_UNDECLARED: dict[Dialect, frozenset[str]] = {
    Dialect.GA: frozenset({"$.session.object", "$.session.id", "$.session.expires_at"}),
    Dialect.BETA: frozenset({"$.session.object", "$.session.expires_at"}),
}


def undeclared_keys(m: object, path: str = "$") -> list[str]:
    """Report keys no SDK model declares (catches typos and wrong-dialect fields)."""
    out: list[str] = []
    if isinstance(m, BaseModel):
        out += [f"{path}.{k}" for k in (m.model_extra or {})]
        for name in type(m).model_fields:
            out += undeclared_keys(getattr(m, name), f"{path}.{name}")
    elif isinstance(m, list | tuple):
        for i, x in enumerate(m):
            out += undeclared_keys(x, f"{path}[{i}]")
    elif isinstance(m, dict):
        for k, x in m.items():
            out += undeclared_keys(x, f"{path}.{k}")
    return out


def validate(frame: str | dict[str, Any], dialect: Dialect, side: Side) -> BaseModel:
    """Validate one frame as the SDK would; raise on errors or undeclared keys.

    Raises pydantic.ValidationError for shape errors and AssertionError for undeclared keys
    outside the allow-list (server side only: clients have no read-only session fields).
    """
    obj = orjson.loads(frame) if isinstance(frame, str) else frame
    model: BaseModel = ADAPTERS[dialect, side].validate_python(obj)
    allowed = ALLOWED_UNDECLARED[dialect] if side == "server" else frozenset()
    extra = [k for k in undeclared_keys(model) if k not in allowed]
    assert not extra, f"undeclared keys {extra} in {obj.get('type')!r} ({dialect.name} {side})"
    return model


def union_members(dialect: Dialect, side: Side) -> tuple[type[BaseModel], ...]:
    union = {
        (Dialect.GA, "server"): GAServerEvent,
        (Dialect.GA, "client"): GAClientEvent,
        (Dialect.BETA, "server"): BetaServerEvent,
        (Dialect.BETA, "client"): BetaClientEvent,
    }[dialect, side]
    inner = typing.get_args(union)[0]  # strip Annotated[..., PropertyInfo]
    return typing.get_args(inner)


def member_type(member: type[BaseModel]) -> str:
    """The wire `type` of an SDK event model."""
    (value,) = typing.get_args(member.model_fields["type"].annotation)
    return str(value)


# --------------------------------------------------------------------------------------------
# SDK-valid samples from the SDK's JSON schemas
# --------------------------------------------------------------------------------------------

# Keys npcd requires although the SDK marks them optional: they select the shape and the real
# service always sends them (documented in npcd.realtime.dialects). Forced into every object
# whose schema has them.
FORCED_KEYS = frozenset({"type", "role", "content", "name"})
# `parameters` is typed `object` (any JSON) by the SDK; it is a JSON Schema, so npcd requires an
# object there and the generator only makes objects.
JSON_OBJECT_KEYS = frozenset({"parameters"})
# SDK $defs npcd deliberately does not model (see npcd.realtime.dialects): never generated.
EXCLUDED_DEFS = frozenset(
    {
        "RealtimeTranscriptionSessionCreateRequest",  # transcription-only sessions
        "Mcp",  # MCP tools in session.tools
        "ToolChoiceMcp",
    }
)


class _Schema:
    """Turn one pydantic JSON schema into a minimal instance or a hypothesis strategy."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.root = schema
        self.defs: dict[str, Any] = schema.get("$defs", {})
        self._strategies: dict[str, st.SearchStrategy[Any]] = {}

    def _branches(self, schema: dict[str, Any]) -> list[dict[str, Any]]:
        subs = schema.get("anyOf") or schema.get("oneOf") or []
        return [s for s in subs if s.get("$ref", "").rsplit("/", 1)[-1] not in EXCLUDED_DEFS]

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref: str | None = schema.get("$ref")
        return self.defs[ref.rsplit("/", 1)[-1]] if ref else schema

    def minimal(self, schema: dict[str, Any] | None = None) -> Any:
        s = self._resolve(self.root if schema is None else schema)
        if "const" in s:
            return s["const"]
        if "enum" in s:
            return s["enum"][0]
        branches = self._branches(s)
        if branches:
            non_null = [b for b in branches if b.get("type") != "null"]
            return self.minimal((non_null or branches)[0])
        kind = s.get("type")
        if kind == "object" and "properties" in s:
            props = s["properties"]
            required = set(s.get("required", ())) | (FORCED_KEYS & set(props))
            return {k: self.minimal(props[k]) for k in props if k in required}
        return {
            "string": "x",
            "integer": 0,
            "number": 0.5,
            "boolean": False,
            "array": [],
            "null": None,
        }.get(kind or "", {})

    def strategy(self, schema: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
        s = self.root if schema is None else schema
        ref: str | None = s.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            if name not in self._strategies:
                self._strategies[name] = st.deferred(lambda: self.strategy(self.defs[name]))
            return self._strategies[name]
        if "const" in s:
            return st.just(s["const"])
        if "enum" in s:
            return st.sampled_from(s["enum"])
        branches = self._branches(s)
        if branches:
            return st.one_of([self.strategy(b) for b in branches])
        kind = s.get("type")
        if kind == "object" and "properties" in s:
            return self._object(s)
        if kind == "object" and isinstance(s.get("additionalProperties"), dict):
            return st.dictionaries(_TEXT, self.strategy(s["additionalProperties"]), max_size=2)
        simple: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
            "string": lambda: _TEXT,
            "integer": lambda: st.integers(-(2**53), 2**53),
            "number": lambda: (
                st.floats(allow_nan=False, allow_infinity=False) | st.integers(-1000, 1000)
            ),
            "boolean": st.booleans,
            "null": st.none,
            "array": lambda: st.lists(self.strategy(s.get("items", {})), max_size=2),
        }
        return simple[kind]() if kind in simple else _ANY_JSON

    def _object(self, s: dict[str, Any]) -> st.SearchStrategy[Any]:
        props = s["properties"]
        required = set(s.get("required", ()))
        forced = (FORCED_KEYS & set(props)) - required
        fixed = {k: self._prop(k, v) for k, v in props.items() if k in required}
        fixed |= {k: self._prop(k, _non_null(props[k])) for k in forced}
        optional = {
            k: self._prop(k, v) for k, v in props.items() if k not in required and k not in forced
        }
        return st.fixed_dictionaries(fixed, optional=optional)

    def _prop(self, key: str, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
        if key in JSON_OBJECT_KEYS:
            return st.none() | st.dictionaries(_TEXT, _ANY_JSON, max_size=2)
        return self.strategy(schema)


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A forced key must also be non-null: drop the `null` branch of Optional[...]."""
    branches = schema.get("anyOf")
    if not branches:
        return schema
    kept = [b for b in branches if b.get("type") != "null"]
    return kept[0] if len(kept) == 1 else {"anyOf": kept}


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)
_ANY_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-100, 100) | _TEXT,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_TEXT, inner, max_size=2),
    max_leaves=4,
)


def sdk_minimal(member: type[BaseModel]) -> dict[str, Any]:
    """The smallest SDK-valid instance of an event model (required + FORCED_KEYS only)."""
    sample: dict[str, Any] = _Schema(TypeAdapter(member).json_schema()).minimal()
    return sample


def sdk_strategy(member: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Random SDK-schema-valid instances of an event model (npcd's FORCED_KEYS always set)."""
    return _Schema(TypeAdapter(member).json_schema()).strategy()
