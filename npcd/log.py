"""Logging set-up: one readable line per event, with secrets scrubbed before anything is written.

websockets logs every handshake header at DEBUG, ``Authorization: Bearer ...`` included, and
exception texts from HTTP clients can carry headers too. The redaction filter sits on the
handler, so it sees every record from every library, whatever its logger.
"""

from __future__ import annotations

import logging
import re
import sys

_SECRET_PATTERNS = (
    re.compile(r"\b(sk|ek|rk)[-_][A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)\b(bearer)\s+[^\s'\",]+"),
    re.compile(r"(?i)(api[-_]key['\"]?\s*[:=]\s*['\"]?)[^\s'\",]+"),
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with anything that looks like an API key, client secret or bearer token hidden."""
    text = _SECRET_PATTERNS[0].sub(REDACTED, text)
    text = _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _SECRET_PATTERNS[2].sub(lambda m: f"{m.group(1)}{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and exception text) with `redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger for the daemon (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # websockets logs a line per connection at INFO (one per NPC session: noise) and every
    # handshake header at DEBUG (the known key leak, scrubbed by the filter above regardless).
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))
