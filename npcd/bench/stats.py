"""Percentiles and process accounting shared by the benchmarks."""

from __future__ import annotations

import contextlib
import os
import statistics
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0.0 for no values (a run that delivered nothing)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def describe(values: list[float]) -> dict[str, float]:
    return {
        "p50": statistics.median(values) if values else 0.0,
        "p99": percentile(values, 0.99),
        "max": max(values, default=0.0),
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User plus system CPU time a process has used so far; with ``reaped``, also that of its
    children that have exited and been waited for, so that a tree's total never drops when a
    process in it ends."""
    fields = _stat(pid)
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def rss_mib(pid: int) -> float:
    return int(_stat(pid)[21]) * _PAGE / 2**20


def children(pid: int) -> list[int]:
    """The live children of a process (of every thread of it: a thread that forks is their
    parent), read afresh each time, since a supervisor restarts the ones that die."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (those that vanish while read are left out)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            todo += children(current)
        except OSError:
            continue
        tree.append(current)
    return tree


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds per process of the tree under ``pid`` (each with its reaped children's, so
    the sum counts a process that exited once, in its parent). A process tree such as
    `npcd serve --workers` (supervisor, workers, nginx) costs the machine all of it."""
    used: dict[int, float] = {}
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            used[member] = cpu_seconds(member, reaped=True)
    return used


def tree_rss_mib(pid: int) -> float:
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += rss_mib(member)
    return total


def command(pid: int) -> tuple[str, list[str]]:
    """A process's name (``comm``: "nginx" for nginx's master and workers) and arguments."""
    name = Path(f"/proc/{pid}/comm").read_text().strip()
    return name, Path(f"/proc/{pid}/cmdline").read_text().split("\0")


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine so far, all cores (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK
