"""The relay benchmark runs end to end (tiny loads, workers behind nginx included), its load
generator sends the routing metadata a proxy needs, and its capacity rule judges correctly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from npcd.bench import load, relay
from npcd.bench.frames import stamp_echo
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc


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


class _Echo(pb_grpc.NpcServiceServicer):
    """Converse as far as the generator needs, noting each stream's metadata."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def Converse(  # noqa: N802 (gRPC's name)
        self,
        request_iterator: AsyncIterator[pb.ConverseRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ConverseResponse]:
        requests = aiter(request_iterator)
        start = (await anext(requests)).start
        metadata = dict(context.invocation_metadata() or ())
        self.seen.append((start.character_id, str(metadata.get("x-npc-id"))))
        await context.send_initial_metadata((("x-npcd-worker", "fake"),))
        yield pb.ConverseResponse(ready=pb.Ready())
        async for request in requests:
            if request.HasField("audio"):
                echoed = pb.NpcAudio(data=stamp_echo(request.audio.data))
                yield pb.ConverseResponse(audio=echoed)


async def test_the_generator_names_each_stream_s_npc_in_metadata() -> None:
    server = grpc.aio.server()
    echo = _Echo()  # type: ignore[abstract]  # Converse is all it serves
    pb_grpc.add_NpcServiceServicer_to_server(echo, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        result = await load.generate("grpc", f"127.0.0.1:{port}", 3, 0.06)
    finally:
        await server.stop(None)
    assert result["received"] == result["sent"] == 9
    # The Start's character_id, as metadata a proxy routes by.
    assert sorted(echo.seen) == [(f"npc_{n:03d}", f"npc_{n:03d}") for n in range(3)]
    assert result["served_by"] == {"fake": 3}


@pytest.mark.timeout(180)  # about 25 s here; the workers' start-up on a busy machine is slower
def test_every_path_carries_every_frame_and_is_timed_both_ways() -> None:
    assert relay.nginx_missing() is None, "the workers path needs nginx: `make system`"
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
            workers=2,
        ),
        lines.append,
    )
    assert set(result["levels"]) == {"1", "4"}
    for streams, row in result["levels"].items():
        assert set(row) == {"direct", "bare", "npcd", "workers"}
        for path, data in row.items():
            assert data["received"] == data["sent"] == int(streams) * 50, path
            for leg in ("up", "down", "rtt"):
                assert 0 < data[leg]["p50"] <= data[leg]["p99"] <= data[leg]["max"], (path, leg)
            # Both legs are stamped on the same clock, so neither can exceed the round trip.
            assert (
                data["up"]["max"] <= data["rtt"]["max"]
                and data["down"]["max"] <= (data["rtt"]["max"])
            )
        for path in ("bare", "npcd", "workers"):
            assert row[path]["relay_rss_mib"] > 10
            assert row[path]["delivered_per_s"] > 0.9 * int(streams) * 50, "kept up"
        workers = row["workers"]
        # The whole tree is measured: the supervisor, both workers and nginx, each apart.
        assert {"supervisor", "w0", "w1", "nginx"} <= set(workers["relay_cpu_split"])
        assert workers["relay_rss_mib"] > 3 * row["npcd"]["relay_rss_mib"] / 2
        assert set(workers["served_by"]) <= {"w0", "w1"}
        assert sum(workers["served_by"].values()) == int(streams)
    assert result["npcd_ready_s"] > 0 and result["workers_ready_s"] > 0
    assert result["workers_warm_up_s"] > 0
    probe = result["capacity"]["probes"]["4"]
    (verdict,) = probe["runs"]
    assert verdict["npcd"]["received"] == verdict["direct"]["received"] == 4 * 50
    assert verdict["workers"]["received"] == 4 * 50
    assert result["capacity"]["streams"] == (4 if probe["passed"] else 0)
    assert result["capacity"]["workers_streams"] == (4 if probe["workers_passed"] else 0)
    assert any("npcd adds" in line for line in lines), "a table per level"
    assert any("workers adds" in line and "nginx" in line for line in lines)
