"""Settings: the one reader of command-line flags and ``NPCD_*`` environment variables."""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from npcd.errors import StartupError

DEFAULT_LISTEN = "127.0.0.1:50051"
#: Unix socket paths longer than this do not fit in sockaddr_un on Linux (108 with the NUL).
MAX_UNIX_PATH = 107
BACKENDS = ("local", "openai", "azure")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where the gRPC server listens: a TCP host and port, or a Unix socket path."""

    host: str = ""
    port: int = 0
    unix_path: Path | None = None

    @property
    def grpc_target(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.unix_path is not None or self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def with_port(self, port: int) -> ListenAddress:
        return ListenAddress(self.host, port, self.unix_path)

    def __str__(self) -> str:
        return f"unix://{self.unix_path}" if self.unix_path else self.grpc_target


def parse_listen(text: str) -> ListenAddress:
    """Parse ``127.0.0.1:50051``, ``[::1]:50051``, ``unix:///run/npcd.sock`` or a socket path."""
    text = text.strip()
    if text.startswith("unix:") or text.startswith("/") or text.endswith(".sock"):
        raw = text.removeprefix("unix://").removeprefix("unix:")
        if not raw:
            raise StartupError("--listen unix: needs a socket path, e.g. unix:///tmp/npcd.sock")
        path = Path(raw).expanduser().absolute()
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            raise StartupError(
                f"Unix socket path is {len(os.fsencode(path))} bytes; the OS limit is "
                f"{MAX_UNIX_PATH}: choose a shorter path"
            )
        return ListenAddress(unix_path=path)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise StartupError(f"--listen {text!r}: expected HOST:PORT (e.g. {DEFAULT_LISTEN})")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
    except ValueError:
        raise StartupError(f"--listen {text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise StartupError(f"--listen {text!r}: port must be between 0 and 65535")
    return ListenAddress(host, port)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the daemon is configured with."""

    listen: ListenAddress = field(default_factory=lambda: parse_listen(DEFAULT_LISTEN))
    characters: Path = Path("characters")
    backend: str = "local"
    log_level: str = "INFO"
    allow_remote: bool = False
    #: Seconds running conversations get to finish on SIGTERM before they are cut.
    shutdown_grace: float = 5.0
    #: Largest gRPC message accepted from a client (an audio chunk is at most 1 s: 384 KB).
    max_message_bytes: int = 1024 * 1024
    #: Backend model (OpenAI model id, or the Azure deployment name); None = the default.
    model: str | None = None
    #: "ga" (default) or "beta", for servers that still speak the beta shape.
    dialect: str = "ga"
    #: Azure resource endpoint, e.g. https://my-resource.openai.azure.com.
    azure_endpoint: str | None = None
    #: Seconds a local backend session lasts before it ends as OpenAI's do (tests shorten it).
    local_session_s: float = 3600.0
    #: How often persona files are checked for changes (hot reload); 0 turns it off.
    reload_interval_s: float = 2.0
    #: Backend sessions open at once (0: one per persona; see `PoolOptions.max_open`).
    max_sessions: int = 0
    #: Close an NPC's backend session after this many idle seconds (0: never).
    idle_close_s: float = 0.0
    #: Where NPC memory lives (``memory.sqlite3``); None: $NPCD_DATA_DIR, else
    #: $XDG_DATA_HOME/npcd, else ~/.local/share/npcd.
    data_dir: Path | None = None
    #: Remember named players across conversations and restarts (README, Memory).
    memory: bool = True
    #: Serve Prometheus metrics at http://HOST:PORT/metrics (None: off).
    metrics: ListenAddress | None = None
    #: A YAML price table overriding or extending the built-in one (README, Cost).
    prices: Path | None = None
    #: Most all NPCs together may cost per UTC day, in USD (None: no daemon-wide limit).
    daily_budget_usd: float | None = None
    #: Conversations that make a load of 1 (`npcd_load`): what this machine was measured to
    #: carry in real time (README, Benchmarks).
    capacity: int = 50
    #: Connect every NPC at start-up (see `PoolOptions.prewarm`).
    prewarm: bool = True
    #: Behind the proxy of `--workers`: a stream without exactly one ``x-npc-id`` is refused.
    routed: bool = False
    #: Sent to games as ``x-npcd-worker`` metadata: which process served them.
    worker_name: str = field(default_factory=lambda: f"npcd-{os.getpid()}")

    def check(self) -> None:
        """Refuse settings that are unsafe or cannot work, with a message saying why."""
        if not self.listen.is_loopback and not self.allow_remote:
            raise StartupError(
                f"refusing to listen on {self.listen}: not a loopback address. npcd has no "
                "authentication yet; pass --allow-remote if you really want other machines "
                "to reach it"
            )
        if self.metrics is not None:
            if self.metrics.unix_path is not None:
                raise StartupError("--metrics takes HOST:PORT (e.g. 127.0.0.1:9464), not a socket")
            if not self.metrics.is_loopback and not self.allow_remote:
                raise StartupError(
                    f"refusing to serve metrics on {self.metrics}: not a loopback address "
                    "(pass --allow-remote if a scraper on another machine must reach it)"
                )
        if self.daily_budget_usd is not None and not self.daily_budget_usd > 0:
            raise StartupError(f"--daily-budget must be above 0 (got {self.daily_budget_usd:g})")
        if self.dialect not in ("ga", "beta"):
            raise StartupError(f"unknown dialect {self.dialect!r}: choose ga or beta")
        if self.backend == "azure" and not self.azure_endpoint:
            raise StartupError(
                "the azure backend needs --azure-endpoint (or AZURE_OPENAI_ENDPOINT), e.g. "
                "https://my-resource.openai.azure.com"
            )
        if self.backend not in BACKENDS and not self.backend.startswith(("ws://", "wss://")):
            raise StartupError(
                f"unknown backend {self.backend!r}: choose {', '.join(BACKENDS)} "
                "or a ws:// / wss:// URL of a compatible Realtime server"
            )


def env_default(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    """The value of ``NPCD_<name>`` if set, else ``default``."""
    value = (environ if environ is not None else os.environ).get(f"NPCD_{name}", "")
    return value or default


class Secret:
    """An API key or client secret that never shows itself in logs, reprs or tracebacks.

    Only the transport calls `reveal()`, at the moment it builds a request header.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not value or value != value.strip():
            raise StartupError("an API key must be a non-empty string without spaces around it")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('[redacted]')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(Secret)

    def __reduce__(self) -> str:  # refuse pickling: it would write the value to disk or a pipe
        raise TypeError("Secret cannot be pickled")
