"""What the speaker plays in `npcd talk --mic`, sans I/O: NPC audio in, device blocks out.

PortAudio calls the speaker's callback on its own thread, against a deadline, for a block of
samples. Everything that needs deciding (which response plays, where its cursor is, what an
interruption drops, when a response has finished) is done here, under one lock, in O(block)
per pull, so the callback itself is one call and this is tested without a sound device.

The cursor is what `PlaybackProgress.played_ms` reports: npcd cuts the NPC's memory of its
words there when the player talks over it, so it must count what was played, not what was
received (audio arrives faster than real time).
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Playback", "Progress"]

#: PCM16 mono: bytes per sample frame.
FRAME_BYTES = 2


@dataclass(frozen=True, slots=True)
class Progress:
    """One `PlaybackProgress` to send."""

    response_id: str
    played_ms: int
    finished: bool = False


@dataclass(slots=True)
class _Response:
    id: str
    #: Its chunks in `NpcAudio.start_ms` order: those before `next` have played, and
    #: `chunks[next]` plays on from byte `offset`.
    starts: list[int] = field(default_factory=list)
    chunks: list[memoryview] = field(default_factory=list)
    next: int = 0
    offset: int = 0
    #: Sample frames played.
    played: int = 0
    #: `ResponseDone` came: no more audio of it will.
    ended: bool = False
    reported_ms: int = 0


class Playback:
    """NPC responses queued for the speaker, played back to back in the order they began."""

    def __init__(self, sample_rate: int = 24000) -> None:
        self.sample_rate = sample_rate
        self._lock = threading.Lock()
        self._queue: deque[_Response] = deque()
        self._by_id: dict[str, _Response] = {}
        #: Interrupted or finished: audio of these that still comes in is not played.
        self._closed: set[str] = set()
        self._finished: list[Progress] = []
        self._silence = memoryview(bytes(4096))

    def push(self, response_id: str, start_ms: int, data: bytes) -> None:
        """Queue one `NpcAudio` chunk (PCM16 mono at ``sample_rate``)."""
        data = data[: len(data) // FRAME_BYTES * FRAME_BYTES]
        with self._lock:
            if response_id in self._closed or not data:
                return
            response = self._by_id.get(response_id)
            if response is None:
                response = self._by_id[response_id] = _Response(response_id)
                self._queue.append(response)
            elif response.ended:
                return
            # In order, the usual case, is an append; an early chunk goes before later ones it
            # arrived after, but never before what has started playing.
            at = bisect.bisect_right(response.starts, start_ms, lo=response.next)
            response.starts.insert(at, start_ms)
            response.chunks.insert(at, memoryview(data))

    def end(self, response_id: str) -> None:
        """`ResponseDone`: once what was queued of it has played, it has finished."""
        with self._lock:
            response = self._by_id.get(response_id)
            if response is not None:
                response.ended = True
                self._retire()

    def interrupt(self, response_id: str) -> None:
        """`Interrupted`: the mouth shuts; nothing more of that response plays."""
        with self._lock:
            self._closed.add(response_id)
            response = self._by_id.pop(response_id, None)
            if response is not None:
                self._queue.remove(response)

    def pull_into(self, out: bytearray | memoryview) -> None:
        """Fill ``out`` (a device block) with the next samples, silence where there are none."""
        view = memoryview(out).cast("B")
        size = len(view)
        filled = 0
        with self._lock:
            while filled < size and self._queue:
                response = self._queue[0]
                if response.next == len(response.chunks):
                    if not response.ended:
                        break  # more of it is on its way: silence until it comes
                    self._retire()
                    continue
                chunk = response.chunks[response.next]
                n = min(size - filled, len(chunk) - response.offset)
                view[filled : filled + n] = chunk[response.offset : response.offset + n]
                filled += n
                response.played += n // FRAME_BYTES
                response.offset += n
                if response.offset == len(chunk):
                    response.chunks[response.next] = _PLAYED  # let the bytes go
                    response.next += 1
                    response.offset = 0
                    self._retire()
        if filled < size:
            if len(self._silence) < size:
                self._silence = memoryview(bytes(size))
            view[filled:] = self._silence[: size - filled]

    def pull(self, frames: int) -> bytes:
        """``frames`` sample frames, as `pull_into` fills them."""
        block = bytearray(frames * FRAME_BYTES)
        self.pull_into(block)
        return bytes(block)

    def progress(self) -> list[Progress]:
        """What to report now: each response that finished (once), then the cursor of the one
        playing if it moved since the last call."""
        with self._lock:
            reports, self._finished = self._finished, []
            if self._queue:
                response = self._queue[0]
                ms = self._ms(response.played)
                if ms != response.reported_ms:
                    response.reported_ms = ms
                    reports.append(Progress(response.id, ms))
            return reports

    @property
    def playing(self) -> str | None:
        """The response whose audio is next out of the speaker, if any."""
        with self._lock:
            return self._queue[0].id if self._queue else None

    def _retire(self) -> None:
        """Drop the first response if it has ended and all of it played (lock held)."""
        response = self._queue[0] if self._queue else None
        if response is None or not response.ended or response.next < len(response.chunks):
            return
        self._queue.popleft()
        del self._by_id[response.id]
        self._closed.add(response.id)
        self._finished.append(Progress(response.id, self._ms(response.played), finished=True))

    def _ms(self, frames: int) -> int:
        # As npcd counts `NpcAudio.start_ms`: whole ms, rounded down.
        return frames * 1000 // self.sample_rate


_PLAYED = memoryview(b"")
