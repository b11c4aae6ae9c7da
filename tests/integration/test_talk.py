"""`npcd talk` as a person (or a script) uses it: a real process that starts npcd inside,
recorded human speech streamed in real time, typed lines, actions answered, WAVs written."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

from tests.conftest import REPO

NPCD = [sys.executable, "-m", "npcd", "talk"]
CLIP = REPO / "tests" / "fixtures" / "speech" / "sense_and_sensibility_01_austen_64kb-0880.wav"


def test_talking_with_a_recording_prints_both_sides_and_writes_the_answer(tmp_path: Path) -> None:
    result = subprocess.run(
        [*NPCD, "blacksmith", "--wav", str(CLIP), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    [heard] = [line for line in lines if line.startswith("you: ")]
    assert "young man" in heard.lower(), "the LibriVox line: 'he was not an ill disposed young man'"
    [answer] = [line for line in lines if line.startswith("Brom Ironhand: ")]
    assert "first audio" in answer
    [written] = list(tmp_path.glob("*.wav"))
    with wave.open(str(written)) as wav:
        assert wav.getframerate() == 24000
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert samples.size > 24000 and np.sqrt(np.mean(samples.astype(float) ** 2)) > 300, "speech"


def test_typed_lines_and_an_action_answered_automatically() -> None:
    result = subprocess.run(
        [*NPCD, "blacksmith", "--auto-actions", "ok"],
        input="I want to buy a sword\n",
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "you: I want to buy a sword" in out
    assert '[action] sell_item {"item":"iron sword","price_gold":40} -> ok' in out
    assert "Brom Ironhand: Forty gold" in out


def test_the_microphone_mode_says_clearly_what_it_needs() -> None:
    result = subprocess.run(
        [*NPCD, "blacksmith", "--mic"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "--wav" in result.stderr
