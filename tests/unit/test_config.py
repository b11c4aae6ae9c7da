"""Listen addresses, safe defaults and secret redaction."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from npcd.config import Settings, parse_listen
from npcd.errors import StartupError
from npcd.log import RedactingFilter, redact


@pytest.mark.parametrize(
    ("text", "target", "loopback"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051", True),
        ("localhost:7000", "localhost:7000", True),
        ("[::1]:50051", "[::1]:50051", True),
        ("0.0.0.0:50051", "0.0.0.0:50051", False),
        ("unix:///run/npcd/npcd.sock", "unix:/run/npcd/npcd.sock", True),
        ("unix:/tmp/n.sock", "unix:/tmp/n.sock", True),
        ("/tmp/x/npcd.sock", "unix:/tmp/x/npcd.sock", True),
    ],
)
def test_listen_addresses(text: str, target: str, loopback: bool) -> None:
    address = parse_listen(text)
    assert address.grpc_target == target
    assert address.is_loopback is loopback


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("50051", "expected HOST:PORT"),
        ("127.0.0.1:http", "not a number"),
        ("127.0.0.1:70000", "between 0 and 65535"),
        ("unix:", "needs a socket path"),
        ("unix:///" + "d" * 120 + "/npcd.sock", "OS limit is 107"),
    ],
)
def test_bad_listen_addresses_say_why(text: str, says: str) -> None:
    with pytest.raises(StartupError, match=says):
        parse_listen(text)


def test_non_loopback_needs_explicit_permission() -> None:
    with pytest.raises(StartupError, match="--allow-remote"):
        Settings(listen=parse_listen("0.0.0.0:50051")).check()
    Settings(listen=parse_listen("0.0.0.0:50051"), allow_remote=True).check()


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(StartupError, match="unknown backend 'opena1'"):
        Settings(backend="opena1", characters=Path("characters")).check()
    Settings(backend="ws://127.0.0.1:9000/v1/realtime").check()


SECRETS = [
    "sk-npcd-SENTINEL-0123456789abcdef",
    "ek_68af0123456789abcdef",
]


@pytest.mark.parametrize("secret", SECRETS)
def test_redact_hides_keys(secret: str) -> None:
    assert secret not in redact(f"connect failed with key {secret} (401)")


def test_redact_hides_bearer_and_api_key_headers() -> None:
    text = "> Authorization: Bearer abc.def-ghi\n> api-key: azure0123\n"
    clean = redact(text)
    assert "abc.def-ghi" not in clean and "azure0123" not in clean
    assert "Authorization: Bearer [redacted]" in clean


def test_filter_scrubs_messages_args_and_tracebacks() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key=%s", (SECRETS[0],), None)
    try:
        raise ValueError(f"bad key {SECRETS[0]}")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert SECRETS[0] not in formatted
    assert "[redacted]" in formatted
