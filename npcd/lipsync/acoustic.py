"""Viseme frames from the audio alone, for backends that send nothing but audio (OpenAI, Azure).

uLipSync-style, but learned: every 10 ms a 21 ms window centred there gives 26 log-mel bands
relative to the response's running peak level (so gain cancels), as 12 cepstra less their
running mean over speech (so voice and channel mostly cancel), plus the relative energy. A
one-hidden-layer MLP reads a stack of those frames (100 ms back, 20 ms ahead) and gives a
distribution over the 15 visemes; a gate pushes it to `sil` far below the running level or near
the noise floor, it is smoothed over 30 ms and sampled onto the frame grid. The model
(``data/acoustic.npz``, 54 KB, loaded once per process in about 2 ms) is trained on eSpeak
renders of other sentences labelled with their exact `PhonemeTrack`, in the ten voices and 16
other eSpeak variants, with speed, formant, gain, noise and tilt augmentation
(``bench/lipsync_train.py``).

Measured by ``bench/lipsync.py`` against eSpeak's exact track, 24 held-out sentences:

* the ten voices at speeds 0.8-1.25: frame accuracy 89%, grouped (`npcd.bench.lipsync.GROUPS`)
  91%, 96% of onsets matched within 150 ms with a mean error of 7 ms;
* six eSpeak variants training never heard: 84%, 87%, 93% and 9 ms;
* real human speech (LibriVox, no labels): mouth open on 99.5% of loud frames, shut in 100% of
  pauses;
* CPU per second of audio, one thread, per response: 1.3-2.0% of a core (p50; p99 2.4-2.6%)
  fed 20 ms chunks, 0.4-0.5% (p99 0.7%) fed 100 ms chunks, the range being runs on a quiet
  and a shared 2-core machine; `PhonemeTrack` costs 0.1%. Everything is vectorised per call;
  per-call numpy overhead dominates, and Python works per frame only to build `Frame`s.

Latency: a frame is final once the audio reaches 40-50 ms past it (the window's half, the
stack's lookahead and the smoothing's), which costs nothing while audio arrives faster than
real time; `finish` pads the end with silence.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from npcd.lipsync.timeline import DEFAULT_FPS, Frame, frame_time_ms, one_hot
from npcd.lipsync.visemes import OVR_VISEMES, SIL

__all__ = [
    "HOP_MS",
    "AcousticModel",
    "AcousticVisemes",
    "FeatureStream",
    "default_model",
    "stack_context",
]

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

RATE: Final = 24000
#: Analysis hop: features and the model run on a fixed 10 ms grid whatever the output fps.
HOP: Final = 240
HOP_MS: Final = 10
WIN: Final = 512
N_MELS: Final = 26
N_CEPS: Final = 12
MEL_LOW_HZ: Final = 60.0
MEL_HIGH_HZ: Final = 8000.0
#: Features per analysis frame: relative energy, then cepstra 1..N_CEPS.
N_FEATURES: Final = 1 + N_CEPS
#: Analysis frames stacked into one input: 100 ms back, 20 ms ahead.
OFFSETS: Final = (-10, -8, -6, -4, -3, -2, -1, 0, 1, 2)
PAST: Final = -OFFSETS[0]
FUTURE: Final = OFFSETS[-1]

#: The running level falls this much per analysis frame (5 dB/s) when nothing louder comes.
LEVEL_DECAY_DB: Final = 0.05
#: Below this the level does not fall (dBFS): the quietest speech we expect, well above zero.
LEVEL_FLOOR_DB: Final = -75.0
#: Soft floors relative to the level, so digital silence and quiet hiss look alike at any gain.
ENERGY_FLOOR_DB: Final = -60.0
BAND_FLOOR_DB: Final = -80.0
#: Frames this close to the level count as speech for the running cepstral mean.
SPEECH_DB: Final = -30.0
#: Weight (in frames) of the trained prior in the running cepstral mean.
CMN_PRIOR_FRAMES: Final = 50.0
#: The silence gate reads the loudest frame around each one (``GATE_PAST`` back, ``FUTURE``
#: ahead, so that stop closures and weak consonants next to a vowel stay open). It shuts the
#: mouth where that is ``GATE_LOW_DB`` or more below the running level (on eSpeak, 0.1% of the
#: frames that are not `sil` are 26 dB below), or no more than ``NOISE_LOW_DB`` above the noise
#: floor: the quietest frame of the last 1.5 s, so that a recording's room tone in its pauses
#: (30-40 dB below its speech, the LibriVox fixtures) shuts it too. From ``*_HIGH_DB`` on it
#: leaves the model alone, and blends in between.
GATE_LOW_DB: Final = -40.0
GATE_HIGH_DB: Final = -30.0
NOISE_LOW_DB: Final = 10.0
NOISE_HIGH_DB: Final = 18.0
NOISE_FRAMES: Final = 150
#: For the first 300 ms the floor is not known yet (the first sound might be speech or room
#: tone), and the gate counts the silence before the start as the floor: what it hears first
#: is taken as speech, so room tone at the very start moves the mouth until then.
NOISE_GRACE: Final = 30
GATE_PAST: Final = 6
#: Smoothing of the distributions over analysis frames -1, 0, +1: wider or one-sided kernels
#: flicker less but lose accuracy and onset timing (measured).
SMOOTH: Final = (0.25, 0.5, 0.25)
SMOOTH_PAST: Final = 1
SMOOTH_FUTURE: Final = 1

_N: Final = len(OVR_VISEMES)
_EPS: Final = 1e-12


def _mel_filterbank() -> FloatArray:
    """Triangular mel filters (unit peak) over the rfft bins of one window."""

    def mel(hz: FloatArray) -> FloatArray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def hz(m: FloatArray) -> FloatArray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(np.array(MEL_LOW_HZ)), mel(np.array(MEL_HIGH_HZ)), N_MELS + 2))
    bins = np.arange(WIN // 2 + 1) * RATE / WIN
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - low) / (centre - low)
    falling = (high - bins[None, :]) / (high - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).T  # (bins, mels)


def _dct_matrix() -> FloatArray:
    """Orthonormal DCT-II rows 1..N_CEPS (row 0, the mean, is the energy feature instead)."""
    n = np.arange(N_MELS)
    k = np.arange(1, N_CEPS + 1)
    basis: FloatArray = np.cos(np.pi * k[None, :] * (n[:, None] + 0.5) / N_MELS)
    return math.sqrt(2.0 / N_MELS) * basis


_WINDOW: Final = np.hanning(WIN + 2)[1:-1]
# One-sided power spectrum scaled so that its sum is the window-weighted mean square.
_POWER_SCALE: Final = 2.0 / (WIN * float(np.sum(_WINDOW**2)))
_MEL: Final = _mel_filterbank() * _POWER_SCALE
_DCT: Final = _dct_matrix()


class FeatureStream:
    """Per-analysis-frame features of a stream of 24 kHz samples, the same however chunked.

    Frame ``j`` is centred on sample ``HOP * j``; audio before 0 (and after the end, once
    flushed) is taken as silence. Each call returns a row per frame it completed: the
    `N_FEATURES` features, then what the silence gate reads, the energy below the running level
    and above the noise floor in dB. Without a ``cmn_prior`` the cepstra are left as they are
    (training uses that to find the prior).
    """

    def __init__(self, cmn_prior: FloatArray | None) -> None:
        # Samples from the start of the next frame's window on.
        self._tail = np.zeros(WIN // 2, dtype=np.float64)
        self._tail_start = -(WIN // 2)  # absolute index of ``_tail[0]``
        self._next = 0
        self._samples = 0
        self._level = LEVEL_FLOOR_DB
        self._cmn = cmn_prior is not None
        self._cmn_sum = np.zeros(N_CEPS) if cmn_prior is None else cmn_prior * CMN_PRIOR_FRAMES
        self._cmn_count = CMN_PRIOR_FRAMES
        # Energies of the frames before the next, for the noise floor (none before the audio).
        self._recent = np.full(NOISE_FRAMES - 1, np.inf)

    def push(self, samples: FloatArray) -> FloatArray:
        self._samples += samples.size
        return self._run(np.concatenate((self._tail, samples)))

    def flush(self) -> FloatArray:
        """Every frame up to the first centred at or after the end of the audio."""
        last = -(-self._samples // HOP)
        need = HOP * last + WIN // 2 - (self._tail_start + self._tail.size)
        return self._run(np.concatenate((self._tail, np.zeros(max(0, need)))), last + 1)

    def _run(self, buf: FloatArray, until: int | None = None) -> FloatArray:
        count = (buf.size - WIN) // HOP + 1 if buf.size >= WIN else 0
        if until is not None:
            count = min(count, until - self._next)
        if count <= 0:
            self._tail = buf
            return _NO_ROWS
        windows = buf[_WINDOW_INDEX[:count] if count <= _INDEXED else _window_index(count)]
        spectrum = np.fft.rfft(windows * _WINDOW, axis=1)
        bands = (spectrum.real**2 + spectrum.imag**2) @ _MEL
        total = bands.sum(axis=1)
        energy_db = 10.0 * np.log10(total + _EPS)
        level = self._levels(energy_db)
        recent = np.concatenate((self._recent, energy_db))
        self._recent = recent[count:]
        floor = _windows_min(recent, count)
        if self._next < NOISE_GRACE:
            # Too little heard to know the floor: take the silence before the start as it.
            floor[: NOISE_GRACE - self._next] = _SILENCE_DB
        scale = np.exp(level * -_DB_TO_LN)
        rel_energy = 10.0 * np.log10(total * scale + _ENERGY_FLOOR)
        bands *= scale[:, None]
        bands += _BAND_FLOOR
        ceps = np.log10(bands) @ _DCT
        rows = np.empty((count, N_FEATURES + 2))
        rows[:, 0] = rel_energy * 0.1
        if self._cmn:
            # Running cepstral mean over speech frames, the trained prior weighing in at first.
            speech = rel_energy > SPEECH_DB
            sums = np.cumsum(ceps * speech[:, None], axis=0)
            sums += self._cmn_sum
            counts = np.cumsum(speech) + self._cmn_count
            self._cmn_sum = sums[-1]
            self._cmn_count = float(counts[-1])
            rows[:, 1:N_FEATURES] = ceps - sums / counts[:, None]
        else:
            rows[:, 1:N_FEATURES] = ceps
        self._next += count
        self._tail = buf[HOP * count :]
        self._tail_start += HOP * count
        rows[:, N_FEATURES] = rel_energy
        rows[:, N_FEATURES + 1] = energy_db - floor
        return rows

    def _levels(self, energy_db: FloatArray) -> FloatArray:
        """Running peak ``L[j] = max(e[j], L[j-1] - decay, floor)``, in closed form."""
        decay = LEVEL_DECAY_DB * np.arange(energy_db.size, dtype=np.float64)
        level = np.maximum.accumulate(energy_db + decay)
        level -= decay
        np.maximum(level, self._level - LEVEL_DECAY_DB - decay, out=level)
        np.maximum(level, LEVEL_FLOOR_DB, out=level)
        self._level = float(level[-1])
        return level


_NO_ROWS: Final = np.zeros((0, N_FEATURES + 2))
_DB_TO_LN: Final = math.log(10.0) / 10.0
_SILENCE_DB: Final = 10.0 * math.log10(_EPS)
_ENERGY_FLOOR: Final = 10.0 ** (ENERGY_FLOOR_DB / 10.0)
_BAND_FLOOR: Final = 10.0 ** (BAND_FLOOR_DB / 10.0)
_INDEXED: Final = 64  # calls up to this many frames gather with a prebuilt index


def _window_index(count: int) -> npt.NDArray[np.intp]:
    return np.arange(count)[:, None] * HOP + np.arange(WIN)[None, :]


_WINDOW_INDEX: Final = _window_index(_INDEXED)
_FLOOR_INDEX: Final = np.arange(_INDEXED)[:, None] + np.arange(NOISE_FRAMES)[None, :]


def _windows_min(recent: FloatArray, count: int) -> FloatArray:
    """The noise floor of each of ``count`` frames: the minimum of its window of energies."""
    if count <= _INDEXED:  # gathering beats sliding_window_view's overhead on small calls
        floor: FloatArray = recent[_FLOOR_INDEX[:count]].min(axis=1)
    else:
        floor = np.lib.stride_tricks.sliding_window_view(recent, NOISE_FRAMES).min(axis=1)
    return floor


class _History:
    """Rows of a stream kept for windows ``[j - past, j + future]``, edges replicated."""

    def __init__(self, past: int, future: int) -> None:
        self.past = past
        self.future = future
        self._rows: FloatArray | None = None

    def push(self, rows: FloatArray, *, final: bool = False) -> tuple[FloatArray, int]:
        """``(held, n)``: row ``j``'s window is ``held[j : j + past + future + 1]``, ``j < n``.

        Before the first row, the first is repeated; after the last (once ``final``), the last.
        """
        if self._rows is None:
            if rows.shape[0] == 0:
                return rows, 0
            held = np.concatenate((np.repeat(rows[:1], self.past, axis=0), rows))
        elif rows.shape[0]:
            held = np.concatenate((self._rows, rows))
        else:
            held = self._rows
        if final:
            held = np.concatenate((held, np.repeat(held[-1:], self.future, axis=0)))
        count = max(0, held.shape[0] - self.past - self.future)
        self._rows = held[count:]
        return held, count


_STACK_PAST: Final = max(PAST, GATE_PAST)
_STACK_INDEX: Final = np.asarray(OFFSETS) + _STACK_PAST
_GATE_INDEX: Final = np.arange(-GATE_PAST, FUTURE + 1) + _STACK_PAST


def _gather(held: FloatArray, count: int, columns: npt.NDArray[np.intp]) -> FloatArray:
    """Row ``j`` of the result holds ``held[j + columns]``."""
    gathered: FloatArray = held[np.arange(count)[:, None] + columns[None, :]]
    return gathered


def stack_context(features: FloatArray) -> FloatArray:
    """Model inputs of a whole utterance's features, exactly as the stream builds them."""
    held, count = _History(_STACK_PAST, FUTURE).push(features, final=True)
    return _gather(held, count, _STACK_INDEX).reshape(count, -1)


@dataclass(frozen=True, slots=True)
class AcousticModel:
    """The trained MLP (input standardisation folded into the first layer) and its CMN prior.

    The layers run in float32: half the time of float64 for these small matrices, and the
    weights are stored as float16 anyway.
    """

    w1: Float32Array
    b1: Float32Array
    w2: Float32Array
    b2: Float32Array
    cmn_prior: FloatArray

    @classmethod
    def load(cls, path: Path | None = None) -> AcousticModel:
        if path is None:
            ref = resources.files("npcd.lipsync").joinpath("data", "acoustic.npz")
            with ref.open("rb") as fh:
                return cls._from(np.load(fh))
        with path.open("rb") as fh:
            return cls._from(np.load(fh))

    @classmethod
    def _from(cls, data: np.lib.npyio.NpzFile) -> AcousticModel:
        offsets = tuple(int(x) for x in data["offsets"])
        if offsets != OFFSETS or int(data["n_features"]) != N_FEATURES:
            raise ValueError("acoustic.npz was trained for other features; retrain it")
        mean = data["mean"].astype(np.float64)
        std = data["std"].astype(np.float64)
        w1 = data["w1"].astype(np.float64)
        b1 = data["b1"].astype(np.float64) - mean / std @ w1
        return cls(
            w1=(w1 / std[:, None]).astype(np.float32),
            b1=b1.astype(np.float32),
            w2=data["w2"].astype(np.float32),
            b2=data["b2"].astype(np.float32),
            cmn_prior=data["cmn_prior"].astype(np.float64),
        )

    def probabilities(self, inputs: FloatArray) -> FloatArray:
        """Softmax over the visemes for each row of stacked (unstandardised) inputs."""
        hidden = inputs.astype(np.float32) @ self.w1
        hidden += self.b1
        np.maximum(hidden, 0.0, out=hidden)
        logits = (hidden @ self.w2 + self.b2).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp: FloatArray = np.exp(logits)
        exp /= exp.sum(axis=1, keepdims=True)
        return exp


_model_lock = threading.Lock()


@functools.cache
def _cached_model() -> AcousticModel:
    return AcousticModel.load()


def default_model() -> AcousticModel:
    """The shipped model, loaded once per process (about a millisecond)."""
    with _model_lock:
        return _cached_model()


_SIL_ROW: Final = np.asarray(one_hot(SIL))


class AcousticVisemes:
    """Viseme frames of one response from its PCM16 mono 24 kHz audio, as it streams in.

    Feed audio with `feed` in any chunks (odd byte counts included) and take the frames that
    are final; `finish` at the end gives the rest and a closing `sil` frame. The frames do not
    depend on the chunking (to float rounding).
    """

    def __init__(self, fps: int = DEFAULT_FPS, model: AcousticModel | None = None) -> None:
        self.fps = fps
        self._model = model if model is not None else default_model()
        self._features = FeatureStream(self._model.cmn_prior)
        self._stack = _History(_STACK_PAST, FUTURE)
        self._smooth = _History(SMOOTH_PAST, SMOOTH_FUTURE)
        self._carry = b""
        self._samples = 0
        # Smoothed analysis frames from index ``_grid_start`` on, kept for interpolation.
        self._grid = np.zeros((0, _N))
        self._grid_start = 0
        self._next = 0
        self._done = False

    @property
    def next_ms(self) -> int:
        """The time of the next frame `feed` or `finish` will return."""
        return frame_time_ms(self._next, self.fps)

    def feed(self, pcm16: bytes) -> list[Frame]:
        """The frames now final, after ``pcm16`` joined the audio."""
        if self._done:
            return []
        data = self._carry + pcm16 if self._carry else pcm16
        whole = len(data) & ~1
        self._carry = data[whole:]
        if not whole:
            return []
        samples = np.frombuffer(data, dtype="<i2", count=whole // 2) * _PCM_SCALE
        self._samples += samples.size
        rows = self._features.push(samples)
        if not rows.shape[0]:
            return []
        self._extend(rows, final=False)
        return self._emit(until_ms=None)

    def finish(self) -> list[Frame]:
        """Every remaining frame of the audio, then one `sil` frame at its end: mouth shut."""
        if self._done:
            return []
        audio_ms = self._samples * 1000 / RATE
        self._extend(self._features.flush(), final=True)
        frames = self._emit(until_ms=audio_ms)
        end = round(audio_ms)
        if not frames or frames[-1].start_ms < end or frames[-1].weights != one_hot(SIL):
            last = frames[-1].start_ms if frames else self.next_ms - 1
            frames.append(Frame(max(end, last + 1), one_hot(SIL)))
        self._done = True
        return frames

    def _extend(self, rows: FloatArray, *, final: bool) -> None:
        """Classify, gate and smooth the analysis frames whose context is complete."""
        held, count = self._stack.push(rows, final=final)
        if count:
            inputs = _gather(held[:, :N_FEATURES], count, _STACK_INDEX).reshape(count, -1)
            probs = self._model.probabilities(inputs)
            loudest = _gather(held[:, N_FEATURES:], count, _GATE_INDEX).max(axis=1)
            level_gate = (loudest[:, 0] - GATE_LOW_DB) * (1.0 / (GATE_HIGH_DB - GATE_LOW_DB))
            noise_gate = (loudest[:, 1] - NOISE_LOW_DB) * (1.0 / (NOISE_HIGH_DB - NOISE_LOW_DB))
            gate = np.minimum(level_gate, noise_gate).clip(0.0, 1.0)
            probs *= gate[:, None]
            probs[:, SIL] += 1.0 - gate
        else:
            probs = _NO_PROBS
        held, count = self._smooth.push(probs, final=final)
        if count:
            smoothed = held[:count] * SMOOTH[0]
            for k in range(1, len(SMOOTH)):
                smoothed += held[k : k + count] * SMOOTH[k]
            self._grid = np.concatenate((self._grid, smoothed))

    def _emit(self, until_ms: float | None) -> list[Frame]:
        """Frames on the output grid that the smoothed analysis frames now cover."""
        available = self._grid_start + self._grid.shape[0]  # analysis frames 0..available-1
        # Frame time t needs analysis frames t // 10 and t // 10 + 1 (unless t is on one).
        limit = (available - 1) * HOP_MS
        if until_ms is not None:
            limit = min(limit, math.ceil(until_ms) - 1)  # and only times before the end
        if limit < 0:
            return []
        # The last k with frame_time_ms(k, fps) <= limit, in closed form.
        last = ((limit + 1) * self.fps - self.fps // 2 - 1) // 1000
        if last < self._next:
            return []
        times = (np.arange(self._next, last + 1) * 1000 + self.fps // 2) // self.fps
        pos = times / HOP_MS - self._grid_start  # exact on the analysis grid
        lo = pos.astype(np.intp)
        frac = (pos - lo)[:, None]
        hi = np.minimum(lo + 1, self._grid.shape[0] - 1)
        weights = self._grid[lo] * (1.0 - frac) + self._grid[hi] * frac
        self._next = last + 1
        # Keep only what later frames can still need.
        self._grid = self._grid[lo[-1] :]
        self._grid_start += int(lo[-1])
        return [Frame(t, tuple(w)) for t, w in zip(times.tolist(), weights.tolist(), strict=True)]


_PCM_SCALE: Final = 1.0 / 32768.0
_NO_PROBS: Final = np.zeros((0, _N))
