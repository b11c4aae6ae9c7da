"""`npcd --loop`: uvloop where it is installed, asyncio's loop otherwise, and clear refusals."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest

from npcd import eventloop
from npcd.errors import StartupError


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


def test_auto_runs_on_uvloop_where_it_is_installed() -> None:
    assert eventloop.run(loop_module(), "auto") == "uvloop" == eventloop.loop_name("auto")


def test_asyncio_runs_on_asyncios_own_loop() -> None:
    assert eventloop.run(loop_module(), "asyncio") == "asyncio" == eventloop.loop_name("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails, as on Windows
    assert eventloop.run(loop_module(), "auto") == "asyncio"
    main = loop_module()
    with pytest.raises(StartupError, match="uvloop is not installed.*--loop auto"):
        eventloop.run(main, "uvloop")
    assert inspect.getcoroutinestate(main) == "CORO_CLOSED", "closed, so no never-awaited warning"


def test_an_unknown_loop_names_the_choices() -> None:
    main = loop_module()
    with pytest.raises(StartupError, match="unknown event loop 'trio'; use one of auto, uvloop"):
        eventloop.run(main, "trio")
    assert inspect.getcoroutinestate(main) == "CORO_CLOSED"
