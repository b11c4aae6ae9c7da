"""Start-up: from launching `npcd serve` to every NPC session ready, and the memory they hold.

Run: python -m npcd.bench.startup [--levels 1,100,500] [--runs 3]. For each level, a folder of
generated personas and a fresh `npcd serve` on the default in-process local backend, listening
on a free port it reports in its log. Three moments, from the launch of the process: the gRPC
port accepts connections, the health service reports `npcd.v1.NpcService` SERVING (every
session has connected or failed; npcd's log then says how many are ready, and a run with any
missing is an error), and the daemon's resident memory (/proc VmRSS) once ready and idle. The
idle memory of one pooled session is the slope between the smallest and largest level; it
includes the embedded backend's side of each session, since that runs in the same process.
Levels are interleaved within each run so drift on the machine spreads over all of them, after
one uncounted start that warms the page cache.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from npcd.v1 import npcd_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["NpcService"].full_name
LISTENING = re.compile(r"listening on (\S+):(\d+): \d+ characters")
#: `npcd serve --workers N`'s supervisor, once every worker listens and nginx accepts.
WORKERS_LISTENING = re.compile(r"npcd listening on (\S+):(\d+): \d+ workers behind nginx")
SESSIONS_READY = re.compile(r"(\d+) of (\d+) NPC sessions ready")
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse")


class Daemon:
    """One `python -m npcd ...` child. Its stderr (the log) is drained by a thread, because a
    full pipe would stall the daemon, and kept as lines to wait on and to quote on failure."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        command: Sequence[str] = (sys.executable, "-m", "npcd"),
    ) -> None:
        # NPCD_* variables in the caller's shell (a session cap, a key) would skew the figures.
        clean = {k: v for k, v in os.environ.items() if not k.startswith("NPCD_")}
        self.name = f"npcd {args[0]}"
        self.launched = time.perf_counter()
        self.process = subprocess.Popen(
            [*command, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=clean | (env or {}),
        )
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        for line in self.process.stderr or ():
            self.tail.append(line.rstrip()[:300])
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first log line (from here on) that matches ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise self.failure(
                    f"no log line like {pattern.pattern!r} in {timeout:.0f} s"
                ) from None
            if line is None:
                self.process.wait()
                raise self.failure(f"exited with {self.process.returncode}")
            if found := pattern.search(line):
                return found

    def failure(self, what: str) -> RuntimeError:
        log = "\n  ".join(self.tail)
        return RuntimeError(f"{self.name}: {what}; log:\n  {log}")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise self.failure("no VmRSS in /proc")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (npcd's graceful stop), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout)
        if self.process.stderr is not None:
            self.process.stderr.close()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def wait_listening(
    daemon: Daemon, timeout: float, pattern: re.Pattern[str] = LISTENING
) -> tuple[str, float]:
    """The daemon's gRPC target and the launch -> accepts-a-connection time, in seconds.

    With ``--listen 127.0.0.1:0`` only the log says which port; it is printed just after the
    server starts, so a connection is tried as soon as the line is read. ``pattern`` (host and
    port groups) is `WORKERS_LISTENING` for a supervisor."""
    found = daemon.wait_for(pattern, timeout)
    host, port = found.group(1), int(found.group(2))
    with socket.create_connection((host, port), timeout=timeout):
        accepted = time.perf_counter() - daemon.launched
    return f"{host}:{port}", accepted


def wait_serving(daemon: Daemon, target: str, timeout: float) -> tuple[float, int]:
    """Launch -> health reports the NPC service SERVING, in seconds (watched, not polled), and
    how many NPC sessions are ready. npcd logs "N of M NPC sessions ready" as health settles;
    a thread reads that line and ends the watch at once if any session failed (health would
    then stay NOT_SERVING, or be SERVING with some NPCs missing)."""
    counted: list[re.Match[str] | RuntimeError] = []
    with grpc.insecure_channel(target) as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=timeout
        )

        def count() -> None:
            try:
                found = daemon.wait_for(SESSIONS_READY, timeout)
            except RuntimeError as exc:
                counted.append(exc)
                call.cancel()
                return
            counted.append(found)
            if found.group(1) != found.group(2):
                call.cancel()

        counter = threading.Thread(target=count, daemon=True)
        counter.start()
        serving_s: float | None = None
        try:
            for reply in call:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    serving_s = time.perf_counter() - daemon.launched
                    break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise daemon.failure(f"health watch failed: {exc.code()}") from None
        finally:
            call.cancel()  # an open stream would hold npcd's graceful stop for its grace period
        counter.join(timeout)
    if not counted:
        raise daemon.failure(f"no session count logged within {timeout:.0f} s")
    if isinstance(counted[0], RuntimeError):
        raise counted[0]
    ready, total = int(counted[0].group(1)), int(counted[0].group(2))
    if ready != total or serving_s is None:
        raise daemon.failure(f"{ready} of {total} NPC sessions ready")
    return serving_s, ready


def write_personas(folder: Path, count: int) -> None:
    """Minimal personas like a crowd of villagers: one scripted line each, so the local backend
    could answer them, with shared phrases (the embedding of phrases is cached across personas,
    so the figures are npcd's and the sessions', not MiniLM's)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        (folder / f"villager_{n:03d}.yaml").write_text(
            f"id: villager_{n:03d}\nname: Villager {n:03d}\nvoice: {VOICES[n % len(VOICES)]}\n"
            f"backstory: Villager number {n:03d} of Emberfall.\n"
            "dialogue:\n  lines:\n    - when: [hello there, good day]\n"
            f"      say: I am villager number {n:03d}.\n",
            encoding="utf-8",
        )


def measure_once(characters: Path, *, settle_s: float, timeout: float) -> dict[str, Any]:
    """One `npcd serve` from launch to idle: the times, the sessions ready and its RSS."""
    memory = str(characters.parent / "memory")  # opened at start-up, as in a game
    with Daemon(
        ["serve", "--listen", "127.0.0.1:0", "--characters", str(characters), "--log-level", "INFO"]
        + ["--data-dir", memory]
    ) as daemon:
        target, listening_s = wait_listening(daemon, timeout)
        ready_s, ready = wait_serving(daemon, target, timeout - listening_s)
        rss_ready = daemon.rss_kib()
        # Idle memory is read after a short settle: just-closed handshakes and the start-up
        # tasks are released by then (a measurement choice, not a synchronisation).
        time.sleep(settle_s)
        return {
            "listening_s": listening_s,
            "ready_s": ready_s,
            "sessions": ready,
            "rss_ready_kib": rss_ready,
            "rss_idle_kib": daemon.rss_kib(),
        }


def _summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "max": max(values), "runs": values}


def run(
    levels: Sequence[int] = (1, 100, 500),
    runs: int = 3,
    settle_s: float = 0.5,
    timeout_s: float = 300.0,
    warmup: int = 1,
) -> dict[str, Any]:
    """Start npcd ``runs`` times at each level of personas; medians, maxima and memory slope."""
    levels = sorted(set(levels))
    if not levels or levels[0] < 1 or runs < 1:
        raise ValueError("levels must be positive persona counts and runs at least 1")
    samples: dict[int, list[dict[str, Any]]] = {level: [] for level in levels}
    with tempfile.TemporaryDirectory(prefix="npcd-bench-startup-") as tmp:
        folders = {level: Path(tmp) / f"p{level}" for level in levels}
        for level, folder in folders.items():
            write_personas(folder, level)
        # The first start after a while reads the models from disk; one uncounted start
        # first, so that every level is timed the same way, with a warm page cache.
        for _ in range(warmup):
            measure_once(folders[levels[0]], settle_s=0.0, timeout=timeout_s)
        for _ in range(runs):
            for level in levels:
                samples[level].append(
                    measure_once(folders[level], settle_s=settle_s, timeout=timeout_s)
                )
    rows = []
    for level in levels:
        got = samples[level]
        rows.append(
            {
                "personas": level,
                "sessions_ready": min(s["sessions"] for s in got),
                "listening_s": _summary([s["listening_s"] for s in got]),
                "ready_s": _summary([s["ready_s"] for s in got]),
                "rss_ready_kib": _summary([float(s["rss_ready_kib"]) for s in got]),
                "rss_idle_kib": _summary([float(s["rss_idle_kib"]) for s in got]),
            }
        )
    low, high = rows[0], rows[-1]
    # (RSS at the largest level - RSS at the smallest, normally 1) / the sessions in between.
    per_session = (
        (high["rss_idle_kib"]["median"] - low["rss_idle_kib"]["median"])
        / (high["personas"] - low["personas"])
        if len(rows) > 1
        else None
    )
    return {
        "benchmark": "startup",
        "backend": "local (in-process)",
        "runs": runs,
        "warmup_starts": warmup,
        "settle_s": settle_s,
        "levels": rows,
        "rss_per_idle_session_kib": per_session,
    }


def format_table(result: dict[str, Any]) -> str:
    """Median / max over the runs per level, and the memory slope."""
    lines = [
        f"npcd serve start-up, local backend in-process, {result['runs']} run(s) per level "
        "(seconds from launch; median / max)",
        f"{'personas':>8}  {'port accepts':>15}  {'all NPCs ready':>15}  {'idle RSS MiB':>12}",
    ]
    for row in result["levels"]:
        listening, ready = row["listening_s"], row["ready_s"]
        lines.append(
            f"{row['personas']:>8}  {listening['median']:6.2f} / {listening['max']:6.2f}"
            f"  {ready['median']:6.2f} / {ready['max']:6.2f}"
            f"  {row['rss_idle_kib']['median'] / 1024:12.1f}"
        )
    slope = result["rss_per_idle_session_kib"]
    if slope is not None:
        lines.append(
            f"memory per idle pooled session: {slope:.0f} KiB "
            "(npcd slot and the embedded backend's session, same process)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--levels",
        default="1,100,500",
        type=lambda text: [int(part) for part in text.split(",")],
        help="persona counts, comma-separated (default 1,100,500)",
    )
    parser.add_argument("--runs", type=int, default=3, help="starts per level (default 3)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per start")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted starts first (default 1)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run(levels=args.levels, runs=args.runs, timeout_s=args.timeout, warmup=args.warmup)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
