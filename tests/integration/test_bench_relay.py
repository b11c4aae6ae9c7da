"""The relay benchmark runs end to end (tiny loads) and its capacity rule judges correctly."""

from __future__ import annotations

from typing import Any

from npcd.bench import relay


def run_summary(
    sent: int = 250,
    received: int = 250,
    p99: float = 3.0,
    first: float = 1.0,
    last: float = 1.0,
    slip: float = 0.5,
) -> dict[str, Any]:
    return {
        "send_slip_p99": slip,
        "sent": sent,
        "received": received,
        "rtt": {"p50": 1.0, "p99": p99, "max": p99 + 1},
        "first_second_p50": first,
        "last_second_p50": last,
    }


def test_capacity_rule() -> None:
    direct = run_summary(p99=2.0)
    assert relay.passes_capacity(run_summary(p99=12.0), direct)[0]
    ok, why = relay.passes_capacity(run_summary(p99=25.0), direct)
    assert not ok and "p99 added 23.0 ms" in why
    ok, why = relay.passes_capacity(run_summary(received=249), direct)
    assert not ok and "1 frames not delivered" in why
    ok, why = relay.passes_capacity(run_summary(first=2.0, last=300.0), direct)
    assert not ok and "falling behind" in why
    ok, why = relay.passes_capacity(run_summary(slip=40.0), direct)
    assert not ok and "load generator fell behind" in why


def test_every_path_carries_every_frame_and_is_timed_both_ways() -> None:
    lines: list[str] = []
    result = relay.run(
        relay.Plan(
            levels=(1, 4),
            capacity=(4,),
            capacity_reps=1,
            seconds=1.0,
            reps=1,
            pipecat=False,
            quiet_s=0.0,  # a busy CI machine must not stall the check (it waited 60 s a run)
        ),
        lines.append,
    )
    assert set(result["levels"]) == {"1", "4"}
    for streams, row in result["levels"].items():
        assert set(row) == {"direct", "bare", "npcd"}
        for path, data in row.items():
            assert data["received"] == data["sent"] == int(streams) * 50, path
            for leg in ("up", "down", "rtt"):
                assert 0 < data[leg]["p50"] <= data[leg]["p99"] <= data[leg]["max"], (path, leg)
            # Both legs are stamped on the same clock, so neither can exceed the round trip.
            assert (
                data["up"]["max"] <= data["rtt"]["max"]
                and data["down"]["max"] <= (data["rtt"]["max"])
            )
        for path in ("bare", "npcd"):
            assert row[path]["relay_rss_mib"] > 10
            assert row[path]["delivered_per_s"] > 0.9 * int(streams) * 50, "kept up"
    assert result["npcd_ready_s"] > 0
    probe = result["capacity"]["probes"]["4"]
    (verdict,) = probe["runs"]
    assert verdict["npcd"]["received"] == verdict["direct"]["received"] == 4 * 50
    assert result["capacity"]["streams"] == (4 if probe["passed"] else 0)
    assert any("npcd adds" in line for line in lines), "a table per level"
