"""The persona model: what a character writer can say about an NPC, typed and bounded.

Validation is strict on purpose. YAML's implicit typing turns ``no`` into ``False`` and ``1.10``
into ``1.1``; a lenient model would quietly accept a persona whose greeting is ``False``. Unknown
keys are errors, so a typo (``voise:``) is caught instead of silently ignored. Every string has a
length cap, because persona files come from outside.

The JSON Schema published for editors (``characters/persona.schema.json``) is generated from
these classes (`persona_json_schema`), so the two cannot disagree.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from npcd.personas.template import BUILTIN_VARIABLES, variables_in
from npcd.personas.yamlsource import FieldPath

#: Voices the Realtime backends know (GA adds marin and cedar; the local backend maps each to a
#: distinct synthetic voice).
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")

Voice = Literal[
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"
]
PersonaId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
# OpenAI function names: letters, digits, underscores and dashes, at most 64.
ActionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")]
VariableName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,63}$")]
ShortText = Annotated[str, StringConstraints(max_length=200)]
Text = Annotated[str, StringConstraints(max_length=4000)]
LongText = Annotated[str, StringConstraints(max_length=16000)]
Phrase = Annotated[str, StringConstraints(min_length=1, max_length=300)]
#: Emotions npcd knows example lines for (`npcd.lipsync.emotion` holds them); any other name a
#: persona declares must bring its own examples.
BUILTIN_EMOTION_NAMES: Final = (
    "neutral",
    "happy",
    "sad",
    "angry",
    "afraid",
    "surprised",
    "disgusted",
)
EmotionName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
EmotionExample = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _one_or_many(value: Any) -> Any:
    """Let writers give a single string where a list of strings is expected."""
    return [value] if isinstance(value, str) else value


class Variable(_Strict):
    """A template variable the game fills through conversation context (``{location}``)."""

    description: Text = Field("", description="What the game puts here, for the game developer.")
    default: Text = Field("", description="Value used when the game sends none.")


class Relationship(_Strict):
    """How the NPC sees someone else in the world."""

    name: ShortText = Field(description="Who (a character, a faction, 'the player').")
    relation: Text = Field(description="How the NPC feels about them and why.")


class Action(_Strict):
    """Something the NPC may ask the game to do, offered to the model as a function tool."""

    name: ActionName = Field(description="Function name the game receives (`sell_item`).")
    description: Text = Field(
        description="When the NPC should use it; the model reads this to decide."
    )
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema of the arguments (an object schema).",
    )
    timeout_ms: int = Field(
        10_000, ge=100, le=120_000, description="How long to wait for the game's result."
    )

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError("must be a JSON Schema with `type: object` at the top")
        properties = value.get("properties", {})
        if not isinstance(properties, dict):
            raise ValueError("`properties` must be a mapping of argument names to schemas")
        required = value.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ValueError("`required` must be a list of argument names")
        unknown = [r for r in required if r not in properties]
        if unknown:
            raise ValueError(
                f"`required` names arguments not in `properties`: {', '.join(unknown)}"
            )
        if len(json.dumps(value)) > 8000:
            raise ValueError("schema is too large (over 8000 characters as JSON)")
        return value


def _audio_only() -> list[Literal["audio", "text"]]:
    return ["audio"]


class ModelSettings(_Strict):
    """Generation settings passed to the Realtime backend."""

    model: ShortText | None = Field(
        None, description="Backend model id; unset uses the daemon's configured model."
    )
    temperature: float | None = Field(
        None, ge=0.6, le=1.2, description="Sampling temperature (beta dialect only; GA ignores it)."
    )
    max_output_tokens: int | None = Field(
        None, ge=1, le=4096, description="Cap on one response's length; unset or `inf` = no cap."
    )
    output_modalities: list[Literal["audio", "text"]] = Field(
        default_factory=_audio_only,
        min_length=1,
        max_length=1,
        description="`[audio]` (speech with transcript) or `[text]`.",
    )
    speed: float | None = Field(None, ge=0.25, le=1.5, description="Speaking speed, 1.0 normal.")

    @field_validator("max_output_tokens", mode="before")
    @classmethod
    def _inf(cls, value: Any) -> Any:
        return None if value == "inf" else value


class TurnDetection(_Strict):
    """How the backend decides the player finished speaking (overrides the daemon default)."""

    type: Literal["server_vad", "semantic_vad", "none"] = Field(
        "server_vad", description="`none` means push-to-talk only."
    )
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="server_vad: 0..1.")
    prefix_padding_ms: int | None = Field(None, ge=0, le=5000)
    silence_duration_ms: int | None = Field(None, ge=0, le=10000)
    eagerness: Literal["low", "medium", "high", "auto"] | None = Field(
        None, description="semantic_vad only."
    )
    interrupt_response: bool = Field(True, description="Player speech cuts the NPC off.")

    @model_validator(mode="after")
    def _fields_fit_type(self) -> TurnDetection:
        vad_only = [
            name
            for name in ("threshold", "prefix_padding_ms", "silence_duration_ms")
            if getattr(self, name) is not None
        ]
        if self.type == "semantic_vad" and vad_only:
            raise ValueError(f"{', '.join(vad_only)} only apply to type server_vad")
        if self.type != "semantic_vad" and self.eagerness is not None:
            raise ValueError("eagerness only applies to type semantic_vad")
        return self


class Transcription(_Strict):
    """How the player's speech is transcribed."""

    model: ShortText = Field("gpt-4o-mini-transcribe", description="Transcription model id.")
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")] | None = Field(
        None, description="ISO-639-1 code (`en`) to skip language detection."
    )
    prompt: Text = Field(
        "", description="Words to expect (names, places), to bias recognition toward them."
    )


class MemorySettings(_Strict):
    """What the NPC keeps of earlier conversations with a player (per save slot), when the game
    names the player (`Start.player.id`)."""

    enabled: bool = Field(True, description="Remember players across conversations and restarts.")
    budget_chars: int = Field(
        3000,
        ge=200,
        le=32000,
        description="Most characters of memory (summary plus recent turns) the NPC is given at "
        "the start of a conversation; about 4 characters a token.",
    )
    recent_turns: int = Field(
        16, ge=0, le=200, description="How many of the latest turns are given word for word."
    )


class Budget(_Strict):
    """What the NPC may cost on a paid backend in US dollars (priced from token usage; the
    offline backend is free), so one chatty player or a runaway loop cannot run up the bill.
    Unset = no limit; days are UTC days. Set it in a base file (`_world.yaml`) for every
    character that extends it; a character's own keys override the base's one by one."""

    session_usd: float | None = Field(
        default=None, gt=0, description="Most one conversation with this NPC may cost."
    )
    day_usd: float | None = Field(
        default=None, gt=0, description="Most this NPC may cost per UTC day, all players together."
    )
    player_day_usd: float | None = Field(
        default=None,
        gt=0,
        description="Most one player (`Start.player.id`) may spend on this NPC per UTC day.",
    )
    on_exceeded: Literal["refuse", "local"] = Field(
        default="refuse",
        description="`refuse`: the conversation ends and new ones are refused "
        "(RESOURCE_EXHAUSTED); `local`: the NPC goes on, with its history, on the embedded "
        "offline backend for the rest of the period.",
    )


class ActionCall(_Strict):
    """An action fired by a scripted offline line."""

    name: ActionName
    arguments: dict[str, Any] = Field(default_factory=dict)


class DialogueLine(_Strict):
    """A scripted exchange for the offline backend (no language model)."""

    when: list[Phrase] = Field(
        default_factory=list,
        max_length=50,
        description="Player lines that lead here; paraphrases are matched by meaning.",
    )
    on_trigger: list[ActionName] = Field(
        default_factory=list, description="Game `Trigger` names that lead here."
    )
    say: list[Text] = Field(
        min_length=1, max_length=20, description="What the NPC says (one of these, in turn)."
    )
    action: ActionCall | None = Field(None, description="Action requested along with the line.")

    _listify_when = field_validator("when", mode="before")(_one_or_many)
    _listify_say = field_validator("say", mode="before")(_one_or_many)

    @model_validator(mode="after")
    def _has_cue(self) -> DialogueLine:
        if not self.when and not self.on_trigger:
            raise ValueError("a line needs `when` (player phrases) or `on_trigger` (event names)")
        return self


class Emotion(_Strict):
    """An expression the NPC may show: a built-in name, or a custom one with example lines."""

    name: EmotionName = Field(
        description="A built-in emotion or your own (lowercase, digits, _; at most 32)."
    )
    examples: list[EmotionExample] = Field(
        default_factory=list,
        max_length=50,
        description="Lines the NPC would say feeling it; needed for a custom name, "
        "added to a built-in's own examples.",
    )

    _listify_examples = field_validator("examples", mode="before")(_one_or_many)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in BUILTIN_EMOTION_NAMES:
                raise ValueError(
                    f"{value!r} is not a built-in emotion{_close(value, BUILTIN_EMOTION_NAMES)}; "
                    f"use one of {', '.join(BUILTIN_EMOTION_NAMES)}, or give your own "
                    f"`{{name: {value}, examples: [...]}}`"
                )
            return {"name": value}
        if not isinstance(value, dict | Emotion):
            raise ValueError(
                "expected a built-in emotion name or a mapping with `name` and `examples`"
            )
        return value

    @model_validator(mode="after")
    def _custom_has_examples(self) -> Emotion:
        # The classifier knows an emotion only by what the NPC says feeling it.
        if self.name not in BUILTIN_EMOTION_NAMES and not self.examples:
            raise ValueError(
                f"custom emotion {self.name!r} needs `examples` (lines the NPC would say "
                f"feeling it){_close(self.name, BUILTIN_EMOTION_NAMES)}"
            )
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The bare-name form and the custom-needs-examples rule live in validators, which
        # pydantic cannot describe; spell them out so editors agree with the loader.
        mapping = handler.resolve_ref_schema(handler(core_schema))
        mapping["if"] = {"properties": {"name": {"not": {"enum": list(BUILTIN_EMOTION_NAMES)}}}}
        mapping["then"] = {"required": ["examples"], "properties": {"examples": {"minItems": 1}}}
        return {
            "anyOf": [{"enum": list(BUILTIN_EMOTION_NAMES), "type": "string"}, mapping],
            "description": mapping.pop("description", ""),
        }


def _builtin_emotions() -> list[Emotion]:
    return [Emotion(name=name) for name in BUILTIN_EMOTION_NAMES]


class Dialogue(_Strict):
    """The NPC's scripted lines, used by the embedded local backend when no model is present."""

    lines: list[DialogueLine] = Field(default_factory=list, max_length=500)
    fallback: list[Text] = Field(
        default_factory=lambda: ["Hm. I'm not sure what you mean."],
        min_length=1,
        description="Said when nothing matches.",
    )

    _listify_fallback = field_validator("fallback", mode="before")(_one_or_many)


class Persona(_Strict):
    """One NPC character."""

    id: PersonaId = Field(description="Unique id; must equal the file name without `.yaml`.")
    extends: str | None = Field(
        None, description="Path of a base persona file (relative to this one) to inherit from."
    )
    name: Annotated[str, StringConstraints(min_length=1, max_length=80)] = Field(
        description="Display name, also the `{name}` variable."
    )
    description: ShortText = Field("", description="One line for tooling and game UI.")
    voice: Voice = Field(description="Backend voice.")
    instructions: LongText = Field(
        "", description="Direct guidance for playing the role (rules, limits, what to avoid)."
    )
    backstory: LongText = Field("", description="Who the NPC is and what happened to them.")
    personality: list[ShortText] = Field(default_factory=list, max_length=30)
    speaking_style: Text = Field("", description="How the NPC talks: dialect, pace, habits.")
    knowledge: list[Text] = Field(
        default_factory=list, max_length=100, description="Facts the NPC knows."
    )
    goals: list[Text] = Field(default_factory=list, max_length=30)
    relationships: list[Relationship] = Field(default_factory=list, max_length=50)
    greeting: Text = Field("", description="What the NPC says when it speaks first.")
    variables: dict[VariableName, Variable] = Field(
        default_factory=dict,
        max_length=50,
        description="Template variables (`{location}`) the game fills, with defaults.",
    )
    actions: list[Action] = Field(default_factory=list, max_length=64)
    model: ModelSettings = Field(default_factory=ModelSettings)  # type: ignore[arg-type]
    turn_detection: TurnDetection = Field(default_factory=TurnDetection)  # type: ignore[arg-type]
    transcription: Transcription = Field(default_factory=Transcription)  # type: ignore[arg-type]
    dialogue: Dialogue = Field(default_factory=Dialogue)
    memory: MemorySettings = Field(default_factory=MemorySettings)  # type: ignore[arg-type]
    budget: Budget = Field(default_factory=Budget)
    emotions: list[Emotion] = Field(
        default_factory=_builtin_emotions,
        min_length=1,
        max_length=16,
        description="Expressions the game may be told to show (`EmotionUpdate`); unset = all "
        "built-ins. `neutral` is always available as the resting face.",
    )

    _listify_personality = field_validator("personality", mode="before")(_one_or_many)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Persona:
        # The loader defers these checks so it can report each one at its own field and line.
        if info.context and info.context.get("defer_consistency"):
            return self
        problems = self.consistency_problems()
        if problems:
            raise ValueError("; ".join(f"{format_path(p)}: {m}" for p, m in problems))
        return self

    def consistency_problems(self) -> list[tuple[FieldPath, str]]:
        """Rules that span fields: each problem with the path of the field to fix."""
        problems: list[tuple[FieldPath, str]] = []
        if not (self.instructions.strip() or self.backstory.strip()):
            problems.append(
                (("instructions",), "a persona needs `instructions` or `backstory` (or both)")
            )
        seen: set[str] = set()
        for index, action in enumerate(self.actions):
            if action.name in seen:
                problems.append(
                    (("actions", index, "name"), f"action {action.name!r} is declared twice")
                )
            seen.add(action.name)
        for index, line in enumerate(self.dialogue.lines):
            if line.action is not None and line.action.name not in seen:
                problems.append(
                    (
                        ("dialogue", "lines", index, "action", "name"),
                        f"{line.action.name!r} is not one of this persona's actions "
                        f"({', '.join(sorted(seen)) or 'none declared'})",
                    )
                )
        emotions: set[str] = set()
        for index, emotion in enumerate(self.emotions):
            if emotion.name in emotions:
                problems.append(
                    (("emotions", index), f"emotion {emotion.name!r} is declared twice")
                )
            emotions.add(emotion.name)
        declared = set(self.variables) | set(BUILTIN_VARIABLES)
        for path, text in self.templated_texts():
            for name in variables_in(text):
                if name not in declared:
                    hint = _did_you_mean(name, declared)
                    problems.append(
                        (
                            path,
                            f"unknown variable {{{name}}}{hint}; declare it under `variables:` "
                            "or write {{ and }} for literal braces",
                        )
                    )
        return problems

    def templated_texts(self) -> Iterator[tuple[FieldPath, str]]:
        """Every text that may use template variables, with its field path."""
        for name in ("instructions", "backstory", "speaking_style", "greeting"):
            yield (name,), getattr(self, name)
        for name in ("personality", "knowledge", "goals"):
            for index, text in enumerate(getattr(self, name)):
                yield (name, index), text
        for index, relationship in enumerate(self.relationships):
            yield ("relationships", index, "relation"), relationship.relation
        for index, line in enumerate(self.dialogue.lines):
            for say_index, text in enumerate(line.say):
                yield ("dialogue", "lines", index, "say", say_index), text
        for index, text in enumerate(self.dialogue.fallback):
            yield ("dialogue", "fallback", index), text

    @property
    def action_names(self) -> list[str]:
        return [action.name for action in self.actions]


def persona_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a persona file, for editors and `npcd schema`."""
    schema = Persona.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://npcd.dev/schema/persona.schema.json"
    schema["title"] = "npcd persona"
    return schema


def base_persona_json_schema() -> dict[str, Any]:
    """Schema for files used only through `extends:`: the same keys, none of them required."""
    schema = persona_json_schema()
    schema.pop("required", None)
    schema["$id"] = "https://npcd.dev/schema/persona-base.schema.json"
    schema["title"] = "npcd persona base (for extends)"
    return schema


def format_path(path: FieldPath) -> str:
    """``("actions", 0, "name")`` -> ``actions[0].name``, the way writers see it in YAML."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _close(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {{{close[0]}}}?)" if close else ""
