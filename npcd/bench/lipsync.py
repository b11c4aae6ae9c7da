"""Scoring viseme tracks against eSpeak's exact one: shared by the lip-sync test and benchmark.

Three ways to a track for audio that came without phonemes are compared with the exact track
(`PhonemeTrack` over eSpeak's own phoneme timing) of held-out sentences:

* acoustic: `AcousticVisemes`, from the audio alone (streaming; what npcd uses);
* text: the transcript phonemised by eSpeak with another voice and rate than the speaker's
  (a phonemiser never knows the real voice), its phoneme times spread linearly over the
  actual audio's speech regions found by energy. This is offline (it needs the whole audio and
  transcript), so an upper bound for a streaming version;
* blend: the mean of the two, per frame.

Metrics, per track: frame accuracy (dominant viseme equal); grouped accuracy over `GROUPS`
(mouth shapes a viewer tells apart: closed, lip-teeth, tongue consonants, open, spread,
round); onsets: for each frame where the exact dominant viseme becomes ``v``, the nearest frame
where the predicted one becomes ``v`` within ±`ONSET_WINDOW_MS`, as the share matched and the
mean |dt| of those; and changes of the dominant viseme per second (flicker: a track that
changes all the time matches onsets by chance).

Measured (``bench/lipsync.py``, 24 held-out sentences; frames, grouped, onsets matched, onset
error, changes per second against the exact track's 10.7-11.0):

==================  =========  =====  =======  =======  =======  =========
voices              method     frame  grouped  matched  error    changes/s
==================  =========  =====  =======  =======  =======  =========
ten (240 renders)   acoustic   89.3%  91.3%    96.4%    6.8 ms   12.3
..                  text       78.1%  80.8%    97.5%    20.1 ms  10.9
..                  blend      86.4%  88.1%    96.7%    11.7 ms  11.3
six unseen (144)    acoustic   83.6%  86.6%    93.4%    9.2 ms   13.6
..                  text       78.9%  81.4%    98.2%    18.5 ms  11.2
..                  blend      86.0%  87.7%    96.7%    11.5 ms  11.6
==================  =========  =====  =======  =======  =======  =========

So the acoustic track is the better one on frame accuracy and timing (a third of the text
track's onset error), and needs no transcript. The text track knows the phoneme sequence, so
it finds more onsets and flickers less, but places them about 20 ms off; on voices the model
never heard the blend beats both on frame accuracy. The text track is flattered here: its
phonemiser is the speaker's own engine, and it sees the whole audio.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from npcd.lipsync.acoustic import AcousticVisemes
from npcd.lipsync.timeline import DEFAULT_FPS, Frame, PhonemeTrack
from npcd.lipsync.visemes import OVR_VISEMES, VISEME_INDEX

if TYPE_CHECKING:
    from npcd.localbackend.engines.tts import EspeakSynthesizer

__all__ = [
    "EVAL_SENTENCES",
    "EVAL_VOICES",
    "GROUPS",
    "Render",
    "Scores",
    "acoustic_frames",
    "blend_frames",
    "evaluate",
    "exact_frames",
    "loud_and_quiet",
    "with_room_tone",
    "pooled",
    "render",
    "score",
    "speech_regions",
    "text_frames",
]

BYTES_PER_MS: Final = 48
ONSET_WINDOW_MS: Final = 150.0

#: Held out: never in the training text (``bench/lipsync_train.py`` checks).
EVAL_SENTENCES: Final = (
    "The harbour master wants a word with you before the tide turns.",
    "Bring me three wolf pelts and I'll double your pay.",
    "My grandmother planted that oak when the king was still a boy.",
    "Quiet! Something moves beyond the ridge.",
    "You look like someone who could use a warm bowl of stew.",
    "Those crates hold nothing but rusted nails and broken promises.",
    "If the bridge collapses, we are cut off for the whole winter.",
    "Fetch the physician, quickly, the captain is bleeding badly.",
    "I charge twelve silver for a room, breakfast included.",
    "Do you really think the duke will pardon a thief like you?",
    "The lighthouse keeper vanished seven nights ago.",
    "Mind your manners in the temple, stranger.",
    "Thank you, truly. I thought I'd never see my brother again.",
    "Jewels, furs, spices from the south: everything has a price.",
    "Watch the sky; when the red comet rises, we march.",
    "Hmm, a map of the old mines. Where did you find this?",
    "Zealots burned the library, and half the town cheered.",
    "Keep your voice down, the guards have ears everywhere.",
    "Every apprentice starts by sweeping the forge floor.",
    "Would you judge a man by the boots he wears?",
    "The ferry leaves at dawn, with or without you.",
    "Beware the marsh lights; they lead travellers astray.",
    "Our village pays tribute to the mountain giants each spring.",
    "Ah, a fellow scholar! Have you read the chronicles of Vael?",
)

#: (voice, speed) pairs the sentences are scored with: every voice, a spread of speeds.
EVAL_VOICES: Final = (
    ("alloy", 1.0),
    ("ash", 0.85),
    ("ballad", 1.2),
    ("coral", 1.0),
    ("echo", 0.9),
    ("sage", 1.1),
    ("shimmer", 1.25),
    ("verse", 0.8),
    ("marin", 1.0),
    ("cedar", 1.15),
)

#: Coarser classes of mouth shape: jaw opening and lip shape, what a viewer can tell apart.
GROUPS: Final = {
    "closed": ("sil", "PP"),
    "lip-teeth": ("FF", "TH"),
    "tongue": ("DD", "kk", "CH", "SS", "nn", "RR"),
    "open": ("aa",),
    "spread": ("E", "ih"),
    "round": ("oh", "ou"),
}
_GROUP_OF: Final = np.zeros(len(OVR_VISEMES), dtype=np.intp)
for _g, _names in enumerate(GROUPS.values()):
    for _name in _names:
        _GROUP_OF[VISEME_INDEX[_name]] = _g

#: The phonemiser for the text-derived track: never the speaking voice (see `text_frames`).
PHONEMISER: Final = ("echo", 1.0)
PHONEMISER_ELSE: Final = ("ash", 1.1)


@dataclass(frozen=True, slots=True)
class Render:
    """One eSpeak utterance: its audio and exact phoneme timing (ms on the audio's clock)."""

    text: str
    voice: str
    speed: float
    pcm: bytes
    phonemes: tuple[tuple[float, str], ...]

    @property
    def duration_ms(self) -> float:
        return len(self.pcm) / BYTES_PER_MS


#: eSpeak variants beyond the ten `VOICE_MAP` voices (other formant sets, the Klatt
#: synthesiser, breathy and creaky sources): training uses the first set for voice variety, and
#: the benchmark scores the second, which training never hears, as a check that the model
#: learned mouth shapes rather than the ten voices. (name, pitch, range, words per minute)
TRAIN_VARIANTS: Final = {
    "t-klatt": ("en-us+klatt", 50, 50, 165),
    "t-klatt2": ("en+klatt2", 40, 60, 170),
    "t-klatt4": ("en-us+klatt4", 60, 50, 160),
    "t-m4": ("en-us+m4", 45, 50, 170),
    "t-m5": ("en+m5", 55, 70, 160),
    "t-m8": ("en-us+m8", 40, 40, 175),
    "t-f1": ("en-us+f1", 60, 60, 165),
    "t-f3": ("en+f3", 50, 50, 170),
    "t-f4": ("en-us+f4", 70, 60, 160),
    "t-andy": ("en-us+Andy", 50, 50, 170),
    "t-linda": ("en+linda", 55, 60, 165),
    "t-robert": ("en-us+robert", 45, 50, 160),
    "t-steph": ("en-us+steph", 60, 60, 170),
    "t-aunty": ("en+aunty", 60, 50, 160),
    "t-edward": ("en-us+edward", 40, 50, 165),
    "t-croak": ("en+croak", 50, 50, 160),
}
UNSEEN_VOICES: Final = {
    "u-klatt3": ("en-us+klatt3", 55, 50, 170),
    "u-annie": ("en-us+Annie", 60, 60, 165),
    "u-grandpa": ("en+grandpa", 40, 40, 150),
    "u-michael": ("en-us+Michael", 50, 60, 175),
    "u-belinda": ("en+belinda", 65, 60, 165),
    "u-paul": ("en-us+paul", 45, 50, 170),
}
#: The unseen variants at a spread of speeds, as `EVAL_VOICES`.
UNSEEN_EVAL: Final = (
    ("u-klatt3", 1.0),
    ("u-annie", 1.2),
    ("u-grandpa", 0.9),
    ("u-michael", 1.1),
    ("u-belinda", 0.85),
    ("u-paul", 1.25),
)


@functools.cache
def _synthesizer() -> EspeakSynthesizer:
    from npcd.localbackend.engines.tts import VOICE_MAP, EspeakSynthesizer, EspeakVoice

    voices = dict(VOICE_MAP)
    for name, (spec, pitch, pitch_range, rate) in {**TRAIN_VARIANTS, **UNSEEN_VOICES}.items():
        voices[name] = EspeakVoice(spec, pitch=pitch, range=pitch_range, rate=rate)
    return EspeakSynthesizer(voices)


def render(text: str, voice: str, speed: float = 1.0) -> Render:
    """eSpeak's audio and phonemes; ``voice`` is a `VOICE_MAP` name or a variant's above."""
    pcm = bytearray()
    phonemes: list[tuple[float, str]] = []
    for chunk in _synthesizer().synthesize(text, voice, speed):
        phonemes.extend((float(p.audio_ms), p.phoneme) for p in chunk.phonemes)
        pcm += chunk.pcm
    return Render(text, voice, speed, bytes(pcm), tuple(phonemes))


def exact_frames(
    phonemes: Iterable[tuple[float, str]], duration_ms: float, fps: int = DEFAULT_FPS
) -> list[Frame]:
    track = PhonemeTrack(fps)
    for at_ms, name in phonemes:
        track.add(at_ms, name)
    return track.finish(duration_ms)


def acoustic_frames(pcm: bytes, fps: int = DEFAULT_FPS, chunk_ms: int = 0) -> list[Frame]:
    """The acoustic track, fed in ``chunk_ms`` chunks (0: all at once)."""
    analyser = AcousticVisemes(fps)
    frames: list[Frame] = []
    step = chunk_ms * BYTES_PER_MS or max(1, len(pcm))
    for i in range(0, len(pcm), step):
        frames += analyser.feed(pcm[i : i + step])
    return frames + analyser.finish()


def speech_regions(pcm: bytes) -> list[tuple[float, float]]:
    """Speech as (start, end) ms by energy: 10 ms frames within 35 dB of the loudest,
    pauses under 120 ms bridged (stop closures), blips under 30 ms dropped."""
    samples = np.frombuffer(pcm[: len(pcm) // 480 * 480], dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return []
    power = (samples.reshape(-1, 240) ** 2).mean(axis=1) + 1e-3
    level = 10 * np.log10(power)
    loud = level > level.max() - 35.0
    regions: list[list[float]] = []
    for j in np.flatnonzero(loud):
        start, end = j * 10.0, j * 10.0 + 10.0
        if regions and start - regions[-1][1] < 120.0:
            regions[-1][1] = end
        else:
            regions.append([start, end])
    return [(a, b) for a, b in regions if b - a >= 30.0]


def with_room_tone(clips: Sequence[npt.NDArray[np.floating]]) -> bytes:
    """Recordings (24 kHz floats) joined into one PCM16 stream, each after the first preceded
    by 0.5 s of its own room tone (its first 200 ms, tiled back and forth): pauses at the
    recording's real noise floor."""
    parts: list[npt.NDArray[np.floating]] = []
    for i, clip in enumerate(clips):
        if i:
            lead = clip[:4800]
            parts.append(np.concatenate((lead, lead[::-1], lead, lead[::-1]))[:12000])
        parts.append(clip)
    joined = np.clip(np.concatenate(parts), -1.0, 32767 / 32768)
    return np.round(joined * 32768).astype("<i2").tobytes()


def loud_and_quiet(
    pcm: bytes, times_ms: Sequence[int], loud_db: float = -15.0, quiet_db: float = -25.0
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Which frame times are loud (their 10 ms within ``loud_db`` of the loudest) and which
    are in a pause (everything within 100 ms more than ``-quiet_db`` below it)."""
    samples = np.frombuffer(pcm[: len(pcm) // 480 * 480], dtype="<i2").astype(np.float64)
    level = 10 * np.log10((samples.reshape(-1, 240) ** 2).mean(axis=1) + 1e-3)
    level -= level.max()
    block = np.minimum(np.asarray(times_ms) // 10, level.size - 1)
    padded = np.concatenate((np.full(10, -np.inf), level, np.full(10, -np.inf)))
    around = np.lib.stride_tricks.sliding_window_view(padded, 21).max(axis=1)
    return level[block] > loud_db, around[block] < quiet_db


def _speech_time(regions: Sequence[tuple[float, float]], t: float) -> float:
    return sum(max(0.0, min(t, b) - a) for a, b in regions)


def _clock_time(regions: Sequence[tuple[float, float]], tau: float) -> float:
    """Where speech time ``tau`` falls on the clock (a boundary: the end of the earlier region)."""
    done = 0.0
    for a, b in regions:
        if tau <= done + (b - a):
            return a + (tau - done)
        done += b - a
    return regions[-1][1] if regions else 0.0


def text_frames(
    text: str, voice: str, pcm: bytes, fps: int = DEFAULT_FPS
) -> tuple[list[Frame], tuple[tuple[float, str], ...]]:
    """The text-derived track of audio ``pcm`` spoken by ``voice``, and the phonemes it used.

    The transcript is phonemised by another voice at another rate (`PHONEMISER`), and each
    phoneme is moved from its place in that render's speech time to the same share of the
    actual audio's speech time; each actual pause gets a pause phoneme, and the phoneme that
    straddles it resumes after it.
    """
    name, speed = PHONEMISER if voice != PHONEMISER[0] else PHONEMISER_ELSE
    reference = render(text, name, speed)
    ref_regions = speech_regions(reference.pcm)
    act_regions = speech_regions(pcm)
    duration = len(pcm) / BYTES_PER_MS
    if not ref_regions or not act_regions:
        return exact_frames((), duration, fps), ()
    ref_total = _speech_time(ref_regions, reference.duration_ms)
    act_total = _speech_time(act_regions, duration)
    ratio = act_total / ref_total
    timed: list[tuple[float, float, str]] = []  # (speech time, clock time, phoneme)
    for at_ms, phoneme in reference.phonemes:
        tau = _speech_time(ref_regions, at_ms) * ratio
        timed.append((tau, _clock_time(act_regions, tau), phoneme))
    events = [(clock, phoneme) for _, clock, phoneme in timed]
    for (_, end), (start, _) in zip(act_regions, act_regions[1:], strict=False):
        tau = _speech_time(act_regions, end)
        active = [p for t, _, p in timed if t < tau]
        events.append((end, ""))
        if active and active[-1]:
            events.append((start, active[-1]))
    events.sort(key=lambda e: e[0])
    phonemes = tuple(events)
    return exact_frames(phonemes, duration, fps), phonemes


def blend_frames(a: Sequence[Frame], b: Sequence[Frame]) -> list[Frame]:
    """The per-frame mean of two tracks of the same audio (on the same grid; one may have a
    closing frame more)."""
    return [
        Frame(x.start_ms, tuple((p + q) / 2 for p, q in zip(x.weights, y.weights, strict=True)))
        for x, y in zip(a, b, strict=False)
    ]


@dataclass(frozen=True, slots=True)
class Scores:
    frames: int
    accuracy: float
    grouped: float
    onsets: int
    matched: float
    onset_error_ms: float
    changes_per_s: float
    exact_changes_per_s: float


def _dominant(frames: Sequence[Frame]) -> npt.NDArray[np.intp]:
    if not frames:
        return np.zeros(0, dtype=np.intp)
    dominant: npt.NDArray[np.intp] = np.asarray([f.weights for f in frames]).argmax(axis=1)
    return dominant


def _onsets(dominant: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    return np.flatnonzero(dominant[1:] != dominant[:-1]) + 1


def score(exact: Sequence[Frame], predicted: Sequence[Frame]) -> Scores:
    """Scores of ``predicted`` against ``exact`` (tracks of the same audio, same fps)."""
    n = min(len(exact), len(predicted))
    times = np.asarray([f.start_ms for f in exact[:n]], dtype=np.float64)
    if [f.start_ms for f in predicted[:n]] != times.tolist():
        raise ValueError("the tracks are not on the same frame grid")
    ref = _dominant(exact[:n])
    hyp = _dominant(predicted[:n])
    ref_on = _onsets(ref)
    hyp_on = _onsets(hyp)
    errors: list[float] = []
    for k in ref_on:
        candidates = times[hyp_on[hyp[hyp_on] == ref[k]]]
        if candidates.size:
            dt = float(np.min(np.abs(candidates - times[k])))
            if dt <= ONSET_WINDOW_MS:
                errors.append(dt)
    seconds = max(times[-1] / 1000 if n else 0.0, 1e-9)
    return Scores(
        frames=n,
        accuracy=float(np.mean(ref == hyp)) if n else 0.0,
        grouped=float(np.mean(_GROUP_OF[ref] == _GROUP_OF[hyp])) if n else 0.0,
        onsets=int(ref_on.size),
        matched=len(errors) / ref_on.size if ref_on.size else 1.0,
        onset_error_ms=statistics.fmean(errors) if errors else 0.0,
        changes_per_s=float(hyp_on.size / seconds),
        exact_changes_per_s=float(ref_on.size / seconds),
    )


def pooled(scores: Sequence[Scores]) -> Scores:
    """Frame-weighted accuracies, onset-weighted onset figures, over several utterances."""
    frames = sum(s.frames for s in scores)
    onsets = sum(s.onsets for s in scores)
    matched = sum(s.matched * s.onsets for s in scores)
    return Scores(
        frames=frames,
        accuracy=sum(s.accuracy * s.frames for s in scores) / frames,
        grouped=sum(s.grouped * s.frames for s in scores) / frames,
        onsets=onsets,
        matched=matched / onsets if onsets else 1.0,
        onset_error_ms=(
            sum(s.onset_error_ms * s.matched * s.onsets for s in scores) / matched
            if matched
            else 0.0
        ),
        changes_per_s=sum(s.changes_per_s * s.frames for s in scores) / frames,
        exact_changes_per_s=sum(s.exact_changes_per_s * s.frames for s in scores) / frames,
    )


@dataclass(frozen=True, slots=True)
class Evaluation:
    acoustic: Scores
    text: Scores
    blend: Scores
    renders: int
    audio_s: float


def evaluate(
    sentences: Sequence[str] = EVAL_SENTENCES,
    voices: Sequence[tuple[str, float]] = EVAL_VOICES,
    fps: int = DEFAULT_FPS,
    *,
    acoustic: Callable[[bytes, int], list[Frame]] = acoustic_frames,
    with_text: bool = True,
) -> Evaluation:
    """Every sentence in every voice, scored by method and pooled."""
    by_method: dict[str, list[Scores]] = {"acoustic": [], "text": [], "blend": []}
    audio_s = 0.0
    for voice, speed in voices:
        for sentence in sentences:
            spoken = render(sentence, voice, speed)
            audio_s += spoken.duration_ms / 1000
            exact = exact_frames(spoken.phonemes, spoken.duration_ms, fps)
            heard = acoustic(spoken.pcm, fps)
            by_method["acoustic"].append(score(exact, heard))
            if with_text:
                read, _ = text_frames(sentence, voice, spoken.pcm, fps)
                by_method["text"].append(score(exact, read))
                by_method["blend"].append(score(exact, blend_frames(heard, read)))
    empty = Scores(0, 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0.0)
    return Evaluation(
        acoustic=pooled(by_method["acoustic"]),
        text=pooled(by_method["text"]) if with_text else empty,
        blend=pooled(by_method["blend"]) if with_text else empty,
        renders=len(voices) * len(sentences),
        audio_s=audio_s,
    )
