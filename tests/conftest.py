"""Shared fixtures: paths to the sample characters, a writer for throwaway persona files, and
NPC memory kept in a fresh folder per test (never the user's own data dir)."""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "characters"


@pytest.fixture(scope="session", autouse=True)
def _memory_outside_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Daemons started by tests (and their subprocesses) keep memory in a throwaway folder."""
    before = os.environ.get("NPCD_DATA_DIR")
    os.environ["NPCD_DATA_DIR"] = str(tmp_path_factory.mktemp("npcd-data"))
    yield
    if before is None:
        os.environ.pop("NPCD_DATA_DIR", None)
    else:
        os.environ["NPCD_DATA_DIR"] = before


@pytest.fixture(autouse=True)
def _fresh_memory(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test's daemons start remembering nobody."""
    monkeypatch.setenv("NPCD_DATA_DIR", str(tmp_path_factory.mktemp("memory")))


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
