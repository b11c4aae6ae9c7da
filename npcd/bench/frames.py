"""The benchmark's audio frame: 20 ms of PCM16 24 kHz whose first bytes carry timestamps.

Every process on the machine reads the same CLOCK_MONOTONIC (`time.perf_counter_ns` on Linux),
so a frame stamped by the game client when sent and by the echo backend when it arrives gives
both one-way latencies, not only the round trip. Relays pass the bytes through unchanged.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

FRAME_MS = 20  # what game engines' audio callbacks typically deliver
BYTES_PER_MS = 48  # PCM16 mono 24 kHz
_HEAD = struct.Struct("<IQQ")  # sequence, sent_ns (client), echoed_ns (backend)


def make_frame(sequence: int, size: int = FRAME_MS * BYTES_PER_MS) -> bytes:
    return _HEAD.pack(sequence, time.perf_counter_ns(), 0) + bytes(size - _HEAD.size)


def stamp_echo(frame: bytes) -> bytes:
    """The backend's side: note when the frame arrived, keep everything else."""
    sequence, sent_ns, _ = _HEAD.unpack_from(frame)
    return _HEAD.pack(sequence, sent_ns, time.perf_counter_ns()) + frame[_HEAD.size :]


@dataclass(frozen=True, slots=True)
class Timing:
    """One frame's trip in ms: game -> backend, backend -> game, and the whole round."""

    sequence: int
    up_ms: float
    down_ms: float
    rtt_ms: float
    received_ns: int


def read_timing(frame: bytes) -> Timing:
    now = time.perf_counter_ns()
    sequence, sent_ns, echoed_ns = _HEAD.unpack_from(frame)
    return Timing(
        sequence,
        (echoed_ns - sent_ns) / 1e6,
        (now - echoed_ns) / 1e6,
        (now - sent_ns) / 1e6,
        now,
    )
