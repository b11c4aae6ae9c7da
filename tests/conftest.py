"""Shared fixtures: paths to the sample characters and a writer for throwaway persona files."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "characters"


@pytest.fixture
def samples_copy(tmp_path: Path) -> Path:
    """A private copy of the sample characters, safe to break."""
    target = tmp_path / "characters"
    shutil.copytree(SAMPLES, target)
    return target


PersonaWriter = Callable[[str, str], Path]


@pytest.fixture
def write_persona(tmp_path: Path) -> PersonaWriter:
    """Write ``text`` (dedented) as ``tmp_path/characters/<name>`` and return its path."""
    folder = tmp_path / "characters"
    folder.mkdir(exist_ok=True)

    def write(name: str, text: str) -> Path:
        path = folder / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def unused_tcp_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
