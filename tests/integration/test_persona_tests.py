"""`npcd test` as a persona writer and CI run it: real processes, the real daemon inside, the
sample characters' own tests passing, and a wrong expectation failing at its file and line.
Spoken lines are real WAV files of speech from the local backend's own synthesiser."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import wave
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from npcd import audio
from npcd.localbackend.defaults import default_engines
from npcd.personatests.spec import SpecError, load_suite
from tests.conftest import SAMPLES

NPCD = [sys.executable, "-m", "npcd"]


def npcd_test(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NPCD, "test", *args], capture_output=True, text=True, timeout=180, check=False
    )


def speech(*lines: str, rate: int = 48000, channels: int = 2) -> bytes:
    """Player lines as 16-bit PCM from the local backend's own synthesiser, with 2 s of silence
    between them: long enough for the server VAD to end a turn."""
    tts = default_engines().synthesizer
    pause = bytes(audio.REALTIME_FORMAT.bytes_for_ms(2000))
    pcm = pause.join(b"".join(c.pcm for c in tts.synthesize(line, "echo")) for line in lines)
    converter = audio.OutputConverter(audio.AudioFormat(audio.Encoding.PCM16, rate, channels))
    return converter.convert(pcm) + converter.flush()


def write_wav(
    path: Path, frames: bytes, rate: int = 48000, channels: int = 2, width: int = 2
) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(frames)


def one_step(tmp_path: Path, step: str) -> Path:
    """A test file whose only step (on line 5) is ``step``."""
    file = tmp_path / "bad.yaml"
    file.write_text(f"character: blacksmith\ntests:\n  - name: x\n    steps:\n      - {step}\n")
    return file


def test_the_sample_characters_pass_their_tests(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    result = npcd_test(str(SAMPLES), "--junit", str(junit))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout
    suites = ET.parse(junit).getroot().findall("testsuite")  # noqa: S314 - our own output
    assert {s.get("name", "").rsplit("/", 1)[-1] for s in suites} >= {"blacksmith.yaml"}
    assert all(s.get("failures") == "0" for s in suites)


def test_a_wrong_expectation_fails_at_its_file_and_line(tmp_path: Path) -> None:
    characters = tmp_path / "characters"
    shutil.copytree(SAMPLES, characters, ignore=shutil.ignore_patterns("tests"))
    (characters / "tests").mkdir()
    wrong = characters / "tests" / "wrong.yaml"
    wrong.write_text(
        textwrap.dedent(
            """\
            character: blacksmith
            tests:
              - name: sells cheap
                steps:
                  - say: What do you sell?
                    expect:
                      contains: [ten copper]
                      not_contains: [iron sword]
            """
        )
    )
    junit = tmp_path / "junit.xml"
    result = npcd_test(str(characters), "--junit", str(junit))
    assert result.returncode == 1
    assert f"{wrong}:7: expected 'ten copper'" in result.stdout
    assert f"{wrong}:8: 'iron sword' must not be said" in result.stdout
    [failure, _] = ET.parse(junit).getroot().iter("failure")  # noqa: S314 - our own output
    assert f"{wrong}:7" in failure.get("message", "")


def test_a_mistake_in_a_test_file_names_its_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("character: blacksmith\ntests:\n  - name: x\n    steps:\n      - sya: hello\n")
    result = npcd_test(str(bad), "--characters", str(SAMPLES))
    assert result.returncode == 2
    assert (
        f"{bad}:5: tests.0.steps.0.sya: expected one of expect, params, say, trigger, wav"
        in result.stderr
    )


def test_spoken_lines_are_streamed_heard_and_answered(tmp_path: Path) -> None:
    # 48 kHz stereo: converted to the conversation's PCM16 mono 24 kHz when the file is read.
    write_wav(tmp_path / "for_sale.wav", speech("What do you have for sale?"))
    write_wav(tmp_path / "two_turns.wav", speech("What do you have for sale?", "I want a sword"))
    spoken = tmp_path / "spoken.yaml"
    spoken.write_text(
        textwrap.dedent(
            """\
            character: blacksmith
            tests:
              - name: asks aloud, then types
                steps:
                  - wav: for_sale.wav
                    expect:
                      heard: {contains: [for sale]}
                      contains: [iron sword, forty gold]
                  - say: I want to buy a sword
                    expect:
                      action: {name: sell_item, arguments: {item: iron sword}}
              - name: misheard
                steps:
                  - wav: for_sale.wav
                    expect:
                      heard: {contains: [dragon]}
              - name: pauses mid-line
                steps:
                  - wav: two_turns.wav
            """
        )
    )
    junit = tmp_path / "junit.xml"
    result = npcd_test(str(spoken), "--characters", str(SAMPLES), "--junit", str(junit))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ok   blacksmith: asks aloud, then types" in result.stdout, result.stdout
    [misheard] = [line for line in result.stdout.splitlines() if f"{spoken}:16:" in line]
    assert "expected 'dragon' in heard '" in misheard and "for sale" in misheard.lower()
    assert re.search(
        rf"{re.escape(str(spoken))}:19: the NPC answered before the end of two_turns.wav "
        r"\(\d+\.\d s\): a pause in it ended the player's turn",
        result.stdout,
    ), result.stdout
    assert "1 passed, 2 failed" in result.stdout
    cases = ET.parse(junit).getroot().findall("testsuite/testcase")  # noqa: S314 - our own output
    assert [len(case.findall("failure")) for case in cases] == [0, 1, 1]


@pytest.mark.parametrize(
    ("wav", "error"),
    [
        ("missing.wav", "no such file: {folder}/missing.wav"),
        ("notes.wav", "{folder}/notes.wav is not a 16-bit PCM WAV file (file does not start"),
    ],
)
def test_a_missing_or_non_wav_file_is_a_mistake_found_at_load_time(
    tmp_path: Path, wav: str, error: str
) -> None:
    (tmp_path / "notes.wav").write_text("not audio\n")
    bad = one_step(tmp_path, f"wav: {wav}")
    result = npcd_test(str(bad), "--characters", str(SAMPLES))
    assert result.returncode == 2
    expected = f"error: {bad}:5: tests.0.steps.0.wav: {error.format(folder=tmp_path)}"
    assert expected in result.stderr, result.stderr
    assert result.stdout == "", "refused before any test ran"


SILENCE_1S = bytes(4 * 48000)
UNSTREAMABLE: list[tuple[Callable[[Path], object], str]] = [
    (lambda p: write_wav(p, SILENCE_1S, rate=8000), "unsupported sample rate 8000 Hz"),
    (lambda p: write_wav(p, SILENCE_1S, channels=4, rate=24000), "unsupported channel count 4"),
    (lambda p: write_wav(p, SILENCE_1S, width=3, rate=16000), "line.wav is 24-bit; use 16-bit"),
    (lambda p: write_wav(p, bytes(2 * 16000 * 61), 16000, 1), "lasts 61 s; at most 60 s"),
    (lambda p: p.write_bytes(bytes(21 * 2**20)), "line.wav is over 20 MB"),
    (lambda p: write_wav(p, b"\0\0", rate=24000, channels=1), "less than 100 ms of audio"),
    (lambda p: p.write_bytes(b"RIFF"), "line.wav is not a 16-bit PCM WAV file"),
]


@pytest.mark.parametrize(("make", "error"), UNSTREAMABLE)
def test_a_wav_npcd_cannot_stream_is_refused_at_its_line(
    tmp_path: Path, make: Callable[[Path], object], error: str
) -> None:
    make(tmp_path / "line.wav")
    with pytest.raises(SpecError) as raised:
        load_suite(one_step(tmp_path, "wav: line.wav"))
    assert raised.value.where == f"{tmp_path}/bad.yaml:5"
    assert error in raised.value.message


@pytest.mark.parametrize(
    ("step", "error"),
    [
        ("wav: /tmp/line.wav", "tests.0.steps.0.wav: expected a path relative to the test file"),
        ("{say: hi, expect: {heard: {contains: [hi]}}}", "heard: expected a `wav` step"),
        ("{say: hi, wav: line.wav}", "tests.0.steps.0: expected one of `say`, `trigger` or `wav`"),
        ("{wav: line.wav, expect: {heard: {action: {name: x}}}}", "heard.action: expected one of"),
    ],
)
def test_a_spoken_step_written_wrong_names_its_line(tmp_path: Path, step: str, error: str) -> None:
    write_wav(tmp_path / "line.wav", SILENCE_1S)
    with pytest.raises(SpecError) as raised:
        load_suite(one_step(tmp_path, step))
    assert raised.value.where == f"{tmp_path}/bad.yaml:5"
    assert error in raised.value.message
