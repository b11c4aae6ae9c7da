"""Text to speech with eSpeak NG, through ctypes on the libespeak-ng that espeakng-loader ships.

Licence: libespeak-ng and its data are GPL-3.0-or-later. npcd does not link it: the library is
opened with ctypes only when an `EspeakSynthesizer` is constructed, so the rest of the daemon
neither imports nor loads it, and a differently licensed `Synthesizer` can replace it.

Why eSpeak: it is always available from PyPI (0.7 MB library), renders about 1000 times faster
than real time on one core, and reports word and phoneme events with millisecond positions,
which drive lip-sync visemes directly. It sounds robotic; a neural engine can slot in behind
the `Synthesizer` protocol later (see docs/offline-speech.md, section 3).

Thread safety: libespeak-ng is a process-wide singleton (one voice, one callback, global
parameters), so every call into it is serialised by a lock inside `_Espeak`. The lock is held
only while one sentence renders (milliseconds), never across a ``yield``, so several sessions
can stream at once and a slow consumer never blocks the others.

Streaming: the text is rendered sentence by sentence (long sentences clause by clause), and
each piece is resampled from eSpeak's 22.05 kHz to 24 kHz (soxr, streaming, through
`npcd.audio.InputConverter`) and yielded before the next is rendered.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from npcd.audio import REALTIME_FORMAT, AudioFormat, Encoding, InputConverter
from npcd.localbackend.engines import PhonemeEvent, SpeechChunk, WordEvent

__all__ = ["VOICE_MAP", "EspeakSynthesizer", "EspeakVoice"]


@dataclass(frozen=True, slots=True)
class EspeakVoice:
    """How one Realtime voice name is rendered by eSpeak."""

    #: eSpeak voice and variant (``language+variant``; variants live in ``voices/!v``).
    name: str
    #: Base pitch, 0-100 (eSpeak's default 50), scaling the variant's own pitch.
    pitch: int
    #: Pitch range, 0-100: 0 is a monotone, 50 the default, higher more animated.
    range: int
    #: Words per minute at ``speed=1.0`` (eSpeak's default 175).
    rate: int


#: The Realtime voices, each a distinct accent, variant (formants and pitch band), pitch and
#: pace, chosen to echo the character of the OpenAI voice of the same name among the variants
#: Whisper tiny.en understands best (a grid over 6 accents x 13 variants). Median F0 / Whisper
#: WER on ten NPC lines: alloy 123 Hz / 0.15, ash 89 / 0.18, ballad 105 / 0.18, coral 219 /
#: 0.26, echo 115 / 0.21, sage 181 / 0.27, shimmer 249 / 0.30, verse 106 / 0.22, marin 223 /
#: 0.24, cedar 83 / 0.21 (human speech: 0.09). eSpeak varies its output slightly per call.
VOICE_MAP: Final[Mapping[str, EspeakVoice]] = MappingProxyType(
    {
        "alloy": EspeakVoice("en-us+m1", pitch=75, range=60, rate=170),
        "ash": EspeakVoice("en-us+m3", pitch=35, range=40, rate=160),
        "ballad": EspeakVoice("en-gb-x-rp+m6", pitch=50, range=70, rate=160),
        "coral": EspeakVoice("en+f5", pitch=55, range=60, rate=170),
        "echo": EspeakVoice("en-us", pitch=60, range=60, rate=175),
        "sage": EspeakVoice("en+f2", pitch=45, range=40, rate=155),
        "shimmer": EspeakVoice("en-us+f5", pitch=65, range=70, rate=175),
        "verse": EspeakVoice("en+m2", pitch=50, range=80, rate=175),
        "marin": EspeakVoice("en-us+f2", pitch=60, range=65, rate=165),
        "cedar": EspeakVoice("en-us+m7", pitch=25, range=35, rate=150),
    }
)

_ESPEAK_RATE: Final = 22050
_ESPEAK_FORMAT: Final = AudioFormat(Encoding.PCM16, _ESPEAK_RATE, 1)
_MIN_RATE: Final = 80
_MAX_RATE: Final = 450
#: Pieces longer than this are split at clause punctuation as well, so the first audio of a
#: long sentence is not held up by the whole sentence.
_LONG_PIECE: Final = 120
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")

# espeak_ng/speak_lib.h (stable since eSpeak 1.4x)
_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_INIT_PHONEME_EVENTS: Final = 0x0001
_INIT_PHONEME_IPA: Final = 0x0002
_INIT_DONT_EXIT: Final = 0x8000
_POS_CHARACTER: Final = 1
_CHARS_UTF8: Final = 1
_ENDPAUSE: Final = 0x1000
_PARAM_RATE: Final = 1
_PARAM_PITCH: Final = 3
_PARAM_RANGE: Final = 4
_EVENT_LIST_TERMINATED: Final = 0
_EVENT_WORD: Final = 1
_EVENT_PHONEME: Final = 7
#: espeak truncates its data path to a fixed buffer (N_PATH_HOME, 160 bytes on Linux).
_MAX_DATA_PATH: Final = 150


class _EventId(ctypes.Union):
    _fields_ = (("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8))


class _Event(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    )


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(slots=True)
class _Render:
    """What one ``espeak_Synth`` call produced (filled by the callback)."""

    cancel: threading.Event | None
    pcm: list[bytes]
    #: (audio ms from the piece's start, 0-based char offset, length) of each word.
    words: list[tuple[int, int, int]]
    phonemes: list[tuple[int, str]]
    cancelled: bool = False
    error: BaseException | None = None


class _Espeak:
    """The process-wide libespeak-ng, serialised by ``lock``; built once by `_espeak()`."""

    def __init__(self) -> None:
        import espeakng_loader  # type: ignore[import-untyped]

        data_path: str = espeakng_loader.get_data_path()
        if len(data_path.encode()) > _MAX_DATA_PATH:
            raise RuntimeError(
                f"eSpeak NG cannot use its data at {data_path}: libespeak-ng truncates paths "
                f"longer than about {_MAX_DATA_PATH} bytes; install npcd in a shorter path"
            )
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = (_SynthCallback,)
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = (
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        )
        lib.espeak_Synth.restype = ctypes.c_int
        flags = _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT
        # buflength 60 ms: how much audio each callback carries, so how often cancel is checked.
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 60, data_path.encode(), flags)
        if rate != _ESPEAK_RATE:
            raise RuntimeError(f"eSpeak NG failed to initialise (returned {rate})")
        self.lock = threading.Lock()
        self._lib = lib
        self._render: _Render | None = None
        self._voice: EspeakVoice | None = None
        self._rate = -1
        # Kept referenced for the life of the process: the library calls it from espeak_Synth.
        self._callback = _SynthCallback(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)

    def render(
        self, text: str, voice: EspeakVoice, rate: int, cancel: threading.Event | None
    ) -> _Render:
        """Synthesise one piece; returns once eSpeak is done or the callback aborted it."""
        job = _Render(cancel=cancel, pcm=[], words=[], phonemes=[])
        data = text.encode("utf-8") + b"\0"
        with self.lock:
            if voice != self._voice:
                if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                    raise RuntimeError(f"eSpeak NG has no voice {voice.name!r}")
                self._lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
                self._lib.espeak_SetParameter(_PARAM_RANGE, voice.range, 0)
                self._voice = voice
                self._rate = -1
            if rate != self._rate:
                self._lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
                self._rate = rate
            self._render = job
            try:
                status = self._lib.espeak_Synth(
                    data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
                )
            finally:
                self._render = None
        if job.error is not None:
            raise job.error
        if status != 0 and not job.cancelled:
            raise RuntimeError(f"eSpeak NG failed to synthesise (error {status})")
        return job

    def _on_synth(
        self, wav: ctypes._Pointer[ctypes.c_short], count: int, events: ctypes._Pointer[_Event]
    ) -> int:
        job = self._render
        if job is None:
            return 1
        try:
            if job.cancel is not None and job.cancel.is_set():
                job.cancelled = True
                return 1
            if count > 0:
                job.pcm.append(ctypes.string_at(wav, count * 2))
            i = 0
            while (event := events[i]).type != _EVENT_LIST_TERMINATED:
                if event.type == _EVENT_WORD:
                    job.words.append((event.audio_position, event.text_position - 1, event.length))
                elif event.type == _EVENT_PHONEME:
                    # At most 8 bytes, not always NUL-terminated: a cut UTF-8 tail is dropped.
                    name = event.id.string.decode("utf-8", "ignore")
                    job.phonemes.append((event.audio_position, name))
                i += 1
        except BaseException as exc:  # noqa: BLE001 - must not unwind through C; re-raised later
            job.error = exc
            return 1
        return 0


_espeak_lock = threading.Lock()
_espeak_instance: _Espeak | None = None


def _espeak() -> _Espeak:
    global _espeak_instance
    with _espeak_lock:
        if _espeak_instance is None:
            _espeak_instance = _Espeak()
        return _espeak_instance


def _pieces(text: str) -> Iterator[tuple[int, str]]:
    """(offset, piece) for each sentence, long ones split again at clauses; blanks skipped."""
    start = 0
    for match in [*_SENTENCE_END.finditer(text), None]:
        end = len(text) if match is None else match.start()
        sentence = text[start:end]
        base = start
        start = len(text) if match is None else match.end()
        if len(sentence) > _LONG_PIECE:
            parts: list[tuple[int, str]] = []
            clause_start = 0
            for clause in [*_CLAUSE_END.finditer(sentence), None]:
                clause_end = len(sentence) if clause is None else clause.start()
                parts.append((base + clause_start, sentence[clause_start:clause_end]))
                clause_start = len(sentence) if clause is None else clause.end()
        else:
            parts = [(base, sentence)]
        for offset, part in parts:
            stripped = part.lstrip()
            offset += len(part) - len(stripped)
            stripped = stripped.rstrip()
            if stripped:
                yield offset, stripped


class EspeakSynthesizer:
    """`Synthesizer` over eSpeak NG; one instance can serve every session (see module notes)."""

    def __init__(self, voice_map: Mapping[str, EspeakVoice] = VOICE_MAP) -> None:
        self._voice_map = dict(voice_map)
        self._espeak = _espeak()

    @property
    def voices(self) -> tuple[str, ...]:
        return tuple(self._voice_map)

    def synthesize(
        self,
        text: str,
        voice: str,
        speed: float = 1.0,
        cancel: threading.Event | None = None,
    ) -> Iterator[SpeechChunk]:
        """Stream ``text`` as PCM16 24 kHz chunks, one per sentence or clause, then the tail.

        ``speed`` scales the voice's rate (the Realtime range is 0.25-1.5); eSpeak's own limits
        of 80-450 words per minute apply. Setting ``cancel`` aborts the piece being rendered
        within one 60 ms block and ends the stream without its remaining audio.
        """
        if voice not in self._voice_map:
            raise ValueError(f"unknown voice {voice!r}; use one of {', '.join(self._voice_map)}")
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        spec = self._voice_map[voice]
        rate = min(_MAX_RATE, max(_MIN_RATE, round(spec.rate * speed)))
        converter = InputConverter(_ESPEAK_FORMAT)
        out_ms = 0.0  # audio already yielded, on the 24 kHz timeline
        in_ms = 0.0  # audio rendered so far, at 22.05 kHz (same timeline, soxr is aligned)
        words: list[WordEvent] = []
        phonemes: list[PhonemeEvent] = []
        for offset, piece in _pieces(text):
            if cancel is not None and cancel.is_set():
                return
            job = self._espeak.render(piece, spec, rate, cancel)
            if job.cancelled:
                return
            base = round(in_ms)
            words.extend(
                WordEvent(base + ms, offset + pos, offset + pos + length)
                for ms, pos, length in job.words
            )
            phonemes.extend(PhonemeEvent(base + ms, name) for ms, name in job.phonemes)
            pcm = b"".join(job.pcm)
            in_ms += len(pcm) / 2 * 1000 / _ESPEAK_RATE
            chunk = self._chunk(converter.convert(pcm), out_ms, words, phonemes, final=False)
            if chunk is not None:
                out_ms += _duration_ms(chunk.pcm)
                yield chunk
        tail = self._chunk(converter.flush(), out_ms, words, phonemes, final=True)
        if tail is not None:
            yield tail

    @staticmethod
    def _chunk(
        pcm: bytes,
        start_ms: float,
        words: list[WordEvent],
        phonemes: list[PhonemeEvent],
        *,
        final: bool,
    ) -> SpeechChunk | None:
        """A chunk with the pending events that start before its end (all of them if final)."""
        end_ms = start_ms + _duration_ms(pcm)
        if final:
            limit = int(end_ms)
            chunk_words = tuple(_clamp_word(w, limit) for w in words)
            chunk_phonemes = tuple(
                PhonemeEvent(min(p.audio_ms, limit), p.phoneme) for p in phonemes
            )
            words.clear()
            phonemes.clear()
        else:
            n_words = sum(1 for w in words if w.audio_ms < end_ms)
            n_phonemes = sum(1 for p in phonemes if p.audio_ms < end_ms)
            chunk_words = tuple(words[:n_words])
            chunk_phonemes = tuple(phonemes[:n_phonemes])
            del words[:n_words], phonemes[:n_phonemes]
        if not pcm and not chunk_words and not chunk_phonemes:
            return None
        return SpeechChunk(pcm=pcm, start_ms=start_ms, words=chunk_words, phonemes=chunk_phonemes)


def _duration_ms(pcm: bytes) -> float:
    return len(pcm) / 2 * 1000 / REALTIME_FORMAT.sample_rate


def _clamp_word(word: WordEvent, limit: int) -> WordEvent:
    return word if word.audio_ms <= limit else WordEvent(limit, word.start, word.end)
