"""`npcd test` as a persona writer and CI run it: real processes, the real daemon inside, the
sample characters' own tests passing, and a wrong expectation failing at its file and line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.conftest import SAMPLES

NPCD = [sys.executable, "-m", "npcd"]


def npcd_test(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NPCD, "test", *args], capture_output=True, text=True, timeout=180, check=False
    )


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
    assert f"{bad}:5: tests.0.steps.0.sya: expected one of expect, params, say, trigger" in (
        result.stderr
    )
