"""Audio formats and maths between game engines and the Realtime backend.

Games send and receive whatever their engine produces (PCM16 or FLOAT32, mono or stereo, five
sample rates); the backend only speaks PCM16 mono 24 kHz, base64 inside JSON. This module owns
every byte-level conversion between the two so that no other module needs to reason about
sample widths, endianness or resampler state. It is sans-I/O and never logs audio content.

Resampling uses soxr's streaming resampler at quality ``HQ``. Measured with 20 ms chunks, it
holds back about 21 ms of audio on average and at most about 42 ms (22.05 kHz; 36-39 ms for the
other rates), and that is independent of the chunk size: soxr works in internal blocks. ``MQ``
holds back just as much for a worse stopband; ``LQ`` halves the hold-back but loses up to 5 dB
at 10 kHz (48 -> 24 kHz) and 13 dB at 7 kHz (16 -> 24 kHz), which dulls voices; ``QQ`` does not
filter at all, so a 15 kHz tone aliases at full level; ``VHQ`` doubles the hold-back for
16/22.05 kHz. Output is aligned: soxr trims its own filter delay, so output sample ``k`` is at
time ``k / rate`` and timestamps need no correction, only the held-back tail needs ``flush()``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import pybase64
import soxr

Float32Array = npt.NDArray[np.float32]

SUPPORTED_RATES: Final = (16000, 22050, 24000, 44100, 48000)
#: Longest chunk a game may send in one message (see ``AudioChunk.data`` in the proto).
MAX_CHUNK_MS: Final = 1000
#: soxr quality preset; see the module docstring for the measurements behind it.
RESAMPLER_QUALITY: Final = "HQ"
#: The Realtime protocol's cap on one ``input_audio_buffer.append`` event.
APPEND_EVENT_LIMIT: Final = 15 * 1024 * 1024
#: Room left in that cap for the JSON envelope around the base64 audio (type, event_id...).
APPEND_EVENT_OVERHEAD: Final = 1024

_PCM16_SCALE: Final = np.float32(32768.0)
_PCM16_INV_SCALE: Final = np.float32(1.0 / 32768.0)
# Clipping to this before scaling keeps huge floats from overflowing (and warning) in the multiply.
_PCM16_MAX_FLOAT: Final = np.float32(32767.0 / 32768.0)
_EMPTY: Final[Float32Array] = np.zeros(0, dtype=np.float32)
# Prebuilt: parsing a dtype string costs about a microsecond on every call.
_I16LE: Final[np.dtype[np.int16]] = np.dtype("<i2")
_F32LE: Final[np.dtype[np.float32]] = np.dtype("<f4")


class AudioError(ValueError):
    """Audio a client got wrong; the message goes back verbatim as INVALID_ARGUMENT details."""


class Encoding(enum.Enum):
    """How samples are stored: always little-endian and interleaved by channel."""

    PCM16 = "pcm16"
    FLOAT32 = "float32"

    @property
    def sample_width(self) -> int:
        """Bytes per sample of one channel."""
        return 2 if self is Encoding.PCM16 else 4


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """The shape of one audio stream; validated here so that no invalid format circulates."""

    encoding: Encoding
    sample_rate: int
    channels: int = 1
    #: Bytes of one sample frame (one sample per channel): chunks must hold whole frames.
    #: Derived, and stored because every audio chunk asks for it.
    frame_bytes: int = field(init=False, compare=False, repr=False)
    bytes_per_second: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.encoding, Encoding):
            raise AudioError(f"unsupported audio encoding {self.encoding!r}; use PCM16 or FLOAT32")
        if self.sample_rate not in SUPPORTED_RATES:
            rates = ", ".join(str(rate) for rate in SUPPORTED_RATES)
            raise AudioError(f"unsupported sample rate {self.sample_rate} Hz; use one of {rates}")
        if self.channels not in (1, 2):
            raise AudioError(
                f"unsupported channel count {self.channels}; use 1 (mono) or 2 (interleaved stereo)"
            )

        frame_bytes = self.encoding.sample_width * self.channels
        object.__setattr__(self, "frame_bytes", frame_bytes)
        object.__setattr__(self, "bytes_per_second", frame_bytes * self.sample_rate)

    def __str__(self) -> str:
        layout = "mono" if self.channels == 1 else "stereo"
        return f"{self.encoding.name} {layout} {self.sample_rate} Hz"

    def duration_ms(self, nbytes: int) -> float:
        """Playing time of ``nbytes``; a trailing partial frame does not count."""
        return (nbytes // self.frame_bytes) * 1000 / self.sample_rate

    def bytes_for_ms(self, ms: float) -> int:
        """Largest whole-frame byte count that lasts no longer than ``ms``."""
        if ms < 0:
            raise ValueError(f"duration must not be negative, got {ms} ms")
        return int(ms * self.sample_rate // 1000) * self.frame_bytes


#: What the Realtime backend accepts and produces: 48,000 bytes per second.
REALTIME_FORMAT: Final = AudioFormat(Encoding.PCM16, 24000, 1)


# ------------------------------------------------------------------------------------------------
# Validation


def _check_whole_frames(fmt: AudioFormat, nbytes: int) -> None:
    if nbytes % fmt.frame_bytes:
        raise AudioError(
            f"audio chunk is {nbytes} bytes, which is not a multiple of {fmt.frame_bytes} "
            f"({fmt.encoding.sample_width} bytes per sample x {fmt.channels} channel(s) "
            f"for {fmt}); send whole sample frames"
        )


def validate_chunk(fmt: AudioFormat, data: bytes, *, max_ms: int = MAX_CHUNK_MS) -> None:
    """Reject a game's audio chunk before it reaches a converter, with a message for its developer.

    The FLOAT32 finiteness check costs about 2 us for 20 ms of 48 kHz stereo: one vectorised
    ``isfinite`` pass, and the slow search for the offending index only runs on the error path.
    It is needed because one NaN would smear through the resampler's filter into the output.
    """
    nbytes = len(data)
    if nbytes == 0:
        raise AudioError(
            f"audio chunk is empty; send at least one sample frame ({fmt.frame_bytes} bytes "
            f"for {fmt})"
        )
    _check_whole_frames(fmt, nbytes)
    max_bytes = fmt.bytes_for_ms(max_ms)
    if nbytes > max_bytes:
        raise AudioError(
            f"audio chunk is {fmt.duration_ms(nbytes):.1f} ms ({nbytes} bytes of {fmt}), longer "
            f"than the {max_ms} ms ({max_bytes} bytes) maximum; send shorter chunks "
            f"(20 ms is typical)"
        )
    if fmt.encoding is Encoding.FLOAT32:
        finite = np.isfinite(np.frombuffer(data, dtype=_F32LE))
        if not finite.all():
            index = int(np.argmin(finite))
            raise AudioError(
                f"FLOAT32 audio chunk has a non-finite sample (NaN or infinity) at sample "
                f"{index}; samples must be numbers in [-1.0, 1.0]"
            )


# ------------------------------------------------------------------------------------------------
# Sample conversions (vectorised; one call per chunk, never per sample)


def pcm16_to_float32(data: bytes) -> Float32Array:
    """Scale by 1/32768 so that the round trip through ``float32_to_pcm16`` is exact."""
    samples = np.frombuffer(data, dtype=_I16LE).astype(np.float32)
    samples *= _PCM16_INV_SCALE
    return samples


def float32_to_pcm16(samples: Float32Array) -> bytes:
    """Clip to full scale first: a plain cast would wrap 1.01 to -32440, a loud click.

    The ``clip`` method is used over ``np.clip``, which costs 1.5 us more per call in dispatch.
    """
    scaled = samples.clip(-1.0, _PCM16_MAX_FLOAT)
    scaled *= _PCM16_SCALE
    np.rint(scaled, out=scaled)
    return scaled.astype(_I16LE).tobytes()


def downmix_to_mono(interleaved: Float32Array) -> Float32Array:
    """Average left and right: taking one channel would lose a player panned to the other."""
    mono = interleaved[0::2] + interleaved[1::2]
    mono *= np.float32(0.5)
    return mono


def upmix_to_stereo(mono: Float32Array) -> Float32Array:
    """Same voice on both speakers: the NPC has no position here, the engine spatialises."""
    return np.repeat(mono, 2)


def decode_samples(fmt: AudioFormat, data: bytes) -> Float32Array:
    """Interleaved float32 samples of whole-frame ``data`` in ``fmt``, within full scale.

    FLOAT32 is clipped on the way in, not only on the way out: finite but huge values (1e38)
    would otherwise overflow inside the resampler's filter into infinities and NaNs.
    """
    if fmt.encoding is Encoding.PCM16:
        return pcm16_to_float32(data)
    return np.frombuffer(data, dtype=_F32LE).clip(-1.0, 1.0)


def encode_samples(fmt: AudioFormat, mono: Float32Array) -> bytes:
    """Bytes in ``fmt`` for mono samples; FLOAT32 is clipped too, as the proto promises [-1, 1]."""
    if fmt.encoding is Encoding.PCM16:
        if fmt.channels == 2:
            mono = upmix_to_stereo(mono)
        return float32_to_pcm16(mono)
    clipped = mono.clip(-1.0, 1.0)
    if fmt.channels == 2:
        clipped = upmix_to_stereo(clipped)
    return clipped.astype(_F32LE, copy=False).tobytes()


# ------------------------------------------------------------------------------------------------
# Streaming conversion


class _Resampler:
    """A mono soxr stream, or nothing when the rates already match."""

    __slots__ = ("_out_rate", "_stream")

    def __init__(self, in_rate: int, out_rate: int, quality: str) -> None:
        self._out_rate = out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
        )

    @property
    def active(self) -> bool:
        return self._stream is not None

    def process(self, samples: Float32Array) -> Float32Array:
        if self._stream is None:
            return samples
        out: Float32Array = self._stream.resample_chunk(samples)
        return out

    def flush(self) -> Float32Array:
        if self._stream is None:
            return _EMPTY
        tail: Float32Array = self._stream.resample_chunk(_EMPTY, last=True)
        # soxr refuses input after ``last``; clearing makes the stream reusable, from silence.
        self._stream.clear()
        return tail

    def reset(self) -> None:
        if self._stream is not None:
            self._stream.clear()

    @property
    def pending_ms(self) -> float:
        if self._stream is None:
            return 0.0
        pending: float = self._stream.delay()
        return pending * 1000 / self._out_rate


class InputConverter:
    """One player's microphone stream, from the game's format to the backend's PCM16 mono 24 kHz.

    Keep one instance per stream: the resampler carries filter state across chunks, which is
    what keeps chunk borders free of clicks. While resampling, output comes in soxr's blocks of
    30-37 ms: with 20 ms chunks the first one (two at 22.05 kHz) returns nothing and later ones
    alternate between nothing and a block. Output trails input by exactly ``pending_ms``, but
    sample timing is not shifted. Skip empty results rather than sending empty appends, and
    call ``flush()`` when the player's turn ends (push-to-talk commit), otherwise up to ~40 ms
    of the end of their speech stays inside the resampler.
    """

    __slots__ = ("_format", "_passthrough", "_resampler")

    def __init__(self, fmt: AudioFormat, *, quality: str = RESAMPLER_QUALITY) -> None:
        self._format = fmt
        self._passthrough = fmt == REALTIME_FORMAT
        self._resampler = _Resampler(fmt.sample_rate, REALTIME_FORMAT.sample_rate, quality)

    @property
    def format(self) -> AudioFormat:
        return self._format

    @property
    def pending_ms(self) -> float:
        """Audio received but not yet returned, held by the resampler."""
        return self._resampler.pending_ms

    def convert(self, chunk: bytes) -> bytes:
        """Backend PCM16 for a chunk that passed ``validate_chunk``; may be shorter, even empty."""
        _check_whole_frames(self._format, len(chunk))
        if self._passthrough:
            return chunk
        samples = decode_samples(self._format, chunk)
        if self._format.channels == 2:
            samples = downmix_to_mono(samples)
        resampled = self._resampler.process(samples)
        # soxr often returns nothing while it fills a block; skip 2 us of numpy calls then.
        return float32_to_pcm16(resampled) if resampled.size else b""

    def flush(self) -> bytes:
        """The held-back tail; the converter then starts afresh, as if newly created."""
        return float32_to_pcm16(self._resampler.flush()) if self._resampler.active else b""

    def reset(self) -> None:
        """Drop held-back audio, e.g. when the input buffer is cleared."""
        self._resampler.reset()


class OutputConverter:
    """One NPC voice stream, from the backend's PCM16 mono 24 kHz to the game's format.

    Backend deltas are not validated like game input, so a delta that splits a sample is
    tolerated: the odd byte waits for the next delta. Call ``flush()`` at the end of every
    response (or the game never hears its last ~20-40 ms) and ``reset()`` on barge-in.
    Because soxr trims its filter delay, output byte offsets map exactly to response time, so
    ``start_ms`` of a chunk is the format's ``duration_ms`` of everything returned before it.
    """

    __slots__ = ("_carry", "_format", "_passthrough", "_resampler")

    def __init__(self, fmt: AudioFormat, *, quality: str = RESAMPLER_QUALITY) -> None:
        self._format = fmt
        self._passthrough = fmt == REALTIME_FORMAT
        self._resampler = _Resampler(REALTIME_FORMAT.sample_rate, fmt.sample_rate, quality)
        self._carry = b""

    @property
    def format(self) -> AudioFormat:
        return self._format

    @property
    def pending_ms(self) -> float:
        """Audio received but not yet returned, held by the resampler."""
        return self._resampler.pending_ms

    def convert(self, pcm: bytes) -> bytes:
        """Audio in the game's format; may be shorter than ``pcm`` implies, even empty."""
        if self._carry:
            pcm = self._carry + pcm
            self._carry = b""
        if len(pcm) % 2:
            self._carry = pcm[-1:]
            pcm = pcm[:-1]
        if self._passthrough:
            return pcm
        resampled = self._resampler.process(pcm16_to_float32(pcm))
        return encode_samples(self._format, resampled) if resampled.size else b""

    def flush(self) -> bytes:
        """The held-back tail of a response; a dangling half sample is dropped."""
        self._carry = b""
        if not self._resampler.active:
            return b""
        return encode_samples(self._format, self._resampler.flush())

    def reset(self) -> None:
        """Drop everything not yet returned: the player interrupted, the rest is never played."""
        self._carry = b""
        self._resampler.reset()


# ------------------------------------------------------------------------------------------------
# Durations (barge-in truncation works in whole milliseconds of backend audio)


def pcm16_ms(nbytes: int, rate: int = REALTIME_FORMAT.sample_rate) -> int:
    """Whole milliseconds of mono PCM16, rounded down so a truncation never cuts past audio."""
    if nbytes < 0:
        raise ValueError(f"byte count must not be negative, got {nbytes}")
    return (nbytes // 2) * 1000 // rate


def ms_to_pcm16_bytes(ms: int, rate: int = REALTIME_FORMAT.sample_rate) -> int:
    """Byte offset of ``ms`` in mono PCM16, rounded down to a whole sample."""
    if ms < 0:
        raise ValueError(f"duration must not be negative, got {ms} ms")
    return (ms * rate // 1000) * 2


# ------------------------------------------------------------------------------------------------
# Base64 framing for the Realtime protocol


def b64encode(data: bytes) -> str:
    """Standard base64 text, as the ``audio`` and ``delta`` fields carry it."""
    text: str = pybase64.b64encode_as_string(data)
    return text


def b64decode(text: str | bytes) -> bytes:
    """Strict decode: stray characters mean a corrupt event, not audio to guess at."""
    try:
        data: bytes = pybase64.b64decode(text, validate=True)
    except ValueError as exc:  # binascii.Error, or a non-ASCII str
        raise AudioError(f"audio is not valid base64: {exc}") from None
    return data


def split_for_append(
    pcm: bytes, limit: int = APPEND_EVENT_LIMIT, *, overhead: int = APPEND_EVENT_OVERHEAD
) -> list[bytes]:
    """Split PCM16 so each ``input_audio_buffer.append`` event stays within ``limit`` bytes.

    The protocol documents "up to a maximum of 15 MiB" per event without saying of what, so
    the cap is applied to the whole event, the stricter reading. Base64 turns 3 raw bytes into
    4 characters, so a piece holds at most ``3 * ((limit - overhead) // 4)`` bytes, rounded
    down to a whole sample: 11.2 MiB, about four minutes of audio, at the default limit.
    """
    if len(pcm) % 2:
        raise AudioError(f"PCM16 audio is {len(pcm)} bytes, which is not a multiple of 2")
    piece = (limit - overhead) // 4 * 3
    piece -= piece % 2
    if piece < 2:
        raise ValueError(f"an append limit of {limit} bytes leaves no room for audio")
    if len(pcm) <= piece:
        return [pcm] if pcm else []
    return [pcm[start : start + piece] for start in range(0, len(pcm), piece)]
