"""`Playback`, what `npcd talk --mic`'s speaker plays, with real PCM: NPC audio cut into chunks
as npcd sends them (`start_ms` as npcd counts it), pulled in device blocks as PortAudio asks."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from npcd.playback import Playback, Progress

RATE = 24000
BLOCK = 480  # 20 ms, the block `npcd talk --mic` opens its streams with


def sine(ms: int, hz: float = 220.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype("<i2")


def chunks(pcm: np.ndarray, sizes: list[int], rate: int = RATE) -> list[tuple[int, bytes]]:
    """``pcm`` cut into ``sizes`` (in samples, repeated), each with npcd's `start_ms`."""
    out, at, n = [], 0, 0
    while at < len(pcm):
        size = sizes[n % len(sizes)]
        out.append((at * 1000 // rate, pcm[at : at + size].tobytes()))
        at, n = at + size, n + 1
    return out


def feed(playback: Playback, response_id: str, pcm: np.ndarray, sizes: list[int]) -> None:
    for start_ms, data in chunks(pcm, sizes, playback.sample_rate):
        playback.push(response_id, start_ms, data)


def pull(playback: Playback, blocks: int, frames: int = BLOCK) -> np.ndarray:
    return np.frombuffer(b"".join(playback.pull(frames) for _ in range(blocks)), dtype="<i2")


def test_chunks_play_back_to_back_in_start_ms_order() -> None:
    playback = Playback()
    pcm = sine(200)
    parts = chunks(pcm, [1000, 333, 2000])
    for start_ms, data in [parts[1], parts[0], *parts[3:], parts[2]]:  # two arrive late
        playback.push("resp_a", start_ms, data)
    assert np.array_equal(pull(playback, 10), pcm)


def test_nothing_to_play_is_silence_and_audio_starts_at_the_next_pull() -> None:
    playback = Playback()
    assert pull(playback, 3).tolist() == [0] * 3 * BLOCK
    pcm = sine(30)
    feed(playback, "resp_a", pcm, [len(pcm)])
    played = pull(playback, 2)
    assert np.array_equal(played[: len(pcm)], pcm)
    assert not played[len(pcm) :].any(), "the rest of the block is silence"


def test_audio_still_coming_is_waited_for_without_losing_any() -> None:
    """A response whose next chunk is late (not ended yet) plays silence, then goes on where
    it stopped."""
    playback = Playback()
    pcm = sine(60)
    feed(playback, "resp_a", pcm[:480], [480])
    assert np.array_equal(pull(playback, 1), pcm[:480])
    assert not pull(playback, 2).any()
    feed(playback, "resp_a", pcm[480:], [480])
    assert np.array_equal(pull(playback, 2), pcm[480:])


@pytest.mark.parametrize("rate", [24000, 48000, 16000])
def test_played_ms_is_what_was_pulled_exact_to_the_block(rate: int) -> None:
    playback = Playback(rate)
    feed(playback, "resp_a", sine(1000, rate=rate), [rate // 24])  # 41.67 ms chunks: unaligned
    assert playback.progress() == [], "nothing played yet"
    pulled = 0
    for blocks in (1, 2, 7):
        pull(playback, blocks, rate // 50)
        pulled += blocks
        assert playback.progress() == [Progress("resp_a", pulled * 20)]
    assert playback.progress() == [], "a cursor that did not move is not sent again"


def test_an_interrupt_drops_the_rest_of_that_response() -> None:
    playback = Playback()
    pcm = sine(1000)
    feed(playback, "resp_a", pcm, [960])
    assert np.array_equal(pull(playback, 10), pcm[: 10 * BLOCK])
    assert playback.progress() == [Progress("resp_a", 200)]
    playback.interrupt("resp_a")
    assert not pull(playback, 5).any(), "the mouth shuts at once"
    feed(playback, "resp_a", sine(100), [960])  # sent before npcd stopped, delivered after
    assert not pull(playback, 5).any()
    assert playback.progress() == [], "an interrupted response is neither played nor finished"
    assert playback.playing is None


def test_a_response_after_an_interrupt_plays_whole() -> None:
    playback = Playback()
    feed(playback, "resp_a", sine(500, 220), [960])
    pull(playback, 3)
    playback.interrupt("resp_a")
    answer = sine(300, 330)
    feed(playback, "resp_b", answer, [960])
    playback.end("resp_b")
    assert np.array_equal(pull(playback, 15), answer)
    assert playback.progress() == [Progress("resp_b", 300, finished=True)]


def test_a_response_queued_behind_the_interrupted_one_plays_next() -> None:
    playback = Playback()
    feed(playback, "resp_a", sine(500, 220), [960])
    playback.end("resp_a")
    follow_up = sine(100, 330)
    feed(playback, "resp_b", follow_up, [960])
    pull(playback, 2)
    playback.interrupt("resp_a")
    assert playback.playing == "resp_b"
    assert np.array_equal(pull(playback, 5), follow_up)


def test_finished_is_reported_once_when_the_last_sample_has_played() -> None:
    playback = Playback()
    feed(playback, "resp_a", sine(50), [600])
    playback.end("resp_a")
    pull(playback, 2)
    assert playback.progress() == [Progress("resp_a", 40)], "10 ms are still to play"
    pull(playback, 1)
    assert playback.progress() == [Progress("resp_a", 50, finished=True)]
    pull(playback, 3)
    assert playback.progress() == []
    assert playback.playing is None


def test_a_response_that_played_out_before_its_end_came_finishes_at_the_end() -> None:
    """ResponseDone can follow the last audio by more than the audio lasts (the transcript,
    usage): once it comes, nothing is left to play, and the response has finished."""
    playback = Playback()
    feed(playback, "resp_a", sine(40), [960])
    pull(playback, 4)
    assert playback.progress() == [Progress("resp_a", 40)]
    playback.end("resp_a")
    assert playback.progress() == [Progress("resp_a", 40, finished=True)]


def test_responses_play_back_to_back_across_a_block() -> None:
    """An action's follow-up answer is queued while the first still plays: it starts in the
    same device block the first one ends in, with no gap, and each is reported as its own."""
    playback = Playback()
    first, second = sine(30, 220), sine(50, 330)
    feed(playback, "resp_a", first, [700])
    playback.end("resp_a")
    feed(playback, "resp_b", second, [700])
    assert np.array_equal(pull(playback, 4), np.concatenate([first, second]))
    assert playback.progress() == [Progress("resp_a", 30, finished=True), Progress("resp_b", 50)]


def test_it_fills_the_buffers_sounddevice_hands_its_callbacks() -> None:
    """A raw stream's buffer is bytes-shaped; an `OutputStream`'s is an int16 array (frames,
    channels): both are filled in place."""
    playback = Playback()
    pcm = sine(40)
    feed(playback, "resp_a", pcm, [960])
    raw = bytearray(BLOCK * 2)
    playback.pull_into(memoryview(raw))
    array = np.full((BLOCK, 1), 7, dtype=np.int16)
    playback.pull_into(array.data)
    assert np.array_equal(np.frombuffer(raw, "<i2"), pcm[:BLOCK])
    assert np.array_equal(array[:, 0], pcm[BLOCK:])


def test_a_pull_and_pushes_on_two_threads_lose_and_repeat_nothing() -> None:
    """PortAudio's thread pulls while the event loop's pushes: every sample comes out once, in
    order, and the end is reported once, however the two interleave."""
    total = 3 * RATE
    samples = (np.arange(total) % 30000 + 1).astype("<i2")  # never 0: silence is told apart
    rng = np.random.default_rng(7)
    sizes = [int(n) for n in rng.integers(1, 2000, size=400)]
    playback = Playback()
    played: list[np.ndarray] = []
    reports: list[Progress] = []
    failures: list[BaseException] = []

    def producer() -> None:
        try:
            feed(playback, "resp_a", samples, sizes)
            playback.end("resp_a")
        except BaseException as exc:
            failures.append(exc)

    def consumer() -> None:
        try:
            deadline = time.monotonic() + 30
            while not any(report.finished for report in reports):
                assert time.monotonic() < deadline, "never finished"
                block = np.frombuffer(playback.pull(BLOCK), dtype="<i2")
                played.append(block[block != 0])
                reports.extend(playback.progress())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=consumer), threading.Thread(target=producer)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the interpreter switches threads as often as it can
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), f"{thread.name} hangs"
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures
    assert np.array_equal(np.concatenate(played), samples)
    assert [r for r in reports if r.finished] == [Progress("resp_a", 3000, finished=True)]
    cursor = [r.played_ms for r in reports]
    assert cursor == sorted(cursor), "the cursor never goes back"
