"""`npcd serve --workers N`: N npcd processes behind nginx, each NPC always on the same one.

One process tops out at some tens of real-time conversations (README, Benchmarks), so a big
dedicated server runs several. Routing is left to a standard proxy: games send the NPC id as
``x-npc-id`` metadata and nginx hashes on it (``hash $http_x_npc_id consistent``), so every
stream for an NPC reaches the process that holds its session, its lock (one player at a time)
and its budget. Workers refuse a stream without that metadata (nginx would spread those round
robin), and nginx never retries a stream on another worker (that NPC would then live on two).
Workers listen on Unix sockets in a private folder and connect an NPC's session when it is
first talked to, since which NPCs the proxy sends them is the proxy's business. Memory and
spend are SQLite files in WAL mode, shared by the workers.

This module is the supervisor: it writes nginx's configuration, starts the workers and nginx
in sessions of their own (a Ctrl-C at the terminal reaches only the supervisor, which stops
them in order) that die with it (PR_SET_PDEATHSIG on Linux), restarts a worker that dies, and
on SIGINT/SIGTERM stops nginx taking streams and gives the workers their grace period. It is
an I/O shell; `nginx_config` is the part worth reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from npcd.config import ListenAddress
from npcd.errors import StartupError

_LOGGER = logging.getLogger("npcd.workers")

#: How long a worker may take to start listening (it loads personas and speech models).
WORKER_START_S = 120.0
#: A worker that dies is restarted after this long (doubling while it keeps dying, to 30 s;
#: back to this after it has run for `STABLE_S`).
RESTART_DELAY_S = 1.0
STABLE_S = 60.0
#: A worker that fails to start this many times in a row is given up on (npcd stops).
MAX_FAILED_STARTS = 5
#: Log lines longer than this are cut, not fatal.
MAX_LINE_BYTES = 1 << 20


def nginx_config(listen: ListenAddress, sockets: Sequence[Path], folder: Path) -> str:
    """nginx in front of the workers: gRPC over HTTP/2 cleartext, an NPC per worker by a
    consistent hash of ``x-npc-id`` (so adding a worker moves few NPCs), streams as long as a
    conversation lasts, quiet or not, and never retried on another worker."""
    servers = "\n".join(f"        server unix:{path};" for path in sockets)
    if listen.unix_path is not None:
        where = f"unix:{listen.unix_path}"
    else:
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        where = f"{host}:{listen.port} so_keepalive=60s:10s:3"
    # As root, nginx runs its workers as nobody, who may not open the workers' sockets.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""# Written by `npcd serve --workers`; see README, Scale-out.
{user}worker_processes 1;
pid {folder}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    upstream npcd {{
        hash $http_x_npc_id consistent;
{servers}
        keepalive 64;
    }}
    server {{
        listen {where} http2;
        http2_max_concurrent_streams 4096;
        client_max_body_size 0;
        # A conversation is one long stream: never time it out for being quiet (a text-only
        # or push-to-talk game may send nothing for minutes).
        client_body_timeout 1d;
        send_timeout 1d;
        location / {{
            grpc_pass grpc://npcd;
            grpc_read_timeout 1d;
            grpc_send_timeout 1d;
            grpc_socket_keepalive on;
            # An NPC lives on one worker: a stream its worker cannot take fails (UNAVAILABLE,
            # the game retries) rather than going to another, which would then hold it too.
            grpc_next_upstream off;
        }}
    }}
}}
"""


def _die_with_parent() -> None:
    """In the child, before exec: a SIGTERM when the supervisor dies, however it dies."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass(slots=True)
class _Worker:
    name: str
    socket: Path
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    listening: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Runs the workers and nginx until stopped."""

    def __init__(
        self,
        listen: ListenAddress,
        worker_argv: Sequence[str],
        workers: int,
        grace_s: float,
        metrics: ListenAddress | None = None,
    ) -> None:
        if workers < 1:
            raise StartupError("--workers must be at least 1")
        nginx = shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None
        )
        if nginx is None:
            raise StartupError(
                "--workers runs npcd behind nginx, which is not installed "
                "(Debian/Ubuntu: apt install nginx-light)"
            )
        self._nginx_path = nginx
        self.listen = listen
        self.folder = Path(tempfile.mkdtemp(prefix="npcd-workers-"))  # 0700
        self.grace_s = grace_s
        self.workers = [
            _Worker(
                name=f"w{i}",
                socket=self.folder / f"w{i}.sock",
                argv=[
                    *worker_argv,
                    "--workers",
                    "1",  # whatever NPCD_WORKERS says: a worker never supervises
                    "--listen",
                    f"unix://{self.folder / f'w{i}.sock'}",
                    "--worker-name",
                    f"w{i}",
                    "--no-prewarm",
                    # Each worker has its own metrics, on the ports after --metrics'.
                    *(["--metrics", f"{metrics.host}:{metrics.port + 1 + i}"] if metrics else []),
                ],
            )
            for i in range(workers)
        ]
        self._nginx: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._draining = False
        self._failed = False
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self, stop: asyncio.Event) -> int:
        """Until ``stop`` (exit code 0), every worker drained (0), or a failure (1)."""
        try:
            keepers = [asyncio.create_task(self._keep(worker)) for worker in self.workers]
            self._tasks.extend(keepers)
            listening = asyncio.ensure_future(self._all_listening())
            stopped = asyncio.ensure_future(stop.wait())
            async with asyncio.timeout(WORKER_START_S):
                await asyncio.wait(
                    [listening, stopped, *keepers], return_when=asyncio.FIRST_COMPLETED
                )
            for keeper in keepers:
                if keeper.done():
                    listening.cancel()
                    keeper.result()  # a worker that could not start: its StartupError
            if stop.is_set():
                listening.cancel()
                return 0
            if not listening.done():
                raise TimeoutError
            nginx = await self._start_nginx()
            _LOGGER.info(
                "npcd listening on %s: %d workers behind nginx", self.listen, len(self.workers)
            )
            exited: asyncio.Future[object] = asyncio.ensure_future(nginx.wait())
            workers_done: asyncio.Future[list[object]] = asyncio.ensure_future(
                asyncio.gather(*keepers, return_exceptions=True)
            )
            waits: list[asyncio.Future[object]] = [exited, stopped, workers_done]  # type: ignore[list-item]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                return 0
            if workers_done.done():
                failures = [r for r in workers_done.result() if isinstance(r, BaseException)]
                for failure in failures:
                    _LOGGER.error("%s", failure)
                _LOGGER.info("every worker has stopped")
                return 1 if failures or self._failed else 0
            _LOGGER.error("nginx exited (code %s); stopping the workers", nginx.returncode)
            return 1
        except TimeoutError:
            raise StartupError(f"a worker did not start within {WORKER_START_S:.0f} s") from None
        finally:
            await self._shutdown()

    async def _all_listening(self) -> None:
        await asyncio.gather(*(w.listening.wait() for w in self.workers))

    async def _spawn(self, argv: Sequence[str]) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *argv,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - async-signal-safe: one prctl call
            limit=MAX_LINE_BYTES,
        )

    async def _start_nginx(self) -> asyncio.subprocess.Process:
        config = self.folder / "nginx.conf"
        config.write_text(nginx_config(self.listen, [w.socket for w in self.workers], self.folder))
        argv = [self._nginx_path, "-p", str(self.folder), "-c", str(config)]
        if _nginx_version(self._nginx_path) >= (1, 19, 5):
            argv += ["-e", "stderr"]  # older ones log start-up errors to their default file
        nginx = self._nginx = await self._spawn([*argv, "-g", "daemon off;"])
        reader = asyncio.create_task(self._relay("nginx", _stderr(nginx)))
        self._tasks.append(reader)
        await _wait_accepting(nginx, self.listen, 10.0)
        return nginx

    async def _keep(self, worker: _Worker) -> None:
        """Run ``worker``, and again if it dies (not when stopping or draining)."""
        delay = RESTART_DELAY_S
        failed_starts = 0
        while not self._stopping:
            worker.listening.clear()
            process = worker.process = await self._spawn(worker.argv)
            if self._stopping:  # stopped while it was being started
                process.send_signal(signal.SIGTERM)
            began = time.monotonic()
            relay = asyncio.create_task(self._relay(worker.name, _stderr(process)))
            ready = asyncio.create_task(_wait_accepting(process, worker.socket, WORKER_START_S))
            try:
                await ready
                worker.listening.set()
                failed_starts = 0
            except TimeoutError:
                failed_starts += 1
                process.kill()  # alive but never listening: stuck
            except StartupError:
                failed_starts += 1
            code = await process.wait()
            await relay
            if self._stopping or self._draining:
                return
            if not worker.listening.is_set() and failed_starts >= MAX_FAILED_STARTS:
                self._failed = True
                raise StartupError(
                    f"worker {worker.name} failed to start {failed_starts} times in a row "
                    f"(exit code {code}); see its log above"
                )
            if not worker.listening.is_set() and not any(
                w.listening.is_set() for w in self.workers
            ):
                raise StartupError(
                    f"worker {worker.name} could not start (exit code {code}); see its log above"
                )
            if time.monotonic() - began >= STABLE_S:
                delay = RESTART_DELAY_S
            _LOGGER.error(
                "worker %s exited (code %s); restarting in %.0f s", worker.name, code, delay
            )
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)

    @staticmethod
    async def _relay(name: str, stream: asyncio.StreamReader) -> None:
        """A child's log lines on ours, marked with its name."""
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line over MAX_LINE_BYTES: what was read of it is dropped
                continue
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            print(f"[{name}] {text}", file=sys.stderr, flush=True)

    async def _shutdown(self) -> None:
        """nginx stops taking streams at once (SIGQUIT: those open go on) and the workers get
        SIGTERM together: each turns NOT_SERVING, gives its conversations their grace, then
        ends them, and nginx exits once its last stream has."""
        self._stopping = True
        nginx = self._nginx
        if nginx is not None and nginx.returncode is None:
            nginx.send_signal(signal.SIGQUIT)
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        for process in [*(w.process for w in self.workers), nginx]:
            if process is None:
                continue
            try:
                await asyncio.wait_for(process.wait(), self.grace_s + 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.folder)

    def drain(self) -> None:
        """Pass a drain (SIGUSR1) on to every worker; each stops once its conversations have
        ended, and the supervisor once all have."""
        self._draining = True
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGUSR1)


def _nginx_version(path: str) -> tuple[int, ...]:
    try:
        shown = subprocess.run(  # noqa: S603 - nginx found on PATH, fixed arguments
            [path, "-v"], capture_output=True, text=True, timeout=10, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return (0,)
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", shown)
    return tuple(int(part) for part in found.groups()) if found else (0,)


async def _accepts(where: ListenAddress | Path) -> bool:
    try:
        if isinstance(where, Path):
            _, writer = await asyncio.open_unix_connection(str(where))
        elif where.unix_path is not None:
            _, writer = await asyncio.open_unix_connection(str(where.unix_path))
        else:
            _, writer = await asyncio.open_connection(where.host, where.port)
    except OSError:
        return False
    writer.close()
    return True


async def _wait_accepting(
    process: asyncio.subprocess.Process, where: ListenAddress | Path, within: float
) -> None:
    """Until ``where`` accepts connections, or ``process`` has died (StartupError). Neither
    nginx nor npcd signals readiness otherwise (and its log level may hide its own line)."""
    async with asyncio.timeout(within):
        while process.returncode is None:
            if await _accepts(where):
                return
            await asyncio.sleep(0.05)  # noqa: ASYNC110 - no readiness signal to wait on
    raise StartupError(f"exited with code {process.returncode} before it listened")


def _stderr(process: asyncio.subprocess.Process) -> asyncio.StreamReader:
    if process.stderr is None:
        raise RuntimeError("a child process was started without a stderr pipe")
    return process.stderr


async def serve_workers(
    listen: ListenAddress,
    worker_argv: Sequence[str],
    workers: int,
    grace_s: float,
    metrics: ListenAddress | None = None,
) -> int:
    """The `npcd serve --workers N` command: run until SIGINT or SIGTERM; the exit code."""
    supervisor = Supervisor(listen, worker_argv, workers, grace_s, metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, supervisor.drain)
    try:
        return await supervisor.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
