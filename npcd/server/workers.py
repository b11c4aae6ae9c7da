"""`npcd serve --workers N`: N npcd processes behind nginx, each NPC always on the same one.

One process tops out at some tens of real-time conversations (README, Benchmarks), so a big
dedicated server runs several. Routing is left to a standard proxy: games send the NPC id as
``x-npc-id`` metadata and nginx hashes on it (``hash $http_x_npc_id consistent``), so every
stream for an NPC reaches the process that holds its session, its lock (one player at a time)
and its budget. Workers listen on Unix sockets in a private folder and connect an NPC's session
when it is first talked to, since which NPCs the proxy sends them is the proxy's business.
Memory and spend are SQLite files in WAL mode, shared by the workers.

This module is the supervisor: it writes nginx's configuration, starts the workers and nginx,
restarts a worker that dies, and on SIGINT/SIGTERM stops nginx first (no new streams), then the
workers (each gives its conversations their grace). It is an I/O shell; `nginx_config` is the
part worth reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npcd.config import ListenAddress
from npcd.errors import StartupError

_LOGGER = logging.getLogger("npcd.workers")

#: How long a worker may take to start listening (it loads personas and speech models).
WORKER_START_S = 120.0
#: A worker that dies is restarted after this long (doubling while it keeps dying, to 30 s).
RESTART_DELAY_S = 1.0


def nginx_config(listen: ListenAddress, sockets: Sequence[Path], folder: Path) -> str:
    """nginx in front of the workers: gRPC over HTTP/2 cleartext, an NPC per worker by a
    consistent hash of ``x-npc-id`` (so adding a worker moves few NPCs), streams as long as a
    conversation lasts."""
    servers = "\n".join(f"        server unix:{path} max_fails=0;" for path in sockets)
    if listen.unix_path is not None:
        where = f"unix:{listen.unix_path}"
    else:
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        where = f"{host}:{listen.port}"
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
        client_max_body_size 0;
        location / {{
            grpc_pass grpc://npcd;
            # A conversation is one long stream: never time it out for being quiet.
            grpc_read_timeout 1d;
            grpc_send_timeout 1d;
            grpc_socket_keepalive on;
        }}
    }}
}}
"""


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
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self, stop: asyncio.Event) -> None:
        try:
            keepers = [asyncio.create_task(self._keep(worker)) for worker in self.workers]
            self._tasks.extend(keepers)
            listening: asyncio.Future[Any] = asyncio.ensure_future(
                asyncio.gather(*(w.listening.wait() for w in self.workers))
            )
            async with asyncio.timeout(WORKER_START_S):
                await asyncio.wait([listening, *keepers], return_when=asyncio.FIRST_COMPLETED)
            for keeper in keepers:
                if keeper.done():
                    listening.cancel()
                    keeper.result()  # a worker that could not start: its StartupError
            if not listening.done():
                raise TimeoutError
            nginx = await self._start_nginx()
            _LOGGER.info(
                "npcd listening on %s: %d workers behind nginx", self.listen, len(self.workers)
            )
            waiting = asyncio.create_task(nginx.wait())
            stopped = asyncio.create_task(stop.wait())
            workers_done: asyncio.Future[Any] = asyncio.ensure_future(
                asyncio.gather(*self._tasks[: len(self.workers)])
            )
            await asyncio.wait(
                [waiting, stopped, workers_done], return_when=asyncio.FIRST_COMPLETED
            )
            if workers_done.done():
                if workers_done.exception() is not None:
                    _LOGGER.error("a worker's supervision failed: %s", workers_done.exception())
                _LOGGER.info("every worker has stopped")
            elif waiting.done() and not stop.is_set():
                _LOGGER.error("nginx exited (code %s); stopping the workers", nginx.returncode)
            stopped.cancel()
        except TimeoutError:
            raise StartupError(f"a worker did not start within {WORKER_START_S:.0f} s") from None
        finally:
            await self._shutdown()

    async def _start_nginx(self) -> asyncio.subprocess.Process:
        config = self.folder / "nginx.conf"
        config.write_text(nginx_config(self.listen, [w.socket for w in self.workers], self.folder))
        nginx = self._nginx = await asyncio.create_subprocess_exec(
            self._nginx_path,
            "-p",
            str(self.folder),
            "-c",
            str(config),
            "-e",
            "stderr",
            "-g",
            "daemon off;",
            stderr=asyncio.subprocess.PIPE,
        )
        reader = asyncio.create_task(self._relay("nginx", _stderr(nginx)))
        self._tasks.append(reader)
        await self._wait_listening(nginx)
        return nginx

    async def _wait_listening(self, nginx: asyncio.subprocess.Process) -> None:
        """Until nginx accepts connections (or has died saying why)."""
        async with asyncio.timeout(10):
            while nginx.returncode is None:
                try:
                    if self.listen.unix_path is not None:
                        _, writer = await asyncio.open_unix_connection(str(self.listen.unix_path))
                    else:
                        _, writer = await asyncio.open_connection(
                            self.listen.host, self.listen.port
                        )
                except OSError:
                    await asyncio.sleep(0.05)  # noqa: ASYNC110 - nginx gives no readiness signal
                    continue
                writer.close()
                return
        raise StartupError(f"nginx could not start (exit code {nginx.returncode}); see above")

    async def _keep(self, worker: _Worker) -> None:
        """Run ``worker``, and again if it dies (not when stopping)."""
        delay = RESTART_DELAY_S
        while not self._stopping:
            worker.process = await asyncio.create_subprocess_exec(
                *worker.argv, stderr=asyncio.subprocess.PIPE
            )
            await self._relay(worker.name, _stderr(worker.process), worker.listening)
            code = await worker.process.wait()
            if self._stopping or (self._draining and code == 0):
                return
            if not worker.listening.is_set():
                raise StartupError(
                    f"worker {worker.name} could not start (exit code {code}); see its log above"
                )
            _LOGGER.error(
                "worker %s exited (code %s); restarting in %.0f s", worker.name, code, delay
            )
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)

    @staticmethod
    async def _relay(
        name: str, stream: asyncio.StreamReader, listening: asyncio.Event | None = None
    ) -> None:
        """A child's log lines on ours, marked with its name."""
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            if listening is not None and " listening on " in text:
                listening.set()
            print(f"[{name}] {text}", file=sys.stderr, flush=True)

    async def _shutdown(self) -> None:
        self._stopping = True
        nginx = self._nginx
        if nginx is not None and nginx.returncode is None:
            nginx.send_signal(signal.SIGQUIT)  # graceful: finish streams it is proxying
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        for process in [nginx, *(w.process for w in self.workers)]:
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
) -> None:
    """The `npcd serve --workers N` command: run until SIGINT or SIGTERM."""
    supervisor = Supervisor(listen, worker_argv, workers, grace_s, metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, supervisor.drain)
    try:
        await supervisor.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
