"""Where npcd keeps its memory database by default (the XDG data folder, overridable)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["DB_NAME", "default_data_dir"]

#: The database file's name inside the data folder.
DB_NAME = "memory.sqlite3"


def default_data_dir() -> Path:
    """``$NPCD_DATA_DIR``, else ``$XDG_DATA_HOME/npcd``, else ``~/.local/share/npcd``.

    A relative ``XDG_DATA_HOME`` is ignored, as the XDG spec says; on Windows the fallback is
    ``%LOCALAPPDATA%\\npcd``. Read on every call, so tests and the CLI see the current env.
    """
    explicit = os.environ.get("NPCD_DATA_DIR", "")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "npcd"
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "npcd"
    return Path.home() / ".local" / "share" / "npcd"
