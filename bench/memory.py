"""What NPC memory costs: per-turn writes, recall and start-up with 10,000 conversations stored.

Run with ``python bench/memory.py`` (or ``make bench``). Builds a store of 10,000 conversations
(2,000 players, 4 NPCs, 1-3 save slots each, ~8 turns per conversation, one player with 400
conversations with the blacksmith for the heavy recall) in a temporary folder, then times call
by call: `MemoryStore.append` of one turn (committed: the cost per remembered line),
`MemoryStore.begin`, `MemoryStore.recall` (typical and heavy key), `MemoryStore.open` of the
file (npcd's start-up share; it checks only the small tables, and the whole-file
``quick_check`` it skips is timed too, to show why) and the file size.
The baseline is bare ``sqlite3`` in the same run: one INSERT + COMMIT into a one-table WAL file
with the same settings, and with ``synchronous=FULL`` (an fsync per commit, what surviving a
power cut, not just a killed process, would cost). Writes bench/results/memory.json.
"""

from __future__ import annotations

import json
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from npcd.memory.store import Entry, MemoryKey, MemoryStore

RESULTS = Path(__file__).resolve().parent / "results" / "memory.json"
CONVERSATIONS = 10_000
PLAYERS = 2_000
CHARACTERS = ("blacksmith", "innkeeper", "guard", "merchant")
HEAVY = MemoryKey("blacksmith", "player-heavy", "")
HEAVY_CONVERSATIONS = 400
REPS = 2_000
WORDS = (
    "sword iron forty gold the a you I we road north bandits ale room night key door quest "
    "dragon river bridge coin trade mine ore anvil fire spring winter harvest king guard"
).split()


def sentence(rng: random.Random, low: int, high: int) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize() + rng.choice(".?!")


def conversation(rng: random.Random) -> list[Entry]:
    entries: list[Entry] = []
    for _ in range(rng.randint(3, 4)):
        entries.append(Entry("player", sentence(rng, 4, 14)))
        entries.append(Entry("npc", " ".join(sentence(rng, 6, 16) for _ in range(2))))
    if rng.random() < 0.3:
        entries += [Entry("action", "give_item(item=iron_sword)"), Entry("result", "ok")]
    return entries


def build(path: Path) -> list[MemoryKey]:
    rng = random.Random(11)  # noqa: S311 (reproducible data, not secrets)
    keys = [
        MemoryKey(rng.choice(CHARACTERS), f"player-{p:05d}", rng.choice(("", "", "slot2", "s3")))
        for p in range(PLAYERS)
        for _ in range(2)
    ]
    store = MemoryStore.open(path)
    now = 1.7e9
    for i in range(CONVERSATIONS):
        key = HEAVY if i % (CONVERSATIONS // HEAVY_CONVERSATIONS) == 0 else rng.choice(keys)
        now += 60
        conv = store.begin(key, now)
        for entry in conversation(rng):
            now += 5
            store.append(conv, key, [entry], now)
    store.close()
    return keys


def time_calls(call: Callable[[], object], reps: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    samples = np.empty(reps, dtype=np.int64)
    for i in range(reps):
        start = clock()
        call()
        samples[i] = clock() - start
    return {
        "median_us": float(np.median(samples)) / 1000,
        "p99_us": float(np.percentile(samples, 99)) / 1000,
        "mean_us": float(np.mean(samples)) / 1000,
    }


def baseline(folder: Path, synchronous: str) -> dict[str, float]:
    path = folder / f"baseline-{synchronous.lower()}.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("CREATE TABLE turn (id INTEGER PRIMARY KEY, text TEXT NOT NULL, at REAL)")
    text = "Iron sword, forty gold. Want one?"

    def insert() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO turn (text, at) VALUES (?, ?)", (text, time.time()))
        conn.execute("COMMIT")

    result = time_calls(insert, REPS)
    conn.close()
    return result


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="npcd-bench-memory-") as tmp:
        folder = Path(tmp)
        path = folder / "memory.sqlite3"
        started = time.perf_counter()
        keys = build(path)
        build_s = time.perf_counter() - started
        size = path.stat().st_size  # closed: the WAL is checkpointed into it
        results: dict[str, object] = {
            "machine": {"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version}
            | {"platform": platform.platform(), "processor": platform.processor()},
            "store": {"conversations": CONVERSATIONS, "build_s": round(build_s, 2)},
        }
        store = MemoryStore.open(path)
        rng = random.Random(7)  # noqa: S311
        key = rng.choice(keys)
        conv = store.begin(key, 2e9)
        line = Entry("npc", "Iron sword, forty gold. Want one?")
        cases: dict[str, dict[str, float]] = {}
        cases["append one turn (committed)"] = time_calls(
            lambda: store.append(conv, key, [line], 2e9), REPS
        )
        cases["begin"] = time_calls(lambda: store.begin(rng.choice(keys), 2e9), REPS // 2)
        typical = keys[0]
        cases["recall, typical key (2000 chars, 8 turns)"] = time_calls(
            lambda: store.recall(typical, 2000, 8), REPS // 2
        )
        cases[f"recall, {HEAVY_CONVERSATIONS} conversations (2000 chars, 8 turns)"] = time_calls(
            lambda: store.recall(HEAVY, 2000, 8), REPS // 2
        )
        cases["slots of one player"] = time_calls(lambda: store.slots(typical.player), REPS // 2)
        store.close()

        def reopen() -> None:
            MemoryStore.open(path).close()

        cases["open (start-up)"] = time_calls(reopen, 30, warmup=3)
        raw = sqlite3.connect(path)
        cases["  not done on open: PRAGMA quick_check of the whole file"] = time_calls(
            lambda: raw.execute("PRAGMA quick_check(3)").fetchall(), 10, warmup=1
        )
        raw.close()
        cases["baseline: sqlite3 INSERT+COMMIT (WAL, NORMAL)"] = baseline(folder, "NORMAL")
        cases["baseline: sqlite3 INSERT+COMMIT (WAL, FULL: fsync)"] = baseline(folder, "FULL")
        results["cases"] = cases
        results["file_bytes"] = size
        results["file_bytes_per_conversation"] = round(size / CONVERSATIONS, 1)

    print(f"{CONVERSATIONS} conversations stored; built in {build_s:.1f} s")
    print(f"{'case':58} {'median':>10} {'p99':>10}")
    for name, stats in cases.items():
        print(f"{name:58} {stats['median_us']:>8.1f}us {stats['p99_us']:>8.1f}us")
    print(f"file size with {CONVERSATIONS} conversations: {size / 1e6:.1f} MB")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
