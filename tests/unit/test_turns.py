"""semantic_vad's end-of-turn rules on transcripts, and its silences per eagerness."""

from __future__ import annotations

import pytest

from npcd.localbackend.turns import looks_complete, semantic_timing


@pytest.mark.parametrize(
    "text",
    [
        "He was not an ill disposed young man.",
        "Do you have any healing potions for sale?",
        "Give me the sword!",
        "I'll take it.",
    ],
)
def test_finished_sentences_end_the_turn_soon(text: str) -> None:
    assert looks_complete(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "He was not.",  # Whisper closes every segment with a full stop, finished or not
        "I want to buy the.",
        "Unless to be rather cold hearted and.",
        "Well, I was thinking...",
        "Could you tell me,",
        "And mister John Dashwood had then leisure to consider how much there might be",
        "What about um.",
    ],
)
def test_unfinished_words_wait_longer(text: str) -> None:
    assert not looks_complete(text)


def test_eagerness_orders_the_waits_and_auto_is_medium() -> None:
    low, medium, high = (semantic_timing(e) for e in ("low", "medium", "high"))
    assert semantic_timing("auto") == semantic_timing(None) == medium
    assert high.complete_ms < medium.complete_ms < low.complete_ms
    assert high.incomplete_ms < medium.incomplete_ms < low.incomplete_ms
    assert medium.complete_ms <= 200 < 800 <= medium.incomplete_ms
