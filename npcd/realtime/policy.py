"""What a Realtime failure means, and how long to wait before trying again.

Why tables: these rules follow OpenAI's server behaviour, which changes without notice. Each rule
is one row of data (error code, close code, HTTP status) with one test row, so a rule change is a
one-line diff and shows up as one failing test.

Sans-I/O: nothing here touches a socket, a clock or the global random generator. Time comes in as
``now`` (monotonic seconds) and randomness through an injectable :class:`random.Random`.

Every ``reason`` is a fixed sentence written for game developers and persona writers. Server text
(error messages, close reasons) is only pattern-matched, never quoted: OpenAI echoes masked keys
("sk-…") and organisation ids in its messages, and those must not reach logs or the game.
"""

from __future__ import annotations

import math
import random
import re
import socket
import ssl
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

# Only this much server text is pattern-matched: bounds regex work on hostile input.
_MAX_SCAN_CHARS = 2048


# --------------------------------------------------------------------------------------------------
# Realtime `error` events
# --------------------------------------------------------------------------------------------------


class ErrorClass(StrEnum):
    """What the caller should do about an ``error`` event (the session usually stays open)."""

    BENIGN = "benign"
    """A harmless race or no-op. Log at debug and carry on."""
    RETRYABLE = "retryable"
    """Transient. Surface as recoverable; the response may be retried (after backoff)."""
    FATAL = "fatal"
    """The deployment or credentials are wrong. Stop reconnecting; report NOT_SERVING."""
    EXPIRED = "expired"
    """The session hit its maximum duration. Replace it quietly; no error to the game."""
    CLIENT_BUG = "client_bug"
    """npcd sent something the server rejected. Do not retry as-is; log loudly once per rule."""


@dataclass(frozen=True, slots=True)
class ErrorVerdict:
    """The outcome of :func:`classify_error`.

    Attributes:
        kind: what to do.
        reason: one plain-English sentence or two for humans; never contains server text.
        rule: which table row decided, e.g. ``"code:server_error"``; a bounded set of values, safe
            as a metrics label and as the key for "log once".
        unknown: the error code is not in :data:`ERROR_CODE_RULES`; callers count these.
        retry_after_s: for rate limits, the wait OpenAI asked for, if its message said so.
        daily_limit: for rate limits, the exhausted limit is per day (RPD/TPD).
    """

    kind: ErrorClass
    reason: str
    rule: str
    unknown: bool = False
    retry_after_s: float | None = None
    daily_limit: bool = False


_B, _R, _F, _E, _C = (
    ErrorClass.BENIGN,
    ErrorClass.RETRYABLE,
    ErrorClass.FATAL,
    ErrorClass.EXPIRED,
    ErrorClass.CLIENT_BUG,
)

# Not a server code: the key a message alias maps the over-long truncate refusal to, because OpenAI
# sends it without a code of its own ("Audio content of 9800ms is already shorter than 11579ms").
TRUNCATE_PAST_END = "npcd:truncate_past_end"

_FIX_THEN_RESTART = "npcd stops reconnecting until this is fixed."
_REJECTED_UPDATE = (
    " If it was a session update, none of it applied: the NPC runs without its persona"
    " instructions, voice or tools."
)

ERROR_CODE_RULES: Mapping[str, tuple[ErrorClass, str]] = MappingProxyType(
    {
        # Benign races (realtime-protocol.md §4.4, §8.2, §8.3, §8.10).
        "conversation_already_has_active_response": (
            _B,
            "A reply was requested while the NPC was still answering; the server ignored the"
            " extra request.",
        ),
        "response_cancel_not_active": (
            _B,
            "A cancel arrived after the NPC's reply had already finished; nothing to stop.",
        ),
        "input_audio_buffer_commit_empty": (
            _B,
            "A manual commit found the audio buffer empty because voice detection had already"
            " taken the player's speech; nothing was lost.",
        ),
        "unsupported_content_type": (
            _B,
            "An interruption tried to cut the NPC's reply before any of its audio existed;"
            " nothing had been heard, so there was nothing to cut.",
        ),
        TRUNCATE_PAST_END: (
            _B,
            "An interruption asked to cut the NPC's reply after its audio ends; the server trims"
            " to the end of the audio instead.",
        ),
        # Transient.
        "server_error": (
            _R,
            "The Realtime server had an internal error. The reply may be retried; the session"
            " usually stays open.",
        ),
        "rate_limit_exceeded": (
            _R,
            "A request or token rate limit for this model was reached. Wait before starting"
            " another reply; if it keeps happening, run fewer NPC sessions at once.",
        ),
        # Fatal: the account, key, model or dialect is wrong; retrying cannot help.
        "invalid_api_key": (_F, f"The backend rejected the API key. {_FIX_THEN_RESTART}"),
        "insufficient_quota": (
            _F,
            f"The OpenAI account is out of quota or credit. {_FIX_THEN_RESTART}",
        ),
        "account_deactivated": (
            _F,
            f"The OpenAI account behind this key is deactivated. {_FIX_THEN_RESTART}",
        ),
        "billing_hard_limit_reached": (
            _F,
            f"The OpenAI account reached its billing hard limit. {_FIX_THEN_RESTART}",
        ),
        "model_not_found": (
            _F,
            "The configured model does not exist or this key may not use it. Check the model"
            f" name (on Azure, the deployment name). {_FIX_THEN_RESTART}",
        ),
        "DeploymentNotFound": (  # Azure spells its codes in PascalCase.
            _F,
            f"The Azure deployment named as the model does not exist. {_FIX_THEN_RESTART}",
        ),
        "unsupported_country_region_territory": (
            _F,
            f"OpenAI does not serve the region this connection comes from. {_FIX_THEN_RESTART}",
        ),
        "beta_api_shape_disabled": (
            _F,
            "The server no longer accepts the beta Realtime dialect. Set the backend dialect to"
            " GA in npcd's configuration.",
        ),
        # Expiry: the beta server said so with an error; GA closes with 1001 (see CLOSE_CODE_RULES).
        "session_expired": (
            _E,
            "The session reached the server's maximum length. npcd starts a new one and replays"
            " the conversation as text.",
        ),
        # npcd (or the persona it sent) is wrong; resending the same event gets the same answer.
        "unknown_parameter": (
            _C,
            "The server rejected a field npcd sent, often a beta-only field on a GA server."
            + _REJECTED_UPDATE,
        ),
        "missing_required_parameter": (
            _C,
            "The server expected a field npcd did not send, often a dialect mismatch."
            + _REJECTED_UPDATE,
        ),
        "invalid_value": (_C, "The server rejected a value npcd sent." + _REJECTED_UPDATE),
        "invalid_parameter": (_C, "The server rejected a value npcd sent." + _REJECTED_UPDATE),
        "invalid_type": (_C, "A value npcd sent has the wrong type." + _REJECTED_UPDATE),
        "invalid_event": (_C, "The server could not read an event npcd sent."),
        "bad_response_create": (_C, "The server rejected npcd's request to start a reply."),
        # Range and size checks of the general OpenAI API; a long persona can trip these.
        "string_above_max_length": (
            _C,
            "A text npcd sent is too long, for example a persona's instructions."
            + _REJECTED_UPDATE,
        ),
        "array_above_max_length": (
            _C,
            "A list npcd sent is too long, for example a persona's tools." + _REJECTED_UPDATE,
        ),
        "integer_below_min_value": (_C, "A number npcd sent is too small." + _REJECTED_UPDATE),
        "integer_above_max_value": (_C, "A number npcd sent is too large." + _REJECTED_UPDATE),
        "decimal_below_min_value": (_C, "A number npcd sent is too small." + _REJECTED_UPDATE),
        "decimal_above_max_value": (_C, "A number npcd sent is too large." + _REJECTED_UPDATE),
    }
)

# Under push-to-talk nothing but npcd commits, and npcd knows how much audio it appended, so an
# empty commit means it skipped its own "too short" check; its response.create would then answer
# nothing. Hence CLIENT_BUG, not BENIGN.
COMMIT_EMPTY_PUSH_TO_TALK: tuple[ErrorClass, str] = (
    _C,
    "npcd committed less than 100 ms of push-to-talk audio. It should drop such short presses"
    " itself instead of asking the NPC to answer nothing.",
)

DAILY_RATE_LIMIT: tuple[ErrorClass, str] = (
    _R,
    "The daily request or token limit for this model is used up. Replies fail until it refills;"
    " raise the limit on the OpenAI account or run fewer NPC conversations.",
)

# error.type values that decide when the code is missing or unknown, mapped to the code row that
# applies. "invalid_request_error" is deliberately absent: it covers races and bugs alike.
ERROR_TYPE_RULES: Mapping[str, str] = MappingProxyType(
    {
        "server_error": "server_error",
        "insufficient_quota": "insufficient_quota",
        "requests": "rate_limit_exceeded",
        "tokens": "rate_limit_exceeded",
    }
)

# Message patterns, consulted only when the code is missing, unknown or one of the generic codes
# below. They map the message to a known code; the code's row then decides.
_GENERIC_CODES = frozenset({"invalid_value", "invalid_parameter", "invalid_request_error"})
MESSAGE_ALIASES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"is already shorter than", re.I), TRUNCATE_PAST_END),
    (
        re.compile(r"only model output audio messages can be truncated", re.I),
        "unsupported_content_type",
    ),
    (re.compile(r"hit the maximum duration", re.I), "session_expired"),
    (re.compile(r"buffer too small", re.I), "input_audio_buffer_commit_empty"),
    (
        re.compile(r"already has an active response", re.I),
        "conversation_already_has_active_response",
    ),
    (re.compile(r"no active response", re.I), "response_cancel_not_active"),
    (re.compile(r"rate limit reached", re.I), "rate_limit_exceeded"),
)

# "… on requests per day (RPD): Limit 1000, Used 1000, Requested 1. Please try again in 1m26.4s."
_DAILY_RE = re.compile(r"per day|\b[RT]PD\b", re.I)
_RETRY_IN_RE = re.compile(r"try again in ((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)", re.I)
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)", re.I)
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
MAX_HOLD_OFF_S = 86_400.0
"""Longest wait any server-given duration is trusted for; a buggy value must not park an NPC."""


def parse_retry_after(message: str | None) -> float | None:
    """Seconds from OpenAI's "Please try again in 1m26.4s" phrase, capped at a day, or None."""
    if not message:
        return None
    match = _RETRY_IN_RE.search(message[:_MAX_SCAN_CHARS])
    if match is None:
        return None
    total = sum(
        float(n) * _UNIT_S[unit.lower()] for n, unit in _DURATION_PART_RE.findall(match.group(1))
    )
    return min(total, MAX_HOLD_OFF_S)


def classify_error(
    code: str | None,
    error_type: str | None,
    *,
    server_vad: bool,
    message: str | None = None,
) -> ErrorVerdict:
    """Classify the ``error`` object of a Realtime ``error`` event.

    Args:
        code: ``error.code``; may be missing.
        error_type: ``error.type`` (``invalid_request_error``, ``server_error``, …).
        server_vad: True when server-side turn detection (server or semantic VAD) owns the input
            buffer; False for push-to-talk (``turn_detection: null``).
        message: ``error.message``. Only pattern-matched (rate-limit scope and retry hint, and
            errors OpenAI sends without a specific code); never copied into the verdict.

    Unknown codes are RETRYABLE and flagged ``unknown`` unless ``error_type`` or the message
    identifies them. Pure; never raises.
    """
    key = code.strip() if code else None
    unknown = key is not None and key not in ERROR_CODE_RULES
    if key is None or unknown or key in _GENERIC_CODES:
        alias = _alias_from_message(message)
        if alias is not None:
            return _verdict_for(alias, f"message:{alias}", server_vad, message, unknown)
    if key is not None and not unknown:
        return _verdict_for(key, f"code:{key}", server_vad, message, unknown=False)
    if error_type is not None and error_type in ERROR_TYPE_RULES:
        row = ERROR_TYPE_RULES[error_type]
        return _verdict_for(row, f"type:{error_type}", server_vad, message, unknown)
    return ErrorVerdict(
        ErrorClass.RETRYABLE,
        "The server reported an error npcd does not recognise. npcd treats it as temporary"
        " and counts it; please report it if it repeats.",
        "unknown",
        unknown=True,
    )


def _alias_from_message(message: str | None) -> str | None:
    if not message:
        return None
    text = message[:_MAX_SCAN_CHARS]
    for pattern, alias in MESSAGE_ALIASES:
        if pattern.search(text):
            return alias
    return None


def _verdict_for(
    key: str, rule: str, server_vad: bool, message: str | None, unknown: bool
) -> ErrorVerdict:
    """Apply the row ``key`` of ERROR_CODE_RULES, with its two context-dependent refinements."""
    if key == "input_audio_buffer_commit_empty" and not server_vad:
        kind, reason = COMMIT_EMPTY_PUSH_TO_TALK
        return ErrorVerdict(kind, reason, rule + ":push_to_talk", unknown=unknown)
    if key == "rate_limit_exceeded":
        daily = _DAILY_RE.search((message or "")[:_MAX_SCAN_CHARS]) is not None
        kind, reason = DAILY_RATE_LIMIT if daily else ERROR_CODE_RULES[key]
        return ErrorVerdict(
            kind,
            reason,
            rule + (":daily" if daily else ""),
            unknown=unknown,
            retry_after_s=parse_retry_after(message),
            daily_limit=daily,
        )
    kind, reason = ERROR_CODE_RULES[key]
    return ErrorVerdict(kind, reason, rule, unknown=unknown)


# --------------------------------------------------------------------------------------------------
# WebSocket close codes
# --------------------------------------------------------------------------------------------------


class CloseClass(StrEnum):
    """What to do once the backend socket has closed. The session is gone in every case."""

    NORMAL = "normal"
    """Deliberate close. No error; open a new session when the NPC next needs one."""
    EXPIRED = "expired"
    """Maximum duration reached. Open a new session now, without backoff, and replay history."""
    RECONNECT = "reconnect"
    """Transient. Reconnect with :class:`Backoff` and tell the game the NPC's memory was rebuilt."""
    FATAL = "fatal"
    """Configuration or credentials are wrong. Stop reconnecting."""


@dataclass(frozen=True, slots=True)
class CloseVerdict:
    """The outcome of :func:`classify_close`.

    Attributes:
        kind: what to do.
        reason: for humans; never contains the server's close reason.
        rule: which table row decided (``"code:1006"``, ``"range:4xxx"``, ``"none"``…).
        npcd_bug: npcd itself is misconfigured or sent bad data; log loudly once.
        unknown: the code has no row of its own; callers count these.
    """

    kind: CloseClass
    reason: str
    rule: str
    npcd_bug: bool = False
    unknown: bool = False


_N, _X, _RC, _FT = CloseClass.NORMAL, CloseClass.EXPIRED, CloseClass.RECONNECT, CloseClass.FATAL
_RECONNECTS = " npcd reconnects with backoff and rebuilds the NPC's conversation."

# code -> (class, reason, npcd_bug)
CLOSE_CODE_RULES: Mapping[int, tuple[CloseClass, str, bool]] = MappingProxyType(
    {
        1000: (_N, "The backend closed the session normally.", False),
        1001: (_RC, "The backend is going away, for example restarting." + _RECONNECTS, False),
        1002: (_RC, "A WebSocket protocol error, often caused by a proxy." + _RECONNECTS, False),
        1003: (_RC, "The backend refused a kind of data npcd sent." + _RECONNECTS, True),
        1005: (_RC, "The connection closed without a status code." + _RECONNECTS, False),
        1006: (
            _RC,
            "The connection dropped without a close frame (network loss, proxy timeout or"
            " server crash)." + _RECONNECTS,
            False,
        ),
        1007: (_RC, "The backend received text that was not valid UTF-8." + _RECONNECTS, True),
        1008: (
            _FT,
            "The backend closed the connection for a policy violation, usually a refused API key"
            " or no access to the model. npcd stops reconnecting.",
            False,
        ),
        1009: (
            _RC,
            "A WebSocket message was larger than allowed: npcd's size limit is too small for"
            " long replies, or it sent an oversized event. This is an npcd configuration bug."
            + _RECONNECTS,
            True,
        ),
        1011: (
            _RC,
            "The backend hit an internal error, or stopped answering keepalive pings."
            + _RECONNECTS,
            False,
        ),
        1012: (_RC, "The backend is restarting." + _RECONNECTS, False),
        1013: (_RC, "The backend is overloaded and asked to try again later." + _RECONNECTS, False),
        1014: (_RC, "A gateway in front of the backend got a bad answer." + _RECONNECTS, False),
        1015: (_RC, "The TLS handshake with the backend failed." + _RECONNECTS, False),
        4000: (
            _FT,
            "The server refused the beta Realtime dialect. Set the backend dialect to GA in"
            " npcd's configuration.",
            False,
        ),
    }
)

# GA expiry: close 1001 with "Your session hit the maximum duration of 60 minutes."
_EXPIRY_REASON_RE = re.compile(r"maximum duration", re.I)
_EXPIRED_REASON = (
    "The session reached the server's maximum length (60 minutes on OpenAI). npcd starts a new"
    " one and replays the conversation as text; earlier NPC audio cannot be replayed."
)
_APP_DEFINED_REASON = (
    "The backend closed with an application-defined error code. npcd stops reconnecting; check"
    " the backend URL, key, model and dialect."
)
_UNKNOWN_CLOSE_REASON = "The backend closed with an unrecognised code." + _RECONNECTS
_NO_CLOSE_REASON = "The connection was lost before any close code was seen." + _RECONNECTS


def classify_close(code: int | None, reason: str) -> CloseVerdict:
    """Classify how the backend socket closed.

    Args:
        code: the close code npcd received (websockets' ``rcvd.code``), or None when the
            connection ended without one being seen.
        reason: the close reason text; only pattern-matched for the expiry sentence.

    Pure; never raises.
    """
    if code is None:
        return CloseVerdict(_RC, _NO_CLOSE_REASON, "none")
    if code == 1001 and _EXPIRY_REASON_RE.search(reason[:_MAX_SCAN_CHARS]):
        return CloseVerdict(_X, _EXPIRED_REASON, "code:1001:expired")
    rule = CLOSE_CODE_RULES.get(code)
    if rule is not None:
        kind, text, bug = rule
        return CloseVerdict(kind, text, f"code:{code}", npcd_bug=bug)
    if 4000 <= code <= 4999:
        return CloseVerdict(_FT, _APP_DEFINED_REASON, "range:4xxx", unknown=True)
    return CloseVerdict(_RC, _UNKNOWN_CLOSE_REASON, "unknown", unknown=True)


# --------------------------------------------------------------------------------------------------
# Connecting: HTTP upgrade status and network errors
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectVerdict:
    """The outcome of :func:`classify_handshake` or :func:`classify_connect_error`.

    Attributes:
        retryable: True: retry with :class:`Backoff`. False: stop reconnecting.
        reason: for humans; never contains the URL, headers or exception text.
        rule: which table row decided (``"status:401"``, ``"range:5xx"``, ``"exc:dns"``…).
    """

    retryable: bool
    reason: str
    rule: str


_STOP = " npcd stops reconnecting."
_RETRY = " npcd retries with backoff."

# status -> (retryable, reason). A bad key passes the upgrade and fails later with an error event
# on OpenAI, so 401 is mostly Azure or proxies; a key without model access gets 403 (§4.4).
HANDSHAKE_STATUS_RULES: Mapping[int, tuple[bool, str]] = MappingProxyType(
    {
        401: (False, "The backend refused the credentials (HTTP 401). Check the API key." + _STOP),
        403: (
            False,
            "The key may not use this model or endpoint (HTTP 403). Check that the key's project"
            " has access to the Realtime model." + _STOP,
        ),
        404: (
            False,
            "The backend URL, model or Azure deployment was not found (HTTP 404)." + _STOP,
        ),
        408: (True, "The backend timed out waiting for the handshake (HTTP 408)." + _RETRY),
        429: (
            True,
            "Too many requests (HTTP 429)." + _RETRY + " If it persists, run fewer NPC sessions"
            " or check the account's quota.",
        ),
        500: (True, "The backend had an internal error (HTTP 500)." + _RETRY),
        502: (True, "A gateway in front of the backend failed (HTTP 502)." + _RETRY),
        503: (True, "The backend is unavailable or overloaded (HTTP 503)." + _RETRY),
        504: (True, "A gateway in front of the backend timed out (HTTP 504)." + _RETRY),
    }
)
_OTHER_4XX = "The backend rejected the connection request (HTTP 4xx); check the URL and model."
_OTHER_5XX = "The backend failed (HTTP 5xx)." + _RETRY
_NOT_UPGRADED = (
    "The server answered but did not open a WebSocket; the backend URL probably points at"
    " something that is not a Realtime server." + _STOP
)


def classify_handshake(status: int) -> ConnectVerdict:
    """Classify an HTTP status that refused the WebSocket upgrade. Pure; never raises."""
    rule = HANDSHAKE_STATUS_RULES.get(status)
    if rule is not None:
        return ConnectVerdict(rule[0], rule[1], f"status:{status}")
    if 400 <= status <= 499:
        return ConnectVerdict(False, _OTHER_4XX + _STOP, "range:4xx")
    if 500 <= status <= 599:
        return ConnectVerdict(True, _OTHER_5XX, "range:5xx")
    return ConnectVerdict(False, _NOT_UPGRADED, "range:other")


# First match wins, so subclasses come before their bases (gaierror and the ssl errors are
# OSErrors; TimeoutError is one too). Mirrors websockets' process_exception(): network errors and
# an EOF during the handshake are retried, anything else is fatal. TLS failures are retried because
# on a player's machine they are usually a captive portal or a proxy that goes away.
CONNECT_ERROR_RULES: tuple[tuple[type[BaseException], str, str], ...] = (
    (socket.gaierror, "dns", "The backend host name could not be resolved (DNS)."),
    (ConnectionRefusedError, "refused", "Nothing accepted the connection at the backend address."),
    (
        ssl.SSLCertVerificationError,
        "tls_cert",
        "The backend's TLS certificate could not be verified; check the system clock, any proxy"
        " and the installed CA certificates.",
    ),
    (ssl.SSLError, "tls", "The TLS handshake with the backend failed."),
    (TimeoutError, "timeout", "Connecting to the backend timed out."),
    (EOFError, "eof", "The backend closed the connection during the handshake."),
    (OSError, "network", "A network error occurred while connecting to the backend."),
)
_UNEXPECTED_CONNECT = (
    "Connecting failed in an unexpected way, usually a malformed backend URL or an npcd bug."
    + _STOP
)


def classify_connect_error(exc: BaseException) -> ConnectVerdict:
    """Classify an exception raised while opening the backend connection.

    An HTTP status refusal should go to :func:`classify_handshake` instead. The exception and its
    ``__cause__`` chain are checked, because websockets wraps an EOF during the handshake.
    Pure; never raises.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        for exc_type, name, reason in CONNECT_ERROR_RULES:
            if isinstance(current, exc_type):
                return ConnectVerdict(True, reason + _RETRY, f"exc:{name}")
        current = current.__cause__
    return ConnectVerdict(False, _UNEXPECTED_CONNECT, "exc:unexpected")


NO_SESSION_STARTED = ConnectVerdict(
    True,
    "The backend accepted the connection but did not start a session (no session.created) in"
    " time." + _RETRY,
    "session:timeout",
)


def classify_closed_before_session(verdict: CloseVerdict) -> ConnectVerdict:
    """A link that closed before ``session.created``: a failed connect, retried unless the close
    itself says stop (a fatal close code such as 4000 for a refused dialect)."""
    retryable = verdict.kind is not CloseClass.FATAL
    return ConnectVerdict(retryable, verdict.reason, f"session:{verdict.rule}")


# --------------------------------------------------------------------------------------------------
# Pacing: backoff, rate limits
# --------------------------------------------------------------------------------------------------


class Backoff(Iterator[float]):
    """Reconnect delays: exponential ceilings with "equal jitter".

    The n-th delay (n from 0) is uniform in ``[c/2, c]`` where ``c = min(max_s, initial_s *
    factor**n)``. Equal jitter rather than full jitter (uniform in ``[0, c]``): one daemon runs
    many NPC sessions that all drop together when the backend does, so jitter is needed to spread
    them, but full jitter can draw near-zero waits and hammer a server that is already failing.
    Keeping half the ceiling fixed guarantees real growth while still spreading the herd.

    Not thread-safe; one instance per NPC session. Iterating yields :meth:`next_delay`.
    """

    def __init__(
        self,
        *,
        initial_s: float = 0.5,
        factor: float = 2.0,
        max_s: float = 30.0,
        stable_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        """Set the schedule.

        Args:
            initial_s: ceiling of the first delay; most drops are one-offs, so retry fast.
            factor: growth of the ceiling per attempt (>= 1).
            max_s: cap on the ceiling; how long a player waits at most once the backend is back.
            stable_s: a connection that lived this long resets the schedule
                (:meth:`reset_if_stable`).
            rng: source of jitter; inject a seeded one in tests.

        Raises:
            ValueError: on a non-finite, non-positive or inconsistent parameter.
        """
        values = (initial_s, factor, max_s, stable_s)
        if not all(math.isfinite(v) for v in values):
            raise ValueError("backoff parameters must be finite numbers")
        if initial_s <= 0 or factor < 1 or max_s < initial_s or stable_s < 0:
            raise ValueError("backoff needs initial_s > 0, factor >= 1, max_s >= initial_s")
        self._initial_s = initial_s
        self._factor = factor
        self._max_s = max_s
        self._stable_s = stable_s
        # Not for security: jitter only needs to differ between sessions.
        self._rng = rng if rng is not None else random.Random()  # noqa: S311
        self._ceiling = initial_s
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since construction or the last reset; capping them is the caller's."""
        return self._attempts

    @property
    def ceiling(self) -> float:
        """Upper bound of the next delay, in seconds."""
        return self._ceiling

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; counts one attempt and grows the ceiling."""
        ceiling = self._ceiling
        delay = ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)
        # Grow iteratively and clamp, so thousands of attempts never overflow a float power.
        self._ceiling = min(self._max_s, ceiling * self._factor)
        self._attempts += 1
        return min(delay, ceiling)

    def __next__(self) -> float:
        return self.next_delay()

    def reset(self) -> None:
        """Start again from ``initial_s`` with zero attempts. Idempotent."""
        self._ceiling = self._initial_s
        self._attempts = 0

    def reset_if_stable(self, lived_s: float) -> bool:
        """Reset when a connection lived at least ``stable_s`` seconds; return whether it did."""
        if lived_s >= self._stable_s:
            self.reset()
            return True
        return False


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One entry of a ``rate_limits.updated`` event, stamped with when npcd received it."""

    name: str
    limit: int
    remaining: int
    reset_seconds: float
    received_at: float

    @property
    def resets_at(self) -> float:
        """Monotonic time at which ``remaining`` refills."""
        return self.received_at + self.reset_seconds


RATE_LIMIT_KINDS: tuple[str, ...] = ("requests", "tokens")
"""Kinds npcd tracks; others are ignored and counted, which keeps metrics labels bounded."""


class RateLimits:
    """The latest ``rate_limits.updated`` numbers, and when it is safe to start another response.

    The event's position in the stream is not reliable and it often carries only token data
    (realtime-protocol.md §4.4), so absent kinds simply never hold anything off.
    """

    def __init__(self) -> None:
        self._latest: dict[str, RateLimit] = {}
        self._ignored = 0

    @property
    def ignored(self) -> int:
        """Entries dropped so far as malformed or of an unknown kind."""
        return self._ignored

    def update(self, limits: Iterable[Mapping[str, object]], now: float) -> None:
        """Apply the ``rate_limits`` list of one event received at ``now``.

        Entries that are malformed (missing fields, wrong types, negative or non-finite numbers)
        or of an unknown kind are skipped and counted in :attr:`ignored`; the rest replace the
        previous numbers of their kind. ``reset_seconds`` is capped at :data:`MAX_HOLD_OFF_S`.
        """
        for entry in limits:
            parsed = _parse_rate_limit(entry, now)
            if parsed is None:
                self._ignored += 1
            else:
                self._latest[parsed.name] = parsed

    def latest(self, kind: str) -> RateLimit | None:
        """The most recent numbers of one kind, or None if the server never sent them."""
        return self._latest.get(kind)

    def snapshot(self) -> Mapping[str, RateLimit]:
        """A read-only copy of the latest numbers of every kind, for metrics."""
        return MappingProxyType(dict(self._latest))

    def hold_off_until(self, kind: str, now: float, *, need: int = 1) -> float | None:
        """When a response may start, if ``kind`` is exhausted; None if it may start now.

        Holds off while fewer than ``need`` units remain and the reset time is still ahead.
        """
        entry = self._latest.get(kind)
        if entry is None or entry.remaining >= need or now >= entry.resets_at:
            return None
        return entry.resets_at

    def hold_off_until_any(self, now: float) -> float | None:
        """The latest :meth:`hold_off_until` over all tracked kinds, or None."""
        times = [t for k in self._latest if (t := self.hold_off_until(k, now)) is not None]
        return max(times, default=None)


def _parse_rate_limit(entry: Mapping[str, object], now: float) -> RateLimit | None:
    name = entry.get("name")
    if not isinstance(name, str) or name not in RATE_LIMIT_KINDS:
        return None
    numbers = (entry.get("limit"), entry.get("remaining"), entry.get("reset_seconds"))
    checked: list[float] = []
    for value in numbers:
        # bool is an int subclass; JSON true is not a count.
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value) or value < 0:
            return None
        checked.append(float(value))
    limit, remaining, reset_seconds = checked
    return RateLimit(
        name=name,
        limit=int(limit),
        remaining=int(remaining),
        reset_seconds=min(reset_seconds, MAX_HOLD_OFF_S),
        received_at=now,
    )
