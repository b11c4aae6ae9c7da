"""`npcd bench`: what npcd costs a game, measured on loopback side by side with a direct path."""

from __future__ import annotations

import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from npcd import eventloop

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run a benchmark process's main coroutine on the loop NPCD_BENCH_LOOP names (see
    `npcd.eventloop`; default auto, as npcd's own)."""
    return eventloop.run(main, os.environ.get("NPCD_BENCH_LOOP", "auto"))
