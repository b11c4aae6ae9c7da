"""`npcd talk` as a person (or a script) uses it: a real process that starts npcd inside,
recorded human speech streamed in real time, typed lines, actions answered, WAVs written; on a
pipe, and on a pseudo-terminal that is its controlling terminal, as in a shell."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import platform
import pty
import re
import select
import subprocess
import sys
import termios
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

NPCD = [sys.executable, "-m", "npcd", "talk"]
CLIP = REPO / "tests" / "fixtures" / "speech" / "sense_and_sensibility_01_austen_64kb-0880.wav"
#: The read(2) system call's number, as /proc/PID/task/TID/syscall shows it.
READ_SYSCALL = {"x86_64": 0, "aarch64": 63}.get(platform.machine())
#: CSI and OSC sequences (colours, cursor moves, titles), stripped before matching.
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def assert_heard_and_answered(lines: list[str]) -> None:
    [heard] = [line for line in lines if line.startswith("you: ")]
    assert "young man" in heard.lower(), "the LibriVox line: 'he was not an ill disposed young man'"
    [answer] = [line for line in lines if line.startswith("Brom Ironhand: ")]
    assert "first audio" in answer


def assert_speech_written(out: Path) -> None:
    [written] = list(out.glob("*.wav"))
    with wave.open(str(written)) as wav:
        assert wav.getframerate() == 24000
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert samples.size > 24000 and np.sqrt(np.mean(samples.astype(float) ** 2)) > 300, "speech"


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
    assert_heard_and_answered(result.stdout.splitlines())
    assert_speech_written(tmp_path)


class Terminal:
    """`npcd talk` with stdin, stdout and stderr on a pseudo-terminal it has as its controlling
    terminal (its own session), so keys typed there, Ctrl-C included, reach it as in a shell."""

    def __init__(self, *args: str) -> None:
        self.fd, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [*NPCD, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=REPO,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.raw = b""

    @property
    def screen(self) -> str:
        """What the terminal showed, escapes stripped, lines ending in \\n."""
        text = ANSI.sub("", self.raw.decode(errors="replace"))
        return text.replace("\r\n", "\n")

    def read(self, until: str | None, timeout_s: float) -> str:
        """Read until ``until`` shows, or (None) until the terminal closes; the screen."""
        deadline = time.monotonic() + timeout_s
        while until is None or until not in self.screen:
            left = deadline - time.monotonic()
            assert left > 0, f"{until or 'the end'!r} not in {timeout_s:.0f} s: {self.screen!r}"
            if not self._pump(left):
                assert until is None, f"closed before {until!r}: {self.screen!r}"
                return self.screen
        return self.screen

    def wait_for_keys(self, timeout_s: float) -> None:
        """Wait until the program waits for keys: a thread of it blocked in read(2) on stdin,
        as Linux's /proc shows (output is read on meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while not _reads_stdin(self.proc.pid):
            assert time.monotonic() < deadline, f"no read of stdin in {timeout_s:.0f} s"
            assert self._pump(0.05), f"closed: {self.screen!r}"

    def _pump(self, timeout_s: float) -> bool:
        """Take in what the program printed within ``timeout_s``; False once it is closed."""
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if ready:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # EIO: nothing holds the terminal open any more
                return False
            if not chunk:
                return False
            self.raw += chunk
        return True

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self.fd)


def _reads_stdin(pid: int) -> bool:
    assert READ_SYSCALL is not None, f"read(2)'s number on {platform.machine()}"
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            call = task.joinpath("syscall").read_text().split()
        except OSError:  # the thread ended meanwhile
            continue
        if call[:2] == [str(READ_SYSCALL), "0x0"]:
            return True
    return False


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    """Opens `Terminal`s; whatever still runs at the end is killed."""
    opened: list[Terminal] = []

    def open_terminal(*args: str) -> Terminal:
        opened.append(Terminal(*args))
        return opened[-1]

    yield open_terminal
    for each in opened:
        each.close()


@pytest.mark.timeout(180)
def test_a_recording_on_a_terminal_prints_both_sides_and_writes_the_answer(
    terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    term = terminal("blacksmith", "--wav", str(CLIP), "--out", str(tmp_path))
    screen = term.read(None, timeout_s=120)
    assert term.proc.wait(10) == 0, screen
    assert_heard_and_answered(screen.splitlines())
    assert "Ctrl-D" not in screen, "a recording ends by itself"
    assert_speech_written(tmp_path)


@pytest.mark.timeout(180)
def test_ctrl_c_at_a_terminal_ends_the_conversation_at_once(
    terminal: Callable[..., Terminal],
) -> None:
    """Ctrl-C while the program waits for a typed line: that read ran in the loop's executor,
    whose threads are joined at exit, so the process lived on until the next Enter."""
    term = terminal("blacksmith")
    term.read("end with Ctrl-D\n", timeout_s=120)
    term.type(b"hello there\r")
    term.read("Brom Ironhand: ", timeout_s=60)
    term.wait_for_keys(timeout_s=30)
    term.type(b"\x03")
    term.read(None, timeout_s=15)
    assert term.proc.wait(5) == 130


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


def test_the_microphone_mode_without_sounddevice_says_what_to_install() -> None:
    """Where the `mic` extra is not installed (CI: no sound device either), `--mic` says at once
    what to install and what works without it, and starts nothing."""
    assert importlib.util.find_spec("sounddevice") is None, "this checks a machine without it"
    result = subprocess.run(
        [*NPCD, "blacksmith", "--mic"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "sounddevice is not installed" in result.stderr
    assert "pip install 'npcd[mic]'" in result.stderr
    assert "apt install libportaudio2" in result.stderr
    assert "Typing lines, or `--wav FILE`, works without it." in result.stderr
    assert result.stdout == "", "no conversation was started"
