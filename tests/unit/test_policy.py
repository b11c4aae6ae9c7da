"""Row-by-row tests of npcd.realtime.policy: every code, close code and status has its own row.

Expected classes are written out literally, not read back from the tables, so changing a rule
fails exactly the rows it affects. Coverage tests at the end of each section fail when a table
gains a row that has no test row.
"""

from __future__ import annotations

import math
import random
import socket
import ssl
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npcd.realtime.policy import (
    CLOSE_CODE_RULES,
    CONNECT_ERROR_RULES,
    ERROR_CODE_RULES,
    ERROR_TYPE_RULES,
    HANDSHAKE_STATUS_RULES,
    MAX_HOLD_OFF_S,
    MESSAGE_ALIASES,
    TRUNCATE_PAST_END,
    Backoff,
    CloseClass,
    ErrorClass,
    RateLimits,
    classify_close,
    classify_connect_error,
    classify_error,
    classify_handshake,
    parse_retry_after,
)

B, R, F, E, C = (
    ErrorClass.BENIGN,
    ErrorClass.RETRYABLE,
    ErrorClass.FATAL,
    ErrorClass.EXPIRED,
    ErrorClass.CLIENT_BUG,
)
IRE = "invalid_request_error"

# ---------------------------------------------------------------------------------------------
# error events
# ---------------------------------------------------------------------------------------------

# (code, error.type, server_vad, expected class); one row per code of ERROR_CODE_RULES.
ERROR_CODE_ROWS: list[tuple[str, str | None, bool, ErrorClass]] = [
    ("conversation_already_has_active_response", IRE, True, B),
    ("conversation_already_has_active_response", IRE, False, B),
    ("response_cancel_not_active", IRE, True, B),
    ("input_audio_buffer_commit_empty", IRE, True, B),
    ("input_audio_buffer_commit_empty", IRE, False, C),  # push-to-talk: npcd's own check failed
    ("unsupported_content_type", IRE, True, B),
    (TRUNCATE_PAST_END, IRE, True, B),
    ("server_error", "server_error", True, R),
    ("rate_limit_exceeded", "requests", True, R),
    ("invalid_api_key", IRE, True, F),
    ("insufficient_quota", "insufficient_quota", True, F),
    ("account_deactivated", IRE, True, F),
    ("billing_hard_limit_reached", IRE, True, F),
    ("model_not_found", IRE, True, F),
    ("DeploymentNotFound", None, True, F),
    ("unsupported_country_region_territory", IRE, True, F),
    ("beta_api_shape_disabled", IRE, True, F),
    ("session_expired", IRE, True, E),
    ("unknown_parameter", IRE, True, C),
    ("missing_required_parameter", IRE, True, C),
    ("invalid_value", IRE, True, C),
    ("invalid_parameter", IRE, True, C),
    ("invalid_type", IRE, True, C),
    ("invalid_event", IRE, True, C),
    ("bad_response_create", IRE, True, C),
    ("string_above_max_length", IRE, True, C),
    ("array_above_max_length", IRE, True, C),
    ("integer_below_min_value", IRE, True, C),
    ("integer_above_max_value", IRE, True, C),
    ("decimal_below_min_value", IRE, True, C),
    ("decimal_above_max_value", IRE, True, C),
]


@pytest.mark.parametrize(("code", "error_type", "server_vad", "expected"), ERROR_CODE_ROWS)
def test_error_code_row(
    code: str, error_type: str | None, server_vad: bool, expected: ErrorClass
) -> None:
    verdict = classify_error(code, error_type, server_vad=server_vad)
    assert verdict.kind is expected
    assert verdict.unknown is False
    assert verdict.rule.startswith(f"code:{code}")


def test_every_error_code_rule_has_a_row() -> None:
    assert {row[0] for row in ERROR_CODE_ROWS} == set(ERROR_CODE_RULES)


def test_beta_shape_disabled_tells_the_user_to_switch_to_ga() -> None:
    reason = classify_error("beta_api_shape_disabled", IRE, server_vad=True).reason
    assert "GA" in reason
    assert "dialect" in reason


def test_commit_empty_push_to_talk_has_its_own_rule_for_log_once() -> None:
    vad = classify_error("input_audio_buffer_commit_empty", IRE, server_vad=True)
    ptt = classify_error("input_audio_buffer_commit_empty", IRE, server_vad=False)
    assert vad.rule != ptt.rule
    assert vad.reason != ptt.reason


# (code, error.type, message, expected class, expected unknown flag); messages as OpenAI sends them.
MESSAGE_ROWS: list[tuple[str | None, str | None, str, ErrorClass, bool]] = [
    (None, IRE, "Audio content of 9800ms is already shorter than 11579ms", B, False),
    ("invalid_value", IRE, "Audio content of 9250ms is already shorter than 57340ms", B, False),
    (None, IRE, "Only model output audio messages can be truncated", B, False),
    (None, IRE, "Your session hit the maximum duration of 30 minutes.", E, False),
    (
        None,
        IRE,
        "Error committing input audio buffer: buffer too small. Expected at least 100ms of"
        " audio, but buffer only has 0.00ms of audio.",
        B,
        False,
    ),
    (
        None,
        IRE,
        "Conversation already has an active response in progress: resp_abc. Wait until the"
        " response is finished before creating a new one.",
        B,
        False,
    ),
    (None, IRE, "Cancellation failed: no active response found", B, False),
    (None, "requests", "Rate limit reached for gpt-realtime on requests per min (RPM)", R, False),
    # A code npcd has never seen is still counted, even when the message identifies the case.
    ("brand_new_truncate_code", IRE, "Audio content of 1ms is already shorter than 2ms", B, True),
]


@pytest.mark.parametrize(("code", "error_type", "message", "expected", "unknown"), MESSAGE_ROWS)
def test_message_alias_row(
    code: str | None, error_type: str | None, message: str, expected: ErrorClass, unknown: bool
) -> None:
    verdict = classify_error(code, error_type, server_vad=True, message=message)
    assert verdict.kind is expected
    assert verdict.unknown is unknown
    assert verdict.rule.startswith("message:")


def test_every_message_alias_has_a_row() -> None:
    covered = set()
    for _code, _type, message, _expected, _unknown in MESSAGE_ROWS:
        covered |= {alias for pattern, alias in MESSAGE_ALIASES if pattern.search(message)}
    assert covered == {alias for _pattern, alias in MESSAGE_ALIASES}


def test_message_does_not_override_a_specific_known_code() -> None:
    verdict = classify_error(
        "invalid_api_key", IRE, server_vad=True, message="Rate limit reached; no active response"
    )
    assert verdict.kind is F
    assert verdict.rule == "code:invalid_api_key"


def test_message_is_only_scanned_up_to_a_bound() -> None:
    message = "x" * 5000 + " is already shorter than "
    verdict = classify_error(None, IRE, server_vad=True, message=message)
    assert verdict.kind is R
    assert verdict.unknown is True


# (error.type, expected class); code missing.
TYPE_ROWS: list[tuple[str, ErrorClass]] = [
    ("server_error", R),
    ("insufficient_quota", F),
    ("requests", R),
    ("tokens", R),
]


@pytest.mark.parametrize(("error_type", "expected"), TYPE_ROWS)
def test_error_type_row_without_code(error_type: str, expected: ErrorClass) -> None:
    verdict = classify_error(None, error_type, server_vad=True)
    assert verdict.kind is expected
    assert verdict.unknown is False
    assert verdict.rule == f"type:{error_type}"


def test_every_error_type_rule_has_a_row() -> None:
    assert {row[0] for row in TYPE_ROWS} == set(ERROR_TYPE_RULES)


def test_unknown_code_with_known_type_follows_the_type_but_is_counted() -> None:
    verdict = classify_error("quota_gone_v2", "insufficient_quota", server_vad=True)
    assert verdict.kind is F
    assert verdict.unknown is True


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        ("brand_new_code", IRE),
        ("brand_new_code", None),
        (None, None),
        (None, IRE),  # invalid_request_error alone says nothing
        ("", IRE),
        ("   ", None),
    ],
)
def test_unknown_error_is_retryable_and_flagged(code: str | None, error_type: str | None) -> None:
    verdict = classify_error(code, error_type, server_vad=True)
    assert verdict.kind is R
    assert verdict.unknown is True
    assert verdict.rule == "unknown"


def test_code_whitespace_is_ignored() -> None:
    assert classify_error(" session_expired\n", IRE, server_vad=True).kind is E


RPD_MESSAGE = (
    "Rate limit reached for gpt-4o-mini-realtime in organization org-xx on requests per day"
    " (RPD): Limit 1000, Used 1000, Requested 1. Please try again in 1m26.4s. Visit"
    " https://platform.openai.com/account/rate-limits to learn more."
)
TPM_MESSAGE = (
    "Rate limit reached for gpt-realtime in organization org-xx on tokens per min (TPM):"
    " Limit 40000, Used 39950, Requested 100. Please try again in 150ms."
)


def test_daily_rate_limit_is_retryable_flagged_daily_with_the_server_hint() -> None:
    verdict = classify_error(
        "rate_limit_exceeded", "requests", server_vad=True, message=RPD_MESSAGE
    )
    assert verdict.kind is R
    assert verdict.daily_limit is True
    assert verdict.retry_after_s == pytest.approx(86.4)
    assert verdict.rule == "code:rate_limit_exceeded:daily"
    assert "daily" in verdict.reason


def test_per_minute_rate_limit_is_not_daily() -> None:
    verdict = classify_error("rate_limit_exceeded", "tokens", server_vad=True, message=TPM_MESSAGE)
    assert verdict.kind is R
    assert verdict.daily_limit is False
    assert verdict.retry_after_s == pytest.approx(0.15)
    assert verdict.rule == "code:rate_limit_exceeded"


def test_rate_limit_without_message_has_no_hint() -> None:
    verdict = classify_error("rate_limit_exceeded", "requests", server_vad=True)
    assert (verdict.daily_limit, verdict.retry_after_s) == (False, None)


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Please try again in 1m26.4s.", 86.4),
        ("Please try again in 20s.", 20.0),
        ("Please try again in 150ms.", 0.15),
        ("Please try again in 6m0s.", 360.0),
        ("Please try again in 2h3m.", 7380.0),
        ("Please try again in 48h.", MAX_HOLD_OFF_S),  # capped
        ("please TRY AGAIN IN 3S", 3.0),
        ("Please try again later.", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after_row(message: str | None, seconds: float | None) -> None:
    result = parse_retry_after(message)
    if seconds is None:
        assert result is None
    else:
        assert result == pytest.approx(seconds)


# ---------------------------------------------------------------------------------------------
# close codes
# ---------------------------------------------------------------------------------------------

EXPIRY = "Your session hit the maximum duration of 60 minutes."
NORMAL, EXPIRED, RECONNECT, FATAL = (
    CloseClass.NORMAL,
    CloseClass.EXPIRED,
    CloseClass.RECONNECT,
    CloseClass.FATAL,
)

# (code, reason, expected class, npcd_bug, unknown)
CLOSE_ROWS: list[tuple[int | None, str, CloseClass, bool, bool]] = [
    (1000, "", NORMAL, False, False),
    (1000, EXPIRY, NORMAL, False, False),  # only 1001 carries the expiry meaning
    (1001, EXPIRY, EXPIRED, False, False),
    (1001, "Your session hit the maximum duration of 30 minutes.", EXPIRED, False, False),
    (1001, "", RECONNECT, False, False),
    (1001, "server restarting", RECONNECT, False, False),
    (1002, "", RECONNECT, False, False),
    (1003, "", RECONNECT, True, False),
    (1005, "", RECONNECT, False, False),
    (1006, "", RECONNECT, False, False),
    (1006, EXPIRY, RECONNECT, False, False),
    (1007, "", RECONNECT, True, False),
    (1008, "Invalid API key", FATAL, False, False),
    (1009, "", RECONNECT, True, False),
    (1011, "keepalive ping timeout", RECONNECT, False, False),
    (1012, "", RECONNECT, False, False),
    (1013, "", RECONNECT, False, False),
    (1014, "", RECONNECT, False, False),
    (1015, "", RECONNECT, False, False),
    (4000, "", FATAL, False, False),
    (4001, "", FATAL, False, True),
    (4999, "", FATAL, False, True),
    (1004, "", RECONNECT, False, True),
    (1010, "", RECONNECT, False, True),
    (3000, "", RECONNECT, False, True),
    (5000, "", RECONNECT, False, True),
    (0, "", RECONNECT, False, True),
    (None, "", RECONNECT, False, False),
]


@pytest.mark.parametrize(("code", "reason", "expected", "npcd_bug", "unknown"), CLOSE_ROWS)
def test_close_row(
    code: int | None, reason: str, expected: CloseClass, npcd_bug: bool, unknown: bool
) -> None:
    verdict = classify_close(code, reason)
    assert verdict.kind is expected
    assert verdict.npcd_bug is npcd_bug
    assert verdict.unknown is unknown


def test_every_close_code_rule_has_a_row() -> None:
    assert set(CLOSE_CODE_RULES) <= {row[0] for row in CLOSE_ROWS}


def test_close_4000_tells_the_user_to_switch_to_ga() -> None:
    reason = classify_close(4000, "").reason
    assert "GA" in reason
    assert "dialect" in reason


def test_close_1009_says_it_is_a_configuration_bug() -> None:
    assert "configuration bug" in classify_close(1009, "").reason


# ---------------------------------------------------------------------------------------------
# handshake and connect errors
# ---------------------------------------------------------------------------------------------

# (HTTP status, retryable)
HANDSHAKE_ROWS: list[tuple[int, bool]] = [
    (400, False),
    (401, False),
    (403, False),
    (404, False),
    (405, False),
    (408, True),
    (409, False),
    (426, False),
    (429, True),
    (499, False),
    (500, True),
    (501, True),
    (502, True),
    (503, True),
    (504, True),
    (505, True),
    (599, True),
    (200, False),  # answered without upgrading: not a Realtime server
    (301, False),
    (0, False),
    (600, False),
]


@pytest.mark.parametrize(("status", "retryable"), HANDSHAKE_ROWS)
def test_handshake_row(status: int, retryable: bool) -> None:
    assert classify_handshake(status).retryable is retryable


def test_every_handshake_status_rule_has_a_row() -> None:
    assert set(HANDSHAKE_STATUS_RULES) <= {row[0] for row in HANDSHAKE_ROWS}


def _wrapped(cause: BaseException) -> BaseException:
    """Like websockets' InvalidMessage, which carries the EOFError as __cause__."""
    outer = RuntimeError("did not receive a valid HTTP response")
    outer.__cause__ = cause
    return outer


def _cycle() -> BaseException:
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first
    return first


# (exception, retryable, rule)
CONNECT_ROWS: list[tuple[BaseException, bool, str]] = [
    (socket.gaierror(-2, "Name or service not known"), True, "exc:dns"),
    (ConnectionRefusedError(111, "Connection refused"), True, "exc:refused"),
    (ssl.SSLCertVerificationError("certificate verify failed"), True, "exc:tls_cert"),
    (ssl.SSLError("handshake failure"), True, "exc:tls"),
    (TimeoutError(), True, "exc:timeout"),
    (EOFError(), True, "exc:eof"),
    (OSError(101, "Network is unreachable"), True, "exc:network"),
    (ConnectionResetError(104, "Connection reset by peer"), True, "exc:network"),
    (_wrapped(EOFError("connection closed while reading HTTP status line")), True, "exc:eof"),
    (ValueError("wss://example.invalid is not a valid URI"), False, "exc:unexpected"),
    (RuntimeError("boom"), False, "exc:unexpected"),
    (_cycle(), False, "exc:unexpected"),
]


@pytest.mark.parametrize(("exc", "retryable", "rule"), CONNECT_ROWS)
def test_connect_error_row(exc: BaseException, retryable: bool, rule: str) -> None:
    verdict = classify_connect_error(exc)
    assert verdict.retryable is retryable
    assert verdict.rule == rule


def test_every_connect_error_rule_has_a_row() -> None:
    assert {f"exc:{name}" for _t, name, _r in CONNECT_ERROR_RULES} <= {r for *_, r in CONNECT_ROWS}


# ---------------------------------------------------------------------------------------------
# messages: non-empty, plain, never carrying secrets or server text
# ---------------------------------------------------------------------------------------------

FORBIDDEN = ("sk-", "bearer", "api-key", "://")
# What OpenAI and proxies really put in messages and reasons; none of it may be echoed.
HOSTILE = (
    "Incorrect API key provided: sk-proj-****abcd. Authorization: Bearer ek_123 api-key: 42"
    " https://user:secret@example.invalid/v1/realtime"
)


def _all_reasons() -> list[str]:
    reasons = [
        classify_error(code, et, server_vad=vad, message=HOSTILE).reason
        for code, et, vad, _ in ERROR_CODE_ROWS
    ]
    reasons += [
        classify_error(c, t, server_vad=True, message=m).reason for c, t, m, *_ in MESSAGE_ROWS
    ]
    reasons += [
        classify_error(None, t, server_vad=True, message=HOSTILE).reason for t, _ in TYPE_ROWS
    ]
    reasons += [
        classify_error("rate_limit_exceeded", None, server_vad=True, message=m).reason
        for m in (RPD_MESSAGE, TPM_MESSAGE)
    ]
    reasons.append(classify_error(None, None, server_vad=True, message=HOSTILE).reason)
    reasons += [classify_close(code, HOSTILE).reason for code, *_ in CLOSE_ROWS]
    reasons.append(classify_close(1001, EXPIRY + HOSTILE).reason)
    reasons += [classify_handshake(status).reason for status, _ in HANDSHAKE_ROWS]
    reasons += [classify_connect_error(exc).reason for exc, *_ in CONNECT_ROWS]
    return reasons


def test_every_message_is_non_empty_and_free_of_secrets_and_urls() -> None:
    reasons = _all_reasons()
    assert len(reasons) > 100
    for reason in reasons:
        assert reason.strip()
        assert reason[0].isupper() or reason.startswith("npcd ")
        assert reason.rstrip().endswith(".")
        lowered = reason.lower()
        for needle in FORBIDDEN:
            assert needle not in lowered, (needle, reason)


def test_server_text_is_never_echoed() -> None:
    for reason in _all_reasons():
        assert "abcd" not in reason
        assert "org-xx" not in reason
        assert "example.invalid" not in reason


# ---------------------------------------------------------------------------------------------
# Backoff
# ---------------------------------------------------------------------------------------------


def _ceilings(initial_s: float, factor: float, max_s: float, n: int) -> list[float]:
    return [min(max_s, initial_s * factor**k) for k in range(n)]


@settings(max_examples=200, database=None, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    initial_s=st.floats(min_value=0.01, max_value=5.0),
    factor=st.floats(min_value=1.0, max_value=4.0),
    cap_multiple=st.floats(min_value=1.0, max_value=100.0),
    n=st.integers(min_value=1, max_value=60),
)
def test_backoff_delays_stay_within_equal_jitter_bounds(
    seed: int, initial_s: float, factor: float, cap_multiple: float, n: int
) -> None:
    max_s = initial_s * cap_multiple
    backoff = Backoff(initial_s=initial_s, factor=factor, max_s=max_s, rng=random.Random(seed))
    for k, ceiling in enumerate(_ceilings(initial_s, factor, max_s, n)):
        delay = backoff.next_delay()
        assert ceiling / 2 * (1 - 1e-9) <= delay <= ceiling * (1 + 1e-9)
        assert delay <= max_s * (1 + 1e-9)
        assert backoff.attempts == k + 1


@settings(max_examples=100, database=None, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_backoff_with_factor_two_never_shrinks_before_the_cap(seed: int) -> None:
    # With factor 2 the floor of delay n+1 equals the ceiling of delay n.
    backoff = Backoff(initial_s=0.5, factor=2.0, max_s=1000.0, rng=random.Random(seed))
    delays = [next(backoff) for _ in range(11)]  # ceilings 0.5 .. 512, all under the cap
    assert delays == sorted(delays)
    assert delays[-1] >= 256.0


def test_backoff_reaches_and_holds_the_cap() -> None:
    backoff = Backoff(initial_s=0.5, factor=2.0, max_s=30.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(5000)]  # no float overflow after many attempts
    assert backoff.ceiling == 30.0
    assert all(15.0 <= d <= 30.0 for d in delays[-100:])
    assert max(delays) <= 30.0


def test_backoff_jitter_spreads_across_seeds() -> None:
    firsts = [Backoff(initial_s=1.0, rng=random.Random(seed)).next_delay() for seed in range(500)]
    assert len(set(firsts)) > 450
    assert min(firsts) < 0.55
    assert max(firsts) > 0.95


def test_backoff_is_deterministic_for_a_seed() -> None:
    a = Backoff(rng=random.Random(7))
    b = Backoff(rng=random.Random(7))
    assert [a.next_delay() for _ in range(20)] == [b.next_delay() for _ in range(20)]


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(initial_s=0.5, factor=2.0, max_s=30.0, rng=random.Random(3))
    for _ in range(8):
        backoff.next_delay()
    assert backoff.attempts == 8
    assert backoff.ceiling == 30.0
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.ceiling == 0.5
    assert 0.25 <= backoff.next_delay() <= 0.5
    assert backoff.attempts == 1


def test_backoff_reset_if_stable_only_after_a_long_enough_connection() -> None:
    backoff = Backoff(initial_s=0.5, stable_s=30.0, rng=random.Random(3))
    for _ in range(4):
        backoff.next_delay()
    assert backoff.reset_if_stable(29.9) is False
    assert backoff.attempts == 4
    assert backoff.reset_if_stable(30.0) is True
    assert backoff.attempts == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": 0.0},
        {"initial_s": -1.0},
        {"factor": 0.5},
        {"initial_s": 10.0, "max_s": 5.0},
        {"stable_s": -1.0},
        {"max_s": math.inf},
        {"initial_s": math.nan},
    ],
)
def test_backoff_rejects_bad_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


# ---------------------------------------------------------------------------------------------
# RateLimits
# ---------------------------------------------------------------------------------------------


def _entry(
    name: str, remaining: object, reset_seconds: object = 5.0, limit: object = 100
) -> dict[str, object]:
    return {"name": name, "limit": limit, "remaining": remaining, "reset_seconds": reset_seconds}


def test_rate_limit_holds_off_until_the_reset_time_and_not_after() -> None:
    limits = RateLimits()
    limits.update([_entry("requests", 0, 5.0), _entry("tokens", 9000, 1.5)], now=100.0)
    assert limits.hold_off_until("requests", 100.0) == pytest.approx(105.0)
    assert limits.hold_off_until("requests", 104.999) == pytest.approx(105.0)
    assert limits.hold_off_until("requests", 105.0) is None
    assert limits.hold_off_until("requests", 200.0) is None
    assert limits.hold_off_until("tokens", 100.0) is None


def test_rate_limit_need_holds_off_when_too_few_remain() -> None:
    limits = RateLimits()
    limits.update([_entry("tokens", 500, 2.0)], now=10.0)
    assert limits.hold_off_until("tokens", 10.0, need=1000) == pytest.approx(12.0)
    assert limits.hold_off_until("tokens", 10.0, need=500) is None


def test_rate_limit_newer_update_replaces_older() -> None:
    limits = RateLimits()
    limits.update([_entry("requests", 0, 60.0)], now=0.0)
    limits.update([_entry("requests", 3, 60.0)], now=1.0)
    assert limits.hold_off_until("requests", 1.0) is None
    latest = limits.latest("requests")
    assert latest is not None
    assert (latest.remaining, latest.received_at, latest.resets_at) == (3, 1.0, 61.0)


def test_rate_limit_unknown_kind_never_holds_off() -> None:
    limits = RateLimits()
    assert limits.hold_off_until("requests", 0.0) is None
    assert limits.hold_off_until_any(0.0) is None
    assert limits.latest("tokens") is None


def test_rate_limit_any_kind_takes_the_latest_reset() -> None:
    limits = RateLimits()
    limits.update([_entry("requests", 0, 5.0), _entry("tokens", 0, 8.0)], now=0.0)
    assert limits.hold_off_until_any(0.0) == pytest.approx(8.0)
    assert limits.hold_off_until_any(6.0) == pytest.approx(8.0)
    assert limits.hold_off_until_any(8.0) is None


@pytest.mark.parametrize(
    "entry",
    [
        _entry("input_tokens", 0),  # unknown kind
        _entry("requests", True),  # JSON true is not a count
        _entry("requests", "0"),
        _entry("requests", -1),
        _entry("requests", 0, math.nan),
        _entry("requests", 0, math.inf),
        _entry("requests", 0, None),
        {"limit": 1, "remaining": 0, "reset_seconds": 1.0},
        {"name": 7, "limit": 1, "remaining": 0, "reset_seconds": 1.0},
    ],
)
def test_rate_limit_malformed_entries_are_ignored_and_counted(entry: dict[str, object]) -> None:
    limits = RateLimits()
    limits.update([entry, _entry("tokens", 10)], now=0.0)
    assert limits.ignored == 1
    assert limits.latest("requests") is None
    assert limits.latest("tokens") is not None


def test_rate_limit_reset_seconds_is_capped() -> None:
    limits = RateLimits()
    limits.update([_entry("requests", 0, 1e12)], now=0.0)
    assert limits.hold_off_until("requests", 0.0) == MAX_HOLD_OFF_S


def test_rate_limit_snapshot_is_a_read_only_copy_for_metrics() -> None:
    limits = RateLimits()
    limits.update([_entry("tokens", 42, 3.0, limit=1000)], now=5.0)
    snap = limits.snapshot()
    assert snap["tokens"].limit == 1000
    assert snap["tokens"].remaining == 42
    with pytest.raises(TypeError):
        snap["tokens"] = snap["tokens"]  # type: ignore[index]
    limits.update([_entry("requests", 1)], now=6.0)
    assert "requests" not in snap
