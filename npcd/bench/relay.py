"""What npcd adds to every audio frame, side by side with a direct path, a bare relay and Pipecat.

Processes, each on its own: the echo backend (`npcd.bench.echo`), the npcd daemon (`npcd serve
--backend ws://...`), the bare relay (`npcd.bench.bare`), the Pipecat peer when its venv exists
(`bench/pipecat/`), and one load generator per measurement (`npcd.bench.load`). For every level
of concurrent conversations each path gets the same traffic, in rotating order, `reps` times;
the table shows the median over the repeats of each run's p50/p99/max. Then the capacity probe
raises the load on npcd until a level fails the rule (p99 added latency over the direct path
under 20 ms, every frame delivered, and no backlog building up: the last second's median within
20 ms of the first second's).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from npcd.bench.frames import FRAME_MS
from npcd.bench.startup import SESSIONS_READY, Daemon, wait_listening
from npcd.bench.stats import cpu_seconds, machine_cpu_seconds, median, rss_mib
from npcd.eventloop import loop_name

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent.parent
PIPECAT_PY = REPO / ".venv-pipecat/bin/python"
PIPECAT_RELAY = REPO / "bench/pipecat/relay.py"
CAPACITY_RULE_MS = 20.0


@dataclass
class _Server:
    name: str
    process: subprocess.Popen[str]
    target: str
    #: npcd only: seconds from launch to every NPC session ready.
    ready_s: float = 0.0


@dataclass
class Plan:
    levels: Sequence[int] = (1, 50, 100, 200)
    seconds: float = 5.0
    reps: int = 3
    #: Audio per message, each way (the capacity rule is stated for 20 ms).
    frame_ms: int = FRAME_MS
    #: Loads the capacity probe tries in turn, stopping at the first that fails.
    capacity: Sequence[int] = (50, 75, 100, 125, 150, 200, 250, 300)
    #: Runs per capacity probe: a load passes only if every run passes.
    capacity_reps: int = 2
    pipecat: bool = True
    #: Pipecat collapses near 100 streams; above this it is not run (it would only queue).
    pipecat_max: int = 100
    #: How long each measurement waits for other processes to go quiet first. A check that the
    #: benchmark works (tests, --quick) needs no quiet machine, and must not wait for one.
    quiet_s: float = 60.0
    #: The event loop of npcd, the bare relay, the echo backend and the load generator (see
    #: `npcd.eventloop`; Pipecat runs its own). The rig on asyncio costs the machine more.
    loop: str = "auto"
    #: The npcd command; NPCD_BENCH_DAEMON swaps it (e.g. for a profiler wrapping npcd).
    daemon: Sequence[str] = field(
        default_factory=lambda: os.environ.get("NPCD_BENCH_DAEMON", f"{PY} -m npcd").split()
    )


def _write_personas(folder: Path, count: int) -> None:
    for n in range(count):
        (folder / f"npc_{n:03d}.yaml").write_text(
            f"id: npc_{n:03d}\nname: Bench NPC {n}\nvoice: alloy\nbackstory: A bench NPC.\n"
            "turn_detection: {type: none}\n"
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_line(stream: Any, pattern: str, timeout: float = 60.0) -> re.Match[str]:
    """The first line of a child's output matching ``pattern``, read on a thread so that a
    child that hangs without a word cannot hang the benchmark."""
    found: queue.Queue[re.Match[str] | None] = queue.Queue()

    def read() -> None:
        for line in stream:
            match = re.search(pattern, line)
            if match:
                found.put(match)
                return
        found.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        match = found.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"no line like {pattern!r} in {timeout:.0f} s") from None
    if match is None:
        raise RuntimeError(f"process exited before printing {pattern!r}")
    return match


@contextlib.contextmanager
def _servers(plan: Plan, personas: int) -> Iterator[dict[str, _Server]]:
    work = Path(tempfile.mkdtemp(prefix="npcd-bench-"))
    (work / "characters").mkdir()
    _write_personas(work / "characters", personas)
    started: list[subprocess.Popen[str]] = []
    try:
        with contextlib.ExitStack() as stack:
            port = _free_port()
            echo = subprocess.Popen(
                [PY, "-m", "npcd.bench.echo", str(port)],
                stdout=subprocess.PIPE,
                text=True,
                env=_rig_env(plan),
            )
            started.append(echo)
            _wait_line(echo.stdout, "ready")
            backend = f"ws://127.0.0.1:{port}/v1/realtime"
            servers = {"echo": _Server("echo", echo, backend + "?model=echo")}

            serve = ["serve", "--characters", str(work / "characters"), "--listen", "127.0.0.1:0"]
            serve += ["--loop", plan.loop, "--data-dir", str(work / "memory")]
            daemon = stack.enter_context(
                Daemon([*serve, "--backend", f"ws://127.0.0.1:{port}/v1"], command=plan.daemon)
            )
            target, _ = wait_listening(daemon, 60)
            daemon.wait_for(SESSIONS_READY, 120)
            ready_s = time.perf_counter() - daemon.launched
            servers["npcd"] = _Server("npcd", daemon.process, target, ready_s)

            bare = subprocess.Popen(
                [PY, "-m", "npcd.bench.bare", "--backend", backend],
                stdout=subprocess.PIPE,
                text=True,
                env=_rig_env(plan),
            )
            started.append(bare)
            servers["bare"] = _Server("bare", bare, _wait_line(bare.stdout, r"listening (\S+)")[1])

            if plan.pipecat and PIPECAT_PY.exists() and PIPECAT_RELAY.exists():
                peer = subprocess.Popen(
                    [str(PIPECAT_PY), str(PIPECAT_RELAY), "--listen", "127.0.0.1:0"]
                    + ["--backend", backend, "--log-level", "WARNING"],
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=tempfile.gettempdir(),
                )
                started.append(peer)
                found = _wait_line(peer.stdout, r"listening (\S+)", 120)
                servers["pipecat"] = _Server("pipecat", peer, found[1])
            yield servers
    finally:
        for process in reversed(started):
            process.terminate()
        for process in started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        shutil.rmtree(work, ignore_errors=True)


def _rig_env(plan: Plan) -> dict[str, str]:
    """The environment of the processes of ours that carry the load (read by `run_loop`)."""
    return {**os.environ, "NPCD_BENCH_LOOP": plan.loop}


def _wait_quiet(patience_s: float, limit_percent: float = 10.0) -> None:
    """Wait (a while) for the machine to be idle before a measurement starts."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        before = machine_cpu_seconds()
        time.sleep(0.5)
        if (machine_cpu_seconds() - before) / 0.5 * 100 < limit_percent:
            return


class _CpuSampler:
    """CPU seconds of some processes, sampled every 50 ms on a thread, so that a measurement's
    CPU% covers only its steady state (every stream sending), not connecting and draining."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            now = time.monotonic()
            last = self._samples[-1][1] if self._samples else {}
            sample = {"machine": machine_cpu_seconds()}
            for name, pid in self._pids.items():
                try:
                    sample[name] = cpu_seconds(pid)
                except OSError:  # it has exited (and been reaped): nothing more
                    sample[name] = last.get(name, 0.0)
            self._samples.append((now, sample))
            if self._stop.wait(0.05):
                return

    def percent(self, name: str, start: float, end: float) -> float:
        inside = [(t, c[name]) for t, c in self._samples if start <= t <= end]
        if len(inside) < 2:
            return 0.0
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) / (t1 - t0) * 100


def _measure(path: str, server: _Server, echo: _Server, streams: int, plan: Plan) -> dict[str, Any]:
    mode = "direct" if path == "direct" else "grpc"
    watched = {"echo": echo.process.pid}
    if path != "direct":
        watched["relay"] = server.process.pid
    _wait_quiet(plan.quiet_s)
    generator = subprocess.Popen(
        [PY, "-m", "npcd.bench.load", mode, server.target, str(streams), str(plan.seconds)]
        + [str(plan.frame_ms)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_rig_env(plan),
    )
    with _CpuSampler({**watched, "generator": generator.pid}) as sampler:
        try:
            stdout, stderr = generator.communicate(timeout=plan.seconds * 10 + 120)
        except subprocess.TimeoutExpired:
            generator.kill()  # not left running with hundreds of streams
            generator.communicate()
            raise
    if generator.returncode != 0:
        raise RuntimeError(f"load generator failed on {path}:\n{stderr[-3000:]}")
    result: dict[str, Any] = orjson.loads(stdout.strip().splitlines()[-1])
    start, end = result.pop("window")
    ours = 0.0
    for name in [*watched, "generator"]:
        result[f"{name}_cpu_percent"] = share = sampler.percent(name, start, end)
        ours += share
    # Anything else busy on the machine meanwhile: a run with much of it is not to be trusted.
    result["foreign_cpu_percent"] = max(0.0, sampler.percent("machine", start, end) - ours)
    if path != "direct":
        result["relay_rss_mib"] = rss_mib(server.process.pid)
    return result


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over repeats of every number, with the p99 range kept for the reader."""
    summary: dict[str, Any] = {"reps": len(runs), "runs": runs}
    for key, value in runs[0].items():
        if key == "runs":
            continue
        if isinstance(value, dict):
            summary[key] = {k: median([r[key][k] for r in runs]) for k in value}
        elif isinstance(value, (int, float)):
            summary[key] = median([float(r[key]) for r in runs])
    summary["rtt"]["p99_min"] = min(r["rtt"]["p99"] for r in runs)
    summary["rtt"]["p99_max"] = max(r["rtt"]["p99"] for r in runs)
    return summary


def _machine_percent(run: dict[str, Any]) -> float:
    """All the CPU the measurement used (generator, npcd, backend, anything else)."""
    return float(
        sum(v for k, v in run.items() if k.endswith("_cpu_percent") and isinstance(v, float))
    )


def passes_capacity(npcd: dict[str, Any], direct: dict[str, Any]) -> tuple[bool, str]:
    """The capacity rule, and which part of it failed. The load must also have been offered:
    a generator that could not send on time (it shares the machine) fails the load too."""
    if npcd["received"] < npcd["sent"]:
        return False, f"{npcd['sent'] - npcd['received']} frames not delivered"
    added = npcd["rtt"]["p99"] - direct["rtt"]["p99"]
    if added >= CAPACITY_RULE_MS:
        return False, f"p99 added {added:.1f} ms"
    if npcd["send_slip_p99"] >= CAPACITY_RULE_MS:
        return False, "the load generator fell behind: the machine is full"
    backlog = npcd["last_second_p50"] - npcd["first_second_p50"]
    if backlog >= CAPACITY_RULE_MS:
        return False, f"falling behind (+{backlog:.0f} ms over the run)"
    return True, f"p99 added {added:.1f} ms"


def run(plan: Plan, progress: Any = print) -> dict[str, Any]:
    personas = max([*plan.levels, *plan.capacity])
    result: dict[str, Any] = {
        "plan": {
            "levels": list(plan.levels),
            "seconds": plan.seconds,
            "reps": plan.reps,
            "frame_ms": plan.frame_ms,
            "personas": personas,
            "loop": loop_name(plan.loop),
        },
        "levels": {},
        "capacity": {"probes": {}},
    }
    progress(
        f"event loop of npcd, the bare relay, the echo backend and the generator: "
        f"{result['plan']['loop']}"
    )
    with _servers(plan, personas) as servers:
        result["npcd_ready_s"] = servers["npcd"].ready_s
        paths = ["direct", "bare", "npcd"] + (["pipecat"] if "pipecat" in servers else [])
        for streams in plan.levels:
            runs: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
            for rep in range(plan.reps):
                order = paths[rep % len(paths) :] + paths[: rep % len(paths)]
                for path in order:
                    if path == "pipecat" and streams > plan.pipecat_max:
                        continue
                    server = servers["echo" if path == "direct" else path]
                    runs[path].append(_measure(path, server, servers["echo"], streams, plan))
            row = {p: _aggregate(r) for p, r in runs.items() if r}
            result["levels"][str(streams)] = row
            progress(format_level(streams, row, plan.frame_ms))
        capacity = 0
        for streams in plan.capacity:
            verdicts = []
            for _ in range(plan.capacity_reps):
                direct = _measure("direct", servers["echo"], servers["echo"], streams, plan)
                through = _measure("npcd", servers["npcd"], servers["echo"], streams, plan)
                ok, why = passes_capacity(through, direct)
                verdicts.append({"passed": ok, "why": why, "direct": direct, "npcd": through})
                progress(
                    f"capacity probe {streams:4d} streams: {'pass' if ok else 'FAIL'} ({why}); "
                    f"npcd CPU {through['relay_cpu_percent']:.0f}%, "
                    f"machine {_machine_percent(through):.0f}% of {os.cpu_count()} cores"
                )
                if not ok:
                    break
            passed = all(v["passed"] for v in verdicts)
            result["capacity"]["probes"][str(streams)] = {"passed": passed, "runs": verdicts}
            if not passed:
                break
            capacity = streams
        result["capacity"]["streams"] = capacity
    return result


def cpu_us_per_frame(data: dict[str, Any]) -> float:
    """Relay CPU per frame round trip (one frame in, one delta out) delivered, in µs."""
    delivered = float(data.get("delivered_per_s", 0.0))
    return float(data.get("relay_cpu_percent", 0.0)) / 100 / delivered * 1e6 if delivered else 0.0


def saturated(data: dict[str, Any], streams: int, frame_ms: int = FRAME_MS) -> bool:
    """The path delivered under 95 % of the frames offered: it is not keeping up."""
    return float(data.get("delivered_per_s", 0.0)) < 0.95 * streams * 1000 / frame_ms


def format_level(streams: int, row: dict[str, Any], frame_ms: int = FRAME_MS) -> str:
    """One level as a table: each direction and the round trip, per path, then npcd's cost."""
    lines = [
        f"{streams} concurrent conversations, {frame_ms} ms frames at "
        f"{1000 / frame_ms:.0f}/s each way "
        f"(ms; median of {row['direct']['reps']:.0f} runs)",
        "  path     | game->backend p50  p99   max | backend->game p50  p99   max |"
        " round trip p50  p99   max | CPU%  us/frame  RSS MiB",
    ]
    for path, data in row.items():
        cells = []
        for leg in ("up", "down", "rtt"):
            cells.append(
                f"{data[leg]['p50']:17.2f} {data[leg]['p99']:5.2f} {data[leg]['max']:5.1f}"
                if leg != "rtt"
                else f"{data[leg]['p50']:14.2f} {data[leg]['p99']:5.2f} {data[leg]['max']:5.1f}"
            )
        usage = (
            f"{data['relay_cpu_percent']:4.0f} {cpu_us_per_frame(data):9.0f}"
            f" {data['relay_rss_mib']:8.1f}"
            if "relay_cpu_percent" in data
            else "   -"
        )
        if saturated(data, streams, frame_ms):
            usage += "  behind real time"
        lines.append(f"  {path:8s} |" + " |".join(cells) + f" | {usage}")
    npcd, direct = row["npcd"], row["direct"]
    added = []
    for leg, label in (("up", "game->backend"), ("down", "backend->game"), ("rtt", "round trip")):
        p50, p99 = (npcd[leg][q] - direct[leg][q] for q in ("p50", "p99"))
        added.append(f"{label} {p50:+.2f} / {p99:+.2f}")
    lines.append("  npcd adds (p50 / p99): " + ", ".join(added))
    ratios = [f"npcd/direct {npcd['rtt']['p50'] / max(direct['rtt']['p50'], 1e-9):.1f}x"]
    for peer in ("bare", "pipecat"):
        if peer not in row or saturated(npcd, streams, frame_ms):
            continue
        if saturated(row[peer], streams, frame_ms):
            ratios.append(f"{peer} behind real time")
        elif cpu_us_per_frame(row[peer]):
            ratio = cpu_us_per_frame(npcd) / cpu_us_per_frame(row[peer])
            ratios.append(f"npcd/{peer} CPU per frame {ratio:.2f}x")
    lines.append("  round trip p50 " + "; ".join(ratios))
    return "\n".join(lines)
