"""Word error rate: what the speech tests and `npcd bench voice` measure transcripts by."""

from __future__ import annotations

import re

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = "" if n % 100 == 0 else " " + _number(n % 100)
        return _ONES[n // 100] + " hundred" + rest
    return str(n)


def normalise(text: str) -> list[str]:
    """Lower case, no punctuation, hyphens split, numbers spelt out, Mr./Mrs. expanded."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"\bmr\b\.?", "mister", text)
    text = re.sub(r"\bmrs\b\.?", "missus", text)
    text = re.sub(r"\d+", lambda m: f" {_number(int(m.group()))} ", text)
    text = re.sub(r"[^a-z0-9' ]", " ", text).replace("'", "")
    return text.split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words)."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        prev, row[0] = row[:], i
        for j, other in enumerate(hyp, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (word != other))
    return row[len(hyp)], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    errors, words = word_errors(reference, hypothesis)
    return errors / words
