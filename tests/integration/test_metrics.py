"""`--metrics`: a real daemon serves Prometheus text that moves with a real conversation and
parses with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from npcd.config import ListenAddress, Settings, parse_listen
from npcd.errors import StartupError
from npcd.server.app import RunningServer, serving, wait_for_npcs
from npcd.v1 import npcd_pb2 as pb
from tests.conftest import SAMPLES
from tests.integration.test_converse import TIMEOUT, Game, start, warm_engines

__all__ = ["warm_engines"]  # the module fixture that loads the speech models once

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def daemon() -> AsyncIterator[RunningServer]:
    settings = Settings(
        listen=parse_listen("127.0.0.1:0"),
        characters=SAMPLES,
        metrics=ListenAddress("127.0.0.1", 0),
    )
    async with serving(settings, with_backend=True) as running:
        await asyncio.wait_for(wait_for_npcs(running), TIMEOUT)
        yield running


async def scrape(running: RunningServer) -> Samples:
    """GET /metrics (off the event loop, which must stay free to answer the scrape)."""
    assert running.metrics_endpoint is not None
    url = f"http://127.0.0.1:{running.metrics_endpoint.port}/metrics"

    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - loopback http
            assert reply.status == 200
            return str(reply.read().decode())

    text = await asyncio.to_thread(get)
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def test_a_scrape_during_a_conversation_shows_it_and_the_counters_move(
    daemon: RunningServer,
) -> None:
    npcs = len(daemon.catalog.personas)
    before = await scrape(daemon)
    assert value(before, "npcd_backend_sessions", state="ready") == npcs
    assert value(before, "npcd_info", version=__import__("npcd").__version__, backend="local") == 1
    assert total(before, "npcd_conversations_total") == 0

    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("blacksmith"))
        await game.until("ready")
        game.send(text=pb.TextMessage(text="what do you sell?"))
        await game.until("response_done")
        game.send(commit=pb.Commit())  # nothing spoken: an in-stream EMPTY_COMMIT error
        await game.until("error")
        during = await scrape(daemon)

        assert value(during, "npcd_conversations_total", character="blacksmith") == 1
        assert value(during, "npcd_conversations_active", character="blacksmith") == 1
        assert value(during, "npcd_conversations_active", character="herbalist") == 0
        assert value(during, "npcd_frames_total", direction="in", kind="text") == 1
        assert value(during, "npcd_frames_total", direction="out", kind="ready") == 1
        assert value(during, "npcd_frames_total", direction="out", kind="audio") > 0
        assert value(during, "npcd_errors_total", kind="stream", code="EMPTY_COMMIT") == 1
        assert (
            value(during, "npcd_responses_total", character="blacksmith", status="completed") == 1
        )
        assert value(during, "npcd_turn_first_output_seconds_count", character="blacksmith") == 1
        first = value(during, "npcd_turn_first_output_seconds_sum", character="blacksmith")
        share = value(during, "npcd_turn_npcd_seconds_sum", character="blacksmith")
        assert 0 < share < first < TIMEOUT
        assert total(during, "npcd_tokens_total", character="blacksmith", direction="input") > 0
        assert total(during, "npcd_tokens_total", character="blacksmith", direction="output") > 0

        # The session is replaced between turns (as at its time limit): a rotation, not a drop.
        assert daemon.pool is not None
        daemon.pool.slots["blacksmith"].rotate_soon()
        status = await game.until("session_status")
        assert status.state == pb.SESSION_STATE_ROTATED
        game.send(text=pb.TextMessage(text="who are you?"))
        await game.until("response_done")
        game.end()
        async with asyncio.timeout(TIMEOUT):
            while await game.call.read() is not grpc.aio.EOF:
                pass  # what is left of the stream, to its end

    after = await scrape(daemon)
    assert value(after, "npcd_conversations_active", character="blacksmith") == 0
    assert value(after, "npcd_backend_rotations_total", character="blacksmith") == 1
    assert value(after, "npcd_backend_reconnects_total", character="blacksmith") == 0
    assert value(after, "npcd_turn_first_output_seconds_count", character="blacksmith") == 2
    out_audio = value(after, "npcd_frames_total", direction="out", kind="audio")
    assert out_audio > value(during, "npcd_frames_total", direction="out", kind="audio")
    assert value(after, "npcd_frames_total", direction="in", kind="text") == 2


async def test_refused_calls_are_counted_by_status(daemon: RunningServer) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("nobody"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await game.until("ready")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    samples = await scrape(daemon)
    assert value(samples, "npcd_errors_total", kind="call", code="NOT_FOUND") == 1
    assert total(samples, "npcd_conversations_total") == 0


async def test_metrics_refuse_a_remote_address_unless_allowed() -> None:
    settings = Settings(
        listen=parse_listen("127.0.0.1:0"), metrics=ListenAddress("192.0.2.1", 9464)
    )
    with pytest.raises(StartupError, match="refusing to serve metrics on 192.0.2.1:9464"):
        settings.check()
