"""Prometheus metrics: what npcd is doing and what it costs, for operators.

Instruments live in one `Metrics` object per daemon, with its own registry (never the
process-global one), so tests and embedders can run several daemons in a process. Counters and
histograms are updated where things happen; the state of the pool (sessions by state,
conversations in progress, connects) is read when scraped, from a snapshot taken on the event
loop, so the exporter's thread never walks structures the loop is changing.

`--metrics 127.0.0.1:9464` serves ``/metrics`` from prometheus_client's own small threaded HTTP
server: off by default, loopback only unless ``--allow-remote``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from npcd import __version__
from npcd.cost.prices import split_usage

if TYPE_CHECKING:
    import threading
    from wsgiref.simple_server import WSGIServer

    from npcd.pool import SessionPool
    from npcd.realtime.values import Usage

_LOGGER = logging.getLogger(__name__)

#: End of the player's speech to the NPC's first audio: the delay the player feels.
FIRST_OUTPUT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
#: npcd's own share of it (conversion, relaying, queueing): sub-millisecond when healthy.
NPCD_SHARE_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
#: How long a scrape waits for the event loop to take its snapshot.
SNAPSHOT_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class NpcSnapshot:
    character: str
    state: str
    in_conversation: bool
    connects: int
    reconnects: int
    rotations: int


class Metrics:
    """Every instrument npcd reports (see README, Metrics, for what each means)."""

    def __init__(self, *, backend: str = "local") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.info = Gauge(
            "npcd_info", "npcd's version and backend (always 1)", ["version", "backend"], registry=r
        )
        self.info.labels(__version__, backend).set(1)
        self.conversations = Counter(
            "npcd_conversations",
            "Conversations started (Ready sent), by NPC",
            ["character"],
            registry=r,
        )
        self.responses = Counter(
            "npcd_responses",
            "NPC responses finished, by NPC and how they ended",
            ["character", "status"],
            registry=r,
        )
        self.first_output = Histogram(
            "npcd_turn_first_output_seconds",
            "End of player speech (or text, trigger) to the first NPC output sent to the game",
            ["character"],
            buckets=FIRST_OUTPUT_BUCKETS,
            registry=r,
        )
        self.npcd_share = Histogram(
            "npcd_turn_npcd_seconds",
            "The part of npcd_turn_first_output_seconds spent inside npcd (not the backend)",
            ["character"],
            buckets=NPCD_SHARE_BUCKETS,
            registry=r,
        )
        self.frames = Counter(
            "npcd_frames",
            "gRPC stream messages relayed, by direction (in: from the game) and kind",
            ["direction", "kind"],
            registry=r,
        )
        self.errors = Counter(
            "npcd_errors",
            "Errors told to games: in-stream Error messages (kind=stream, code=ErrorCode) and "
            "calls ended with a gRPC status (kind=call, code=status)",
            ["kind", "code"],
            registry=r,
        )
        self.tokens = Counter(
            "npcd_tokens",
            "Tokens the backend reported in response.done usage, by NPC, direction "
            "(input/output) and modality (text/audio); cached input is counted in input too",
            ["character", "direction", "modality"],
            registry=r,
        )
        self.cached_tokens = Counter(
            "npcd_cached_input_tokens",
            "The cached part of npcd_tokens{direction=input}, by NPC and modality",
            ["character", "modality"],
            registry=r,
        )
        self.cost = Counter(
            "npcd_cost_usd",
            "What the backend charged for responses, in US dollars, by NPC (from the price "
            "table; 0 for the offline backend)",
            ["character"],
            registry=r,
        )
        self.budget_exceeded = Counter(
            "npcd_budget_exceeded",
            "Times an NPC's budget was found spent, by NPC, scope and what npcd did",
            ["character", "scope", "action"],
            registry=r,
        )
        self._frames_in: dict[str, Counter] = {}
        self._frames_out: dict[str, Counter] = {}
        self._pool_collector: _PoolCollector | None = None

    # -- hot path -------------------------------------------------------------------------------

    def frame_in(self, kind: str) -> None:
        child = self._frames_in.get(kind)
        if child is None:
            child = self._frames_in[kind] = self.frames.labels("in", kind)
        child.inc()

    def frame_out(self, kind: str) -> None:
        child = self._frames_out.get(kind)
        if child is None:
            child = self._frames_out[kind] = self.frames.labels("out", kind)
        child.inc()

    # -- per response ---------------------------------------------------------------------------

    def response_done(
        self,
        character: str,
        status: str,
        usage: Usage | None,
        cost_usd: float,
    ) -> None:
        self.responses.labels(character, status).inc()
        if cost_usd > 0:
            self.cost.labels(character).inc(cost_usd)
        if usage is None:
            return
        t = split_usage(usage)
        for direction, modality, count in (
            ("input", "text", t.text_input),
            ("input", "audio", t.audio_input),
            ("output", "text", t.text_output),
            ("output", "audio", t.audio_output),
        ):
            if count:
                self.tokens.labels(character, direction, modality).inc(count)
        for modality, count in (("text", t.text_cached), ("audio", t.audio_cached)):
            if count:
                self.cached_tokens.labels(character, modality).inc(count)

    def latency(self, character: str, first_output_s: float, npcd_s: float) -> None:
        self.first_output.labels(character).observe(first_output_s)
        self.npcd_share.labels(character).observe(npcd_s)

    # -- pool state -----------------------------------------------------------------------------

    def watch_pool(
        self,
        pool: SessionPool,
        loop: asyncio.AbstractEventLoop,
        *,
        capacity: int = 50,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        """Report the pool's live state at every scrape; ``capacity`` is how many conversations
        make a load of 1 (what an orchestrator scales on)."""
        if self._pool_collector is not None:
            self.registry.unregister(self._pool_collector)
        self._pool_collector = _PoolCollector(
            lambda: _snapshot_on(loop, pool), capacity=capacity, draining=draining
        )
        self.registry.register(self._pool_collector)


def _pool_snapshot(pool: SessionPool) -> list[NpcSnapshot]:
    return [
        NpcSnapshot(
            character=persona_id,
            state=slot.state.value,
            in_conversation=pool.busy(persona_id),
            connects=slot.connects,
            reconnects=slot.reconnects,
            rotations=slot.rotations,
        )
        for persona_id, slot in pool.slots.items()
    ]


def _snapshot_on(loop: asyncio.AbstractEventLoop, pool: SessionPool) -> list[NpcSnapshot]:
    """The pool's state, read on its own loop (the scrape runs on the exporter's thread). A
    loop that does not answer fails the scrape: no numbers beat wrong ones."""
    try:
        if asyncio.get_running_loop() is loop:
            return _pool_snapshot(pool)  # collected on the loop itself (embedders, tests)
    except RuntimeError:
        pass  # no loop in this thread: the exporter's

    async def take() -> list[NpcSnapshot]:
        return _pool_snapshot(pool)

    future = asyncio.run_coroutine_threadsafe(take(), loop)
    try:
        return future.result(timeout=SNAPSHOT_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise RuntimeError(
            f"npcd's event loop did not answer within {SNAPSHOT_TIMEOUT_S:g} s"
        ) from None


class _PoolCollector(Collector):
    def __init__(
        self,
        snapshot: Callable[[], Iterable[NpcSnapshot]],
        *,
        capacity: int,
        draining: Callable[[], bool],
    ) -> None:
        self._snapshot = snapshot
        self._capacity = max(1, capacity)
        self._draining = draining

    def describe(self) -> Iterable[Metric]:
        return []  # do not take a snapshot at registration

    def collect(self) -> Iterator[Metric]:
        npcs = list(self._snapshot())
        states = GaugeMetricFamily(
            "npcd_backend_sessions", "NPC backend sessions by state", labels=["state"]
        )
        by_state: dict[str, int] = {}
        for npc in npcs:
            by_state[npc.state] = by_state.get(npc.state, 0) + 1
        for state in ("suspended", "connecting", "ready", "reconnecting", "failed", "closed"):
            states.add_metric([state], by_state.get(state, 0))
        yield states
        active = GaugeMetricFamily(
            "npcd_conversations_active", "Conversations in progress, by NPC", labels=["character"]
        )
        connects = CounterMetricFamily(
            "npcd_backend_connects", "Backend sessions opened, by NPC", labels=["character"]
        )
        reconnects = CounterMetricFamily(
            "npcd_backend_reconnects",
            "Backend sessions lost unexpectedly and reconnected, by NPC",
            labels=["character"],
        )
        rotations = CounterMetricFamily(
            "npcd_backend_rotations",
            "Backend sessions replaced before their time limit, by NPC",
            labels=["character"],
        )
        for npc in npcs:
            active.add_metric([npc.character], 1 if npc.in_conversation else 0)
            connects.add_metric([npc.character], npc.connects)
            reconnects.add_metric([npc.character], npc.reconnects)
            rotations.add_metric([npc.character], npc.rotations)
        yield from (active, connects, reconnects, rotations)
        busy = sum(1 for npc in npcs if npc.in_conversation)
        yield GaugeMetricFamily(
            "npcd_load",
            "Conversations in progress over the capacity this process is set for (--capacity): "
            "1 is full; scale out above it",
            value=busy / self._capacity,
        )
        yield GaugeMetricFamily(
            "npcd_draining",
            "1 while draining (SIGUSR1): no new conversations, those in progress go on",
            value=1 if self._draining() else 0,
        )


@dataclass(slots=True)
class MetricsEndpoint:
    """A running ``/metrics`` HTTP server."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(metrics: Metrics, host: str, port: int) -> MetricsEndpoint:
    """Serve ``metrics`` on http://host:port/metrics (port 0: a free one) in a thread."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsEndpoint(server, thread)
