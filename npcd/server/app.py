"""The daemon's lifecycle: load personas, build and bind the gRPC server, serve, shut down.

Shutdown order (SIGINT or SIGTERM): health flips to NOT_SERVING at once so load balancers and
engines stop starting conversations, then running calls get `Settings.shutdown_grace` seconds,
then the server stops and a Unix socket file is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from npcd import __version__
from npcd.config import ListenAddress, Secret, Settings
from npcd.cost.governor import CostGovernor
from npcd.cost.prices import DEFAULT_PRICES, PriceTable, load_prices
from npcd.errors import StartupError
from npcd.lipsync.acoustic import default_model
from npcd.localbackend.defaults import default_engines
from npcd.localbackend.server import BackendOptions, LocalBackend
from npcd.memory.keeper import MemoryKeeper
from npcd.memory.paths import DB_NAME, default_data_dir
from npcd.metrics import Metrics, MetricsEndpoint, serve_metrics
from npcd.personas import Catalog, load_directory
from npcd.pool import PoolOptions, SessionPool
from npcd.realtime.endpoints import DEFAULT_MODEL, OPENAI_BASE_URL, Backend, Provider
from npcd.realtime.values import Dialect
from npcd.server.conversation import emotion_classifier
from npcd.server.service import SERVICE_NAME, NpcService, add_to_server
from npcd.slot import SlotOptions

_LOGGER = logging.getLogger("npcd.server")


@dataclass(slots=True)
class RunningServer:
    """A started server and what tests and the CLI need to know about it."""

    server: grpc.aio.Server
    address: ListenAddress
    health: health.aio.HealthServicer
    catalog: Catalog
    pool: SessionPool | None = None
    local_backend: LocalBackend | None = None
    #: NPC memory (with a backend); off (``memory.on`` false) if its database failed to open.
    memory: MemoryKeeper | None = None
    watcher: asyncio.Task[None] | None = None
    #: Keeps the service's health in step with the backend after start-up.
    health_follower: asyncio.Task[None] | None = None
    #: Loads the lip-sync and emotion models in the background (model backends).
    warmer: asyncio.Task[None] | None = None
    #: Set each time the watcher has applied (or refused) a change on disk.
    reloaded: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: Metrics = field(default_factory=Metrics)
    #: Prices responses and keeps the budgets (with a backend).
    governor: CostGovernor | None = None
    #: The offline backend NPCs go on with when their budget is spent (paid backends only).
    fallback: OfflineFallback | None = None
    service: NpcService | None = None
    #: The ``/metrics`` HTTP server (`Settings.metrics`), if on.
    metrics_endpoint: MetricsEndpoint | None = None


async def warm_hints(catalog: Catalog) -> None:
    """With a model backend, visemes come from the audio analysis and emotions from MiniLM:
    load both now, off the event loop and without delaying start-up, rather than in the first
    conversation that asks (about 40 ms and a second)."""
    await asyncio.to_thread(default_model)
    for loaded in list(catalog.personas.values()):
        await asyncio.to_thread(emotion_classifier, loaded.persona)


async def start_local_backend(settings: Settings, catalog: Catalog) -> tuple[Backend, LocalBackend]:
    """Start the embedded offline backend for ``catalog`` (its engines warmed for them)."""
    dialect = Dialect.BETA if settings.dialect == "beta" else Dialect.GA
    engines = default_engines()
    if engines.warm is not None:
        personas = [loaded.persona for loaded in catalog.personas.values()]
        await asyncio.to_thread(engines.warm, personas)
        # Emotion hints share the intents' model: embed their examples now, not at the
        # first conversation that asks for them (about a second, once).
        for persona in personas:
            await asyncio.to_thread(emotion_classifier, persona)
    key = "sk-local-" + secrets.token_urlsafe(24)
    local = LocalBackend(
        engines,
        {pid: loaded.persona for pid, loaded in catalog.personas.items()},
        BackendOptions(api_keys=(key,), max_session_s=settings.local_session_s),
    )
    await local.start()
    backend = Backend(
        Provider.COMPATIBLE,
        local.base_url,
        api_key=Secret(key),
        dialect=dialect,
        phoneme_events=True,
    )
    return backend, local


class OfflineFallback:
    """Where an NPC whose budget is spent goes on (`on_exceeded: local`): the embedded offline
    backend, started the first time one needs it when the daemon's own backend is a paid one.
    The start runs as a task of its own, so a conversation that gives up waiting does not
    abandon it half-way; a failure is remembered, not retried at every conversation."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self._settings = settings
        self.catalog = catalog
        self.local: LocalBackend | None = None
        self._starting: asyncio.Task[Backend] | None = None
        self._closed = False

    async def backend_for(self, persona_id: str) -> Backend:
        if self._closed:
            raise RuntimeError("npcd is shutting down")
        if self._starting is None:
            _LOGGER.info("starting the offline backend for NPCs whose budget is spent")
            self._starting = asyncio.create_task(self._start(), name="npcd-offline-fallback")
        backend = await asyncio.shield(self._starting)
        return dataclasses.replace(backend, model=f"npcd-local:{persona_id}")

    async def _start(self) -> Backend:
        backend, self.local = await start_local_backend(self._settings, self.catalog)
        return backend

    async def close(self) -> None:
        self._closed = True
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await self._starting  # a start in progress finishes, then is closed
        if self.local is not None:
            await self.local.close()


def _budgeted(catalog: Catalog) -> list[str]:
    return sorted(
        pid
        for pid, loaded in catalog.personas.items()
        if any(
            limit is not None
            for limit in (
                loaded.persona.budget.session_usd,
                loaded.persona.budget.day_usd,
                loaded.persona.budget.player_day_usd,
            )
        )
    )


async def check_budgets(
    settings: Settings, catalog: Catalog, backend: Backend, governor: CostGovernor, paid: bool
) -> None:
    """Say at start-up, not at the first spent budget, what budgets cannot do here."""
    budgeted = _budgeted(catalog)
    model = backend.model if paid else "npcd-local"
    if (budgeted or settings.daily_budget_usd) and governor.prices.for_model(model) is None:
        _LOGGER.warning(
            "model %r has no price, so budgets (%s) cannot be enforced: add it with --prices",
            model,
            _some(budgeted) or "--daily-budget",
        )
    falling_back = [
        pid for pid in budgeted if catalog.personas[pid].persona.budget.on_exceeded == "local"
    ]
    if paid and falling_back:
        try:
            await asyncio.to_thread(default_engines)
        except StartupError as exc:
            _LOGGER.warning(
                "%s: on_exceeded local needs the offline backend (%s); when their budget is "
                "spent they will be refused instead",
                _some(falling_back),
                exc.message,
            )


async def build_backend(
    settings: Settings, catalog: Catalog
) -> tuple[Backend, LocalBackend | None]:
    """The Realtime backend the pool connects to (starting the local one if chosen)."""
    dialect = Dialect.BETA if settings.dialect == "beta" else Dialect.GA
    if settings.backend == "local":
        return await start_local_backend(settings, catalog)
    if settings.backend == "openai":
        return Backend(
            Provider.OPENAI,
            OPENAI_BASE_URL,
            model=settings.model or DEFAULT_MODEL,
            dialect=dialect,
            api_key=_api_key("OPENAI_API_KEY"),
        ), None
    if settings.backend == "azure":
        return Backend(
            Provider.AZURE,
            settings.azure_endpoint or "",
            model=settings.model or DEFAULT_MODEL,
            dialect=dialect,
            api_key=_api_key("AZURE_OPENAI_API_KEY"),
        ), None
    env_key = os.environ.get("NPCD_API_KEY")
    return Backend(
        Provider.COMPATIBLE,
        settings.backend,
        model=settings.model or DEFAULT_MODEL,
        dialect=dialect,
        api_key=Secret(env_key) if env_key else None,
    ), None


def _backend_kind(backend: str) -> str:
    """What `npcd_info` says the backend is: never a URL, which may carry credentials."""
    return backend if backend in ("local", "openai", "azure") else "compatible"


def _api_key(variable: str) -> Secret:
    value = os.environ.get("NPCD_API_KEY") or os.environ.get(variable)
    if not value:
        raise StartupError(f"set {variable} (or NPCD_API_KEY) to the backend's API key")
    return Secret(value)


def load_catalog(settings: Settings) -> Catalog:
    """Load the persona directory, refusing to start on any invalid persona."""
    catalog = load_directory(settings.characters)
    if catalog.issues:
        lines = "\n  ".join(str(issue) for issue in catalog.issues)
        raise StartupError(
            f"invalid persona files in {settings.characters} "
            f"(run `npcd validate {settings.characters}`):\n  {lines}"
        )
    if not catalog.personas:
        raise StartupError(f"no persona files (*.yaml) in {settings.characters}")
    return catalog


async def start_server(
    settings: Settings, catalog: Catalog, *, with_backend: bool = False
) -> RunningServer:
    """Build, bind and start the gRPC server (does not wait for it to stop).

    ``with_backend`` also starts the Realtime backend and the session pool behind `Converse`;
    without it only the character and health services answer. A start that fails half-way
    closes what it had opened (files, threads, the local backend, ports).
    """
    settings.check()
    async with contextlib.AsyncExitStack() as undo:
        running = await _start(settings, catalog, with_backend, undo)
        undo.pop_all()
    return running


async def _start(
    settings: Settings, catalog: Catalog, with_backend: bool, undo: contextlib.AsyncExitStack
) -> RunningServer:
    pool: SessionPool | None = None
    local: LocalBackend | None = None
    memory: MemoryKeeper | None = None
    governor: CostGovernor | None = None
    fallback: OfflineFallback | None = None
    if with_backend:
        prices = load_prices(settings.prices) if settings.prices else PriceTable(DEFAULT_PRICES)
        governor = await CostGovernor.open(
            prices,
            daemon_day_usd=settings.daily_budget_usd,
            # --no-memory writes nothing to disk: the day totals then last as long as npcd.
            data_dir=(settings.data_dir or default_data_dir()) if settings.memory else None,
        )
        undo.push_async_callback(governor.close)
    if with_backend and settings.memory:
        data_dir = settings.data_dir or default_data_dir()
        memory = await MemoryKeeper.open(data_dir / DB_NAME)
        undo.push_async_callback(memory.close)
    if with_backend:
        backend, local = await build_backend(settings, catalog)
        if local is not None:
            undo.push_async_callback(local.close)
        if memory is not None and settings.backend in ("openai", "azure"):
            memory.summaries = backend  # its model writes the summaries of older turns
        if local is None:
            fallback = OfflineFallback(settings, catalog)
            undo.push_async_callback(fallback.close)
        if governor is not None:
            await check_budgets(settings, catalog, backend, governor, paid=local is None)
        pool = SessionPool(
            catalog,
            PoolOptions(
                SlotOptions(backend, persona_model=local is not None),
                max_open=settings.max_sessions,
                idle_close_s=settings.idle_close_s,
                prewarm=settings.prewarm,
            ),
        )
    options = [
        # Refuse to share a port with another process (gRPC allows it by default).
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", 4 * settings.max_message_bytes),
        # Ping idle engines so a crashed game's half-open streams are noticed within a minute.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    server = grpc.aio.server(options=options)
    holder: list[RunningServer] = []  # the servicer reads the catalogue a reload may replace
    metrics = Metrics(backend=_backend_kind(settings.backend))
    service = NpcService(
        lambda: holder[0].catalog.personas if holder else catalog.personas,
        pool,
        memory=memory,
        metrics=metrics,
        governor=governor,
        fallback=fallback.backend_for if fallback is not None else None,
        worker=settings.worker_name,
        routed=settings.routed,
    )
    add_to_server(service, server)
    if pool is not None:
        metrics.watch_pool(
            pool,
            asyncio.get_running_loop(),
            capacity=settings.capacity,
            draining=lambda: service.draining,
        )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = settings.listen
    if address.unix_path is not None:
        await _prepare_unix_socket(address.unix_path)
    try:
        port = server.add_insecure_port(address.grpc_target)
    except RuntimeError:
        raise StartupError(
            f"cannot listen on {address}: the address is in use or not available "
            "(is another npcd running? choose another with --listen)"
        ) from None
    if address.unix_path is not None:
        os.chmod(address.unix_path, 0o600)  # second layer; the 0700 folder is the first
    else:
        address = address.with_port(port)
    endpoint: MetricsEndpoint | None = None
    if settings.metrics is not None:
        where = settings.metrics
        try:
            endpoint = await asyncio.to_thread(serve_metrics, metrics, where.host, where.port)
        except OSError as exc:
            await server.stop(0)
            raise StartupError(
                f"cannot serve metrics on {where}: {exc.strerror or exc} (choose another "
                "--metrics address)"
            ) from None
        _LOGGER.info("metrics at http://%s:%d/metrics", where.host, endpoint.port)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(
        server,
        address,
        health_servicer,
        catalog,
        pool,
        local,
        memory,
        metrics=metrics,
        metrics_endpoint=endpoint,
        governor=governor,
        fallback=fallback,
        service=service,
    )
    holder.append(running)
    if settings.reload_interval_s > 0:
        running.watcher = asyncio.create_task(
            watch_personas(running, settings), name="npcd-persona-watcher"
        )
    if pool is not None and local is None:
        running.warmer = asyncio.create_task(warm_hints(catalog), name="npcd-warm-hints")
    if pool is None:
        await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    else:
        # NPC sessions connect in the background; the service reports SERVING once all have.
        await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        await pool.start()
        running.health_follower = asyncio.create_task(
            follow_health(health_servicer, pool), name="npcd-health-follower"
        )
    return running


async def follow_health(health_servicer: health.aio.HealthServicer, pool: SessionPool) -> None:
    """After start-up, NOT_SERVING while the backend is down and SERVING once it is back, so a
    load balancer or an engine's health probe sees an outage and its end."""
    await pool.wait_ready()
    while True:
        await pool.reachability.changed()
        up = not pool.reachability.down and (
            not pool.options.prewarm or any(slot.ready for slot in pool.slots.values())
        )
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if up
            else (health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        await health_servicer.set(SERVICE_NAME, status)


def _some(names: list[str], shown: int = 8) -> str:
    """A list for a log line that stays one line with 500 personas."""
    if len(names) <= shown:
        return ", ".join(names)
    return ", ".join(names[:shown]) + f", ... and {len(names) - shown} more"


async def wait_for_npcs(running: RunningServer) -> int:
    """Wait until every NPC session is up (or failed); mark the service SERVING. Returns how
    many are ready."""
    if running.pool is None:
        return len(running.catalog.personas)
    if not running.pool.options.prewarm:
        await running.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        return 0  # each NPC connects when first talked to
    ready = await running.pool.wait_ready()
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if ready
        else (health_pb2.HealthCheckResponse.NOT_SERVING)
    )
    await running.health.set(SERVICE_NAME, status)
    return ready


async def drain(running: RunningServer) -> None:
    """Take no new conversations (health NOT_SERVING, `Converse` UNAVAILABLE) and return
    once those in progress have ended, however long they take: what an orchestrator does
    before it retires a game server (SIGUSR1; README, Scale-out)."""
    if running.service is not None:
        running.service.draining = True
    # The service only: "" (the process's liveness, for a Kubernetes probe) stays SERVING, so
    # a long drain is not taken for a dead process and restarted.
    await running.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    pool = running.pool
    if pool is not None:
        _LOGGER.info("draining: %d conversations in progress, no new ones", pool.active)
        await pool.wait_idle()
    _LOGGER.info("drained: no conversation in progress")


async def stop_server(running: RunningServer, grace: float) -> None:
    """Graceful stop: NOT_SERVING first, then let calls finish, then remove the socket."""
    await running.health.enter_graceful_shutdown()
    for task in (running.watcher, running.health_follower, running.warmer):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await running.server.stop(grace)
    if running.metrics_endpoint is not None:
        await asyncio.to_thread(running.metrics_endpoint.close)
    if running.pool is not None:
        await running.pool.close()
    if running.local_backend is not None:
        await running.local_backend.close()
    if running.fallback is not None:
        await running.fallback.close()
    if running.governor is not None:
        await running.governor.close()
    if running.memory is not None:
        await running.memory.close()
    if running.address.unix_path is not None:
        with contextlib.suppress(FileNotFoundError):
            running.address.unix_path.unlink()


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, catalog: Catalog | None = None, *, with_backend: bool = False
) -> AsyncIterator[RunningServer]:
    """Run a server for the duration of a ``async with`` block (tests, embedding)."""
    running = await start_server(
        settings, catalog or load_catalog(settings), with_backend=with_backend
    )
    try:
        yield running
    finally:
        await stop_server(running, grace=0)


async def serve_forever(settings: Settings) -> None:
    """The `npcd serve` command: run until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    draining = asyncio.Event()
    loop = asyncio.get_running_loop()
    # At once: a drain asked for while npcd starts must not kill it (SIGUSR1's default).
    loop.add_signal_handler(signal.SIGUSR1, draining.set)
    started = time.perf_counter()
    try:
        catalog = load_catalog(settings)
        running = await start_server(settings, catalog, with_backend=True)
    except BaseException:
        loop.remove_signal_handler(signal.SIGUSR1)
        raise
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _LOGGER.info(
        "npcd %s listening on %s: %d characters (%s), backend %s, %s loop",
        __version__,
        running.address,
        len(catalog.personas),
        _some(list(catalog.personas)),
        settings.backend,
        type(loop).__module__.partition(".")[0],  # "uvloop" or "asyncio"
    )
    try:
        waiter = asyncio.create_task(wait_for_npcs(running))
        done, _ = await asyncio.wait(
            [waiter, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if waiter in done and not settings.prewarm:
            _LOGGER.info("NPC sessions connect when first talked to (no pre-warming): ready")
        elif waiter in done:
            ready = waiter.result()
            total = len(catalog.personas)
            _LOGGER.info(
                "%d of %d NPC sessions ready in %.2f s",
                ready,
                total,
                time.perf_counter() - started,
            )
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait(
            [stopped, asyncio.create_task(draining.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if not stop.is_set():
            drained = asyncio.create_task(drain(running))
            await asyncio.wait([stopped, drained], return_when=asyncio.FIRST_COMPLETED)
            drained.cancel()
        waiter.cancel()
        _LOGGER.info("shutting down (grace %.0f s)", settings.shutdown_grace)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
        await stop_server(running, settings.shutdown_grace)
    _LOGGER.info("stopped")


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every persona and base file: what a change looks like."""
    found: dict[str, tuple[int, int]] = {}
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            if path.suffix in (".yaml", ".yml"):
                with contextlib.suppress(OSError):
                    stat_result = path.stat()
                    found[path.name] = (stat_result.st_mtime_ns, stat_result.st_size)
    return found


async def watch_personas(running: RunningServer, settings: Settings) -> None:
    """Poll the persona folder and apply changes (portable, no inotify dependency)."""
    folder = settings.characters
    seen = await asyncio.to_thread(_snapshot, folder)
    while True:
        await asyncio.sleep(settings.reload_interval_s)
        now = await asyncio.to_thread(_snapshot, folder)
        if now != seen:
            seen = now
            await reload_personas(running, settings)
            running.reloaded.set()


async def reload_personas(running: RunningServer, settings: Settings) -> None:
    """Load the folder again; a file that is now invalid keeps its last good persona."""
    fresh = await asyncio.to_thread(load_directory, settings.characters)
    personas = dict(fresh.personas)
    for issue in fresh.issues:
        persona_id = issue.file.stem
        previous = running.catalog.personas.get(persona_id)
        if previous is not None and persona_id not in personas:
            personas[persona_id] = previous
        _LOGGER.error("persona reload: %s (keeping the last good version)", issue)
    changed = sorted(
        pid
        for pid in set(personas) | set(running.catalog.personas)
        if personas.get(pid) is None
        or running.catalog.personas.get(pid) is None
        or personas[pid].persona != running.catalog.personas[pid].persona
    )
    if not changed:
        return
    catalog = Catalog(dict(sorted(personas.items())), fresh.issues)
    running.catalog = catalog
    fallback_local = running.fallback.local if running.fallback is not None else None
    for local in (running.local_backend, fallback_local):
        if local is not None:
            local.update_personas({pid: loaded.persona for pid, loaded in catalog.personas.items()})
    if running.fallback is not None:
        running.fallback.catalog = catalog
    if running.pool is not None:
        await running.pool.reload(catalog)
    _LOGGER.info("personas reloaded: %s", ", ".join(changed))


async def _prepare_unix_socket(path: Path) -> None:
    """Make the socket's folder private, and clear a stale socket left by a crash.

    A live npcd on the same path is refused rather than stolen from.
    """
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
    try:
        mode = path.lstat().st_mode  # noqa: ASYNC240 - start-up metadata call
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"cannot listen on unix://{path}: a file that is not a socket is there")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout=1.0)
    except (ConnectionRefusedError, FileNotFoundError, TimeoutError):
        path.unlink(missing_ok=True)  # noqa: ASYNC240
        return
    writer.close()
    raise StartupError(f"cannot listen on unix://{path}: another process is serving there")


__all__ = [
    "RunningServer",
    "build_backend",
    "load_catalog",
    "serve_forever",
    "serving",
    "start_server",
    "wait_for_npcs",
]
