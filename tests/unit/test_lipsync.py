"""The lip-sync core without sockets: phonemes map to OVR visemes, the exact track renders the
same frames however its input is chunked, and a response's stream places each item's phonemes
on the response's clock and stops at a cut."""

from __future__ import annotations

import unicodedata

import pytest

from npcd.lipsync.stream import VisemeStream, acoustic_visemes
from npcd.lipsync.timeline import Frame, PhonemeTrack, frame_runs, frame_time_ms
from npcd.lipsync.visemes import _SYMBOLS, OVR_VISEMES, SIL, VISEME_INDEX, visemes_of
from npcd.localbackend.defaults import default_engines
from npcd.localbackend.engines.tts import VOICE_MAP
from npcd.realtime.events import UnknownServerEvent
from npcd.realtime.extensions import PHONEMES_EVENT, parse_phonemes, phonemes_event

TEXT = (
    "Hello there, traveller! The blacksmith forges swords and shields of iron. Would you like "
    "to buy something? Judge the weather; thick fog rolls over the hills, voices whisper. "
    "Measure your treasure, young squire: joy, ice, cows, boys, purple, bottle, vision."
)


def names(shapes: tuple[int, ...]) -> list[str]:
    return [OVR_VISEMES[s] if s >= 0 else "next" for s in shapes]


@pytest.mark.parametrize(
    ("phoneme", "expected"),
    [
        ("", ["sil"]),
        ("m", ["PP"]),
        ("dʒ", ["CH"]),
        ("tʃ", ["CH"]),
        ("θ", ["TH"]),
        ("ˈaɪɚ", ["aa", "ih", "RR"]),
        ("ˈɔːɹ", ["oh", "RR"]),
        ("ˌoʊ", ["oh", "ou"]),
        ("h", ["next"]),
        ("☃", ["E"]),
    ],
)
def test_phonemes_map_to_the_mouth_shapes_they_move_through(
    phoneme: str, expected: list[str]
) -> None:
    assert names(visemes_of(phoneme)) == expected


def test_every_symbol_espeak_says_has_a_viseme() -> None:
    synthesizer = default_engines().synthesizer
    seen: set[str] = set()
    for voice in ("alloy", "ballad", "coral"):
        assert voice in VOICE_MAP
        for chunk in synthesizer.synthesize(TEXT, voice):
            seen.update(p.phoneme for p in chunk.phonemes)
    symbols = {
        c
        for p in seen
        for c in unicodedata.normalize("NFD", p)
        if c not in "ˈˌːˑ" and not unicodedata.combining(c)
    }
    known = {c for key in _SYMBOLS for c in key} | set("hɦʔ")
    assert symbols - known == set(), "add these to npcd/lipsync/visemes.py"
    assert len(seen) > 30


def rendered(feed_ms: list[float], phonemes: list[tuple[float, str]], end: float) -> list[Frame]:
    """Frames of a track fed its phonemes as audio arrives in pieces ending at ``feed_ms``."""
    track = PhonemeTrack(60)
    out: list[Frame] = []
    pending = list(phonemes)
    for upto in feed_ms:
        while pending and pending[0][0] < upto:
            track.add(*pending.pop(0))
        out += track.frames(upto)
    for phoneme in pending:
        track.add(*phoneme)
    return out + track.finish(end)


HELLO = [(11.0, "h"), (63.0, "ə"), (116.0, "l"), (191.0, "ˈoʊ"), (322.0, ""), (400.0, "m")]


def test_the_exact_track_is_the_same_however_the_audio_arrives() -> None:
    whole = rendered([500.0], HELLO, 500.0)
    pieces = rendered([20.0 * k for k in range(1, 26)], HELLO, 500.0)
    assert whole == pieces
    assert [f.start_ms for f in whole[:-1]] == [frame_time_ms(k, 60) for k in range(len(whole) - 1)]
    assert whole[-1] == Frame(500, tuple(1.0 if i == SIL else 0.0 for i in range(15)))
    for frame in whole:
        assert abs(sum(frame.weights) - 1.0) < 1e-9
        assert sum(1 for w in frame.weights if w > 0) <= 2, "a blend of two shapes at most"


def test_shapes_hold_between_blends_and_h_takes_the_next_vowel() -> None:
    frames = rendered([500.0], HELLO, 500.0)

    def at(ms: int) -> str:
        return OVR_VISEMES[[f for f in frames if f.start_ms <= ms][-1].viseme]

    assert at(0) == "sil"
    assert at(40) == "E", "/h/ already shapes the schwa that follows"
    assert at(140) == "nn"
    assert at(230) == "oh" and at(300) == "ou", "the diphthong moves from oh to ou"
    assert at(370) == "sil"
    assert at(480) == "PP"
    blend = next(f for f in frames if 110 <= f.start_ms <= 120)
    assert 0 < blend.weights[VISEME_INDEX["nn"]] < 1, "the mouth moves, it does not snap"


def test_frames_group_into_runs_on_the_grid() -> None:
    frames = rendered([500.0], HELLO, 503.0)
    runs = frame_runs(frames, 60)
    assert [start for start, _ in runs] == [0, 503], "the closing frame is off the grid"
    assert sum(len(w) for _, w in runs) == 15 * len(frames)


def test_a_stream_places_each_items_phonemes_on_the_response_clock() -> None:
    stream = VisemeStream(60)
    stream.phonemes("item_a", [(0, "m"), (50, "")])
    stream.audio("item_a", bytes(48 * 100))  # 100 ms
    first = stream.frames()
    stream.phonemes("item_b", [(0, "s"), (60, "")])  # 0 on item_b's clock = 100 ms here
    stream.audio("item_b", bytes(48 * 100))
    frames = first + stream.frames(final=True)
    assert stream.source == "phonemes"

    def at(ms: int) -> str:
        return OVR_VISEMES[[f for f in frames if f.start_ms <= ms][-1].viseme]

    assert [at(20), at(80), at(135), at(190)] == ["PP", "sil", "SS", "sil"]
    assert frames[-1].start_ms == 200


def test_frames_never_run_ahead_of_the_audio_they_go_with() -> None:
    stream = VisemeStream(60, acoustic_visemes)
    stream.audio("item_a", bytes(48 * 200))
    mark = stream.audio_bytes
    stream.audio("item_a", bytes(48 * 800))  # arrived before the first frames were worked out
    early = stream.frames(mark)
    assert early and early[-1].start_ms < 200
    rest = stream.frames(final=True)
    assert rest[0].start_ms > early[-1].start_ms and rest[-1].start_ms == 1000


def test_a_cut_stream_sends_nothing_more() -> None:
    stream = VisemeStream(60)
    stream.phonemes("item_a", [(0, "a"), (300, "")])
    stream.audio("item_a", bytes(48 * 100))
    *before, closing = stream.cut(60)
    assert closing.start_ms == 60 and closing.weights[SIL] == 1.0
    assert before and all(f.start_ms < 60 for f in before), "the frames heard up to the cut"
    stream.audio("item_a", bytes(48 * 100))
    assert stream.frames() == [] and stream.frames(final=True) == []


def test_without_phonemes_or_an_analyser_a_stream_is_silent_not_wrong() -> None:
    stream = VisemeStream(60, acoustic=None)
    stream.audio("item_a", bytes(4800))
    assert stream.frames() == [] and stream.frames(final=True) == []
    assert stream.source == "none"


def test_phoneme_events_parse_only_when_well_formed() -> None:
    good = phonemes_event(
        "e1", response_id="r", item_id="i", output_index=0, content_index=0, phonemes=[(5, "a")]
    )
    parsed = parse_phonemes(good)
    assert parsed is not None and parsed.phonemes == ((5, "a"),)
    base = dict(good.raw)
    for bad in (
        {"phonemes": [[-1, "a"]]},
        {"phonemes": [[1.5, "a"]]},
        {"phonemes": [[1, 2]]},
        {"phonemes": [[1, "a" * 40]]},
        {"phonemes": "a"},
        {"response_id": 3},
    ):
        assert parse_phonemes(UnknownServerEvent(PHONEMES_EVENT, {**base, **bad})) is None
    assert parse_phonemes(UnknownServerEvent("other.event", base)) is None
