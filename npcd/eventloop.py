"""Which event loop runs npcd: uvloop where it is installed, asyncio's own otherwise.

Why uvloop: npcd's cost is per message (a gRPC read, a WebSocket send, a timer), and uvloop's
libuv core does that work in C. On the 2-core machine (README, Benchmarks) npcd used 57 % of a
core for 50 conversations on uvloop against 68 % on asyncio, and added +2.0 against +4.1 ms p99.
uvloop has no Windows build, so there npcd runs the same code on asyncio's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from npcd.errors import StartupError

__all__ = ["LOOPS", "loop_factory", "loop_name", "run"]

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: ``auto`` takes uvloop when it can be imported, asyncio otherwise.
LOOPS: Final = ("auto", "uvloop", "asyncio")


def loop_factory(choice: str) -> LoopFactory | None:
    """The factory for ``choice`` (None: asyncio's default loop)."""
    if choice not in LOOPS:
        raise StartupError(f"unknown event loop {choice!r}; use one of {', '.join(LOOPS)}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise StartupError(
                "--loop uvloop: uvloop is not installed here (it has no Windows build); "
                "use --loop auto or --loop asyncio"
            ) from None
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def loop_name(choice: str) -> str:
    """What ``choice`` runs on here: ``uvloop`` or ``asyncio``."""
    return "asyncio" if loop_factory(choice) is None else "uvloop"


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """`asyncio.run` on the chosen loop."""
    try:
        factory = loop_factory(choice)
    except StartupError:
        main.close()  # never awaited: close it rather than warn
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
