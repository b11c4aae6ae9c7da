"""Smoke tests of the voice and start-up benchmarks: real daemons as subprocesses, tiny runs.

They check that each benchmark still measures what it claims (every level and turn present,
figures positive and within generous bounds, npcd's in-band split consistent with itself and
with the wall clock), not how fast npcd is: that is the benchmarks' own job.
"""

from __future__ import annotations

import json

from npcd.bench import startup, voice


def test_startup_reports_every_level_with_sane_times_and_memory() -> None:
    result = startup.run(levels=(1, 3), runs=1)
    json.dumps(result)
    rows = {row["personas"]: row for row in result["levels"]}
    assert sorted(rows) == [1, 3]
    for personas, row in rows.items():
        assert row["sessions_ready"] == personas
        listening, ready = row["listening_s"]["median"], row["ready_s"]["median"]
        assert 0 < listening <= ready < 60, "the port accepts before (or as) the NPCs are ready"
        assert row["ready_s"]["runs"] == [ready]
        # The in-process backend's speech models alone take far more than 50 MiB.
        assert row["rss_idle_kib"]["median"] > 50 * 1024
        assert row["rss_ready_kib"]["median"] > 50 * 1024
    # Two idle sessions apart, allocator noise (onnxruntime's arenas, since start-up also
    # embeds the emotion examples) can outweigh them, so only the scale is checked.
    per_session = result["rss_per_idle_session_kib"]
    assert isinstance(per_session, float) and abs(per_session) < 16 * 1024
    table = startup.format_table(result)
    assert "all NPCs ready" in table and "memory per idle pooled session" in table


def test_voice_turns_all_get_audio_and_the_split_adds_up() -> None:
    result = voice.run(turns=2, warmup=0)
    json.dumps(result)
    log = result["turn_log"]
    assert sorted(turn["path"] for turn in log) == ["direct", "direct", "npcd", "npcd"]
    for turn in log:
        assert turn["status"] == "completed" and not turn["early_response"]
        assert 0 < turn["first_audio_ms"] < 10_000
    for turn in (t for t in log if t["path"] == "npcd"):
        first_output = turn["first_output_us"]
        assert abs(turn["npcd_us"] + turn["backend_us"] - first_output) <= 2, "µs rounding only"
        # In-band time runs from npcd seeing the VAD stop (after the end of speech) to npcd
        # sending the first audio (before the game gets it): inside the wall-clock figure.
        assert 0 < first_output < turn["first_audio_ms"] * 1000
    assert result["all_completed"] and result["early_responses"] == 0
    assert result["backend_share_ms"]["p50"] == result["direct_ms"]["p50"] > 0
    inband = result["inband_us"]
    assert inband["first_output"]["p50"] > 0 and inband["backend"]["p50"] > 0
    assert inband["npcd"]["p50"] > 0, "the first audio's time inside npcd is measured"
    table = voice.format_table(result)
    assert "through npcd" in table and "direct to the backend" in table
