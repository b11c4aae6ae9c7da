"""One response's viseme frames, from the best source it has, cut where the player cut in.

The source is decided by the response's first audio: if the backend sent phoneme timing before
it (the local backend, `npcd.realtime.extensions`), frames follow those phonemes exactly;
otherwise they are derived from the audio itself (`npcd.lipsync.acoustic`). Phoneme times are
on each item's own audio clock, so an item's clock is placed where its first audio (or
phonemes) arrived on the response's clock: a response may hold several spoken items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Protocol

from npcd.lipsync.timeline import DEFAULT_FPS, Frame, PhonemeTrack, one_hot
from npcd.lipsync.visemes import SIL

__all__ = ["FrameSource", "VisemeStream", "acoustic_visemes"]

_BYTES_PER_MS: Final = 48  # PCM16 mono 24 kHz
#: The audio analysis costs mostly per call (numpy's overhead): 1.9% of a core (p99 2.5%) fed
#: 20 ms deltas, 0.5% fed 100 ms ones. Analysing at least 40 ms at once keeps it near 1% for a
#: backend that streams small deltas, for at most 20 ms more lag on frames that are ahead of
#: playback anyway.
MIN_ANALYSIS_BYTES: Final = 40 * _BYTES_PER_MS


class FrameSource(Protocol):
    """An audio-only viseme analyser (`npcd.lipsync.acoustic.AcousticVisemes`)."""

    def feed(self, pcm16: bytes) -> list[Frame]: ...

    def finish(self) -> list[Frame]: ...


def acoustic_visemes(fps: int) -> FrameSource:
    """The audio analyser, imported on first use (its model loads once per process)."""
    from npcd.lipsync.acoustic import AcousticVisemes

    return AcousticVisemes(fps)


class VisemeStream:
    """Viseme frames of one response as its audio arrives (PCM16 mono 24 kHz)."""

    def __init__(
        self, fps: int = DEFAULT_FPS, acoustic: Callable[[int], FrameSource] | None = None
    ) -> None:
        self.fps = fps
        self._acoustic_factory = acoustic
        self._track: PhonemeTrack | None = None
        self._acoustic: FrameSource | None = None
        self._decided = False
        self._audio_bytes = 0
        self._item_offsets: dict[str, float] = {}
        #: Audio not yet analysed (audio-only source), and how much has been.
        self._pending = bytearray()
        self._fed = 0
        self._done = False

    @property
    def source(self) -> str:
        """``phonemes``, ``audio`` or ``none`` (undecided, or no analyser): for logs."""
        if self._track is not None:
            return "phonemes"
        return "audio" if self._acoustic is not None else "none"

    @property
    def audio_ms(self) -> float:
        return self._audio_bytes / _BYTES_PER_MS

    def phonemes(self, item_id: str, phonemes: Sequence[tuple[int, str]]) -> None:
        """Phonemes that start in the next audio of ``item_id`` (times on the item's clock)."""
        if self._done or (self._decided and self._track is None):
            return
        if self._track is None:
            self._track = PhonemeTrack(self.fps)
        offset = self._item_offsets.setdefault(item_id, self.audio_ms)
        for at_ms, name in phonemes:
            self._track.add(offset + at_ms, name)

    def audio(self, item_id: str, pcm16: bytes) -> None:
        """``pcm16`` (audio of ``item_id``) joined the response. Cheap: the analysis waits for
        `frames`, so a caller can send the audio first and work out its frames after."""
        if self._done:
            return
        if not self._decided:
            self._decided = True
            if self._track is None and self._acoustic_factory is not None:
                self._acoustic = self._acoustic_factory(self.fps)
        self._item_offsets.setdefault(item_id, self.audio_ms)
        self._audio_bytes += len(pcm16)
        if self._acoustic is not None:
            self._pending += pcm16

    @property
    def audio_bytes(self) -> int:
        """How much audio the response has had so far (a mark for `frames`)."""
        return self._audio_bytes

    def frames(self, upto: int | None = None, *, final: bool = False) -> list[Frame]:
        """The frames now final for the audio up to mark ``upto`` (an `audio_bytes` reading;
        all the audio if None), so frames never run ahead of the audio sent with them. With
        ``final`` (the response's audio is complete): all of them, then a `sil` frame at the
        end of the audio."""
        if self._done:
            return []
        if final:
            self._done = True
            upto = self._audio_bytes
        elif upto is None or upto > self._audio_bytes:
            upto = self._audio_bytes
        if self._track is not None:
            if final:
                return self._track.finish(self.audio_ms) if self._audio_bytes else []
            return self._track.frames(upto / _BYTES_PER_MS)
        if self._acoustic is not None:
            take = max(0, upto - self._fed)
            if not final and take < MIN_ANALYSIS_BYTES:
                return []  # too little to be worth a call; it waits for the next chunk
            pcm = bytes(self._pending[:take])
            del self._pending[:take]
            self._fed += take
            frames = self._acoustic.feed(pcm) if pcm else []
            return frames + self._acoustic.finish() if final else frames
        return []

    def cut(self, at_ms: int) -> list[Frame]:
        """The player cut in at ``at_ms``: the frames not yet given up to there, then the
        closing `sil` frame at ``at_ms`` (nothing without audio); nothing follows them."""
        if not self._audio_bytes:
            self._done = True
            return []
        frames: list[Frame] = []
        if not self._done:
            upto = min(self._audio_bytes, at_ms * _BYTES_PER_MS)
            if self._track is not None:
                frames = self._track.finish(upto / _BYTES_PER_MS)
            elif self._acoustic is not None:
                take = max(0, upto - self._fed)
                pcm = bytes(self._pending[:take])
                frames = [*self._acoustic.feed(pcm), *self._acoustic.finish()]
            frames = [f for f in frames if f.start_ms < at_ms]
        self._done = True
        self._pending.clear()
        return [*frames, Frame(at_ms, one_hot(SIL))]
