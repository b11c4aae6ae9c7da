"""Viseme frames from timed phonemes: the exact track of a synthesiser that reports them.

A phoneme starts a key; a phoneme of several shapes (``aɪ``, ``ɔːɹ``) spreads them over its
duration, the first taking half. Frames are sampled at a fixed rate, and around each key the
mouth blends linearly from the previous shape into the next over `BLEND_MS` (or less, when the
neighbouring keys are closer), so the face moves rather than snaps: coarticulation, cheaply.

Streaming: a key is final only once the phoneme after it is known (its duration, and what an
/h/ turns into), so `PhonemeTrack.frames` renders up to the start of the newest phoneme, less
half a blend. Synthesisers send phonemes with or ahead of their audio, so this holds back a
fraction of a phoneme while the audio itself arrives faster than real time.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Final

from npcd.lipsync.visemes import OVR_VISEMES, SIL, visemes_of

__all__ = [
    "BLEND_MS",
    "DEFAULT_FPS",
    "Frame",
    "PhonemeTrack",
    "frame_runs",
    "frame_time_ms",
    "one_hot",
]

DEFAULT_FPS: Final = 60
#: How long a change of mouth shape takes at most, centred on the phoneme boundary.
BLEND_MS: Final = 50.0
#: The share of a multi-shape phoneme's duration its first shape holds.
_FIRST_SHARE: Final = 0.5
_N: Final = len(OVR_VISEMES)
_KEEP_BEHIND: Final = 4


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of viseme weights (`OVR_VISEMES` order) at ``start_ms`` of the response audio."""

    start_ms: int
    weights: tuple[float, ...]

    @property
    def viseme(self) -> int:
        """The dominant viseme's index."""
        return max(range(len(self.weights)), key=self.weights.__getitem__)


def frame_time_ms(index: int, fps: int) -> int:
    """Where frame ``index`` lies, in whole ms (the frame grid is exact; only this rounds)."""
    return (index * 1000 + fps // 2) // fps


def frame_runs(frames: list[Frame], fps: int) -> list[tuple[int, list[float]]]:
    """``frames`` as runs of evenly spaced frames: (first frame's ms, weights frame after frame).

    Frame i of a run lies at ``start + i * 1000 / fps`` to within a ms; a frame off that grid
    (a closing `sil` frame at the exact end of the audio) starts a new run.
    """
    runs: list[tuple[int, list[float]]] = []
    start = count = 0
    for frame in frames:
        if runs and abs(frame.start_ms - (start + count * 1000 / fps)) <= 1:
            runs[-1][1].extend(frame.weights)
            count += 1
        else:
            start, count = frame.start_ms, 1
            runs.append((start, list(frame.weights)))
    return runs


def one_hot(viseme: int) -> tuple[float, ...]:
    weights = [0.0] * _N
    weights[viseme] = 1.0
    return tuple(weights)


class PhonemeTrack:
    """Exact visemes of one response from its phonemes, rendered frame by frame as they firm up.

    Feed phonemes in time order with `add`, take frames with `frames` as audio arrives, and
    `finish` at the end of the response's audio. Times are ms on the response's audio clock.
    """

    def __init__(self, fps: int = DEFAULT_FPS, blend_ms: float = BLEND_MS) -> None:
        self.fps = fps
        self._half = blend_ms / 2
        self._phonemes: list[tuple[float, tuple[int, ...]]] = []
        self._next = 0  # index of the next frame to render
        self._done = False

    @property
    def next_ms(self) -> int:
        """The time of the next frame `frames` or `finish` will return."""
        return frame_time_ms(self._next, self.fps)

    def add(self, at_ms: float, phoneme: str) -> None:
        """A phoneme starts at ``at_ms`` (empty name: a pause). Out-of-order times are clamped."""
        if self._phonemes and at_ms <= self._phonemes[-1][0]:
            # No later than the one before: that one had no duration and gives way.
            at_ms = self._phonemes.pop()[0]
        self._phonemes.append((at_ms, visemes_of(phoneme)))

    def frames(self, audio_ms: float) -> list[Frame]:
        """The frames now final, given the audio received so far lasts ``audio_ms``."""
        if not self._phonemes:
            return []
        ready = min(audio_ms, self._phonemes[-1][0]) - self._half
        return self._render(ready, final=False)

    def finish(self, audio_ms: float) -> list[Frame]:
        """Every remaining frame up to ``audio_ms``, then one `sil` frame there: mouth shut."""
        frames = self._render(audio_ms, final=True)
        end = round(audio_ms)
        if not frames or frames[-1].start_ms < end or frames[-1].weights != one_hot(SIL):
            last = frames[-1].start_ms if frames else self.next_ms - 1
            frames.append(Frame(max(end, last + 1), one_hot(SIL)))
        self._done = True
        return frames

    def _render(self, until_ms: float, *, final: bool) -> list[Frame]:
        if self._done:
            return []
        times, shapes = self._keys(final)
        out: list[Frame] = []
        while True:
            t = frame_time_ms(self._next, self.fps)
            if t >= until_ms:
                break
            out.append(Frame(t, self._weights(t, times, shapes)))
            self._next += 1
        # Phonemes well behind the next frame no longer shape any frame: drop them, so each
        # call costs the same however long the response (three phonemes back cover a blend).
        starts = [at for at, _ in self._phonemes]
        behind = bisect.bisect_right(starts, frame_time_ms(self._next, self.fps)) - _KEEP_BEHIND
        if behind > 0:
            del self._phonemes[:behind]
        return out

    def _keys(self, final: bool) -> tuple[list[float], list[int]]:
        """Keys (time, viseme) of every phoneme whose duration is known (all, if ``final``)."""
        phonemes = self._phonemes
        times: list[float] = []
        shapes: list[int] = []
        for i in range(len(phonemes)):
            start, parts = phonemes[i]
            if not final and i == len(phonemes) - 1:
                # Its duration is unknown, but its first shape and start are not: they resolve
                # an /h/ before it and bound the blend into it (never rendered past).
                parts = parts[:1]
            end = phonemes[i + 1][0] if i + 1 < len(phonemes) else start + 2 * self._half
            span = end - start
            for j, shape in enumerate(parts):
                at = (
                    start
                    if j == 0
                    else start + span * (_FIRST_SHARE + (1 - _FIRST_SHARE) * j / len(parts))
                )
                if shapes and shapes[-1] == shape and shape >= 0:
                    continue
                times.append(at)
                shapes.append(shape)
        # /h/ and glottal stops take the next shape (or close, at the end).
        following = SIL
        for k in range(len(shapes) - 1, -1, -1):
            if shapes[k] < 0:
                shapes[k] = following
            following = shapes[k]
        return times, shapes

    def _weights(self, t: float, times: list[float], shapes: list[int]) -> tuple[float, ...]:
        i = bisect.bisect_right(times, t) - 1
        if i < 0:
            # Before the first phoneme: silent, blending into it just before it starts.
            if times and t > times[0] - self._half:
                return _mix(SIL, shapes[0], 0.5 + (t - times[0]) / (2 * self._half))
            return one_hot(SIL)
        here = shapes[i]
        prev_t = times[i - 1] if i > 0 else times[i] - 2 * self._half
        next_t = times[i + 1] if i + 1 < len(times) else None
        # The blend into this key, centred on its start.
        half_in = min(self._half, (times[i] - prev_t) / 2)
        if next_t is not None:
            half_in = min(half_in, (next_t - times[i]) / 2)
        if half_in > 0 and t < times[i] + half_in:
            before = shapes[i - 1] if i > 0 else SIL
            return _mix(before, here, 0.5 + (t - times[i]) / (2 * half_in))
        # The blend out of it, into the next key.
        if next_t is not None:
            after_t = times[i + 2] if i + 2 < len(times) else next_t + 2 * self._half
            half_out = min(self._half, (next_t - times[i]) / 2, (after_t - next_t) / 2)
            if half_out > 0 and t > next_t - half_out:
                return _mix(here, shapes[i + 1], 0.5 + (t - next_t) / (2 * half_out))
        return one_hot(here)


def _mix(a: int, b: int, share_b: float) -> tuple[float, ...]:
    share_b = min(1.0, max(0.0, share_b))
    weights = [0.0] * _N
    weights[a] += 1.0 - share_b
    weights[b] += share_b
    return tuple(weights)
