"""The `npcd` command line: argv -> Settings -> action, and exit codes. No logic of its own.

Exit codes: 0 success; 1 `validate` found problems; 2 npcd could not start or was misused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from npcd import __version__, eventloop
from npcd.bench.suite import add_arguments as add_bench_arguments
from npcd.config import DEFAULT_LISTEN, ListenAddress, Settings, env_default, parse_listen
from npcd.errors import StartupError
from npcd.log import setup_logging
from npcd.memory import cli as memory_cli
from npcd.personas import PersonaIssue, load_directory, load_files
from npcd.personas.loader import PERSONA_SUFFIXES
from npcd.personas.model import base_persona_json_schema, persona_json_schema
from npcd.personas.yamlsource import YamlSourceError, read_yaml


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npcd", description="Real-time voice conversations for game NPCs."
    )
    parser.add_argument("--version", action="version", version=f"npcd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument(
        "--listen",
        default=env_default("LISTEN", DEFAULT_LISTEN),
        help="gRPC address: HOST:PORT or unix:///path/to/npcd.sock "
        f"(env NPCD_LISTEN; default {DEFAULT_LISTEN})",
    )
    serve.add_argument(
        "--characters",
        type=Path,
        default=Path(env_default("CHARACTERS", "characters")),
        help="folder of persona files (env NPCD_CHARACTERS; default ./characters)",
    )
    serve.add_argument(
        "--backend",
        default=env_default("BACKEND", "local"),
        help="local (embedded, offline), openai, azure, or a ws:// URL of a compatible "
        "server (env NPCD_BACKEND; default local)",
    )
    serve.add_argument(
        "--model",
        default=env_default("MODEL", "") or None,
        help="backend model, or the Azure deployment name (env NPCD_MODEL; default gpt-realtime)",
    )
    serve.add_argument(
        "--dialect",
        default=env_default("DIALECT", "ga"),
        choices=["ga", "beta"],
        help="Realtime protocol dialect (env NPCD_DIALECT; default ga; OpenAI speaks only ga)",
    )
    serve.add_argument(
        "--azure-endpoint",
        default=os.environ.get("AZURE_OPENAI_ENDPOINT") or None,
        help="Azure resource URL for --backend azure (env AZURE_OPENAI_ENDPOINT)",
    )
    serve.add_argument(
        "--max-sessions",
        type=int,
        default=int(env_default("MAX_SESSIONS", "0")),
        help="backend sessions open at once; NPCs beyond it connect when talked to "
        "(env NPCD_MAX_SESSIONS; default 0 = one per persona)",
    )
    serve.add_argument(
        "--idle-close",
        type=float,
        default=float(env_default("IDLE_CLOSE", "0")),
        metavar="SECONDS",
        help="close an NPC's backend session after this long without a conversation; it "
        "reconnects, memory intact, when talked to (env NPCD_IDLE_CLOSE; default 0 = never)",
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where NPC memory is kept (memory.sqlite3); env NPCD_DATA_DIR; default "
        "$XDG_DATA_HOME/npcd or ~/.local/share/npcd",
    )
    serve.add_argument(
        "--no-memory",
        action="store_true",
        help="remember nobody across conversations and restarts, and keep budgets' day totals "
        "in memory only (nothing is written to disk)",
    )
    serve.add_argument(
        "--metrics",
        default=env_default("METRICS", "") or None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 127.0.0.1:9464 "
        "(env NPCD_METRICS; default off; loopback only unless --allow-remote)",
    )
    serve.add_argument(
        "--prices",
        type=Path,
        default=env_default("PRICES", "") or None,  # argparse applies `type` to it
        metavar="FILE",
        help="YAML price table (USD per 1M tokens by model) over the built-in one "
        "(env NPCD_PRICES)",
    )
    serve.add_argument(
        "--daily-budget",
        type=_usd,
        default=env_default("DAILY_BUDGET", "") or None,
        metavar="USD",
        help="most all NPCs together may cost per UTC day; persona `budget:` blocks set "
        "per-NPC limits (env NPCD_DAILY_BUDGET; default no limit)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=int(env_default("WORKERS", "1")),
        metavar="N",
        help="run N npcd processes behind nginx, each NPC always on the same one (games send "
        "x-npc-id metadata; README, Scale-out; env NPCD_WORKERS; default 1)",
    )
    serve.add_argument(
        "--no-prewarm",
        action="store_true",
        help="connect each NPC's backend session when it is first talked to, not at start-up",
    )
    serve.add_argument("--worker-name", default=None, help=argparse.SUPPRESS)
    serve.add_argument(
        "--capacity",
        type=int,
        default=int(env_default("CAPACITY", "50")),
        metavar="N",
        help="conversations one process is sized for: npcd_load is in-progress over N "
        "(env NPCD_CAPACITY; default 50)",
    )
    serve.add_argument(
        "--log-level",
        default=env_default("LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="env NPCD_LOG_LEVEL; default INFO",
    )
    serve.add_argument(
        "--loop",
        default=env_default("LOOP", "auto"),
        choices=eventloop.LOOPS,
        help="event loop: uvloop (less CPU per message; not on Windows) or asyncio "
        "(env NPCD_LOOP; default auto = uvloop where installed)",
    )
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        default=env_default("ALLOW_REMOTE", "") == "1",
        help="allow listening on a non-loopback address (env NPCD_ALLOW_REMOTE=1)",
    )

    backend = commands.add_parser(
        "backend", help="run the embedded offline Realtime server on its own"
    )
    backend.add_argument("--listen", default="127.0.0.1:8765", help="HOST:PORT (loopback only)")
    backend.add_argument(
        "--characters",
        type=Path,
        default=Path(env_default("CHARACTERS", "characters")),
        help="persona files the backend speaks for",
    )
    backend.add_argument(
        "--api-key-env",
        default="NPCD_BACKEND_API_KEY",
        help="environment variable holding the API key clients must present (never a flag: "
        "arguments show in `ps`); unset accepts any key",
    )
    backend.add_argument(
        "--max-session-minutes", type=float, default=60.0, help="session length (default 60)"
    )
    backend.add_argument(
        "--refuse-beta",
        action="store_true",
        help="answer the beta header as OpenAI does since 2026-05 (beta_api_shape_disabled)",
    )
    backend.add_argument("--log-level", default="INFO", type=str.upper)
    backend.add_argument(
        "--loop", default=env_default("LOOP", "auto"), choices=eventloop.LOOPS, help="as for serve"
    )

    validate = commands.add_parser("validate", help="check persona files; exit 1 on problems")
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")

    characters = commands.add_parser("characters", help="list the characters in a folder")
    characters.add_argument(
        "--characters", type=Path, default=Path(env_default("CHARACTERS", "characters"))
    )

    schema = commands.add_parser("schema", help="print the persona JSON Schema")
    schema.add_argument(
        "--base", action="store_true", help="the schema for base files (nothing required)"
    )
    bench = commands.add_parser(
        "bench", help="measure what npcd costs on this machine (a few minutes; see README)"
    )
    add_bench_arguments(bench)
    memory_cli.add_commands(commands)
    talk = commands.add_parser("talk", help="talk to an NPC from the terminal")
    talk.add_argument("character", help="the persona id, e.g. blacksmith")
    talk.add_argument(
        "--target",
        default=None,
        metavar="HOST:PORT",
        help="a running npcd (default: start one here, on the local backend)",
    )
    talk.add_argument("--characters", type=Path, default=Path("characters"))
    speech = talk.add_mutually_exclusive_group()
    speech.add_argument(
        "--wav",
        type=Path,
        default=None,
        help="stream this recording (16-bit PCM WAV) in real time, then stop",
    )
    talk.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="write each NPC answer as a WAV file here",
    )
    talk.add_argument(
        "--auto-actions",
        choices=["ok", "fail"],
        default=None,
        help="answer the NPC's actions so (default: ask on a terminal, else ok)",
    )
    talk.add_argument("--player", default="Traveller", help="the player's name")
    speech.add_argument(
        "--mic",
        action="store_true",
        help="talk through the default microphone and speakers (pip install 'npcd[mic]')",
    )
    persona_tests = commands.add_parser(
        "test", help="run persona tests (characters/tests/*.yaml) through a real npcd"
    )
    persona_tests.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[Path("characters")],
        metavar="PATH",
        help="character folders (their tests/ folder is run) or test files; default characters",
    )
    persona_tests.add_argument(
        "--characters",
        type=Path,
        default=None,
        help="the persona folder the daemon loads (default: the first folder given, or the "
        "folder above the test files')",
    )
    persona_tests.add_argument(
        "--junit",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write JUnit XML here (for CI)",
    )
    persona_tests.add_argument(
        "--backend",
        default="local",
        help="local (default: offline, deterministic), openai, azure or a ws:// URL",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "memory":
            return memory_cli.run(args)
        if args.command == "test":
            return _persona_tests(args)
        if args.command == "talk":
            return _talk(args)
        if args.command == "backend":
            return _backend(args)
        if args.command == "validate":
            return _validate(args.paths)
        if args.command == "characters":
            return _characters(args.characters)
        if args.command == "bench":
            from npcd.bench.suite import main as bench_main

            return bench_main(args)
        if args.command == "schema":
            schema = base_persona_json_schema() if args.base else persona_json_schema()
            print(json.dumps(schema, indent=2))
            return 0
    except StartupError as exc:
        print(f"npcd: {exc.message}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command}")  # argparse guarantees one


def _serve(args: argparse.Namespace) -> int:
    from npcd.server.app import serve_forever

    setup_logging(args.log_level)
    if args.workers > 1 and args.worker_name:
        raise StartupError("a worker (--worker-name) never runs workers of its own")
    if args.workers > 1:
        return _serve_workers(args)
    settings = Settings(
        listen=parse_listen(args.listen),
        characters=args.characters,
        backend=args.backend,
        log_level=args.log_level,
        allow_remote=args.allow_remote,
        model=args.model,
        dialect=args.dialect,
        azure_endpoint=args.azure_endpoint,
        max_sessions=args.max_sessions,
        idle_close_s=args.idle_close,
        data_dir=args.data_dir,
        memory=not args.no_memory,
        metrics=_metrics_address(args.metrics),
        prices=args.prices,
        daily_budget_usd=args.daily_budget,
        prewarm=not args.no_prewarm,
        capacity=args.capacity,
        # A worker behind the proxy: every stream must say which NPC it is for.
        **({"worker_name": args.worker_name, "routed": True} if args.worker_name else {}),
    )
    try:
        eventloop.run(serve_forever(settings), args.loop)
    except StartupError as exc:
        logging.getLogger("npcd").error("%s", exc.message)
        return 2
    return 0


def _serve_workers(args: argparse.Namespace) -> int:
    """The supervisor: workers get this command's settings as flags (the daily budget whole:
    each reads what the others spent from the shared spend file)."""
    from npcd.server.workers import serve_workers

    listen = parse_listen(args.listen)
    metrics = _metrics_address(args.metrics)
    Settings(listen=listen, metrics=metrics, allow_remote=args.allow_remote).check()
    argv = [sys.executable, "-m", "npcd", "serve", "--characters", str(args.characters)]
    for flag, value in (
        ("--backend", args.backend),
        ("--model", args.model),
        ("--dialect", args.dialect),
        ("--azure-endpoint", args.azure_endpoint),
        ("--max-sessions", args.max_sessions or None),
        ("--idle-close", args.idle_close or None),
        ("--data-dir", args.data_dir),
        ("--prices", args.prices),
        ("--daily-budget", args.daily_budget),  # one total: each reads the others' spend
        ("--log-level", args.log_level),
        ("--loop", args.loop),
        ("--capacity", args.capacity),
    ):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--no-memory"] if args.no_memory else []
    argv += ["--allow-remote"] if args.allow_remote else []
    return eventloop.run(
        serve_workers(listen, argv, args.workers, Settings().shutdown_grace, metrics), args.loop
    )


def _usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in USD") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be above 0")
    return value


def _metrics_address(text: str | None) -> ListenAddress | None:
    if not text:
        return None
    try:
        return parse_listen(text)
    except StartupError as exc:
        raise StartupError(exc.message.replace("--listen", "--metrics")) from None


def _backend(args: argparse.Namespace) -> int:
    from npcd.localbackend.run import run_backend

    setup_logging(args.log_level)
    address = parse_listen(args.listen)
    if address.unix_path is not None or not address.is_loopback:
        print("npcd: the local backend listens on a loopback HOST:PORT only", file=sys.stderr)
        return 2
    key = os.environ.get(args.api_key_env, "")
    try:
        eventloop.run(
            run_backend(
                address.host,
                address.port,
                args.characters,
                api_key=key or None,
                max_session_s=args.max_session_minutes * 60,
                refuse_beta=args.refuse_beta,
            ),
            args.loop,
        )
    except StartupError as exc:
        logging.getLogger("npcd").error("%s", exc.message)
        return 2
    return 0


def _validate(paths: Sequence[Path]) -> int:
    issues: list[PersonaIssue] = []
    names: list[str] = []
    for path in paths:
        if path.is_dir():
            catalog = load_directory(path)
        elif path.name.startswith("_"):
            issues.extend(_check_base(path))
            continue
        elif path.is_file():
            catalog = load_files([path], root=path.parent)
        else:
            issues.append(PersonaIssue(path, None, 1, "", "no such file or folder"))
            continue
        issues.extend(catalog.issues)
        names.extend(catalog.personas)
    for issue in issues:
        print(issue)
    if issues:
        files = len({issue.file for issue in issues})
        plural = "s" if len(issues) != 1 else ""
        print(f"{len(issues)} problem{plural} in {files} file{'s' if files != 1 else ''}")
        return 1
    print(f"ok: {len(names)} character{'s' if len(names) != 1 else ''} ({', '.join(names)})")
    return 0


def _check_base(path: Path) -> list[PersonaIssue]:
    """Base files are checked for syntax here, and fully through the characters that extend them."""
    if path.suffix not in PERSONA_SUFFIXES:
        return [PersonaIssue(path, None, 1, "", "not a .yaml file")]
    try:
        read_yaml(path)
    except YamlSourceError as exc:
        return [PersonaIssue(exc.file, exc.line, exc.column, "", exc.message)]
    return []


def _characters(folder: Path) -> int:
    catalog = load_directory(folder)
    for issue in catalog.issues:
        print(issue, file=sys.stderr)
    rows = [("ID", "NAME", "VOICE", "ACTIONS")]
    for loaded in catalog.personas.values():
        p = loaded.persona
        rows.append((p.id, p.name, p.voice, ", ".join(p.action_names) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join([*(row[i].ljust(widths[i]) for i in range(3)), row[3]]))
    return 1 if catalog.issues else 0


def _persona_tests(args: argparse.Namespace) -> int:
    from npcd.personatests.runner import report, run_suites, write_junit
    from npcd.personatests.spec import SpecError, load_suite, test_files

    setup_logging("WARNING")
    files = test_files(list(args.paths))
    if not files:
        print(f"no test files under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    try:
        suites = [load_suite(file) for file in files]
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    characters = args.characters or next(
        (p for p in args.paths if p.is_dir()), files[0].parent.parent
    )
    try:
        results = eventloop.run(run_suites(suites, characters, args.backend), "auto")
    except StartupError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(report(results))
    if args.junit is not None:
        write_junit(results, args.junit)
    return 0 if all(r.passed for r in results) else 1


def _talk(args: argparse.Namespace) -> int:
    from npcd.talk import TalkOptions, talk

    setup_logging("WARNING")
    options = TalkOptions(
        character=args.character,
        target=args.target,
        characters=args.characters,
        wav=args.wav,
        out=args.out,
        auto_actions=args.auto_actions,
        player=args.player,
        mic=args.mic,
    )
    try:
        return eventloop.run(talk(options), "auto")
    except StartupError as exc:
        print(f"npcd talk: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
