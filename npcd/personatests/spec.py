"""Persona test files: scripted conversations with expectations, read with file:line for all.

A test file (``characters/tests/*.yaml``) holds conversations with one character::

    character: blacksmith
    tests:
      - name: sells a sword
        context: {location: the forge}        # optional game context
        steps:
          - say: I want to buy a sword        # a typed player line (or `trigger: NAME`)
            expect:
              contains: [forty gold]          # case-insensitive substrings of the reply
              not_contains: [dragon]          # spoiler gating: never said
              matches: "(?i)edge"             # a regular expression
              similar: {to: "That costs forty gold.", min: 0.5}   # meaning (MiniLM)
              action: {name: sell_item, arguments: {item: iron sword}}
              no_action: true
          - wav: for_sale.wav                 # a spoken line: a WAV beside this file
            expect:
              heard: {contains: [for sale]}   # what the player was heard saying
              contains: [iron sword]

Every key is checked; a mistake names its file, line and field like persona errors do. A
``wav`` is read and converted here, when the file is loaded, so a missing or unusable recording
is a mistake in the test file (exit 2), not a failure halfway through a run.
"""

from __future__ import annotations

import re
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from npcd import audio
from npcd.personas.yamlsource import FieldPath, YamlDocument, YamlSourceError, read_yaml

__all__ = [
    "Case",
    "Expect",
    "Recording",
    "SpecError",
    "Step",
    "Suite",
    "load_suite",
    "test_files",
]

_SUITE_KEYS = {"character", "tests"}
_CASE_KEYS = {"name", "context", "player", "steps"}
_STEP_KEYS = {"say", "trigger", "wav", "params", "expect"}
#: Expectations on text, which also apply to what the player was heard saying (``heard``).
_TEXT_KEYS = {"contains", "not_contains", "matches", "similar"}
_EXPECT_KEYS = {*_TEXT_KEYS, "action", "no_action", "heard"}

#: A spoken line is one utterance; these keep a stray file from stalling a run or filling RAM.
MAX_WAV_BYTES: Final = 20 * 1024 * 1024
MAX_WAV_SECONDS: Final = 60


class SpecError(Exception):
    """A test file is wrong; ``where`` is ``file:line``."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True, slots=True)
class Expect:
    contains: tuple[str, ...] = ()
    not_contains: tuple[str, ...] = ()
    matches: re.Pattern[str] | None = None
    similar_to: str | None = None
    similar_min: float = 0.5
    action: str | None = None
    action_arguments: dict[str, Any] = field(default_factory=dict)
    no_action: bool = False
    #: Text expectations on what the player was heard saying (a ``wav`` step only).
    heard: Expect | None = None
    #: ``file:line`` of each expectation, by name, for failure messages.
    where: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Recording:
    """A ``wav`` step's speech, already in npcd's native format (PCM16 mono 24 kHz): every
    conversation declares that one input format, so typed and spoken steps mix freely."""

    path: Path
    pcm: bytes

    @property
    def seconds(self) -> float:
        return audio.REALTIME_FORMAT.duration_ms(len(self.pcm)) / 1000


@dataclass(frozen=True, slots=True)
class Step:
    where: str
    say: str | None
    trigger: str | None
    params: dict[str, str]
    expect: Expect
    wav: Recording | None = None


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    where: str
    context: dict[str, str]
    player: str
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Suite:
    file: Path
    character: str
    where: str
    cases: tuple[Case, ...]


def test_files(paths: list[Path]) -> list[Path]:
    """The test files under ``paths``: ``*.yaml`` in a ``tests`` folder of each, or files."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif (path / "tests").is_dir():
            found.extend(sorted((path / "tests").glob("*.yaml")))
        elif path.is_dir():
            found.extend(sorted(path.glob("*.yaml")))
    return found


def load_suite(file: Path) -> Suite:
    """Read and check one test file; `SpecError` for the first mistake."""
    try:
        doc = read_yaml(file)
    except YamlSourceError as exc:
        raise SpecError(f"{file}:{exc.line or 1}", str(exc)) from None
    reader = _Reader(file, doc)
    data = reader.mapping((), doc.data, _SUITE_KEYS, required={"character", "tests"})
    character = reader.text(("character",), data["character"])
    cases_data = data["tests"]
    if not isinstance(cases_data, list) or not cases_data:
        raise reader.error(("tests",), "a non-empty list of tests")
    cases = tuple(reader.case(("tests", i), c) for i, c in enumerate(cases_data))
    return Suite(file, character, reader.where(()), cases)


class _Reader:
    def __init__(self, file: Path, doc: YamlDocument) -> None:
        self.file = file
        self.doc = doc

    def where(self, path: FieldPath) -> str:
        origin = self.doc.origin(path)
        return f"{self.file}:{origin.line if origin else 1}"

    def error(self, path: FieldPath, expected: str) -> SpecError:
        return self.fail(path, f"expected {expected}")

    def fail(self, path: FieldPath, message: str) -> SpecError:
        name = ".".join(str(p) for p in path) or "(file)"
        return SpecError(self.where(path), f"{name}: {message}")

    def mapping(
        self,
        path: FieldPath,
        value: object,
        keys: set[str],
        required: frozenset[str] | set[str] = frozenset(),
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, "a mapping")
        for key in value:
            if key not in keys:
                raise self.error((*path, key), f"one of {', '.join(sorted(keys))}")
        for key in sorted(required):
            if key not in value:
                raise self.error(path, f"a `{key}`")
        return value

    def text(self, path: FieldPath, value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(path, "a non-empty string")
        return value

    def texts(self, path: FieldPath, value: object) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise self.error(path, "a string or a list of strings")
        return tuple(self.text((*path, i), v) for i, v in enumerate(items))

    def strings(self, path: FieldPath, value: object) -> dict[str, str]:
        data = value if value is not None else {}
        if not isinstance(data, dict):
            raise self.error(path, "a mapping of names to text")
        return {str(k): str(v) for k, v in data.items()}

    def case(self, path: FieldPath, value: object) -> Case:
        data = self.mapping(path, value, _CASE_KEYS, required={"name", "steps"})
        steps = data["steps"]
        if not isinstance(steps, list) or not steps:
            raise self.error((*path, "steps"), "a non-empty list of steps")
        return Case(
            name=self.text((*path, "name"), data["name"]),
            where=self.where(path),
            context=self.strings((*path, "context"), data.get("context")),
            player=str(data.get("player", "Tester")),
            steps=tuple(self.step((*path, "steps", i), s) for i, s in enumerate(steps)),
        )

    def step(self, path: FieldPath, value: object) -> Step:
        data = self.mapping(path, value, _STEP_KEYS)
        say, trigger, wav = data.get("say"), data.get("trigger"), data.get("wav")
        if sum(kind is not None for kind in (say, trigger, wav)) != 1:
            raise self.error(path, "one of `say`, `trigger` or `wav`")
        expect = self.expect((*path, "expect"), data.get("expect", {}))
        if expect.heard is not None and wav is None:
            raise self.error((*path, "expect", "heard"), "a `wav` step (only speech is heard)")
        return Step(
            where=self.where(path),
            say=self.text((*path, "say"), say) if say is not None else None,
            trigger=self.text((*path, "trigger"), trigger) if trigger is not None else None,
            params=self.strings((*path, "params"), data.get("params")),
            expect=expect,
            wav=self.recording((*path, "wav"), wav) if wav is not None else None,
        )

    def recording(self, path: FieldPath, value: object) -> Recording:
        """Read and convert the WAV now: a bad one is a mistake in the test file, not a run's."""
        name = Path(self.text(path, value))
        if name.is_absolute():  # it would only work on the machine that wrote the test
            raise self.error(path, "a path relative to the test file's folder")
        file = self.file.parent / name
        if not file.is_file():
            raise self.fail(path, f"no such file: {file}")
        if file.stat().st_size > MAX_WAV_BYTES:
            raise self.fail(path, f"{file} is over {MAX_WAV_BYTES // 2**20} MB")
        try:
            with wave.open(str(file), "rb") as reader:
                fmt = self.wav_format(path, file, reader)
                pcm = reader.readframes(reader.getnframes())
        except (wave.Error, EOFError) as exc:
            raise self.fail(
                path, f"{file} is not a 16-bit PCM WAV file ({exc or 'cut short'})"
            ) from None
        except OSError as exc:
            raise self.fail(path, f"cannot read {file}: {exc.strerror or exc}") from None
        pcm = pcm[: len(pcm) - len(pcm) % fmt.frame_bytes]
        seconds = fmt.duration_ms(len(pcm)) / 1000
        if seconds > MAX_WAV_SECONDS:
            raise self.fail(path, f"{file} lasts {seconds:.0f} s; at most {MAX_WAV_SECONDS} s")
        if seconds < 0.1:  # too short for the VAD to hear a turn in it
            raise self.fail(path, f"{file} holds less than 100 ms of audio")
        converter = audio.InputConverter(fmt)
        return Recording(file, converter.convert(pcm) + converter.flush())

    def wav_format(self, path: FieldPath, file: Path, reader: wave.Wave_read) -> audio.AudioFormat:
        if reader.getsampwidth() != 2:
            bits = 8 * reader.getsampwidth()
            raise self.fail(path, f"{file} is {bits}-bit; use 16-bit PCM")
        try:
            return audio.AudioFormat(
                audio.Encoding.PCM16, reader.getframerate(), reader.getnchannels()
            )
        except audio.AudioError as exc:
            raise self.fail(path, f"{file}: {exc}") from None

    def expect(self, path: FieldPath, value: object, keys: set[str] = _EXPECT_KEYS) -> Expect:
        data = self.mapping(path, value, keys)
        where = {key: self.where((*path, key)) for key in data}
        matches = None
        if "matches" in data:
            pattern = self.text((*path, "matches"), data["matches"])
            try:
                matches = re.compile(pattern)
            except re.error as exc:
                raise self.error((*path, "matches"), f"a regular expression ({exc})") from None
        similar_to, similar_min = None, 0.5
        if "similar" in data:
            similar = self.mapping((*path, "similar"), data["similar"], {"to", "min"}, {"to"})
            similar_to = self.text((*path, "similar", "to"), similar["to"])
            raw_min = similar.get("min", 0.5)
            if not isinstance(raw_min, int | float) or not 0 <= raw_min <= 1:
                raise self.error((*path, "similar", "min"), "a number from 0 to 1")
            similar_min = float(raw_min)
        action, arguments = None, {}
        if "action" in data:
            spec = self.mapping((*path, "action"), data["action"], {"name", "arguments"}, {"name"})
            action = self.text((*path, "action", "name"), spec["name"])
            raw_arguments = spec.get("arguments", {})
            if not isinstance(raw_arguments, dict):
                raise self.error((*path, "action", "arguments"), "a mapping")
            arguments = dict(raw_arguments)
        no_action = data.get("no_action", False)
        if not isinstance(no_action, bool):
            raise self.error((*path, "no_action"), "true or false")
        heard = None
        if "heard" in data:
            heard = self.expect((*path, "heard"), data["heard"], _TEXT_KEYS)
        return Expect(
            contains=self.texts((*path, "contains"), data.get("contains", [])),
            not_contains=self.texts((*path, "not_contains"), data.get("not_contains", [])),
            matches=matches,
            similar_to=similar_to,
            similar_min=similar_min,
            action=action,
            action_arguments=arguments,
            no_action=no_action,
            heard=heard,
            where=where,
        )
