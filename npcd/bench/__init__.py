"""`npcd bench`: what npcd costs a game, measured on loopback side by side with a direct path."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run a benchmark process's main coroutine; NPCD_BENCH_LOOP=uvloop tries uvloop, which
    saved 3 % of CPU per frame under npcd with grpc.aio here (see README, Benchmarks)."""
    if os.environ.get("NPCD_BENCH_LOOP") == "uvloop":
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        return uvloop.run(main)  # type: ignore[no-any-return,unused-ignore]
    return asyncio.run(main)
