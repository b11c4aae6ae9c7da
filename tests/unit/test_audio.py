"""What a player or a game developer would notice if npcd's audio maths went wrong."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import orjson
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from npcd.audio import (
    MAX_CHUNK_MS,
    REALTIME_FORMAT,
    RESAMPLER_QUALITY,
    SUPPORTED_RATES,
    AudioError,
    AudioFormat,
    Encoding,
    InputConverter,
    OutputConverter,
    b64decode,
    b64encode,
    float32_to_pcm16,
    ms_to_pcm16_bytes,
    pcm16_ms,
    pcm16_to_float32,
    split_for_append,
    validate_chunk,
)

F32 = npt.NDArray[np.float32]

RT = REALTIME_FORMAT.sample_rate
# Worst hold-back measured for soxr HQ over every supported rate pair is ~42 ms (22.05 kHz).
MAX_PENDING_MS = 50.0
# Lets the filter's response to the signal switching on and off die out before measuring.
EDGE_S = 0.05
ALL_FORMATS = [
    AudioFormat(encoding, rate, channels)
    for encoding, rate, channels in itertools.product(Encoding, SUPPORTED_RATES, (1, 2))
]


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> F32:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def voice_like(rate: int, seconds: float) -> F32:
    """Partials with vibrato: busier than a sine, so a chunk border has no easy place to hide."""
    t = np.arange(round(rate * seconds)) / rate
    f0 = 180 + 20 * np.sin(2 * np.pi * 5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    parts = np.zeros_like(phase)
    for k in range(1, 8):
        parts += np.sin(k * phase) / k
    return (0.3 * parts).astype(np.float32)


def as_bytes(fmt: AudioFormat, mono: F32) -> bytes:
    """Independent of npcd.audio, so the converters are not checked against themselves."""
    frames = np.repeat(mono, fmt.channels)
    if fmt.encoding is Encoding.FLOAT32:
        return frames.astype("<f4").tobytes()
    return np.round(frames * 32767).astype("<i2").tobytes()


def from_bytes(fmt: AudioFormat, data: bytes) -> F32:
    """First channel of ``data`` as floats."""
    if fmt.encoding is Encoding.FLOAT32:
        samples = np.frombuffer(data, dtype="<f4")
    else:
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768
    return samples[:: fmt.channels]


def pcm16(data: bytes) -> npt.NDArray[np.int16]:
    return np.frombuffer(data, dtype="<i2")


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def run(converter: InputConverter | OutputConverter, pieces: list[bytes]) -> bytes:
    return b"".join(converter.convert(piece) for piece in pieces) + converter.flush()


def trim(samples: F32, rate: int) -> F32:
    edge = int(EDGE_S * rate)
    return samples[edge:-edge]


def rms_db(samples: F32) -> float:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * float(np.log10(max(rms, 1e-12)))


def twenty_ms(fmt: AudioFormat) -> int:
    return fmt.bytes_for_ms(20)


# ------------------------------------------------------------------------------------------------
# Resampling quality


def test_1khz_tone_keeps_pitch_and_level_through_48k_to_24k_and_back() -> None:
    game = AudioFormat(Encoding.FLOAT32, 48000)
    sent = tone(1000, 48000, 1.0)

    backend = run(InputConverter(game), chunks(as_bytes(game, sent), twenty_ms(game)))
    heard = from_bytes(game, run(OutputConverter(game), chunks(backend, 960)))

    assert len(heard) == len(sent)
    for samples, rate in ((from_bytes(REALTIME_FORMAT, backend), RT), (heard, 48000)):
        body = trim(samples, rate)
        spectrum = np.abs(np.fft.rfft(body * np.hanning(len(body))))
        bin_hz = rate / len(body)
        assert abs(np.argmax(spectrum) * bin_hz - 1000) <= bin_hz
        assert abs(rms_db(body) - rms_db(trim(sent, 48000))) < 0.5


def test_15khz_tone_does_not_alias_into_24k_output() -> None:
    """Above the new Nyquist (12 kHz) a tone must vanish, not fold back down to 9 kHz."""
    game = AudioFormat(Encoding.FLOAT32, 48000)

    def level_after(freq: float) -> float:
        backend = run(InputConverter(game), [as_bytes(game, tone(freq, 48000, 0.5))])
        return rms_db(trim(from_bytes(REALTIME_FORMAT, backend), RT))

    assert level_after(1000) - level_after(15000) >= 50


# ------------------------------------------------------------------------------------------------
# Streaming: chunking must not change the audio


def one_shot_pcm16(signal: F32, rate: int) -> npt.NDArray[np.int16]:
    """The whole signal resampled in one go, the reference that chunking must reproduce."""
    resampled = soxr.resample(signal, rate, RT, quality=RESAMPLER_QUALITY)
    clipped = np.clip(np.rint(resampled * 32768), -32768, 32767)
    want: npt.NDArray[np.int16] = clipped.astype(np.int16)
    return want


def assert_close_pcm16(got: bytes, want: npt.NDArray[np.int16]) -> None:
    samples = pcm16(got).astype(np.int32)
    assert len(samples) == len(want)
    assert np.abs(samples - want).max(initial=0) <= 1


@pytest.mark.parametrize(
    ("rate", "frames"),
    [(48000, 960), (44100, 882), (22050, 441), (16000, 320), (44100, 441), (48000, 1031)],
)
def test_chunked_input_equals_one_shot_resampling(rate: int, frames: int) -> None:
    game = AudioFormat(Encoding.FLOAT32, rate)
    signal = voice_like(rate, 0.7)
    got = run(InputConverter(game), chunks(as_bytes(game, signal), frames * game.frame_bytes))
    assert_close_pcm16(got, one_shot_pcm16(signal, rate))


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([16000, 22050, 44100, 48000]),
    sizes=st.lists(st.integers(1, 2500), min_size=1, max_size=40),
)
def test_any_chunking_of_input_equals_one_shot_resampling(rate: int, sizes: list[int]) -> None:
    game = AudioFormat(Encoding.FLOAT32, rate)
    signal = voice_like(rate, 0.3)
    data = as_bytes(game, signal)
    bounds = np.cumsum([0, *sizes]) * game.frame_bytes
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds) if a < len(data)]
    pieces.append(data[bounds[-1] :])
    assert_close_pcm16(run(InputConverter(game), pieces), one_shot_pcm16(signal, rate))


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([16000, 22050, 44100, 48000]),
    cuts=st.lists(st.integers(0, 24000), max_size=30),
)
def test_backend_deltas_split_anywhere_give_the_same_output(rate: int, cuts: list[int]) -> None:
    """Deltas may even split a sample in two; the game must still hear the same voice."""
    game = AudioFormat(Encoding.PCM16, rate)
    backend = as_bytes(REALTIME_FORMAT, voice_like(RT, 0.5))
    bounds = [0, *sorted(cuts), len(backend)]
    pieces = [backend[a:b] for a, b in itertools.pairwise(bounds)]
    assert run(OutputConverter(game), pieces) == run(OutputConverter(game), [backend])


@pytest.mark.parametrize("rate", [22050, 44100, 48000])
def test_no_clicks_at_chunk_borders(rate: int) -> None:
    """A click is a jump between neighbouring samples larger than the signal itself makes."""
    game = AudioFormat(Encoding.PCM16, rate)
    signal = voice_like(rate, 1.0)
    data = as_bytes(game, signal)

    def largest_jump(out: bytes) -> int:
        return int(np.abs(np.diff(pcm16(out).astype(np.int32))).max())

    smooth = largest_jump(run(InputConverter(game), [data]))
    chunked = largest_jump(run(InputConverter(game), chunks(data, twenty_ms(game))))
    assert chunked <= smooth + 2

    # The check has teeth: resampling each chunk on its own (no state) does click.
    stateless = b"".join(
        float32_to_pcm16(soxr.resample(from_bytes(game, piece), rate, RT))
        for piece in chunks(data, twenty_ms(game))
    )
    assert largest_jump(stateless) > smooth + 100


# ------------------------------------------------------------------------------------------------
# Every supported format


@pytest.mark.parametrize("game", ALL_FORMATS, ids=str)
def test_every_format_converts_to_the_right_duration_and_back(game: AudioFormat) -> None:
    sent = voice_like(game.sample_rate, 0.5)
    data = as_bytes(game, sent)
    sent_ms = game.duration_ms(len(data))

    converter = InputConverter(game)
    streamed = b"".join(converter.convert(piece) for piece in chunks(data, twenty_ms(game)))
    streamed_ms = REALTIME_FORMAT.duration_ms(len(streamed))
    assert sent_ms - MAX_PENDING_MS <= streamed_ms <= sent_ms
    assert streamed_ms + converter.pending_ms == pytest.approx(sent_ms, abs=1000 / RT)
    backend = streamed + converter.flush()
    assert REALTIME_FORMAT.duration_ms(len(backend)) == pytest.approx(sent_ms, abs=1000 / RT)
    assert len(backend) % 2 == 0
    level = trim(from_bytes(REALTIME_FORMAT, backend), RT)
    assert abs(rms_db(level) - rms_db(trim(sent, game.sample_rate))) < 0.5

    heard = run(OutputConverter(game), chunks(backend, REALTIME_FORMAT.bytes_for_ms(20)))
    assert len(heard) % game.frame_bytes == 0
    assert game.duration_ms(len(heard)) == pytest.approx(sent_ms, abs=1000 / game.sample_rate)
    if game.channels == 2:
        dtype = "<i2" if game.encoding is Encoding.PCM16 else "<f4"
        frames = np.frombuffer(heard, dtype=dtype)
        assert np.array_equal(frames[0::2], frames[1::2])


def test_stereo_input_is_averaged_not_one_channel_dropped() -> None:
    game = AudioFormat(Encoding.PCM16, RT, 2)
    left, right = np.full(480, 1000, dtype="<i2"), np.full(480, -3000, dtype="<i2")
    interleaved = np.column_stack([left, right]).ravel().tobytes()
    assert set(pcm16(InputConverter(game).convert(interleaved))) == {-1000}


def test_backend_format_passes_through_untouched() -> None:
    data = as_bytes(REALTIME_FORMAT, voice_like(RT, 0.1))
    assert InputConverter(REALTIME_FORMAT).convert(data) == data
    assert run(OutputConverter(REALTIME_FORMAT), chunks(data, 333)) == data


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
def test_resampler_holds_back_at_most_a_few_tens_of_ms(rate: int) -> None:
    """Every millisecond held here is a millisecond the NPC answers later."""
    for converter, fmt in (
        (InputConverter(AudioFormat(Encoding.PCM16, rate)), AudioFormat(Encoding.PCM16, rate)),
        (OutputConverter(AudioFormat(Encoding.PCM16, rate)), REALTIME_FORMAT),
    ):
        data = as_bytes(fmt, voice_like(fmt.sample_rate, 1.0))
        for piece in chunks(data, twenty_ms(fmt)):
            converter.convert(piece)
            assert converter.pending_ms <= MAX_PENDING_MS


def test_converter_after_flush_or_reset_behaves_like_a_new_one() -> None:
    game = AudioFormat(Encoding.FLOAT32, 44100, 2)
    first, second = as_bytes(game, voice_like(44100, 0.3)), as_bytes(game, tone(440, 44100, 0.3))
    fresh = run(InputConverter(game), chunks(second, twenty_ms(game)))

    flushed = InputConverter(game)
    run(flushed, chunks(first, twenty_ms(game)))
    assert run(flushed, chunks(second, twenty_ms(game))) == fresh

    interrupted = InputConverter(game)
    for piece in chunks(first, twenty_ms(game)):
        interrupted.convert(piece)
    interrupted.reset()
    assert interrupted.pending_ms == 0
    assert run(interrupted, chunks(second, twenty_ms(game))) == fresh


def test_output_reset_forgets_the_interrupted_response() -> None:
    game = AudioFormat(Encoding.PCM16, 48000)
    response = as_bytes(REALTIME_FORMAT, voice_like(RT, 0.3))
    fresh = run(OutputConverter(game), [response])

    barged = OutputConverter(game)
    barged.convert(response[:4801])  # odd: half a sample is waiting too
    barged.reset()
    assert run(barged, [response]) == fresh


# ------------------------------------------------------------------------------------------------
# Sample conversions


def test_float_overdrive_clips_instead_of_wrapping() -> None:
    too_loud = np.array([1.0, 1.01, 1.5, 3e38, np.inf, -1.0, -1.01, -3e38, -np.inf], np.float32)
    assert pcm16(float32_to_pcm16(too_loud)).tolist() == [32767] * 5 + [-32768] * 4


def test_float_to_pcm16_rounds_to_nearest() -> None:
    """Truncating would bias quiet audio towards zero and distort it."""
    quiet = tone(440, RT, 0.1, amplitude=50 / 32768)
    error = pcm16(float32_to_pcm16(quiet)) - quiet.astype(np.float64) * 32768
    assert np.abs(error).max() <= 0.5


def test_overdriven_float_input_is_clipped_not_turned_into_noise() -> None:
    """Finite but absurd floats pass validation; the resampler must not overflow on them."""
    game = AudioFormat(Encoding.FLOAT32, 48000)
    loud = np.repeat(np.array([3e38, -3e38, 2.0, -2.0], dtype=np.float32), 4800)
    validate_chunk(game, loud.tobytes())
    backend = pcm16(run(InputConverter(game), chunks(loud.tobytes(), twenty_ms(game))))
    steady = backend[np.arange(len(backend)) % 2400 == 1200]
    assert steady.tolist() == [32767, -32768, 32767, -32768]


def test_pcm16_through_float32_is_lossless() -> None:
    every_value = np.arange(-32768, 32768, dtype="<i2").tobytes()
    assert float32_to_pcm16(pcm16_to_float32(every_value)) == every_value


def test_float32_output_stays_within_full_scale() -> None:
    """Resampling a full-scale square wave overshoots; engines expect [-1, 1]."""
    game = AudioFormat(Encoding.FLOAT32, 48000)
    square = np.where(np.arange(RT) // 30 % 2, 32767, -32768).astype("<i2").tobytes()
    heard = np.frombuffer(run(OutputConverter(game), [square]), dtype="<f4")
    assert np.abs(heard).max() <= 1.0


# ------------------------------------------------------------------------------------------------
# Validation messages (developers read these)


PCM16_MONO = AudioFormat(Encoding.PCM16, 16000)
FLOAT_STEREO = AudioFormat(Encoding.FLOAT32, 48000, 2)


@pytest.mark.parametrize(
    ("fmt", "data", "words"),
    [
        (PCM16_MONO, b"", ["empty", "2 bytes"]),
        (PCM16_MONO, b"\0" * 641, ["641 bytes", "multiple of 2"]),
        (AudioFormat(Encoding.PCM16, 16000, 2), b"\0" * 642, ["642 bytes", "multiple of 4"]),
        (FLOAT_STEREO, b"\0" * 12, ["12 bytes", "multiple of 8"]),
        (PCM16_MONO, b"\0" * 32002, ["1000.1 ms", "1000 ms", "maximum"]),
        (FLOAT_STEREO, np.array([0, 0, 0, np.nan], "<f4").tobytes(), ["NaN", "sample 3"]),
        (FLOAT_STEREO, np.array([0, -np.inf], "<f4").tobytes(), ["infinity", "sample 1"]),
    ],
)
def test_bad_chunks_are_rejected_with_a_message_naming_the_problem(
    fmt: AudioFormat, data: bytes, words: list[str]
) -> None:
    with pytest.raises(AudioError) as caught:
        validate_chunk(fmt, data)
    for word in words:
        assert word in str(caught.value)


def test_good_chunks_up_to_the_maximum_are_accepted() -> None:
    for fmt in ALL_FORMATS:
        validate_chunk(fmt, as_bytes(fmt, voice_like(fmt.sample_rate, MAX_CHUNK_MS / 1000)))
    validate_chunk(PCM16_MONO, b"\0" * 6400, max_ms=200)
    with pytest.raises(AudioError, match="200 ms"):
        validate_chunk(PCM16_MONO, b"\0" * 6402, max_ms=200)


@given(fmt=st.sampled_from(ALL_FORMATS), data=st.binary(max_size=4000))
def test_arbitrary_bytes_are_accepted_or_rejected_cleanly(fmt: AudioFormat, data: bytes) -> None:
    try:
        validate_chunk(fmt, data, max_ms=10)
    except AudioError as exc:
        assert str(exc)
    else:
        InputConverter(fmt).convert(data)


@pytest.mark.parametrize(
    ("encoding", "rate", "channels", "words"),
    [
        (Encoding.PCM16, 8000, 1, ["8000 Hz", "16000, 22050, 24000, 44100, 48000"]),
        (Encoding.FLOAT32, 48000, 6, ["channel count 6", "1 (mono) or 2"]),
        ("mp3", 48000, 1, ["encoding", "'mp3'"]),
    ],
)
def test_unsupported_formats_are_refused(
    encoding: Encoding, rate: int, channels: int, words: list[str]
) -> None:
    with pytest.raises(AudioError) as caught:
        AudioFormat(encoding, rate, channels)
    for word in words:
        assert word in str(caught.value)


def test_format_arithmetic() -> None:
    assert REALTIME_FORMAT.bytes_per_second == 48000
    assert FLOAT_STEREO.frame_bytes == 8
    assert FLOAT_STEREO.bytes_for_ms(20) == 960 * 8
    assert FLOAT_STEREO.duration_ms(960 * 8 + 7) == 20
    assert AudioFormat(Encoding.PCM16, 22050).bytes_for_ms(10) == 220 * 2


# ------------------------------------------------------------------------------------------------
# Durations for barge-in truncation


@given(ms=st.integers(0, 10_000_000))
def test_ms_and_bytes_round_trip_at_24k(ms: int) -> None:
    assert pcm16_ms(ms_to_pcm16_bytes(ms)) == ms


@given(nbytes=st.integers(0, 10**9), rate=st.sampled_from(SUPPORTED_RATES))
def test_durations_round_down_to_whole_samples(nbytes: int, rate: int) -> None:
    ms = pcm16_ms(nbytes, rate)
    offset = ms_to_pcm16_bytes(ms, rate)
    assert offset % 2 == 0
    assert offset <= nbytes
    assert ms * rate <= (nbytes // 2) * 1000 < (ms + 1) * rate


# ------------------------------------------------------------------------------------------------
# Base64 framing


@given(data=st.binary(max_size=3000))
def test_base64_round_trip(data: bytes) -> None:
    assert b64decode(b64encode(data)) == data


@pytest.mark.parametrize("text", ["abc", "YWJj\n", "YW Jj", "YWJ", "éé==", "YQ=a"])
def test_invalid_base64_is_an_audio_error(text: str) -> None:
    with pytest.raises(AudioError, match="base64"):
        b64decode(text)


@settings(max_examples=50)
@given(samples=st.integers(0, 20_000), limit=st.integers(1040, 20_000))
def test_split_for_append_keeps_every_event_under_the_limit(samples: int, limit: int) -> None:
    pcm = np.arange(samples, dtype="<i2").tobytes()
    pieces = split_for_append(pcm, limit)
    assert b"".join(pieces) == pcm
    assert all(piece and len(piece) % 2 == 0 for piece in pieces)
    for piece in pieces:
        event = {
            "event_id": "evt_" + "x" * 60,
            "type": "input_audio_buffer.append",
            "audio": b64encode(piece),
        }
        assert len(orjson.dumps(event)) <= limit


def test_split_for_append_leaves_realistic_audio_whole() -> None:
    one_minute = bytes(REALTIME_FORMAT.bytes_per_second * 60)
    assert split_for_append(one_minute) == [one_minute]
    assert len(split_for_append(bytes(12 * 1024 * 1024))) == 2


def test_split_for_append_refuses_half_samples() -> None:
    with pytest.raises(AudioError, match="multiple of 2"):
        split_for_append(b"\0" * 3)
