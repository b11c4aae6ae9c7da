"""What npcd adds to every audio frame, side by side with a direct path, a bare relay and Pipecat.

Processes, each on its own: the echo backend (`npcd.bench.echo`), the npcd daemon (`npcd serve
--backend ws://...`), `npcd serve --workers 2` (a supervisor, two npcd workers and nginx in
front, measured as the whole process tree) when nginx is installed, the bare relay
(`npcd.bench.bare`), the Pipecat peer when its venv exists (`bench/pipecat/`), and one load
generator per measurement (`npcd.bench.load`). For every level of concurrent conversations each
path gets the same traffic, in rotating order, `reps` times; the table shows the median over the
repeats of each run's p50/p99/max. Then the capacity probe raises the load on npcd and on the
workers until a level fails the rule (p99 added latency over the direct path under 20 ms, every
frame delivered, and no backlog building up: the last second's median within 20 ms of the first
second's).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
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
from npcd.bench.startup import SESSIONS_READY, WORKERS_LISTENING, Daemon, wait_listening
from npcd.bench.stats import (
    command,
    cpu_seconds,
    machine_cpu_seconds,
    median,
    process_tree,
    rss_mib,
    tree_cpu_seconds,
    tree_rss_mib,
)
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
    #: npcd: seconds from launch to every NPC session ready; workers: to accepting streams
    #: (their sessions connect on each NPC's first conversation, see `_warm_up`).
    ready_s: float = 0.0
    #: A process tree (the workers' supervisor): its CPU and memory are the whole tree's.
    tree: bool = False


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
    #: `npcd serve --workers N` behind nginx, measured beside the single process (0: not run;
    #: skipped, with the reason printed, where nginx is not installed).
    workers: int = 2
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


def nginx_missing() -> str | None:
    """Why the workers path cannot run here, if it cannot (the supervisor's own lookup)."""
    if shutil.which("nginx") or any(
        os.path.exists(p) for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
    ):
        return None
    return "nginx is not installed (`make system` installs nginx-light)"


@contextlib.contextmanager
def _reaped(daemon: Daemon) -> Iterator[Daemon]:
    """A supervisor stopped, then whatever of its tree outlived it killed (one that hangs is
    SIGKILLed by `Daemon.stop`, which would orphan its workers and nginx)."""
    try:
        yield daemon
    finally:
        try:
            members = process_tree(daemon.process.pid)[1:]
        except OSError:
            members = []
        daemon.stop()
        for pid in members:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _servers(plan: Plan, personas: int, progress: Any = print) -> Iterator[dict[str, _Server]]:
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

            if plan.workers and (why := nginx_missing()):
                progress(f"workers: not run: {why}")
            elif plan.workers:
                listen = f"127.0.0.1:{_free_port()}"
                serve[serve.index("127.0.0.1:0")] = listen
                supervisor = stack.enter_context(
                    _reaped(
                        Daemon(
                            [*serve, "--backend", f"ws://127.0.0.1:{port}/v1"]
                            + ["--workers", str(plan.workers)],
                            command=plan.daemon,
                        )
                    )
                )
                target, ready_s = wait_listening(supervisor, 180, WORKERS_LISTENING)
                servers["workers"] = _Server(
                    "workers", supervisor.process, target, ready_s, tree=True
                )

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
    CPU% covers only its steady state (every stream sending), not connecting and draining.

    A name in ``trees`` is a whole process tree, read afresh each sample (a worker that died is
    restarted); besides its total, each member's share is kept as ``NAME/ROLE``: nginx (master
    and worker), a worker by its ``--worker-name``, the supervisor."""

    def __init__(self, pids: dict[str, int], trees: frozenset[str] = frozenset()) -> None:
        self._pids = pids
        self._trees = trees
        self._roles: dict[int, str] = {}
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
                    if name in self._trees:
                        sample.update(self._tree(name, pid))
                    else:
                        sample[name] = cpu_seconds(pid)
                except OSError:  # it has exited (and been reaped): nothing more
                    sample[name] = last.get(name, 0.0)
            self._samples.append((now, sample))
            if self._stop.wait(0.05):
                return

    def _tree(self, name: str, root: int) -> dict[str, float]:
        used = tree_cpu_seconds(root)
        sample = {name: sum(used.values())}
        for pid, seconds in used.items():
            role = f"{name}/{self._role(pid, root)}"
            sample[role] = sample.get(role, 0.0) + seconds
        return sample

    def _role(self, pid: int, root: int) -> str:
        if pid not in self._roles:
            try:
                comm, argv = command(pid)
            except OSError:
                return "gone"
            if pid == root:
                role = "supervisor"
            elif "--worker-name" in argv[:-1]:
                role = argv[argv.index("--worker-name") + 1]
            else:
                role = comm
            self._roles[pid] = role
        return self._roles[pid]

    def shares(self, name: str, start: float, end: float) -> dict[str, float]:
        """The CPU% of each role in tree ``name`` (see the class)."""
        roles = {key for _, c in self._samples for key in c if key.startswith(f"{name}/")}
        return {key.split("/", 1)[1]: self.percent(key, start, end) for key in sorted(roles)}

    def percent(self, name: str, start: float, end: float) -> float:
        inside = [(t, c.get(name, 0.0)) for t, c in self._samples if start <= t <= end]
        if len(inside) < 2:
            return 0.0
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) / (t1 - t0) * 100


def _measure(path: str, server: _Server, echo: _Server, streams: int, plan: Plan) -> dict[str, Any]:
    mode = "direct" if path == "direct" else "grpc"
    watched = {"echo": echo.process.pid}
    trees = frozenset({"relay"} if server.tree else ())
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
    with _CpuSampler({**watched, "generator": generator.pid}, trees) as sampler:
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
    if server.tree:
        # Its parts (relay_cpu_percent is their sum), so named apart from the totals above.
        result["relay_cpu_split"] = sampler.shares("relay", start, end)
        result["relay_rss_mib"] = tree_rss_mib(server.process.pid)
    elif path != "direct":
        result["relay_rss_mib"] = rss_mib(server.process.pid)
    return result


def _warm_up(path: str, server: _Server, personas: int, plan: Plan) -> float:
    """One short, unmeasured conversation with every NPC; returns how long it took, in s.

    Workers run with --no-prewarm: an NPC's first conversation connects its backend session,
    which no measurement should include. npcd (sessions connected at start-up) gets the same,
    so both paths start measuring from the same state."""
    began = time.perf_counter()
    for _ in range(3):  # sessions still connecting after the generator's drain: once more
        generator = subprocess.run(
            [PY, "-m", "npcd.bench.load", "grpc", server.target, str(personas), "0.2"]
            + [str(plan.frame_ms)],
            capture_output=True,
            text=True,
            env=_rig_env(plan),
            timeout=300,
            check=False,
        )
        if generator.returncode != 0:
            raise RuntimeError(f"warm-up of {path} failed:\n{generator.stderr[-3000:]}")
        summary = orjson.loads(generator.stdout.strip().splitlines()[-1])
        if summary["received"] >= summary["sent"]:
            return time.perf_counter() - began
    raise RuntimeError(f"warm-up of {path}: {summary['sent'] - summary['received']} frames lost")


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
            "workers": plan.workers,
        },
        "levels": {},
        "capacity": {"probes": {}},
    }
    progress(
        f"event loop of npcd, the bare relay, the echo backend and the generator: "
        f"{result['plan']['loop']}"
    )
    with _servers(plan, personas, progress) as servers:
        result["npcd_ready_s"] = servers["npcd"].ready_s
        probed: list[str] = [p for p in ("npcd", "workers") if p in servers]
        for path in probed:
            result[f"{path}_warm_up_s"] = _warm_up(path, servers[path], personas, plan)
        progress(
            f"npcd: every NPC session ready {result['npcd_ready_s']:.2f} s after launch; "
            f"first conversation with each of the {personas} NPCs (not measured) "
            f"{result['npcd_warm_up_s']:.2f} s"
        )
        if "workers" in servers:
            result["workers_ready_s"] = servers["workers"].ready_s
            progress(
                f"workers: {plan.workers} behind nginx accepting {result['workers_ready_s']:.2f} s "
                f"after launch; first conversation with each NPC, which connects its session "
                f"(not measured), {result['workers_warm_up_s']:.2f} s"
            )
        paths = ["direct", "bare", *probed, *(["pipecat"] if "pipecat" in servers else [])]
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
        result["capacity"].update(_probe_capacity(plan, servers, probed, progress))
    return result


def _verdict_keys(path: str) -> tuple[str, str]:
    """Where a probe records a path's verdict: npcd's as "passed"/"why", the others prefixed."""
    prefix = "" if path == "npcd" else f"{path}_"
    return f"{prefix}passed", f"{prefix}why"


def _probe_capacity(
    plan: Plan, servers: dict[str, _Server], probed: list[str], progress: Any
) -> dict[str, Any]:
    """Raise the load on each of ``probed`` until it fails the rule; each run of a level is one
    direct measurement and, judged against it, every path still passing (in rotating order)."""
    found: dict[str, Any] = {"probes": {}}
    capacity = dict.fromkeys(probed, 0)
    alive = list(probed)
    for streams in plan.capacity:
        if not alive:
            break
        probe: dict[str, Any] = {"runs": []}
        failed: set[str] = set()
        for rep in range(plan.capacity_reps):
            going = [p for p in alive if p not in failed]
            if not going:
                break
            going = going[rep % len(going) :] + going[: rep % len(going)]
            direct = _measure("direct", servers["echo"], servers["echo"], streams, plan)
            verdict: dict[str, Any] = {"direct": direct}
            for path in going:
                through = _measure(path, servers[path], servers["echo"], streams, plan)
                ok, why = passes_capacity(through, direct)
                passed_key, why_key = _verdict_keys(path)
                verdict.update({path: through, passed_key: ok, why_key: why})
                if not ok:
                    failed.add(path)
                split = through.get("relay_cpu_split", {})
                nginx = f" (nginx {split['nginx']:.0f}%)" if "nginx" in split else ""
                progress(
                    f"capacity probe {streams:4d} streams, {path}: {'pass' if ok else 'FAIL'} "
                    f"({why}); {path} CPU {through['relay_cpu_percent']:.0f}%{nginx}, "
                    f"machine {_machine_percent(through):.0f}% of {os.cpu_count()} cores"
                )
            probe["runs"].append(verdict)
        for path in alive:
            probe[_verdict_keys(path)[0]] = path not in failed
            if path not in failed:
                capacity[path] = streams
        found["probes"][str(streams)] = probe
        alive = [p for p in alive if p not in failed]
    found["streams"] = capacity.get("npcd", 0)
    if "workers" in capacity:
        found["workers_streams"] = capacity["workers"]
    if plan.capacity:
        progress(
            "capacity (conversations passing the rule): "
            + ", ".join(f"{p} {n}" for p, n in capacity.items())
        )
    return found


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
    direct = row["direct"]
    for path in ("npcd", "workers"):
        if path not in row:
            continue
        added = []
        for leg, label in (
            ("up", "game->backend"),
            ("down", "backend->game"),
            ("rtt", "round trip"),
        ):
            p50, p99 = (row[path][leg][q] - direct[leg][q] for q in ("p50", "p99"))
            added.append(f"{label} {p50:+.2f} / {p99:+.2f}")
        lines.append(f"  {path} adds (p50 / p99): " + ", ".join(added))
    npcd = row["npcd"]
    if "workers" in row:
        workers = row["workers"]
        hop = (workers["rtt"][q] - npcd["rtt"][q] for q in ("p50", "p99"))
        split = ", ".join(f"{role} {pct:.0f}%" for role, pct in workers["relay_cpu_split"].items())
        spread = ", ".join(f"{w} {n:.0f}" for w, n in workers.get("served_by", {}).items())
        lines.append(
            "  workers over npcd, round trip p50 / p99: {:+.2f} / {:+.2f}; ".format(*hop)
            + f"workers CPU {workers['relay_cpu_percent']:.0f}% = {split}; streams per worker "
            f"{spread}"
        )
    ratios = [f"npcd/direct {npcd['rtt']['p50'] / max(direct['rtt']['p50'], 1e-9):.1f}x"]
    for peer in ("bare", "pipecat"):
        if peer not in row or saturated(npcd, streams, frame_ms):
            continue
        if saturated(row[peer], streams, frame_ms):
            ratios.append(f"{peer} behind real time")
        elif cpu_us_per_frame(row[peer]):
            ratio = cpu_us_per_frame(npcd) / cpu_us_per_frame(row[peer])
            ratios.append(f"npcd/{peer} CPU per frame {ratio:.2f}x")
    if "workers" in row and not saturated(row["workers"], streams, frame_ms):
        if cpu_us_per_frame(npcd) and not saturated(npcd, streams, frame_ms):
            ratio = cpu_us_per_frame(row["workers"]) / cpu_us_per_frame(npcd)
            ratios.append(f"workers/npcd CPU per frame {ratio:.2f}x")
    lines.append("  round trip p50 " + "; ".join(ratios))
    return "\n".join(lines)
