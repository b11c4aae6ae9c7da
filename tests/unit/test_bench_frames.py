"""The benchmark's clock-stamped frames and its percentiles: what every table rests on."""

from __future__ import annotations

from npcd.bench.frames import BYTES_PER_MS, make_frame, read_timing, stamp_echo
from npcd.bench.stats import describe, percentile


def test_a_stamped_frame_splits_its_round_trip_into_the_two_legs() -> None:
    sent = make_frame(7, 60 * BYTES_PER_MS)
    echoed = stamp_echo(sent)
    assert len(echoed) == len(sent) == 2880, "relays and the backend see real-sized audio"
    assert echoed[20:] == sent[20:], "only the header changes"
    timing = read_timing(echoed)
    assert timing.sequence == 7
    assert abs(timing.up_ms + timing.down_ms - timing.rtt_ms) < 1e-6


def test_percentiles_are_nearest_rank_and_empty_runs_read_zero() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    assert describe(values) == {"p50": 50.5, "p99": 99.0, "max": 100.0}
    assert percentile([3.0], 0.99) == 3.0
    assert describe([]) == {"p50": 0.0, "p99": 0.0, "max": 0.0}
