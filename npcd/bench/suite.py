"""`npcd bench`: run the benchmarks, print their tables, and keep the numbers as JSON.

Three parts, each its own processes on loopback: ``relay`` (added latency per frame at several
loads against a direct WebSocket, the bare relay, Pipecat and `npcd serve --workers 2` behind
nginx, then the capacity probe), ``voice`` (end of player speech to first NPC audio with the
local backend, split into npcd's share and the backend's) and ``startup`` (launch to every NPC
session ready, memory per idle session). Nothing else should run on the machine meanwhile: each
run records the CPU used by other processes, and the tables are only as quiet as the machine was.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from npcd.eventloop import LOOPS

PARTS = ("relay", "voice", "startup")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "parts", nargs="*", metavar="PART", help=f"{', '.join(PARTS)} (default: all three)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run that checks the benchmarks work"
    )
    parser.add_argument("--levels", help="relay: concurrent conversations (default 1,50,100,200)")
    parser.add_argument(
        "--capacity",
        help="relay: loads the capacity probe tries in turn, up to the first that fails "
        "(default 50,75,100,125,150,200,250,300)",
    )
    parser.add_argument("--seconds", type=float, help="relay: seconds per run (default 5)")
    parser.add_argument("--reps", type=int, help="relay: runs per level and path (default 3)")
    parser.add_argument(
        "--frame-ms", type=int, default=20, help="relay: audio per message each way (default 20)"
    )
    parser.add_argument("--no-pipecat", action="store_true", help="relay: skip the Pipecat peer")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="relay: also measure `npcd serve --workers N` behind nginx, levels and capacity "
        "(default 2; 0: not run)",
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="relay: event loop of npcd and the benchmark's own processes (default auto)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results"),
        help="folder for the JSON results (default bench/results)",
    )


def _ints(text: str | None, default: Sequence[int]) -> list[int]:
    return [int(x) for x in text.split(",") if x] if text is not None else list(default)


def _relay(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from npcd.bench import relay

    quick = args.quick
    plan = relay.Plan(
        levels=_ints(args.levels, (1, 10) if quick else (1, 50, 100, 200)),
        capacity=_ints(args.capacity, () if quick else relay.Plan.capacity),
        seconds=args.seconds or (1.0 if quick else 5.0),
        reps=args.reps or (1 if quick else 3),
        pipecat=not args.no_pipecat,
        workers=args.workers,
        frame_ms=args.frame_ms,
        quiet_s=0.0 if quick else relay.Plan.quiet_s,
        loop=args.loop,
    )
    lines: list[str] = []

    def progress(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    result = relay.run(plan, progress)
    return result, "\n".join(lines)


def _module_part(name: str, quick_options: dict[str, Any]) -> Any:
    def part(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
        module = importlib.import_module(f"npcd.bench.{name}")
        result: dict[str, Any] = module.run(**(quick_options if args.quick else {}))
        table: str = module.format_table(result)
        print(table, flush=True)
        return result, table

    return part


_RUNNERS = {
    "relay": _relay,
    "voice": _module_part("voice", {"turns": 2}),
    "startup": _module_part("startup", {"levels": (1, 10), "runs": 1}),
}


def main(args: argparse.Namespace) -> int:
    parts = args.parts or list(PARTS)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(
            f"npcd bench: no part {', '.join(unknown)} (parts: {', '.join(PARTS)})", file=sys.stderr
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    tables = []
    failed = []
    for part in parts:
        print(f"== {part} ==", flush=True)
        try:
            result, table = _RUNNERS[part](args)
        except (OSError, ValueError, RuntimeError, TimeoutError) as exc:
            print(f"npcd bench {part}: {exc}", file=sys.stderr)
            failed.append(part)
            continue
        result["machine"] = machine
        (args.out / f"{part}.json").write_text(json.dumps(result, indent=2) + "\n")
        tables.append(f"== {part} ==\n{table}")
    (args.out / "summary.txt").write_text("\n\n".join(tables) + "\n")
    print(f"results in {args.out}/", file=sys.stderr)
    return 1 if failed else 0
