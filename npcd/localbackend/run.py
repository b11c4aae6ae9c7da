"""`npcd backend`: the local Realtime server as a process of its own."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from npcd.errors import StartupError
from npcd.localbackend.defaults import default_engines
from npcd.localbackend.server import BackendOptions, LocalBackend
from npcd.personas import load_directory

_LOGGER = logging.getLogger("npcd.backend")


async def run_backend(
    host: str,
    port: int,
    characters: Path,
    *,
    api_key: str | None,
    max_session_s: float,
    refuse_beta: bool,
) -> None:
    catalog = load_directory(characters)
    if catalog.issues:
        raise StartupError(
            "invalid persona files:\n  " + "\n  ".join(str(i) for i in catalog.issues)
        )
    engines = default_engines()
    personas = {pid: loaded.persona for pid, loaded in catalog.personas.items()}
    if engines.warm is not None:
        await asyncio.to_thread(engines.warm, personas.values())
    backend = LocalBackend(
        engines,
        personas,
        BackendOptions(
            api_keys=(api_key,) if api_key else (),
            refuse_beta=refuse_beta,
            max_session_s=max_session_s,
        ),
    )
    try:
        await backend.start(host, port)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    _LOGGER.info(
        "local Realtime backend on %s (%d characters%s)",
        backend.base_url,
        len(personas),
        ", API key required" if api_key else ", any API key accepted",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await backend.close()
    _LOGGER.info("stopped")
